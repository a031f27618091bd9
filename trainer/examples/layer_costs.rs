//! Times each op of the CBR student's layers at batch 8 (a BPTT inner step) and 128 (an IFT
//! step, a validation pass) on the CPU backend: where a step's time goes, and the measurements
//! behind `conv::weight_gradient`'s choice of route.
//!
//! `cargo run --release -p trainer --example layer_costs`

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use trainer::nn::conv::{self, ConvGeometry};
use trainer::nn::{activation, batch_norm, pool};

/// Microseconds per call of `f` over `reps` calls, after one warm-up call. `f` reads one value
/// of its result, so the work is done before the clock stops.
fn time(what: &str, reps: usize, mut f: impl FnMut() -> f32) {
    f();
    let start = Instant::now();
    let mut sink = 0.0;
    for _ in 0..reps {
        sink += f();
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / reps as f64;
    println!("{what:<36} {us:>9.1} us  (checksum {sink:.1e})");
}

fn first(t: Tensor<4>) -> f32 {
    t.slice([0..1, 0..1, 0..1, 0..1]).into_scalar()
}

fn normal(shape: [usize; 4], std: f64) -> Tensor<4> {
    Tensor::random(shape, Distribution::Normal(0.0, std), &Default::default())
}

fn main() {
    let device = Default::default();
    let g = ConvGeometry {
        stride: 2,
        padding: 2,
    };
    for b in [8usize, 128] {
        let reps = if b == 8 { 200 } else { 30 };
        let (x1, w1) = (normal([b, 1, 28, 28], 1.0), normal([32, 1, 5, 5], 0.1));
        let (x2, w2) = (normal([b, 32, 6, 6], 1.0), normal([64, 32, 3, 3], 0.1));
        let (b1, b2) = (
            Tensor::<1>::zeros([32], &device),
            Tensor::zeros([64], &device),
        );
        let (y1, y2) = (
            conv::forward(&x1, &w1, &b1, g),
            conv::forward(&x2, &w2, &b2, g),
        );
        println!(
            "batch {b}: conv1 {:?} -> {:?}, conv2 {:?} -> {:?}",
            x1.dims(),
            y1.dims(),
            x2.dims(),
            y2.dims()
        );
        for (name, x, w, bias, y, k) in [
            ("conv1", &x1, &w1, &b1, &y1, 5),
            ("conv2", &x2, &w2, &b2, &y2, 3),
        ] {
            time(&format!("{name} forward"), reps, || {
                first(conv::forward(x, w, bias, g))
            });
            time(&format!("{name} input gradient"), reps, || {
                first(conv::input_gradient(x.dims(), w, y.clone(), g))
            });
            time(&format!("{name} weight gradient, convolved"), reps, || {
                first(conv::weight_gradient_convolved(x, y, k, g))
            });
            time(&format!("{name} weight gradient, unfolded"), reps, || {
                first(conv::weight_gradient_unfolded(x, y, k, g))
            });
        }
        let (gamma, beta) = (
            Tensor::<1>::ones([32], &device),
            Tensor::zeros([32], &device),
        );
        let (_, cache) = batch_norm::forward(&y1, &gamma, &beta);
        time("bn1 forward", reps, || {
            first(batch_norm::forward(&y1, &gamma, &beta).0)
        });
        time("bn1 backward", reps, || {
            first(batch_norm::backward(&cache, &gamma, y1.clone()).dx)
        });
        let (pooled, pool_cache) = pool::max_pool(&y1, 3, 2);
        time("pool1 forward", reps, || first(pool::max_pool(&y1, 3, 2).0));
        time("pool1 backward", reps, || {
            first(pool::max_pool_backward(&pool_cache, pooled.clone()))
        });
        time("relu1 backward", reps, || {
            first(activation::relu_backward(&y1, y1.clone()))
        });
    }
}
