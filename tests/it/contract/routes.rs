//! The stored-description, account, admin and Stripe routes over real HTTP: each operation's
//! success and the error statuses a client can provoke, each checked against the document.

use super::*;

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
    let mut answers = Answers::new(&doc);
    let url = |path: &str| server.url(path);

    // Descriptions: create (with an Idempotency-Key), replay, reuse with another body.
    let png = |i: usize| post_png(&http, url("/v1/descriptions?asset_id=sku-7"), fixture(i));
    let key = "openapi-idempotency-1";
    let (status, first) = answers.send(png(0).header("idempotency-key", key)).await;
    assert_eq!(status, 201, "{first}");
    let response = png(0).header("idempotency-key", key).send().await.unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    // The replay is checked against the document but not counted with the operation's answers.
    let (status, replay) = Answers::new(&doc)
        .check("post", "/v1/descriptions", response)
        .await;
    assert_eq!((status, &replay), (201, &first));
    answers
        .expect_statuses([
            (409, png(1).header("idempotency-key", key)),
            (400, png(1).header("idempotency-key", "")),
            (401, client().post(url("/v1/descriptions"))),
        ])
        .await;
    let id = first["id"].as_str().unwrap().to_string();
    let one = format!("/v1/descriptions/{id}");
    let batch = |body: Value| {
        http.post(url("/v1/descriptions/batch"))
            .header("idempotency-key", "openapi-batch-1")
            .json(&body)
    };
    let encoded = base64::engine::general_purpose::STANDARD.encode(fixture(1));
    let (status, body) = answers
        .send(batch(json!({"images": [{"image_base64": encoded}]})))
        .await;
    assert_eq!(status, 200, "{body}");
    answers
        .expect_statuses([(
            409,
            batch(json!({"images": [{"image_base64": "aGVsbG8="}]})),
        )])
        .await;

    // The library.
    let (status, page) = answers
        .send(http.get(url("/v1/descriptions?limit=1&asset_id=sku-7")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(page["data"][0]["id"], first["id"]);
    let missing = "/v1/descriptions/desc_missing";
    answers
        .expect_statuses([
            (400, http.get(url("/v1/descriptions?limit=0"))),
            (400, http.get(url("/v1/descriptions?limit=101"))),
            (400, http.get(url("/v1/descriptions?colour=red"))),
            (200, http.get(url(&one))),
            (404, http.get(url(missing))),
        ])
        .await;
    // An id that is not UTF-8 once percent-decoded: the JSON error body, not axum's plain text.
    let (status, refused) = answers.send(http.get(url("/v1/descriptions/%FF"))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    let edit = json!({"text": "A person's words.", "provenance": "human"});
    let (status, edited) = answers.send(http.patch(url(&one)).json(&edit)).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["provenance"], "human");
    let patch = |path: &str, body: Value| http.patch(url(path)).json(&body);
    answers
        .expect_statuses([
            (400, patch(&one, json!({"text": ""}))),
            (400, patch(&one, json!({"text": "x", "provenance": "ai"}))),
            (400, patch(&one, json!({"txt": "x"}))),
            (404, patch(missing, json!({"text": "x"}))),
        ])
        .await;
    let (status, versions) = answers
        .send(http.get(url(&format!("{one}/versions"))))
        .await;
    assert_eq!(status, 200);
    assert_eq!(versions["data"].as_array().unwrap().len(), 2, "{versions}");
    answers
        .expect_statuses([(404, http.get(url(&format!("{missing}/versions"))))])
        .await;
    // The export: each JSON line is a description as documented.
    let text = get_text(&http, url("/v1/descriptions/export")).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    for line in lines {
        let value: Value = serde_json::from_str(line).unwrap();
        let schema = json!({"$ref": "#/components/schemas/Description"});
        fits(&doc, &schema, &value, "line").unwrap();
    }
    answers
        .expect_statuses([
            (
                200,
                http.get(url("/v1/descriptions/export?format=csv&asset_id=sku-7")),
            ),
            (400, http.get(url("/v1/descriptions/export?format=xml"))),
        ])
        .await;

    // The account.
    let (status, usage) = answers.send(http.get(url("/v1/usage"))).await;
    assert_eq!(status, 200);
    assert!(usage["totals"]["created"].as_i64().unwrap() >= 2, "{usage}");
    answers
        .expect_statuses([
            (400, http.get(url("/v1/usage?from=yesterday"))),
            (
                400,
                http.get(url("/v1/usage?from=2026-02-01&to=2026-01-01")),
            ),
            (
                400,
                http.get(url("/v1/usage?from=2020-01-01&to=2026-01-01")),
            ),
            (400, http.get(url("/v1/usage?day=2026-01-01"))),
        ])
        .await;
    let (status, account) = answers
        .send(patch("/v1/account", json!({"restricted": true})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(account["restricted_by"], "account");
    // Refused before the body is read: the server may close the connection after answering,
    // so this request does not leave it in the client's pool for the next one.
    let (status, refused) = answers.send(png(2).header("connection", "close")).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("account_restricted"))
    );
    let account_path = format!("/v1/admin/accounts/{}", account["id"].as_str().unwrap());
    let admin_patch = |path: &str, body: Value| admin.patch(url(path)).json(&body);
    // Restricted by the operator: the account cannot lift it.
    answers
        .expect_statuses([
            (400, patch("/v1/account", json!({"restricted": "yes"}))),
            (200, admin_patch(&account_path, json!({"restricted": true}))),
            (400, patch("/v1/account", json!({"restricted": false}))),
        ])
        .await;
    let (status, lifted) = answers
        .send(admin_patch(&account_path, json!({"restricted": false})))
        .await;
    assert_eq!(status, 200);
    assert!(lifted["restricted_by"].is_null(), "{lifted}");
    let (status, export) = answers.send(http.get(url("/v1/account/export"))).await;
    assert_eq!(status, 200);
    assert!(export["descriptions"][0]["versions"].is_array(), "{export}");
    assert!(export["audit_events"].is_array(), "{export}");

    // Objection to analytics, the request log, the audit log, the operator's views of them.
    let (status, objected) = answers
        .send(patch("/v1/account", json!({"objected": true})))
        .await;
    assert_eq!(status, 200);
    assert!(objected["objected_at"].is_i64(), "{objected}");
    answers
        .expect_statuses([
            (400, patch("/v1/account", json!({}))),
            (200, patch("/v1/account", json!({"objected": false}))),
            (200, http.get(url("/v1/requests?limit=5"))),
            (400, http.get(url("/v1/requests?status=42"))),
            (200, http.get(url("/v1/audit_events?limit=5"))),
            (400, http.get(url("/v1/audit_events?limit=0"))),
            (200, admin.get(url("/v1/admin/audit_events?limit=5"))),
            (400, admin.get(url("/v1/admin/audit_events?account_id=x"))),
            (401, client().get(url("/v1/admin/audit_events"))),
            (200, admin.get(url("/v1/admin/analytics/requests"))),
            (400, admin.get(url("/v1/admin/analytics/requests?from=x"))),
        ])
        .await;

    // Admin: accounts and keys.
    let admin_post = |path: &str, body: Value| admin.post(url(path)).json(&body);
    let accounts = "/v1/admin/accounts";
    let (status, other) = answers
        .send(admin_post(
            accounts,
            json!({
                "name": "Other", "email": "other@example.com", "stripe_customer_id": "cus_openapi",
                "rate_limit_per_minute": 1,
            }),
        ))
        .await;
    assert_eq!(status, 201, "{other}");
    let other_path = format!("{accounts}/{}", other["id"].as_str().unwrap());
    let account_missing = "/v1/admin/accounts/acct_missing";
    let same_customer = json!({
        "name": "Third", "email": "third@example.com", "stripe_customer_id": "cus_openapi",
    });
    let no_billing = json!({"stripe_customer_id": null, "rate_limit_per_minute": 0});
    answers
        .expect_statuses([
            (409, admin_post(accounts, same_customer)),
            (
                400,
                admin_post(accounts, json!({"name": "x", "email": "no-at"})),
            ),
            (400, admin_post(accounts, json!({"name": "x"}))),
            (401, client().post(url(accounts)).json(&json!({}))),
            (200, admin.get(url("/v1/admin/accounts?limit=1"))),
            (400, admin.get(url("/v1/admin/accounts?limit=500"))),
            (404, admin.get(url(account_missing))),
            (400, admin_patch(&other_path, no_billing)),
            (404, admin_patch(account_missing, json!({}))),
        ])
        .await;
    let other_keys = format!("{other_path}/keys");
    let missing_keys = format!("{account_missing}/keys");
    let reader_key = json!({"name": "reader", "scopes": ["read"]});
    let (status, created_key) = answers.send(admin_post(&other_keys, reader_key)).await;
    assert_eq!(status, 201, "{created_key}");
    answers
        .expect_statuses([
            (400, admin_post(&other_keys, json!({"scopes": ["write"]}))),
            (404, admin_post(&missing_keys, json!({}))),
            (404, admin.get(url(&missing_keys))),
        ])
        .await;

    // The read-only key of an account limited to one request per minute: a missing scope, then
    // the rate limit; tenant isolation gives 404.
    let reader = server.client_with_key(created_key["key"].as_str().unwrap());
    let (status, refused) = answers.send(reader.delete(url(&one))).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (403, Some("missing_scope"))
    );
    let (status, limited) = answers.send(reader.get(url(&one))).await;
    assert_eq!(
        (status, limited["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let created_key_path = format!("{other_keys}/{}", created_key["id"].as_str().unwrap());
    answers
        .expect_statuses([
            (200, admin.delete(url(&created_key_path))),
            (404, admin.delete(url(&format!("{other_keys}/key_missing")))),
            (400, admin.delete(url(&format!("{other_keys}/%FE")))),
            (401, reader.get(url(&one))),
        ])
        .await;
    // A key of a third account deletes that account itself.
    let third = json!({"name": "Third", "email": "third@example.com"});
    let (_, third) = answers.send(admin_post(accounts, third)).await;
    let third_keys = format!("{accounts}/{}/keys", third["id"].as_str().unwrap());
    let (_, third_key) = answers.send(admin_post(&third_keys, json!({}))).await;
    let third_client = server.client_with_key(third_key["key"].as_str().unwrap());
    answers
        .expect_statuses([(404, third_client.get(url(&one)))])
        .await;
    let (status, deleted) = answers.send(third_client.delete(url("/v1/account"))).await;
    assert_eq!(status, 202);
    assert!(deleted["purge_after"].is_i64(), "{deleted}");
    answers
        .expect_statuses([
            (401, third_client.get(url("/v1/account"))),
            (202, admin.delete(url(&other_path))),
            (404, admin.delete(url(account_missing))),
        ])
        .await;

    // Deleting a description.
    let (status, gone) = answers.send(http.delete(url(&one))).await;
    assert_eq!(status, 200);
    assert_eq!(gone["deleted"], true);
    answers
        .expect_statuses([(404, http.delete(url(&one)))])
        .await;

    // Billing: the operator's reports (none are dead here), the retry of an unknown report, and
    // Stripe's webhook refusing what it cannot verify and acknowledging what it can.
    let reports = "/v1/admin/billing/reports";
    let (status, listed) = answers
        .send(admin.get(url(&format!("{reports}?limit=5"))))
        .await;
    assert_eq!((status, &listed["data"]), (200, &json!([])), "{listed}");
    let retry_missing = format!("{reports}/mr_missing/retry");
    answers
        .expect_statuses([
            (400, admin.get(url(&format!("{reports}?limit=0")))),
            (400, admin.get(url(&format!("{reports}?status=lost")))),
            (400, admin.get(url(&format!("{reports}?colour=red")))),
            (401, client().get(url(reports))),
            (404, admin.post(url(&retry_missing))),
        ])
        .await;
    let (status, refused) = answers
        .send(admin.post(url(&format!("{reports}/%FF/retry"))))
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_path"))
    );
    answers
        .expect_statuses([(401, client().post(url(&retry_missing)))])
        .await;
    let event = json!({"id": "evt_openapi", "object": "event", "type": "invoice.created",
        "data": {"object": {"id": "in_1"}}})
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let webhook = url("/v1/stripe/webhook");
    let signed = |body: &str, secret: &str| {
        let signature = altimage::billing::webhook::sign(now, body.as_bytes(), secret);
        client()
            .post(&webhook)
            .header("content-type", "application/json")
            .header("stripe-signature", format!("t={now},v1={signature}"))
            .body(body.to_string())
    };
    let (status, refused) = answers.send(signed(&event, "whsec_wrong")).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_signature"))
    );
    answers
        .expect_statuses([(400, client().post(&webhook).body(event.clone()))])
        .await;
    let unknown = "{\"type\": \"invoice.created\"}";
    let (status, refused) = answers.send(signed(unknown, WEBHOOK_SECRET)).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_event"))
    );
    // An oversized delivery gets the JSON error like every other route, not a bare 413.
    let oversized = format!(
        "{{\"id\": \"evt_big\", \"pad\": \"{}\"}}",
        "x".repeat(1_100_000)
    );
    let (status, refused) = answers
        .send_retrying(signed(&oversized, WEBHOOK_SECRET))
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (413, Some("body_too_large"))
    );
    let (status, received) = answers.send(signed(&event, WEBHOOK_SECRET)).await;
    assert_eq!((status, &received), (200, &json!({"received": true})));

    // What each operation was seen to answer: every client-caused status it documents.
    for (method, path, statuses) in [
        ("post", "/v1/descriptions", &[201, 400, 401, 403, 409][..]),
        ("post", "/v1/descriptions/batch", &[200, 409]),
        ("get", "/v1/descriptions", &[200, 400]),
        ("get", "/v1/descriptions/{id}", &[200, 400, 401, 404, 429]),
        ("patch", "/v1/descriptions/{id}", &[200, 400, 404]),
        ("delete", "/v1/descriptions/{id}", &[200, 403, 404]),
        ("get", "/v1/descriptions/{id}/versions", &[200, 404]),
        ("get", "/v1/descriptions/export", &[200, 400]),
        ("get", "/v1/usage", &[200, 400]),
        ("patch", "/v1/account", &[200, 400]),
        ("get", "/v1/account", &[401]),
        ("delete", "/v1/account", &[202]),
        ("get", "/v1/account/export", &[200]),
        ("get", "/v1/requests", &[200, 400]),
        ("get", "/v1/audit_events", &[200, 400]),
        ("get", "/v1/admin/audit_events", &[200, 400, 401]),
        ("get", "/v1/admin/analytics/requests", &[200, 400]),
        ("post", "/v1/admin/accounts", &[201, 400, 401, 409]),
        ("get", "/v1/admin/accounts", &[200, 400]),
        ("get", "/v1/admin/accounts/{id}", &[404]),
        ("patch", "/v1/admin/accounts/{id}", &[200, 400, 404]),
        ("delete", "/v1/admin/accounts/{id}", &[202, 404]),
        ("post", "/v1/admin/accounts/{id}/keys", &[201, 400, 404]),
        ("get", "/v1/admin/accounts/{id}/keys", &[404]),
        (
            "delete",
            "/v1/admin/accounts/{id}/keys/{key_id}",
            &[200, 400, 404],
        ),
        ("get", "/v1/admin/billing/reports", &[200, 400, 401]),
        (
            "post",
            "/v1/admin/billing/reports/{id}/retry",
            &[400, 401, 404],
        ),
        ("post", "/v1/stripe/webhook", &[200, 400, 413]),
    ] {
        assert_eq!(
            answers.seen(method, path),
            statuses.iter().copied().collect::<BTreeSet<u16>>(),
            "{method} {path}"
        );
    }
    assert!(counted_statuses_are_documented(&doc, &server).await >= 20);
}

/// Without `--admin-token` the admin routes do not exist: 404, as documented.
#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_are_off_without_a_token() {
    let server = Server::start(&[]);
    let doc = document();
    let request = client()
        .get(server.url("/v1/admin/accounts"))
        .header("authorization", "Bearer anything");
    let (status, _) = Answers::new(&doc).send(request).await;
    assert_eq!(status, 404);
}
