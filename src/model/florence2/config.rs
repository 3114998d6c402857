//! Florence-2's `config.json`: an encoder-decoder whose `text_config` carries the sizes and the
//! generation defaults that a small `generation_config.json` leaves out.

use std::path::Path;

use serde_json::{Map, Value};

use crate::model::ModelError;
use crate::model::config::{GenerationConfig, read_json_object};

/// What the server needs from `config.json` besides generation settings.
#[derive(Debug, Clone)]
pub struct ModelConfig {
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
            d_model: size("d_model"),
            max_position_embeddings: size("max_position_embeddings"),
            generation,
        })
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
        assert_eq!(merged.d_model, Some(768));

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
