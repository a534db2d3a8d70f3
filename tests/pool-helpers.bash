# pool-helpers.bash - clamd pool members and message checks for
# tests/pool.bats and tests/policy.bats (load after helpers).
#
# A member is a private real clamd in $T/NAME (tests/clamd-start.sh), with a
# unix socket and its own TCP port. It can be stopped, killed, paused and
# started again on the same socket and port while mail flows. Every member a
# test starts is stopped in teardown, paused ones continued first.

# The helpers' teardown, kept under another name: ours stops the members first.
eval "helpers_$(declare -f teardown)"

teardown() {
	local dir pid
	if [ -f "$T/members" ]; then
		while read -r dir; do
			pid=$(cat "$dir/clamd.pid" 2>/dev/null) || continue
			kill -CONT "$pid" 2>/dev/null
			"$TESTS/clamd-stop.sh" "$dir" || true
		done < "$T/members"
	fi
	helpers_teardown
}

# free_port - a loopback TCP port nothing listens on (at this moment)
free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# member_start NAME - a new private clamd in $T/NAME, ready once this returns
member_start() {
	local dir=$T/$1
	mkdir -p "$dir"
	echo "$dir" >> "$T/members"
	"$TESTS/clamd-start.sh" "$dir" > "$dir/start.log" 2>&1 3>&- ||
		{ cat "$dir/start.log" >&2; return 1; }
}

# member_sock NAME / member_tcp NAME / member_pid NAME - its addresses, its pid
member_sock() { echo "$T/$1/clamd.sock"; }
member_tcp() { echo "127.0.0.1:$(cat "$T/$1/clamd.tcpport")"; }
member_pid() { cat "$T/$1/clamd.pid"; }

# member_running NAME - whether its clamd process exists and is no zombie
member_running() {
	local pid state
	pid=$(member_pid "$1" 2>/dev/null) || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$state" ] && [ "$state" != Z ]
}

# member_stop NAME - SIGTERM and wait: its socket is gone, its port closed
member_stop() {
	"$TESTS/clamd-stop.sh" "$T/$1"
}

# member_kill9 NAME - SIGKILL and wait: a stale socket file stays behind
member_kill9() {
	local i
	kill -9 "$(member_pid "$1")"
	for i in $(seq 100); do
		member_running "$1" || return 0
		sleep 0.05
	done
	echo "clamd $1 survives SIGKILL" >&2
	return 1
}

# member_pause NAME / member_resume NAME - SIGSTOP / SIGCONT: connects still
# succeed (the kernel queues them), but nothing is answered while paused
member_pause() { kill -STOP "$(member_pid "$1")"; }
member_resume() { kill -CONT "$(member_pid "$1")"; }

# member_restart NAME - start its clamd again with the same configuration
# (same socket, same TCP port); waits up to 10 s for PONG on both
member_restart() {
	local dir=$T/$1
	member_running "$1" && { echo "clamd $1 still runs" >&2; return 1; }
	local clamd=${CLAMD:-$(command -v clamd || echo /usr/sbin/clamd)}
	"$clamd" -c "$dir/clamd.conf" < /dev/null >> "$dir/clamd.out" 2>&1 \
		3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
	echo $! > "$dir/clamd.pid"
	member_ready "$1"
}

# member_ready NAME - wait up to 10 s until it answers zPING on unix and TCP
member_ready() {
	python3 - "$(member_sock "$1")" "$(cat "$T/$1/clamd.tcpport")" <<'EOF'
import socket, sys, time

def pong(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(addr)
        s.sendall(b"zPING\0")
        got = b""
        while True:
            d = s.recv(16)
            if not d:
                return got == b"PONG\0"
            got += d
    except OSError:
        return False
    finally:
        s.close()

deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if pong(socket.AF_UNIX, sys.argv[1]) and pong(socket.AF_INET, ("127.0.0.1", int(sys.argv[2]))):
        sys.exit(0)
    time.sleep(0.02)
sys.stderr.write("clamd at %s did not come back within 10 s\n" % sys.argv[1])
sys.exit(1)
EOF
}

# stand_in NAME fake-clamd-options... - a fake-clamd in $T/NAME (see
# tests/fake-clamd.py); prints its address (the socket or 127.0.0.1:port).
# The stand-in's stdout is not the caller's: $(stand_in ...) must not wait on it.
stand_in() {
	local dir=$T/$1
	shift
	mkdir -p "$dir"
	if [ "$1" = --tcp ]; then
		shift
		python3 "$TESTS/fake-clamd.py" --tcp 127.0.0.1:0 --dir "$dir" "$@" > /dev/null 2> "$dir/stderr" 3>&- &
		echo $! >> "$T/pids"
		wait_file "$dir/port" >&2 || return 1
		echo "127.0.0.1:$(cat "$dir/port")"
	else
		python3 "$TESTS/fake-clamd.py" --unix "$dir/sock" --dir "$dir" "$@" > /dev/null 2> "$dir/stderr" 3>&- &
		echo $! >> "$T/pids"
		wait_socket "$dir/sock" >&2 || return 1
		echo "$dir/sock"
	fi
}

# refuser NAME UPSTREAM [--reply TEXT] - tests/fildes-refuser.py in $T/NAME:
# refuses FILDES, relays INSTREAM to the real clamd at UPSTREAM; prints its socket
refuser() {
	local dir=$T/$1 upstream=$2
	shift 2
	mkdir -p "$dir"
	python3 "$TESTS/fildes-refuser.py" --unix "$dir/sock" --upstream "$upstream" \
		--dir "$dir" "$@" > /dev/null 2> "$dir/stderr" 3>&- &
	echo $! >> "$T/pids"
	wait_socket "$dir/sock" >&2 || return 1
	echo "$dir/sock"
}

# wait_socket PATH - wait up to 10 s for a unix socket to appear
wait_socket() {
	local i
	for i in $(seq 200); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	echo "timed out waiting for socket $1" >&2
	return 1
}

# pool ADDR... - the -c flags for a pool, into the array POOL
pool() {
	POOL=()
	local a
	for a in "$@"; do
		POOL+=(-c "$a")
	done
}

# pool_filter [flags] < transcript - clamsmtpd in stdio mode with the pool in
# POOL, against $SERVER: replies in $T/out, log (-d 4) in $T/err, status in $T/rc
pool_filter() {
	local rc=0
	"$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" -D "$SPOOL" "${POOL[@]}" "$@" "$SERVER" \
		> "$T/out" 2> "$T/err" 3>&- || rc=$?
	echo "$rc" > "$T/rc"
	return 0
}

# pool_listener [flags] - clamsmtpd -l 127.0.0.1:LPORT -d 3 with the pool in
# POOL in the background; sets LPORT, LPID; its log goes to $T/err
pool_listener() {
	LPORT=$(free_port)
	"$CLAMSMTPD" -d 3 -t "${TIMEOUT:-10}" -D "$SPOOL" "${POOL[@]}" -p "$T/listener.pid" \
		-l "127.0.0.1:$LPORT" "$@" "$SERVER" < /dev/null > "$T/listener.out" 2> "$T/err" 3>&- &
	LPID=$!
	echo "$LPID" >> "$T/pids"
	wait_file "$T/listener.pid"
}

# listener_stop - SIGTERM the listener and wait until it has gone
listener_stop() {
	kill "$LPID" 2>/dev/null
	wait_gone "$LPID"
}

# session_to_listener TRANSCRIPT OUT - one client session through the listener,
# everything it received into OUT
session_to_listener() {
	python3 "$TESTS/smtp-client.py" "127.0.0.1:$LPORT" --send "$1" > "$2" 3>&-
}

# codes_of FILE - the reply codes in FILE, one per reply (last lines only)
codes_of() {
	tr -d '\r' < "$1" | grep -E '^[0-9]{3}( |$)' | cut -c1-3 | tr '\n' ' ' | sed 's/ $//'
}

# no_4xx FILE - fails, showing the replies, when any reply in FILE is 4xx
no_4xx() {
	if tr -d '\r' < "$1" | grep -qE '^4[0-9]{2}( |$)'; then
		echo "a 4xx reply in $1:" >&2
		cat "$1" >&2
		return 1
	fi
}

# clean_message FILE TAG - a clean message with a line that needs a dot,
# CRLF lines, the way the spool holds it (unstuffed)
clean_message() {
	printf 'From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: %s\r\nMessage-ID: <%s@example.test>\r\n\r\nHello %s.\r\n.a line that starts with a dot\r\n\r\nBye.\r\n' \
		"$2" "$2" "$2" > "$1"
}

# eicar_message FILE TAG - a message with EICAR in its body, CRLF lines
eicar_message() {
	{
		printf 'From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: %s\r\n\r\n' "$2"
		"$TESTS/eicar.sh"
		printf '\r\n'
	} > "$1"
}

# stuffed FILE - the message as a client sends it: a dot added to lines
# that start with one (the final ".\r\n" is not part of it)
stuffed() {
	sed 's/^\./../' "$1"
}

# session_of OUT MESSAGE... - EHLO, one transaction per message (stuffed), QUIT
session_of() {
	local out=$1 m
	shift
	printf 'EHLO client.test\r\n' > "$out"
	for m in "$@"; do
		envelope >> "$out"
		stuffed "$m" >> "$out"
		printf '.\r\n' >> "$out"
	done
	printf 'QUIT\r\n' >> "$out"
}

# delivered_with FILE LINE... - the server holds a message that is exactly
# LINE... (each with CRLF) followed by FILE's bytes; prints its msg-N.eml
delivered_with() {
	local file=$1 want=$T/want.$$ m
	shift
	{
		local l
		for l in "$@"; do printf '%s\r\n' "$l"; done
		cat "$file"
	} > "$want"
	for m in "$SRV"/msg-*.eml; do
		[ -e "$m" ] || continue
		if cmp -s "$m" "$want"; then
			rm -f "$want"
			echo "$m"
			return 0
		fi
	done
	echo "no delivered message is exactly: $* + $file" >&2
	rm -f "$want"
	return 1
}

# no_eicar_delivered - no message the server took holds the EICAR string
no_eicar_delivered() {
	local e
	e=$("$TESTS/eicar.sh")
	if grep -lF -- "$e" "$SRV"/msg-*.raw 2>/dev/null; then
		echo "EICAR was delivered" >&2
		return 1
	fi
}

# log_lines - the per-message log lines in $T/err
log_lines() {
	grep -E ': status=[A-Z]+' "$T/err" || true
}

# members_named - the clamd= value of every per-message log line, one a line
members_named() {
	log_lines | sed -n 's/.*, clamd=\([^,]*\),.*/\1/p'
}

# scan_ms_values - the scan_ms= value of every per-message log line
scan_ms_values() {
	log_lines | sed -n 's/.*, scan_ms=\([0-9]*\),.*/\1/p'
}

# found_in_log NAME - how many viruses member NAME's own clamd logged
found_in_log() {
	grep -c ' FOUND$' "$T/$1/clamd.log" || true
}

# wait_log TEXT [SECONDS] - wait (default 10 s) until the log in $T/err has TEXT
wait_log() {
	local i
	for i in $(seq $(( ${2:-10} * 50 ))); do
		grep -qF -- "$1" "$T/err" 2>/dev/null && return 0
		sleep 0.02
	done
	echo "timed out waiting for '$1' in the log" >&2
	return 1
}
