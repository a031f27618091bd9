#!/usr/bin/env bash
# `commentary dataset hash` on one dataset as a folder and as a .tar, .tar.gz and .zip of it:
# seconds, peak RSS, and the most bytes the run kept in its temporary folder (TMPDIR). Archives
# are read in place, so that last column should read 0 for every container.
#
# Usage: bench/archive_read.sh [EXAMPLES] [ROUNDS]   (default: 60000 3)
# Two datasets: IDX (EXAMPLES 28x28 images in two files) and an image folder (EXAMPLES / 10
# PNGs). COMMENTARY_BIN picks the build (default: a release build); BASELINE_BIN, when set, is
# run beside it, alternating, for a before/after pair. Prints the median of ROUNDS per row.
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-60000}
rounds=${2:-3}

bin=${COMMENTARY_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --release --bin commentary
  bin=${CARGO_TARGET_DIR:-target}/release/commentary
fi
bins=("$bin")
[[ -n ${BASELINE_BIN:-} ]] && bins+=("$BASELINE_BIN")
out=bench/out/archive-read
mkdir -p "$out"

# The datasets, each as a folder and its three archives (deflate for .tar.gz and .zip).
python3 - "$out" "$examples" <<'PY'
import os, random, struct, sys, tarfile, zipfile, zlib
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(0)

def png(side, fill):
    raw = b"".join(b"\x00" + bytes([fill]) * side for _ in range(side))
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))

def write(folder, files):
    for name, data in files:
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    names = [name for name, _ in files]
    with tarfile.open(folder + ".tar", "w") as tar:
        for name in names:
            tar.add(os.path.join(folder, name), arcname=name)
    with tarfile.open(folder + ".tar.gz", "w:gz", compresslevel=6) as tar:
        for name in names:
            tar.add(os.path.join(folder, name), arcname=name)
    with zipfile.ZipFile(folder + ".zip", "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            z.write(os.path.join(folder, name), arcname=name)

idx = os.path.join(out, f"idx-{n}")
if not os.path.exists(idx + ".zip"):
    pixels = os.urandom(784 * n)
    labels = bytes(rng.randrange(10) for _ in range(n))
    write(idx, [
        ("train-images-idx3-ubyte", struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + pixels),
        ("train-labels-idx1-ubyte", struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels),
    ])
folder = os.path.join(out, f"images-{n // 10}")
if not os.path.exists(folder + ".zip"):
    write(folder, [(f"train/{i % 10}/{i}.png", png(28, i % 251)) for i in range(n // 10)])
PY

# One run: "seconds peak_rss_mib peak_tmp_mib".
measure() {
  local binary=$1 path=$2 tmp peak=0 used pid
  tmp=$(mktemp -d)
  TMPDIR=$tmp /usr/bin/time -f '%e %M' -o "$out/time.txt" "$binary" dataset hash "$path" > /dev/null &
  pid=$!
  while kill -0 "$pid" 2> /dev/null; do
    # Files come and go while du walks the folder: count what it could read.
    used=$(du -sb "$tmp" 2> /dev/null | cut -f1 || true)
    (( ${used:-0} > peak )) && peak=$used
    sleep 0.05
  done
  wait "$pid"
  rm -rf "$tmp"
  read -r seconds rss_kib < "$out/time.txt"
  echo "$seconds $(( rss_kib / 1024 )) $(awk "BEGIN { printf \"%.1f\", $peak / 1048576 }")"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

printf '%-28s %-12s %10s %14s %14s\n' dataset build seconds peak_rss_mib peak_tmp_mib
for dataset in "idx-$examples" "images-$(( examples / 10 ))"; do
  for suffix in "" .tar .tar.gz .zip; do
    path="$out/$dataset$suffix"
    declare -A results=()
    for (( round = 0; round < rounds; round++ )); do
      for b in "${bins[@]}"; do
        results[$b]+="$(measure "$b" "$path")"$'\n'
      done
    done
    for b in "${bins[@]}"; do
      label=new
      [[ $b == "${BASELINE_BIN:-}" ]] && label=baseline
      rows=$(printf '%s' "${results[$b]}")
      printf '%-28s %-12s %10s %14s %14s\n' "$dataset$suffix" "$label" \
        "$(cut -d' ' -f1 <<< "$rows" | median)" \
        "$(cut -d' ' -f2 <<< "$rows" | median)" \
        "$(cut -d' ' -f3 <<< "$rows" | median)"
    done
    unset results
  done
done
