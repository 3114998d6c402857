//! Reading a description request from the wire: raw image body, multipart field `image`, or JSON
//! with `image_base64` / `image_url`; options from JSON fields, form fields or the query string.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::header::CONTENT_TYPE;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{check_json, check_json_at, line};
use crate::describe::{DescribeOptions, DescribeRequest, ImageSource};

/// Options as they appear in JSON, a form or a query string.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptionFields {
    pub detail: Option<String>,
    pub max_chars: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub num_beams: Option<usize>,
    pub asset_id: Option<String>,
    pub metadata: Option<Value>,
    pub image_base64: Option<String>,
    pub image_url: Option<String>,
}

impl OptionFields {
    /// What the caller said, for the describe service's validation stage.
    fn options(&self) -> DescribeOptions {
        DescribeOptions {
            detail: self.detail.clone(),
            max_new_tokens: self.max_new_tokens,
            num_beams: self.num_beams,
            max_chars: self.max_chars,
            asset_id: self.asset_id.clone(),
            metadata: self.metadata.clone(),
        }
    }

    /// The JSON form: exactly one of `image_base64` and `image_url`.
    pub fn into_image_request(self) -> Result<DescribeRequest, ApiError> {
        let options = self.options();
        let source = match (self.image_base64, self.image_url) {
            (Some(data), None) => ImageSource::Bytes(decode_base64(&data)?),
            (None, Some(url)) => ImageSource::Url(url),
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "ambiguous_image",
                    "send either image_base64 or image_url, not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "missing_image",
                    "send image_base64 or image_url",
                ));
            }
        };
        Ok(DescribeRequest { source, options })
    }
}

fn decode_base64(data: &str) -> Result<Bytes, ApiError> {
    // Accept data URLs, which browsers produce.
    let payload = match data.strip_prefix("data:") {
        Some(rest) => rest.split_once(";base64,").map(|(_, b)| b).unwrap_or(rest),
        None => data,
    };
    // Line-wrapped base64 needs a copy without the breaks; the usual unwrapped form is decoded
    // where it is, so a large image is not held a third time.
    let cleaned: std::borrow::Cow<'_, str> = if payload.bytes().any(|b| b.is_ascii_whitespace()) {
        payload
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect::<String>()
            .into()
    } else {
        payload.into()
    };
    base64::engine::general_purpose::STANDARD
        .decode(cleaned.as_bytes())
        .map(Bytes::from)
        .map_err(|e| {
            ApiError::bad_request(
                "invalid_base64",
                format!("image_base64 is not valid base64: {e}"),
            )
        })
}

fn content_type(request: &Request) -> String {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

fn query_options(request: &Request) -> Result<OptionFields, ApiError> {
    let query = request.uri().query().unwrap_or_default();
    serde_urlencoded_fields(query)
}

/// Query strings carry only scalar options.
fn serde_urlencoded_fields(query: &str) -> Result<OptionFields, ApiError> {
    let mut fields = OptionFields::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        line(&value, || format!("option `{key}`"))?;
        let number = |v: &str| {
            v.parse::<usize>().map_err(|_| {
                ApiError::bad_request(
                    "invalid_option",
                    format!("`{key}` must be a positive integer"),
                )
            })
        };
        match key {
            "detail" => fields.detail = Some(value),
            "max_chars" => fields.max_chars = Some(number(&value)?),
            "max_new_tokens" => fields.max_new_tokens = Some(number(&value)?),
            "num_beams" => fields.num_beams = Some(number(&value)?),
            "asset_id" => fields.asset_id = Some(value),
            other => {
                return Err(ApiError::bad_request(
                    "unknown_option",
                    format!("unknown query option `{other}`"),
                ));
            }
        }
    }
    Ok(fields)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads all images of a request: one for `/v1/descriptions`, one or more for the batch route.
pub async fn read_images(
    request: Request,
    allow_many: bool,
) -> Result<Vec<DescribeRequest>, ApiError> {
    let kind = content_type(&request);
    if kind.starts_with("image/") || kind == "application/octet-stream" {
        let fields = query_options(&request)?;
        let bytes = Bytes::from_request(request, &())
            .await
            .map_err(body_error)?;
        return Ok(vec![DescribeRequest {
            source: ImageSource::Bytes(bytes),
            options: fields.options(),
        }]);
    }
    if kind == "multipart/form-data" {
        let query = query_options(&request)?;
        let multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| ApiError::bad_request("invalid_multipart", e.body_text()))?;
        return read_multipart(multipart, query, allow_many).await;
    }
    if kind == "application/json" {
        let body = Bytes::from_request(request, &())
            .await
            .map_err(body_error)?;
        return read_json(body, allow_many);
    }
    Err(ApiError::UnsupportedMediaType(if kind.is_empty() {
        "(none)".into()
    } else {
        kind
    }))
}

/// A body that could not be read: over --max-body-bytes (413) or cut off (400).
pub(crate) fn body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(
            "body_too_large",
            "the request body exceeds --max-body-bytes",
        )
    } else {
        ApiError::bad_request("invalid_body", rejection.body_text())
    }
}

/// Takes the body by value so that it is gone once parsed: a large image is then held as the
/// parsed base64 text and, once decoded, its bytes, never as three copies.
fn read_json(body: Bytes, allow_many: bool) -> Result<Vec<DescribeRequest>, ApiError> {
    let value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {e}"))
    })?;
    drop(body);
    check_json(&value)?;
    if allow_many {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Batch {
            images: Vec<OptionFields>,
        }
        let batch: Batch = serde_json::from_value(value).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("expected {{\"images\": [...]}}: {e}"),
            )
        })?;
        if batch.images.is_empty() {
            return Err(ApiError::bad_request("missing_image", "`images` is empty"));
        }
        return batch
            .images
            .into_iter()
            .map(OptionFields::into_image_request)
            .collect();
    }
    let fields: OptionFields = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    Ok(vec![fields.into_image_request()?])
}

async fn read_multipart(
    mut multipart: Multipart,
    mut fields: OptionFields,
    allow_many: bool,
) -> Result<Vec<DescribeRequest>, ApiError> {
    let invalid = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(
                "body_too_large",
                "the request body exceeds --max-body-bytes",
            )
        } else {
            ApiError::bad_request("invalid_multipart", e.body_text())
        }
    };
    let mut images = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(invalid)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" => images.push(field.bytes().await.map_err(invalid)?),
            "metadata" => {
                let text = field.text().await.map_err(invalid)?;
                let metadata = serde_json::from_str(&text).map_err(|e| {
                    ApiError::bad_request("invalid_metadata", format!("metadata is not JSON: {e}"))
                })?;
                // A JSON body is checked whole in `read_json`; this field is JSON of its own.
                check_json_at(&metadata, "metadata")?;
                fields.metadata = Some(metadata);
            }
            "detail" | "max_chars" | "max_new_tokens" | "num_beams" | "asset_id" => {
                let text = field.text().await.map_err(invalid)?;
                let single = serde_urlencoded_fields(&format!("{name}={text}"))?;
                merge(&mut fields, single);
            }
            other => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!("unknown form field `{other}`"),
                ));
            }
        }
    }
    if images.is_empty() {
        return Err(ApiError::bad_request(
            "missing_image",
            "the form has no `image` field",
        ));
    }
    if !allow_many && images.len() > 1 {
        return Err(ApiError::bad_request(
            "too_many_images",
            "send one `image` field here; use /v1/descriptions/batch for several",
        ));
    }
    let options = fields.options();
    Ok(images
        .into_iter()
        .map(|bytes| DescribeRequest {
            source: ImageSource::Bytes(bytes),
            options: options.clone(),
        })
        .collect())
}

fn merge(into: &mut OptionFields, from: OptionFields) {
    into.detail = from.detail.or(into.detail.take());
    into.max_chars = from.max_chars.or(into.max_chars);
    into.max_new_tokens = from.max_new_tokens.or(into.max_new_tokens);
    into.num_beams = from.num_beams.or(into.num_beams);
    into.asset_id = from.asset_id.or(into.asset_id.take());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_options_parse_and_refuse_unknowns() {
        let fields =
            serde_urlencoded_fields("detail=paragraph&max_chars=120&asset_id=sku%2042").unwrap();
        assert_eq!(fields.detail.as_deref(), Some("paragraph"));
        assert_eq!(fields.asset_id.as_deref(), Some("sku 42"));
        assert!(serde_urlencoded_fields("colour=red").is_err());
        assert!(serde_urlencoded_fields("max_chars=-3").is_err());
    }

    #[test]
    fn base64_accepts_data_urls_and_refuses_garbage() {
        assert_eq!(
            decode_base64("data:image/png;base64,aGVsbG8=").unwrap(),
            Bytes::from_static(b"hello")
        );
        assert_eq!(
            decode_base64("aGVs\nbG8=").unwrap(),
            Bytes::from_static(b"hello")
        );
        assert!(decode_base64("not base64!").is_err());
    }
}
