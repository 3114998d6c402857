//! What `describe` writes: one record per image (every output, the language, the model, the
//! context and seed that made it, or an error), as JSON Lines or CSV, in input order.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use clap::ValueEnum;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::describe::outputs::as_text;
use crate::model::Output;
use crate::model::generate::FinishReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Jsonl,
    Csv,
}

/// One output line.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub path: String,
    #[serde(flatten)]
    pub described: Option<Described>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<RecordError>,
}

/// An image described: the API's description fields that a file run has.
#[derive(Debug, Clone, Serialize)]
pub struct Described {
    /// The model folder's name, as the API records it.
    pub model: String,
    /// The primary output's text: the alt text when asked for, else the first of description,
    /// SEO title and keywords.
    pub text: String,
    /// Every output asked for; keywords as a list.
    pub outputs: Map<String, Value>,
    pub language: String,
    /// Florence-2's caption level; absent for models without levels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tone: Option<String>,
    /// The product context this image's row gave; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// The seed sampling used: `--seed` with it makes the same text again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub width: u32,
    pub height: u32,
    pub format: &'static str,
    /// All outputs together, before fitting.
    pub generated_tokens: u64,
    pub finish_reason: FinishReason,
    /// Whether fitting shortened an output.
    pub truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordError {
    pub code: &'static str,
    pub message: String,
}

impl Record {
    pub fn failed(path: &Path, code: &'static str, message: String) -> Box<Self> {
        Box::new(Self {
            path: path.display().to_string(),
            described: None,
            error: Some(RecordError { code, message }),
        })
    }
}

/// The CSV columns: the fields first, then a column per output (keywords joined with `, `),
/// as the API's CSV export names them.
const CSV_HEADER: [&str; 20] = [
    "path",
    "model",
    "text",
    "alt_text",
    "description",
    "seo_title",
    "keywords",
    "language",
    "detail",
    "tone",
    "context",
    "seed",
    "width",
    "height",
    "format",
    "generated_tokens",
    "finish_reason",
    "truncated",
    "error_code",
    "error_message",
];

pub enum Writer {
    Jsonl(Box<dyn Write>),
    Csv(Box<csv::Writer<Box<dyn Write>>>),
}

impl Writer {
    pub fn new(format: OutputFormat, sink: Box<dyn Write>) -> anyhow::Result<Self> {
        Ok(match format {
            OutputFormat::Jsonl => Writer::Jsonl(sink),
            OutputFormat::Csv => {
                let mut csv = csv::Writer::from_writer(sink);
                csv.write_record(CSV_HEADER)?;
                Writer::Csv(Box::new(csv))
            }
        })
    }

    fn write(&mut self, record: &Record) -> anyhow::Result<()> {
        match self {
            Writer::Jsonl(sink) => {
                serde_json::to_writer(&mut *sink, record)?;
                sink.write_all(b"\n")?;
            }
            Writer::Csv(csv) => csv.write_record(csv_row(record))?,
        }
        Ok(())
    }

    pub fn flush(&mut self) -> anyhow::Result<()> {
        match self {
            Writer::Jsonl(sink) => sink.flush()?,
            Writer::Csv(csv) => csv.flush()?,
        }
        Ok(())
    }
}

fn csv_row(record: &Record) -> [String; CSV_HEADER.len()] {
    let mut row: [String; CSV_HEADER.len()] = Default::default();
    row[0] = record.path.clone();
    if let Some(d) = &record.described {
        let output = |o: Output| d.outputs.get(o.as_str()).map(as_text).unwrap_or_default();
        let text = |v: Option<String>| v.unwrap_or_default();
        let described = [
            d.model.clone(),
            d.text.clone(),
            output(Output::AltText),
            output(Output::Description),
            output(Output::SeoTitle),
            output(Output::Keywords),
            d.language.clone(),
            text(d.detail.map(str::to_string)),
            text(d.tone.clone()),
            text(d.context.as_ref().map(Value::to_string)),
            text(d.seed.map(|s| s.to_string())),
            d.width.to_string(),
            d.height.to_string(),
            d.format.to_string(),
            d.generated_tokens.to_string(),
            d.finish_reason.as_str().to_string(),
            d.truncated.to_string(),
        ];
        for (cell, value) in row[1..].iter_mut().zip(described) {
            *cell = value;
        }
    }
    if let Some(error) = &record.error {
        row[CSV_HEADER.len() - 2] = error.code.to_string();
        row[CSV_HEADER.len() - 1] = error.message.clone();
    }
    row
}

/// Writes records in input order as they become available.
pub struct OrderedOutput {
    pub writer: Writer,
    waiting: BTreeMap<usize, Record>,
    next: usize,
    pub failures: usize,
}

impl OrderedOutput {
    pub fn new(writer: Writer) -> Self {
        Self {
            writer,
            waiting: BTreeMap::new(),
            next: 0,
            failures: 0,
        }
    }

    pub fn push(&mut self, index: usize, record: Record) -> anyhow::Result<()> {
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
