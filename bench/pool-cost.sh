#!/bin/sh
# bench/pool-cost.sh - what a dead member of the clamd pool costs a message
#
# Usage: bench/pool-cost.sh
#
# One private clamd (tests/clamd-start.sh), smtp-sink as the server, and
# clamsmtpd in stdio mode carrying one session of N messages (pipelined from
# a file) through pools that differ only in dead members: a socket path
# nobody listens on, a 127.0.0.1 port nobody listens on. Each pool is run
# RUNS times; the median wall time per message is printed, and the extra
# cost against the same pool without dead members.
#
# Environment: CLAMSMTPD=path (default ./clamsmtpd), N (messages a session,
# default 20), RUNS (default 7), SIZE (body bytes, default 4096).
# Needs: clamav-daemon (clamd), postfix (smtp-sink only; the service is never
# started), python3. Everything runs on 127.0.0.1 and is stopped by pid.

set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
CLAMSMTPD=${CLAMSMTPD:-$top/clamsmtpd}
N=${N:-20}
RUNS=${RUNS:-7}
SIZE=${SIZE:-4096}
[ -x "$CLAMSMTPD" ] || { echo "pool-cost.sh: no $CLAMSMTPD (make, or set CLAMSMTPD)" >&2; exit 1; }
command -v smtp-sink >/dev/null 2>&1 || { echo "pool-cost.sh: smtp-sink is missing (apt-get install postfix)" >&2; exit 1; }

work=$(mktemp -d /tmp/pool-cost.XXXXXX)
sink_pid=
cleanup() {
	[ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null
	"$top/tests/clamd-stop.sh" "$work/clamd" || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

"$top/tests/clamd-start.sh" "$work/clamd" > "$work/clamd-start.log" 2>&1 ||
	{ cat "$work/clamd-start.log" >&2; exit 1; }
sock=$work/clamd/clamd.sock
tcp=127.0.0.1:$(cat "$work/clamd/clamd.tcpport")

sink_port=$(free_port)
as_user=
[ "$(id -u)" = 0 ] && as_user="-u nobody"     # smtp-sink will not run as root
# shellcheck disable=SC2086
smtp-sink $as_user 127.0.0.1:"$sink_port" 256 > "$work/sink.log" 2>&1 &
sink_pid=$!
i=0
until python3 -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$sink_port" 2>/dev/null; do
	i=$((i + 1))
	[ $i -lt 50 ] || { echo "pool-cost.sh: smtp-sink did not start" >&2; cat "$work/sink.log" >&2; exit 1; }
	sleep 0.1
done

mkdir -m 700 "$work/spool"
python3 - "$N" "$SIZE" > "$work/session" <<'EOF'
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
line = b"0123456789" * 7 + b"abcdef\r\n"
body = line * (size // len(line) + 1)
out = [b"EHLO bench\r\n"]
for i in range(n):
    out.append(b"MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n")
    out.append(b"Subject: pool cost %d\r\n\r\n" % i + body + b".\r\n")
out.append(b"QUIT\r\n")
sys.stdout.buffer.write(b"".join(out))
EOF

# run POOL... - median ms per message of RUNS sessions through this pool
run() {
	flags=
	for a in "$@"; do flags="$flags -c $a"; done
	i=0
	: > "$work/times"
	: > "$work/scan_ms"
	while [ $i -lt "$RUNS" ]; do
		start=$(date +%s%N)
		# shellcheck disable=SC2086
		"$CLAMSMTPD" -d 3 -D "$work/spool" $flags 127.0.0.1:"$sink_port" \
			< "$work/session" > "$work/out" 2> "$work/err" ||
			{ echo "pool-cost.sh: clamsmtpd failed" >&2; tail "$work/err" >&2; exit 1; }
		end=$(date +%s%N)
		got=$(tr -d '\r' < "$work/out" | grep -c '^250 .*[Oo]k' || true)
		[ "$got" -ge "$N" ] || { echo "pool-cost.sh: only $got of $N delivered" >&2; tail "$work/err" >&2; exit 1; }
		echo $(( (end - start) / 1000 )) >> "$work/times"
		sed -n 's/.*, scan_ms=\([0-9]*\),.*/\1/p' "$work/err" >> "$work/scan_ms"
		i=$((i + 1))
	done
	# the median session's wall time per message, and the mean scan_ms of the log lines
	wall=$(sort -n "$work/times" | awk -v n="$N" -v r="$RUNS" '{ t[NR] = $1 } END { printf "%.2f", t[int((r + 1) / 2)] / n / 1000 }')
	scan=$(awk '{ s += $1 } END { printf "%.2f", NR ? s / NR : 0 }' "$work/scan_ms")
	echo "$wall $scan"
}

# row NAME "WALL SCAN" ["BASE_WALL BASE_SCAN"] - one line of the table
row() {
	set -- "$1" $2 ${3:-}
	if [ $# -eq 5 ]; then
		extra=$(echo "$2 $4" | awk '{ printf "%+.2f", $1 - $2 }')
		extra_scan=$(echo "$3 $5" | awk '{ printf "%+.2f", $1 - $2 }')
	else
		extra=-
		extra_scan=-
	fi
	printf '| %-42s | %7s | %7s | %9s | %9s |\n' "$1" "$2" "$extra" "$3" "$extra_scan"
}

dead_sock=$work/nowhere.sock
dead_port=127.0.0.1:$(free_port)
dead_port2=127.0.0.1:$(free_port)

echo "clamd pool cost: $N messages of ~$SIZE bytes per session, $RUNS sessions per pool"
echo "wall: median session's wall time per message (ms); scan: mean scan_ms of the log lines"
echo
printf '| %-42s | %7s | %7s | %9s | %9s |\n' pool wall extra "scan" "extra"
printf '|%s|%s|%s|%s|%s|\n' "--------------------------------------------" "---------" "---------" "-----------" "-----------"
base=$(run "$sock")
row "[live unix] (FILDES)" "$base"
row "[dead socket, live unix]" "$(run "$dead_sock" "$sock")" "$base"
row "[dead port, live unix]" "$(run "$dead_port" "$sock")" "$base"
row "[7 dead (5 sockets, 2 ports), live unix]" \
	"$(run "$dead_sock" "$dead_port" "$work/a.sock" "$work/b.sock" "$dead_port2" "$work/c.sock" "$work/d.sock" "$sock")" "$base"
base=$(run "$tcp")
row "[live TCP] (INSTREAM)" "$base"
row "[dead socket, live TCP]" "$(run "$dead_sock" "$tcp")" "$base"
row "[dead port, live TCP]" "$(run "$dead_port" "$tcp")" "$base"
echo
echo "A dead member is tried first for about half the messages (random start);"
echo "a refused connect costs a connect() and a WARNING line, no wait."
