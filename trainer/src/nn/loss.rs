//! Softmax cross-entropy with per-example weights and soft targets:
//! L = (1/B) sum_i w_i * sum_c -t_ic log softmax(z_i)_c.
//!
//! Hard labels are one-hot targets; label blending uses t = lambda e_{y_i} + (1 - lambda) e_{y_j};
//! example weighting uses w_i = teacher output. Both w and t may carry autodiff tracking (they
//! depend on the commentary), and so may the logits (they depend on theta).

use burn::tensor::activation::{log_softmax, softmax};

use super::Tensor;

/// Per-example cross-entropy sum_c -t_ic log softmax(z_i)_c, shape [batch].
pub fn cross_entropy(logits: &Tensor<2>, targets: &Tensor<2>) -> Tensor<1> {
    (log_softmax(logits.clone(), 1) * targets.clone())
        .sum_dim(1)
        .squeeze_dim(1)
        .neg()
}

/// The weighted batch-mean loss; `weights` None means all ones.
pub fn weighted_mean(
    logits: &Tensor<2>,
    targets: &Tensor<2>,
    weights: Option<&Tensor<1>>,
) -> Tensor<1> {
    let per_example = cross_entropy(logits, targets);
    match weights {
        Some(w) => (per_example * w.clone()).mean(),
        None => per_example.mean(),
    }
}

/// d L / d logits for [`weighted_mean`]: (w_i / B) (softmax(z_i) sum_c t_ic - t_i).
pub fn weighted_mean_backward(
    logits: &Tensor<2>,
    targets: &Tensor<2>,
    weights: Option<&Tensor<1>>,
) -> Tensor<2> {
    let [batch, _] = logits.dims();
    let mass = targets.clone().sum_dim(1);
    let grad = softmax(logits.clone(), 1) * mass - targets.clone();
    let scaled = match weights {
        Some(w) => grad * w.clone().unsqueeze_dim(1),
        None => grad,
    };
    scaled.div_scalar(batch as f32)
}

/// Label ids of one-hot (or soft) target rows: the argmax of each row.
pub fn labels_of(targets: &Tensor<2>) -> Vec<i64> {
    targets
        .clone()
        .argmax(1)
        .squeeze_dim::<1>(1)
        .to_data()
        .iter::<i64>()
        .collect()
}

/// One-hot targets [batch, classes] for integer labels.
pub fn one_hot(labels: &Tensor<1, burn::tensor::Int>, classes: usize) -> Tensor<2> {
    labels.clone().one_hot(classes).float()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::testing::*;
    use burn::tensor::activation::sigmoid;

    #[test]
    fn backward_matches_autodiff_with_weights_and_soft_targets() {
        let logits = random([6, 4]);
        let targets = softmax(random([6, 4]), 1);
        let weights = sigmoid(random([6]));
        let (zl, tl, wl) = (leaf(&logits), leaf(&targets), leaf(&weights));
        let grads = weighted_mean(&zl, &tl, Some(&wl)).backward();
        let explicit = weighted_mean_backward(&logits, &targets, Some(&weights));
        assert_close(&explicit, &zl.grad(&grads).expect("z"), 1e-5, "dz");
    }

    #[test]
    fn the_gradient_is_itself_differentiable_in_the_weights() {
        // d/dw <dL/dz, v> computed by autodiff through the explicit backward, against the
        // closed form (1/B) <softmax(z) - t, v>_i per example.
        let logits = random([5, 3]);
        let targets = softmax(random([5, 3]) * 4.0, 1);
        let weights = random([5]);
        let v = random([5, 3]);
        let wl = leaf(&weights);
        let grads = (weighted_mean_backward(&logits, &targets, Some(&wl)) * v.clone())
            .sum()
            .backward();
        let expected = ((softmax(logits, 1) - targets) * v)
            .sum_dim(1)
            .squeeze_dim(1)
            .div_scalar(5.0);
        assert_close(&wl.grad(&grads).expect("w"), &expected, 1e-5, "dw");
    }
}
