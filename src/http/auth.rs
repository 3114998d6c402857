//! Authentication: API keys (`Authorization: Bearer altk_…`) on every `/v1/` route with the
//! account's rate limit and `RateLimit-*` headers, scope checks, the request-log entry of every
//! authenticated request, and the admin token on `/v1/admin/`; and who acted, for the audit log.

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::client::ClientInfo;
use super::error::{ApiError, ErrorKind};
use super::middleware::Arrived;
use super::ratelimit::Decision;
use crate::store::accounts::RestrictedBy;
use crate::store::audit::{Actor, ActorKind};
use crate::store::ids::AccountId;
use crate::store::keys::{Principal, Scope};
use crate::store::request_log::RequestLogEntry;

/// The authenticated account and key of a `/v1/` request, and where it came from.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub client: ClientInfo,
}

impl Caller {
    pub fn account_id(&self) -> &AccountId {
        &self.principal.account_id
    }

    /// The key, as the actor of what this request changes.
    pub fn actor(&self) -> Actor {
        Actor {
            kind: ActorKind::ApiKey,
            id: Some(self.principal.key_id.clone()),
            ip: self.client.ip.clone(),
            user_agent: self.client.user_agent.clone(),
        }
    }

    /// The key the request came with (recorded as the reviewer of an API decision).
    pub fn key_id(&self) -> &str {
        &self.principal.key_id
    }

    /// 403 unless the key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.principal.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorKind::Forbidden,
                "missing_scope",
                format!(
                    "this API key lacks the `{}` scope; create a key with it (POST /v1/admin/accounts/{{id}}/keys or `altimage keys create --scopes`)",
                    scope.as_str()
                ),
            ))
        }
    }

    /// 403 while the account's processing is restricted (new descriptions are refused; reads
    /// and exports still work).
    pub fn require_unrestricted(&self) -> Result<(), ApiError> {
        match self.principal.restricted_by {
            None => Ok(()),
            Some(by) => Err(ApiError::new(
                ErrorKind::Forbidden,
                "account_restricted",
                match by {
                    RestrictedBy::Account => {
                        "processing is restricted for this account; lift it with PATCH /v1/account {\"restricted\": false}"
                    }
                    RestrictedBy::Admin => {
                        "processing is restricted for this account by the operator; reads and exports still work"
                    }
                },
            )),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::internal("route is missing the API-key layer"))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The operator (admin token) as the actor of an admin route, from where it called.
pub fn operator(client: &ClientInfo) -> Actor {
    Actor {
        kind: ActorKind::Operator,
        id: Some("admin_token".into()),
        ip: client.ip.clone(),
        user_agent: client.user_agent.clone(),
    }
}

/// Middleware for the account routes: 401 without a valid key, 429 past the account's rate,
/// else the request runs with its [`Caller`] and the answer gets `RateLimit-*` headers. Every
/// request with a valid key, refused or not, goes to the request log.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let log = state.request_log.clone().map(|log| {
        let arrived = request.extensions().get::<Arrived>().copied();
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let request_id = super::extract::request_id(request.headers());
        (
            log,
            arrived,
            route,
            request.method().to_string(),
            request_id,
        )
    });
    let (caller, response) = authenticated(state, request, next).await;
    if let (Some(caller), Some((log, Some(arrived), route, method, request_id))) = (caller, log) {
        log.record(RequestLogEntry {
            account_id: caller.principal.account_id,
            key_id: caller.principal.key_id,
            request_id,
            method,
            route,
            status: response.status().as_u16(),
            latency_ms: arrived.at.elapsed().as_millis() as u64,
            ip: caller.client.ip,
            user_agent: caller.client.user_agent,
            created_at: arrived.unix_ms,
        });
    }
    response
}

/// The key check, the rate limit and the request; the caller when the key was valid.
async fn authenticated(
    state: AppState,
    mut request: Request,
    next: Next,
) -> (Option<Caller>, Response) {
    let Some(secret) = bearer(request.headers()) else {
        let response = ApiError::new(
            ErrorKind::Unauthorized,
            "missing_api_key",
            "send an API key as `Authorization: Bearer KEY`",
        )
        .into_response();
        return (None, response);
    };
    let principal = match state.store.authenticate(secret).await {
        Ok(Some(principal)) => principal,
        Ok(None) => {
            let response = ApiError::new(
                ErrorKind::Unauthorized,
                "invalid_api_key",
                "the API key is unknown or revoked",
            )
            .into_response();
            return (None, response);
        }
        Err(error) => return (None, ApiError::from(error).into_response()),
    };
    let caller = Caller {
        principal,
        client: request
            .extensions()
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or_default(),
    };
    let principal = &caller.principal;
    let limit = principal
        .rate_limit_per_minute
        .map(|l| l.max(1) as u64)
        .unwrap_or(state.access.rate_limit_per_minute);
    let decision = (limit > 0).then(|| {
        state
            .access
            .rate_limiter
            .check(principal.account_id.as_str(), limit)
    });
    if let Some(decision) = decision.filter(|d| !d.allowed) {
        let mut response = ApiError::retry_later(
            ErrorKind::RateLimited,
            "rate_limited",
            format!(
                "rate limit of {} requests per minute reached; retry after {} s",
                decision.limit, decision.retry_after_secs
            ),
            std::time::Duration::from_secs(decision.retry_after_secs),
        )
        .into_response();
        rate_limit_headers(response.headers_mut(), decision);
        return (Some(caller), response);
    }
    // The request's span (`middleware::observe`) names the tenant from here on, in every log
    // line of the request and of its images' batches.
    tracing::Span::current().record("account_id", tracing::field::display(&principal.account_id));
    request.extensions_mut().insert(caller.clone());
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        rate_limit_headers(response.headers_mut(), decision);
    }
    (Some(caller), response)
}

fn rate_limit_headers(headers: &mut HeaderMap, decision: Decision) {
    headers.insert("ratelimit-limit", HeaderValue::from(decision.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(decision.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(decision.reset_secs));
}

/// Middleware for `/v1/admin/`: the admin token, compared in constant time. The admin routes
/// are not mounted at all when no token is configured.
pub async fn require_admin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.access.admin_token.as_deref().unwrap_or_default();
    let presented = bearer(request.headers()).unwrap_or_default();
    // ct_eq on unequal lengths returns false at once, which leaks only the length.
    let matches =
        !expected.is_empty() && bool::from(presented.as_bytes().ct_eq(expected.as_bytes()));
    if !matches {
        return ApiError::new(
            ErrorKind::Unauthorized,
            "invalid_admin_token",
            "admin routes need `Authorization: Bearer <--admin-token>`",
        )
        .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_case_insensitively_and_trimmed() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer  altk_x "),
        );
        assert_eq!(bearer(&headers), Some("altk_x"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer altk_y"),
        );
        assert_eq!(bearer(&headers), Some("altk_y"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&headers), None);
    }
}
