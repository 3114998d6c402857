//! The model directory's JSON files every family reads: `generation_config.json` layered over
//! `config.json` the way transformers.js merges them (spec section 3.1), so a 62-byte generation
//! config still works, and `model_type`, which picks the family.

use std::path::Path;

use serde_json::{Map, Value};

use super::ModelError;

/// Generation settings after the merge: defaults, then `config.json`, then its `text_config`,
/// then `generation_config.json`. Callers override per request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub decoder_start_token_id: i64,
    pub bos_token_id: i64,
    pub eos_token_ids: Vec<i64>,
    pub pad_token_id: i64,
    pub forced_bos_token_id: Option<i64>,
    pub forced_eos_token_id: Option<i64>,
    pub no_repeat_ngram_size: usize,
    pub num_beams: usize,
    /// Decoder length limit, start token included; only used when a request gives no max_new_tokens.
    pub max_length: usize,
    pub early_stopping: bool,
    pub length_penalty: f32,
}

impl Default for GenerationConfig {
    /// transformers.js `GenerationConfig` defaults, before any file is read.
    fn default() -> Self {
        Self {
            decoder_start_token_id: 2,
            bos_token_id: 0,
            eos_token_ids: vec![2],
            pad_token_id: 1,
            forced_bos_token_id: None,
            forced_eos_token_id: None,
            no_repeat_ngram_size: 0,
            num_beams: 1,
            max_length: 20,
            early_stopping: false,
            length_penalty: 1.0,
        }
    }
}

impl GenerationConfig {
    /// Layers one JSON object's keys over the current values. Unknown keys are ignored; a key
    /// with a wrong type is an error naming it.
    pub(crate) fn apply(&mut self, layer: &Map<String, Value>, source: &str) -> Result<(), String> {
        let int = |key: &str| -> Result<Option<i64>, String> {
            match layer.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| format!("{source}: `{key}` must be an integer")),
            }
        };
        if let Some(v) = int("decoder_start_token_id")? {
            self.decoder_start_token_id = v;
        }
        if let Some(v) = int("bos_token_id")? {
            self.bos_token_id = v;
        }
        if let Some(v) = int("pad_token_id")? {
            self.pad_token_id = v;
        }
        if let Some(v) = int("forced_bos_token_id")? {
            self.forced_bos_token_id = Some(v);
        }
        if let Some(v) = int("forced_eos_token_id")? {
            self.forced_eos_token_id = Some(v);
        }
        if let Some(v) = int("no_repeat_ngram_size")? {
            self.no_repeat_ngram_size = usize::try_from(v)
                .map_err(|_| format!("{source}: negative no_repeat_ngram_size"))?;
        }
        if let Some(v) = int("num_beams")? {
            self.num_beams = usize::try_from(v)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or(format!("{source}: num_beams must be >= 1"))?;
        }
        if let Some(v) = int("max_length")? {
            self.max_length = usize::try_from(v)
                .ok()
                .filter(|n| *n >= 2)
                .ok_or(format!("{source}: max_length must be >= 2"))?;
        }
        match layer.get("eos_token_id") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ids)) => {
                let ids: Option<Vec<i64>> = ids.iter().map(Value::as_i64).collect();
                self.eos_token_ids = ids.filter(|ids| !ids.is_empty()).ok_or_else(|| {
                    format!("{source}: `eos_token_id` must be an integer or a list of integers")
                })?;
            }
            Some(v) => {
                self.eos_token_ids = vec![
                    v.as_i64()
                        .ok_or_else(|| format!("{source}: `eos_token_id` must be an integer"))?,
                ];
            }
        }
        if let Some(v) = layer.get("early_stopping").and_then(Value::as_bool) {
            self.early_stopping = v;
        }
        if let Some(v) = layer.get("length_penalty").and_then(Value::as_f64) {
            self.length_penalty = v as f32;
        }
        Ok(())
    }

    pub fn is_eos(&self, token: i64) -> bool {
        self.eos_token_ids.contains(&token)
    }
}

pub(crate) fn read_json_object(path: &Path, dir: &Path) -> Result<Map<String, Value>, ModelError> {
    let fail = |message: String| ModelError::ModelDir {
        dir: dir.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(fail(format!("{} is not a JSON object", path.display()))),
        Err(e) => Err(fail(format!("{} is not valid JSON: {e}", path.display()))),
    }
}

/// `config.json`'s `model_type`, which names the family (`florence2`, `qwen3_5`, …).
pub fn model_type(dir: &Path) -> Result<String, ModelError> {
    let config = read_json_object(&dir.join("config.json"), dir)?;
    config
        .get("model_type")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ModelError::ModelDir {
            dir: dir.to_path_buf(),
            message: "config.json has no `model_type`, so the model family is unknown".into(),
        })
}
