//! The finite-difference fallback on a model with no explicit backward passes: a ResNet-18
//! written with burn-nn layers, as anyone would write it, learning a label-blending commentary
//! by one IFT hypergradient on random CIFAR-shaped data.
//!
//! ```sh
//! cargo run --release -p trainer --example resnet18_blending [-- cpu|wgpu|cuda]
//! ```
//! (`wgpu` and `cuda` need `--features wgpu` or `--features cuda`.)

use std::time::Instant;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use trainer::commentary::blending::blend;
use trainer::commentary::weighting::LabelledImages;
use trainer::device::{ComputeDevice, burn_device};
use trainer::hypergrad::finite;
use trainer::hypergrad::ift::InverseHessian;
use trainer::hypergrad::module::ModuleProblem;
use trainer::hypergrad::scalar;
use trainer::nn::loss;

const CLASSES: usize = 10;

fn conv(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let padding = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_bias(false)
        .init(device)
}

/// conv3x3-BN-ReLU-conv3x3-BN plus the (projected, when the shape changes) input, then ReLU.
#[derive(Module, Debug)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(input: usize, output: usize, stride: usize, device: &Device) -> Self {
        let shortcut = (stride != 1 || input != output).then(|| {
            (
                conv([input, output], 1, stride, device),
                BatchNormConfig::new(output).init(device),
            )
        });
        Self {
            conv1: conv([input, output], 3, stride, device),
            bn1: BatchNormConfig::new(output).init(device),
            conv2: conv([output, output], 3, 1, device),
            bn2: BatchNormConfig::new(output).init(device),
            shortcut,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = relu(self.bn1.forward(self.conv1.forward(x.clone())));
        let y = self.bn2.forward(self.conv2.forward(y));
        let skip = match &self.shortcut {
            Some((conv, bn)) => bn.forward(conv.forward(x)),
            None => x,
        };
        relu(y + skip)
    }
}

/// ResNet-18 for 32x32 images (a 3x3 stem, no stem max-pool): 11.2M parameters.
#[derive(Module, Debug)]
struct ResNet18 {
    stem: Conv2d,
    stem_bn: BatchNorm,
    blocks: Vec<BasicBlock>,
    pool: AdaptiveAvgPool2d,
    head: Linear,
}

impl ResNet18 {
    fn new(device: &Device) -> Self {
        let mut blocks = Vec::new();
        let mut channels = 64;
        for (width, stride) in [(64, 1), (128, 2), (256, 2), (512, 2)] {
            blocks.push(BasicBlock::new(channels, width, stride, device));
            blocks.push(BasicBlock::new(width, width, 1, device));
            channels = width;
        }
        Self {
            stem: conv([3, 64], 3, 1, device),
            stem_bn: BatchNormConfig::new(64).init(device),
            blocks,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(512, CLASSES).init(device),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut y = relu(self.stem_bn.forward(self.stem.forward(x)));
        for block in &self.blocks {
            y = block.forward(y);
        }
        let [n, c, _, _] = y.dims();
        self.head.forward(self.pool.forward(y).reshape([n, c]))
    }
}

fn random_images(n: usize, device: &Device) -> LabelledImages {
    let labels: Vec<i64> = (0..n).map(|i| (i % CLASSES) as i64).collect();
    LabelledImages {
        images: Tensor::random([n, 3, 32, 32], Distribution::Uniform(0.0, 1.0), device),
        onehot: loss::one_hot(
            &Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device),
            CLASSES,
        ),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kind: ComputeDevice = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "cpu".into())
        .parse()?;
    // The model's parameters must require gradients: build it on the autodiff device.
    let device = burn_device(kind).autodiff();
    let train = random_images(8, &device);
    let validation = random_images(16, &device);
    // Each example blends with the next one in the batch.
    let pairs = Tensor::<1, Int>::from_data(
        TensorData::new((1..=8).map(|i| i % 8).collect::<Vec<i64>>(), [8]),
        &device,
    );
    let (problem, theta) = ModuleProblem::new(
        ResNet18::new(&device),
        |model: &ResNet18, phi: &Tensor<1>, _step| {
            let (images, targets) = blend(phi, &train, &pairs);
            loss::weighted_mean(&model.forward(images), &targets, None)
        },
        |model: &ResNet18| {
            let logits = model.forward(validation.images.clone());
            loss::weighted_mean(&logits, &validation.onehot, None)
        },
    )?;
    let phi = Tensor::<1>::zeros([CLASSES * CLASSES], &device);
    let started = Instant::now();
    let inverse = InverseHessian::Neumann {
        terms: 1,
        alpha: 0.1,
    };
    let (hypergrad, val_loss) =
        problem.hypergradient(&theta, &phi, 0, inverse, finite::DEFAULT_STEP)?;
    let norm = scalar(&hypergrad.powi_scalar(2).sum()).sqrt();
    println!(
        "resnet18 parameters={} device={kind} val_loss={val_loss:.4} hypergrad_norm={norm:.3e} \
         seconds={:.2} method=finite-difference (approximate)",
        problem.layout().len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
