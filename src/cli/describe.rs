//! `altimage describe`: a catalogue folder in, one JSON Lines or CSV record per image out. Images
//! are read and prepared on worker threads while the model runs; bad files get an error record
//! and the run goes on; records come out in input order.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::ModelArgs;
use crate::describe::request::{DescribeOptions, Validator};
use crate::model::generate::FinishReason;
use crate::model::preprocess::ImageLimits;
use crate::model::{Captioner, Detail, Frontend, GenerationOptions, GenerationRequest, Prepared};

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

    #[command(flatten)]
    pub remote: super::describe_remote::RemoteArgs,
}

/// Extensions picked up when walking a folder; files named explicitly are always tried.
const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// One output line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub generated_tokens: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordError {
    pub code: String,
    pub message: String,
}

impl Record {
    fn failed(path: &Path, code: &'static str, message: String) -> Box<Self> {
        Box::new(Self {
            path: path.display().to_string(),
            description: None,
            detail: None,
            width: None,
            height: None,
            format: None,
            generated_tokens: None,
            finish_reason: None,
            error: Some(RecordError {
                code: code.to_string(),
                message,
            }),
        })
    }
}

/// Expands folders (recursively, sorted, so runs are repeatable) into image files.
pub fn collect_files(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            walk(path, &mut files);
        } else {
            // Missing files are kept: they get an error record, not a silent skip.
            files.push(path.clone());
        }
    }
    files
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        files.push(dir.to_path_buf());
        return;
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, files);
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            files.push(path);
        }
    }
}

/// Reads and prepares one file; the error is already a record.
fn prepare_file(
    path: &Path,
    frontend: &dyn Frontend,
    limits: &ImageLimits,
    max_bytes: u64,
) -> Result<Prepared, Box<Record>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Record::failed(path, "file_unreadable", e.to_string()))?;
    if !meta.is_file() {
        return Err(Record::failed(
            path,
            "file_unreadable",
            "not a regular file".into(),
        ));
    }
    if meta.len() > max_bytes {
        return Err(Record::failed(
            path,
            "file_too_large",
            format!(
                "{} bytes, more than --max-image-bytes {max_bytes}",
                meta.len()
            ),
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| Record::failed(path, "file_unreadable", e.to_string()))?;
    frontend
        .prepare(&bytes, limits)
        .map_err(|e| Record::failed(path, e.code(), e.to_string()))
}

pub(super) enum Writer {
    Jsonl(Box<dyn Write>),
    Csv(Box<csv::Writer<Box<dyn Write>>>),
}

impl Writer {
    pub(super) fn new(format: OutputFormat, sink: Box<dyn Write>) -> anyhow::Result<Self> {
        Ok(match format {
            OutputFormat::Jsonl => Writer::Jsonl(sink),
            OutputFormat::Csv => {
                let mut csv = csv::Writer::from_writer(sink);
                csv.write_record([
                    "path",
                    "description",
                    "detail",
                    "width",
                    "height",
                    "format",
                    "generated_tokens",
                    "finish_reason",
                    "error_code",
                    "error_message",
                ])?;
                Writer::Csv(Box::new(csv))
            }
        })
    }

    pub(super) fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        match self {
            Writer::Jsonl(sink) => {
                serde_json::to_writer(&mut *sink, record)?;
                sink.write_all(b"\n")?;
            }
            Writer::Csv(csv) => {
                let text = |v: Option<String>| v.unwrap_or_default();
                csv.write_record([
                    record.path.clone(),
                    text(record.description.clone()),
                    text(record.detail.map(str::to_string)),
                    text(record.width.map(|v| v.to_string())),
                    text(record.height.map(|v| v.to_string())),
                    text(record.format.map(str::to_string)),
                    text(record.generated_tokens.map(|v| v.to_string())),
                    text(record.finish_reason.map(|r| {
                        serde_json::to_value(r)
                            .unwrap_or_default()
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })),
                    text(record.error.as_ref().map(|e| e.code.to_string())),
                    text(record.error.as_ref().map(|e| e.message.clone())),
                ])?;
            }
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Writer::Jsonl(sink) => sink.flush()?,
            Writer::Csv(csv) => csv.flush()?,
        }
        Ok(())
    }
}

/// Writes records in input order as they become available.
struct OrderedOutput {
    writer: Writer,
    waiting: BTreeMap<usize, Record>,
    next: usize,
    failures: usize,
}

impl OrderedOutput {
    fn push(&mut self, index: usize, record: Record) -> anyhow::Result<()> {
        if record.error.is_some() {
            self.failures += 1;
        }
        self.waiting.insert(index, record);
        while let Some(record) = self.waiting.remove(&self.next) {
            self.writer.write(&record)?;
            self.next += 1;
        }
        Ok(())
    }
}

pub fn run(args: &DescribeArgs) -> anyhow::Result<ExitCode> {
    if let Some(server) = &args.remote.server {
        return super::describe_remote::run(args, server);
    }
    let files = collect_files(&args.paths);
    let options = args.model.load_options()?;
    let mut model = crate::model::load(&options).context("loading the model")?;
    // The same checks as the API's, before any image is read.
    let name = args.model.model_name();
    let generation = Validator::new(vec![(name, model.card().clone())], usize::MAX)
        .plan(&DescribeOptions {
            detail: model
                .card()
                .capabilities
                .detail
                .then(|| args.detail.as_str().to_string()),
            max_new_tokens: args.max_new_tokens,
            num_beams: Some(args.num_beams),
            ..DescribeOptions::default()
        })
        .map_err(|e| anyhow::anyhow!("{e} (--max-new-tokens, --num-beams)"))?
        .outputs
        .remove(0)
        .generation;
    tracing::info!(model = %args.model.model_dir[0].display(), device = %args.model.device, images = files.len(), "describing");

    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create --output {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut output = OrderedOutput {
        writer: Writer::new(args.format, sink)?,
        waiting: BTreeMap::new(),
        next: 0,
        failures: 0,
    };

    let progress = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar =
            ProgressBar::with_draw_target(Some(files.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    };

    let batch_size = args.batch_size as usize;
    let threads = super::prepare_threads(args.prepare_threads);
    let limits = ImageLimits {
        max_pixels: args.max_image_pixels,
    };
    let frontend = model.card().frontend.clone();
    let next_file = AtomicUsize::new(0);
    // Bounded, so prepared tensors (7 MB each at 768×768) cannot pile up while the model works.
    let (sender, receiver) =
        mpsc::sync_channel::<(usize, Result<Prepared, Box<Record>>)>(batch_size);

    std::thread::scope(|scope| -> anyhow::Result<()> {
        for _ in 0..threads {
            let sender = sender.clone();
            let (files, next_file, frontend) = (&files, &next_file, &*frontend);
            scope.spawn(move || {
                loop {
                    let index = next_file.fetch_add(1, Ordering::Relaxed);
                    let Some(path) = files.get(index) else { break };
                    // A decoder bug on one odd file must cost that file, not the run.
                    let prepared = std::panic::catch_unwind(AssertUnwindSafe(|| {
                        prepare_file(path, frontend, &limits, args.max_image_bytes)
                    }))
                    .unwrap_or_else(|_| {
                        Err(Record::failed(
                            path,
                            "internal_error",
                            "the image decoder panicked".into(),
                        ))
                    });
                    if sender.send((index, prepared)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(sender);

        let mut batch: Vec<(usize, Prepared)> = Vec::with_capacity(batch_size);
        let mut producers_done = false;
        while !producers_done || !batch.is_empty() {
            // Fill the batch; run it when full or when no more images will come.
            while !producers_done && batch.len() < batch_size {
                match receiver.recv() {
                    Ok((index, Ok(prepared))) => batch.push((index, prepared)),
                    Ok((index, Err(record))) => {
                        progress.inc(1);
                        output.push(index, *record)?;
                    }
                    Err(_) => producers_done = true,
                }
            }
            if batch.is_empty() {
                continue;
            }
            let records = describe_batch(model.as_mut(), &generation, &files, &mut batch);
            progress.inc(records.len() as u64);
            for (index, record) in records {
                output.push(index, record)?;
            }
            output.writer.flush()?;
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    output.writer.flush()?;

    let failures = output.failures;
    tracing::info!(images = files.len(), failed = failures, "done");
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs one batch; a failed model call gives every image in it an error record.
fn describe_batch(
    model: &mut dyn Captioner,
    generation: &GenerationOptions,
    files: &[PathBuf],
    batch: &mut Vec<(usize, Prepared)>,
) -> Vec<(usize, Record)> {
    // The tensors move into the requests; only the metadata stays for the records.
    let mut meta = Vec::with_capacity(batch.len());
    let mut requests = Vec::with_capacity(batch.len());
    for (index, prepared) in batch.drain(..) {
        meta.push((index, prepared.width, prepared.height, prepared.format));
        requests.push(GenerationRequest {
            image: prepared.tensor,
            options: generation.clone(),
        });
    }
    match model.generate(&requests) {
        Ok(results) => meta
            .into_iter()
            .zip(results)
            .map(|((index, width, height, format), generated)| {
                let record = Record {
                    path: files[index].display().to_string(),
                    generated_tokens: Some(generated.generated_tokens()),
                    description: Some(generated.text),
                    detail: Some(generation.task.detail.as_str()),
                    width: Some(width),
                    height: Some(height),
                    format: Some(format.as_str()),
                    finish_reason: Some(generated.finish_reason),
                    error: None,
                };
                (index, record)
            })
            .collect(),
        Err(error) => {
            tracing::error!(%error, images = meta.len(), "batch failed");
            meta.into_iter()
                .map(|(index, ..)| {
                    let record =
                        Record::failed(&files[index], "inference_failed", error.to_string());
                    (index, *record)
                })
                .collect()
        }
    }
}
