//! The operator commands on the database: `altimage migrate`, `accounts …` and `keys …`, each
//! on its own short-lived runtime, printing JSON (or JSON Lines) on stdout.

use std::time::Duration;

use clap::Subcommand;

use super::StoreArgs;
use crate::server::open_store;
use crate::store::accounts::{NewAccount, RestrictedBy};
use crate::store::audit::Actor;
use crate::store::ids::AccountId;
use crate::store::keys::Scope;

#[derive(Debug, Clone, Subcommand)]
pub enum AccountsCommand {
    /// Create an account and print it (JSON).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        /// The Stripe customer billed for the account's usage.
        #[arg(long)]
        stripe_customer_id: Option<String>,
        /// Requests per minute for this account (default: the server's --rate-limit-per-minute).
        #[arg(long)]
        rate_limit_per_minute: Option<i64>,
    },
    /// Create a console owner: a user (email taken as verified) and a new account they own;
    /// prints a link to choose their password, valid 24 hours. The way in for the first owner
    /// when --signup is `invite` or `closed`.
    CreateOwner {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        company: Option<String>,
        /// The server's --public-url, for the link.
        #[arg(long, env = "ALTIMAGE_PUBLIC_URL")]
        public_url: String,
    },
    /// List accounts (JSON Lines), newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one account with its keys (JSON).
    Show {
        #[command(flatten)]
        store: StoreArgs,
        id: AccountId,
    },
    /// Restrict an account's processing (new descriptions refused), or lift it with --lift.
    Restrict {
        #[command(flatten)]
        store: StoreArgs,
        id: AccountId,
        #[arg(long)]
        lift: bool,
    },
    /// Record an account's objection to its usage being used for analytics and service
    /// improvement (a request by email, say), or withdraw it with --withdraw.
    Object {
        #[command(flatten)]
        store: StoreArgs,
        id: AccountId,
        #[arg(long)]
        withdraw: bool,
    },
    /// Delete an account: keys revoked at once, data purged after the grace period.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        id: AccountId,
        /// Days before the purge (at most 30).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=30))]
        grace_days: u64,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum KeysCommand {
    /// Create a key and print its secret once (it is stored only as a hash).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// The account the key belongs to.
        #[arg(long)]
        account: AccountId,
        #[arg(long, default_value = "default")]
        name: String,
        /// Comma-separated: describe, read, manage.
        #[arg(long, value_delimiter = ',', default_value = "describe,read,manage")]
        scopes: Vec<String>,
    },
    /// List an account's keys (JSON Lines; never the secrets).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        account: AccountId,
    },
    /// Revoke a key; the next request with it is refused.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        account: AccountId,
        key_id: String,
    },
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
                let new = NewAccount {
                    name: name.clone(),
                    email: email.clone(),
                    stripe_customer_id: stripe_customer_id.clone(),
                    rate_limit_per_minute: *rate_limit_per_minute,
                };
                let account = store.create_account(new, &Actor::cli()).await?;
                print_json(&account)
            }
            AccountsCommand::CreateOwner {
                store,
                name,
                email,
                company,
                public_url,
            } => {
                let origin = crate::cli::console_serve::public_origin(public_url)?;
                let store = open_store(store).await?;
                // Nobody knows this password: the link below sets the real one.
                let unusable = crate::console::password::Passwords::new(1)
                    .hash(crate::store::secrets::random_token())
                    .await?;
                let (user_id, account_id) = store
                    .create_user_with_account(
                        crate::store::users::NewUser {
                            email: email.clone(),
                            name: name.clone(),
                            password_hash: unusable,
                        },
                        company.clone(),
                        true,
                    )
                    .await?;
                let token = store
                    .create_email_token(
                        &user_id,
                        crate::store::email_tokens::TokenPurpose::Reset,
                        24 * 60 * 60 * 1000,
                    )
                    .await?;
                print_json(&serde_json::json!({
                    "user_id": user_id,
                    "account_id": account_id,
                    "set_password_url": format!("{origin}/console/password/reset?token={token}"),
                }))
            }
            AccountsCommand::List { store } => {
                let store = open_store(store).await?;
                let mut cursor: Option<String> = None;
                loop {
                    let (accounts, has_more) = store.list_accounts(100, cursor.as_deref()).await?;
                    for account in &accounts {
                        print_json(account)?;
                    }
                    cursor = accounts.last().map(|a| a.id.to_string());
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
                let actor = Actor::cli();
                print_json(
                    &store
                        .set_restricted(id, !lift, RestrictedBy::Admin, &actor)
                        .await?,
                )
            }
            AccountsCommand::Object {
                store,
                id,
                withdraw,
            } => {
                let store = open_store(store).await?;
                print_json(&store.set_objection(id, !withdraw, &Actor::cli()).await?)
            }
            AccountsCommand::Delete {
                store,
                id,
                grace_days,
            } => {
                let store = open_store(store).await?;
                let grace = Duration::from_secs(grace_days * 86_400);
                print_json(&store.request_deletion(id, grace, &Actor::cli()).await?)
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
                let created = store
                    .create_key(account, name, &scopes, &Actor::cli())
                    .await?;
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
                print_json(&store.revoke_key(account, key_id, &Actor::cli()).await?)
            }
        }
    })
}
