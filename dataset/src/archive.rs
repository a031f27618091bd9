//! `.tar`, `.tar.gz` and `.zip` archives, read in place: recognising which kind a file is, and
//! indexing its entries in one pass so that decoders read each file where it lies.
//!
//! Nothing is extracted: an upload takes no disk beyond the archive itself, and a
//! decompression bomb is refused by the sizes its entries declare. Entries whose paths would
//! leave the archive, links, names given twice and special files are refused or passed over
//! while indexing, and the entry count and expanded size are capped.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use super::{Cancel, DataError, Limits};

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

/// Where one file's bytes lie inside its archive.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member {
    /// Uncompressed length.
    pub size: u64,
    /// The entry's position in archive order (the tar entry's number, the zip index).
    pub ordinal: usize,
    /// Plain tar only: where the file's data starts in the archive.
    pub offset: u64,
}

/// One name in a folder of an archive.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Child {
    Dir,
    File(Member),
}

impl Child {
    pub(crate) fn is_dir(self) -> bool {
        matches!(self, Self::Dir)
    }
}

/// What an archive holds: each folder's children by name, keyed by the folder's path relative
/// to the archive's root ("" is the root). Folders that only appear inside longer paths are
/// here too. A file's name is kept once, in its folder (about 80 bytes per entry, measured on a
/// 200k-entry tar).
#[derive(Debug)]
pub(crate) struct Index {
    pub dirs: BTreeMap<PathBuf, BTreeMap<OsString, Child>>,
}

impl Index {
    /// The file at `relative`, if it is one.
    pub(crate) fn file(&self, relative: &Path) -> Option<Member> {
        let siblings = self.dirs.get(relative.parent()?)?;
        match siblings.get(relative.file_name()?)? {
            Child::File(member) => Some(*member),
            Child::Dir => None,
        }
    }
}

/// A zip's parsed central directory, kept to read its entries.
pub(crate) type ZipDirectory = zip::ZipArchive<BufReader<File>>;

/// Lists the entries of `archive` (of `kind`) in one pass, without writing anything: paths
/// that leave the archive, links, names given twice and a name that is both a file and a
/// folder are refused, and the entry count and the expanded size are capped, so a
/// decompression bomb is refused by what it declares. A zip's central directory, parsed for
/// the listing, comes back too, so that reading its entries does not parse it again.
pub(crate) fn index(
    archive: &Path,
    kind: ArchiveKind,
    limits: &Limits,
    cancel: &Cancel,
) -> Result<(Index, Option<ZipDirectory>), DataError> {
    let file = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let length = file
        .metadata()
        .map_err(|e| DataError::io(archive, e))?
        .len();
    let mut indexer = Indexer::new(archive, length, limits, cancel);
    let zip = match kind {
        ArchiveKind::Tar => {
            index_tar(BufReader::new(file), length, &mut indexer)?;
            None
        }
        ArchiveKind::TarGz => {
            index_tar_gz(GzDecoder::new(BufReader::new(file)), &mut indexer)?;
            None
        }
        ArchiveKind::Zip => Some(index_zip(file, &mut indexer)?),
    };
    Ok((indexer.index, zip))
}

/// The index being built, with running totals against the limits.
struct Indexer<'a> {
    archive: &'a Path,
    limits: &'a Limits,
    /// Checked before every entry and every buffer read.
    cancel: &'a Cancel,
    /// The most the archive may expand to (bytes cap and ratio).
    cap: u64,
    entries: u64,
    bytes: u64,
    index: Index,
}

impl<'a> Indexer<'a> {
    fn new(archive: &'a Path, length: u64, limits: &'a Limits, cancel: &'a Cancel) -> Self {
        let mut dirs = BTreeMap::new();
        dirs.insert(PathBuf::new(), BTreeMap::new());
        Self {
            archive,
            limits,
            cancel,
            cap: limits.expansion_cap(length),
            entries: 0,
            bytes: 0,
            index: Index { dirs },
        }
    }

    /// Counts one more entry of any kind against the limit.
    fn count_entry(&mut self) -> Result<(), DataError> {
        self.cancel.check(self.archive)?;
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(DataError::limit(
                self.archive,
                format!(
                    "archive has more than {} entries (the limit); refusing to read it",
                    self.limits.max_entries
                ),
            ));
        }
        Ok(())
    }

    /// A folder's own listing is made by `link` (the root's by `new`).
    fn add_dir(&mut self, name: &str, relative: PathBuf) -> Result<(), DataError> {
        self.link(name, &relative, Child::Dir)
    }

    fn add_file(&mut self, name: &str, relative: PathBuf, member: Member) -> Result<(), DataError> {
        self.bytes = self.bytes.saturating_add(member.size);
        if self.bytes > self.cap {
            return Err(self.too_large(name));
        }
        if relative.as_os_str().is_empty() {
            return Err(self.invalid(format!("entry {name:?} is a file without a name")));
        }
        if self.index.file(&relative).is_some() {
            return Err(self.invalid(format!(
                "entry {name:?} appears twice; an archive must hold each file once"
            )));
        }
        self.link(name, &relative, Child::File(member))
    }

    /// Records `relative` as `kind` in its parent's listing and each ancestor in its own
    /// parent's, so folders that only appear inside longer paths list too.
    fn link(&mut self, name: &str, relative: &Path, kind: Child) -> Result<(), DataError> {
        let mut child = relative;
        let mut kind = kind;
        while let (Some(parent), Some(child_name)) = (child.parent(), child.file_name()) {
            if !self.index.dirs.contains_key(parent) {
                self.index
                    .dirs
                    .insert(parent.to_path_buf(), BTreeMap::new());
            }
            let Some(siblings) = self.index.dirs.get_mut(parent) else {
                break;
            };
            match siblings.get(child_name) {
                Some(existing) if existing.is_dir() != kind.is_dir() => {
                    return Err(self.invalid(format!(
                        "entry {name:?} makes {:?} both a file and a folder; an archive's paths \
                         must name each thing once",
                        child.display().to_string()
                    )));
                }
                // A folder seen before: its ancestors are recorded already.
                Some(_) => return Ok(()),
                None => {
                    siblings.insert(child_name.to_owned(), kind);
                }
            }
            if kind.is_dir() && !self.index.dirs.contains_key(child) {
                self.index.dirs.insert(child.to_path_buf(), BTreeMap::new());
            }
            child = parent;
            kind = Child::Dir;
        }
        Ok(())
    }

    /// Counts a tar entry and records it when it is a folder; the name and path of a file,
    /// None for a folder or an entry passed over.
    fn tar_entry<R: Read>(
        &mut self,
        entry: &tar::Entry<'_, R>,
    ) -> Result<Option<(String, PathBuf)>, DataError> {
        self.count_entry()?;
        let path = entry.path().map_err(|e| self.corrupt("tar", e))?;
        let name = path.display().to_string();
        let relative = relative_path(self.archive, &path)?;
        match tar_kind(self.archive, entry.header().entry_type(), &name)? {
            TarKind::Dir => {
                self.add_dir(&name, relative)?;
                Ok(None)
            }
            TarKind::File => Ok(Some((name, relative))),
            TarKind::Skipped => Ok(None),
        }
    }

    fn invalid(&self, problem: String) -> DataError {
        DataError::invalid(self.archive, problem)
    }

    fn corrupt(&self, what: &str, err: impl std::fmt::Display) -> DataError {
        corrupt(self.archive, what, err)
    }

    fn too_large(&self, entry: &str) -> DataError {
        DataError::limit(
            self.archive,
            format!(
                "archive expands to more than {} bytes at entry {entry:?}; refusing to read it \
                 (a decompression bomb?). The limits: at most {} bytes, and at most {} times the \
                 archive's size (--max-expanded-bytes, --max-expansion-ratio)",
                self.cap, self.limits.max_expanded_bytes, self.limits.max_expansion_ratio
            ),
        )
    }

    /// Reads a compressed entry's bytes to its end (checking the stream decodes and stopping
    /// when cancelled); they must be as many as its header declares.
    fn read_through(
        &self,
        reader: &mut dyn Read,
        name: &str,
        declared: u64,
        buffer: &mut [u8],
    ) -> Result<(), DataError> {
        let mut read: u64 = 0;
        loop {
            self.cancel.check(self.archive)?;
            let n = match reader.read(buffer) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(
                        self.invalid(format!("entry {name:?} is truncated or corrupt: {e}"))
                    );
                }
            };
            if n == 0 {
                break;
            }
            read += n as u64;
        }
        if read != declared {
            return Err(self.invalid(format!(
                "entry {name:?} holds {read} of the {declared} bytes its header declares \
                 (truncated)"
            )));
        }
        Ok(())
    }
}

/// An entry's path relative to the archive's root; refuses absolute paths and `..`.
fn relative_path(archive: &Path, entry: &Path) -> Result<PathBuf, DataError> {
    let mut relative = PathBuf::new();
    for component in entry.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(traversal(archive, &entry.display().to_string()));
            }
        }
    }
    Ok(relative)
}

fn traversal(archive: &Path, name: &str) -> DataError {
    DataError::invalid(
        archive,
        format!("entry {name:?} points outside the archive (path traversal); refusing to read it"),
    )
}

fn link_refused(archive: &Path, name: &str) -> DataError {
    DataError::invalid(
        archive,
        format!("entry {name:?} is a link; datasets must hold plain files"),
    )
}

/// What a tar entry is to a dataset.
enum TarKind {
    File,
    Dir,
    /// pax/GNU metadata is consumed by the tar crate; devices and FIFOs are never part of a
    /// dataset, so they are passed over.
    Skipped,
}

/// Classifies a tar entry, refusing links and sparse files.
fn tar_kind(archive: &Path, entry_type: tar::EntryType, name: &str) -> Result<TarKind, DataError> {
    match entry_type {
        tar::EntryType::Regular | tar::EntryType::Continuous => Ok(TarKind::File),
        tar::EntryType::Directory => Ok(TarKind::Dir),
        tar::EntryType::Symlink | tar::EntryType::Link => Err(link_refused(archive, name)),
        tar::EntryType::GNUSparse => Err(DataError::invalid(
            archive,
            format!("entry {name:?} is a sparse file; archive it without --sparse"),
        )),
        _ => Ok(TarKind::Skipped),
    }
}

/// A plain tar: entries are listed by seeking past their data, which is read in place later.
fn index_tar(
    reader: BufReader<File>,
    length: u64,
    indexer: &mut Indexer<'_>,
) -> Result<(), DataError> {
    let mut tar = tar::Archive::new(reader);
    let entries = tar
        .entries_with_seek()
        .map_err(|e| indexer.corrupt("tar", e))?;
    for (ordinal, entry) in entries.enumerate() {
        let entry = entry.map_err(|e| indexer.corrupt("tar", e))?;
        let Some((name, relative)) = indexer.tar_entry(&entry)? else {
            continue;
        };
        let member = Member {
            size: entry.size(),
            ordinal,
            offset: entry.raw_file_position(),
        };
        if member.offset.saturating_add(member.size) > length {
            return Err(indexer.invalid(format!(
                "entry {name:?} reaches past the end of the archive (truncated)"
            )));
        }
        indexer.add_file(&name, relative, member)?;
    }
    Ok(())
}

/// A gzip-compressed tar: one pass through the stream, reading each file through so that a
/// corrupt stream is refused now rather than halfway through decoding.
fn index_tar_gz(reader: impl Read, indexer: &mut Indexer<'_>) -> Result<(), DataError> {
    let mut buffer = vec![0u8; 256 << 10];
    let mut tar = tar::Archive::new(reader);
    let entries = tar.entries().map_err(|e| indexer.corrupt("tar", e))?;
    for (ordinal, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| indexer.corrupt("tar", e))?;
        let Some((name, relative)) = indexer.tar_entry(&entry)? else {
            continue;
        };
        let size = entry.size();
        let member = Member {
            size,
            ordinal,
            offset: 0,
        };
        indexer.add_file(&name, relative, member)?;
        indexer.read_through(&mut entry, &name, size, &mut buffer)?;
    }
    Ok(())
}

/// A zip: its central directory lists every entry; nothing is decompressed. Returns the parsed
/// directory.
fn index_zip(mut file: File, indexer: &mut Indexer<'_>) -> Result<ZipDirectory, DataError> {
    let archive = indexer.archive;
    let limits = indexer.limits;
    // The zip crate holds ~200 bytes per entry while it parses the central directory: refuse
    // an archive whose end record declares too many before any of that memory is taken.
    if let Some(declared) =
        declared_zip_entries(&mut file).map_err(|e| DataError::io(archive, e))?
        && declared > limits.max_entries
    {
        return Err(too_many_entries(archive, declared, limits));
    }
    let mut zip =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| indexer.corrupt("zip", e))?;
    if zip.len() as u64 > limits.max_entries {
        return Err(too_many_entries(archive, zip.len() as u64, limits));
    }
    for ordinal in 0..zip.len() {
        let entry = zip
            .by_index_raw(ordinal)
            .map_err(|e| indexer.corrupt("zip", e))?;
        indexer.count_entry()?;
        let name = entry
            .name()
            .map_err(|e| indexer.corrupt("zip", e))?
            .into_owned();
        let Some(enclosed) = entry.enclosed_name() else {
            return Err(traversal(archive, &name));
        };
        let relative = relative_path(archive, &enclosed)?;
        if entry.is_symlink() {
            return Err(link_refused(archive, &name));
        }
        if entry.is_dir() {
            indexer.add_dir(&name, relative)?;
        } else {
            let member = Member {
                size: entry.size(),
                ordinal,
                offset: 0,
            };
            indexer.add_file(&name, relative, member)?;
        }
    }
    Ok(zip)
}

/// The error for `what` (tar, zip) data that does not decode.
pub(crate) fn corrupt(archive: &Path, what: &str, err: impl std::fmt::Display) -> DataError {
    DataError::invalid(
        archive,
        format!("{what} data is truncated or corrupt: {err}"),
    )
}

fn too_many_entries(archive: &Path, entries: u64, limits: &Limits) -> DataError {
    DataError::limit(
        archive,
        format!(
            "archive has {entries} entries, more than the limit of {} (--max-entries); refusing \
             to read it",
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
        let err = index(&archive, ArchiveKind::Zip, &limits, &Cancel::new()).expect_err("refused");
        let message = err.to_string();
        assert!(
            message.contains("60000 entries, more than the limit of 10"),
            "{message}"
        );
        // Under the limit the same archive is reported as corrupt by the zip crate.
        let err = index(
            &archive,
            ArchiveKind::Zip,
            &Limits::default(),
            &Cancel::new(),
        )
        .expect_err("corrupt");
        assert!(
            err.to_string().contains("zip data is truncated or corrupt"),
            "{err}"
        );
    }
}
