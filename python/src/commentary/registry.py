"""`Registry`: a client of a commentary registry's REST API (`/v1/...`, docs/registry.md).

Shaped after `huggingface_hub`: commentaries are pinned by id (immutable) and downloaded into
a local cache, verified against the manifest's sha256 and the server's strong ETag, and reused
offline; "best" picks the largest improvement among commentaries that improved.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from httpx_sse import connect_sse
from tqdm.auto import tqdm

from .artifact import MANIFEST_FILE, REPORT_FILE, TENSORS_FILE, open_artifact, sha256_file
from .cache import ID_PATTERN, cache_root, commentary_dir, write_atomically
from .credentials import resolve_token
from .errors import ArtifactError, CommentaryError, NotFound, RunFailed, ServerError, Unauthorized
from .sources import as_dataset, write_npz

#: Commentary kinds (schema::CommentaryKind).
KINDS = ("example-weighting", "label-blending", "attention-mask")
#: Items asked for per page when listing (the registry's most is 500).
PAGE_SIZE = 200

T = TypeVar("T")


def _from_json(cls: type[T], data: Mapping[str, Any]) -> T:
    """A dataclass from an API object, ignoring fields this client does not know yet."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class CommentaryInfo:
    """A stored commentary as the registry lists it."""

    id: str
    dataset: str
    kind: str
    algorithm: str
    tensors_sha256: str
    tensors_bytes: int
    improvement: float | None = None
    harmful: bool = False
    verified: bool = False
    run_id: str | None = None
    created_at: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """A stored dataset; `summary` has its format, classes and splits."""

    digest: str
    name: str
    summary: dict[str, Any] = field(default_factory=dict)
    archive_bytes: int = 0
    commentaries: int = 0
    created_at: str = ""


@dataclass(frozen=True)
class RunInfo:
    """A learning run; `state` is queued, running, succeeded, failed or cancelled."""

    id: str
    dataset: str
    kind: str
    state: str
    algorithm: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    max_attempts: int = 0
    error: str | None = None
    progress: dict[str, Any] | None = None
    commentary_id: str | None = None
    worker: str | None = None
    created_at: str = ""
    updated_at: str = ""

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")


def best_of(items: list[CommentaryInfo]) -> CommentaryInfo | None:
    """The largest improvement among commentaries that improved (above zero, not harmful);
    verified ones (measured by the registry itself) before uploaded claims, as the registry
    ranks them. None when nothing improved."""
    improved = [c for c in items if not c.harmful and (c.improvement or 0.0) > 0.0]
    if not improved:
        return None
    return max(improved, key=lambda c: (c.verified, c.improvement or 0.0))


class Registry:
    """A client of one registry.

    `token`: a bearer token; default `COMMENTARY_TOKEN`, else the one `commentary login`
    stored for this URL. `cache_dir`: default `COMMENTARY_CACHE` or `~/.cache/commentary`.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        cache_dir: str | os.PathLike[str] | None = None,
        timeout: float = 60.0,
        progress: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise CommentaryError(f"registry URL {url!r} must start with http:// or https://")
        self.cache_dir = cache_root(cache_dir)
        self.progress = progress
        token = resolve_token(self.url, token)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self.runs = Runs(self)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as e:
            raise CommentaryError(f"cannot reach the registry at {self.url}: {e}") from e
        raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        try:
            return response.json()
        except json.JSONDecodeError as e:
            raise CommentaryError(f"{method} {path}: the registry answered non-JSON") from e

    def _pages(self, path: str, params: dict[str, Any], limit: int | None) -> Iterator[dict]:
        params = {k: v for k, v in params.items() if v is not None}
        seen = 0
        while True:
            page = self._json("GET", path, params={**params, "limit": PAGE_SIZE})
            for item in page["items"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield item
            cursor = page.get("next_cursor")
            if not cursor:
                return
            params["cursor"] = cursor

    # -- datasets ---------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def datasets(self, name: str | None = None, limit: int | None = None) -> list[DatasetInfo]:
        """Stored datasets, newest first; `name` filters by name."""
        return [_from_json(DatasetInfo, d) for d in self._pages("/v1/datasets", {"name": name}, limit)]

    def dataset(self, digest: str) -> DatasetInfo:
        return _from_json(DatasetInfo, self._json("GET", f"/v1/datasets/{_digest(digest)}"))

    def push(
        self,
        data: Any,
        name: str | None = None,
        classes: list[str] | None = None,
        **columns: str,
    ) -> DatasetInfo:
        """Uploads a dataset (arrays with `classes`, torchvision, Hugging Face, or a `.npz`)
        as `.npz`, which keeps label ids and class names exactly. The registry's digest must
        equal the one computed here (JPEG datasets may differ; see `sources`)."""
        dataset = as_dataset(data, classes, **columns)
        local = dataset.digest
        with tempfile.TemporaryDirectory(prefix="commentary-push-") as tmp:
            archive = Path(tmp) / "dataset.npz"
            write_npz(dataset, archive)
            size = archive.stat().st_size
            with open(archive, "rb") as f, self._bar(size, "push") as bar:
                def chunks() -> Iterator[bytes]:
                    while chunk := f.read(1 << 20):
                        bar.update(len(chunk))
                        yield chunk

                info = self._json(
                    "POST",
                    "/v1/datasets",
                    params={"name": name or "dataset"},
                    content=chunks(),
                    headers={"content-type": "application/octet-stream",
                             "content-length": str(size)},
                )
        stored = _from_json(DatasetInfo, info)
        if stored.digest != local:
            raise CommentaryError(
                f"the registry decoded the upload to {stored.digest}, but it digests to {local} "
                "here (JPEG decoders differ; use PNG or arrays for bit-exact digests)"
            )
        return stored

    # -- commentaries -----------------------------------------------------------------------

    def commentaries(
        self,
        dataset: str | None = None,
        kind: str | None = None,
        sort: str = "newest",
        limit: int | None = None,
    ) -> list[CommentaryInfo]:
        """Stored commentaries, newest first (`sort="improvement"`: largest gain first)."""
        if kind is not None and kind not in KINDS:
            raise CommentaryError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        params = {"dataset": _digest(dataset) if dataset else None, "kind": kind, "sort": sort}
        return [_from_json(CommentaryInfo, c) for c in self._pages("/v1/commentaries", params, limit)]

    def commentary(self, commentary_id: str) -> dict[str, Any]:
        """A commentary's list entry with its `manifest` and apply `report`."""
        return self._json("GET", f"/v1/commentaries/{_id(commentary_id)}")

    def best(self, digest: str, kind: str | None = None) -> CommentaryInfo | None:
        """The commentary to use for a dataset: the largest improvement among those that
        improved; None when none did."""
        return best_of(self.commentaries(dataset=digest, kind=kind, sort="improvement"))

    def download(self, commentary_id: str, *, force: bool = False) -> Path:
        """The artifact directory of a commentary in the cache, downloading it when it is not
        there or does not verify. Verified against the manifest's sha256 and the strong ETag;
        a cached copy is used without the network."""
        target = commentary_dir(self.cache_dir, _id(commentary_id))
        if not force and (target / MANIFEST_FILE).is_file():
            try:
                open_artifact(target)
                return target
            except ArtifactError:
                pass  # corrupted or half-replaced: fetch again
        detail = self.commentary(commentary_id)
        manifest = detail["manifest"]
        expected = manifest.get("tensors_sha256")
        if expected != detail.get("tensors_sha256"):
            raise ArtifactError(
                f"commentary {commentary_id}: the manifest's tensors_sha256 {expected} differs "
                f"from the registry's {detail.get('tensors_sha256')}"
            )
        staging = Path(tempfile.mkdtemp(prefix=f".{commentary_id}.", dir=self._staging_root()))
        try:
            tensors = staging / TENSORS_FILE
            etag = self._download_to(f"/v1/commentaries/{commentary_id}/artifact", tensors,
                                     int(detail.get("tensors_bytes") or 0))
            actual = sha256_file(tensors)
            if actual != expected:
                raise ArtifactError(
                    f"commentary {commentary_id}: the downloaded tensors have {actual}, the "
                    f"manifest says {expected}; nothing was cached"
                )
            if etag is not None and etag.strip('"') != expected.removeprefix("sha256:"):
                raise ArtifactError(
                    f"commentary {commentary_id}: the ETag {etag} is not the manifest's sha256"
                )
            if detail.get("report") is not None:
                write_atomically(staging / REPORT_FILE, json.dumps(detail["report"]).encode())
            write_atomically(staging / MANIFEST_FILE, json.dumps(manifest, indent=2).encode())
            open_artifact(staging)
            self._install(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _staging_root(self) -> Path:
        root = self.cache_dir / "commentaries"
        root.mkdir(parents=True, exist_ok=True)
        return root

    @staticmethod
    def _install(staging: Path, target: Path) -> None:
        """Moves a verified artifact into place; an old copy is moved aside first, so readers
        see the old or the new directory, never a mix."""
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(staging, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _download_to(self, path: str, to: Path, size: int) -> str | None:
        try:
            with self._http.stream("GET", path) as response:
                if response.is_error:
                    response.read()
                    raise_for_error(response)
                with open(to, "wb") as f, self._bar(size, "pull") as bar:
                    for chunk in response.iter_bytes(1 << 20):
                        f.write(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
                return response.headers.get("etag")
        except httpx.TransportError as e:
            raise CommentaryError(f"GET {path}: cut short: {e}") from e

    def _bar(self, total: int, what: str) -> tqdm:
        return tqdm(total=total or None, unit="B", unit_scale=True, desc=what,
                    disable=not self.progress, leave=False)


class Runs:
    """Learning runs on the registry: `create`, `get`, `list`, `watch`, `cancel`."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    def create(
        self,
        dataset: str,
        kind: str,
        *,
        algorithm: str | None = None,
        config: Mapping[str, Any] | None = None,
        evaluation: Mapping[str, Any] | None = None,
    ) -> RunInfo:
        """Queues a run (`config`: LearnConfig fields, `evaluation`: seeds/steps of the
        with-vs-without students; docs/learn.md). Errors name the refused field."""
        body: dict[str, Any] = {"dataset": _digest(dataset), "kind": kind}
        if algorithm is not None:
            body["algorithm"] = algorithm
        if config is not None:
            body["config"] = dict(config)
        if evaluation is not None:
            body["evaluation"] = dict(evaluation)
        created = self._registry._json("POST", "/v1/runs", json=body)
        return self.get(created["id"])

    def get(self, run_id: str) -> RunInfo:
        return _from_json(RunInfo, self._registry._json("GET", f"/v1/runs/{_id(run_id)}"))

    def list(self, dataset: str | None = None, state: str | None = None,
             limit: int | None = None) -> list[RunInfo]:
        params = {"dataset": _digest(dataset) if dataset else None, "state": state}
        return [_from_json(RunInfo, r) for r in self._registry._pages("/v1/runs", params, limit)]

    def cancel(self, run_id: str) -> RunInfo:
        return _from_json(RunInfo, self._registry._json("POST", f"/v1/runs/{_id(run_id)}/cancel"))

    def events(self, run_id: str) -> Iterator[dict[str, Any]]:
        """The run's events (state changes, progress, log lines) as they happen, until it
        ends (server-sent events)."""
        registry = self._registry
        path = f"/v1/runs/{_id(run_id)}/events"
        try:
            with connect_sse(registry._http, "GET", path, timeout=None) as source:
                if source.response.is_error:
                    source.response.read()
                    raise_for_error(source.response)
                for event in source.iter_sse():
                    if event.data:
                        yield json.loads(event.data)
        except httpx.TransportError as e:
            raise CommentaryError(f"GET {path}: the event stream broke: {e}") from e

    def watch(self, run_id: str, *, raise_on_failure: bool = True) -> RunInfo:
        """Follows a run to its end with a progress bar; returns its final state, raising
        `RunFailed` when it failed or was cancelled (unless `raise_on_failure=False`)."""
        bar = tqdm(total=None, desc=f"run {run_id[:8]}", disable=not self._registry.progress)
        with bar:
            for event in self.events(run_id):
                if event.get("type") == "progress":
                    bar.total = event.get("total") or bar.total
                    bar.n = event.get("step", bar.n)
                    phase = event.get("phase", "")
                    loss = event.get("val_loss")
                    bar.set_description(f"run {run_id[:8]} {phase}")
                    if loss is not None:
                        bar.set_postfix(val_loss=f"{loss:.4f}")
                    bar.refresh()
                elif event.get("type") == "state":
                    bar.set_postfix(state=event.get("state"))
        run = self.get(run_id)
        if raise_on_failure and run.state != "succeeded":
            raise RunFailed(dataclasses.asdict(run))
        return run


def raise_for_error(response: httpx.Response) -> None:
    """A non-2xx answer as a `ServerError` carrying the registry's JSON code and message."""
    if response.is_success or response.status_code == 304:
        return
    try:
        body = response.json()
        code, message = body["error"]["code"], body["error"]["message"]
    except (json.JSONDecodeError, KeyError, TypeError):
        code, message = "http", response.text[:500]
    request = response.request
    cls = {404: NotFound, 401: Unauthorized, 403: Unauthorized}.get(response.status_code, ServerError)
    raise cls(request.method, request.url.path, response.status_code, code, message)


def _digest(value: str) -> str:
    """`sha256:<hex>` from that or bare hex, refusing anything else before it reaches a URL."""
    hex_part = value.removeprefix("sha256:")
    if len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        raise CommentaryError(f"{value!r} is not a dataset digest (sha256:<64 hex digits>)")
    return "sha256:" + hex_part


def _id(value: str) -> str:
    if not ID_PATTERN.match(value):
        raise CommentaryError(f"{value!r} is not an id")
    return value
