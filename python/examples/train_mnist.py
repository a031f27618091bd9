"""Train a small PyTorch CNN on the MNIST fixture twice, without and with a commentary fetched
from a running registry, and print both test accuracies.

    commentary serve &                                   # a registry, with a learned commentary
    python python/examples/train_mnist.py --server http://127.0.0.1:8080 --kind label-blending

The commentary is found by the dataset's digest: `best()` picks the largest improvement among
the registry's commentaries that improved (`--id` pins one instead).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import commentary

FIXTURE = Path(__file__).resolve().parents[2] / "fixtures" / "mnist"


def read_idx(path: Path) -> np.ndarray:
    data = gzip.open(path).read()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def load_fixture() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        "train": (read_idx(FIXTURE / "train-images-idx3-ubyte.gz"),
                  read_idx(FIXTURE / "train-labels-idx1-ubyte.gz")),
        "test": (read_idx(FIXTURE / "t10k-images-idx3-ubyte.gz"),
                 read_idx(FIXTURE / "t10k-labels-idx1-ubyte.gz")),
    }


class SmallCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


def train(data, steps: int, batch: int, seed: int, helper=None) -> float:
    """Trains a fresh CNN for `steps` Adam steps, applying `helper` (a loaded commentary) to
    each batch; returns the test accuracy."""
    torch.manual_seed(seed)
    images, labels = data["train"]
    x_all = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)
    y_all = torch.from_numpy(labels.astype(np.int64))
    model = SmallCnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(len(y_all), (batch,), generator=generator)
        x, y = x_all[index], y_all[index]
        if isinstance(helper, commentary.LabelBlending):
            x, y_a, y_b, lam = helper.mix(x, y, generator=generator)
            loss = commentary.mix_loss(model(x), y_a, y_b, lam)
        elif isinstance(helper, commentary.ExampleWeighting):
            with torch.no_grad():
                weights = helper.weights(x, helper.progress(step, steps), labels=y)
            loss = commentary.weighted_loss(model(x), y, weights)
        elif isinstance(helper, commentary.TabularWeights):
            loss = commentary.weighted_loss(model(x), y, helper.weights(index))
        elif isinstance(helper, commentary.AttentionMask):
            loss = F.cross_entropy(model(helper.masked(x)), y)  # tested on unmasked images
        else:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_images, test_labels = data["test"]
    with torch.no_grad():
        logits = model(torch.from_numpy(test_images[:, None].astype(np.float32) / 255.0))
    return float((logits.argmax(1).numpy() == test_labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8080")
    parser.add_argument("--kind", default=None, help="example-weighting, label-blending or attention-mask")
    parser.add_argument("--id", default=None, help="use this commentary instead of the best")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = load_fixture()
    digest = commentary.dataset_digest(data)
    registry = commentary.Registry(args.server)
    commentary_id = args.id
    if commentary_id is None:
        best = registry.best(digest, kind=args.kind)
        if best is None:
            raise SystemExit(f"the registry has no commentary for {digest} that improved; "
                             "learn one (POST /v1/runs) or pass --id")
        commentary_id = best.id
    helper = commentary.load(registry.download(commentary_id))
    if isinstance(helper, commentary.TabularWeights):
        helper.align(*data["train"])
    kind = type(helper).__name__
    without = train(data, args.steps, args.batch, args.seed)
    with_it = train(data, args.steps, args.batch, args.seed, helper)
    print(f"dataset {digest}")
    print(f"commentary {commentary_id} ({kind})")
    print(f"test accuracy without: {without:.4f}")
    print(f"test accuracy with:    {with_it:.4f}")


if __name__ == "__main__":
    main()
