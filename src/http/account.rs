//! The caller's own account: profile, restricted processing, deletion, the full data export
//! (privacy rights), and usage per day.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, query};
use super::library::EXPORT_PAGE;
use super::openapi::{AccountExport, ApiKeyErrors, Usage};
use crate::store::accounts::{Account, RestrictedBy};
use crate::store::keys::Scope;
use crate::store::usage::{MS_PER_DAY, parse_day};
use crate::store::{Store, now_ms};

/// The operations of this module, for [`account_returns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountOperation {
    Show,
    Update,
    Delete,
    Usage,
    Export,
}

/// Whether `operation` can answer with `error`; checked against the annotations below by
/// tests/it/openapi.rs. Exhaustive on purpose, like `descriptions::create_returns`.
pub fn account_returns(operation: AccountOperation, error: &ApiError) -> bool {
    use AccountOperation::*;
    match error {
        // The API-key layer (`auth::require_api_key`): no key or a bad one; the rate limit.
        ApiError::Unauthorized { .. } | ApiError::RateLimited { .. } => true,
        // The key lacks `read` (`manage` for update and delete).
        ApiError::Forbidden { .. } => true,
        // The database did not answer in time (here or in the API-key layer), or failed.
        ApiError::Unavailable { .. } | ApiError::Internal(_) => true,
        // Update: the JSON body, or lifting a restriction the operator set. Usage: the query
        // string, a date that is not YYYY-MM-DD, `from` after `to` or more than 366 days.
        ApiError::BadRequest { .. } => matches!(operation, Update | Usage),
        // Update: the account's deletion was requested while the request ran (`set_restricted`
        // refuses a deleted account). The other operations read an account that authentication
        // just found, which only its purge removes, long after its keys were revoked.
        ApiError::NotFound(_) => operation == Update,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
        ApiError::Conflict { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::TooLarge { .. }
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        | ApiError::Overloaded { .. } => false,
    }
}

#[utoipa::path(
    get,
    path = "/v1/account",
    operation_id = "showAccount",
    tag = "account",
    summary = "The caller's account",
    description = "The profile of the account the API key belongs to, with its restriction and \
        deletion state. Scope: `read`.",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The account.", body = Account),
        ApiKeyErrors,
    ),
)]
pub async fn show(State(state): State<AppState>, caller: Caller) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        Ok::<_, ApiError>(Json(state.store.account(caller.account_id()).await?))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// Restrict processing (new descriptions refused with 403; reads and exports still work),
    /// or lift a restriction the account set itself.
    pub restricted: bool,
}

#[utoipa::path(
    patch,
    path = "/v1/account",
    operation_id = "updateAccount",
    tag = "account",
    summary = "Restrict processing, or lift the restriction",
    description = "Restricted processing (a privacy right): while `restricted` is true, new \
        descriptions are refused with 403 `account_restricted`; reads, edits, deletion and \
        exports still work. The account can lift only a restriction it set itself. Scope: \
        `manage`.",
    request_body(content = AccountPatch, content_type = "application/json"),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The account, as it is now.", body = Account),
        (status = 400, description = "Invalid request: malformed JSON, a missing `Content-Type: application/json`, an unknown field, or lifting a restriction the operator set.", body = ErrorBody),
        (status = 404, description = "The account's deletion was requested while this request ran.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<ApiJson<AccountPatch>, ApiError>,
) -> Response {
    let run = async {
        caller.require(Scope::Manage)?;
        let ApiJson(patch) = body?;
        let account = state
            .store
            .set_restricted(caller.account_id(), patch.restricted, RestrictedBy::Account)
            .await?;
        Ok::<_, ApiError>(Json(account))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

/// Deletion: keys revoked and data hidden at once; purged after `--deletion-grace-days`.
#[utoipa::path(
    delete,
    path = "/v1/account",
    operation_id = "deleteAccount",
    tag = "account",
    summary = "Delete the account",
    description = "Every key is revoked and the account's data is hidden at once (this key \
        stops working with this request); the purge job deletes the data after \
        `--deletion-grace-days` (at most 30; `purge_after` says when). Billing aggregates are \
        kept with personal identifiers removed. Export first if you want a copy. Scope: \
        `manage`.",
    security(("api_key" = [])),
    responses(
        (status = 202, description = "Deletion accepted; the account as it is now, with `deleted_at` and `purge_after`.", body = Account),
        ApiKeyErrors,
    ),
)]
pub async fn delete(State(state): State<AppState>, caller: Caller) -> Response {
    let run = async {
        caller.require(Scope::Manage)?;
        let account = state
            .store
            .request_deletion(caller.account_id(), state.access.deletion_grace)
            .await?;
        tracing::info!(account_id = %account.id, "account deletion requested");
        Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(account)))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UsageQuery {
    /// The first day, `YYYY-MM-DD` UTC, inclusive (default: 29 days before `to`).
    #[param(example = "2026-11-01")]
    from: Option<String>,
    /// The last day, `YYYY-MM-DD` UTC, inclusive (default: today). At most 366 days after `from`.
    #[param(example = "2026-11-30")]
    to: Option<String>,
}

/// Counts per UTC day and meter; `from` and `to` are `YYYY-MM-DD`, inclusive (default: the last
/// 30 days).
#[utoipa::path(
    get,
    path = "/v1/usage",
    operation_id = "usage",
    tag = "account",
    summary = "Usage per day",
    description = "Billable events per UTC day and meter: `created` (descriptions made) and \
        `retrieved` (`GET /v1/descriptions/{id}`), every day of the range listed (zeros \
        included), with totals. Replays of an `Idempotency-Key` and exports are not counted. \
        Scope: `read`.",
    params(UsageQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Counts per day, oldest first, and totals.", body = Usage),
        (status = 400, description = "Invalid query: an unknown parameter, a date that is not `YYYY-MM-DD`, `from` after `to`, or more than 366 days.", body = ErrorBody),
        ApiKeyErrors,
    ),
)]
pub async fn usage(State(state): State<AppState>, caller: Caller, uri: Uri) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        let query: UsageQuery = query(&uri)?;
        let day = |value: Option<&str>, default: i64, name: &str| match value {
            None => Ok(default),
            Some(text) => parse_day(text).ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_date",
                    format!("`{name}` must be a date as YYYY-MM-DD, got `{text}`"),
                )
            }),
        };
        let today = now_ms().div_euclid(MS_PER_DAY);
        let to = day(query.to.as_deref(), today, "to")?;
        let from = day(query.from.as_deref(), to - 29, "from")?;
        let days = state
            .store
            .usage_by_day(caller.account_id(), from, to)
            .await?;
        let created: i64 = days.iter().map(|d| d.created).sum();
        let retrieved: i64 = days.iter().map(|d| d.retrieved).sum();
        Ok::<_, ApiError>(Json(json!({
            "object": "usage",
            "from": crate::store::usage::format_day(from),
            "to": crate::store::usage::format_day(to),
            "totals": {"created": created, "retrieved": retrieved},
            "data": days,
        })))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

/// The account's profile, key metadata, every description with its versions, and its usage
/// history, as one JSON document streamed as it is read (memory stays bounded).
#[utoipa::path(
    get,
    path = "/v1/account/export",
    operation_id = "exportAccount",
    tag = "account",
    summary = "Export all the account's data",
    description = "A privacy right: the account's profile, its keys' metadata (never secrets), \
        every description with its versions, its usage events and its archived usage, as one \
        JSON document (`Content-Disposition: attachment`), streamed as it is read. A database \
        failure after the answer started cuts the stream short, so the document does not \
        parse. Not billed. Scope: `read`.",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The account's data.", body = AccountExport, headers(
            ("content-disposition" = String, description = "`attachment; filename=\"account-export.json\"`."),
        )),
        ApiKeyErrors,
    ),
)]
pub async fn export(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(error) = caller.require(Scope::Read) {
        return error.into_response();
    }
    let account_id = caller.account_id().to_string();
    // The head is read before answering, so that a database failure is a proper error status.
    let head = async {
        let account = state.store.account(&account_id).await?;
        let keys = state.store.list_keys(&account_id).await?;
        Ok::<_, ApiError>(json!({
            "object": "account_export",
            "exported_at": now_ms(),
            "account": account,
            "keys": keys,
        }))
    };
    let head = match head.await {
        Ok(head) => head,
        Err(error) => return error.into_response(),
    };
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(error) = write_export(&store, &account_id, head, &sender).await {
            tracing::warn!(%error, "account export failed mid-stream");
            let _ = sender.send(Err(std::io::Error::other(error))).await;
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|chunk| (chunk, receiver))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"account-export.json\"",
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

type Chunks = tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>;

/// One JSON array written a page at a time: a comma before every item but the array's first.
#[derive(Default)]
struct ArrayItems {
    started: bool,
}

impl ArrayItems {
    /// The page's items as one chunk of the array; `None` for an empty page.
    fn chunk(&mut self, items: Vec<String>) -> Option<String> {
        let mut chunk = String::new();
        for item in items {
            if self.started {
                chunk.push(',');
            }
            self.started = true;
            chunk.push_str(&item);
        }
        (!chunk.is_empty()).then_some(chunk)
    }
}

/// Writes the export document piece by piece. Stops quietly when the client leaves.
async fn write_export(
    store: &Store,
    account_id: &str,
    head: serde_json::Value,
    out: &Chunks,
) -> Result<(), String> {
    let send = |text: String| async move {
        out.send(Ok(Bytes::from(text)))
            .await
            .map_err(|_| "client left".to_string())
    };
    // The head object without its closing brace, then the streamed arrays.
    let head = head.to_string();
    send(format!("{},\"descriptions\":[", &head[..head.len() - 1])).await?;
    let mut cursor: Option<String> = None;
    let mut descriptions = ArrayItems::default();
    loop {
        let page = store
            .list_descriptions(account_id, None, cursor.as_deref(), EXPORT_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let ids: Vec<String> = page.descriptions.iter().map(|d| d.id.clone()).collect();
        let mut versions = store
            .versions_of(account_id, &ids)
            .await
            .map_err(|e| e.to_string())?;
        let mut items = Vec::with_capacity(page.descriptions.len());
        for description in &page.descriptions {
            let mut value = serde_json::to_value(description).map_err(|e| e.to_string())?;
            value["versions"] = json!(versions.remove(&description.id).unwrap_or_default());
            items.push(value.to_string());
        }
        if let Some(chunk) = descriptions.chunk(items) {
            send(chunk).await?;
        }
        cursor = page.descriptions.last().map(|d| d.id.clone());
        if !page.has_more || cursor.is_none() {
            break;
        }
    }
    send("],\"usage_events\":[".into()).await?;
    let mut after: Option<String> = None;
    let mut usage_events = ArrayItems::default();
    loop {
        let events = store
            .usage_events_page(account_id, after.as_deref(), EXPORT_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let items = events
            .iter()
            .map(serde_json::to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        if let Some(chunk) = usage_events.chunk(items) {
            send(chunk).await?;
        }
        match events.last() {
            Some(last) if events.len() as i64 == EXPORT_PAGE => after = Some(last.id.clone()),
            _ => break,
        }
    }
    let archived = store
        .archived_usage(account_id)
        .await
        .map_err(|e| e.to_string())?;
    send(format!(
        "],\"usage_archive\":{}}}",
        serde_json::to_string(&archived).map_err(|e| e.to_string())?
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::ArrayItems;

    #[test]
    fn pages_join_into_one_json_array() {
        let mut items = ArrayItems::default();
        let mut array = String::from("[");
        for page in [vec![], vec!["1", "2"], vec![], vec!["3"]] {
            if let Some(chunk) = items.chunk(page.into_iter().map(String::from).collect()) {
                array.push_str(&chunk);
            }
        }
        array.push(']');
        assert_eq!(
            serde_json::from_str::<Vec<i64>>(&array).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(ArrayItems::default().chunk(vec![]), None);
    }
}
