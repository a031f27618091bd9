//! Speed benchmarks in the configurations of the paper's own code, on random MNIST-shaped data:
//! - `commentary bench meta-step`: Algorithm 1 (CBR student, CBR teacher with the iteration
//!   channel, 28x28x1, batch 8, Adam inner lr 1e-4, outer loss on 512 validation examples);
//! - `commentary bench ift-step`: Algorithm 2 learning label blending (CBR student, 4,096
//!   examples, batches of 128, blend logits from -1, Adam 1e-3 / 1e-2, one Neumann term, a
//!   hyper-step after every student step). `bench/ift_step_reference.py` is the PyTorch twin;
//! - `commentary bench truncated-step`: truncated BPTT with a hyper-step after every student
//!   step (a one-step look-ahead) in Algorithm 1's configuration, the student carrying on from
//!   each look-ahead step. `bench/truncated_step_reference.py` is the PyTorch + higher twin.

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use schema::ImageShape;
use schema::arch::NetSpec;
use trainer::commentary::blending::LabelBlending;
use trainer::commentary::weighting::{
    LabelledImages, TeacherWeighting, WeightSource, teacher_network,
};
use trainer::device::{ComputeDevice, burn_device};
use trainer::hypergrad::ift::{InverseHessian, OnlineState, learn_online};
use trainer::hypergrad::optim::{InnerOptimizer, OptState};
use trainer::hypergrad::{bptt, scalar};
use trainer::models::Network;
use trainer::nn::loss;
use trainer::stop::Stop;

/// The variants are the subcommands' names (`meta-step`, `ift-step`, `truncated-step`).
#[derive(Debug, Subcommand)]
#[allow(clippy::enum_variant_names)]
pub enum BenchCommand {
    /// Time BPTT meta-steps; ends with `seconds_per_meta_step=<median> peak_rss_mib=<n>`.
    MetaStep(MetaStepArgs),
    /// Time online IFT steps of label blending (a student step plus a hyper-step); ends with
    /// `seconds_per_step=<median> peak_rss_mib=<n>`.
    IftStep(IftStepArgs),
    /// Time truncated-BPTT student steps with a hyper-step after every one; ends with
    /// `seconds_per_step=<median> steps_per_second=<n> peak_rss_mib=<n>`.
    TruncatedStep(TruncatedStepArgs),
}

#[derive(Debug, Args)]
pub struct TruncatedStepArgs {
    /// Student steps to time (the median of all but the first two is reported); also the
    /// horizon of the teacher's time input.
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// The device to time.
    #[arg(long, default_value = "cpu", value_parser = super::values::device())]
    device: ComputeDevice,
    /// Image size HxWxC of the random data (32x32x3 for a CIFAR-sized run).
    #[arg(long, default_value = "28x28x1", value_parser = parse_shape)]
    image: ImageShape,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Validation examples of each hyper-step's L_V.
    #[arg(long, default_value_t = 128)]
    validation_examples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
pub struct IftStepArgs {
    /// Steps to time (the median of all but the first two is reported).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// The device to time.
    #[arg(long, default_value = "cpu", value_parser = super::values::device())]
    device: ComputeDevice,
    /// Image size HxWxC of the random data (32x32x3 for a CIFAR-sized run).
    #[arg(long, default_value = "28x28x1", value_parser = parse_shape)]
    image: ImageShape,
    /// Neumann terms of each hyper-step.
    #[arg(long, default_value_t = 1)]
    neumann_terms: usize,
    #[arg(long, default_value_t = 4096)]
    examples: usize,
    /// Train and validation batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Debug, Args)]
pub struct MetaStepArgs {
    /// Inner (student) steps K per meta-step.
    #[arg(long, default_value_t = 100)]
    inner_steps: usize,
    /// Meta-steps to time (the median is reported).
    #[arg(long, default_value_t = 3)]
    meta_steps: usize,
    /// The device to time.
    #[arg(long, default_value = "cpu", value_parser = super::values::device())]
    device: ComputeDevice,
    /// Image size HxWxC of the random data (32x32x3 for a CIFAR-sized run).
    #[arg(long, default_value = "28x28x1", value_parser = parse_shape)]
    image: ImageShape,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 512)]
    validation_examples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// The largest side and channel count `--image` takes (the benchmarks' data is held in memory).
const MAX_SIDE: u32 = 256;
const MAX_CHANNELS: u32 = 4;

/// Parses `--image` (`HxWxC`, within [`MAX_SIDE`] and [`MAX_CHANNELS`]).
fn parse_shape(text: &str) -> Result<ImageShape, String> {
    let parts: Vec<&str> = text.split('x').collect();
    let dims: Option<Vec<u32>> = parts.iter().map(|p| p.parse().ok()).collect();
    let expected = || format!("expected HxWxC such as 28x28x1 or 32x32x3, got {text:?}");
    let [height, width, channels] = dims.as_deref().ok_or_else(expected)? else {
        return Err(expected());
    };
    if !(1..=MAX_SIDE).contains(height)
        || !(1..=MAX_SIDE).contains(width)
        || !(1..=MAX_CHANNELS).contains(channels)
    {
        return Err(format!(
            "sides must be 1 to {MAX_SIDE} and channels 1 to {MAX_CHANNELS}, got {text}"
        ));
    }
    Ok(ImageShape {
        height: *height,
        width: *width,
        channels: *channels,
    })
}
const CLASSES: usize = 10;

fn random_images(rng: &mut StdRng, shape: ImageShape, n: usize, device: &Device) -> LabelledImages {
    let [h, w, c] = [shape.height, shape.width, shape.channels].map(|d| d as usize);
    let pixels = h * w * c;
    let values: Vec<f32> = (0..n * pixels).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<i64> = (0..n)
        .map(|_| rng.random_range(0..CLASSES as i64))
        .collect();
    LabelledImages {
        images: Tensor::from_data(TensorData::new(values, [n, c, h, w]), device),
        onehot: loss::one_hot(
            &Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            CLASSES,
        ),
    }
}

/// The canonical indices of inner step `step`'s batch: examples step x b to (step + 1) x b.
fn consecutive_batch(step: usize, batch_size: usize, device: &Device) -> Tensor<1, Int> {
    let indices: Vec<i64> = (0..batch_size)
        .map(|i| (step * batch_size + i) as i64)
        .collect();
    Tensor::from_data(TensorData::new(indices, [batch_size]), device)
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::MetaStep(args) => meta_step(args),
        BenchCommand::IftStep(args) => ift_step(args),
        BenchCommand::TruncatedStep(args) => truncated_step(args),
    }
}

/// The paper's Adam with learning rate `lr`.
fn adam(lr: f64) -> InnerOptimizer {
    InnerOptimizer::Adam {
        lr,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    }
}

fn ift_step(args: IftStepArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps > 0 && args.batch_size > 0 && args.examples >= args.batch_size,
        "--steps and --batch-size must be positive and --examples at least --batch-size"
    );
    let device = burn_device(args.device);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let student = Network::new(&NetSpec::Cbr, "student.", args.image, 0, CLASSES);
    let problem = LabelBlending {
        student: student.clone(),
        train: random_images(&mut rng, args.image, args.examples, &device),
        // One validation batch: L_V and its gradient over 128 examples, as the reference.
        validation: random_images(&mut rng, args.image, args.batch_size, &device),
        pool: (0..args.examples as i64).collect(),
        batch_size: args.batch_size,
        seed: args.seed,
    };
    let inner_lr = 1e-3;
    let method = InverseHessian::Neumann {
        terms: args.neumann_terms,
        alpha: inner_lr,
    };
    let phi = Tensor::<1>::full([CLASSES * CLASSES], -1.0, &device);
    let mut state = OnlineState::new(student.init(&mut rng, &device), phi);
    println!(
        "ift-step benchmark: CBR student ({} params), blend matrix {CLASSES}x{CLASSES}, {} examples of {}, batch={}, neumann_terms={}, device={}",
        student.len(),
        args.examples,
        args.image,
        args.batch_size,
        args.neumann_terms,
        args.device
    );
    let mut seconds = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let start = Instant::now();
        let losses = learn_online(
            &problem,
            &mut state,
            adam(inner_lr),
            adam(1e-2),
            step..step + 1,
            1,
            method,
            &Stop::never(),
        )?;
        // Reading a value waits for the device to finish.
        let phi_sum = scalar(&state.phi.clone().sum());
        let elapsed = start.elapsed().as_secs_f64();
        let val_loss = losses.last().map_or(f32::NAN, |(_, l)| *l);
        println!("step={step} seconds={elapsed:.4} val_loss={val_loss:.4} phi_sum={phi_sum:.4}");
        seconds.push(elapsed);
    }
    println!(
        "seconds_per_step={:.4} peak_rss_mib={}",
        steady_median(seconds),
        peak_rss_text()
    );
    Ok(())
}

/// The median of `seconds` without the first two (they warm allocators and kernels).
fn steady_median(seconds: Vec<f64>) -> f64 {
    let mut steady = if seconds.len() > 4 {
        seconds[2..].to_vec()
    } else {
        seconds
    };
    steady.sort_by(f64::total_cmp);
    steady[steady.len() / 2]
}

fn truncated_step(args: TruncatedStepArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.steps > 0 && args.batch_size > 0 && args.validation_examples > 0,
        "--steps, --batch-size and --validation-examples must be positive"
    );
    let device = burn_device(args.device);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let student = Network::new(&NetSpec::Cbr, "student.", args.image, 0, CLASSES);
    let teacher = teacher_network(&NetSpec::Cbr, args.image, CLASSES, false, false);
    let mut problem = TeacherWeighting {
        student: student.clone(),
        source: WeightSource::Teacher {
            net: teacher.clone(),
            label_input: false,
            label_head: false,
            horizon: args.steps,
        },
        train: random_images(&mut rng, args.image, args.steps * args.batch_size, &device),
        validation: random_images(&mut rng, args.image, args.validation_examples, &device),
        batches: Vec::new(),
        first_step: 0,
    };
    let (inner, outer) = (adam(1e-4), adam(1e-3));
    let mut phi = teacher.init(&mut rng, &device);
    let mut theta = student.init(&mut rng, &device);
    let (mut inner_state, mut outer_state) = (OptState::new(), OptState::new());
    println!(
        "truncated-step benchmark: CBR student ({} params), CBR teacher ({} params), a hyper-step after every student step, image={}, batch={}, validation={}, device={}",
        student.len(),
        teacher.len(),
        args.image,
        args.batch_size,
        args.validation_examples,
        args.device
    );
    let mut seconds = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let start = Instant::now();
        // One window of one step: the batch of this step, the teacher's time input step / S.
        problem.batches = vec![consecutive_batch(step, args.batch_size, &device)];
        problem.first_step = step;
        let out = bptt::hypergradient_from(&problem, &theta, &inner_state, &phi, inner, 1);
        let (next, state) = outer.step(&phi, &outer_state, out.hypergrad);
        phi = next.detach();
        outer_state = state.detached();
        theta = out.final_theta.detach();
        inner_state = out.final_state.detached();
        // Reading a value waits for the device to finish.
        let phi_sum = scalar(&phi.clone().sum());
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "step={step} seconds={elapsed:.4} val_loss={:.4} phi_sum={phi_sum:.4}",
            out.val_loss
        );
        seconds.push(elapsed);
    }
    let median = steady_median(seconds);
    println!(
        "seconds_per_step={median:.4} steps_per_second={:.2} peak_rss_mib={}",
        1.0 / median,
        peak_rss_text()
    );
    Ok(())
}

fn meta_step(args: MetaStepArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.inner_steps > 0 && args.meta_steps > 0 && args.batch_size > 0,
        "--inner-steps, --meta-steps and --batch-size must be positive"
    );
    let device = burn_device(args.device);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let train = random_images(
        &mut rng,
        args.image,
        args.inner_steps * args.batch_size,
        &device,
    );
    let validation = random_images(&mut rng, args.image, args.validation_examples, &device);
    let batches = (0..args.inner_steps)
        .map(|k| consecutive_batch(k, args.batch_size, &device))
        .collect();
    let teacher = teacher_network(&NetSpec::Cbr, args.image, CLASSES, false, false);
    let problem = TeacherWeighting {
        student: Network::new(&NetSpec::Cbr, "student.", args.image, 0, CLASSES),
        source: WeightSource::Teacher {
            net: teacher.clone(),
            label_input: false,
            label_head: false,
            horizon: args.inner_steps,
        },
        train,
        validation,
        batches,
        first_step: 0,
    };
    let (inner, outer) = (adam(1e-4), adam(1e-3));
    let mut phi = teacher.init(&mut rng, &device);
    let mut outer_state = OptState::new();
    let mut seconds = Vec::with_capacity(args.meta_steps);
    println!(
        "meta-step benchmark: CBR student ({} params), CBR teacher ({} params), K={}, image={}, batch={}, validation={}, device={}",
        problem.student.len(),
        teacher.len(),
        args.inner_steps,
        args.image,
        args.batch_size,
        args.validation_examples,
        args.device
    );
    for step in 0..args.meta_steps {
        let theta0 = problem.student.init(&mut rng, &device);
        let start = Instant::now();
        let out = bptt::hypergradient(&problem, &theta0, &phi, inner, args.inner_steps);
        let (next, state) = outer.step(&phi, &outer_state, out.hypergrad.clone());
        // Reading a value waits for the device to finish.
        let norm = scalar(&out.hypergrad.powi_scalar(2).sum()).sqrt();
        phi = next.detach();
        outer_state = state.detached();
        let elapsed = start.elapsed().as_secs_f64();
        println!(
            "meta_step={step} seconds={elapsed:.3} val_loss={:.4} hypergrad_norm={norm:.3e}",
            out.val_loss
        );
        seconds.push(elapsed);
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "seconds_per_meta_step={median:.3} peak_rss_mib={}",
        peak_rss_text()
    );
    Ok(())
}

/// [`peak_rss_mib`] as printed, or `unknown`.
fn peak_rss_text() -> String {
    peak_rss_mib().map_or_else(|| "unknown".to_owned(), |m| format!("{m:.0}"))
}

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
