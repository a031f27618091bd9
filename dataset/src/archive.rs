//! Safe extraction of `.tar`, `.tar.gz` and `.zip` archives into a temporary folder.
//!
//! Entries whose paths would escape the folder, links and special files are refused; the total
//! expanded size and the entry count are capped while bytes stream, so a decompression bomb
//! stops at the limit instead of filling the disk. Nothing is written outside the folder, and
//! the folder is deleted when the returned [`TempDir`] drops.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write as _};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;
use tempfile::TempDir;

use super::{Cancel, DataError, Limits, disk};

/// What kind of archive a file is, judged by its bytes, not its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Tar,
    TarGz,
    Zip,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZIP_MAGIC: [u8; 4] = *b"PK\x03\x04";
const EMPTY_ZIP_MAGIC: [u8; 4] = *b"PK\x05\x06";

/// Identifies the archive kind of `path`, or explains what it is not.
pub fn detect(path: &Path) -> Result<ArchiveKind, DataError> {
    let mut head = [0u8; 512];
    let n = read_up_to(
        File::open(path).map_err(|e| DataError::io(path, e))?,
        &mut head,
    )
    .map_err(|e| DataError::io(path, e))?;
    let head = &head[..n];
    if head.starts_with(&ZIP_MAGIC) || head.starts_with(&EMPTY_ZIP_MAGIC) {
        return Ok(ArchiveKind::Zip);
    }
    if is_tar_header(head) {
        return Ok(ArchiveKind::Tar);
    }
    if head.starts_with(&GZIP_MAGIC) {
        let mut inner = [0u8; 512];
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let n = read_up_to(GzDecoder::new(file), &mut inner).map_err(|e| {
            DataError::invalid(path, format!("gzip data is truncated or corrupt: {e}"))
        })?;
        if is_tar_header(&inner[..n]) {
            return Ok(ArchiveKind::TarGz);
        }
        return Err(DataError::invalid(
            path,
            "a single gzip-compressed file is not a dataset; give the folder that holds it, \
             or a .tar.gz or .zip of that folder",
        ));
    }
    Err(DataError::invalid(
        path,
        "not a dataset: expected a folder, a .tar, .tar.gz or .zip archive",
    ))
}

fn is_tar_header(block: &[u8]) -> bool {
    block.len() >= 262 && &block[257..262] == b"ustar"
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(mut reader: impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Extracts `archive` into a new temporary folder (under `temp_root`, or the system's temporary
/// directory) and returns it.
pub fn extract(
    archive: &Path,
    kind: ArchiveKind,
    limits: &Limits,
    temp_root: Option<&Path>,
    cancel: &Cancel,
) -> Result<TempDir, DataError> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("commentary-extract-");
    let dir = match temp_root {
        Some(root) => builder.tempdir_in(root),
        None => builder.tempdir(),
    }
    .map_err(|e| DataError::io(temp_root.unwrap_or(&std::env::temp_dir()), e))?;
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut budget = Budget::new(archive, limits, cancel);
    let extracted = match kind {
        ArchiveKind::Tar => extract_tar(archive, BufReader::new(file), dir.path(), &mut budget),
        ArchiveKind::TarGz => extract_tar(
            archive,
            GzDecoder::new(BufReader::new(file)),
            dir.path(),
            &mut budget,
        ),
        ArchiveKind::Zip => extract_zip(archive, file, dir.path(), &mut budget),
    };
    // Errors name entries inside the archive, never the temporary folder.
    extracted.map_err(|e| e.relocate(dir.path(), archive))?;
    Ok(dir)
}

/// Running totals against the limits.
struct Budget<'a> {
    archive: &'a Path,
    limits: &'a Limits,
    /// Checked before every entry and every buffer copied.
    cancel: &'a Cancel,
    /// The most the archive may expand to (bytes cap and ratio).
    cap: u64,
    entries: u64,
    bytes: u64,
    /// Free space is checked when `bytes` reaches this (first before anything is written).
    next_space_check: u64,
    /// One copy buffer for every entry (an archive may hold millions of small ones).
    buffer: Vec<u8>,
}

/// Free space is checked again after every this many bytes written (across all entries).
const FREE_SPACE_EVERY: u64 = 64 << 20;

impl<'a> Budget<'a> {
    fn new(archive: &'a Path, limits: &'a Limits, cancel: &'a Cancel) -> Self {
        let size = std::fs::metadata(archive).map_or(0, |m| m.len());
        Self {
            archive,
            limits,
            cancel,
            cap: limits.expansion_cap(size),
            entries: 0,
            bytes: 0,
            next_space_check: 0,
            buffer: vec![0u8; 256 << 10],
        }
    }

    fn add_entry(&mut self) -> Result<(), DataError> {
        self.cancel.check(self.archive)?;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(DataError::limit(
                self.archive,
                format!(
                    "archive has more than {} entries (the limit); refusing to extract it",
                    self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// Copies `reader` into `dest`, stopping with an error as soon as the total would pass the
    /// expansion cap, or the disk's free space falls under the margin.
    fn copy(&mut self, reader: &mut dyn Read, dest: &Path, entry: &str) -> Result<(), DataError> {
        let mut out = File::create(dest).map_err(|e| self.write_error(dest, e))?;
        loop {
            self.cancel.check(self.archive)?;
            if self.bytes >= self.next_space_check {
                disk::ensure_free(dest, self.limits.min_free_bytes)?;
                self.next_space_check = self.bytes + FREE_SPACE_EVERY;
            }
            let n = match reader.read(&mut self.buffer) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(DataError::invalid(
                        self.archive,
                        format!("entry {entry:?} is truncated or corrupt: {e}"),
                    ));
                }
            };
            if n == 0 {
                return Ok(());
            }
            if self.bytes + n as u64 > self.cap {
                return Err(self.too_large(entry));
            }
            if let Err(e) = out.write_all(&self.buffer[..n]) {
                return Err(self.write_error(dest, e));
            }
            self.bytes += n as u64;
        }
    }

    fn too_large(&self, entry: &str) -> DataError {
        DataError::limit(
            self.archive,
            format!(
                "archive expands to more than {} bytes at entry {entry:?}; refusing to extract it \
                 (a decompression bomb?). The limits: at most {} bytes, and at most {} times the \
                 archive's size (--max-expanded-bytes, --max-expansion-ratio)",
                self.cap, self.limits.max_expanded_bytes, self.limits.max_expansion_ratio
            ),
        )
    }

    fn write_error(&self, dest: &Path, err: io::Error) -> DataError {
        if err.kind() == io::ErrorKind::StorageFull {
            disk::full(dest)
        } else {
            DataError::io(dest, err)
        }
    }
}

/// Checks an entry path and returns where it goes under `root`; refuses absolute paths and
/// `..` components.
fn safe_destination(archive: &Path, root: &Path, entry: &Path) -> Result<PathBuf, DataError> {
    let mut dest = root.to_path_buf();
    for component in entry.components() {
        match component {
            Component::Normal(part) => dest.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(DataError::invalid(
                    archive,
                    format!(
                        "entry {:?} points outside the archive (path traversal); refusing to \
                         extract it",
                        entry.display().to_string()
                    ),
                ));
            }
        }
    }
    Ok(dest)
}

fn create_parent(dest: &Path) -> Result<(), DataError> {
    match dest.parent() {
        Some(parent) => std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e)),
        None => Ok(()),
    }
}

fn extract_tar(
    archive: &Path,
    reader: impl Read,
    root: &Path,
    budget: &mut Budget<'_>,
) -> Result<(), DataError> {
    let corrupt = |e: io::Error| {
        DataError::invalid(archive, format!("tar data is truncated or corrupt: {e}"))
    };
    let mut tar = tar::Archive::new(reader);
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        budget.add_entry()?;
        let path = entry.path().map_err(corrupt)?.into_owned();
        let name = path.display().to_string();
        let dest = safe_destination(archive, root, &path)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&dest).map_err(|e| DataError::io(&dest, e))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                create_parent(&dest)?;
                budget.copy(&mut entry, &dest, &name)?;
            }
            tar::EntryType::Symlink | tar::EntryType::Link => {
                return Err(DataError::invalid(
                    archive,
                    format!("entry {name:?} is a link; datasets must hold plain files"),
                ));
            }
            // pax/GNU metadata entries are consumed by the tar crate; devices and FIFOs are
            // never part of a dataset, so they are skipped rather than created.
            _ => {}
        }
    }
    Ok(())
}

fn extract_zip(
    archive: &Path,
    mut file: File,
    root: &Path,
    budget: &mut Budget<'_>,
) -> Result<(), DataError> {
    let corrupt = |e: zip::result::ZipError| {
        DataError::invalid(archive, format!("zip data is truncated or corrupt: {e}"))
    };
    // The zip crate holds ~200 bytes per entry while it parses the central directory: refuse
    // an archive whose end record declares too many before any of that memory is taken.
    if let Some(declared) =
        declared_zip_entries(&mut file).map_err(|e| DataError::io(archive, e))?
        && declared > budget.limits.max_entries
    {
        return Err(too_many_entries(archive, declared, budget.limits));
    }
    let mut zip = zip::ZipArchive::new(BufReader::new(file)).map_err(corrupt)?;
    if zip.len() as u64 > budget.limits.max_entries {
        return Err(too_many_entries(archive, zip.len() as u64, budget.limits));
    }
    for index in 0..zip.len() {
        let mut entry = zip.by_index(index).map_err(corrupt)?;
        budget.add_entry()?;
        let name = entry.name().map_err(corrupt)?.into_owned();
        let Some(relative) = entry.enclosed_name() else {
            return Err(DataError::invalid(
                archive,
                format!(
                    "entry {name:?} points outside the archive (path traversal); refusing to \
                     extract it"
                ),
            ));
        };
        let dest = safe_destination(archive, root, &relative)?;
        if entry.is_symlink() {
            return Err(DataError::invalid(
                archive,
                format!("entry {name:?} is a link; datasets must hold plain files"),
            ));
        }
        if entry.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| DataError::io(&dest, e))?;
        } else {
            create_parent(&dest)?;
            budget.copy(&mut entry, &dest, &name)?;
        }
    }
    Ok(())
}

fn too_many_entries(archive: &Path, entries: u64, limits: &Limits) -> DataError {
    DataError::limit(
        archive,
        format!(
            "archive has {entries} entries, more than the limit of {} (--max-entries); refusing \
             to extract it",
            limits.max_entries
        ),
    )
}

const END_OF_CENTRAL_DIRECTORY: [u8; 4] = *b"PK\x05\x06";
const ZIP64_END_LOCATOR: [u8; 4] = *b"PK\x06\x07";
const ZIP64_END_OF_CENTRAL_DIRECTORY: [u8; 4] = *b"PK\x06\x06";
/// The end record's fixed part; a comment of up to 64 KiB may follow it.
const END_RECORD_BYTES: u64 = 22;

/// The entry count a zip's end-of-central-directory record (or its zip64 twin) declares, read
/// from the archive's tail without parsing the directory; None when no consistent record is
/// found (the zip crate then reports the archive as corrupt).
fn declared_zip_entries(file: &mut (impl Read + Seek)) -> io::Result<Option<u64>> {
    let size = file.seek(SeekFrom::End(0))?;
    let tail_len = size.min(END_RECORD_BYTES + u64::from(u16::MAX));
    let tail_start = size - tail_len;
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(tail_start))?;
    file.read_exact(&mut tail)?;
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
    let u64_at = |b: &[u8], at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    // The last signature whose comment length reaches exactly to the end of the file.
    let Some(end) = (0..tail.len().saturating_sub(END_RECORD_BYTES as usize - 1))
        .rev()
        .find(|&at| {
            tail[at..at + 4] == END_OF_CENTRAL_DIRECTORY
                && at + END_RECORD_BYTES as usize + usize::from(u16_at(&tail, at + 20))
                    == tail.len()
        })
    else {
        return Ok(None);
    };
    let entries = u16_at(&tail, end + 10);
    if entries != u16::MAX {
        return Ok(Some(u64::from(entries)));
    }
    // Zip64: a 20-byte locator just before the end record points at the zip64 end record.
    let locator_at = (tail_start + end as u64).checked_sub(20);
    let Some(locator_at) = locator_at else {
        return Ok(Some(u64::from(entries)));
    };
    let mut locator = [0u8; 20];
    file.seek(SeekFrom::Start(locator_at))?;
    file.read_exact(&mut locator)?;
    if locator[..4] != ZIP64_END_LOCATOR {
        return Ok(Some(u64::from(entries)));
    }
    let record_at = u64_at(&locator, 8);
    if record_at.checked_add(56).is_none_or(|end| end > size) {
        return Ok(None);
    }
    let mut record = [0u8; 56];
    file.seek(SeekFrom::Start(record_at))?;
    file.read_exact(&mut record)?;
    if record[..4] != ZIP64_END_OF_CENTRAL_DIRECTORY {
        return Ok(None);
    }
    Ok(Some(u64_at(&record, 32)))
}

/// Whether `reader` has no bytes left (decoders use it to refuse trailing data).
pub(crate) fn at_end(reader: &mut impl Read) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(n) => return Ok(n == 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write as _};

    use super::*;

    fn zip_of(entries: usize, comment: &str) -> Vec<u8> {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for i in 0..entries {
            zip.start_file(format!("train/c/{i}.bin"), options)
                .expect("entry");
            zip.write_all(&[i as u8]).expect("write");
        }
        zip.set_comment(comment).expect("comment");
        zip.finish().expect("zip").into_inner()
    }

    #[test]
    fn the_end_record_declares_the_entry_count() {
        for (entries, comment) in [(0, ""), (3, ""), (5, "a comment PK\x05\x06 that looks odd")] {
            let bytes = zip_of(entries, comment);
            let declared = declared_zip_entries(&mut Cursor::new(bytes)).expect("read");
            assert_eq!(
                declared,
                Some(entries as u64),
                "{entries} entries, {comment:?}"
            );
        }
        // Over 65,535 entries the count lives in the zip64 end record.
        let bytes = zip_of(70_000, "");
        let declared = declared_zip_entries(&mut Cursor::new(bytes)).expect("read");
        assert_eq!(declared, Some(70_000));
        // Not a zip, or too short to hold an end record: no count (the zip crate reports it).
        for bytes in [
            b"not a zip at all, just some bytes".to_vec(),
            b"PK".to_vec(),
        ] {
            assert_eq!(
                declared_zip_entries(&mut Cursor::new(bytes)).expect("read"),
                None
            );
        }
    }

    /// The count is checked from the end record, before the central directory is parsed into
    /// memory: an archive declaring too many entries is refused as over the limit even where
    /// its directory would not parse.
    #[test]
    fn too_many_declared_entries_are_refused_before_the_directory_is_parsed() {
        let mut bytes = zip_of(3, "");
        let end = bytes.len() - END_RECORD_BYTES as usize;
        assert_eq!(bytes[end..end + 4], END_OF_CENTRAL_DIRECTORY);
        // Both counts of the end record claim 60,000 entries; the directory holds 3.
        for at in [end + 8, end + 10] {
            bytes[at..at + 2].copy_from_slice(&60_000u16.to_le_bytes());
        }
        let dir = tempfile::tempdir().expect("dir");
        let archive = dir.path().join("claims.zip");
        std::fs::write(&archive, &bytes).expect("write");
        let limits = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        let err = extract(
            &archive,
            ArchiveKind::Zip,
            &limits,
            Some(dir.path()),
            &Cancel::new(),
        )
        .expect_err("refused");
        let message = err.to_string();
        assert!(
            message.contains("60000 entries, more than the limit of 10"),
            "{message}"
        );
        // Under the limit the same archive is reported as corrupt by the zip crate.
        let err = extract(
            &archive,
            ArchiveKind::Zip,
            &Limits::default(),
            Some(dir.path()),
            &Cancel::new(),
        )
        .expect_err("corrupt");
        assert!(
            err.to_string().contains("zip data is truncated or corrupt"),
            "{err}"
        );
    }
}
