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
