//! The request log: every authenticated request listed with its route template, status, key,
//! request id, client address (`X-Forwarded-For` believed from a trusted proxy only) and user
//! agent, filtered and paged like the other lists, summed per day in `/v1/usage`, exported; kept
//! two years, with its address and user agent erased on purge; and left out of analytics for an
//! account that objects. On both databases.

use std::time::Duration;

use altimage::store::audit::Actor;
use altimage::store::ids::AccountId;
use altimage::store::request_log::RequestLogEntry;
use altimage::store::retention::RetentionPolicy;
use altimage::store::{Store, now_ms};
use reqwest::StatusCode;
use serde_json::Value;

use super::eventually;
use crate::common::db::TestDatabase;
use crate::common::fixture;
use crate::common::server::{call, post_png, start_on};

const ADMIN: &str = "request-log-admin-token";
const AGENT: &str = "catalogue-sync/2.1";

async fn list(client: &reqwest::Client, url: String) -> Value {
    let (status, _, body) = call(client.get(url)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn every_authenticated_request_is_logged_listed_summed_and_exported() {
    for db in TestDatabase::all().await {
        let server = start_on(
            &db,
            ADMIN,
            &["--trusted-proxies", "127.0.0.1/32,10.0.0.0/8"],
        );
        let key = server.key.clone().unwrap();
        let http = crate::common::server_process::client_with_key(&key)
            .user_agent(AGENT)
            .build()
            .unwrap();
        let started = now_ms();
        // Through a trusted proxy (the loopback peer), with the caller's request id.
        let (status, _, _) = call(
            http.get(server.url("/v1/account"))
                .header("x-forwarded-for", "198.51.100.66, 203.0.113.7")
                .header("x-request-id", "trace-rl-1"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, created) =
            call(post_png(&http, server.url("/v1/descriptions"), fixture(0))).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        // Not authenticated: not an account's request, not logged.
        let anonymous = crate::common::server::http_client();
        assert_eq!(
            anonymous
                .get(server.url("/v1/account"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::UNAUTHORIZED
        );
        // Last: once it is listed, the ones before it are written too.
        let missing = "/v1/descriptions/desc_00000000000000000000000000000000";
        let (status, _, _) = call(http.get(server.url(missing))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let not_found = server.url("/v1/requests?status=404");
        eventually("the 404 in the request log", || async {
            list(&http, not_found.clone()).await["data"]
                .as_array()
                .unwrap()
                .len()
                == 1
        })
        .await;

        let page = list(&http, not_found.clone()).await;
        let entry = &page["data"][0];
        assert_eq!(entry["object"], "request");
        assert_eq!(
            entry["route"], "/v1/descriptions/{id}",
            "the template, never the path"
        );
        assert_eq!(entry["method"], "GET");
        assert_eq!(entry["user_agent"], AGENT);
        assert_eq!(entry["ip"], "127.0.0.1", "{} {entry}", db.backend);
        assert!(entry["key_id"].as_str().unwrap().starts_with("key_"));
        assert!(entry["latency_ms"].as_i64().unwrap() >= 0);
        assert!(entry["created_at"].as_i64().unwrap() >= started);
        let route = |route: &str| {
            server.url(&format!(
                "/v1/requests?route={}",
                route
                    .replace('/', "%2F")
                    .replace('{', "%7B")
                    .replace('}', "%7D")
            ))
        };
        let account = list(&http, route("/v1/account")).await;
        let account = &account["data"][0];
        assert_eq!(
            account["ip"], "203.0.113.7",
            "the address the trusted proxy saw"
        );
        assert_eq!(account["request_id"], "trace-rl-1");
        assert_eq!(account["status"], 200);
        let posted = list(&http, route("/v1/descriptions")).await;
        assert_eq!(posted["data"][0]["status"], 201);
        assert_eq!(posted["data"][0]["method"], "POST");
        // Pages follow their cursor, newest first; the time range narrows.
        let first = list(&http, server.url("/v1/requests?limit=1")).await;
        assert_eq!(first["has_more"], true);
        let cursor = first["data"][0]["id"].as_str().unwrap();
        let next = list(
            &http,
            server.url(&format!("/v1/requests?limit=1&starting_after={cursor}")),
        )
        .await;
        assert!(next["data"][0]["id"].as_str().unwrap() < cursor);
        let later = now_ms() + 3_600_000;
        let none = list(&http, server.url(&format!("/v1/requests?from={later}"))).await;
        assert_eq!(none["data"], Value::Array(vec![]));
        let before = list(&http, server.url(&format!("/v1/requests?to={started}"))).await;
        assert_eq!(before["data"], Value::Array(vec![]));
        for bad in [
            "status=42",
            "limit=0",
            "from=2&to=1",
            "starting_after=req_1",
            "colour=red",
        ] {
            let (status, _, body) =
                call(http.get(server.url(&format!("/v1/requests?{bad}")))).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        }

        // The day's usage counts them, with the error rate and latencies.
        let usage = list(&http, server.url("/v1/usage")).await;
        let today = usage["data"].as_array().unwrap().last().unwrap().clone();
        assert!(today["requests"].as_i64().unwrap() >= 3, "{usage}");
        assert!(today["errors"].as_i64().unwrap() >= 1, "{usage}");
        assert!(today["error_rate"].as_f64().unwrap() > 0.0, "{usage}");
        assert!(
            today["latency_p95_ms"].as_i64().unwrap() >= today["latency_p50_ms"].as_i64().unwrap()
        );
        assert_eq!(usage["totals"]["requests"], today["requests"]);

        // The export carries the log; neither it nor the log holds the key.
        let export = http
            .get(server.url("/v1/account/export"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let parsed: Value = serde_json::from_str(&export).unwrap();
        assert!(
            parsed["requests"].as_array().unwrap().len() >= 3,
            "{export}"
        );
        assert!(!export.contains(&key));
        let store = db.store().await;
        let stored = sqlx::query("SELECT COUNT(*) AS n FROM request_log WHERE key_id LIKE 'altk_%' OR user_agent LIKE '%altk_%' OR request_id LIKE '%altk_%'")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(sqlx::Row::try_get::<i64, _>(&stored, "n").unwrap(), 0);
    }
}

fn entry(
    account: &AccountId,
    route: &str,
    status: u16,
    latency_ms: u64,
    at: i64,
) -> RequestLogEntry {
    RequestLogEntry {
        account_id: account.clone(),
        key_id: "key_00000000000000000000000000000001".into(),
        request_id: "req_caller_chosen".into(),
        method: "GET".into(),
        route: route.into(),
        status,
        latency_ms,
        ip: Some("203.0.113.9".into()),
        user_agent: Some("shop/1.0".into()),
        created_at: at,
    }
}

async fn account(store: &Store, name: &str) -> AccountId {
    let new = altimage::store::accounts::NewAccount {
        name: name.into(),
        email: format!("{name}@example.com"),
        ..Default::default()
    };
    store.create_account(new, &Actor::cli()).await.unwrap().id
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_kept_two_years_erased_on_purge_and_left_out_of_analytics_on_objection() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let (shop, objector) = (
            account(&store, "shop").await,
            account(&store, "objector").await,
        );
        let now = now_ms();
        let day = now.div_euclid(86_400_000);
        // 100 requests of 1..=100 ms for the shop, 10 slow ones for the objector, and one of
        // the shop's from over two years ago.
        let mut entries: Vec<_> = (1..=100)
            .map(|ms| {
                entry(
                    &shop,
                    "/v1/descriptions",
                    if ms % 10 == 0 { 500 } else { 201 },
                    ms,
                    now,
                )
            })
            .collect();
        entries.extend((0..10).map(|_| entry(&objector, "/v1/descriptions", 201, 9_000, now)));
        let two_years = 2 * RetentionPolicy::YEAR_MS;
        entries.push(entry(
            &shop,
            "/v1/account",
            200,
            1,
            now - two_years - 86_400_000,
        ));
        store.insert_request_log(&entries).await.unwrap();

        let stats = store.request_stats_by_day(&shop, day, day).await.unwrap();
        assert_eq!(
            (stats[0].requests, stats[0].errors),
            (100, 10),
            "{}",
            db.backend
        );
        assert_eq!(
            (stats[0].latency_p50_ms, stats[0].latency_p95_ms),
            (Some(50), Some(95))
        );
        let with_both = store.request_analytics(day, day).await.unwrap();
        assert_eq!(with_both[0].requests, 110);
        assert_eq!(with_both[0].latency_p95_ms, Some(9_000));
        // The objection leaves the objector's requests out of every aggregate, past ones too;
        // withdrawing it brings them back; the account's own numbers are not analytics.
        store
            .set_objection(&objector, true, &Actor::cli())
            .await
            .unwrap();
        let without = store.request_analytics(day, day).await.unwrap();
        assert_eq!(without.len(), 1);
        assert_eq!((without[0].requests, without[0].errors), (100, 10));
        assert_eq!(without[0].latency_p95_ms, Some(95));
        assert_eq!(
            store
                .request_stats_by_day(&objector, day, day)
                .await
                .unwrap()[0]
                .requests,
            10
        );
        store
            .set_objection(&objector, false, &Actor::cli())
            .await
            .unwrap();
        assert_eq!(
            store.request_analytics(day, day).await.unwrap()[0].requests,
            110
        );
        // A restricted account is left out too.
        store
            .set_restricted(
                &objector,
                true,
                altimage::store::accounts::RestrictedBy::Account,
                &Actor::cli(),
            )
            .await
            .unwrap();
        assert_eq!(
            store.request_analytics(day, day).await.unwrap()[0].requests,
            100
        );

        // Two years, then gone.
        let report = store
            .purge(now, RetentionPolicy::standard(false))
            .await
            .unwrap();
        assert_eq!(report.request_log_rows, 1);
        let (rows, _) = store
            .list_requests(&shop, Default::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(rows.len(), 100);
        // Purged: the address, user agent and request id go; the counts stay for analytics.
        store
            .request_deletion(&shop, Duration::ZERO, &Actor::cli())
            .await
            .unwrap();
        store
            .purge(now_ms() + 1_000, RetentionPolicy::standard(false))
            .await
            .unwrap();
        let (rows, _) = store
            .list_requests(&shop, Default::default(), None, 100)
            .await
            .unwrap();
        assert_eq!(rows.len(), 100);
        assert!(
            rows.iter()
                .all(|r| r.ip.is_none() && r.user_agent.is_none() && r.request_id.is_none())
        );
        assert_eq!(rows[0].route, "/v1/descriptions");
    }
}
