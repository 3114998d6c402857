//! The audit log and objection to analytics: each security event recorded with who did it and
//! from where (the TCP peer: `X-Forwarded-For` is not believed without `--trusted-proxies`),
//! listed for the account (its own, the operator's address left out) and the operator; written
//! in the change's own transaction; append-only in the database; kept seven years with its
//! address erased on purge. Objections are recorded with their times, shown in the account and
//! listed in the export. On both databases.

use altimage::store::audit::{self, Actor, AuditEvent, AuditFilter};
use altimage::store::now_ms;
use altimage::store::retention::RetentionPolicy;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::db::TestDatabase;
use crate::common::server::{Server, call, start_on};

const ADMIN: &str = "audit-admin-token";

/// The actions of `page`'s events, oldest first.
fn actions(page: &Value) -> Vec<String> {
    let mut actions: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    actions.reverse();
    actions
}

async fn ok(request: reqwest::RequestBuilder) -> Value {
    let (status, _, body) = call(request).await;
    assert!(status.is_success(), "{status}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn security_events_are_audited_and_objections_recorded_over_http() {
    for db in TestDatabase::all().await {
        let server: Server = start_on(&db, ADMIN, &["--no-bootstrap"]);
        let admin = server.client_with_key(ADMIN);
        let (account_id, key) = server
            .account_with_key(ADMIN, "audited", &["read", "manage"])
            .await;
        let http = server.client_with_key(&key);
        let url = |path: &str| server.url(path);
        // A spare key, revoked by the operator with a forged X-Forwarded-For.
        let spare = ok(admin
            .post(url(&format!("/v1/admin/accounts/{account_id}/keys")))
            .json(&json!({"name": "spare", "scopes": ["read"]})))
        .await;
        let spare_id = spare["id"].as_str().unwrap();
        ok(admin
            .delete(url(&format!(
                "/v1/admin/accounts/{account_id}/keys/{spare_id}"
            )))
            .header("x-forwarded-for", "203.0.113.50"))
        .await;
        // The account's own changes.
        for patch in [
            json!({"restricted": true}),
            json!({"restricted": false}),
            json!({"objected": true}),
            json!({"objected": true}),
            json!({"objected": false}),
            json!({"objected": true}),
        ] {
            ok(http.patch(url("/v1/account")).json(&patch)).await;
        }
        let (status, _, _) = call(http.patch(url("/v1/account")).json(&json!({}))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let secret = ok(http.post(url("/v1/webhook_secret"))).await["secret"]
            .as_str()
            .unwrap()
            .to_string();
        let shown = ok(http.get(url("/v1/account"))).await;
        assert!(shown["objected_at"].as_i64().unwrap() > 0, "{shown}");
        let export = http
            .get(url("/v1/account/export"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let export: Value = serde_json::from_str(&export).unwrap();
        let decisions: Vec<&str> = export["consents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["decision"].as_str().unwrap())
            .collect();
        assert_eq!(
            decisions,
            ["objected", "given", "objected"],
            "{}",
            db.backend
        );
        assert!(
            export["consents"][0]["created_at"].as_i64().unwrap()
                <= export["consents"][2]["created_at"].as_i64().unwrap()
        );
        assert_eq!(export["account"]["objected_at"], shown["objected_at"]);
        assert!(!export["audit_events"].as_array().unwrap().is_empty());
        let _ = http
            .get(url("/v1/descriptions/export?format=csv"))
            .send()
            .await
            .unwrap();

        let own = ok(http.get(url("/v1/audit_events?limit=100"))).await;
        assert_eq!(
            actions(&own),
            [
                "account.created",
                "key.created",
                "key.created",
                "key.revoked",
                "account.restricted",
                "account.restriction_lifted",
                "consent.objected",
                "consent.given",
                "consent.objected",
                "webhook_secret.rotated",
                "export.downloaded",
                "export.downloaded",
            ],
            "{} {own}",
            db.backend
        );
        let events = own["data"].as_array().unwrap();
        let by_key = events
            .iter()
            .find(|e| e["action"] == "webhook_secret.rotated")
            .unwrap();
        assert_eq!(by_key["actor_kind"], "api_key");
        assert_eq!(by_key["ip"], "127.0.0.1");
        let revoked = events
            .iter()
            .find(|e| e["action"] == "key.revoked")
            .unwrap();
        assert_eq!(
            (revoked["actor_kind"].as_str(), revoked["target"].as_str()),
            (Some("operator"), Some(spare_id))
        );
        assert!(
            revoked["ip"].is_null(),
            "the operator's address is not the account's business"
        );
        assert!(!own.to_string().contains(&secret) && !own.to_string().contains(&key));
        let filtered = ok(http.get(url("/v1/audit_events?action=key.created"))).await;
        assert_eq!(actions(&filtered), ["key.created", "key.created"]);
        let paged = ok(http.get(url("/v1/audit_events?limit=2"))).await;
        assert_eq!(paged["has_more"], true);

        // The operator sees where it called from: the peer, not the forged header.
        let all = ok(admin.get(url(&format!(
            "/v1/admin/audit_events?account_id={account_id}&action=key.revoked"
        ))))
        .await;
        assert_eq!(all["data"][0]["ip"], "127.0.0.1", "{all}");
        assert_eq!(all["data"][0]["actor_id"], "admin_token");
        let (status, _, _) = call(admin.get(url("/v1/admin/audit_events?account_id=nope"))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // The analytics aggregate answers without the objecting account in it.
        let analytics = ok(admin.get(url("/v1/admin/analytics/requests"))).await;
        assert_eq!(analytics["data"], json!([]), "{analytics}");

        // The deletion request is the account's last event.
        ok(http.delete(url("/v1/account"))).await;
        let last = ok(admin.get(url(&format!(
            "/v1/admin/audit_events?account_id={account_id}&limit=1"
        ))))
        .await;
        assert_eq!(actions(&last), ["account.deletion_requested"]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_is_transactional_append_only_and_erased_on_purge() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let new = altimage::store::accounts::NewAccount {
            name: "audited".into(),
            email: "audited@example.com".into(),
            ..Default::default()
        };
        let actor = Actor {
            ip: Some("198.51.100.4".into()),
            user_agent: Some("ops-console/1".into()),
            ..Actor::cli()
        };
        let id = store.create_account(new, &actor).await.unwrap().id;
        let filter = || AuditFilter {
            account_id: Some(&id),
            action: None,
        };
        // Written in the caller's transaction: rolled back with it.
        let mut tx = store.pool().begin().await.unwrap();
        audit::record(
            &mut tx,
            &AuditEvent::new(Some(&id), &actor, "test.rolled_back"),
        )
        .await
        .unwrap();
        tx.rollback().await.unwrap();
        let (events, _) = store.list_audit_events(filter(), None, 100).await.unwrap();
        assert_eq!(events.len(), 1, "{}: only account.created", db.backend);
        assert_eq!(events[0].ip.as_deref(), Some("198.51.100.4"));
        // Append-only: nothing changes but the erasure of address, user agent and actor.
        for change in [
            "UPDATE audit_events SET action = 'account.forged'",
            "UPDATE audit_events SET created_at = 0",
            "UPDATE audit_events SET ip = '10.0.0.1'",
        ] {
            let refused = sqlx::query(change).execute(store.pool()).await;
            assert!(refused.is_err(), "{}: {change} was allowed", db.backend);
        }
        // Purged: the address and user agent are erased, the event stays (with the purge's).
        store
            .request_deletion(&id, std::time::Duration::ZERO, &Actor::system())
            .await
            .unwrap();
        let now = now_ms() + 1;
        store
            .purge(now, RetentionPolicy::standard(false))
            .await
            .unwrap();
        let (events, _) = store.list_audit_events(filter(), None, 100).await.unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            names,
            [
                "account.purged",
                "account.deletion_requested",
                "account.created"
            ]
        );
        assert!(
            events
                .iter()
                .all(|e| e.ip.is_none() && e.user_agent.is_none())
        );
        assert_eq!(
            events[2].actor_id.as_deref(),
            Some("cli"),
            "not a person's id: kept"
        );
        // Seven years, with the billing records, then gone.
        let report = store
            .purge(
                now + 6 * RetentionPolicy::YEAR_MS,
                RetentionPolicy::standard(false),
            )
            .await
            .unwrap();
        assert_eq!(report.audit_events, 0);
        let report = store
            .purge(
                now + 7 * RetentionPolicy::YEAR_MS + 60_000,
                RetentionPolicy::standard(false),
            )
            .await
            .unwrap();
        assert_eq!(report.audit_events, 3);
    }
}
