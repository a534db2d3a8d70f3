#!/bin/sh
# bench/peers.sh - clamsmtpd beside clamav-milter and amavisd-new, behind one
# private Postfix (see bench/PEERS.md for the last full run)
#
# Usage: bench/peers.sh            full run: 3 runs per cell (~12 min on 2 cores,
#                                  bounded by MAX_SECONDS)
#        QUICK=1 bench/peers.sh    tiny runs, 1 round (~3 min): for trying it out
#
# Environment:
#   QUICK=1        few messages per run, 1 run (writes $BENCH_TMP-only results
#                  unless OUT/SVG are given)
#   RUNS=N         runs per cell (default 3; QUICK: 1)
#   SYSTEMS=a,b    a subset of postfix,milter,amavis,after,before
#   CELLS=SxN,...  only these cells, e.g. 4096x16,2097152x16 (bytes x sessions)
#   MILTER_SOCKET=inet  clamav-milter on 127.0.0.1:PORT instead of a unix
#                  socket (Debian's default)
#   CLAMSMTPD=path the binary to measure (default: build ./clamsmtpd with make);
#                  CLAMSMTPD_DESC=text says what it is in the report
#   NO_BUILD=1     do not run make
#   OUT=path       the report (default bench/PEERS.md; QUICK: in the run's dir)
#   SVG=path       the chart (default bench/peers.svg; QUICK: in the run's dir)
#   BENCH_TMP=dir  where the run's files go (default: a new dir under /tmp);
#                  kept when KEEP=1 (results.json has every run)
#   MAX_SECONDS=N  start no new run after N seconds (default 1500)
#   QUIET_BUDGET=N before a run, wait (at most 5 s) while other programs keep
#                  more than 30% of a core busy; at most N s in all (default 60)
#   PERF=1         run clamsmtpd under perf record -g (cpu-clock) and leave
#                  perf-after.txt and perf-before.txt (by symbol) in the run's
#                  dir; its CPU figures then include perf's own
#
# As root it installs what is missing from Debian's archive, with
# --no-install-recommends and no service allowed to start (policy-rc.d says
# 101): postfix, clamav-daemon, clamav-milter, amavisd-new and the perl
# modules it needs, gnuplot-nox. No packaged service is used: every Postfix,
# clamd, clamav-milter and amavisd here is a private instance on 127.0.0.1
# with a generated config, stopped by its pid when the script ends.

set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
me=bench/peers.sh

# Every package the peers need, perl modules too (amavisd-new's Depends, named
# so that a machine that installs no Recommends has them all).
pkgs="postfix clamav-daemon clamav-milter amavisd-new gnuplot-nox python3 gcc make
file pax libarchive-zip-perl libberkeleydb-perl libconvert-tnef-perl
libconvert-uulib-perl libio-stringy-perl libmail-dkim-perl libmailtools-perl
libmime-tools-perl libnet-libidn-perl libnet-server-perl libunix-syslog-perl
libnet-snmp-perl libcompress-raw-zlib-perl"

policy_made=0
missing=
for p in $pkgs; do
	dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "$me: missing packages:$missing" >&2
		echo "$me: run as root: apt-get update && apt-get install -y --no-install-recommends$missing" >&2
		exit 1
	fi
	echo "$me: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# No service may start from the install: the bench runs private instances.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		policy_made=1
	fi
	# shellcheck disable=SC2086 # a list of packages
	apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
		{ [ "$policy_made" = 0 ] || rm -f /usr/sbin/policy-rc.d; exit 1; }
	[ "$policy_made" = 0 ] || rm -f /usr/sbin/policy-rc.d
fi
[ "$(id -u)" = 0 ] || { echo "$me: must run as root (private Postfix masters)" >&2; exit 1; }
PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin
export PATH

QUICK=${QUICK:-0}
work=${BENCH_TMP:-}
[ -n "$work" ] || work=$(mktemp -d /tmp/clamsmtpd-peers.XXXXXX)
mkdir -p "$work/tools"
chmod 755 "$work"
if [ "$QUICK" = 1 ]; then
	RUNS=${RUNS:-1}
	OUT=${OUT:-$work/PEERS.md}
	SVG=${SVG:-$work/peers.svg}
	quick=--quick
else
	RUNS=${RUNS:-3}
	OUT=${OUT:-$here/PEERS.md}
	SVG=${SVG:-$here/peers.svg}
	quick=
fi
cleanup() {
	if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_TMP:-}" ] && [ "$QUICK" != 1 ]; then
		rm -rf "$work"
	else
		echo "$me: files kept in $work" >&2
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binary under test, copied so that a rebuild during the run changes nothing.
if [ -n "${CLAMSMTPD:-}" ]; then
	src=$CLAMSMTPD
	desc=${CLAMSMTPD_DESC:-"$CLAMSMTPD (tree at $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown))"}
else
	[ "${NO_BUILD:-0}" = 1 ] || make -C "$top" clamsmtpd >&2
	src=$top/clamsmtpd
	desc="./clamsmtpd, $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown)"
fi
cp "$src" "$work/tools/clamsmtpd"

perf=
[ "${PERF:-0}" = 1 ] && perf=--perf
python3 "$here/peers.py" $quick $perf --runs "$RUNS" --workdir "$work" \
	--clamsmtpd "$work/tools/clamsmtpd" --clamsmtpd-desc "$desc" \
	--out "$OUT" --svg "$SVG" --svg-ref "$(basename "$SVG")" \
	--milter-socket "${MILTER_SOCKET:-unix}" \
	--systems "${SYSTEMS:-}" --cells "${CELLS:-}" --max-seconds "${MAX_SECONDS:-1500}" \
	--quiet-budget "${QUIET_BUDGET:-60}"
for data in "$work"/perf-*.data; do
	[ -f "$data" ] || continue
	perf report -i "$data" --no-children --sort sym --stdio --percent-limit 0.5 \
		> "${data%.data}.txt" 2>/dev/null
	perf report -i "$data" --no-children --sort comm,dso --stdio --percent-limit 0.5 \
		> "${data%.data}-dso.txt" 2>/dev/null
	echo "$me: profile in ${data%.data}.txt" >&2
done
echo "$me: report in $OUT, chart in $SVG" >&2
