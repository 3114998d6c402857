//! Persistence: one sqlx pool over SQLite (the embedded default) or PostgreSQL (several
//! replicas), the migrations, and the few SQL fragments that differ between the two.

pub mod accounts;
pub mod audit;
pub mod consents;
pub mod console_sessions;
pub mod descriptions;
pub mod email_tokens;
pub mod idempotency;
pub mod ids;
pub mod invitations;
pub mod job_items;
pub mod jobs;
pub mod keys;
pub mod login_throttle;
pub mod meter_reports;
pub mod request_log;
pub mod retention;
pub mod review;
pub mod secrets;
pub mod usage;
pub mod users;
pub mod webhook_deliveries;
pub mod webhook_events;

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A uniqueness rule was broken (e.g. a Stripe customer id already used by another account).
    #[error("{0}")]
    Conflict(String),
    /// The request names something that cannot be used (e.g. an unknown scope).
    #[error("{0}")]
    Invalid(String),
    /// A stored row that this version cannot read (edited by hand, or a bug).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The pool had no free connection in time, or the database did not answer.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error(
        "cannot open the database `{url}`: {source} (check --database-url / ALTIMAGE_DATABASE_URL and --data-dir)"
    )]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0} (run `altimage migrate` to see it alone)")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(error.to_string())
            }
            sqlx::Error::Database(ref db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_string())
            }
            // PostgreSQL's refusal of NUL (22021) or of `\u0000` in JSON (22P05). The edge
            // refuses both first, naming the field; this keeps a string it missed a 400 on
            // PostgreSQL, as it would be on SQLite, and logs that a check is missing.
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("22021" | "22P05")) =>
            {
                tracing::error!(error = %db.message(), "a string the edge should have refused reached the database");
                StoreError::Invalid(
                    "a text contains a character that cannot be stored (such as NUL); remove it"
                        .into(),
                )
            }
            other => StoreError::Database(other),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// "Not found" for an id that does not have the form of a `prefix` id: it names nothing, so no
/// query runs (and no hostile string reaches one).
pub(crate) fn known_id(id: &str, prefix: &str, what: &'static str) -> Result<()> {
    if crate::strings::is_id(id, prefix) {
        Ok(())
    } else {
        Err(StoreError::NotFound(what))
    }
}

/// The store's own copy of the edge's string rule ([`crate::strings`]), so that the CLI and any
/// future caller cannot write what the HTTP layer would refuse.
pub(crate) fn check_string(field: &str, value: &str, shape: crate::strings::Shape) -> Result<()> {
    crate::strings::check(value, shape).map_err(|forbidden| {
        StoreError::Invalid(format!("`{field}` contains {forbidden}; remove it"))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Statement that opens a write transaction. SQLite's default deferred transaction fails
    /// with SQLITE_BUSY when it upgrades from read to write under concurrency; IMMEDIATE takes
    /// the write lock up front and waits for it (busy timeout) instead.
    pub fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// The database clock in Unix milliseconds, as SQL. Ledger times come from the database so
    /// that clock skew between replicas cannot reorder usage.
    pub fn now_ms(self) -> &'static str {
        match self {
            Backend::Sqlite => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
            Backend::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the database is and how many connections to hold.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl StoreOptions {
    /// `--database-url` when given, else a SQLite file in the data directory.
    pub fn resolve(database_url: Option<&str>, data_dir: &Path) -> Self {
        let url = match database_url {
            Some(url) => url.to_string(),
            None => format!(
                "sqlite://{}?mode=rwc",
                data_dir.join("altimage.db").display()
            ),
        };
        StoreOptions {
            url,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The database handle: a pool, cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

impl Store {
    /// Opens the pool (creating a SQLite file on first start) without migrating.
    pub async fn connect(options: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if options.url.starts_with("postgres://")
            || options.url.starts_with("postgresql://")
        {
            Backend::Postgres
        } else if options.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Invalid(format!(
                "unsupported database URL `{}`: use sqlite://FILE or postgres://… (--database-url)",
                redact(&options.url)
            )));
        };
        let connect_error = |source| StoreError::Connect {
            url: redact(&options.url),
            source,
        };
        // sqlx's defaults log statements at debug and slow ones (over 1 s) at warn.
        let connect_options = AnyConnectOptions::from_str(&options.url).map_err(connect_error)?;
        let mut pool_options = AnyPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout);
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the one writer; the busy timeout makes writers wait
            // for each other instead of failing.
            pool_options = pool_options.after_connect(|connection, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    connection.execute("PRAGMA busy_timeout = 10000").await?;
                    connection.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        }
        let pool = pool_options
            .connect_with(connect_options)
            .await
            .map_err(connect_error)?;
        Ok(Store { pool, backend })
    }

    /// Applies the migrations this binary carries. Safe on several replicas at once: the
    /// migrator takes a database lock (an advisory lock on PostgreSQL).
    pub async fn migrate(&self) -> Result<()> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.pool.begin_with(self.backend.begin_write()).await?)
    }
}

/// The migrations, embedded so that the binary needs no files beside it.
fn migrator(backend: Backend) -> Migrator {
    let sources: &[(i64, &str, &str)] = match backend {
        Backend::Sqlite => &[
            (
                1,
                "accounts descriptions usage",
                include_str!("../../migrations/sqlite/0001_accounts_descriptions_usage.sql"),
            ),
            (
                2,
                "billing",
                include_str!("../../migrations/sqlite/0002_billing.sql"),
            ),
            (
                3,
                "idempotency leases",
                include_str!("../../migrations/sqlite/0003_idempotency_leases.sql"),
            ),
            (
                4,
                "product copy",
                include_str!("../../migrations/sqlite/0004_product_copy.sql"),
            ),
            (
                5,
                "jobs",
                include_str!("../../migrations/sqlite/0005_jobs.sql"),
            ),
            (
                6,
                "findings",
                include_str!("../../migrations/sqlite/0006_findings.sql"),
            ),
            (
                8,
                "security",
                include_str!("../../migrations/sqlite/0008_security.sql"),
            ),
            (
                9,
                "console",
                include_str!("../../migrations/sqlite/0009_console.sql"),
            ),
        ],
        Backend::Postgres => &[
            (
                1,
                "accounts descriptions usage",
                include_str!("../../migrations/postgres/0001_accounts_descriptions_usage.sql"),
            ),
            (
                2,
                "billing",
                include_str!("../../migrations/postgres/0002_billing.sql"),
            ),
            (
                3,
                "idempotency leases",
                include_str!("../../migrations/postgres/0003_idempotency_leases.sql"),
            ),
            (
                4,
                "product copy",
                include_str!("../../migrations/postgres/0004_product_copy.sql"),
            ),
            (
                5,
                "jobs",
                include_str!("../../migrations/postgres/0005_jobs.sql"),
            ),
            (
                6,
                "findings",
                include_str!("../../migrations/postgres/0006_findings.sql"),
            ),
            (
                8,
                "security",
                include_str!("../../migrations/postgres/0008_security.sql"),
            ),
            (
                9,
                "console",
                include_str!("../../migrations/postgres/0009_console.sql"),
            ),
        ],
    };
    let migrations = sources
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                Cow::Borrowed(description),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect::<Vec<_>>();
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// A new resource id: `prefix_` and a time-ordered UUIDv7, so ids sort by creation.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Application clock in Unix milliseconds (the ledger uses the database clock instead).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/altimage"),
            "postgres://app:***@db:5432/altimage"
        );
        assert_eq!(
            redact("postgres://app@db/altimage"),
            "postgres://app@db/altimage"
        );
        assert_eq!(redact("sqlite:///data/a.db"), "sqlite:///data/a.db");
    }

    #[test]
    fn ids_carry_their_prefix_and_sort_by_time() {
        let first = new_id("desc");
        std::thread::sleep(Duration::from_millis(2));
        let second = new_id("desc");
        assert!(first.starts_with("desc_") && first.len() == 5 + 32);
        assert!(first < second);
    }
}
