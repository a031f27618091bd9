#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need first, so it works on a fresh machine:
# - Python's `safetensors` and `numpy` (the artifact tests open tensors from Python);
# - chromium, node and playwright-core (the web pages are tested in a real browser).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p trainer`).
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

# Without arguments: the whole workspace, every test binary even after a failure.
[[ $# -gt 0 ]] || set -- --workspace --no-fail-fast

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over all test binaries (cargo prints one summary per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
