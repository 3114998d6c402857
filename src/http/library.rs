//! The stored descriptions of an account: retrieve (billed as a retrieval), list, edit, delete,
//! version history, and the streamed export (JSONL or CSV, not billed).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use crate::store::descriptions::{Description, Provenance};
use crate::store::keys::Scope;

/// Rows fetched per step of an export: bounds memory whatever the account's size.
const EXPORT_PAGE: i64 = 500;

/// Parses the query string into `T`, answering 400 with a JSON error when it does not fit.
pub fn query<T: serde::de::DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(uri)
        .map(|Query(value)| value)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

/// The JSON body, or a 400 that says what is wrong with it.
pub fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(value)| value).map_err(|e| {
        let code = match e {
            JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
            _ => "invalid_json",
        };
        ApiError::bad_request(code, e.body_text())
    })
}

pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<i64>,
    starting_after: Option<String>,
    asset_id: Option<String>,
}

fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(20),
        Some(limit) if (1..=100).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            "`limit` must be between 1 and 100",
        )),
    }
}

pub async fn list(State(state): State<AppState>, caller: Caller, uri: Uri) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        let query: ListQuery = query(&uri)?;
        let limit = page_limit(query.limit)?;
        let page = state
            .store
            .list_descriptions(
                caller.account_id(),
                query.asset_id.as_deref(),
                query.starting_after.as_deref(),
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn retrieve(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditRequest {
    /// The new text (1 to 10000 characters).
    pub text: String,
    /// `ai_edited` (default for model text) or `human` (a rewrite).
    pub provenance: Option<Provenance>,
}

pub async fn edit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<EditRequest>, JsonRejection>,
) -> Response {
    let run = async {
        caller.require(Scope::Manage)?;
        let edit = json_body(body)?;
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Clone, Copy, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    #[default]
    Jsonl,
    Csv,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: Option<ExportFormat>,
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
pub async fn export(State(state): State<AppState>, caller: Caller, uri: Uri) -> Response {
    if let Err(error) = caller.require(Scope::Read) {
        return state.reject(error);
    }
    let query: ExportQuery = match query(&uri) {
        Ok(query) => query,
        Err(error) => return state.reject(error),
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
