//! `/v1/admin/billing/reports`: the operator's view of the meter reports (by default those that
//! stopped retrying: failed, expired, needs_reconcile) and their retry. What they act on lives in
//! `store::meter_reports`; the sender in `crate::billing`.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AdminRoute;
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::operator;
use crate::http::client::ClientInfo;
use crate::http::error::ApiError;
use crate::http::extract::{ApiPath, ApiQuery, cursor, page_limit};
use crate::http::v1::resources::{MeterReport, MeterReportList};
use crate::store::meter_reports::DEAD_STATUSES;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportsQuery {
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

error_set!(
    pub ListErrors: AdminRoute {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100 (`invalid_limit`), or an unknown `status` (`invalid_status`).",
    }
);

/// List meter reports
///
/// The usage reports to Stripe in one status, by default the dead ones that stopped retrying
/// (`failed`, `expired`, `needs_reconcile`), oldest first, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/admin/billing/reports",
    operation_id = "adminListMeterReports",
    params(ReportsQuery),
    responses(
        (status = 200, description = "A page of meter reports.", body = MeterReportList),
        ListErrors,
    ),
)]
pub async fn list_reports(
    State(state): State<AppState>,
    query: Result<ApiQuery<ReportsQuery>, ApiError>,
) -> Result<Json<MeterReportList>, ApiError> {
    let ApiQuery(query) = query?;
    let limit = page_limit(query.limit)?;
    if let Some(status) = query.status.as_deref()
        && !DEAD_STATUSES.contains(&status)
        && !["pending", "sent"].contains(&status)
    {
        return Err(ApiError::bad_request(
            "invalid_status",
            "`status` must be one of pending, sent, failed, expired, needs_reconcile",
        ));
    }
    let (reports, has_more) = state
        .store
        .list_meter_reports(
            query.status.as_deref(),
            limit,
            cursor(query.starting_after, "mr")?.as_deref(),
        )
        .await?;
    Ok(Json(MeterReportList::new(reports, has_more)))
}

/// The path of one report.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ReportPath {
    /// The report's id.
    #[param(example = "mr_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    id: String,
}

error_set!(
    pub RetryErrors: AdminRoute {
        BadRequest => "An id that is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such report, or the admin API is off: the server runs without `--admin-token`.",
        Conflict => "The report is `pending` or `sent`: only dead reports can be retried (code `conflict`).",
    }
);

/// Retry a dead meter report
///
/// Puts a `failed`, `expired` or `needs_reconcile` report back to `pending`, due now, with a
/// fresh Idempotency-Key and the same Stripe `identifier` (so it cannot be counted twice); an
/// `expired` report is re-dated to now. The sender is woken.
#[utoipa::path(
    post,
    path = "/v1/admin/billing/reports/{id}/retry",
    operation_id = "adminRetryMeterReport",
    params(ReportPath),
    responses(
        (status = 200, description = "The report, `pending` again.", body = MeterReport),
        RetryErrors,
    ),
)]
pub async fn retry_report(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiPath(path): ApiPath<ReportPath>,
) -> Result<Json<MeterReport>, ApiError> {
    let report = state
        .store
        .retry_meter_report(&path.id, &operator(&client))
        .await?;
    tracing::info!(report_id = %path.id, "meter report requeued by the operator");
    if let Some(billing) = state.billing.as_ref() {
        billing.wake();
    }
    Ok(Json(report.into()))
}
