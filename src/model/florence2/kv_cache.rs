//! The per-row state the merged decoder needs on every step: encoder output and mask, the
//! cross-attention cache from step 0 (later steps return empty placeholders, spec P1), and the
//! self-attention cache that grows by one token a step. Rows can be gathered (kept, dropped,
//! duplicated for beams) between steps: on the host for host tensors, or by a Gather session on
//! the device when the cache stays there (`KvCache::Device`, `crate::model::device_rows`).

use ort::value::DynValue;

use super::signature::{DecoderShape, past_names, present_name};
use crate::model::ModelError;
use crate::model::rows::{RowOps, RowTensor};

/// Cross-attention inputs (fixed for the request) and the self-attention cache, per layer.
pub struct DecoderState {
    pub encoder_hidden_states: RowTensor,
    pub encoder_attention_mask: RowTensor,
    /// `[layers][key, value]`, from step 0's `present.*.encoder.*`.
    cross: Vec<[RowTensor; 2]>,
    /// `[layers][key, value]`, the previous step's `present.*.decoder.*`.
    self_attn: Vec<[RowTensor; 2]>,
    shape: DecoderShape,
}

/// Input names in the order the decoder's cache inputs are fed.
pub struct CacheNames {
    /// Per layer: decoder key, decoder value, encoder key, encoder value.
    pub past: Vec<[String; 4]>,
    pub present: Vec<[String; 4]>,
}

impl CacheNames {
    pub fn new(layers: usize) -> Self {
        let past: Vec<[String; 4]> = (0..layers).map(past_names).collect();
        let present = past
            .iter()
            .map(|names| names.clone().map(|n| present_name(&n)))
            .collect();
        Self { past, present }
    }
}

impl DecoderState {
    pub fn new(
        encoder_hidden_states: RowTensor,
        encoder_attention_mask: RowTensor,
        shape: DecoderShape,
    ) -> Self {
        Self {
            encoder_hidden_states,
            encoder_attention_mask,
            cross: Vec::new(),
            self_attn: Vec::new(),
            shape,
        }
    }

    pub fn rows(&self) -> usize {
        self.encoder_hidden_states.rows()
    }

    pub fn has_cache(&self) -> bool {
        !self.self_attn.is_empty()
    }

    /// Zero-length pasts `[rows, H, 0, Dh]` for the no-cache branch, as transformers.js feeds them.
    pub fn empty_past(&self) -> Result<RowTensor, ModelError> {
        RowTensor::f32(
            vec![self.rows(), self.shape.heads, 0, self.shape.head_dim],
            Vec::new(),
        )
    }

    /// The past tensor for input `kind` (0 dec key, 1 dec value, 2 enc key, 3 enc value) of a layer.
    pub fn past(&self, layer: usize, kind: usize) -> &RowTensor {
        if kind < 2 {
            &self.self_attn[layer][kind]
        } else {
            &self.cross[layer][kind - 2]
        }
    }

    /// Takes the caches out of a decoder call's outputs (by name). Encoder presents are kept
    /// only from the first (no-cache) call: on cached calls they are empty placeholders.
    pub fn absorb(
        &mut self,
        take: &mut dyn FnMut(&str) -> Option<DynValue>,
        names: &CacheNames,
    ) -> Result<(), ModelError> {
        let first_call = !self.has_cache();
        let mut take = |name: &str| -> Result<RowTensor, ModelError> {
            let value = take(name).ok_or_else(|| ModelError::Inference {
                stage: "decoder",
                message: format!("output `{name}` missing"),
            })?;
            RowTensor::from_output(value, "decoder")
        };
        let mut self_attn = Vec::with_capacity(names.present.len());
        let mut cross = Vec::with_capacity(names.present.len());
        for present in &names.present {
            self_attn.push([take(&present[0])?, take(&present[1])?]);
            if first_call {
                let pair = [take(&present[2])?, take(&present[3])?];
                if pair[0].shape()[2] != self.encoder_hidden_states.shape()[1] {
                    return Err(ModelError::Inference {
                        stage: "decoder",
                        message: format!(
                            "step-0 `{}` has {} positions, expected the encoder length {}",
                            present[2],
                            pair[0].shape()[2],
                            self.encoder_hidden_states.shape()[1]
                        ),
                    });
                }
                cross.push(pair);
            }
        }
        self.self_attn = self_attn;
        if first_call {
            self.cross = cross;
        }
        Ok(())
    }

    /// Keeps row `parents[i]` as row i of every per-row tensor, where `rows` keeps them (on the
    /// device: one Gather run, no host round trip).
    ///
    /// `same_requests`: row i still belongs to the request it belonged to (beams reordered
    /// within their request, no row left or added). Then the encoder output, its mask and the
    /// cross-attention cache, identical for all beams of a request, are kept as they are and
    /// only the self-attention cache moves.
    pub fn gather(
        &mut self,
        parents: &[usize],
        same_requests: bool,
        rows: &mut RowOps,
    ) -> Result<(), ModelError> {
        let mut tensors: Vec<&mut RowTensor> = Vec::new();
        if !same_requests {
            tensors.push(&mut self.encoder_hidden_states);
            tensors.push(&mut self.encoder_attention_mask);
            tensors.extend(self.cross.iter_mut().flat_map(|pair| pair.iter_mut()));
        }
        tensors.extend(self.self_attn.iter_mut().flat_map(|pair| pair.iter_mut()));
        rows.gather(tensors, parents)?;
        Ok(())
    }
}
