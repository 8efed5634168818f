#!/usr/bin/env bash
# Builds the fake libcuda.so.1 (fake_cuda.cpp + fake_kern.cpp for bf16 and fp16) into $EMU_OUT/fake and runs
# a command with it:  bash tests/tools/attn_emu/fake.sh build/test_attention_gpu
# (LORAGEN_ATTN_TEST_MAX_TOKENS keeps the GPU suite to cases the emulator finishes in minutes.)
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${EMU_OUT:-/tmp/lg-attn-emu}/fake
mkdir -p "$OUT"
F="-std=c++17 -O2 -fPIC -Wno-unknown-pragmas -Wno-unused-function -fno-strict-aliasing -Wno-array-bounds -Itests/tools/attn_emu -Itemplates"
if [ ! -f "$OUT/libcuda.so.1" ] || [ -n "$(find templates/attn tests/tools/attn_emu templates/common/lg_attn_args.h -newer "$OUT/libcuda.so.1")" ]; then
  g++ $F -DLG_DTYPE=0 -DEMU_NS=emu_bf16 -c tests/tools/attn_emu/fake_kern.cpp -o "$OUT/k0.o" &
  g++ $F -DLG_DTYPE=1 -DEMU_NS=emu_fp16 -c tests/tools/attn_emu/fake_kern.cpp -o "$OUT/k1.o" &
  g++ $F -I/usr/local/cuda/include -c tests/tools/attn_emu/fake_cuda.cpp -o "$OUT/d.o"
  wait
  g++ -shared -Wl,-soname,libcuda.so.1 -o "$OUT/libcuda.so.1" "$OUT/d.o" "$OUT/k0.o" "$OUT/k1.o"
fi
[ $# -gt 0 ] && LD_PRELOAD="$OUT/libcuda.so.1" LD_LIBRARY_PATH="$OUT${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
