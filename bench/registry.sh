#!/usr/bin/env bash
# Registry benchmarks with wrk on loopback (the targets in brackets):
#   1. artifact downloads of about 100 KB and 1 MB, 64 connections, against nginx serving the
#      same files [at least 0.8x nginx's throughput]; ours and nginx alternate, PAIRS times;
#   2. GET /v1/commentaries/{id} at full speed, 64 connections [at least 15,000 requests/s,
#      p99 under 10 ms], beside /healthz (the router and connection cost alone);
#   3. the server's peak RSS increase while a 200 MB dataset is uploaded [under 64 MB].
# Needs wrk and nginx (apt-get install wrk nginx-light), python3 and curl. Uses the release
# binary (built if missing; COMMENTARY_BIN overrides). Prints one line per figure.
# Usage: bench/registry.sh [PAIRS]   (default 3; DURATION=10s per wrk run)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${COMMENTARY_BIN:-${CARGO_TARGET_DIR:-target}/release/commentary}
[[ -x "$BIN" ]] || cargo build --release --bin commentary
for tool in wrk nginx curl python3; do
  command -v "$tool" > /dev/null || { echo "bench/registry.sh needs $tool" >&2; exit 1; }
done
DURATION=${DURATION:-10s}
PAIRS=${1:-3}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
vm_hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

"$BIN" serve --addr 127.0.0.1:0 --data-dir "$work/data" --workers 0 --write-rate-limit 0 \
  > "$work/serve.out" 2> "$work/serve.err" &
server=$!
pids+=("$server")
for _ in $(seq 100); do grep -q "^listening on" "$work/serve.out" 2> /dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
echo "registry: $url (pid $server, $("$BIN" --version))"

# A commentary of a given size: a per-example weight table on a dataset of N tiny (4x4)
# examples (about 16 bytes of tensors per example). Prints "<id> <folder>".
publish_table() {
  local name=$1 examples=$2
  python3 bench/make_idx_dataset.py "$work/$name.tar" --train "$examples" --side 4
  "$BIN" learn --dataset "$work/$name.tar" --kind example-weighting --tabular --out "$work/$name" \
    --inner-steps 2 --meta-steps 1 --student mlp:8 --batch-size 32 --validation-batch-size 64 > /dev/null
  "$BIN" dataset push "$work/$name.tar" --server "$url" > /dev/null 2>&1
  curl -sf -F "manifest=@$work/$name/manifest.json" -F "tensors=@$work/$name/tensors.safetensors" \
    "$url/v1/commentaries" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}

# Both must serve the whole file (a wrong status would make the comparison meaningless).
check() {
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$1")
  [[ "$got" == "200 $2" ]] || { echo "GET $1 answered '$got', expected '200 $2'" >&2; exit 1; }
}
requests_per_s() { awk '/^Requests\/sec/ { print $2 }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

nginx_port=$(free_port)
mkdir -p "$work/nginx" "$work/files"
# As root, nginx's workers would drop to a user that cannot read the scratch folder.
nginx_user=""
[[ "$(id -u)" == 0 ]] && nginx_user="user root;"
cat > "$work/nginx.conf" <<CONF
$nginx_user
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$nginx_port; root $work/files; }
}
CONF
nginx -c "$work/nginx.conf"
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$nginx_port") 2> /dev/null && break; sleep 0.1; done

# 1. Download throughput at two sizes, ours and nginx alternating.
detail_id=""
for spec in "100KB 7000" "1MB 65000"; do
  read -r label examples <<< "$spec"
  id=$(publish_table "table-$label" "$examples")
  detail_id=$id
  cp "$work/table-$label/tensors.safetensors" "$work/files/$label.safetensors"
  size=$(stat -c %s "$work/files/$label.safetensors")
  ours_url="$url/v1/commentaries/$id/artifact"
  nginx_url="http://127.0.0.1:$nginx_port/$label.safetensors"
  check "$ours_url" "$size"
  check "$nginx_url" "$size"
  ours=() theirs=()
  for pair in $(seq "$PAIRS"); do
    ours+=("$(wrk -t2 -c64 -d"$DURATION" "$ours_url" | requests_per_s)")
    theirs+=("$(wrk -t2 -c64 -d"$DURATION" "$nginx_url" | requests_per_s)")
    echo "download $label pair $pair: registry ${ours[-1]} requests/s, nginx ${theirs[-1]} requests/s"
  done
  o=$(median "${ours[@]}"); t=$(median "${theirs[@]}")
  awk -v o="$o" -v t="$t" -v s="$size" -v l="$label" 'BEGIN {
    printf "artifact download %s (%d bytes, 64 connections): registry %.0f requests/s (%.0f MB/s), nginx %.0f requests/s (%.0f MB/s), ratio %.2f [target 0.8]\n", l, s, o, o * s / 1e6, t, t * s / 1e6, o / t }'
done
kill "$(cat "$work/nginx.pid")"

# 2. Metadata at full speed: the detail of the last commentary, beside /healthz.
for target in "/v1/commentaries/$detail_id" "/healthz"; do
  curl -sf -o /dev/null "$url$target" || { echo "GET $target failed" >&2; exit 1; }
  out=$(wrk -t2 -c64 -d"$DURATION" --latency "$url$target")
  rate=$(requests_per_s <<< "$out")
  p50=$(awk '$1 == "50%" { print $2 }' <<< "$out")
  p99=$(awk '$1 == "99%" { print $2 }' <<< "$out")
  errors=$(awk '/Non-2xx|Socket errors/ { print }' <<< "$out")
  echo "GET ${target/$detail_id/{id\}} (64 connections): $rate requests/s, p50 $p50, p99 $p99${errors:+ ($errors)}"
done

# 3. Upload memory: the server's peak RSS before and after a 200 MB upload.
python3 bench/make_idx_dataset.py "$work/big.tar" --train 255000 --test 1000
big=$(stat -c %s "$work/big.tar")
before=$(vm_hwm_kib "$server")
status=$(curl -s -o /dev/null -w '%{http_code}' -T "$work/big.tar" -X POST \
  -H 'content-type: application/octet-stream' "$url/v1/datasets?name=big")
after=$(vm_hwm_kib "$server")
echo "upload of $((big / 1000000)) MB (HTTP $status): peak RSS $((before / 1024)) MiB before, $((after / 1024)) MiB after, +$(((after - before) / 1024)) MiB"
