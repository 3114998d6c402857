//! The describe routes over real HTTP: every body form and documented option accepted, the
//! 4xx, 429 and 503 answers provoked, each checked against the document.

use super::*;

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
        // The second model, for the options only an instruct model takes.
        "--model-dir",
        common::tiny_qwen_dir().to_str().unwrap(),
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
    for (path, _) in altimage::http::success_statuses() {
        assert!(doc["paths"].get(&path).is_some(), "{path} is documented");
    }
    // Every documented GET answers with its 2xx, ids filled with real ones; bodies fit. Without
    // the key or the token, the same paths answer the documented 401.
    let ids = Ids::make(&server, &http, &admin).await;
    let mut answers = Answers::new(&doc);
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
        let (status, body) = answers.check("get", path, response).await;
        assert!((200..300).contains(&status), "GET {path}: {status} {body}");
        if path.starts_with("/v1/") {
            let response = client().get(&url).send().await.unwrap();
            let (status, _) = answers.check("get", path, response).await;
            assert_eq!(status, 401, "GET {path} without credentials");
        }
    }

    let create = "/v1/descriptions";
    let operation = &doc["paths"][create]["post"];

    // 201 in each body form, with every documented option: the code accepts each of them.
    let query: Vec<(String, String)> = operation["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["in"] == "query")
        .filter_map(|p| {
            let name = text(&p["name"]);
            let value =
                florence_value(&name, true).unwrap_or_else(|| Some(sample(&doc, &p["schema"])))?;
            Some((name, text(&value)))
        })
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
    let (status, body) = answers
        .send(raw(fixture(0), "image/png").query(&query))
        .await;
    assert_eq!(status, 201, "{body}");
    answers
        .expect_statuses([(201, raw(fixture(0), "application/octet-stream"))])
        .await;

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
            match florence_value(name, true).unwrap_or_else(|| Some(sample(&doc, property))) {
                Some(value) => form.text(name.clone(), text(&value)),
                None => form,
            }
        };
    }
    let (status, body) = answers
        .send(http.post(server.url(create)).multipart(form))
        .await;
    assert_eq!(status, 201, "{body}");

    let json_schema = resolve(&doc, &content["application/json"]["schema"]);
    let mut request = serde_json::Map::new();
    for (name, property) in json_schema["properties"].as_object().unwrap() {
        let value = match name.as_str() {
            "image_base64" => json!(base64::engine::general_purpose::STANDARD.encode(fixture(1))),
            "image_url" => continue,
            _ => {
                match florence_value(name, false).unwrap_or_else(|| Some(sample(&doc, property))) {
                    Some(value) => value,
                    None => continue,
                }
            }
        };
        request.insert(name.clone(), value);
    }
    let (status, body) = answers
        .send(http.post(server.url(create)).json(&request))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["metadata"], request["metadata"]);
    assert_eq!(
        body["outputs"].as_object().map(|o| o.len()),
        Some(2),
        "alt text and a description: {body}"
    );

    // The same form on Qwen3.5, with every documented option but Florence-2's `detail`.
    let mut request = serde_json::Map::new();
    for (name, property) in json_schema["properties"].as_object().unwrap() {
        let value = match name.as_str() {
            "image_base64" => json!(base64::engine::general_purpose::STANDARD.encode(fixture(1))),
            "image_url" | "detail" => continue,
            "model" => json!("tiny-qwen3_5"),
            "outputs" => json!(["alt_text", "description", "seo_title", "keywords"]),
            "temperature" => json!(0.7),
            "top_p" => json!(0.9),
            "max_words" => json!(40),
            "max_new_tokens" => json!(16),
            _ => sample(&doc, property),
        };
        request.insert(name.clone(), value);
    }
    let (status, body) = answers
        .send(http.post(server.url(create)).json(&request))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["outputs"].as_object().map(|o| o.len()),
        Some(4),
        "{body}"
    );

    // The options only an instruct model takes: Florence-2 answers the documented 422, naming
    // what it cannot do.
    for name in INSTRUCT_ONLY {
        let value = match name {
            "context" => json!({"title": "Mug"}),
            "tone" => json!("warm"),
            "temperature" => json!(0.7),
            _ => continue,
        };
        let mut request =
            json!({"image_base64": base64::engine::general_purpose::STANDARD.encode(fixture(1))});
        request[name] = value;
        let (status, body) = answers
            .send(http.post(server.url(create)).json(&request))
            .await;
        assert_eq!(status, 422, "{name}: {body}");
        assert_eq!(body["error"]["code"], "unsupported_by_model", "{body}");
    }

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
        let (status, body) = answers.send_retrying(request).await;
        assert_eq!(status, expected, "{body}");
    }

    // The batch: a good image and a bad one give 200 with a description and an error.
    let batch = "/v1/descriptions/batch";
    let encoded = base64::engine::general_purpose::STANDARD.encode(fixture(0));
    let images = json!({"images": [{"image_base64": encoded}, {"image_base64": "aGVsbG8="}]});
    let (status, body) = answers
        .send(http.post(server.url(batch)).json(&images))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][0]["object"], "description");
    assert!(body["data"][1]["error"]["code"].is_string(), "{body}");
    let text = http
        .post(server.url(batch))
        .header("content-type", "text/plain")
        .body("x");
    answers.expect_statuses([(415, text)]).await;

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
    let one = json!({"images": [{"image_base64": encoded}]});
    answers
        .expect_statuses([
            (429, raw(fixture(0), "image/png")),
            (429, http.post(server.url(batch)).json(&one)),
        ])
        .await;

    // 503 while draining, with the slow request still in flight.
    server.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    answers
        .expect_statuses([
            (503, raw(fixture(0), "image/png")),
            (503, http.post(server.url(batch)).json(&images)),
            (503, http.get(server.url("/health/ready"))),
        ])
        .await;

    // Every (route, status) the server counted is documented for that route.
    let counted = counted_statuses_are_documented(&doc, &server).await;
    assert!(counted >= 8, "{counted}");

    let slow = slow.await.unwrap();
    let (status, body) = answers.check("post", batch, slow).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"][1]["object"], "description", "{body}");
    assert_eq!(
        answers.seen("post", create),
        BTreeSet::from([201, 400, 413, 415, 422, 429, 503]),
        "the statuses exercised on {create}"
    );
    assert_eq!(
        answers.seen("post", batch),
        BTreeSet::from([200, 415, 429, 503])
    );
}

/// Options the tiny Florence-2 refuses with 422 `unsupported_by_model`: product copy and
/// sampling need an instruct model (Qwen3.5).
const INSTRUCT_ONLY: [&str; 6] = [
    "context",
    "tone",
    "temperature",
    "top_p",
    "seed",
    "keyword_count",
];

/// The value a describe option takes on the tiny Florence-2 where the document's example is
/// another family's (`Some(None)`: leave it out, see [`INSTRUCT_ONLY`]); `None` to use the
/// document's sample. `as_text` for the query string and form fields.
fn florence_value(name: &str, as_text: bool) -> Option<Option<Value>> {
    Some(match name {
        "model" => Some(json!("tiny-florence2")),
        "language" => Some(json!("en")),
        "outputs" if as_text => Some(json!("alt_text,description")),
        "outputs" => Some(json!(["alt_text", "description"])),
        "max_words" => Some(json!(40)),
        name if INSTRUCT_ONLY.contains(&name) => None,
        _ => return None,
    })
}
