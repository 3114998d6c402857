//! Runs `altimage serve` as a real process on a free loopback port, for tests over real HTTP: the
//! tests' defaults (the tiny model, a fresh data directory, its bootstrap key, one ONNX Runtime
//! thread) over the process harness the load bench shares (`tests/support/server.rs`).

use std::process::ExitStatus;
use std::time::Duration;

use super::server_process::{Launch, Process};

pub struct Server {
    /// First, so that the process is killed before its data directory is removed.
    process: Process,
    pub base: String,
    /// The API key the server bootstrapped on its empty database (`None` with --no-bootstrap or
    /// a database that already had accounts).
    pub key: Option<String>,
    /// Its data directory (its SQLite database unless --database-url says otherwise).
    pub data_dir: std::path::PathBuf,
    /// Removed when the server is dropped, unless the caller chose the folder.
    _data_dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts the server on the tiny model with `extra` flags and waits until it listens. Each
    /// server gets its own data directory (its own SQLite database) unless `extra` names one.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_model(&super::tiny_model_dir(), extra)
    }

    /// As `start`, on the model in `model`.
    pub fn start_with_model(model: &std::path::Path, extra: &[&str]) -> Server {
        Self::start_with(model, extra, &[])
    }

    /// The full form: model directory, flags and extra environment variables.
    pub fn start_with(model: &std::path::Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let (temp, data_dir) = match extra.iter().position(|a| *a == "--data-dir") {
            Some(i) => (None, std::path::PathBuf::from(extra[i + 1])),
            None => {
                let temp = tempfile::tempdir().unwrap();
                let path = temp.path().to_path_buf();
                (Some(temp), path)
            }
        };
        let data_flag: Vec<&str> = match &temp {
            Some(_) => vec!["--data-dir", data_dir.to_str().unwrap()],
            None => vec![],
        };
        let process = Launch::new(model, super::ort_library())
            .args(&data_flag)
            .args(extra)
            .envs(env.iter().copied())
            .env("ALTIMAGE_INTRA_THREADS", "1")
            .env("ALTIMAGE_LOG", "info")
            .start();
        let key = std::fs::read_to_string(data_dir.join("bootstrap-api-key"))
            .ok()
            .map(|k| k.trim().to_string())
            .filter(|_| process.log().contains("created a first account"));
        Server {
            base: process.base(),
            process,
            key,
            data_dir,
            _data_dir: temp,
        }
    }

    /// A client that sends the bootstrap key on every request.
    pub fn client(&self) -> reqwest::Client {
        self.client_with_key(
            self.key
                .as_deref()
                .expect("this server bootstrapped no key"),
        )
    }

    pub fn client_with_key(&self, key: &str) -> reqwest::Client {
        super::server_process::client_with_key(key)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    /// An account created through the admin API (`account`: the request body) and a key for it
    /// (`key`: that request's body); returns (account id, the key's secret).
    pub async fn create_account_with_key(
        &self,
        admin_token: &str,
        account: serde_json::Value,
        key: serde_json::Value,
    ) -> (String, String) {
        let admin = self.client_with_key(admin_token);
        let created = |response: reqwest::Response| async move {
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
            body
        };
        let account = created(
            admin
                .post(self.url("/v1/admin/accounts"))
                .json(&account)
                .send()
                .await
                .unwrap(),
        )
        .await;
        let id = account["id"].as_str().unwrap().to_string();
        let key = created(
            admin
                .post(self.url(&format!("/v1/admin/accounts/{id}/keys")))
                .json(&key)
                .send()
                .await
                .unwrap(),
        )
        .await;
        (id, key["key"].as_str().unwrap().to_string())
    }

    /// A new account `name` (email `name@example.com`) with a key of `scopes`, created through the
    /// admin API; returns (account id, the key's secret).
    pub async fn account_with_key(
        &self,
        admin_token: &str,
        name: &str,
        scopes: &[&str],
    ) -> (String, String) {
        self.create_account_with_key(
            admin_token,
            serde_json::json!({"name": name, "email": format!("{name}@example.com")}),
            serde_json::json!({"name": "test", "scopes": scopes}),
        )
        .await
    }

    /// The process id, e.g. to read its memory use from /proc.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        get_text(&http_client(), self.url("/metrics")).await
    }

    /// The value of one `/metrics` sample (`name` or `name{labels}`), if the page has it.
    /// A bare metric name sums its series over every label set (as PromQL's `sum` does), so a
    /// test that does not care which model counted need not name it.
    pub async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await;
        let value = |rest: &str| rest.trim().parse::<f64>().ok();
        if series.contains('{') {
            return text
                .lines()
                .find_map(|line| value(line.strip_prefix(series)?.strip_prefix(' ')?));
        }
        text.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(series)?;
                let rest = match rest.strip_prefix('{') {
                    Some(labelled) => labelled.split_once("} ")?.1,
                    None => rest.strip_prefix(' ')?,
                };
                value(rest)
            })
            .reduce(|sum, v| sum + v)
    }

    /// Whether the `/metrics` page has the sample `series` at `min` or more.
    pub async fn sample_at_least(&self, series: &str, min: f64) -> bool {
        self.sample(series).await.is_some_and(|value| value >= min)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn terminate(&self) {
        self.process.terminate();
    }

    /// Waits for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }
}

/// A client for tests: no proxies from the environment, a bound on every request.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Sends `request` and returns the answer's status (the body is not read).
pub async fn status_of(request: reqwest::RequestBuilder) -> reqwest::StatusCode {
    request.send().await.unwrap().status()
}

/// `POST url` with `png` as a raw `image/png` body: the raw form of a description request.
pub fn post_png(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    png: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "image/png")
        .body(png)
}

/// GETs `url` with `client` and reads the answer as text, whatever its status.
pub async fn get_text(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// Serves `router` on a free 127.0.0.1 port in the background; returns its base URL.
pub async fn serve_on_loopback(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{address}")
}

/// `altimage serve` on `db` (its database and data directory) with the admin API on under
/// `admin_token`, and `extra` flags.
pub fn start_on(db: &super::db::TestDatabase, admin_token: &str, extra: &[&str]) -> Server {
    start_on_with_env(db, admin_token, extra, &[])
}

/// As `start_on`, with extra environment variables.
pub fn start_on_with_env(
    db: &super::db::TestDatabase,
    admin_token: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let mut flags: Vec<String> = db.flags();
    flags.extend(["--admin-token".to_string(), admin_token.to_string()]);
    flags.extend(extra.iter().map(|s| s.to_string()));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Server::start_with(&super::tiny_model_dir(), &flags, env)
}

/// Sends `request` and reads the JSON answer (every answer of the API is JSON).
pub async fn call(
    request: reqwest::RequestBuilder,
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    serde_json::Value,
) {
    json_of(request.send().await.unwrap()).await
}

/// The status, headers and JSON body of `response`; panics with the body when it is not JSON.
pub async fn json_of(
    response: reqwest::Response,
) -> (
    reqwest::StatusCode,
    reqwest::header::HeaderMap,
    serde_json::Value,
) {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{status}, not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, headers, value)
}
