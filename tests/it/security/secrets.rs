//! Secrets never leave in logs: a full run at the most verbose log level (billing against the
//! Stripe fake, the Stripe webhook, keys made, used, refused and revoked, the job webhook
//! secret rotated, exports, a graceful stop), then its whole log searched for every secret it
//! saw: API keys (valid and forged), the admin token (right and wrong), the Stripe secret key
//! and the webhook secrets.

use std::time::Duration;

use serde_json::json;

use crate::common::db::TestDatabase;
use crate::common::fixture;
use crate::common::server::{call, http_client, post_png, start_on_with_env};
use crate::common::stripe_fake::StripeFake;

fn random(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_secret_reaches_the_log_of_a_full_run() {
    for db in TestDatabase::all().await {
        let fake = StripeFake::start(&["cus_secrets"]).await;
        let admin_token = random("admin-");
        // The fake accepts its own key only.
        let stripe_key = crate::common::stripe_fake::SECRET_KEY.to_string();
        let stripe_webhook = random("whsec_stripe");
        let mut server = start_on_with_env(
            &db,
            &admin_token,
            &["--log", "trace,ort=warn", "--billing-flush-secs", "1"],
            &[
                ("STRIPE_SECRET_KEY", stripe_key.as_str()),
                ("ALTIMAGE_STRIPE_API_BASE", fake.base.as_str()),
                ("STRIPE_WEBHOOK_SECRET", stripe_webhook.as_str()),
            ],
        );
        let bootstrap_key = server.key.clone().unwrap();
        let (account_id, key) = server
            .create_account_with_key(
                &admin_token,
                json!({"name": "Secrets", "email": "s@example.com", "stripe_customer_id": "cus_secrets"}),
                json!({"name": "k", "scopes": ["describe", "read", "manage"]}),
            )
            .await;
        let http = server.client_with_key(&key);
        let (status, _, described) =
            call(post_png(&http, server.url("/v1/descriptions"), fixture(0))).await;
        assert_eq!(status, 201, "{described}");
        let (_, _, rotated) = call(http.post(server.url("/v1/webhook_secret"))).await;
        let job_secret = rotated["secret"].as_str().unwrap().to_string();
        let _ = http
            .get(server.url("/v1/account/export"))
            .send()
            .await
            .unwrap()
            .text()
            .await;
        // Refused credentials must not be echoed either.
        let forged_key = random("altk_");
        let wrong_token = random("wrong-admin-");
        for (credential, path) in [
            (&forged_key, "/v1/account"),
            (&wrong_token, "/v1/admin/accounts"),
            (&stripe_key, "/v1/account"),
        ] {
            let status = server
                .client_with_key(credential)
                .get(server.url(path))
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, 401, "{path}");
        }
        // Stripe's webhook, signed and forged.
        let event = json!({"id": "evt_secrets", "object": "event", "type": "invoice.created",
            "data": {"object": {"id": "in_1"}}})
        .to_string();
        let now = altimage::store::now_ms() / 1000;
        for secret in [stripe_webhook.as_str(), "whsec_forged"] {
            let signature = altimage::billing::webhook::sign(now, event.as_bytes(), secret);
            let _ = http_client()
                .post(server.url("/v1/stripe/webhook"))
                .header("content-type", "application/json")
                .header("stripe-signature", format!("t={now},v1={signature}"))
                .body(event.clone())
                .send()
                .await
                .unwrap();
        }
        // A key revoked, billing sent to Stripe, then a graceful stop (the drain logs too).
        let admin = server.client_with_key(&admin_token);
        let (_, _, keys) =
            call(admin.get(server.url(&format!("/v1/admin/accounts/{account_id}/keys")))).await;
        let key_id = keys["data"][0]["id"].as_str().unwrap();
        let _ = admin
            .delete(server.url(&format!("/v1/admin/accounts/{account_id}/keys/{key_id}")))
            .send()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while fake.requests() == 0 {
            if std::time::Instant::now() > deadline {
                let log = server.log();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.contains("db.statement") && !l.contains("\"TRACE\""))
                    .filter(|l| {
                        l.contains("billing")
                            || l.contains("meter")
                            || l.contains("WARN")
                            || l.contains("ERROR")
                            || l.contains("stripe")
                    })
                    .take(80)
                    .collect();
                panic!("usage never reached the Stripe fake:\n{}", lines.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        server.terminate();
        assert!(server.wait_exit(Duration::from_secs(60)).is_some());

        let log = server.log();
        assert!(
            log.contains("\"message\":\"stopped\""),
            "a full run, to its end"
        );
        for (what, secret) in [
            ("the bootstrap key", &bootstrap_key),
            ("an API key", &key),
            ("a forged API key", &forged_key),
            ("the admin token", &admin_token),
            ("a wrong admin token", &wrong_token),
            ("the Stripe secret key", &stripe_key),
            ("the Stripe webhook secret", &stripe_webhook),
            ("the job webhook secret", &job_secret),
        ] {
            let found = log.lines().find(|line| line.contains(secret.as_str()));
            assert!(
                found.is_none(),
                "{} {what} is in the log: {}",
                db.backend,
                found.unwrap()
            );
        }
    }
}
