"""Datasets from where PyTorch users keep them, decoded the way the Rust decoders decode the
same files, so their digest is the registry's:

- arrays: `{"train": (images, labels), ...}` with `classes`;
- torchvision: `MNIST` (and its IDX siblings), `CIFAR10`/`CIFAR100`, `ImageFolder`, as
  `{"train": ds, "test": ds}`;
- Hugging Face `datasets`: a `Dataset` (one split, `train`) or a `DatasetDict`, with one image
  column and one `ClassLabel` column;
- a `.npz` file as `push` writes it (`<split>_images`, `<split>_labels`, `classes`).

Class names follow the Rust rules, not the library's: IDX has decimal ids (not torchvision's
"0 - zero"), CIFAR its meta names, image folders their folder names in numeric order when all
are integers, else bytewise (torchvision sorts them as strings). PNG and array pixels are equal
bit for bit; JPEG pixels depend on the decoder (Rust's `image` crate and Pillow differ), so a
JPEG dataset may digest differently here and on the registry: `push` reports such a mismatch.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .digest import Split, check_split, decimal_classes, digest_of_splits
from .errors import DatasetError

#: Image file extensions the registry's image-folder decoder reads (case-insensitive).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Dataset:
    """A dataset decoded to the registry's convention: class names and checked splits."""

    classes: list[str]
    splits: dict[str, Split]

    @property
    def digest(self) -> str:
        """`sha256:<hex>`, as `commentary dataset hash` prints for the same content."""
        return digest_of_splits(self.splits, self.classes)


def pil_to_array(image: Any, where: str) -> np.ndarray:
    """HWC uint8 pixels of a Pillow image as the Rust decoder gives them: greyscale modes to one
    channel, everything else to RGB (alpha dropped, not composited)."""
    mode = image.mode
    if mode in ("1", "L", "LA"):
        return np.asarray(image.convert("L"), dtype=np.uint8)[..., np.newaxis]
    if mode in ("RGB", "RGBA", "P", "PA", "RGBX", "YCbCr"):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise DatasetError(
        f"{where}: image mode {mode!r} is not 8-bit greyscale or colour; convert it first "
        "(e.g. image.convert('L') or .convert('RGB'))"
    )


def stack_images(images: Sequence[np.ndarray], split: str) -> np.ndarray:
    """Stacks HWC images of one split, naming the first that differs in size or channels."""
    if not images:
        raise DatasetError(f"split {split!r} holds no images")
    first = images[0].shape
    for index, image in enumerate(images):
        if image.shape != first:
            raise DatasetError(
                f"split {split!r}: image {index} is {image.shape} (HxWxC) but image 0 is "
                f"{first}; every image of a split must have one size and channel count"
            )
    return np.stack(images)


def order_class_names(names: set[str]) -> list[str]:
    """Class folder names in label order: numerically when all are integers, else bytewise."""
    if names and all(n.isascii() and n.isdigit() for n in names):
        numbered = sorted((int(n), n) for n in names)
        for (a, x), (b, y) in zip(numbered, numbered[1:]):
            if a == b:
                raise DatasetError(f"class folders {x!r} and {y!r} name the same number")
        return [n for _, n in numbered]
    return sorted(names, key=lambda n: n.encode("utf-8"))


def _module(obj: object) -> str:
    return type(obj).__module__


def _class_names(obj: object) -> set[str]:
    return {cls.__name__ for cls in type(obj).__mro__}


def _is_torchvision(obj: object) -> bool:
    return _module(obj).startswith("torchvision.")


def _is_hf_dataset(obj: object) -> bool:
    return _module(obj).startswith("datasets.") and "Dataset" in _class_names(obj)


def _is_hf_dict(obj: object) -> bool:
    return _module(obj).startswith("datasets.") and "DatasetDict" in _class_names(obj)


def _to_numpy(values: Any) -> np.ndarray:
    if hasattr(values, "numpy"):
        return values.numpy()
    return np.asarray(values)


def _torchvision_split(name: str, ds: Any) -> tuple[Split, list[str] | None, set[str] | None]:
    """A torchvision dataset's split; the class names (CIFAR), or the folder classes
    (ImageFolder, ordered later across all splits), or neither (IDX: decimal ids)."""
    kinds = _class_names(ds)
    if "MNIST" in kinds:
        return check_split(name, _to_numpy(ds.data), _to_numpy(ds.targets)), None, None
    if "CIFAR10" in kinds:
        return check_split(name, np.asarray(ds.data), np.asarray(ds.targets)), list(ds.classes), None
    if "DatasetFolder" in kinds:
        return _folder_split(name, ds), None, _folder_classes(ds)
    raise DatasetError(
        f"split {name!r}: torchvision's {type(ds).__name__} is not supported; give MNIST, "
        "CIFAR10, CIFAR100 or ImageFolder, or arrays {split: (images, labels)}"
    )


def _visible(name: str) -> bool:
    """Names the registry's folder listing reads (it skips hidden entries and `__MACOSX`)."""
    return not name.startswith(".") and name != "__MACOSX"


def _folder_classes(ds: Any) -> set[str]:
    return {c for c in ds.classes if _visible(c)}


def _folder_split(name: str, ds: Any) -> Split:
    """An ImageFolder split as the registry reads the same folder: only `.png`, `.jpg` and
    `.jpeg` files directly inside visible class folders (torchvision also takes other
    extensions, nested folders and hidden ones)."""
    from PIL import Image

    root = Path(ds.root)
    images = []
    labels = []
    skipped = 0
    for path, label in ds.samples:
        relative = Path(path).relative_to(root)
        class_name = ds.classes[label]
        if (len(relative.parts) != 2 or not all(map(_visible, relative.parts))
                or not path.lower().endswith(IMAGE_EXTENSIONS)):
            skipped += 1
            continue
        with Image.open(path) as image:
            images.append(pil_to_array(image, path))
        labels.append(class_name)
    if skipped:
        warnings.warn(
            f"split {name!r}: {skipped} files skipped, as the registry skips them (only .png, "
            ".jpg and .jpeg directly inside visible class folders are images)",
            stacklevel=3,
        )
    return Split(stack_images(images, name), np.array(labels, dtype=object))


def _relabel(split: Split, names: list[str]) -> Split:
    index = {n: i for i, n in enumerate(names)}
    return Split(split.images, np.array([index[n] for n in split.labels], dtype=np.uint32))


def _hf_columns(ds: Any, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    def pick(kind: str, given: str | None) -> str:
        if given is not None:
            if given not in ds.features:
                raise DatasetError(f"the dataset has no column {given!r}")
            return given
        found = [c for c, f in ds.features.items() if type(f).__name__ == kind]
        if len(found) != 1:
            raise DatasetError(
                f"expected exactly one {kind} column, found {found or 'none'}; name it with "
                f"{'image_column' if kind == 'Image' else 'label_column'}="
            )
        return found[0]

    return pick("Image", image_column), pick("ClassLabel", label_column)


def _hf_split(
    name: str, ds: Any, image_column: str | None, label_column: str | None
) -> tuple[Split, list[str]]:
    image_col, label_col = _hf_columns(ds, image_column, label_column)
    feature = ds.features[label_col]
    if type(feature).__name__ != "ClassLabel":
        raise DatasetError(f"column {label_col!r} is not a ClassLabel; its class names are unknown")
    images = [
        pil_to_array(image, f"split {name!r} example {i}") for i, image in enumerate(ds[image_col])
    ]
    labels = np.asarray(ds[label_col], dtype=np.int64)
    return check_split(name, stack_images(images, name), labels), list(feature.names)


def _same_classes(per_split: dict[str, list[str]]) -> list[str]:
    (first_split, first), *rest = per_split.items()
    for split, names in rest:
        if names != first:
            raise DatasetError(
                f"splits {first_split!r} and {split!r} have different class names; one dataset "
                "has one list of classes"
            )
    return first


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """A `.npz` dataset: `<split>_images`, `<split>_labels` and optionally `classes`."""
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        pairs: dict[str, dict[str, np.ndarray]] = {}
        classes = None
        for key in names:
            if key == "classes":
                classes = [str(c) for c in archive[key]]
            elif key.endswith("_images") or key.endswith("_labels"):
                split, role = key.rsplit("_", 1)
                pairs.setdefault(split, {})[role] = archive[key]
            else:
                raise DatasetError(f"{path}: array {key!r} is not part of a NumPy dataset")
    splits = {}
    for split, arrays in pairs.items():
        if set(arrays) != {"images", "labels"}:
            raise DatasetError(f"{path}: split {split!r} needs both _images and _labels arrays")
        splits[split] = check_split(split, arrays["images"], arrays["labels"])
    return Dataset(classes or decimal_classes(splits), splits)


def as_dataset(
    data: Any,
    classes: Sequence[str] | None = None,
    *,
    image_column: str | None = None,
    label_column: str | None = None,
) -> Dataset:
    """Decodes any supported dataset (see the module docs) to the registry's convention."""
    if isinstance(data, Dataset):
        return data
    if isinstance(data, (str, os.PathLike)) and str(data).endswith(".npz"):
        return load_npz(data)
    if isinstance(data, (str, os.PathLike)):
        raise DatasetError(
            f"{data}: give a .npz file here; for IDX, CIFAR or image folders on disk use "
            "torchvision's datasets over them, or `commentary dataset hash PATH`"
        )
    if _is_hf_dict(data):
        data = dict(data.items())
    elif _is_hf_dataset(data) or _is_torchvision(data):
        data = {"train": data}
    if not isinstance(data, Mapping) or not data:
        raise DatasetError(
            "expected {split: (images, labels)}, {split: torchvision dataset}, a Hugging Face "
            f"Dataset or DatasetDict, or a .npz path; got {type(data).__name__}"
        )
    values = list(data.values())
    if all(isinstance(v, tuple) and len(v) == 2 for v in values):
        splits = {name: check_split(name, *pair) for name, pair in data.items()}
        names = list(classes) if classes is not None else decimal_classes(splits)
        return Dataset(names, splits)
    if all(_is_hf_dataset(v) for v in values):
        decoded = {n: _hf_split(n, v, image_column, label_column) for n, v in data.items()}
        names = _same_classes({n: c for n, (_, c) in decoded.items()})
        return Dataset(list(classes) if classes is not None else names,
                       {n: s for n, (s, _) in decoded.items()})
    if all(_is_torchvision(v) for v in values):
        return _torchvision_dataset(data, classes)
    raise DatasetError(
        "every split must be of one kind: (images, labels) arrays, torchvision datasets or "
        "Hugging Face datasets"
    )


def _torchvision_dataset(data: Mapping[str, Any], classes: Sequence[str] | None) -> Dataset:
    decoded = {name: _torchvision_split(name, ds) for name, ds in data.items()}
    folder_names = [f for _, _, f in decoded.values() if f is not None]
    if folder_names:
        if len(folder_names) != len(decoded):
            raise DatasetError("mix of ImageFolder and other torchvision datasets")
        union: set[str] = set().union(*folder_names)
        names = order_class_names(union)
        splits = {n: _relabel(s, names) for n, (s, _, _) in decoded.items()}
    else:
        splits = {n: s for n, (s, _, _) in decoded.items()}
        named = {n: c for n, (_, c, _) in decoded.items() if c is not None}
        names = _same_classes(named) if named else decimal_classes(splits)
    return Dataset(list(classes) if classes is not None else names, splits)


def digest_of(data: Any, classes: Sequence[str] | None = None, **columns: str) -> str:
    """The digest of a torchvision or Hugging Face dataset (or dict of splits), arrays with
    `classes`, or a `.npz` file: equal to `commentary dataset hash` on the same files."""
    return as_dataset(data, classes, **columns).digest


def write_npz(dataset: Dataset, path: str | os.PathLike[str] | BinaryIO) -> None:
    """Writes `dataset` as the `.npz` the registry decodes to the same digest (to a path,
    which gets no `.npz` appended, or to a binary file)."""
    arrays: dict[str, np.ndarray] = {"classes": np.array(dataset.classes, dtype=np.str_)}
    for name, split in dataset.splits.items():
        arrays[f"{name}_images"] = split.images
        arrays[f"{name}_labels"] = split.labels
    if any(c != str(np.str_(c)) or c.endswith("\0") for c in dataset.classes):
        raise DatasetError("a class name ends with a NUL character, which .npz cannot keep")
    if isinstance(path, (str, os.PathLike)):
        with open(path, "wb") as f:
            np.savez_compressed(f, **arrays)  # type: ignore[arg-type]
    else:
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
