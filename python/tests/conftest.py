"""Shared fixtures: the real `commentary` binary, a real `commentary serve` on port 0 (SQLite,
one worker) seeded with the MNIST fixture and commentaries learned by real runs.

Nothing here skips: a missing binary, fixture or Python dependency fails the tests with what
to do (scripts/test.sh builds the binary and installs the Python packages).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "mnist"
#: The MNIST fixture's digest (docs/dataset-digest.md).
FIXTURE_DIGEST = "sha256:534e375064a72cafa0134c0cc804ba53df9f0e7db5db256ed4733ed1c19731b4"


def commentary_bin() -> Path:
    """The `commentary` binary: $COMMENTARY_BIN, else the workspace's debug build."""
    if env := os.environ.get("COMMENTARY_BIN"):
        path = Path(env)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        path = target / "debug" / "commentary"
    if not path.is_file():
        pytest.fail(
            f"no commentary binary at {path}: build it with `cargo build --bin commentary` or "
            "set COMMENTARY_BIN (scripts/test.sh does this)"
        )
    return path


def run_cli(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(commentary_bin()), *args], capture_output=True, text=True, timeout=600, **kwargs
    )
    if check and result.returncode != 0:
        raise AssertionError(f"commentary {' '.join(args)} failed:\n{result.stderr}")
    return result


def rust_digest(path: Path) -> str:
    return run_cli("dataset", "hash", str(path)).stdout.strip()


def read_idx(path: Path) -> np.ndarray:
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    ndims = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


@dataclass(frozen=True)
class Mnist:
    """The fixture's splits as arrays, in file order."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return {
            "train": (self.train_images, self.train_labels),
            "test": (self.test_images, self.test_labels),
        }


@pytest.fixture(scope="session")
def mnist() -> Mnist:
    return Mnist(
        read_idx(FIXTURE / "train-images-idx3-ubyte.gz"),
        read_idx(FIXTURE / "train-labels-idx1-ubyte.gz"),
        read_idx(FIXTURE / "t10k-images-idx3-ubyte.gz"),
        read_idx(FIXTURE / "t10k-labels-idx1-ubyte.gz"),
    )


@dataclass
class Server:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]

    def token(self, scope: str) -> str:
        return run_cli(
            "token", "create", "--scope", scope, "--data-dir", str(self.data_dir)
        ).stdout.strip()


def start_server(data_dir: Path, *extra: str) -> Server:
    """`commentary serve` on 127.0.0.1:0; waits for its `listening on` line."""
    process = subprocess.Popen(
        [str(commentary_bin()), "serve", "--addr", "127.0.0.1:0", "--data-dir", str(data_dir),
         "--write-rate-limit", "0", "--read-rate-limit", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("listening on "):
            return Server(line.split()[-1], data_dir, process)
        if not line and process.poll() is not None:
            break
    process.kill()
    pytest.fail(f"commentary serve did not start (exit {process.poll()})")


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An open registry (anonymous reads and writes) with one learning worker."""
    running = start_server(tmp_path_factory.mktemp("registry"), "--workers", "1")
    yield running
    stop_server(running)


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh commentary cache, and no stored credentials."""
    monkeypatch.setenv("COMMENTARY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("COMMENTARY_TOKEN", raising=False)
    return tmp_path / "cache"


#: Small but real learning configs, one per commentary the tests apply. CBR nets cover batch
#: norm and the pool rule; MLP teachers cover the label input.
SMALL = {
    "inner_steps": 4, "batch_size": 16, "validation_examples": 200,
    "validation_batch_size": 64, "student": {"type": "mlp", "hidden": [16]},
    "insight_examples": 48, "insight_masks": 8,
}
RUNS = {
    "teacher-cbr": ("example-weighting", "bptt",
                    {**SMALL, "meta_steps": 2, "commentary_net": {"type": "cbr"},
                     "label_input": False, "label_head": True}),
    "teacher-mlp": ("example-weighting", "bptt",
                    {**SMALL, "meta_steps": 2, "commentary_net": {"type": "mlp", "hidden": [8]},
                     "label_input": True}),
    "table": ("example-weighting", "bptt", {**SMALL, "meta_steps": 2, "tabular": True}),
    "blend": ("label-blending", "ift", {**SMALL, "meta_steps": 2}),
    "mask-cbr": ("attention-mask", "ift",
                 {**SMALL, "meta_steps": 2, "commentary_net": {"type": "cbr"}}),
}
EVALUATION = {"seeds": [1], "steps": 30, "eval_every": 30}


@pytest.fixture(scope="session")
def learned(server: Server, mnist: Mnist) -> dict[str, str]:
    """Commentary ids by RUNS key, learned by real runs on the registry's worker."""
    import commentary

    registry = commentary.Registry(server.url, progress=False)
    pushed = registry.push(mnist.splits(), name="mnist-fixture")
    assert pushed.digest == FIXTURE_DIGEST
    runs = {
        key: registry.runs.create(FIXTURE_DIGEST, kind, algorithm=algorithm, config=config,
                                  evaluation=EVALUATION)
        for key, (kind, algorithm, config) in RUNS.items()
    }
    ids = {}
    for key, run in runs.items():
        done = registry.runs.watch(run.id)
        assert done.commentary_id, done
        ids[key] = done.commentary_id
    return ids


def mnist_torchvision_root(tmp: Path) -> Path:
    """The fixture's IDX files laid out as torchvision's MNIST expects (raw, uncompressed)."""
    raw = tmp / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in os.listdir(FIXTURE):
        if name.endswith(".gz"):
            with gzip.open(FIXTURE / name) as src, open(raw / name[:-3], "wb") as dst:
                shutil.copyfileobj(src, dst)
    return tmp
