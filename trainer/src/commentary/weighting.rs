//! Example weighting: a teacher network t(x, i/T; phi) -> (0, 1) (or a per-example table of
//! logits) weights each example of the
//! student's batch; inner loss = mean_i w_i CE_i. The teacher sees the image with the iteration
//! i/T (clamped to 1) as an extra channel, and optionally the label as a one-hot input to its
//! last layer. Only the student needs explicit backward passes: the teacher enters the inner
//! gradient through its output, which burn's first-order autodiff differentiates in phi.

use burn::tensor::activation::sigmoid;
use burn::tensor::{Int, Tensor};
use schema::ImageShape;
use schema::arch::NetSpec;

use crate::hypergrad::InnerProblem;
use crate::models::{Input, Network};
use crate::nn::loss;

/// Images and one-hot labels on a device.
#[derive(Clone)]
pub struct LabelledImages {
    /// [n, c, h, w], pixels scaled to [0, 1].
    pub images: Tensor<4>,
    /// [n, classes]
    pub onehot: Tensor<2>,
}

impl LabelledImages {
    pub fn len(&self) -> usize {
        self.images.dims()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shape(&self) -> ImageShape {
        let [_, c, h, w] = self.images.dims();
        ImageShape {
            height: h as u32,
            width: w as u32,
            channels: c as u32,
        }
    }

    pub fn classes(&self) -> usize {
        self.onehot.dims()[1]
    }

    /// Mean cross-entropy of `net` (parameters `theta`) on these examples: L_V.
    pub fn mean_loss(&self, net: &Network, theta: &Tensor<1>) -> Tensor<1> {
        let (logits, _) = net.forward(theta, Input::Image(self.images.clone()), None);
        loss::weighted_mean(&logits, &self.onehot, None)
    }

    /// Label ids (from the one-hot rows).
    pub fn labels(&self) -> Vec<i64> {
        loss::labels_of(&self.onehot)
    }

    /// The examples at `indices`.
    pub fn select(&self, indices: &Tensor<1, Int>) -> Self {
        Self {
            images: self.images.clone().select(0, indices.clone()),
            onehot: self.onehot.clone().select(0, indices.clone()),
        }
    }
}

/// The teacher network for images of `shape` with `classes` classes.
pub fn teacher_network(
    net: &NetSpec,
    shape: ImageShape,
    classes: usize,
    label_input: bool,
) -> Network {
    let with_time = ImageShape {
        channels: shape.channels + 1,
        ..shape
    };
    Network::new(
        net,
        "commentary.",
        with_time,
        if label_input { classes } else { 0 },
        1,
    )
}

/// Where per-example weights come from.
#[derive(Clone)]
pub enum WeightSource {
    /// A teacher t(x, i/T) over `horizon` steps (phi = the teacher's parameters).
    Teacher {
        net: Network,
        label_input: bool,
        horizon: usize,
    },
    /// One logit per train example in canonical order: w_i = sigmoid(phi_i).
    Table,
}

impl WeightSource {
    /// The length of phi for a train split of `train_examples`.
    pub fn phi_len(&self, train_examples: usize) -> usize {
        match self {
            Self::Teacher { net, .. } => net.len(),
            Self::Table => train_examples,
        }
    }

    /// Weights [batch] for `batch` (canonical train `indices`) at inner step `step`.
    pub fn weights(
        &self,
        phi: &Tensor<1>,
        batch: &LabelledImages,
        indices: &Tensor<1, Int>,
        step: usize,
    ) -> Tensor<1> {
        match self {
            Self::Teacher {
                net,
                label_input,
                horizon,
            } => teacher_weights(net, *label_input, *horizon, phi, batch, step),
            Self::Table => sigmoid(phi.clone().select(0, indices.clone())),
        }
    }
}

/// Training a student under per-example weights, as an inner problem for BPTT.
pub struct TeacherWeighting {
    pub student: Network,
    pub source: WeightSource,
    pub train: LabelledImages,
    pub validation: LabelledImages,
    /// The canonical indices of each inner step's batch.
    pub batches: Vec<Tensor<1, Int>>,
}

/// Teacher weights [batch] for `batch` at inner step `step` of a run of `horizon` steps (the
/// time input i/T is clamped to 1).
pub fn teacher_weights(
    teacher: &Network,
    label_input: bool,
    horizon: usize,
    phi: &Tensor<1>,
    batch: &LabelledImages,
    step: usize,
) -> Tensor<1> {
    let [b, _, h, w] = batch.images.dims();
    let time = (step as f32 / horizon.max(1) as f32).min(1.0);
    let time_channel = Tensor::<4>::full([b, 1, h, w], time, &batch.images.device());
    let input = Tensor::cat(vec![batch.images.clone(), time_channel], 1);
    let extra = label_input.then(|| batch.onehot.clone());
    let (logits, _) = teacher.forward(phi, Input::Image(input), extra.as_ref());
    sigmoid(logits).reshape([b])
}

impl InnerProblem for TeacherWeighting {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        let indices = &self.batches[step % self.batches.len()];
        let batch = self.train.select(indices);
        let weights = self.source.weights(phi, &batch, indices, step);
        let (logits, trace) = self
            .student
            .forward(theta, Input::Image(batch.images.clone()), None);
        let dlogits = loss::weighted_mean_backward(&logits, &batch.onehot, Some(&weights));
        self.student.backward(theta, &trace, dlogits)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.validation.mean_loss(&self.student, theta)
    }
}
