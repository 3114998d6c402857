//! Authentication: API keys (`Authorization: Bearer altk_…`) on every `/v1/` route with the
//! account's rate limit and `RateLimit-*` headers, scope checks, and the admin token on
//! `/v1/admin/`.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorKind};
use super::ratelimit::Decision;
use crate::store::accounts::RestrictedBy;
use crate::store::ids::AccountId;
use crate::store::keys::{Principal, Scope};

/// The authenticated account and key of a `/v1/` request.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl Caller {
    pub fn account_id(&self) -> &AccountId {
        &self.0.account_id
    }

    /// The key the request came with (recorded as the reviewer of an API decision).
    pub fn key_id(&self) -> &str {
        &self.0.key_id
    }

    /// 403 unless the key carries `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.scopes.contains(&scope) {
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
        match self.0.restricted_by {
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

/// Middleware for the account routes: 401 without a valid key, 429 past the account's rate,
/// else the request runs with its [`Caller`] and the answer gets `RateLimit-*` headers.
pub async fn require_api_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(secret) = bearer(request.headers()) else {
        return ApiError::new(
            ErrorKind::Unauthorized,
            "missing_api_key",
            "send an API key as `Authorization: Bearer KEY`",
        )
        .into_response();
    };
    let principal = match state.store.authenticate(secret).await {
        Ok(Some(principal)) => principal,
        Ok(None) => {
            return ApiError::new(
                ErrorKind::Unauthorized,
                "invalid_api_key",
                "the API key is unknown or revoked",
            )
            .into_response();
        }
        Err(error) => return ApiError::from(error).into_response(),
    };
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
        return response;
    }
    // The request's span (`middleware::observe`) names the tenant from here on, in every log
    // line of the request and of its images' batches.
    tracing::Span::current().record("account_id", tracing::field::display(&principal.account_id));
    request.extensions_mut().insert(Caller(principal));
    let mut response = next.run(request).await;
    if let Some(decision) = decision {
        rate_limit_headers(response.headers_mut(), decision);
    }
    response
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
