#!/usr/bin/env bats
# The command line: SPEC 1. A bad flag, value or address: one line on
# stderr naming the problem, exit status 2, nothing on stdout, nothing
# started (no connection to the server). The valid forms are accepted.

load helpers

# No clamd is needed to parse a command line.
setup_file() { :; }
teardown_file() { :; }

setup_options() {
	CLAMADDR=$T/no-clamd.sock
	printf 'QUIT\r\n' > "$T/in"
	start_server
}

# clamsmtpd ARGS... - run it directly, stdin the QUIT transcript (so that,
# were it to start, it would serve one session in stdio mode)
clamsmtpd() {
	local rc=0
	"$CLAMSMTPD" "$@" < "$T/in" > "$T/out" 2> "$T/err" || rc=$?
	echo "$rc" > "$T/rc"
}

# clamsmtpd_bounded ARGS... - the same, ended after 10 s should it start to listen
clamsmtpd_bounded() {
	local rc=0
	timeout 10 "$CLAMSMTPD" "$@" < "$T/in" > "$T/out" 2> "$T/err" || rc=$?
	echo "$rc" > "$T/rc"
}

# refused WORD - exit 2, one line on stderr that contains WORD, nothing on
# stdout, and nothing reached the server
refused() {
	[ "$(cat "$T/rc")" = 2 ]
	[ ! -s "$T/out" ]
	[ "$(wc -l < "$T/err")" = 1 ]
	[ "$(tail -c1 "$T/err" | od -An -c | tr -d ' ')" = '\n' ]
	! grep -q $'\r' "$T/err" || false
	grep -qF -- "$1" "$T/err"
	[ ! -s "$SRV/commands.log" ]
	! ls "$SRV" | grep -q '^session-' || false
}

# served - it started, spoke to the server and ended the session cleanly
served() {
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 221" ]
	[ "$(server_commands)" = QUIT ]
	! grep -q 'usage' "$T/err" || false
}

# --- bad flags and values ------------------------------------------------

@test "an unknown flag (-x): status 2, one line naming it" {
	setup_options
	clamsmtpd -x "$SERVER"
	refused "-x"
}

@test "a flag without its value (-t at the end): status 2, one line" {
	setup_options
	clamsmtpd "$SERVER" -t
	refused "-t"
}

@test "-d 9 (levels are 0 to 4): status 2, one line" {
	setup_options
	clamsmtpd -d 9 "$SERVER"
	refused "-d"
}

@test "-d -1 and -d x: status 2, one line" {
	setup_options
	clamsmtpd -d -1 "$SERVER"
	refused "-d"
	clamsmtpd -d x "$SERVER"
	refused "-d"
}

@test "-t 0: status 2, one line" {
	setup_options
	clamsmtpd -t 0 "$SERVER"
	refused "-t"
}

@test "-t 5s and -t 99999999999: status 2, one line" {
	setup_options
	clamsmtpd -t 5s "$SERVER"
	refused "-t"
	clamsmtpd -t 99999999999 "$SERVER"
	refused "-t"
}

@test "-m abc: status 2, one line" {
	setup_options
	clamsmtpd -m abc "$SERVER"
	refused "-m"
}

@test "-m 0: status 2, one line" {
	setup_options
	clamsmtpd -m 0 "$SERVER"
	refused "-m"
}

@test "-c host:99999 (port out of range): status 2, one line" {
	setup_options
	clamsmtpd -c host:99999 "$SERVER"
	refused "host:99999"
}

@test "-c '[::1' (unclosed bracket): status 2, one line" {
	setup_options
	clamsmtpd -c '[::1' "$SERVER"
	refused "[::1"
}

@test "-c with an empty port, or a port that is not a number: status 2" {
	setup_options
	clamsmtpd -c 'host:' "$SERVER"
	refused "host:"
	clamsmtpd -c 'host:smtp' "$SERVER"
	refused "host:smtp"
}

@test "-l with a bad address: status 2, one line" {
	setup_options
	clamsmtpd -l '127.0.0.1:0' "$SERVER"
	refused "127.0.0.1:0"
}

@test "-l 0 and -l 65536 (all digits, not a port): status 2, one line" {
	setup_options
	for bad in 0 65536 00000000025; do
		# -d 0 and a time limit: were it to start a listener, it ends
		clamsmtpd_bounded -d 0 -D "$SPOOL" -l "$bad" "$SERVER"
		refused "$bad"
	done
}

@test "serveraddr 0 or 65536, and -c 0 or 99999: status 2, one line" {
	setup_options
	for bad in 0 65536; do
		clamsmtpd_bounded -d 0 -D "$SPOOL" "$bad"
		refused "$bad"
	done
	for bad in 0 99999; do
		clamsmtpd_bounded -d 0 -D "$SPOOL" -c "$bad" "$SERVER"
		refused "$bad"
	done
}

@test "serveraddr missing: status 2, one line" {
	setup_options
	clamsmtpd -d 4 -t 5
	refused "serveraddr"
}

@test "two serveraddrs: status 2, one line" {
	setup_options
	clamsmtpd "$SERVER" "$SERVER"
	refused "serveraddr"
}

@test "serveraddr a:b:c: status 2, one line" {
	setup_options
	clamsmtpd a:b:c
	refused "a:b:c"
}

@test "serveraddr with port 0, 99999 or none after the colon: status 2" {
	setup_options
	for bad in 127.0.0.1:0 127.0.0.1:99999 127.0.0.1: :25 '[::1]x' '[]:25' '[127.0.0.1]:25'; do
		clamsmtpd "$bad"
		refused "$bad"
	done
}

@test "-h 'NoColon': status 2, one line" {
	setup_options
	clamsmtpd -h 'NoColon' "$SERVER"
	refused "-h"
}

@test "-h with CR LF inside (header injection): status 2, exactly one line" {
	setup_options
	clamsmtpd -h $'X-A: b\r\nX-Evil: c' "$SERVER"
	refused "-h"
}

@test "-h with a control character: status 2, one line" {
	setup_options
	clamsmtpd -h $'X-A: b\x01c' "$SERVER"
	refused "-h"
	clamsmtpd -h $'X-A: b\tc' "$SERVER"
	refused "-h"
}

@test "-h with a space in the name, or no value: status 2" {
	setup_options
	clamsmtpd -h 'X A: b' "$SERVER"
	refused "-h"
	clamsmtpd -h 'X-A:' "$SERVER"
	refused "-h"
}

@test "-D on a missing directory: status 2, one line naming the path and the reason" {
	setup_options
	clamsmtpd -D "$T/missing" "$SERVER"
	refused "-D"
	[ "$(cat "$T/err")" = "clamsmtpd: -D tmpdir cannot be used: $T/missing: No such file or directory" ]
}

@test "-D on a file: status 2, one line" {
	setup_options
	: > "$T/file"
	clamsmtpd -D "$T/file" "$SERVER"
	refused "-D"
}

@test "-D on a world-writable directory without the sticky bit: status 2" {
	setup_options
	mkdir "$T/open"
	chmod 777 "$T/open"
	clamsmtpd -D "$T/open" "$SERVER"
	refused "-D"
	[ -z "$(ls -A "$T/open")" ]
}

# --- valid forms ---------------------------------------------------------

@test "-v prints the version and exits 0, starting nothing" {
	setup_options
	clamsmtpd -v "$SERVER"
	[ "$(cat "$T/rc")" = 0 ]
	grep -qE '^clamsmtpd [0-9]+\.[0-9]+' "$T/out"
	[ "$(wc -l < "$T/out")" = 1 ]
	[ ! -s "$SRV/commands.log" ]
}

@test "-? prints the usage and starts nothing" {
	setup_options
	clamsmtpd '-?' "$SERVER"
	cat "$T/out" "$T/err" | grep -qi usage
	[ ! -s "$SRV/commands.log" ]
	! ls "$SRV" | grep -q '^session-' || false
}

@test "-r is accepted and logs a notice" {
	setup_options
	clamsmtpd -r -d 4 -D "$SPOOL" -c "$CLAMADDR" "$SERVER"
	served
	grep -q -- '-r' "$T/err"
}

@test "every documented flag together is accepted" {
	setup_options
	clamsmtpd -b -q -r -d 0 -t 5 -m 3 -D "$SPOOL" -c "$CLAMADDR" -h 'X-Scanned: yes' "$SERVER"
	served
}

@test "-h '' (no header) and -D on a sticky world-writable dir are accepted" {
	setup_options
	mkdir "$T/sticky"
	chmod 1777 "$T/sticky"
	clamsmtpd -d 4 -D "$T/sticky" -c "$CLAMADDR" -h '' "$SERVER"
	served
}

@test "-c forms: host:port, [v6]:port, a name, a path, a bare host are accepted" {
	setup_options
	for c in 127.0.0.1:3310 '[::1]:3310' localhost:3310 localhost /var/run/clamav/clamd.ctl; do
		: > "$SRV/commands.log"
		clamsmtpd -d 4 -D "$SPOOL" -c "$c" "$SERVER"
		served
	done
}

@test "serveraddr 127.0.0.1:port is accepted" {
	setup_options
	clamsmtpd -d 4 -D "$SPOOL" -c "$CLAMADDR" "$SERVER"
	served
}

@test "serveraddr [::1]:port is accepted" {
	python3 -c 'import socket; s=socket.socket(socket.AF_INET6); s.bind(("::1",0))' 2>/dev/null ||
		skip "no IPv6 loopback"
	CLAMADDR=$T/no-clamd.sock
	printf 'QUIT\r\n' > "$T/in"
	start_server --listen '[::1]:0'
	[[ "$SERVER" = '[::1]:'* ]]
	clamsmtpd -d 4 -D "$SPOOL" -c "$CLAMADDR" "$SERVER"
	served
}

@test "serveraddr localhost:port is accepted (every address tried)" {
	setup_options
	port=${SERVER##*:}
	clamsmtpd -d 4 -D "$SPOOL" -c "$CLAMADDR" "localhost:$port"
	served
}

@test "serveraddr /path/sock (a unix socket) is accepted" {
	command -v socat >/dev/null || skip "no socat"
	setup_options
	socat UNIX-LISTEN:"$T/smtp.sock",fork TCP:"$SERVER" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do [ -S "$T/smtp.sock" ] && break; sleep 0.1; done
	clamsmtpd -d 4 -D "$SPOOL" -c "$CLAMADDR" "$T/smtp.sock"
	served
}

@test "serveraddr 127.0.0.1 without a port is accepted (port 25)" {
	setup_options
	clamsmtpd -d 4 -t 2 -D "$SPOOL" -c "$CLAMADDR" 127.0.0.1
	[ "$(cat "$T/rc")" != 2 ]
	! grep -q usage "$T/err" || false
	tr -d '\r' < "$T/out" | head -n1 | grep -qE '^(220|421) '
}

@test "serveraddr 2525 (a bare port) is accepted" {
	setup_options
	clamsmtpd -d 4 -D "$SPOOL" -c "$CLAMADDR" 2525
	[ "$(cat "$T/rc")" != 2 ]
	! grep -q usage "$T/err" || false
	# stdin is a file, so there is no client IP to go back to: a 421, not a usage error
	[ "$(tr -d '\r' < "$T/out" | cut -c1-9)" = "421 4.3.0" ]
}

@test "serveraddr that is only a port goes back to the client's own IP (listener)" {
	setup_options
	lport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	"$CLAMSMTPD" -d 4 -D "$SPOOL" -c "$CLAMADDR" -l "127.0.0.1:$lport" "${SERVER##*:}" \
		< /dev/null > "$T/lout" 2> "$T/lerr" &
	echo $! >> "$T/pids"
	python3 - "$lport" > "$T/out" <<-'EOF'
	import socket, sys, time
	for _ in range(50):
	    try:
	        s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
	        break
	    except OSError:
	        time.sleep(0.1)
	s.sendall(b"QUIT\r\n")
	data = b""
	while True:
	    chunk = s.recv(4096)
	    if not chunk:
	        break
	    data += chunk
	sys.stdout.write(data.decode("latin-1"))
	EOF
	[ "$(codes)" = "220 221" ]
	[ "$(server_commands)" = QUIT ]
}
