#!/usr/bin/env bash
# Runs every GPU check and benchmark of the FusedLoRA work in one go, on the GPU machine, from a build made
# on the development machine (build-gpu, Release, LORAGEN_STATIC_DEPS=ON). Logs go to $OUT (or out/gpu);
# a short table is printed last.
#   usage: bash bench/run_gpu.sh [BUILD_DIR] [--tests-only|--bench-only]
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-gpu}
MODE=${2:-all}
O=${OUT:-out/gpu}
mkdir -p "$O"
export LORAGEN_CACHE_DIR=$O/jit-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$O/gpu.txt"
summary=""
if [ "$MODE" != "--bench-only" ]; then
  for t in test_lora_gpu test_blas test_jit; do
    [ -x "$B/$t" ] || continue
    "$B/$t" >"$O/$t.log" 2>&1; rc=$?
    tail -3 "$O/$t.log"
    summary+="$t: rc=$rc ($(grep -E '^[0-9]+%: Checks' "$O/$t.log" | tail -1))\n"
  done
fi
if [ "$MODE" != "--tests-only" ]; then
  "$B/bench_lora" --csv "$O/bench_lora.csv" >"$O/bench_lora.log" 2>&1; rc=$?
  summary+="bench_lora: rc=$rc\n"
fi
echo "================ summary ================"
printf "%b" "$summary"
[ -f "$O/bench_lora.log" ] && tail -22 "$O/bench_lora.log"
exit 0
