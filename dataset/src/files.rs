//! `Files`: a dataset's files where they lie, in a folder or inside an archive read in place,
//! listed and read by path so that the decoders never care which.
//!
//! Inside an archive a file's path is the archive's path joined with the entry's
//! (`data.tar/train/a.png`); [`crate::Dataset`] shows it as `data.tar:train/a.png` in errors.
//! A plain tar is read by seeking to each file, a zip through its central directory, and a
//! `.tar.gz` by decompressing from the start: [`Files::read_each`] reads many files of one in a
//! single pass.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flate2::read::GzDecoder;

use super::archive::{self, ArchiveKind, Index, Member, ZipDirectory};
use super::{Cancel, DataError, Limits};

/// Buffer size of every reader handed to a decoder (decoders read records of a few bytes).
const READ_BUFFER: usize = 64 << 10;

/// The files of a dataset: a folder, or an indexed archive.
pub(crate) struct Files {
    /// The folder, or the archive file.
    root: PathBuf,
    store: Store,
}

enum Store {
    Folder,
    Tar(Index),
    TarGz(Index),
    /// The parsed central directory, shared by every read (one read at a time).
    Zip(Index, Mutex<ZipDirectory>),
}

/// One entry of a folder listing.
pub(crate) struct DirEntry {
    pub name: OsString,
    pub path: PathBuf,
    pub is_dir: bool,
}

impl Files {
    /// Opens the folder or archive at `path`; an archive is indexed (and its limits checked)
    /// now, stopping early once `cancel` is set.
    pub(crate) fn open(path: &Path, limits: &Limits, cancel: &Cancel) -> Result<Self, DataError> {
        let metadata = std::fs::metadata(path).map_err(|e| DataError::io(path, e))?;
        let store = if metadata.is_dir() {
            Store::Folder
        } else {
            let kind = archive::detect(path)?;
            match archive::index(path, kind, limits, cancel)? {
                (index, Some(zip)) => Store::Zip(index, Mutex::new(zip)),
                (index, None) if kind == ArchiveKind::TarGz => Store::TarGz(index),
                (index, None) => Store::Tar(index),
            }
        };
        Ok(Self {
            root: path.to_path_buf(),
            store,
        })
    }

    /// The folder, or the archive (whose entries' paths start with it).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the files lie inside an archive (their paths are then not on disk).
    pub(crate) fn is_archive(&self) -> bool {
        !matches!(self.store, Store::Folder)
    }

    fn index(&self) -> Option<&Index> {
        match &self.store {
            Store::Folder => None,
            Store::Tar(index) | Store::TarGz(index) | Store::Zip(index, _) => Some(index),
        }
    }

    fn relative<'p>(&self, path: &'p Path) -> &'p Path {
        path.strip_prefix(&self.root).unwrap_or(path)
    }

    /// The folders and plain files in `dir` (links and special files of a folder are left
    /// out), in no particular order.
    pub(crate) fn read_dir(&self, dir: &Path) -> Result<Vec<DirEntry>, DataError> {
        let Some(index) = self.index() else {
            return read_folder(dir);
        };
        let children = index
            .dirs
            .get(self.relative(dir))
            .ok_or_else(|| not_found(dir))?;
        Ok(children
            .iter()
            .map(|(name, child)| DirEntry {
                name: name.clone(),
                path: dir.join(name),
                is_dir: child.is_dir(),
            })
            .collect())
    }

    fn member(&self, index: &Index, file: &Path) -> Result<Member, DataError> {
        index
            .file(self.relative(file))
            .ok_or_else(|| not_found(file))
    }

    /// The length of `file` in bytes (uncompressed).
    pub(crate) fn len(&self, file: &Path) -> Result<u64, DataError> {
        match self.index() {
            None => Ok(std::fs::metadata(file)
                .map_err(|e| DataError::io(file, e))?
                .len()),
            Some(index) => Ok(self.member(index, file)?.size),
        }
    }

    /// Calls `read` with a buffered reader of `file`'s bytes. `read` must not read another
    /// file of this `Files` (a zip is read one entry at a time).
    pub(crate) fn read<T>(
        &self,
        file: &Path,
        read: impl FnOnce(&mut dyn Read) -> Result<T, DataError>,
    ) -> Result<T, DataError> {
        match &self.store {
            Store::Folder => {
                let opened = File::open(file).map_err(|e| DataError::io(file, e))?;
                read(&mut BufReader::with_capacity(READ_BUFFER, opened))
            }
            Store::Tar(index) => {
                let member = self.member(index, file)?;
                let mut opened = File::open(&self.root).map_err(|e| DataError::io(file, e))?;
                opened
                    .seek(SeekFrom::Start(member.offset))
                    .map_err(|e| DataError::io(file, e))?;
                read(&mut BufReader::with_capacity(
                    READ_BUFFER,
                    opened.take(member.size),
                ))
            }
            Store::TarGz(index) => {
                let member = self.member(index, file)?;
                let mut read = Some(read);
                let mut result = None;
                self.tar_gz_pass(&[(member.ordinal, 0)], &mut |_, reader| {
                    if let Some(read) = read.take() {
                        result = Some(read(reader)?);
                    }
                    Ok(())
                })?;
                result.ok_or_else(|| self.changed())
            }
            Store::Zip(index, zip) => {
                let member = self.member(index, file)?;
                // A panic in an earlier read leaves nothing half-done in the directory.
                let mut zip = zip.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                let entry = zip.by_index(member.ordinal).map_err(|e| {
                    DataError::invalid(file, format!("cannot read this zip entry: {e}"))
                })?;
                read(&mut BufReader::with_capacity(
                    READ_BUFFER,
                    Declared {
                        inner: entry,
                        left: member.size,
                    },
                ))
            }
        }
    }

    /// Calls `read(i, bytes)` for each `files[i]`, in the order the container holds them: one
    /// pass through a compressed archive instead of one per file. `files` must be distinct.
    pub(crate) fn read_each(
        &self,
        files: &[&Path],
        mut read: impl FnMut(usize, &mut dyn Read) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let Store::TarGz(index) = &self.store else {
            for (i, file) in files.iter().enumerate() {
                self.read(file, |reader| read(i, reader))?;
            }
            return Ok(());
        };
        let mut wanted = files
            .iter()
            .enumerate()
            .map(|(i, file)| Ok((self.member(index, file)?.ordinal, i)))
            .collect::<Result<Vec<_>, DataError>>()?;
        wanted.sort_unstable();
        self.tar_gz_pass(&wanted, &mut read)
    }

    /// Decompresses the `.tar.gz` from its start once, calling `read(i, bytes)` at each
    /// wanted `(ordinal, i)` (sorted by ordinal) and stopping after the last.
    fn tar_gz_pass(
        &self,
        wanted: &[(usize, usize)],
        read: &mut dyn FnMut(usize, &mut dyn Read) -> Result<(), DataError>,
    ) -> Result<(), DataError> {
        let corrupt = |e: io::Error| archive::corrupt(&self.root, "tar", e);
        let file = File::open(&self.root).map_err(|e| DataError::io(&self.root, e))?;
        let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
        let mut entries = tar.entries().map_err(corrupt)?.enumerate();
        for &(ordinal, i) in wanted {
            // The tar crate reads past whatever an entry left unread when the next is asked for.
            let mut entry = loop {
                match entries.next() {
                    Some((at, entry)) if at == ordinal => break entry.map_err(corrupt)?,
                    Some((_, entry)) => drop(entry.map_err(corrupt)?),
                    None => return Err(self.changed()),
                }
            };
            read(i, &mut BufReader::with_capacity(READ_BUFFER, &mut entry))?;
        }
        Ok(())
    }

    fn changed(&self) -> DataError {
        DataError::invalid(
            &self.root,
            "the archive changed while it was being read (an entry it listed is gone)",
        )
    }
}

fn not_found(path: &Path) -> DataError {
    DataError::io(path, io::Error::from(io::ErrorKind::NotFound))
}

fn read_folder(dir: &Path) -> Result<Vec<DirEntry>, DataError> {
    let mut listed = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| DataError::io(&path, e))?;
        if file_type.is_dir() || file_type.is_file() {
            listed.push(DirEntry {
                name: entry.file_name(),
                path,
                is_dir: file_type.is_dir(),
            });
        }
    }
    Ok(listed)
}

/// A zip entry's reader that fails once it yields more bytes than the central directory
/// declared: the expansion cap counted the declared sizes.
struct Declared<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Declared<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "the entry holds more bytes than the archive's directory declares",
            )
        })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write as _};

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use schema::ImageShape;

    use super::*;
    use crate::Dataset;

    /// A 2x2 greyscale PNG whose pixels are all `fill`.
    fn png(fill: u8) -> Vec<u8> {
        let mut bytes = Vec::new();
        image::write_buffer_with_format(
            &mut Cursor::new(&mut bytes),
            &[fill; 4],
            2,
            2,
            image::ExtendedColorType::L8,
            image::ImageFormat::Png,
        )
        .expect("png");
        bytes
    }

    /// Every regular file under `dir` as (relative path, bytes), in reverse path order so that
    /// archives built from it hold their entries in the opposite order to a folder listing.
    fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).expect("ls") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else {
                    let relative = path.strip_prefix(dir).expect("inside");
                    let name = relative.to_str().expect("utf-8").to_owned();
                    found.push((name, std::fs::read(&path).expect("read")));
                }
            }
        }
        found.sort();
        found.reverse();
        found
    }

    fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, name, bytes.as_slice())
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip")
    }

    fn zip_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes) in entries {
            zip.start_file(name, zip::write::SimpleFileOptions::default())
                .expect("entry");
            zip.write_all(bytes).expect("write");
        }
        zip.finish().expect("zip").into_inner()
    }

    /// The digest of the dataset at `path`; the folder holding `path` must hold nothing else
    /// afterwards (reading an archive writes nothing).
    fn digest_in_place(path: &Path) -> String {
        let summary = Dataset::open(path, Limits::default())
            .and_then(|dataset| dataset.summarize())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let parent = path.parent().expect("parent");
        let beside: Vec<_> = std::fs::read_dir(parent)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(beside.len(), 1, "reading wrote {beside:?}");
        summary.digest.to_string()
    }

    /// One dataset's folder and its tar, tar.gz and zip (entries in reverse order, inside a
    /// wrapping folder) give one digest.
    fn assert_one_digest_in_every_container(folder: &Path) {
        let expected = Dataset::open(folder, Limits::default())
            .and_then(|dataset| dataset.summarize())
            .expect("folder")
            .digest
            .to_string();
        let entries: Vec<(String, Vec<u8>)> = files_of(folder)
            .into_iter()
            .map(|(name, bytes)| (format!("wrapped/{name}"), bytes))
            .collect();
        let tar = tar_of(&entries);
        for (name, bytes) in [
            ("data.tar", tar.clone()),
            ("data.tar.gz", gzip(&tar)),
            ("data.zip", zip_of(&entries)),
        ] {
            let dir = tempfile::tempdir().expect("tmp");
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            assert_eq!(digest_in_place(&path), expected, "{name}");
        }
    }

    #[test]
    fn image_folders_idx_and_npy_arrays_have_one_digest_in_every_container() {
        let images = tempfile::tempdir().expect("tmp");
        for (split, class, file, fill) in [
            ("train", "cat", "a.png", 1),
            ("train", "cat", "b.png", 2),
            ("train", "dog", "c.png", 3),
            ("test", "dog", "d.png", 4),
        ] {
            let folder = images.path().join(split).join(class);
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::write(folder.join(file), png(fill)).expect("write");
        }
        assert_one_digest_in_every_container(images.path());

        let idx = tempfile::tempdir().expect("tmp");
        let shape = ImageShape {
            height: 2,
            width: 2,
            channels: 1,
        };
        crate::testing::write_splits(
            idx.path(),
            &[("train", shape, vec![0, 1, 1]), ("t10k", shape, vec![1])],
        );
        assert_one_digest_in_every_container(idx.path());

        let npy = tempfile::tempdir().expect("tmp");
        crate::testing::write_npy(
            &npy.path().join("train_images.npy"),
            "|u1",
            &[2, 2, 2],
            &[9; 8],
        );
        crate::testing::write_npy(&npy.path().join("train_labels.npy"), "|u1", &[2], &[0, 1]);
        assert_one_digest_in_every_container(npy.path());
    }

    /// The error of opening an archive of `entries` as `kind` ("tar", "tar.gz" or "zip").
    fn refusal(entries: &[(String, Vec<u8>)], kind: &str, limits: Limits) -> String {
        let bytes = match kind {
            "tar" => tar_of(entries),
            "tar.gz" => gzip(&tar_of(entries)),
            _ => zip_of(entries),
        };
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(format!("upload.{kind}"));
        std::fs::write(&path, bytes).expect("write");
        let err = Dataset::open(&path, limits)
            .and_then(|dataset| dataset.summarize())
            .expect_err("refused")
            .to_string();
        assert!(
            !err.contains(&format!("upload.{kind}/")),
            "an entry named as a path on disk: {err}"
        );
        err
    }

    fn entry(name: &str, bytes: &[u8]) -> (String, Vec<u8>) {
        (name.to_owned(), bytes.to_vec())
    }

    #[test]
    fn names_given_twice_or_as_file_and_folder_are_refused() {
        // The zip crate refuses to write (and to read) a name twice itself.
        for kind in ["tar", "tar.gz"] {
            let twice = [
                entry("train/cat/a.png", &png(1)),
                entry("train/cat/a.png", &png(2)),
            ];
            let err = refusal(&twice, kind, Limits::default());
            assert!(
                err.contains("\"train/cat/a.png\" appears twice"),
                "{kind}: {err}"
            );
        }
        for kind in ["tar", "tar.gz", "zip"] {
            let file_then_folder = [entry("train", &[1]), entry("train/cat/a.png", &png(1))];
            let err = refusal(&file_then_folder, kind, Limits::default());
            assert!(
                err.contains("makes \"train\" both a file and a folder"),
                "{kind}: {err}"
            );

            let folder_then_file = [entry("train/cat/a.png", &png(1)), entry("train/cat", &[1])];
            let err = refusal(&folder_then_file, kind, Limits::default());
            assert!(
                err.contains("makes \"train/cat\" both a file and a folder"),
                "{kind}: {err}"
            );
        }
    }

    /// A bomb is refused by the sizes its entries declare, before its data is decompressed.
    #[test]
    fn declared_sizes_past_the_expansion_cap_are_refused() {
        let limits = Limits {
            max_expanded_bytes: 1000,
            ..Limits::default()
        };
        for kind in ["tar", "tar.gz", "zip"] {
            let entries = [
                entry("train/a.bin", &[0; 600]),
                entry("train/b.bin", &[0; 600]),
            ];
            let err = refusal(&entries, kind, limits);
            assert!(
                err.contains("expands to more than 1000 bytes at entry \"train/b.bin\""),
                "{kind}: {err}"
            );
        }
    }

    #[test]
    fn a_tar_cut_short_is_refused_with_the_entry_it_cuts() {
        let tar = tar_of(&[entry("train/cat/a.png", &[7; 5000])]);
        let dir = tempfile::tempdir().expect("tmp");
        for (name, bytes) in [
            ("cut.tar", tar[..3000].to_vec()),
            ("cut.tar.gz", gzip(&tar[..3000])),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            let err = Dataset::open(&path, Limits::default()).expect_err("refused");
            let message = err.to_string();
            assert!(message.contains("train/cat/a.png"), "{name}: {message}");
            assert!(message.contains("truncated"), "{name}: {message}");
        }
    }

    /// A zip entry that inflates to more than its central-directory size is refused, since the
    /// expansion cap counted the declared size.
    #[test]
    fn a_zip_entry_larger_than_declared_is_refused() {
        let mut bytes = zip_of(&[entry("train/cat/a.png", &png(1))]);
        let declared = png(1).len() as u32;
        // The central directory header's uncompressed size (offset 24) claims one byte.
        let central = bytes
            .windows(4)
            .rposition(|w| w == b"PK\x01\x02")
            .expect("central directory");
        assert_eq!(bytes[central + 24..central + 28], declared.to_le_bytes());
        bytes[central + 24..central + 28].copy_from_slice(&1u32.to_le_bytes());
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("liar.zip");
        std::fs::write(&path, bytes).expect("write");
        let err = Dataset::open(&path, Limits::default())
            .and_then(|dataset| dataset.summarize())
            .expect_err("refused")
            .to_string();
        assert!(err.contains("liar.zip:train/cat/a.png"), "{err}");
    }
}
