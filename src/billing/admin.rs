//! `/v1/admin/billing/`: the operator's view of meter reports that stopped retrying (failed,
//! expired, needs_reconcile), and their retry.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::sender::{self, DEAD_STATUSES, MeterReport};
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::{PathParams, cursor, query};
use crate::http::openapi::{AdminErrors, MeterReportList};

/// The operations of this module, for [`billing_admin_returns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingAdminOperation {
    ListReports,
    RetryReport,
}

/// Whether `operation` can answer with `error`; checked against the annotations below by
/// tests/openapi.rs. Exhaustive on purpose, like `http::admin::admin_returns`.
pub fn billing_admin_returns(operation: BillingAdminOperation, error: &ApiError) -> bool {
    use BillingAdminOperation::*;
    match error {
        // The admin-token layer (`auth::require_admin`).
        ApiError::Unauthorized { .. } => true,
        // The database did not answer in time, or failed.
        ApiError::Unavailable { .. } | ApiError::Internal(_) => true,
        // Every admin route: not mounted without `--admin-token` (the fallback answers). The
        // retry: no such report.
        ApiError::NotFound(_) => true,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
        // The list: the query string (unknown parameter, `limit`, `status`). The retry: an id
        // that is not UTF-8 (`PathParams`).
        ApiError::BadRequest { .. } => true,
        // The retry of a report that is not dead (pending or sent).
        ApiError::Conflict { .. } => operation == RetryReport,
        // No API key, so no scopes, no restriction and no rate limit on admin routes; no body.
        ApiError::Forbidden { .. }
        | ApiError::RateLimited { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::TooLarge { .. }
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        | ApiError::Overloaded { .. } => false,
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ReportsQuery {
    /// One status: `pending`, `sent`, `failed`, `expired` or `needs_reconcile`; default: every
    /// dead one (`failed`, `expired`, `needs_reconcile`).
    #[param(example = "failed")]
    status: Option<String>,
    /// Reports per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last report of the previous page.
    #[param(example = "mr_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

/// `GET /v1/admin/billing/reports[?status=…]`: dead reports by default, oldest first.
#[utoipa::path(
    get,
    path = "/v1/admin/billing/reports",
    operation_id = "adminListMeterReports",
    tag = "admin",
    summary = "List meter reports",
    description = "The usage reports to Stripe in one status, by default the dead ones that \
        stopped retrying (`failed`, `expired`, `needs_reconcile`), oldest first, a page at a time.",
    params(ReportsQuery),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "A page of meter reports.", body = MeterReportList),
        (status = 400, description = "Invalid query: an unknown parameter, `limit` outside 1 to 100 (`invalid_limit`), or an unknown `status` (`invalid_status`).", body = ErrorBody),
        (status = 404, description = "The admin API is off: the server runs without `--admin-token`.", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn list_reports(State(state): State<AppState>, uri: Uri) -> Response {
    let run = async {
        let query: ReportsQuery = query(&uri)?;
        let limit = crate::http::library::page_limit(query.limit)?;
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
            cursor(query.starting_after, "mr")?.as_deref(),
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
#[utoipa::path(
    post,
    path = "/v1/admin/billing/reports/{id}/retry",
    operation_id = "adminRetryMeterReport",
    tag = "admin",
    summary = "Retry a dead meter report",
    description = "Puts a `failed`, `expired` or `needs_reconcile` report back to `pending`, due \
        now, with a fresh Idempotency-Key and the same Stripe `identifier` (so it cannot be \
        counted twice); an `expired` report is re-dated to now. The sender is woken.",
    params(("id" = String, Path, description = "The report's id.", example = "mr_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The report, `pending` again.", body = MeterReport),
        (status = 400, description = "An id that is not UTF-8 once percent-decoded (`invalid_path`).", body = ErrorBody),
        (status = 404, description = "No such report, or the admin API is off: the server runs without `--admin-token`.", body = ErrorBody),
        (status = 409, description = "The report is `pending` or `sent`: only dead reports can be retried (code `conflict`).", body = ErrorBody),
        AdminErrors,
    ),
)]
pub async fn retry_report(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Response {
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
