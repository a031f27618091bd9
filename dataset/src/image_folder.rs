//! Image folders: `<split>/<class>/*.png|jpg|jpeg`. Greyscale images decode to one channel,
//! everything else to three (alpha dropped); every image of a split must share one shape.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use schema::ImageShape;

use super::{DataError, Example, Files, Limits};

/// The image files of one split with their labels.
#[derive(Debug, Clone)]
pub(crate) struct FolderSplit {
    pub name: String,
    /// Image files (sorted by path) and their label ids.
    pub files: Vec<(PathBuf, u32)>,
}

/// File extensions read as images (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Whether a file name looks like an image this decoder reads.
pub(crate) fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Refuses an image file larger than the limit before it is read.
fn check_file_size(files: &Files, path: &Path, limits: &Limits) -> Result<(), DataError> {
    let size = files.len(path)?;
    if size > limits.max_image_bytes {
        return Err(DataError::limit(
            path,
            format!(
                "image file is {size} bytes, more than the limit of {}",
                limits.max_image_bytes
            ),
        ));
    }
    Ok(())
}

/// Decodes one image file (its bytes read from `reader`) to HWC u8 with 1 (greyscale) or 3
/// channels.
fn decode_image(
    path: &Path,
    reader: &mut dyn Read,
    limits: &Limits,
) -> Result<(ImageShape, Vec<u8>), DataError> {
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::invalid(path, format!("cannot read image: {e}")))?;
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?;
    let mut image_limits = image::Limits::default();
    // The decoder may hold up to 8 bytes per pixel (16-bit RGBA) before conversion.
    image_limits.max_alloc = Some(limits.max_image_bytes.saturating_mul(8));
    reader.limits(image_limits);
    let image = reader
        .decode()
        .map_err(|e| DataError::invalid(path, format!("cannot decode image: {e}")))?;
    let (width, height) = (image.width(), image.height());
    let (channels, pixels) = if image.color().has_color() {
        (3, image.into_rgb8().into_raw())
    } else {
        (1, image.into_luma8().into_raw())
    };
    let shape = ImageShape {
        height,
        width,
        channels,
    };
    if pixels.len() as u64 > limits.max_image_bytes {
        return Err(DataError::limit(
            path,
            format!(
                "a {shape} image is {} bytes, more than the limit of {}",
                pixels.len(),
                limits.max_image_bytes
            ),
        ));
    }
    Ok((shape, pixels))
}

impl FolderSplit {
    /// Decodes every image in container order (path order in a folder), calling `visit` for
    /// each; all images must share the first image's shape.
    pub(crate) fn decode(
        &self,
        files: &Files,
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        for (path, _) in &self.files {
            check_file_size(files, path, limits)?;
        }
        let paths: Vec<&Path> = self.files.iter().map(|(path, _)| path.as_path()).collect();
        let mut first: Option<(ImageShape, &Path)> = None;
        files.read_each(&paths, |i, reader| {
            let (path, label) = &self.files[i];
            let (shape, pixels) = decode_image(path, reader, limits)?;
            match first {
                None => first = Some((shape, path)),
                Some((expected, first_path)) if expected != shape => {
                    return Err(DataError::invalid(
                        path,
                        format!(
                            "image is {shape} (HxWxC) but {} in the same split is {expected}; \
                             every image of split {:?} must have one size and channel count",
                            first_path.display(),
                            self.name
                        ),
                    ));
                }
                Some(_) => {}
            }
            visit(Example {
                label: *label,
                pixels: &pixels,
            })
        })?;
        first
            .map(|(shape, _)| shape)
            .ok_or_else(|| DataError::invalid(Path::new(&self.name), "split holds no images"))
    }
}
