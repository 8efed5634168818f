#!/usr/bin/env bash
# bench_layer.sh: issue 11's "LoRA overhead inside one decoder layer": writes two random models of the spec's
# dimensions that differ only in their layer count (`loragen init-model --layers`), then runs bench_layer on
# them (the same microbatch with LoRA on all seven projections and without any; per-layer times from the
# difference of the two models, so embedding, LM head and loss cancel).
#   usage: bash bench/bench_layer.sh BUILD_DIR [OUT_DIR] [SPEC] [LAYERS_A] [LAYERS_B] [bench_layer options...]
#   e.g.   bash bench/bench_layer.sh build-gpu /tmp/bl specs/llama-3.1-8b.lua 2 6 --rounds 10
#          bash bench/bench_layer.sh build /tmp/bl specs/tiny.lua 1 3 --backend cpu --tokens 256 --rounds 2
set -euo pipefail
B=$1 O=${2:-${OUT:-out}/bench-layer} SPEC=${3:-specs/llama-3.1-8b.lua} LA=${4:-2} LB=${5:-6}
shift $(( $# < 5 ? $# : 5 ))
mkdir -p "$O"
name=$(basename "$SPEC" .lua)
for l in "$LA" "$LB"; do
  d=$O/$name-$l
  [ -f "$d/config.json" ] || "$B/loragen" init-model "$SPEC" "$d" --layers "$l" --seed 1 > /dev/null
done
"$B/bench_layer" "$O/$name-$LA" "$O/$name-$LB" "$@"
