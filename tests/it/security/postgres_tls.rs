//! PostgreSQL over TLS, `sslmode=verify-full` with a CA file: a private PostgreSQL server is
//! started on a free port with a certificate from a test CA and accepts only TLS connections
//! (`hostssl`); the store connects and migrates through it (and `altimage migrate` does), the
//! session is encrypted, and a CA that did not sign the server's certificate, a name the
//! certificate does not carry, or a plain connection are refused. Skipped (saying so) where no
//! PostgreSQL binaries are installed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use altimage::store::{Store, StoreOptions};
use sqlx::Row;

use super::TestCa;

/// `initdb` and `pg_ctl`'s folder: `PG_BIN`, else a Debian/Ubuntu install.
fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

/// The user PostgreSQL runs as: it refuses root, so as root the `postgres` user.
fn as_postgres(bin: &Path, program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(bin.join(program));
        command
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut command: Command, what: &str) {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A PostgreSQL server of its own, stopped on drop.
struct PrivatePostgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn start(bin: PathBuf, cert_pem: &str, key_pem: &str) -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // As root, the folder must be the postgres user's.
        if let Ok(output) = Command::new("id").args(["-u", "postgres"]).output()
            && output.status.success()
        {
            let uid: u32 = String::from_utf8_lossy(&output.stdout)
                .trim()
                .parse()
                .unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), None).ok();
        }
        let mut initdb = as_postgres(&bin, "initdb");
        initdb
            .args(["-D"])
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"]);
        run(initdb, "initdb");
        // Only TLS connections, from this machine.
        let hba = "local all all trust\nhostssl all all 127.0.0.1/32 trust\n";
        for (name, contents) in [
            ("pg_hba.conf", hba),
            ("server.crt", cert_pem),
            ("server.key", key_pem),
        ] {
            let path = data.join(name);
            std::fs::write(&path, contents).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let owner = std::fs::metadata(&data).unwrap();
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&path, Some(owner.uid()), Some(owner.gid())).ok();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c fsync=off",
            dir.path().display()
        );
        let mut start = as_postgres(&bin, "pg_ctl");
        start
            .args(["-D"])
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(dir.path().join("log"))
            .args(["-w", "start"]);
        run(start, "pg_ctl start");
        PrivatePostgres {
            bin,
            data,
            port,
            _dir: dir,
        }
    }

    fn url(&self, host: &str, query: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{query}", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = as_postgres(&self.bin, "pg_ctl");
        stop.args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"]);
        let _ = stop.output();
    }
}

async fn connect(url: &str) -> Result<Store, altimage::store::StoreError> {
    Store::connect(&StoreOptions {
        url: url.to_string(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_verifies_the_server_against_the_ca_file() {
    let Some(bin) = postgres_bin() else {
        eprintln!(
            "NOTE: no PostgreSQL binaries (PG_BIN, /usr/lib/postgresql/*/bin): the TLS check is skipped"
        );
        return;
    };
    let ca = TestCa::new("altimage test database CA");
    let leaf = ca.leaf(&["127.0.0.1"]);
    let postgres = PrivatePostgres::start(bin, &leaf.cert_pem, &leaf.key_pem);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem).unwrap();
    let verified = postgres.url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
    );

    let store = connect(&verified)
        .await
        .expect("verify-full with the CA file");
    store.migrate().await.unwrap();
    let row = sqlx::query(
        "SELECT CAST(ssl AS TEXT) AS ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(row.try_get::<String, _>("ssl").unwrap(), "true");
    store.close().await;
    // The operator's command takes the same URL.
    let migrate = Command::new(crate::common::server_process::binary())
        .args(["migrate", "--database-url", &verified, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    // Another CA, another name, no TLS: refused.
    let stranger = TestCa::new("someone else");
    let stranger_file = dir.path().join("stranger.pem");
    std::fs::write(&stranger_file, &stranger.cert_pem).unwrap();
    for url in [
        postgres.url(
            "127.0.0.1",
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                stranger_file.display()
            ),
        ),
        postgres.url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", ca_file.display()),
        ),
        postgres.url("127.0.0.1", "sslmode=disable"),
    ] {
        assert!(connect(&url).await.is_err(), "{url} connected");
    }
}
