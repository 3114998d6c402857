//! `/v1/admin/billing/`: the operator's view of meter reports that stopped retrying (failed,
//! expired, needs_reconcile), and their retry.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::sender::{self, DEAD_STATUSES};
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::library::query;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportsQuery {
    /// One status; default: every dead one.
    status: Option<String>,
    limit: Option<i64>,
    starting_after: Option<String>,
}

/// `GET /v1/admin/billing/reports[?status=…]`: dead reports by default, oldest first.
pub async fn list_reports(State(state): State<AppState>, uri: Uri) -> Response {
    let run = async {
        let query: ReportsQuery = query(&uri)?;
        let limit = query.limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                "`limit` must be between 1 and 100",
            ));
        }
        if let Some(status) = query.status.as_deref()
            && !DEAD_STATUSES.contains(&status)
            && !["pending", "sent"].contains(&status)
        {
            return Err(ApiError::bad_request(
                "invalid_status",
                "`status` must be one of pending, sent, failed, expired, needs_reconcile",
            ));
        }
        let (reports, has_more) = sender::list_reports(
            &state.store,
            query.status.as_deref(),
            limit,
            query.starting_after.as_deref(),
        )
        .await?;
        Ok(Json(
            json!({"object": "list", "data": reports, "has_more": has_more}),
        ))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}

/// `POST /v1/admin/billing/reports/{id}/retry`: back to pending with a fresh Idempotency-Key
/// and the same identifier, and the sender woken.
pub async fn retry_report(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let run = async {
        let report = sender::retry_report(&state.store, &id).await?;
        tracing::info!(report_id = %id, "meter report requeued by the operator");
        if let Some(billing) = state.billing.billing.as_ref() {
            billing.wake();
        }
        Ok::<_, ApiError>(Json(report))
    };
    run.await
        .map_or_else(|e| state.reject(e), IntoResponse::into_response)
}
