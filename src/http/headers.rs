//! The headers a browser reads for safety, on every answer: `X-Content-Type-Options: nosniff`,
//! `Referrer-Policy: no-referrer`, and `Strict-Transport-Security` when the server speaks HTTPS
//! ([`security_headers`]); and CORS for the origins named by `--cors-allowed-origins` only
//! ([`cors`]): with none (the default) no answer carries `Access-Control-*`, so scripts on other
//! sites cannot read the API's answers. `/docs` adds its own strict CSP (`ops::docs`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// HSTS for a year. Not `includeSubDomains`: the operator's other hosts are not ours to decide.
pub const HSTS: &str = "max-age=31536000";

/// Seconds a browser may cache a preflight's answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// What the browser-facing layers do, from `serve`'s flags.
#[derive(Debug, Clone, Default)]
pub struct WebPolicy {
    /// HTTPS is on: answers carry `Strict-Transport-Security`.
    pub hsts: bool,
    /// Origins (`https://shop.example`) whose scripts may call the API; empty: none.
    pub cors_allowed_origins: Vec<String>,
}

/// Checks one `--cors-allowed-origins` entry: `scheme://host[:port]`, as a browser sends it in
/// `Origin`, compared exactly.
pub fn parse_origin(text: &str) -> Result<String, String> {
    let origin = text.trim();
    let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
        matches!(scheme, "http" | "https")
            && !rest.is_empty()
            && !rest.contains(['/', '?', '#', '@', '*', ' '])
    }) && HeaderValue::from_str(origin).is_ok();
    if valid {
        Ok(origin.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{text}` is not an origin like https://shop.example or http://localhost:3000 (no path, no wildcard)"
        ))
    }
}

/// The outermost layer: every answer, whoever wrote it, carries the safety headers.
pub async fn security_headers(
    State(policy): State<Arc<WebPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("no-referrer"));
    if policy.hsts {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    response
}

/// The methods and request headers a script may use, and the answer headers it may read.
const ALLOW_METHODS: &str = "GET, POST, PATCH, DELETE";
const ALLOW_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id";
const EXPOSE_HEADERS: &str = "x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, idempotent-replayed, x-queue-time-ms, x-inference-time-ms, content-disposition";

/// CORS for the allowed origins: a preflight from one is answered 204 here; another request
/// from one runs and its answer names the origin. A request from any other origin (or none)
/// passes untouched, so its preflight meets the router's 405 and the browser refuses the call.
/// Credentials (cookies) are never allowed: the API takes a bearer key.
pub async fn cors(State(policy): State<Arc<WebPolicy>>, request: Request, next: Next) -> Response {
    let Some(origin) = allowed_origin(&policy, request.headers()) else {
        return next.run(request).await;
    };
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(ALLOW_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOW_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static(PREFLIGHT_MAX_AGE),
        );
        response
    } else {
        let mut response = next.run(request).await;
        response.headers_mut().insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSE_HEADERS),
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    response
}

/// The request's `Origin` when it is one of the allowed ones.
fn allowed_origin(policy: &WebPolicy, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?.to_ascii_lowercase();
    policy
        .cors_allowed_origins
        .contains(&text)
        .then(|| origin.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_and_host_only() {
        assert_eq!(
            parse_origin("https://Shop.example").unwrap(),
            "https://shop.example"
        );
        assert!(parse_origin("http://localhost:3000").is_ok());
        for bad in [
            "*",
            "shop.example",
            "https://shop.example/",
            "https://*.example",
            "ftp://x",
            "https://",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
