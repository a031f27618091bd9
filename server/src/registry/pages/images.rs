//! PNG images through one encoder: dataset examples (`GET /v1/datasets/{digest}/splits/{split}/
//! examples/{index}.png`, shown on dataset pages) and attention-mask insights with their inputs
//! (`/commentaries/{id}/masks/{i}/{image.png|mask.png}`).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use image::ExtendedColorType;

use super::insights::Masks;
use crate::registry::app::SharedState;
use crate::registry::commentaries;
use crate::registry::datasets::LoadedSplit;
use crate::registry::error::{ApiError, ApiResult, ErrorKind};
use crate::registry::extract::{ApiPath, CommentaryId};

/// Encodes 8-bit pixels (interleaved, row-major) as PNG.
fn png(pixels: &[u8], width: u32, height: u32, colour: ExtendedColorType) -> ApiResult<Vec<u8>> {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        pixels,
        width,
        height,
        colour,
    )
    .map_err(ApiError::internal)?;
    Ok(png)
}

/// Example `index` of a decoded split as PNG bytes, and its label id.
pub fn example_png(loaded: &LoadedSplit, index: usize) -> ApiResult<(Vec<u8>, u32)> {
    let data = &loaded.data;
    if index >= data.len() {
        return Err(ApiError::not_found(format!(
            "split {:?} has {} examples; there is no example {index}",
            loaded.split,
            data.len()
        )));
    }
    let shape = data.shape;
    let color = match shape.channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        n => {
            return Err(ApiError::new(
                ErrorKind::Unsupported,
                format!("cannot draw images with {n} channels"),
            ));
        }
    };
    let png = png(data.image(index), shape.width, shape.height, color)?;
    Ok((png, data.labels[index]))
}

/// `{i}` and `{layer}` of a mask image's path.
#[derive(serde::Deserialize)]
pub struct MaskPath {
    i: usize,
    layer: String,
}

/// An attention-mask insight as PNG: `image.png` (the input, scaled to 0-255) or `mask.png`
/// (the mask as red with its value as opacity).
pub async fn mask_png(
    State(state): State<SharedState>,
    id: CommentaryId,
    ApiPath(MaskPath { i, layer }): ApiPath<MaskPath>,
) -> Response {
    let result = async {
        let model = commentaries::find(&state, &id).await?;
        let tensors = commentaries::tensors(&state, &model).await?;
        let masks = Masks::decode(&tensors)?
            .ok_or_else(|| ApiError::not_found("this commentary has no masks"))?;
        if i >= masks.n {
            return Err(ApiError::not_found(format!("there are {} masks", masks.n)));
        }
        match layer.as_str() {
            "mask.png" => mask_layer(&masks, i),
            "image.png" => input_layer(&masks, i),
            _ => Err(ApiError::not_found("layer is image.png or mask.png")),
        }
    }
    .await;
    match result {
        Ok(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            png,
        )
            .into_response(),
        Err(err) => err.into_response(),
    }
}

/// Mask `i` as red with opacity from the mask's lowest value (clear) to its highest (opaque):
/// where the mask puts weight relative to the rest of the image, whatever its range ((0, 1) or
/// (0.5, 1.5) around 1). A uniform mask is drawn at half opacity.
fn mask_layer(masks: &Masks<'_>, i: usize) -> ApiResult<Vec<u8>> {
    let mask = masks.mask(i);
    let (lo, hi) = mask
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &m| {
            (lo.min(m), hi.max(m))
        });
    let opacity = |m: f32| {
        if hi - lo > 1e-6 {
            ((m - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    };
    let pixels: Vec<u8> = mask
        .iter()
        .flat_map(|&m| [213, 94, 0, (opacity(m) * 255.0) as u8])
        .collect();
    png(
        &pixels,
        masks.width as u32,
        masks.height as u32,
        ExtendedColorType::Rgba8,
    )
}

/// Input `i`, scaled to 0-255 (grey, RGB, or the first channel of anything else).
fn input_layer(masks: &Masks<'_>, i: usize) -> ApiResult<Vec<u8>> {
    let channels = masks.channels;
    let plane = masks.height * masks.width;
    let values = masks.image(i);
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let scale = |v: f32| {
        if hi > lo {
            ((v - lo) / (hi - lo) * 255.0) as u8
        } else {
            0
        }
    };
    // Stored channel-first; PNG wants interleaved.
    let pixels: Vec<u8> = (0..plane)
        .flat_map(|p| (0..channels).map(move |c| (p, c)))
        .map(|(p, c)| scale(values[c * plane + p]))
        .collect();
    let colour = if channels == 3 {
        ExtendedColorType::Rgb8
    } else {
        ExtendedColorType::L8
    };
    let pixels = if channels == 3 || channels == 1 {
        pixels
    } else {
        pixels.into_iter().step_by(channels).collect()
    };
    png(&pixels, masks.width as u32, masks.height as u32, colour)
}
