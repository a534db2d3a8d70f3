#!/usr/bin/env bats
# Faults: SPEC 4.6, 4.7, 5 and 6. Whatever breaks (clamd, the server, the
# client, the disk, clamsmtpd itself), the client gets a 4xx, never a 250
# for mail the server did not take; the server sees no DATA for a message
# that was not scanned clean; no spool file is left behind (teardown).

load helpers

# a message of the three header lines and about N bytes of body lines
big_message() {
	local file=$1 bytes=$2
	printf 'From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: big\r\n\r\n' > "$file"
	python3 -c '
import sys
n = int(sys.argv[1]); line = b"0123456789" * 7 + b"abcdef\r\n"
sys.stdout.buffer.write(line * (n // len(line) + 1))' "$bytes" >> "$file"
}

# session BODY - EHLO, one transaction, then NOOP and QUIT: the NOOP shows
# that the session goes on after the message
session() {
	{ printf 'EHLO c\r\n'; envelope; cat "$1"; printf '.\r\nNOOP\r\nQUIT\r\n'; } > "$T/in"
}

# commands_line - what the server received, on one line
commands_line() {
	server_commands | tr '\n' ' '
}

# the exact command sequence of a message that was scanned and abandoned:
# keepalive NOOPs may fall between RCPT and RSET, and the client's NOOP and
# QUIT follow
# what the log may say when clamd closed the connection without a verdict
CLOSED="(closed|no answer|without a verdict|EOF)"

ABANDONED='^EHLO c MAIL FROM:<sender@example.test> RCPT TO:<rcpt@example.test> (NOOP )*RSET NOOP QUIT $'

# scan_failed WHY - the common checks of a clamd failure (SPEC 4.6, 5)
scan_failed() {
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 451 250 221" ]
	grep -q $'^451 4.3.0 Virus scan failed, try again later\r$' "$T/out"
	[[ "$(commands_line)" =~ $ABANDONED ]]
	[ "$(count_messages)" = 0 ]
	grep -q "status=ERROR:scan failed" "$T/err"
	grep -qE "clamd .* failed \(pass [12] of 2\): .*($1)" "$T/err"
}

# --- a scripted client on a socket -------------------------------------
#
# drive SCRIPT [flags] - run clamsmtpd (the way filter does, -d 4, -t
# ${TIMEOUT:-10}) with one end of a socketpair as its stdin and stdout, and
# play the client from SCRIPT with tests/smtp-play.py (its steps, one a line;
# replies go to $T/out, the log to a new $T/err). The status is 1 when a
# step failed (the reason on stderr).
drive() {
	local script=$1
	shift
	: > "$T/err"
	python3 "$TESTS/smtp-play.py" "$script" "$T" "$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" \
		-D "$SPOOL" -c "$CLAMADDR" "$@" "$SERVER"
}

# elapsed_under S - the stopwatch of the last drive said less than S seconds
elapsed_under() {
	python3 -c 'import sys; sys.exit(0 if float(open(sys.argv[1]).read()) < float(sys.argv[2]) else 1)' \
		"$T/elapsed" "$1"
}

# =========================================================================
# clamd fails: 451 4.3.0, RSET to the server, no DATA, the session goes on

@test "clamd not running (no such socket): 451, RSET, no DATA, session goes on" {
	start_server
	CLAMADDR=$T/no-such-dir/clamd.sock
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "cannot connect"
}

@test "clamd refuses (closes at once): 451, RSET, no DATA, session goes on" {
	start_server
	start_fake_clamd refuse
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "$CLOSED"
}

@test "clamd hangs past -t: 451 after two tries of -t each and the pause, RSET, no DATA" {
	TIMEOUT=2
	start_server
	start_fake_clamd hang
	a_message "$T/body"
	session "$T/body"
	start=$(date +%s)
	filter < "$T/in"
	took=$(( $(date +%s) - start ))
	scan_failed "in time|time ?out|timed out"
	[ "$took" -ge 3 ]    # -t counts whole seconds; SPEC 8.1: two passes, a pause between
	[ "$took" -le 9 ]
	[ "$(grep -c '^FILDES' "$FAKE/commands.log")" = 2 ]
}

@test "clamd answers garbage: 451, RSET, no DATA, session goes on" {
	start_server
	start_fake_clamd garbage
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "hello world"
}

@test "clamd answers ERROR: 451, RSET, no DATA, session goes on" {
	start_server
	start_fake_clamd error
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "Permission denied. ERROR"
}

@test "clamd closes without a verdict (empty): 451, RSET, no DATA" {
	start_server
	start_fake_clamd empty
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "$CLOSED"
	grep -q '^FILDES [1-9]' "$FAKE/commands.log"
}

@test "clamd hangs up after the command: 451, RSET, no DATA" {
	start_server
	start_fake_clamd hangup
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "$CLOSED"
}

@test "TCP clamd hangs up in the middle of INSTREAM: 451, RSET, no DATA" {
	start_server
	start_fake_clamd hangup-mid tcp
	big_message "$T/body" 200000
	session "$T/body"
	filter < "$T/in"
	scan_failed "$CLOSED"
	grep -qE '^INSTREAM 10[0-9]{2}$' "$FAKE/commands.log"
}

@test "TCP clamd: INSTREAM size limit exceeded is a failure, never clean" {
	start_server
	start_fake_clamd sizelimit tcp
	big_message "$T/body" 200000
	session "$T/body"
	filter < "$T/in"
	scan_failed "INSTREAM size limit exceeded"
}

# =========================================================================
# clamd works

@test "real clamd over the unix socket: a clean message is delivered" {
	start_server
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 250 221" ]
	[ "$(count_messages)" = 1 ]
	without_header "$SRV/msg-1.eml" | cmp - "$T/body"
	grep -q 'status=CLEAN, size=[0-9]*, server=250' "$T/err"
}

# dropped_as NAME - the drop reply, nothing delivered, RSET, NAME logged
dropped_as() {
	[ "$(codes)" = "220 250 250 250 354 250 250 221" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	[[ "$(commands_line)" =~ $ABANDONED ]]
	grep -q "status=VIRUS:$1, size=[0-9]*, clamd=" "$T/err"
}

@test "real clamd over the unix socket: EICAR is dropped with 250 2.7.0" {
	start_server
	eicar "$T/body"
	printf '\r\n' >> "$T/body"
	session "$T/body"
	filter < "$T/in"
	dropped_as 'Eicar-Test-Signature.UNOFFICIAL'
}

@test "real clamd over TCP: a clean message is delivered" {
	start_server
	CLAMADDR=$CLAMD_TCP
	big_message "$T/body" 300000
	session "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 250 221" ]
	[ "$(count_messages)" = 1 ]
	without_header "$SRV/msg-1.eml" | cmp - "$T/body"
}

@test "fake clamd FOUND: dropped, the fake's virus name in the log" {
	start_server
	start_fake_clamd found unix --virus Fake.Worm-42.UNOFFICIAL
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	dropped_as 'Fake.Worm-42.UNOFFICIAL'
}

@test "fake clamd FOUND with -b: 550 names the fake's virus" {
	start_server
	start_fake_clamd found unix --virus Fake.Worm-42.UNOFFICIAL
	a_message "$T/body"
	session "$T/body"
	filter -b < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 550 250 221" ]
	grep -q $'^550 5.7.1 Virus detected (Fake.Worm-42.UNOFFICIAL); message rejected\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	[[ "$(commands_line)" =~ $ABANDONED ]]
}

# =========================================================================
# the server fails

@test "server down at connect: 421 4.3.0 and exit" {
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	SERVER=127.0.0.1:$port
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(tr -d '\r' < "$T/out")" = "421 4.3.0 Cannot connect to the mail server" ]
	[ "$(cat "$T/rc")" != 0 ]
	grep -q "cannot connect to server" "$T/err"
}

@test "server closes before its greeting: 421 4.3.0 and exit" {
	start_server --hangup greeting
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(tr -d '\r' < "$T/out")" = "421 4.3.0 Connection to the mail server lost" ]
	[ "$(count_messages)" = 0 ]
}

@test "server says 421 to MAIL (and carries on): the client gets the 421, never a false 250" {
	start_server --reply 'mail=421 4.3.2 Shutting down'
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes | cut -d' ' -f1-3)" = "220 250 421" ]
	grep -q $'^421 4.3.2 Shutting down\r$' "$T/out"
	if [ "$(codes)" = "220 250 421" ]; then
		# the session ended at the 421 (RFC 5321 3.8): nothing more was sent
		[ "$(commands_line)" = "EHLO c MAIL FROM:<sender@example.test> " ]
		[ "$(count_messages)" = 0 ]
	else
		# it went on: a 250 after the 354 only for a message the server took
		after=$(codes | sed -n 's/.* 354 \([0-9]*\).*/\1/p')
		if [ "$after" = 250 ]; then [ "$(count_messages)" = 1 ]; else [ "$(count_messages)" = 0 ]; fi
	fi
}

@test "server says 421 to MAIL and closes: the client gets the 421, the session ends" {
	start_server --reply 'mail=421 4.3.2 Shutting down' --hangup rcpt
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[[ "$(codes)" =~ ^"220 250 421"( 421)?$ ]]
	grep -q $'^421 4.3.2 Shutting down\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	[[ "$(commands_line)" =~ ^"EHLO c MAIL FROM:<sender@example.test> "("RCPT TO:<rcpt@example.test> ")?$ ]]
}

@test "server hangs at RCPT past -t: 421 Connection to the mail server lost, quickly" {
	TIMEOUT=2
	start_server --hang rcpt
	a_message "$T/body"
	session "$T/body"
	start=$(date +%s)
	filter < "$T/in"
	took=$(( $(date +%s) - start ))
	[ "$(codes)" = "220 250 250 421" ]
	grep -q $'^421 4.3.0 Connection to the mail server lost\r$' "$T/out"
	[ "$took" -le 5 ]
	[ "$(count_messages)" = 0 ]
	! server_commands | grep -q '^DATA' || false
}

@test "server hangs up on DATA: the client gets a 4xx, not 250" {
	start_server --hangup data
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(codes | cut -d' ' -f1-5)" = "220 250 250 250 354" ]
	[[ "$(codes | cut -d' ' -f6)" = 4?? ]]
	grep -q $'^451 4.3.0 Error passing message on, try again later\r$' "$T/out"
	! codes | cut -d' ' -f6- | grep -q 250 || false
	[ "$(count_messages)" = 0 ]
	grep -q 'status=ERROR:' "$T/err"
}

@test "server hangs up after the final dot without a reply: 451, never 250" {
	start_server --hangup dataend
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(codes | cut -d' ' -f1-6)" = "220 250 250 250 354 451" ]
	! codes | cut -d' ' -f6- | grep -q 250 || false
	# the server got the bytes but never said it took them
	[ -e "$SRV/msg-1.dropped" ]
	[ "$(ls "$SRV" | grep -c '\.raw$' )" -ge 1 ]
	[ "$(ls "$SRV" | grep -c '^msg-.*\.dropped$')" = "$(count_messages)" ]
}

@test "server says 452 at the end of data: the client gets exactly that 452" {
	start_server --reply 'dataend=452 4.3.1 Insufficient storage'
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 452 250 221" ]
	grep -q $'^452 4.3.1 Insufficient storage\r$' "$T/out"
	grep -q 'server=452' "$T/err"
}

@test "server says 554 to DATA: the client gets the 554" {
	start_server --reply 'data=554 5.5.1 no'
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 554 250 221" ]
	grep -q $'^554 5.5.1 no\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
}

# =========================================================================
# the client goes away (EOF on stdin) at every stage

@test "client hangs up right after connecting: clamsmtpd exits, QUITs the server" {
	start_server
	printf 'close\nwait 5\n' > "$T/script"
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(commands_line)" = "QUIT " ]
}

@test "client hangs up right after the greeting: clamsmtpd exits" {
	start_server
	printf 'reply\neof\ndrain\nwait 5\n' > "$T/script"
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = 220 ]
	[ "$(commands_line)" = "QUIT " ]
}

@test "client hangs up after MAIL: clamsmtpd exits" {
	start_server
	cat > "$T/script" <<-'EOF'
	send EHLO c\r\nMAIL FROM:<sender@example.test>\r\n
	reply 3
	eof
	drain
	wait 5
	EOF
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250" ]
	[ "$(commands_line)" = "EHLO c MAIL FROM:<sender@example.test> QUIT " ]
	[ "$(count_messages)" = 0 ]
}

@test "client hangs up in the middle of the body: nothing delivered, no spool" {
	start_server
	big_message "$T/body" 100000
	head -c 50000 "$T/body" > "$T/half"
	cat > "$T/script" <<-EOF
	send EHLO c\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n
	reply 5
	sendfile $T/half
	eof
	drain
	wait 5
	EOF
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354" ]
	[ "$(count_messages)" = 0 ]
	[ "$(commands_line)" = "EHLO c MAIL FROM:<sender@example.test> RCPT TO:<rcpt@example.test> QUIT " ]
}

@test "client hangs up right after the final dot: clamsmtpd exits, no spool" {
	start_server
	a_message "$T/body"
	cat > "$T/script" <<-EOF
	send EHLO c\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n
	reply 5
	sendfile $T/body
	send .\r\n
	close
	wait 10
	EOF
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	# the message was complete: it may go on, but once at most
	[ "$(count_messages)" -le 1 ]
	[ "$(server_commands | tail -n1)" = QUIT ]
}

# =========================================================================
# clamsmtpd killed, the disk full

@test "kill -9 in the middle of the body leaves no spool file" {
	start_server
	big_message "$T/body" 100000
	head -c 50000 "$T/body" > "$T/half"
	cat > "$T/script" <<-EOF
	send EHLO c\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n
	reply 5
	sendfile $T/half
	sleep 0.5
	# the spool is open (a deleted file under the spool dir), and has no name
	shell ls -l /proc/\$PID/fd | grep -q '$SPOOL/clamsmtpd\\..* (deleted)'
	shell [ -z "\$(ls -A '$SPOOL')" ]
	kill9
	wait 5
	shell [ -z "\$(ls -A '$SPOOL')" ]
	EOF
	drive "$T/script"
	[ "$(cat "$T/rc")" = 137 ]
	[ -z "$(ls -A "$SPOOL")" ]
	[ "$(count_messages)" = 0 ]
	! server_commands | grep -q '^DATA' || false
}

@test "disk full (small tmpfs as -D): 452 4.3.1, RSET, nothing delivered" {
	small_spool
	start_server
	big_message "$T/body" 1000000
	session "$T/body"
	SPOOL_ORIG=$SPOOL
	SPOOL=$T/small
	filter < "$T/in"
	SPOOL=$SPOOL_ORIG
	[ -z "$(ls -A "$T/small")" ]
	umount "$T/small"
	MOUNTED=
	[ "$(codes)" = "220 250 250 250 354 452 250 221" ]
	grep -q $'^452 4.3.1 Insufficient system storage\r$' "$T/out"
	[[ "$(commands_line)" =~ $ABANDONED ]]
	[ "$(count_messages)" = 0 ]
	grep -q 'status=ERROR:spool: No space left on device' "$T/err"
}

@test "file size limit (ulimit -f): 452 4.3.1, SIGXFSZ does not kill clamsmtpd" {
	start_server
	big_message "$T/body" 1000000
	session "$T/body"
	( ulimit -f 256; filter < "$T/in" )
	[ "$(cat "$T/rc")" = 0 ]    # 153 = killed by SIGXFSZ
	[ "$(codes)" = "220 250 250 250 354 452 250 221" ]
	grep -q $'^452 4.3.1 Insufficient system storage\r$' "$T/out"
	[[ "$(commands_line)" =~ $ABANDONED ]]
	[ "$(count_messages)" = 0 ]
}

# =========================================================================
# timeouts: keep an idle server awake; give up on a silent client

@test "a slow client: the idle server is kept awake with NOOP, the mail arrives" {
	# 13 lines a second apart: within -t for the body (SPEC 2), but longer
	# than the server's idle timeout; NOOPs go out every -t/2 = 10 s
	TIMEOUT=20
	start_server --idle-timeout 12
	a_message "$T/body"
	for i in $(seq 8); do printf 'Line %d of a slow body.\r\n' "$i"; done >> "$T/body"
	[ "$(wc -l < "$T/body")" -ge 12 ]
	cat > "$T/script" <<-EOF
	send EHLO c\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n
	reply 5
	slowfile $T/body 1
	send .\r\n
	reply
	send QUIT\r\n
	reply
	wait 25
	EOF
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	without_header "$SRV/msg-1.eml" | cmp - "$T/body"
	! grep -q 'IDLE-TIMEOUT' "$SRV/commands.log" || false
	[[ "$(commands_line)" =~ ^"EHLO c MAIL FROM:<sender@example.test> RCPT TO:<rcpt@example.test> "(NOOP )+"DATA QUIT "$ ]]
	[ "$(server_commands | grep -c '^NOOP$')" -ge 1 ]
}

@test "a client silent after EHLO: 421 4.4.2 after -t, and clamsmtpd exits" {
	TIMEOUT=2
	start_server
	cat > "$T/script" <<-'EOF'
	send EHLO c\r\n
	reply 2
	mark
	reply
	wait 5
	EOF
	drive "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 421" ]
	grep -q $'^421 4.4.2 Timeout waiting for input, closing connection\r$' "$T/out"
	elapsed_under 4
	[ "$(commands_line)" = "EHLO c QUIT " ]
}

@test "a client silent after EHLO on a pipe (stdin kept open): 421 4.4.2, exit" {
	TIMEOUT=2
	start_server
	start=$(date +%s)
	{ printf 'EHLO c\r\n'; sleep 4; } | filter
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 421" ]
	grep -q $'^421 4.4.2 Timeout waiting for input, closing connection\r$' "$T/out"
	grep -q 'client timed out' "$T/err"
}

@test "clamd's 'OK' cut short before its terminator, then silence: 451, never clean" {
	TIMEOUT=2
	start_server
	start_fake_clamd cut-ok
	a_message "$T/body"
	session "$T/body"
	filter < "$T/in"
	scan_failed "cut short"
}
