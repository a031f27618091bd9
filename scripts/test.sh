#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first, so it works on a fresh machine:
# - Python's `safetensors` and `numpy` (the artifact tests open tensors from Python).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p trainer`).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import safetensors.numpy, numpy" 2>/dev/null; then
  echo "installing Python test dependencies (safetensors, numpy)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    safetensors numpy
fi

cargo test --workspace "$@"
