"""Exceptions of the commentary client: one base class, so `except CommentaryError` catches all."""

from __future__ import annotations


class CommentaryError(Exception):
    """Anything this package refuses or cannot do, with a message naming the problem."""


class DatasetError(CommentaryError, ValueError):
    """A dataset that cannot be digested or pushed (mixed image sizes, bad dtypes, ...)."""


class ArtifactError(CommentaryError):
    """An artifact that does not verify: its tensors disagree with its manifest, a network
    spec this client does not know, a wrong sha256."""


class ServerError(CommentaryError):
    """A request the registry refused, with its JSON error `code` and `message`.

    `status` is the HTTP status; `code` is the registry's stable machine-readable code
    (`not_found`, `unauthorized`, `forbidden`, `invalid_dataset`, ...; docs/registry.md).
    """

    def __init__(self, method: str, path: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{method} {path}: {status} {code}: {message}")
        self.method = method
        self.path = path
        self.status = status
        self.code = code
        self.message = message


class NotFound(ServerError):
    """The registry has no such dataset, commentary or run (HTTP 404)."""


class Unauthorized(ServerError):
    """The token is missing, unknown or lacks the scope the request needs (HTTP 401/403)."""


class RunFailed(CommentaryError):
    """A watched run ended failed or cancelled; `run` is its final state from the registry."""

    def __init__(self, run: dict) -> None:
        state = run.get("state")
        error = run.get("error") or "no error recorded"
        super().__init__(f"run {run.get('id')} {state}: {error}")
        self.run = run
