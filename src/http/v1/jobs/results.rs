//! `GET /v1/jobs/{id}/results`: one line per item in input order, streamed a page at a time as
//! JSON Lines or CSV: the description, or the item's error, with its `asset_id` to join on.

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::read::JobPath;
use crate::describe::outputs;
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiPath, ApiQuery};
use crate::http::v1::descriptions::export::ExportFormat;
use crate::http::v1::resources::Description;
use crate::http::v1::{EXPORT_PAGE, paged};
use crate::store::job_items::ItemResult;
use crate::store::keys::Scope;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// `jsonl` (default): one `JobResult` per line; `csv`: a header row, then one row per item.
    format: Option<ExportFormat>,
}

/// One item of a job's results.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobResult {
    /// The item's place in the submitted list, from 0.
    pub position: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asset_id: Option<String>,
    pub image_url: String,
    /// `succeeded`, `failed`, `cancelled` or `pending` (the job is not finished).
    pub status: String,
    /// Fetch attempts made (transient failures are retried).
    pub attempts: i64,
    /// The stored description, when the item succeeded (absent if it was deleted since).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    /// Why the item failed, as `POST /v1/descriptions` would have answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ItemError>,
}

/// An item's error: the `code` and `message` a single request would get.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemError {
    #[schema(example = "image_url_upstream_error")]
    pub code: String,
    pub message: String,
}

impl From<ItemResult> for JobResult {
    fn from(item: ItemResult) -> Self {
        let error = match (item.status.as_str(), item.error_code, item.error_message) {
            ("failed", Some(code), message) => Some(ItemError {
                code,
                message: message.unwrap_or_default(),
            }),
            _ => None,
        };
        JobResult {
            position: item.position,
            asset_id: item.asset_id,
            image_url: item.image_url,
            status: item.status,
            attempts: item.attempts,
            description: item.description.map(Description::from),
            error,
        }
    }
}

const CSV_HEADER: [&str; 12] = [
    "position",
    "asset_id",
    "image_url",
    "status",
    "description_id",
    "text",
    "alt_text",
    "description",
    "seo_title",
    "keywords",
    "error_code",
    "error_message",
];

fn csv_rows(items: &[ItemResult], header: bool) -> Result<Vec<u8>, String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let failed = |e: csv::Error| e.to_string();
    if header {
        writer.write_record(CSV_HEADER).map_err(failed)?;
    }
    for item in items {
        let d = item.description.as_ref();
        let output = |name: &str| {
            d.and_then(|d| d.outputs.get(name))
                .map(outputs::as_text)
                .unwrap_or_default()
        };
        writer
            .write_record([
                item.position.to_string(),
                item.asset_id.clone().unwrap_or_default(),
                item.image_url.clone(),
                item.status.clone(),
                d.map(|d| d.id.to_string()).unwrap_or_default(),
                d.map(|d| d.text.clone()).unwrap_or_default(),
                output("alt_text"),
                output("description"),
                output("seo_title"),
                output("keywords"),
                if item.status == "failed" {
                    item.error_code.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                if item.status == "failed" {
                    item.error_message.clone().unwrap_or_default()
                } else {
                    String::new()
                },
            ])
            .map_err(failed)?;
    }
    writer.into_inner().map_err(|e| e.error().to_string())
}

error_set!(
    pub ResultsErrors: ApiKeyLayer {
        BadRequest => "Invalid query (an unknown parameter or `format`), or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such job in this account.",
    }
);

/// A job's results
///
/// One line per item in input order, streamed (`Content-Disposition: attachment`): the
/// description, or the item's error (`code` and `message` as `POST /v1/descriptions` would
/// answer), with the item's `asset_id`. Items not finished yet are listed as `pending`. A
/// database failure after the answer started cuts the stream short (no final chunk). Reading
/// results is not billed. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/results",
    operation_id = "jobResults",
    params(JobPath, ResultsQuery),
    responses(
        (status = 200, description = "The results, streamed: `JobResult` lines, or CSV.", content(
            (JobResult = "application/x-ndjson"),
            (String = "text/csv"),
        ), headers(
            ("content-disposition" = String, description = "`attachment; filename=\"job_….jsonl\"` (or `.csv`)."),
        )),
        ResultsErrors,
    ),
)]
pub async fn results(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    query: Result<ApiQuery<ResultsQuery>, ApiError>,
) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let format = query.format.unwrap_or_default();
    let account_id = caller.account_id().clone();
    // The job must be the account's before the answer starts: a 404, not an empty stream.
    let job = state.store.get_job(&account_id, &path.id()?).await?;
    let (store, job_id) = (state.store.clone(), job.id.clone());
    let pages = paged(move |cursor: Option<i64>| {
        let (store, account_id, job_id) = (store.clone(), account_id.clone(), job_id.clone());
        async move {
            let first = cursor.is_none();
            let items = store
                .job_results_page(&account_id, &job_id, cursor.unwrap_or(-1), EXPORT_PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let next = (items.len() as i64 == EXPORT_PAGE)
                .then(|| items.last().map(|i| i.position))
                .flatten();
            let chunk = match format {
                ExportFormat::Jsonl => {
                    let mut out = Vec::new();
                    for item in items {
                        serde_json::to_writer(&mut out, &JobResult::from(item))
                            .expect("serialisable; this is a bug");
                        out.push(b'\n');
                    }
                    out
                }
                ExportFormat::Csv => csv_rows(&items, first)?,
            };
            Ok((chunk, next))
        }
    });
    let (content_type, extension) = match format {
        ExportFormat::Jsonl => ("application/x-ndjson", "jsonl"),
        ExportFormat::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.{extension}\"", job.id),
            ),
        ],
        Body::from_stream(pages),
    )
        .into_response())
}
