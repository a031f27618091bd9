//! The problem's student MLP as a plain burn-nn module, for the finite-difference fallback.

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

/// The student MLP as a plain burn-nn module (no explicit backward passes), for the
/// finite-difference fallback that any burn model would take.
#[derive(Module, Debug)]
pub(super) struct NnMlp {
    layers: Vec<Linear>,
}

impl NnMlp {
    /// The MLP with `widths` (input first) and the problem's flat weights (per layer: weight
    /// [out, in], then bias), its parameters trainable on the autodiff `device`.
    pub(super) fn new(widths: &[usize], theta: &[f32], device: &Device) -> Self {
        let device = device.clone().autodiff();
        let mut offset = 0;
        let mut take = |n: usize| {
            let values = theta[offset..offset + n].to_vec();
            offset += n;
            values
        };
        let layers = widths
            .windows(2)
            .map(|pair| {
                let (fan_in, out) = (pair[0], pair[1]);
                // burn's Linear computes x W + b with W [in, out].
                let weight = Tensor::<2>::from_data(
                    TensorData::new(take(out * fan_in), [out, fan_in]),
                    &device,
                )
                .transpose()
                .detach()
                .require_grad();
                let bias = Tensor::<1>::from_data(TensorData::new(take(out), [out]), &device)
                    .require_grad();
                Linear {
                    weight: Param::from_tensor(weight),
                    bias: Some(Param::from_tensor(bias)),
                }
            })
            .collect();
        Self { layers }
    }

    /// # Shapes
    /// x [batch, in] -> logits [batch, classes]
    pub(super) fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len().saturating_sub(1);
        self.layers.iter().enumerate().fold(x, |x, (i, layer)| {
            let y = layer.forward(x);
            if i < last { relu(y) } else { y }
        })
    }
}
