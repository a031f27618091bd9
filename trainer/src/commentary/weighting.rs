//! Example weighting: a teacher network t(x, i/S; phi) -> (0, 1) (or a per-example table of
//! logits) weights each example of the student's batch; inner loss = mean_i w_i CE_i. The
//! teacher sees the image with the training progress i/S (S the length of the training it
//! serves; clamped to 1) as an extra channel, and optionally the label as a one-hot input to
//! its last layer. Only the student needs explicit backward passes: the teacher enters the
//! inner gradient through its output, which burn's first-order autodiff differentiates in phi.
//!
//! Learned by BPTT (a fresh student per meta-step) or truncated BPTT (one student, phi
//! updated through each window of its training); see [`learn`].

use burn::tensor::activation::sigmoid;
use std::ops::Range;

use burn::tensor::{Int, Tensor, TensorData};
use schema::ImageShape;
use schema::arch::NetSpec;

use rand::Rng as _;
use rand::rngs::StdRng;
use schema::Algorithm;
use schema::artifact::{Tensor as FileTensor, TensorMap};

use super::insights;
use crate::data::tensors::index_tensor;
use crate::hypergrad::{InnerProblem, step_batch_indices, step_row};
use crate::learn::checkpoint::vector;
use crate::learn::loops::{Run, learn_bptt, step_rng};
use crate::learn::truncated::learn_truncated;
use crate::learn::{LearnError, Learned, Progress, insight_error, parameter_tensors};
use crate::models::{Input, Network};

pub use crate::data::tensors::LabelledImages;

/// The teacher network for images of `shape` with `classes` classes: the label appended to
/// its last layer's inputs with `label_input`, one output per class with `label_head`.
pub fn teacher_network(
    net: &NetSpec,
    shape: ImageShape,
    classes: usize,
    label_input: bool,
    label_head: bool,
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
        if label_head { classes } else { 1 },
    )
}

/// Where per-example weights come from.
#[derive(Clone)]
pub enum WeightSource {
    /// A teacher t(x, i/S) serving a training of `horizon` = S steps (phi = the teacher's
    /// parameters).
    Teacher {
        net: Network,
        label_input: bool,
        label_head: bool,
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
        self.weights_at(phi, batch, indices, &vec![step; batch.len()])
    }

    /// Weights [n] for `examples` (canonical train `indices`), example j seen at inner step
    /// `steps[j]`: one teacher pass for examples of many steps.
    pub fn weights_at(
        &self,
        phi: &Tensor<1>,
        examples: &LabelledImages,
        indices: &Tensor<1, Int>,
        steps: &[usize],
    ) -> Tensor<1> {
        match self {
            Self::Teacher {
                net,
                label_input,
                label_head,
                horizon,
            } => {
                let logits = teacher_logits(net, *label_input, *horizon, phi, examples, steps);
                let [n, _] = logits.dims();
                if *label_head {
                    // The output of each example's own label.
                    sigmoid((logits * examples.onehot.clone()).sum_dim(1).reshape([n]))
                } else {
                    sigmoid(logits.reshape([n]))
                }
            }
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
    /// The canonical indices of each inner step's batch (all batches of one size).
    pub batches: Vec<Tensor<1, Int>>,
    /// The student step that local step 0 is (truncated BPTT's window start; 0 under BPTT):
    /// the teacher's time input counts from the start of the student's training.
    pub first_step: usize,
}

/// The teacher's time input at inner step `step` of a training of `horizon` steps: i/S,
/// clamped to 1.
pub fn time_input(step: usize, horizon: usize) -> f32 {
    (step as f32 / horizon.max(1) as f32).min(1.0)
}

/// Teacher logits [n, outputs] for `examples`, example j seen at inner step `steps[j]` of a
/// run of `horizon` steps (the time input i/S is clamped to 1).
pub fn teacher_logits(
    teacher: &Network,
    label_input: bool,
    horizon: usize,
    phi: &Tensor<1>,
    examples: &LabelledImages,
    steps: &[usize],
) -> Tensor<2> {
    let [n, _, h, w] = examples.images.dims();
    let times: Vec<f32> = steps
        .iter()
        .map(|&step| time_input(step, horizon))
        .collect();
    let time_channel =
        Tensor::<1>::from_data(TensorData::new(times, [n]), &examples.images.device())
            .reshape([n, 1, 1, 1])
            .repeat_dim(2, h)
            .repeat_dim(3, w);
    let input = Tensor::cat(vec![examples.images.clone(), time_channel], 1);
    let extra = label_input.then(|| examples.onehot.clone());
    let (logits, _) = teacher.forward(phi, Input::Image(input), extra.as_ref());
    logits
}

/// Examples a teacher sees per batch when BPTT weights many steps at once: large enough for
/// efficient kernels, small enough to bound the teacher's activation memory (the CBR teacher
/// on 28x28 images adds about 16 MiB to the meta-step benchmark's peak RSS).
const TEACHER_BATCH_EXAMPLES: usize = 256;

impl TeacherWeighting {
    /// The train examples of inner step `step`'s batch.
    fn batch(&self, step: usize) -> LabelledImages {
        self.train.select(&self.batches[step % self.batches.len()])
    }
}

impl InnerProblem for TeacherWeighting {
    fn inner_gradient(&self, theta: &Tensor<1>, phi: &Tensor<1>, step: usize) -> Tensor<1> {
        self.inner_gradient_from(theta, &step_row(self, phi, step), step)
    }

    fn validation_loss(&self, theta: &Tensor<1>) -> Tensor<1> {
        self.validation.mean_loss(&self.student, theta)
    }

    fn validation_loss_gradient(&self, theta: &Tensor<1>) -> (Tensor<1>, f32) {
        self.validation.mean_loss_gradient(&self.student, theta)
    }

    /// The weights of each step's batch ([steps, batch]; all batches have one size).
    fn step_commentary(&self, phi: &Tensor<1>, steps: Range<usize>) -> Tensor<2> {
        let count = steps.len();
        let (indices, per_step) = step_batch_indices(&self.batches, steps.clone());
        let example_steps: Vec<usize> = steps
            .flat_map(|step| std::iter::repeat_n(self.first_step + step, per_step))
            .collect();
        let examples = self.train.select(&indices);
        self.source
            .weights_at(phi, &examples, &indices, &example_steps)
            .reshape([count, per_step])
    }

    fn inner_gradient_from(
        &self,
        theta: &Tensor<1>,
        weights: &Tensor<1>,
        step: usize,
    ) -> Tensor<1> {
        let batch = self.batch(step);
        self.student.loss_gradient(
            theta,
            Input::Image(batch.images),
            &batch.onehot,
            Some(weights),
        )
    }

    /// By the student's tangent pass ([`Network::weight_adjoints`]), with no autodiff graph.
    fn inner_gradient_adjoints(
        &self,
        theta: &Tensor<1>,
        weights: &Tensor<1>,
        step: usize,
        adjoint: &Tensor<1>,
    ) -> (Tensor<1>, Tensor<1>) {
        let batch = self.batch(step);
        self.student.weight_adjoints(
            theta,
            adjoint,
            Input::Image(batch.images),
            &batch.onehot,
            weights,
        )
    }

    fn steps_per_commentary_batch(&self) -> usize {
        let per_step = self.batches.first().map_or(1, |b| b.dims()[0].max(1));
        (TEACHER_BATCH_EXAMPLES / per_step).max(1)
    }
}

/// Learns example weighting: by BPTT (each meta-step a fresh student trained `inner_steps`
/// steps) or truncated BPTT (one student per meta-step, phi updated every `unroll_steps`).
/// `teacher` None learns a per-example table instead of a teacher network.
pub(crate) fn learn(
    run: &Run<'_>,
    teacher: Option<(&NetSpec, bool, bool)>,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Learned, LearnError> {
    let (config, data, device) = (run.config(), run.data, &run.device);
    let shape = data.train.shape();
    let classes = data.summary.classes.len();
    let student = run.student();
    // S in the time input i/S: the length of the training the teacher serves.
    let (horizon, batch) = (
        config.inner_steps.max(1) as usize,
        config.batch_size as usize,
    );
    let teacher = teacher.map(|(net, label_input, label_head)| {
        (
            teacher_network(net, shape, classes, label_input, label_head),
            label_input,
            label_head,
        )
    });
    let source = match &teacher {
        Some((net, label_input, label_head)) => WeightSource::Teacher {
            net: net.clone(),
            label_input: *label_input,
            label_head: *label_head,
            horizon,
        },
        None => WeightSource::Table,
    };
    let phi_len = source.phi_len(data.train.len());
    let initial_phi = match &teacher {
        Some((net, _, _)) => net.init(&mut step_rng(config.seed, usize::MAX - 1), device),
        // A table starts at w = 0.5 for every example.
        None => Tensor::zeros([phi_len], device),
    };
    let problem = |steps: usize, first_step: usize, rng: &mut StdRng| -> TeacherWeighting {
        let chosen: Vec<i64> = (0..steps * batch)
            .map(|_| data.pool[rng.random_range(0..data.pool.len())])
            .collect();
        TeacherWeighting {
            student: student.clone(),
            source: source.clone(),
            train: data.train.clone(),
            validation: run.validation(rng),
            batches: chosen
                .chunks(batch)
                .map(|b| index_tensor(b, device))
                .collect(),
            first_step,
        }
    };
    let result = match run.request.algorithm {
        Algorithm::TruncatedBptt => learn_truncated(
            run,
            initial_phi,
            &student,
            &|window, rng| Box::new(problem(window.steps, window.first_step, rng)),
            on_progress,
        )?,
        _ => learn_bptt(
            run,
            phi_len,
            || initial_phi,
            horizon,
            on_progress,
            &|rng| Box::new(problem(horizon, 0, rng)),
            &student,
        )?,
    };
    let mut tensors = match &teacher {
        Some((net, _, _)) => parameter_tensors(net, &result.best_phi)?,
        None => {
            let mut map = TensorMap::new();
            map.insert(
                "commentary.logits".into(),
                FileTensor::f32(vec![phi_len], result.best_phi.clone()).map_err(insight_error)?,
            );
            map
        }
    };
    let phi = vector(&result.best_phi, device);
    let sample = config.insight_examples as usize;
    insights::weighting(&source, &phi, data, horizon, sample, &mut tensors)?;
    Ok(Learned {
        tensors,
        val_losses: result.val_losses,
        best_val_loss: result.best_val_loss,
    })
}
