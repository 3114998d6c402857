//! The ONNX Runtime library (found, loaded once), the device choice and session construction.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use ort::ep;
use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::value::DynValue;

use super::ModelError;

/// Where the ONNX Runtime shared library came from, for `/info` and start-up logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    Flag,
    EnvVar,
    ProjectCache,
}

/// The command that installs the library; every "not found" message names it.
pub const INSTALL_HINT: &str = "run `scripts/install-ort.sh` (CPU) or `scripts/install-ort.sh cuda` (GPU), \
     or pass --ort-library /path/to/libonnxruntime.so (env ORT_DYLIB_PATH)";

/// The execution device for all four sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(i32),
}

impl Device {
    /// The project-cache sub-folder whose library can drive this device.
    fn cache_variant(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda(_) => "cuda",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(id) => write!(f, "cuda:{id}"),
        }
    }
}

impl FromStr for Device {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            _ => match s.strip_prefix("cuda:") {
                Some(id) => id
                    .parse::<i32>()
                    .ok()
                    .filter(|id| *id >= 0)
                    .map(Device::Cuda)
                    .ok_or_else(|| {
                        format!("bad CUDA device id in `{s}`: expected cuda:N with N >= 0")
                    }),
                None => Err(format!(
                    "unknown device `{s}`: expected cpu, cuda or cuda:N"
                )),
            },
        }
    }
}

/// Where the decoder's state (Florence-2's KV cache; Qwen3.5's conv, recurrent and KV state)
/// lives between decode steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KvCache {
    /// Where the session produces it (GPU memory on CUDA): ORT I/O binding binds the `present*`
    /// outputs to the device and feeds them back as the `past*` inputs; only the logits come to
    /// the host, and rows are reordered, dropped and joined by small sessions on the device
    /// (`device_rows`).
    #[default]
    Device,
    /// `Session::run` without binding: ONNX Runtime hands every output back in host memory and
    /// copies the cache to the device again on the next step (on the CPU provider both are the
    /// same memory). Kept for comparison and as a fall-back.
    Host,
}

impl std::fmt::Display for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvCache::Device => "device",
            KvCache::Host => "host",
        })
    }
}

impl FromStr for KvCache {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "device" => Ok(KvCache::Device),
            "host" => Ok(KvCache::Host),
            other => Err(format!(
                "unknown KV cache place `{other}`: expected device or host"
            )),
        }
    }
}

/// How each session runs. Threads are per session; the four sessions of one model instance run
/// one after another, so they can share the same count without oversubscribing.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub device: Device,
    /// Threads inside one operator (0 = ONNX Runtime's default: one per physical core).
    pub intra_threads: usize,
    /// Threads across independent operators (0 = default). Florence-2's graphs are chains, so >1 rarely helps.
    pub inter_threads: usize,
    /// Graph optimisation: 0 disable, 1 basic, 2 extended, 3 all. q4f16 exports need 1 (spec P3).
    pub optimization_level: u8,
    /// Cap of the CUDA memory arena in bytes (0 = no cap).
    pub cuda_mem_limit: usize,
    /// Where the decoder's cache stays between steps.
    pub kv_cache: KvCache,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            intra_threads: 0,
            inter_threads: 0,
            optimization_level: 3,
            cuda_mem_limit: 0,
            kv_cache: KvCache::Device,
        }
    }
}

/// Resolves the library path: the flag, then `ORT_DYLIB_PATH`, then the project cache that
/// `scripts/install-ort.sh` fills. Each candidate must exist; the error lists what was tried.
pub fn find_library(
    flag: Option<&Path>,
    env_var: Option<&Path>,
    cache_dir: &Path,
    device: Device,
) -> Result<(PathBuf, LibrarySource), ModelError> {
    let mut tried = Vec::new();
    if let Some(path) = flag {
        if path.is_file() {
            return Ok((path.to_path_buf(), LibrarySource::Flag));
        }
        return Err(ModelError::RuntimeLibrary(format!(
            "--ort-library {} does not exist; {INSTALL_HINT}",
            path.display()
        )));
    }
    if let Some(path) = env_var {
        if path.is_file() {
            return Ok((path.to_path_buf(), LibrarySource::EnvVar));
        }
        return Err(ModelError::RuntimeLibrary(format!(
            "ORT_DYLIB_PATH={} does not exist; {INSTALL_HINT}",
            path.display()
        )));
    }
    for variant in cache_variants(device) {
        let candidate = cache_dir
            .join("ort")
            .join(variant)
            .join("libonnxruntime.so");
        if candidate.is_file() {
            return Ok((candidate, LibrarySource::ProjectCache));
        }
        tried.push(candidate.display().to_string());
    }
    let install = match device {
        Device::Cpu => "scripts/install-ort.sh",
        Device::Cuda(_) => "scripts/install-ort.sh cuda",
    };
    Err(ModelError::RuntimeLibrary(format!(
        "no ONNX Runtime library for {device} found (tried {}); run `{install}`, or pass --ort-library /path/to/libonnxruntime.so (env ORT_DYLIB_PATH)",
        tried.join(", ")
    )))
}

/// The CPU library cannot run CUDA, but the GPU library runs the CPU provider too.
fn cache_variants(device: Device) -> Vec<&'static str> {
    match device {
        Device::Cpu => vec!["cpu", "cuda"],
        Device::Cuda(_) => vec![device.cache_variant()],
    }
}

/// The project cache folder: `ALTIMAGE_CACHE_DIR`, else `.cache` in the current directory, else
/// `.cache` at the root of the checkout that built this binary (target/<profile>/altimage).
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ALTIMAGE_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let local = PathBuf::from(".cache");
    if local.is_dir() {
        return local;
    }
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1) {
            let candidate = ancestor.join(".cache");
            if candidate.join("ort").is_dir() {
                return candidate;
            }
        }
    }
    local
}

static LOADED_LIBRARY: OnceLock<PathBuf> = OnceLock::new();
static ENVIRONMENT: OnceLock<ort::environment::Environment> = OnceLock::new();

/// Loads the library (once per process) and returns the shared ORT environment. A second call
/// with another path is refused: one process cannot hold two ONNX Runtime versions.
pub fn environment(library: &Path) -> Result<&'static ort::environment::Environment, ModelError> {
    if let Some(existing) = LOADED_LIBRARY.get()
        && existing != library
    {
        return Err(ModelError::RuntimeLibrary(format!(
            "ONNX Runtime was already loaded from {}; cannot also load {}",
            existing.display(),
            library.display()
        )));
    }
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    let builder = ort::init_from(library).map_err(|e| {
        ModelError::RuntimeLibrary(format!(
            "cannot load ONNX Runtime from {}: {e}; {INSTALL_HINT}",
            library.display()
        ))
    })?;
    let env = builder
        .with_name("altimage")
        .with_telemetry(false)
        .build()
        .map_err(|e| {
            ModelError::RuntimeLibrary(format!("cannot create the ONNX Runtime environment: {e}"))
        })?;
    let _ = LOADED_LIBRARY.set(library.to_path_buf());
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// The CUDA execution provider for `cuda:N`: device id and arena cap (`gpu_mem_limit`, bytes;
/// 0 leaves ONNX Runtime's default, no cap). `None` on the CPU.
pub fn cuda_provider(options: &RuntimeOptions) -> Option<ep::CUDA> {
    let Device::Cuda(device_id) = options.device else {
        return None;
    };
    let mut cuda = ep::CUDA::default().with_device_id(device_id);
    if options.cuda_mem_limit > 0 {
        cuda = cuda.with_memory_limit(options.cuda_mem_limit);
    }
    Some(cuda)
}

/// A session builder for the chosen device, threads and optimisation level; `file` names the
/// graph in errors. CUDA is registered with `error_on_failure`, so a missing driver, library or
/// device is an error, never a silent CPU run.
pub fn session_builder(
    env: &ort::environment::Environment,
    options: &RuntimeOptions,
    file: &Path,
) -> Result<SessionBuilder, ModelError> {
    fn session_error<E: std::fmt::Display>(file: &Path) -> impl Fn(E) -> ModelError + '_ {
        move |e| ModelError::Session {
            file: file.to_path_buf(),
            message: e.to_string(),
        }
    }
    let level = match options.optimization_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let mut builder = Session::builder(env)
        .map_err(session_error(file))?
        .with_optimization_level(level)
        .map_err(session_error(file))?;
    if options.intra_threads > 0 {
        builder = builder
            .with_intra_threads(options.intra_threads)
            .map_err(session_error(file))?;
    }
    if options.inter_threads > 0 {
        builder = builder
            .with_inter_threads(options.inter_threads)
            .map_err(session_error(file))?;
    }
    if let Some(cuda) = cuda_provider(options) {
        builder = builder
            .with_execution_providers([cuda.build().error_on_failure()])
            .map_err(|e| ModelError::Device(format!("cannot use CUDA device {}: {}. Is the onnxruntime-gpu library installed (`scripts/install-ort.sh cuda`) and are the CUDA and cuDNN libraries it was built for (see deploy/README.md) on LD_LIBRARY_PATH? Use --device cpu to run without a GPU.", options.device, e.to_string().trim_end_matches('.'))))?;
    }
    Ok(builder)
}

/// Opens one graph as a session on the chosen device.
pub fn open_session(
    env: &ort::environment::Environment,
    path: &Path,
    options: &RuntimeOptions,
) -> Result<Session, ModelError> {
    session_builder(env, options, path)?
        .commit_from_file(path)
        .map_err(|e| ModelError::Session {
            file: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Memory of the session's device: where the decoder's cache stays with `KvCache::Device`.
pub fn device_memory(device: Device) -> Result<MemoryInfo<'static>, ort::Error> {
    match device {
        Device::Cpu => MemoryInfo::new(
            AllocationDevice::CPU,
            0,
            AllocatorType::Device,
            MemoryType::Default,
        ),
        Device::Cuda(id) => MemoryInfo::new(
            AllocationDevice::CUDA,
            id,
            AllocatorType::Device,
            MemoryType::Default,
        ),
    }
}

/// Host memory for outputs the host reads (logits).
pub fn host_memory() -> Result<MemoryInfo<'static>, ort::Error> {
    MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::CPUOutput,
    )
}

/// Where [`run_bound`] puts an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// The session's device memory: for values fed to the next call as they are.
    Device,
    /// Host memory: for values the host reads (logits, image features).
    Host,
}

/// Runs `session` with ONNX Runtime I/O binding: each input bound where it is (a host tensor is
/// copied to the device by ONNX Runtime, a device value is used in place), each output put where
/// `outputs` says. Returns the outputs in the order asked; outputs not asked for are not kept.
pub fn run_bound(
    session: &mut Session,
    device: Device,
    inputs: &[(&str, &DynValue)],
    outputs: &[(&str, Place)],
    stage: &'static str,
) -> Result<Vec<DynValue>, ModelError> {
    let error = ModelError::inference(stage);
    let device_memory = device_memory(device).map_err(&error)?;
    let host_memory = host_memory().map_err(&error)?;
    let mut binding = session.create_binding().map_err(&error)?;
    for (name, value) in inputs {
        binding.bind_input(*name, *value).map_err(&error)?;
    }
    for (name, place) in outputs {
        let memory = match place {
            Place::Device => &device_memory,
            Place::Host => &host_memory,
        };
        binding
            .bind_output_to_device(*name, memory)
            .map_err(&error)?;
    }
    let mut values = session.run_binding(&binding).map_err(&error)?;
    outputs
        .iter()
        .map(|(name, _)| {
            values.remove(*name).ok_or_else(|| ModelError::Inference {
                stage,
                message: format!("output `{name}` missing"),
            })
        })
        .collect()
}

/// For unit tests that build tensors: the project's library (`scripts/install-ort.sh`), loaded once.
#[cfg(test)]
pub fn test_environment() -> &'static ort::environment::Environment {
    environment(&test_library()).expect("ONNX Runtime loads")
}

/// For unit tests that load a model: the library `test_environment` loads.
#[cfg(test)]
pub fn test_library() -> PathBuf {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join(".cache");
    let env_path = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    find_library(None, env_path.as_deref(), &cache, Device::Cpu)
        .expect("the ONNX Runtime library (scripts/install-ort.sh)")
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
        assert_eq!("CUDA:3".parse::<Device>().unwrap(), Device::Cuda(3));
        assert!("cuda:-1".parse::<Device>().is_err());
        assert!("tpu".parse::<Device>().is_err());
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn kv_cache_places_parse() {
        assert_eq!("device".parse::<KvCache>().unwrap(), KvCache::Device);
        assert_eq!("Host".parse::<KvCache>().unwrap(), KvCache::Host);
        assert!("gpu".parse::<KvCache>().is_err());
        assert_eq!(KvCache::default().to_string(), "device");
    }

    #[test]
    fn cuda_device_id_and_memory_limit_reach_the_provider() {
        assert!(cuda_provider(&RuntimeOptions::default()).is_none());
        let options = RuntimeOptions {
            device: Device::Cuda(3),
            cuda_mem_limit: 512 * 1024 * 1024,
            ..RuntimeOptions::default()
        };
        let cuda = format!("{:?}", cuda_provider(&options).unwrap());
        assert!(cuda.contains(r#""device_id": "3""#), "{cuda}");
        assert!(cuda.contains(r#""gpu_mem_limit": "536870912""#), "{cuda}");
        // No cap asked: the option is not set at all (ONNX Runtime's default, unlimited).
        let options = RuntimeOptions {
            device: Device::Cuda(0),
            ..RuntimeOptions::default()
        };
        let cuda = format!("{:?}", cuda_provider(&options).unwrap());
        assert!(cuda.contains(r#""device_id": "0""#), "{cuda}");
        assert!(!cuda.contains("gpu_mem_limit"), "{cuda}");
    }

    #[test]
    fn library_lookup_order_and_hint() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        std::fs::create_dir_all(cache.join("ort/cpu")).unwrap();
        let cached = cache.join("ort/cpu/libonnxruntime.so");
        std::fs::write(&cached, b"x").unwrap();
        let flagged = dir.path().join("flag.so");
        std::fs::write(&flagged, b"x").unwrap();

        let (path, source) =
            find_library(Some(&flagged), Some(&cached), &cache, Device::Cpu).unwrap();
        assert_eq!((path, source), (flagged.clone(), LibrarySource::Flag));
        let (path, source) = find_library(None, Some(&flagged), &cache, Device::Cpu).unwrap();
        assert_eq!((path, source), (flagged, LibrarySource::EnvVar));
        let (path, source) = find_library(None, None, &cache, Device::Cpu).unwrap();
        assert_eq!((path, source), (cached, LibrarySource::ProjectCache));

        // The CPU library cannot serve CUDA, so a CUDA run must not pick it up.
        let err = find_library(None, None, &cache, Device::Cuda(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("scripts/install-ort.sh"), "{err}");
        let err = find_library(Some(Path::new("/nope.so")), None, &cache, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--ort-library") && err.contains("install-ort.sh"),
            "{err}"
        );
    }
}
