#!/usr/bin/env bash
# bench_train_multi.sh: issue 13's one-GPU benchmark. Four LoRA adapters (r = 16, alpha = 32, p = 0.1, all seven
# projections) on one Llama-3.1-8B-shaped model, each on its own length trace (xsum, cnn, wikisum, mix from
# bench/gen_traces, packed), trained two ways with the same steps and data:
#   together:   one job with the four adapters: the scheduler packs their samples into shared microbatches
#               (FusedMultiLoRA), each adapter steps when its global batch completes;
#   one by one: four jobs of one adapter each, run one after another (the single-adapter path).
# Rates are the trainer's "after the first step" figures (model load and first step excluded); one after
# another is the four runs' tokens over their summed seconds. Target: together >= 1.15x one by one.
#   usage: bash bench/bench_train_multi.sh BUILD_DIR [OUT_DIR] [STEPS] [GLOBAL_BATCH]
#   env:   SPEC (default specs/llama-3.1-8b.lua; the model is written once into OUT_DIR/model, the directory
#          bench_train_8b.sh uses), BACKEND (cuda), CAPACITY (8192), DET (false), SAMPLES per adapter (600);
#          STAGES and DP (default 1 and 1): the together job over STAGES x DP GPUs (--gpus), with its measured
#          pipeline bubble beside the simulator's (issue 13's multi-GPU run; the one-by-one runs stay on one GPU)
#   e.g.   bash bench/bench_train_multi.sh build-gpu /tmp/b8 6 16
#          SPEC=specs/tiny.lua BACKEND=cpu CAPACITY=1024 bash bench/bench_train_multi.sh build /tmp/bm 2 4
set -euo pipefail
B=$1 O=${2:-${OUT:-out}/bench8b} STEPS=${3:-6} GB=${4:-16}
SPEC=${SPEC:-specs/llama-3.1-8b.lua} BACKEND=${BACKEND:-cuda} CAP=${CAPACITY:-8192} DET=${DET:-false}
N=${SAMPLES:-600} STAGES=${STAGES:-1} DP=${DP:-1}
mkdir -p "$O"
[ -f "$O/model/config.json" ] || "$B/loragen" init-model "$SPEC" "$O/model" --seed 1
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$O/model/config.json")
traces="xsum cnn wikisum mix"
for t in $traces; do
  "$B/gen_traces" "$t" "$N" --seed 11 --out "$O/multi-$t.trace"
  # cut to the capacity (the tiny model's smoke run has a small one)
  awk -v c="$CAP" '{ print ($1 > c ? c : $1) }' "$O/multi-$t.trace" > "$O/multi-$t.cut"
  python3 tools/toy_dataset.py --lengths "$O/multi-$t.cut" --seed 7 --modulus $(( vocab < 30000 ? vocab : 30000 )) \
    > "$O/multi-$t.jsonl"
done

adapter() { # TRACE SEED
  echo "    { name = \"$1\", dataset = \"multi-$1.jsonl\", global_batch = $GB, rank = 16, alpha = 32, dropout = 0.1,"
  echo "      lr = 2e-4, steps = $STEPS, seed = $2 },"
}
job() { # NAME STAGES DP TRACES...
  local name=$1 st=$2 dp=$3; shift 3
  {
    echo "return {"
    echo "  name = \"$name\", model = { path = \"model\" }, batching = { capacity = $CAP },"
    echo "  pipeline = { stages = $st, data_parallel = $dp },"
    echo "  training = { backend = \"$BACKEND\", output = \"out-$name\", log_every = 1, deterministic = $DET },"
    echo "  adapters = {"
    local s=1
    for t in "$@"; do adapter "$t" "$s"; s=$((s + 1)); done
    echo "  },"
    echo "}"
  } > "$O/$name.lua"
}
job multi-together "$STAGES" "$DP" $traces
for t in $traces; do job "multi-$t" 1 1 "$t"; done

rate() { # LOG -> "tokens seconds"
  sed -n 's/.*after the first step \([0-9]*\) tokens in \([0-9.]*\) s.*/\1 \2/p' "$1" | tail -1
}
run() { # NAME [loragen train options]
  local name=$1; shift
  "$B/loragen" train "$O/$name.lua" "$@" > "$O/$name.log" 2>&1 || { tail -n 20 "$O/$name.log"; return 1; }
  set -- "$name"
  local r; r=$(rate "$O/$1.log")
  [ -n "$r" ] || { echo "$1: no rate in $O/$1.log"; tail -n 5 "$O/$1.log"; return 1; }
  echo "$1 $r" >> "$O/multi.rates"
}
rm -f "$O/multi.rates"
if [ $(( STAGES * DP )) -gt 1 ]; then
  run multi-together "$([ "$BACKEND" = cpu ] && echo --procs || echo --gpus)" $(( STAGES * DP ))
  grep -E "pipeline, epoch|peak" "$O/multi-together.log" || true
else
  run multi-together
fi
for t in $traces; do run "multi-$t"; done

python3 - "$O/multi.rates" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
together = next(r for r in rows if r[0] == "multi-together")
alone = [r for r in rows if r[0] != "multi-together"]
print("| run | tokens after the first step | seconds | tokens/s |\n|---|---|---|---|")
for name, tok, sec in rows:
    print(f"| {name} | {int(tok):,} | {float(sec):.2f} | {int(tok) / float(sec):,.0f} |")
t_rate = int(together[1]) / float(together[2])
a_rate = sum(int(r[1]) for r in alone) / sum(float(r[2]) for r in alone)
print(f"\ntogether {t_rate:,.0f} tokens/s, one after another {a_rate:,.0f} tokens/s: "
      f"{t_rate / a_rate:.3f}x (target >= 1.15x)")
PY
