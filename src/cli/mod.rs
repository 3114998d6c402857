//! The command line: one clap definition, every flag with `long` and an `ALTIMAGE_…` env name.
//! Each group of flags converts itself into the runtime struct it configures; `serve` starts
//! the server (`crate::server`), the other commands run here.

pub mod admin;
pub mod billing;
pub mod console_serve;
pub mod describe;
pub mod jobs;
pub mod jobs_serve;
pub mod serve;

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::model::runtime::{self, Device, KvCache, RuntimeOptions};
use crate::model::{LoadOptions, ModelError};

use self::admin::{AccountsCommand, KeysCommand};
use self::describe::DescribeArgs;
use self::serve::ServeArgs;

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
    /// Bulk jobs on a running server: submit a catalogue file and wait for its results, or
    /// look at, fetch or cancel a job.
    #[command(subcommand)]
    Jobs(self::jobs::JobsCommand),
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

impl StoreArgs {
    pub fn options(&self) -> crate::store::StoreOptions {
        let mut options =
            crate::store::StoreOptions::resolve(self.database_url.as_deref(), &self.data_dir);
        options.max_connections = self.database_max_connections;
        options
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

/// Where the model is and how ONNX Runtime runs it. Shared by `serve` and `describe`.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// A model in the onnx-community layout (config.json, tokenizer.json, onnx/*.onnx): Florence-2
    /// or Qwen3.5 (`-ONNX-OPT`), told apart by config.json's `model_type`. The bundled test models
    /// are models/tiny-florence2 and models/tiny-qwen3_5 (random weights); `scripts/fetch-model.sh`
    /// fetches the real ones. `serve` takes several (repeat the flag, or separate with commas):
    /// each gets its own workers and queue, requests pick one by its folder name (`model`), and
    /// the first answers requests that name none; `describe` takes one.
    /// Required (checked when the command starts, with this message).
    #[arg(long, env = "ALTIMAGE_MODEL_DIR", value_delimiter = ',')]
    pub model_dir: Vec<PathBuf>,

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

    /// Where the decoder's state (Florence-2's KV cache; Qwen3.5's conv, recurrent and KV state)
    /// stays between decode steps: `device` (ONNX Runtime I/O binding, rows dropped and joined by
    /// small sessions on the device; on CUDA it never leaves GPU memory) or `host` (copied to host
    /// memory and back every step; the older path, kept as a fall-back).
    #[arg(long, env = "ALTIMAGE_KV_CACHE", default_value = "device")]
    pub kv_cache: KvCache,

    /// Qwen3.5: the most pixels an image is resized to (its aspect kept). Each 32×32 block is one
    /// image token: 262144 (512²) is at most 256 tokens; more reads finer detail at the cost of
    /// a longer prefill and more state per request. Florence-2 always uses 768×768.
    #[arg(long, env = "ALTIMAGE_VISION_MAX_PIXELS", default_value_t = 262_144, value_parser = clap::value_parser!(u64).range(1024..=67_108_864))]
    pub vision_max_pixels: u64,

    /// Qwen3.5: a JSON file replacing the built-in prompt templates (src/model/qwen3_5/prompts.json
    /// shows the format; PROMPTS.md the rules that render it).
    #[arg(long, env = "ALTIMAGE_PROMPT_TEMPLATES")]
    pub prompt_templates: Option<PathBuf>,
}

impl ModelArgs {
    /// The load options of the one model (`describe`, which runs one).
    pub fn load_options(&self) -> Result<LoadOptions, ModelError> {
        match &self.model_dir[..] {
            [dir] => self.load_options_for(dir),
            [] => Err(ModelError::ModelDir {
                dir: PathBuf::from("(none)"),
                message: "no model: give --model-dir (env ALTIMAGE_MODEL_DIR), or --server to describe with a running server".into(),
            }),
            dirs => Err(ModelError::ModelDir {
                dir: dirs[0].clone(),
                message: format!(
                    "this command runs one model; --model-dir names {}",
                    dirs.len()
                ),
            }),
        }
    }

    /// The loaded models' names, in order; two folders of one name are refused, as requests
    /// could not tell them apart.
    pub fn model_names(&self) -> Result<Vec<String>, ModelError> {
        if self.model_dir.is_empty() {
            return Err(ModelError::ModelDir {
                dir: PathBuf::from("(none)"),
                message: "no model: --model-dir (env ALTIMAGE_MODEL_DIR) is required".into(),
            });
        }
        let names: Vec<String> = self.model_dir.iter().map(|dir| dir_name(dir)).collect();
        for (index, name) in names.iter().enumerate() {
            if names[..index].contains(name) {
                return Err(ModelError::ModelDir {
                    dir: self.model_dir[index].clone(),
                    message: format!(
                        "two --model-dir folders are named `{name}`; requests name a model by its folder, so rename one"
                    ),
                });
            }
        }
        Ok(names)
    }

    /// Finds the ONNX Runtime library and assembles the load options of the model in `dir`.
    pub fn load_options_for(&self, dir: &Path) -> Result<LoadOptions, ModelError> {
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
            model_dir: dir.to_path_buf(),
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
            vision_max_pixels: self.vision_max_pixels,
            prompt_templates: self.prompt_templates.clone(),
        })
    }

    /// The name of the first model (the one `describe` runs): its folder's name.
    pub fn model_name(&self) -> String {
        dir_name(&self.model_dir[0])
    }
}

/// The name the API reports and stores with each description: the model folder's name.
fn dir_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string())
}

/// `--prepare-threads`, shared by `serve` and `describe`: 0 = half the cores, at least 1.
pub fn prepare_threads(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
        n => n,
    }
}
