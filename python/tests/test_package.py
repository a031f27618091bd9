"""The package as users install it: typed, and usable without PyTorch."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

PACKAGE = Path(__file__).parents[1]


def test_the_package_type_checks() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", str(PACKAGE / "src" / "commentary")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (PACKAGE / "src" / "commentary" / "py.typed").is_file()


def test_a_plain_install_works_without_torch(tmp_path: Path) -> None:
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(PACKAGE)],
        capture_output=True, text=True, timeout=600,
    )
    assert install.returncode == 0, install.stderr
    script = """
import numpy as np, commentary
assert commentary.dataset_digest({"train": (np.zeros((1, 2, 2), np.uint8), [0])}).startswith("sha256:")
try:
    commentary.load
except ImportError as e:
    assert "commentary[torch]" in str(e), e
    print("no torch: ok")
"""
    result = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "no torch: ok"
