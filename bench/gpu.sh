#!/usr/bin/env bash
# The three engine benchmarks on a GPU, at the paper's configuration (28x28x1) and at a
# CIFAR-sized one (32x32x3, batch 128), in under ten minutes in all: one line per figure.
#
# A GPU machine may have no network and no Rust toolchain, so this script never builds. Build
# the binary beforehand, where there is a toolchain (and, for CUDA, internet: burn's CUDA
# build fetches an LLVM bundle), and copy it over:
#   cargo build --release --bin commentary --features server/wgpu   # or server/cuda
#   strip target/release/commentary
#
# Usage: bench/gpu.sh [BINARY]   (default: $COMMENTARY_BIN, else target/release/commentary)
#        DEVICE=cuda bench/gpu.sh  (the device to time; default wgpu)
#        LIMIT=90 bench/gpu.sh     (seconds each benchmark may run; six of them)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
bin=${1:-${COMMENTARY_BIN:-${CARGO_TARGET_DIR:-target}/release/commentary}}
device=${DEVICE:-wgpu}
limit=${LIMIT:-90}
if [[ ! -x $bin ]]; then
  echo "bench/gpu.sh: no binary at $bin; build it with --features server/$device (see the top of this script)" >&2
  exit 2
fi
echo "binary: $bin ($("$bin" --version)), device=$device, at most ${limit} s per benchmark"

# name, then the bench arguments: prints the command's last line (its figures) after the name,
# and counts a benchmark that fails or runs out of time.
failed=0
run() {
  local name=$1
  shift
  local out status
  out=$(timeout "$limit" "$bin" bench "$@" --device "$device" 2>&1)
  status=$?
  if [[ $status -eq 0 ]]; then
    echo "$name: $(tail -n 1 <<< "$out")"
    return
  fi
  failed=$((failed + 1))
  if [[ $status -eq 124 ]]; then
    echo "$name: did not finish within ${limit} s"
  else
    echo "$name: failed ($status): $(tail -n 1 <<< "$out")"
  fi
}

run "meta-step, paper (28x28x1, batch 8, K=100)" meta-step --inner-steps 100 --meta-steps 3
run "meta-step, CIFAR-sized (32x32x3, batch 128, K=100)" meta-step --inner-steps 100 --meta-steps 3 \
  --image 32x32x3 --batch-size 128
run "ift-step, paper (28x28x1, batch 128)" ift-step --steps 20
run "ift-step, CIFAR-sized (32x32x3, batch 128)" ift-step --steps 20 --image 32x32x3
run "truncated-step, paper (28x28x1, batch 8)" truncated-step --steps 50
run "truncated-step, CIFAR-sized (32x32x3, batch 128)" truncated-step --steps 50 \
  --image 32x32x3 --batch-size 128
[[ $failed -eq 0 ]] || { echo "$failed benchmark(s) did not give a figure" >&2; exit 1; }
