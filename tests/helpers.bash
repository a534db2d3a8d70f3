# helpers.bash - what every test file shares
#
# Each test gets its own directory ($T) with an empty spool directory; every
# process a test starts is recorded in $T/pids and killed by pid in teardown,
# which also fails the test if a spool file was left behind.
# A real clamd is started once per test file (setup_file).

TESTS=$BATS_TEST_DIRNAME
CLAMSMTPD=${CLAMSMTPD:-$TESTS/../clamsmtpd}

# start_real_clamd - once per file; sets CLAMD_DIR, CLAMD_SOCK, CLAMD_TCP
start_real_clamd() {
	export CLAMD_DIR=$BATS_FILE_TMPDIR/clamd
	"$TESTS/clamd-start.sh" "$CLAMD_DIR" >&3 2>&1 || return 1
	export CLAMD_SOCK=$CLAMD_DIR/clamd.sock
	export CLAMD_TCP=127.0.0.1:$(cat "$CLAMD_DIR/clamd.tcpport")
}

stop_real_clamd() {
	[ -n "${CLAMD_DIR:-}" ] && "$TESTS/clamd-stop.sh" "$CLAMD_DIR" || true
}

setup_file() {
	start_real_clamd
}

teardown_file() {
	stop_real_clamd
}

setup() {
	T=$BATS_TEST_TMPDIR
	SPOOL=$T/spool
	mkdir -m 700 "$SPOOL"
	: > "$T/pids"
	CLAMADDR=$CLAMD_SOCK
}

teardown() {
	if [ -n "${MOUNTED:-}" ] && mountpoint -q "$MOUNTED"; then
		umount "$MOUNTED" 2>/dev/null || umount -l "$MOUNTED"
	fi
	stop_pids
	if [ -z "${KEEP_SPOOL:-}" ] && [ -n "$(ls -A "$SPOOL")" ]; then
		echo "spool directory not empty:" >&2
		ls -la "$SPOOL" >&2
		return 1
	fi
}

# small_spool - $T/small, a 256 KiB tmpfs for a full spool (teardown unmounts
# it if the test did not); the test is skipped where none can be mounted
small_spool() {
	[ "$(id -u)" = 0 ] || skip "needs root to mount a tmpfs"
	mkdir "$T/small"
	mount -t tmpfs -o size=256k,mode=700 tmpfs "$T/small" || skip "cannot mount a tmpfs here"
	MOUNTED=$T/small
}

# stop_pids - SIGTERM every process recorded in $T/pids, then wait for each
# (wait_gone)
stop_pids() {
	local pid
	while read -r pid; do
		[ -n "$pid" ] && kill "$pid" 2>/dev/null
	done < "$T/pids"
	while read -r pid; do
		[ -n "$pid" ] && wait_gone "$pid"
	done < "$T/pids"
}

# wait_gone PID - wait up to 5 s for a process to exit, then kill -9
wait_gone() {
	local i
	for i in $(seq 50); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
}

# wait_file PATH - wait up to 10 s for a file to appear
wait_file() {
	local i
	for i in $(seq 100); do
		[ -s "$1" ] && return 0
		sleep 0.1
	done
	echo "timed out waiting for $1" >&2
	return 1
}

# start_server [NAME] [recorder options] - a recording SMTP server on loopback;
# sets SERVER (host:port) and SRV (its directory). NAME defaults to srv.
start_server() {
	local name=srv listen=127.0.0.1:0
	case "${1:-}" in -*|"") ;; *) name=$1; shift ;; esac
	case "${1:-}" in --listen) listen=$2; shift 2 ;; esac
	SRV=$T/$name
	mkdir -p "$SRV"
	python3 "$TESTS/smtp-recorder.py" --listen "$listen" --dir "$SRV" "$@" 2>"$SRV/stderr" &
	echo $! >> "$T/pids"
	wait_file "$SRV/port"
	local host=${listen%:*}
	SERVER=$host:$(cat "$SRV/port")
}

# start_fake_clamd MODE [unix|tcp] [options] - sets CLAMADDR and FAKE
start_fake_clamd() {
	local mode=$1 kind=${2:-unix}
	shift; [ $# -gt 0 ] && shift
	FAKE=$T/fake-clamd
	mkdir -p "$FAKE"
	if [ "$kind" = unix ]; then
		python3 "$TESTS/fake-clamd.py" --unix "$FAKE/sock" --dir "$FAKE" --mode "$mode" "$@" 2>"$FAKE/stderr" &
		echo $! >> "$T/pids"
		wait_file "$FAKE/pid"
		local i; for i in $(seq 50); do [ -S "$FAKE/sock" ] && break; sleep 0.1; done
		CLAMADDR=$FAKE/sock
	else
		python3 "$TESTS/fake-clamd.py" --tcp 127.0.0.1:0 --dir "$FAKE" --mode "$mode" "$@" 2>"$FAKE/stderr" &
		echo $! >> "$T/pids"
		wait_file "$FAKE/port"
		CLAMADDR=127.0.0.1:$(cat "$FAKE/port")
	fi
}

# filter [flags] < transcript - clamsmtpd in stdio mode against $SERVER;
# the replies land in $T/out, the log (-d 4) in $T/err, the status in $T/rc
filter() {
	local rc=0
	"$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" -D "$SPOOL" -c "$CLAMADDR" "$@" "$SERVER" \
		> "$T/out" 2> "$T/err" || rc=$?
	echo "$rc" > "$T/rc"
	return 0
}

# envelope [n] - MAIL, RCPT, DATA lines of a transaction (CRLF)
envelope() {
	printf 'MAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n'
}

# a_message FILE - a small clean RFC 5322 message with CRLF line ends
a_message() {
	printf 'From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: test\r\n\r\nHello.\r\n' > "$1"
}

# transcript OUT BODYFILE... - EHLO, then one transaction per body file, then QUIT.
# Each body file holds the data bytes exactly as the client sends them, up to
# but without the final ".\r\n" line (so it must end in CRLF, or not, on purpose).
transcript() {
	local out=$1 body
	shift
	printf 'EHLO client.test\r\n' > "$out"
	for body in "$@"; do
		envelope >> "$out"
		cat "$body" >> "$out"
		printf '.\r\n' >> "$out"
	done
	printf 'QUIT\r\n' >> "$out"
}

# codes - the reply codes clamsmtpd wrote, one per reply (last lines only)
codes() {
	tr -d '\r' < "$T/out" | grep -E '^[0-9]{3}( |$)' | cut -c1-3 | tr '\n' ' ' | sed 's/ $//'
}

# eicar FILE - the EICAR test file (68 bytes)
eicar() {
	"$TESTS/eicar.sh" > "$1"
}

# server_commands - what the server received, one command per line
server_commands() {
	cut -d' ' -f2- "$SRV/commands.log" 2>/dev/null
}

# count_messages - how many messages the server accepted data for
count_messages() {
	ls "$SRV" | grep -c '^msg-[0-9]*\.raw$' || true
}

# without_header FILE - a delivered message minus the first (added) line
without_header() {
	tail -c +$(( $(head -n1 "$1" | wc -c) + 1 )) "$1"
}

# dotted_text FILE BYTES HEADER [--no-last-crlf] - HEADER (\r \n escapes),
# then CRLF text lines, every 97th starting with one to three dots, until
# about BYTES in all; --no-last-crlf leaves the last line's CRLF off
dotted_text() {
	python3 -c '
import sys
path, size = sys.argv[1], int(sys.argv[2])
out = [sys.argv[3].encode("latin-1").decode("unicode_escape").encode("latin-1")]
n, i = len(out[0]), 0
while n < size:
    if i % 97 == 0:
        line = b"." * (1 + i % 3) + b" dotted line %d\r\n" % i
    else:
        line = b"line %09d abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789\r\n" % i
    out.append(line)
    n += len(line)
    i += 1
data = b"".join(out)
open(path, "wb").write(data[:-2] if sys.argv[4:] == ["--no-last-crlf"] else data)
' "$@"
}
