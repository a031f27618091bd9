#!/usr/bin/env bash
# Schemathesis against a running registry: every operation of /openapi.json, with an admin
# token, property-based requests; fails on any 5xx or a response that does not match the
# documented schema, and on references the document cannot resolve. Prints the operations
# covered. Usage: scripts/schemathesis.sh [EXAMPLES_PER_OPERATION] (default 20; CI uses it).
# Needs the `commentary` binary ($COMMENTARY_BIN, default target/debug/commentary) and
# installs schemathesis into a venv ($COMMENTARY_SCHEMATHESIS_VENV) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-20}"
bin="${COMMENTARY_BIN:-${CARGO_TARGET_DIR:-target}/debug/commentary}"
venv="${COMMENTARY_SCHEMATHESIS_VENV:-/var/tmp/commentary-schemathesis}"
version=4.32.5

if [[ ! -x "$venv/bin/st" ]] || ! "$venv/bin/st" --version | grep -q "$version"; then
  echo "installing schemathesis $version into $venv..." >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

data=$(mktemp -d)
log="$data/serve.log"
cleanup() {
  [[ -n "${server:-}" ]] && kill "$server" 2> /dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT
token=$("$bin" token create --scope admin --name schemathesis --data-dir "$data/registry" \
  | grep -oE 'cmt_[A-Za-z0-9_-]+' | head -1)
# No workers (runs stay queued, so their event streams are cut by the request timeout below)
# and no write rate limit (the generated requests come fast).
"$bin" serve --addr 127.0.0.1:0 --data-dir "$data/registry" --workers 0 \
  --write-rate-limit 0 > "$log" 2>&1 &
server=$!
url=""
for _ in $(seq 100); do
  url=$(grep -oE 'listening on http://[0-9.:]+' "$log" | head -1 | sed 's/listening on //') || true
  [[ -n "$url" ]] && break
  sleep 0.1
done
[[ -n "$url" ]] || { cat "$log" >&2; echo "the registry did not start" >&2; exit 1; }

out="$data/schemathesis.out"
set +e
"$venv/bin/st" run "$url/openapi.json" \
  --checks not_a_server_error,response_schema_conformance \
  --max-examples "$examples" --request-timeout 5 --seed 1 --no-color \
  -H "Authorization: Bearer $token" > "$out" 2>&1
status=$?
set -e
cat "$out"
if grep -q "Unresolvable references" "$out"; then
  echo "schemathesis: the OpenAPI document has references it cannot resolve" >&2
  status=1
fi
if ! kill -0 "$server" 2> /dev/null; then
  echo "schemathesis: the registry exited during the run" >&2
  status=1
fi
exit "$status"
