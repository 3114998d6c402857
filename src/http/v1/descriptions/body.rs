//! Reading a description request from the wire, into the documented request types: a raw image
//! body with options in the query string ([`RawImageQuery`]), a multipart form
//! ([`DescriptionForm`]), or JSON ([`DescriptionJson`], the parser's own type); every string
//! checked. The result is the describe service's `DescribeRequest`, not yet validated.

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, ToSchema};

use crate::describe::{ContextOptions, DescribeOptions, DescribeRequest, ImageSource};
use crate::http::error::{ApiError, ErrorKind};
use crate::http::extract::{body_error, check_json, check_json_at, line};
use crate::http::v1::resources::Metadata;
use crate::model::{Detail, Output};

/// A body form of the describe routes: its own fields around the options every form takes, whose
/// names and documentation are written once here (`RawImageQuery` lists the same names as query
/// parameters; a test checks they agree).
macro_rules! image_form {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $($(#[$first_meta:meta])* pub $first:ident: $first_type:ty,)*
            ..options,
            $(#[$last_meta:meta])* pub $last:ident: $last_type:ty,
        }
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$first_meta])* pub $first: $first_type,)*
            /// Which loaded model answers (`GET /v1/info` lists them with what each can do);
            /// default the first.
            #[schema(example = "Qwen3.5-0.8B-ONNX-OPT")]
            pub model: Option<String>,
            /// The language to write in, BCP 47 (`de`, `pt-BR`); default `en`.
            #[schema(max_length = 35, example = "de")]
            pub language: Option<String>,
            /// The voice of product copy, in a few words (at most 100 characters).
            #[schema(max_length = 100, example = "warm and personal")]
            pub tone: Option<String>,
            /// Florence-2's caption length for alt text (`brief`, the default, `detailed` or
            /// `paragraph`); a model without caption levels refuses it (422).
            #[schema(value_type = Option<Detail>)]
            pub detail: Option<String>,
            /// Cut alt text at a word boundary to at most this many characters (default 125,
            /// or whole when `detail` asks for a longer caption).
            #[schema(minimum = 1)]
            pub max_chars: Option<usize>,
            /// The description's length in words: asked of the model, and cut there. Needs the
            /// `description` output.
            #[schema(minimum = 1, maximum = 1000)]
            pub max_words: Option<usize>,
            /// How many keywords (default 8). Needs the `keywords` output.
            #[schema(minimum = 1, maximum = 50)]
            pub keyword_count: Option<usize>,
            /// Above 0: sample instead of greedy decoding ("give me another version"); at most
            /// 2. Absent or 0: greedy, the same text every time.
            #[schema(minimum = 0.0, maximum = 2.0)]
            pub temperature: Option<f32>,
            /// Nucleus sampling: the smallest set of tokens whose probabilities reach this; with
            /// `temperature` only. Default 1.
            #[schema(exclusive_minimum = 0.0, maximum = 1.0)]
            pub top_p: Option<f32>,
            /// With `temperature`: the same seed and request give the same text. Without one a
            /// seed is drawn and shown in the description's `options`.
            pub seed: Option<u64>,
            /// Generation limit in tokens; at most the server's `limits.max_new_tokens` (`/info`).
            #[schema(minimum = 1)]
            pub max_new_tokens: Option<usize>,
            /// Beam search width, 1 = greedy; at most `limits.max_num_beams` (`/info`).
            #[schema(minimum = 1)]
            pub num_beams: Option<usize>,
            /// Your id for the image, echoed back (with every description of a batch).
            #[schema(max_length = 256, example = "sku-1042")]
            pub asset_id: Option<String>,
            $(#[$last_meta])* pub $last: $last_type,
        }
    };
}

/// What the shop knows about the product: text the model may use, never instructions. Each field
/// is one line; the limits keep it a product brief.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductContextJson {
    #[schema(max_length = 200, example = "Keramikbecher „Morgenrot“")]
    pub title: Option<String>,
    #[schema(max_length = 200, example = "Töpferei Müller")]
    pub brand: Option<String>,
    #[schema(max_length = 200, example = "Küche & Haushalt")]
    pub category: Option<String>,
    /// Up to 30 name/value pairs (names up to 60 characters, values up to 200).
    #[schema(example = json!({"Farbe": "Weiß", "Fassungsvermögen": "350 ml"}))]
    pub attributes: Option<std::collections::BTreeMap<String, String>>,
    /// Up to 30 keywords to work in, each up to 60 characters.
    #[schema(example = json!(["handgemacht", "spülmaschinenfest"]))]
    pub keywords: Option<Vec<String>>,
}

impl From<ProductContextJson> for ContextOptions {
    fn from(json: ProductContextJson) -> Self {
        ContextOptions {
            title: json.title,
            brand: json.brand,
            category: json.category,
            attributes: json.attributes.unwrap_or_default().into_iter().collect(),
            keywords: json.keywords.unwrap_or_default(),
        }
    }
}

/// A `context` sent as JSON text (a form field or a query parameter).
fn context_from_text(text: &str) -> Result<ContextOptions, ApiError> {
    let json: ProductContextJson = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(
            "invalid_context",
            format!("context is not a JSON object of title, brand, category, attributes and keywords: {e}"),
        )
    })?;
    Ok(json.into())
}

/// `outputs` sent as text: names separated by commas.
fn outputs_from_text(text: &str) -> Vec<String> {
    text.split(',')
        .map(|name| name.trim().to_string())
        .collect()
}

image_form! {
/// The JSON form: exactly one of `image_base64` and `image_url`, and options. Unknown fields
/// are refused.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescriptionJson {
    /// The image in standard base64; a data URL (`data:image/png;base64,…`) is accepted.
    #[schema(
        example = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    )]
    pub image_base64: Option<String>,
    /// An http or https URL that the server fetches (size limit, timeout, redirect limit).
    /// Private, loopback, link-local and metadata addresses are refused unless the operator
    /// allows them.
    #[schema(example = "https://images.example.com/shoe.jpg")]
    pub image_url: Option<String>,
    /// What to write, each from its own prompt over the one image: `alt_text` (the default),
    /// `description`, `seo_title` (at most 60 characters), `keywords` (a list).
    #[schema(value_type = Option<Vec<Output>>, example = json!(["alt_text", "description"]))]
    pub outputs: Option<Vec<String>>,
    pub context: Option<ProductContextJson>,
    ..options,
    #[schema(value_type = Option<Metadata>)]
    pub metadata: Option<Value>,
}
}

impl DescriptionJson {
    /// Exactly one of `image_base64` and `image_url`.
    fn into_request(self) -> Result<DescribeRequest, ApiError> {
        let options = DescribeOptions {
            model: self.model,
            outputs: self.outputs,
            detail: self.detail,
            language: self.language,
            context: self.context.map(ContextOptions::from),
            tone: self.tone,
            max_new_tokens: self.max_new_tokens,
            num_beams: self.num_beams,
            max_chars: self.max_chars,
            max_words: self.max_words,
            keyword_count: self.keyword_count,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            asset_id: self.asset_id,
            metadata: self.metadata,
        };
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

/// The JSON batch form.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DescriptionsBatchJson {
    /// Each item as the JSON body of `POST /v1/descriptions`; at least one.
    #[schema(min_items = 1)]
    pub images: Vec<DescriptionJson>,
}

/// Options of the raw-image form, in the query string (also accepted with a multipart body,
/// where form fields win). Read by name with [`RawImageQuery::set`], so that an unknown option
/// and a malformed number each keep their own code.
#[derive(Debug, Default, Clone, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawImageQuery {
    /// Which loaded model answers (`GET /v1/info`); default the first.
    pub model: Option<String>,
    /// What to write, comma-separated: `alt_text` (default), `description`, `seo_title`,
    /// `keywords`.
    #[param(example = "alt_text,description")]
    pub outputs: Option<String>,
    /// The language to write in, BCP 47; default `en`.
    #[param(max_length = 35)]
    pub language: Option<String>,
    /// Product context as JSON text: `{"title", "brand", "category", "attributes", "keywords"}`.
    #[param(example = "{\"title\": \"Stoneware mug\"}")]
    pub context: Option<String>,
    /// The voice of product copy (at most 100 characters).
    #[param(max_length = 100)]
    pub tone: Option<String>,
    /// Florence-2's caption length: `brief` (default), `detailed` or `paragraph`.
    #[param(value_type = Option<Detail>)]
    pub detail: Option<String>,
    /// Cut alt text at a word boundary to at most this many characters (default 125).
    #[param(minimum = 1)]
    pub max_chars: Option<usize>,
    /// The description's length in words (with the `description` output).
    #[param(minimum = 1, maximum = 1000)]
    pub max_words: Option<usize>,
    /// How many keywords (with the `keywords` output; default 8).
    #[param(minimum = 1, maximum = 50)]
    pub keyword_count: Option<usize>,
    /// Generation limit in tokens per output; at most the model's `max_new_tokens` (`/info`).
    #[param(minimum = 1)]
    pub max_new_tokens: Option<usize>,
    /// Beam search width, 1 = greedy; at most the model's `max_num_beams` (`/info`).
    #[param(minimum = 1)]
    pub num_beams: Option<usize>,
    /// Above 0: sample (at most 2); absent or 0: greedy.
    #[param(minimum = 0.0, maximum = 2.0)]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold, with `temperature`; default 1.
    #[param(exclusive_minimum = 0.0, maximum = 1.0)]
    pub top_p: Option<f32>,
    /// With `temperature`: the same seed gives the same text.
    pub seed: Option<u64>,
    /// Your id for the image, echoed back.
    #[param(max_length = 256)]
    pub asset_id: Option<String>,
}

impl RawImageQuery {
    /// The option names, as the document lists them.
    pub const NAMES: [&str; 15] = [
        "model",
        "outputs",
        "language",
        "context",
        "tone",
        "detail",
        "max_chars",
        "max_words",
        "keyword_count",
        "max_new_tokens",
        "num_beams",
        "temperature",
        "top_p",
        "seed",
        "asset_id",
    ];

    /// Sets one option; `Ok(false)` when `name` is none of them.
    fn set(&mut self, name: &str, value: String) -> Result<bool, ApiError> {
        // Context is JSON, whose strings are checked one by one once parsed.
        if name != "context" {
            line(&value, || format!("option `{name}`"))?;
        }
        let invalid = |what: &str| {
            ApiError::bad_request("invalid_option", format!("`{name}` must be {what}"))
        };
        let count = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| invalid("a positive integer"))
        };
        let number = |v: &str| {
            v.parse::<f32>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| invalid("a number"))
        };
        match name {
            "model" => self.model = Some(value),
            "outputs" => self.outputs = Some(value),
            "language" => self.language = Some(value),
            "context" => self.context = Some(value),
            "tone" => self.tone = Some(value),
            "detail" => self.detail = Some(value),
            "max_chars" => self.max_chars = Some(count(&value)?),
            "max_words" => self.max_words = Some(count(&value)?),
            "keyword_count" => self.keyword_count = Some(count(&value)?),
            "max_new_tokens" => self.max_new_tokens = Some(count(&value)?),
            "num_beams" => self.num_beams = Some(count(&value)?),
            "temperature" => self.temperature = Some(number(&value)?),
            "top_p" => self.top_p = Some(number(&value)?),
            "seed" => {
                self.seed = Some(
                    value
                        .parse::<u64>()
                        .map_err(|_| invalid("a non-negative integer"))?,
                )
            }
            "asset_id" => self.asset_id = Some(value),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The query string's options; an unknown name is refused.
    fn from_query(request: &Request) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::try_from_uri(request.uri())
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
        let mut options = Self::default();
        for (name, value) in pairs {
            if !options.set(&name, value)? {
                line(&name, || "a query parameter's name".to_owned())?;
                return Err(ApiError::bad_request(
                    "unknown_option",
                    format!("unknown query option `{name}`"),
                ));
            }
        }
        Ok(options)
    }

    fn options(self, metadata: Option<Value>) -> Result<DescribeOptions, ApiError> {
        Ok(DescribeOptions {
            model: self.model,
            outputs: self.outputs.as_deref().map(outputs_from_text),
            detail: self.detail,
            language: self.language,
            context: self.context.as_deref().map(context_from_text).transpose()?,
            tone: self.tone,
            max_new_tokens: self.max_new_tokens,
            num_beams: self.num_beams,
            max_chars: self.max_chars,
            max_words: self.max_words,
            keyword_count: self.keyword_count,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            asset_id: self.asset_id,
            metadata,
        })
    }
}

/// Image bytes as the whole body (or one form part): JPEG, PNG, WebP, GIF, BMP or TIFF; the
/// format is sniffed from the bytes. Its schema is written by hand: binary has no fields.
pub struct RawImage;

impl utoipa::PartialSchema for RawImage {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/octet-stream")
            .description(Some(
                "Image bytes: JPEG, PNG, WebP, GIF, BMP or TIFF (sniffed from the bytes).",
            ))
            .into()
    }
}

impl ToSchema for RawImage {}

image_form! {
/// The multipart form: one file field `image` and optional text fields. Unknown fields are
/// refused.
// Documentation only: a form has no serde reader, `read_multipart` reads it field by field (a
// test checks the names agree).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DescriptionForm {
    pub image: RawImage,
    /// What to write, comma-separated: `alt_text` (default), `description`, `seo_title`,
    /// `keywords`.
    #[schema(example = "alt_text,description")]
    pub outputs: Option<String>,
    /// Product context as JSON text (the JSON form's `context` object).
    #[schema(example = "{\"title\": \"Stoneware mug\", \"attributes\": {\"colour\": \"white\"}}")]
    pub context: Option<String>,
    ..options,
    /// A JSON object as text (at most 16 KiB), echoed back.
    #[schema(example = "{\"sku\": 1042, \"collection\": \"spring\"}")]
    pub metadata: Option<String>,
}
}

image_form! {
/// The multipart batch form: several `image` file fields; the options apply to every image.
// Documentation only, as `DescriptionForm`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DescriptionsBatchForm {
    /// One field per image, in order.
    #[schema(min_items = 1)]
    pub image: Vec<RawImage>,
    /// What to write, comma-separated (as `DescriptionForm`).
    pub outputs: Option<String>,
    /// Product context as JSON text, for every image.
    pub context: Option<String>,
    ..options,
    /// A JSON object as text, echoed back with every description.
    pub metadata: Option<String>,
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

/// Reads all images of a request: one for `/v1/descriptions`, one or more for the batch route.
pub async fn read_images(
    request: Request,
    allow_many: bool,
) -> Result<Vec<DescribeRequest>, ApiError> {
    let kind = content_type(&request);
    if kind.starts_with("image/") || kind == "application/octet-stream" {
        let query = RawImageQuery::from_query(&request)?;
        let bytes = Bytes::from_request(request, &())
            .await
            .map_err(body_error)?;
        return Ok(vec![DescribeRequest {
            source: ImageSource::Bytes(bytes),
            options: query.options(None)?,
        }]);
    }
    if kind == "multipart/form-data" {
        let query = RawImageQuery::from_query(&request)?;
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
    let kind = if kind.is_empty() { "(none)" } else { &kind };
    Err(ApiError::new(
        ErrorKind::UnsupportedMediaType,
        "unsupported_media_type",
        format!(
            "unsupported content type `{kind}`: send image/*, application/octet-stream, multipart/form-data or application/json"
        ),
    ))
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
        let batch: DescriptionsBatchJson = serde_json::from_value(value).map_err(|e| {
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
            .map(DescriptionJson::into_request)
            .collect();
    }
    let json: DescriptionJson = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?;
    Ok(vec![json.into_request()?])
}

/// The form's fields in any order; its text fields win over the query string's options.
async fn read_multipart(
    mut multipart: Multipart,
    mut options: RawImageQuery,
    allow_many: bool,
) -> Result<Vec<DescribeRequest>, ApiError> {
    let invalid = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(
                "body_too_large",
                "the request body exceeds --max-body-bytes",
            )
        } else {
            ApiError::bad_request("invalid_multipart", e.body_text())
        }
    };
    let mut images = Vec::new();
    let mut metadata = None;
    while let Some(field) = multipart.next_field().await.map_err(invalid)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "image" => images.push(field.bytes().await.map_err(invalid)?),
            "metadata" => {
                let text = field.text().await.map_err(invalid)?;
                let value = serde_json::from_str(&text).map_err(|e| {
                    ApiError::bad_request("invalid_metadata", format!("metadata is not JSON: {e}"))
                })?;
                // A JSON body is checked whole in `read_json`; this field is JSON of its own.
                check_json_at(&value, "metadata")?;
                metadata = Some(value);
            }
            _ if RawImageQuery::NAMES.contains(&name.as_str()) => {
                let text = field.text().await.map_err(invalid)?;
                options.set(&name, text)?;
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
    let options = options.options(metadata)?;
    Ok(images
        .into_iter()
        .map(|bytes| DescribeRequest {
            source: ImageSource::Bytes(bytes),
            options: options.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(q: &str) -> Result<RawImageQuery, ApiError> {
        let request = Request::builder()
            .uri(format!("/v1/descriptions?{q}"))
            .body(axum::body::Body::empty())
            .unwrap();
        RawImageQuery::from_query(&request)
    }

    #[test]
    fn query_options_parse_and_refuse_unknowns() {
        let fields = query("detail=paragraph&max_chars=120&asset_id=sku%2042").unwrap();
        assert_eq!(fields.detail.as_deref(), Some("paragraph"));
        assert_eq!(fields.asset_id.as_deref(), Some("sku 42"));
        assert_eq!(query("colour=red").unwrap_err().code(), "unknown_option");
        assert_eq!(query("max_chars=-3").unwrap_err().code(), "invalid_option");
        assert_eq!(
            query("asset_id=a%00b").unwrap_err().code(),
            "invalid_characters"
        );
    }

    /// The form and query documents list exactly the names the reader takes.
    #[test]
    fn the_documented_options_are_the_ones_read() {
        let params: Vec<String> = RawImageQuery::into_params(|| None)
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(params, RawImageQuery::NAMES);
        let mut options = RawImageQuery::default();
        for name in RawImageQuery::NAMES {
            assert!(options.set(name, "1".into()).unwrap(), "{name}");
        }
        let form =
            serde_json::to_value(<DescriptionForm as utoipa::PartialSchema>::schema()).unwrap();
        let mut fields: Vec<&str> = form["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort();
        let mut expected = [&RawImageQuery::NAMES[..], &["image", "metadata"]].concat();
        expected.sort();
        assert_eq!(fields, expected);
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
