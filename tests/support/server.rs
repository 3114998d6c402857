//! `altimage serve` as a child process on a free loopback port: started, waited on until its JSON
//! log says `ready`, its stderr kept, killed on drop. One copy for the integration tests
//! (`tests/it/common/server.rs`) and the load bench (`benches/load/server.rs`), which both pull
//! this file in with `#[path]`; it uses nothing from either, so every setting comes through
//! `Launch`.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `altimage` binary Cargo builds for the target that includes this file (the test profile's
/// for the tests, target/release/altimage for the benches).
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_altimage"))
}

/// How to start one server: `altimage serve --listen 127.0.0.1:0 --model-dir <model> --log-format
/// json <args>` with `ORT_DYLIB_PATH=<library>` and then `env`.
pub struct Launch {
    binary: PathBuf,
    model_dir: PathBuf,
    library: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    clear_altimage_env: bool,
    current_dir: Option<PathBuf>,
    ready_timeout: Duration,
    log_lines: Option<usize>,
}

impl Launch {
    /// `binary()` on `model_dir` with the ONNX Runtime `library`; 120 s to become ready, the
    /// caller's environment inherited, the whole log kept.
    pub fn new(model_dir: impl Into<PathBuf>, library: impl Into<PathBuf>) -> Launch {
        Launch {
            binary: binary(),
            model_dir: model_dir.into(),
            library: library.into(),
            args: Vec::new(),
            env: Vec::new(),
            clear_altimage_env: false,
            current_dir: None,
            ready_timeout: Duration::from_secs(120),
            log_lines: None,
        }
    }

    /// Another `altimage` binary.
    pub fn binary(mut self, binary: impl Into<PathBuf>) -> Launch {
        self.binary = binary.into();
        self
    }

    /// One flag or value after `serve --listen 127.0.0.1:0 --model-dir <model> --log-format json`.
    pub fn arg(self, arg: impl AsRef<OsStr>) -> Launch {
        self.args([arg])
    }

    /// Flags after `serve --listen 127.0.0.1:0 --model-dir <model> --log-format json`.
    pub fn args<I, S>(mut self, args: I) -> Launch
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    /// An environment variable, set after `ORT_DYLIB_PATH` (later ones win).
    pub fn env(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Launch {
        self.env
            .push((name.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Environment variables, in order.
    pub fn envs<I, K, V>(self, vars: I) -> Launch
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        vars.into_iter()
            .fold(self, |launch, (name, value)| launch.env(name, value))
    }

    /// Settings come from the flags and `env` only, not from an ALTIMAGE_* in the caller's shell.
    pub fn clear_altimage_env(mut self) -> Launch {
        self.clear_altimage_env = true;
        self
    }

    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Launch {
        self.current_dir = Some(dir.into());
        self
    }

    /// How long loading the model and warming up may take before `start` gives up.
    pub fn ready_timeout(mut self, timeout: Duration) -> Launch {
        self.ready_timeout = timeout;
        self
    }

    /// Keep only the last `lines` lines of the log (a long run logs every request).
    pub fn keep_log_lines(mut self, lines: usize) -> Launch {
        self.log_lines = Some(lines);
        self
    }

    /// Starts the process and waits until it logs `ready` with its address; panics with the
    /// command and the log if it exits or times out first.
    pub fn start(self) -> Process {
        let mut command = Command::new(&self.binary);
        if self.clear_altimage_env {
            for (name, _) in std::env::vars_os() {
                if name.to_string_lossy().starts_with("ALTIMAGE_") {
                    command.env_remove(name);
                }
            }
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--model-dir"])
            .arg(&self.model_dir)
            .args(["--log-format", "json"])
            .args(&self.args)
            .env("ORT_DYLIB_PATH", &self.library)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.current_dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (address_sender, address_receiver) = std::sync::mpsc::channel();
        {
            let log = log.clone();
            let cap = self.log_lines;
            // Reads stderr until the process exits, so the pipe never fills.
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("\"message\":\"ready\"")
                        && let Ok(value) = serde_json::from_str::<serde_json::Value>(&line)
                        && let Some(address) = value["fields"]["address"].as_str()
                    {
                        let _ = address_sender.send(address.to_string());
                    }
                    let mut log = log.lock().unwrap();
                    if cap.is_some_and(|cap| log.len() >= cap) {
                        log.pop_front();
                    }
                    log.push_back(line);
                }
            });
        }
        let mut process = Process {
            child,
            address: String::new(),
            log,
        };
        match address_receiver.recv_timeout(self.ready_timeout) {
            Ok(address) => process.address = address,
            Err(_) => {
                let _ = process.child.kill();
                let _ = process.child.wait();
                let args: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
                panic!(
                    "server did not become ready ({}):\n{}",
                    args.join(" "),
                    process.log()
                );
            }
        }
        process
    }
}

/// A started server; killed when dropped.
pub struct Process {
    child: Child,
    address: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Process {
    /// `http://<address>`, no trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The process id, e.g. to read its memory or CPU use from /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log so far (the kept lines), one line each.
    pub fn log(&self) -> String {
        Vec::from(self.log.lock().unwrap().clone()).join("\n")
    }

    /// Sends SIGTERM (a graceful shutdown).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client builder for the server's API: no proxies from the environment, and
/// `Authorization: Bearer <key>` on every request.
pub fn client_with_key(key: &str) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().expect("an ASCII key"),
    );
    reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
}
