//! The store on real SQLite and PostgreSQL (when TEST_POSTGRES_URL is set): keys, descriptions
//! with their usage rows, idempotency records, versions, tenant scoping and the retention purge,
//! including two purges racing on one database.

use crate::common;

use std::time::Duration;

use altimage::describe::review;
use altimage::store::audit::Actor;
use altimage::store::descriptions::{Description, ImageFacts, ListFilter, Provenance};
use altimage::store::idempotency::{Claim, Completion};
use altimage::store::ids::{AccountId, DescriptionId};
use altimage::store::keys::Scope;
use altimage::store::retention::RetentionPolicy;
use altimage::store::usage::MS_PER_DAY;
use altimage::store::{Store, StoreError, accounts::NewAccount, now_ms};
use common::db::{ACCOUNT_TABLES, TestDatabase, rows_of};
use serde_json::json;
use sqlx::Row;

async fn account(store: &Store, name: &str) -> AccountId {
    store
        .create_account(
            NewAccount {
                name: name.into(),
                email: format!("{name}@example.com"),
                ..NewAccount::default()
            },
            &Actor::cli(),
        )
        .await
        .unwrap()
        .id
}

fn description(text: &str, asset_id: Option<&str>) -> Description {
    let now = now_ms();
    Description {
        id: DescriptionId::generate(),
        text: text.into(),
        outputs: json!({ "alt_text": text }),
        provenance: Provenance::Ai,
        version: 1,
        detail: Some("brief".into()),
        model: "tiny-florence2".into(),
        language: "en".into(),
        context: None,
        tone: None,
        asset_id: asset_id.map(str::to_string),
        metadata: Some(json!({"sku": "A-1"})),
        image: ImageFacts {
            width: 10,
            height: 20,
            format: "png".into(),
            byte_size: 123,
            sha256: "ab".repeat(32),
        },
        options: json!({"max_chars": 50}),
        generated_tokens: 4,
        finish_reason: "eos".into(),
        truncated: false,
        created_at: now,
        updated_at: now,
        findings: Some(json!([])),
        lint_level: Some(0),
        review: altimage::store::review::Review {
            status: altimage::store::review::ReviewStatus::Unreviewed,
            by: None,
            at: None,
        },
    }
}

/// A person's edit of the primary output, as `PATCH /v1/descriptions/{id}` makes it.
async fn edit_text(
    store: &Store,
    account_id: &AccountId,
    id: &DescriptionId,
    text: &str,
    provenance: Option<Provenance>,
) -> Result<Description, StoreError> {
    store
        .edit_description(account_id, id, provenance, |current| {
            review::revise(current, Some(text), None)
        })
        .await
}

async fn ledger(store: &Store, account_id: &AccountId, kind: &str) -> i64 {
    sqlx::query("SELECT COUNT(*) FROM usage_events WHERE account_id = $1 AND kind = $2")
        .bind(account_id.as_str())
        .bind(kind)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get::<i64, _>(0)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_authenticate_until_revoked_and_are_stored_only_as_hashes() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let account_id = account(&store, "shop").await;
        let created = store
            .create_key(
                &account_id,
                "ci",
                &[Scope::Read, Scope::Describe],
                &Actor::cli(),
            )
            .await
            .unwrap();
        assert!(created.secret.starts_with("altk_"), "{}", db.backend);
        assert!(created.secret.starts_with(&created.key.prefix));
        let principal = store.authenticate(&created.secret).await.unwrap().unwrap();
        assert_eq!(principal.account_id, account_id);
        assert_eq!(principal.scopes, vec![Scope::Describe, Scope::Read]);
        // The secret is nowhere in the table.
        let stored: Vec<String> = sqlx::query("SELECT * FROM api_keys")
            .fetch_all(store.pool())
            .await
            .unwrap()
            .iter()
            .flat_map(|row| {
                (0..row.len())
                    .filter_map(|i| row.try_get::<Option<String>, _>(i).ok().flatten())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(!stored.iter().any(|v| v.contains(&created.secret)));
        assert!(store.authenticate("altk_wrong").await.unwrap().is_none());
        assert!(store.authenticate("").await.unwrap().is_none());
        store
            .revoke_key(&account_id, &created.key.id, &Actor::cli())
            .await
            .unwrap();
        assert!(store.authenticate(&created.secret).await.unwrap().is_none());
        // Another account cannot revoke or see this account's keys.
        let other = account(&store, "other").await;
        assert!(matches!(
            store
                .revoke_key(&other, &created.key.id, &Actor::cli())
                .await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.list_keys(&other).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn descriptions_are_stored_with_one_usage_row_and_scoped_by_account() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let b = account(&store, "b").await;
        let first = description("A red shoe.", Some("sku-1"));
        let second = description("A blue hat.", Some("sku-2"));
        store
            .save_created(&a, "req_1", &[first.clone(), second.clone()], None)
            .await
            .unwrap();
        assert_eq!(ledger(&store, &a, "created").await, 2, "{}", db.backend);

        let read = store
            .retrieve_description(&a, &first.id, "req_2")
            .await
            .unwrap();
        assert_eq!(read.text, "A red shoe.");
        assert_eq!(read.metadata, Some(json!({"sku": "A-1"})));
        assert_eq!(ledger(&store, &a, "retrieved").await, 1);

        // B sees nothing of A's, and a failed read is not billed.
        assert!(matches!(
            store.retrieve_description(&b, &first.id, "req_3").await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(ledger(&store, &b, "retrieved").await, 0);
        assert!(matches!(
            edit_text(&store, &b, &first.id, "x", None).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.delete_description(&b, &first.id).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(
            store
                .list_descriptions(&b, ListFilter::default(), None, 10)
                .await
                .unwrap()
                .descriptions
                .is_empty()
        );

        // Newest first, filter by asset, cursor pagination.
        let page = store
            .list_descriptions(&a, ListFilter::default(), None, 1)
            .await
            .unwrap();
        assert_eq!(page.descriptions[0].id, second.id);
        assert!(page.has_more);
        let next = store
            .list_descriptions(&a, ListFilter::default(), Some(&second.id), 1)
            .await
            .unwrap();
        assert_eq!(next.descriptions[0].id, first.id);
        assert!(!next.has_more);
        let filtered = store
            .list_descriptions(
                &a,
                ListFilter {
                    asset_id: Some("sku-1"),
                    ..ListFilter::default()
                },
                None,
                10,
            )
            .await
            .unwrap();
        assert_eq!(filtered.descriptions.len(), 1);

        // A description id is billed as created once, whatever happens.
        assert!(
            store
                .save_created(&a, "req_4", std::slice::from_ref(&first), None)
                .await
                .is_err()
        );
        assert_eq!(ledger(&store, &a, "created").await, 2);
    }
}

/// Product copy round-trips on both databases, and a row from before outputs existed (NULL
/// outputs, as migration 0004 leaves it) reads as its text's alt text, its versions too.
#[tokio::test(flavor = "multi_thread")]
async fn product_copy_is_stored_and_old_rows_read_as_alt_text() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let mut copy = description("Weißer Becher.", Some("sku-9"));
        copy.outputs = json!({"alt_text": "Weißer Becher.", "keywords": ["Becher", "weiß"]});
        copy.detail = None;
        copy.model = "tiny-qwen3_5".into();
        copy.language = "de".into();
        copy.context = Some(json!({"title": "Becher", "attributes": {"Farbe": "Weiß"}}));
        copy.tone = Some("warm".into());
        let old = description("A shoe.", None);
        store
            .save_created(&a, "req", &[copy.clone(), old.clone()], None)
            .await
            .unwrap();
        let read = store.description(&a, &copy.id).await.unwrap();
        assert_eq!(
            (
                read.outputs,
                read.detail,
                read.language,
                read.context,
                read.tone
            ),
            (copy.outputs, None, copy.language, copy.context, copy.tone),
            "{}",
            db.backend
        );
        for table in ["descriptions", "description_versions"] {
            let column = if table == "descriptions" {
                "id"
            } else {
                "description_id"
            };
            sqlx::query(&format!(
                "UPDATE {table} SET outputs = NULL WHERE {column} = $1"
            ))
            .bind(old.id.as_str())
            .execute(store.pool())
            .await
            .unwrap();
        }
        let read = store.description(&a, &old.id).await.unwrap();
        assert_eq!(read.outputs, json!({"alt_text": "A shoe."}));
        assert_eq!(read.language, "en");
        let versions = store.description_versions(&a, &old.id).await.unwrap();
        assert_eq!(versions[0].outputs, json!({"alt_text": "A shoe."}));
        let edited = edit_text(&store, &a, &old.id, "A red shoe.", None)
            .await
            .unwrap();
        assert_eq!(edited.outputs, json!({"alt_text": "A red shoe."}));
    }
}

/// Codes of a description's findings, as stored.
fn codes_of(description: &Description) -> Vec<String> {
    description
        .findings
        .as_ref()
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_are_linted_again_and_lists_filter_by_findings() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let clean = description("Red leather shoe seen from the side", None);
        let other = description("Blue canvas tote bag on a wooden chair", None);
        store
            .save_created(&a, "req", &[clean.clone(), other.clone()], None)
            .await
            .unwrap();

        // The stored `max_chars` (50) is the target the edit is checked against.
        let edited = edit_text(&store, &a, &clean.id, "Image of IMG_0042.jpg", None)
            .await
            .unwrap();
        assert_eq!(edited.lint_level, Some(3), "{}", db.backend);
        assert_eq!(codes_of(&edited), ["file_name", "redundant_opening"]);
        let long = "Red leather shoe with white laces and a thick rubber sole, seen from the side";
        let edited = edit_text(&store, &a, &other.id, long, None).await.unwrap();
        assert_eq!(codes_of(&edited), ["too_long"]);
        assert_eq!(edited.lint_level, Some(2));

        let ids = |filter: ListFilter<'static>| {
            let store = store.clone();
            let a = a.clone();
            async move {
                store
                    .list_descriptions(&a, filter, None, 10)
                    .await
                    .unwrap()
                    .descriptions
                    .into_iter()
                    .map(|d| d.id)
                    .collect::<Vec<_>>()
            }
        };
        let errors = ids(ListFilter {
            min_lint_level: Some(3),
            ..ListFilter::default()
        })
        .await;
        assert_eq!(errors, std::slice::from_ref(&clean.id));
        let warnings = ids(ListFilter {
            min_lint_level: Some(2),
            ..ListFilter::default()
        })
        .await;
        assert_eq!(warnings.len(), 2);
        let named = ids(ListFilter {
            finding: Some("too_long"),
            ..ListFilter::default()
        })
        .await;
        assert_eq!(named, std::slice::from_ref(&other.id));
        // `_` is literal in the pattern, not LIKE's any-character.
        let none = ids(ListFilter {
            finding: Some("too-long"),
            ..ListFilter::default()
        })
        .await;
        assert!(none.is_empty());

        // Back to a good text: no findings, out of the error list.
        let fixed = edit_text(
            &store,
            &a,
            &clean.id,
            "Red leather shoe from the side",
            None,
        )
        .await
        .unwrap();
        assert_eq!(fixed.lint_level, Some(0));
        assert!(codes_of(&fixed).is_empty());
        assert!(
            ids(ListFilter {
                min_lint_level: Some(3),
                ..ListFilter::default()
            })
            .await
            .is_empty()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn edits_keep_every_version_and_deletes_remove_them() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let original = description("A shoe.", None);
        store
            .save_created(&a, "req", std::slice::from_ref(&original), None)
            .await
            .unwrap();
        let edited = edit_text(&store, &a, &original.id, "A red leather shoe.", None)
            .await
            .unwrap();
        assert_eq!(edited.version, 2, "{}", db.backend);
        assert_eq!(edited.provenance, Provenance::AiEdited);
        let rewritten = edit_text(&store, &a, &original.id, "Shoe.", Some(Provenance::Human))
            .await
            .unwrap();
        assert_eq!(rewritten.provenance, Provenance::Human);
        let versions = store.description_versions(&a, &original.id).await.unwrap();
        let texts: Vec<&str> = versions.iter().map(|v| v.text.as_str()).collect();
        assert_eq!(texts, ["A shoe.", "A red leather shoe.", "Shoe."]);
        assert_eq!(rewritten.outputs, json!({"alt_text": "Shoe."}));
        assert!(
            edit_text(&store, &a, &original.id, "x", Some(Provenance::Ai))
                .await
                .is_err()
        );
        store.delete_description(&a, &original.id).await.unwrap();
        assert!(matches!(
            store.description_versions(&a, &original.id).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(rows_of(&store, "description_versions", &a).await, 0);
        // The usage row stays: it is a billing record.
        assert_eq!(ledger(&store, &a, "created").await, 1);
    }
}

/// The claim id of a fresh claim; panics on anything else.
fn fresh(claim: Claim) -> String {
    match claim {
        Claim::Fresh { claim_id } => claim_id,
        other => panic!("expected a fresh claim, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotency_keys_replay_refuse_mismatches_and_release_on_failure() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let b = account(&store, "b").await;
        let day = MS_PER_DAY;
        let claim = |account: AccountId, hash: &'static str| {
            let store = store.clone();
            async move {
                store
                    .claim_idempotency_key(&account, "key-1", "create", hash, day)
                    .await
                    .unwrap()
            }
        };
        let first = fresh(claim(a.clone(), "h1").await);
        assert_eq!(
            claim(a.clone(), "h1").await,
            Claim::InProgress,
            "{}",
            db.backend
        );
        assert_eq!(claim(a.clone(), "h2").await, Claim::Mismatch);
        // Keys are per account.
        fresh(claim(b.clone(), "h2").await);
        // Only the claim's own request gives it back.
        store
            .release_idempotency_key(&a, "key-1", "claim_someone_else")
            .await
            .unwrap();
        assert_eq!(claim(a.clone(), "h1").await, Claim::InProgress);
        store
            .release_idempotency_key(&a, "key-1", &first)
            .await
            .unwrap();
        let second = fresh(claim(a.clone(), "h1").await);
        // The released claim can neither renew nor complete any more.
        assert!(
            !store
                .renew_idempotency_claim(&a, "key-1", &first)
                .await
                .unwrap()
        );
        assert!(
            store
                .renew_idempotency_claim(&a, "key-1", &second)
                .await
                .unwrap()
        );
        let stale = description("A stale shoe.", None);
        let refused = store
            .save_created(
                &a,
                "req",
                std::slice::from_ref(&stale),
                Some(Completion {
                    account_id: &a,
                    key: "key-1",
                    claim_id: &first,
                    status: 201,
                    body: "{}",
                }),
            )
            .await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{refused:?}"
        );
        assert_eq!(
            ledger(&store, &a, "created").await,
            0,
            "a lost claim stores nothing"
        );
        // Completed in the transaction that stores the work: then it replays.
        let stored = description("A shoe.", None);
        store
            .save_created(
                &a,
                "req",
                std::slice::from_ref(&stored),
                Some(Completion {
                    account_id: &a,
                    key: "key-1",
                    claim_id: &second,
                    status: 201,
                    body: "{\"id\":\"x\"}",
                }),
            )
            .await
            .unwrap();
        assert_eq!(
            claim(a.clone(), "h1").await,
            Claim::Replay {
                status: 201,
                body: "{\"id\":\"x\"}".into()
            }
        );
        // Releasing or renewing a completed key does nothing: the answer stays replayable.
        store
            .release_idempotency_key(&a, "key-1", &second)
            .await
            .unwrap();
        assert!(
            !store
                .renew_idempotency_claim(&a, "key-1", &second)
                .await
                .unwrap()
        );
        assert!(matches!(claim(a.clone(), "h1").await, Claim::Replay { .. }));
        // Deleting a description forgets the stored answers that carry it (a replay would hand
        // its text back after the deletion); other answers stay replayable.
        let boot = description("A boot.", None);
        let sandal = description("A sandal.", None);
        for (key, stored) in [("key-boot", &boot), ("key-sandal", &sandal)] {
            let claim_id = fresh(
                store
                    .claim_idempotency_key(&a, key, "create", "h", day)
                    .await
                    .unwrap(),
            );
            let body = json!({"id": stored.id, "text": stored.text}).to_string();
            store
                .save_created(
                    &a,
                    key,
                    std::slice::from_ref(stored),
                    Some(Completion {
                        account_id: &a,
                        key,
                        claim_id: &claim_id,
                        status: 201,
                        body: &body,
                    }),
                )
                .await
                .unwrap();
        }
        store.delete_description(&a, &sandal.id).await.unwrap();
        let again = |key: &'static str| {
            let store = store.clone();
            let a = a.clone();
            async move {
                store
                    .claim_idempotency_key(&a, key, "create", "h", day)
                    .await
                    .unwrap()
            }
        };
        fresh(again("key-sandal").await);
        assert!(
            matches!(again("key-boot").await, Claim::Replay { body, .. } if body.contains("A boot."))
        );
        // After the window, the key is free again.
        let expired = store
            .claim_idempotency_key(&a, "key-2", "create", "h", -1)
            .await
            .unwrap();
        fresh(expired);
        fresh(
            store
                .claim_idempotency_key(&a, "key-2", "create", "other", day)
                .await
                .unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_claim_whose_process_died_lapses_with_its_lease() {
    use altimage::store::idempotency::CLAIM_LEASE_MS;
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let claim = || store.claim_idempotency_key(&a, "key-dead", "create", "h", MS_PER_DAY);
        let dead = fresh(claim().await.unwrap());
        // A claim just made holds for the whole lease.
        let lease_until: i64 = sqlx::query_scalar(
            "SELECT lease_until FROM idempotency_keys WHERE idempotency_key = 'key-dead'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        let left = lease_until - now_ms();
        assert!(
            left > CLAIM_LEASE_MS - 60_000 && left <= CLAIM_LEASE_MS,
            "{left}"
        );
        assert_eq!(claim().await.unwrap(), Claim::InProgress, "{}", db.backend);
        // The process died: nobody renews, and the lease runs out.
        sqlx::query(
            "UPDATE idempotency_keys SET lease_until = $1 WHERE idempotency_key = 'key-dead'",
        )
        .bind(now_ms() - 1)
        .execute(store.pool())
        .await
        .unwrap();
        let next = fresh(claim().await.unwrap());
        assert_ne!(next, dead);
        // The dead request's claim is gone for good: it cannot renew or release the new one.
        assert!(
            !store
                .renew_idempotency_claim(&a, "key-dead", &dead)
                .await
                .unwrap()
        );
        store
            .release_idempotency_key(&a, "key-dead", &dead)
            .await
            .unwrap();
        assert_eq!(claim().await.unwrap(), Claim::InProgress);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_accounts_are_hidden_at_once_and_purged_after_the_grace_period() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let gone = account(&store, "gone").await;
        let kept = account(&store, "kept").await;
        let key = store
            .create_key(&gone, "k", &Scope::ALL, &Actor::cli())
            .await
            .unwrap();
        for id in [&gone, &kept] {
            let stored = description("A shoe.", None);
            store
                .save_created(id, "req", std::slice::from_ref(&stored), None)
                .await
                .unwrap();
            store
                .retrieve_description(id, &stored.id, "req2")
                .await
                .unwrap();
            // A job with an item and, once cancelled, a webhook delivery.
            let job = altimage::store::jobs::NewJob {
                options: json!({}),
                webhook_url: Some("https://shop.example.com/hook".into()),
                items: vec![altimage::store::jobs::NewItem {
                    image_url: "https://cdn.example.com/1.jpg".into(),
                    ..Default::default()
                }],
                idempotency: None,
            };
            let altimage::store::jobs::Created::New(job) =
                store.create_job(id, job, 10, now_ms()).await.unwrap()
            else {
                panic!("a new job");
            };
            store.cancel_job(id, &job.id).await.unwrap();
            // A console member (by an accepted invitation) with a session and a reset link.
            let (_, token) = store
                .create_invitation(
                    id,
                    &format!("member@{id}.example"),
                    altimage::store::users::Role::Viewer,
                    &altimage::store::ids::UserId::generate(),
                    MS_PER_DAY,
                )
                .await
                .unwrap();
            let (user, _, _) = store
                .claim_invitation(
                    &token,
                    altimage::store::invitations::Claimant::New(altimage::store::users::NewUser {
                        email: format!("member@{id}.example"),
                        name: "Member".into(),
                        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA".into(),
                    }),
                )
                .await
                .unwrap()
                .unwrap();
            store
                .create_session(&altimage::store::console_sessions::NewSession {
                    user_id: &user,
                    account_id: id,
                    stage: altimage::store::console_sessions::SessionStage::Full,
                    lifetime_ms: MS_PER_DAY,
                    ip: Some("203.0.113.9"),
                    user_agent: Some("Firefox"),
                })
                .await
                .unwrap();
            store
                .create_email_token(
                    &user,
                    altimage::store::email_tokens::TokenPurpose::Reset,
                    MS_PER_DAY,
                )
                .await
                .unwrap();
        }
        let deleted = store
            .request_deletion(&gone, Duration::from_secs(3600), &Actor::cli())
            .await
            .unwrap();
        assert!(deleted.deleted_at.is_some(), "{}", db.backend);
        assert!(store.authenticate(&key.secret).await.unwrap().is_none());
        // Within the grace period nothing is purged.
        let report = store
            .purge(now_ms(), RetentionPolicy::standard(false))
            .await
            .unwrap();
        assert_eq!(report.accounts, 0);
        // After it, everything personal goes; the billing aggregates stay, anonymous.
        let later = now_ms() + 2 * 3600 * 1000;
        let report = store
            .purge(later, RetentionPolicy::standard(false))
            .await
            .unwrap();
        assert_eq!(report.accounts, 1);
        assert_eq!(report.descriptions, 1);
        assert_eq!(report.usage_rows, 2);
        for table in ACCOUNT_TABLES {
            assert_eq!(rows_of(&store, table, &gone).await, 0, "{table}");
            assert_eq!(
                rows_of(&store, table, &kept).await,
                if table == "api_keys" {
                    0
                } else {
                    1 + i64::from(table == "usage_events")
                },
                "{table} of the other account"
            );
        }
        // The member of the purged account belonged nowhere else: gone, with their tokens.
        let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(users, 1, "only the kept account's member is left");
        let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM email_tokens")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(tokens, 1);
        let row = sqlx::query("SELECT name, email FROM accounts WHERE id = $1")
            .bind(gone.as_str())
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(row.try_get::<Option<String>, _>("name").unwrap(), None);
        assert_eq!(row.try_get::<Option<String>, _>("email").unwrap(), None);
        let archived = store.archived_usage(&gone).await.unwrap();
        let total: i64 = archived.iter().map(|a| a.quantity).sum();
        assert_eq!(total, 2);
        assert!(matches!(
            store.account(&gone).await,
            Err(StoreError::NotFound(_))
        ));
        // Running it again changes nothing.
        let again = store
            .purge(later, RetentionPolicy::standard(false))
            .await
            .unwrap();
        assert_eq!(again.accounts, 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_usage_is_rolled_up_once_even_when_purges_race() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let stored: Vec<Description> = (0..40)
            .map(|i| description(&format!("Item {i}."), None))
            .collect();
        store.save_created(&a, "req", &stored, None).await.unwrap();
        // Three years on, with billing off, every row is past the 2-year rule.
        let later = now_ms() + 3 * RetentionPolicy::YEAR_MS;
        let policy = RetentionPolicy::standard(false);
        let replicas = (0..4).map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.purge(later, policy).await.unwrap() })
        });
        let reports = futures_util::future::join_all(replicas).await;
        let purged: u64 = reports.into_iter().map(|r| r.unwrap().usage_rows).sum();
        assert_eq!(purged, 40, "{}", db.backend);
        let archived: i64 = store
            .archived_usage(&a)
            .await
            .unwrap()
            .iter()
            .map(|a| a.quantity)
            .sum();
        assert_eq!(archived, 40, "no row counted twice or lost");
        // Usage reports still see it, from the archive.
        let today = now_ms().div_euclid(MS_PER_DAY);
        let days = store.usage_by_day(&a, today, today).await.unwrap();
        assert_eq!(days[0].created, 40);
        // With billing on, unreported rows wait for billing.
        let b = account(&store, "b").await;
        store
            .save_created(&b, "req", &[description("x", None)], None)
            .await
            .unwrap();
        let report = store
            .purge(later, RetentionPolicy::standard(true))
            .await
            .unwrap();
        assert_eq!(report.usage_rows, 0);
        assert_eq!(ledger(&store, &b, "created").await, 1);
        // Aggregates older than 7 years go.
        let much_later = now_ms() + 8 * RetentionPolicy::YEAR_MS;
        let report = store.purge(much_later, policy).await.unwrap();
        assert!(report.aggregates >= 1);
        assert!(store.archived_usage(&a).await.unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_counted_per_day_with_empty_days_listed() {
    for db in TestDatabase::all().await {
        let store = db.store().await;
        let a = account(&store, "a").await;
        let stored = description("x", None);
        store
            .save_created(&a, "r", std::slice::from_ref(&stored), None)
            .await
            .unwrap();
        for i in 0..3 {
            store
                .retrieve_description(&a, &stored.id, &format!("r{i}"))
                .await
                .unwrap();
        }
        let today = now_ms().div_euclid(MS_PER_DAY);
        let days = store.usage_by_day(&a, today - 2, today).await.unwrap();
        assert_eq!(days.len(), 3, "{}", db.backend);
        assert_eq!((days[0].created, days[0].retrieved), (0, 0));
        assert_eq!((days[2].created, days[2].retrieved), (1, 3));
        assert!(store.usage_by_day(&a, today, today - 1).await.is_err());
    }
}

/// Replicas starting together on one empty database bootstrap one first account between them,
/// not one each: the check for accounts and the creation are one serialised transaction.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_first_starts_create_one_account() {
    for db in TestDatabase::all().await {
        // A store each, as separate replicas have separate pools, all released at once.
        let replicas = 6;
        let mut stores = Vec::new();
        for _ in 0..replicas {
            stores.push(db.store().await);
        }
        let together = std::sync::Arc::new(tokio::sync::Barrier::new(replicas));
        let mut starts = Vec::new();
        for store in stores {
            let together = together.clone();
            starts.push(tokio::spawn(async move {
                together.wait().await;
                let created = store
                    .create_first_account(
                        NewAccount {
                            name: "default".into(),
                            email: "owner@localhost".into(),
                            ..NewAccount::default()
                        },
                        "bootstrap",
                        &Scope::ALL,
                    )
                    .await
                    .unwrap();
                store.close().await;
                created
            }));
        }
        let mut created = Vec::new();
        for start in starts {
            created.extend(start.await.unwrap());
        }
        assert_eq!(created.len(), 1, "{}: {created:?}", db.backend);
        let store = db.store().await;
        let accounts: i64 = sqlx::query("SELECT COUNT(*) AS n FROM accounts")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(accounts, 1, "{}", db.backend);
        let (account, key) = &created[0];
        let principal = store.authenticate(&key.secret).await.unwrap().unwrap();
        assert_eq!(principal.account_id, account.id);
        assert_eq!(principal.scopes.len(), 3);
        assert!(
            store
                .create_first_account(
                    NewAccount {
                        name: "late".into(),
                        email: "late@localhost".into(),
                        ..NewAccount::default()
                    },
                    "bootstrap",
                    &Scope::ALL,
                )
                .await
                .unwrap()
                .is_none(),
            "a database with an account is not bootstrapped again"
        );
        store.close().await;
    }
}
