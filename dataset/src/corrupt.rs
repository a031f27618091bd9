//! `dataset corrupt`: a variant of a dataset with known problems, for measuring whether a
//! commentary fixes them. It first holds out a class-balanced clean `val` split from train,
//! then corrupts the rest of train (long-tailed class counts, flipped labels, a
//! class-correlated patch); `test` stays clean. `corruption.json` records what was done,
//! including every flipped label's index in the corrupted train split's canonical order.

use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use schema::corruption::{
    CORRUPTION_FILE, CorruptionOptions, CorruptionRecord, FlippedLabel, NoiseKind,
};

use super::spurious::{self, SpuriousOptions};
use super::{DataError, Dataset, Limits, SplitData, record_hash};

/// Checks the options against a dataset with `classes` classes.
fn check(options: &CorruptionOptions, out: &Path) -> Result<(), DataError> {
    let bad = |m: String| Err(DataError::invalid(out, m));
    if !options.label_noise.is_finite() || !(0.0..1.0).contains(&options.label_noise) {
        return bad(format!(
            "--label-noise is {}; it must be in [0, 1)",
            options.label_noise
        ));
    }
    if !options.imbalance.is_finite() || options.imbalance < 1.0 {
        return bad(format!(
            "--imbalance is {}; it is the largest over the smallest class count, at least 1",
            options.imbalance
        ));
    }
    Ok(())
}

/// Examples of `split` at `indices`, in that order.
fn subset(split: &SplitData, indices: &[usize]) -> SplitData {
    let mut pixels = Vec::with_capacity(indices.len() * split.image(0).len());
    for &i in indices {
        pixels.extend_from_slice(split.image(i));
    }
    SplitData {
        shape: split.shape,
        labels: indices.iter().map(|&i| split.labels[i]).collect(),
        pixels,
    }
}

/// Writes the corrupted variant of `dataset` to `out` (gzipped IDX: train, val, test) with
/// `corruption.json`, and returns the record.
pub fn write_corrupted(
    dataset: &Dataset,
    out: &Path,
    options: &CorruptionOptions,
) -> Result<CorruptionRecord, DataError> {
    check(options, out)?;
    let source_digest = dataset.summarize()?.digest;
    let classes = dataset.classes().len();
    let train = dataset.load_split("train")?;
    let mut rng = StdRng::seed_from_u64(options.seed);

    // 1. The clean, class-balanced val split.
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &label) in train.labels.iter().enumerate() {
        by_class[label as usize].push(i);
    }
    let per_class = |c: usize| {
        options.clean_val as usize / classes + usize::from(c < options.clean_val as usize % classes)
    };
    let mut val = Vec::new();
    let mut rest: Vec<Vec<usize>> = Vec::with_capacity(classes);
    for (c, members) in by_class.iter_mut().enumerate() {
        members.shuffle(&mut rng);
        let take = per_class(c);
        if members.len() <= take {
            return Err(DataError::invalid(
                out,
                format!(
                    "--clean-val {} needs {take} examples of class {:?} and leaves none to train on: the class has {}",
                    options.clean_val,
                    dataset.classes()[c],
                    members.len()
                ),
            ));
        }
        val.extend_from_slice(&members[..take]);
        rest.push(members[take..].to_vec());
    }

    // 2. Long-tailed class counts: n_c = n_max * r^(-c / (C - 1)).
    let n_max = rest.iter().map(Vec::len).min().unwrap_or(0);
    let mut kept: Vec<usize> = Vec::new();
    for (c, members) in rest.iter().enumerate() {
        let count = if options.imbalance > 1.0 && classes > 1 {
            let exponent = -(c as f64) / (classes - 1) as f64;
            ((n_max as f64 * options.imbalance.powf(exponent)).round() as usize).max(1)
        } else {
            members.len()
        };
        kept.extend_from_slice(&members[..count.min(members.len())]);
    }
    kept.sort_unstable();
    let mut noisy = subset(&train, &kept);
    let truth = noisy.labels.clone();

    // 3. Flipped labels.
    let flips = (options.label_noise * noisy.len() as f64).round() as usize;
    let mut order: Vec<usize> = (0..noisy.len()).collect();
    order.shuffle(&mut rng);
    if classes > 1 {
        for &i in &order[..flips] {
            let c = noisy.labels[i] as usize;
            noisy.labels[i] = match options.noise {
                NoiseKind::Pair => ((c + 1) % classes) as u32,
                NoiseKind::Symmetric => {
                    let other = rng.random_range(0..classes - 1);
                    (if other >= c { other + 1 } else { other }) as u32
                }
            };
        }
    }
    val.sort_unstable();
    let mut val = subset(&train, &val);
    let mut test = dataset.load_split("test")?;

    // 4. The spurious patch: by the (given) label in train, at random in val and test.
    if options.spurious {
        let canvas = options.canvas.unwrap_or(40) as usize;
        let spurious_options = SpuriousOptions {
            canvas,
            seed: options.seed,
        };
        let needed = train.shape.height.max(train.shape.width) as usize + 2 * spurious::PATCH;
        if canvas < needed {
            return Err(DataError::invalid(
                out,
                format!(
                    "--canvas {canvas} cannot hold the images with their patches; use at least {needed}"
                ),
            ));
        }
        let mut patch_rng = StdRng::seed_from_u64(options.seed ^ 0x5A7C);
        for (split, correlated) in [(&mut noisy, true), (&mut val, false), (&mut test, false)] {
            let (shape, pixels) =
                spurious::place(split, classes, spurious_options, correlated, &mut patch_rng);
            split.shape = shape;
            split.pixels = pixels;
        }
    }

    super::idx::write_gz(out, "train", noisy.shape, &noisy.labels, &noisy.pixels)?;
    if !val.is_empty() {
        super::idx::write_gz(out, "val", val.shape, &val.labels, &val.pixels)?;
    }
    super::idx::write_gz(out, "t10k", test.shape, &test.labels, &test.pixels)?;

    // The canonical order of the corrupted train split: sorted record hashes.
    let mut canonical: Vec<([u8; 32], usize)> = (0..noisy.len())
        .map(|i| (record_hash(noisy.labels[i], noisy.image(i)), i))
        .collect();
    canonical.sort_unstable();
    let mut flipped: Vec<FlippedLabel> = canonical
        .iter()
        .enumerate()
        .filter(|(_, (_, i))| noisy.labels[*i] != truth[*i])
        .map(|(index, &(_, i))| FlippedLabel {
            index: index as u64,
            true_class: truth[i],
            label: noisy.labels[i],
        })
        .collect();
    flipped.sort_by_key(|f| f.index);
    let mut class_counts = vec![0u64; classes];
    for &label in &noisy.labels {
        class_counts[label as usize] += 1;
    }
    let digest = Dataset::open(out, Limits::default())?.summarize()?.digest;
    let record = CorruptionRecord {
        source_digest,
        digest,
        options: options.clone(),
        train_examples: noisy.len() as u64,
        class_counts,
        flipped,
    };
    let path = out.join(CORRUPTION_FILE);
    let json =
        serde_json::to_vec_pretty(&record).map_err(|e| DataError::invalid(&path, e.to_string()))?;
    std::fs::write(&path, json).map_err(|e| DataError::io(&path, e))?;
    Ok(record)
}

/// Reads the `corruption.json` at `path`, checking it describes the dataset with `digest`.
pub fn read_corruption(
    path: &Path,
    digest: &schema::Sha256,
) -> Result<CorruptionRecord, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let record: CorruptionRecord = serde_json::from_slice(&bytes)
        .map_err(|e| DataError::invalid(path, format!("not a corruption record: {e}")))?;
    if &record.digest != digest {
        return Err(DataError::invalid(
            path,
            format!(
                "describes dataset {} (corrupted from {}), not this dataset {digest}",
                record.digest, record.source_digest
            ),
        ));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::write_splits;
    use schema::ImageShape;

    const SHAPE: ImageShape = ImageShape {
        height: 4,
        width: 4,
        channels: 1,
    };

    fn source(dir: &Path, per_class: u32) -> Dataset {
        let train: Vec<u32> = (0..3 * per_class).map(|i| i % 3).collect();
        let test: Vec<u32> = (0..9).map(|i| i % 3).collect();
        write_splits(dir, &[("train", SHAPE, train), ("t10k", SHAPE, test)]);
        Dataset::open(dir, Limits::default()).expect("open")
    }

    fn options() -> CorruptionOptions {
        CorruptionOptions {
            label_noise: 0.0,
            noise: NoiseKind::Symmetric,
            imbalance: 1.0,
            spurious: false,
            canvas: None,
            clean_val: 6,
            seed: 5,
        }
    }

    /// A source of 20 examples per class, corrupted with `options`.
    struct Corrupted {
        _src: tempfile::TempDir,
        out: tempfile::TempDir,
        dataset: Dataset,
        record: CorruptionRecord,
    }

    fn corrupt(options: &CorruptionOptions) -> Corrupted {
        let (src, out) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let dataset = source(src.path(), 20);
        let record = write_corrupted(&dataset, out.path(), options).expect("corrupt");
        Corrupted {
            _src: src,
            out,
            dataset,
            record,
        }
    }

    #[test]
    fn pair_noise_flips_the_rate_and_records_each_flip_in_canonical_order() {
        let Corrupted {
            _src,
            out,
            dataset,
            record,
        } = corrupt(&CorruptionOptions {
            label_noise: 0.5,
            noise: NoiseKind::Pair,
            ..options()
        });
        let corrupted = Dataset::open(out.path(), Limits::default()).expect("open");
        assert_eq!(corrupted.split_names(), vec!["train", "test", "val"]);
        let train = corrupted.load_split("train").expect("train");
        let val = corrupted.load_split("val").expect("val");
        assert_eq!((train.len(), val.len()), (54, 6));
        assert_eq!(record.train_examples, 54);
        assert_eq!(record.flipped.len(), 27);
        assert_eq!(record.digest, corrupted.summarize().expect("digest").digest);
        assert_eq!(
            record.source_digest,
            dataset.summarize().expect("digest").digest
        );
        // The true class of each image: its label in the source (images are distinct).
        let original = dataset.load_split("train").expect("train");
        let truth: std::collections::HashMap<&[u8], u32> = (0..original.len())
            .map(|i| (original.image(i), original.labels[i]))
            .collect();
        let flipped: std::collections::HashSet<u64> =
            record.flipped.iter().map(|f| f.index).collect();
        for f in &record.flipped {
            let i = f.index as usize;
            assert_eq!(train.labels[i], f.label);
            assert_eq!(truth[train.image(i)], f.true_class);
            assert_eq!(f.label, (f.true_class + 1) % 3, "pair noise is c -> c+1");
        }
        for i in 0..train.len() {
            let clean = truth[train.image(i)] == train.labels[i];
            assert_eq!(clean, !flipped.contains(&(i as u64)), "example {i}");
        }
        // val is clean and balanced.
        for i in 0..val.len() {
            assert_eq!(truth[val.image(i)], val.labels[i]);
        }
        let mut per_class = [0; 3];
        val.labels.iter().for_each(|&l| per_class[l as usize] += 1);
        assert_eq!(per_class, [2, 2, 2]);
    }

    #[test]
    fn imbalance_gives_long_tailed_class_counts() {
        let record = corrupt(&CorruptionOptions {
            imbalance: 4.0,
            ..options()
        })
        .record;
        // n_max = 18 after val; 18 * 4^0, 18 * 4^-0.5, 18 * 4^-1.
        assert_eq!(record.class_counts, vec![18, 9, 5]);
        assert!(record.flipped.is_empty());
    }

    #[test]
    fn out_of_range_options_are_refused_by_name() {
        let (src, out) = (
            tempfile::tempdir().expect("tmp"),
            tempfile::tempdir().expect("tmp"),
        );
        let dataset = source(src.path(), 4);
        let cases = [
            (
                CorruptionOptions {
                    label_noise: 1.0,
                    ..options()
                },
                "--label-noise is 1",
            ),
            (
                CorruptionOptions {
                    imbalance: 0.5,
                    ..options()
                },
                "--imbalance is 0.5",
            ),
            (
                CorruptionOptions {
                    clean_val: 12,
                    ..options()
                },
                "--clean-val 12 needs 4 examples of class",
            ),
        ];
        for (options, expected) in cases {
            let err = write_corrupted(&dataset, out.path(), &options)
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
