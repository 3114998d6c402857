//! Accounts over real HTTP, on SQLite and (when TEST_POSTGRES_URL is set) PostgreSQL: keys and
//! scopes, the admin API, the description library with usage counts, idempotent replays, tenant
//! isolation, restricted processing, deletion and purge, export, rate limits and the bootstrap.

use crate::common;

use std::time::{Duration, Instant};

use common::db::{ACCOUNT_TABLES, TestDatabase, rows_of, select_one};
use common::fixture;
use common::server::{Server, call, get_text, json_of, post_png, status_of};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-for-tests";

fn start(db: &TestDatabase, extra: &[&str]) -> Server {
    common::server::start_on(db, ADMIN, extra)
}

fn admin(server: &Server) -> reqwest::Client {
    server.client_with_key(ADMIN)
}

/// A new account with a key of `scopes`; returns (account id, key).
async fn account_with_key(server: &Server, name: &str, scopes: &[&str]) -> (String, String) {
    server.account_with_key(ADMIN, name, scopes).await
}

async fn describe(http: &reqwest::Client, server: &Server, query: &str) -> (StatusCode, Value) {
    let (status, _, body) = call(post_png(
        http,
        server.url(&format!("/v1/descriptions?{query}")),
        fixture(0),
    ))
    .await;
    (status, body)
}

async fn usage_totals(http: &reqwest::Client, server: &Server) -> (i64, i64) {
    let (status, _, usage) = call(http.get(server.url("/v1/usage"))).await;
    assert_eq!(status, StatusCode::OK, "{usage}");
    (
        usage["totals"]["created"].as_i64().unwrap(),
        usage["totals"]["retrieved"].as_i64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn every_v1_route_needs_a_valid_key_and_the_right_scope() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let anonymous = common::server::http_client();
        for (method, path) in [
            ("POST", "/v1/descriptions"),
            ("POST", "/v1/descriptions/batch"),
            ("GET", "/v1/descriptions"),
            ("GET", "/v1/descriptions/desc_x"),
            ("PATCH", "/v1/descriptions/desc_x"),
            ("DELETE", "/v1/descriptions/desc_x"),
            ("GET", "/v1/descriptions/desc_x/versions"),
            ("GET", "/v1/descriptions/export"),
            ("GET", "/v1/usage"),
            ("GET", "/v1/account"),
            ("PATCH", "/v1/account"),
            ("DELETE", "/v1/account"),
            ("GET", "/v1/account/export"),
        ] {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let response = anonymous
                .request(method.clone(), server.url(path))
                .send()
                .await
                .unwrap();
            assert!(response.headers().contains_key("www-authenticate"));
            let (status, _, body) = json_of(response).await;
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {}",
                db.backend
            );
            assert_eq!(body["error"]["code"], "missing_api_key");
            let (status, _, body) = call(
                server
                    .client_with_key("altk_not_a_real_key")
                    .request(method.clone(), server.url(path)),
            )
            .await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(body["error"]["code"], "invalid_api_key");
        }

        let (_, read_only) = account_with_key(&server, "reader", &["read"]).await;
        let reader = server.client_with_key(&read_only);
        let (status, body) = describe(&reader, &server, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "missing_scope");
        assert_eq!(
            status_of(reader.get(server.url("/v1/descriptions"))).await,
            StatusCode::OK
        );
        let (_, describe_only) = account_with_key(&server, "writer", &["describe"]).await;
        let writer = server.client_with_key(&describe_only);
        let (status, body) = describe(&writer, &server, "").await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _, body) = call(writer.get(server.url("/v1/descriptions"))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        let (status, _, _) =
            call(writer.delete(server.url(&format!("/v1/descriptions/{}", "desc_x")))).await;
        assert_eq!(status, StatusCode::FORBIDDEN);

        // Revocation takes effect on the next request.
        let (account, key) = account_with_key(&server, "revoked", &["read"]).await;
        let client = server.client_with_key(&key);
        assert_eq!(
            status_of(client.get(server.url("/v1/account"))).await,
            StatusCode::OK
        );
        let (_, _, keys) =
            call(admin(&server).get(server.url(&format!("/v1/admin/accounts/{account}/keys"))))
                .await;
        assert!(!keys.to_string().contains(&key), "secrets are never listed");
        let key_id = keys["data"][0]["id"].as_str().unwrap();
        let (status, _, revoked) = call(
            admin(&server)
                .delete(server.url(&format!("/v1/admin/accounts/{account}/keys/{key_id}"))),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert!(revoked["revoked_at"].is_i64());
        assert_eq!(
            status_of(client.get(server.url("/v1/account"))).await,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_need_the_token_and_do_not_exist_without_one() {
    let other = TestDatabase::sqlite();
    let without = Server::start(&other.flags().iter().map(String::as_str).collect::<Vec<_>>());
    let response = without
        .client_with_key("anything")
        .post(without.url("/v1/admin/accounts"))
        .json(&json!({"name": "x", "email": "x@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    drop(without);

    let db = TestDatabase::sqlite();
    let server = start(&db, &["--no-bootstrap"]);
    for token in ["wrong", ""] {
        let (status, _, body) = call(
            server
                .client_with_key(token)
                .get(server.url("/v1/admin/accounts")),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    // Bad input is a JSON 400, not a crash.
    for body in [
        json!({"name": "x"}),
        json!({"name": "x", "email": "no-at-sign"}),
        json!({"name": "", "email": "a@b"}),
    ] {
        let (status, _, answer) = call(
            admin(&server)
                .post(server.url("/v1/admin/accounts"))
                .json(&body),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
    }
    let (status, _, account) = call(admin(&server).post(server.url("/v1/admin/accounts")).json(
        &json!({"name": "Shop", "email": "ops@shop.example", "stripe_customer_id": "cus_1"}),
    ))
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(account["id"].as_str().unwrap().starts_with("acct_"));
    // A Stripe customer belongs to one account.
    let (status, _, body) =
        call(admin(&server).post(server.url("/v1/admin/accounts")).json(
            &json!({"name": "Other", "email": "o@x.example", "stripe_customer_id": "cus_1"}),
        ))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _, body) = call(
        admin(&server)
            .post(server.url("/v1/admin/accounts/acct_missing/keys"))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = call(
        admin(&server)
            .post(server.url(&format!(
                "/v1/admin/accounts/{}/keys",
                account["id"].as_str().unwrap()
            )))
            .json(&json!({"scopes": ["root"]})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (_, _, list) = call(admin(&server).get(server.url("/v1/admin/accounts"))).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "--no-bootstrap made none"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn descriptions_are_stored_retrieved_edited_exported_and_deleted() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let http = server.client();
        let (status, first) = describe(&http, &server, "asset_id=sku-1&max_chars=40").await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["provenance"], "ai");
        assert_eq!(first["version"], 1);
        let (status, second) = describe(&http, &server, "asset_id=sku-2").await;
        assert_eq!(status, StatusCode::CREATED, "{second}");
        let id = first["id"].as_str().unwrap();

        for _ in 0..2 {
            let (status, _, read) =
                call(http.get(server.url(&format!("/v1/descriptions/{id}")))).await;
            assert_eq!(status, StatusCode::OK, "{} {read}", db.backend);
            assert_eq!(read, first, "stored as answered");
        }
        let (status, _, _) = call(http.get(server.url("/v1/descriptions/desc_unknown"))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            usage_totals(&http, &server).await,
            (2, 2),
            "a 404 is not billed"
        );

        let (_, _, list) = call(http.get(server.url("/v1/descriptions?limit=1"))).await;
        assert_eq!(list["data"][0]["id"], second["id"], "newest first");
        assert_eq!(list["has_more"], true);
        let (_, _, rest) = call(http.get(server.url(&format!(
            "/v1/descriptions?limit=1&starting_after={}",
            second["id"].as_str().unwrap()
        ))))
        .await;
        assert_eq!(rest["data"][0]["id"], first["id"]);
        assert_eq!(rest["has_more"], false);
        let (_, _, filtered) = call(http.get(server.url("/v1/descriptions?asset_id=sku-2"))).await;
        assert_eq!(filtered["data"].as_array().unwrap().len(), 1);
        assert_eq!(filtered["data"][0]["asset_id"], "sku-2");
        let (status, _, _) = call(http.get(server.url("/v1/descriptions?limit=0"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, _, edited) = call(
            http.patch(server.url(&format!("/v1/descriptions/{id}")))
                .json(&json!({"text": "A red leather shoe."})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{edited}");
        assert_eq!(edited["text"], "A red leather shoe.");
        assert_eq!(edited["provenance"], "ai_edited");
        assert_eq!(edited["version"], 2);
        for bad in [
            json!({"text": ""}),
            json!({"text": "x", "provenance": "ai"}),
            json!({"txt": "x"}),
        ] {
            let (status, _, _) = call(
                http.patch(server.url(&format!("/v1/descriptions/{id}")))
                    .json(&bad),
            )
            .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let (_, _, versions) =
            call(http.get(server.url(&format!("/v1/descriptions/{id}/versions")))).await;
        let versions = versions["data"].as_array().unwrap();
        assert_eq!(versions.len(), 2);
        assert_eq!(versions[0]["text"], first["text"]);
        assert_eq!(versions[0]["provenance"], "ai");

        let jsonl = http
            .get(server.url("/v1/descriptions/export"))
            .send()
            .await
            .unwrap();
        assert_eq!(jsonl.headers()["content-type"], "application/x-ndjson");
        let jsonl = jsonl.text().await.unwrap();
        let lines: Vec<Value> = jsonl
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["text"], "A red leather shoe.");
        let csv = get_text(&http, server.url("/v1/descriptions/export?format=csv")).await;
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        assert_eq!(&reader.headers().unwrap()[0], "id");
        assert_eq!(reader.records().count(), 2);
        assert_eq!(
            usage_totals(&http, &server).await,
            (2, 2),
            "exports are free"
        );

        let (status, _, deleted) =
            call(http.delete(server.url(&format!("/v1/descriptions/{id}")))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(deleted["deleted"], true);
        for _ in 0..2 {
            let status = status_of(http.get(server.url(&format!("/v1/descriptions/{id}")))).await;
            assert_eq!(status, StatusCode::NOT_FOUND);
        }
        let status = status_of(http.delete(server.url(&format!("/v1/descriptions/{id}")))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _, usage) = call(http.get(server.url("/v1/usage?from=2026-13-01"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{usage}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_replays_are_not_billed_and_reused_keys_conflict() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let http = server.client();
        let post = |body: Vec<u8>, key: &str| {
            post_png(&http, server.url("/v1/descriptions"), body).header("idempotency-key", key)
        };
        let first = post(fixture(0), "order-1").send().await.unwrap();
        assert!(!first.headers().contains_key("idempotent-replayed"));
        let (status, _, first) = json_of(first).await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        let replay = post(fixture(0), "order-1").send().await.unwrap();
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        let (status, _, replay) = json_of(replay).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(replay, first, "the stored answer, not a new description");
        let (status, _, conflict) = call(post(fixture(1), "order-1")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
        assert_eq!(conflict["error"]["code"], "idempotency_key_reused");
        // The same key on a multipart upload of the same image is the same request.
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(fixture(0)).file_name("a.png"),
        );
        let multipart = http
            .post(server.url("/v1/descriptions"))
            .header("idempotency-key", "order-1")
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(multipart.status(), StatusCode::CREATED);
        assert_eq!(json_of(multipart).await.2, first);
        // A failed request is not stored: retrying with the same key runs again.
        let (status, _, _) = call(post(b"not an image".to_vec(), "order-2")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _, _) = call(post(b"not an image".to_vec(), "order-2")).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "ran again, not replayed"
        );
        let (status, _, bad) = call(post(fixture(0), &"x".repeat(300))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        // Batches replay whole.
        let batch = |key: &'static str| {
            http.post(server.url("/v1/descriptions/batch"))
                .header("idempotency-key", key)
                .json(&json!({"images": [{"image_base64": base64_of(&fixture(2))}, {"image_base64": base64_of(b"not an image")}]}))
        };
        let (status, _, first_batch) = call(batch("batch-1")).await;
        assert_eq!(status, StatusCode::OK, "{first_batch}");
        let (_, headers, again) = call(batch("batch-1")).await;
        assert_eq!(headers["idempotent-replayed"], "true");
        assert_eq!(again, first_batch);
        assert_eq!(usage_totals(&http, &server).await, (2, 0), "{}", db.backend);
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_account_never_sees_another_accounts_data() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let a = server.client();
        let (_, key_b) = account_with_key(&server, "b", &["describe", "read", "manage"]).await;
        let b = server.client_with_key(&key_b);
        let (_, owned) = describe(&a, &server, "asset_id=secret-sku").await;
        let id = owned["id"].as_str().unwrap();
        let path = format!("/v1/descriptions/{id}");
        let versions = format!("{path}/versions");
        for (method, path, body) in [
            (reqwest::Method::GET, path.as_str(), None),
            (
                reqwest::Method::PATCH,
                path.as_str(),
                Some(json!({"text": "mine now"})),
            ),
            (reqwest::Method::DELETE, path.as_str(), None),
            (reqwest::Method::GET, versions.as_str(), None),
        ] {
            let mut request = b.request(method.clone(), server.url(path));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let (status, _, answer) = call(request).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {path} {} {answer}",
                db.backend
            );
        }
        for path in [
            "/v1/descriptions",
            "/v1/descriptions?asset_id=secret-sku",
            "/v1/descriptions/export",
            "/v1/descriptions/export?format=csv",
            "/v1/account",
            "/v1/account/export",
            "/v1/usage",
        ] {
            let response = b.get(server.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let text = response.text().await.unwrap();
            assert!(
                !text.contains(id) && !text.contains("secret-sku"),
                "{path}: {text}"
            );
        }
        assert_eq!(usage_totals(&b, &server).await, (0, 0));
        // A's description is intact.
        let (status, _, still) = call(a.get(server.url(&path))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(still["text"], owned["text"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn restricted_processing_refuses_new_descriptions_but_not_reads() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let http = server.client();
        let restrict = |on: bool| {
            http.patch(server.url("/v1/account"))
                .json(&json!({"restricted": on}))
        };
        let (_, created) = describe(&http, &server, "").await;
        let (status, _, account) = call(restrict(true)).await;
        assert_eq!(status, StatusCode::OK, "{account}");
        assert_eq!(account["restricted_by"], "account");
        let (status, body) = describe(&http, &server, "").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "account_restricted");
        let status = status_of(http.get(server.url(&format!(
            "/v1/descriptions/{}",
            created["id"].as_str().unwrap()
        ))))
        .await;
        assert_eq!(status, StatusCode::OK, "reads still work");
        assert_eq!(
            status_of(http.get(server.url("/v1/account/export"))).await,
            StatusCode::OK
        );
        let (status, _, _) = call(restrict(false)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(describe(&http, &server, "").await.0, StatusCode::CREATED);

        // The operator's restriction cannot be lifted by the account.
        let (_, _, me) = call(http.get(server.url("/v1/account"))).await;
        let (status, _, _) = call(
            admin(&server)
                .patch(server.url(&format!(
                    "/v1/admin/accounts/{}",
                    me["id"].as_str().unwrap()
                )))
                .json(&json!({"restricted": true})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = call(restrict(false)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(describe(&http, &server, "").await.0, StatusCode::FORBIDDEN);
        assert_eq!(usage_totals(&http, &server).await.0, 2, "{}", db.backend);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn account_export_holds_profile_keys_descriptions_versions_and_usage() {
    for db in TestDatabase::all().await {
        let server = start(&db, &[]);
        let http = server.client();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let (_, created) = describe(&http, &server, "asset_id=a").await;
            ids.push(created["id"].as_str().unwrap().to_string());
        }
        http.patch(server.url(&format!("/v1/descriptions/{}", ids[0])))
            .json(&json!({"text": "Edited.", "provenance": "human"}))
            .send()
            .await
            .unwrap();
        http.get(server.url(&format!("/v1/descriptions/{}", ids[1])))
            .send()
            .await
            .unwrap();
        let response = http
            .get(server.url("/v1/account/export"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let export: Value = response.json().await.unwrap();
        assert_eq!(export["object"], "account_export", "{}", db.backend);
        assert_eq!(export["account"]["name"], "default");
        assert_eq!(export["keys"].as_array().unwrap().len(), 1);
        assert!(!export.to_string().contains(server.key.as_deref().unwrap()));
        let descriptions = export["descriptions"].as_array().unwrap();
        assert_eq!(descriptions.len(), 3);
        let edited = descriptions
            .iter()
            .find(|d| d["id"] == ids[0].as_str())
            .unwrap();
        assert_eq!(edited["versions"].as_array().unwrap().len(), 2);
        assert_eq!(edited["versions"][1]["provenance"], "human");
        let events = export["usage_events"].as_array().unwrap();
        assert_eq!(events.iter().filter(|e| e["meter"] == "created").count(), 3);
        assert_eq!(
            events.iter().filter(|e| e["meter"] == "retrieved").count(),
            1
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_account_revokes_its_keys_at_once_and_the_purge_removes_its_data() {
    for db in TestDatabase::all().await {
        let server = start(
            &db,
            &["--deletion-grace-days", "0", "--purge-interval-secs", "1"],
        );
        let (account, key) =
            account_with_key(&server, "leaving", &["describe", "read", "manage"]).await;
        let leaving = server.client_with_key(&key);
        let (_, created) = describe(&leaving, &server, "").await;
        let (status, _, deleted) = call(leaving.delete(server.url("/v1/account"))).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{deleted}");
        assert!(deleted["purge_after"].is_i64());
        let (status, _, _) = call(leaving.get(server.url("/v1/account"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "keys revoked at once");
        // The purge job runs every second here: wait for it (not a timing assertion; the
        // deadline only stops a hung test).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status =
                status_of(admin(&server).get(server.url(&format!("/v1/admin/accounts/{account}"))))
                    .await;
            if status == StatusCode::NOT_FOUND {
                break;
            }
            assert!(Instant::now() < deadline, "not purged:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let store = db.store().await;
        for table in ACCOUNT_TABLES {
            let n = rows_of(&store, table, &account).await;
            assert_eq!(n, 0, "{table} {}", db.backend);
        }
        let sql = "SELECT COALESCE(name, '') || COALESCE(email, '') FROM accounts WHERE id = $1";
        let text: String = select_one(&store, sql, &account).await;
        assert_eq!(text, "", "personal identifiers removed");
        assert!(!created["id"].is_null());
        store.close().await;
        // The bootstrap account was not touched.
        assert_eq!(
            status_of(server.client().get(server.url("/v1/account"))).await,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_answers_429_with_ratelimit_headers() {
    let db = TestDatabase::sqlite();
    let server = start(&db, &["--rate-limit-per-minute", "1000"]);
    let (account, key) = account_with_key(&server, "slow", &["read"]).await;
    let (status, _, _) = call(
        admin(&server)
            .patch(server.url(&format!("/v1/admin/accounts/{account}")))
            .json(&json!({"rate_limit_per_minute": 3})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let client = server.client_with_key(&key);
    for remaining in [2, 1, 0] {
        let response = client.get(server.url("/v1/account")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["ratelimit-limit"], "3");
        assert_eq!(
            response.headers()["ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let response = client.get(server.url("/v1/account")).send().await.unwrap();
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    assert_eq!(response.headers()["retry-after"], "20");
    let (status, _, body) = json_of(response).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["error"]["code"], "rate_limited");
    // Other accounts keep their own budget.
    assert_eq!(
        status_of(server.client().get(server.url("/v1/account"))).await,
        StatusCode::OK
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("altimage_rejected_total{reason=\"rate_limited\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_first_start_writes_a_key_only_the_owner_can_read_and_logs_how_to_use_it() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDatabase::sqlite();
    let server = start(&db, &[]);
    let key_file = db.data_dir.path().join("bootstrap-api-key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = server.key.clone().unwrap();
    assert!(key.starts_with("altk_"));
    let log = server.log();
    assert!(log.contains(key_file.to_str().unwrap()), "{log}");
    assert!(log.contains("Authorization: Bearer $(cat"), "{log}");
    assert!(!log.contains(&key), "the key itself is never logged");
    drop(server);
    // A second start on the same database keeps the account and makes no new key.
    let again = start(&db, &[]);
    assert!(again.key.is_none());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap().trim(), key);
    drop(again);
    let fresh = TestDatabase::sqlite();
    let none = start(&fresh, &["--no-bootstrap"]);
    assert!(none.key.is_none());
    assert!(!fresh.data_dir.path().join("bootstrap-api-key").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_servers_share_one_postgresql_database() {
    let Some(db) = TestDatabase::postgres_or_skip("this test").await else {
        return;
    };
    // Both start at once against an empty database: migrations take a lock, so both succeed.
    let (first, second) = std::thread::scope(|scope| {
        let a = scope.spawn(|| start(&db, &["--no-bootstrap"]));
        let b = scope.spawn(|| start(&db, &["--no-bootstrap"]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let (account, key) = account_with_key(&first, "shared", &["describe", "read", "manage"]).await;
    let on_first = first.client_with_key(&key);
    let on_second = second.client_with_key(&key);
    let (status, created) = describe(&on_first, &first, "asset_id=both").await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, _, read) =
        call(on_second.get(second.url(&format!("/v1/descriptions/{id}")))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read, created);
    let (status, other) = describe(&on_second, &second, "asset_id=both").await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    assert_eq!(usage_totals(&on_first, &first).await, (2, 1));
    assert_eq!(usage_totals(&on_second, &second).await, (2, 1));
    // A key revoked through one replica is refused by the other on the next request.
    let (_, _, keys) =
        call(admin(&second).get(second.url(&format!("/v1/admin/accounts/{account}/keys")))).await;
    let key_id = keys["data"][0]["id"].as_str().unwrap();
    admin(&second)
        .delete(second.url(&format!("/v1/admin/accounts/{account}/keys/{key_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_of(on_first.get(first.url("/v1/account"))).await,
        StatusCode::UNAUTHORIZED
    );
}
