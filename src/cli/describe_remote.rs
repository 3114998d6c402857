//! `altimage describe --server URL`: the same folder walk and the same records as a local run,
//! each image described by a running server (`POST /v1/descriptions`) instead of a model loaded
//! here. A few images are in flight at once; records come out in input order; 429 and 503 are
//! waited out as `Retry-After` says.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;

use super::describe::{DescribeArgs, Record, RecordError, Writer, collect_files};
use crate::model::generate::FinishReason;
use crate::model::preprocess::ImageKind;

/// Where to describe, when not here.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// Describe with a running `altimage serve` at this URL instead of loading a model here
    /// (--model-dir is then not needed). The server's model, limits and billing apply.
    #[arg(long, env = "ALTIMAGE_SERVER")]
    pub server: Option<String>,

    /// The API key for --server (scope `describe`).
    #[arg(long, env = "ALTIMAGE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// Images sent at once: enough to keep a server's batches full, few enough to leave its
/// admission to others.
const IN_FLIGHT: usize = 4;
/// Waits for capacity (429/503) before an image gets an error record.
const MAX_WAITS: usize = 30;

pub fn run(args: &DescribeArgs, server: &str) -> anyhow::Result<ExitCode> {
    let key = args
        .remote
        .api_key
        .as_deref()
        .context("--server needs --api-key (or ALTIMAGE_API_KEY)")?;
    let files = collect_files(&args.paths);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let base = server.trim_end_matches('/').to_string();
    let mut query = vec![
        ("detail", args.detail.as_str().to_string()),
        ("num_beams", args.num_beams.to_string()),
        // A local run writes the model's whole text; the server would cut alt text at 125.
        ("max_chars", usize::MAX.to_string()),
    ];
    if let Some(max) = args.max_new_tokens {
        query.push(("max_new_tokens", max.to_string()));
    }
    let sink: Box<dyn std::io::Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create --output {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut writer = Writer::new(args.format, sink)?;
    tracing::info!(server = %base, images = files.len(), "describing with a server");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failures = runtime.block_on(async {
        let mut records = futures_util::stream::iter(files.iter())
            .map(|path| describe(&client, &base, key, &query, path))
            .buffered(IN_FLIGHT);
        let mut failures = 0;
        while let Some(record) = records.next().await {
            failures += usize::from(record.error.is_some());
            writer.write(&record)?;
        }
        writer.flush()?;
        anyhow::Ok(failures)
    })?;
    tracing::info!(images = files.len(), failed = failures, "done");
    Ok(if failures > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

async fn describe(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    query: &[(&str, String)],
    path: &PathBuf,
) -> Record {
    let failed = |code: &str, message: String| Record {
        error: Some(RecordError {
            code: code.to_string(),
            message,
        }),
        ..empty(path)
    };
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) => return failed("read_failed", format!("cannot read the file: {error}")),
    };
    let mut waits = 0;
    loop {
        let sent = client
            .post(format!("{base}/v1/descriptions"))
            .bearer_auth(key)
            .query(query)
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                return failed("server_unreachable", format!("{base} (--server): {error}"));
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return record(path, &body);
        }
        if let Some(seconds) = retry_after
            && waits < MAX_WAITS
        {
            waits += 1;
            tokio::time::sleep(Duration::from_secs(seconds.max(1))).await;
            continue;
        }
        let error = &body["error"];
        return failed(
            error["code"].as_str().unwrap_or("server_error"),
            error["message"]
                .as_str()
                .map_or_else(|| format!("the server answered {status}"), str::to_string),
        );
    }
}

fn empty(path: &Path) -> Record {
    Record {
        path: path.display().to_string(),
        description: None,
        detail: None,
        width: None,
        height: None,
        format: None,
        generated_tokens: None,
        finish_reason: None,
        error: None,
    }
}

/// A description as the API answers it, as a local run's record.
fn record(path: &Path, description: &Value) -> Record {
    let detail = description["detail"]
        .as_str()
        .and_then(|d| d.parse::<crate::model::Detail>().ok())
        .map(|d| d.as_str());
    let format = [
        ImageKind::Jpeg,
        ImageKind::Png,
        ImageKind::Webp,
        ImageKind::Gif,
        ImageKind::Bmp,
        ImageKind::Tiff,
    ]
    .into_iter()
    .find(|kind| description["image"]["format"] == kind.as_str())
    .map(ImageKind::as_str);
    let finish_reason = [
        FinishReason::Eos,
        FinishReason::Length,
        FinishReason::Cancelled,
    ]
    .into_iter()
    .find(|reason| description["finish_reason"] == reason.as_str());
    Record {
        description: description["text"].as_str().map(str::to_string),
        detail,
        width: description["image"]["width"].as_u64().map(|w| w as u32),
        height: description["image"]["height"].as_u64().map(|h| h as u32),
        format,
        generated_tokens: description["generated_tokens"].as_u64().map(|t| t as usize),
        finish_reason,
        ..empty(path)
    }
}
