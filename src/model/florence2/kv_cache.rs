//! The per-row state the merged decoder needs on every step: encoder output and mask, the
//! cross-attention cache from step 0 (later steps return empty placeholders, spec P1), and the
//! self-attention cache that grows by one token a step. Rows can be gathered (kept, dropped,
//! duplicated for beams) between steps: on the host for host tensors, or by a one-node Gather
//! session on the device when the cache stays there (`KvCache::Device`).

use std::path::Path;

use ort::editor::{Graph, Model, Node, ONNX_DOMAIN, Opset};
use ort::operator::Attribute;
use ort::session::Session;
use ort::value::{
    DynValue, Outlet, Shape, SymbolicDimensions, Tensor, TensorElementType, ValueType,
};

use super::signature::{DecoderShape, past_names, present_name};
use crate::model::ModelError;
use crate::model::rows::RowTensor;
use crate::model::runtime::{self, RuntimeOptions};

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

    /// Takes the caches out of a decoder call's outputs. Encoder presents are kept only from the
    /// first (no-cache) call: on cached calls they are empty placeholders.
    pub fn absorb(
        &mut self,
        outputs: &mut ort::session::SessionOutputs<'_>,
        names: &CacheNames,
    ) -> Result<(), ModelError> {
        let first_call = !self.has_cache();
        let mut take = |name: &str| -> Result<RowTensor, ModelError> {
            let value = outputs.remove(name).ok_or_else(|| ModelError::Inference {
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

    /// Keeps row `parents[i]` as row i of every per-row tensor: with `device`, by one Gather
    /// run where the tensors are (no host round trip); without, on the host.
    ///
    /// `same_requests`: row i still belongs to the request it belonged to (beams reordered
    /// within their request, no row left or added). Then the encoder output, its mask and the
    /// cross-attention cache, identical for all beams of a request, are kept as they are and
    /// only the self-attention cache moves.
    pub fn gather(
        &mut self,
        parents: &[usize],
        same_requests: bool,
        device: Option<&mut DeviceGather>,
    ) -> Result<(), ModelError> {
        let mut tensors: Vec<&mut RowTensor> = Vec::new();
        if !same_requests {
            tensors.push(&mut self.encoder_hidden_states);
            tensors.push(&mut self.encoder_attention_mask);
            tensors.extend(self.cross.iter_mut().flat_map(|pair| pair.iter_mut()));
        }
        tensors.extend(self.self_attn.iter_mut().flat_map(|pair| pair.iter_mut()));
        match device {
            Some(device) => {
                let values: Vec<&DynValue> = tensors.iter().map(|t| t.value()).collect();
                let gathered = device.gather(&values, parents)?;
                for (tensor, value) in tensors.into_iter().zip(gathered) {
                    *tensor = RowTensor::from_output(value, "decoder")?;
                }
            }
            None => {
                for tensor in tensors {
                    *tensor = tensor.gather(parents)?;
                }
            }
        }
        Ok(())
    }
}

/// Row gathers (`Gather` on axis 0) run as an ONNX Runtime session on the model's device, so a
/// cache that lives in GPU memory is reordered there. One session per list of tensor kinds
/// (element type and rank), built with the Model Editor API on first use; one run gathers every
/// tensor of the decoder state.
pub struct DeviceGather {
    env: &'static ort::environment::Environment,
    options: RuntimeOptions,
    sessions: Vec<(Vec<(TensorElementType, usize)>, Session)>,
}

impl DeviceGather {
    pub fn new(env: &'static ort::environment::Environment, options: &RuntimeOptions) -> Self {
        let mut options = options.clone();
        // A copy kernel: threads and graph rewrites buy nothing.
        options.intra_threads = 1;
        options.inter_threads = 1;
        Self {
            env,
            options,
            sessions: Vec::new(),
        }
    }

    /// Row i of output k is row `parents[i]` of `tensors[k]`; outputs stay in the device's memory.
    pub fn gather(
        &mut self,
        tensors: &[&DynValue],
        parents: &[usize],
    ) -> Result<Vec<DynValue>, ModelError> {
        let error = ModelError::inference("cache reorder");
        let kinds = tensors
            .iter()
            .map(|value| match value.dtype() {
                ValueType::Tensor { ty, shape, .. } => Ok((*ty, shape.len())),
                other => Err(ModelError::Inference {
                    stage: "cache reorder",
                    message: format!("not a tensor: {other:?}"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index = match self.sessions.iter().position(|(k, _)| *k == kinds) {
            Some(index) => index,
            None => {
                let session = self.build(&kinds)?;
                self.sessions.push((kinds, session));
                self.sessions.len() - 1
            }
        };
        let device = runtime::device_memory(self.options.device).map_err(&error)?;
        let session = &mut self.sessions[index].1;
        let indices: Vec<i64> = parents.iter().map(|&p| p as i64).collect();
        let indices = Tensor::from_array(([parents.len()], indices)).map_err(&error)?;
        let mut binding = session.create_binding().map_err(&error)?;
        for (k, value) in tensors.iter().enumerate() {
            binding
                .bind_input(format!("t{k}"), *value)
                .map_err(&error)?;
            binding
                .bind_output_to_device(format!("g{k}"), &device)
                .map_err(&error)?;
        }
        binding.bind_input("indices", &indices).map_err(&error)?;
        let mut outputs = session.run_binding(&binding).map_err(&error)?;
        (0..tensors.len())
            .map(|k| {
                outputs
                    .remove(format!("g{k}").as_str())
                    .ok_or_else(|| ModelError::Inference {
                        stage: "cache reorder",
                        message: format!("output g{k} missing"),
                    })
            })
            .collect()
    }

    fn build(&self, kinds: &[(TensorElementType, usize)]) -> Result<Session, ModelError> {
        let error = ModelError::inference("cache reorder");
        let outlet = |name: String, ty: TensorElementType, rank: usize| {
            Outlet::new(
                name,
                ValueType::Tensor {
                    ty,
                    shape: Shape::new(vec![-1i64; rank]),
                    dimension_symbols: SymbolicDimensions::empty(rank),
                },
            )
        };
        let mut graph = Graph::new().map_err(&error)?;
        let mut inputs: Vec<Outlet> = kinds
            .iter()
            .enumerate()
            .map(|(k, &(ty, rank))| outlet(format!("t{k}"), ty, rank))
            .collect();
        inputs.push(outlet("indices".into(), TensorElementType::Int64, 1));
        graph.set_inputs(inputs).map_err(&error)?;
        graph
            .set_outputs(
                kinds
                    .iter()
                    .enumerate()
                    .map(|(k, &(ty, rank))| outlet(format!("g{k}"), ty, rank)),
            )
            .map_err(&error)?;
        for k in 0..kinds.len() {
            let axis = Attribute::new("axis", 0i64).map_err(&error)?;
            let node = Node::new(
                "Gather",
                ONNX_DOMAIN,
                format!("gather_{k}"),
                [format!("t{k}"), "indices".to_string()],
                [format!("g{k}")],
                [axis],
            )
            .map_err(&error)?;
            graph.add_node(node).map_err(&error)?;
        }
        let mut model =
            Model::new([Opset::new(ONNX_DOMAIN, 17).map_err(&error)?]).map_err(&error)?;
        model.set_graph(graph).map_err(&error)?;
        let builder =
            runtime::session_builder(self.env, &self.options, Path::new("<cache reorder graph>"))?;
        model.into_session(&builder).map_err(&error)
    }
}
