#!/usr/bin/env bash
# The quality report: does each commentary help a fresh student where a practitioner needs
# help? On the MNIST fixture and variants with known problems (`commentary dataset corrupt`:
# a clean, class-balanced 500-example `val` split held out of train, then train corrupted),
# one commentary learned per scenario, applied to 3 fresh student seeds; mean +- std and
# z = (mean_with - mean_without) / sqrt(s_with^2/3 + s_without^2/3), written to
# docs/results.md. Never tunes on test: learning measures L_V on `val` (or a hold-out of
# train on clean data); test accuracy is only reported.
#
# Usage: bench/quality_report.sh [--smoke] [OUT_DIR]
#   full: about 25 minutes on 2 cores (each learning run well under the 10-minute budget);
#   --smoke: tiny budgets, one seed, checks the pipeline runs end to end (CI runs this).
# COMMENTARY_BIN picks a build (e.g. target/debug/commentary, whose dependencies are optimised).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
if [[ ${1:-} == --smoke ]]; then
  smoke=1
  shift
fi
out=${1:-bench/out/quality}
rm -rf "$out"
mkdir -p "$out"
bin=${COMMENTARY_BIN:-}
if [[ -z $bin ]]; then
  cargo build --quiet --release --bin commentary
  bin=${CARGO_TARGET_DIR:-target}/release/commentary
fi
data=fixtures/mnist
student=mlp:64
if ((smoke)); then
  seeds=1 steps=200 every=100 inner=200 students=1 bptt_meta=3
else
  seeds=1,2,3 steps=1500 every=100 inner=1500 students=3 bptt_meta=60
fi
apply=(--student "$student" --seeds "$seeds" --steps "$steps" --eval-every "$every")
# Online weighting (truncated BPTT, a one-step look-ahead) against the clean val split.
online=(--student "$student" --batch-size 32 --validation-batch-size 100 --inner-steps "$inner"
  --meta-steps "$students" --unroll-steps 1)

section() { echo "== $*"; }

section "datasets with known problems"
"$bin" dataset corrupt "$data" --out "$out/pair40" --label-noise 0.4 --noise pair --seed 1
"$bin" dataset corrupt "$data" --out "$out/sym40" --label-noise 0.4 --noise symmetric --seed 1
"$bin" dataset corrupt "$data" --out "$out/imbalance50" --imbalance 50 --seed 1
"$bin" dataset corrupt "$data" --out "$out/spurious" --spurious --seed 1

section "40% pair noise: tabular weighting"
"$bin" learn --dataset "$out/pair40" --kind example-weighting --tabular --out "$out/pair40-table" \
  "${online[@]}" --outer-lr 0.03
"$bin" apply --dataset "$out/pair40" --commentary "$out/pair40-table" --report "$out/pair40-table.json" "${apply[@]}"

section "40% pair noise: a teacher with a per-class head, and one with the label as an input"
"$bin" learn --dataset "$out/pair40" --kind example-weighting --label-head --commentary-net mlp:32 \
  --out "$out/pair40-head" "${online[@]}" --outer-lr 0.003
"$bin" apply --dataset "$out/pair40" --commentary "$out/pair40-head" --report "$out/pair40-head.json" \
  "${apply[@]}" --no-references
"$bin" learn --dataset "$out/pair40" --kind example-weighting --label-input --commentary-net mlp:32 \
  --out "$out/pair40-input" "${online[@]}" --outer-lr 0.003
"$bin" apply --dataset "$out/pair40" --commentary "$out/pair40-input" --report "$out/pair40-input.json" \
  "${apply[@]}" --no-references

section "40% symmetric noise: tabular weighting"
"$bin" learn --dataset "$out/sym40" --kind example-weighting --tabular --out "$out/sym40-table" \
  "${online[@]}" --outer-lr 0.03
"$bin" apply --dataset "$out/sym40" --commentary "$out/sym40-table" --report "$out/sym40-table.json" "${apply[@]}"

section "imbalance 50:1 with a balanced val split: tabular weighting (and the class-weights arm)"
"$bin" learn --dataset "$out/imbalance50" --kind example-weighting --tabular --out "$out/imbalance50-table" \
  "${online[@]}" --outer-lr 0.03
"$bin" apply --dataset "$out/imbalance50" --commentary "$out/imbalance50-table" \
  --report "$out/imbalance50-table.json" "${apply[@]}"

# Masks in each range: half (around 1, the default) and full (down to 0).
clean_masks_meta=$((smoke ? 1 : 5))
for range in half full; do
  suffix=${range/half/}
  suffix=${suffix:+-$suffix}
  section "spurious patch with an uncorrelated val split: attention masks (IFT), --mask-range $range"
  "$bin" learn --dataset "$out/spurious" --kind attention-mask --out "$out/spurious-masks$suffix" \
    --student "$student" --commentary-net mlp:32 --batch-size 32 --validation-batch-size 100 \
    --inner-steps 100 --meta-steps $((inner / 100)) --outer-lr 0.01 --mask-range "$range"
  "$bin" apply --dataset "$out/spurious" --commentary "$out/spurious-masks$suffix" \
    --report "$out/spurious-masks$suffix.json" "${apply[@]}" --no-references

  section "clean data: attention masks with default settings (CBR student and mask net), --mask-range $range"
  "$bin" learn --dataset "$data" --kind attention-mask --out "$out/clean-masks$suffix" \
    --meta-steps "$clean_masks_meta" --mask-range "$range"
  "$bin" apply --dataset "$data" --commentary "$out/clean-masks$suffix" --report "$out/clean-masks$suffix.json" \
    --seeds "$seeds" --steps "$steps" --eval-every "$every"
done

section "clean data, the paper's claims: a BPTT teacher (speed-up), transfer MLP -> CBR"
"$bin" learn --dataset "$data" --kind example-weighting --algorithm bptt --out "$out/clean-teacher" \
  --student "$student" --commentary-net mlp:32 --batch-size 32 --validation-examples 1000 \
  --validation-batch-size 500 --inner-steps 50 --meta-steps "$bptt_meta" --outer-lr 0.01
"$bin" apply --dataset "$data" --commentary "$out/clean-teacher" --report "$out/clean-teacher.json" "${apply[@]}"
"$bin" apply --dataset "$data" --commentary "$out/clean-teacher" --report "$out/clean-teacher-cbr.json" \
  --student cbr --seeds "$seeds" --steps "$steps" --eval-every "$every"

section "clean data, 1,000 training images: label blending (IFT) against none and random"
"$bin" learn --dataset "$data" --kind label-blending --out "$out/blending" --student "$student" \
  --batch-size 32 --validation-examples 1000 --validation-batch-size 500 --inner-steps 50 \
  --meta-steps $((smoke ? 2 : 20)) --outer-lr 0.05
"$bin" apply --dataset "$data" --commentary "$out/blending" --report "$out/blending.json" "${apply[@]}" \
  --train-examples 1000

if ((smoke)); then
  python3 bench/quality_table.py "$out" > "$out/results.md"
  echo "smoke run complete: $out/results.md"
else
  # The hand-written reading below the marker survives a new table (revise it by hand).
  reading=$(sed -n '/^<!-- reading -->/,$p' docs/results.md 2> /dev/null || true)
  { python3 bench/quality_table.py "$out"; echo; echo "$reading"; } > docs/results.md.new
  mv docs/results.md.new docs/results.md
  cat docs/results.md
fi
