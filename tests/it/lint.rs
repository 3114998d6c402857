//! The alt-text linter over real HTTP: a new description carries the findings the library's
//! linter gives for its outputs; an edit is checked again; lists filter by severity and code,
//! and refuse codes the linter does not have.

use crate::common;

use altimage::describe::lint::{Expectation, lint_outputs};
use common::server::{Server, call, post_png};
use serde_json::{Value, json};

fn codes(findings: &Value) -> Vec<String> {
    findings
        .as_array()
        .unwrap_or_else(|| panic!("findings is not a list: {findings}"))
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

async fn list(server: &Server, query: &str) -> (u16, Value) {
    let (status, _, body) = call(
        server
            .client()
            .get(server.url(&format!("/v1/descriptions?{query}"))),
    )
    .await;
    (status.as_u16(), body)
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn findings_are_answered_checked_again_on_edit_and_filter_lists() {
    let server = Server::start(&[]);
    let (status, _, created) = call(post_png(
        &server.client(),
        server.url("/v1/descriptions?max_chars=60"),
        common::fixture(0),
    ))
    .await;
    assert_eq!(status, 201, "{created}");
    // The tiny model writes random words; whatever it wrote, the answer's findings are the
    // library linter's on those outputs at the asked length.
    let expected = lint_outputs(created["outputs"].as_object().unwrap(), |_| Expectation {
        language: "en",
        max_chars: Some(60),
        max_words: None,
        title: None,
    });
    assert_eq!(
        created["findings"],
        serde_json::to_value(&expected).unwrap()
    );
    let id = created["id"].as_str().unwrap().to_string();

    let (status, _, edited) = call(
        server
            .client()
            .patch(server.url(&format!("/v1/descriptions/{id}")))
            .json(&json!({"text": "Photo of IMG_0042.JPG"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(
        codes(&edited["findings"]),
        ["file_name", "redundant_opening"]
    );
    assert_eq!(edited["findings"][0]["severity"], "error");
    assert_eq!(edited["findings"][0]["excerpt"], "IMG_0042.JPG");
    assert!(
        edited["findings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("file name"),
        "{edited}"
    );

    let (status, _, other) = call(post_png(
        &server.client(),
        server.url("/v1/descriptions"),
        common::fixture(1),
    ))
    .await;
    assert_eq!(status, 201, "{other}");
    let (status, _, other) = call(
        server
            .client()
            .patch(server.url(&format!(
                "/v1/descriptions/{}",
                other["id"].as_str().unwrap()
            )))
            .json(&json!({"text": "Blue canvas tote bag on a wooden chair"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(codes(&other["findings"]), Vec::<String>::new());

    let (status, page) = list(&server, "min_severity=error").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), std::slice::from_ref(&id));
    let (_, page) = list(&server, "finding=redundant_opening").await;
    assert_eq!(ids(&page), std::slice::from_ref(&id));
    let (_, page) = list(&server, "min_severity=info").await;
    assert!(!ids(&page).contains(&other["id"].as_str().unwrap().to_string()));
    let (_, page) = list(&server, "").await;
    assert_eq!(ids(&page).len(), 2);

    // The CSV export's last column: the codes, worst first.
    let csv = server
        .client()
        .get(server.url("/v1/descriptions/export?format=csv"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap().iter().next_back(),
        Some("findings")
    );
    let row = reader
        .records()
        .map(Result::unwrap)
        .find(|r| r.get(0) == Some(id.as_str()))
        .unwrap();
    assert_eq!(row.iter().next_back(), Some("file_name redundant_opening"));

    let (status, body) = list(&server, "finding=image_of").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_finding");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("redundant_opening")
    );
    let (status, body) = list(&server, "min_severity=fatal").await;
    assert_eq!(status, 400, "{body}");
}

#[test]
fn the_readme_lists_every_code_with_its_severity() {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    for (code, severity, _) in altimage::describe::lint::RULES {
        let severity = serde_json::to_value(severity).unwrap();
        let row = format!("| `{code}` | {} |", severity.as_str().unwrap());
        assert!(readme.contains(&row), "README.md lacks the row {row}");
    }
}
