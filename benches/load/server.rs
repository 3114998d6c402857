//! The servers under load: `altimage serve` started through the tests' process harness
//! (`tests/support/server.rs`) with the bench's flags, an account made with the CLI, and the
//! server's CPU time from /proc.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::Settings;
use crate::command::stdout_of;
use crate::server_process::{self, Launch, Process};

/// How long a server may take to load the model and warm up before the bench gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(900);

pub struct Server {
    process: Process,
    /// The describe endpoint, without a query.
    pub url: String,
}

impl Server {
    pub fn start(
        settings: &Settings,
        data_dir: &Path,
        max_batch_size: usize,
        max_concurrent: usize,
    ) -> Server {
        let binary = server_process::binary();
        if !binary.is_file() {
            eprintln!(
                "{} is missing: `cargo bench --bench load` builds it; run `cargo build --release`",
                binary.display()
            );
            std::process::exit(1);
        }
        let process = Launch::new(&settings.model_dir, &settings.library)
            .clear_altimage_env()
            .args(["--max-batch-size", &max_batch_size.to_string()])
            .args(["--max-concurrent-images", &max_concurrent.to_string()])
            // Nothing may time out in the queue: at concurrency 64 without batching the last
            // image waits for 63 others.
            .args(["--max-queue-time-ms", "3600000"])
            // One account shared by both servers (made by `api_key`); the bench measures the
            // model path, so no rate limit applies.
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--no-bootstrap", "--rate-limit-per-minute", "0"])
            .current_dir(&settings.root)
            .ready_timeout(READY_TIMEOUT)
            .keep_log_lines(40)
            .start();
        Server {
            url: format!("{}/v1/descriptions", process.base()),
            process,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.process.log()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }
}

/// An account and key in a fresh database in `data_dir`, made with the CLI as an operator would.
pub fn api_key(data_dir: &Path) -> String {
    let binary = server_process::binary();
    let run = |args: &[&str]| -> serde_json::Value {
        let stdout = stdout_of(
            Command::new(&binary)
                .args(args)
                .arg("--data-dir")
                .arg(data_dir),
            &format!("altimage {args:?}"),
        );
        serde_json::from_slice(&stdout).expect("JSON from the CLI")
    };
    let account = run(&[
        "accounts",
        "create",
        "--name",
        "load bench",
        "--email",
        "bench@localhost",
    ]);
    let account_id = account["id"].as_str().expect("an account id");
    let key = run(&["keys", "create", "--account", account_id]);
    key["key"].as_str().expect("a key").to_string()
}

/// User + system CPU seconds of a process (Linux /proc; USER_HZ is 100).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses: state is field 3, utime 14.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? + ticks(12)?) / 100.0)
}
