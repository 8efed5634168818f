#!/usr/bin/env bash
# run_train_gpu.sh: the training side's GPU checks and benchmarks, in rounds that each fit one device call (10
# minutes), from a build made on the development machine (Release, LORAGEN_STATIC_DEPS=ON). Logs under $OUT (or
# out/train-gpu); each round ends with a short table.
#   usage: bash bench/run_train_gpu.sh BUILD_DIR ROUND [MODEL_DIR]
#   ROUND  tests: the suites the trainer's CUDA path rests on (FusedMultiLoRA with its split GEMMs and shared
#                 workspace, the decoder ops, both attention backends, the trainer against the CPU backend, a
#                 short tune with online tuning), ~7 min
#          train: `loragen tune --families mlora` into a database, then bench_train_8b.sh (fixed and mix, fast
#                 attention backward) with it, a capacity = "auto" run, and bench_layer.sh (LoRA's cost in one
#                 layer), ~8 min with the 8B model already written in MODEL_DIR's parent
#          multi: bench_train_multi.sh (4 adapters together against one after another) and bench_gemm against
#                 torch.matmul, ~6 min
#   MODEL_DIR: where the 8B benchmarks keep their models (default /tmp/b8; written on first use, ~50 s)
set -uo pipefail
cd "$(dirname "$0")/.."
B=${1:?usage: run_train_gpu.sh BUILD_DIR tests|train|multi [MODEL_DIR]} R=${2:?round: tests, train or multi}
M=${3:-/tmp/b8}
O=${OUT:-out/train-gpu}
mkdir -p "$O" "$M"
export LORAGEN_CACHE_DIR=${LORAGEN_CACHE_DIR:-/tmp/lgc}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$O/gpu.txt"
summary=""
t0=$(date +%s)
step() { # NAME COMMAND...: runs it with its log in $O/NAME.log, adds "NAME: rc (seconds)" to the summary
  local name=$1 t=$(date +%s); shift
  "$@" > "$O/$name.log" 2>&1; local rc=$?
  summary+="$(printf '%-28s rc=%-3s %4ss' "$name" "$rc" "$(( $(date +%s) - t ))")\n"
  return $rc
}
case "$R" in
tests)
  for t in test_mlora_gpu test_mlora_gpu_merged test_decoder_ops_gpu_norm test_decoder_ops_gpu_rope \
           test_decoder_ops_gpu_swiglu test_decoder_ops_gpu_head test_decoder_ops_gpu_adamw test_decoder_ops_gpu_calls \
           test_attention_gpu test_attention_gpu_calls test_attention_cudnn_gpu test_train_gpu; do
    step "$t" "$B/$t"
  done
  LORAGEN_TUNE_TEST_CANDS=3 step test_tune_gpu "$B/test_tune_gpu"
  step peft_grad_parity python3 tests/python/test_peft_grad_parity.py "$B" --backend cuda
  ;;
train)
  step tune_mlora "$B/loragen" tune specs/llama-3.1-8b.lua --families mlora --tokens 8192 --max-candidates 8 \
    --rounds 5 --out "$O/tune-mlora.json"
  grep -E "^\| |speed|wrote" "$O/tune_mlora.log" | tail -12
  export LORAGEN_TUNE_DB=$O/tune-mlora.json
  DET=false step train_8b bash bench/bench_train_8b.sh "$B" "$M" 10 5
  # capacity = "auto" on the 8B model: what it picks from the free memory (the mix's 16-sample batches hold more
  # than 8192 tokens, so memory, not the batch, bounds it) and the peak it reaches (2 steps)
  sed -e 's/capacity = 8192/capacity = "auto"/' -e 's/steps = [0-9]*/steps = 2/' -e 's/out-mix/out-auto/' \
    "$M/mix.lua" > "$M/auto.lua"
  ( while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$O/auto.mem" &
  mon=$!
  step capacity_auto "$B/loragen" train "$M/auto.lua"
  kill $mon 2> /dev/null
  echo "capacity auto: peak GPU memory $(sort -n "$O/auto.mem" | tail -1) MiB"
  grep -E "capacity \"auto\"|arena|^done" "$O/capacity_auto.log"
  step bench_layer bash bench/bench_layer.sh "$B" "$M/layer" specs/llama-3.1-8b.lua 2 6 --rounds 10
  tail -8 "$O/bench_layer.log"
  # the same with every layer on strategy (b) (q/k/v and gate/up run (a) by default): what (a) saves
  LORAGEN_MLORA_STRATEGY=b step bench_layer_b bash bench/bench_layer.sh "$B" "$M/layer" specs/llama-3.1-8b.lua 2 6 \
    --rounds 10
  tail -4 "$O/bench_layer_b.log"
  ;;
multi)
  step train_multi bash bench/bench_train_multi.sh "$B" "$M" 6 16
  tail -9 "$O/train_multi.log"
  step gemm_torch python3 bench/gemm_torch.py --csv "$O/gemm_torch.csv"
  step bench_gemm "$B/bench_gemm" --torch-csv "$O/gemm_torch.csv" --csv "$O/bench_gemm.csv"
  sed -n '/^| layer/,$p' "$O/bench_gemm.log"
  ;;
*)
  echo "run_train_gpu.sh: round '$R': expected tests, train or multi" >&2
  exit 2
  ;;
esac
echo "================ $R: $(( $(date +%s) - t0 )) s ================"
for f in "$O"/test_*.log; do
  [ -f "$f" ] && printf '%-28s %s\n' "$(basename "$f" .log)" "$(grep -E '^[0-9]+%: Checks' "$f" | tail -1)"
done
[ -f "$O/train_8b.log" ] && grep -E "^==|tokens/s|MFU|peak" "$O/train_8b.log"
printf "%b" "$summary"
