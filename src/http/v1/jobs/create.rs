//! `POST /v1/jobs`: a job's items as JSON (`{"items": [...], options}`), CSV or JSON Lines
//! (options in the query string), every string checked and every item planned by the one
//! validation stage before anything is stored; then the job and its items in one transaction
//! (`Idempotency-Key` and the per-account limit inside it), answered 202.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::resources::Job;
use crate::describe::ContextOptions;
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, ErrorKind};
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiQuery, body_error, check_json, line};
use crate::http::v1::descriptions::body::ProductContextJson;
use crate::http::v1::resources::Metadata;
use crate::jobs::options::JobOptions;
use crate::model::{Detail, Output};
use crate::store::jobs::{Created, NewItem, NewJob};
use crate::store::keys::Scope;
use crate::store::now_ms;

/// One image of a job.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobItemJson {
    /// An http or https URL the server fetches when the item runs (the same limits and address
    /// checks as `image_url` of `POST /v1/descriptions`).
    #[schema(example = "https://images.example.com/sku-1042.jpg")]
    pub image_url: String,
    /// Your id for the image, echoed in the results and on the description.
    #[schema(max_length = 256, example = "sku-1042")]
    pub asset_id: Option<String>,
    pub context: Option<ProductContextJson>,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<Value>,
}

/// The JSON form: the items and the options every item is described with.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobJson {
    /// At least one, at most `--max-job-items`.
    #[schema(min_items = 1)]
    pub items: Vec<JobItemJson>,
    /// Which loaded model answers (`GET /v1/info`); default the first.
    pub model: Option<String>,
    /// What to write for each image: `alt_text` (default), `description`, `seo_title`,
    /// `keywords`.
    #[schema(value_type = Option<Vec<Output>>, example = json!(["alt_text"]))]
    pub outputs: Option<Vec<String>>,
    /// Florence-2's caption length: `brief` (default), `detailed` or `paragraph`.
    #[schema(value_type = Option<Detail>)]
    pub detail: Option<String>,
    /// BCP 47; default `en`.
    #[schema(max_length = 35, example = "de")]
    pub language: Option<String>,
    /// The voice of product copy (at most 100 characters).
    #[schema(max_length = 100)]
    pub tone: Option<String>,
    #[schema(minimum = 1)]
    pub max_chars: Option<usize>,
    #[schema(minimum = 1, maximum = 1000)]
    pub max_words: Option<usize>,
    #[schema(minimum = 1, maximum = 50)]
    pub keyword_count: Option<usize>,
    #[schema(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    #[schema(minimum = 1)]
    pub num_beams: Option<usize>,
    #[schema(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    /// Where to POST the job's events (`job.succeeded`, `job.failed`, `job.cancelled`), signed
    /// with the account's webhook secret (`POST /v1/webhook_secret` makes one). Checked like an
    /// image URL: private and metadata addresses are refused.
    #[schema(example = "https://shop.example.com/hooks/altimage")]
    pub webhook_url: Option<String>,
}

/// The options of the CSV and JSON Lines forms, in the query string.
#[derive(Debug, Default, PartialEq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct JobQuery {
    /// Which loaded model answers; default the first.
    model: Option<String>,
    /// Comma-separated: `alt_text` (default), `description`, `seo_title`, `keywords`.
    #[param(example = "alt_text,seo_title")]
    outputs: Option<String>,
    /// Florence-2's caption length.
    #[param(value_type = Option<Detail>)]
    detail: Option<String>,
    /// BCP 47; default `en`.
    language: Option<String>,
    tone: Option<String>,
    max_chars: Option<usize>,
    max_words: Option<usize>,
    keyword_count: Option<usize>,
    max_new_tokens: Option<usize>,
    num_beams: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    seed: Option<u64>,
    /// Where to POST the job's events (see the JSON form).
    webhook_url: Option<String>,
}

/// The `Idempotency-Key` of `POST /v1/jobs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct JobIdempotencyKey {
    /// 1 to 255 visible ASCII characters. The same key with the same request answers the job it
    /// made (202, `Idempotent-Replayed: true`) for as long as the job exists; with another
    /// request it is a 409.
    #[param(rename = "Idempotency-Key", max_length = 255)]
    pub idempotency_key: Option<String>,
}

/// A CSV upload's columns.
const CSV_COLUMNS: &str = "image_url, asset_id, title, brand, category, keywords (separated by `;`), metadata (a JSON object), and `attr:NAME` for each product attribute";

error_set!(
    /// What `POST /v1/jobs` may answer besides its 202.
    pub CreateJobErrors: ApiKeyLayer {
        BadRequest => "Invalid request: malformed JSON, CSV or JSON Lines, no items, an unknown field, column or option, an invalid option or item (the message names it: `items[3]`), a refused `webhook_url`, a `webhook_url` without a webhook secret (`webhook_secret_missing`), or an invalid `Idempotency-Key`.",
        Forbidden => "The key lacks the `describe` scope (`missing_scope`), or the account's processing is restricted (`account_restricted`).",
        Conflict => "The `Idempotency-Key` was used with a different job request (`idempotency_key_reused`).",
        TooLarge => "Too large: the body (`--max-body-bytes`) or more items than `--max-job-items` (`too_many_items`).",
        UnsupportedMediaType => "Unsupported content type: send application/json, text/csv or application/x-ndjson.",
        Unsupported => "An item's options ask a model for what it cannot do (`unsupported_by_model`); the message names a loaded model that can.",
        RateLimited => "The account's requests per minute are used up (`rate_limited`), or it already has `--max-active-jobs` jobs queued or running (`too_many_active_jobs`); retry after `Retry-After` seconds.",
    }
);

/// Create a bulk job
///
/// Describe a whole catalogue: one item per image URL, each described exactly as
/// `POST /v1/descriptions` would describe it (the same validation, model, stored description
/// and billing), in the background, on spare capacity, by every replica.
///
/// * **JSON** (`application/json`): `{"items": [{"image_url", "asset_id", "context",
///   "metadata"}, ...], ...options, "webhook_url"}`.
/// * **CSV** (`text/csv`): a header row, then one item per row. Columns: image_url, asset_id,
///   title, brand, category, keywords (separated by `;`), metadata (a JSON object), and
///   `attr:NAME` for each product attribute. Options in the query string.
/// * **JSON Lines** (`application/x-ndjson`): one item object per line; options in the query
///   string.
///
/// Every item is checked before anything is stored; a refused item refuses the job (the
/// message names it). An item whose image cannot be fetched or read fails alone when it runs,
/// with its error in the results; transient fetch failures are retried first. Follow the job
/// with `GET /v1/jobs/{id}`, or give a `webhook_url`. Scope: `describe`; refused while the
/// account's processing is restricted.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "createJob",
    params(JobQuery, JobIdempotencyKey),
    request_body(
        description = "The items, in one of three forms.",
        content(
            (JobJson = "application/json"),
            (String = "text/csv"),
            (String = "application/x-ndjson"),
        ),
    ),
    responses(
        (status = 202, description = "The job, queued (or, for a replayed `Idempotency-Key`, as it is now).", body = Job, headers(
            ("idempotent-replayed" = String, description = "`true` when this is the job an earlier request with the same `Idempotency-Key` made."),
        )),
        CreateJobErrors,
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<JobQuery>, ApiError>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require(Scope::Describe)?;
    caller.require_unrestricted()?;
    let key = idempotency_key(request.headers())?;
    let kind = content_type(&request);
    let (options, webhook_url, items) = match kind.as_str() {
        "application/json" => {
            if let Ok(ApiQuery(query)) = &query
                && *query != JobQuery::default()
            {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "with a JSON body, options go in the body, not the query string",
                ));
            }
            read_json(body(request).await?)?
        }
        "text/csv" | "application/x-ndjson" | "application/jsonl" => {
            let ApiQuery(query) = query?;
            let (options, webhook_url) = query.into_options();
            let body = body(request).await?;
            let items = if kind == "text/csv" {
                read_csv(&body)?
            } else {
                read_jsonl(&body)?
            };
            (options, webhook_url, items)
        }
        other => {
            let other = if other.is_empty() { "(none)" } else { other };
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                "unsupported_media_type",
                format!(
                    "unsupported content type `{other}`: send application/json, text/csv or application/x-ndjson"
                ),
            ));
        }
    };
    let jobs = &state.jobs;
    if items.is_empty() {
        return Err(ApiError::bad_request("no_items", "the job has no items"));
    }
    if items.len() > jobs.max_items() {
        return Err(ApiError::too_large(
            "too_many_items",
            format!(
                "{} items in one job; the limit is {} (--max-job-items): split the catalogue into several jobs",
                items.len(),
                jobs.max_items()
            ),
        ));
    }
    // The one validation stage, for every item, before anything is stored.
    let validator = state.describe.validator();
    let mut new_items = Vec::with_capacity(items.len());
    for (index, (item, context)) in items.into_iter().enumerate() {
        let request = options.request(&item, context.clone());
        validator.plan(&request.options).map_err(|invalid| {
            let error = ApiError::from(&invalid);
            ApiError::new(
                error.kind(),
                error.code(),
                format!("items[{index}]: {invalid}"),
            )
        })?;
        new_items.push(NewItem {
            context: context.filter(|c| !c.is_empty()).map(|c| c.to_json()),
            ..item
        });
    }
    if let Some(url) = &webhook_url {
        jobs.check_webhook_url(url).map_err(|e| {
            ApiError::bad_request("invalid_webhook_url", format!("webhook_url: {e}"))
        })?;
        if !state.store.has_webhook_secret(caller.account_id()).await? {
            return Err(ApiError::bad_request(
                "webhook_secret_missing",
                "a webhook_url needs the account's webhook secret to sign with: make one with POST /v1/webhook_secret first",
            ));
        }
    }
    let options_json = serde_json::to_value(&options).expect("serialisable; this is a bug");
    let idempotency = key.map(|key| {
        let hash = request_hash(&options_json, webhook_url.as_deref(), &new_items);
        (key, hash)
    });
    let job = NewJob {
        options: options_json,
        webhook_url,
        items: new_items,
        idempotency,
    };
    let created = state
        .store
        .create_job(caller.account_id(), job, jobs.max_active_jobs(), now_ms())
        .await?;
    let (job, replayed) = match created {
        Created::New(job) => {
            jobs.wake();
            (job, false)
        }
        Created::Replay(job) => (job, true),
        Created::KeyReused => {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different job request; use a new key",
            ));
        }
        Created::TooManyActive { limit } => {
            return Err(ApiError::retry_later(
                ErrorKind::RateLimited,
                "too_many_active_jobs",
                format!(
                    "the account already has {limit} jobs queued or running (--max-active-jobs); retry when one finishes"
                ),
                std::time::Duration::from_secs(60),
            ));
        }
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(Job::from(job))).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

impl JobQuery {
    fn into_options(self) -> (JobOptions, Option<String>) {
        let options = JobOptions {
            model: self.model,
            outputs: self.outputs.map(|text| {
                text.split(',')
                    .map(|name| name.trim().to_string())
                    .collect()
            }),
            detail: self.detail,
            language: self.language,
            tone: self.tone,
            max_chars: self.max_chars,
            max_words: self.max_words,
            keyword_count: self.keyword_count,
            max_new_tokens: self.max_new_tokens,
            num_beams: self.num_beams,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        };
        (options, self.webhook_url)
    }
}

/// An item as read, with its product context (stored in `ContextOptions::to_json`'s form).
type ReadItem = (NewItem, Option<ContextOptions>);

fn read_json(body: Bytes) -> Result<(JobOptions, Option<String>, Vec<ReadItem>), ApiError> {
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    check_json(&value)?;
    let json: JobJson = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    let options = JobOptions {
        model: json.model,
        outputs: json.outputs,
        detail: json.detail,
        language: json.language,
        tone: json.tone,
        max_chars: json.max_chars,
        max_words: json.max_words,
        keyword_count: json.keyword_count,
        max_new_tokens: json.max_new_tokens,
        num_beams: json.num_beams,
        temperature: json.temperature,
        top_p: json.top_p,
        seed: json.seed,
    };
    let items = json
        .items
        .into_iter()
        .enumerate()
        .map(|(index, item)| json_item(item, index))
        .collect::<Result<_, _>>()?;
    Ok((options, json.webhook_url, items))
}

fn json_item(item: JobItemJson, index: usize) -> Result<ReadItem, ApiError> {
    line(&item.image_url, || format!("`items[{index}].image_url`"))?;
    Ok((
        NewItem {
            image_url: item.image_url,
            asset_id: item.asset_id,
            context: None,
            metadata: item.metadata,
        },
        item.context.map(ContextOptions::from),
    ))
}

fn read_jsonl(body: &[u8]) -> Result<Vec<ReadItem>, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("invalid_jsonl", "the body is not UTF-8"))?;
    let mut items = Vec::new();
    for (number, row) in text.lines().enumerate() {
        if row.trim().is_empty() {
            continue;
        }
        let index = items.len();
        let value: Value = serde_json::from_str(row).map_err(|e| {
            ApiError::bad_request("invalid_jsonl", format!("line {}: {e}", number + 1))
        })?;
        check_json(&value)?;
        let item: JobItemJson = serde_json::from_value(value).map_err(|e| {
            ApiError::bad_request("invalid_jsonl", format!("line {}: {e}", number + 1))
        })?;
        items.push(json_item(item, index)?);
    }
    Ok(items)
}

fn read_csv(body: &[u8]) -> Result<Vec<ReadItem>, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_csv", message);
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(body);
    let headers = reader
        .headers()
        .map_err(|e| invalid(format!("the header row: {e}")))?
        .clone();
    for name in &headers {
        line(name, || "a CSV column name".to_string())?;
        let known = matches!(
            name,
            "image_url" | "asset_id" | "title" | "brand" | "category" | "keywords" | "metadata"
        ) || name.strip_prefix("attr:").is_some_and(|n| !n.is_empty());
        if !known {
            return Err(invalid(format!(
                "unknown column `{name}`; the columns are {CSV_COLUMNS}"
            )));
        }
    }
    if !headers.iter().any(|h| h == "image_url") {
        return Err(invalid(format!(
            "no `image_url` column; the columns are {CSV_COLUMNS}"
        )));
    }
    let mut items = Vec::new();
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| invalid(format!("row {}: {e}", index + 2)))?;
        let mut item = NewItem::default();
        let mut context = ContextOptions::default();
        for (name, cell) in headers.iter().zip(record.iter()) {
            let field = || format!("`items[{index}].{name}`");
            if name == "metadata" {
                if cell.is_empty() {
                    continue;
                }
                let value: Value = serde_json::from_str(cell)
                    .map_err(|e| invalid(format!("{}: not a JSON object: {e}", field())))?;
                check_json(&value)?;
                item.metadata = Some(value);
                continue;
            }
            line(cell, field)?;
            if cell.is_empty() {
                continue;
            }
            let cell = cell.to_string();
            match name {
                "image_url" => item.image_url = cell,
                "asset_id" => item.asset_id = Some(cell),
                "title" => context.title = Some(cell),
                "brand" => context.brand = Some(cell),
                "category" => context.category = Some(cell),
                "keywords" => {
                    context.keywords = cell
                        .split(';')
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .map(str::to_string)
                        .collect();
                }
                attribute => {
                    let name = attribute.trim_start_matches("attr:").to_string();
                    context.attributes.push((name, cell));
                }
            }
        }
        if item.image_url.is_empty() {
            return Err(invalid(format!("row {}: `image_url` is empty", index + 2)));
        }
        items.push((item, (!context.is_empty()).then_some(context)));
    }
    Ok(items)
}

async fn body(request: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, &()).await.map_err(body_error)
}

fn content_type(request: &Request) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The `Idempotency-Key` header, when sent: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_string()))
}

/// What makes two job requests the same: the options, the webhook and every item.
fn request_hash(options: &Value, webhook_url: Option<&str>, items: &[NewItem]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(options.to_string());
    hasher.update([0]);
    hasher.update(webhook_url.unwrap_or_default());
    for item in items {
        let row = serde_json::json!([item.image_url, item.asset_id, item.context, item.metadata]);
        hasher.update([0]);
        hasher.update(row.to_string());
    }
    format!("{:x}", hasher.finalize())
}
