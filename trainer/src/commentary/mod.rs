//! The commentary kinds as inner problems for the hypergradient engine.
//!
//! - [`weighting`]: example weighting with a teacher network t(x, i/T) -> (0, 1);
//! - [`blending`]: label blending with a C x C matrix, learned by IFT;
//! - [`masks`]: attention masks from a mask network, learned by IFT.

pub mod blending;
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
