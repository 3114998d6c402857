//! The caller's own account: profile, restricted processing, deletion, the full data export
//! (privacy rights), and usage per day.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::Caller;
use super::error::ApiError;
use super::library::{json_body, query};
use crate::store::accounts::RestrictedBy;
use crate::store::keys::Scope;
use crate::store::usage::{MS_PER_DAY, parse_day};
use crate::store::{Store, now_ms};

/// Rows per step of the export stream.
const EXPORT_PAGE: i64 = 500;

pub async fn show(State(state): State<AppState>, caller: Caller) -> Response {
    let run = async {
        caller.require(Scope::Read)?;
        Ok::<_, ApiError>(Json(state.store.account(caller.account_id()).await?))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// Restrict processing (new descriptions refused with 403; reads and exports still work),
    /// or lift a restriction the account set itself.
    pub restricted: bool,
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<AccountPatch>, JsonRejection>,
) -> Response {
    let run = async {
        caller.require(Scope::Manage)?;
        let patch = json_body(body)?;
        let account = state
            .store
            .set_restricted(caller.account_id(), patch.restricted, RestrictedBy::Account)
            .await?;
        Ok::<_, ApiError>(Json(account))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

/// Deletion: keys revoked and data hidden at once; purged after `--deletion-grace-days`.
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
}

/// Counts per UTC day and meter; `from` and `to` are `YYYY-MM-DD`, inclusive (default: the last
/// 30 days).
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
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

/// The account's profile, key metadata, every description with its versions, and its usage
/// history, as one JSON document streamed as it is read (memory stays bounded).
pub async fn export(State(state): State<AppState>, caller: Caller) -> Response {
    if let Err(error) = caller.require(Scope::Read) {
        return state.reject(error);
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
        Err(error) => return state.reject(error),
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
    let mut first = true;
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
        let mut chunk = String::new();
        for description in &page.descriptions {
            let mut value = serde_json::to_value(description).map_err(|e| e.to_string())?;
            value["versions"] = json!(versions.remove(&description.id).unwrap_or_default());
            if !first {
                chunk.push(',');
            }
            first = false;
            chunk.push_str(&value.to_string());
        }
        if !chunk.is_empty() {
            send(chunk).await?;
        }
        cursor = page.descriptions.last().map(|d| d.id.clone());
        if !page.has_more || cursor.is_none() {
            break;
        }
    }
    send("],\"usage_events\":[".into()).await?;
    let mut after: Option<String> = None;
    let mut first = true;
    loop {
        let events = store
            .usage_events_page(account_id, after.as_deref(), EXPORT_PAGE)
            .await
            .map_err(|e| e.to_string())?;
        let mut chunk = String::new();
        for event in &events {
            if !first {
                chunk.push(',');
            }
            first = false;
            chunk.push_str(&serde_json::to_string(event).map_err(|e| e.to_string())?);
        }
        if !chunk.is_empty() {
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
