#!/usr/bin/env bash
# Starts (or stops) what the registry's PostgreSQL + S3 tests need, and writes the variables
# that point the tests at them to target/test-services.env:
# - PostgreSQL: the one on 127.0.0.1:5432 (trust auth); each test creates its own database.
# - S3: s3s-fs (an S3-compatible server over a folder), installed with cargo on first use.
# Usage: scripts/test-services.sh start|stop; then `source target/test-services.env`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${COMMENTARY_TOOLS_DIR:-/var/tmp/commentary-ci-tools}"
state=target/test-services
mkdir -p "$state"
env_file=target/test-services.env

stop() {
  if [[ -f "$state/s3s-fs.pid" ]]; then
    kill "$(cat "$state/s3s-fs.pid")" 2>/dev/null || true
    rm -f "$state/s3s-fs.pid"
  fi
}

start() {
  stop
  pg_url="${COMMENTARY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if command -v psql > /dev/null; then
    psql "$pg_url" -qtAc 'select 1' > /dev/null || { echo "PostgreSQL does not answer at $pg_url" >&2; exit 1; }
    # Databases left by earlier test runs.
    for db in $(psql "$pg_url" -qtAc "select datname from pg_database where datname like 'commentary_test_%'"); do
      psql "$pg_url" -qtAc "drop database if exists $db" > /dev/null || true
    done
  fi

  if [[ ! -x "$tools/bin/s3s-fs" ]]; then
    echo "installing s3s-fs (an S3-compatible server) into $tools..." >&2
    cargo install --quiet --locked --root "$tools" s3s-fs --version 0.14.1 --features binary
  fi
  root="$state/s3"
  rm -rf "$root"
  mkdir -p "$root/commentary-test"
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$tools/bin/s3s-fs" --host 127.0.0.1 --port "$port" \
    --access-key commentary --secret-key commentary-secret "$root" > "$state/s3s-fs.log" 2>&1 &
  echo $! > "$state/s3s-fs.pid"
  for _ in $(seq 100); do
    if (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then break; fi
    sleep 0.1
  done
  cat > "$env_file" <<ENV
export COMMENTARY_TEST_DATABASE_URL=$pg_url
export COMMENTARY_TEST_S3_ENDPOINT=http://127.0.0.1:$port
export COMMENTARY_TEST_S3_BUCKET=commentary-test
export COMMENTARY_TEST_S3_ACCESS_KEY=commentary
export COMMENTARY_TEST_S3_SECRET_KEY=commentary-secret
ENV
  echo "PostgreSQL at $pg_url; s3s-fs on 127.0.0.1:$port (log: $state/s3s-fs.log)" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
