#!/usr/bin/env bash
# Peak memory of `commentary dataset hash` against dataset size: the digest should keep about
# 32 bytes per example (its record hashes), never the data.
#
# Usage: bench/dataset_memory.sh [EXAMPLES...]   (default: 50000 200000 800000)
# Writes synthetic 28x28 IDX datasets under bench/out/ and prints one line per size.
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("$@")
[[ ${#sizes[@]} -gt 0 ]] || sizes=(50000 200000 800000)

# COMMENTARY_BIN picks another build (e.g. target/debug/commentary); memory does not depend on it.
bin=${COMMENTARY_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --release --bin commentary
  bin=${CARGO_TARGET_DIR:-target}/release/commentary
fi
out=bench/out/dataset-memory
mkdir -p "$out"

printf '%-10s %12s %14s %14s\n' examples data_mib peak_rss_mib seconds
for n in "${sizes[@]}"; do
  dir="$out/$n"
  if [[ ! -f $dir/train-labels-idx1-ubyte ]]; then
    mkdir -p "$dir"
    python3 - "$dir" "$n" <<'PY'
import os, struct, sys
folder, n = sys.argv[1], int(sys.argv[2])
with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
    f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28))
    left = n
    while left:
        chunk = min(left, 10000)
        f.write(os.urandom(chunk * 784))
        left -= chunk
with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as f:
    f.write(struct.pack(">BBBBI", 0, 0, 8, 1, n))
    f.write(bytes(b % 10 for b in os.urandom(n)))
PY
  fi
  data_mib=$(du -sm "$dir" | cut -f1)
  /usr/bin/time -f '%M %e' -o "$out/time.txt" "$bin" dataset hash "$dir" > /dev/null
  read -r rss_kib seconds < "$out/time.txt"
  printf '%-10s %12s %14.1f %14s\n' "$n" "$data_mib" "$(awk "BEGIN { print $rss_kib / 1024 }")" "$seconds"
done
