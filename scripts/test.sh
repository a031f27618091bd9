#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first, so it works on a fresh machine:
# - Python's `safetensors` and `numpy` (the artifact tests open tensors from Python);
# - chromium, node and playwright-core (the web pages are tested in a real browser);
# - a virtual environment with the Python client and its test dependencies (torch,
#   torchvision, datasets), in a cache folder outside the clone ($COMMENTARY_TEST_VENV,
#   default ~/.cache/commentary/test-venv): its tests run against a real `commentary serve`.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p trainer`) and skip the Python
# tests; `scripts/test.sh --python [pytest args]` runs only the Python client's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import safetensors.numpy, numpy" 2>/dev/null; then
  echo "installing Python test dependencies (safetensors, numpy)..." >&2
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    safetensors numpy
fi

# The browser tests (server/tests/web_pages.rs): Debian's chromium, node, and playwright-core.
apt_install() {
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" > /dev/null
}
if ! command -v chromium > /dev/null; then
  echo "installing chromium (browser tests)..." >&2
  apt_install chromium
fi
if ! command -v node > /dev/null; then
  echo "installing node and npm (browser tests)..." >&2
  apt_install nodejs npm
fi
if [[ ! -d web/tests/node_modules/playwright-core ]]; then
  echo "installing playwright-core (browser tests)..." >&2
  (cd web/tests && npm ci --no-audit --no-fund --silent)
fi

# The Python client's tests (python/tests): pytest in its venv, against the debug binary.
python_tests() {
  local venv="${COMMENTARY_TEST_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/commentary/test-venv}"
  if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating the Python client's test venv in $venv..." >&2
    python3 -m venv "$venv"
  fi
  if ! "$venv/bin/python" -c "import torch, torchvision, datasets, pytest, httpx_sse" 2>/dev/null; then
    echo "installing the Python client's test dependencies (torch is large)..." >&2
  fi
  # The package itself is reinstalled every time (it is small); its dependencies only when
  # missing.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check './python[test]'
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    --force-reinstall ./python
  cargo build --quiet --bin commentary
  local target="${CARGO_TARGET_DIR:-target}"
  COMMENTARY_BIN="$target/debug/commentary" "$venv/bin/python" -m pytest -p no:cacheprovider \
    -q python/tests "$@"
}

if [[ "${1:-}" == "--python" ]]; then
  shift
  python_tests "$@"
  exit
fi

# Without arguments: the whole workspace, every test binary even after a failure, then the
# Python client's tests.
run_python=0
if [[ $# -eq 0 ]]; then
  set -- --workspace --no-fail-fast
  run_python=1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries (cargo prints one summary per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
if [[ $run_python == 1 ]]; then
  echo "== Python client tests (python/tests)"
  set +e
  python_tests
  python_status=$?
  set -e
  [[ $status != 0 ]] || status=$python_status
fi
exit "$status"
