#!/usr/bin/env bash
# run.sh: builds and runs one libFuzzer target of tests/fuzz/ (fuzz_<TARGET>.c) with clang, ASan and UBSan.
#
#   tests/fuzz/run.sh TARGET SECONDS [libFuzzer options...]   fuzz for SECONDS of wall time
#   tests/fuzz/run.sh TARGET --runs N                          the suite's smoke run: the seeds, then N inputs
#   tests/fuzz/run.sh TARGET --build                           build only
#   tests/fuzz/run.sh --list                                   the targets
#
# The seed corpus (tests/fuzz/corpus/TARGET, small real inputs and every finding kept as a regression input)
# is only read; what a timed run discovers goes to $BUILD/corpus/TARGET and findings (crash-*, leak-*,
# timeout-*, oom-*) to $BUILD/findings/TARGET, where BUILD is $LORAGEN_FUZZ_BUILD or build-fuzz. A timed
# run's last lines give the executions and the CPU seconds it used. Exit 77 when clang or libFuzzer is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BUILD=${LORAGEN_FUZZ_BUILD:-$ROOT/build-fuzz}
CC=${LORAGEN_FUZZ_CC:-clang}

targets() { for f in "$HERE"/fuzz_*.c; do b=$(basename "$f" .c); [ "$b" = fuzz_util ] || echo "${b#fuzz_}"; done; }
if [ "${1:-}" = --list ]; then targets; exit 0; fi
if [ $# -lt 2 ]; then sed -n '2,12p' "$0" >&2; exit 2; fi
TARGET=$1; shift
[ -f "$HERE/fuzz_$TARGET.c" ] || { echo "run.sh: no target '$TARGET' (have: $(targets | tr '\n' ' '))" >&2; exit 2; }

if ! command -v "$CC" >/dev/null 2>&1; then echo "run.sh: $CC not found: skipped" >&2; exit 77; fi
mkdir -p "$BUILD"
probe=$BUILD/probe
if [ ! -x "$probe" ]; then
  printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' > "$probe.c"
  if ! "$CC" -fsanitize=fuzzer,address,undefined "$probe.c" -o "$probe" 2>/dev/null; then
    echo "run.sh: $CC cannot link libFuzzer (install clang and libclang-rt-14-dev): skipped" >&2; exit 77
  fi
fi

# One build at a time (ctest runs the targets in parallel).
exec 9>"$BUILD/.lock"
flock 9
make -s -f "$HERE/fuzz.mk" ROOT="$ROOT" OUT="$BUILD" CC="$CC" -j"$(nproc)" "$BUILD/fuzz_$TARGET"
flock -u 9

BIN=$BUILD/fuzz_$TARGET
SEEDS=$HERE/corpus/$TARGET
WORK=$BUILD/corpus/$TARGET
FIND=$BUILD/findings/$TARGET
mkdir -p "$WORK" "$FIND" "$SEEDS"
DICT=()
[ -f "$HERE/$TARGET.dict" ] && DICT=(-dict="$HERE/$TARGET.dict")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
COMMON=(-rss_limit_mb=2048 -timeout=25 -max_len=65536 -print_final_stats=1 -artifact_prefix="$FIND/")

case "$1" in
  --build) exit 0 ;;
  --runs)
    # The suite's run: every seed, then N mutated inputs, in a scratch corpus so the run leaves nothing.
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    "$BIN" "${COMMON[@]}" "${DICT[@]}" -runs="$2" -seed=1 "$scratch" "$SEEDS"
    ;;
  *)
    secs=$1; shift
    /usr/bin/time -f "run.sh: $TARGET: %e s wall, %U s user, %S s system" \
      "$BIN" "${COMMON[@]}" "${DICT[@]}" -max_total_time="$secs" "$@" "$WORK" "$SEEDS"
    ;;
esac
