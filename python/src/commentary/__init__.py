"""Find, verify and apply dataset commentaries in PyTorch training, and drive a commentary
registry ("Teaching with Commentaries", Raghu et al., ICLR 2021).

    import commentary
    d = commentary.digest_of({"train": train_ds, "test": test_ds})     # torchvision / HF / arrays
    reg = commentary.Registry("http://127.0.0.1:8080")
    info = reg.best(d, kind="label-blending")                          # None when nothing improved
    c = commentary.load(reg.download(info.id))                         # verified, cached

The PyTorch helpers (`load` and the kinds) need `pip install 'commentary[torch]'`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from .artifact import Artifact, open_artifact
from .digest import canonical_order, dataset_digest
from .errors import (
    ArtifactError,
    CommentaryError,
    DatasetError,
    NotFound,
    RunFailed,
    ServerError,
    Unauthorized,
)
from .registry import CommentaryInfo, DatasetInfo, Registry, RunInfo, best_of
from .sources import Dataset, as_dataset, digest_of, load_npz, write_npz

try:
    __version__ = version("commentary")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

if TYPE_CHECKING:
    from .kinds import (
        AttentionMask,
        ExampleWeighting,
        LabelBlending,
        TabularWeights,
        load,
        mix_loss,
        weighted_loss,
    )

#: Names that need PyTorch, imported on first use.
_TORCH_NAMES = {
    "AttentionMask", "ExampleWeighting", "LabelBlending", "TabularWeights", "load", "mix_loss",
    "weighted_loss",
}


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        try:
            from . import kinds
        except ModuleNotFoundError as e:
            if e.name == "torch":
                raise ImportError(
                    f"commentary.{name} needs PyTorch: pip install 'commentary[torch]'"
                ) from e
            raise
        return getattr(kinds, name)
    raise AttributeError(f"module 'commentary' has no attribute {name!r}")


__all__ = [
    "Artifact", "ArtifactError", "AttentionMask", "CommentaryError", "CommentaryInfo", "Dataset",
    "DatasetError", "DatasetInfo", "ExampleWeighting", "LabelBlending", "NotFound", "Registry",
    "RunFailed", "RunInfo", "ServerError", "TabularWeights", "Unauthorized", "as_dataset",
    "best_of", "canonical_order", "dataset_digest", "digest_of", "load", "load_npz", "mix_loss",
    "open_artifact", "weighted_loss", "write_npz",
]
