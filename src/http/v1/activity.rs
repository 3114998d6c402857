//! What the account's keys did and what was done to the account: its request log
//! (`GET /v1/requests`) and its audit events (`GET /v1/audit_events`).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::resources::{AuditEvent, AuditEventPage, RequestPage};
use crate::error_set;
use crate::http::AppState;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::error_set::ApiKeyLayer;
use crate::http::extract::{ApiQuery, cursor, line, page_limit};
use crate::store::audit::AuditFilter;
use crate::store::keys::Scope;
use crate::store::request_log::{PREFIX, RequestFilter};

/// The routes behind the API key.
pub fn routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(requests))
        .routes(routes!(audit_events))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestsQuery {
    /// Only requests answered with this status.
    #[param(example = 429, minimum = 100, maximum = 599)]
    status: Option<u16>,
    /// Only requests to this route template, as listed (`/v1/descriptions/{id}`).
    #[param(example = "/v1/descriptions")]
    route: Option<String>,
    /// Only requests that arrived at or after this time, Unix milliseconds.
    #[param(example = 1764547200000_i64)]
    from: Option<i64>,
    /// Only requests that arrived before this time, Unix milliseconds.
    #[param(example = 1767225600000_i64)]
    to: Option<i64>,
    /// Requests per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// A cursor: the `id` of the last request of the previous page.
    #[param(example = "rlog_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    starting_after: Option<String>,
}

error_set!(
    pub RequestsErrors: ApiKeyLayer {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100, a `status` outside 100 to 599, `from` after `to`, a `route` with characters no route has, or a `starting_after` that is not a request id.",
    }
);

/// The request log
///
/// Every request made with the account's keys, newest first, a page at a time: when it
/// arrived, its route (the template, never the path with its ids nor the query), its status and
/// latency, its request id, the key, the client's IP address and user agent. Never a body, never
/// a key. Kept two years; the IP address and user agent are erased when the account is purged.
/// Written in batches just after the answer, so the request that lists does not list itself.
/// Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/requests",
    operation_id = "listRequests",
    params(RequestsQuery),
    responses(
        (status = 200, description = "A page of requests, newest first.", body = RequestPage),
        RequestsErrors,
    ),
)]
pub async fn requests(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<RequestsQuery>, ApiError>,
) -> Result<Json<RequestPage>, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let limit = page_limit(query.limit)?;
    let starting_after = cursor(query.starting_after, PREFIX)?;
    if query.status.is_some_and(|s| !(100..=599).contains(&s)) {
        return Err(ApiError::bad_request(
            "invalid_status",
            "`status` must be an HTTP status, 100 to 599",
        ));
    }
    if let (Some(from), Some(to)) = (query.from, query.to)
        && from > to
    {
        return Err(ApiError::bad_request(
            "invalid_range",
            "`from` must not be after `to`",
        ));
    }
    if let Some(route) = &query.route {
        line(route, || "`route`".into())?;
    }
    let filter = RequestFilter {
        status: query.status,
        route: query.route.as_deref(),
        from: query.from,
        to: query.to,
    };
    let (requests, has_more) = state
        .store
        .list_requests(
            caller.account_id(),
            filter,
            starting_after.as_deref(),
            limit,
        )
        .await?;
    Ok(Json(RequestPage::new(requests, has_more)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only events of this action (`key.created`, …).
    #[param(example = "key.created")]
    pub action: Option<String>,
    /// Events per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// A cursor: the `id` of the last event of the previous page.
    #[param(example = "aud_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f")]
    pub starting_after: Option<String>,
}

impl AuditQuery {
    /// The filter's parts, checked.
    pub fn checked(self) -> Result<(Option<String>, i64, Option<String>), ApiError> {
        let limit = page_limit(self.limit)?;
        let starting_after = cursor(self.starting_after, "aud")?;
        if let Some(action) = &self.action {
            line(action, || "`action`".into())?;
        }
        Ok((self.action, limit, starting_after))
    }
}

error_set!(
    pub AuditErrors: ApiKeyLayer {
        BadRequest => "Invalid query: an unknown parameter, `limit` outside 1 to 100, or a `starting_after` that is not an audit event id.",
    }
);

/// The account's audit events
///
/// The security events about the account, newest first: keys created and revoked, restriction
/// and deletion requests, exports, webhook-secret rotations, objections to analytics, and what
/// the operator did to it (without where the operator called from). Append-only; kept seven
/// years, with the billing records. Scope: `read`.
#[utoipa::path(
    get,
    path = "/v1/audit_events",
    operation_id = "listAuditEvents",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of audit events, newest first.", body = AuditEventPage),
        AuditErrors,
    ),
)]
pub async fn audit_events(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<ApiQuery<AuditQuery>, ApiError>,
) -> Result<Json<AuditEventPage>, ApiError> {
    caller.require(Scope::Read)?;
    let ApiQuery(query) = query?;
    let (action, limit, starting_after) = query.checked()?;
    let filter = AuditFilter {
        account_id: Some(caller.account_id()),
        action: action.as_deref(),
    };
    let (events, has_more) = state
        .store
        .list_audit_events(filter, starting_after.as_deref(), limit)
        .await?;
    Ok(Json(AuditEventPage::new(
        events.into_iter().map(AuditEvent::for_account),
        has_more,
    )))
}
