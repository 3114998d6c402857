//! The billing outbox on both databases directly: batchers and inserts racing (every ledger row
//! in exactly one report), claims that never overlap, leases released and given back, reports
//! in doubt for too long, and the purge waiting for unreported usage.

use std::collections::HashSet;
use std::time::Duration;

use altimage::billing::MeterNames;
use altimage::billing::batcher::build_reports;
use altimage::billing::sender::{claim, finalize};
use altimage::billing::stripe::Outcome;
use altimage::store::meter_reports::Finalized;
use altimage::store::retention::RetentionPolicy;
use sqlx::Row;

use super::count;
use crate::common::db::TestDatabase;
use crate::common::stripe_fake::{METER_CREATED, METER_RETRIEVED};

fn meters() -> MeterNames {
    MeterNames {
        created: METER_CREATED.into(),
        retrieved: METER_RETRIEVED.into(),
    }
}

async fn insert_account(store: &altimage::store::Store, id: &str, customer: Option<&str>) {
    sqlx::query("INSERT INTO accounts (id, name, email, stripe_customer_id, created_at) VALUES ($1, 'n', 'e', $2, 0)")
        .bind(id)
        .bind(customer)
        .execute(store.pool())
        .await
        .unwrap();
}

/// A store on `db` holding an account (with `customer`) and its ledger rows, `(kind, rows)` each.
async fn store_with_usage(
    db: &TestDatabase,
    account: &str,
    customer: Option<&str>,
    usage: &[(&str, usize)],
) -> altimage::store::Store {
    let store = db.store().await;
    insert_account(&store, account, customer).await;
    for &(kind, n) in usage {
        insert_usage(&store, account, kind, n).await;
    }
    store
}

async fn insert_usage(store: &altimage::store::Store, account: &str, kind: &str, n: usize) {
    for _ in 0..n {
        sqlx::query(&format!(
            "INSERT INTO usage_events (id, account_id, kind, quantity, occurred_at, source_ref, request_id) VALUES ($1, $2, $3, 1, {}, $4, 'req')",
            store.backend().now_ms()
        ))
        .bind(altimage::store::new_id("use"))
        .bind(account)
        .bind(kind)
        .bind(altimage::store::new_id("desc"))
        .execute(store.pool())
        .await
        .unwrap();
    }
}

/// Batchers on two pools racing with inserts: every ledger row lands in exactly one report and
/// the reports sum to the ledger. Two senders claiming at once never hold the same report.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_batchers_and_claims_never_overlap() {
    for db in TestDatabase::all().await {
        let one = db.store().await;
        let two = db.store().await;
        insert_account(&one, "acct_000000000000000000000000000000e0", Some("cus_x")).await;
        let writer = {
            let store = one.clone();
            tokio::spawn(async move {
                for _ in 0..20 {
                    insert_usage(
                        &store,
                        "acct_000000000000000000000000000000e0",
                        "created",
                        5,
                    )
                    .await;
                    insert_usage(
                        &store,
                        "acct_000000000000000000000000000000e0",
                        "retrieved",
                        2,
                    )
                    .await;
                }
            })
        };
        let batch = |store: altimage::store::Store| {
            tokio::spawn(async move {
                for _ in 0..15 {
                    build_reports(&store, &meters()).await.unwrap();
                }
            })
        };
        let (b1, b2) = (batch(one.clone()), batch(two.clone()));
        writer.await.unwrap();
        b1.await.unwrap();
        b2.await.unwrap();
        build_reports(&one, &meters()).await.unwrap();
        assert_eq!(
            count(
                &one,
                "SELECT COUNT(*) AS n FROM usage_events WHERE report_id IS NULL"
            )
            .await,
            0
        );
        assert_eq!(
            count(&one, "SELECT COUNT(*) AS n FROM usage_events").await,
            140
        );
        assert_eq!(
            count(&one, "SELECT CAST(COALESCE(SUM(value), 0) AS BIGINT) AS n FROM meter_reports WHERE kind = 'created'").await,
            100,
            "{}",
            db.backend
        );
        assert_eq!(
            count(&one, "SELECT CAST(COALESCE(SUM(value), 0) AS BIGINT) AS n FROM meter_reports WHERE kind = 'retrieved'").await,
            40
        );
        // Each report's value is exactly the rows pointing at it.
        assert_eq!(
            count(
                &one,
                "SELECT COUNT(*) AS n FROM meter_reports r WHERE r.value <> (SELECT COUNT(*) FROM usage_events u WHERE u.report_id = r.id)"
            )
            .await,
            0
        );

        let reports = count(&one, "SELECT COUNT(*) AS n FROM meter_reports").await;
        let (c1, c2) = tokio::join!(
            claim(&one, "one", 60_000, 1_000),
            claim(&two, "two", 60_000, 1_000)
        );
        let (c1, c2) = (c1.unwrap(), c2.unwrap());
        let ids1: HashSet<_> = c1.iter().map(|c| c.id.clone()).collect();
        let ids2: HashSet<_> = c2.iter().map(|c| c.id.clone()).collect();
        assert!(ids1.is_disjoint(&ids2), "{}", db.backend);
        assert_eq!((ids1.len() + ids2.len()) as i64, reports);
        assert!(
            claim(&one, "three", 60_000, 1_000)
                .await
                .unwrap()
                .is_empty(),
            "leased reports are not claimed again"
        );

        // Finalize is guarded by the lease owner: a replica that lost the row changes nothing.
        let row = c1.first().or(c2.first()).unwrap();
        let holder = if ids1.contains(&row.id) { "one" } else { "two" };
        let sent = Outcome::Sent {
            livemode: Some(false),
        };
        assert_eq!(
            finalize(&one, "intruder", row, &sent, 0).await.unwrap(),
            Finalized::NotOurs
        );
        assert_eq!(
            finalize(&one, holder, row, &sent, 0).await.unwrap(),
            Finalized::Done
        );
        assert_eq!(
            count(&one, &format!("SELECT COUNT(*) AS n FROM usage_events WHERE report_id = '{}' AND reported_at IS NOT NULL", row.id)).await,
            row.event.value
        );
        one.close().await;
        two.close().await;
    }
}

/// With billing on, a deleted account is purged only once its usage is reported or it has no
/// customer; with billing off, at once.
#[tokio::test(flavor = "multi_thread")]
async fn purge_waits_for_unreported_usage_while_billing_is_on() {
    for db in TestDatabase::all().await {
        let gone = "acct_000000000000000000000000000000a0";
        let store = store_with_usage(&db, gone, Some("cus_gone"), &[("created", 3)]).await;
        store
            .request_deletion(
                &"acct_000000000000000000000000000000a0".parse().unwrap(),
                Duration::ZERO,
                &altimage::store::audit::Actor::cli(),
            )
            .await
            .unwrap();
        let now = altimage::store::now_ms() + 1_000;
        let purged = async || {
            count(&store, "SELECT COUNT(*) AS n FROM accounts WHERE id = 'acct_000000000000000000000000000000a0' AND purged_at IS NOT NULL").await == 1
        };
        store
            .purge(now, RetentionPolicy::standard(true))
            .await
            .unwrap();
        assert!(
            !purged().await,
            "unreported usage holds the purge ({})",
            db.backend
        );

        build_reports(&store, &meters()).await.unwrap();
        let claimed = claim(&store, "me", 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        store
            .purge(now, RetentionPolicy::standard(true))
            .await
            .unwrap();
        assert!(!purged().await, "a report not yet sent still holds it");
        assert_eq!(
            finalize(&store, "me", &claimed[0], &Outcome::Duplicate, 0)
                .await
                .unwrap(),
            Finalized::Done
        );
        let report = store
            .purge(now, RetentionPolicy::standard(true))
            .await
            .unwrap();
        assert!(purged().await);
        assert_eq!(
            (report.accounts, report.usage_rows, report.meter_reports),
            (1, 3, 1),
            "its sent report, which names the customer, goes with it"
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) AS n FROM meter_reports WHERE account_id = 'acct_000000000000000000000000000000a0'"
            )
            .await,
            0
        );

        // A living account's sent report goes after 2 years, like the ledger rows it summed; a
        // dead one stays for an operator. Webhook event ids go after 30 days.
        let living = "acct_000000000000000000000000000000b0";
        insert_account(&store, living, Some("cus_old")).await;
        insert_usage(&store, living, "created", 1).await;
        insert_usage(&store, living, "retrieved", 1).await;
        build_reports(&store, &meters()).await.unwrap();
        let claimed = claim(&store, "me", 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let [sent, dead] = &claimed[..] else {
            unreachable!()
        };
        finalize(&store, "me", sent, &Outcome::Duplicate, 0)
            .await
            .unwrap();
        let refused = Outcome::Failed {
            reason: "no such customer".into(),
        };
        finalize(&store, "me", dead, &refused, 0).await.unwrap();
        sqlx::query(
            "INSERT INTO stripe_webhook_events (event_id, type, received_at) VALUES ('evt_old', 'customer.updated', $1)",
        )
        .bind(now - 31 * 86_400_000)
        .execute(store.pool())
        .await
        .unwrap();
        let later = now + 2 * RetentionPolicy::YEAR_MS + 86_400_000;
        let report = store
            .purge(later, RetentionPolicy::standard(true))
            .await
            .unwrap();
        assert_eq!((report.meter_reports, report.webhook_events), (1, 1));
        let left =
            sqlx::query("SELECT id, status FROM meter_reports WHERE account_id = 'acct_000000000000000000000000000000b0'")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].try_get::<String, _>("id").unwrap(), dead.id);
        assert_eq!(left[0].try_get::<String, _>("status").unwrap(), "failed");

        // No customer: nothing will ever report the rows, so they do not hold the purge.
        let no_customer = "acct_000000000000000000000000000000f0";
        insert_account(&store, no_customer, None).await;
        insert_usage(&store, no_customer, "retrieved", 2).await;
        store
            .request_deletion(
                &"acct_000000000000000000000000000000f0".parse().unwrap(),
                Duration::ZERO,
                &altimage::store::audit::Actor::cli(),
            )
            .await
            .unwrap();
        let report = store
            .purge(now, RetentionPolicy::standard(true))
            .await
            .unwrap();
        assert_eq!(report.accounts, 1);
        store.close().await;
    }
}

/// What SIGTERM does with claimed reports it did not send: released, they are claimable by
/// another sender at once, with the attempt given back; a stranger's release changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn released_reports_are_claimable_at_once() {
    for db in TestDatabase::all().await {
        let account = "acct_000000000000000000000000000000c0";
        let usage = [("created", 2), ("retrieved", 1)];
        let store = store_with_usage(&db, account, Some("cus_r"), &usage).await;
        build_reports(&store, &meters()).await.unwrap();
        let held = claim(&store, "stopping", 3_600_000, 10).await.unwrap();
        assert_eq!(held.len(), 2, "{}", db.backend);
        assert!(
            claim(&store, "other", 3_600_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let ids: Vec<String> = held.iter().map(|c| c.id.clone()).collect();
        store.release_meter_reports("stranger", &ids).await.unwrap();
        assert!(
            claim(&store, "other", 3_600_000, 10)
                .await
                .unwrap()
                .is_empty()
        );
        store.release_meter_reports("stopping", &ids).await.unwrap();
        let taken = claim(&store, "other", 3_600_000, 10).await.unwrap();
        assert_eq!(taken.len(), 2);
        assert!(
            taken.iter().all(|c| c.attempts == 1),
            "the released attempt was given back"
        );
        store.close().await;
    }
}

/// A report in doubt (Stripe may or may not have it) keeps retrying with its identifier while
/// Stripe's dedup covers a resend; once in doubt for 20 hours it stops (`needs_reconcile`) instead
/// of risking a double count, and the sender is told so it can count and log it.
#[tokio::test(flavor = "multi_thread")]
async fn a_report_in_doubt_too_long_stops_for_reconciliation() {
    let in_doubt = Outcome::Retry {
        new_key: false,
        in_doubt: true,
        reason: "timed out".into(),
    };
    for db in TestDatabase::all().await {
        let account = "acct_0000000000000000000000000000000d";
        let store = store_with_usage(&db, account, Some("cus_d"), &[("created", 1)]).await;
        build_reports(&store, &meters()).await.unwrap();
        let claimed = claim(&store, "me", 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 1, "{}", db.backend);
        assert_eq!(
            finalize(&store, "me", &claimed[0], &in_doubt, 0)
                .await
                .unwrap(),
            Finalized::Done,
            "the first doubt only starts the clock"
        );
        // The doubt started `hours` earlier than it did; the report claimed and answered in doubt
        // again.
        let in_doubt_longer = async |hours: i64| {
            let back = format!(
                "UPDATE meter_reports SET in_doubt_since = in_doubt_since - {}",
                hours * 3_600_000
            );
            sqlx::query(&back).execute(store.pool()).await.unwrap();
            let claimed = claim(&store, "me", 60_000, 10).await.unwrap();
            finalize(&store, "me", &claimed[0], &in_doubt, 0)
                .await
                .unwrap()
        };
        // 19 hours in doubt: still retried.
        assert_eq!(in_doubt_longer(19).await, Finalized::Done);
        // Past 20 hours: the next doubtful answer gives up.
        assert_eq!(
            in_doubt_longer(2).await,
            Finalized::GaveUp,
            "{}",
            db.backend
        );
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) AS n FROM meter_reports WHERE status = 'needs_reconcile'"
            )
            .await,
            1
        );
        assert!(
            claim(&store, "me", 60_000, 10).await.unwrap().is_empty(),
            "a report to reconcile is not sent again"
        );
        store.close().await;
    }
}
