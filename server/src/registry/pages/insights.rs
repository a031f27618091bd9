//! Insight tensors (`insight.*` in an artifact) decoded once into small typed views for the pages,
//! their shapes checked: a tensor of the wrong shape is an error, never an out-of-bounds index.
//! A view whose tensors are absent decodes to `None` (the page leaves that part out).

use schema::artifact::{INSIGHT_PREFIX, TensorMap};

use crate::registry::commentaries::values_f64;
use crate::registry::error::{ApiError, ApiResult};

/// The shape and values (as f64, whatever the stored dtype) of insight tensor `name`.
fn get<'a>(tensors: &'a TensorMap, name: &str) -> Option<(&'a [usize], Vec<f64>)> {
    let tensor = tensors.get(&format!("{INSIGHT_PREFIX}{name}"))?;
    Some((tensor.shape(), values_f64(tensor.values())))
}

/// Refuses a tensor whose shape is not `expected`.
fn check(name: &str, shape: &[usize], expected: &[usize]) -> ApiResult<()> {
    if shape == expected {
        Ok(())
    } else {
        Err(ApiError::internal(anyhow::anyhow!(
            "insight tensor {INSIGHT_PREFIX}{name} has shape {shape:?}; expected {expected:?}"
        )))
    }
}

/// The examples some insights record: their canonical indices and labels.
///
/// # Shapes
/// `indices [samples]`, `labels [samples]`.
pub struct Sample {
    /// Canonical index of each example in its split.
    pub indices: Vec<u64>,
    /// Class id of each example.
    pub labels: Vec<usize>,
}

impl Sample {
    pub fn decode(tensors: &TensorMap) -> ApiResult<Option<Self>> {
        let (Some((index_shape, indices)), Some((label_shape, labels))) =
            (get(tensors, "indices"), get(tensors, "labels"))
        else {
            return Ok(None);
        };
        let n = indices.len();
        check("indices", index_shape, &[n])?;
        check("labels", label_shape, &[n])?;
        Ok(Some(Self {
            indices: indices.iter().map(|&i| i as u64).collect(),
            labels: labels.iter().map(|&l| l as usize).collect(),
        }))
    }
}

/// Example weighting: the mean weight per class at a few inner iterations (the curriculum).
///
/// # Shapes
/// `iterations [points]`, `class_mean_weights [points, classes]`.
pub struct Curriculum {
    /// The inner iterations recorded.
    pub iterations: Vec<f64>,
    /// Row-major `[points, classes]`.
    means: Vec<f64>,
    classes: usize,
}

impl Curriculum {
    pub fn decode(tensors: &TensorMap, classes: usize) -> ApiResult<Option<Self>> {
        let (Some((mean_shape, means)), Some((iteration_shape, iterations))) = (
            get(tensors, "class_mean_weights"),
            get(tensors, "iterations"),
        ) else {
            return Ok(None);
        };
        let points = iterations.len();
        check("iterations", iteration_shape, &[points])?;
        check("class_mean_weights", mean_shape, &[points, classes])?;
        Ok(Some(Self {
            iterations,
            means,
            classes,
        }))
    }

    /// The mean weight of `class` at recorded point `point`.
    pub fn mean(&self, point: usize, class: usize) -> f64 {
        self.means[point * self.classes + class]
    }
}

/// Example weighting: the weights of a fixed sample of training examples at a few inner
/// iterations.
///
/// # Shapes
/// `iterations [points]`, `weights [points, samples]`, with the `Sample` `[samples]`.
pub struct SampleWeights {
    /// The inner iterations recorded.
    pub iterations: Vec<f64>,
    /// Row-major `[points, samples]`.
    weights: Vec<f64>,
    /// The examples weighed.
    pub sample: Sample,
}

impl SampleWeights {
    pub fn decode(tensors: &TensorMap) -> ApiResult<Option<Self>> {
        let (Some((weight_shape, weights)), Some((iteration_shape, iterations))) =
            (get(tensors, "weights"), get(tensors, "iterations"))
        else {
            return Ok(None);
        };
        let Some(sample) = Sample::decode(tensors)? else {
            return Ok(None);
        };
        let points = iterations.len();
        check("iterations", iteration_shape, &[points])?;
        check("weights", weight_shape, &[points, sample.indices.len()])?;
        Ok(Some(Self {
            iterations,
            weights,
            sample,
        }))
    }

    /// Recorded points (iterations).
    pub fn points(&self) -> usize {
        self.iterations.len()
    }

    /// The weights of every sampled example at recorded point `point`: `[samples]`.
    pub fn at(&self, point: usize) -> &[f64] {
        let samples = self.sample.indices.len();
        &self.weights[point * samples..(point + 1) * samples]
    }
}

/// Label blending: the proportion λ of each class's image kept when blended with another class.
///
/// # Shapes
/// `blend [classes, classes]` (row: the class, column: the class it is blended with).
pub struct Blend {
    /// Row-major `[classes, classes]`.
    values: Vec<f64>,
    classes: usize,
}

impl Blend {
    pub fn decode(tensors: &TensorMap, classes: usize) -> ApiResult<Option<Self>> {
        let Some((shape, values)) = get(tensors, "blend") else {
            return Ok(None);
        };
        check("blend", shape, &[classes, classes])?;
        Ok(Some(Self { values, classes }))
    }

    /// All proportions, row-major `[classes, classes]`.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// λ of class `row` blended with class `col`.
    pub fn get(&self, row: usize, col: usize) -> f64 {
        self.values[row * self.classes + col]
    }
}

/// Attention masks of a few validation examples, with the inputs they were computed for.
///
/// # Shapes
/// `masks [n, height, width]` (0-1), `images [n, channels, height, width]` (channel-first).
pub struct Masks<'a> {
    masks: &'a [f32],
    images: &'a [f32],
    /// Examples recorded.
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl<'a> Masks<'a> {
    /// `None` when the commentary has no masks (or they are not f32).
    pub fn decode(tensors: &'a TensorMap) -> ApiResult<Option<Self>> {
        let (Some(masks), Some(images)) = (
            tensors.get(&format!("{INSIGHT_PREFIX}masks")),
            tensors.get(&format!("{INSIGHT_PREFIX}images")),
        ) else {
            return Ok(None);
        };
        let (Some(mask_values), Some(image_values)) = (masks.as_f32(), images.as_f32()) else {
            return Ok(None);
        };
        let &[n, height, width] = masks.shape() else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "insight tensor {INSIGHT_PREFIX}masks has shape {:?}; expected [n, height, width]",
                masks.shape()
            )));
        };
        let channels = images.shape().get(1).copied().unwrap_or(1).max(1);
        check("images", images.shape(), &[n, channels, height, width])?;
        Ok(Some(Self {
            masks: mask_values,
            images: image_values,
            n,
            height,
            width,
            channels,
        }))
    }

    /// Mask `i`: `[height, width]`, row-major.
    pub fn mask(&self, i: usize) -> &[f32] {
        let plane = self.height * self.width;
        &self.masks[i * plane..(i + 1) * plane]
    }

    /// Input `i`: `[channels, height, width]`, channel-first.
    pub fn image(&self, i: usize) -> &[f32] {
        let size = self.channels * self.height * self.width;
        &self.images[i * size..(i + 1) * size]
    }
}

#[cfg(test)]
mod tests {
    use schema::artifact::{Tensor, TensorValues};

    use super::*;

    fn map(entries: Vec<(&str, Vec<usize>, TensorValues)>) -> TensorMap {
        entries
            .into_iter()
            .map(|(name, shape, values)| {
                let tensor = Tensor::new(shape, values).expect("a consistent tensor");
                (format!("{INSIGHT_PREFIX}{name}"), tensor)
            })
            .collect()
    }

    fn f32s(n: usize) -> TensorValues {
        TensorValues::F32((0..n).map(|i| i as f32 / n as f32).collect())
    }

    fn i64s(n: usize) -> TensorValues {
        TensorValues::I64((0..n as i64).collect())
    }

    #[test]
    fn weighting_insights_decode_into_rows_per_recorded_iteration() {
        let tensors = map(vec![
            ("iterations", vec![3], i64s(3)),
            ("weights", vec![3, 4], f32s(12)),
            ("class_mean_weights", vec![3, 2], f32s(6)),
            ("indices", vec![4], i64s(4)),
            ("labels", vec![4], TensorValues::I64(vec![0, 1, 0, 1])),
        ]);
        let weights = SampleWeights::decode(&tensors)
            .expect("valid shapes")
            .expect("present");
        assert_eq!(weights.points(), 3);
        let third_row: Vec<f64> = (8..12).map(|i| f64::from(i as f32 / 12.0)).collect();
        assert_eq!(weights.at(2), third_row.as_slice());
        assert_eq!(weights.sample.labels, [0, 1, 0, 1]);
        let curriculum = Curriculum::decode(&tensors, 2)
            .expect("valid shapes")
            .expect("present");
        assert_eq!(curriculum.mean(2, 1), f64::from(5.0f32 / 6.0));
    }

    #[test]
    fn absent_insights_decode_to_nothing() {
        let tensors = map(vec![("iterations", vec![3], i64s(3))]);
        assert!(SampleWeights::decode(&tensors).expect("no error").is_none());
        assert!(Curriculum::decode(&tensors, 2).expect("no error").is_none());
        assert!(Blend::decode(&tensors, 2).expect("no error").is_none());
        assert!(Masks::decode(&tensors).expect("no error").is_none());
    }

    #[test]
    fn tensors_of_the_wrong_shape_are_errors_not_out_of_bounds_reads() {
        let short_weights = map(vec![
            ("iterations", vec![5], i64s(5)),
            ("weights", vec![2, 4], f32s(8)),
            ("indices", vec![4], i64s(4)),
            ("labels", vec![4], i64s(4)),
        ]);
        assert!(SampleWeights::decode(&short_weights).is_err());
        let uneven_sample = map(vec![
            ("indices", vec![4], i64s(4)),
            ("labels", vec![3], i64s(3)),
        ]);
        assert!(Sample::decode(&uneven_sample).is_err());
        let few_classes = map(vec![
            ("iterations", vec![2], i64s(2)),
            ("class_mean_weights", vec![2, 3], f32s(6)),
            ("blend", vec![3, 3], f32s(9)),
        ]);
        assert!(Curriculum::decode(&few_classes, 10).is_err());
        assert!(Blend::decode(&few_classes, 10).is_err());
        assert!(Blend::decode(&few_classes, 3).is_ok_and(|b| b.is_some()));
        let fewer_images = map(vec![
            ("masks", vec![4, 2, 2], f32s(16)),
            ("images", vec![2, 1, 2, 2], f32s(8)),
        ]);
        assert!(Masks::decode(&fewer_images).is_err());
        let flat_masks = map(vec![
            ("masks", vec![16], f32s(16)),
            ("images", vec![4, 1, 2, 2], f32s(16)),
        ]);
        assert!(Masks::decode(&flat_masks).is_err());
    }

    #[test]
    fn masks_and_their_inputs_are_sliced_per_example() {
        let tensors = map(vec![
            ("masks", vec![2, 1, 2], f32s(4)),
            ("images", vec![2, 3, 1, 2], f32s(12)),
        ]);
        let masks = Masks::decode(&tensors)
            .expect("valid shapes")
            .expect("present");
        assert_eq!(
            (masks.n, masks.channels, masks.height, masks.width),
            (2, 3, 1, 2)
        );
        assert_eq!(masks.mask(1), &[0.5, 0.75]);
        assert_eq!(masks.image(1).len(), 6);
    }
}
