#!/usr/bin/env bash
# Clocks moved into the future, for `make test-future` (docs/testing.md, "No time bomb").
#
#   future-clock.sh --offset DAYS   print the offset (seconds) that puts the clock DAYS days
#                                   after the commit (SOURCE_DATE_EPOCH); if that moment has
#                                   passed already, DAYS days after now
#   future-clock.sh --check         show that a process under the offset sees the moved clock
#   future-clock.sh PROGRAM ARGS    run PROGRAM under libfaketime (cargo's test runner)
#
# Every process gets the same offset (PHASE_FUTURE_OFFSET, computed once by make), so the
# test binary, the `phase` processes it starts and the guests it boots (the harness passes
# its own clock as `-rtc base=`) all agree on the time. Monotonic clocks are not moved
# (DONT_FAKE_MONOTONIC=1): every timeout still measures real time.
set -euo pipefail

case "${1:-}" in
--offset)
  days=${2:?--offset DAYS}
  now=$(date +%s)
  commit=${SOURCE_DATE_EPOCH:-$now}
  target=$((commit + days * 86400))
  if [ "$target" -le "$now" ]; then
    echo "future-clock: the commit is more than $days days old; moving $days days from now" >&2
    target=$((now + days * 86400))
  fi
  echo $((target - now))
  ;;
--check)
  off=${PHASE_FUTURE_OFFSET:?set PHASE_FUTURE_OFFSET (make test-future does)}
  real=$(date +%s)
  moved=$("$0" date +%s)
  if [ $((moved - real)) -lt $((off - 60)) ]; then
    echo "future-clock: libfaketime did not move the clock (is faketime installed? scripts/setup.sh)" >&2
    exit 1
  fi
  echo "future-clock: every clock at $("$0" date -u '+%F %T') UTC (offset ${off} s; commit $(date -u -d "@${SOURCE_DATE_EPOCH:-$real}" '+%F %T') UTC)"
  ;;
*)
  off=${PHASE_FUTURE_OFFSET:?set PHASE_FUTURE_OFFSET (make test-future does)}
  export DONT_FAKE_MONOTONIC=1
  exec faketime -m -f "+${off}" "$@"
  ;;
esac
