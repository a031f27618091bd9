#!/usr/bin/env bash
# The registry under mixed load for longer than CI runs it: server/tests/load.rs (8 artifact
# downloaders, 4 listers, 4 detail readers, one uploader, one run creator whose runs are followed
# over SSE) against a real `commentary serve` on loopback, for SECONDS (default 60). Prints one
# line per kind of request (requests/s, p50, p99, max, failures) and fails on any failure.
#
# Usage: bench/load.sh [SECONDS] [--release]   (--release: test binary and server optimised)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
profile=()
[[ ${2:-} == --release ]] && profile=(--release)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
COMMENTARY_LOAD_SECONDS=$seconds cargo test "${profile[@]}" -p server --test load -- --nocapture > "$log" 2>&1 || status=$?
grep -E '^(load for|artifact download|list |commentary/run detail|dataset upload|run create|runs created)' "$log" || true
if [[ $status -ne 0 ]]; then
  tail -n 40 "$log" >&2
fi
exit "$status"
