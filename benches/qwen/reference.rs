//! transformers.js 4.3.1 as a child process (`tests/conformance/qwen3_5_bench.mjs`): loaded
//! once, then one pass over the jobs each time the bench asks, so its passes alternate with ours.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

/// One image and the prompt text both engines feed for it.
pub struct Job {
    pub image: PathBuf,
    pub prompt: String,
}

/// One pass of the reference over every job.
pub struct ReferencePass {
    pub seconds: f64,
    /// Seconds inside each session: vision_encoder, embed_tokens, prefill, decode.
    pub vision: f64,
    pub embed: f64,
    pub prefill: f64,
    pub decode: f64,
    pub decode_steps: u64,
    pub prompt_ids: Vec<Vec<i64>>,
    pub generated_ids: Vec<Vec<i64>>,
}

pub struct TransformersJs {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl TransformersJs {
    /// Installs transformers.js if needed (`run-reference.sh`), writes the jobs and starts the
    /// script; returns once the model is loaded. `None`, with the reason printed, when it cannot.
    pub fn start(
        root: &Path,
        model_dir: &Path,
        work_dir: &Path,
        jobs: &[Job],
        max_new_tokens: usize,
    ) -> Option<TransformersJs> {
        let setup = Command::new("bash")
            .arg(root.join("tests/conformance/run-reference.sh"))
            .status()
            .ok()?;
        if !setup.success() {
            eprintln!("transformers.js set-up failed; skipping the reference");
            return None;
        }
        let jobs_file = work_dir.join("jobs.json");
        let body = json!({
            "max_new_tokens": max_new_tokens,
            "jobs": jobs
                .iter()
                .map(|job| json!({"image": job.image, "prompt": job.prompt}))
                .collect::<Vec<_>>(),
        });
        std::fs::write(&jobs_file, body.to_string()).ok()?;
        let mut child = Command::new("node")
            .current_dir(root.join("tests/conformance"))
            .arg("qwen3_5_bench.mjs")
            .arg(model_dir)
            .arg(&jobs_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("cannot start node: {e}; skipping the reference"))
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = BufReader::new(child.stdout.take()?);
        let mut reference = TransformersJs {
            child,
            stdin,
            stdout,
        };
        let ready = reference.line()?;
        if ready["ready"] != true {
            eprintln!("transformers.js did not start: {ready}");
            return None;
        }
        Some(reference)
    }

    fn line(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(n) if n > 0 => serde_json::from_str(&line).ok(),
            _ => {
                eprintln!("transformers.js stopped (its stderr is above)");
                None
            }
        }
    }

    pub fn pass(&mut self) -> Option<ReferencePass> {
        writeln!(self.stdin, "pass").ok()?;
        self.stdin.flush().ok()?;
        let value = self.line()?;
        let ids = |key: &str| -> Option<Vec<Vec<i64>>> {
            value["results"]
                .as_array()?
                .iter()
                .map(|r| {
                    r[key]
                        .as_array()?
                        .iter()
                        .map(Value::as_i64)
                        .collect::<Option<Vec<_>>>()
                })
                .collect()
        };
        let stage = |key: &str| value["stages"][key].as_f64().unwrap_or(0.0);
        Some(ReferencePass {
            seconds: value["seconds"].as_f64()?,
            vision: stage("vision_encoder"),
            embed: stage("embed_tokens"),
            prefill: stage("prefill"),
            decode: stage("decode"),
            decode_steps: value["stages"]["decode_steps"].as_u64().unwrap_or(0),
            prompt_ids: ids("prompt_ids")?,
            generated_ids: ids("generated_ids")?,
        })
    }

    /// Ends the script (end of its stdin) and waits for it, freeing its memory.
    pub fn stop(self) {
        let TransformersJs {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let _ = child.wait();
    }
}
