"""Applying a commentary in a PyTorch training loop: one object per kind, built from an
artifact by `commentary.load(path)`.

Images are what the trainer sees: float [N, C, H, W] in [0, 1] (torchvision's `ToTensor()`),
before any mean/std normalisation.

- `ExampleWeighting`: the teacher t(x, progress) -> (0, 1); weigh each example's loss with
  `weighted_loss`. `progress` is the share of training done, i / S.
- `TabularWeights`: one learned weight per train example; `align()` it with your own order.
- `LabelBlending`: `mix(x, y)` blends each example with an in-batch partner in the learned
  proportion of their classes; `mix_loss` is the matching soft-target loss.
- `AttentionMask`: `mask(x)` -> [N, H, W]; `masked(x)` multiplies every channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .artifact import Artifact, open_artifact
from .digest import canonical_order
from .errors import ArtifactError
from .nets import build_network, load_parameters


def _as_tensor(values: Any, like: torch.Tensor | None = None, dtype: torch.dtype | None = None):
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if like is not None:
        tensor = tensor.to(like.device)
    return tensor.to(dtype) if dtype is not None else tensor


def weighted_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_i w_i CE_i, the trainer's inner loss under example weighting (weights are detached:
    the teacher is fixed when it is applied)."""
    per_example = F.cross_entropy(logits, targets, reduction="none")
    return (weights.detach().to(per_example.dtype) * per_example).mean()


def mix_loss(
    logits: torch.Tensor, targets_a: torch.Tensor, targets_b: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """The soft-target cross-entropy of a blended batch: mean_i lam_i CE(y_a) + (1 - lam_i)
    CE(y_b), what the trainer trains on under label blending."""
    ce_a = F.cross_entropy(logits, targets_a, reduction="none")
    ce_b = F.cross_entropy(logits, targets_b, reduction="none")
    lam = lam.detach().to(ce_a.dtype)
    return (lam * ce_a + (1 - lam) * ce_b).mean()


class _Aligned:
    """A map from the user's train order to the canonical order of the artifact's dataset."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self._to_canonical: np.ndarray | None = None

    def align(self, images: Any, labels: Any) -> None:
        """Maps your train split (images uint8 [N, H, W(, C)] and labels, in your order) onto the
        canonical order the commentary's per-example values are stored in."""
        order = canonical_order(images, labels)
        expected = int(self.artifact.manifest["dataset"]["train_examples"])
        if len(order) != expected:
            raise ArtifactError(
                f"the train split given has {len(order)} examples; the commentary was learned "
                f"on {expected}"
            )
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        self._to_canonical = inverse

    def canonical(self, indices: Any, canonical: bool) -> np.ndarray:
        index = np.asarray(indices.cpu() if isinstance(indices, torch.Tensor) else indices,
                           dtype=np.int64)
        if canonical:
            return index
        if self._to_canonical is None:
            raise ArtifactError(
                "per-example values are in the dataset's canonical order: call align(images, "
                "labels) with your train split first, or pass canonical=True"
            )
        return self._to_canonical[index]


class ExampleWeighting(nn.Module):
    """A learned teacher t(x, progress; labels) -> per-example weights in (0, 1)."""

    def __init__(self, artifact: Artifact) -> None:
        super().__init__()
        spec = artifact.spec
        h, w, c = artifact.image_shape
        classes = len(artifact.classes)
        self.artifact = artifact
        self.classes = classes
        self.label_input = bool(spec.get("label_input"))
        self.label_head = bool(spec.get("label_head"))
        self.net = build_network(
            spec.get("net", {}),
            (h, w, c + 1),
            classes if self.label_head else 1,
            classes if self.label_input else 0,
        )
        load_parameters(self.net, artifact.tensors)
        self.requires_grad_(False)
        self._stored = _Aligned(artifact)

    def progress(self, step: int, total_steps: int) -> float:
        """The teacher's time input at student step `step` of `total_steps`, by the artifact's
        time input: i / S (`progress`), or i / K (`clamped-iteration`, K the inner steps it was
        learned with); clamped to 1."""
        if self.artifact.time_input == "clamped-iteration":
            total_steps = int(self.artifact.manifest["config"]["inner_steps"])
        return min(step / max(total_steps, 1), 1.0)

    def weights(self, x: torch.Tensor, progress: Any, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Weights [N] of the batch `x` [N, C, H, W] at training `progress` (a float or [N]
        floats in [0, 1]). The batch is weighed as one (batch norm uses its statistics).
        `labels` are needed by teachers that take the label (`label_input`, `label_head`)."""
        n, _, h, w = x.shape
        time = _as_tensor(progress, x, x.dtype).reshape(-1)
        if time.numel() == 1:
            time = time.expand(n)
        inputs = torch.cat([x, time.reshape(n, 1, 1, 1).expand(n, 1, h, w)], 1)
        onehot = None
        if self.label_input or self.label_head:
            if labels is None:
                raise ArtifactError("this teacher takes the label: pass labels=")
            onehot = F.one_hot(labels.to(x.device).long(), self.classes).to(x.dtype)
        logits = self.net(inputs, onehot if self.label_input else None)
        if self.label_head:
            return torch.sigmoid((logits * onehot).sum(1))
        return torch.sigmoid(logits.reshape(n))

    forward = weights

    def align(self, images: Any, labels: Any) -> None:
        """See `stored_weights`: maps your train order onto the canonical one."""
        self._stored.align(images, labels)

    def stored_weights(self, indices: Any, canonical: bool = False) -> torch.Tensor:
        """Each train example's weight averaged over training (the artifact's
        `insight.example_weights`), for examples at `indices` of your train order (after
        `align`)."""
        table = self.artifact.tensors.get("insight.example_weights")
        if table is None:
            raise ArtifactError("this artifact stores no insight.example_weights")
        return torch.from_numpy(table[self._stored.canonical(indices, canonical)])


class TabularWeights:
    """One learned logit per train example: w_i = sigmoid(logit_i)."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.logits = torch.from_numpy(artifact.tensors["commentary.logits"].copy())
        self._aligned = _Aligned(artifact)

    def align(self, images: Any, labels: Any) -> None:
        """Maps your train split (in your order) onto the canonical order of the table."""
        self._aligned.align(images, labels)

    def weights(self, indices: Any, canonical: bool = False) -> torch.Tensor:
        """Weights of the examples at `indices` of your train order (after `align`), or of
        the canonical order with `canonical=True`."""
        index = torch.from_numpy(self._aligned.canonical(indices, canonical))
        return torch.sigmoid(self.logits[index])


class LabelBlending:
    """Learned label blending: lambda(y_i, y_j) = 1 - 0.5 sigmoid(M[y_i, y_j])."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.logits = torch.from_numpy(artifact.tensors["commentary.logits"].copy())

    @property
    def proportions(self) -> torch.Tensor:
        """lambda [C, C]: the share an example of class i keeps when blended with class j."""
        return 1 - 0.5 * torch.sigmoid(self.logits)

    def mix(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        perm: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blends each example with its partner `perm[i]` (a random in-batch permutation unless
        given): returns (x_mixed, y, y[perm], lam) with x_mixed = lam x + (1 - lam) x[perm]."""
        if perm is None:
            perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
        y = y.long()
        partner = y[perm]
        lam = self.proportions.to(x.device, x.dtype)[y, partner]
        shape = (-1,) + (1,) * (x.dim() - 1)
        mixed = lam.reshape(shape) * x + (1 - lam.reshape(shape)) * x[perm]
        return mixed, y, partner, lam

    def collate(
        self, base: Callable[[list[Any]], Any] | None = None, generator: torch.Generator | None = None
    ) -> Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """A `collate_fn` for a DataLoader: collates with `base` (PyTorch's default) and mixes
        the batch; train with `mix_loss(model(x), y_a, y_b, lam)`."""
        from torch.utils.data import default_collate

        collate = base or default_collate

        def mixed(batch: list[Any]):
            x, y = collate(batch)
            return self.mix(x, y, generator=generator)

        return mixed


class AttentionMask(nn.Module):
    """A learned mask network m(x) -> [N, H, W] (see `range`)."""

    def __init__(self, artifact: Artifact) -> None:
        super().__init__()
        spec = artifact.spec
        h, w, c = artifact.image_shape
        self.artifact = artifact
        self.shape = (h, w)
        # Artifacts before mask ranges were recorded have `unit` (schema::arch::MaskRange).
        self.range = str(spec.get("range", "unit"))
        if self.range not in ("half", "full", "unit"):
            raise ArtifactError(f"mask range {self.range!r} is not one this client knows")
        self.net = build_network(spec.get("net", {}), (h, w, c), h * w)
        load_parameters(self.net, artifact.tensors)
        self.requires_grad_(False)

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        """Masks [N, H, W] of the batch `x` [N, C, H, W] (weighed as one batch)."""
        z = self.net(x)
        if self.range == "half":
            m = 1 + 0.5 * torch.tanh(z)
        elif self.range == "full":
            m = 1.5 * torch.sigmoid(z + math.log(2.0))
        else:
            m = torch.sigmoid(z)
        return m.reshape(x.shape[0], *self.shape)

    forward = mask

    def masked(self, x: torch.Tensor) -> torch.Tensor:
        """`x` multiplied by its masks on every channel: what the student trains on (test on
        unmasked images). A single image [C, H, W] is masked as a batch of one."""
        single = x.dim() == 3
        batch = x.unsqueeze(0) if single else x
        with torch.no_grad():
            masked = batch * self.mask(batch).unsqueeze(1).to(batch.dtype)
        return masked[0] if single else masked

    def collate(self, base: Callable[[list[Any]], Any] | None = None) -> Callable[[list[Any]], Any]:
        """A `collate_fn` that masks each collated batch as one (as the trainer does)."""
        from torch.utils.data import default_collate

        collate = base or default_collate

        def masked(batch: list[Any]):
            x, y = collate(batch)
            return self.masked(x), y

        return masked


Commentary = ExampleWeighting | TabularWeights | LabelBlending | AttentionMask


def load(path: Any) -> Commentary:
    """The commentary in the artifact directory `path` (verified), as the object of its kind."""
    artifact = open_artifact(path)
    spec_type = artifact.spec.get("type")
    if spec_type == "teacher":
        return ExampleWeighting(artifact)
    if spec_type == "table":
        return TabularWeights(artifact)
    if spec_type == "blend-matrix":
        return LabelBlending(artifact)
    if spec_type == "mask-net":
        return AttentionMask(artifact)
    raise ArtifactError(f"commentary spec {spec_type!r} is not one this client knows")


__all__: Sequence[str] = [
    "AttentionMask",
    "ExampleWeighting",
    "LabelBlending",
    "TabularWeights",
    "load",
    "mix_loss",
    "weighted_loss",
]
