"""`commentary.Registry` against a real `commentary serve`: push, lists, best, download into
a verified cache, runs, and the registry's errors as exceptions."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import tomllib
from pathlib import Path

import httpx
import numpy as np
import pytest

import commentary
from commentary.errors import ArtifactError, NotFound, RunFailed, ServerError, Unauthorized
from conftest import FIXTURE_DIGEST, RUNS, SMALL, run_cli, start_server, stop_server


def test_the_package_is_versioned_with_the_workspace() -> None:
    cargo = tomllib.loads((Path(__file__).parents[2] / "Cargo.toml").read_text())
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["version"] == cargo["workspace"]["package"]["version"]


def test_push_keeps_class_names_and_the_digest(server, cache, mnist) -> None:
    registry = commentary.Registry(server.url, progress=False)
    names = [f"digit {i}" for i in range(10)]
    splits = {"train": (mnist.train_images[:200], mnist.train_labels[:200]),
              "test": (mnist.test_images[:50], mnist.test_labels[:50])}
    info = registry.push(splits, name="named digits", classes=names)
    assert info.digest == commentary.dataset_digest(splits, classes=names)
    assert info.summary["classes"] == names
    assert info.summary["format"] == "npz"
    assert registry.dataset(info.digest).name == "named digits"
    assert info.digest in [d.digest for d in registry.datasets()]
    # Pushing the same content again finds the stored dataset.
    assert registry.push(splits, name="again", classes=names).digest == info.digest


def test_commentaries_are_listed_and_best_is_the_largest_improvement(server, cache, learned) -> None:
    registry = commentary.Registry(server.url, progress=False)
    listed = registry.commentaries(dataset=FIXTURE_DIGEST)
    assert {c.id for c in listed} >= set(learned.values())
    weighting = registry.commentaries(dataset=FIXTURE_DIGEST, kind="example-weighting")
    assert {c.kind for c in weighting} == {"example-weighting"}
    for kind in ("example-weighting", "label-blending", "attention-mask"):
        items = registry.commentaries(dataset=FIXTURE_DIGEST, kind=kind)
        improved = [c for c in items if (c.improvement or 0) > 0 and not c.harmful]
        best = registry.best(FIXTURE_DIGEST, kind=kind)
        if improved:
            assert best is not None
            assert best.improvement == max(c.improvement for c in improved)
        else:
            assert best is None
    with pytest.raises(commentary.CommentaryError, match="unknown kind"):
        registry.commentaries(kind="weighting")


def test_best_skips_commentaries_that_did_not_improve() -> None:
    def info(id: str, improvement: float | None, harmful: bool = False, verified: bool = True):
        return commentary.CommentaryInfo(id, FIXTURE_DIGEST, "label-blending", "ift", "", 0,
                                         improvement, harmful, verified)

    assert commentary.best_of([info("a", -0.01), info("b", 0.0), info("c", None)]) is None
    assert commentary.best_of([info("a", 0.02), info("b", 0.05), info("c", 0.3, True)]).id == "b"
    # A measured improvement outranks an uploader's larger claim, as the registry ranks them.
    assert commentary.best_of([info("u", 0.4, verified=False), info("v", 0.1)]).id == "v"


def test_download_verifies_caches_and_refetches_a_corrupted_copy(server, cache, learned) -> None:
    registry = commentary.Registry(server.url, progress=False)
    commentary_id = learned["blend"]
    path = registry.download(commentary_id)
    assert path == cache / "commentaries" / commentary_id
    assert sorted(p.name for p in path.iterdir()) == [
        "manifest.json", "report.json", "tensors.safetensors"]
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["tensors_sha256"] == registry.commentary(commentary_id)["tensors_sha256"]
    run_cli("artifact", "verify", str(path))

    # A cache hit needs no network: a client of an unreachable registry finds it.
    offline = commentary.Registry("http://127.0.0.1:9", progress=False)
    assert offline.download(commentary_id) == path

    # A corrupted cached file is detected and fetched again.
    tensors = path / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        commentary.open_artifact(path)
    assert registry.download(commentary_id) == path
    commentary.open_artifact(path)
    with pytest.raises(commentary.CommentaryError, match="cannot reach"):
        # Corrupt again: the offline client must fetch, and cannot.
        tensors.write_bytes(bytes(data))
        offline.download(commentary_id)


class TamperingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards GETs to the registry, flipping one byte of artifact downloads."""

    upstream = ""

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        answer = httpx.get(self.upstream + self.path)
        body = answer.content
        if self.path.endswith("/artifact"):
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(answer.status_code)
        for name in ("content-type", "etag"):
            if name in answer.headers:
                self.send_header(name, answer.headers[name])
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_wrong_sha256_is_refused_and_nothing_is_cached(server, cache, learned) -> None:
    TamperingProxy.upstream = server.url
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TamperingProxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{proxy.server_address[1]}"
        registry = commentary.Registry(url, progress=False)
        with pytest.raises(ArtifactError, match="the downloaded tensors have sha256:"):
            registry.download(learned["mask-cbr"])
    finally:
        proxy.shutdown()
    leftovers = list((cache / "commentaries").iterdir()) if (cache / "commentaries").exists() else []
    assert leftovers == [], leftovers


def test_a_run_fails_and_watch_raises_with_its_error(server, cache) -> None:
    registry = commentary.Registry(server.url, progress=False)
    config = {**SMALL, "meta_steps": 1, "validation_examples": 100_000}
    run = registry.runs.create(FIXTURE_DIGEST, "example-weighting", algorithm="bptt",
                               config=config, evaluation={"seeds": []})
    assert run.state in ("queued", "running")
    with pytest.raises(RunFailed, match="failed") as failure:
        registry.runs.watch(run.id)
    assert failure.value.run["error"]
    assert registry.runs.get(run.id).state == "failed"
    assert run.id in [r.id for r in registry.runs.list(dataset=FIXTURE_DIGEST, state="failed")]


def test_runs_are_cancelled(server, cache) -> None:
    registry = commentary.Registry(server.url, progress=False)
    config = {**SMALL, "meta_steps": 400, "inner_steps": 50}
    run = registry.runs.create(FIXTURE_DIGEST, "example-weighting", algorithm="bptt", config=config)
    cancelled = registry.runs.cancel(run.id)
    assert cancelled.state == "cancelled"
    with pytest.raises(RunFailed, match="cancelled"):
        registry.runs.watch(run.id)


def test_server_errors_are_exceptions_with_the_code(server, cache) -> None:
    registry = commentary.Registry(server.url, progress=False)
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFound) as error:
        registry.dataset(missing)
    assert error.value.status == 404 and error.value.code == "not_found"
    unknown = "0190b3a2-7c1e-7d4f-9a6b-1c2d3e4f5a6b"
    with pytest.raises(NotFound):
        registry.download(unknown)
    with pytest.raises(ServerError, match="ids are UUIDs") as error:
        registry.commentary("no-such-commentary")
    assert error.value.status == 400
    with pytest.raises(ServerError) as error:
        registry.runs.create(FIXTURE_DIGEST, "example-weighting", config={"inner_stesp": 3})
    assert error.value.status == 422 and "inner_stesp" in error.value.message
    with pytest.raises(commentary.CommentaryError, match="not a dataset digest"):
        registry.dataset("sha256:../../etc")
    assert not (cache / "commentaries" / unknown).exists()


def test_tokens_scopes_and_the_stored_credentials(tmp_path, cache, mnist, monkeypatch) -> None:
    private = start_server(tmp_path / "private", "--require-token", "--private-reads",
                           "--workers", "0")
    try:
        read = private.token("read")
        write = private.token("write")
        splits = {"train": (mnist.train_images[:20], mnist.train_labels[:20])}
        with pytest.raises(Unauthorized) as error:
            commentary.Registry(private.url, progress=False).datasets()
        assert error.value.status == 401
        with pytest.raises(Unauthorized) as error:
            commentary.Registry(private.url, token=read, progress=False).push(splits)
        assert error.value.status == 403
        # The token `commentary login` stores is used when none is given.
        config = cache.parent / "config" / "commentary"
        config.mkdir(parents=True)
        credentials = config / "credentials"
        credentials.write_text(f'[servers."{private.url}"]\ntoken = "{write}"\n')
        os.chmod(credentials, stat.S_IRUSR | stat.S_IWUSR)
        stored = commentary.Registry(private.url, progress=False)
        assert stored.push(splits).digest == commentary.dataset_digest(splits)
        # COMMENTARY_TOKEN outranks the file, an explicit token outranks both.
        monkeypatch.setenv("COMMENTARY_TOKEN", read)
        with pytest.raises(Unauthorized):
            commentary.Registry(private.url, progress=False).push(splits)
        assert commentary.Registry(private.url, token=write, progress=False).push(splits)
    finally:
        stop_server(private)


def test_every_learned_kind_downloads_and_loads(server, cache, learned) -> None:
    registry = commentary.Registry(server.url, progress=False)
    kinds = {key: kind for key, (kind, _, _) in RUNS.items()}
    for key, commentary_id in learned.items():
        artifact = commentary.open_artifact(registry.download(commentary_id))
        assert artifact.kind == kinds[key]
        assert artifact.digest == FIXTURE_DIGEST
        assert np.isfinite(artifact.tensors[next(iter(artifact.parameters()))]).all()


def test_the_example_trains_with_and_without_a_fetched_commentary(server, cache, learned) -> None:
    import subprocess
    import sys

    example = Path(__file__).parents[1] / "examples" / "train_mnist.py"
    for key in ("blend", "teacher-cbr", "table", "mask-cbr"):
        result = subprocess.run(
            [sys.executable, str(example), "--server", server.url, "--id", learned[key],
             "--steps", "20"],
            capture_output=True, text=True, timeout=600, env={**os.environ},
        )
        assert result.returncode == 0, result.stderr
        lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
        for arm in ("test accuracy without", "test accuracy with"):
            assert 0.0 <= float(lines[arm]) <= 1.0, result.stdout
