"""Commentary artifacts (docs/artifact-format.md): reading and verifying a directory with
`manifest.json`, `tensors.safetensors` and optionally `report.json`, without PyTorch.

Verification mirrors `commentary artifact verify` where the client depends on it: the
tensors' sha256 against the manifest, the parameter tensors the commentary spec needs (names,
F32, shapes, finite values), and a spec this client knows.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file

from .errors import ArtifactError

MANIFEST_FILE = "manifest.json"
TENSORS_FILE = "tensors.safetensors"
REPORT_FILE = "report.json"
#: Manifest format versions this client reads.
FORMAT_VERSIONS = (1, 2)
#: CBR's channel widths (schema::arch::CBR_CHANNELS).
CBR_CHANNELS = (32, 64)
PREFIX = "commentary."


def sha256_file(path: str | os.PathLike[str]) -> str:
    """`sha256:<hex>` of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return max(size + 2 * padding - kernel, 0) // stride + 1


def cbr_feature_map(h: int, w: int) -> tuple[int, int]:
    """CBR's last feature map for an h x w input (pools are skipped on maps under 3x3)."""

    def pool(h: int, w: int) -> tuple[int, int]:
        return (h, w) if h < 3 or w < 3 else (_conv_out(h, 3, 2, 0), _conv_out(w, 3, 2, 0))

    h, w = pool(_conv_out(h, 5, 2, 2), _conv_out(w, 5, 2, 2))
    return pool(_conv_out(h, 3, 2, 2), _conv_out(w, 3, 2, 2))


def net_parameter_shapes(
    net: dict[str, Any], shape: tuple[int, int, int], extra_inputs: int, outputs: int
) -> list[tuple[str, tuple[int, ...]]]:
    """Parameter names (with the `commentary.` prefix) and shapes of a network spec on (H, W,
    C) images, in the trainer's order (schema::arch::NetSpec::parameter_shapes)."""
    h, w, c = shape
    kind = net.get("type")
    out: list[tuple[str, tuple[int, ...]]] = []
    if kind == "mlp":
        hidden = net.get("hidden")
        if not isinstance(hidden, list) or not all(isinstance(n, int) and n > 0 for n in hidden):
            raise ArtifactError(f"network spec {net}: `hidden` must list positive widths")
        dims = [h * w * c, *hidden, outputs]
        for i, (fan_in, fan_out) in enumerate(zip(dims, dims[1:])):
            if i == len(dims) - 2:
                fan_in += extra_inputs
            out.append((f"{PREFIX}layers.{i}.weight", (fan_out, fan_in)))
            out.append((f"{PREFIX}layers.{i}.bias", (fan_out,)))
        return out
    if kind == "cbr":
        c1, c2 = CBR_CHANNELS
        fh, fw = cbr_feature_map(h, w)
        out = []
        for n, (cin, cout, k) in enumerate([(c, c1, 5), (c1, c2, 3)], start=1):
            out.append((f"{PREFIX}conv{n}.weight", (cout, cin, k, k)))
            out.append((f"{PREFIX}conv{n}.bias", (cout,)))
            out.append((f"{PREFIX}bn{n}.weight", (cout,)))
            out.append((f"{PREFIX}bn{n}.bias", (cout,)))
        out.append((f"{PREFIX}fc.weight", (outputs, c2 * fh * fw + extra_inputs)))
        out.append((f"{PREFIX}fc.bias", (outputs,)))
        return out
    raise ArtifactError(
        f"network spec {net} is not one this client knows (expected type mlp or cbr); "
        "upgrade the commentary package"
    )


def commentary_parameter_shapes(
    spec: dict[str, Any], shape: tuple[int, int, int], classes: int, train_examples: int
) -> list[tuple[str, tuple[int, ...]]]:
    """The parameter tensors an artifact of commentary `spec` holds."""
    h, w, c = shape
    kind = spec.get("type")
    if kind == "teacher":
        extra = classes if spec.get("label_input") else 0
        outputs = classes if spec.get("label_head") else 1
        return net_parameter_shapes(spec.get("net", {}), (h, w, c + 1), extra, outputs)
    if kind == "table":
        return [(f"{PREFIX}logits", (train_examples,))]
    if kind == "blend-matrix":
        return [(f"{PREFIX}logits", (classes, classes))]
    if kind == "mask-net":
        return net_parameter_shapes(spec.get("net", {}), shape, 0, h * w)
    raise ArtifactError(
        f"commentary spec {spec} is not one this client knows (teacher, table, blend-matrix or "
        "mask-net); upgrade the commentary package"
    )


#: The kind each commentary spec type belongs to.
SPEC_KINDS = {
    "teacher": "example-weighting",
    "table": "example-weighting",
    "blend-matrix": "label-blending",
    "mask-net": "attention-mask",
}


@dataclass(frozen=True)
class Artifact:
    """A verified artifact: its manifest, tensors (numpy) and apply report (if any)."""

    path: Path
    manifest: dict[str, Any]
    tensors: dict[str, np.ndarray]
    report: dict[str, Any] | None

    @property
    def kind(self) -> str:
        return str(self.manifest["kind"])

    @property
    def spec(self) -> dict[str, Any]:
        """`architecture.commentary`: how the commentary is parameterised."""
        return dict(self.manifest["architecture"]["commentary"])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the dataset it was learned on."""
        s = self.manifest["dataset"]["shape"]
        return int(s["height"]), int(s["width"]), int(s["channels"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["dataset"]["classes"])

    @property
    def digest(self) -> str:
        return str(self.manifest["dataset"]["digest"])

    @property
    def time_input(self) -> str:
        """`progress` (i / S) or `clamped-iteration` (i / K clamped to 1; format 1)."""
        return str(self.manifest.get("time_input", "clamped-iteration"))

    def parameters(self) -> dict[str, np.ndarray]:
        """The commentary's parameter tensors (without the insight ones)."""
        return {k: v for k, v in self.tensors.items() if k.startswith(PREFIX)}

    def insights(self) -> dict[str, np.ndarray]:
        """The insight tensors by name, without the `insight.` prefix."""
        return {k[len("insight.") :]: v for k, v in self.tensors.items() if k.startswith("insight.")}


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ArtifactError(f"{path}: no {MANIFEST_FILE} (not an artifact directory)") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{path / MANIFEST_FILE}: not valid JSON: {e}") from e
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path / MANIFEST_FILE}: not a JSON object")
    version = manifest.get("format_version")
    if version not in FORMAT_VERSIONS:
        raise ArtifactError(
            f"{path / MANIFEST_FILE}: format_version {version!r} is not one this client reads "
            f"({', '.join(map(str, FORMAT_VERSIONS))}); upgrade the commentary package"
        )
    for field in ("kind", "dataset", "architecture", "tensors_sha256"):
        if field not in manifest:
            raise ArtifactError(f"{path / MANIFEST_FILE}: missing field {field!r}")
    return manifest


def verify_tensors(manifest: dict[str, Any], tensors: dict[str, np.ndarray], where: str) -> None:
    """The parameter tensors are exactly those the spec needs: names, float32, shapes, finite."""
    spec = manifest["architecture"].get("commentary", {})
    dataset = manifest["dataset"]
    shape = dataset["shape"]
    # Raises for a spec (or network) this client does not know.
    expected = dict(
        commentary_parameter_shapes(
            spec,
            (int(shape["height"]), int(shape["width"]), int(shape["channels"])),
            len(dataset["classes"]),
            int(dataset["train_examples"]),
        )
    )
    if SPEC_KINDS[spec["type"]] != manifest["kind"]:
        raise ArtifactError(f"{where}: kind {manifest['kind']!r} but spec {spec.get('type')!r}")
    present = {k for k in tensors if not k.startswith("insight.")}
    if missing := sorted(set(expected) - present):
        raise ArtifactError(f"{where}: the tensors lack {missing} that the manifest's spec needs")
    if extra := sorted(present - set(expected)):
        raise ArtifactError(f"{where}: unexpected tensors {extra} for the manifest's spec")
    for name, want in expected.items():
        array = tensors[name]
        if array.dtype != np.float32 or tuple(array.shape) != want:
            raise ArtifactError(
                f"{where}: tensor {name} is {array.dtype} {list(array.shape)}; the manifest's "
                f"spec needs float32 {list(want)}"
            )
        if not np.isfinite(array).all():
            raise ArtifactError(f"{where}: tensor {name} holds non-finite values")


def open_artifact(path: str | os.PathLike[str]) -> Artifact:
    """Reads and verifies the artifact directory at `path`."""
    path = Path(path)
    manifest = read_manifest(path)
    tensors_path = path / TENSORS_FILE
    if not tensors_path.is_file():
        raise ArtifactError(f"{path}: no {TENSORS_FILE}")
    actual = sha256_file(tensors_path)
    if actual != manifest["tensors_sha256"]:
        raise ArtifactError(
            f"{tensors_path}: sha256 is {actual} but the manifest says "
            f"{manifest['tensors_sha256']} (corrupted or not this manifest's tensors)"
        )
    try:
        tensors = load_file(str(tensors_path))
    except Exception as e:  # safetensors raises its own error types
        raise ArtifactError(f"{tensors_path}: not readable safetensors: {e}") from e
    verify_tensors(manifest, tensors, str(path))
    report = None
    report_path = path / REPORT_FILE
    if report_path.is_file():
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"{report_path}: not valid JSON: {e}") from e
    if any(not math.isfinite(v) for v in manifest.get("metrics", {}).values() if isinstance(v, float)):
        raise ArtifactError(f"{path}: the manifest's metrics are not finite")
    return Artifact(path, manifest, tensors, report)
