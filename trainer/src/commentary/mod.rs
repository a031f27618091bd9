//! The commentary kinds as inner problems for the hypergradient engine.
//!
//! - [`weighting`]: example weighting with a teacher network t(x, i/S) -> (0, 1) or a table;
//! - [`blending`]: label blending with a C x C matrix, learned by IFT;
//! - [`masks`]: attention masks from a mask network, learned by IFT or (truncated) BPTT;
//! - `insights`: the insight tensors stored with each kind's artifact.
//!
//! Each kind's file also holds its learner (`learn`), built on the loops in `crate::learn`.

pub mod blending;
pub(crate) mod insights;
pub mod masks;
pub mod weighting;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

/// The batch of inner step `step`: `batch_size` indices drawn from `pool` by a stream seeded
/// with (`seed`, `step`), so a step's batch is the same whenever it is recomputed (BPTT's
/// reverse pass, IFT's hyper-steps, a resumed run). Returns the stream for further draws.
pub(crate) fn step_batch(
    pool: &[i64],
    batch_size: usize,
    seed: u64,
    step: usize,
) -> (Vec<i64>, StdRng) {
    let mut rng = StdRng::seed_from_u64(seed ^ (step as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let chosen = (0..batch_size)
        .map(|_| pool[rng.random_range(0..pool.len())])
        .collect();
    (chosen, rng)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Int, Tensor, TensorData};
    use rand::SeedableRng as _;
    use rand::rngs::StdRng;
    use schema::ImageShape;
    use schema::arch::{MaskRange, NetSpec};

    use super::masks::{AttentionMasking, mask_network};
    use super::weighting::{LabelledImages, TeacherWeighting, WeightSource, teacher_network};
    use crate::hypergrad::optim::InnerOptimizer;
    use crate::hypergrad::{InnerProblem, bptt};
    use crate::models::Network;
    use crate::nn::loss;
    use crate::nn::testing::{device, random, values};

    const SHAPE: ImageShape = ImageShape {
        height: 4,
        width: 4,
        channels: 1,
    };
    const CLASSES: usize = 3;
    const STEPS: usize = 7;

    fn images(n: usize) -> LabelledImages {
        let labels: Vec<i64> = (0..n).map(|i| (i % CLASSES) as i64).collect();
        LabelledImages {
            images: random([n, 1, 4, 4]),
            onehot: loss::one_hot(
                &Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), &device()),
                CLASSES,
            ),
        }
    }

    /// The same problem with phi passed whole to every step (the trait's default route).
    struct PhiPerStep<'a>(&'a dyn InnerProblem);

    impl InnerProblem for PhiPerStep<'_> {
        fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
            self.0.inner_gradient(theta, phi, step)
        }

        fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
            self.0.validation_loss(theta)
        }
    }

    /// The same problem with its commentary rows computed two steps at a time.
    struct TwoStepBatches<'a>(&'a dyn InnerProblem);

    impl InnerProblem for TwoStepBatches<'_> {
        fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
            self.0.inner_gradient(theta, phi, step)
        }

        fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
            self.0.validation_loss(theta)
        }

        fn step_commentary(&self, phi: &Tensor<1>, steps: std::ops::Range<usize>) -> Tensor<2> {
            self.0.step_commentary(phi, steps)
        }

        fn inner_gradient_from(
            &self,
            theta: &Tensor<1>,
            row: &Tensor<1>,
            step: usize,
        ) -> Tensor<1> {
            self.0.inner_gradient_from(theta, row, step)
        }

        fn steps_per_commentary_batch(&self) -> usize {
            2
        }
    }

    /// BPTT through batched commentary rows (in one batch and in batches of two steps) gives the
    /// hypergradient of passing phi to every step.
    fn assert_routes_agree(problem: &dyn InnerProblem, student: &Network, commentary: &Network) {
        let mut rng = StdRng::seed_from_u64(3);
        let theta0 = student.init(&mut rng, &device());
        let phi = commentary.init(&mut rng, &device());
        let adam = InnerOptimizer::Adam {
            lr: 0.05,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        };
        let reference = bptt::hypergradient(&PhiPerStep(problem), &theta0, &phi, adam, STEPS);
        let expected = values(&reference.hypergrad);
        let norm = expected.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!(norm > 1e-6, "a zero hypergradient proves nothing");
        for route in [problem, &TwoStepBatches(problem) as &dyn InnerProblem] {
            let out = bptt::hypergradient(route, &theta0, &phi, adam, STEPS);
            // Batched kernels may round differently; a wrong route is off by far more.
            let loss_gap = (out.val_loss - reference.val_loss).abs();
            assert!(
                loss_gap <= 1e-5 * reference.val_loss.abs().max(1.0),
                "{loss_gap}"
            );
            let error = values(&out.hypergrad)
                .iter()
                .zip(&expected)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f32>()
                .sqrt()
                / norm;
            assert!(error < 1e-4, "relative error {error}");
        }
    }

    /// BPTT through batched teacher weights agrees with the per-step route, for a teacher
    /// with the label as an input (`label_head` false) or a per-class head (true).
    fn check_teacher_routes(label_input: bool, label_head: bool) {
        let net = NetSpec::Mlp { hidden: vec![6] };
        let teacher = teacher_network(&net, SHAPE, CLASSES, label_input, label_head);
        let student = Network::new(&NetSpec::Mlp { hidden: vec![5] }, "student.", SHAPE, 0, 3);
        let batches = (0..STEPS as i64)
            .map(|k| {
                let rows = vec![(2 * k) % 12, (2 * k + 1) % 12, (5 * k + 3) % 12];
                Tensor::<1, Int>::from_data(TensorData::new(rows, [3]), &device())
            })
            .collect();
        let problem = TeacherWeighting {
            student: student.clone(),
            source: WeightSource::Teacher {
                net: teacher.clone(),
                label_input,
                label_head,
                horizon: STEPS,
            },
            train: images(12),
            validation: images(6),
            batches,
            first_step: 0,
        };
        assert_routes_agree(&problem, &student, &teacher);
    }

    #[test]
    fn batched_teacher_weights_give_the_per_step_hypergradient() {
        check_teacher_routes(true, false);
    }

    #[test]
    fn a_per_class_teacher_head_gives_the_per_step_hypergradient() {
        check_teacher_routes(false, true);
    }

    #[test]
    fn neutral_centred_masks_are_exactly_one() {
        use super::masks::{masks, neutral_init};
        let mask_net = mask_network(&NetSpec::Mlp { hidden: vec![6] }, SHAPE);
        let phi = neutral_init(
            &mask_net,
            mask_net.init(&mut StdRng::seed_from_u64(1), &device()),
        );
        let m =
            values(&masks(&mask_net, &phi, &images(5).images, MaskRange::Half).reshape([5 * 16]));
        assert!(m.iter().all(|&v| (v - 1.0).abs() < 1e-6), "{m:?}");
        // Only the last layer is zeroed: the rest still carries the random initialisation.
        assert!(values(&phi).iter().take(6 * 16).any(|&v| v != 0.0));
    }

    #[test]
    fn batched_masks_give_the_per_step_hypergradient() {
        let mask_net = mask_network(&NetSpec::Mlp { hidden: vec![6] }, SHAPE);
        let student = Network::new(&NetSpec::Mlp { hidden: vec![5] }, "student.", SHAPE, 0, 3);
        let problem = AttentionMasking {
            student: student.clone(),
            mask_net: mask_net.clone(),
            train: images(12),
            validation: images(6),
            pool: (0..12).collect(),
            batch_size: 4,
            seed: 9,
            range: MaskRange::Half,
        };
        assert_routes_agree(&problem, &student, &mask_net);
    }

    /// Label blending's hand-written products (the student's tangent passes) are those of
    /// autodiff through its inner gradient, for an MLP and for a CBR student with batch norm,
    /// whose input gradient couples the examples.
    #[test]
    fn blending_tangent_products_match_autodiff() {
        use super::blending::LabelBlending;
        use crate::nn::testing::relative_error;
        let shape = ImageShape {
            height: 8,
            width: 8,
            channels: 2,
        };
        for net in [NetSpec::Mlp { hidden: vec![6] }, NetSpec::Cbr] {
            let student = Network::new(&net, "student.", shape, 0, CLASSES);
            let labels: Vec<i64> = (0..10).map(|i| (i % CLASSES) as i64).collect();
            let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [10]), &device());
            let train = LabelledImages {
                images: random([10, 2, 8, 8]),
                onehot: loss::one_hot(&labels, CLASSES),
            };
            let problem = LabelBlending {
                student: student.clone(),
                validation: train.clone(),
                train,
                pool: (0..10).collect(),
                batch_size: 6,
                seed: 4,
            };
            let mut rng = StdRng::seed_from_u64(5);
            let theta = student.init(&mut rng, &device());
            let phi = random([CLASSES * CLASSES]);
            let (v, p) = (random([student.len()]), random([student.len()]));
            let ours = problem.linearise(&theta, &phi, 3);
            let reference = PhiPerStep(&problem);
            let autodiff = reference.linearise(&theta, &phi, 3);
            let hvp_error = relative_error(
                &ours.hessian_vector_product(&v),
                &autodiff.hessian_vector_product(&v),
            );
            assert!(hvp_error < 1e-3, "{net:?} H v: relative error {hvp_error}");
            let expected = autodiff.mixed_product(&p);
            assert!(
                values(&expected).iter().any(|x| x.abs() > 1e-4),
                "{net:?}: zero"
            );
            let mixed_error = relative_error(&ours.mixed_product(&p), &expected);
            assert!(
                mixed_error < 1e-3,
                "{net:?} mixed: relative error {mixed_error}"
            );
        }
    }
}
