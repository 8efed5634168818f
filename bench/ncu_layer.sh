#!/usr/bin/env bash
# ncu_layer.sh: where the time of one decoder layer goes, kernel by kernel, with LoRA on all seven projections
# and without (bench_layer --mode lora / base under ncu, 1 warm-up and 1 timed step on a 1- and a 2-layer model
# of the spec's dimensions: 4 steps, 6 layer passes per mode). Then the LoRA kernels' detail sections.
#   usage: bash bench/ncu_layer.sh BUILD_DIR [OUT_DIR] [SPEC] [bench_layer options...]
set -euo pipefail
B=$1 O=${2:-${OUT:-out}/ncu-layer} SPEC=${3:-specs/llama-3.1-8b.lua}
shift $(( $# < 3 ? $# : 3 ))
command -v ncu >/dev/null || { echo "ncu_layer.sh: ncu not found" >&2; exit 77; }
mkdir -p "$O"
name=$(basename "$SPEC" .lua)
for l in 1 2; do
  d=$O/$name-$l
  [ -f "$d/config.json" ] || "$B/loragen" init-model "$SPEC" "$d" --layers "$l" --seed 1 > /dev/null
done
M=(gpu__time_duration.sum launch__registers_per_thread sm__warps_active.avg.pct_of_peak_sustained_active
   dram__throughput.avg.pct_of_peak_sustained_elapsed)
for mode in lora base; do
  ncu --clock-control none --metrics "$(IFS=,; echo "${M[*]}")" --csv \
    "$B/bench_layer" "$O/$name-1" "$O/$name-2" --mode "$mode" --rounds 1 "$@" > "$O/ncu_$mode.csv" 2> "$O/ncu_$mode.err"
  echo "=== $mode ==="
  python3 "$(dirname "$0")/ncu_layer.py" "$O/ncu_$mode.csv" 4
done
# the LoRA passes in detail: the first launch of each (q/k/v, o, gate/up, down in the forward; their backward)
ncu --clock-control none --kernel-name regex:mlora --launch-count 24 --section SpeedOfLight --section Occupancy \
  --section LaunchStats --section WarpStateStats --section MemoryWorkloadAnalysis \
  "$B/bench_layer" "$O/$name-1" "$O/$name-2" --mode lora --rounds 1 "$@" > "$O/ncu_mlora_detail.txt" 2>&1 || true
