//! Named tensors and their safetensors encoding (little-endian, row-major, readable by Python's
//! `safetensors` package).

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

/// Element values of a tensor; the dtypes artifacts use.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    F32(Vec<f32>),
    I64(Vec<i64>),
    U8(Vec<u8>),
}

impl TensorValues {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The dtype's name as safetensors writes it (`F32`, `I64`, `U8`).
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Self::F32(_) => "F32",
            Self::I64(_) => "I64",
            Self::U8(_) => "U8",
        }
    }

    fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Self::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::U8(v) => v.clone(),
        }
    }
}

/// A shaped tensor. Construct with [`Tensor::new`], which checks that the shape fits the values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    values: TensorValues,
}

/// Tensors by name, in name order.
pub type TensorMap = BTreeMap<String, Tensor>;

/// Why tensors could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} holds {expected} values but {actual} were given")]
    ShapeMismatch {
        shape: Vec<usize>,
        expected: usize,
        actual: usize,
    },
    #[error("tensor {name:?} has dtype {dtype}, which artifacts do not use (F32, I64, U8)")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("not a safetensors file: {0}")]
    Format(#[from] safetensors::SafeTensorError),
}

impl Tensor {
    pub fn new(shape: Vec<usize>, values: TensorValues) -> Result<Self, TensorError> {
        let expected = shape.iter().product::<usize>();
        if expected != values.len() {
            return Err(TensorError::ShapeMismatch {
                shape,
                expected,
                actual: values.len(),
            });
        }
        Ok(Self { shape, values })
    }

    /// An f32 tensor.
    pub fn f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Self, TensorError> {
        Self::new(shape, TensorValues::F32(values))
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &TensorValues {
        &self.values
    }

    /// The values if this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.values {
            TensorValues::F32(v) => Some(v),
            _ => None,
        }
    }
}

/// Encodes tensors (and string metadata) as a safetensors file.
pub fn encode_tensors(
    tensors: &TensorMap,
    metadata: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<u8>, TensorError> {
    let buffers: Vec<(&String, Dtype, &[usize], Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let dtype = match t.values {
                TensorValues::F32(_) => Dtype::F32,
                TensorValues::I64(_) => Dtype::I64,
                TensorValues::U8(_) => Dtype::U8,
            };
            (name, dtype, t.shape.as_slice(), t.values.to_le_bytes())
        })
        .collect();
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.to_vec(), bytes).map(|view| (name.as_str(), view))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let metadata: HashMap<String, String> = metadata.into_iter().collect();
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// The string metadata of a safetensors file (empty when it has none).
pub fn decode_metadata(bytes: &[u8]) -> Result<HashMap<String, String>, TensorError> {
    let (_, metadata) = SafeTensors::read_metadata(bytes)?;
    Ok(metadata.metadata().clone().unwrap_or_default())
}

/// Decodes a safetensors file into owned tensors.
pub fn decode_tensors(bytes: &[u8]) -> Result<TensorMap, TensorError> {
    let file = SafeTensors::deserialize(bytes)?;
    let mut out = TensorMap::new();
    for (name, view) in file.tensors() {
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => TensorValues::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            Dtype::I64 => TensorValues::I64(
                data.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            Dtype::U8 => TensorValues::U8(data.to_vec()),
            other => {
                return Err(TensorError::UnsupportedDtype {
                    name,
                    dtype: format!("{other:?}"),
                });
            }
        };
        let tensor = Tensor::new(view.shape().to_vec(), values)?;
        out.insert(name, tensor);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_through_safetensors() {
        let mut map = TensorMap::new();
        map.insert(
            "a".into(),
            Tensor::f32(vec![2, 2], vec![1.0, -2.5, 3.0, f32::MIN_POSITIVE]).expect("a"),
        );
        map.insert(
            "b".into(),
            Tensor::new(vec![3], TensorValues::I64(vec![-1, 0, i64::MAX])).expect("b"),
        );
        map.insert(
            "c".into(),
            Tensor::new(vec![1, 2], TensorValues::U8(vec![0, 255])).expect("c"),
        );
        let bytes = encode_tensors(&map, [("k".into(), "v".into())]).expect("encode");
        assert_eq!(decode_tensors(&bytes).expect("decode"), map);
    }

    #[test]
    fn a_shape_that_does_not_fit_the_values_is_refused() {
        let err = Tensor::f32(vec![2, 3], vec![0.0; 5]).expect_err("mismatch");
        assert!(err.to_string().contains("holds 6 values but 5"), "{err}");
    }

    #[test]
    fn garbage_is_not_a_safetensors_file() {
        assert!(decode_tensors(b"definitely not tensors").is_err());
    }
}
