#!/bin/sh
# bench/profile.sh - where clamsmtpd spends its CPU
#
# Usage: bench/profile.sh [OUTDIR]
#
# Starts a private clamd (tests/clamd-start.sh) and an smtp-sink on
# 127.0.0.1, then:
#   1. callgrind: one stdio-mode session under systemd-socket-activate
#      --inetd carrying one 20 MiB message (user-space instructions by function)
#   2. perf record -a (cpu-clock, the VM has no PMU) while smtp-source drives
#      a) listener mode, 4 KiB, 1 session, one message per connection
#      b) stdio mode,    4 KiB, 1 session, one message per connection
#      c) stdio mode,    2 MiB, 1 session, many messages per connection
#      and perf report for the clamsmtpd processes (kernel and user symbols).
# Reports go to OUTDIR (default: a new /tmp/clamsmtpd-profile.XXXXXX):
# callgrind.txt, perf-listener-4k.txt, perf-stdio-4k.txt, perf-stdio-2m.txt.
# Every process started is stopped by pid at the end.
# CLAMSMTPD=path profiles that binary (default ./clamsmtpd, built by make).

set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
out=${1:-$(mktemp -d /tmp/clamsmtpd-profile.XXXXXX)}
mkdir -p "$out"
chmod 755 "$out"
bin=${CLAMSMTPD:-$top/clamsmtpd}
[ -n "${CLAMSMTPD:-}" ] || make -C "$top" clamsmtpd >&2
cp "$bin" "$out/clamsmtpd"
bin=$out/clamsmtpd

pids=
cleanup() {
	for p in $pids; do
		kill "$p" 2>/dev/null || true
	done
	for p in $pids; do
		i=0
		while kill -0 "$p" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
		kill -9 "$p" 2>/dev/null || true
	done
	"$top/tests/clamd-stop.sh" "$out/clamd" || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() {
	i=0
	until python3 -c "import socket,sys; s=socket.socket(); s.settimeout(0.2); sys.exit(s.connect_ex(('127.0.0.1',$1)))" 2>/dev/null; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "profile.sh: nothing listens on $1" >&2; exit 1; }
		sleep 0.05
	done
}

"$top/tests/clamd-start.sh" "$out/clamd"
sock=$out/clamd/clamd.sock
mkdir -p "$out/spool"
chmod 700 "$out/spool"

sinkport=$(port)
smtp-sink -u nobody "127.0.0.1:$sinkport" 256 >"$out/sink.log" 2>&1 &
pids="$pids $!"
# wait_port opens a connection: harmless to smtp-sink
wait_port "$sinkport"

# 1. callgrind on one stdio-mode session with a 20 MiB message
if command -v valgrind >/dev/null 2>&1; then
	p=$(port)
	systemd-socket-activate -l "127.0.0.1:$p" -a --inetd \
		valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
		"$bin" -d 1 -D "$out/spool" -c "$sock" "127.0.0.1:$sinkport" \
		>"$out/activate.log" 2>&1 &
	act=$!
	pids="$pids $act"
	sleep 0.5
	smtp-source -s 1 -m 1 -l 20971520 "127.0.0.1:$p"
	sleep 1
	kill "$act" 2>/dev/null || true
	f=$(ls -S "$out"/callgrind.out.* | head -n 1)
	callgrind_annotate --inclusive=no "$f" 2>/dev/null | head -n 40 >"$out/callgrind.txt"
	echo >>"$out/callgrind.txt"
	echo "--- inclusive ---" >>"$out/callgrind.txt"
	callgrind_annotate --inclusive=yes "$f" 2>/dev/null | sed -n '1,60p' >>"$out/callgrind.txt"
fi

# 2. perf, system-wide, while smtp-source drives the filter
if command -v perf >/dev/null 2>&1; then
	profile() {     # name, then the filter command line, then smtp-source flags
		name=$1
		shift
		fport=$(port)
		case $1 in
		listener)
			"$bin" -d 1 -l "127.0.0.1:$fport" -m 128 -D "$out/spool" -c "$sock" \
				"127.0.0.1:$sinkport" >"$out/$name.log" 2>&1 &
			;;
		stdio)
			systemd-socket-activate -l "127.0.0.1:$fport" -a --inetd \
				"$bin" -d 1 -D "$out/spool" -c "$sock" "127.0.0.1:$sinkport" \
				>"$out/$name.log" 2>&1 &
			;;
		esac
		fp=$!
		pids="$pids $fp"
		sleep 0.5
		shift
		perf record -q -a -e cpu-clock -F 4999 -o "$out/$name.data" -- \
			smtp-source "$@" "127.0.0.1:$fport" 2>"$out/$name.perf.err"
		kill "$fp"
		{
			echo "== CPU by process name (all of the machine during the run) =="
			perf report -q -i "$out/$name.data" --sort comm --stdio 2>/dev/null | head -n 15
			echo
			echo "== clamsmtpd processes: by DSO and symbol =="
			perf report -q -i "$out/$name.data" --comms clamsmtpd --sort dso,sym --stdio \
				2>/dev/null | head -n 45
			echo
			echo "== systemd-socket-activate (its fork and the exec of clamsmtpd) =="
			perf report -q -i "$out/$name.data" --comms systemd-socket- --sort dso,sym \
				--stdio 2>/dev/null | head -n 15
		} >"$out/$name.txt"
	}
	profile perf-listener-4k listener -s 1 -m 2000 -l 4096
	profile perf-stdio-4k stdio -s 1 -m 2000 -l 4096
	profile perf-stdio-2m stdio -s 1 -d -m 40 -l 2097152
fi
echo "profile.sh: reports in $out" >&2
ls "$out"/*.txt >&2
