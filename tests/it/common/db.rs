//! Test databases: a fresh SQLite file always, and a fresh PostgreSQL database when
//! `TEST_POSTGRES_URL` is set (the Makefile sets it where a server answers on 127.0.0.1:5432).
//! Each test gets its own, so tests never see each other's rows.

use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};

/// One database for one test; dropped (PostgreSQL) or deleted (SQLite) at the end.
pub struct TestDatabase {
    /// `sqlite` or `postgres`, for messages.
    pub backend: &'static str,
    /// What `--database-url` takes.
    pub url: String,
    /// The data directory (the SQLite file lives here).
    pub data_dir: tempfile::TempDir,
    postgres: Option<(String, String)>,
}

/// The server URL for PostgreSQL tests, when configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

impl TestDatabase {
    pub fn sqlite() -> TestDatabase {
        let data_dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}?mode=rwc",
            data_dir.path().join("altimage.db").display()
        );
        TestDatabase {
            backend: "sqlite",
            url,
            data_dir,
            postgres: None,
        }
    }

    /// A new, empty PostgreSQL database on the `TEST_POSTGRES_URL` server.
    pub async fn postgres(server: &str) -> TestDatabase {
        let name = format!("altimage_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(server)
            .await
            .unwrap_or_else(|e| panic!("TEST_POSTGRES_URL={server} does not answer: {e}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = with_database(server, &name);
        TestDatabase {
            backend: "postgres",
            url,
            data_dir: tempfile::tempdir().unwrap(),
            postgres: Some((server.to_string(), name)),
        }
    }

    /// A new PostgreSQL database for a test that needs one; `None`, with a line on stderr saying
    /// that `what` needs PostgreSQL, when TEST_POSTGRES_URL is not set.
    pub async fn postgres_or_skip(what: &str) -> Option<TestDatabase> {
        let Some(server) = postgres_url() else {
            eprintln!("TEST_POSTGRES_URL is not set: {what} needs PostgreSQL");
            return None;
        };
        Some(TestDatabase::postgres(&server).await)
    }

    /// Every backend this run tests: SQLite, and PostgreSQL when configured.
    pub async fn all() -> Vec<TestDatabase> {
        let mut databases = vec![TestDatabase::sqlite()];
        if let Some(server) = postgres_url() {
            databases.push(TestDatabase::postgres(&server).await);
        }
        databases
    }

    pub async fn store(&self) -> altimage::store::Store {
        let options = altimage::store::StoreOptions {
            url: self.url.clone(),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
        };
        let store = altimage::store::Store::connect(&options).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Flags for `altimage serve` and the CLI: this database and its data directory.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--data-dir".into(),
            self.data_dir.path().display().to_string(),
            "--database-url".into(),
            self.url.clone(),
        ]
    }
}

/// The tables whose rows belong to one account (by `account_id`): what deleting it must empty.
pub const ACCOUNT_TABLES: [&str; 10] = [
    "descriptions",
    "description_versions",
    "api_keys",
    "usage_events",
    "jobs",
    "job_items",
    "webhook_deliveries",
    "memberships",
    "invitations",
    "console_sessions",
];

/// How many rows of `table` belong to `account`.
pub async fn rows_of(store: &altimage::store::Store, table: &str, account: impl AsRef<str>) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE account_id = $1");
    select_one(store, &sql, account.as_ref()).await
}

/// The one value `sql` selects from `store`'s database, `arg` bound to its `$1`.
pub async fn select_one<'q, T>(store: &altimage::store::Store, sql: &'q str, arg: &'q str) -> T
where
    T: sqlx::Type<sqlx::Any> + for<'r> sqlx::Decode<'r, sqlx::Any> + Send + Unpin,
{
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// `server` with its database name replaced by `name`.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.postgres.take() else {
            return;
        };
        // Drop may run inside a runtime: do the async cleanup on a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&server).await {
                    let _ = admin
                        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await;
                }
            });
        })
        .join();
    }
}
