//! `commentary bench meta-step`: the speed benchmark of Algorithm 1 in the configuration of the
//! paper's own code (CBR student, CBR teacher with the iteration channel, 28x28x1, batch 8, Adam
//! inner lr 1e-4, outer loss on 512 validation examples), on random MNIST-shaped data.

use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use clap::{Args, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use schema::ImageShape;
use schema::arch::NetSpec;
use trainer::commentary::weighting::{
    LabelledImages, TeacherWeighting, WeightSource, teacher_network,
};
use trainer::device::{ComputeDevice, burn_device};
use trainer::hypergrad::optim::{InnerOptimizer, OptState};
use trainer::hypergrad::{bptt, scalar};
use trainer::models::Network;
use trainer::nn::loss;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time BPTT meta-steps; ends with `seconds_per_meta_step=<median> peak_rss_mib=<n>`.
    MetaStep(MetaStepArgs),
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
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    #[arg(long, default_value_t = 512)]
    validation_examples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

const SHAPE: ImageShape = ImageShape {
    height: 28,
    width: 28,
    channels: 1,
};
const CLASSES: usize = 10;

fn random_images(rng: &mut StdRng, n: usize, device: &Device) -> LabelledImages {
    let pixels = (SHAPE.height * SHAPE.width) as usize;
    let values: Vec<f32> = (0..n * pixels).map(|_| rng.random::<f32>()).collect();
    let labels: Vec<i64> = (0..n)
        .map(|_| rng.random_range(0..CLASSES as i64))
        .collect();
    LabelledImages {
        images: Tensor::from_data(TensorData::new(values, [n, 1, 28, 28]), device),
        onehot: loss::one_hot(
            &Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            CLASSES,
        ),
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::MetaStep(args) = command;
    anyhow::ensure!(
        args.inner_steps > 0 && args.meta_steps > 0 && args.batch_size > 0,
        "--inner-steps, --meta-steps and --batch-size must be positive"
    );
    let device = burn_device(args.device);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let train = random_images(&mut rng, args.inner_steps * args.batch_size, &device);
    let validation = random_images(&mut rng, args.validation_examples, &device);
    let batches = (0..args.inner_steps)
        .map(|k| {
            let indices: Vec<i64> = (0..args.batch_size)
                .map(|i| (k * args.batch_size + i) as i64)
                .collect();
            Tensor::<1, Int>::from_data(TensorData::new(indices, [args.batch_size]), &device)
        })
        .collect();
    let teacher = teacher_network(&NetSpec::Cbr, SHAPE, CLASSES, false, false);
    let problem = TeacherWeighting {
        student: Network::new(&NetSpec::Cbr, "student.", SHAPE, 0, CLASSES),
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
    let inner = InnerOptimizer::Adam {
        lr: 1e-4,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let outer = InnerOptimizer::Adam {
        lr: 1e-3,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };
    let mut phi = teacher.init(&mut rng, &device);
    let mut outer_state = OptState::new();
    let mut seconds = Vec::with_capacity(args.meta_steps);
    println!(
        "meta-step benchmark: CBR student ({} params), CBR teacher ({} params), K={}, batch={}, validation={}, device={}",
        problem.student.len(),
        teacher.len(),
        args.inner_steps,
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
    let rss = peak_rss_mib().map_or_else(|| "unknown".to_owned(), |m| format!("{m:.0}"));
    println!("seconds_per_meta_step={median:.3} peak_rss_mib={rss}");
    Ok(())
}

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
