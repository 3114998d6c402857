//! Stripe metered billing end to end against the stateful fake Stripe: exact totals, what is
//! free, Stripe outages and injected faults, a process killed mid-send, SIGTERM releasing its
//! leases, two replicas on one PostgreSQL database, customer creation, a refused key and the
//! webhook.

use crate::common;

use std::time::{Duration, Instant};

use common::db::TestDatabase;
use common::fixture;
use common::server::{Server, post_png, status_of};
use common::stripe_fake::{Fault, METER_CREATED, METER_RETRIEVED, SECRET_KEY, StripeFake};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Row;

use super::count;

const ADMIN: &str = "admin-secret";
const WEBHOOK_SECRET: &str = "whsec_test_billing";

/// Waits for a condition (an expression that may `.await`) to hold, polling; the deadline only
/// bounds a broken run: nothing here is asserted about how fast it happens.
macro_rules! eventually {
    ($what:expr, $server:expr, $condition:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(180);
        while !$condition {
            if Instant::now() > deadline {
                panic!("gave up waiting for: {}\n{}", $what, $server.log());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

/// The admin API on `db`, billing flushed every second with a 1 s timeout on Stripe's requests,
/// then `extra` flags and the environment `env` (the Stripe key and API base).
fn start_billing(db: &TestDatabase, extra: &[&str], env: &[(&str, &str)]) -> Server {
    let mut flags = vec!["--billing-flush-secs", "1", "--stripe-timeout-ms", "1000"];
    flags.extend(extra);
    common::server::start_on_with_env(db, ADMIN, &flags, env)
}

/// Billing on, against the fake, with short intervals so tests finish quickly.
fn start(fake: &StripeFake, db: &TestDatabase, extra: &[&str]) -> Server {
    let mut flags = vec!["--billing-retry-max-secs", "1"];
    flags.extend(extra);
    start_billing(
        db,
        &flags,
        &[
            ("STRIPE_SECRET_KEY", SECRET_KEY),
            ("ALTIMAGE_STRIPE_API_BASE", fake.base.as_str()),
            ("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    )
}

/// A GET on the admin API (`path` with its query).
async fn admin_get(server: &Server, path: &str) -> (StatusCode, Value) {
    call(server.client_with_key(ADMIN).get(server.url(path))).await
}

/// Sends `request` and reads the JSON answer.
async fn call(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    json_of(request.send().await.unwrap()).await
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let (status, _, value) = common::server::json_of(response).await;
    (status, value)
}

async fn describe(server: &Server, http: &reqwest::Client) -> String {
    let (status, body) = call(post_png(http, server.url("/v1/descriptions"), fixture(0))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn retrieve(server: &Server, http: &reqwest::Client, id: &str) {
    let status = status_of(http.get(server.url(&format!("/v1/descriptions/{id}")))).await;
    assert_eq!(status, StatusCode::OK);
}

async fn account_id(server: &Server, http: &reqwest::Client) -> String {
    let (status, body) = call(http.get(server.url("/v1/account"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn set_customer(server: &Server, account: &str, customer: Option<&str>) {
    let (status, body) = call(
        server
            .client_with_key(ADMIN)
            .patch(server.url(&format!("/v1/admin/accounts/{account}")))
            .json(&json!({ "stripe_customer_id": customer })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A second account (with `customer`) and a client holding its key.
async fn new_account(server: &Server, customer: Option<&str>) -> (String, reqwest::Client) {
    let (id, key) = server
        .create_account_with_key(
            ADMIN,
            json!({"name": "Shop", "email": "shop@example.com", "stripe_customer_id": customer}),
            json!({}),
        )
        .await;
    (id, server.client_with_key(&key))
}

fn assert_each_identifier_once(fake: &StripeFake) {
    for (identifier, count) in fake.identifier_counts() {
        assert_eq!(count, 1, "{identifier} accepted {count} times");
    }
}

/// Whether the outbox holds `reports` reports or more, all sent.
async fn all_sent(store: &altimage::store::Store, reports: i64) -> bool {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CASE WHEN status = 'sent' THEN 1 ELSE 0 END), 0) AS BIGINT) AS sent FROM meter_reports",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    let (n, sent): (i64, i64) = (row.try_get("n").unwrap(), row.try_get("sent").unwrap());
    n >= reports && sent == n
}

async fn totals_are(fake: &StripeFake, customer: &str, created: i64, retrieved: i64) -> bool {
    fake.total(customer, METER_CREATED) == created
        && fake.total(customer, METER_RETRIEVED) == retrieved
}

fn webhook_request(server: &Server, body: &str, secret: &str, at: i64) -> reqwest::RequestBuilder {
    let signature = altimage::billing::webhook::sign(at, body.as_bytes(), secret);
    common::server::http_client()
        .post(server.url("/v1/stripe/webhook"))
        .header("stripe-signature", format!("t={at},v1={signature}"))
        .header("content-type", "application/json")
        .body(body.to_string())
}

fn unix_now() -> i64 {
    altimage::store::now_ms() / 1000
}

/// N created and M retrieved reach Stripe as exactly N and M; failures, idempotent replays,
/// listings and exports are free; an account without a customer waits (proved by a second
/// account's usage, recorded after it, arriving first) and is sent once mapped; the webhook
/// unmaps a deleted customer, once per event, and refuses bad signatures.
#[tokio::test(flavor = "multi_thread")]
async fn usage_is_billed_exactly_once_and_waits_for_a_customer() {
    for db in TestDatabase::all().await {
        let fake = StripeFake::start(&["cus_a", "cus_b"]).await;
        let server = start(&fake, &db, &[]);
        let a = server.client();
        let a_id = account_id(&server, &a).await;

        // Account A, no customer yet: 3 created, 2 retrieved, and free things around them.
        let first = describe(&server, &a).await;
        describe(&server, &a).await;
        for _ in 0..2 {
            let response = post_png(&a, server.url("/v1/descriptions"), fixture(1))
                .header("idempotency-key", "same-request")
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::CREATED,
                "replay answers as the first"
            );
        }
        let failed = post_png(&a, server.url("/v1/descriptions"), b"not a png".to_vec())
            .send()
            .await
            .unwrap();
        assert!(failed.status().is_client_error());
        retrieve(&server, &a, &first).await;
        retrieve(&server, &a, &first).await;
        for free in [
            "/v1/descriptions",
            "/v1/descriptions/export",
            "/v1/usage",
            "/v1/account/export",
        ] {
            let status = status_of(a.get(server.url(free))).await;
            assert_eq!(status, StatusCode::OK, "{free}");
        }

        // Account B, mapped from the start, uses the service after A.
        let (b_id, b) = new_account(&server, Some("cus_b")).await;
        let b_first = describe(&server, &b).await;
        describe(&server, &b).await;
        for _ in 0..3 {
            retrieve(&server, &b, &b_first).await;
        }
        eventually!(
            "B's usage at Stripe",
            &server,
            totals_are(&fake, "cus_b", 2, 3).await
        );
        // Every batcher pass covers every account, and B's rows are newer than A's: A's rows
        // were looked at and left alone.
        assert!(
            fake.events().iter().all(|e| e.customer == "cus_b"),
            "{:?}",
            fake.events()
        );

        set_customer(&server, &a_id, Some("cus_a")).await;
        eventually!(
            "A's usage at Stripe once mapped",
            &server,
            totals_are(&fake, "cus_a", 3, 2).await
        );
        assert!(totals_are(&fake, "cus_b", 2, 3).await);
        assert_each_identifier_once(&fake);
        let (_, usage) = call(a.get(server.url("/v1/usage"))).await;
        assert_eq!(
            (&usage["totals"]["created"], &usage["totals"]["retrieved"]),
            (&json!(3), &json!(2)),
            "the ledger agrees: {usage}"
        );
        eventually!(
            "no report pending",
            &server,
            server.sample("altimage_billing_reports_pending").await == Some(0.0)
        );
        assert!(
            server
                .sample_at_least("altimage_billing_events_total{result=\"sent\"}", 4.0)
                .await
        );
        assert!(
            server
                .sample_at_least("altimage_billing_stripe_request_seconds_count", 4.0)
                .await
        );
        let (_, sent) = admin_get(&server, "/v1/admin/billing/reports?status=sent&limit=100").await;
        let sent_sum: i64 = sent["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"].as_i64().unwrap())
            .sum();
        assert_eq!(sent_sum, 3 + 2 + 2 + 3, "{sent}");
        let (_, dead) = admin_get(&server, "/v1/admin/billing/reports").await;
        assert_eq!(dead["data"], json!([]), "nothing failed");

        // B uses the service while Stripe is down, so one report of cus_b is pending when the
        // customer is deleted: the webhook fails it, and the dead-report counter sees it.
        fake.set_down(true);
        describe(&server, &b).await;
        eventually!(
            "B's new report built and waiting",
            &server,
            server.sample("altimage_billing_reports_pending").await == Some(1.0)
        );

        // Webhook: bad signature and stale timestamp refused; customer.deleted applied once.
        let event = json!({"id": "evt_1", "object": "event", "type": "customer.deleted",
            "data": {"object": {"id": "cus_b", "object": "customer", "deleted": true}}})
        .to_string();
        let response = webhook_request(&server, &event, "whsec_wrong", unix_now())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = webhook_request(&server, &event, WEBHOOK_SECRET, unix_now() - 301)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let (_, before) = admin_get(&server, &format!("/v1/admin/accounts/{b_id}")).await;
        assert_eq!(
            before["stripe_customer_id"], "cus_b",
            "refused events change nothing"
        );
        for _ in 0..2 {
            let response = webhook_request(&server, &event, WEBHOOK_SECRET, unix_now())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK);
        }
        let (_, after) = admin_get(&server, &format!("/v1/admin/accounts/{b_id}")).await;
        assert_eq!(after["stripe_customer_id"], Value::Null, "{after}");
        // Audited once, as Stripe's doing, despite the redelivery.
        let (_, audited) = admin_get(
            &server,
            &format!("/v1/admin/audit_events?account_id={b_id}&action=billing.customer_deleted"),
        )
        .await;
        let audited = audited["data"].as_array().unwrap().clone();
        assert_eq!(audited.len(), 1, "{audited:?}");
        assert_eq!(
            (
                audited[0]["actor_kind"].as_str(),
                audited[0]["actor_id"].as_str()
            ),
            (Some("stripe"), Some("evt_1"))
        );
        assert_eq!(
            server
                .sample("altimage_billing_events_total{result=\"customer_deleted\"}")
                .await,
            Some(1.0),
            "one pending report failed by the deletion, counted once despite the redelivery"
        );
        let (_, dead) = admin_get(&server, "/v1/admin/billing/reports").await;
        assert_eq!(dead["data"][0]["last_result"], "customer_deleted", "{dead}");
        fake.set_down(false);
        let store = db.store().await;
        let applied = count(&store, "SELECT COUNT(*) AS n FROM stripe_webhook_events").await;
        assert_eq!(
            applied, 1,
            "the redelivered event is recorded once ({})",
            db.backend
        );
        store.close().await;
    }
}

/// Stripe answering 503 for a while, then 500s, 429s, a timeout, an event accepted with a 500
/// and an accepted event whose answer is lost: the totals are exact, no identifier is accepted
/// twice. A customer Stripe does not know fails for good, shows in the admin list, and is sent
/// after an operator's retry.
#[tokio::test(flavor = "multi_thread")]
async fn outages_and_faults_neither_lose_nor_double_count() {
    for db in TestDatabase::all().await {
        let fake = StripeFake::start(&["cus_a"]).await;
        fake.set_down(true);
        let server = start(&fake, &db, &[]);
        let a = server.client();
        let a_id = account_id(&server, &a).await;
        set_customer(&server, &a_id, Some("cus_a")).await;
        let first = describe(&server, &a).await;
        describe(&server, &a).await;
        describe(&server, &a).await;
        retrieve(&server, &a, &first).await;
        retrieve(&server, &a, &first).await;
        eventually!(
            "attempts while Stripe is down",
            &server,
            fake.failed_while_down() >= 3
        );
        eventually!(
            "the backlog shows in the gauge",
            &server,
            server
                .sample_at_least("altimage_billing_reports_pending", 1.0)
                .await
        );
        // The first answer after the outage records the event and says 500: the next attempt,
        // with a new key, must be told "already exists" and count it as delivered.
        fake.push_faults(&[
            Fault::AcceptThenServerError,
            Fault::RateLimited,
            Fault::ServerError,
            Fault::Slow(Duration::from_secs(3)),
            Fault::AcceptThenHang,
            Fault::RateLimited,
        ]);
        fake.set_down(false);
        eventually!(
            "A's usage after the outage",
            &server,
            totals_are(&fake, "cus_a", 3, 2).await
        );
        // Stripe's totals can be right while a report is still retrying (accepted, answer lost):
        // the reports themselves must also end sent.
        eventually!(
            "every report sent",
            &server,
            server.sample("altimage_billing_reports_pending").await == Some(0.0)
        );
        assert!(
            fake.duplicates() >= 1,
            "the accepted-then-500 event was resent and refused as a duplicate:\n{}",
            server.log()
        );
        assert_each_identifier_once(&fake);
        assert!(
            server
                .sample_at_least("altimage_billing_events_total{result=\"duplicate\"}", 1.0)
                .await
        );

        // A customer Stripe does not know: failed for good, listed, retried by the operator.
        let (_, c) = new_account(&server, Some("cus_unknown")).await;
        describe(&server, &c).await;
        let admin = server.client_with_key(ADMIN);
        let deadline = Instant::now() + Duration::from_secs(180);
        let dead = loop {
            let (_, body) = admin_get(&server, "/v1/admin/billing/reports").await;
            if body["data"].as_array().is_some_and(|d| !d.is_empty()) {
                break body;
            }
            assert!(
                Instant::now() < deadline,
                "no failed report listed:\n{}",
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let report = &dead["data"][0];
        assert_eq!(report["status"], "failed", "{dead}");
        assert_eq!(report["stripe_customer_id"], "cus_unknown");
        assert!(
            report["last_error"]
                .as_str()
                .unwrap()
                .contains("No such customer"),
            "{dead}"
        );
        assert!(
            server
                .sample_at_least("altimage_billing_events_total{result=\"failed\"}", 1.0)
                .await
        );
        fake.add_customer("cus_unknown");
        let id = report["id"].as_str().unwrap();
        let (status, retried) =
            call(admin.post(server.url(&format!("/v1/admin/billing/reports/{id}/retry")))).await;
        assert_eq!(status, StatusCode::OK, "{retried}");
        assert_eq!(retried["status"], "pending");
        eventually!(
            "the retried report at Stripe",
            &server,
            totals_are(&fake, "cus_unknown", 1, 0).await
        );
        let (status, again) =
            call(admin.post(server.url(&format!("/v1/admin/billing/reports/{id}/retry")))).await;
        assert_eq!(
            status,
            StatusCode::CONFLICT,
            "a sent report cannot be retried: {again}"
        );
        assert!(totals_are(&fake, "cus_a", 3, 2).await);
        assert_each_identifier_once(&fake);
    }
}

/// SIGTERM while a request to Stripe hangs: exit 0 with no lease left behind. SIGKILL while a
/// request hangs: the restarted process takes the report over once the lease runs out, and the
/// totals are exact.
#[tokio::test(flavor = "multi_thread")]
async fn killed_or_stopped_mid_send_then_restarted() {
    for db in TestDatabase::all().await {
        let fake = StripeFake::start(&["cus_a"]).await;
        fake.push_faults(&[Fault::AcceptThenHang]);
        let mut server = start(&fake, &db, &[]);
        let key = server.key.clone().unwrap();
        let a = server.client();
        let a_id = account_id(&server, &a).await;
        set_customer(&server, &a_id, Some("cus_a")).await;
        let first = describe(&server, &a).await;
        describe(&server, &a).await;
        retrieve(&server, &a, &first).await;
        eventually!("a request hanging at Stripe", &server, fake.hanging() >= 1);
        server.terminate();
        let status = server
            .wait_exit(Duration::from_secs(60))
            .expect("exits after SIGTERM");
        assert!(status.success(), "{status:?}\n{}", server.log());
        let store = db.store().await;
        let leased = count(
            &store,
            "SELECT COUNT(*) AS n FROM meter_reports WHERE lease_owner IS NOT NULL",
        )
        .await;
        assert_eq!(
            leased, 0,
            "SIGTERM releases or finishes every claimed report ({})",
            db.backend
        );
        store.close().await;
        drop(server);

        let server = start(&fake, &db, &[]);
        let a = server.client_with_key(&key);
        eventually!(
            "the usage after a graceful restart",
            &server,
            totals_are(&fake, "cus_a", 2, 1).await
        );

        // The report that hung is at Stripe already; wait for the database to show it sent, so
        // that the next fault meets the next report.
        let store = db.store().await;
        eventually!("every report sent", &server, all_sent(&store, 2).await);
        fake.push_faults(&[Fault::AcceptThenHang]);
        describe(&server, &a).await;
        eventually!(
            "a request hanging at Stripe again",
            &server,
            fake.hanging() >= 2
        );
        drop(server); // SIGKILL: the lease stays in the database.

        let server = start(&fake, &db, &[]);
        eventually!(
            "the usage after a crash",
            &server,
            totals_are(&fake, "cus_a", 3, 1).await
        );
        // The fake recorded the event before hanging: what proves the takeover is the report
        // ending sent once the dead process's lease ran out.
        eventually!(
            "the crashed report sent",
            &server,
            all_sent(&store, 3).await
        );
        store.close().await;
        assert_each_identifier_once(&fake);
    }
}

/// Two server processes on one PostgreSQL database, both sending, with faults that make them
/// retry and take over each other's expired leases.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_one_postgres_database() {
    let Some(db) = TestDatabase::postgres_or_skip("the two-replica test").await else {
        return;
    };
    let fake = StripeFake::start(&["cus_a", "cus_b"]).await;
    fake.push_faults(&[
        Fault::AcceptThenHang,
        Fault::ServerError,
        Fault::AcceptThenServerError,
        Fault::RateLimited,
    ]);
    let one = start(&fake, &db, &[]);
    let two = start(&fake, &db, &[]);
    let key = one.key.clone().unwrap();
    let a_one = one.client();
    let a_two = two.client_with_key(&key);
    let a_id = account_id(&one, &a_one).await;
    set_customer(&one, &a_id, Some("cus_a")).await;
    let (_, b_one) = new_account(&one, Some("cus_b")).await;
    let mut ids = Vec::new();
    for round in 0..3 {
        ids.push(describe(&one, &a_one).await);
        ids.push(describe(&two, &a_two).await);
        describe(&two, &b_one).await;
        retrieve(&two, &a_two, &ids[round]).await;
        retrieve(&one, &a_one, &ids[round]).await;
    }
    eventually!(
        "both accounts' usage at Stripe",
        &one,
        totals_are(&fake, "cus_a", 6, 6).await && totals_are(&fake, "cus_b", 3, 0).await
    );
    assert_each_identifier_once(&fake);
}

/// `--stripe-create-customers`: an account with usage and no customer gets one (metadata names
/// the account), and its usage is billed to it.
#[tokio::test(flavor = "multi_thread")]
async fn customers_are_created_when_asked() {
    let db = TestDatabase::sqlite();
    let fake = StripeFake::start(&[]).await;
    let server = start(&fake, &db, &["--stripe-create-customers"]);
    let a = server.client();
    let a_id = account_id(&server, &a).await;
    describe(&server, &a).await;
    eventually!(
        "usage billed to a created customer",
        &server,
        totals_are(&fake, "cus_fake1", 1, 0).await
    );
    assert_eq!(fake.created_customers(), 1);
    let (_, account) = admin_get(&server, &format!("/v1/admin/accounts/{a_id}")).await;
    assert_eq!(account["stripe_customer_id"], "cus_fake1");
}

/// A key Stripe refuses (401) pauses sending without spending the reports' attempts; with the
/// key fixed (a restart on the same data) the same reports go through.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_key_pauses_sending_without_spending_attempts() {
    let db = TestDatabase::sqlite();
    let fake = StripeFake::start(&["cus_a"]).await;
    let mut server = start_billing(
        &db,
        &[],
        &[
            ("ALTIMAGE_STRIPE_SECRET_KEY", "sk_test_revoked"),
            ("ALTIMAGE_STRIPE_API_BASE", fake.base.as_str()),
        ],
    );
    let a = server.client();
    let a_id = account_id(&server, &a).await;
    set_customer(&server, &a_id, Some("cus_a")).await;
    describe(&server, &a).await;
    eventually!(
        "the circuit to open",
        &server,
        server
            .sample_at_least(
                "altimage_billing_events_total{result=\"circuit_open\"}",
                1.0
            )
            .await
    );
    let store = db.store().await;
    let row = sqlx::query("SELECT status, attempts, last_result FROM meter_reports")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(row.try_get::<String, _>("status").unwrap(), "pending");
    assert_eq!(
        row.try_get::<i64, _>("attempts").unwrap(),
        0,
        "no attempt spent"
    );
    assert_eq!(
        row.try_get::<String, _>("last_result").unwrap(),
        "circuit_open"
    );
    assert!(fake.events().is_empty());
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(60)).unwrap().success());
    drop(server);

    // Fixed key: the report, still pending and due, goes at once.
    let server = start(&fake, &db, &[]);
    eventually!(
        "the report sent with the right key",
        &server,
        all_sent(&store, 1).await
    );
    assert!(totals_are(&fake, "cus_a", 1, 0).await);
    store.close().await;
}
