//! `/docs`: a self-contained page that renders the document in a real browser.

use altimage::http::openapi::DOCS_HTML;

use super::*;

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
