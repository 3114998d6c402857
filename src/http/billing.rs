//! The HTTP surface of billing: `/v1/admin/billing/` (the operator's view of meter reports that
//! stopped retrying, failed, expired or needs_reconcile, and their retry) and Stripe's webhook
//! endpoint. What they act on lives in `crate::billing` and, for the reports, in
//! `store::meter_reports`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{PathParams, check_json, cursor, query};
use super::openapi::{AdminErrors, MeterReportList, WebhookReceived};
use crate::billing::webhook::{apply, verify};
use crate::store::StoreError;
use crate::store::meter_reports::{DEAD_STATUSES, MeterReport};
use crate::store::webhook_events::Applied;

/// The operations of this module, for [`billing_admin_returns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingAdminOperation {
    ListReports,
    RetryReport,
}

/// Whether `operation` can answer with `error`; checked against the annotations below by
/// tests/it/openapi.rs. Exhaustive on purpose, like `http::admin::admin_returns`.
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
        let limit = super::library::page_limit(query.limit)?;
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
        Ok(Json(
            json!({"object": "list", "data": reports, "has_more": has_more}),
        ))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
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
        let report = state.store.retry_meter_report(&id).await?;
        tracing::info!(report_id = %id, "meter report requeued by the operator");
        if let Some(billing) = state.billing.as_ref() {
            billing.wake();
        }
        Ok::<_, ApiError>(Json(report))
    };
    run.await
        .map_or_else(ApiError::into_response, IntoResponse::into_response)
}

/// The raw body is taken as bytes: the signature covers exactly what Stripe sent.
#[utoipa::path(
    post,
    path = "/v1/stripe/webhook",
    operation_id = "stripeWebhook",
    tag = "billing",
    summary = "Stripe webhook endpoint",
    description = "For Stripe, not for API clients: no bearer token; each delivery is verified by \
        its `Stripe-Signature` header (HMAC-SHA256 with `--stripe-webhook-secret` / \
        `STRIPE_WEBHOOK_SECRET`, any `v1` signature, timestamp within \
        `--stripe-webhook-tolerance-secs`). Billing acts on `customer.deleted` (the customer's \
        accounts are unmapped and their pending reports failed); other events are acknowledged \
        and ignored. Each event id is applied once; a redelivery answers 200 and does nothing. \
        The route exists only when a webhook secret is set.",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature header, `t=TIMESTAMP,v1=HEX[,v1=HEX]`.", example = "t=1764393600,v1=7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, exactly as Stripe sent it (the signature covers the raw bytes)."),
    responses(
        (status = 200, description = "Received: applied, ignored, or a duplicate.", body = WebhookReceived),
        (status = 400, description = "Refused: no `Stripe-Signature`, a malformed one, no matching `v1` signature, or a timestamp beyond the tolerance (`invalid_signature`); a body that is not JSON (`invalid_json`); an event without `id` or `type` (`invalid_event`).", body = ErrorBody),
        (status = 413, description = "The body exceeds `--max-body-bytes` (`body_too_large`); Stripe's events are a few KiB.", body = ErrorBody),
        (status = 404, description = "The webhook is off: the server runs without a webhook secret.", body = ErrorBody),
        (status = 503, description = "The event could not be applied (the database failed or did not answer; code `unavailable`), so Stripe redelivers it later; or the model is still loading (`starting`).", body = ErrorBody),
    ),
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookReceived>, ApiError> {
    let Some(config) = state.stripe_webhook.clone() else {
        return Err(ApiError::NotFound("no such route".into()));
    };
    let body = body.map_err(super::input::body_error)?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now_secs = crate::store::now_ms() / 1000;
    if let Err(refused) = verify(header, &body, &config.secret, config.tolerance, now_secs) {
        tracing::warn!(%refused, "Stripe webhook refused");
        return Err(ApiError::bad_request(
            "invalid_signature",
            refused.to_string(),
        ));
    }
    let event: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the event is not JSON: {e}"))
    })?;
    check_json(&event)?;
    match apply(&state.store, &event).await {
        Ok(applied) => {
            if let Applied::CustomerDeleted { reports, .. } = applied {
                state
                    .engine
                    .metrics()
                    .billing_events
                    .with_label_values(&["customer_deleted"])
                    .inc_by(reports);
                if let Some(billing) = state.billing.as_ref() {
                    billing.wake();
                }
            }
            Ok(Json(WebhookReceived { received: true }))
        }
        Err(StoreError::Invalid(message)) => Err(ApiError::bad_request("invalid_event", message)),
        // Stripe retries a failed delivery for days: a 503 lets it come back (it keeps its own
        // schedule; Retry-After is there like on every 503 of this API).
        Err(e) => {
            tracing::warn!(error = %e, "Stripe webhook not applied; Stripe will redeliver");
            Err(ApiError::Unavailable {
                code: "unavailable",
                message: "the event could not be applied now; redeliver it".into(),
                retry_after: Duration::from_secs(60),
            })
        }
    }
}

/// Which errors the webhook answers with (the OpenAPI test holds the document to it).
pub fn webhook_returns(error: &ApiError) -> bool {
    match error {
        // A refused signature, a body that is not JSON, an event without `id` or `type`; an
        // unreadable body.
        ApiError::BadRequest { .. } => true,
        // A body over --max-body-bytes.
        ApiError::TooLarge { .. } => true,
        // No webhook secret: the route is not mounted and the fallback answers.
        ApiError::NotFound(_) => true,
        // The HTTP layer around the handlers (405, 408, 501): documented once, for every route.
        ApiError::Protocol { .. } => false,
        // The store failed: Stripe redelivers.
        ApiError::Unavailable { .. } => true,
        // No API key on this route, so no scopes, restriction or rate limit; the body is read as
        // bytes whatever its type; no images; store failures all answer 503.
        ApiError::Unauthorized { .. }
        | ApiError::Forbidden { .. }
        | ApiError::RateLimited { .. }
        | ApiError::Conflict { .. }
        | ApiError::UnsupportedMediaType(_)
        | ApiError::BadImage { .. }
        | ApiError::ImageUrlFailed { .. }
        | ApiError::Overloaded { .. }
        | ApiError::Internal(_) => false,
    }
}
