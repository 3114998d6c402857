//! `altimage describe`: a catalogue folder in, one JSON Lines or CSV record per image out, with
//! every output asked for (alt text, description, SEO title, keywords) in the asked language,
//! from product context a CSV or JSON Lines file gives per image. The flags and each context row
//! go through the API's validation stage before any image is read; images are read and prepared
//! on worker threads while the model runs; bad files get an error record and the run goes on;
//! records come out in input order.

mod context_file;
mod files;
mod plan;
mod record;

use std::io::{IsTerminal, Write};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::ModelArgs;
use crate::describe::outputs::assemble;
use crate::describe::request::DescribeOptions;
use crate::model::preprocess::ImageLimits;
use crate::model::{Captioner, GenerationRequest, Prepared};

use self::context_file::ContextFile;
pub use self::files::collect_files;
use self::files::prepare_file;
use self::plan::{RunPlan, context_json};
pub use self::record::OutputFormat;
use self::record::{Described, OrderedOutput, Record, Writer};

#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    /// Image files, or folders searched recursively for .jpg/.jpeg/.png/.webp/.gif/.bmp/.tif/.tiff.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,

    #[command(flatten)]
    pub model: ModelArgs,

    /// What to write per image, comma-separated: alt_text, description, seo_title (at most 60
    /// characters), keywords (a list). Each is its own prompt over the one image: the vision
    /// encoder runs once, but every output adds a decode. Florence-2 writes alt_text and
    /// description only.
    #[arg(
        long,
        env = "ALTIMAGE_OUTPUTS",
        value_delimiter = ',',
        default_value = "alt_text"
    )]
    pub outputs: Vec<String>,

    /// The language to write in, BCP 47 (`de`, `pt-BR`). Florence-2 writes English only; a
    /// Qwen3.5 model the languages of its prompt templates.
    #[arg(long, env = "ALTIMAGE_LANGUAGE", default_value = "en")]
    pub language: String,

    /// Product context per image: a CSV file (header row: `path` or `image`, then any of
    /// `title`, `brand`, `category`, `keywords` separated by `;`, and any other column as an
    /// attribute) or JSON Lines (`{"path": …, "title": …, "brand": …, "category": …,
    /// "attributes": {…}, "keywords": […]}`), told apart by the extension (.csv, .jsonl,
    /// .ndjson). Paths are relative to the file's folder, or absolute; every row must name an
    /// image of this run, once; images without a row get no context. Context makes copy
    /// specific but costs prompt tokens; Qwen3.5 only.
    #[arg(long, env = "ALTIMAGE_CONTEXT")]
    pub context: Option<PathBuf>,

    /// The voice of the copy, in words (`warm and personal`); one line, at most 100 characters.
    /// Qwen3.5 only.
    #[arg(long, env = "ALTIMAGE_TONE")]
    pub tone: Option<String>,

    /// Florence-2's caption length: brief (alt text), detailed, or paragraph (kept whole, not
    /// cut at --max-chars' default). Longer captions take more tokens. Refused for models
    /// without levels (Qwen3.5: use --outputs and --max-words).
    #[arg(long, env = "ALTIMAGE_DETAIL")]
    pub detail: Option<String>,

    /// Cut alt text at a word boundary to at most this many characters (default 125, what
    /// screen readers read well); never exceeded, so a long caption loses its end.
    #[arg(long, env = "ALTIMAGE_MAX_CHARS")]
    pub max_chars: Option<usize>,

    /// The description's length in words, asked for in the prompt and then enforced by cutting
    /// (needs `description` in --outputs). Unset: the model's own length.
    #[arg(long, env = "ALTIMAGE_MAX_WORDS")]
    pub max_words: Option<usize>,

    /// How many keywords (default 8, at most 50; needs `keywords` in --outputs). More keywords
    /// take more tokens and grow vaguer.
    #[arg(long, env = "ALTIMAGE_KEYWORD_COUNT")]
    pub keyword_count: Option<usize>,

    /// Sample instead of decoding greedily when above 0 (up to 2): another wording per run,
    /// at the cost of repeatability without --seed. Qwen3.5 only.
    #[arg(long, env = "ALTIMAGE_TEMPERATURE")]
    pub temperature: Option<f32>,

    /// Nucleus sampling: only the most likely tokens that together hold this probability
    /// (above 0, at most 1; default 1). Lower is safer and blander. Needs --temperature.
    #[arg(long, env = "ALTIMAGE_TOP_P")]
    pub top_p: Option<f32>,

    /// The sampling seed; with the same flags, the same text again. Unset, one is drawn per run
    /// and written in every record. Needs --temperature.
    #[arg(long, env = "ALTIMAGE_SEED")]
    pub seed: Option<u64>,

    /// Tokens to generate at most per output (default by output and model: 64 for brief alt
    /// text, more for descriptions). Lower is faster but may cut the text short.
    #[arg(long, env = "ALTIMAGE_MAX_NEW_TOKENS")]
    pub max_new_tokens: Option<usize>,

    /// Beam-search width; 1 is greedy, as transformers.js decodes. Wider is slower.
    #[arg(long, env = "ALTIMAGE_NUM_BEAMS", default_value_t = 1)]
    pub num_beams: usize,

    /// Images per model call (each output of an image is one row of it, over one vision pass).
    /// Larger batches pay off on GPUs; on a CPU the vision encoder dominates and batching gains
    /// little.
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

impl DescribeArgs {
    /// The flags as the API's options, for its validation stage; the context comes per image.
    fn options(&self) -> DescribeOptions {
        DescribeOptions {
            outputs: Some(self.outputs.clone()),
            detail: self.detail.clone(),
            language: Some(self.language.clone()),
            tone: self.tone.clone(),
            max_new_tokens: self.max_new_tokens,
            num_beams: Some(self.num_beams),
            max_chars: self.max_chars,
            max_words: self.max_words,
            keyword_count: self.keyword_count,
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
            ..DescribeOptions::default()
        }
    }
}

pub fn run(args: &DescribeArgs) -> anyhow::Result<ExitCode> {
    let files = collect_files(&args.paths);
    // A malformed context file is refused before the model loads.
    let context = args
        .context
        .as_deref()
        .map(|file| ContextFile::read(file, &files))
        .transpose()?;
    let options = args.model.load_options()?;
    let mut model = crate::model::load(&options).context("loading the model")?;
    let card = model.card().clone();
    let name = args.model.model_name();
    // The API's checks, for the flags and every context row, before any image is read.
    let plan = RunPlan::new(
        (name.clone(), card.clone()),
        args.options(),
        context.as_ref(),
        files.len(),
    )?;
    let run = Run {
        model: name,
        has_detail: card.capabilities.detail,
        plan,
        files: &files,
    };
    tracing::info!(
        model = %args.model.model_dir[0].display(),
        device = %args.model.device,
        images = files.len(),
        outputs = args.outputs.len(),
        seed = run.plan.seed(),
        "describing"
    );

    let sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create --output {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut output = OrderedOutput::new(Writer::new(args.format, sink)?);

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
    let frontend = card.frontend.clone();
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
            let records = run.describe_batch(model.as_mut(), &mut batch);
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

/// What every batch of a run needs to make its records.
struct Run<'a> {
    model: String,
    /// Whether the model has Florence-2's caption levels, which records then name.
    has_detail: bool,
    plan: RunPlan,
    files: &'a [PathBuf],
}

impl Run<'_> {
    /// Runs one batch, every output of an image a row over its one prepared tensor (so its
    /// vision encoder runs once); a failed model call gives every image in it an error record.
    fn describe_batch(
        &self,
        model: &mut dyn Captioner,
        batch: &mut Vec<(usize, Prepared)>,
    ) -> Vec<(usize, Record)> {
        // The tensors move into the requests; only the metadata stays for the records.
        let mut meta = Vec::with_capacity(batch.len());
        let mut requests = Vec::new();
        for (index, prepared) in batch.drain(..) {
            meta.push((index, prepared.width, prepared.height, prepared.format));
            for planned in &self.plan.of(index).outputs {
                requests.push(GenerationRequest {
                    image: prepared.tensor.clone(),
                    options: planned.generation.clone(),
                });
            }
        }
        let mut generated = match model.generate(&requests) {
            Ok(generated) => generated.into_iter(),
            Err(error) => {
                tracing::error!(%error, images = meta.len(), "batch failed");
                return meta
                    .into_iter()
                    .map(|(index, ..)| {
                        let record = Record::failed(
                            &self.files[index],
                            "inference_failed",
                            error.to_string(),
                        );
                        (index, *record)
                    })
                    .collect();
            }
        };
        meta.into_iter()
            .map(|(index, width, height, format)| {
                let plan = self.plan.of(index);
                let mine: Vec<_> = generated.by_ref().take(plan.outputs.len()).collect();
                let assembled = assemble(&plan.outputs, &mine);
                let described = Described {
                    model: self.model.clone(),
                    text: assembled.text,
                    outputs: assembled.outputs,
                    language: plan.language.clone(),
                    detail: self.has_detail.then(|| plan.detail().as_str()),
                    tone: plan.asked.tone.clone(),
                    context: context_json(plan),
                    seed: plan.seed,
                    width,
                    height,
                    format: format.as_str(),
                    generated_tokens: assembled.generated_tokens,
                    finish_reason: assembled.finish_reason,
                    truncated: assembled.truncated,
                };
                let record = Record {
                    path: self.files[index].display().to_string(),
                    described: Some(described),
                    error: None,
                };
                (index, record)
            })
            .collect()
    }
}
