"""The trainer's networks in PyTorch, parameter for parameter: the same names, layouts and
layers as `trainer::models::Network`, so an artifact's tensors load with `load_state_dict`.

- `mlp`: flatten (C, H, W order), linear layers with ReLU between them; extra inputs (a
  one-hot label) are appended to the last layer's input.
- `cbr`: conv5x5/s2/p2(32)-BN-ReLU-[maxpool3/s2], conv3x3/s2/p2(64)-BN-ReLU-[maxpool3/s2],
  flatten, linear; a pool is skipped when its input map is smaller than 3x3. Batch norm always
  uses the batch's statistics (eps 1e-5, no running averages), as inside the trainer: a teacher
  or mask net weighs a batch as one, and results depend on the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .artifact import CBR_CHANNELS, _conv_out
from .errors import ArtifactError

#: Batch-norm epsilon (trainer::nn::batch_norm::EPSILON).
BN_EPSILON = 1e-5


class Mlp(nn.Module):
    """Linear layers `layers.{i}` with ReLU between them."""

    def __init__(self, inputs: int, hidden: list[int], outputs: int, extra_inputs: int = 0):
        super().__init__()
        dims = [inputs, *hidden, outputs]
        self.extra_inputs = extra_inputs
        self.layers = nn.ModuleList(
            nn.Linear(a + (extra_inputs if i == len(dims) - 2 else 0), b)
            for i, (a, b) in enumerate(zip(dims, dims[1:]))
        )

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        for i, layer in enumerate(self.layers):
            if i > 0:
                x = F.relu(x)
            if i == len(self.layers) - 1 and extra is not None:
                x = torch.cat([x, extra], 1)
            x = layer(x)
        return x


class Cbr(nn.Module):
    """The paper's CBR network (see the module docs)."""

    def __init__(self, shape: tuple[int, int, int], outputs: int, extra_inputs: int = 0):
        super().__init__()
        h, w, c = shape
        c1, c2 = CBR_CHANNELS
        self.conv1 = nn.Conv2d(c, c1, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(c1, eps=BN_EPSILON, track_running_stats=False)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=2)
        self.bn2 = nn.BatchNorm2d(c2, eps=BN_EPSILON, track_running_stats=False)
        self.pools = []
        for kernel in (5, 3):
            h, w = _conv_out(h, kernel, 2, 2), _conv_out(w, kernel, 2, 2)
            pooled = h >= 3 and w >= 3
            self.pools.append(pooled)
            if pooled:
                h, w = _conv_out(h, 3, 2, 0), _conv_out(w, 3, 2, 0)
        self.fc = nn.Linear(c2 * h * w + extra_inputs, outputs)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        for conv, bn, pooled in ((self.conv1, self.bn1, self.pools[0]),
                                 (self.conv2, self.bn2, self.pools[1])):
            x = F.relu(bn(conv(x)))
            if pooled:
                x = F.max_pool2d(x, 3, stride=2)
        x = x.flatten(1)
        if extra is not None:
            x = torch.cat([x, extra], 1)
        return self.fc(x)


def build_network(
    net: dict[str, Any], shape: tuple[int, int, int], outputs: int, extra_inputs: int = 0
) -> nn.Module:
    """The network of spec `net` ({"type": "mlp", "hidden": [...]} or {"type": "cbr"}) on
    (H, W, C) images."""
    kind = net.get("type")
    if kind == "mlp":
        h, w, c = shape
        return Mlp(h * w * c, [int(n) for n in net.get("hidden", [])], outputs, extra_inputs)
    if kind == "cbr":
        return Cbr(shape, outputs, extra_inputs)
    raise ArtifactError(f"network spec {net} is not one this client knows (mlp or cbr)")


def load_parameters(module: nn.Module, tensors: dict[str, Any], prefix: str = "commentary.") -> None:
    """Loads the artifact's `prefix`-named tensors into `module`, exactly (no missing or extra
    names; shapes must match)."""
    state = {k[len(prefix):]: torch.from_numpy(v.copy()) for k, v in tensors.items()
             if k.startswith(prefix)}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"the artifact's tensors do not fit the network: {e}") from e
