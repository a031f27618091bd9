//! Writing the answer file (the problem file is read by `schema::problem`).

use std::path::Path;

use schema::artifact::{Tensor as FileTensor, TensorMap, encode_tensors};

use super::{ProblemError, Solution, invalid};

impl Solution {
    /// Writes `hypergrad` and `val_loss` as a safetensors file, with the method in its metadata.
    pub fn write(&self, path: &Path) -> Result<(), ProblemError> {
        let mut map = TensorMap::new();
        let tensor =
            |shape, values| FileTensor::f32(shape, values).map_err(|e| invalid(e.to_string()));
        map.insert(
            "hypergrad".into(),
            tensor(self.shape.clone(), self.hypergrad.clone())?,
        );
        map.insert("val_loss".into(), tensor(vec![1], vec![self.val_loss])?);
        let mut metadata = vec![("hypergradient".to_owned(), self.method.as_str().to_owned())];
        if let Some(step) = self.finite_difference_step {
            metadata.push(("finite_difference_step".to_owned(), step.to_string()));
        }
        let bytes = encode_tensors(&map, metadata).map_err(|e| invalid(e.to_string()))?;
        std::fs::write(path, bytes).map_err(|source| ProblemError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}
