//! The command line: one clap definition, every flag with `long` and an `ALTIMAGE_…` env name.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::preprocess::ImageLimits;
use crate::model::runtime::{self, Device, KvCache, RuntimeOptions};
use crate::model::{Detail, LoadOptions, ModelError};

#[derive(Debug, Parser)]
#[command(
    name = "altimage",
    version,
    about = "Alt text and product descriptions for e-commerce images (Florence-2 on ONNX Runtime)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr: `pretty` for people, `json` for log collectors.
    #[arg(long, env = "ALTIMAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty, global = true)]
    pub log_format: LogFormat,

    /// Log filter (tracing env-filter syntax, e.g. `info,ort=warn`).
    #[arg(
        long,
        env = "ALTIMAGE_LOG",
        default_value = "info,ort=warn",
        global = true
    )]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

// Parsed once at start-up: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe image files or folders (recursively) and write JSON Lines or CSV.
    Describe(DescribeArgs),
    /// Run the HTTP API with dynamic batching.
    Serve(ServeArgs),
    /// Apply the database migrations and exit (serve also applies them at start-up).
    Migrate(StoreArgs),
    /// Manage accounts in the database directly (the admin API does the same over HTTP).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Manage API keys in the database directly.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// Where the database is. Shared by `serve`, `migrate`, `accounts` and `keys`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Folder for the SQLite database and the bootstrap key file; created (owner-only) when
    /// missing. Back it up: it holds accounts, descriptions and usage.
    #[arg(long, env = "ALTIMAGE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// `postgres://user:pass@host/db` to share one database between replicas; unset, a SQLite
    /// file in --data-dir (one replica only).
    #[arg(long, env = "ALTIMAGE_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Database connections per process. PostgreSQL's max_connections must cover every
    /// replica's pool.
    #[arg(long, env = "ALTIMAGE_DATABASE_MAX_CONNECTIONS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,
}

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
    /// List accounts (JSON Lines), newest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one account with its keys (JSON).
    Show {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
    },
    /// Restrict an account's processing (new descriptions refused), or lift it with --lift.
    Restrict {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
        #[arg(long)]
        lift: bool,
    },
    /// Delete an account: keys revoked at once, data purged after the grace period.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        id: String,
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
        account: String,
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
        account: String,
    },
    /// Revoke a key; the next request with it is refused.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        account: String,
        key_id: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "ALTIMAGE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,

    #[command(flatten)]
    pub model: ModelArgs,

    #[command(flatten)]
    pub store: StoreArgs,

    /// Token for the /v1/admin/ routes (`Authorization: Bearer TOKEN`). Unset: the admin routes
    /// do not exist; use `altimage accounts` and `altimage keys` instead.
    #[arg(long, env = "ALTIMAGE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Do not create a first account and key on an empty database. On: a newcomer's first
    /// start writes a ready key to <data-dir>/bootstrap-api-key (owner-only).
    #[arg(long, env = "ALTIMAGE_NO_BOOTSTRAP")]
    pub no_bootstrap: bool,

    /// Requests per minute per account (burst of the same size), unless the account has its own
    /// limit; 0 = no limit. Counted per replica.
    #[arg(long, env = "ALTIMAGE_RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u64,

    /// Days between an account's deletion request and the purge of its data (at most 30, the
    /// privacy policy's promise). Keys are revoked at once either way.
    #[arg(long, env = "ALTIMAGE_DELETION_GRACE_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=30))]
    pub deletion_grace_days: u64,

    /// How often the retention job runs (purges due accounts, old usage rows, expired
    /// idempotency records). Safe on every replica.
    #[arg(long, env = "ALTIMAGE_PURGE_INTERVAL_SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub purge_interval_secs: u64,

    /// Model instances, each on its own thread with its own sessions (e.g. 2 on one GPU to
    /// overlap transfers with compute). Each holds a full copy of the weights.
    #[arg(long, env = "ALTIMAGE_WORKERS", default_value_t = 1)]
    pub workers: usize,

    /// Images per inference batch. Larger batches raise GPU throughput and latency; warm-up runs
    /// one batch of this size and fails at start-up when the device cannot hold it.
    #[arg(long, env = "ALTIMAGE_MAX_BATCH_SIZE", default_value_t = 8)]
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

    /// Largest request body in bytes (a JSON body carries base64, a third larger than the image).
    #[arg(long, env = "ALTIMAGE_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest image in bytes, sent or fetched.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGE_BYTES", default_value_t = 20 * 1024 * 1024)]
    pub max_image_bytes: u64,

    /// Largest image in pixels (width × height), checked before decoding.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGE_PIXELS", default_value_t = ImageLimits::DEFAULT_MAX_PIXELS)]
    pub max_image_pixels: u64,

    /// Images in one /v1/descriptions/batch request.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGES_PER_REQUEST", default_value_t = 16, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_images_per_request: usize,

    /// Widest beam search a request may ask for.
    #[arg(long, env = "ALTIMAGE_MAX_NUM_BEAMS", default_value_t = 4, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_num_beams: usize,

    /// Fetch `image_url`s that resolve to private or loopback addresses. Off: such URLs are
    /// refused (SSRF). Link-local and cloud-metadata addresses stay refused even when on. Only
    /// for trusted networks and tests.
    #[arg(long, env = "ALTIMAGE_ALLOW_PRIVATE_IMAGE_URLS")]
    pub allow_private_image_urls: bool,

    /// Time limit for fetching one `image_url`, redirects included.
    #[arg(long, env = "ALTIMAGE_IMAGE_URL_TIMEOUT_MS", default_value_t = 10_000)]
    pub image_url_timeout_ms: u64,

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

    /// Seconds clients are told to wait (Retry-After) on 429 and 503.
    #[arg(long, env = "ALTIMAGE_RETRY_AFTER_SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub retry_after_secs: u64,

    /// On SIGTERM/SIGINT, how long in-flight work may take before the server exits anyway. Keep
    /// it below the orchestrator's kill grace period.
    #[arg(long, env = "ALTIMAGE_SHUTDOWN_TIMEOUT_SECS", default_value_t = 25)]
    pub shutdown_timeout_secs: u64,

    #[command(flatten)]
    pub billing: BillingArgs,
}

/// Stripe metered billing. Without a secret key billing is off: usage is still recorded in the
/// ledger (and shown by /v1/usage), nothing is sent.
#[derive(Debug, Clone, Args)]
pub struct BillingArgs {
    /// Stripe secret key (`sk_…`, or a restricted `rk_…` allowed to write meter events and, with
    /// --stripe-create-customers, customers). Unset, the conventional STRIPE_SECRET_KEY variable
    /// is read; neither set: billing is off.
    #[arg(long, env = "ALTIMAGE_STRIPE_SECRET_KEY", hide_env_values = true)]
    pub stripe_secret_key: Option<String>,

    /// Webhook endpoint secret (`whsec_…`); unset, STRIPE_WEBHOOK_SECRET is read. Set,
    /// `POST /v1/stripe/webhook` accepts signed events (`customer.deleted` unmaps the account);
    /// unset, the route does not exist.
    #[arg(long, env = "ALTIMAGE_STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    pub stripe_webhook_secret: Option<String>,

    /// How far a webhook signature's timestamp may be from now. Longer tolerates clock skew;
    /// shorter narrows the window for replaying a captured delivery.
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_WEBHOOK_TOLERANCE_SECS",
        default_value_t = 300
    )]
    pub stripe_webhook_tolerance_secs: u64,

    /// Stripe API base URL. Only tests and proxies change it.
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_API_BASE",
        default_value = "https://api.stripe.com/"
    )]
    pub stripe_api_base: String,

    /// Time limit of one Stripe request. A report's lease is twice this plus 10 s, so a longer
    /// limit also delays another replica's takeover after a crash.
    #[arg(long, env = "ALTIMAGE_STRIPE_TIMEOUT_MS", default_value_t = 20_000)]
    pub stripe_timeout_ms: u64,

    /// How often usage is grouped into meter reports and sent. Shorter: usage shows in Stripe
    /// sooner; longer: fewer Stripe calls (at most one per account, meter and hour per flush).
    #[arg(long, env = "ALTIMAGE_BILLING_FLUSH_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub billing_flush_secs: u64,

    /// Longest wait between two attempts of one report (backoff starts at 2 s and doubles, with
    /// jitter). Shorter recovers sooner after an outage; longer spares a struggling Stripe.
    #[arg(long, env = "ALTIMAGE_BILLING_RETRY_MAX_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub billing_retry_max_secs: u64,

    /// Meter event name for descriptions created (the meter's `event_name` in Stripe).
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_METER_CREATED",
        default_value = "alt_text_description_created"
    )]
    pub stripe_meter_created: String,

    /// Meter event name for descriptions retrieved.
    #[arg(
        long,
        env = "ALTIMAGE_STRIPE_METER_RETRIEVED",
        default_value = "alt_text_description_retrieved"
    )]
    pub stripe_meter_retrieved: String,

    /// Create a Stripe customer for each account with usage and none mapped. Off: an operator
    /// maps one (admin API or `altimage accounts`), and the account's usage waits until then.
    #[arg(long, env = "ALTIMAGE_STRIPE_CREATE_CUSTOMERS")]
    pub stripe_create_customers: bool,
}

/// The flag (or its ALTIMAGE_ variable), else the variable Stripe's own tools and docs use, so
/// an environment already set up for Stripe works unchanged.
fn flag_or_env(flag: &Option<String>, conventional: &str) -> Option<String> {
    flag.clone()
        .or_else(|| std::env::var(conventional).ok())
        .filter(|value| !value.trim().is_empty())
}

impl BillingArgs {
    /// The loop's settings, or `None` when billing is off (no key).
    pub fn config(
        &self,
    ) -> Result<Option<crate::billing::BillingConfig>, crate::billing::BillingError> {
        let Some(secret_key) = flag_or_env(&self.stripe_secret_key, "STRIPE_SECRET_KEY") else {
            return Ok(None);
        };
        for (flag, name) in [
            ("--stripe-meter-created", &self.stripe_meter_created),
            ("--stripe-meter-retrieved", &self.stripe_meter_retrieved),
        ] {
            if name.is_empty() || name.len() > 100 {
                return Err(crate::billing::BillingError::Config(format!(
                    "{flag} must be 1 to 100 characters (Stripe's limit for event names)"
                )));
            }
        }
        if self.stripe_meter_created == self.stripe_meter_retrieved {
            return Err(crate::billing::BillingError::Config(
                "--stripe-meter-created and --stripe-meter-retrieved must differ: one Stripe meter per event name".into(),
            ));
        }
        Ok(Some(crate::billing::BillingConfig {
            secret_key,
            api_base: self.stripe_api_base.clone(),
            timeout: std::time::Duration::from_millis(self.stripe_timeout_ms.max(100)),
            flush_interval: std::time::Duration::from_secs(self.billing_flush_secs),
            retry_max: std::time::Duration::from_secs(self.billing_retry_max_secs),
            meters: crate::billing::MeterNames {
                created: self.stripe_meter_created.clone(),
                retrieved: self.stripe_meter_retrieved.clone(),
            },
            create_customers: self.stripe_create_customers,
        }))
    }

    /// The webhook settings, or `None` without a secret.
    pub fn webhook(&self) -> Option<crate::billing::webhook::WebhookConfig> {
        let secret = flag_or_env(&self.stripe_webhook_secret, "STRIPE_WEBHOOK_SECRET")?;
        Some(crate::billing::webhook::WebhookConfig {
            secret,
            tolerance: std::time::Duration::from_secs(self.stripe_webhook_tolerance_secs),
        })
    }
}

/// Graph variants of an onnx-community export, by file-name suffix (spec section 1.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dtype {
    /// `<graph>.onnx`: full precision; the safe default (Florence-2 is sensitive to quantisation).
    Fp32,
    /// `<graph>_fp16.onnx`: half-precision weights (float32 I/O).
    Fp16,
    /// `<graph>_quantized.onnx`: dynamic 8-bit.
    Q8,
    /// `<graph>_int8.onnx`.
    Int8,
    /// `<graph>_uint8.onnx`.
    Uint8,
    /// `<graph>_q4.onnx`: 4-bit MatMul weights.
    Q4,
}

impl Dtype {
    pub fn suffix(self) -> &'static str {
        match self {
            Dtype::Fp32 => "",
            Dtype::Fp16 => "_fp16",
            Dtype::Q8 => "_quantized",
            Dtype::Int8 => "_int8",
            Dtype::Uint8 => "_uint8",
            Dtype::Q4 => "_q4",
        }
    }
}

/// Where the model is and how ONNX Runtime runs it.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Florence-2 export in the onnx-community layout (config.json, tokenizer.json, onnx/*.onnx).
    /// The bundled test model is models/tiny-florence2 (random weights); `scripts/fetch-model.sh`
    /// fetches the real one.
    #[arg(long, env = "ALTIMAGE_MODEL_DIR")]
    pub model_dir: PathBuf,

    /// `cpu`, `cuda` or `cuda:N`. CUDA failures are errors, never a silent CPU fall-back.
    #[arg(long, env = "ALTIMAGE_DEVICE", default_value = "cpu")]
    pub device: Device,

    /// Which graph files to load. fp32 is exact; quantised files are faster on CPU but change the text.
    #[arg(long, env = "ALTIMAGE_DTYPE", value_enum, default_value_t = Dtype::Fp32)]
    pub dtype: Dtype,

    /// ONNX Runtime shared library. Unset: ORT_DYLIB_PATH, then the project cache that
    /// `scripts/install-ort.sh` fills.
    #[arg(long, env = "ALTIMAGE_ORT_LIBRARY")]
    pub ort_library: Option<PathBuf>,

    /// Project cache folder searched for `ort/<cpu|cuda>/libonnxruntime.so`.
    #[arg(long, env = "ALTIMAGE_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Threads per operator (0 = one per physical core). Lower it when several model instances
    /// or other work share the CPU.
    #[arg(long, env = "ALTIMAGE_INTRA_THREADS", default_value_t = 0)]
    pub intra_threads: usize,

    /// Threads across independent operators (0 = ONNX Runtime default). Florence-2's graphs are
    /// mostly chains, so more rarely helps.
    #[arg(long, env = "ALTIMAGE_INTER_THREADS", default_value_t = 0)]
    pub inter_threads: usize,

    /// Graph optimisation level, 0 (none) to 3 (all). Use 1 for q4f16 exports, which break under
    /// layer-norm fusion.
    #[arg(long, env = "ALTIMAGE_GRAPH_OPTIMIZATION", default_value_t = 3, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub graph_optimization: u8,

    /// Images per vision-encoder call (0 = auto: 1 on the CPU, where batching the compute-bound
    /// tower only costs cache; the whole batch on CUDA, where batching is the gain).
    #[arg(long, env = "ALTIMAGE_VISION_BATCH_SIZE", default_value_t = 0)]
    pub vision_batch_size: usize,

    /// Cap of the CUDA memory arena in MiB (0 = no cap). Lets two instances share one GPU.
    #[arg(long, env = "ALTIMAGE_CUDA_MEMORY_LIMIT_MB", default_value_t = 0)]
    pub cuda_memory_limit_mb: usize,

    /// Where the decoder's KV cache stays between decode steps: `device` (ONNX Runtime I/O
    /// binding; on CUDA it never leaves GPU memory) or `host` (copied to host memory and back
    /// every step; the older path, kept as a fall-back).
    #[arg(long, env = "ALTIMAGE_KV_CACHE", default_value = "device")]
    pub kv_cache: KvCache,
}

impl StoreArgs {
    pub fn options(&self) -> crate::store::StoreOptions {
        let mut options =
            crate::store::StoreOptions::resolve(self.database_url.as_deref(), &self.data_dir);
        options.max_connections = self.database_max_connections;
        options
    }
}

impl ModelArgs {
    /// Finds the ONNX Runtime library and assembles the load options.
    pub fn load_options(&self) -> Result<LoadOptions, ModelError> {
        let env_path = std::env::var_os("ORT_DYLIB_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let cache_dir = self
            .cache_dir
            .clone()
            .unwrap_or_else(runtime::default_cache_dir);
        let (library, source) = runtime::find_library(
            self.ort_library.as_deref(),
            env_path.as_deref(),
            &cache_dir,
            self.device,
        )?;
        tracing::debug!(library = %library.display(), ?source, "ONNX Runtime library");
        Ok(LoadOptions {
            model_dir: self.model_dir.clone(),
            library,
            runtime: RuntimeOptions {
                device: self.device,
                intra_threads: self.intra_threads,
                inter_threads: self.inter_threads,
                optimization_level: self.graph_optimization,
                cuda_mem_limit: self.cuda_memory_limit_mb * 1024 * 1024,
                kv_cache: self.kv_cache,
            },
            variant_suffix: self.dtype.suffix().to_string(),
            vision_batch_size: self.vision_batch_size,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Jsonl,
    Csv,
}

#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    /// Image files, or folders searched recursively for .jpg/.jpeg/.png/.webp/.gif/.bmp/.tif/.tiff.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// brief (alt text), detailed, or paragraph (product description).
    #[arg(long, env = "ALTIMAGE_DETAIL", default_value = "brief")]
    pub detail: Detail,

    /// Tokens to generate at most per image (default: 64 brief, 128 detailed, 256 paragraph).
    #[arg(long, env = "ALTIMAGE_MAX_NEW_TOKENS")]
    pub max_new_tokens: Option<usize>,

    /// Beam-search width; 1 is greedy, as transformers.js decodes. Wider is slower.
    #[arg(long, env = "ALTIMAGE_NUM_BEAMS", default_value_t = 1)]
    pub num_beams: usize,

    /// Images per model call. Larger batches pay off on GPUs; on a CPU the vision encoder
    /// dominates and batching gains little.
    #[arg(long, env = "ALTIMAGE_BATCH_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub batch_size: u64,

    /// Threads decoding and resizing images while the model runs (0 = half the cores, at least 1).
    #[arg(long, env = "ALTIMAGE_PREPARE_THREADS", default_value_t = 0)]
    pub prepare_threads: usize,

    /// Output format.
    #[arg(long, env = "ALTIMAGE_FORMAT", value_enum, default_value_t = OutputFormat::Jsonl)]
    pub format: OutputFormat,

    /// Write results to this file instead of stdout.
    #[arg(long, short = 'o', env = "ALTIMAGE_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Largest image accepted, in pixels (width × height), checked before decoding.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGE_PIXELS", default_value_t = ImageLimits::DEFAULT_MAX_PIXELS)]
    pub max_image_pixels: u64,

    /// Largest image file accepted, in bytes.
    #[arg(long, env = "ALTIMAGE_MAX_IMAGE_BYTES", default_value_t = 50 * 1024 * 1024)]
    pub max_image_bytes: u64,

    /// Never draw the progress bar (it is drawn only when stderr is a terminal).
    #[arg(long, env = "ALTIMAGE_NO_PROGRESS")]
    pub no_progress: bool,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Counts and periods that make no sense at zero are refused at parse time, naming the
    /// flag, instead of being raised to 1 behind the operator's back.
    #[test]
    fn zero_is_refused_where_it_means_nothing() {
        for flag in [
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
