//! Florence-2's contract (spec section 2): the four sessions' inputs and outputs, checked at
//! load, and the decoder dimensions generation needs (layers, heads, head size) derived from them.

use crate::model::ModelError;
use crate::model::signature::{Elem, GraphPorts, static_dim};

/// The decoder dimensions generation relies on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderShape {
    pub layers: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// The last dim of `logits` when static.
    pub vocab_size: Option<usize>,
}

impl GraphPorts<'_> {
    pub fn check_vision(&self) -> Result<(), ModelError> {
        self.require(true, "pixel_values", Elem::F32, 4)?;
        self.require(false, "image_features", Elem::F32, 3)?;
        self.refuse_unknown_inputs(&Self::names(&["pixel_values"]))
    }

    /// Returns the hidden size when the graph declares it.
    pub fn check_embed(&self) -> Result<Option<usize>, ModelError> {
        self.require(true, "input_ids", Elem::I64, 2)?;
        let out = self.require(false, "inputs_embeds", Elem::F32, 3)?;
        self.refuse_unknown_inputs(&Self::names(&["input_ids"]))?;
        Ok(static_dim(out.shape[2]))
    }

    pub fn check_encoder(&self) -> Result<(), ModelError> {
        self.require(true, "inputs_embeds", Elem::F32, 3)?;
        self.require(true, "attention_mask", Elem::I64, 2)?;
        self.require(false, "last_hidden_state", Elem::F32, 3)?;
        self.refuse_unknown_inputs(&Self::names(&["inputs_embeds", "attention_mask"]))
    }

    /// The merged decoder: `use_cache_branch`, a past input per layer/kind, a present output each.
    pub fn check_decoder(&self) -> Result<DecoderShape, ModelError> {
        self.require(true, "inputs_embeds", Elem::F32, 3)?;
        self.require(true, "encoder_attention_mask", Elem::I64, 2)?;
        self.require(true, "encoder_hidden_states", Elem::F32, 3)?;
        let flag = self.require(true, "use_cache_branch", Elem::Bool, 1)?;
        if flag.shape[0] > 1 {
            return Err(self.error(format!(
                "`use_cache_branch` has shape {:?}, expected [1]",
                flag.shape
            )));
        }
        let logits = self.require(false, "logits", Elem::F32, 3)?;
        let vocab_size = static_dim(logits.shape[2]);

        let layers = self
            .inputs
            .iter()
            .filter(|p| p.name.starts_with("past_key_values."))
            .count()
            / 4;
        if layers == 0 {
            return Err(self.error(
                "no `past_key_values.*` inputs: this is not decoder_model_merged.onnx (the server needs the merged decoder)".into(),
            ));
        }
        let mut known = Self::names(&[
            "inputs_embeds",
            "encoder_attention_mask",
            "encoder_hidden_states",
            "use_cache_branch",
        ]);
        let mut heads_and_dim: Option<(i64, i64)> = None;
        for layer in 0..layers {
            for name in past_names(layer) {
                let port = self.require(true, &name, Elem::F32, 4)?;
                let (heads, dim) = (port.shape[1], port.shape[3]);
                if heads <= 0 || dim <= 0 {
                    return Err(self.error(format!(
                        "`{name}` must have static heads and head size, got {:?}",
                        port.shape
                    )));
                }
                match heads_and_dim {
                    None => heads_and_dim = Some((heads, dim)),
                    Some(seen) if seen != (heads, dim) => {
                        return Err(self.error(format!(
                            "`{name}` has shape {:?}, unlike the other cache inputs",
                            port.shape
                        )));
                    }
                    Some(_) => {}
                }
                known.insert(name.clone());
                self.require(false, &present_name(&name), Elem::F32, 4)?;
            }
        }
        self.refuse_unknown_inputs(&known)?;
        let (heads, head_dim) = heads_and_dim.expect("layers > 0");
        Ok(DecoderShape {
            layers,
            heads: heads as usize,
            head_dim: head_dim as usize,
            vocab_size,
        })
    }
}

/// The four past inputs of one layer, in the order cache code iterates them.
pub fn past_names(layer: usize) -> [String; 4] {
    [
        format!("past_key_values.{layer}.decoder.key"),
        format!("past_key_values.{layer}.decoder.value"),
        format!("past_key_values.{layer}.encoder.key"),
        format!("past_key_values.{layer}.encoder.value"),
    ]
}

/// `past_key_values.0.decoder.key` -> `present.0.decoder.key`.
pub fn present_name(past: &str) -> String {
    past.replacen("past_key_values.", "present.", 1)
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

    fn decoder_ports(layers: usize) -> (Vec<Port>, Vec<Port>) {
        let mut inputs = vec![
            port("inputs_embeds", Elem::F32, &[-1, -1, 32]),
            port("encoder_attention_mask", Elem::I64, &[-1, -1]),
            port("encoder_hidden_states", Elem::F32, &[-1, -1, 32]),
        ];
        let mut outputs = vec![port("logits", Elem::F32, &[-1, -1, 2048])];
        for layer in 0..layers {
            for name in past_names(layer) {
                inputs.push(port(&name, Elem::F32, &[-1, 2, -1, 16]));
                outputs.push(port(&present_name(&name), Elem::F32, &[-1, 2, -1, 16]));
            }
        }
        inputs.push(port("use_cache_branch", Elem::Bool, &[1]));
        (inputs, outputs)
    }

    #[test]
    fn accepts_the_merged_decoder_contract() {
        let (inputs, outputs) = decoder_ports(2);
        let graph = GraphPorts {
            file: Path::new("decoder_model_merged.onnx"),
            inputs,
            outputs,
        };
        let shape = graph.check_decoder().unwrap();
        assert_eq!(
            shape,
            DecoderShape {
                layers: 2,
                heads: 2,
                head_dim: 16,
                vocab_size: Some(2048)
            }
        );
    }

    #[test]
    fn names_what_is_wrong() {
        let (mut inputs, outputs) = decoder_ports(1);
        inputs.retain(|p| p.name != "use_cache_branch");
        let graph = GraphPorts {
            file: Path::new("d.onnx"),
            inputs,
            outputs,
        };
        let err = graph.check_decoder().unwrap_err().to_string();
        assert!(
            err.contains("use_cache_branch") && err.contains("d.onnx"),
            "{err}"
        );

        let (mut inputs, outputs) = decoder_ports(1);
        inputs[3].shape = vec![-1, 2, -1];
        let graph = GraphPorts {
            file: Path::new("d.onnx"),
            inputs,
            outputs,
        };
        assert!(
            graph
                .check_decoder()
                .unwrap_err()
                .to_string()
                .contains("rank 3")
        );

        // The non-merged prefill decoder has no past inputs: refuse it with a useful message.
        let (inputs, outputs) = decoder_ports(0);
        let graph = GraphPorts {
            file: Path::new("decoder_model.onnx"),
            inputs,
            outputs,
        };
        assert!(
            graph
                .check_decoder()
                .unwrap_err()
                .to_string()
                .contains("merged")
        );

        let graph = GraphPorts {
            file: Path::new("vision_encoder.onnx"),
            inputs: vec![port(
                "pixel_values",
                Elem::Other("float16"),
                &[-1, 3, 768, 768],
            )],
            outputs: vec![port("image_features", Elem::F32, &[-1, 577, 768])],
        };
        assert!(
            graph
                .check_vision()
                .unwrap_err()
                .to_string()
                .contains("float16")
        );
    }

    #[test]
    fn refuses_inputs_it_cannot_feed() {
        let graph = GraphPorts {
            file: Path::new("encoder_model.onnx"),
            inputs: vec![
                port("inputs_embeds", Elem::F32, &[-1, -1, 32]),
                port("attention_mask", Elem::I64, &[-1, -1]),
                port("input_ids", Elem::I64, &[-1, -1]),
            ],
            outputs: vec![port("last_hidden_state", Elem::F32, &[-1, -1, 32])],
        };
        assert!(
            graph
                .check_encoder()
                .unwrap_err()
                .to_string()
                .contains("`input_ids`")
        );
    }
}
