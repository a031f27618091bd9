#!/usr/bin/env bash
# Speed and memory of Algorithm 2 (online IFT learning label blending; see
# `commentary bench ift-step --help`) beside its PyTorch twin, bench/ift_step_reference.py:
# PAIRS runs of each, alternating ours and PyTorch (machines vary 10-20% run to run), then the
# medians and the ratio time ours / time PyTorch (below 1: we are faster).
#
# Usage: bench/ift_step.sh [STEPS] [PAIRS]      (defaults: 20 3)
#        PYTHON=/path/to/venv/bin/python bench/ift_step.sh   (a Python with torch)
#        COMMENTARY_BIN=path/to/commentary bench/ift_step.sh (skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-20}
pairs=${2:-3}
python=${PYTHON:-python3}
"$python" -c "import torch" 2>/dev/null || { echo "bench/ift_step.sh needs torch (pip install torch)" >&2; exit 1; }

# COMMENTARY_BIN: a binary built beforehand (a GPU machine may have no Rust toolchain).
bin=${COMMENTARY_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --release --bin commentary
  bin=${CARGO_TARGET_DIR:-target}/release/commentary
fi

summary() { tail -n 1 | sed -E 's/.*seconds_per_step=([0-9.]+) peak_rss_mib=([0-9.]+).*/\1 \2/'; }
ours=() theirs=() ours_rss=() theirs_rss=()
for pair in $(seq "$pairs"); do
  read -r s m <<< "$("$bin" bench ift-step --steps "$steps" | summary)"
  ours+=("$s"); ours_rss+=("$m")
  read -r s m <<< "$("$python" bench/ift_step_reference.py --steps "$steps" | summary)"
  theirs+=("$s"); theirs_rss+=("$m")
  echo "pair $pair: commentary ${ours[-1]} s/step (${ours_rss[-1]} MiB), PyTorch ${theirs[-1]} s/step (${theirs_rss[-1]} MiB)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
o=$(median "${ours[@]}"); t=$(median "${theirs[@]}")
orss=$(median "${ours_rss[@]}"); trss=$(median "${theirs_rss[@]}")
awk -v o="$o" -v t="$t" -v orss="$orss" -v trss="$trss" 'BEGIN {
  printf "ift-step medians: commentary %.4f s, PyTorch %.4f s; ratio (ours / PyTorch, below 1 is faster) %.2f; peak RSS %s MiB vs %s MiB (%.2f)\n", o, t, o / t, orss, trss, orss / trss }'
