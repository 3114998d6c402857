//! What handlers read from a request, checked before they see it: path ids ([`ApiPath`]), query
//! strings ([`ApiQuery`]), list cursors, JSON bodies ([`ApiJson`]) and the request id
//! ([`RequestId`]). Every string passes [`crate::strings::check`]; every refusal is the API's
//! JSON error naming the parameter or field, so no hostile string reaches a query.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, RawPathParams, Request};
use axum::http::request::Parts;
use axum::http::{Uri, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;
use crate::strings::{self, Shape};

/// Path parameters. Every path parameter of this API is an id, and no id holds a control
/// character or noncharacter: such a path names nothing and is a 404 without a query. A value
/// that is not UTF-8 once percent-decoded is a 400 `invalid_path` (axum's own rejections are
/// plain text). Whether a clean value has the form of an id is the store's question
/// (`Store::*` answer "not found" for any other form without a query), asked after the
/// handler's scope check, so a key without the scope learns nothing from a malformed id.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))?;
        if let Some((name, _)) = raw
            .iter()
            .find(|(_, value)| strings::check(value, Shape::Line).is_err())
        {
            return Err(ApiError::not_found(format!(
                "no such object: the `{name}` in the path holds characters no id has"
            )));
        }
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// The query string as `T`, every name and value checked first; a 400 with the JSON error when
/// it does not fit. Take it as `Result<ApiQuery<T>, ApiError>` where the handler's own checks
/// (the scope first) decide the order of refusals.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        query(&parts.uri).map(ApiQuery)
    }
}

/// The request id the `observe` middleware put on the request (the caller's, when sane).
pub struct RequestId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(request_id(&parts.headers)))
    }
}

/// The request id of a request that went through `observe`.
pub fn request_id(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A body that could not be read: over --max-body-bytes (413) or cut off (400).
pub fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(
            "body_too_large",
            "the request body exceeds --max-body-bytes",
        )
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

/// Parses the query string into `T` after checking every name and value.
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    let invalid = |e: axum::extract::rejection::QueryRejection| {
        ApiError::bad_request("invalid_query", e.body_text())
    };
    let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(invalid)?;
    for (name, value) in &pairs {
        line(name, || "a query parameter's name".to_owned())?;
        line(value, || format!("query parameter `{name}`"))?;
    }
    Query::<T>::try_from_uri(uri)
        .map(|Query(value)| value)
        .map_err(invalid)
}

/// A list route's `limit`: 20 when absent, 1 to 100 when given.
pub fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(20),
        Some(limit) if (1..=100).contains(&limit) => Ok(limit),
        Some(_) => Err(ApiError::bad_request(
            "invalid_limit",
            "`limit` must be between 1 and 100",
        )),
    }
}

/// An id from the path, named by its typed parse (`AccountId::parse`, …): one of another form
/// names nothing, so it is the store's own "not found", without a query.
pub fn known<T>(id: &str, parse: fn(&str) -> Option<T>, what: &'static str) -> Result<T, ApiError> {
    parse(id).ok_or_else(|| crate::store::StoreError::NotFound(what).into())
}

/// A list's `starting_after`: the id of the last object of the previous page, of the kind the
/// list holds (`prefix`).
pub fn cursor(starting_after: Option<String>, prefix: &str) -> Result<Option<String>, ApiError> {
    match starting_after {
        Some(id) if !strings::is_id(&id, prefix) => Err(ApiError::bad_request(
            "invalid_starting_after",
            format!(
                "`starting_after` must be the id of a `{prefix}_…` object from the previous page"
            ),
        )),
        other => Ok(other),
    }
}

/// Refuses `value` unless it is one line without forbidden characters; `field` names it.
pub fn line(value: &str, field: impl FnOnce() -> String) -> Result<(), ApiError> {
    checked(value, Shape::Line, field)
}

fn checked(value: &str, shape: Shape, field: impl FnOnce() -> String) -> Result<(), ApiError> {
    strings::check(value, shape).map_err(|forbidden| {
        ApiError::bad_request(
            "invalid_characters",
            format!("{} contains {forbidden}; remove it", field()),
        )
    })
}

/// Checks every string of a JSON document, object keys included: keys are one line, values may
/// hold line breaks and tabs. The error names the field by its path (`images[2].metadata.colour`).
pub fn check_json(value: &Value) -> Result<(), ApiError> {
    check_json_at(value, "")
}

/// [`check_json`] for a document that sits at `root` in the request (a multipart `metadata`
/// field), so that errors name the same paths as for a JSON body.
pub fn check_json_at(value: &Value, root: &str) -> Result<(), ApiError> {
    fn walk(value: &Value, path: &mut String) -> Result<(), ApiError> {
        let name = |path: &str| {
            if path.is_empty() {
                "the JSON body".to_owned()
            } else {
                format!("`{path}`")
            }
        };
        match value {
            Value::String(text) => checked(text, Shape::Text, || name(path)),
            Value::Array(items) => items.iter().enumerate().try_for_each(|(i, item)| {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                let result = walk(item, path);
                path.truncate(len);
                result
            }),
            Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
                line(key, || format!("a field name in {}", name(path)))?;
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                let result = walk(item, path);
                path.truncate(len);
                result
            }),
            Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
        }
    }
    walk(value, &mut root.to_owned())
}

/// A JSON body (`Content-Type: application/json`), every string checked by [`check_json`]
/// before it becomes a `T`. Take it as `Result<ApiJson<T>, ApiError>` so that the handler's own
/// checks (scope first) decide the order of refusals.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::bad_request(
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_error)?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
        })?;
        check_json(&value)?;
        T::deserialize(value)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(error: ApiError) -> String {
        assert_eq!(error.code(), "invalid_characters");
        error.to_string()
    }

    #[test]
    fn json_strings_are_checked_with_their_path() {
        assert!(check_json(&json!({"text": "two\nlines", "n": 1, "list": [null, true]})).is_ok());
        let error = check_json(&json!({"images": [{}, {"metadata": {"colour": "red\u{0}"}}]}));
        assert_eq!(
            message(error.unwrap_err()),
            "`images[1].metadata.colour` contains U+0000 (NUL) at character 4; remove it"
        );
        let error = check_json(&json!({"metadata": {"a\u{0}": 1}})).unwrap_err();
        assert!(message(error).starts_with("a field name in `metadata` contains U+0000"));
        let error = check_json(&json!("\u{FFFF}")).unwrap_err();
        assert!(message(error).starts_with("the JSON body contains U+FFFF"));
    }

    #[test]
    fn query_values_are_one_line() {
        #[derive(serde::Deserialize)]
        struct Q {
            #[allow(dead_code)]
            asset_id: Option<String>,
        }
        let uri = |q: &str| format!("/v1/descriptions?{q}").parse::<Uri>().unwrap();
        assert!(query::<Q>(&uri("asset_id=sku%2042")).is_ok());
        let error = query::<Q>(&uri("asset_id=sku%0042")).err().unwrap();
        assert_eq!(
            message(error),
            "query parameter `asset_id` contains U+0000 (NUL) at character 4; remove it"
        );
        assert!(query::<Q>(&uri("asset_id=a%0Ab")).is_err());
        let error = query::<Q>(&uri("as%00set_id=1")).err().unwrap();
        assert!(message(error).starts_with("a query parameter's name"));
    }

    #[test]
    fn cursors_are_ids_of_the_listed_kind() {
        let id = crate::store::new_id("desc");
        assert_eq!(cursor(Some(id.clone()), "desc").unwrap(), Some(id.clone()));
        assert_eq!(cursor(None, "desc").unwrap(), None);
        let error = cursor(Some(id), "acct").unwrap_err();
        assert_eq!(error.code(), "invalid_starting_after");
        assert!(cursor(Some("desc_x\0".into()), "desc").is_err());
    }
}
