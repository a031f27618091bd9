//! NumPy datasets: a `.npz` file (a zip of `.npy` arrays, as `np.savez` writes it; the archive
//! module reads it in place) or a folder of the same `.npy` files:
//!
//! - `<split>_images.npy`: uint8, [N, H, W] (one channel) or [N, H, W, C] with C 1 or 3, C order;
//! - `<split>_labels.npy`: N integer label ids (any signed or unsigned integer dtype);
//! - `classes.npy` (optional): the class names, a 1-D string array (`<U` or `|S`), indexed by
//!   label id; without it the classes are the decimal ids `"0"` .. the largest label, as for IDX.
//!
//! This is the container the Python client pushes: it keeps label ids and class names exactly,
//! so arrays, torchvision and Hugging Face datasets reach the registry with the digest they
//! have in Python.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use npyz::{DType, NpyFile, Order, TypeChar};
use schema::ImageShape;

use super::archive::at_end;
use super::limits::ImageArray;
use super::{DataError, Example, Files, Limits};

/// The file of the class names.
pub(crate) const CLASSES_FILE: &str = "classes.npy";
const IMAGES_SUFFIX: &str = "_images.npy";
const LABELS_SUFFIX: &str = "_labels.npy";

/// The images and labels arrays of one split.
#[derive(Debug, Clone)]
pub(crate) struct NpzSplit {
    pub name: String,
    pub images: PathBuf,
    pub labels: PathBuf,
}

/// What a `.npy` file in a NumPy dataset is.
pub(crate) enum NpyRole<'a> {
    Images(&'a str),
    Labels(&'a str),
    Classes,
}

/// The role of a file name in a NumPy dataset, if it has one.
pub(crate) fn parse_file_name(name: &str) -> Option<NpyRole<'_>> {
    if name == CLASSES_FILE {
        return Some(NpyRole::Classes);
    }
    let split = |suffix| name.strip_suffix(suffix).filter(|s: &&str| !s.is_empty());
    split(IMAGES_SUFFIX)
        .map(NpyRole::Images)
        .or_else(|| split(LABELS_SUFFIX).map(NpyRole::Labels))
}

/// Whether a file name looks like a NumPy array (any `.npy`, so stray arrays are reported).
pub(crate) fn is_npy(name: &str) -> bool {
    name.ends_with(".npy")
}

/// Parses the header of the `.npy` file `path` from `reader`, leaving it at the first data
/// byte.
fn read_header(reader: &mut dyn Read, path: &Path) -> Result<npyz::NpyHeader, DataError> {
    let preamble = checked_preamble(reader, path)?;
    let header = NpyFile::new(io::Cursor::new(preamble).chain(reader))
        .map_err(|e| DataError::invalid(path, format!("not a readable .npy array: {e}")))?
        .header()
        .clone();
    if header.uses_pickled_array() {
        return Err(DataError::invalid(
            path,
            "holds Python objects (a pickled array); save plain numbers or strings",
        ));
    }
    if header.order() == Order::Fortran && header.shape().len() > 1 {
        return Err(DataError::invalid(
            path,
            "is in Fortran order; save np.ascontiguousarray(array) instead",
        ));
    }
    Ok(header)
}

/// The longest `.npy` header read (the most a version-1 header can hold; numpy writes a few
/// hundred bytes).
const MAX_HEADER_BYTES: usize = 65_535;
/// How deep brackets may nest in a header: a plain array's is a dict holding a shape tuple
/// (2), a structured dtype's a few more. npyz's header parser takes exponential time in the
/// depth (found by the `dataset_files` fuzz target: 300 `[` ran for minutes).
const MAX_HEADER_DEPTH: usize = 4;

/// Reads a `.npy` file's magic, version and header, refusing headers past the length or
/// nesting bounds before npyz parses them; returns the bytes read, for npyz to parse.
fn checked_preamble(reader: &mut dyn Read, path: &Path) -> Result<Vec<u8>, DataError> {
    let unreadable =
        |e: io::Error| DataError::invalid(path, format!("not a readable .npy array: {e}"));
    let mut preamble = vec![0u8; 8];
    reader.read_exact(&mut preamble).map_err(unreadable)?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err(DataError::invalid(
            path,
            "not a .npy array (it does not start with \\x93NUMPY)",
        ));
    }
    let length_bytes = if preamble[6] == 1 { 2 } else { 4 };
    let mut length = [0u8; 4];
    reader
        .read_exact(&mut length[..length_bytes])
        .map_err(unreadable)?;
    preamble.extend_from_slice(&length[..length_bytes]);
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_HEADER_BYTES {
        return Err(DataError::invalid(
            path,
            format!(
                "its header is {length} bytes, more than the {MAX_HEADER_BYTES} a .npy header may hold"
            ),
        ));
    }
    let start = preamble.len();
    preamble.resize(start + length, 0);
    reader
        .read_exact(&mut preamble[start..])
        .map_err(unreadable)?;
    let depth = nesting_depth(&preamble[start..]);
    if depth > MAX_HEADER_DEPTH {
        return Err(DataError::invalid(
            path,
            format!(
                "its header nests brackets {depth} deep; a .npy header is a dict of descr, \
                 fortran_order and shape"
            ),
        ));
    }
    Ok(preamble)
}

/// The deepest nesting of `(`, `[` and `{` outside quoted strings.
fn nesting_depth(header: &[u8]) -> usize {
    let (mut depth, mut deepest, mut quote) = (0usize, 0usize, None);
    for &byte in header {
        match (quote, byte) {
            (Some(open), _) if byte == open => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(byte),
            (None, b'(' | b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn plain_type(header: &npyz::NpyHeader, path: &Path) -> Result<npyz::TypeStr, DataError> {
    match header.dtype() {
        DType::Plain(t) => Ok(t),
        other => Err(DataError::invalid(
            path,
            format!(
                "has a structured dtype {}; expected plain numbers",
                other.descr()
            ),
        )),
    }
}

/// Reads a labels array: one integer id per example, each fitting in u32.
pub(crate) fn read_labels(
    files: &Files,
    path: &Path,
    limits: &Limits,
) -> Result<Vec<u32>, DataError> {
    files.read(path, |reader| labels_from(reader, path, limits))
}

fn labels_from(
    mut reader: &mut dyn Read,
    path: &Path,
    limits: &Limits,
) -> Result<Vec<u32>, DataError> {
    let header = read_header(reader, path)?;
    let dtype = plain_type(&header, path)?;
    let [count] = header.shape()[..] else {
        return Err(DataError::invalid(
            path,
            format!(
                "labels must be a 1-D array; this one has shape {:?}",
                header.shape()
            ),
        ));
    };
    if count > limits.max_examples {
        return Err(DataError::limit(
            path,
            format!(
                "holds {count} labels, more than the limit of {} examples",
                limits.max_examples
            ),
        ));
    }
    let size = dtype.size_field() as usize;
    let signed = match dtype.type_char() {
        TypeChar::Int => true,
        TypeChar::Uint => false,
        _ => {
            return Err(DataError::invalid(
                path,
                format!("labels have dtype {dtype}; expected integers (e.g. int64 or uint8)"),
            ));
        }
    };
    if !matches!(size, 1 | 2 | 4 | 8) {
        return Err(DataError::invalid(
            path,
            format!("labels have an unsupported integer dtype {dtype}"),
        ));
    }
    let big_endian = dtype.endianness() == npyz::Endianness::Big && size > 1;
    let mut bytes = [0u8; 8];
    let mut labels = Vec::with_capacity(count as usize);
    for index in 0..count {
        let slot = &mut bytes[..size];
        read_exact(&mut reader, slot, path, index, count, "labels")?;
        if big_endian {
            slot.reverse();
        }
        let mut wide = [0u8; 8];
        wide[..size].copy_from_slice(slot);
        let negative = signed && slot[size - 1] & 0x80 != 0;
        let value = u64::from_le_bytes(wide);
        match u32::try_from(value) {
            Ok(label) if !negative => labels.push(label),
            _ => {
                return Err(DataError::invalid(
                    path,
                    format!("label {index} is negative or does not fit in 32 bits"),
                ));
            }
        }
    }
    expect_end(&mut reader, path)?;
    Ok(labels)
}

/// Reads the class names array.
pub(crate) fn read_classes(files: &Files, path: &Path) -> Result<Vec<String>, DataError> {
    files.read(path, |reader| classes_from(reader, path))
}

fn classes_from(reader: &mut dyn Read, path: &Path) -> Result<Vec<String>, DataError> {
    let preamble = checked_preamble(reader, path)?;
    let npy = NpyFile::new(io::Cursor::new(preamble).chain(reader))
        .map_err(|e| DataError::invalid(path, format!("not a readable .npy array: {e}")))?;
    if npy.shape().len() != 1 {
        return Err(DataError::invalid(
            path,
            format!(
                "class names must be a 1-D array of strings; this one has shape {:?}",
                npy.shape()
            ),
        ));
    }
    let unreadable =
        |e: io::Error| DataError::invalid(path, format!("cannot read a class name: {e}"));
    let names: Vec<String> = match npy.try_data::<String>() {
        Ok(reader) => reader.collect::<io::Result<_>>().map_err(unreadable)?,
        Err(npy) => match npy.try_data::<Vec<u8>>() {
            Ok(reader) => reader
                .map(|bytes| {
                    let bytes = bytes.map_err(unreadable)?;
                    String::from_utf8(bytes)
                        .map_err(|_| DataError::invalid(path, "a class name is not valid UTF-8"))
                })
                .collect::<Result<_, _>>()?,
            Err(npy) => {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "class names have dtype {}; expected strings (numpy `<U` or `|S`)",
                        npy.dtype().descr()
                    ),
                ));
            }
        },
    };
    if names.is_empty() {
        return Err(DataError::invalid(path, "holds no class names"));
    }
    let mut seen = BTreeMap::new();
    for (index, name) in names.iter().enumerate() {
        if let Some(first) = seen.insert(name.as_str(), index) {
            return Err(DataError::invalid(
                path,
                format!("classes {first} and {index} are both named {name:?}"),
            ));
        }
    }
    Ok(names)
}

impl NpzSplit {
    /// Decodes every example in array order, calling `visit` for each.
    pub(crate) fn decode(
        &self,
        files: &Files,
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        let labels = read_labels(files, &self.labels, limits)?;
        files.read(&self.images, |reader| {
            self.images_from(reader, &labels, limits, visit)
        })
    }

    fn images_from(
        &self,
        mut reader: &mut dyn Read,
        labels: &[u32],
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        let path = self.images.as_path();
        let header = read_header(reader, path)?;
        let dtype = plain_type(&header, path)?;
        if dtype.type_char() != TypeChar::Uint || dtype.size_field() != 1 {
            return Err(DataError::invalid(
                path,
                format!(
                    "images have dtype {dtype}; expected uint8 pixels (convert with \
                     (x * 255).round().astype(np.uint8) for floats in [0, 1])"
                ),
            ));
        }
        let dims = header.shape();
        let dim = |d: u64| {
            u32::try_from(d)
                .map_err(|_| DataError::invalid(path, format!("image dimension {d} is too large")))
        };
        let (count, shape) = match dims[..] {
            [n, h, w] => (n, (dim(h)?, dim(w)?, 1)),
            [n, h, w, c] if c == 1 || c == 3 => (n, (dim(h)?, dim(w)?, c as u32)),
            _ => {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "images must have shape [N, H, W] or [N, H, W, C] with C 1 or 3; this \
                         one has {dims:?}"
                    ),
                ));
            }
        };
        let shape = ImageShape {
            height: shape.0,
            width: shape.1,
            channels: shape.2,
        };
        let record = ImageArray {
            path,
            dims,
            shape,
            count,
            labels_path: &self.labels,
            labels: labels.len(),
        }
        .record_bytes(limits)?;
        let mut pixels = vec![0u8; record as usize];
        for (index, &label) in labels.iter().enumerate() {
            read_exact(
                &mut reader,
                &mut pixels,
                path,
                index as u64,
                count,
                "images",
            )?;
            visit(Example {
                label,
                pixels: &pixels,
            })?;
        }
        expect_end(&mut reader, path)?;
        Ok(shape)
    }
}

fn read_exact(
    reader: &mut impl Read,
    buffer: &mut [u8],
    path: &Path,
    index: u64,
    count: u64,
    what: &str,
) -> Result<(), DataError> {
    reader.read_exact(buffer).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => DataError::invalid(
            path,
            format!("file ends after {index} of {count} {what} (truncated)"),
        ),
        _ => DataError::io(path, e),
    })
}

fn expect_end(reader: &mut impl Read, path: &Path) -> Result<(), DataError> {
    if at_end(reader).map_err(|e| DataError::io(path, e))? {
        Ok(())
    } else {
        Err(DataError::invalid(
            path,
            "has bytes after the array its header declares",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `dataset_files` fuzz target: npyz's header parser took minutes on a
    /// header of 300 nested `[`.
    #[test]
    fn deeply_nested_or_overlong_headers_are_refused_before_parsing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("train_labels.npy");
        // The fuzz input's shape: a plain header with 300 `[` after the shape.
        let header = format!(
            "{{'descr': '<i8', 'fortran_order': False, 'shape': (4,),{} }}\n",
            "[".repeat(300)
        );
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[0; 32]);
        std::fs::write(&path, bytes).expect("write");
        let files =
            Files::open(dir.path(), &Limits::default(), &crate::Cancel::new()).expect("open");
        // The bound's own message: npyz never saw the header (it would have run for minutes).
        let err = read_labels(&files, &path, &Limits::default()).expect_err("refused");
        assert!(err.to_string().contains("nests brackets 301 deep"), "{err}");

        let mut long = b"\x93NUMPY\x02\x00".to_vec();
        long.extend_from_slice(&(1u32 << 20).to_le_bytes());
        std::fs::write(&path, long).expect("write");
        let err = read_labels(&files, &path, &Limits::default()).expect_err("refused");
        assert!(err.to_string().contains("more than the 65535"), "{err}");

        // A plain header, a string in quotes holding brackets, and a structured dtype pass
        // the bound (the structured one is refused later, by its dtype).
        assert_eq!(nesting_depth(b"{'descr': '<u1', 'shape': (4, 3), }"), 2);
        assert_eq!(nesting_depth(b"{'descr': '[(', 'shape': (4,), }"), 2);
        assert_eq!(
            nesting_depth(b"{'descr': [('a', '<i4', (2,))], 'shape': (4,), }"),
            4
        );
    }

    #[test]
    fn file_names_give_split_and_role() {
        assert!(matches!(
            parse_file_name("extra_train_images.npy"),
            Some(NpyRole::Images("extra_train"))
        ));
        assert!(matches!(
            parse_file_name("val_labels.npy"),
            Some(NpyRole::Labels("val"))
        ));
        assert!(matches!(
            parse_file_name("classes.npy"),
            Some(NpyRole::Classes)
        ));
        assert!(parse_file_name("_images.npy").is_none());
        assert!(parse_file_name("weights.npy").is_none());
        assert!(is_npy("weights.npy") && !is_npy("train-images-idx3-ubyte"));
    }
}
