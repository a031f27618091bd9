"""Tokens stored by `commentary login`: `$XDG_CONFIG_HOME/commentary/credentials` (default
`~/.config/commentary/credentials`), TOML with one table per registry URL:

    [servers."http://127.0.0.1:8080"]
    token = "..."

Precedence, as in the Rust CLI: an explicit token > `COMMENTARY_TOKEN` > this file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "commentary" / "credentials"


def stored_token(url: str) -> str | None:
    """The token `commentary login` stored for `url`, if any."""
    path = credentials_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    entry = data.get("servers", {}).get(url.rstrip("/"))
    token = entry.get("token") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None


def resolve_token(url: str, token: str | None) -> str | None:
    """An explicit token, else `COMMENTARY_TOKEN`, else the stored one."""
    if token:
        return token
    return os.environ.get("COMMENTARY_TOKEN") or stored_token(url)
