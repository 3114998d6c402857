//! Product copy over real HTTP on a server that runs both tiny models (Florence-2 first, the
//! default; Qwen3.5 second): `/info` lists them with what each can do; every output of a Qwen3.5
//! request equals the model run directly with the same plan; sampled answers come back with
//! the seed that makes them again; a model asked for what it cannot do answers 422 naming the
//! one that can; a batch may mix models; edits, versions, exports and metrics carry the outputs.

use crate::common;

use altimage::describe::outputs::fit;
use altimage::describe::{ContextOptions, DescribeOptions, Validator};
use altimage::model::qwen3_5::Qwen35;
use altimage::model::{Captioner, GenerationRequest};
use base64::Engine as _;
use common::server::Server;
use serde_json::{Value, json};

const QWEN: &str = "tiny-qwen3_5";
const FLORENCE: &str = "tiny-florence2";

fn start() -> Server {
    let qwen = common::tiny_qwen_dir();
    Server::start(&["--model-dir", qwen.to_str().unwrap()])
}

/// A conformance image of the Qwen3.5 set.
fn qwen_image(name: &str) -> Vec<u8> {
    std::fs::read(
        common::root()
            .join("tests/conformance/fixtures_qwen")
            .join(name),
    )
    .unwrap()
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn german_request(image: &[u8]) -> Value {
    json!({
        "image_base64": base64(image),
        "model": QWEN,
        "outputs": ["keywords", "alt_text", "description", "seo_title"],
        "language": "de",
        "context": {
            "title": "Keramikbecher „Morgenrot“",
            "brand": "Töpferei Müller",
            "attributes": {"Farbe": "Weiß", "Material": "Steinzeug"},
            "keywords": ["handgemacht"]
        },
        "tone": "warm",
        "max_words": 30,
        "keyword_count": 5,
        "max_new_tokens": 24,
    })
}

async fn post(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let response = server
        .client()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// What the library makes of the same options, image and model: the plan the server runs.
fn expected_outputs(image: &[u8], options: &DescribeOptions) -> serde_json::Map<String, Value> {
    let mut model =
        Qwen35::load(&common::load_options(&common::tiny_qwen_dir())).expect("tiny Qwen3.5");
    let plan = Validator::new(vec![(QWEN.into(), model.card().clone())], 4)
        .plan(options)
        .unwrap();
    let prepared = model
        .card()
        .frontend
        .prepare(image, &Default::default())
        .unwrap();
    let requests: Vec<GenerationRequest> = plan
        .outputs
        .iter()
        .map(|o| GenerationRequest {
            image: prepared.tensor.clone(),
            options: o.generation.clone(),
        })
        .collect();
    let generated = model.generate(&requests).unwrap();
    plan.outputs
        .iter()
        .zip(generated)
        .map(|(o, g)| (o.output.as_str().to_string(), fit(&g.text, o.fit).value))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_models_serve_product_copy_and_alt_text_side_by_side() {
    let server = start();
    let http = server.client();

    // `/info` lists both, the default first, with what each can do.
    let info: Value = http
        .get(server.url("/info"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["model"], FLORENCE);
    let models = info["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{info}");
    assert_eq!(
        (&models[0]["name"], &models[0]["family"]),
        (&json!(FLORENCE), &json!("florence2"))
    );
    assert_eq!(models[0]["languages"], json!(["en"]));
    assert_eq!(models[1]["name"], QWEN);
    assert_eq!(
        models[1]["outputs"],
        json!(["alt_text", "description", "seo_title", "keywords"])
    );
    assert!(
        models[1]["languages"].as_array().unwrap().len() >= 8,
        "{info}"
    );
    assert_eq!(
        (
            models[1]["product_context"].clone(),
            models[1]["sampling"].clone()
        ),
        (json!(true), json!(true))
    );
    assert!(models.iter().all(|m| m["ready"] == true), "{info}");
    assert_eq!(info["ready"], true);

    // Every output of a German request with context equals the model run directly.
    let image = qwen_image("mug-256x256.png");
    let request = german_request(&image);
    let (status, body) = post(&server, "/v1/descriptions", &request).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (&body["model"], &body["language"], &body["tone"]),
        (&json!(QWEN), &json!("de"), &json!("warm"))
    );
    assert!(
        body.get("detail").is_none(),
        "Qwen3.5 has no caption levels: {body}"
    );
    assert_eq!(body["context"]["attributes"]["Farbe"], "Weiß");
    let options = DescribeOptions {
        model: Some(QWEN.into()),
        outputs: Some(
            ["keywords", "alt_text", "description", "seo_title"]
                .map(String::from)
                .to_vec(),
        ),
        language: Some("de".into()),
        context: Some(ContextOptions {
            title: Some("Keramikbecher „Morgenrot“".into()),
            brand: Some("Töpferei Müller".into()),
            category: None,
            attributes: vec![
                ("Farbe".into(), "Weiß".into()),
                ("Material".into(), "Steinzeug".into()),
            ],
            keywords: vec!["handgemacht".into()],
        }),
        tone: Some("warm".into()),
        max_words: Some(30),
        keyword_count: Some(5),
        max_new_tokens: Some(24),
        ..DescribeOptions::default()
    };
    let expected = expected_outputs(&image, &options);
    assert_eq!(body["outputs"], Value::Object(expected), "{body}");
    let outputs = &body["outputs"];
    assert_eq!(
        body["text"], outputs["alt_text"],
        "alt text is the primary output"
    );
    assert!(outputs["keywords"].as_array().unwrap().len() <= 5);
    assert!(outputs["seo_title"].as_str().unwrap().chars().count() <= 60);
    assert!(outputs["alt_text"].as_str().unwrap().chars().count() <= 125);
    assert!(
        outputs["description"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count()
            <= 30
    );
    // Greedy: the same request, the same outputs.
    let (_, again) = post(&server, "/v1/descriptions", &request).await;
    assert_eq!(again["outputs"], body["outputs"]);

    // Sampling: the seed comes back, and with it the same text again.
    let sampled = json!({
        "image_base64": base64(&image), "model": QWEN, "outputs": ["description"],
        "temperature": 1.2, "top_p": 0.95, "max_new_tokens": 24,
    });
    let (status, first) = post(&server, "/v1/descriptions", &sampled).await;
    assert_eq!(status, 201, "{first}");
    let seed = first["options"]["seed"]
        .as_u64()
        .expect("the drawn seed is recorded");
    let mut reseeded = sampled.clone();
    reseeded["seed"] = json!(seed);
    let (_, second) = post(&server, "/v1/descriptions", &reseeded).await;
    assert_eq!(
        second["outputs"], first["outputs"],
        "seed {seed} makes the text again"
    );

    // Florence-2 is asked for German: 422 naming the model that can.
    let (status, body) = post(
        &server,
        "/v1/descriptions",
        &json!({"image_base64": base64(&common::fixture(0)), "language": "de"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "unsupported_by_model");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(FLORENCE) && message.contains(QWEN),
        "{message}"
    );
    // Its description is its paragraph caption; alt text stays its default.
    let (status, body) = post(
        &server,
        "/v1/descriptions",
        &json!({"image_base64": base64(&common::fixture(0)), "outputs": ["alt_text", "description"]}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (&body["model"], &body["detail"]),
        (&json!(FLORENCE), &json!("brief"))
    );
    assert!(body["outputs"]["description"].is_string(), "{body}");

    // A batch may mix models; each image is run by its own.
    let (status, batch) = post(
        &server,
        "/v1/descriptions/batch",
        &json!({"images": [
            {"image_base64": base64(&common::fixture(1))},
            {"image_base64": base64(&image), "model": QWEN, "outputs": ["seo_title"], "language": "fr"},
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["data"][0]["model"], FLORENCE);
    assert_eq!(batch["data"][1]["model"], QWEN);
    assert_eq!(batch["data"][1]["language"], "fr");
    assert_eq!(
        batch["data"][1]["text"],
        batch["data"][1]["outputs"]["seo_title"]
    );

    // The multipart form: outputs comma-separated, context as JSON text.
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(image.clone()).file_name("mug.png"),
        )
        .text("model", QWEN)
        .text("outputs", "alt_text, keywords")
        .text(
            "context",
            r#"{"title": "Stoneware mug", "keywords": ["gift"]}"#,
        )
        .text("keyword_count", "3");
    let response = http
        .post(server.url("/v1/descriptions"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let formed: Value = response.json().await.unwrap();
    assert_eq!(formed["context"]["title"], "Stoneware mug");
    assert!(formed["outputs"]["keywords"].as_array().unwrap().len() <= 3);

    // Edit one output: the others stay, the version before is kept.
    let id = again["id"].as_str().unwrap();
    let edited = http
        .patch(server.url(&format!("/v1/descriptions/{id}")))
        .json(&json!({"outputs": {"seo_title": "Handgemachter Becher", "keywords": "Becher, Geschenk"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(edited.status(), 200);
    let edited: Value = edited.json().await.unwrap();
    assert_eq!(edited["version"], 2);
    assert_eq!(edited["outputs"]["seo_title"], "Handgemachter Becher");
    assert_eq!(edited["outputs"]["keywords"], json!(["Becher", "Geschenk"]));
    assert_eq!(edited["outputs"]["alt_text"], again["outputs"]["alt_text"]);
    let versions: Value = http
        .get(server.url(&format!("/v1/descriptions/{id}/versions")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(versions["data"][0]["outputs"], again["outputs"]);
    assert_eq!(versions["data"][1]["outputs"], edited["outputs"]);

    // The CSV export has a column per output; keywords joined.
    let csv =
        common::server::get_text(&http, server.url("/v1/descriptions/export?format=csv")).await;
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let row = reader
        .records()
        .map(Result::unwrap)
        .find(|r| &r[0] == id)
        .expect("the edited description is exported");
    assert_eq!(&row[column("keywords")], "Becher, Geschenk");
    assert_eq!(&row[column("language")], "de");
    assert_eq!(&row[column("seo_title")], "Handgemachter Becher");

    // Each model's engine has its own series.
    let metrics = common::server::get_text(&http, server.url("/metrics")).await;
    for model in [FLORENCE, QWEN] {
        let described = format!("altimage_images_total{{model=\"{model}\",outcome=\"described\"}}");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&described))
            .unwrap_or_else(|| panic!("{described} in\n{metrics}"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 2.0, "{line}");
        assert!(
            metrics.contains(&format!("altimage_model_ready{{model=\"{model}\"}} 1")),
            "{metrics}"
        );
    }
}

#[test]
fn two_model_folders_of_one_name_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = common::model_copy(&common::tiny_model_dir(), tmp.path(), FLORENCE);
    let output = std::process::Command::new(common::server_process::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--model-dir"])
        .arg(common::tiny_model_dir())
        .arg("--model-dir")
        .arg(&copy)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env("ALTIMAGE_ORT_LIBRARY", common::ort_library())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("two --model-dir folders are named `tiny-florence2`"),
        "{stderr}"
    );
}
