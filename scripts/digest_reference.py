#!/usr/bin/env python3
"""Independent reference implementation of the dataset digest (format version 1) for a folder
of IDX files, written from docs/dataset-digest.md alone with the Python standard library.

The Rust tests run it on the MNIST fixture and compare with `commentary dataset hash`, so the
documented byte layout and the implementation cannot drift apart.

Usage: scripts/digest_reference.py FOLDER
"""
import gzip
import hashlib
import os
import struct
import sys


def read_idx(path):
    opener = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndims = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack(">" + "I" * ndims, data[4:4 + 4 * ndims])
    return dims, data[4 + 4 * ndims:]


def u32(n):
    return struct.pack("<I", n)


def text(s):
    b = s.encode("utf-8")
    return u32(len(b)) + b


def main(folder):
    splits = {}
    for name in sorted(os.listdir(folder)):
        stem = name[:-3] if name.endswith(".gz") else name
        parts = stem.replace(".", "-").split("-")
        if len(parts) == 4 and parts[1] == "images":
            prefix = parts[0]
            labels = next(n for n in os.listdir(folder)
                          if n.startswith(prefix + "-labels") or n.startswith(prefix + ".labels"))
            splits["test" if prefix == "t10k" else prefix] = (
                os.path.join(folder, name), os.path.join(folder, labels))
    decoded = {}
    max_label = 0
    for split, (images_path, labels_path) in splits.items():
        dims, pixels = read_idx(images_path)
        (count,), labels = read_idx(labels_path)
        n, h, w = dims[:3]
        c = dims[3] if len(dims) == 4 else 1
        size = h * w * c
        hashes = sorted(
            hashlib.sha256(u32(labels[i]) + pixels[i * size:(i + 1) * size]).digest()
            for i in range(n))
        max_label = max(max_label, max(labels))
        decoded[split] = (h, w, c, hashes)
    classes = [str(i) for i in range(max_label + 1)]
    order = sorted(decoded, key=lambda s: (0 if s == "train" else 1 if s == "test" else 2,
                                           s.encode("utf-8") if s not in ("train", "test") else b""))
    digest = hashlib.sha256()
    digest.update(b"commentary-dataset-v1\n")
    digest.update(u32(len(order)))
    for split in order:
        h, w, c, hashes = decoded[split]
        digest.update(text(split) + u32(h) + u32(w) + u32(c) + u32(len(classes)))
        for name in classes:
            digest.update(text(name))
        digest.update(struct.pack("<Q", len(hashes)))
        digest.update(b"".join(hashes))
    print("sha256:" + digest.hexdigest())


if __name__ == "__main__":
    main(sys.argv[1])
