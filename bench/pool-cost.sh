#!/bin/sh
# bench/pool-cost.sh - what a dead member of the clamd pool costs a message
#
# Usage: bench/pool-cost.sh
#
# One private clamd (tests/clamd-start.sh), smtp-sink as the server, and
# clamsmtpd in stdio mode carrying one session of N messages (pipelined from
# a file) through pools that differ only in dead members: a socket path
# nobody listens on, a 127.0.0.1 port nobody listens on. Each pool is run
# RUNS times, the pools taking turns; printed are the median wall time per
# message and the mean scan_ms of the log lines, with the extra cost against
# the pool without dead members; last, what one failed attempt costs, from a
# pool that is all dead (-f pass delivers its mail).
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

# session FILE N BYTES - EHLO, N messages of about BYTES of body, QUIT
session() {
	python3 - "$2" "$3" > "$1" <<'EOF'
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
}

# one NAME MESSAGES POOL... - one session (file $work/session.MESSAGES)
# through this pool: its wall time (us) goes to times.NAME, every message's
# scan_ms to scan.NAME
one() {
	name=$1 messages=$2
	shift 2
	flags=
	for a in "$@"; do flags="$flags -c $a"; done
	start=$(date +%s%N)
	# shellcheck disable=SC2086
	"$CLAMSMTPD" -d 3 -f pass -D "$work/spool" $flags 127.0.0.1:"$sink_port" \
		< "$work/session.$messages" > "$work/out" 2> "$work/err" ||
		{ echo "pool-cost.sh: clamsmtpd failed" >&2; tail "$work/err" >&2; exit 1; }
	end=$(date +%s%N)
	got=$(tr -d '\r' < "$work/out" | grep -c '^250 .*[Oo]k' || true)
	[ "$got" -ge "$messages" ] ||
		{ echo "pool-cost.sh: only $got of $messages delivered" >&2; tail "$work/err" >&2; exit 1; }
	echo $(( (end - start) / 1000 )) >> "$work/times.$name"
	sed -n 's/.*, scan_ms=\([0-9]*\),.*/\1/p' "$work/err" >> "$work/scan.$name"
}

# result NAME - "WALL SCAN" in ms: the median session's wall time per
# message, the mean scan_ms
result() {
	wall=$(sort -n "$work/times.$1" | awk -v n="$N" '{ t[NR] = $1 } END { printf "%.2f", t[int((NR + 1) / 2)] / n / 1000 }')
	scan=$(awk '{ s += $1 } END { printf "%.2f", NR ? s / NR : 0 }' "$work/scan.$1")
	echo "$wall $scan"
}

# row LABEL NAME [BASE] - one line of the table, with the difference to BASE
row() {
	# shellcheck disable=SC2046
	set -- "$1" $(result "$2") $([ -n "${3:-}" ] && result "$3")
	if [ $# -eq 5 ]; then
		extra=$(echo "$2 $4" | awk '{ printf "%+.2f", $1 - $2 }')
		extra_scan=$(echo "$3 $5" | awk '{ printf "%+.2f", $1 - $2 }')
	else
		extra=-
		extra_scan=-
	fi
	printf '| %-42s | %7s | %7s | %9s | %9s |\n' "$1" "$2" "$extra" "$3" "$extra_scan"
}

session "$work/session.$N" "$N" "$SIZE"
session "$work/session.5" 5 100
dead_sock=$work/nowhere.sock
dead_port=127.0.0.1:$(free_port)
dead_ports="$dead_port 127.0.0.1:$(free_port) 127.0.0.1:$(free_port) 127.0.0.1:$(free_port)"
dead_socks="$dead_sock $work/a.sock $work/b.sock $work/c.sock"
three_ports=$(echo "$dead_ports" | cut -d' ' -f1-3)

# The pools take turns, round after round, so that a busy moment of the
# machine falls on all of them alike.
r=0
while [ $r -lt "$RUNS" ]; do
	one unix "$N" "$sock"
	one sock_unix "$N" "$dead_sock" "$sock"
	one port_unix "$N" "$dead_port" "$sock"
	# shellcheck disable=SC2086
	one seven_unix "$N" $dead_socks $three_ports "$sock"
	one tcp "$N" "$tcp"
	one sock_tcp "$N" "$dead_sock" "$tcp"
	one port_tcp "$N" "$dead_port" "$tcp"
	r=$((r + 1))
done
# every message of an all-dead pool: 2 x 8 refused connects and the pause
# shellcheck disable=SC2086
one dead8 5 $dead_socks $dead_ports

echo "clamd pool cost: $N messages of ~$SIZE bytes per session, $RUNS sessions per pool, taking turns"
echo "wall: median session's wall time per message; scan: mean scan_ms of the log lines (ms)"
echo
printf '| %-42s | %7s | %7s | %9s | %9s |\n' pool wall extra scan extra
printf '|%s|%s|%s|%s|%s|\n' "--------------------------------------------" "---------" "---------" "-----------" "-----------"
row "[live unix] (FILDES)" unix
row "[dead socket, live unix]" sock_unix unix
row "[dead port, live unix]" port_unix unix
row "[7 dead (4 sockets, 3 ports), live unix]" seven_unix unix
row "[live TCP] (INSTREAM)" tcp
row "[dead socket, live TCP]" sock_tcp tcp
row "[dead port, live TCP]" port_tcp tcp
scan=$(awk '{ s += $1 } END { printf "%.1f", s / NR }' "$work/scan.dead8")
echo
echo "All 8 members dead (4 sockets, 4 ports): scan_ms $scan per message, that is the"
echo "1000 ms pause + 16 refused connects, which cost $(echo "$scan" | awk '{ d = $1 - 1000; printf (d < 1 ? "under 1 ms in all (scan_ms counts whole ms)" : "%.2f ms each"), d / 16 }')."
echo "With a live member a dead one is tried first for about half the messages (random start)."
