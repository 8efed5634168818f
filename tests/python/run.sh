#!/usr/bin/env bash
# run.sh: the Python binding's tests (tests/python): the CPU tier (library search, struct layouts, patching
# rules, autograd wiring through the reference backend) and, on a GPU, the kernels inside PEFT models.
# Uses pytest where installed, else tests/python/minitest.py (the GPU machine may have no pytest).
#   usage: bash tests/python/run.sh [BUILD_DIR] [--gpu] [-k SUBSTRING]     (--gpu: the GPU tier only)
#   exit: 0 all passed; 1 a failure; 77 skipped (no torch/transformers/peft, or no GPU for the GPU tier)
set -uo pipefail
cd "$(dirname "$0")/../.."
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  B=$1; shift
  case "$B" in /*) ;; *) B="$PWD/$B" ;; esac
  export LORAGEN_LIBRARY="$B/libloragen.so"
fi
FILES="tests/python/test_binding_cpu.py tests/python/test_peft_gpu.py"
if [ "${1:-}" = "--gpu" ]; then FILES="tests/python/test_peft_gpu.py"; shift; fi
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/python:$PWD/tests/python${PYTHONPATH:+:$PYTHONPATH}"
export LORAGEN_CACHE_DIR=${LORAGEN_CACHE_DIR:-/tmp/loragen-jit-cache}
if ! missing=$($PY -c "import torch, transformers, peft" 2>&1); then
  echo "skipped: torch, transformers and peft are needed (${missing##*$'\n'})"
  exit 77
fi
gpu=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
$PY -c "import torch, transformers, peft, loragen; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| gpu', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none', '| libloragen', loragen.library_path())"
if $PY -c "import pytest" 2>/dev/null; then
  $PY -m pytest -q -rs -s -p no:cacheprovider $FILES "$@"
else
  $PY tests/python/minitest.py "$@" $FILES
fi
rc=$?
[ $rc -ne 0 ] && exit 1
[ "$gpu" = 1 ] || { echo "no GPU: the GPU tier was skipped"; exit 77; }
exit 0
