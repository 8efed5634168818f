#!/usr/bin/env bash
# Builds and runs the attention emulator (attn_emu.cpp) for bf16 and fp16 against a build's libloragen.a
# (for the CPU reference).  usage: bash tests/tools/attn_emu/run.sh [BUILD_DIR] [SEED] [quick]
set -euo pipefail
cd "$(dirname "$0")/../../.."
B=${1:-build}
SEED=${2:-12345}
OUT=${EMU_OUT:-/tmp/lg-attn-emu}
mkdir -p "$OUT"
for dt in 0 1; do
  g++ -std=c++17 -O2 -g -Wall -Wno-unknown-pragmas -Wno-unused-function -fno-strict-aliasing -DLG_DTYPE=$dt \
    -Itests/tools/attn_emu -Itemplates -Iruntime/include \
    tests/tools/attn_emu/attn_emu.cpp "$B/libloragen.a" -lm -ldl -lpthread -o "$OUT/attn_emu_$dt"
done
rc=0
for dt in 0 1; do "$OUT/attn_emu_$dt" "$SEED" ${3:-} || rc=1; done
exit $rc
