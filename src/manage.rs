//! Start-up and operator commands on the database: open and migrate it, bootstrap a first
//! account on an empty one, and `altimage migrate | accounts … | keys …`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::config::{AccountsCommand, KeysCommand, StoreArgs};
use crate::store::Store;
use crate::store::accounts::{NewAccount, RestrictedBy};
use crate::store::keys::Scope;

/// The file a first start writes the bootstrap key to.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-api-key";

/// Creates the data directory (owner-only), opens the database and applies the migrations.
pub async fn open_store(args: &StoreArgs) -> anyhow::Result<Store> {
    let options = args.options();
    if options.url.starts_with("sqlite:") {
        create_private_dir(&args.data_dir)?;
    }
    let store = Store::connect(&options).await?;
    store.migrate().await?;
    tracing::debug!(backend = store.backend().name(), "database ready");
    Ok(store)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).with_context(|| {
        format!(
            "cannot create the data directory {} (--data-dir, env ALTIMAGE_DATA_DIR)",
            dir.display()
        )
    })
}

/// On an empty database: one account and one all-scope key, the key written to a file only the
/// owner can read (never to the log), and a ready-to-paste request logged.
pub async fn bootstrap(store: &Store, data_dir: &Path, listen: &str) -> anyhow::Result<()> {
    let first = NewAccount {
        name: "default".into(),
        email: "owner@localhost".into(),
        ..NewAccount::default()
    };
    let Some((account, created)) = store
        .create_first_account(first, "bootstrap", &Scope::ALL)
        .await?
    else {
        return Ok(());
    };
    create_private_dir(data_dir)?;
    let path = data_dir.join(BOOTSTRAP_KEY_FILE);
    write_private(&path, &format!("{}\n", created.secret))?;
    let path = std::fs::canonicalize(&path).unwrap_or(path);
    let example = format!(
        "curl -s -H \"Authorization: Bearer $(cat {})\" -H 'Content-Type: image/png' --data-binary @IMAGE.png http://{listen}/v1/descriptions",
        path.display()
    );
    tracing::info!(
        account_id = %account.id,
        key_file = %path.display(),
        example = %example,
        "empty database: created a first account and API key (turn this off with --no-bootstrap)"
    );
    Ok(())
}

fn write_private(path: &PathBuf, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

pub fn migrate(args: &StoreArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let store = open_store(args).await?;
        let backend = store.backend();
        store.close().await;
        eprintln!("migrations applied ({})", backend.name());
        Ok(())
    })
}

pub fn accounts(command: &AccountsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match command {
            AccountsCommand::Create {
                store,
                name,
                email,
                stripe_customer_id,
                rate_limit_per_minute,
            } => {
                let store = open_store(store).await?;
                let account = store
                    .create_account(NewAccount {
                        name: name.clone(),
                        email: email.clone(),
                        stripe_customer_id: stripe_customer_id.clone(),
                        rate_limit_per_minute: *rate_limit_per_minute,
                    })
                    .await?;
                print_json(&account)
            }
            AccountsCommand::List { store } => {
                let store = open_store(store).await?;
                let mut cursor: Option<String> = None;
                loop {
                    let (accounts, has_more) = store.list_accounts(100, cursor.as_deref()).await?;
                    for account in &accounts {
                        print_json(account)?;
                    }
                    cursor = accounts.last().map(|a| a.id.clone());
                    if !has_more || cursor.is_none() {
                        return Ok(());
                    }
                }
            }
            AccountsCommand::Show { store, id } => {
                let store = open_store(store).await?;
                let account = store.account(id).await?;
                let keys = store.list_keys(id).await?;
                print_json(&serde_json::json!({"account": account, "keys": keys}))
            }
            AccountsCommand::Restrict { store, id, lift } => {
                let store = open_store(store).await?;
                print_json(&store.set_restricted(id, !lift, RestrictedBy::Admin).await?)
            }
            AccountsCommand::Delete {
                store,
                id,
                grace_days,
            } => {
                let store = open_store(store).await?;
                let grace = Duration::from_secs(grace_days * 86_400);
                print_json(&store.request_deletion(id, grace).await?)
            }
        }
    })
}

pub fn keys(command: &KeysCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match command {
            KeysCommand::Create {
                store,
                account,
                name,
                scopes,
            } => {
                let store = open_store(store).await?;
                let scopes = scopes
                    .iter()
                    .map(|s| Scope::parse(s.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                let created = store.create_key(account, name, &scopes).await?;
                eprintln!("the key is shown once; only its hash is stored");
                let mut body = serde_json::to_value(&created.key)?;
                body["key"] = created.secret.into();
                print_json(&body)
            }
            KeysCommand::List { store, account } => {
                let store = open_store(store).await?;
                for key in store.list_keys(account).await? {
                    print_json(&key)?;
                }
                Ok(())
            }
            KeysCommand::Revoke {
                store,
                account,
                key_id,
            } => {
                let store = open_store(store).await?;
                print_json(&store.revoke_key(account, key_id).await?)
            }
        }
    })
}
