#!/usr/bin/env bash
# Speed and memory of one Algorithm-1 meta-step (see `commentary bench meta-step --help`):
# the Rust engine at K and K/2 inner steps (memory growth per step), and, when torch and higher
# are installed (`pip install torch higher`), the PyTorch reference beside it with the ratio.
#
# Usage: bench/meta_step.sh [K] [META_STEPS] [DEVICE]    (defaults: 100 3 cpu)
#        PYTHON=/path/to/venv/bin/python bench/meta_step.sh   (the Python with torch and higher)
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-100}
meta=${2:-3}
python=${PYTHON:-python3}
device=${3:-cpu}
features=()
[[ $device == cpu ]] || features=(--features "server/$device")

cargo build --quiet --release --bin commentary "${features[@]}"
bin=${CARGO_TARGET_DIR:-target}/release/commentary

summary() { tail -n 1 | sed -E 's/.*seconds_per_meta_step=([0-9.]+) peak_rss_mib=([0-9.]+).*/\1 \2/'; }

echo "== commentary, K=$k"
ours=$("$bin" bench meta-step --inner-steps "$k" --meta-steps "$meta" --device "$device" | tee /dev/stderr | summary)
half=$(( k / 2 ))
echo "== commentary, K=$half"
ours_half=$("$bin" bench meta-step --inner-steps "$half" --meta-steps "$meta" --device "$device" | tee /dev/stderr | summary)
read -r ours_s ours_rss <<< "$ours"
read -r _ half_rss <<< "$ours_half"
growth=$(awk -v a="$ours_rss" -v b="$half_rss" -v k="$k" -v h="$half" 'BEGIN { printf "%.3f", (a - b) / (k - h) }')
echo "commentary: seconds_per_meta_step=$ours_s peak_rss_mib=$ours_rss growth_mib_per_inner_step=$growth"

if "$python" -c "import torch, higher" 2>/dev/null; then
  echo "== PyTorch + higher reference, K=$k"
  ref=$("$python" bench/meta_step_reference.py --inner-steps "$k" --meta-steps "$meta" | tee /dev/stderr | summary)
  read -r ref_s ref_rss <<< "$ref"
  awk -v r="$ref_s" -v o="$ours_s" -v rr="$ref_rss" -v orr="$ours_rss" \
    'BEGIN { printf "ratio (time ours / PyTorch+higher, below 1 means faster): %.2f (%.3f s vs %.3f s); peak RSS %s MiB vs %s MiB\n", o / r, o, r, orr, rr }'
else
  echo "PyTorch reference skipped: pip install torch higher to compare"
fi
