#!/usr/bin/env bash
# Registry benchmarks with wrk on loopback (the issue's targets in brackets):
#   1. artifact download throughput, 64 connections, against nginx serving the same file
#      [at least half of nginx's];
#   2. GET /v1/commentaries/{id} latency at about 1,000 requests/s [p99 under 20 ms];
#   3. the server's peak RSS increase while a 200 MB dataset is uploaded [under 64 MB].
# Needs wrk and nginx (apt-get install wrk nginx-light), python3 and curl. Uses the release
# binary (built if missing; COMMENTARY_BIN overrides). Prints one line per figure.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${COMMENTARY_BIN:-${CARGO_TARGET_DIR:-target}/release/commentary}
[[ -x "$BIN" ]] || cargo build --release --bin commentary
for tool in wrk nginx curl python3; do
  command -v "$tool" > /dev/null || { echo "bench/registry.sh needs $tool" >&2; exit 1; }
done
DURATION=${DURATION:-10s}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2> /dev/null || true; done
  [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2> /dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# "2.51GB" -> bytes
to_bytes() { python3 -c 'import sys, re; m = re.match(r"([\d.]+)([KMGT]?)B", sys.argv[1]); print(int(float(m[1]) * 1024 ** " KMGT".index(m[2] or " ")))' "$1"; }
vm_hwm_kib() { awk '/^VmHWM/ { print $2 }' "/proc/$1/status"; }

"$BIN" serve --addr 127.0.0.1:0 --data-dir "$work/data" --workers 0 --write-rate-limit 0 \
  > "$work/serve.out" 2> "$work/serve.err" &
server=$!
pids+=("$server")
for _ in $(seq 100); do grep -q "^listening on" "$work/serve.out" 2> /dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/serve.out")
echo "registry: $url (pid $server, $("$BIN" --version))"

# A commentary whose tensors are about 1 MiB: a per-example weight table on a dataset of
# 200,000 tiny (4x4) examples.
python3 bench/make_idx_dataset.py "$work/table.tar" --train 200000 --side 4
"$BIN" learn --dataset "$work/table.tar" --kind example-weighting --tabular --out "$work/table" \
  --inner-steps 2 --meta-steps 1 --student mlp:8 --batch-size 32 --validation-batch-size 64 > /dev/null
"$BIN" dataset push "$work/table.tar" --server "$url" > /dev/null 2>&1
id=$(curl -sf -F "manifest=@$work/table/manifest.json" -F "tensors=@$work/table/tensors.safetensors" \
  "$url/v1/commentaries" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
file="$work/table/tensors.safetensors"
size=$(stat -c %s "$file")
echo "artifact: $id, $size bytes"

# Both must serve the whole file (a wrong status would make the comparison meaningless).
check() {
  local got
  got=$(curl -s -o /dev/null -w '%{http_code} %{size_download}' "$1")
  [[ "$got" == "200 $size" ]] || { echo "GET $1 answered '$got', expected '200 $size'" >&2; exit 1; }
}

# 1. Throughput: ours, then nginx on the same file.
check "$url/v1/commentaries/$id/artifact"
ours=$(wrk -t2 -c64 -d"$DURATION" "$url/v1/commentaries/$id/artifact" | awk '/^Transfer\/sec/ { print $2 }')
nginx_port=$(free_port)
mkdir -p "$work/nginx"
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
  server { listen 127.0.0.1:$nginx_port; root $work/table; }
}
CONF
nginx -c "$work/nginx.conf"
for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$nginx_port") 2> /dev/null && break; sleep 0.1; done
check "http://127.0.0.1:$nginx_port/tensors.safetensors"
theirs=$(wrk -t2 -c64 -d"$DURATION" "http://127.0.0.1:$nginx_port/tensors.safetensors" | awk '/^Transfer\/sec/ { print $2 }')
kill "$(cat "$work/nginx.pid")"
ratio=$(python3 -c "print(f'{$(to_bytes "$ours") / $(to_bytes "$theirs"):.2f}')")
echo "artifact download (64 connections, $size bytes): registry $ours/s, nginx $theirs/s, ratio $ratio"

# 2. Latency at a paced ~1,000 requests/s: 64 connections, each waiting 64 ms between requests.
cat > "$work/paced.lua" <<'LUA'
function delay() return 64 end
LUA
latency=$(wrk -t2 -c64 -d"$DURATION" --latency -s "$work/paced.lua" "$url/v1/commentaries/$id")
rate=$(awk '/^Requests\/sec/ { print $2 }' <<< "$latency")
p50=$(awk '$1 == "50%" { print $2 }' <<< "$latency")
p99=$(awk '$1 == "99%" { print $2 }' <<< "$latency")
echo "GET /v1/commentaries/{id}: $rate requests/s, p50 $p50, p99 $p99"

# 3. Upload memory: the server's peak RSS before and after a 200 MB upload.
python3 bench/make_idx_dataset.py "$work/big.tar" --train 255000 --test 1000
big=$(stat -c %s "$work/big.tar")
before=$(vm_hwm_kib "$server")
status=$(curl -s -o /dev/null -w '%{http_code}' -T "$work/big.tar" -X POST \
  -H 'content-type: application/octet-stream' "$url/v1/datasets?name=big")
after=$(vm_hwm_kib "$server")
echo "upload of $((big / 1000000)) MB (HTTP $status): peak RSS $((before / 1024)) MiB before, $((after / 1024)) MiB after, +$(((after - before) / 1024)) MiB"
