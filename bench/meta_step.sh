#!/usr/bin/env bash
# Speed and memory of one Algorithm-1 meta-step (see `commentary bench meta-step --help`):
# PAIRS runs of the Rust engine at K inner steps alternating with the PyTorch + higher
# reference (machines vary 10-20% run to run), their medians and the ratio time ours / time
# PyTorch (below 1: we are faster), and the engine's memory growth per inner step (K against
# K/2). Then truncated BPTT with a hyper-step after every student step (see `commentary bench
# truncated-step --help`): PAIRS runs of STEPS steps alternating with
# bench/truncated_step_reference.py, their medians, the ratio and steps per second. Without
# torch and higher (`pip install torch higher`) only the engine runs.
#
# Usage: bench/meta_step.sh [K] [META_STEPS] [DEVICE] [PAIRS] [STEPS]
#                                               (defaults: 100 3 cpu 3 50)
#        PYTHON=/path/to/venv/bin/python bench/meta_step.sh   (the Python with torch and higher)
#        COMMENTARY_BIN=path/to/commentary bench/meta_step.sh (skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-100}
meta=${2:-3}
device=${3:-cpu}
pairs=${4:-3}
steps=${5:-50}
python=${PYTHON:-python3}

bin=${COMMENTARY_BIN:-}
if [[ -z $bin ]]; then
  features=()
  [[ $device == cpu ]] || features=(--features "server/$device")
  cargo build --quiet --release --bin commentary "${features[@]}"
  bin=${CARGO_TARGET_DIR:-target}/release/commentary
fi

# The last line's seconds and peak RSS: `seconds_per_meta_step=<s> peak_rss_mib=<n>` (meta-step)
# or `seconds_per_step=<s> steps_per_second=<x> peak_rss_mib=<n>` (truncated-step).
summary() {
  tail -n 1 | sed -E 's/.*seconds_per_(meta_)?step=([0-9.]+) .*peak_rss_mib=([0-9.]+).*/\2 \3/'
}
ours_run() { "$bin" bench meta-step --inner-steps "$1" --meta-steps "$meta" --device "$device" | summary; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

reference=false
if "$python" -c "import torch, higher" 2>/dev/null; then
  reference=true
else
  echo "PyTorch reference skipped: pip install torch higher to compare"
fi

ours=() ours_rss=() theirs=() theirs_rss=()
for pair in $(seq "$pairs"); do
  read -r s m <<< "$(ours_run "$k")"
  ours+=("$s"); ours_rss+=("$m")
  line="pair $pair: commentary $s s (${m} MiB)"
  if $reference; then
    read -r s m <<< "$("$python" bench/meta_step_reference.py --inner-steps "$k" --meta-steps "$meta" | summary)"
    theirs+=("$s"); theirs_rss+=("$m")
    line+=", PyTorch + higher $s s (${m} MiB)"
  fi
  echo "$line"
done

half=$(( k / 2 ))
read -r _ half_rss <<< "$(ours_run "$half")"
o=$(median "${ours[@]}"); orss=$(median "${ours_rss[@]}")
growth=$(awk -v a="$orss" -v b="$half_rss" -v k="$k" -v h="$half" 'BEGIN { printf "%.3f", (a - b) / (k - h) }')
echo "commentary: seconds_per_meta_step=$o peak_rss_mib=$orss growth_mib_per_inner_step=$growth (K=$k against K=$half)"
if $reference; then
  t=$(median "${theirs[@]}"); trss=$(median "${theirs_rss[@]}")
  awk -v o="$o" -v t="$t" -v orss="$orss" -v trss="$trss" 'BEGIN {
    printf "meta-step medians: commentary %.3f s, PyTorch + higher %.3f s; ratio (ours / PyTorch, below 1 is faster) %.2f; peak RSS %s MiB vs %s MiB\n", o, t, o / t, orss, trss }'
fi

ours=() ours_rss=() theirs=() theirs_rss=()
for pair in $(seq "$pairs"); do
  read -r s m <<< "$("$bin" bench truncated-step --steps "$steps" --device "$device" | summary)"
  ours+=("$s"); ours_rss+=("$m")
  line="truncated pair $pair: commentary $s s/step (${m} MiB)"
  if $reference; then
    read -r s m <<< "$("$python" bench/truncated_step_reference.py --steps "$steps" | summary)"
    theirs+=("$s"); theirs_rss+=("$m")
    line+=", PyTorch + higher $s s/step (${m} MiB)"
  fi
  echo "$line"
done

o=$(median "${ours[@]}"); orss=$(median "${ours_rss[@]}")
if $reference; then
  t=$(median "${theirs[@]}"); trss=$(median "${theirs_rss[@]}")
  awk -v o="$o" -v t="$t" -v orss="$orss" -v trss="$trss" 'BEGIN {
    printf "truncated-step medians: commentary %.4f s, PyTorch + higher %.4f s; ratio (ours / PyTorch, below 1 is faster) %.2f; steps per second %.2f vs %.2f; peak RSS %s MiB vs %s MiB\n", o, t, o / t, 1 / o, 1 / t, orss, trss }'
else
  awk -v o="$o" -v orss="$orss" -v n="$steps" 'BEGIN {
    printf "commentary: truncated-step seconds_per_step=%.4f steps_per_second=%.2f peak_rss_mib=%s (%d steps)\n", o, 1 / o, orss, n }'
fi
