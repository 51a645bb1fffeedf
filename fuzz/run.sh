#!/usr/bin/env bash
# Builds the fuzz targets and runs each for FUZZ_SECONDS (default 60) from its committed seeds
# plus the corpus earlier runs grew (fuzz/corpus, git-ignored). Fails on the first crash, leak of
# time (an input over 10 s) or memory (over 2 GiB); the input that did it is kept in
# fuzz/artifacts/<target>/ and replays with
#   fuzz/target/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-…
# Prints executions per target at the end.
#
# `make fuzz` runs it; `make test` runs it with FUZZ_TEST_SECONDS per target (0: the seeds
# only, once). FUZZ_TARGETS limits the targets (space-separated).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${FUZZ_SECONDS:-60}"
# cargo-fuzz passes nightly-only flags (-Zsanitizer=…, -Cllvm-args=…); the machines have only
# the stable toolchain, which accepts them with this.
export RUSTC_BOOTSTRAP=1
# Always fuzz/target, whatever CARGO_TARGET_DIR says: instrumented builds have their own flags,
# and sharing the workspace's target dir would rebuild one for the other each time (and the
# binaries would not be where this script runs them).
export CARGO_TARGET_DIR="$PWD/target"
# A cold fuzz build writes 1.5 GiB; with less than twice that free, fail at once and say so
# instead of filling the disk the test databases and the broker share half-way through.
need_kib=$((3 * 1024 * 1024))
free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [ ! -d target ] && [ "${free_kib:-0}" -lt "$need_kib" ]; then
  echo "[fuzz] only $((free_kib / 1024)) MiB free here; a cold fuzz build needs 3 GiB" >&2
  exit 1
fi
# No sanitizer: hookline and its dependencies' code here is safe Rust (unsafe_code is forbidden
# in the workspace), so AddressSanitizer would find little and cost half the executions; panics,
# overflows (debug assertions are on), stack overflows, timeouts and memory blow-ups are what
# this looks for, and libFuzzer catches all of them without it.
flags=(--sanitizer none)
targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin="target/$triple/release"

start=$(date +%s)
cargo fuzz build "${flags[@]}"
echo "[fuzz] build: $(($(date +%s) - start)) s"

summary=()
for t in $targets; do
  mkdir -p "corpus/$t" "artifacts/$t"
  # Every committed seed once, strictly: a seed that asks to be signed must verify.
  HOOKLINE_FUZZ_SEEDS_MUST_VERIFY=1 "$bin/$t" -runs=0 "seeds/$t" 2> "artifacts/$t/seeds.log" \
    || { cat "artifacts/$t/seeds.log"; echo "[fuzz] $t: a seed failed"; exit 1; }
  if [ "$seconds" = 0 ]; then
    summary+=("$(printf '%-12s seeds replayed' "$t")")
    continue
  fi
  log="artifacts/$t/run.log"
  if ! "$bin/$t" "corpus/$t" "seeds/$t" -dict=hookline.dict -max_total_time="$seconds" \
      -timeout=10 -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
      2> "$log"; then
    tail -n 60 "$log"
    echo "[fuzz] $t: crash; the input is in fuzz/artifacts/$t/"
    exit 1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  summary+=("$(printf '%-12s %10s executions in %s s, %s, 0 crashes' "$t" "$execs" "$seconds" "$cov")")
done
echo "[fuzz] machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
printf '[fuzz] %s\n' "${summary[@]}"
echo "[fuzz] total: $(($(date +%s) - start)) s"
