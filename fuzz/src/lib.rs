//! What the fuzz targets share: the small limits they decode under, the checks every dataset
//! decode must pass, and the framing that packs several files into one fuzz input (`fuzz/seeds.py`
//! writes seeds in it).

use std::path::Path;

use dataset::{DataError, Dataset, Limits};

/// Caps small enough that one input decodes in milliseconds; the parsers must refuse, not
/// allocate, beyond them.
pub const LIMITS: Limits = Limits {
    max_expanded_bytes: 8 << 20,
    max_entries: 256,
    max_examples: 4096,
    max_image_bytes: 1 << 20,
    max_classes: 1000,
    max_expansion_ratio: 100,
    min_free_bytes: 0,
};

/// Opens the dataset at `path` and decodes all of it. Errors are fine; panics are not, and
/// neither is an error that names an archive's entry as a path on disk (`upload/train/a.png`
/// instead of `upload:train/a.png`) or a split whose loaded examples disagree with its
/// summary.
pub fn decode_everything(path: &Path) {
    let dataset = match Dataset::open(path, LIMITS) {
        Ok(dataset) => dataset,
        Err(err) => return check_error(&err, path),
    };
    let summary = match dataset.summarize() {
        Ok(summary) => summary,
        Err(err) => return check_error(&err, path),
    };
    for split in &summary.splits {
        match dataset.load_split(&split.name) {
            Ok(data) => {
                assert_eq!(data.len() as u64, split.examples, "split {}", split.name);
                assert_eq!(data.shape, split.shape, "split {}", split.name);
                let size = (split.shape.height * split.shape.width * split.shape.channels) as usize;
                assert_eq!(data.pixels.len(), data.len() * size, "split {}", split.name);
                assert!(
                    data.labels
                        .iter()
                        .all(|&l| (l as usize) < summary.classes.len()),
                    "split {}: a label beyond the {} classes",
                    split.name,
                    summary.classes.len()
                );
            }
            Err(err) => check_error(&err, path),
        }
    }
}

fn check_error(err: &DataError, path: &Path) {
    if path.is_dir() {
        return;
    }
    let message = err.to_string();
    let inside = format!("{}{}", path.display(), std::path::MAIN_SEPARATOR);
    assert!(
        !message.contains(&inside),
        "the error names an archive entry as a path on disk: {message}"
    );
}

/// Splits an input into length-prefixed parts: each part is a little-endian u16 length, then
/// that many bytes; a last part without a full prefix takes what is left.
pub fn parts(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 {
            out.push(data);
            break;
        }
        let len = usize::from(u16::from_le_bytes([data[0], data[1]]));
        let rest = &data[2..];
        let len = len.min(rest.len());
        out.push(&rest[..len]);
        data = &rest[len..];
    }
    out
}
