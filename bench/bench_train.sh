#!/usr/bin/env bash
# bench_train.sh: end-to-end training throughput of `loragen train` on the GPU, on a model written by
# `loragen init-model` from a spec (random weights) and a synthetic dataset of mixed lengths. Trains twice (the
# first run fills the JIT cache) and prints the second run's summary (tokens/s) and the peak GPU memory seen by
# nvidia-smi.
#   usage: bash bench/bench_train.sh BUILD_DIR SPEC LAYERS STEPS [OUT_DIR]
#   e.g.   bash bench/bench_train.sh build-gpu specs/llama-3.1-8b.lua 2 4     (8B layer shapes, 2 layers)
set -euo pipefail
B=$1 SPEC=$2 LAYERS=$3 STEPS=$4 O=${5:-${OUT:-out}/bench_train}
mkdir -p "$O"
sed "s/num_hidden_layers = [0-9]*/num_hidden_layers = $LAYERS/" "$SPEC" > "$O/spec.lua"
"$B/loragen" init-model "$O/spec.lua" "$O/model" --seed 1
python3 tools/toy_dataset.py --samples 400 --seed 3 --modulus 30000 --min-len 64 --max-len 4096 > "$O/train.jsonl"
cat > "$O/job.lua" <<JOB
return {
  name = "bench-train",
  model = { path = "model" },
  batching = { capacity = 8192 },
  training = { backend = "cuda", output = "out", log_every = 1 },
  adapters = { { name = "a", dataset = "train.jsonl", global_batch = 16, rank = 16, alpha = 32, dropout = 0.1,
                 lr = 2e-4, steps = $STEPS, seed = 1 } },
}
JOB
( while sleep 0.5; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$O/mem.txt" &
mon=$!
# the first run compiles every kernel (NVRTC, cached on disk); the second, with a warm cache, is the measurement
"$B/loragen" train "$O/job.lua" --quiet | tail -n 1 | sed 's/^/cold cache: /'
"$B/loragen" train "$O/job.lua" | tail -n 8
kill $mon 2>/dev/null || true
echo "peak GPU memory (nvidia-smi): $(sort -n "$O/mem.txt" | tail -1) MiB"
