//! `altimage migrate`, `altimage accounts …` and `altimage keys …` against real SQLite and
//! PostgreSQL databases: the operator's path when the admin API is off.

use crate::common;

use std::process::Command;

use common::command::text_of;
use common::db::TestDatabase;
use serde_json::Value;

/// Runs the CLI; returns its stdout lines parsed as JSON. Panics with stderr on failure.
fn run(db: &TestDatabase, args: &[&str]) -> Vec<Value> {
    text_of(&mut command(db, args), &format!("altimage {args:?}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs the CLI to completion, whatever its exit status.
fn cli(db: &TestDatabase, args: &[&str]) -> std::process::Output {
    command(db, args).output().unwrap()
}

/// `altimage <args>` on `db`, its database flags after the (sub)command.
fn command(db: &TestDatabase, args: &[&str]) -> Command {
    let (command, rest) = args.split_at(if args[0] == "migrate" { 1 } else { 2 });
    let mut altimage = Command::new(env!("CARGO_BIN_EXE_altimage"));
    altimage.args(command).args(db.flags()).args(rest);
    altimage
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_manage_accounts_and_keys_from_the_command_line() {
    for db in TestDatabase::all().await {
        assert!(run(&db, &["migrate"]).is_empty());
        // Applying them again is a no-op.
        run(&db, &["migrate"]);
        let created = run(
            &db,
            &[
                "accounts",
                "create",
                "--name",
                "Shop",
                "--email",
                "ops@shop.example",
                "--stripe-customer-id",
                "cus_9",
            ],
        );
        let id = created[0]["id"].as_str().unwrap().to_string();
        assert_eq!(created[0]["stripe_customer_id"], "cus_9", "{}", db.backend);
        let listed = run(&db, &["accounts", "list"]);
        assert_eq!(listed.len(), 1);
        let key = run(
            &db,
            &[
                "keys",
                "create",
                "--account",
                &id,
                "--name",
                "ci",
                "--scopes",
                "read,describe",
            ],
        );
        let secret = key[0]["key"].as_str().unwrap().to_string();
        assert!(secret.starts_with("altk_"));
        assert_eq!(key[0]["scopes"], serde_json::json!(["describe", "read"]));
        let keys = run(&db, &["keys", "list", "--account", &id]);
        assert_eq!(keys.len(), 1);
        assert!(
            !keys[0].to_string().contains(&secret),
            "listings never show secrets"
        );
        let store = db.store().await;
        assert!(store.authenticate(&secret).await.unwrap().is_some());
        let restricted = run(&db, &["accounts", "restrict", &id]);
        assert_eq!(restricted[0]["restricted_by"], "admin");
        let lifted = run(&db, &["accounts", "restrict", &id, "--lift"]);
        assert!(lifted[0]["restricted_by"].is_null());
        let shown = run(&db, &["accounts", "show", &id]);
        assert_eq!(shown[0]["keys"].as_array().unwrap().len(), 1);
        let key_id = keys[0]["id"].as_str().unwrap();
        let revoked = run(&db, &["keys", "revoke", "--account", &id, key_id]);
        assert!(revoked[0]["revoked_at"].is_i64());
        assert!(store.authenticate(&secret).await.unwrap().is_none());
        let deleted = run(&db, &["accounts", "delete", &id, "--grace-days", "7"]);
        let grace = deleted[0]["purge_after"].as_i64().unwrap()
            - deleted[0]["deleted_at"].as_i64().unwrap();
        assert_eq!(grace, 7 * 86_400_000);
        // Mistakes are errors that say what is wrong, with a non-zero exit.
        let output = cli(
            &db,
            &["keys", "create", "--account", &id, "--scopes", "root"],
        );
        assert!(!output.status.success());
        assert!(String::from_utf8_lossy(&output.stderr).contains("unknown scope `root`"));
        let output = cli(&db, &["accounts", "delete", &id, "--grace-days", "31"]);
        assert!(!output.status.success(), "more than 30 days is refused");
        store.close().await;
    }
}

#[test]
fn a_bad_database_url_names_the_flag_to_fix() {
    let output = Command::new(env!("CARGO_BIN_EXE_altimage"))
        .args(["migrate", "--database-url", "mysql://nowhere/db"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--database-url"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_altimage"))
        .args([
            "migrate",
            "--database-url",
            "postgres://nobody:secret@127.0.0.1:1/none",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ALTIMAGE_DATABASE_URL"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is redacted: {stderr}"
    );
}
