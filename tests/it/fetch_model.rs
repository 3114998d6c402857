//! `scripts/fetch-model.sh` against a fake Hugging Face hub on loopback that serves the tiny
//! models under `/<repo>/resolve/<revision>/<path>`: the pinned Qwen3.5 revision lands complete
//! and loads, graph variants bring the external data their graphs name, the old Florence-2 form
//! still works, and an unreachable hub or a missing data file is a non-zero exit that says so.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use altimage::model::{Family, LoadOptions};

const QWEN_REPO: &str = "onnx-community/Qwen3.5-0.8B-ONNX-OPT";
const QWEN_REVISION: &str = "fafab72d87a9e6be3925b38caf48286d2838f2d0";
const QWEN_FILES: [&str; 11] = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "onnx/embed_tokens.onnx",
    "onnx/embed_tokens.onnx_data",
    "onnx/vision_encoder.onnx",
    "onnx/vision_encoder.onnx_data",
    "onnx/decoder_model_merged.onnx",
    "onnx/decoder_model_merged.onnx_data",
];

/// A hub that answers GETs for the files it was given (repository path → local file) and 404
/// for anything else, recording every path asked for.
struct FakeHub {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(files: BTreeMap<String, PathBuf>) -> FakeHub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, &files, &seen);
            }
        });
        FakeHub { port, requests }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn answer(stream: TcpStream, files: &BTreeMap<String, PathBuf>, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    seen.lock().unwrap().push(path.clone());
    let (status, body) = match files.get(&path) {
        Some(file) => ("200 OK", std::fs::read(file).unwrap()),
        None => ("404 Not Found", b"Entry not found".to_vec()),
    };
    let mut stream = stream;
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// `(hub path, local file)` for each `(name in the repository, name in the source folder)`.
fn served(
    repo: &str,
    revision: &str,
    source: &Path,
    names: &[(&str, &str)],
) -> BTreeMap<String, PathBuf> {
    names
        .iter()
        .map(|(remote, local)| {
            (
                format!("/{repo}/resolve/{revision}/{remote}"),
                source.join(local),
            )
        })
        .collect()
}

fn qwen_hub_files(without: Option<&str>) -> BTreeMap<String, PathBuf> {
    let names: Vec<(&str, &str)> = QWEN_FILES
        .iter()
        .filter(|f| Some(**f) != without)
        .map(|f| (*f, *f))
        .collect();
    served(QWEN_REPO, QWEN_REVISION, &common::tiny_qwen_dir(), &names)
}

fn fetch(endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new("bash");
    command
        .arg(common::root().join("scripts/fetch-model.sh"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env_remove("HF_REPO")
        .env_remove("HF_REVISION")
        .env_remove("HF_TOKEN")
        .env_remove("MODEL_DTYPE_SUFFIX");
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run scripts/fetch-model.sh")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap();
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out.sort();
    out
}

fn load(dir: &Path, suffix: &str) -> Family {
    let options = LoadOptions {
        variant_suffix: suffix.into(),
        ..common::load_options(dir)
    };
    match altimage::model::load(&options) {
        Ok(model) => model.card().family,
        Err(e) => panic!("the fetched folder {} does not load: {e}", dir.display()),
    }
}

#[test]
fn the_pinned_qwen_revision_lands_whole_loads_and_is_not_fetched_twice() {
    let hub = FakeHub::start(qwen_hub_files(None));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("qwen");
    let dest_arg = dest.to_str().unwrap();

    let out = fetch(&hub.endpoint(), &["qwen3_5-0.8b", dest_arg], &[]);
    assert!(out.status.success(), "fetch failed: {}", stderr(&out));

    let mut expected: Vec<String> = QWEN_FILES.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(files_under(&dest), expected, "exactly the layout's files");
    for file in QWEN_FILES {
        let fetched = std::fs::read(dest.join(file)).unwrap();
        let source = std::fs::read(common::tiny_qwen_dir().join(file)).unwrap();
        assert!(fetched == source, "{file} differs from the hub's copy");
    }
    assert!(
        !tmp.path().join("qwen.partial").exists(),
        "the partial folder is renamed, not left behind"
    );
    let prefix = format!("/{QWEN_REPO}/resolve/{QWEN_REVISION}/");
    let asked = hub.requests();
    assert!(
        asked.iter().all(|p| p.starts_with(&prefix)),
        "only the pinned revision is asked for: {asked:?}"
    );
    assert_eq!(load(&dest, ""), Family::Qwen3_5);

    // A complete folder is left alone, without asking the hub.
    let out = fetch(&hub.endpoint(), &["qwen3_5-0.8b", dest_arg], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("already present"), "{}", stderr(&out));
    assert_eq!(hub.requests().len(), asked.len());
}

/// A `_q4` variant whose graphs keep the plain data names inside: the script fetches the data
/// files the graphs name, not names it guesses from the suffix.
#[test]
fn a_graph_variant_brings_the_data_files_its_graphs_name() {
    let mut names: Vec<(String, String)> = QWEN_FILES
        .iter()
        .map(|f| (f.to_string(), f.to_string()))
        .collect();
    for graph in ["embed_tokens", "vision_encoder", "decoder_model_merged"] {
        let plain = format!("onnx/{graph}.onnx");
        let entry = names
            .iter_mut()
            .find(|(remote, _)| *remote == plain)
            .unwrap();
        entry.0 = format!("onnx/{graph}_q4.onnx");
    }
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(r, l)| (r.as_str(), l.as_str()))
        .collect();
    let hub = FakeHub::start(served(
        "onnx-community/Qwen3.5-2B-ONNX-OPT",
        "a-pinned-commit",
        &common::tiny_qwen_dir(),
        &pairs,
    ));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("qwen-2b");
    let out = fetch(
        &hub.endpoint(),
        &["qwen3_5-2b", dest.to_str().unwrap()],
        &[
            ("MODEL_DTYPE_SUFFIX", "_q4"),
            ("HF_REVISION", "a-pinned-commit"),
        ],
    );
    assert!(out.status.success(), "fetch failed: {}", stderr(&out));
    let mut expected: Vec<String> = names.iter().map(|(r, _)| r.clone()).collect();
    expected.sort();
    assert_eq!(files_under(&dest), expected);
    assert_eq!(load(&dest, "_q4"), Family::Qwen3_5);
}

#[test]
fn a_missing_external_data_file_is_an_error_and_leaves_no_model() {
    let hub = FakeHub::start(qwen_hub_files(Some("onnx/decoder_model_merged.onnx_data")));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("qwen");
    let out = fetch(
        &hub.endpoint(),
        &["qwen3_5-0.8b", dest.to_str().unwrap()],
        &[],
    );
    assert!(
        !out.status.success(),
        "a model without its weights was accepted"
    );
    let message = stderr(&out);
    assert!(
        message.contains("decoder_model_merged.onnx_data")
            && message.contains("external data named by onnx/decoder_model_merged.onnx"),
        "{message}"
    );
    assert!(
        !dest.exists(),
        "no model folder appears until every file is there"
    );
    assert!(
        tmp.path()
            .join("qwen.partial/onnx/embed_tokens.onnx_data")
            .is_file(),
        "what was fetched is kept to resume"
    );
}

#[test]
fn an_unreachable_hub_exits_non_zero_and_says_so() {
    // A port nothing listens on: bound, then released.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("qwen");
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = fetch(&endpoint, &["qwen3_5-0.8b", dest.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    let message = stderr(&out);
    assert!(
        message.contains("cannot reach") && message.contains(QWEN_REPO),
        "{message}"
    );
    assert!(!dest.exists() && !tmp.path().join("qwen.partial").exists());
}

/// `scripts/fetch-model.sh DEST`, as `make run` calls it: Florence-2 from its default repository.
#[test]
fn the_old_form_still_fetches_florence2() {
    let names = [
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "onnx/vision_encoder.onnx",
        "onnx/embed_tokens.onnx",
        "onnx/encoder_model.onnx",
        "onnx/decoder_model_merged.onnx",
    ];
    let pairs: Vec<(&str, &str)> = names.iter().map(|f| (*f, *f)).collect();
    let hub = FakeHub::start(served(
        "onnx-community/Florence-2-base-ft",
        "main",
        &common::tiny_model_dir(),
        &pairs,
    ));
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("florence");
    let out = fetch(&hub.endpoint(), &[dest.to_str().unwrap()], &[]);
    assert!(out.status.success(), "fetch failed: {}", stderr(&out));
    let mut expected: Vec<String> = names.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(files_under(&dest), expected);
    assert_eq!(load(&dest, ""), Family::Florence2);
}
