//! Label blending: a C x C logit matrix M; for an example i blended with its in-batch partner j,
//! lambda = 1 - 0.5 sigmoid(M[y_i, y_j]), x~ = lambda x_i + (1 - lambda) x_j, and the loss is
//! lambda CE(y_i) + (1 - lambda) CE(y_j) (a soft target). Learned by IFT while the student
//! trains (the paper's code: one Neumann term, a hyper-step after each student step).

use burn::tensor::activation::sigmoid;
use burn::tensor::{Int, Tensor, TensorData};
use rand::seq::SliceRandom as _;

use schema::artifact::{Tensor as FileTensor, TensorMap};

use crate::data::tensors::LabelledImages;
use crate::hypergrad::{InnerLinearisation, InnerProblem, dot, gradient_or_zeros, leaf, plain};
use crate::learn::checkpoint::{to_vec, vector};
use crate::learn::loops::{Run, learn_online_ift, step_rng};
use crate::learn::{LearnError, Learned, Progress, insight_error};
use crate::models::{Input, Linearisation, Network};
use crate::nn::loss;

/// Blend proportions lambda [classes, classes] for the logits `phi` (flat C x C).
pub fn blend_proportions(phi: &Tensor<1>, classes: usize) -> Tensor<2> {
    sigmoid(phi.clone())
        .mul_scalar(-0.5)
        .add_scalar(1.0)
        .reshape([classes, classes])
}

/// Blends `batch` with the partners `pairs` (an in-batch permutation) under `phi`: returns the
/// blended images and soft targets.
pub fn blend(
    phi: &Tensor<1>,
    batch: &LabelledImages,
    pairs: &Tensor<1, Int>,
) -> (Tensor<4>, Tensor<2>) {
    blend_with(batch, pairs, blend_lambda(phi, batch, pairs))
}

/// Each example's share lambda_i [b] of its own image and label when blended with its partner
/// in `pairs` under `phi`.
pub fn blend_lambda(phi: &Tensor<1>, batch: &LabelledImages, pairs: &Tensor<1, Int>) -> Tensor<1> {
    let classes = batch.classes();
    let labels = batch.onehot.clone().argmax(1).squeeze_dim::<1>(1);
    let partner_labels = batch
        .onehot
        .clone()
        .select(0, pairs.clone())
        .argmax(1)
        .squeeze_dim::<1>(1);
    let index = labels.mul_scalar(classes as i64) + partner_labels;
    sigmoid(phi.clone().select(0, index))
        .mul_scalar(-0.5)
        .add_scalar(1.0)
}

/// Blends `batch` with its partners `pairs` in the proportions `lambda` [b] (the share of each
/// example's own image and label).
pub fn blend_with(
    batch: &LabelledImages,
    pairs: &Tensor<1, Int>,
    lambda: Tensor<1>,
) -> (Tensor<4>, Tensor<2>) {
    let partner = batch.select(pairs);
    let other = lambda.clone().neg().add_scalar(1.0);
    let b = lambda.dims()[0];
    let images = batch.images.clone() * lambda.clone().reshape([b, 1, 1, 1])
        + partner.images.clone() * other.clone().reshape([b, 1, 1, 1]);
    let targets =
        batch.onehot.clone() * lambda.unsqueeze_dim(1) + partner.onehot * other.unsqueeze_dim(1);
    (images, targets)
}

/// Label blending's inner gradient at one (theta, phi, batch), by the student's tangent passes
/// over one shared forward pass. The mixed product needs no autodiff graph of the student
/// either: with x~_i = lambda_i x_i + (1 - lambda_i) x_j and t~_i likewise,
/// d<g, p>/d lambda_i = <(dL/dx~_i)', x_i - x_j> + <(dL/dt~_i)', t_i - t_j>, ' the derivative
/// along p (mixed partials commute), and only the small map phi -> lambda is differentiated by
/// autodiff.
pub struct BlendLinearisation<'a> {
    at: Linearisation<'a>,
    phi: Tensor<1>,
    batch: LabelledImages,
    pairs: Tensor<1, Int>,
    /// x_i - x_j, flattened: [b, features].
    image_gap: Tensor<2>,
    /// t_i - t_j: [b, classes].
    target_gap: Tensor<2>,
}

impl<'a> BlendLinearisation<'a> {
    /// The linearisation at `theta` of `student` trained on `batch` blended with `pairs` under
    /// `phi`; `as_input` gives the blended images the form the student takes.
    pub fn new(
        student: &'a Network,
        theta: &Tensor<1>,
        phi: &Tensor<1>,
        batch: LabelledImages,
        pairs: Tensor<1, Int>,
        as_input: impl FnOnce(Tensor<4>) -> Input,
    ) -> Self {
        let phi = plain(phi);
        let (images, targets) = blend(&phi, &batch, &pairs);
        let at = student.linearise(&plain(theta), as_input(images), None, &targets, None);
        let partner = batch.select(&pairs);
        let image_gap = (batch.images.clone() - partner.images).flatten(1, 3);
        let target_gap = batch.onehot.clone() - partner.onehot;
        Self {
            at,
            phi,
            batch,
            pairs,
            image_gap,
            target_gap,
        }
    }
}

impl InnerLinearisation for BlendLinearisation<'_> {
    fn hessian_vector_product(&self, v: &Tensor<1>) -> Tensor<1> {
        self.at.tangent(v, false).gradient_dot
    }

    fn mixed_product(&self, p: &Tensor<1>) -> Tensor<1> {
        let tangent = self.at.tangent(p, true);
        let input_gradient_dot = tangent
            .input_gradient_dot
            .expect("the tangent pass was asked for the input gradient");
        let target_gradient_dot = loss::weighted_mean_target_gradient_tangent(
            self.at.logits(),
            &tangent.logits_dot,
            None,
        );
        let lambda_adjoint = ((input_gradient_dot * self.image_gap.clone()).sum_dim(1)
            + (target_gradient_dot * self.target_gap.clone()).sum_dim(1))
        .squeeze_dim(1);
        let phi = leaf(&self.phi);
        let lambda = blend_lambda(&phi, &self.batch, &self.pairs);
        gradient_or_zeros(&phi, dot(lambda, lambda_adjoint))
    }
}

/// Training a student with learned label blending, as an inner problem for IFT.
pub struct LabelBlending {
    pub student: Network,
    pub train: LabelledImages,
    pub validation: LabelledImages,
    /// Indices of the examples the student trains on (canonical order).
    pub pool: Vec<i64>,
    pub batch_size: usize,
    /// Seeds the batch and partner choice of each step.
    pub seed: u64,
}

impl LabelBlending {
    /// The batch and in-batch partner permutation of inner step `step` (deterministic).
    pub fn batch(&self, step: usize) -> (LabelledImages, Tensor<1, Int>) {
        let device = self.train.images.device();
        let (chosen, mut rng) = super::step_batch(&self.pool, self.batch_size, self.seed, step);
        let mut pairs: Vec<i64> = (0..self.batch_size as i64).collect();
        pairs.shuffle(&mut rng);
        let indices =
            Tensor::<1, Int>::from_data(TensorData::new(chosen, [self.batch_size]), &device);
        let pairs = Tensor::<1, Int>::from_data(TensorData::new(pairs, [self.batch_size]), &device);
        (self.train.select(&indices), pairs)
    }
}

impl InnerProblem for LabelBlending {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        let (batch, pairs) = self.batch(step);
        let (images, targets) = blend(phi, &batch, &pairs);
        self.student
            .loss_gradient(theta, Input::Image(images), &targets, None)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.validation.mean_loss(&self.student, theta)
    }

    fn validation_loss_gradient(&self, theta: &Tensor<1>) -> (Tensor<1>, f32) {
        self.validation.mean_loss_gradient(&self.student, theta)
    }

    fn linearise<'a>(
        &'a self,
        theta: &Tensor<1>,
        phi: &Tensor<1>,
        step: usize,
    ) -> Box<dyn InnerLinearisation + 'a> {
        let (batch, pairs) = self.batch(step);
        Box::new(BlendLinearisation::new(
            &self.student,
            theta,
            phi,
            batch,
            pairs,
            Input::Image,
        ))
    }
}

/// Label blending by online IFT, starting from M = 0 (lambda = 0.75 for every pair).
pub(crate) fn learn(
    run: &Run<'_>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Learned, LearnError> {
    let (config, data, device) = (run.config(), run.data, &run.device);
    let classes = data.summary.classes.len();
    let student = run.student();
    let mut rng = step_rng(config.seed, usize::MAX - 2);
    let problem = LabelBlending {
        student: student.clone(),
        train: data.train.clone(),
        validation: run.validation(&mut rng),
        pool: data.pool.clone(),
        batch_size: config.batch_size as usize,
        seed: config.seed,
    };
    let phi_len = classes * classes;
    let result = learn_online_ift(
        run,
        &problem,
        &student,
        Tensor::zeros([phi_len], device),
        &mut rng,
        on_progress,
    )?;
    let mut tensors = TensorMap::new();
    tensors.insert(
        "commentary.logits".into(),
        FileTensor::f32(vec![classes, classes], result.best_phi.clone()).map_err(insight_error)?,
    );
    let proportions =
        to_vec(&blend_proportions(&vector(&result.best_phi, device), classes).reshape([phi_len]));
    tensors.insert(
        "insight.blend".into(),
        FileTensor::f32(vec![classes, classes], proportions).map_err(insight_error)?,
    );
    Ok(Learned {
        tensors,
        val_losses: result.val_losses,
        best_val_loss: result.best_val_loss,
    })
}
