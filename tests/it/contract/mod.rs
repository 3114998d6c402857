//! The OpenAPI document matches the code, checked where clients feel it: every status that real
//! requests produce is documented for their operation, bodies and headers fit what is
//! documented, the document's shape (security, headers, error bodies) holds for every
//! operation, and `/docs` is self-contained and renders in a headless browser. The document is
//! built from the route registrations and each operation's error set, so a status is documented
//! exactly where the code declares it.

mod descriptions;
mod docs_page;
mod jobs;
mod routes;
mod shape;

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use base64::Engine as _;
use common::fixture;
use common::server::http_client as client;
use common::server::{Server, call, get_text, post_png};
use reqwest::StatusCode;
use serde_json::{Value, json};

type Operation = (String, String);

const ADMIN_TOKEN: &str = "openapi-test-admin-token";
const WEBHOOK_SECRET: &str = "whsec_openapi_test";

/// The document as the server builds it.
fn document() -> Value {
    serde_json::to_value(altimage::http::openapi::document()).unwrap()
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

/// The documented operation `request` is for: its method, and the path template its path matches,
/// a literal segment preferred to a parameter the way the router prefers it (`/export` before
/// `/{id}`).
fn operation_of(doc: &Value, request: &reqwest::Request) -> Operation {
    let segments: Vec<&str> = request.url().path().split('/').collect();
    let template = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(part, segment)| part.starts_with('{') || part == segment)
        })
        .min_by_key(|template| {
            let parameters: Vec<bool> = template.split('/').map(|p| p.starts_with('{')).collect();
            parameters
        })
        .unwrap_or_else(|| panic!("{} matches no documented path", request.url()));
    (request.method().as_str().to_lowercase(), template.clone())
}

/// Real answers checked against the document (`check`), with the statuses each operation was seen
/// to answer.
struct Answers<'a> {
    doc: &'a Value,
    seen: BTreeMap<Operation, BTreeSet<u16>>,
}

impl<'a> Answers<'a> {
    fn new(doc: &'a Value) -> Answers<'a> {
        Answers {
            doc,
            seen: BTreeMap::new(),
        }
    }

    /// Checks `response`, the answer to the documented operation `method path`.
    async fn check(
        &mut self,
        method: &str,
        path: &str,
        response: reqwest::Response,
    ) -> (u16, Value) {
        let seen = self
            .seen
            .entry((method.to_string(), path.to_string()))
            .or_default();
        check(self.doc, method, path, response, seen).await
    }

    /// Sends `request` and checks the answer as one to the operation it is for; returns the
    /// request (`METHOD url`), the status and the body.
    async fn exchange(&mut self, request: reqwest::RequestBuilder) -> (String, u16, Value) {
        let (client, request) = request.build_split();
        let request = request.unwrap();
        let target = format!("{} {}", request.method(), request.url());
        let (method, path) = operation_of(self.doc, &request);
        let response = client.execute(request).await.unwrap();
        let (status, body) = self.check(&method, &path, response).await;
        (target, status, body)
    }

    /// Sends `request` and checks the answer as one to the operation it is for.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let (_, status, body) = self.exchange(request).await;
        (status, body)
    }

    /// As `send`, again when the connection breaks (`send_retrying`).
    async fn send_retrying(&mut self, request: reqwest::RequestBuilder) -> (u16, Value) {
        let built = request.try_clone().expect("a cloneable body").build();
        let (method, path) = operation_of(self.doc, &built.unwrap());
        let response = send_retrying(request).await;
        self.check(&method, &path, response).await
    }

    /// Sends each `(status, request)` in turn, as `send` does, and asserts that it answers
    /// `status`.
    async fn expect_statuses<const N: usize>(
        &mut self,
        cases: [(u16, reqwest::RequestBuilder); N],
    ) {
        for (expected, request) in cases {
            let (target, status, body) = self.exchange(request).await;
            assert_eq!(status, expected, "{target}: {body}");
        }
    }

    /// The statuses `method path` was seen to answer.
    fn seen(&self, method: &str, path: &str) -> BTreeSet<u16> {
        let key = (method.to_string(), path.to_string());
        self.seen.get(&key).cloned().unwrap_or_default()
    }
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
    if let Some(properties) = schema["properties"].as_object() {
        return properties
            .iter()
            .map(|(name, property)| (name.clone(), sample(doc, property)))
            .collect();
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

/// Real ids to put in the documented path templates: a stored description (edited once, so
/// that it has versions), the bootstrap account and its key.
struct Ids {
    description: String,
    account: String,
    key: String,
    job: String,
}

impl Ids {
    async fn make(server: &Server, http: &reqwest::Client, admin: &reqwest::Client) -> Ids {
        let (_, _, created) = call(post_png(
            http,
            server.url("/v1/descriptions?asset_id=sku-ids"),
            fixture(0),
        ))
        .await;
        let description = created["id"].as_str().expect("a description").to_string();
        let edited = http
            .patch(server.url(&format!("/v1/descriptions/{description}")))
            .json(&json!({"text": "A test image."}))
            .send()
            .await
            .unwrap();
        assert_eq!(edited.status(), StatusCode::OK);
        let (_, _, account) = call(http.get(server.url("/v1/account"))).await;
        let account = account["id"].as_str().unwrap().to_string();
        let keys_url = server.url(&format!("/v1/admin/accounts/{account}/keys"));
        let (_, _, keys) = call(admin.get(keys_url)).await;
        let key = keys["data"][0]["id"].as_str().unwrap().to_string();
        // A job whose item cannot be fetched: it fails, and is a job all the same.
        let (_, _, job) = call(
            http.post(server.url("/v1/jobs"))
                .json(&json!({"items": [{"image_url": "http://example.invalid/x.png"}]})),
        )
        .await;
        let job = job["id"].as_str().expect("a job").to_string();
        Ids {
            description,
            account,
            key,
            job,
        }
    }

    fn fill(&self, path: &str) -> String {
        let id = if path.starts_with("/v1/admin/") {
            &self.account
        } else if path.starts_with("/v1/jobs/") {
            &self.job
        } else {
            &self.description
        };
        let filled = path.replace("{id}", id).replace("{key_id}", &self.key);
        assert!(!filled.contains('{'), "{path}: a template left unfilled");
        filled
    }
}

/// The `(route, status)` pairs with a count in `metrics` that the document does not list for
/// that route.
fn undocumented(doc: &Value, metrics: &str) -> (usize, Vec<String>) {
    let documented = documented_statuses(doc);
    let (mut counted, mut problems) = (0, Vec::new());
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
        if !documented
            .iter()
            .any(|((_, path), statuses)| *path == route && statuses.contains(&status))
        {
            problems.push(format!(
                "{route} answered {status} {count} times, which is not documented"
            ));
        }
    }
    (counted, problems)
}

/// Every (route, status) that `server` counted in its metrics is documented for that route.
async fn counted_statuses_are_documented(doc: &Value, server: &Server) -> usize {
    let (counted, problems) = undocumented(doc, &server.metrics().await);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    counted
}
