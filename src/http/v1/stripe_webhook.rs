//! `POST /v1/stripe/webhook`: Stripe's deliveries to this server. The body is read as the bytes
//! Stripe signed; verification and the event's effects live in `billing::webhook`.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::HeaderMap;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::billing::webhook::{apply, verify};
use crate::error_set;
use crate::http::AppState;
use crate::http::error::{ApiError, ErrorKind};
use crate::http::extract::{body_error, check_json};
use crate::store::StoreError;
use crate::store::webhook_events::Applied;

/// The route, outside the API-key layer: Stripe signs the body instead.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new().routes(utoipa_axum::routes!(receive))
}

/// The webhook's acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookReceived {
    /// Always true.
    pub received: bool,
}

error_set!(
    pub WebhookErrors {
        BadRequest => "Refused: no `Stripe-Signature`, a malformed one, no matching `v1` signature, or a timestamp beyond the tolerance (`invalid_signature`); a body that is not JSON (`invalid_json`); an event without `id` or `type` (`invalid_event`).",
        NotFound => "The webhook is off: the server runs without a webhook secret.",
        TooLarge => "The body exceeds `--max-body-bytes` (`body_too_large`); Stripe's events are a few KiB.",
        Unavailable => "The event could not be applied (the database failed or did not answer; code `unavailable`), so Stripe redelivers it later; or the model is still loading (`starting`).",
    }
);

/// Stripe webhook endpoint
///
/// For Stripe, not for API clients: no bearer token; each delivery is verified by its
/// `Stripe-Signature` header (HMAC-SHA256 with `--stripe-webhook-secret` /
/// `STRIPE_WEBHOOK_SECRET`, any `v1` signature, timestamp within
/// `--stripe-webhook-tolerance-secs`). Billing acts on `customer.deleted` (the customer's
/// accounts are unmapped and their pending reports failed); other events are acknowledged and
/// ignored. Each event id is applied once; a redelivery answers 200 and does nothing. The route
/// exists only when a webhook secret is set.
#[utoipa::path(
    post,
    path = "/v1/stripe/webhook",
    operation_id = "stripeWebhook",
    params(("Stripe-Signature" = String, Header, description = "Stripe's signature header, `t=TIMESTAMP,v1=HEX[,v1=HEX]`.", example = "t=1764393600,v1=7500d5d4be4b3ef07af1fe56f7d522d135cdaa7530de557e67cc1049c52de094")),
    request_body(content = Object, content_type = "application/json", description = "A Stripe event, exactly as Stripe sent it (the signature covers the raw bytes)."),
    responses(
        (status = 200, description = "Received: applied, ignored, or a duplicate.", body = WebhookReceived),
        WebhookErrors,
    ),
)]
pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<WebhookReceived>, ApiError> {
    let Some(config) = state.stripe_webhook.clone() else {
        return Err(ApiError::not_found("no such route"));
    };
    let body = body.map_err(body_error)?;
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
                    .metrics
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
            Err(ApiError::retry_later(
                ErrorKind::Unavailable,
                "unavailable",
                "the event could not be applied now; redeliver it",
                Duration::from_secs(60),
            ))
        }
    }
}
