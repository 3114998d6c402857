//! Qwen3.5's contract (spec §2.5): the three sessions' inputs and outputs, checked at load. The
//! decoder's state inputs are read from its metadata (`state.rs`); the optional inputs
//! (`num_logits_to_keep`, `use_cache_branch`) are fed only when the graph declares them.

use crate::model::ModelError;
use crate::model::signature::{Elem, GraphPorts, static_dim};

/// What generation needs to know of the decoder graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QwenDecoderShape {
    /// The width of `inputs_embeds` when static.
    pub hidden: Option<usize>,
    /// The last dim of `logits` when static.
    pub vocab_size: Option<usize>,
    pub logits_to_keep: bool,
    pub cache_branch: bool,
}

impl GraphPorts<'_> {
    /// Returns the embedding width when the graph declares it.
    pub fn check_qwen_embed(&self) -> Result<Option<usize>, ModelError> {
        self.require(true, "input_ids", Elem::I64, 2)?;
        let out = self.require(false, "inputs_embeds", Elem::F32, 3)?;
        self.refuse_unknown_inputs(&Self::names(&["input_ids"]))?;
        Ok(static_dim(out.shape[2]))
    }

    /// Returns the feature width when the graph declares it.
    pub fn check_qwen_vision(&self) -> Result<Option<usize>, ModelError> {
        self.require(true, "pixel_values", Elem::F32, 2)?;
        self.require(true, "image_grid_thw", Elem::I64, 2)?;
        let out = self.require(false, "image_features", Elem::F32, 2)?;
        self.refuse_unknown_inputs(&Self::names(&["pixel_values", "image_grid_thw"]))?;
        Ok(static_dim(out.shape[1]))
    }

    /// The merged decoder's fixed inputs and its logits; the states are checked by
    /// `state::state_specs`.
    pub fn check_qwen_decoder(&self) -> Result<QwenDecoderShape, ModelError> {
        let embeds = self.require(true, "inputs_embeds", Elem::F32, 3)?;
        self.require(true, "attention_mask", Elem::I64, 2)?;
        let positions = self.require(true, "position_ids", Elem::I64, 3)?;
        if positions.shape[0] > 0 && positions.shape[0] != 3 {
            return Err(self.error(format!(
                "`position_ids` has shape {:?}, expected [3, batch, sequence] (M-RoPE)",
                positions.shape
            )));
        }
        let logits_to_keep = Self::find(&self.inputs, "num_logits_to_keep").is_some();
        if logits_to_keep {
            self.require(true, "num_logits_to_keep", Elem::I64, 0)?;
        }
        let cache_branch = Self::find(&self.inputs, "use_cache_branch").is_some();
        if cache_branch {
            self.require(true, "use_cache_branch", Elem::Bool, 1)?;
        }
        let logits = self.require(false, "logits", Elem::F32, 3)?;
        Ok(QwenDecoderShape {
            hidden: static_dim(embeds.shape[2]),
            vocab_size: static_dim(logits.shape[2]),
            logits_to_keep,
            cache_branch,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::signature::Port;

    fn port(name: &str, elem: Elem, shape: &[i64]) -> Port {
        Port {
            name: name.into(),
            elem,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn accepts_the_opt_decoder_and_names_what_is_wrong() {
        let inputs = vec![
            port("inputs_embeds", Elem::F32, &[-1, -1, 64]),
            port("attention_mask", Elem::I64, &[-1, -1]),
            port("position_ids", Elem::I64, &[3, -1, -1]),
            port("num_logits_to_keep", Elem::I64, &[]),
        ];
        let outputs = vec![port("logits", Elem::F32, &[-1, -1, 500])];
        let graph = GraphPorts {
            file: Path::new("decoder_model_merged.onnx"),
            inputs: inputs.clone(),
            outputs: outputs.clone(),
        };
        let shape = graph.check_qwen_decoder().unwrap();
        assert_eq!(
            shape,
            QwenDecoderShape {
                hidden: Some(64),
                vocab_size: Some(500),
                logits_to_keep: true,
                cache_branch: false
            }
        );
        let mut flat = inputs;
        flat[2] = port("position_ids", Elem::I64, &[-1, -1]);
        let graph = GraphPorts {
            file: Path::new("decoder_model_merged.onnx"),
            inputs: flat,
            outputs,
        };
        let err = graph.check_qwen_decoder().unwrap_err().to_string();
        assert!(
            err.contains("position_ids") && err.contains("rank 2"),
            "{err}"
        );
    }
}
