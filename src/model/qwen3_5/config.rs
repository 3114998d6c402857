//! Qwen3.5's `config.json` and `generation_config.json`: the token ids the prompt and the
//! positions need (checked against the tokenizer's own ids, found by content), the vision merge
//! size, and the generation settings merged the way transformers.js merges them (spec §2.11):
//! `config.json`, then its `text_config`, then `generation_config.json`.

use std::path::Path;

use serde_json::{Map, Value};

use crate::model::ModelError;
use crate::model::config::read_json_object;

/// What the family reads from the model directory's JSON files.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenConfig {
    /// `<|image_pad|>`, whose positions take the image features.
    pub image_token_id: i64,
    /// `<|vision_start|>`, which opens an image block for the position ids.
    pub vision_start_token_id: i64,
    /// Patches merged into one token along each side (`vision_config.spatial_merge_size`).
    pub spatial_merge_size: usize,
    pub hidden_size: Option<usize>,
    /// `linear_attention` or `full_attention` per layer, when stated.
    pub layer_types: Vec<String>,
    pub generation: QwenGeneration,
}

/// Generation settings after the merge. Greedy unless a request asks to sample: the files of
/// real releases say `do_sample: true`, which transformers.js would follow.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenGeneration {
    /// Every id that ends a generation; empty when the files name none (then `<|im_end|>` and
    /// `<|endoftext|>` are used, found by content).
    pub eos_token_ids: Vec<i64>,
    /// Applied even in greedy mode, as transformers.js does, over every id of the row.
    pub repetition_penalty: f32,
    /// Sampling defaults for a request that samples without saying.
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
}

impl Default for QwenGeneration {
    fn default() -> Self {
        Self {
            eos_token_ids: Vec::new(),
            repetition_penalty: 1.0,
            temperature: 0.7,
            top_p: 0.8,
            top_k: 20,
        }
    }
}

impl QwenConfig {
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
        let empty = Map::new();
        let text = config
            .get("text_config")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let vision = config
            .get("vision_config")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let id = |key: &str| -> Result<i64, String> {
            config
                .get(key)
                .or_else(|| text.get(key))
                .and_then(Value::as_i64)
                .ok_or_else(|| format!("config.json has no integer `{key}`"))
        };
        let mut generation = QwenGeneration::default();
        for (layer, source) in [
            (Some(config), "config.json"),
            (Some(text), "config.json text_config"),
            (generation_file, "generation_config.json"),
        ] {
            if let Some(layer) = layer {
                generation.apply(layer, source)?;
            }
        }
        let layer_types = text
            .get("layer_types")
            .and_then(Value::as_array)
            .map(|types| {
                types
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            image_token_id: id("image_token_id")?,
            vision_start_token_id: id("vision_start_token_id")?,
            spatial_merge_size: vision
                .get("spatial_merge_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
            hidden_size: text
                .get("hidden_size")
                .and_then(Value::as_u64)
                .map(|v| v as usize),
            layer_types,
            generation,
        })
    }
}

impl QwenGeneration {
    /// Layers one JSON object's keys over the current values; a key of the wrong type is an
    /// error naming it.
    fn apply(&mut self, layer: &Map<String, Value>, source: &str) -> Result<(), String> {
        match layer.get("eos_token_id") {
            None | Some(Value::Null) => {}
            Some(Value::Array(ids)) => {
                self.eos_token_ids = ids
                    .iter()
                    .map(Value::as_i64)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| format!("{source}: `eos_token_id` must hold integers"))?;
            }
            Some(v) => {
                self.eos_token_ids = vec![
                    v.as_i64()
                        .ok_or_else(|| format!("{source}: `eos_token_id` must be an integer"))?,
                ];
            }
        }
        let float = |key: &str| -> Result<Option<f32>, String> {
            match layer.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(|v| Some(v as f32))
                    .ok_or_else(|| format!("{source}: `{key}` must be a number")),
            }
        };
        if let Some(v) = float("repetition_penalty")? {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{source}: `repetition_penalty` must be positive"));
            }
            self.repetition_penalty = v;
        }
        if let Some(v) = float("temperature")? {
            self.temperature = v;
        }
        if let Some(v) = float("top_p")? {
            self.top_p = v;
        }
        if let Some(v) = layer.get("top_k").and_then(Value::as_u64) {
            self.top_k = v as usize;
        }
        Ok(())
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
    fn reads_ids_and_merges_generation_settings() {
        let config = object(json!({
            "model_type": "qwen3_5", "image_token_id": 248056,
            "vision_start_token_id": 248053,
            "text_config": {"hidden_size": 1024, "eos_token_id": 248044,
                            "layer_types": ["linear_attention", "full_attention"]},
            "vision_config": {"spatial_merge_size": 2}
        }));
        let file = object(json!({"do_sample": true, "eos_token_id": [248046, 248044],
                                 "repetition_penalty": 1.05, "temperature": 0.6}));
        let c = QwenConfig::from_objects(&config, Some(&file)).unwrap();
        assert_eq!(
            (c.image_token_id, c.vision_start_token_id),
            (248056, 248053)
        );
        assert_eq!(c.generation.eos_token_ids, vec![248046, 248044]);
        assert_eq!(c.generation.repetition_penalty, 1.05);
        assert_eq!(c.layer_types.len(), 2);
        let c = QwenConfig::from_objects(&config, None).unwrap();
        assert_eq!(c.generation.eos_token_ids, vec![248044]);
        assert_eq!(c.generation.repetition_penalty, 1.0);
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let err =
            QwenConfig::from_objects(&object(json!({"image_token_id": 1})), None).unwrap_err();
        assert!(err.contains("vision_start_token_id"), "{err}");
        let bad = object(json!({"image_token_id": 1, "vision_start_token_id": 2,
                                "repetition_penalty": "high"}));
        let err = QwenConfig::from_objects(&bad, None).unwrap_err();
        assert!(err.contains("repetition_penalty"), "{err}");
    }
}
