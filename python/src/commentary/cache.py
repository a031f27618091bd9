"""The local cache of downloaded commentaries: `$COMMENTARY_CACHE`, else
`$XDG_CACHE_HOME/commentary`, else `~/.cache/commentary`.

Layout: `commentaries/<id>/` holds an artifact directory (manifest, tensors, report). Files are
written under a temporary name and renamed, the manifest last, so an interrupted download
leaves no directory that looks complete; a cached artifact is verified (sha256) on every use.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

#: Commentary ids as the registry mints them (UUID-like); anything else never reaches a path.
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def cache_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if env := os.environ.get("COMMENTARY_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "commentary"


def commentary_dir(root: Path, commentary_id: str) -> Path:
    if not ID_PATTERN.match(commentary_id) or commentary_id in (".", ".."):
        raise ValueError(f"{commentary_id!r} is not a commentary id")
    return root / "commentaries" / commentary_id


def write_atomically(path: Path, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file in the same folder, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
