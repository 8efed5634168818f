#!/usr/bin/env bash
# campaign.sh: long fuzzing runs, one target at a time at the lowest priority, each until it has used
# CPU_SECONDS of CPU time in all (user + system, as /usr/bin/time measures the fuzzer; the total so far is kept
# in $BUILD/cpu/TARGET, so a second call tops a target up), in segments of 10 minutes so a rebuilt library is
# picked up between them. A segment that leaves a finding stops that target (fix it, keep the input under
# tests/fuzz/corpus/TARGET/, run again). One line per segment goes to $BUILD/campaign.log.
#   tests/fuzz/campaign.sh CPU_SECONDS TARGET...
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=${LORAGEN_FUZZ_BUILD:-$(cd "$HERE/../.." && pwd)/build-fuzz}
LOG=$BUILD/campaign.log
want=$1; shift
mkdir -p "$BUILD/cpu"
for t in "$@"; do
  used=$(cat "$BUILD/cpu/$t" 2>/dev/null || echo 0)
  while awk -v u="$used" -v w="$want" 'BEGIN { exit !(u < w) }'; do
    out=$(nice -n 19 "$HERE/run.sh" "$t" 600 2>&1 | tail -40)
    line=$(grep -E "^run.sh: $t: .* s wall" <<<"$out" | tail -1)
    if [ -z "$line" ]; then
      echo "$(date -Is) $t: no timing (build failed?): $(tail -3 <<<"$out" | tr '\n' ' ')" >> "$LOG"
      sleep 60
      continue
    fi
    cpu=$(awk '{ for (i = 1; i <= NF; i++) if ($i == "user," || $i == "system") s += $(i - 2) } END { print s }' <<<"$line")
    used=$(awk -v a="$used" -v b="$cpu" 'BEGIN { print a + b }')
    echo "$used" > "$BUILD/cpu/$t"
    execs=$(grep -oE "stat::number_of_executed_units: [0-9]+" <<<"$out" | awk '{print $2}')
    echo "$(date -Is) $t: segment ${line#run.sh: $t: }; execs ${execs:-?}; cpu total ${used} s" >> "$LOG"
    if [ -n "$(ls -A "$BUILD/findings/$t" 2>/dev/null)" ]; then
      echo "$(date -Is) $t: FINDING: $(ls "$BUILD/findings/$t" | tr '\n' ' ')" >> "$LOG"
      break
    fi
  done
  echo "$(date -Is) $t: done, ${used} CPU seconds" >> "$LOG"
done
