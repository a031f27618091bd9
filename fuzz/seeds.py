#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora (fuzz/corpus/<target>/seed-*): small valid inputs of
every format, so fuzzing starts inside each parser rather than at its first magic number.

Standard library only. The artifact seed is a real artifact: pass its directory (from
`commentary learn ... --out DIR`) as the first argument; without it that seed is kept as is.
Run from anywhere: python3 fuzz/seeds.py [ARTIFACT_DIR]
"""

import gzip
import io
import json
import struct
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def join(parts: list[bytes]) -> bytes:
    """The fuzz crate's framing: each part is a u16 LE length, then its bytes."""
    out = b""
    for part in parts:
        assert len(part) < 1 << 16, "seed part over 64 KiB"
        out += struct.pack("<H", len(part)) + part
    return out


def idx_images(n: int, h: int, w: int) -> bytes:
    pixels = bytes((i * 37) % 256 for i in range(n * h * w))
    return struct.pack(">BBBBIII", 0, 0, 8, 3, n, h, w) + pixels


def idx_labels(labels: list[int]) -> bytes:
    return struct.pack(">BBBBI", 0, 0, 8, 1, len(labels)) + bytes(labels)


def cifar10_batch(labels: list[int]) -> bytes:
    return b"".join(bytes([l]) + bytes((i + l) % 256 for i in range(3072)) for l in labels)


def cifar100_batch(labels: list[tuple[int, int]]) -> bytes:
    return b"".join(
        bytes([c, f]) + bytes((i * f) % 256 for i in range(3072)) for c, f in labels
    )


def npy(dtype: str, shape: tuple[int, ...], data: bytes) -> bytes:
    header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        dtype,
        "".join(f"{d}," for d in shape),
    )
    header = header.ljust(118 - 10) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + data


def png(w: int, h: int, channels: int, seed: int) -> bytes:
    color = {1: 0, 3: 2}[channels]
    raw = b"".join(
        b"\x00" + bytes((x * 31 + y * 7 + seed) % 256 for x in range(w * channels))
        for y in range(h)
    )

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def zip_bytes(files: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in files.items():
            # A fixed date, so the seeds come out byte for byte the same on every run.
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = compression
            z.writestr(info, data)
    return buf.getvalue()


def tar_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def safetensors(tensors: dict[str, tuple[str, list[int], bytes]], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata} if metadata else {}
    offset = 0
    data = b""
    for name, (dtype, shape, raw) in sorted(tensors.items()):
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(values: list[float]) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def i64(values: list[int]) -> bytes:
    return struct.pack(f"<{len(values)}q", *values)


def problem(kind: str) -> bytes:
    """A 2-input, 2-class, one-layer student on 4 train and 2 validation examples."""
    tensors = {
        "student.layers.0.weight": ("F32", [2, 2], f32([0.1, -0.2, 0.3, 0.05])),
        "student.layers.0.bias": ("F32", [2], f32([0.0, 0.01])),
        "train.x": ("F32", [4, 2], f32([0.5, 1.0, -0.5, 0.2, 0.3, -1.0, 1.0, 1.0])),
        "train.y": ("I64", [4], i64([0, 1, 1, 0])),
        "val.x": ("F32", [2, 2], f32([0.1, 0.2, -0.3, 0.4])),
        "val.y": ("I64", [2], i64([1, 0])),
    }
    if kind == "weight-bptt":
        tensors["commentary.logits"] = ("F32", [4], f32([0.0, 0.5, -0.5, 1.0]))
        tensors["batches"] = ("I64", [3, 2], i64([0, 1, 2, 3, 1, 2]))
        metadata = {"problem": kind, "optimizer": "adam", "inner_lr": "0.1"}
    else:
        tensors["commentary.logits"] = ("F32", [2, 2], f32([-1.0, -1.0, -1.0, -1.0]))
        tensors["pairs"] = ("I64", [4], i64([1, 0, 3, 2]))
        metadata = {"problem": kind, "neumann_terms": "1", "neumann_lr": "0.1"}
    return safetensors(tensors, metadata)


# dataset_files: the index of each name in fuzz_targets/dataset_files.rs's NAMES.
NAMES = [
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz", "val-images-idx3-ubyte", "val-labels-idx1-ubyte",
    "data_batch_1.bin", "data_batch_2.bin", "test_batch.bin", "batches.meta.txt", "train.bin",
    "test.bin", "fine_label_names.txt", "train_images.npy", "train_labels.npy",
    "test_images.npy", "test_labels.npy", "classes.npy", "data.npz", "train/0/a.png",
    "train/1/b.png", "train/0/c.jpg", "test/0/d.png", "test/1/e.jpeg", "train/cat/f.png",
]


def files_seed(files: dict[str, bytes]) -> bytes:
    parts = []
    for name, data in files.items():
        parts += [bytes([NAMES.index(name)]), data]
    return join(parts)


def idx_dataset() -> dict[str, bytes]:
    return {
        "train-images-idx3-ubyte": idx_images(6, 4, 4),
        "train-labels-idx1-ubyte": idx_labels([0, 1, 2, 0, 1, 2]),
        "t10k-images-idx3-ubyte.gz": gzip.compress(idx_images(3, 4, 4), mtime=0),
        "t10k-labels-idx1-ubyte.gz": gzip.compress(idx_labels([2, 1, 0]), mtime=0),
    }


def npz_dataset() -> dict[str, bytes]:
    return {
        "train_images.npy": npy("|u1", (4, 3, 3), bytes(range(36))),
        "train_labels.npy": npy("<i8", (4,), struct.pack("<4q", 0, 1, 1, 0)),
        "classes.npy": npy("<U3", (2,), "cat".encode("utf-32-le") + "dog".encode("utf-32-le")),
    }


def folder_dataset() -> dict[str, bytes]:
    return {
        "train/0/a.png": png(3, 2, 3, 1),
        "train/1/b.png": png(3, 2, 3, 2),
        "test/0/d.png": png(3, 2, 3, 3),
    }


def write(target: str, name: str, data: bytes) -> None:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"seed-{name}").write_bytes(data)


def main() -> None:
    write("dataset_files", "idx", files_seed(idx_dataset()))
    write("dataset_files", "cifar10", files_seed({
        "data_batch_1.bin": cifar10_batch([0, 9]),
        "test_batch.bin": cifar10_batch([3]),
        "batches.meta.txt": ("\n".join(f"c{i}" for i in range(10)) + "\n").encode(),
    }))
    write("dataset_files", "cifar100", files_seed({
        "train.bin": cifar100_batch([(0, 5), (19, 99)]),
        "fine_label_names.txt": ("\n".join(f"f{i}" for i in range(100)) + "\n").encode(),
    }))
    write("dataset_files", "npy", files_seed(npz_dataset()))
    write("dataset_files", "npz", files_seed({"data.npz": zip_bytes(npz_dataset())}))
    write("dataset_files", "folder", files_seed(folder_dataset()))

    tree = {f"mnist/{k}": v for k, v in idx_dataset().items()}
    write("dataset_archive", "tar", tar_bytes(tree))
    write("dataset_archive", "tar-gz", gzip.compress(tar_bytes(tree), mtime=0))
    write("dataset_archive", "zip", zip_bytes(tree))
    write("dataset_archive", "zip-stored", zip_bytes(folder_dataset(), zipfile.ZIP_STORED))
    write("dataset_archive", "npz-in-zip", zip_bytes({"d/data.npz": zip_bytes(npz_dataset())}))

    write("problem", "weight-bptt", problem("weight-bptt"))
    write("problem", "blend-ift", problem("blend-ift"))
    write("artifact", "tensors-only", join([b"{}", problem("blend-ift")]))

    write("wire", "range", struct.pack("<Q", 100) + b"bytes=0-9")
    write("wire", "suffix", struct.pack("<Q", 100) + b"bytes=-5")
    write("wire", "cursor", struct.pack("<Q", 0) + b"9223372036854775807")
    write("wire", "digest", struct.pack("<Q", 0) + b"sha256:" + b"ab" * 32)

    if len(sys.argv) > 1:
        artifact = Path(sys.argv[1])
        manifest = (artifact / "manifest.json").read_bytes()
        tensors = (artifact / "tensors.safetensors").read_bytes()
        report_path = artifact / "report.json"
        report = report_path.read_bytes() if report_path.exists() else b""
        json.loads(manifest)
        write("artifact", "learned", join([manifest, tensors, report]))


if __name__ == "__main__":
    main()
