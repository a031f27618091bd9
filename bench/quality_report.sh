#!/usr/bin/env bash
# The quality report: does each commentary kind help a fresh student? On the MNIST fixture (and
# its spurious-background variant for masks), 3 seeds each, mean +- std, written to
# docs/results.md. Never tunes on the test split: learning sees only the train split (with its
# held-out validation part); test accuracy is only reported.
#
# Usage: bench/quality_report.sh [OUT_DIR]     (about 15 minutes on 2 cores)
# Larger configuration for a GPU (documented, not run here): --device cuda, CBR students and
# teachers (--student cbr --commentary-net cbr), --inner-steps 100, --meta-steps 500, apply
# --steps 3000 with 5 seeds.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench/out/quality}
mkdir -p "$out"
# COMMENTARY_BIN picks another build (e.g. target/debug/commentary, whose dependencies are
# optimised too).
bin=${COMMENTARY_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --release --bin commentary
  bin=${CARGO_TARGET_DIR:-target}/release/commentary
fi
data=fixtures/mnist
seeds=1,2,3
student=mlp:64
common=(--student "$student" --batch-size 32 --validation-examples 1000 --validation-batch-size 500)

echo "== example weighting (teacher, BPTT)"
"$bin" learn --dataset "$data" --kind example-weighting --algorithm bptt --out "$out/weighting" \
  "${common[@]}" --commentary-net mlp:32 --inner-steps 50 --meta-steps 60 --outer-lr 0.01
"$bin" apply --dataset "$data" --commentary "$out/weighting" --report "$out/weighting.json" \
  --student "$student" --seeds "$seeds" --steps 500 --eval-every 25
"$bin" apply --dataset "$data" --commentary "$out/weighting" --report "$out/weighting-transfer.json" \
  --student mlp:128,64 --seeds "$seeds" --steps 500 --eval-every 25

echo "== label blending (IFT), 1,000 training images"
"$bin" learn --dataset "$data" --kind label-blending --algorithm ift --out "$out/blending" \
  "${common[@]}" --inner-steps 50 --meta-steps 20 --outer-lr 0.05
"$bin" apply --dataset "$data" --commentary "$out/blending" --report "$out/blending.json" \
  --student "$student" --seeds "$seeds" --steps 500 --eval-every 25 --train-examples 1000

echo "== attention masks (IFT) on the spurious-background variant"
"$bin" dataset spurious "$data" --out "$out/spurious"
"$bin" learn --dataset "$out/spurious" --kind attention-mask --algorithm ift --out "$out/masks" \
  "${common[@]}" --commentary-net mlp:32 --inner-steps 50 --meta-steps 20 --outer-lr 0.01
"$bin" apply --dataset "$out/spurious" --commentary "$out/masks" --report "$out/masks.json" \
  --student "$student" --seeds "$seeds" --steps 500 --eval-every 25

python3 bench/quality_table.py "$out" > docs/results.md
cat docs/results.md
