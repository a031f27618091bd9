//! The learning checkpoint: what a run needs to continue after an interruption (the next
//! meta-step, the best L_V so far, phi, optimiser moments, ...), one safetensors file in the
//! artifact directory, tied to the request by a fingerprint.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use schema::artifact::{Tensor as FileTensor, TensorMap, decode_tensors, encode_tensors};

use super::LearnError;
use crate::hypergrad::optim::OptState;

/// Checkpoint file inside the output directory.
pub(crate) const CHECKPOINT: &str = ".learn-checkpoint.safetensors";

/// Everything a run needs to continue: the next meta-step, the best L_V so far, and named
/// vectors (phi, best phi, optimiser moments, ...).
#[derive(Default)]
pub(crate) struct Checkpoint {
    pub next_step: usize,
    pub best_val_loss: f32,
    pub vectors: BTreeMap<String, Vec<f32>>,
}

impl Checkpoint {
    pub fn save(&self, dir: &Path, fingerprint: &str) -> Result<(), LearnError> {
        let mut map = TensorMap::new();
        for (name, values) in &self.vectors {
            let tensor = FileTensor::f32(vec![values.len()], values.clone())
                .map_err(|e| LearnError::Invalid(e.to_string()))?;
            map.insert(name.clone(), tensor);
        }
        let metadata = [
            ("next_step".to_owned(), self.next_step.to_string()),
            ("best_val_loss".to_owned(), self.best_val_loss.to_string()),
            ("fingerprint".to_owned(), fingerprint.to_owned()),
        ];
        let bytes =
            encode_tensors(&map, metadata).map_err(|e| LearnError::Invalid(e.to_string()))?;
        schema::artifact::write_atomically(&dir.join(CHECKPOINT), &bytes)?;
        Ok(())
    }

    /// The checkpoint in `dir` if it belongs to the same request (same fingerprint).
    pub fn load(dir: &Path, fingerprint: &str) -> Option<Self> {
        let bytes = std::fs::read(dir.join(CHECKPOINT)).ok()?;
        let metadata = schema::artifact::decode_metadata(&bytes).ok()?;
        if metadata.get("fingerprint").map(String::as_str) != Some(fingerprint) {
            return None;
        }
        let vectors = decode_tensors(&bytes)
            .ok()?
            .into_iter()
            .filter_map(|(name, t)| t.as_f32().map(|v| (name, v.to_vec())))
            .collect();
        Some(Self {
            next_step: metadata.get("next_step")?.parse().ok()?,
            best_val_loss: metadata.get("best_val_loss")?.parse().ok()?,
            vectors,
        })
    }

    pub fn tensor(&self, name: &str, len: usize, device: &Device) -> Option<Tensor<1>> {
        self.vectors
            .get(name)
            .filter(|v| v.len() == len)
            .map(|v| vector(v, device))
    }

    /// A stored vector, empty when absent.
    pub fn vector(&self, name: &str) -> Vec<f32> {
        self.vectors.get(name).cloned().unwrap_or_default()
    }

    /// Records the L_V of meta-step `step`, measured with `phi`, keeping the best phi so far.
    pub fn record(
        &mut self,
        step: usize,
        val_loss: f32,
        phi: &Tensor<1>,
    ) -> Result<(), LearnError> {
        if !val_loss.is_finite() {
            return Err(LearnError::Invalid(format!(
                "the validation loss became {val_loss} at meta-step {step}: lower inner_lr or outer_lr"
            )));
        }
        if val_loss < self.best_val_loss {
            self.best_val_loss = val_loss;
            self.put("best_phi", phi);
        }
        self.vectors
            .entry("val_losses".to_owned())
            .or_default()
            .push(val_loss);
        self.next_step = step + 1;
        Ok(())
    }

    pub fn put(&mut self, name: &str, t: &Tensor<1>) {
        self.vectors.insert(name.to_owned(), to_vec(t));
    }

    /// An optimiser state stored under `prefix`.
    pub fn state(&self, prefix: &str, len: usize, device: &Device) -> OptState {
        OptState {
            step: self.next_step,
            first: self.tensor(&format!("{prefix}.first"), len, device),
            second: self.tensor(&format!("{prefix}.second"), len, device),
        }
    }

    pub fn put_state(&mut self, prefix: &str, state: &OptState) {
        if let Some(t) = &state.first {
            self.put(&format!("{prefix}.first"), t);
        }
        if let Some(t) = &state.second {
            self.put(&format!("{prefix}.second"), t);
        }
    }
}

pub fn vector(values: &[f32], device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

pub fn to_vec(t: &Tensor<1>) -> Vec<f32> {
    t.to_data().iter::<f32>().collect()
}
