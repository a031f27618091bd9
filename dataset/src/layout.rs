//! Recognising which dataset format a folder holds and listing its splits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use schema::DatasetFormat;

use super::cifar::{self, CifarSplit, Variant};
use super::idx::{self, IdxSplit};
use super::image_folder::{FolderSplit, is_image_file};
use super::npz::{self, NpyRole, NpzSplit};
use super::{DataError, Files, Limits, SplitSource};

/// A recognised dataset: its format, class names and splits in digest order.
pub(crate) struct Layout {
    pub format: DatasetFormat,
    pub classes: Vec<String>,
    pub splits: Vec<SplitSource>,
}

/// How many single wrapping folders are looked through (`cifar-10-batches-bin/`, say).
const MAX_WRAPPERS: usize = 4;

/// Recognises the dataset in `files`, within the class limit.
pub(crate) fn detect(files: &Files, limits: &Limits) -> Result<Layout, DataError> {
    let layout = detect_format(files, limits)?;
    limits.check_classes(layout.classes.len() as u64, files.root())?;
    Ok(layout)
}

fn detect_format(files: &Files, limits: &Limits) -> Result<Layout, DataError> {
    let root = unwrap_single_folder(files)?;
    let listing = Listing::read(files, &root)?;
    if listing.files.iter().any(|f| npz::is_npy(&f.name)) {
        return detect_npz(files, &root, &listing, limits);
    }
    if listing
        .files
        .iter()
        .any(|f| idx::parse_file_name(&f.name).is_some())
    {
        return detect_idx(files, &root, &listing, limits);
    }
    if listing.has_file("test_batch.bin") || listing.files.iter().any(|f| is_cifar10_batch(&f.name))
    {
        return detect_cifar10(files, &listing);
    }
    if listing.has_file("train.bin") && listing.has_file("test.bin") {
        return detect_cifar100(files, &listing);
    }
    if !listing.dirs.is_empty() {
        return detect_image_folder(files, &listing, limits);
    }
    Err(DataError::invalid(
        &root,
        "no dataset found: expected IDX files (train-images-idx3-ubyte[.gz] with its labels \
         file), CIFAR binary batches (data_batch_*.bin or train.bin/test.bin), NumPy arrays \
         (a .npz with <split>_images and <split>_labels), or image folders \
         (<split>/<class>/*.png|jpg)",
    ))
}

/// The visible entries of a folder (names starting with `.` and `__MACOSX` are skipped).
struct Listing {
    files: Vec<Entry>,
    dirs: Vec<Entry>,
}

struct Entry {
    name: String,
    path: PathBuf,
}

impl Listing {
    fn read(source: &Files, dir: &Path) -> Result<Self, DataError> {
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for entry in source.read_dir(dir)? {
            let Some(name) = entry.name.to_str().map(str::to_owned) else {
                return Err(DataError::invalid(
                    &entry.path,
                    "file name is not valid UTF-8",
                ));
            };
            if name.starts_with('.') || name == "__MACOSX" {
                continue;
            }
            let item = Entry {
                name,
                path: entry.path,
            };
            if entry.is_dir {
                dirs.push(item);
            } else {
                files.push(item);
            }
        }
        files.sort_by(|a, b| a.name.cmp(&b.name));
        dirs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Self { files, dirs })
    }

    fn has_file(&self, name: &str) -> bool {
        self.files.iter().any(|f| f.name == name)
    }

    fn file(&self, name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.path.as_path())
    }
}

/// Descends through folders that hold nothing but one folder.
fn unwrap_single_folder(files: &Files) -> Result<PathBuf, DataError> {
    let mut current = files.root().to_path_buf();
    for _ in 0..MAX_WRAPPERS {
        let listing = Listing::read(files, &current)?;
        match (&listing.files[..], &listing.dirs[..]) {
            ([], [only]) if !looks_like_split(&only.name) => current = only.path.clone(),
            _ => break,
        }
    }
    Ok(current)
}

/// A lone `train/` folder is an image-folder split, not a wrapper.
fn looks_like_split(name: &str) -> bool {
    matches!(name, "train" | "test")
}

fn is_cifar10_batch(name: &str) -> bool {
    name.strip_prefix("data_batch_")
        .and_then(|rest| rest.strip_suffix(".bin"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Orders split names for the digest: `train`, `test`, then the rest bytewise.
pub(crate) fn split_order(name: &str) -> (u8, &str) {
    match name {
        "train" => (0, ""),
        "test" => (1, ""),
        other => (2, other),
    }
}

/// Adds a split's `count` examples to the dataset's `total`, refusing past the limit.
fn count_examples(
    total: &mut u64,
    count: usize,
    path: &Path,
    limits: &Limits,
) -> Result<(), DataError> {
    *total += count as u64;
    if *total > limits.max_examples {
        return Err(DataError::limit(
            path,
            format!(
                "the dataset has more than the limit of {} examples",
                limits.max_examples
            ),
        ));
    }
    Ok(())
}

fn sort_splits(splits: &mut [SplitSource]) {
    splits.sort_by(|a, b| split_order(a.name()).cmp(&split_order(b.name())));
}

fn detect_idx(
    files: &Files,
    root: &Path,
    listing: &Listing,
    limits: &Limits,
) -> Result<Layout, DataError> {
    let mut pairs: BTreeMap<String, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    for file in &listing.files {
        if let Some((prefix, is_images)) = idx::parse_file_name(&file.name) {
            let slot = pairs.entry(prefix.to_owned()).or_default();
            let target = if is_images { &mut slot.0 } else { &mut slot.1 };
            if let Some(previous) = target.replace(file.path.clone()) {
                return Err(DataError::invalid(
                    root,
                    format!(
                        "both {} and {} hold the {} of split {prefix:?}",
                        previous.display(),
                        file.path.display(),
                        if is_images { "images" } else { "labels" }
                    ),
                ));
            }
        }
    }
    let mut splits = Vec::new();
    let mut names = BTreeSet::new();
    let mut max_label: Option<u8> = None;
    let mut examples: u64 = 0;
    for (prefix, pair) in pairs {
        let (images, labels) = match pair {
            (Some(images), Some(labels)) => (images, labels),
            (Some(images), None) => {
                return Err(DataError::invalid(
                    &images,
                    format!(
                        "has no labels file beside it (expected {prefix}-labels-idx1-ubyte[.gz])"
                    ),
                ));
            }
            (None, Some(labels)) => {
                return Err(DataError::invalid(
                    &labels,
                    format!(
                        "has no images file beside it (expected {prefix}-images-idx3-ubyte[.gz])"
                    ),
                ));
            }
            (None, None) => continue,
        };
        let name = idx::split_name(&prefix);
        if !names.insert(name.clone()) {
            return Err(DataError::invalid(
                root,
                format!("two file sets name split {name:?} (`t10k` means `test`)"),
            ));
        }
        let labels_read = idx::read_labels(files, &labels, limits)?;
        count_examples(&mut examples, labels_read.len(), &labels, limits)?;
        max_label = max_label.max(labels_read.iter().copied().max());
        splits.push(SplitSource::Idx(IdxSplit {
            name,
            images,
            labels,
        }));
    }
    let Some(max_label) = max_label else {
        return Err(DataError::invalid(root, "the IDX files hold no examples"));
    };
    sort_splits(&mut splits);
    Ok(Layout {
        format: DatasetFormat::Idx,
        classes: (0..=max_label).map(|l| l.to_string()).collect(),
        splits,
    })
}

fn detect_npz(
    files: &Files,
    root: &Path,
    listing: &Listing,
    limits: &Limits,
) -> Result<Layout, DataError> {
    let mut pairs: BTreeMap<&str, (Option<PathBuf>, Option<PathBuf>)> = BTreeMap::new();
    let mut classes_file = None;
    for file in listing.files.iter().filter(|f| npz::is_npy(&f.name)) {
        let path = file.path.clone();
        match npz::parse_file_name(&file.name) {
            Some(NpyRole::Images(split)) => pairs.entry(split).or_default().0 = Some(path),
            Some(NpyRole::Labels(split)) => pairs.entry(split).or_default().1 = Some(path),
            Some(NpyRole::Classes) => classes_file = Some(path),
            None => {
                return Err(DataError::invalid(
                    &path,
                    "is not part of a NumPy dataset, which holds <split>_images, \
                     <split>_labels and (optionally) classes arrays",
                ));
            }
        }
    }
    let mut splits = Vec::new();
    let mut max_label: Option<u32> = None;
    let mut examples: u64 = 0;
    for (name, pair) in pairs {
        let (images, labels) = match pair {
            (Some(images), Some(labels)) => (images, labels),
            (Some(images), None) => {
                return Err(DataError::invalid(
                    &images,
                    format!("has no labels array beside it (expected {name}_labels)"),
                ));
            }
            (None, Some(labels)) => {
                return Err(DataError::invalid(
                    &labels,
                    format!("has no images array beside it (expected {name}_images)"),
                ));
            }
            (None, None) => continue,
        };
        let labels_read = npz::read_labels(files, &labels, limits)?;
        count_examples(&mut examples, labels_read.len(), &labels, limits)?;
        max_label = max_label.max(labels_read.iter().copied().max());
        splits.push(SplitSource::Npz(NpzSplit {
            name: name.to_owned(),
            images,
            labels,
        }));
    }
    if splits.is_empty() {
        return Err(DataError::invalid(
            root,
            "the NumPy arrays hold no split: expected <split>_images and <split>_labels",
        ));
    }
    let classes = match classes_file {
        Some(path) => npz::read_classes(files, &path)?,
        None => match max_label {
            Some(max) => {
                limits.check_classes(u64::from(max) + 1, root)?;
                (0..=max).map(|l| l.to_string()).collect()
            }
            None => {
                return Err(DataError::invalid(
                    root,
                    "the NumPy arrays hold no examples",
                ));
            }
        },
    };
    sort_splits(&mut splits);
    Ok(Layout {
        format: DatasetFormat::Npz,
        classes,
        splits,
    })
}

fn detect_cifar10(files: &Files, listing: &Listing) -> Result<Layout, DataError> {
    let train: Vec<PathBuf> = listing
        .files
        .iter()
        .filter(|f| is_cifar10_batch(&f.name))
        .map(|f| f.path.clone())
        .collect();
    let mut splits = Vec::new();
    if !train.is_empty() {
        splits.push(SplitSource::Cifar(CifarSplit {
            name: "train".into(),
            files: train,
            variant: Variant::Cifar10,
        }));
    }
    if let Some(test) = listing.file("test_batch.bin") {
        splits.push(SplitSource::Cifar(CifarSplit {
            name: "test".into(),
            files: vec![test.to_path_buf()],
            variant: Variant::Cifar10,
        }));
    }
    let classes = match listing.file("batches.meta.txt") {
        Some(meta) => cifar::read_class_names(files, meta, Variant::Cifar10.classes())?,
        None => decimal_classes(Variant::Cifar10.classes()),
    };
    Ok(Layout {
        format: DatasetFormat::Cifar10,
        classes,
        splits,
    })
}

fn detect_cifar100(files: &Files, listing: &Listing) -> Result<Layout, DataError> {
    let split = |name: &str| {
        listing.file(&format!("{name}.bin")).map(|path| {
            SplitSource::Cifar(CifarSplit {
                name: name.into(),
                files: vec![path.to_path_buf()],
                variant: Variant::Cifar100,
            })
        })
    };
    let splits = ["train", "test"].into_iter().filter_map(split).collect();
    let classes = match listing.file("fine_label_names.txt") {
        Some(meta) => cifar::read_class_names(files, meta, Variant::Cifar100.classes())?,
        None => decimal_classes(Variant::Cifar100.classes()),
    };
    Ok(Layout {
        format: DatasetFormat::Cifar100,
        classes,
        splits,
    })
}

fn decimal_classes(count: usize) -> Vec<String> {
    (0..count).map(|l| l.to_string()).collect()
}

fn detect_image_folder(
    source: &Files,
    listing: &Listing,
    limits: &Limits,
) -> Result<Layout, DataError> {
    // First pass: the class folders of every split, so labels are the same in all splits.
    let mut split_classes: Vec<(&Entry, Listing)> = Vec::new();
    let mut class_names = BTreeSet::new();
    for split in &listing.dirs {
        let inner = Listing::read(source, &split.path)?;
        if let Some(stray) = inner.files.iter().find(|f| is_image_file(&f.path)) {
            return Err(DataError::invalid(
                &stray.path,
                "image is not inside a class folder; image folders are laid out as \
                 <split>/<class>/<image>",
            ));
        }
        class_names.extend(inner.dirs.iter().map(|d| d.name.clone()));
        split_classes.push((split, inner));
    }
    let classes = order_class_names(class_names, &listing.dirs[0].path)?;
    let label_of: BTreeMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, name)| (name.as_str(), i as u32))
        .collect();
    let mut splits = Vec::new();
    let mut examples: u64 = 0;
    for (split, inner) in split_classes {
        let mut files = Vec::new();
        for class in &inner.dirs {
            let label = label_of[class.name.as_str()];
            for file in Listing::read(source, &class.path)?.files {
                if is_image_file(&file.path) {
                    files.push((file.path, label));
                }
            }
        }
        if files.is_empty() {
            return Err(DataError::invalid(
                &split.path,
                "split holds no images; image folders are laid out as <split>/<class>/<image> \
                 with .png, .jpg or .jpeg files",
            ));
        }
        count_examples(&mut examples, files.len(), &split.path, limits)?;
        files.sort();
        splits.push(SplitSource::Folder(FolderSplit {
            name: split.name.clone(),
            files,
        }));
    }
    sort_splits(&mut splits);
    Ok(Layout {
        format: DatasetFormat::ImageFolder,
        classes,
        splits,
    })
}

/// Class names in label order: numerically when all are integers, else bytewise.
fn order_class_names(names: BTreeSet<String>, context: &Path) -> Result<Vec<String>, DataError> {
    let numbers: Option<Vec<(u64, String)>> = names
        .iter()
        .map(|n| {
            let all_digits = !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
            all_digits.then(|| n.parse::<u64>().ok().map(|v| (v, n.clone())))?
        })
        .collect();
    match numbers {
        Some(mut numbered) => {
            numbered.sort();
            if let Some(pair) = numbered.windows(2).find(|w| w[0].0 == w[1].0) {
                return Err(DataError::invalid(
                    context,
                    format!(
                        "class folders {:?} and {:?} name the same number",
                        pair[0].1, pair[1].1
                    ),
                ));
            }
            Ok(numbered.into_iter().map(|(_, n)| n).collect())
        }
        // A BTreeSet of Strings iterates in bytewise order.
        None => Ok(names.into_iter().collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cancel;

    #[test]
    fn integer_class_names_sort_numerically_and_others_bytewise() {
        let numeric: BTreeSet<String> = ["10", "2", "1"].map(String::from).into();
        assert_eq!(
            order_class_names(numeric, Path::new(".")).expect("numeric"),
            ["1", "2", "10"]
        );
        let words: BTreeSet<String> = ["cat", "Dog", "10"].map(String::from).into();
        assert_eq!(
            order_class_names(words, Path::new(".")).expect("words"),
            ["10", "Dog", "cat"]
        );
        let clash: BTreeSet<String> = ["1", "01"].map(String::from).into();
        assert!(order_class_names(clash, Path::new(".")).is_err());
    }

    /// Found by the `dataset_files` fuzz target: a label near 2^32 without `classes.npy` made
    /// the decoder build billions of decimal class names (an abort on allocation failure).
    #[test]
    fn a_huge_npz_label_is_refused_before_naming_its_classes() {
        let dir = tempfile::tempdir().expect("tmp");
        crate::testing::write_npy(
            &dir.path().join("train_images.npy"),
            "|u1",
            &[1, 2, 2],
            &[0; 4],
        );
        let label = 3_000_000_000u32.to_le_bytes();
        crate::testing::write_npy(&dir.path().join("train_labels.npy"), "<u4", &[1], &label);
        let files = Files::open(dir.path(), &Limits::default(), &Cancel::new()).expect("open");
        let err = detect(&files, &Limits::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("3000000001 classes"), "{err}");
        assert!(err.contains("--max-classes"), "{err}");
    }

    #[test]
    fn too_many_class_folders_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        for class in ["a", "b", "c"] {
            let folder = dir.path().join("train").join(class);
            std::fs::create_dir_all(&folder).expect("mkdir");
            std::fs::write(folder.join("x.png"), b"").expect("write");
        }
        let limits = Limits {
            max_classes: 2,
            ..Limits::default()
        };
        let files = Files::open(dir.path(), &limits, &Cancel::new()).expect("open");
        let err = detect(&files, &limits).err().expect("refused").to_string();
        assert!(err.contains("3 classes"), "{err}");
    }

    #[test]
    fn splits_order_train_test_then_bytewise() {
        let mut names = vec!["val", "test", "extra", "train"];
        names.sort_by(|a, b| split_order(a).cmp(&split_order(b)));
        assert_eq!(names, ["train", "test", "extra", "val"]);
    }
}
