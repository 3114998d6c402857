//! `altimage serve`'s flags, grouped as the runtime is: each group builds the struct it
//! configures (`EngineArgs` → `EngineConfig`, `HttpArgs` → `HttpLimits` and `ConnectionLimits`,
//! `AccessArgs` → `Access`, `FetchArgs` → `FetchPolicy`, `SecurityArgs` → `TlsFiles`,
//! `WebPolicy` and `TrustedProxies`), so `crate::server` only starts things.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::billing::BillingArgs;
use super::jobs_serve::JobsArgs;
use super::{ModelArgs, StoreArgs};
use crate::engine::EngineConfig;
use crate::fetch::FetchPolicy;
use crate::http::client::{IpBlock, TrustedProxies};
use crate::http::headers::{WebPolicy, parse_origin};
use crate::http::ops::{Info, InfoLimits, InfoModel};
use crate::http::ratelimit::RateLimiter;
use crate::http::server::ConnectionLimits;
use crate::http::{Access, HttpLimits};
use crate::model::ModelCard;
use crate::model::preprocess::ImageLimits;

/// Where `--max-image-pixels` is shown: beside `--max-image-bytes`, though the engine checks it.
const IMAGES: &str = "Images";

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ALTIMAGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Do not create a first account and key on an empty database. On: a newcomer's first
    /// start writes a ready key to <data-dir>/bootstrap-api-key (owner-only).
    #[arg(long, env = "ALTIMAGE_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,

    /// On SIGTERM/SIGINT, how long in-flight work may take before the server exits anyway. Keep
    /// it below the orchestrator's kill grace period.
    #[arg(long, env = "ALTIMAGE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,

    // Plain flags above: a heading set on a group carries on to every flag after it.
    #[command(flatten, next_help_heading = "Model")]
    pub model: ModelArgs,

    #[command(flatten, next_help_heading = "Database")]
    pub store: StoreArgs,

    #[command(flatten, next_help_heading = "Accounts and retention")]
    pub access: AccessArgs,

    #[command(flatten, next_help_heading = "Accounts and retention")]
    pub retention: RetentionArgs,

    #[command(flatten, next_help_heading = "Batching and admission")]
    pub engine: EngineArgs,

    #[command(flatten, next_help_heading = IMAGES)]
    pub fetch: FetchArgs,

    #[command(flatten, next_help_heading = "HTTP connections and requests")]
    pub http: HttpArgs,

    #[command(flatten, next_help_heading = "TLS, browsers and request logs")]
    pub security: SecurityArgs,

    #[command(flatten, next_help_heading = "Billing (Stripe)")]
    pub billing: BillingArgs,

    #[command(flatten, next_help_heading = "Bulk jobs")]
    pub jobs: JobsArgs,

    #[command(flatten, next_help_heading = "Console")]
    pub console: crate::cli::console_serve::ConsoleArgs,
}

impl ServeArgs {
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// The body of `GET /v1/info`: what this server runs and the limits a client must respect.
    /// `models` are the loaded ones, the default first.
    pub fn info(&self, database: &str, billing: bool, models: &[(String, ModelCard)]) -> Info {
        let (engine, http) = (&self.engine, &self.http);
        let card = &models[0].1;
        Info {
            version: env!("CARGO_PKG_VERSION").to_string(),
            model: models[0].0.clone(),
            models: models
                .iter()
                .map(|(name, card)| InfoModel {
                    name: name.clone(),
                    family: card.family.model_type().to_string(),
                    outputs: card.capabilities.outputs.clone(),
                    languages: card.capabilities.languages.clone(),
                    product_context: card.capabilities.product_context,
                    sampling: card.capabilities.sampling,
                    detail: card.capabilities.detail,
                    max_new_tokens: card.max_new_tokens,
                    max_num_beams: engine.max_num_beams.min(card.max_num_beams),
                    workers: engine.workers,
                    // Filled in per request.
                    healthy_workers: 0,
                    ready: false,
                })
                .collect(),
            device: self.model.device.to_string(),
            dtype: format!("{:?}", self.model.dtype).to_lowercase(),
            workers: engine.workers * models.len(),
            // Filled in per request.
            healthy_workers: 0,
            ready: false,
            database: database.to_string(),
            admin_api: self
                .access
                .admin_token
                .as_deref()
                .is_some_and(|t| !t.is_empty()),
            billing,
            limits: InfoLimits {
                max_batch_size: engine.max_batch_size,
                max_batch_tokens: engine.max_batch_tokens,
                max_batch_delay_ms: engine.max_batch_delay_ms,
                max_queue_time_ms: engine.max_queue_time_ms,
                max_concurrent_images: engine.max_concurrent_images,
                max_body_bytes: http.max_body_bytes,
                max_image_bytes: self.fetch.max_image_bytes,
                max_image_pixels: engine.max_image_pixels,
                max_images_per_request: http.max_images_per_request,
                max_connections: http.max_connections,
                header_read_timeout_secs: http.header_read_timeout_secs,
                body_read_timeout_secs: http.body_read_timeout_secs,
                max_new_tokens: card.max_new_tokens,
                // The family's own ceiling applies too (`describe::Validator`).
                max_num_beams: engine.max_num_beams.min(card.max_num_beams),
                rate_limit_per_minute: self.access.rate_limit_per_minute,
            },
        }
    }
}

/// Who may do what: the admin API, per-account rate limits, the deletion grace period.
#[derive(Debug, Clone, Args)]
pub struct AccessArgs {
    /// Token for the /v1/admin/ routes (`Authorization: Bearer TOKEN`). Unset: the admin routes
    /// do not exist; use `altimage accounts` and `altimage keys` instead.
    #[arg(long, env = "ALTIMAGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Requests per minute per account (burst of the same size), unless the account has its own
    /// limit; 0 = no limit. Counted per replica.
    #[arg(long, env = "ALTIMAGE_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u64,

    /// Days between an account's deletion request and the purge of its data (at most 30, the
    /// privacy policy's promise). Keys are revoked at once either way.
    #[arg(long, env = "ALTIMAGE_DELETION_GRACE_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub deletion_grace_days: u64,
}

impl AccessArgs {
    /// An empty `--admin-token` counts as unset: the admin routes stay unmounted.
    pub fn config(&self) -> Access {
        Access {
            rate_limiter: RateLimiter::new(),
            rate_limit_per_minute: self.rate_limit_per_minute,
            admin_token: self.admin_token.clone().filter(|t| !t.is_empty()),
            deletion_grace: Duration::from_secs(self.deletion_grace_days * 86_400),
            // `SecurityArgs` sets them.
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// The retention job (`store::retention::purge_loop`).
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// How often the retention job runs (purges due accounts, old usage rows, expired
    /// idempotency records). Safe on every replica.
    #[arg(long, env = "ALTIMAGE_PURGE_INTERVAL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub purge_interval_secs: u64,
}

impl RetentionArgs {
    pub fn purge_interval(&self) -> Duration {
        Duration::from_secs(self.purge_interval_secs)
    }
}

/// The engine: model instances, batching, the queue, admission and what a request may ask.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Model instances, each on its own thread with its own sessions (e.g. 2 on one GPU to
    /// overlap transfers with compute). Each holds a full copy of the weights.
    #[arg(long, env = "ALTIMAGE_WORKERS", default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub workers: usize,

    /// Images per inference batch. Larger batches raise GPU throughput and latency; warm-up runs
    /// one batch of this size and fails at start-up when the device cannot hold it.
    #[arg(long, env = "ALTIMAGE_MAX_BATCH_SIZE", default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_batch_size: usize,

    /// Decoder positions per batch: the sum over its images of (prompt + max_new_tokens) ×
    /// beams. Bounds KV-cache memory; one image always fits whatever its cost.
    #[arg(long, env = "ALTIMAGE_MAX_BATCH_TOKENS", default_value_t = 4096)]
    pub max_batch_tokens: usize,

    /// Wait up to this long for a batch to fill once an image is queued (0 = run what is there
    /// as soon as a worker is free). Trades latency at low load for bigger batches.
    #[arg(long, env = "ALTIMAGE_MAX_BATCH_DELAY_MS", default_value_t = 0)]
    pub max_batch_delay_ms: u64,

    /// An image not in a batch within this time is answered 503 with Retry-After.
    #[arg(long, env = "ALTIMAGE_MAX_QUEUE_TIME_MS", default_value_t = 30_000)]
    pub max_queue_time_ms: u64,

    /// Images admitted at once (queued, preparing or running); beyond it requests get 429. Each
    /// prepared image holds ~7 MB until its batch runs.
    #[arg(long, env = "ALTIMAGE_MAX_CONCURRENT_IMAGES", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrent_images: usize,

    /// Threads decoding and resizing images (0 = half the cores, at least 1).
    #[arg(long, env = "ALTIMAGE_PREPARE_THREADS", default_value_t = 0)]
    pub prepare_threads: usize,

    /// Largest image in pixels (width × height), checked before decoding.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGE_PIXELS", default_value_t = ImageLimits::DEFAULT_MAX_PIXELS, help_heading = IMAGES)]
    pub max_image_pixels: u64,

    /// Widest beam search a request may ask for.
    #[arg(long, env = "ALTIMAGE_MAX_NUM_BEAMS", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_num_beams: usize,

    /// Seconds clients are told to wait (Retry-After) on 429 and 503.
    #[arg(long, env = "ALTIMAGE_RETRY_AFTER_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_after_secs: u64,
}

impl EngineArgs {
    pub fn config(&self) -> EngineConfig {
        EngineConfig {
            max_concurrent_images: self.max_concurrent_images,
            max_batch_size: self.max_batch_size,
            max_batch_tokens: self.max_batch_tokens,
            max_batch_delay: Duration::from_millis(self.max_batch_delay_ms),
            max_queue_time: Duration::from_millis(self.max_queue_time_ms),
            workers: self.workers,
            prepare_threads: super::prepare_threads(self.prepare_threads),
            image_limits: ImageLimits {
                max_pixels: self.max_image_pixels,
            },
            max_num_beams: self.max_num_beams,
            retry_after: Duration::from_secs(self.retry_after_secs),
        }
    }
}

/// What one connection and one request may hold.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// Largest request body in bytes (a JSON body carries base64, a third larger than the image).
    #[arg(long, env = "ALTIMAGE_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Images in one /v1/descriptions/batch request.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGES_PER_REQUEST", default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_images_per_request: usize,

    /// HTTP connections open at once; one more is answered 503 (Retry-After) and closed. Each
    /// connection may hold a request body of up to --max-body-bytes in memory (twice that while
    /// a JSON body is parsed), so twice the product of the two bounds body memory.
    #[arg(long, env = "ALTIMAGE_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,

    /// A request's headers must arrive within this time, and an idle kept-alive connection is
    /// closed after it. Shorter frees connections held by slow or idle clients sooner; longer
    /// tolerates slower links.
    #[arg(long, env = "ALTIMAGE_HEADER_READ_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// A request's body must arrive within this time of its headers, or it is answered 408 and
    /// the connection closed. At the default --max-body-bytes (32 MiB), 60 s needs about
    /// 4.5 Mbit/s; raise it for clients on slow links that upload large images.
    #[arg(long, env = "ALTIMAGE_BODY_READ_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,
}

impl HttpArgs {
    /// The limits the HTTP layer enforces per request.
    pub fn config(&self) -> HttpLimits {
        HttpLimits {
            max_body_bytes: self.max_body_bytes,
            max_images_per_request: self.max_images_per_request,
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
        }
    }

    /// The accept loop's limits; a refused connection is told `--retry-after-secs`.
    pub fn connection_limits(&self, retry_after: Duration) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            retry_after,
        }
    }
}

/// HTTPS, what browsers are told, and who the client is for the request log.
#[derive(Debug, Clone, Args)]
pub struct SecurityArgs {
    /// Serve HTTPS with this certificate chain (PEM, leaf first); needs --tls-key. Reloaded
    /// without a restart on SIGHUP or when the file changes. Unset: plain HTTP, for a TLS
    /// proxy in front or a trusted network.
    #[arg(long, env = "ALTIMAGE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); keep it owner-only.
    #[arg(long, env = "ALTIMAGE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked for changes (SIGHUP reloads at
    /// once). Shorter picks up a renewal sooner; each check reads both files.
    #[arg(long, env = "ALTIMAGE_TLS_RELOAD_POLL_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub tls_reload_poll_secs: u64,

    /// Origins whose browser scripts may call the API (CORS), comma-separated, exactly as
    /// browsers send them: `https://shop.example`. Unset: none (no CORS headers at all). API
    /// keys in a browser are visible to its user: allow only origins you trust.
    #[arg(long, env = "ALTIMAGE_CORS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_allowed_origins: Vec<String>,

    /// Proxies whose `X-Forwarded-For` is believed for the client's address (request log, audit
    /// log), comma-separated addresses or CIDR blocks (`10.0.0.0/8`). Unset: the TCP peer is
    /// the client. Name only your own load balancers: a client can write the header itself.
    #[arg(long, env = "ALTIMAGE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<IpBlock>,

    /// Do not keep the request log (GET /v1/requests, the request counts of GET /v1/usage).
    /// On: every authenticated request is written in batches, off the request path.
    #[arg(long, env = "ALTIMAGE_NO_REQUEST_LOG")]
    pub no_request_log: bool,
}

impl SecurityArgs {
    /// The certificate files, when HTTPS is on.
    pub fn tls_files(&self) -> Option<crate::http::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::http::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                poll: Duration::from_secs(self.tls_reload_poll_secs),
            }),
            _ => None,
        }
    }

    pub fn web_policy(&self) -> WebPolicy {
        WebPolicy {
            hsts: self.tls_files().is_some(),
            cors_allowed_origins: self.cors_allowed_origins.clone(),
        }
    }

    pub fn trusted_proxies(&self) -> TrustedProxies {
        TrustedProxies::new(self.trusted_proxies.clone())
    }
}

/// Image size, and what fetching an `image_url` may do.
#[derive(Debug, Clone, Args)]
pub struct FetchArgs {
    /// Largest image in bytes, sent or fetched.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGE_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_image_bytes: u64,

    /// Fetch `image_url`s that resolve to private or loopback addresses. Off: such URLs are
    /// refused (SSRF). Link-local and cloud-metadata addresses stay refused even when on. Only
    /// for trusted networks and tests.
    #[arg(long, env = "ALTIMAGE_ALLOW_PRIVATE_IMAGE_URLS")]
    pub allow_private_image_urls: bool,

    /// Time limit for fetching one `image_url`, redirects included.
    #[arg(long, env = "ALTIMAGE_IMAGE_URL_TIMEOUT_MS", default_value_t = 10_000)]
    pub image_url_timeout_ms: u64,
}

impl FetchArgs {
    /// The URL fetcher's policy; `--max-image-bytes` also bounds inline images (the describe
    /// service reads it from here).
    pub fn config(&self) -> FetchPolicy {
        FetchPolicy {
            max_bytes: self.max_image_bytes,
            timeout: Duration::from_millis(self.image_url_timeout_ms),
            allow_private: self.allow_private_image_urls,
            ..FetchPolicy::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    /// Counts and periods that make no sense at zero are refused at parse time, naming the
    /// flag, instead of being raised to 1 behind the operator's back.
    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for flag in [
            "--workers",
            "--max-batch-size",
            "--max-concurrent-images",
            "--max-images-per-request",
            "--max-num-beams",
            "--retry-after-secs",
            "--purge-interval-secs",
            "--database-max-connections",
            "--billing-flush-secs",
            "--billing-retry-max-secs",
            "--max-connections",
            "--header-read-timeout-secs",
            "--body-read-timeout-secs",
            "--tls-reload-poll-secs",
        ] {
            let parsed = Cli::try_parse_from(["altimage", "serve", "--model-dir", "m", flag, "0"]);
            let error = parsed
                .err()
                .unwrap_or_else(|| panic!("{flag} 0 was accepted"));
            assert!(error.to_string().contains(flag), "{flag}: {error}");
            let parsed = Cli::try_parse_from(["altimage", "serve", "--model-dir", "m", flag, "1"]);
            assert!(parsed.is_ok(), "{flag} 1: {:?}", parsed.err());
        }
    }
}
