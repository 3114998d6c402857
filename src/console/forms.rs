//! Cross-site request forgery, refused twice: every state-changing request must come from this
//! origin by the browser's own word (Fetch Metadata, else `Origin`), and every logged-in form
//! must carry the session's synchronizer token ([`MemberForm`], [`MemberMultipart`]), compared
//! in constant time. Handlers cannot forget the token: these extractors are how they get a
//! member and a form at all.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq as _;

use super::ConsoleState;
use super::error::ConsoleError;
use super::session::Member;

/// A form body larger than this is refused (descriptions are edited in forms; images go through
/// [`MemberMultipart`], bounded by `--max-body-bytes`).
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// Whether the browser says the request comes from our own pages: `Sec-Fetch-Site` of
/// `same-origin` (or `none`: typed or bookmarked); without it, an `Origin` equal to ours;
/// with neither, not a browser (a script with no cookies to ride on).
pub fn from_our_origin(headers: &HeaderMap, public_origin: &str) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        Some(Ok(origin)) => origin.eq_ignore_ascii_case(public_origin),
        Some(Err(_)) => false,
        None => true,
    }
}

/// Middleware: state-changing requests from another site are refused before any handler runs.
pub async fn refuse_cross_site(
    State(state): State<ConsoleState>,
    request: Request,
    next: Next,
) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && !from_our_origin(request.headers(), &state.console.config.public_origin) {
        return ConsoleError::Csrf.into_response();
    }
    next.run(request).await
}

fn token_matches(member: &Member, token: Option<&str>) -> bool {
    token.is_some_and(|token| {
        bool::from(token.as_bytes().ct_eq(member.session.csrf_token.as_bytes()))
    })
}

/// A logged-in member's urlencoded form, its `csrf` field (or `X-CSRF-Token` header) checked.
pub struct MemberForm<T> {
    pub member: Member,
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<ConsoleState> for MemberForm<T> {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let member = Member::from_request_parts(&mut parts, state).await?;
        let bytes: Bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| ConsoleError::BadRequest("the form is too large".into()))?;
        let header_token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let pairs: Vec<(String, String)> = serde_urlencoded(&bytes)?;
        let field_token = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        if !token_matches(&member, header_token.as_deref().or(field_token)) {
            return Err(ConsoleError::Csrf);
        }
        let form = serde_urlencoded(&bytes)?;
        Ok(MemberForm { member, form })
    }
}

/// Parses a urlencoded body with axum's own form reader.
fn serde_urlencoded<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, ConsoleError> {
    let request = Request::builder()
        .method(Method::POST)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(bytes.clone()))
        .expect("a valid request");
    futures_util::FutureExt::now_or_never(axum::Form::<T>::from_request(request, &()))
        .expect("the body is already in memory")
        .map(|axum::Form(form)| form)
        .map_err(|rejection| {
            ConsoleError::BadRequest(format!(
                "the form could not be read: {}",
                rejection.body_text()
            ))
        })
}

/// A logged-in member's multipart form (images): the first field must be `csrf` and match; the
/// rest is the handler's to read.
pub struct MemberMultipart {
    pub member: Member,
    pub multipart: Multipart,
}

impl FromRequest<ConsoleState> for MemberMultipart {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let member = Member::from_request_parts(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        let mut multipart = Multipart::from_request(request, state)
            .await
            .map_err(|rejection| ConsoleError::BadRequest(rejection.body_text()))?;
        let first = multipart
            .next_field()
            .await
            .map_err(|e| ConsoleError::BadRequest(e.body_text()))?;
        let token = match first {
            Some(field) if field.name() == Some("csrf") => Some(
                field
                    .text()
                    .await
                    .map_err(|e| ConsoleError::BadRequest(e.body_text()))?,
            ),
            _ => None,
        };
        if !token_matches(&member, token.as_deref()) {
            return Err(ConsoleError::Csrf);
        }
        Ok(MemberMultipart { member, multipart })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn fetch_metadata_first_then_origin_then_not_a_browser() {
        let ours = "https://alt.example";
        assert!(from_our_origin(
            &headers(&[("sec-fetch-site", "same-origin")]),
            ours
        ));
        assert!(from_our_origin(
            &headers(&[("sec-fetch-site", "none")]),
            ours
        ));
        assert!(!from_our_origin(
            &headers(&[("sec-fetch-site", "cross-site")]),
            ours
        ));
        assert!(!from_our_origin(
            &headers(&[("sec-fetch-site", "same-site")]),
            ours
        ));
        // The header wins over a matching Origin: a sibling subdomain is not us.
        assert!(!from_our_origin(
            &headers(&[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://alt.example")
            ]),
            ours
        ));
        assert!(from_our_origin(
            &headers(&[("origin", "https://alt.example")]),
            ours
        ));
        assert!(!from_our_origin(
            &headers(&[("origin", "https://evil.example")]),
            ours
        ));
        assert!(!from_our_origin(&headers(&[("origin", "null")]), ours));
        assert!(from_our_origin(&headers(&[]), ours));
    }
}
