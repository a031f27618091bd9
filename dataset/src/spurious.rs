//! The spurious-background variant of a dataset: every image is placed in the middle of a
//! larger canvas with a bright square patch on the canvas border. In `train` the patch's
//! position is determined by the class (a shortcut a student can learn instead of the object);
//! in `test` it is drawn at random, so a student that relies on it fails there. Attention masks
//! should learn to ignore the patch.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use schema::ImageShape;

use super::{DataError, Dataset, SplitData};

/// Side of the bright patch, in pixels.
pub const PATCH: usize = 4;

/// Settings of the variant.
#[derive(Debug, Clone, Copy)]
pub struct SpuriousOptions {
    /// Side of the square canvas (at least the image side + 2 x PATCH).
    pub canvas: usize,
    pub seed: u64,
}

/// Top-left corners of the patch slots along the canvas border, one per class (evenly spaced
/// clockwise from the top-left corner).
pub fn patch_slots(canvas: usize, classes: usize) -> Vec<(usize, usize)> {
    let span = canvas - PATCH;
    let perimeter = 4 * span;
    (0..classes)
        .map(|class| {
            let d = class * perimeter / classes.max(1);
            match d / span.max(1) {
                0 => (0, d),
                1 => (d - span, span),
                2 => (span, span - (d - 2 * span)),
                _ => (span - (d - 3 * span), 0),
            }
        })
        .collect()
}

/// One split placed on the canvas with patches: class-correlated when `correlated`, else random.
pub(super) fn place(
    split: &SplitData,
    classes: usize,
    options: SpuriousOptions,
    correlated: bool,
    rng: &mut StdRng,
) -> (ImageShape, Vec<u8>) {
    let (h, w, c) = (
        split.shape.height as usize,
        split.shape.width as usize,
        split.shape.channels as usize,
    );
    let side = options.canvas;
    let slots = patch_slots(side, classes);
    let (top, left) = ((side - h) / 2, (side - w) / 2);
    let mut pixels = vec![0u8; split.len() * side * side * c];
    for i in 0..split.len() {
        let image = split.image(i);
        let canvas = &mut pixels[i * side * side * c..(i + 1) * side * side * c];
        for y in 0..h {
            let from = &image[y * w * c..(y + 1) * w * c];
            let at = ((top + y) * side + left) * c;
            canvas[at..at + w * c].copy_from_slice(from);
        }
        let slot = if correlated {
            split.labels[i] as usize
        } else {
            rng.random_range(0..classes)
        };
        let (py, px) = slots[slot];
        for y in py..py + PATCH {
            for x in px..px + PATCH {
                canvas[(y * side + x) * c..(y * side + x + 1) * c].fill(255);
            }
        }
    }
    (
        ImageShape {
            height: side as u32,
            width: side as u32,
            channels: c as u32,
        },
        pixels,
    )
}

/// Writes the spurious variant of `dataset` (its train and test splits) as gzipped IDX to `out`.
pub fn write_spurious(
    dataset: &Dataset,
    out: &Path,
    options: SpuriousOptions,
) -> Result<(), DataError> {
    let classes = dataset.classes().len();
    for name in ["train", "test"] {
        let split = dataset.load_split(name)?;
        let needed = split.shape.height.max(split.shape.width) as usize + 2 * PATCH;
        if options.canvas < needed {
            return Err(DataError::invalid(
                out,
                format!(
                    "a canvas of {} pixels cannot hold {}x{} images with {PATCH}-pixel patches around them; use at least {needed}",
                    options.canvas, split.shape.height, split.shape.width
                ),
            ));
        }
        let mut rng = StdRng::seed_from_u64(options.seed);
        let (shape, pixels) = place(&split, classes, options, name == "train", &mut rng);
        let prefix = if name == "test" { "t10k" } else { "train" };
        super::idx::write_gz(out, prefix, shape, &split.labels, &pixels)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_distinct_and_inside_the_border() {
        for classes in [2, 10, 100] {
            let slots = patch_slots(40, classes);
            let distinct: std::collections::BTreeSet<_> = slots.iter().collect();
            assert_eq!(distinct.len(), classes.min(4 * 36), "{classes}");
            for &(y, x) in &slots {
                assert!(y + PATCH <= 40 && x + PATCH <= 40);
                assert!(
                    y == 0 || x == 0 || y == 36 || x == 36,
                    "({y}, {x}) is on the border"
                );
            }
        }
    }
}
