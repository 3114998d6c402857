//! In process: the document's shape holds for every operation (who may call it, the headers
//! every layer adds, error bodies), what the start-up router answers is documented, the JSON
//! form documents the fields its parser reads, and the check of counted statuses catches an
//! undocumented one.

use altimage::http::error::ErrorKind;

use super::*;

/// The router served while the model loads, called in process: what each documented operation
/// answers then.
async fn statuses_while_starting(doc: &Value) -> BTreeMap<Operation, u16> {
    let metrics = std::sync::Arc::new(altimage::metrics::Metrics::new(
        8,
        &altimage::http::success_statuses(),
    ));
    let router = altimage::http::starting_router(metrics, Duration::from_secs(2));
    let base = common::server::serve_on_loopback(router).await;
    let http = client();
    let mut out = BTreeMap::new();
    for (method, path) in documented_statuses(doc).into_keys() {
        let request = match method.as_str() {
            "get" => http.get(format!("{base}{path}")),
            "post" => post_png(&http, format!("{base}{path}"), fixture(0)),
            "patch" => http.patch(format!("{base}{path}")).json(&json!({})),
            "delete" => http.delete(format!("{base}{path}")),
            other => panic!("no request for method {other}"),
        };
        let status = request.send().await.unwrap().status().as_u16();
        out.insert((method, path), status);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn what_the_server_answers_while_starting_is_documented() {
    let doc = document();
    let documented = documented_statuses(&doc);
    for ((method, path), status) in statuses_while_starting(&doc).await {
        assert!(
            documented[&(method.clone(), path.clone())].contains(&status),
            "{method} {path} answers {status} while the model loads, which is not documented"
        );
    }
}

#[test]
fn every_operation_has_its_security_headers_and_error_bodies() {
    let doc = document();
    // The metric series exist for each documented success.
    let documented = documented_statuses(&doc);
    for (path, status) in altimage::http::success_statuses() {
        assert!(
            documented
                .iter()
                .any(|((_, p), statuses)| *p == path && statuses.contains(&status)),
            "{path} {status}"
        );
    }
    // Error bodies carry the `type`s of the one table.
    let types: BTreeSet<&str> = ErrorKind::ALL.iter().map(|k| k.type_name()).collect();
    let documented_types: BTreeSet<&str> =
        doc["components"]["schemas"]["ErrorDetail"]["properties"]["type"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
    assert_eq!(documented_types, types);

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
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(!summary.is_empty(), "{method} {path} has a summary");
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
                // Error answers are the ApiError body, and those with Retry-After say so.
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
                        headers.get("retry-after").is_some(),
                        "{method} {path} {status} documents Retry-After"
                    );
                }
            }
        }
    }
}

/// Every `$ref` names a schema the document has.
#[test]
fn every_reference_resolves() {
    fn walk(value: &Value, schemas: &serde_json::Map<String, Value>, at: &str) {
        match value {
            Value::Object(fields) => {
                if let Some(reference) = fields.get("$ref").and_then(Value::as_str) {
                    let name = reference
                        .strip_prefix("#/components/schemas/")
                        .unwrap_or_else(|| panic!("{at}: a reference outside the schemas"));
                    assert!(schemas.contains_key(name), "{at}: {reference} is missing");
                }
                for (key, field) in fields {
                    walk(field, schemas, &format!("{at}/{key}"));
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, schemas, at)),
            _ => {}
        }
    }
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().unwrap().clone();
    walk(&doc, &schemas, "");
}

/// The check of counted statuses fails on a status the document does not list for the route.
#[test]
fn an_undocumented_status_fails_the_check() {
    let doc = document();
    let metrics = "altimage_requests_total{route=\"/v1/descriptions\",status=\"422\"} 3\n\
                   altimage_requests_total{route=\"/v1/descriptions\",status=\"201\"} 0\n\
                   altimage_requests_total{route=\"/metrics\",status=\"200\"} 1\n";
    assert_eq!(undocumented(&doc, metrics), (2, Vec::new()));
    let mut doc = doc;
    doc["paths"]["/v1/descriptions"]["post"]["responses"]
        .as_object_mut()
        .unwrap()
        .remove("422");
    assert_eq!(
        undocumented(&doc, metrics).1,
        vec!["/v1/descriptions answered 422 3 times, which is not documented".to_string()]
    );
    let metrics = "altimage_requests_total{route=\"/metrics\",status=\"500\"} 1\n";
    assert_eq!(
        undocumented(&document(), metrics).1,
        vec!["/metrics answered 500 1 times, which is not documented".to_string()]
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
    let _ = altimage::http::v1::descriptions::body::DescriptionJson::deserialize(FieldNames(
        &mut fields,
    ));
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
