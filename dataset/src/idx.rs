//! MNIST-style IDX files: `<prefix>-images-idx3-ubyte` (N x H x W, or N x H x W x C) and
//! `<prefix>-labels-idx1-ubyte` (N), each plain or gzip-compressed. Elements must be u8.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use schema::ImageShape;

use super::archive::at_end;
use super::limits::ImageArray;
use super::{DataError, Example, Files, Limits};

/// The images and labels files of one split.
#[derive(Debug, Clone)]
pub(crate) struct IdxSplit {
    pub name: String,
    pub images: PathBuf,
    pub labels: PathBuf,
}

/// IDX element type code for unsigned bytes.
const UBYTE: u8 = 0x08;

/// An open IDX stream positioned after its header.
struct IdxStream<'r> {
    reader: Box<dyn Read + 'r>,
    dims: Vec<u32>,
    /// Bytes after the header, when known without decompressing (plain files).
    plain_payload: Option<u64>,
}

/// Parses the header of the IDX file `path` (`length` bytes, read from `reader`).
fn open<'r>(
    mut reader: &'r mut dyn Read,
    length: u64,
    path: &Path,
) -> Result<IdxStream<'r>, DataError> {
    let mut magic = [0u8; 2];
    read_exact(&mut reader, &mut magic, path, "the IDX header")?;
    let (mut reader, plain): (Box<dyn Read + 'r>, bool) = if magic == [0x1f, 0x8b] {
        let chained = io::Cursor::new(magic).chain(reader);
        (Box::new(BufReader::new(GzDecoder::new(chained))), false)
    } else {
        (Box::new(io::Cursor::new(magic).chain(reader)), true)
    };
    let mut head = [0u8; 4];
    read_exact(&mut reader, &mut head, path, "the IDX header")?;
    if head[0] != 0 || head[1] != 0 {
        return Err(DataError::invalid(
            path,
            "not an IDX file (the first two bytes must be zero)",
        ));
    }
    if head[2] != UBYTE {
        return Err(DataError::invalid(
            path,
            format!(
                "IDX element type 0x{:02x} is not supported; images and labels must be \
                 unsigned bytes (0x08)",
                head[2]
            ),
        ));
    }
    let ndims = head[3] as usize;
    if ndims == 0 {
        return Err(DataError::invalid(
            path,
            "IDX header declares zero dimensions",
        ));
    }
    let mut dims = Vec::with_capacity(ndims);
    for _ in 0..ndims {
        let mut dim = [0u8; 4];
        read_exact(&mut reader, &mut dim, path, "the IDX header")?;
        dims.push(u32::from_be_bytes(dim));
    }
    let header_len = 4 + 4 * ndims as u64;
    Ok(IdxStream {
        reader,
        dims,
        plain_payload: plain.then(|| length.saturating_sub(header_len)),
    })
}

fn read_exact(
    reader: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    what: &str,
) -> Result<(), DataError> {
    reader.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            DataError::invalid(path, format!("file ends inside {what} (truncated)"))
        }
        _ => DataError::invalid(path, format!("cannot read {what}: {e}")),
    })
}

/// Checks that a plain file holds exactly `expected` payload bytes.
fn check_plain_length(stream: &IdxStream<'_>, path: &Path, expected: u64) -> Result<(), DataError> {
    match stream.plain_payload {
        Some(actual) if actual != expected => Err(DataError::invalid(
            path,
            format!(
                "IDX header dimensions {:?} need {expected} bytes of data but the file holds \
                 {actual}",
                stream.dims
            ),
        )),
        _ => Ok(()),
    }
}

/// Refuses bytes after the declared data.
fn check_trailing(stream: &mut IdxStream<'_>, path: &Path) -> Result<(), DataError> {
    match at_end(&mut stream.reader) {
        Ok(true) => Ok(()),
        Ok(false) => Err(DataError::invalid(
            path,
            format!(
                "file holds more data than its IDX header dimensions {:?} declare",
                stream.dims
            ),
        )),
        Err(e) => Err(DataError::invalid(path, format!("cannot read: {e}"))),
    }
}

/// Reads a labels file: every label, in file order.
pub(crate) fn read_labels(
    files: &Files,
    path: &Path,
    limits: &Limits,
) -> Result<Vec<u8>, DataError> {
    let length = files.len(path)?;
    files.read(path, |reader| labels_from(reader, length, path, limits))
}

fn labels_from(
    reader: &mut dyn Read,
    length: u64,
    path: &Path,
    limits: &Limits,
) -> Result<Vec<u8>, DataError> {
    let mut stream = open(reader, length, path)?;
    let [count] = stream.dims[..] else {
        return Err(DataError::invalid(
            path,
            format!(
                "a labels file must have one dimension, this one has {:?}",
                stream.dims
            ),
        ));
    };
    if u64::from(count) > limits.max_examples {
        return Err(DataError::limit(
            path,
            format!(
                "declares {count} labels, more than the limit of {} examples",
                limits.max_examples
            ),
        ));
    }
    check_plain_length(&stream, path, u64::from(count))?;
    let mut labels = vec![0u8; count as usize];
    read_exact(&mut stream.reader, &mut labels, path, "the labels")?;
    check_trailing(&mut stream, path)?;
    Ok(labels)
}

impl IdxSplit {
    /// Decodes every example in file order, calling `visit` for each.
    pub(crate) fn decode(
        &self,
        files: &Files,
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        let labels = read_labels(files, &self.labels, limits)?;
        let path = self.images.as_path();
        let length = files.len(path)?;
        files.read(path, |reader| {
            self.images_from(reader, length, &labels, limits, visit)
        })
    }

    fn images_from(
        &self,
        reader: &mut dyn Read,
        length: u64,
        labels: &[u8],
        limits: &Limits,
        visit: &mut dyn FnMut(Example<'_>) -> Result<(), DataError>,
    ) -> Result<ImageShape, DataError> {
        let path = self.images.as_path();
        let mut stream = open(reader, length, path)?;
        let (count, shape) = match stream.dims[..] {
            [n, h, w] => (
                n,
                ImageShape {
                    height: h,
                    width: w,
                    channels: 1,
                },
            ),
            [n, h, w, c] if c == 1 || c == 3 => (
                n,
                ImageShape {
                    height: h,
                    width: w,
                    channels: c,
                },
            ),
            _ => {
                return Err(DataError::invalid(
                    path,
                    format!(
                        "an images file must have dimensions [N, H, W] or [N, H, W, C] with C \
                         1 or 3; this one has {:?}",
                        stream.dims
                    ),
                ));
            }
        };
        let dims: Vec<u64> = stream.dims.iter().map(|&d| u64::from(d)).collect();
        let record = ImageArray {
            path,
            dims: &dims,
            shape,
            count: u64::from(count),
            labels_path: &self.labels,
            labels: labels.len(),
        }
        .record_bytes(limits)?;
        let total = record * u64::from(count);
        check_plain_length(&stream, path, total)?;
        let mut pixels = vec![0u8; record as usize];
        for (index, &label) in labels.iter().enumerate() {
            stream
                .reader
                .read_exact(&mut pixels)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => DataError::invalid(
                        path,
                        format!("file ends after {index} of {count} images (truncated)"),
                    ),
                    _ => DataError::invalid(path, format!("cannot read image {index}: {e}")),
                })?;
            visit(Example {
                label: u32::from(label),
                pixels: &pixels,
            })?;
        }
        check_trailing(&mut stream, path)?;
        Ok(shape)
    }
}

/// Writes `<prefix>-images-idx3-ubyte.gz` (or idx4 for colour) and
/// `<prefix>-labels-idx1-ubyte.gz` into `dir`; labels must be below 256.
pub(crate) fn write_gz(
    dir: &Path,
    prefix: &str,
    shape: ImageShape,
    labels: &[u32],
    pixels: &[u8],
) -> Result<(), DataError> {
    use std::io::Write as _;
    let write = |name: String, dims: &[u32], payload: &[u8]| -> Result<(), DataError> {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).map_err(|e| DataError::io(&path, e))?;
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut header = vec![0, 0, UBYTE, dims.len() as u8];
        for d in dims {
            header.extend_from_slice(&d.to_be_bytes());
        }
        gz.write_all(&header)
            .and_then(|()| gz.write_all(payload))
            .and_then(|()| gz.finish().map(drop))
            .map_err(|e| DataError::io(&path, e))
    };
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let n = labels.len() as u32;
    let label_bytes = labels
        .iter()
        .map(|&l| {
            u8::try_from(l).map_err(|_| {
                DataError::invalid(dir, format!("label {l} does not fit IDX's u8 labels"))
            })
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let (kind, dims) = if shape.channels == 1 {
        (3, vec![n, shape.height, shape.width])
    } else {
        (4, vec![n, shape.height, shape.width, shape.channels])
    };
    write(format!("{prefix}-images-idx{kind}-ubyte.gz"), &dims, pixels)?;
    write(format!("{prefix}-labels-idx1-ubyte.gz"), &[n], &label_bytes)
}

/// Recognises IDX file names: `<prefix>-images-idx3-ubyte`, `<prefix>-labels-idx1-ubyte`, with
/// `.` allowed for the separators (as in `train-images.idx3-ubyte`) and an optional `.gz`.
/// Returns the prefix and whether the file holds images.
pub(crate) fn parse_file_name(name: &str) -> Option<(&str, bool)> {
    let stem = name.strip_suffix(".gz").unwrap_or(name);
    let parts: Vec<&str> = stem.split(['-', '.']).collect();
    let [prefix, role, idx, "ubyte"] = parts[..] else {
        return None;
    };
    if prefix.is_empty() || !idx.starts_with("idx") {
        return None;
    }
    match role {
        "images" => Some((prefix, true)),
        "labels" => Some((prefix, false)),
        _ => None,
    }
}

/// The split an IDX prefix names: `train` and `t10k` are `train` and `test`.
pub(crate) fn split_name(prefix: &str) -> String {
    match prefix {
        "t10k" => "test".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_in_the_mnist_styles_are_recognised() {
        assert_eq!(
            parse_file_name("train-images-idx3-ubyte"),
            Some(("train", true))
        );
        assert_eq!(
            parse_file_name("t10k-labels-idx1-ubyte.gz"),
            Some(("t10k", false))
        );
        assert_eq!(
            parse_file_name("train-images.idx3-ubyte"),
            Some(("train", true))
        );
        assert_eq!(parse_file_name("README.md"), None);
        assert_eq!(split_name("t10k"), "test");
    }
}
