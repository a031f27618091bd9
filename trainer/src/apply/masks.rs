//! The mask report: where the masks point (mask mass inside each object's box) and what
//! removing it does to baseline students (the most-masked pixels against random ones).

use burn::tensor::{Tensor, TensorData};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use schema::arch::MaskRange;
use schema::report::{MaskReport, Spread};

use super::students::{EVAL_CHUNK, accuracy_and_loss};
use crate::commentary::masks::masks;
use crate::data::tensors::LabelledImages;
use crate::models::Network;

/// Mask quality on the test split: the share of mask mass inside each digit's bounding box
/// (pixels brighter than 0.1 away from the border band where spurious patches sit), and the
/// accuracy of the baseline students when the most-masked `removed_fraction` of pixels
/// (`Evaluation::mask_removed_fraction`) are removed versus as many random ones.
/// The removal test's settings: the seed of its random pixels, and the share removed.
pub(crate) struct Removal {
    pub seed: u64,
    pub fraction: f64,
}

pub(crate) fn mask_report(
    mask_net: &Network,
    phi: &Tensor<1>,
    range: MaskRange,
    student: &Network,
    baselines: &[Tensor<1>],
    test: &LabelledImages,
    removal: Removal,
) -> MaskReport {
    let Removal {
        seed,
        fraction: removed_fraction,
    } = removal;
    let [n, _, h, w] = test.images.dims();
    let device = test.images.device();
    // Spurious patches sit in a band of PATCH pixels along the border; on images too small to
    // leave a box inside that band (8x8 digits) the whole image counts.
    let band = border_band(h, w);
    let mut in_box = 0f64;
    let mut removed_masked = Vec::new();
    let mut removed_random = Vec::new();
    let mut rng = StdRng::seed_from_u64(seed);
    let remove = (removed_fraction * (h * w) as f64).round() as usize;
    let mut start = 0;
    let (mut keep_masked, mut keep_random) =
        (Vec::with_capacity(n * h * w), Vec::with_capacity(n * h * w));
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let images = test.images.clone().narrow(0, start, len);
        // Both ranges start at 0, so the mass is the mask's own values.
        let m: Vec<f32> = masks(mask_net, phi, &images, range)
            .reshape([len * h * w])
            .to_data()
            .iter::<f32>()
            .collect();
        // The brightest channel decides whether a pixel belongs to the object.
        let x: Vec<f32> = images
            .max_dim(1)
            .reshape([len * h * w])
            .to_data()
            .iter::<f32>()
            .collect();
        for i in 0..len {
            let (mi, xi) = (
                &m[i * h * w..(i + 1) * h * w],
                &x[i * h * w..(i + 1) * h * w],
            );
            let (mut top, mut left, mut bottom, mut right) = (h, w, 0, 0);
            for y in band.min(h)..h.saturating_sub(band) {
                for xx in band.min(w)..w.saturating_sub(band) {
                    if xi[y * w + xx] > 0.1 {
                        (top, left, bottom, right) =
                            (top.min(y), left.min(xx), bottom.max(y), right.max(xx));
                    }
                }
            }
            let total: f64 = mi.iter().map(|&v| f64::from(v)).sum();
            let inside: f64 = if top <= bottom {
                (top..=bottom)
                    .flat_map(|y| (left..=right).map(move |xx| y * w + xx))
                    .map(|p| f64::from(mi[p]))
                    .sum()
            } else {
                0.0
            };
            in_box += if total > 0.0 { inside / total } else { 0.0 };
            let mut order: Vec<usize> = (0..h * w).collect();
            order.sort_by(|&a, &b| mi[b].total_cmp(&mi[a]));
            let mut keep = vec![1f32; h * w];
            order[..remove].iter().for_each(|&p| keep[p] = 0.0);
            keep_masked.extend_from_slice(&keep);
            order.shuffle(&mut rng);
            let mut keep = vec![1f32; h * w];
            order[..remove].iter().for_each(|&p| keep[p] = 0.0);
            keep_random.extend_from_slice(&keep);
        }
        start += len;
    }
    let apply_keep = |keep: Vec<f32>| LabelledImages {
        images: test.images.clone()
            * Tensor::<4>::from_data(TensorData::new(keep, [n, 1, h, w]), &device),
        onehot: test.onehot.clone(),
    };
    let (masked_removed, random_removed) = (apply_keep(keep_masked), apply_keep(keep_random));
    for theta in baselines {
        removed_masked.push(accuracy_and_loss(student, theta, &masked_removed).0);
        removed_random.push(accuracy_and_loss(student, theta, &random_removed).0);
    }
    MaskReport {
        mass_in_box: in_box / n.max(1) as f64,
        removed_fraction,
        accuracy_most_masked_removed: Spread::of(&removed_masked),
        accuracy_random_removed: Spread::of(&removed_random),
    }
}

/// The border band excluded from the object's box: the spurious patch's side where the image
/// has room for a box at least as large inside it, else none.
fn border_band(h: usize, w: usize) -> usize {
    let band = crate::data::spurious::PATCH;
    if h.min(w) >= 4 * band { band } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::border_band;

    #[test]
    fn small_images_keep_their_whole_area_for_the_object_box() {
        assert_eq!(
            border_band(8, 8),
            0,
            "an 8x8 digit has no room for the band"
        );
        assert_eq!(border_band(28, 28), crate::data::spurious::PATCH);
        assert_eq!(border_band(40, 12), 0);
    }
}
