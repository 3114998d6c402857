//! A tensor whose first axis is the batch's rows, kept between decoder calls: a session output fed
//! back as is (no copy), or one we built. Rows can be gathered (kept, dropped, repeated), joined
//! (left-padded along one axis) and have that padding cut again: on the host, or where the
//! tensors are (`RowOps`).

use ort::value::{DynValue, Tensor};

use super::ModelError;
use super::device_rows::DeviceRows;
use super::runtime::{KvCache, RuntimeOptions};

/// A tensor kept between decoder calls: either a session output, fed back as is (no copy), or
/// one we built.
pub struct RowTensor {
    value: DynValue,
    shape: Vec<usize>,
}

impl RowTensor {
    pub fn from_output(value: DynValue, stage: &'static str) -> Result<Self, ModelError> {
        let shape = value
            .shape()
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| ModelError::Inference {
                stage,
                message: "negative output dimension".into(),
            })?;
        Ok(Self { value, shape })
    }

    pub fn f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self, ModelError> {
        let value = Tensor::from_array((shape.clone(), data))
            .map_err(ModelError::inference("decoder"))?
            .into_dyn();
        Ok(Self { value, shape })
    }

    pub fn i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self, ModelError> {
        let value = Tensor::from_array((shape.clone(), data))
            .map_err(ModelError::inference("decoder"))?
            .into_dyn();
        Ok(Self { value, shape })
    }

    pub fn value(&self) -> &DynValue {
        &self.value
    }

    pub fn rows(&self) -> usize {
        self.shape[0]
    }

    /// A new tensor whose row i is this tensor's row `parents[i]` (rows are contiguous chunks).
    pub fn gather(&self, parents: &[usize]) -> Result<Self, ModelError> {
        let mut shape = self.shape.clone();
        shape[0] = parents.len();
        let row_len: usize = self.shape[1..].iter().product();
        macro_rules! gather_as {
            ($ty:ty, $ctor:ident) => {{
                let (_, data) = self
                    .value
                    .try_extract_tensor::<$ty>()
                    .map_err(ModelError::inference("decoder"))?;
                let mut out = Vec::with_capacity(parents.len() * row_len);
                for &p in parents {
                    out.extend_from_slice(&data[p * row_len..(p + 1) * row_len]);
                }
                Self::$ctor(shape, out)
            }};
        }
        match self.value.dtype() {
            ort::value::ValueType::Tensor {
                ty: ort::value::TensorElementType::Int64,
                ..
            } => gather_as!(i64, i64),
            _ => gather_as!(f32, f32),
        }
    }
}

impl RowTensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The rows of `parts` one after another; with an `axis`, each part left-padded with zeros
    /// along it to the longest (a KV cache's past length: the padding is masked out), without,
    /// the parts must agree on every axis but the rows.
    pub fn join(parts: &[&RowTensor], axis: Option<usize>) -> Result<Self, ModelError> {
        let first = parts.first().ok_or_else(|| ModelError::Inference {
            stage: "decoder",
            message: "joining no rows".into(),
        })?;
        if axis.is_some_and(|axis| axis == 0 || axis >= first.shape.len()) {
            return Err(ModelError::Inference {
                stage: "decoder",
                message: format!("cannot pad axis {axis:?} of shape {:?}", first.shape),
            });
        }
        // Unpadded: the last axis, of equal length in every part, stands in (no padding added).
        let fixed = axis.is_none();
        let axis = axis.unwrap_or(first.shape.len() - 1);
        if fixed && parts.iter().any(|p| p.shape[1..] != first.shape[1..]) {
            return Err(ModelError::Inference {
                stage: "decoder",
                message: format!(
                    "joining rows of shapes {:?}",
                    parts.iter().map(|p| &p.shape).collect::<Vec<_>>()
                ),
            });
        }
        let longest = parts.iter().map(|p| p.shape[axis]).max().unwrap_or(0);
        let mut shape = first.shape.clone();
        shape[0] = parts.iter().map(|p| p.shape[0]).sum();
        shape[axis] = longest;
        // Per row: `outer` blocks of (`padding` zeros, then `inner · len` values) along `axis`.
        let outer: usize = shape[1..axis].iter().product();
        let inner: usize = shape[axis + 1..].iter().product();
        let mut data = Vec::with_capacity(shape.iter().product());
        for part in parts {
            if part.shape[1..axis] != shape[1..axis] || part.shape[axis + 1..] != shape[axis + 1..]
            {
                return Err(ModelError::Inference {
                    stage: "decoder",
                    message: format!("joining rows of shapes {:?} and {:?}", part.shape, shape),
                });
            }
            let len = part.shape[axis];
            let (_, values) = part
                .value
                .try_extract_tensor::<f32>()
                .map_err(ModelError::inference("decoder"))?;
            let block = len * inner;
            for index in 0..part.shape[0] * outer {
                data.extend(std::iter::repeat_n(0f32, (longest - len) * inner));
                data.extend_from_slice(&values[index * block..(index + 1) * block]);
            }
        }
        Self::f32(shape, data)
    }
}

impl RowTensor {
    /// This tensor without the first `count` positions of `axis` (padding every row has).
    pub fn trim_front(&self, axis: usize, count: usize) -> Result<Self, ModelError> {
        if axis == 0 || axis >= self.shape.len() || count > self.shape[axis] {
            return Err(ModelError::Inference {
                stage: "decoder",
                message: format!("cannot cut {count} from axis {axis} of {:?}", self.shape),
            });
        }
        let mut shape = self.shape.clone();
        shape[axis] -= count;
        let outer: usize = self.shape[..axis].iter().product();
        let block: usize = self.shape[axis..].iter().product();
        let skip: usize = count * self.shape[axis + 1..].iter().product::<usize>();
        let (_, values) = self
            .value
            .try_extract_tensor::<f32>()
            .map_err(ModelError::inference("decoder"))?;
        let mut data = Vec::with_capacity(shape.iter().product());
        for index in 0..outer {
            data.extend_from_slice(&values[index * block + skip..(index + 1) * block]);
        }
        Self::f32(shape, data)
    }
}

/// Where a model instance gathers and joins its per-row tensors: on the host (the tensors are
/// in host memory, `KvCache::Host`) or by sessions on the model's device (`KvCache::Device`).
pub enum RowOps {
    Host,
    Device(DeviceRows),
}

impl RowOps {
    pub fn new(
        kv_cache: KvCache,
        env: &'static ort::environment::Environment,
        options: &RuntimeOptions,
    ) -> Self {
        match kv_cache {
            KvCache::Device => RowOps::Device(DeviceRows::new(env, options)),
            KvCache::Host => RowOps::Host,
        }
    }

    pub fn kv_cache(&self) -> KvCache {
        match self {
            RowOps::Device(_) => KvCache::Device,
            RowOps::Host => KvCache::Host,
        }
    }

    /// Row i of every tensor becomes its row `parents[i]`.
    pub fn gather(
        &mut self,
        tensors: Vec<&mut RowTensor>,
        parents: &[usize],
    ) -> Result<(), ModelError> {
        match self {
            RowOps::Device(device) => {
                let values: Vec<&DynValue> = tensors.iter().map(|t| t.value()).collect();
                let gathered = device.gather(&values, parents)?;
                for (tensor, value) in tensors.into_iter().zip(gathered) {
                    *tensor = RowTensor::from_output(value, "decoder")?;
                }
            }
            RowOps::Host => {
                for tensor in tensors {
                    *tensor = tensor.gather(parents)?;
                }
            }
        }
        Ok(())
    }

    /// Cuts the first `count` positions of each tensor's axis (`tensors[k].1`).
    pub fn trim_front(
        &mut self,
        tensors: Vec<(&mut RowTensor, usize)>,
        count: usize,
    ) -> Result<(), ModelError> {
        match self {
            RowOps::Device(device) => {
                let values: Vec<&DynValue> = tensors.iter().map(|(t, _)| t.value()).collect();
                let axes: Vec<usize> = tensors.iter().map(|(_, axis)| *axis).collect();
                let trimmed = device.trim_front(&values, &axes, count)?;
                for ((tensor, _), value) in tensors.into_iter().zip(trimmed) {
                    *tensor = RowTensor::from_output(value, "decoder")?;
                }
            }
            RowOps::Host => {
                for (tensor, axis) in tensors {
                    *tensor = tensor.trim_front(axis, count)?;
                }
            }
        }
        Ok(())
    }

    /// Tensor k of the result: the rows of `parts[0][k]`, `parts[1][k]`, … as
    /// [`RowTensor::join`] along `axes[k]`.
    pub fn join(
        &mut self,
        parts: &[Vec<&RowTensor>],
        axes: &[Option<usize>],
    ) -> Result<Vec<RowTensor>, ModelError> {
        match self {
            RowOps::Device(device) => {
                let values: Vec<Vec<&DynValue>> = parts
                    .iter()
                    .map(|part| part.iter().map(|t| t.value()).collect())
                    .collect();
                device
                    .join(&values, axes)?
                    .into_iter()
                    .map(|value| RowTensor::from_output(value, "decoder"))
                    .collect()
            }
            RowOps::Host => axes
                .iter()
                .enumerate()
                .map(|(k, axis)| {
                    let column: Vec<&RowTensor> = parts.iter().map(|part| part[k]).collect();
                    RowTensor::join(&column, *axis)
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(tensor: &RowTensor) -> Vec<f32> {
        tensor
            .value()
            .try_extract_tensor::<f32>()
            .unwrap()
            .1
            .to_vec()
    }

    #[test]
    fn rows_join_left_padded_and_gather() {
        crate::model::runtime::test_environment();
        // Two KV caches [rows, heads=1, past, dim=2] of past 1 and 2.
        let a = RowTensor::f32(vec![1, 1, 1, 2], vec![1.0, 2.0]).unwrap();
        let b = RowTensor::f32(vec![1, 1, 2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap();
        let empty = RowTensor::f32(vec![1, 1, 0, 2], vec![]).unwrap();
        let joined = RowTensor::join(&[&a, &b, &empty], Some(2)).unwrap();
        assert_eq!(joined.shape(), &[3, 1, 2, 2]);
        assert_eq!(
            values(&joined),
            vec![0.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0, 0.0]
        );
        let kept = joined.gather(&[1, 1]).unwrap();
        assert_eq!(values(&kept), vec![3.0, 4.0, 5.0, 6.0, 3.0, 4.0, 5.0, 6.0]);
    }
}
