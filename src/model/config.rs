//! The model directory's JSON files: `config.json` and `generation_config.json`, merged the way
//! transformers.js merges them (spec section 3.1), so a 62-byte generation config still works.

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
    fn apply(&mut self, layer: &Map<String, Value>, source: &str) -> Result<(), String> {
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

/// What the server needs from `config.json` besides generation settings.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: Option<usize>,
    pub d_model: Option<usize>,
    pub max_position_embeddings: Option<usize>,
    pub generation: GenerationConfig,
}

impl ModelConfig {
    /// Reads `config.json` (required) and `generation_config.json` (optional) from a model dir.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let config = read_json_object(&dir.join("config.json"), dir)?;
        let generation_file = dir.join("generation_config.json");
        let generation = if generation_file.is_file() {
            Some(read_json_object(&generation_file, dir)?)
        } else {
            None
        };
        Self::from_objects(&config, generation.as_ref()).map_err(|message| ModelError::ModelDir {
            dir: dir.to_path_buf(),
            message,
        })
    }

    pub fn from_objects(
        config: &Map<String, Value>,
        generation_file: Option<&Map<String, Value>>,
    ) -> Result<Self, String> {
        if config.get("is_encoder_decoder").and_then(Value::as_bool) != Some(true) {
            return Err(
                "config.json must have `is_encoder_decoder: true` (a Florence-2 export)".into(),
            );
        }
        let empty = Map::new();
        let text_config = config
            .get("text_config")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut generation = GenerationConfig::default();
        generation.apply(config, "config.json")?;
        generation.apply(text_config, "config.json text_config")?;
        if let Some(layer) = generation_file {
            generation.apply(layer, "generation_config.json")?;
        }
        let size = |key: &str| {
            text_config
                .get(key)
                .and_then(Value::as_u64)
                .map(|v| v as usize)
        };
        Ok(Self {
            model_type: config
                .get("model_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            vocab_size: size("vocab_size"),
            d_model: size("d_model"),
            max_position_embeddings: size("max_position_embeddings"),
            generation,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn merge_order_is_config_then_text_config_then_generation_file() {
        let config = object(json!({
            "is_encoder_decoder": true, "model_type": "florence2", "eos_token_id": 2,
            "text_config": {"vocab_size": 51289, "d_model": 768, "no_repeat_ngram_size": 3, "num_beams": 3,
                            "forced_bos_token_id": 0, "forced_eos_token_id": 2, "max_length": 20}
        }));
        // Florence-2-large's generation_config.json is tiny: text_config must fill the gaps (P7).
        let small = object(json!({"_from_model_config": true, "transformers_version": "4.38.2"}));
        let merged = ModelConfig::from_objects(&config, Some(&small)).unwrap();
        assert_eq!(merged.generation.no_repeat_ngram_size, 3);
        assert_eq!(merged.generation.forced_bos_token_id, Some(0));
        assert_eq!(merged.generation.num_beams, 3);
        assert_eq!(merged.vocab_size, Some(51289));

        let override_file = object(json!({"num_beams": 1, "eos_token_id": [2, 7]}));
        let merged = ModelConfig::from_objects(&config, Some(&override_file)).unwrap();
        assert_eq!(merged.generation.num_beams, 1);
        assert!(merged.generation.is_eos(7));
    }

    #[test]
    fn refuses_non_encoder_decoder_and_bad_types() {
        assert!(
            ModelConfig::from_objects(&object(json!({"model_type": "florence2"})), None).is_err()
        );
        let bad =
            object(json!({"is_encoder_decoder": true, "text_config": {"num_beams": "three"}}));
        let err = ModelConfig::from_objects(&bad, None).unwrap_err();
        assert!(err.contains("num_beams"), "{err}");
    }
}
