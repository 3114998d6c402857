//! `/v1/admin/audit_events`: the operator reads the whole audit log, or one account's.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AdminRoute;
use crate::error_set;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, known};
use crate::http::v1::activity::AuditQuery;
use crate::http::v1::resources::AuditEventPage;
use crate::store::audit::AuditFilter;
use crate::store::ids::AccountId;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminAuditQuery {
    /// Only events about this account.
    #[param(example = "acct_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    account_id: Option<String>,
    /// Only events of this action (`key.created`, …).
    #[param(example = "key.created")]
    action: Option<String>,
    /// Events per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last event of the previous page.
    #[param(example = "aud_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

error_set!(
    pub AuditErrors: AdminRoute {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100, an `account_id` that is not an account id, or a `starting_after` that is not an audit event id.",
    }
);

/// List audit events
///
/// The audit log, newest first, a page at a time: every account's security events and the
/// operator's own, with where each actor called from (erased for purged accounts).
#[utoipa::path(
    get,
    path = "/v1/admin/audit_events",
    operation_id = "adminListAuditEvents",
    params(AdminAuditQuery),
    responses(
        (status = 200, description = "A page of audit events, newest first.", body = AuditEventPage),
        AuditErrors,
    ),
)]
pub async fn list_audit_events(
    State(state): State<AppState>,
    query: Result<ApiQuery<AdminAuditQuery>, ApiError>,
) -> Result<Json<AuditEventPage>, ApiError> {
    let ApiQuery(query) = query?;
    let account_id = match query.account_id.as_deref() {
        Some(id) => Some(known(id, AccountId::parse, "account").map_err(|_| {
            ApiError::bad_request("invalid_account_id", "`account_id` must be an `acct_…` id")
        })?),
        None => None,
    };
    let (action, limit, starting_after) = AuditQuery {
        action: query.action,
        limit: query.limit,
        starting_after: query.starting_after,
    }
    .checked()?;
    let filter = AuditFilter {
        account_id: account_id.as_ref(),
        action: action.as_deref(),
    };
    let (events, has_more) = state
        .store
        .list_audit_events(filter, starting_after.as_deref(), limit)
        .await?;
    Ok(Json(AuditEventPage::new(events, has_more)))
}
