//! The decoder's state, bound by name (spec §2.5, §2.7): per linear-attention layer a fixed-size
//! conv carry and recurrent state, per full-attention layer a KV cache that grows by one position
//! a step. Which states exist and their shapes come from the session's metadata; each
//! `present*` output replaces its `past*` input of the same layer. Prefilled rows are joined into
//! one batch (KV caches left-padded, the padding masked) and rows leave it between steps, where
//! the model's `RowOps` keep the state (host memory, or the session's device with I/O binding).

use ort::value::DynValue;

use crate::model::ModelError;
use crate::model::rows::{RowOps, RowTensor};
use crate::model::signature::{Elem, GraphPorts, Port};

/// The non-state inputs of the merged decoder.
pub const DECODER_INPUTS: [&str; 5] = [
    "inputs_embeds",
    "attention_mask",
    "position_ids",
    "num_logits_to_keep",
    "use_cache_branch",
];

/// One state input and the output that replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpec {
    pub past: String,
    pub present: String,
    /// The shape after the batch axis; the growing axis (a KV cache's past length) is 0.
    pub dims: Vec<usize>,
    /// The axis (in the full shape, batch first) that grows each step, for KV caches.
    pub grows: Option<usize>,
}

/// The present output's name for a past input: `past_key_values.3.key` → `present.3.key`,
/// `past_conv.0` → `present_conv.0`.
pub fn present_name(past: &str) -> Option<String> {
    if let Some(rest) = past.strip_prefix("past_key_values.") {
        return Some(format!("present.{rest}"));
    }
    past.strip_prefix("past_")
        .map(|rest| format!("present_{rest}"))
}

/// Reads the state inputs from the decoder's ports: every input that is not one of
/// [`DECODER_INPUTS`], with the batch axis first (named `batch_size`), every other axis fixed
/// except a KV cache's past length. Its `present` output must exist with the same rank.
pub fn state_specs(ports: &GraphPorts<'_>) -> Result<Vec<StateSpec>, ModelError> {
    let error = |message: String| ModelError::Signature {
        file: ports.file.to_path_buf(),
        message,
    };
    let mut specs = Vec::new();
    for port in &ports.inputs {
        if DECODER_INPUTS.contains(&port.name.as_str()) {
            continue;
        }
        let present = present_name(&port.name).ok_or_else(|| {
            error(format!(
                "unexpected input `{}`: neither a decoder input nor a past state",
                port.name
            ))
        })?;
        if port.elem != Elem::F32 {
            return Err(error(format!(
                "state `{}` is {:?}; only float32 state is supported (use the fp32, q4 or quantized graphs)",
                port.name, port.elem
            )));
        }
        let out: &Port = ports
            .outputs
            .iter()
            .find(|p| p.name == present)
            .ok_or_else(|| error(format!("`{}` has no output `{present}`", port.name)))?;
        if out.shape.len() != port.shape.len() || port.shape.len() < 2 {
            return Err(error(format!(
                "`{}` and `{present}` do not have the same rank",
                port.name
            )));
        }
        let kv = port.name.starts_with("past_key_values.");
        let mut dims = Vec::new();
        for (axis, &dim) in port.shape.iter().enumerate().skip(1) {
            match (dim, kv && axis == 2) {
                (_, true) => dims.push(0),
                (d, false) if d > 0 => dims.push(d as usize),
                _ => {
                    return Err(error(format!(
                        "state `{}` has the symbolic axis {axis} ({:?}); only a KV cache's past length may be",
                        port.name, port.shape
                    )));
                }
            }
        }
        specs.push(StateSpec {
            past: port.name.clone(),
            present,
            dims,
            grows: kv.then_some(2),
        });
    }
    if !specs.iter().any(|s| s.grows.is_some()) {
        return Err(error(
            "no `past_key_values.*` input: the past length cannot be told (transformers.js needs one too)"
                .into(),
        ));
    }
    Ok(specs)
}

/// The state of some rows, in the order of the specs: host tensors or device values, as the
/// decoder call that made them left them.
pub struct DecoderState {
    values: Vec<RowTensor>,
}

impl DecoderState {
    /// Zeros for one row: conv and recurrent states full of zeros, KV caches of length 0.
    pub fn empty(specs: &[StateSpec]) -> Result<Self, ModelError> {
        let values = specs
            .iter()
            .map(|spec| {
                let mut shape = vec![1];
                shape.extend(&spec.dims);
                let len = shape.iter().product();
                RowTensor::f32(shape, vec![0.0; len])
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { values })
    }

    /// The inputs to feed, by name.
    pub fn inputs<'a>(
        &'a self,
        specs: &'a [StateSpec],
    ) -> impl Iterator<Item = (&'a str, &'a ort::value::DynValue)> {
        specs
            .iter()
            .zip(&self.values)
            .map(|(spec, value)| (spec.past.as_str(), value.value()))
    }

    /// Takes the `present` outputs, in the order of the specs, as the next `past` inputs.
    pub fn absorb(&mut self, presents: Vec<DynValue>) -> Result<(), ModelError> {
        if presents.len() != self.values.len() {
            return Err(ModelError::Inference {
                stage: "decoder",
                message: format!(
                    "{} present outputs for {} states",
                    presents.len(),
                    self.values.len()
                ),
            });
        }
        for (value, present) in self.values.iter_mut().zip(presents) {
            *value = RowTensor::from_output(present, "decoder")?;
        }
        Ok(())
    }

    /// The past length of the batch (a KV cache's length, padding included).
    pub fn past_length(&self, specs: &[StateSpec]) -> usize {
        specs
            .iter()
            .zip(&self.values)
            .find_map(|(spec, value)| spec.grows.map(|axis| value.shape()[axis]))
            .unwrap_or(0)
    }

    /// One batch of these states' rows, in order; KV caches left-padded to the longest.
    pub fn join(
        mut parts: Vec<DecoderState>,
        specs: &[StateSpec],
        ops: &mut RowOps,
    ) -> Result<Self, ModelError> {
        if parts.len() == 1 {
            // Nothing to pad or concatenate: the values stay as they are.
            return Ok(parts.remove(0));
        }
        let columns: Vec<Vec<&RowTensor>> =
            parts.iter().map(|p| p.values.iter().collect()).collect();
        let axes: Vec<Option<usize>> = specs.iter().map(|spec| spec.grows).collect();
        Ok(Self {
            values: ops.join(&columns, &axes)?,
        })
    }

    /// Cuts the first `count` positions off every KV cache: padding every row has, once the rows
    /// it was added for have left.
    pub fn trim_front(
        &mut self,
        count: usize,
        specs: &[StateSpec],
        ops: &mut RowOps,
    ) -> Result<(), ModelError> {
        let tensors = self
            .values
            .iter_mut()
            .zip(specs)
            .filter_map(|(value, spec)| spec.grows.map(|axis| (value, axis)))
            .collect();
        ops.trim_front(tensors, count)
    }

    /// Keeps the rows `keep`, in that order.
    pub fn gather(&mut self, keep: &[usize], ops: &mut RowOps) -> Result<(), ModelError> {
        ops.gather(self.values.iter_mut().collect(), keep)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn port(name: &str, shape: &[i64]) -> Port {
        Port {
            name: name.into(),
            elem: Elem::F32,
            shape: shape.to_vec(),
        }
    }

    #[test]
    fn reads_the_three_kinds_of_state_from_the_ports() {
        let mut inputs = vec![
            port("inputs_embeds", &[-1, -1, 64]),
            port("attention_mask", &[-1, -1]),
            port("position_ids", &[3, -1, -1]),
            port("num_logits_to_keep", &[]),
            port("past_conv.0", &[-1, 96, 3]),
            port("past_recurrent.0", &[-1, 2, 16, 16]),
            port("past_key_values.1.key", &[-1, 1, -1, 16]),
        ];
        inputs[3].elem = Elem::I64;
        let outputs = vec![
            port("logits", &[-1, -1, 500]),
            port("present_conv.0", &[-1, 96, 3]),
            port("present_recurrent.0", &[-1, 2, 16, 16]),
            port("present.1.key", &[-1, 1, -1, 16]),
        ];
        let ports = GraphPorts {
            file: Path::new("decoder_model_merged.onnx"),
            inputs,
            outputs,
        };
        let specs = state_specs(&ports).unwrap();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].present, "present_conv.0");
        assert_eq!(specs[0].dims, vec![96, 3]);
        assert_eq!(specs[2].present, "present.1.key");
        assert_eq!(
            (specs[2].dims.clone(), specs[2].grows),
            (vec![1, 0, 16], Some(2))
        );

        let mut broken = ports;
        broken.outputs.pop();
        let err = state_specs(&broken).unwrap_err().to_string();
        assert!(err.contains("present.1.key"), "{err}");
    }
}
