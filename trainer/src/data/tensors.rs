//! Splits as burn tensors, and the validation protocol: which examples the student trains on
//! and on which examples L_V is measured (a trusted split, or a seeded hold-out of train).

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::SeedableRng as _;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use schema::artifact::Validation;
use schema::{DatasetSummary, ImageShape, LearnConfig};

use super::{DataError, Dataset, SplitData};
use crate::models::{Input, Network};
use crate::nn::loss;

/// The split the trainer uses for L_V when the dataset has it and the config names none.
pub const DEFAULT_VALIDATION_SPLIT: &str = "val";

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

    /// [`Self::mean_loss`] and its gradient in theta by the explicit backward: no autodiff graph
    /// is built (`theta` should be a plain tensor), at a fraction of autodiff's cost.
    pub fn mean_loss_gradient(&self, net: &Network, theta: &Tensor<1>) -> (Tensor<1>, f32) {
        let (logits, trace) = net.forward(theta, Input::Image(self.images.clone()), None);
        let loss = loss::weighted_mean(&logits, &self.onehot, None);
        let dlogits = loss::weighted_mean_backward(&logits, &self.onehot, None);
        let grad = net.backward(theta, &trace, dlogits);
        (grad, crate::hypergrad::scalar(&loss))
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

    /// These examples followed by `other`'s.
    pub fn concat(&self, other: &Self) -> Self {
        Self {
            images: Tensor::cat(vec![self.images.clone(), other.images.clone()], 0),
            onehot: Tensor::cat(vec![self.onehot.clone(), other.onehot.clone()], 0),
        }
    }
}

/// Pixels (HWC u8) to a [n, c, h, w] tensor in [0, 1], labels to one-hot.
pub fn to_tensors(split: &SplitData, classes: usize, device: &Device) -> LabelledImages {
    let (h, w, c) = (
        split.shape.height as usize,
        split.shape.width as usize,
        split.shape.channels as usize,
    );
    let n = split.len();
    let mut chw = vec![0f32; split.pixels.len()];
    for i in 0..n {
        let image = split.image(i);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    chw[((i * c + ch) * h + y) * w + x] =
                        f32::from(image[(y * w + x) * c + ch]) / 255.0;
                }
            }
        }
    }
    let labels: Vec<i64> = split.labels.iter().map(|&l| i64::from(l)).collect();
    LabelledImages {
        images: Tensor::from_data(TensorData::new(chw, [n, c, h, w]), device),
        onehot: loss::one_hot(&index_tensor(&labels, device), classes),
    }
}

/// A vector of indices as a device tensor.
pub fn index_tensor(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// The train split in canonical order, the examples the student trains on, and the examples
/// L_V is measured on.
pub struct PreparedData {
    pub summary: DatasetSummary,
    pub train: LabelledImages,
    /// Canonical train indices the student trains on (sorted).
    pub pool: Vec<i64>,
    /// The examples of L_V.
    pub validation: LabelledImages,
    /// Where they come from, as the manifest records it.
    pub validation_ref: Validation,
}

/// Why a validation protocol cannot be used (the message names the value).
fn invalid(message: String) -> DataError {
    DataError::Invalid {
        location: "validation_split".to_owned(),
        problem: message,
    }
}

/// Which split L_V is measured on under `config` for a dataset with `splits`: the named one,
/// else `val` when present, else None (a hold-out of train).
pub fn validation_split_name(config: &LearnConfig, splits: &[&str]) -> Option<String> {
    match &config.validation_split {
        Some(name) => Some(name.clone()),
        None => splits
            .contains(&DEFAULT_VALIDATION_SPLIT)
            .then(|| DEFAULT_VALIDATION_SPLIT.to_owned()),
    }
}

/// Loads train and the validation examples as `config` asks: a split of its own (checked: not
/// `test`, present, the train split's image shape, every class train has), or a seeded hold-out
/// of `validation_examples` train examples.
pub fn prepare(
    dataset: &Dataset,
    config: &LearnConfig,
    device: &Device,
) -> Result<PreparedData, DataError> {
    let summary = dataset.summarize()?;
    let split = dataset.load_split("train")?;
    let classes = summary.classes.len();
    let train = to_tensors(&split, classes, device);
    let n = split.len();
    let batch = config.batch_size.max(1) as usize;
    let splits = dataset.split_names();
    if let Some(name) = validation_split_name(config, &splits) {
        if name == schema::bounds::TEST_SPLIT {
            return Err(invalid(
                "\"test\" is never used for learning; name a trusted split such as \"val\"".into(),
            ));
        }
        if name == "train" {
            return Err(invalid(
                "\"train\" is the split being learned from; leave validation_split unset for a hold-out of it".into(),
            ));
        }
        if !splits.contains(&name.as_str()) {
            return Err(invalid(format!(
                "the dataset has no split {name:?}; its splits are {splits:?}"
            )));
        }
        let val = dataset.load_split(&name)?;
        if val.shape != split.shape {
            return Err(invalid(format!(
                "split {name:?} holds {} images but train holds {}",
                val.shape, split.shape
            )));
        }
        let present: std::collections::BTreeSet<u32> = val.labels.iter().copied().collect();
        if let Some(missing) = split.labels.iter().find(|l| !present.contains(l)) {
            return Err(invalid(format!(
                "split {name:?} has no example of class {:?}, which train has; a validation split needs every class",
                summary
                    .classes
                    .get(*missing as usize)
                    .cloned()
                    .unwrap_or_else(|| missing.to_string())
            )));
        }
        if n < batch {
            return Err(invalid(format!(
                "the train split has {n} examples: too few to fill a batch of {batch}"
            )));
        }
        return Ok(PreparedData {
            summary,
            train,
            pool: (0..n as i64).collect(),
            validation_ref: Validation::Split {
                split: name,
                examples: val.len() as u64,
            },
            validation: to_tensors(&val, classes, device),
        });
    }
    let wanted = match config.validation_examples {
        Some(explicit) => explicit as usize,
        None => (n / 5).clamp(1, 1000),
    };
    if n < wanted + batch {
        return Err(invalid(format!(
            "the train split has {n} examples: too few to hold out {wanted} for validation and still fill a batch of {batch} \
             (lower validation_examples)"
        )));
    }
    let indices = holdout_indices(n, wanted, config.seed);
    let held: std::collections::HashSet<u64> = indices.iter().copied().collect();
    let pool: Vec<i64> = (0..n as u64)
        .filter(|i| !held.contains(i))
        .map(|i| i as i64)
        .collect();
    let chosen: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Ok(PreparedData {
        summary,
        validation: train.select(&index_tensor(&chosen, device)),
        train,
        pool,
        validation_ref: Validation::holdout(indices),
    })
}

/// `count` of `n` canonical train indices drawn with `seed` (sorted).
pub fn holdout_indices(n: usize, count: usize, seed: u64) -> Vec<u64> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut chosen: Vec<u64> = order[..count.min(n)].iter().map(|&i| i as u64).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Limits;
    use crate::nn::testing::device;
    use dataset::testing::write_splits;

    const SHAPE: ImageShape = ImageShape {
        height: 4,
        width: 4,
        channels: 1,
    };

    fn labels(n: u32) -> Vec<u32> {
        (0..n).map(|i| i % 3).collect()
    }

    fn dataset(dir: &std::path::Path, val: Option<(ImageShape, Vec<u32>)>) -> Dataset {
        let mut splits = vec![("train", SHAPE, labels(30)), ("t10k", SHAPE, labels(6))];
        if let Some((shape, labels)) = val {
            splits.push(("val", shape, labels));
        }
        write_splits(dir, &splits);
        Dataset::open(dir, Limits::default()).expect("open")
    }

    fn config(split: Option<&str>) -> LearnConfig {
        LearnConfig {
            validation_split: split.map(str::to_owned),
            batch_size: 4,
            ..LearnConfig::default()
        }
    }

    #[test]
    fn a_val_split_is_used_by_default_and_train_is_trained_on_whole() {
        let dir = tempfile::tempdir().expect("tmp");
        let dataset = dataset(dir.path(), Some((SHAPE, labels(9))));
        let data = prepare(&dataset, &config(None), &device()).expect("prepare");
        assert_eq!(
            data.validation_ref,
            Validation::Split {
                split: "val".into(),
                examples: 9
            }
        );
        assert_eq!(data.validation.len(), 9);
        assert_eq!(data.pool, (0..30).collect::<Vec<i64>>());
    }

    #[test]
    fn without_a_val_split_a_seeded_hold_out_of_train_is_used() {
        let dir = tempfile::tempdir().expect("tmp");
        let dataset = dataset(dir.path(), None);
        let data = prepare(&dataset, &config(None), &device()).expect("prepare");
        let held = data.validation_ref.holdout_indices().to_vec();
        assert_eq!(held.len(), 6, "a fifth of train");
        assert_eq!(data.pool.len(), 24);
        assert!(data.pool.iter().all(|i| !held.contains(&(*i as u64))));
    }

    #[test]
    fn unusable_validation_splits_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tmp");
        let good = dataset(dir.path(), Some((SHAPE, labels(9))));
        let refused = |dataset: &Dataset, split: Option<&str>| {
            prepare(dataset, &config(split), &device())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(refused(&good, Some("test")).contains("never used for learning"));
        let unknown = refused(&good, Some("holdout"));
        assert!(
            unknown.contains("no split \"holdout\"") && unknown.contains("\"val\""),
            "{unknown}"
        );

        let dir = tempfile::tempdir().expect("tmp");
        let missing_class = dataset(dir.path(), Some((SHAPE, vec![0, 1, 0, 1])));
        let err = refused(&missing_class, None);
        assert!(err.contains("no example of class \"2\""), "{err}");

        let dir = tempfile::tempdir().expect("tmp");
        let other_shape = ImageShape { height: 5, ..SHAPE };
        let err = refused(&dataset(dir.path(), Some((other_shape, labels(9)))), None);
        assert!(
            err.contains("holds 5x4x1 images but train holds 4x4x1"),
            "{err}"
        );
    }

    /// The explicit-backward validation gradient the engine uses agrees with autodiff of the
    /// validation loss it replaces, on a CBR student (conv, batch norm, pooling, ReLU, linear).
    #[test]
    fn the_explicit_validation_gradient_agrees_with_autodiff() {
        use crate::hypergrad::{leaf, scalar};
        use crate::nn::testing::{random, values};
        use rand::Rng as _;
        use schema::arch::NetSpec;
        let shape = ImageShape {
            height: 12,
            width: 12,
            channels: 2,
        };
        let net = Network::new(&NetSpec::Cbr, "student.", shape, 0, 3);
        let mut rng = StdRng::seed_from_u64(7);
        let theta = net.init(&mut rng, &device());
        let labels: Vec<i64> = (0..16).map(|_| rng.random_range(0..3)).collect();
        let examples = LabelledImages {
            images: random([16, 2, 12, 12]),
            onehot: loss::one_hot(
                &Tensor::<1, Int>::from_data(TensorData::new(labels, [16]), &device()),
                3,
            ),
        };
        let (explicit, value) = examples.mean_loss_gradient(&net, &theta);
        let theta_leaf = leaf(&theta);
        let loss = examples.mean_loss(&net, &theta_leaf);
        let want_value = scalar(&loss);
        let grads = loss.backward();
        let want = values(&theta_leaf.grad(&grads).expect("gradient"));
        let got = values(&explicit);
        assert!((value - want_value).abs() < 1e-6, "{value} vs {want_value}");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-4 * scale.max(1.0),
            "worst difference {worst} (scale {scale})"
        );
    }
}
