//! `altimage jobs submit|status|results|cancel`: a catalogue file sent to a running server as a
//! bulk job, followed with a progress bar, its results written to a file at the end. A submission
//! carries an `Idempotency-Key` made from the file and the options, so running the same command
//! again (after a crash, a lost connection, Ctrl-C) picks up the same job instead of starting a
//! second one; `--job ID` follows a known job without sending anything.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Where the server is and who calls it.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The running server's base URL.
    #[arg(long, env = "ALTIMAGE_SERVER")]
    pub server: String,

    /// An API key of the account (scopes `describe` and `read`).
    #[arg(long, env = "ALTIMAGE_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultsFormat {
    Jsonl,
    Csv,
}

impl ResultsFormat {
    fn as_str(self) -> &'static str {
        match self {
            ResultsFormat::Jsonl => "jsonl",
            ResultsFormat::Csv => "csv",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Send a catalogue (CSV, JSON Lines or a JSON job body) as a job, wait for it with a
    /// progress bar, and write its results to a file.
    Submit(SubmitArgs),
    /// Show a job's status and counts.
    Status(JobArgs),
    /// Write a job's results (one line per item, in input order).
    Results(ResultsArgs),
    /// Cancel a job: what is done stays done; the rest never starts.
    Cancel(JobArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// The catalogue: `.csv` (columns image_url, asset_id, title, brand, category, keywords,
    /// metadata, attr:NAME), `.jsonl`/`.ndjson` (one item per line) or `.json` (a whole job body).
    pub file: PathBuf,

    /// Follow this job instead of submitting (resume after the command was stopped).
    #[arg(long, env = "ALTIMAGE_JOB")]
    pub job: Option<String>,

    /// Outputs for every item, comma-separated (CSV and JSON Lines files; a JSON body says its
    /// own).
    #[arg(long, env = "ALTIMAGE_OUTPUTS")]
    pub outputs: Option<String>,

    /// Language for every item, BCP 47.
    #[arg(long, env = "ALTIMAGE_LANGUAGE")]
    pub language: Option<String>,

    /// Which of the server's models.
    #[arg(long, env = "ALTIMAGE_MODEL")]
    pub model: Option<String>,

    /// Where the job's events are POSTed (the account needs a webhook secret).
    #[arg(long, env = "ALTIMAGE_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// Where the results go (default: the catalogue's name with `.results.jsonl` or `.csv`).
    #[arg(long, short = 'o', env = "ALTIMAGE_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Results format.
    #[arg(long, env = "ALTIMAGE_FORMAT", value_enum, default_value_t = ResultsFormat::Jsonl)]
    pub format: ResultsFormat,

    /// How often the job is polled. Shorter: a livelier bar; longer: fewer requests.
    #[arg(long, env = "ALTIMAGE_POLL_MS", default_value_t = 1_000)]
    pub poll_ms: u64,

    /// Never draw the progress bar (it is drawn only when stderr is a terminal).
    #[arg(long, env = "ALTIMAGE_NO_PROGRESS")]
    pub no_progress: bool,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// The job's id (`job_…`).
    pub job: String,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    /// The job's id (`job_…`).
    pub job: String,

    /// Results format.
    #[arg(long, env = "ALTIMAGE_FORMAT", value_enum, default_value_t = ResultsFormat::Jsonl)]
    pub format: ResultsFormat,

    /// Write to this file instead of stdout.
    #[arg(long, short = 'o', env = "ALTIMAGE_OUTPUT")]
    pub output: Option<PathBuf>,
}

/// Runs a `jobs` command. Exit status: 0 when the job (or the request) succeeded with no failed
/// item, 1 when items failed or the job was cancelled or failed.
pub fn run(command: &JobsCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match command {
            JobsCommand::Submit(args) => submit(args).await,
            JobsCommand::Status(args) => {
                let job = Client::new(&args.server)?.job(&args.job).await?;
                println!("{}", serde_json::to_string_pretty(&job)?);
                Ok(exit_code(&job))
            }
            JobsCommand::Results(args) => {
                let client = Client::new(&args.server)?;
                let body = client.results(&args.job, args.format).await?;
                write_output(args.output.as_deref(), &body)?;
                Ok(ExitCode::SUCCESS)
            }
            JobsCommand::Cancel(args) => {
                let client = Client::new(&args.server)?;
                let job = client
                    .send(client.post(&format!("/v1/jobs/{}/cancel", args.job)))
                    .await?;
                println!("{}", serde_json::to_string_pretty(&job)?);
                Ok(exit_code(&job))
            }
        }
    })
}

async fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let id = match &args.job {
        Some(id) => id.clone(),
        None => {
            let body = std::fs::read(&args.file)
                .with_context(|| format!("cannot read {}", args.file.display()))?;
            let content_type = content_type(&args.file)?;
            let mut query = Vec::new();
            for (name, value) in [
                ("outputs", &args.outputs),
                ("language", &args.language),
                ("model", &args.model),
                ("webhook_url", &args.webhook_url),
            ] {
                if let Some(value) = value {
                    query.push((name, value.clone()));
                }
            }
            if content_type == "application/json" && !query.is_empty() {
                bail!(
                    "a .json file is a whole job body: put outputs, language, model and webhook_url in it"
                );
            }
            // The same file and options make the same key: a rerun resumes the same job.
            let mut hasher = Sha256::new();
            hasher.update(&body);
            hasher.update(format!("{query:?}"));
            let key = format!("cli-{:x}", hasher.finalize());
            let request = client
                .post("/v1/jobs")
                .query(&query)
                .header("content-type", content_type)
                .header("idempotency-key", key)
                .body(body);
            let job = client.send(request).await?;
            let id = job["id"]
                .as_str()
                .context("the answer has no job id")?
                .to_string();
            eprintln!(
                "job {id}: {} items (rerun this command, or pass --job {id}, to follow it again)",
                job["counts"]["total"]
            );
            id
        }
    };
    let job = follow(&client, &id, args).await?;
    let output = args.output.clone().unwrap_or_else(|| {
        let extension = format!("results.{}", args.format.as_str());
        args.file.with_extension(extension)
    });
    let results = client.results(&id, args.format).await?;
    write_output(Some(&output), &results)?;
    eprintln!(
        "job {id} {}: {} succeeded, {} failed, {} cancelled; results in {}",
        job["status"].as_str().unwrap_or("?"),
        job["counts"]["succeeded"],
        job["counts"]["failed"],
        job["counts"]["cancelled"],
        output.display()
    );
    Ok(exit_code(&job))
}

/// Polls the job until it is finished, drawing the bar.
async fn follow(client: &Client, id: &str, args: &SubmitArgs) -> anyhow::Result<Value> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} items ({msg}) {elapsed} eta {eta}")
            .expect("a valid template; this is a bug"),
    );
    if args.no_progress || !std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    loop {
        let job = client.job(id).await?;
        let counts = &job["counts"];
        let count = |name: &str| counts[name].as_u64().unwrap_or(0);
        bar.set_length(count("total"));
        bar.set_position(count("total") - count("pending"));
        bar.set_message(format!("{} failed", count("failed")));
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            bar.finish_and_clear();
            return Ok(job);
        }
        tokio::time::sleep(Duration::from_millis(args.poll_ms)).await;
    }
}

fn exit_code(job: &Value) -> ExitCode {
    let clean = job["status"] == "succeeded" && job["counts"]["failed"] == 0;
    if clean || matches!(job["status"].as_str(), Some("queued" | "running")) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn content_type(file: &Path) -> anyhow::Result<&'static str> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("csv") => Ok("text/csv"),
        Some("jsonl" | "ndjson") => Ok("application/x-ndjson"),
        Some("json") => Ok("application/json"),
        _ => bail!(
            "{}: name it .csv, .jsonl, .ndjson or .json so its format is known",
            file.display()
        ),
    }
}

fn write_output(path: Option<&Path>, body: &[u8]) -> anyhow::Result<()> {
    match path {
        Some(path) => std::fs::write(path, body)
            .with_context(|| format!("cannot write {} (--output)", path.display())),
        None => Ok(std::io::stdout().write_all(body)?),
    }
}

/// The API with one key.
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    pub fn new(server: &ServerArgs) -> anyhow::Result<Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = format!("Bearer {}", server.api_key)
            .parse()
            .context("--api-key holds characters a header cannot")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_secs(300))
            .build()?;
        Ok(Client {
            http,
            base: server.server.trim_end_matches('/').to_string(),
        })
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.base))
    }

    /// Sends `request` and reads its JSON answer; an error answer's message is the error.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {} (--server)", self.base))?;
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .with_context(|| format!("{} answered {status} without JSON", self.base))?;
        if !status.is_success() {
            bail!(
                "{} answered {status}: {}",
                self.base,
                body["error"]["message"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(body)
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}/v1/jobs/{id}", self.base)))
            .await
    }

    async fn results(&self, id: &str, format: ResultsFormat) -> anyhow::Result<Vec<u8>> {
        let url = format!(
            "{}/v1/jobs/{id}/results?format={}",
            self.base,
            format.as_str()
        );
        let response = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| format!("cannot reach {} (--server)", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or_default();
            bail!(
                "{} answered {status}: {}",
                self.base,
                body["error"]["message"].as_str().unwrap_or("(no message)")
            );
        }
        // An answer cut short (a database failure mid-stream) is an error here, not a short file.
        Ok(response
            .bytes()
            .await
            .context("the results stream was cut short; run the command again")?
            .to_vec())
    }
}
