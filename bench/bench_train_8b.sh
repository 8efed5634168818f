#!/usr/bin/env bash
# bench_train_8b.sh: issue 11's benchmark. `loragen train` on one GPU on a Llama-3.1-8B-shaped model (random
# weights, 32 layers, written in Hugging Face format by `loragen init-model`): all seven projections, r = 16,
# alpha = 32, p = 0.1, microbatches of 8192 tokens, two datasets:
#   fixed: samples of exactly 2048 tokens, 4 per global batch (one 4 x 2048 microbatch per step);
#   mix:   lengths of the `mix` trace (bench/gen_traces: xsum, cnn and wikisum fits, 16..4096 tokens), packed,
#          global batch 16 samples.
# Kernels are compiled first on a 2-layer model of the same shapes (the JIT cache is then warm); each measured
# run prints the rate after its first step, the time per op family (--profile) and the peak GPU memory
# (nvidia-smi, polled every 0.2 s). MFU counts 4 x params x tokens (frozen weights: forward and dX) plus
# attention (causal: 4 x len^2 x d x Hq / 2 per sample and layer forward, backward 2.5x), over 989 TFLOP/s.
#   usage: bash bench/bench_train_8b.sh BUILD_DIR [OUT_DIR] [STEPS_FIXED] [STEPS_MIX] [CKPT_LAYERS]
#   env: RUNS="fixed mix" (which measured runs), DET=true|false (training.deterministic; default true)
set -euo pipefail
B=$1 O=${2:-${OUT:-out}/bench8b} SF=${3:-12} SM=${4:-6} CK=${5:-0}
RUNS=${RUNS:-fixed mix} DET=${DET:-true}
SPEC=specs/llama-3.1-8b.lua
mkdir -p "$O"
t0=$(date +%s)
sed "s/num_hidden_layers = [0-9]*/num_hidden_layers = 2/" "$SPEC" > "$O/spec2.lua"
[ -f "$O/model2/config.json" ] || "$B/loragen" init-model "$O/spec2.lua" "$O/model2" --seed 1 > /dev/null
[ -f "$O/model/config.json" ] || "$B/loragen" init-model "$SPEC" "$O/model" --seed 1
echo "models written in $(( $(date +%s) - t0 )) s"
"$B/gen_traces" mix 2000 --seed 5 --out "$O/mix.trace"
python3 tools/toy_dataset.py --lengths "$O/mix.trace" --seed 3 --modulus 30000 > "$O/mix.jsonl"
python3 tools/toy_dataset.py --samples $(( 4 * (SF + 1) )) --seed 4 --modulus 30000 --min-len 2048 --max-len 2048 \
  > "$O/fixed.jsonl"

job() { # NAME MODEL DATASET GLOBAL_BATCH STEPS
  cat > "$O/$1.lua" <<JOB
return {
  name = "$1",
  model = { path = "$2" },
  batching = { capacity = 8192 },
  training = { backend = "cuda", output = "out-$1", log_every = 1, checkpoint_layers = $CK, deterministic = $DET },
  adapters = { { name = "a", dataset = "$3", global_batch = $4, rank = 16, alpha = 32, dropout = 0.1,
                 lr = 2e-4, steps = $5, seed = 1 } },
}
JOB
}
job warm model2 fixed.jsonl 4 2
job fixed model fixed.jsonl 4 "$SF"
job mix model mix.jsonl 16 "$SM"

echo "checkpoint_layers = $CK, deterministic = $DET"
t=$(date +%s)
"$B/loragen" train "$O/warm.lua" --quiet | tail -n 1 | sed 's/^/warm-up (2 layers, compiles): /'
echo "warm-up took $(( $(date +%s) - t )) s"

run() { # NAME
  ( while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; done ) > "$O/$1.mem" &
  local mon=$! t=$(date +%s)
  "$B/loragen" train "$O/$1.lua" --profile > "$O/$1.log" 2>&1 || { kill $mon; tail -n 20 "$O/$1.log"; return 1; }
  kill $mon 2> /dev/null || true
  echo "== $1: $(( $(date +%s) - t )) s wall (model load included); peak GPU memory $(sort -n "$O/$1.mem" | tail -1) MiB"
  grep -E "arena|^done" "$O/$1.log"
  grep "^profile:" "$O/$1.log" | sed 's/^profile: //'
}
for r in $RUNS; do run "$r"; done
[[ " $RUNS " == *" fixed "* ]] || exit 0

# MFU of the fixed run: 8.03e9 params (the 8B spec), 4 samples of 2048 per 8192 tokens
python3 - "$O/fixed.log" <<'PY'
import re, sys
line = [l for l in open(sys.argv[1]) if l.startswith("done:")][-1]
m = re.search(r"after the first step (\d+) tokens in ([0-9.]+) s", line)
tok, sec = int(m.group(1)), float(m.group(2))
params, L, d, hq, seq = 8.03e9, 32, 128, 32, 2048
attn_fwd = 4 * seq * seq * d * hq / 2 * L          # per sample, all layers
flops_per_tok = 4 * params + 3.5 * attn_fwd / seq
print(f"fixed 4x2048: {tok / sec:,.0f} tokens/s, step {8192 / (tok / sec) * 1e3:.1f} ms, "
      f"MFU {flops_per_tok * tok / sec / 989e12 * 100:.1f}%")
PY
