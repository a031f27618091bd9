#!/usr/bin/env bash
# Fuzzes every parser of outside bytes with cargo-fuzz (libFuzzer, AddressSanitizer, nightly):
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Default: 60 seconds for each of the targets in fuzz/Cargo.toml. CI runs the default; for a
# longer search give more seconds (e.g. 3600) or one target. Installs cargo-fuzz when missing.
#
# Each target starts from its seed corpus in fuzz/corpus/<target> (committed; regenerate with
# fuzz/seeds.py) and keeps what it finds in $FUZZ_WORK/<target> (default under /var/tmp), so
# the committed corpus stays small. A crash stops the run: libFuzzer writes the input to
# fuzz/artifacts/<target>/, the script exits 1 and prints how to replay it. Make each crash a
# test of the crate whose parser it broke before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^commentary-fuzz$')
fi

if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
  echo "installing cargo-fuzz..." >&2
  cargo install --locked cargo-fuzz
fi

# Outside the clone, like the main build cache, so repeated runs on one machine reuse it.
target_dir="${FUZZ_TARGET_DIR:-/var/tmp/commentary-fuzz-target}"
work="${FUZZ_WORK:-/var/tmp/commentary-fuzz-corpus}"

for target in "${targets[@]}"; do
  cargo +nightly fuzz build --target-dir "$target_dir" "$target"
done

for target in "${targets[@]}"; do
  mkdir -p "$work/$target"
  seeds=()
  [[ -d "corpus/$target" ]] && seeds=("corpus/$target")
  echo "== fuzz $target for ${seconds}s"
  # -rss_limit_mb: a parser that allocates past the decode limits is a bug, not a slow input.
  if ! cargo +nightly fuzz run --target-dir "$target_dir" "$target" \
      "$work/$target" "${seeds[@]}" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=20 -max_len=65536 \
      -print_final_stats=1 2> "$work/$target.log"; then
    tail -40 "$work/$target.log" >&2
    echo "fuzz $target failed; replay with:" >&2
    echo "  cd fuzz && cargo +nightly fuzz run --target-dir $target_dir $target artifacts/$target/<file>" >&2
    exit 1
  fi
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb|^#[0-9]+.*DONE" "$work/$target.log" || true
  echo "corpus: $(find "$work/$target" -type f | wc -l) inputs"
done
