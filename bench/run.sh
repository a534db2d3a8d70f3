#!/bin/sh
# bench/run.sh - benchmark clamsmtpd against its ceilings and clamsmtp 1.10
#
# Usage: bench/run.sh            full run (3 runs per cell, ~20 min on 2 cores)
#        QUICK=1 bench/run.sh    a small subset, 1 run (~2 min)
#
# Environment:
#   QUICK=1        4 KiB and 2 MiB, 1 and 16 sessions, 1 run
#   RUNS=N         runs per cell (default 3; QUICK: 1)
#   BIG=1          also 20 MiB x 64 sessions x many messages per connection
#   CLAMSMTPD=path the binary to measure (default: build ./clamsmtpd with make)
#   NO_BUILD=1     do not run make
#   OUT=path       the markdown table (default bench/RESULTS.md; QUICK:
#                  bench/RESULTS-quick.md)
#   BENCH_TMP=dir  where the run's files go (default: a new dir under /tmp);
#                  kept when KEEP=1
#   MAX_SECONDS=N  start no new run after N seconds (default 1800; QUICK 300)
#   QUIET_BUDGET=N before a run, wait (at most 5 s) while other programs keep
#                  more than 30% of a core busy; at most N s in all (default
#                  60; QUICK 20)
#
# Needs (Debian 12): postfix (smtp-source, smtp-sink; the service is never
# started), clamav-daemon (clamd), clamsmtp (Debian's 1.10), systemd
# (systemd-socket-activate), python3, cc. Everything runs on 127.0.0.1 and is
# stopped by pid when the script ends.

set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
me=bench/run.sh

need() {
	command -v "$1" >/dev/null 2>&1 || [ -x "$1" ] || {
		echo "$me: $1 is missing (apt-get install $2)" >&2
		exit 1
	}
}
need smtp-source postfix
need smtp-sink postfix
need /usr/sbin/clamd clamav-daemon
need /usr/sbin/clamsmtpd clamsmtp
need systemd-socket-activate systemd
need python3 python3
need cc gcc

QUICK=${QUICK:-0}
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1}
	OUT=${OUT:-$here/RESULTS-quick.md}
	MAX_SECONDS=${MAX_SECONDS:-300}
	QUIET_BUDGET=${QUIET_BUDGET:-20}
	quick=--quick
else
	RUNS=${RUNS:-3}
	OUT=${OUT:-$here/RESULTS.md}
	MAX_SECONDS=${MAX_SECONDS:-1800}
	QUIET_BUDGET=${QUIET_BUDGET:-60}
	quick=
fi
big=
[ "${BIG:-0}" = 1 ] && big=--big

work=${BENCH_TMP:-}
if [ -z "$work" ]; then
	work=$(mktemp -d /tmp/clamsmtpd-bench.XXXXXX)
fi
mkdir -p "$work/tools"
cleanup() {
	if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_TMP:-}" ]; then
		rm -rf "$work"
	else
		echo "$me: files kept in $work" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The helpers, built into the run's directory (nothing is written in bench/).
cc -O2 -Wall -Wextra -std=c11 -pthread -o "$work/tools/clamd-load" "$here/clamd-load.c"
cc -O2 -Wall -Wextra -std=c11 -o "$work/tools/procmon" "$here/procmon.c"

# The binary under test, copied so that a rebuild during the run changes nothing.
if [ -n "${CLAMSMTPD:-}" ]; then
	src=$CLAMSMTPD
	desc=$CLAMSMTPD
else
	if [ "${NO_BUILD:-0}" != 1 ]; then
		make -C "$top" clamsmtpd >&2
	fi
	src=$top/clamsmtpd
	desc="./clamsmtpd, $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
fi
cp "$src" "$work/tools/clamsmtpd"

python3 "$here/bench.py" $quick $big --runs "$RUNS" --workdir "$work" \
	--tools "$work/tools" --clamsmtpd "$work/tools/clamsmtpd" \
	--clamsmtpd-desc "$desc" --out "$OUT" --max-seconds "$MAX_SECONDS" \
	--quiet-budget "$QUIET_BUDGET" >/dev/null
echo "$me: results in $OUT" >&2
