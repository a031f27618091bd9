#!/usr/bin/env python3
"""Writes a synthetic MNIST-shaped IDX dataset (random pixels, labels 0-9) as a .tar archive,
for benchmarks that need a dataset of a given size.

usage: make_idx_dataset.py OUT.tar --train N --test M [--side 28]
"""
import argparse
import io
import os
import random
import struct
import tarfile


def idx(dims, code, payload):
    header = struct.pack(">BBBB", 0, 0, code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
    return header + payload


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--train", type=int, required=True)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--side", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tarfile.open(args.out, "w") as tar:
        for prefix, n in (("train", args.train), ("t10k", args.test)):
            pixels = os.urandom(n * args.side * args.side)
            labels = bytes(rng.randrange(10) for _ in range(n))
            for name, data in (
                (f"{prefix}-images-idx3-ubyte", idx([n, args.side, args.side], 0x08, pixels)),
                (f"{prefix}-labels-idx1-ubyte", idx([n], 0x08, labels)),
            ):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
