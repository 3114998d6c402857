//! The OpenAPI document matches the code.
//!
//! In process: per operation, the documented response statuses equal the statuses the handler
//! can answer with (`openapi::handler_statuses`, which derives the description handlers' from the
//! `ApiError` variants they return through `status_of`, plus what the start-up router answers);
//! the JSON body fields are the fields the parser reads. Over real HTTP: every status that real
//! requests produce is documented, bodies and headers fit what is documented, and `/docs` is
//! self-contained and renders in a headless browser when one is installed.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use altimage::http::ROUTES;
use altimage::http::error::{ApiError, status_of};
use altimage::http::openapi::{ApiDoc, DOCS_HTML, every_api_error, handler_statuses};
use base64::Engine as _;
use common::server::Server;
use reqwest::StatusCode;
use serde_json::{Value, json};
use utoipa::OpenApi;

type Operation = (String, String);

fn document() -> Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap()
}

/// `(method, path)` → documented response statuses. Ranges (`4XX`) and `default` are refused:
/// they would make the check meaningless.
fn documented_statuses(doc: &Value) -> BTreeMap<Operation, BTreeSet<u16>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let statuses = operation["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|s| {
                    s.parse::<u16>().unwrap_or_else(|_| {
                        panic!("{method} {path}: response `{s}` is not a status")
                    })
                })
                .collect();
            out.insert((method.clone(), path.clone()), statuses);
        }
    }
    out
}

/// Differences between the documented statuses and the ones the code can answer with.
fn mismatches(
    documented: &BTreeMap<Operation, BTreeSet<u16>>,
    code: &BTreeMap<Operation, BTreeSet<u16>>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for ((method, path), statuses) in code {
        let Some(docs) = documented.get(&(method.clone(), path.clone())) else {
            problems.push(format!("{method} {path} is served but not documented"));
            continue;
        };
        for status in statuses.difference(docs) {
            problems.push(format!(
                "{method} {path} can answer {status}, which is not documented"
            ));
        }
        for status in docs.difference(statuses) {
            problems.push(format!(
                "{method} {path} documents {status}, which the code never answers"
            ));
        }
    }
    for (method, path) in documented.keys() {
        if !code.contains_key(&(method.clone(), path.clone())) {
            problems.push(format!(
                "{method} {path} is documented but has no entry in openapi::handler_statuses"
            ));
        }
    }
    problems
}

/// The router served while the model loads, called in process: what each documented operation
/// answers then.
async fn statuses_while_starting(doc: &Value) -> BTreeMap<Operation, u16> {
    let metrics = std::sync::Arc::new(altimage::metrics::Metrics::new(8, &ROUTES));
    let router = altimage::http::starting_router(metrics, Duration::from_secs(2));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = client();
    let mut out = BTreeMap::new();
    for (method, path) in documented_statuses(doc).into_keys() {
        let request = match method.as_str() {
            "get" => http.get(format!("{base}{path}")),
            "post" => http
                .post(format!("{base}{path}"))
                .header("content-type", "image/png")
                .body(fixture(0)),
            "patch" => http.patch(format!("{base}{path}")).json(&json!({})),
            "delete" => http.delete(format!("{base}{path}")),
            other => panic!("no request for method {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        out.insert((method, path), status);
    }
    out
}

/// The statuses each operation can answer with: its handler's, and the start-up router's.
async fn code_statuses(doc: &Value) -> BTreeMap<Operation, BTreeSet<u16>> {
    let mut code: BTreeMap<Operation, BTreeSet<u16>> = handler_statuses()
        .into_iter()
        .map(|(method, path, statuses)| ((method.to_string(), path.to_string()), statuses))
        .collect();
    for (operation, status) in statuses_while_starting(doc).await {
        if let Some(statuses) = code.get_mut(&operation) {
            statuses.insert(status);
        }
    }
    code
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_statuses_equal_what_the_code_answers() {
    let doc = document();
    let documented = documented_statuses(&doc);
    let code = code_statuses(&doc).await;
    let problems = mismatches(&documented, &code);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // ROUTES lists each route once per success status (for its metric series): those are the
    // 2xx documented for the path, over its methods.
    let mut successes: BTreeMap<&str, BTreeSet<u16>> = BTreeMap::new();
    for (path, success) in ROUTES {
        successes.entry(path).or_default().insert(success);
    }
    for (path, expected) in successes {
        let documented_2xx: BTreeSet<u16> = documented
            .iter()
            .filter(|((_, p), _)| p == path)
            .flat_map(|(_, statuses)| statuses.iter().copied().filter(|s| (200..300).contains(s)))
            .collect();
        assert_eq!(documented_2xx, expected, "{path}");
    }

    // Who may call what: an API key on /v1/, the admin token on /v1/admin/, nothing elsewhere;
    // both are bearer tokens.
    for scheme in ["api_key", "admin_token"] {
        let scheme = &doc["components"]["securitySchemes"][scheme];
        assert_eq!(scheme["type"], "http", "{scheme}");
        assert_eq!(scheme["scheme"], "bearer", "{scheme}");
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            // Stripe's webhook carries no bearer token: its body is signed.
            let expected = if path.starts_with("/v1/stripe/") {
                Value::Null
            } else if path.starts_with("/v1/admin/") {
                json!([{"admin_token": []}])
            } else if path.starts_with("/v1/") {
                json!([{"api_key": []}])
            } else {
                Value::Null
            };
            assert_eq!(operation["security"], expected, "{method} {path}");
            for (status, response) in operation["responses"].as_object().unwrap() {
                let headers = &response["headers"];
                assert!(
                    headers.get("x-request-id").is_some(),
                    "{method} {path} {status} documents x-request-id"
                );
                let rate_limited = path.starts_with("/v1/")
                    && !path.starts_with("/v1/admin/")
                    && !path.starts_with("/v1/stripe/");
                for name in ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"] {
                    assert_eq!(
                        headers.get(name).is_some(),
                        rate_limited && status != "401",
                        "{method} {path} {status} documents {name} where the rate limiter ran"
                    );
                }
            }
        }
    }

    // Error answers are the ApiError body, and those with Retry-After say so.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for (status, response) in operation["responses"].as_object().unwrap() {
                let status: u16 = status.parse().unwrap();
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                if status >= 400 && path.starts_with("/v1/") {
                    assert_eq!(
                        schema, "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
                if schema == "#/components/schemas/ErrorBody" && (status == 429 || status == 503) {
                    assert!(
                        response["headers"].get("retry-after").is_some(),
                        "{method} {path} {status} documents Retry-After"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_undocumented_status_fails_the_check() {
    let doc = document();
    let code = code_statuses(&doc).await;
    let mut documented = documented_statuses(&doc);
    let create = ("post".to_string(), "/v1/descriptions".to_string());
    documented.get_mut(&create).unwrap().remove(&422);
    assert_eq!(
        mismatches(&documented, &code),
        vec!["post /v1/descriptions can answer 422, which is not documented".to_string()]
    );
    // The same on a route whose statuses come from a `*_returns` of the accounts layer.
    let mut documented = documented_statuses(&doc);
    let edit = ("patch".to_string(), "/v1/descriptions/{id}".to_string());
    documented.get_mut(&edit).unwrap().remove(&409);
    documented
        .get_mut(&("get".to_string(), "/v1/admin/accounts".to_string()))
        .unwrap()
        .insert(409);
    assert_eq!(
        mismatches(&documented, &code),
        vec![
            "get /v1/admin/accounts documents 409, which the code never answers".to_string(),
            "patch /v1/descriptions/{id} can answer 409, which is not documented".to_string(),
        ]
    );
    // And a handler that starts returning a variant whose status was not documented.
    let mut code = code;
    code.get_mut(&("get".to_string(), "/metrics".to_string()))
        .unwrap()
        .insert(status_of(&ApiError::Internal("x".into())).0.as_u16());
    assert_eq!(
        mismatches(&documented_statuses(&doc), &code),
        vec!["get /metrics can answer 500, which is not documented".to_string()]
    );
}

/// `every_api_error` has one value of each `ApiError` variant, so that the handlers' exhaustive
/// `*_returns` matches see every status of the table.
#[test]
fn every_api_error_covers_every_variant() {
    let source = std::fs::read_to_string(common::root().join("src/http/error.rs")).unwrap();
    let body = source
        .split("pub enum ApiError {")
        .nth(1)
        .and_then(|rest| rest.split("\n}").next())
        .expect("pub enum ApiError in src/http/error.rs");
    let variants: BTreeSet<&str> = body
        .lines()
        .filter_map(|line| line.strip_prefix("    "))
        .filter(|line| line.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|line| {
            line.split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap()
        })
        .collect();
    let examples = every_api_error();
    let distinct: std::collections::HashSet<_> =
        examples.iter().map(std::mem::discriminant).collect();
    assert_eq!(distinct.len(), examples.len(), "one example per variant");
    assert_eq!(
        examples.len(),
        variants.len(),
        "every_api_error lacks a variant of {variants:?}"
    );
}

/// Captures the field names a `Deserialize` struct reads.
struct FieldNames<'a>(&'a mut Vec<&'static str>);

impl<'de> serde::Deserializer<'de> for FieldNames<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(serde::de::Error::custom("only structs"))
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.extend(fields);
        Err(serde::de::Error::custom("captured"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[test]
fn the_json_form_documents_the_fields_the_parser_reads() {
    use serde::Deserialize;
    let mut fields = Vec::new();
    let _ = altimage::http::input::OptionFields::deserialize(FieldNames(&mut fields));
    let read: BTreeSet<&str> = fields.into_iter().collect();
    let doc = document();
    let documented: BTreeSet<&str> = doc["components"]["schemas"]["DescriptionJson"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(documented, read);
}

// ---------------------------------------------------------------------------------------------
// Over real HTTP.

use common::fixture;
use common::server::http_client as client;

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().unwrap();
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Whether `value` fits `schema`: types, enums, required fields, and no field that is not
/// documented (objects without documented properties are free-form).
fn fits(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(parts) = schema["allOf"].as_array() {
        // `#[serde(flatten)]`: the value has the fields of every part, and only those.
        let mut merged = json!({"type": "object", "properties": {}, "required": []});
        for part in parts {
            let part = resolve(doc, part);
            assert!(part.get("allOf").is_none(), "{at}: nested allOf");
            for (name, property) in part["properties"].as_object().into_iter().flatten() {
                merged["properties"][name] = property.clone();
            }
            for name in part["required"].as_array().into_iter().flatten() {
                merged["required"]
                    .as_array_mut()
                    .unwrap()
                    .push(name.clone());
            }
        }
        return fits(doc, &merged, value, at);
    }
    if let Some(alternatives) = schema["oneOf"].as_array() {
        let matching = alternatives
            .iter()
            .filter(|alt| fits(doc, alt, value, at).is_ok())
            .count();
        return match matching {
            1 => Ok(()),
            n => Err(format!("{at}: {n} alternatives of oneOf fit {value}")),
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let type_ok = types.is_empty()
        || types.iter().any(|t| match *t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            other => panic!("type {other}"),
        });
    if !type_ok {
        return Err(format!("{at}: {value} is not {types:?}"));
    }
    if let Some(values) = schema["enum"].as_array()
        && !values.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {values:?}"));
    }
    if let (Some(object), Some(properties)) = (value.as_object(), schema["properties"].as_object())
    {
        for required in schema["required"].as_array().into_iter().flatten() {
            let name = required.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: required `{name}` is missing"));
            }
        }
        for (name, field) in object {
            let Some(property) = properties.get(name) else {
                return Err(format!("{at}: `{name}` is not documented"));
            };
            fits(doc, property, field, &format!("{at}.{name}"))?;
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            fits(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Checks a real answer against the document: its status is documented for the operation, its
/// documented headers are present, and its JSON body fits the documented schema.
async fn check(
    doc: &Value,
    method: &str,
    path: &str,
    response: reqwest::Response,
    seen: &mut BTreeSet<u16>,
) -> (u16, Value) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let operation = &doc["paths"][path][method];
    let documented = &operation["responses"][status.to_string()];
    assert!(
        documented.is_object(),
        "{method} {path} answered {status}, which is not documented: {}",
        String::from_utf8_lossy(&bytes)
    );
    seen.insert(status);
    let replayed = headers.contains_key("idempotent-replayed");
    for name in documented["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        // Only on replays (checked where the test replays); and a replay is the stored answer,
        // without the timing of the original run.
        let optional = name == "idempotent-replayed"
            || (replayed && ["x-queue-time-ms", "x-inference-time-ms"].contains(&name.as_str()));
        assert!(
            optional || headers.contains_key(name.as_str()),
            "{method} {path} {status}: documented header {name} is missing"
        );
    }
    for name in headers.keys() {
        let name = name.as_str();
        if name.starts_with("ratelimit-") || name.starts_with("x-") || name == "idempotent-replayed"
        {
            assert!(
                documented["headers"].get(name).is_some(),
                "{method} {path} {status}: header {name} is sent but not documented"
            );
        }
    }
    let content_type = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let media = documented["content"].as_object().and_then(|c| {
        c.iter()
            .find(|(k, _)| content_type.starts_with(k.split(';').next().unwrap()))
    });
    let (media_type, media) = media.unwrap_or_else(|| {
        panic!("{method} {path} {status}: content type {content_type} is not documented")
    });
    if media_type == "application/json" {
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        if let Err(problem) = fits(doc, &media["schema"], &body, "body") {
            panic!("{method} {path} {status}: {problem}\n{body}");
        }
        return (status, body);
    }
    (status, Value::Null)
}

/// A value for a documented field or parameter: its example, else its first allowed value,
/// else the smallest allowed number, else "x".
fn sample(doc: &Value, schema: &Value) -> Value {
    if let Some(example) = schema.get("example").or(schema["examples"].get(0)) {
        return example.clone();
    }
    let alternatives = schema["oneOf"].as_array().cloned().unwrap_or_default();
    let schema = alternatives
        .iter()
        .find(|a| a["type"] != "null")
        .unwrap_or(schema);
    let schema = resolve(doc, schema);
    if let Some(example) = schema["examples"].get(0) {
        return example.clone();
    }
    if let Some(values) = schema["enum"].as_array() {
        return values[0].clone();
    }
    let types = schema["type"].to_string();
    if types.contains("integer") {
        return json!(schema["minimum"].as_u64().unwrap_or(1));
    }
    json!("x")
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Serves a PNG slowly, so that a request for it holds its admission permit a while.
async fn slow_image_host(delay: Duration) -> String {
    let png = fixture(2);
    let app = axum::Router::new().route(
        "/slow.png",
        axum::routing::get(move || async move {
            tokio::time::sleep(delay).await;
            png.clone()
        }),
    );
    common::server::serve_on_loopback(app).await
}

/// Sends `request`, again when the connection breaks: a server that answers 413 without reading
/// an oversized body may reset the connection while the client is still writing it. The answer,
/// once one arrives, is checked as usual.
async fn send_retrying(request: reqwest::RequestBuilder) -> reqwest::Response {
    for _ in 0..4 {
        match request.try_clone().expect("a cloneable body").send().await {
            Ok(response) => return response,
            Err(error) => eprintln!("retrying after a transport error: {error}"),
        }
    }
    request.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn real_answers_are_documented() {
    let server = Server::start(&[
        "--allow-private-image-urls",
        "--max-concurrent-images",
        "2",
        "--max-batch-size",
        "2",
        "--max-body-bytes",
        "300000",
        "--max-image-bytes",
        "200000",
        "--shutdown-timeout-secs",
        "30",
        "--admin-token",
        ADMIN_TOKEN,
    ]);
    let http = server.client();
    let admin = server.client_with_key(ADMIN_TOKEN);
    let served = http.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
    assert!(
        served.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let doc: Value = served.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc,
        document(),
        "the served document is the one built from the code"
    );
    for (path, _) in ROUTES {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    // Every documented GET answers with its 2xx, ids filled with real ones; bodies fit. Without
    // the key or the token, the same paths answer the documented 401.
    let ids = Ids::make(&server, &http, &admin).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if item.get("get").is_none() {
            continue;
        }
        let authorised = if path.starts_with("/v1/admin/") {
            &admin
        } else {
            &http
        };
        let url = server.url(&ids.fill(path));
        let response = authorised.get(&url).send().await.unwrap();
        let (status, body) = check(&doc, "get", path, response, &mut BTreeSet::new()).await;
        assert!((200..300).contains(&status), "GET {path}: {status} {body}");
        if path.starts_with("/v1/") {
            let response = client().get(&url).send().await.unwrap();
            let (status, _) = check(&doc, "get", path, response, &mut BTreeSet::new()).await;
            assert_eq!(status, 401, "GET {path} without credentials");
        }
    }

    let create = "/v1/descriptions";
    let operation = &doc["paths"][create]["post"];
    let mut seen = BTreeSet::new();

    // 201 in each body form, with every documented option: the code accepts each of them.
    let query: Vec<(String, String)> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| (text(&p["name"]), text(&sample(&doc, &p["schema"]))))
        .collect();
    assert!(
        query.iter().any(|(name, _)| name == "max_chars"),
        "{query:?}"
    );
    let raw = |body: Vec<u8>, content_type: &str| {
        http.post(server.url(create))
            .header("content-type", content_type)
            .body(body)
    };
    let response = raw(fixture(0), "image/png")
        .query(&query)
        .send()
        .await
        .unwrap();
    let (status, body) = check(&doc, "post", create, response, &mut seen).await;
    assert_eq!(status, 201, "{body}");
    let response = raw(fixture(0), "application/octet-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(&doc, "post", create, response, &mut seen).await.0,
        201
    );

    let content = &operation["requestBody"]["content"];
    let form_schema = resolve(&doc, &content["multipart/form-data"]["schema"]);
    let mut form = reqwest::multipart::Form::new();
    for (name, property) in form_schema["properties"].as_object().unwrap() {
        form = if name == "image" {
            form.part(
                "image",
                reqwest::multipart::Part::bytes(fixture(1)).file_name("a.png"),
            )
        } else {
            form.text(name.clone(), text(&sample(&doc, property)))
        };
    }
    let response = http
        .post(server.url(create))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = check(&doc, "post", create, response, &mut seen).await;
    assert_eq!(status, 201, "{body}");

    let json_schema = resolve(&doc, &content["application/json"]["schema"]);
    let mut request = serde_json::Map::new();
    for (name, property) in json_schema["properties"].as_object().unwrap() {
        let value = match name.as_str() {
            "image_base64" => json!(base64::engine::general_purpose::STANDARD.encode(fixture(1))),
            "image_url" => continue,
            _ => sample(&doc, property),
        };
        request.insert(name.clone(), value);
    }
    let response = http
        .post(server.url(create))
        .json(&request)
        .send()
        .await
        .unwrap();
    let (status, body) = check(&doc, "post", create, response, &mut seen).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["metadata"], request["metadata"]);

    // The 4xx answers.
    for (request, expected) in [
        (
            raw(fixture(0), "image/png").query(&[("detail", "epic")]),
            400,
        ),
        (raw(vec![0u8; 400_000], "image/png"), 413),
        (raw(b"hello".to_vec(), "text/plain"), 415),
        (raw(fixture(2)[..3000].to_vec(), "image/png"), 422),
    ] {
        let response = send_retrying(request).await;
        assert_eq!(
            check(&doc, "post", create, response, &mut seen).await.0,
            expected
        );
    }

    // The batch: a good image and a bad one give 200 with a description and an error.
    let batch = "/v1/descriptions/batch";
    let encoded = base64::engine::general_purpose::STANDARD.encode(fixture(0));
    let images = json!({"images": [{"image_base64": encoded}, {"image_base64": "aGVsbG8="}]});
    let response = http
        .post(server.url(batch))
        .json(&images)
        .send()
        .await
        .unwrap();
    let mut batch_seen = BTreeSet::new();
    let (status, body) = check(&doc, "post", batch, response, &mut batch_seen).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["object"], "description");
    assert!(body["data"][1]["error"]["code"].is_string(), "{body}");
    let response = http
        .post(server.url(batch))
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(&doc, "post", batch, response, &mut batch_seen)
            .await
            .0,
        415
    );

    // 429: two images slowly fetched hold both permits.
    let host = slow_image_host(Duration::from_millis(3000)).await;
    let slow = {
        let url = format!("{host}/slow.png");
        let request = http
            .post(server.url(batch))
            .json(&json!({"images": [{"image_url": url}, {"image_url": url}]}));
        tokio::spawn(async move { request.send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let response = raw(fixture(0), "image/png").send().await.unwrap();
    assert_eq!(
        check(&doc, "post", create, response, &mut seen).await.0,
        429
    );
    let one = json!({"images": [{"image_base64": encoded}]});
    let response = http
        .post(server.url(batch))
        .json(&one)
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(&doc, "post", batch, response, &mut batch_seen)
            .await
            .0,
        429
    );

    // 503 while draining, with the slow request still in flight.
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = raw(fixture(0), "image/png").send().await.unwrap();
    assert_eq!(
        check(&doc, "post", create, response, &mut seen).await.0,
        503
    );
    let response = http
        .post(server.url(batch))
        .json(&images)
        .send()
        .await
        .unwrap();
    assert_eq!(
        check(&doc, "post", batch, response, &mut batch_seen)
            .await
            .0,
        503
    );
    let response = http.get(server.url("/health/ready")).send().await.unwrap();
    assert_eq!(
        check(&doc, "get", "/health/ready", response, &mut BTreeSet::new())
            .await
            .0,
        503
    );

    // Every (route, status) the server counted is documented for that route.
    let counted = counted_statuses_are_documented(&doc, &server).await;
    assert!(counted >= 8, "{counted}");

    let slow = slow.await.unwrap();
    let (status, body) = check(&doc, "post", batch, slow, &mut batch_seen).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][1]["object"], "description", "{body}");
    assert_eq!(
        seen,
        BTreeSet::from([201, 400, 413, 415, 422, 429, 503]),
        "the statuses exercised on {create}"
    );
    assert_eq!(batch_seen, BTreeSet::from([200, 415, 429, 503]));
}

const ADMIN_TOKEN: &str = "openapi-test-admin-token";
const WEBHOOK_SECRET: &str = "whsec_openapi_test";

/// Real ids to put in the documented path templates: a stored description (edited once, so
/// that it has versions), the bootstrap account and its key.
struct Ids {
    description: String,
    account: String,
    key: String,
}

impl Ids {
    async fn make(server: &Server, http: &reqwest::Client, admin: &reqwest::Client) -> Ids {
        let created: Value = http
            .post(server.url("/v1/descriptions?asset_id=sku-ids"))
            .header("content-type", "image/png")
            .body(fixture(0))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let description = created["id"].as_str().expect("a description").to_string();
        let edited = http
            .patch(server.url(&format!("/v1/descriptions/{description}")))
            .json(&json!({"text": "A test image."}))
            .send()
            .await
            .unwrap();
        assert_eq!(edited.status(), StatusCode::OK);
        let account: Value = http
            .get(server.url("/v1/account"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let account = account["id"].as_str().unwrap().to_string();
        let keys: Value = admin
            .get(server.url(&format!("/v1/admin/accounts/{account}/keys")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let key = keys["data"][0]["id"].as_str().unwrap().to_string();
        Ids {
            description,
            account,
            key,
        }
    }

    fn fill(&self, path: &str) -> String {
        let id = if path.starts_with("/v1/admin/") {
            &self.account
        } else {
            &self.description
        };
        let filled = path.replace("{id}", id).replace("{key_id}", &self.key);
        assert!(!filled.contains('{'), "{path}: a template left unfilled");
        filled
    }
}

/// Every (route, status) that `server` counted in its metrics is documented for that route.
async fn counted_statuses_are_documented(doc: &Value, server: &Server) -> usize {
    let metrics = server.metrics().await;
    let documented = documented_statuses(doc);
    let mut counted = 0;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("altimage_requests_total{"))
    {
        let label = |name: &str| {
            line.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap()
                .to_string()
        };
        let (route, status) = (label("route"), label("status"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        if count == 0.0 || route == "unmatched" {
            continue;
        }
        counted += 1;
        let status: u16 = status.parse().unwrap();
        assert!(
            documented
                .iter()
                .any(|((_, path), statuses)| *path == route && statuses.contains(&status)),
            "{route} answered {status} {count} times, which is not documented"
        );
    }
    counted
}

/// What the accounts layer answers, over real HTTP: each operation's success and the error
/// statuses a client can provoke, each checked against the document (status, headers, body).
#[tokio::test(flavor = "multi_thread")]
async fn account_routes_answer_as_documented() {
    let server = Server::start(&[
        "--admin-token",
        ADMIN_TOKEN,
        "--stripe-webhook-secret",
        WEBHOOK_SECRET,
        "--max-body-bytes",
        "1000000",
    ]);
    let doc = document();
    let http = server.client();
    let admin = server.client_with_key(ADMIN_TOKEN);
    let mut seen: BTreeMap<Operation, BTreeSet<u16>> = BTreeMap::new();
    let url = |path: &str| server.url(path);
    // Sends `request` for the documented operation `method path` and checks the answer.
    macro_rules! call {
        ($method:literal, $path:literal, $request:expr) => {{
            let response = $request.send().await.unwrap();
            let key = ($method.to_string(), $path.to_string());
            check(&doc, $method, $path, response, seen.entry(key).or_default()).await
        }};
    }

    // Descriptions: create (with an Idempotency-Key), replay, reuse with another body.
    let png = |i: usize| {
        http.post(url("/v1/descriptions?asset_id=sku-7"))
            .header("content-type", "image/png")
            .body(fixture(i))
    };
    let key = "openapi-idempotency-1";
    let (status, first) = call!(
        "post",
        "/v1/descriptions",
        png(0).header("idempotency-key", key)
    );
    assert_eq!(status, 201, "{first}");
    let response = png(0).header("idempotency-key", key).send().await.unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let (status, replay) = check(
        &doc,
        "post",
        "/v1/descriptions",
        response,
        &mut BTreeSet::new(),
    )
    .await;
    assert_eq!((status, &replay), (201, &first));
    let (status, _) = call!(
        "post",
        "/v1/descriptions",
        png(1).header("idempotency-key", key)
    );
    assert_eq!(status, 409);
    let (status, _) = call!(
        "post",
        "/v1/descriptions",
        png(1).header("idempotency-key", "")
    );
    assert_eq!(status, 400);
    let (status, _) = call!(
        "post",
        "/v1/descriptions",
        client().post(url("/v1/descriptions"))
    );
    assert_eq!(status, 401);
    let id = first["id"].as_str().unwrap().to_string();
    let one = format!("/v1/descriptions/{id}");
    let batch = json!({"images": [{"image_base64": base64::engine::general_purpose::STANDARD.encode(fixture(1))}]});
    let (status, body) = call!(
        "post",
        "/v1/descriptions/batch",
        http.post(url("/v1/descriptions/batch"))
            .header("idempotency-key", "openapi-batch-1")
            .json(&batch)
    );
    assert_eq!(status, 200, "{body}");
    let (status, _) = call!(
        "post",
        "/v1/descriptions/batch",
        http.post(url("/v1/descriptions/batch"))
            .header("idempotency-key", "openapi-batch-1")
            .json(&json!({"images": [{"image_base64": "aGVsbG8="}]}))
    );
    assert_eq!(status, 409);

    // The library.
    let (status, page) = call!(
        "get",
        "/v1/descriptions",
        http.get(url("/v1/descriptions?limit=1&asset_id=sku-7"))
    );
    assert_eq!(status, 200);
    assert_eq!(page["data"][0]["id"], first["id"]);
    for query in ["limit=0", "limit=101", "colour=red"] {
        let (status, _) = call!(
            "get",
            "/v1/descriptions",
            http.get(url(&format!("/v1/descriptions?{query}")))
        );
        assert_eq!(status, 400, "{query}");
    }
    let (status, _) = call!("get", "/v1/descriptions/{id}", http.get(url(&one)));
    assert_eq!(status, 200);
    let (status, _) = call!(
        "get",
        "/v1/descriptions/{id}",
        http.get(url("/v1/descriptions/desc_missing"))
    );
    assert_eq!(status, 404);
    // An id that is not UTF-8 once percent-decoded: the JSON error body, not axum's plain text.
    let (status, refused) = call!(
        "get",
        "/v1/descriptions/{id}",
        http.get(url("/v1/descriptions/%FF"))
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    let (status, edited) = call!(
        "patch",
        "/v1/descriptions/{id}",
        http.patch(url(&one))
            .json(&json!({"text": "A person's words.", "provenance": "human"}))
    );
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["provenance"], "human");
    for body in [
        json!({"text": ""}),
        json!({"text": "x", "provenance": "ai"}),
        json!({"txt": "x"}),
    ] {
        let (status, _) = call!(
            "patch",
            "/v1/descriptions/{id}",
            http.patch(url(&one)).json(&body)
        );
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = call!(
        "patch",
        "/v1/descriptions/{id}",
        http.patch(url("/v1/descriptions/desc_missing"))
            .json(&json!({"text": "x"}))
    );
    assert_eq!(status, 404);
    let (status, versions) = call!(
        "get",
        "/v1/descriptions/{id}/versions",
        http.get(url(&format!("{one}/versions")))
    );
    assert_eq!(status, 200);
    assert_eq!(versions["data"].as_array().unwrap().len(), 2, "{versions}");
    let (status, _) = call!(
        "get",
        "/v1/descriptions/{id}/versions",
        http.get(url("/v1/descriptions/desc_missing/versions"))
    );
    assert_eq!(status, 404);
    // The export: each JSON line is a description as documented.
    let response = http
        .get(url("/v1/descriptions/export"))
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap();
        let schema = json!({"$ref": "#/components/schemas/Description"});
        fits(&doc, &schema, &value, "line").unwrap();
    }
    let (status, _) = call!(
        "get",
        "/v1/descriptions/export",
        http.get(url("/v1/descriptions/export?format=csv&asset_id=sku-7"))
    );
    assert_eq!(status, 200);
    let (status, _) = call!(
        "get",
        "/v1/descriptions/export",
        http.get(url("/v1/descriptions/export?format=xml"))
    );
    assert_eq!(status, 400);

    // The account.
    let (status, usage) = call!("get", "/v1/usage", http.get(url("/v1/usage")));
    assert_eq!(status, 200);
    assert!(usage["totals"]["created"].as_i64().unwrap() >= 2, "{usage}");
    for query in [
        "from=yesterday",
        "from=2026-02-01&to=2026-01-01",
        "from=2020-01-01&to=2026-01-01",
        "day=2026-01-01",
    ] {
        let (status, _) = call!(
            "get",
            "/v1/usage",
            http.get(url(&format!("/v1/usage?{query}")))
        );
        assert_eq!(status, 400, "{query}");
    }
    let (status, account) = call!(
        "patch",
        "/v1/account",
        http.patch(url("/v1/account"))
            .json(&json!({"restricted": true}))
    );
    assert_eq!(status, 200);
    assert_eq!(account["restricted_by"], "account");
    // Refused before the body is read: the server may close the connection after answering,
    // so this request does not leave it in the client's pool for the next one.
    let (status, refused) = call!(
        "post",
        "/v1/descriptions",
        png(2).header("connection", "close")
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("account_restricted"))
    );
    let (status, _) = call!(
        "patch",
        "/v1/account",
        http.patch(url("/v1/account"))
            .json(&json!({"restricted": "yes"}))
    );
    assert_eq!(status, 400);
    let account_id = account["id"].as_str().unwrap().to_string();
    // Restricted by the operator: the account cannot lift it.
    let (status, _) = call!(
        "patch",
        "/v1/admin/accounts/{id}",
        admin
            .patch(url(&format!("/v1/admin/accounts/{account_id}")))
            .json(&json!({"restricted": true}))
    );
    assert_eq!(status, 200);
    let (status, _) = call!(
        "patch",
        "/v1/account",
        http.patch(url("/v1/account"))
            .json(&json!({"restricted": false}))
    );
    assert_eq!(status, 400);
    let (status, lifted) = call!(
        "patch",
        "/v1/admin/accounts/{id}",
        admin
            .patch(url(&format!("/v1/admin/accounts/{account_id}")))
            .json(&json!({"restricted": false}))
    );
    assert_eq!(status, 200);
    assert!(lifted["restricted_by"].is_null(), "{lifted}");
    let (status, export) = call!(
        "get",
        "/v1/account/export",
        http.get(url("/v1/account/export"))
    );
    assert_eq!(status, 200);
    assert!(export["descriptions"][0]["versions"].is_array(), "{export}");

    // Admin: accounts and keys.
    let (status, other) = call!(
        "post",
        "/v1/admin/accounts",
        admin.post(url("/v1/admin/accounts")).json(&json!({
            "name": "Other", "email": "other@example.com", "stripe_customer_id": "cus_openapi",
            "rate_limit_per_minute": 1,
        }))
    );
    assert_eq!(status, 201, "{other}");
    let other_id = other["id"].as_str().unwrap().to_string();
    let other_path = format!("/v1/admin/accounts/{other_id}");
    let (status, _) = call!(
        "post",
        "/v1/admin/accounts",
        admin.post(url("/v1/admin/accounts")).json(&json!({
            "name": "Third", "email": "third@example.com", "stripe_customer_id": "cus_openapi",
        }))
    );
    assert_eq!(status, 409);
    for body in [json!({"name": "x", "email": "no-at"}), json!({"name": "x"})] {
        let (status, _) = call!(
            "post",
            "/v1/admin/accounts",
            admin.post(url("/v1/admin/accounts")).json(&body)
        );
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = call!(
        "post",
        "/v1/admin/accounts",
        client().post(url("/v1/admin/accounts")).json(&json!({}))
    );
    assert_eq!(status, 401);
    let (status, _) = call!(
        "get",
        "/v1/admin/accounts",
        admin.get(url("/v1/admin/accounts?limit=1"))
    );
    assert_eq!(status, 200);
    let (status, _) = call!(
        "get",
        "/v1/admin/accounts",
        admin.get(url("/v1/admin/accounts?limit=500"))
    );
    assert_eq!(status, 400);
    let (status, _) = call!(
        "get",
        "/v1/admin/accounts/{id}",
        admin.get(url("/v1/admin/accounts/acct_missing"))
    );
    assert_eq!(status, 404);
    let (status, _) = call!(
        "patch",
        "/v1/admin/accounts/{id}",
        admin
            .patch(url(&other_path))
            .json(&json!({"stripe_customer_id": null, "rate_limit_per_minute": 0}))
    );
    assert_eq!(status, 400);
    let (status, _) = call!(
        "patch",
        "/v1/admin/accounts/{id}",
        admin
            .patch(url("/v1/admin/accounts/acct_missing"))
            .json(&json!({}))
    );
    assert_eq!(status, 404);
    let (status, created_key) = call!(
        "post",
        "/v1/admin/accounts/{id}/keys",
        admin
            .post(url(&format!("{other_path}/keys")))
            .json(&json!({"name": "reader", "scopes": ["read"]}))
    );
    assert_eq!(status, 201, "{created_key}");
    let (status, _) = call!(
        "post",
        "/v1/admin/accounts/{id}/keys",
        admin
            .post(url(&format!("{other_path}/keys")))
            .json(&json!({"scopes": ["write"]}))
    );
    assert_eq!(status, 400);
    let (status, _) = call!(
        "post",
        "/v1/admin/accounts/{id}/keys",
        admin
            .post(url("/v1/admin/accounts/acct_missing/keys"))
            .json(&json!({}))
    );
    assert_eq!(status, 404);
    let (status, _) = call!(
        "get",
        "/v1/admin/accounts/{id}/keys",
        admin.get(url("/v1/admin/accounts/acct_missing/keys"))
    );
    assert_eq!(status, 404);

    // The read-only key of an account limited to one request per minute: a missing scope, then
    // the rate limit; tenant isolation gives 404.
    let reader = server.client_with_key(created_key["key"].as_str().unwrap());
    let (status, refused) = call!("delete", "/v1/descriptions/{id}", reader.delete(url(&one)));
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("missing_scope"))
    );
    let (status, limited) = call!("get", "/v1/descriptions/{id}", reader.get(url(&one)));
    assert_eq!(
        (status, limited["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let (status, _) = call!(
        "delete",
        "/v1/admin/accounts/{id}/keys/{key_id}",
        admin.delete(url(&format!(
            "{other_path}/keys/{}",
            created_key["id"].as_str().unwrap()
        )))
    );
    assert_eq!(status, 200);
    let (status, _) = call!(
        "delete",
        "/v1/admin/accounts/{id}/keys/{key_id}",
        admin.delete(url(&format!("{other_path}/keys/key_missing")))
    );
    assert_eq!(status, 404);
    let (status, _) = call!(
        "delete",
        "/v1/admin/accounts/{id}/keys/{key_id}",
        admin.delete(url(&format!("{other_path}/keys/%FE")))
    );
    assert_eq!(status, 400);
    let (status, _) = call!("get", "/v1/descriptions/{id}", reader.get(url(&one)));
    assert_eq!(status, 401);
    // A key of a third account deletes that account itself.
    let (_, third) = call!(
        "post",
        "/v1/admin/accounts",
        admin
            .post(url("/v1/admin/accounts"))
            .json(&json!({"name": "Third", "email": "third@example.com"}))
    );
    let third_path = format!("/v1/admin/accounts/{}", third["id"].as_str().unwrap());
    let (_, third_key) = call!(
        "post",
        "/v1/admin/accounts/{id}/keys",
        admin
            .post(url(&format!("{third_path}/keys")))
            .json(&json!({}))
    );
    let third_client = server.client_with_key(third_key["key"].as_str().unwrap());
    let (status, _) = call!("get", "/v1/descriptions/{id}", third_client.get(url(&one)));
    assert_eq!(status, 404);
    let (status, deleted) = call!(
        "delete",
        "/v1/account",
        third_client.delete(url("/v1/account"))
    );
    assert_eq!(status, 202);
    assert!(deleted["purge_after"].is_i64(), "{deleted}");
    let (status, _) = call!("get", "/v1/account", third_client.get(url("/v1/account")));
    assert_eq!(status, 401);
    let (status, _) = call!(
        "delete",
        "/v1/admin/accounts/{id}",
        admin.delete(url(&other_path))
    );
    assert_eq!(status, 202);
    let (status, _) = call!(
        "delete",
        "/v1/admin/accounts/{id}",
        admin.delete(url("/v1/admin/accounts/acct_missing"))
    );
    assert_eq!(status, 404);

    // Deleting a description.
    let (status, gone) = call!("delete", "/v1/descriptions/{id}", http.delete(url(&one)));
    assert_eq!(status, 200);
    assert_eq!(gone["deleted"], true);
    let (status, _) = call!("delete", "/v1/descriptions/{id}", http.delete(url(&one)));
    assert_eq!(status, 404);

    // Billing: the operator's reports (none are dead here), the retry of an unknown report, and
    // Stripe's webhook refusing what it cannot verify and acknowledging what it can.
    let (status, reports) = call!(
        "get",
        "/v1/admin/billing/reports",
        admin.get(url("/v1/admin/billing/reports?limit=5"))
    );
    assert_eq!((status, &reports["data"]), (200, &json!([])), "{reports}");
    for query in ["limit=0", "status=lost", "colour=red"] {
        let (status, _) = call!(
            "get",
            "/v1/admin/billing/reports",
            admin.get(url(&format!("/v1/admin/billing/reports?{query}")))
        );
        assert_eq!(status, 400, "{query}");
    }
    let (status, _) = call!(
        "get",
        "/v1/admin/billing/reports",
        client().get(url("/v1/admin/billing/reports"))
    );
    assert_eq!(status, 401);
    let (status, _) = call!(
        "post",
        "/v1/admin/billing/reports/{id}/retry",
        admin.post(url("/v1/admin/billing/reports/mr_missing/retry"))
    );
    assert_eq!(status, 404);
    let (status, refused) = call!(
        "post",
        "/v1/admin/billing/reports/{id}/retry",
        admin.post(url("/v1/admin/billing/reports/%FF/retry"))
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    let (status, _) = call!(
        "post",
        "/v1/admin/billing/reports/{id}/retry",
        client().post(url("/v1/admin/billing/reports/mr_missing/retry"))
    );
    assert_eq!(status, 401);
    let event = json!({"id": "evt_openapi", "object": "event", "type": "invoice.created",
        "data": {"object": {"id": "in_1"}}})
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signed = |body: &str, secret: &str| {
        let signature = altimage::billing::webhook::sign(now, body.as_bytes(), secret);
        client()
            .post(url("/v1/stripe/webhook"))
            .header("content-type", "application/json")
            .header("stripe-signature", format!("t={now},v1={signature}"))
            .body(body.to_string())
    };
    let (status, refused) = call!("post", "/v1/stripe/webhook", signed(&event, "whsec_wrong"));
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_signature"))
    );
    let (status, _) = call!(
        "post",
        "/v1/stripe/webhook",
        client().post(url("/v1/stripe/webhook")).body(event.clone())
    );
    assert_eq!(status, 400);
    let (status, refused) = call!(
        "post",
        "/v1/stripe/webhook",
        signed("{\"type\": \"invoice.created\"}", WEBHOOK_SECRET)
    );
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_event"))
    );
    // An oversized delivery gets the JSON error like every other route, not a bare 413.
    let oversized = format!(
        "{{\"id\": \"evt_big\", \"pad\": \"{}\"}}",
        "x".repeat(1_100_000)
    );
    let response = send_retrying(signed(&oversized, WEBHOOK_SECRET)).await;
    let (status, refused) = check(
        &doc,
        "post",
        "/v1/stripe/webhook",
        response,
        seen.entry(("post".into(), "/v1/stripe/webhook".into()))
            .or_default(),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let (status, received) = call!("post", "/v1/stripe/webhook", signed(&event, WEBHOOK_SECRET));
    assert_eq!((status, &received), (200, &json!({"received": true})));

    // What each operation was seen to answer: every client-caused status it documents.
    let expect = |method: &str, path: &str, statuses: &[u16]| {
        let key = (method.to_string(), path.to_string());
        let seen = seen.get(&key).cloned().unwrap_or_default();
        assert_eq!(
            seen,
            statuses.iter().copied().collect::<BTreeSet<u16>>(),
            "{method} {path}"
        );
    };
    expect("post", "/v1/descriptions", &[201, 400, 401, 403, 409]);
    expect("post", "/v1/descriptions/batch", &[200, 409]);
    expect("get", "/v1/descriptions", &[200, 400]);
    expect("get", "/v1/descriptions/{id}", &[200, 400, 401, 404, 429]);
    expect("patch", "/v1/descriptions/{id}", &[200, 400, 404]);
    expect("delete", "/v1/descriptions/{id}", &[200, 403, 404]);
    expect("get", "/v1/descriptions/{id}/versions", &[200, 404]);
    expect("get", "/v1/descriptions/export", &[200, 400]);
    expect("get", "/v1/usage", &[200, 400]);
    expect("patch", "/v1/account", &[200, 400]);
    expect("get", "/v1/account", &[401]);
    expect("delete", "/v1/account", &[202]);
    expect("get", "/v1/account/export", &[200]);
    expect("post", "/v1/admin/accounts", &[201, 400, 401, 409]);
    expect("get", "/v1/admin/accounts", &[200, 400]);
    expect("get", "/v1/admin/accounts/{id}", &[404]);
    expect("patch", "/v1/admin/accounts/{id}", &[200, 400, 404]);
    expect("delete", "/v1/admin/accounts/{id}", &[202, 404]);
    expect("post", "/v1/admin/accounts/{id}/keys", &[201, 400, 404]);
    expect("get", "/v1/admin/accounts/{id}/keys", &[404]);
    expect(
        "delete",
        "/v1/admin/accounts/{id}/keys/{key_id}",
        &[200, 400, 404],
    );
    expect("get", "/v1/admin/billing/reports", &[200, 400, 401]);
    expect(
        "post",
        "/v1/admin/billing/reports/{id}/retry",
        &[400, 401, 404],
    );
    expect("post", "/v1/stripe/webhook", &[200, 400, 413]);
    assert!(counted_statuses_are_documented(&doc, &server).await >= 20);
}

/// Without `--admin-token` the admin routes do not exist: 404, as documented.
#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_are_off_without_a_token() {
    let server = Server::start(&[]);
    let doc = document();
    let response = client()
        .get(server.url("/v1/admin/accounts"))
        .header("authorization", "Bearer anything")
        .send()
        .await
        .unwrap();
    let (status, _) = check(
        &doc,
        "get",
        "/v1/admin/accounts",
        response,
        &mut BTreeSet::new(),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_is_self_contained_and_renders() {
    for needle in ["http://", "https://", "<link", "@import", "url(", " src="] {
        assert!(
            !DOCS_HTML.to_ascii_lowercase().contains(needle),
            "docs.html contains `{needle}`: it must load nothing from elsewhere"
        );
    }
    let server = Server::start(&[]);
    let response = client().get(server.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = response.text().await.unwrap();
    assert_eq!(html, DOCS_HTML);

    let chromium = std::path::Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        // `make test` installs it (scripts/install-test-browser.sh) and sets this, so CI cannot
        // pass without the browser check; a bare `cargo test` elsewhere may skip it.
        assert!(
            std::env::var_os("ALTIMAGE_REQUIRE_BROWSER").is_none(),
            "ALTIMAGE_REQUIRE_BROWSER is set but /usr/bin/chromium is missing: run scripts/install-test-browser.sh"
        );
        eprintln!("NOTE: /usr/bin/chromium is not installed; the rendering check is skipped");
        return;
    }
    let profile = tempfile::tempdir().unwrap();
    let url = server.url("/docs");
    let dom = tokio::task::spawn_blocking(move || {
        // To a file: the DOM is larger than a pipe's buffer.
        let dom_path = profile.path().join("dom.html");
        let mut child = std::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--virtual-time-budget=10000",
            ])
            .arg(format!(
                "--user-data-dir={}",
                profile.path().join("profile").display()
            ))
            .args(["--dump-dom", &url])
            .stdout(std::fs::File::create(&dom_path).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromium");
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("chromium did not finish in 90 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(&dom_path).unwrap()
    })
    .await
    .unwrap();
    assert!(
        dom.contains("data-state=\"ready\""),
        "the page did not render the document:\n{dom}"
    );
    let doc = document();
    let mut expected: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    expected.extend(
        doc["components"]["schemas"]
            .as_object()
            .unwrap()
            .keys()
            .cloned(),
    );
    expected.extend(
        [
            "image/*",
            "application/octet-stream",
            "multipart/form-data",
            "application/json",
        ]
        .map(String::from),
    );
    expected.extend(["max_chars", "Retry-After", "x-request-id"].map(String::from));
    for needle in expected {
        assert!(
            dom.contains(&format!(">{needle}<")) || dom.contains(&needle),
            "the page shows {needle}"
        );
    }
    assert!(
        dom.contains(">/v1/descriptions<"),
        "the page lists /v1/descriptions"
    );
    // Composed schemas (`allOf`) list the fields of every part.
    let section = |name: &str| {
        let start = dom
            .find(&format!("id=\"schema-{name}\""))
            .unwrap_or_else(|| panic!("no section for {name}"));
        let end = dom[start..].find("</section>").unwrap() + start;
        dom[start..end].to_string()
    };
    for (schema, fields) in [
        ("CreatedKeyBody", ["key", "prefix", "scopes"]),
        ("ExportedDescription", ["versions", "text", "asset_id"]),
    ] {
        let shown = section(schema);
        for field in fields {
            assert!(
                shown.contains(&format!("<code>{field}</code>")),
                "{schema} shows its field {field}:\n{shown}"
            );
        }
    }
    // Examples carry the credential each route needs, and concrete ids rather than `{id}`.
    assert!(
        dom.contains("Authorization: Bearer $ALTIMAGE_API_KEY"),
        "API-key examples"
    );
    assert!(
        dom.contains("Authorization: Bearer $ALTIMAGE_ADMIN_TOKEN"),
        "admin examples"
    );
    assert!(
        dom.contains("/v1/descriptions/desc_0192f4c5a1b27c3d8e9f0a1b2c3d4e5f"),
        "path parameters filled from their examples"
    );
}
