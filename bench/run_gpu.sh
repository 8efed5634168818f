#!/usr/bin/env bash
# Runs every GPU check and benchmark of the FusedLoRA work in one go, on the GPU machine, from a build made
# on the development machine (build-gpu, Release, LORAGEN_STATIC_DEPS=ON). Logs go to $OUT (or out/gpu);
# a short table is printed last.
#   usage: bash bench/run_gpu.sh [BUILD_DIR] [--tests-only|--bench-only]
#   env: TESTS="test_lora_gpu ..." picks the suites (default: all GPU suites); NCU=0 skips the ncu passes
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:-build-gpu}
MODE=${2:-all}
O=${OUT:-out/gpu}
mkdir -p "$O"
export LORAGEN_CACHE_DIR=/tmp/loragen-jit-cache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader | tee "$O/gpu.txt"
summary=""
if [ "$MODE" != "--bench-only" ]; then
  for t in ${TESTS:-test_lora_gpu test_blas test_jit test_mlora_gpu test_mlora_gpu_merged
             test_decoder_ops_gpu_norm test_decoder_ops_gpu_rope test_decoder_ops_gpu_swiglu test_decoder_ops_gpu_head
             test_decoder_ops_gpu_adamw test_decoder_ops_gpu_calls test_attention_gpu test_attention_gpu_calls
             test_train_gpu}; do
    [ -x "$B/$t" ] || continue
    "$B/$t" >"$O/$t.log" 2>&1; rc=$?
    tail -3 "$O/$t.log"
    summary+="$t: rc=$rc ($(grep -E '^[0-9]+%: Checks' "$O/$t.log" | tail -1))\n"
  done
  # the Python binding inside PEFT models (tests/python; 77 = skipped: no torch/peft or no GPU)
  bash tests/python/run.sh "$B" --gpu >"$O/test_python.log" 2>&1; rc=$?
  tail -3 "$O/test_python.log"
  summary+="tests/python: rc=$rc ($(grep -E '[0-9]+ (passed|failed)' "$O/test_python.log" | tail -1))\n"
fi
if [ "$MODE" != "--tests-only" ]; then
  "$B/bench_lora" --breakdown --csv "$O/bench_lora.csv" >"$O/bench_lora.log" 2>&1; rc=$?
  summary+="bench_lora: rc=$rc\n"
  "$B/bench_mlora" --breakdown >"$O/bench_mlora.log" 2>&1; rc=$?
  summary+="bench_mlora: rc=$rc\n"
  "$B/bench_decoder_ops" >"$O/bench_decoder_ops.log" 2>&1; rc=$?
  summary+="bench_decoder_ops: rc=$rc\n"
  # the frozen GEMMs against torch.matmul on the same shapes (torch first, then ours with its column)
  python3 bench/gemm_torch.py --csv "$O/gemm_torch.csv" >"$O/gemm_torch.log" 2>&1; rc=$?
  summary+="gemm_torch: rc=$rc\n"
  "$B/bench_gemm" --torch-csv "$O/gemm_torch.csv" --csv "$O/bench_gemm.csv" >"$O/bench_gemm.log" 2>&1; rc=$?
  summary+="bench_gemm: rc=$rc\n"
  # attention: torch SDPA (flash, cuDNN) on the same shapes first, then ours with its numbers beside
  python3 bench/attention_torch.py --mix "$("$B/bench_attention" --print-lens)" --csv "$O/attention_torch.csv" \
    >"$O/attention_torch.log" 2>&1; rc=$?
  summary+="attention_torch: rc=$rc\n"
  "$B/bench_attention" --torch-csv "$O/attention_torch.csv" --csv "$O/bench_attention.csv" >"$O/bench_attention.log" 2>&1; rc=$?
  summary+="bench_attention: rc=$rc\n"
  LORAGEN_LIBRARY="$(cd "$B" && pwd)/libloragen.so" python3 bench/bench_peft_patch.py >"$O/bench_peft_patch.log" 2>&1; rc=$?
  summary+="bench_peft_patch: rc=$rc\n"
  if [ "${NCU:-1}" != 0 ] && command -v ncu >/dev/null; then
    for L in q_proj k_proj; do
      ncu --clock-control none --metrics gpu__time_duration.sum --csv \
        "$B/bench_lora" --only $L --dropout 0.1 --reps 2 --no-tune >"$O/ncu_$L.csv" 2>/dev/null
      echo "--- ncu $L (p=0.1) ---" >>"$O/ncu_summary.txt"
      python3 bench/ncu_summary.py "$O/ncu_$L.csv" >>"$O/ncu_summary.txt" 2>&1
    done
    # where the LoRA kernels stall (for the next optimisation step)
    ncu --clock-control none --section SpeedOfLight --section Occupancy --section SchedulerStats \
      --section WarpStateStats -k regex:'lg_(down|dy|da)' --launch-count 3 \
      "$B/bench_lora" --only q_proj --dropout 0.1 --reps 1 --no-tune >"$O/ncu_detail.txt" 2>&1
    # where the attention kernels' time goes: forward, fast dK/dV, deterministic dK/dV and dQ (validation's
    # first launches of each, 4 x 2048, default tiles)
    ncu --clock-control none --section SpeedOfLight --section Occupancy --section SchedulerStats \
      --section WarpStateStats --section LaunchStats -k regex:'lg_attn_(fwd|bwd_dkv|bwd_dq)' --launch-count 4 \
      "$B/bench_attention" --only 4x2048 --reps 1 --no-sweep >"$O/ncu_attention.txt" 2>&1
  fi
fi
echo "================ summary ================"
printf "%b" "$summary"
[ -f "$O/ncu_summary.txt" ] && grep -E "^(lg_|---)" "$O/ncu_summary.txt"
[ -f "$O/ncu_detail.txt" ] && grep -E "^  lg_|Duration|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued" "$O/ncu_detail.txt"
[ -f "$O/bench_lora.log" ] && grep -E "breakdown|tuned|MISMATCH" "$O/bench_lora.log"
[ -f "$O/bench_lora.log" ] && tail -22 "$O/bench_lora.log"
[ -f "$O/bench_mlora.log" ] && grep -E "MISMATCH|breakdown" "$O/bench_mlora.log"
[ -f "$O/bench_mlora.log" ] && sed -n '/^mix /,$p' "$O/bench_mlora.log"
[ -f "$O/bench_peft_patch.log" ] && grep -E "^(model|patched|validate|MISMATCH|A/B)|tokens/s|speedup|Error|error" "$O/bench_peft_patch.log"
ls "$O"/test_decoder_ops_gpu_*.log >/dev/null 2>&1 && grep -hE "^(FAIL|  FAIL)" "$O"/test_decoder_ops_gpu_*.log | head -20
[ -f "$O/bench_decoder_ops.log" ] && grep -E "MISMATCH|FAILED" "$O/bench_decoder_ops.log"
[ -f "$O/bench_decoder_ops.log" ] && sed -n '/^copy bandwidth\|^device-to-device/p; /^op (8B shapes)/,$p' "$O/bench_decoder_ops.log"
for f in "$O/test_attention_gpu.log" "$O/test_attention_gpu_calls.log"; do
  [ -f "$f" ] && grep -E "^device|^  case |\| (PASS|FAIL)$|first bad|kernels:|skipped|isolation|reproducib|cuDNN backend|Checks|:F:|:E:" "$f" | head -60
done
[ -f "$O/attention_torch.log" ] && cat "$O/attention_torch.log"
[ -f "$O/bench_attention.log" ] && grep -E "MISMATCH|validation|picked|^kernels" "$O/bench_attention.log"
[ -f "$O/bench_attention.log" ] && sed -n '/^shape  /,$p' "$O/bench_attention.log"
[ -f "$O/ncu_attention.txt" ] && grep -E "^  lg_attn|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Theoretical Occupancy|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Stall" "$O/ncu_attention.txt" | head -60
exit 0
