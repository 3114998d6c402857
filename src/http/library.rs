//! The stored descriptions of an account: retrieve (billed as a retrieval), list, edit, delete,
//! version history, and the streamed export (JSONL or CSV, not billed).

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, PathParams, cursor, query};
use super::openapi::{ApiKeyErrors, DeletedDescription, DescriptionPage, VersionList};
use crate::store::descriptions::{Description, Provenance};
use crate::store::keys::Scope;

/// Rows fetched per step of an export: bounds memory whatever the account's size.
pub(crate) const EXPORT_PAGE: i64 = 500;

/// The request id the `observe` middleware put on the request.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Descriptions per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last description of the previous page.
    #[param(example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
    /// Only the descriptions sent with this `asset_id`.
    #[param(example = "sku-1042")]
    asset_id: Option<String>,
}

/// A list route's `limit`: 20 when absent, 1 to 100 when given.
pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(20),
        Some(limit) if (1..=100).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            "`limit` must be between 1 and 100",
        )),
    }
}

/// The operations of this module, for [`library_returns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryOperation {
    List,
    Retrieve,
    Edit,
    Delete,
    Versions,
    Export,
}

/// Whether `operation` can answer with `error`. tests/it/openapi.rs turns this into statuses
/// through `status_of` and checks them against the `responses` of the annotations below.
/// Exhaustive on purpose, like `descriptions::create_returns`.
pub fn library_returns(operation: LibraryOperation, error: &ApiError) -> bool {
    use LibraryOperation::*;
    match error {
        // The API-key layer (`auth::require_api_key`): no key or a bad one; the account's rate
        // limit.
        ApiError::Unauthorized { .. } | ApiError::RateLimited { .. } => true,
        // The key lacks `read` (`manage` for edit and delete).
        ApiError::Forbidden { .. } => true,
        // The database did not answer in time (here or in the API-key layer), or failed.
        ApiError::Unavailable { .. } | ApiError::Internal(_) => true,
        // The query string (unknown parameter, `limit` out of range, unknown `format`), the
        // edit's JSON body (malformed, unknown field, empty text, provenance `ai`), or an id that
        // is not UTF-8 (`PathParams`). Not counted: the store's `Invalid` for a stored row it
        // cannot read, which only a corrupt database gives.
        ApiError::BadRequest { .. } => true,
        // Not one of the account's descriptions.
        ApiError::NotFound(_) => matches!(operation, Retrieve | Edit | Delete | Versions),
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
        // Two edits of one description at once (PostgreSQL): the later one's version is taken.
        ApiError::Conflict { .. } => operation == Edit,
        ApiError::UnsupportedMediaType(_)
        | ApiError::TooLarge { .. }
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        | ApiError::Overloaded { .. } => false,
    }
}

#[utoipa::path(
    get,
    path = "/v1/descriptions",
    operation_id = "listDescriptions",
    tag = "descriptions",
    summary = "List stored descriptions",
    description = "The account's descriptions, newest first, a page at a time: pass the last \
        `id` as `starting_after` for the next page while `has_more` is true. Not billed. Scope: \
        `read`.",
    params(ListQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A page of descriptions, newest first.", body = DescriptionPage),
        (status = 400, description = "Invalid query: an unknown parameter, or `limit` outside 1 to 100.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn list(State(state): State<AppState>, caller: Caller, uri: Uri) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        let query: ListQuery = query(&uri)?;
        let limit = page_limit(query.limit)?;
        let starting_after = cursor(query.starting_after, "desc")?;
        let page = state
            .store
            .list_descriptions(
                caller.account_id(),
                query.asset_id.as_deref(),
                starting_after.as_deref(),
                limit,
            )
            .await?;
        Ok::<_, ApiError>(Json(json!({
            "object": "list",
            "data": page.descriptions,
            "has_more": page.has_more,
        })))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    get,
    path = "/v1/descriptions/{id}",
    operation_id = "retrieveDescription",
    tag = "descriptions",
    summary = "Retrieve a description",
    description = "One stored description with its current text. Each retrieval is billed (the \
        `retrieved` meter of `GET /v1/usage`). Scope: `read`.",
    params(("id" = String, Path, description = "The description's id.", example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The description.", body = Description),
        (status = 400, description = "The `id` is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such description in this account.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    headers: HeaderMap,
) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        let description = state
            .store
            .retrieve_description(caller.account_id(), &id, &request_id(&headers))
            .await?;
        Ok::<_, ApiError>(Json(description))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The new text (1 to 10000 characters).
    pub text: String,
    /// `ai_edited` (default for model text) or `human` (a rewrite).
    pub provenance: Option<Provenance>,
}

#[utoipa::path(
    patch,
    path = "/v1/descriptions/{id}",
    operation_id = "editDescription",
    tag = "descriptions",
    summary = "Edit a description",
    description = "A person's edit: the text is replaced and the previous text is kept as a \
        version (`GET /v1/descriptions/{id}/versions`); `version` goes up by one and \
        `provenance` becomes `ai_edited` (model text edited) unless `human` is sent. Scope: \
        `manage`.",
    params(("id" = String, Path, description = "The description's id.", example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    request_body(content = EditRequest, content_type = "application/json"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The description with its new text.", body = Description),
        (status = 400, description = "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, a `text` that is empty or longer than 10000 characters, provenance `ai`, or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such description in this account.", body = ErrorBody),
        (status = 409, description = "Another edit of this description was saved at the same moment (code `conflict`); retry.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
    body: Result<ApiJson<EditRequest>, ApiError>,
) -> Response {
    let run = async {
        caller.require(Scope::Manage)?;
        let ApiJson(edit) = body?;
        let text = edit.text.trim();
        if text.is_empty() || text.chars().count() > 10_000 {
            return Err(ApiError::bad_request(
                "invalid_text",
                "`text` must be 1 to 10000 characters",
            ));
        }
        let description = state
            .store
            .edit_description(caller.account_id(), &id, text, edit.provenance)
            .await?;
        Ok(Json(description))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    delete,
    path = "/v1/descriptions/{id}",
    operation_id = "deleteDescription",
    tag = "descriptions",
    summary = "Delete a description",
    description = "Deletes the description and its versions at once, and the stored \
        `Idempotency-Key` answers that carry it (a repeat with such a key runs again). Its usage \
        rows stay: they are billing records and hold no text. Scope: `manage`.",
    params(("id" = String, Path, description = "The description's id.", example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Deleted.", body = DeletedDescription),
        (status = 400, description = "The `id` is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such description in this account.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Response {
    let run = async {
        caller.require(Scope::Manage)?;
        state
            .store
            .delete_description(caller.account_id(), &id)
            .await?;
        Ok::<_, ApiError>(Json(
            json!({"object": "description", "id": id, "deleted": true}),
        ))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[utoipa::path(
    get,
    path = "/v1/descriptions/{id}/versions",
    operation_id = "listDescriptionVersions",
    tag = "descriptions",
    summary = "A description's versions",
    description = "Every text the description has had, oldest first: version 1 is the model's. \
        Not billed. Scope: `read`.",
    params(("id" = String, Path, description = "The description's id.", example = "desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The versions, oldest first (`has_more` is always false).", body = VersionList),
        (status = 400, description = "The `id` is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such description in this account.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        let versions = state
            .store
            .description_versions(caller.account_id(), &id)
            .await?;
        Ok::<_, ApiError>(Json(
            json!({"object": "list", "data": versions, "has_more": false}),
        ))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Jsonl,
    Csv,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// `jsonl` (default): one description per line, as `GET /v1/descriptions/{id}` answers it;
    /// `csv`: a header row, then one row per description.
    format: Option<ExportFormat>,
    /// Only the descriptions sent with this `asset_id`.
    #[param(example = "sku-1042")]
    asset_id: Option<String>,
}

const CSV_HEADER: [&str; 17] = [
    "id",
    "asset_id",
    "text",
    "provenance",
    "version",
    "detail",
    "model",
    "image_width",
    "image_height",
    "image_format",
    "image_byte_size",
    "image_sha256",
    "generated_tokens",
    "truncated",
    "created_at",
    "updated_at",
    "metadata",
];

fn csv_rows(descriptions: &[Description], header: bool) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    if header {
        writer.write_record(CSV_HEADER)?;
    }
    for d in descriptions {
        writer.write_record([
            d.id.clone(),
            d.asset_id.clone().unwrap_or_default(),
            d.text.clone(),
            d.provenance.as_str().to_string(),
            d.version.to_string(),
            d.detail.clone(),
            d.model.clone(),
            d.image.width.to_string(),
            d.image.height.to_string(),
            d.image.format.clone(),
            d.image.byte_size.to_string(),
            d.image.sha256.clone(),
            d.generated_tokens.to_string(),
            d.truncated.to_string(),
            d.created_at.to_string(),
            d.updated_at.to_string(),
            d.metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default(),
        ])?;
    }
    writer
        .into_inner()
        .map_err(|e| csv::Error::from(e.into_error()))
}

/// Every description of the account, newest first, streamed page by page. Not billed.
#[utoipa::path(
    get,
    path = "/v1/descriptions/export",
    operation_id = "exportDescriptions",
    tag = "descriptions",
    summary = "Export every description",
    description = "Every description of the account, newest first, streamed as JSON Lines or \
        CSV (`Content-Disposition: attachment`). Memory stays bounded whatever the account's \
        size. A database failure after the answer started cuts the stream short (no final \
        chunk), so an incomplete file is detectable. Not billed. Scope: `read`.",
    params(ExportQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The descriptions, streamed.", content(
            (String = "application/x-ndjson"),
            (String = "text/csv"),
        ), headers(
            ("content-disposition" = String, description = "`attachment; filename=\"descriptions.jsonl\"` (or `.csv`)."),
        )),
        (status = 400, description = "Invalid query: an unknown parameter or `format`.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn export(State(state): State<AppState>, caller: Caller, uri: Uri) -> Response {
    if let Err(error) = caller.require(Scope::Read) {
        return error.into_response();
    }
    let query: ExportQuery = match query(&uri) {
        Ok(query) => query,
        Err(error) => return error.into_response(),
    };
    let format = query.format.unwrap_or_default();
    let account_id = caller.account_id().to_string();
    let store = state.store.clone();
    // (cursor, first page, finished)
    let start = (None::<String>, true, false);
    let stream = futures_util::stream::unfold(start, move |(cursor, first, done)| {
        let (store, account_id, asset_id) =
            (store.clone(), account_id.clone(), query.asset_id.clone());
        async move {
            if done {
                return None;
            }
            let page = match store
                .list_descriptions(
                    &account_id,
                    asset_id.as_deref(),
                    cursor.as_deref(),
                    EXPORT_PAGE,
                )
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    // The status is already sent: cutting the stream tells the client it failed.
                    tracing::warn!(%error, "export failed mid-stream");
                    return Some((
                        Err(std::io::Error::other(error.to_string())),
                        (None, false, true),
                    ));
                }
            };
            let chunk = match format {
                ExportFormat::Jsonl => {
                    let mut out = Vec::new();
                    for description in &page.descriptions {
                        serde_json::to_writer(&mut out, description)
                            .expect("serialisable; this is a bug");
                        out.push(b'\n');
                    }
                    Ok(out)
                }
                ExportFormat::Csv => csv_rows(&page.descriptions, first)
                    .map_err(|e| std::io::Error::other(e.to_string())),
            };
            let next_cursor = page.descriptions.last().map(|d| d.id.clone());
            let finished = !page.has_more || next_cursor.is_none();
            Some((chunk.map(Bytes::from), (next_cursor, false, finished)))
        }
    });
    let content_type = match format {
        ExportFormat::Jsonl => "application/x-ndjson",
        ExportFormat::Csv => "text/csv; charset=utf-8",
    };
    let file_name = match format {
        ExportFormat::Jsonl => "descriptions.jsonl",
        ExportFormat::Csv => "descriptions.csv",
    };
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
