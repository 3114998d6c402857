//! Row moves for decoder state that stays in the session's device memory (`KvCache::Device`):
//! small ONNX Runtime sessions on the model's device, built with the Model Editor API, gather rows
//! (keep, drop, repeat: `Gather` on axis 0), join the rows of several batches (each part's
//! growing axis left-padded with zeros by `Pad`, then `Concat` on axis 0) and cut padding every
//! row has off the front of a growing axis (`Slice`). A cache in GPU memory never leaves it; on
//! the CPU provider the same sessions run on host memory.

use std::path::Path;

use ort::editor::{Graph, Model, Node, ONNX_DOMAIN, Opset};
use ort::operator::Attribute;
use ort::session::Session;
use ort::value::{
    DynValue, Outlet, Shape, SymbolicDimensions, Tensor, TensorElementType, ValueType,
};

use super::ModelError;
use super::runtime::{self, Place, RuntimeOptions};

const STAGE: &str = "cache reorder";

/// The most parts one join session takes: a session is built for each count, so more parts are
/// joined in rounds (the first round's result is a part of the next), which bounds the sessions
/// a model instance keeps at the cost of copying the rows of earlier rounds again.
const MAX_JOIN_PARTS: usize = 8;

/// What a session is built for: per tensor its element type, rank and (for joins) the axis that
/// is left-padded.
type Kinds = Vec<(TensorElementType, usize, Option<usize>)>;

/// The gather and join sessions of one model instance, built on first use for each list of
/// tensor kinds (and, for joins, each number of parts) and kept.
pub struct DeviceRows {
    env: &'static ort::environment::Environment,
    options: RuntimeOptions,
    gathers: Vec<(Kinds, Session)>,
    joins: Vec<((Kinds, usize), Session)>,
    trims: Vec<(Kinds, Session)>,
}

impl DeviceRows {
    pub fn new(env: &'static ort::environment::Environment, options: &RuntimeOptions) -> Self {
        let mut options = options.clone();
        // Copy kernels: threads and graph rewrites buy nothing.
        options.intra_threads = 1;
        options.inter_threads = 1;
        Self {
            env,
            options,
            gathers: Vec::new(),
            joins: Vec::new(),
            trims: Vec::new(),
        }
    }

    /// Row i of output k is row `parents[i]` of `tensors[k]`; outputs stay in the device's memory.
    pub fn gather(
        &mut self,
        tensors: &[&DynValue],
        parents: &[usize],
    ) -> Result<Vec<DynValue>, ModelError> {
        let error = ModelError::inference(STAGE);
        let kinds = tensors
            .iter()
            .map(|value| kind_of(value, None))
            .collect::<Result<Kinds, _>>()?;
        let index = match self.gathers.iter().position(|(k, _)| *k == kinds) {
            Some(index) => index,
            None => {
                let session = self.build(gather_graph(&kinds)?)?;
                self.gathers.push((kinds, session));
                self.gathers.len() - 1
            }
        };
        let indices: Vec<i64> = parents.iter().map(|&p| p as i64).collect();
        let indices = Tensor::from_array(([parents.len()], indices))
            .map_err(&error)?
            .into_dyn();
        let names: Vec<(String, String)> = (0..tensors.len())
            .map(|k| (format!("t{k}"), format!("g{k}")))
            .collect();
        let mut inputs: Vec<(&str, &DynValue)> = names
            .iter()
            .zip(tensors)
            .map(|((input, _), value)| (input.as_str(), *value))
            .collect();
        inputs.push(("indices", &indices));
        let outputs: Vec<(&str, Place)> = names
            .iter()
            .map(|(_, output)| (output.as_str(), Place::Device))
            .collect();
        let session = &mut self.gathers[index].1;
        runtime::run_bound(session, self.options.device, &inputs, &outputs, STAGE)
    }

    /// Output k holds the rows of `parts[0][k]`, then those of `parts[1][k]`, …; where `axes[k]`
    /// names an axis, each part's tensor is left-padded with zeros along it to the longest (a KV
    /// cache's past length: the caller masks the padding). Outputs stay in the device's memory.
    pub fn join(
        &mut self,
        parts: &[Vec<&DynValue>],
        axes: &[Option<usize>],
    ) -> Result<Vec<DynValue>, ModelError> {
        let error = ModelError::inference(STAGE);
        let first = parts.first().ok_or_else(|| inference("joining no rows"))?;
        if parts.iter().any(|part| part.len() != axes.len()) {
            return Err(inference("every part must hold one tensor per axis"));
        }
        if parts.len() > MAX_JOIN_PARTS {
            let joined = self.join(&parts[..MAX_JOIN_PARTS], axes)?;
            let mut rest = vec![joined.iter().collect::<Vec<_>>()];
            rest.extend(parts[MAX_JOIN_PARTS..].iter().cloned());
            return self.join(&rest, axes);
        }
        let kinds = first
            .iter()
            .zip(axes)
            .map(|(value, axis)| kind_of(value, *axis))
            .collect::<Result<Kinds, _>>()?;
        for part in &parts[1..] {
            for (value, kind) in part.iter().zip(&kinds) {
                if kind_of(value, kind.2)? != *kind {
                    return Err(inference(&format!(
                        "joining a {:?} tensor with a {kind:?} one",
                        value.dtype()
                    )));
                }
            }
        }
        // Pads of each padded (tensor, part): zeros except the front of its axis.
        let mut pads = Vec::new();
        for (k, &(_, rank, axis)) in kinds.iter().enumerate() {
            let Some(axis) = axis else { continue };
            let longest = parts.iter().map(|p| p[k].shape()[axis]).max().unwrap_or(0);
            for (p, part) in parts.iter().enumerate() {
                let mut amounts = vec![0i64; 2 * rank];
                amounts[axis] = longest - part[k].shape()[axis];
                let amounts = Tensor::from_array(([2 * rank], amounts))
                    .map_err(&error)?
                    .into_dyn();
                pads.push((format!("pads{k}_{p}"), amounts));
            }
        }
        let key = (kinds, parts.len());
        let index = match self.joins.iter().position(|(k, _)| *k == key) {
            Some(index) => index,
            None => {
                let session = self.build(join_graph(&key.0, parts.len())?)?;
                self.joins.push((key, session));
                self.joins.len() - 1
            }
        };
        let input_names: Vec<Vec<String>> = parts
            .iter()
            .enumerate()
            .map(|(p, part)| (0..part.len()).map(|k| format!("t{k}_{p}")).collect())
            .collect();
        let mut inputs: Vec<(&str, &DynValue)> = Vec::new();
        for (names, part) in input_names.iter().zip(parts) {
            for (name, value) in names.iter().zip(part) {
                inputs.push((name.as_str(), *value));
            }
        }
        for (name, value) in &pads {
            inputs.push((name.as_str(), value));
        }
        let output_names: Vec<String> = (0..axes.len()).map(|k| format!("j{k}")).collect();
        let outputs: Vec<(&str, Place)> = output_names
            .iter()
            .map(|name| (name.as_str(), Place::Device))
            .collect();
        let session = &mut self.joins[index].1;
        runtime::run_bound(session, self.options.device, &inputs, &outputs, STAGE)
    }

    /// Output k is `tensors[k]` without the first `count` positions of its axis `axes[k]`.
    pub fn trim_front(
        &mut self,
        tensors: &[&DynValue],
        axes: &[usize],
        count: usize,
    ) -> Result<Vec<DynValue>, ModelError> {
        let error = ModelError::inference(STAGE);
        let kinds = tensors
            .iter()
            .zip(axes)
            .map(|(value, &axis)| kind_of(value, Some(axis)))
            .collect::<Result<Kinds, _>>()?;
        let index = match self.trims.iter().position(|(k, _)| *k == kinds) {
            Some(index) => index,
            None => {
                let session = self.build(trim_graph(&kinds)?)?;
                self.trims.push((kinds, session));
                self.trims.len() - 1
            }
        };
        let scalar = |value: i64| -> Result<DynValue, ModelError> {
            Ok(Tensor::from_array(([1usize], vec![value]))
                .map_err(&error)?
                .into_dyn())
        };
        let (starts, ends) = (scalar(count as i64)?, scalar(i64::MAX)?);
        let axis_values = axes
            .iter()
            .map(|&axis| scalar(axis as i64))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<[String; 3]> = (0..tensors.len())
            .map(|k| [format!("t{k}"), format!("axes{k}"), format!("s{k}")])
            .collect();
        let mut inputs: Vec<(&str, &DynValue)> = vec![("starts", &starts), ("ends", &ends)];
        for ((names, value), axis) in names.iter().zip(tensors).zip(&axis_values) {
            inputs.push((names[0].as_str(), *value));
            inputs.push((names[1].as_str(), axis));
        }
        let outputs: Vec<(&str, Place)> = names
            .iter()
            .map(|names| (names[2].as_str(), Place::Device))
            .collect();
        let session = &mut self.trims[index].1;
        runtime::run_bound(session, self.options.device, &inputs, &outputs, STAGE)
    }

    fn build(&self, graph: Graph) -> Result<Session, ModelError> {
        let error = ModelError::inference(STAGE);
        let mut model =
            Model::new([Opset::new(ONNX_DOMAIN, 17).map_err(&error)?]).map_err(&error)?;
        model.set_graph(graph).map_err(&error)?;
        let builder =
            runtime::session_builder(self.env, &self.options, Path::new("<cache reorder graph>"))?;
        model.into_session(&builder).map_err(&error)
    }
}

fn inference(message: &str) -> ModelError {
    ModelError::Inference {
        stage: STAGE,
        message: message.to_string(),
    }
}

fn kind_of(
    value: &DynValue,
    axis: Option<usize>,
) -> Result<(TensorElementType, usize, Option<usize>), ModelError> {
    match value.dtype() {
        ValueType::Tensor { ty, shape, .. } => match axis {
            Some(axis) if axis == 0 || axis >= shape.len() => Err(inference(&format!(
                "cannot pad axis {axis} of a rank-{} tensor (axis 0 holds the rows)",
                shape.len()
            ))),
            _ => Ok((*ty, shape.len(), axis)),
        },
        other => Err(inference(&format!("not a tensor: {other:?}"))),
    }
}

/// A tensor port of any shape of `rank`.
fn outlet(name: String, ty: TensorElementType, rank: usize) -> Outlet {
    Outlet::new(
        name,
        ValueType::Tensor {
            ty,
            shape: Shape::new(vec![-1i64; rank]),
            dimension_symbols: SymbolicDimensions::empty(rank),
        },
    )
}

/// `g{k} = Gather(t{k}, indices, axis 0)` for every tensor k.
fn gather_graph(kinds: &Kinds) -> Result<Graph, ModelError> {
    let error = ModelError::inference(STAGE);
    let mut graph = Graph::new().map_err(&error)?;
    let mut inputs: Vec<Outlet> = kinds
        .iter()
        .enumerate()
        .map(|(k, &(ty, rank, _))| outlet(format!("t{k}"), ty, rank))
        .collect();
    inputs.push(outlet("indices".into(), TensorElementType::Int64, 1));
    graph.set_inputs(inputs).map_err(&error)?;
    graph
        .set_outputs(
            kinds
                .iter()
                .enumerate()
                .map(|(k, &(ty, rank, _))| outlet(format!("g{k}"), ty, rank)),
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
    Ok(graph)
}

/// `s{k} = Slice(t{k}, starts, ends, axes{k})` for every tensor k.
fn trim_graph(kinds: &Kinds) -> Result<Graph, ModelError> {
    let error = ModelError::inference(STAGE);
    let mut graph = Graph::new().map_err(&error)?;
    let mut inputs = vec![
        outlet("starts".into(), TensorElementType::Int64, 1),
        outlet("ends".into(), TensorElementType::Int64, 1),
    ];
    for (k, &(ty, rank, _)) in kinds.iter().enumerate() {
        inputs.push(outlet(format!("t{k}"), ty, rank));
        inputs.push(outlet(format!("axes{k}"), TensorElementType::Int64, 1));
    }
    graph.set_inputs(inputs).map_err(&error)?;
    graph
        .set_outputs(
            kinds
                .iter()
                .enumerate()
                .map(|(k, &(ty, rank, _))| outlet(format!("s{k}"), ty, rank)),
        )
        .map_err(&error)?;
    for k in 0..kinds.len() {
        let node = Node::new(
            "Slice",
            ONNX_DOMAIN,
            format!("slice_{k}"),
            [
                format!("t{k}"),
                "starts".to_string(),
                "ends".to_string(),
                format!("axes{k}"),
            ],
            [format!("s{k}")],
            Vec::<Attribute>::new(),
        )
        .map_err(&error)?;
        graph.add_node(node).map_err(&error)?;
    }
    Ok(graph)
}

/// `j{k} = Concat(Pad(t{k}_0, pads{k}_0), Pad(t{k}_1, pads{k}_1), …, axis 0)` for every tensor
/// k; tensors without a padded axis are concatenated as they are.
fn join_graph(kinds: &Kinds, parts: usize) -> Result<Graph, ModelError> {
    let error = ModelError::inference(STAGE);
    let mut graph = Graph::new().map_err(&error)?;
    let mut inputs = Vec::new();
    for p in 0..parts {
        for (k, &(ty, rank, _)) in kinds.iter().enumerate() {
            inputs.push(outlet(format!("t{k}_{p}"), ty, rank));
        }
    }
    for (k, &(_, _, axis)) in kinds.iter().enumerate() {
        if axis.is_some() {
            for p in 0..parts {
                inputs.push(outlet(format!("pads{k}_{p}"), TensorElementType::Int64, 1));
            }
        }
    }
    graph.set_inputs(inputs).map_err(&error)?;
    graph
        .set_outputs(
            kinds
                .iter()
                .enumerate()
                .map(|(k, &(ty, rank, _))| outlet(format!("j{k}"), ty, rank)),
        )
        .map_err(&error)?;
    for (k, &(_, _, axis)) in kinds.iter().enumerate() {
        let mut pieces = Vec::with_capacity(parts);
        for p in 0..parts {
            if axis.is_none() {
                pieces.push(format!("t{k}_{p}"));
                continue;
            }
            let padded = format!("padded{k}_{p}");
            // `mode` defaults to constant, the constant to zero.
            let node = Node::new(
                "Pad",
                ONNX_DOMAIN,
                format!("pad_{k}_{p}"),
                [format!("t{k}_{p}"), format!("pads{k}_{p}")],
                [padded.clone()],
                Vec::<Attribute>::new(),
            )
            .map_err(&error)?;
            graph.add_node(node).map_err(&error)?;
            pieces.push(padded);
        }
        let axis = Attribute::new("axis", 0i64).map_err(&error)?;
        let node = Node::new(
            "Concat",
            ONNX_DOMAIN,
            format!("concat_{k}"),
            pieces,
            [format!("j{k}")],
            [axis],
        )
        .map_err(&error)?;
        graph.add_node(node).map_err(&error)?;
    }
    Ok(graph)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rows::{RowOps, RowTensor};

    fn values(tensor: &RowTensor) -> (Vec<usize>, Vec<f32>) {
        let (_, data) = tensor.value().try_extract_tensor::<f32>().unwrap();
        (tensor.shape().to_vec(), data.to_vec())
    }

    /// A `[rows, 2, len, 3]` cache and a `[rows, 4, 2]` fixed state whose values tell apart
    /// every element.
    fn part(rows: usize, len: usize, base: f32) -> [RowTensor; 2] {
        let count = rows * 2 * len * 3;
        let kv = RowTensor::f32(
            vec![rows, 2, len, 3],
            (0..count).map(|i| base + i as f32).collect(),
        )
        .unwrap();
        let fixed = RowTensor::f32(
            vec![rows, 4, 2],
            (0..rows * 8).map(|i| -base - i as f32).collect(),
        )
        .unwrap();
        [kv, fixed]
    }

    #[test]
    fn device_joins_and_gathers_equal_the_host_ones() {
        let env = runtime::test_environment();
        let mut device = RowOps::Device(DeviceRows::new(env, &RuntimeOptions::default()));
        let mut host = RowOps::Host;
        // Pasts of 3, 5 and 0 positions; two rows in the first part.
        let parts = [part(2, 3, 100.0), part(1, 5, 200.0), part(1, 0, 300.0)];
        let columns: Vec<Vec<&RowTensor>> = parts.iter().map(|p| p.iter().collect()).collect();
        let axes = [Some(2), None];
        let on_device = device.join(&columns, &axes).unwrap();
        let on_host = host.join(&columns, &axes).unwrap();
        assert_eq!(on_device.len(), 2);
        for (d, h) in on_device.iter().zip(&on_host) {
            assert_eq!(values(d), values(h));
        }
        let (shape, kv) = values(&on_device[0]);
        assert_eq!(shape, [4, 2, 5, 3]);
        // Row 0, head 0: two zero positions, then the part's three positions.
        assert_eq!(&kv[..6], &[0.0; 6]);
        assert_eq!(&kv[6..9], &[100.0, 101.0, 102.0]);
        // Row 2 (the longest part) is not padded; row 3 (empty) is all zeros.
        assert_eq!(kv[2 * 30], 200.0);
        assert!(kv[3 * 30..].iter().all(|&v| v == 0.0));
        assert_eq!(values(&on_device[1]).0, [4, 4, 2]);

        // Rows leave (1), one repeats (3), the order changes.
        let keep = [3, 0, 2, 3];
        let (mut d, mut h) = (on_device, on_host);
        device.gather(d.iter_mut().collect(), &keep).unwrap();
        host.gather(h.iter_mut().collect(), &keep).unwrap();
        for (d, h) in d.iter().zip(&h) {
            assert_eq!(values(d), values(h));
        }
        assert_eq!(values(&d[0]).0, [4, 2, 5, 3]);
        assert_eq!(values(&d[1]).1[..8], values(&parts[2][1]).1[..]);

        // The first part's two rows (pasts 3 of 5): the two positions of padding both have go.
        let keep = [0, 1];
        let mut d = device.join(&columns, &axes).unwrap();
        let mut h = host.join(&columns, &axes).unwrap();
        device.gather(d.iter_mut().collect(), &keep).unwrap();
        host.gather(h.iter_mut().collect(), &keep).unwrap();
        let [dk, _] = &mut d[..] else { unreachable!() };
        device.trim_front(vec![(dk, 2)], 2).unwrap();
        let [hk, _] = &mut h[..] else { unreachable!() };
        host.trim_front(vec![(hk, 2)], 2).unwrap();
        assert_eq!(values(&d[0]), values(&h[0]));
        let (shape, kv) = values(&d[0]);
        assert_eq!(shape, [2, 2, 3, 3]);
        assert_eq!(&kv[..3], &[100.0, 101.0, 102.0]);
        assert_eq!(&kv[9..12], &[109.0, 110.0, 111.0]);
    }

    #[test]
    fn more_parts_than_one_session_takes_join_in_rounds() {
        let env = runtime::test_environment();
        let mut device = RowOps::Device(DeviceRows::new(env, &RuntimeOptions::default()));
        // Eleven rows whose pasts rise and fall, the longest in the second round.
        let parts: Vec<[RowTensor; 2]> = (0..11)
            .map(|i| part(1, (i * 7) % 13, 1000.0 * i as f32))
            .collect();
        let columns: Vec<Vec<&RowTensor>> = parts.iter().map(|p| p.iter().collect()).collect();
        let axes = [Some(2), None];
        let on_device = device.join(&columns, &axes).unwrap();
        let on_host = RowOps::Host.join(&columns, &axes).unwrap();
        assert_eq!(values(&on_device[0]).0, [11, 2, 11, 3]);
        for (d, h) in on_device.iter().zip(&on_host) {
            assert_eq!(values(d), values(h));
        }
    }

    #[test]
    fn joins_refuse_mismatched_parts() {
        let env = runtime::test_environment();
        let mut device = DeviceRows::new(env, &RuntimeOptions::default());
        let a = part(1, 2, 0.0);
        let b = part(1, 3, 0.0);
        let err = device
            .join(&[vec![a[0].value()], vec![b[1].value()]], &[Some(2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("joining"), "{err}");
        let err = device
            .join(&[vec![a[0].value()]], &[Some(0)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("axis 0"), "{err}");
    }
}
