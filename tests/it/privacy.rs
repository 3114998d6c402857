//! The privacy promise, checked: image bytes never reach the database, the data directory or
//! the logs. Images carry a unique byte marker (a PNG text chunk, which decoders skip); after
//! sending them every way the API takes images, including ones that fail, every file the server
//! wrote, its log and (on PostgreSQL) a dump of its database are searched for the marker.

use crate::common;

use std::path::Path;

use axum::routing::get;
use common::db::TestDatabase;
use common::fixture;
use common::server::{Server, get_text, post_png, status_of};
use reqwest::StatusCode;
use serde_json::json;

/// `png` with a `tEXt` chunk holding `marker` right after the header chunk.
fn with_marker(png: &[u8], marker: &str) -> Vec<u8> {
    let header_end = 8 + 4 + 4 + 13 + 4;
    let mut data = b"Comment\0".to_vec();
    data.extend_from_slice(marker.as_bytes());
    let mut chunk = (data.len() as u32).to_be_bytes().to_vec();
    let mut typed = b"tEXt".to_vec();
    typed.extend_from_slice(&data);
    chunk.extend_from_slice(&typed);
    chunk.extend_from_slice(&common::crc32(&typed).to_be_bytes());
    let mut out = png[..header_end].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[header_end..]);
    out
}

fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn image_bytes_never_reach_the_database_the_data_dir_or_the_logs() {
    for db in TestDatabase::all().await {
        let marker = format!("PRIVACY-MARKER-{}", uuid::Uuid::new_v4().simple());
        let image = with_marker(&fixture(3), &marker);
        assert!(
            image::load_from_memory(&image).is_ok(),
            "the marked PNG decodes"
        );
        let served = image.clone();
        let host = common::server::serve_on_loopback(axum::Router::new().route(
            "/photo.png",
            get(move || {
                let bytes = served.clone();
                async move { ([("content-type", "image/png")], bytes) }
            }),
        ))
        .await;
        let mut flags = db.flags();
        flags.extend([
            "--allow-private-image-urls".into(),
            "--log".into(),
            "debug,ort=warn".into(),
        ]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let server = Server::start(&flags);
        let http = server.client();
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&image);
        let raw = post_png(
            &http,
            server.url("/v1/descriptions?asset_id=raw"),
            image.clone(),
        );
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(image.clone()).file_name("p.png"),
        );
        let multipart = http.post(server.url("/v1/descriptions")).multipart(form);
        let json_body = http
            .post(server.url("/v1/descriptions"))
            .header("idempotency-key", "privacy-1")
            .json(&json!({"image_base64": encoded, "metadata": {"note": "kept"}}));
        let by_url = http
            .post(server.url("/v1/descriptions/batch"))
            .json(&json!({"images": [{"image_url": format!("{host}/photo.png")}, {"image_base64": encoded}]}));
        for (form, request, expected) in [
            ("raw", raw, StatusCode::CREATED),
            ("multipart", multipart, StatusCode::CREATED),
            ("JSON", json_body, StatusCode::CREATED),
            ("batch by URL", by_url, StatusCode::OK),
        ] {
            let status = status_of(request).await;
            assert_eq!(status, expected, "{form} {}", db.backend);
        }
        // Failures too: a truncated image, and an image that is not one.
        for broken in [
            image[..image.len() / 2].to_vec(),
            [marker.as_bytes(), b"garbage"].concat(),
        ] {
            let response = post_png(&http, server.url("/v1/descriptions"), broken)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_client_error());
            let text = response.text().await.unwrap();
            assert!(
                !text.contains(&marker),
                "an error message echoed the bytes: {text}"
            );
        }
        let export = get_text(&http, server.url("/v1/account/export")).await;
        assert!(export.contains("\"kept\""), "the export has the metadata");
        assert!(!export.contains(&marker));

        server.terminate();
        let mut server = server;
        server.wait_exit(std::time::Duration::from_secs(30));
        let log = server.log();
        assert!(log.contains("request"), "the log was captured");
        assert!(!log.contains(&marker), "the marker reached the log");
        assert!(
            !log.contains(&encoded[..40]),
            "base64 image data reached the log"
        );
        let dirty = files_containing(&server.data_dir, marker.as_bytes());
        assert!(
            dirty.is_empty(),
            "{} wrote the image to {dirty:?}",
            db.backend
        );
        let dirty = files_containing(db.data_dir.path(), marker.as_bytes());
        assert!(dirty.is_empty(), "{dirty:?}");
        if db.backend == "postgres" {
            let dump = common::command::stdout_of(
                std::process::Command::new("pg_dump").arg(&db.url),
                "pg_dump (from the PostgreSQL client package)",
            );
            let dump = String::from_utf8_lossy(&dump);
            assert!(dump.contains("privacy-1"), "the dump holds the rows");
            assert!(!dump.contains(&marker), "the marker reached PostgreSQL");
        }
    }
}
