"""The dataset digest (docs/dataset-digest.md, format version 1), equal to `commentary dataset
hash` on the same content, and the canonical example order it defines.

A split is `(images, labels)`: images uint8 [N, H, W] (one channel) or [N, H, W, C] with C 1 or
3, in HWC order as the Rust decoders produce them; labels N integer ids into `classes`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import DatasetError

MAGIC = b"commentary-dataset-v1\n"


@dataclass(frozen=True)
class Split:
    """One split, checked: images uint8 [N, H, W, C] (C 1 or 3), labels uint32 [N]."""

    images: np.ndarray
    labels: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C)."""
        _, h, w, c = self.images.shape
        return h, w, c

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def check_split(name: str, images: object, labels: object) -> Split:
    """Validates and normalises one split's arrays (a [N, H, W] image array gets C = 1)."""
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8:
        raise DatasetError(
            f"split {name!r}: images have dtype {images.dtype}; expected uint8 pixels "
            "(for floats in [0, 1]: (x * 255).round().astype(np.uint8))"
        )
    if images.ndim == 3:
        images = images[..., np.newaxis]
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise DatasetError(
            f"split {name!r}: images must have shape [N, H, W] or [N, H, W, C] with C 1 or 3 "
            f"(HWC, as the registry decodes them); got {list(np.shape(images))}"
        )
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise DatasetError(f"split {name!r}: image size {images.shape[1:3]} has a zero dimension")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DatasetError(
            f"split {name!r}: {images.shape[0]} images but labels of shape {list(labels.shape)}"
        )
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"split {name!r}: labels have dtype {labels.dtype}; expected integers")
    if labels.size and (labels.min() < 0 or labels.max() > 0xFFFF_FFFF):
        raise DatasetError(f"split {name!r}: a label is negative or does not fit in 32 bits")
    return Split(np.ascontiguousarray(images), labels.astype(np.uint32))


def split_order(name: str) -> tuple[int, bytes]:
    """Digest order of splits: `train`, `test`, then the rest bytewise."""
    if name == "train":
        return (0, b"")
    if name == "test":
        return (1, b"")
    return (2, name.encode("utf-8"))


def decimal_classes(splits: Mapping[str, Split]) -> list[str]:
    """The classes of a dataset without names: `"0"` .. the largest label (as IDX and npz)."""
    top = max((int(s.labels.max()) for s in splits.values() if len(s)), default=None)
    if top is None:
        raise DatasetError("the dataset holds no examples")
    return [str(i) for i in range(top + 1)]


def record_hashes(split: Split) -> list[bytes]:
    """sha256(label as u32 LE || pixel bytes) of every example, in array order."""
    flat = split.images.reshape(len(split), -1)
    return [
        hashlib.sha256(struct.pack("<I", int(label)) + row.tobytes()).digest()
        for label, row in zip(split.labels, flat, strict=True)
    ]


def canonical_order(images: object, labels: object) -> np.ndarray:
    """The canonical order of a split: `order[k]` is the index, in the arrays given, of the
    k-th example in sorted-record-hash order, the order that per-example commentaries (weight
    tables, `insight.example_weights`) and validation indices refer to."""
    split = check_split("split", images, labels)
    hashes = record_hashes(split)
    return np.array(sorted(range(len(hashes)), key=hashes.__getitem__), dtype=np.int64)


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def digest_of_splits(splits: Mapping[str, Split], classes: Sequence[str]) -> str:
    """The digest of checked splits with their class names."""
    if not splits:
        raise DatasetError("a dataset needs at least one split")
    for name, split in splits.items():
        if len(split) and int(split.labels.max()) >= len(classes):
            raise DatasetError(
                f"split {name!r}: label {int(split.labels.max())} is out of range: the dataset "
                f"has {len(classes)} classes"
            )
    digest = hashlib.sha256(MAGIC)
    digest.update(struct.pack("<I", len(splits)))
    for name in sorted(splits, key=split_order):
        split = splits[name]
        h, w, c = split.shape
        digest.update(_text(name) + struct.pack("<IIII", h, w, c, len(classes)))
        for class_name in classes:
            digest.update(_text(class_name))
        digest.update(struct.pack("<Q", len(split)))
        digest.update(b"".join(sorted(record_hashes(split))))
    return "sha256:" + digest.hexdigest()


def dataset_digest(
    splits: Mapping[str, tuple[object, object]], classes: Sequence[str] | None = None
) -> str:
    """The digest of a dataset given as `{split: (images, labels)}` arrays.

    `classes` are the class names indexed by label id; without them the classes are the
    decimal ids `"0"` .. the largest label, as for IDX files (and `.npz` without `classes`).
    """
    checked = {name: check_split(name, *pair) for name, pair in splits.items()}
    names = list(classes) if classes is not None else decimal_classes(checked)
    return digest_of_splits(checked, names)
