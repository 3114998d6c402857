//! Job webhooks as the account manages them: make or rotate the signing secret (shown once), and
//! list a job's deliveries with each one's attempts and outcome.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::read::JobPath;
use super::resources::{WebhookDeliveryPage, WebhookSecret};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiPath, ApiQuery, cursor, page_limit};
use crate::store::keys::Scope;

error_set!(
    pub SecretErrors: ApiKeyLayer {}
);

/// Make or rotate the webhook secret
///
/// A new secret for signing job webhooks (`Altimage-Signature`), replacing the old one at once:
/// deliveries from now on, retries included, are signed with it. The secret is in this answer
/// only; store it. Scope: `manage`.
#[utoipa::path(
    post,
    path = "/v1/webhook_secret",
    operation_id = "rotateWebhookSecret",
    responses(
        (status = 200, description = "The new secret, shown once.", body = WebhookSecret),
        SecretErrors,
    ),
)]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<WebhookSecret>, ApiError> {
    caller.require(Scope::Manage)?;
    let secret = state
        .store
        .rotate_webhook_secret(caller.account_id(), &caller.actor())
        .await?;
    Ok(Json(WebhookSecret {
        object: "webhook_secret",
        secret,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Deliveries per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last delivery of the previous page.
    #[param(example = "whd_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

error_set!(
    pub DeliveriesErrors: ApiKeyLayer {
        BadRequest => "Invalid query (an unknown parameter, `limit` outside 1 to 100, a `starting_after` that is not a delivery id), or an `id` that is not UTF-8 once percent-decoded (`invalid_path`).",
        NotFound => "No such job in this account.",
    }
);

/// A job's webhook deliveries
///
/// Each event POSTed for the job, oldest first, with its attempts, the receiver's last status
/// and error, and when the next retry is due. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/deliveries",
    operation_id = "listJobDeliveries",
    params(JobPath, DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries, oldest first.", body = WebhookDeliveryPage),
        DeliveriesErrors,
    ),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(path): ApiPath<JobPath>,
    query: Result<ApiQuery<DeliveriesQuery>, ApiError>,
) -> Result<Json<WebhookDeliveryPage>, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let limit = page_limit(query.limit)?;
    let starting_after = cursor(query.starting_after, "whd")?;
    let (deliveries, has_more) = state
        .store
        .list_webhook_deliveries(
            caller.account_id(),
            &path.id()?,
            starting_after.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(WebhookDeliveryPage::new(deliveries, has_more)))
}
