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

/// Forward-mode derivatives along `logits_dot` (targets and weights held) of
/// [`weighted_mean_backward`] and of each example's [`cross_entropy`]: with s = softmax(z) and
/// m the target mass, d/dz CE = s m - t, and the softmax moves by s z' - s <s, z'>.
pub fn weighted_mean_backward_tangent(
    logits: &Tensor<2>,
    logits_dot: &Tensor<2>,
    targets: &Tensor<2>,
    weights: Option<&Tensor<1>>,
) -> (Tensor<2>, Tensor<1>) {
    let [batch, _] = logits.dims();
    let mass = targets.clone().sum_dim(1);
    let s = softmax(logits.clone(), 1);
    let per_example_dot = ((s.clone() * mass.clone() - targets.clone()) * logits_dot.clone())
        .sum_dim(1)
        .squeeze_dim(1);
    let moved = s.clone() * logits_dot.clone();
    let s_dot = moved.clone() - s * moved.sum_dim(1);
    let grad_dot = s_dot * mass;
    let scaled = match weights {
        Some(w) => grad_dot * w.clone().unsqueeze_dim(1),
        None => grad_dot,
    };
    (scaled.div_scalar(batch as f32), per_example_dot)
}

/// Forward-mode derivative along `logits_dot` of dL/d targets for [`weighted_mean`], where
/// dL/dt_ic = -(w_i / B) log softmax(z_i)_c: -(w_i / B) (z'_ic - <softmax(z_i), z'_i>). What
/// the adjoint of a soft target that depends on phi (label blending) needs.
pub fn weighted_mean_target_gradient_tangent(
    logits: &Tensor<2>,
    logits_dot: &Tensor<2>,
    weights: Option<&Tensor<1>>,
) -> Tensor<2> {
    let [batch, _] = logits.dims();
    let mean_dot = (softmax(logits.clone(), 1) * logits_dot.clone()).sum_dim(1);
    let moved = logits_dot.clone() - mean_dot;
    let scaled = match weights {
        Some(w) => moved * w.clone().unsqueeze_dim(1),
        None => moved,
    };
    scaled.div_scalar(-(batch as f32))
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

    #[test]
    fn tangents_match_autodiff() {
        let (targets, weights) = (softmax(random([5, 3]) * 4.0, 1), sigmoid(random([5])));
        let (logits, logits_dot) = (random([15]), random([15]));
        let z = |t: &Tensor<1>| t.clone().reshape([5, 3]);
        let (grad_dot, per_example_dot) =
            weighted_mean_backward_tangent(&z(&logits), &z(&logits_dot), &targets, Some(&weights));
        check_tangent(
            std::slice::from_ref(&logits),
            std::slice::from_ref(&logits_dot),
            |t| flat(weighted_mean_backward(&z(&t[0]), &targets, Some(&weights))),
            &flat(grad_dot),
            "gradient",
        );
        check_tangent(
            std::slice::from_ref(&logits),
            std::slice::from_ref(&logits_dot),
            |t| cross_entropy(&z(&t[0]), &targets),
            &per_example_dot,
            "per-example loss",
        );
        // dL/d targets by autodiff of the loss in the targets, then moved along the logits.
        let target_gradient = |logits: &Tensor<1>| {
            let leaf_targets = leaf(&flat(targets.clone()));
            let loss = weighted_mean(
                &z(logits),
                &leaf_targets.clone().reshape([5, 3]),
                Some(&weights),
            );
            let grads = loss.backward();
            leaf_targets.grad(&grads).expect("target gradient")
        };
        let expected = target_gradient(&(logits.clone() + logits_dot.clone() * 1e-2))
            - target_gradient(&(logits.clone() - logits_dot.clone() * 1e-2));
        let actual =
            weighted_mean_target_gradient_tangent(&z(&logits), &z(&logits_dot), Some(&weights));
        assert_close(
            &flat(actual),
            &expected.div_scalar(2e-2),
            1e-3,
            "target gradient",
        );
    }
}
