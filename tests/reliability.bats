#!/usr/bin/env bats
# Reliability: issue 9. Sequences rather than single steps: a message after
# a fault, replies that do not make sense, clamd answers that come too soon
# or say two things, clients that trickle, sessions told to stop, and what a
# session leaves behind (the log line, the pipe's flags). Each test here
# failed before the fixes of issue 9 (unless it says it is a guard).

load helpers

# The helpers' teardown under another name: ours first shows what happened.
eval "helpers_$(declare -f teardown)"

teardown() {
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then       # failed: show what happened
		echo "--- replies:" >&2; tr -d "\r" < "$T/out" 2>/dev/null | tail -20 >&2
		echo "--- log:" >&2; tail -30 "$T/err" >&2 2>/dev/null
	fi
	helpers_teardown
	# under a sanitizer build, a report in the log fails the test
	if grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$T/err" 2>/dev/null; then
		grep -E -A20 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$T/err" >&2
		return 1
	fi
}

# --- messages ---------------------------------------------------------------

# message FILE BYTES [SEED] - a message as stored (unstuffed, CRLF lines) of
# about BYTES: a header, then body lines of varied length, some of them
# starting with a dot, one a lone dot
message() {
	python3 - "$1" "$2" "${3:-1}" <<-'EOF'
	import random, sys
	path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
	rnd = random.Random(seed)
	out = bytearray(b"From: sender@example.test\r\nTo: rcpt@example.test\r\n"
	                b"Subject: message %d\r\n\r\n" % seed)
	n = 0
	while len(out) < size:
	    n += 1
	    kind = rnd.randrange(8)
	    text = b"line %d of message %d " % (n, seed) + b"x" * rnd.randrange(60)
	    if kind == 0:
	        text = b"." + text
	    elif kind == 1:
	        text = b"."
	    elif kind == 2:
	        text = b".." + text
	    out += text + b"\r\n"
	open(path, "wb").write(bytes(out))
	EOF
}

# plain_message FILE BYTES [SEED] - the same without any line starting with a dot
plain_message() {
	message "$1" "$2" "${3:-1}"
	sed -i 's/^\./-/' "$1"
}

# stuffed FILE OUT - what a client sends for the stored message FILE (dots doubled)
stuffed() {
	sed 's/^\./../' "$1" > "$2"
}

# eicar_message FILE - a message whose body is the EICAR line
eicar_message() {
	printf 'From: sender@example.test\r\nSubject: eicar\r\n\r\n' > "$1"
	"$TESTS/eicar.sh" >> "$1"
	printf '\r\n' >> "$1"
}

# delivered_as N FILE - the server's message N is FILE behind the added header line
delivered_as() {
	without_header "$SRV/msg-$1.eml" | cmp - "$2"
}

# log_lines - the per-message log lines, one each
log_lines() {
	grep -E ': [0-9A-F]+\.[0-9]+: status=' "$T/err" || true
}

# --- clamd that comes and goes ------------------------------------------
#
# CLAMADDR is a symbolic link: clamd_up points it at a socket, clamd_down
# removes it, so clamd is "unreachable" for some messages of one session.

clamd_link() {
	CLAMADDR=$T/clamd.sock
}

# --- a scripted client --------------------------------------------------
#
# play SCRIPT [flags]   clamsmtpd in stdio mode (-d 4, -t ${TIMEOUT:-10},
#                       -D $SPOOL, -c $CLAMADDR, flags, $SERVER) on one end
#                       of a socketpair; the log goes to $T/err
# play_at ADDR SCRIPT   a client of a listener at host:port
# The steps of SCRIPT are those of tests/smtp-play.py (replies go to $T/out).
# A failed step fails the script (the reason on stderr).
play() {
	local script=$1
	shift
	python3 "$TESTS/smtp-play.py" "$script" "$T" "$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" \
		-D "$SPOOL" -c "$CLAMADDR" "$@" "$SERVER"
}

play_at() {
	python3 "$TESTS/smtp-play.py" "$2" "$T" --connect "$1"
}

# envelope_steps [FROM] - the script lines of MAIL, RCPT, DATA and their replies
envelope_steps() {
	printf 'send MAIL FROM:<%s>\\r\\nRCPT TO:<rcpt@example.test>\\r\\nDATA\\r\\n\nreply 3\n' \
		"${1:-sender@example.test}"
}

# --- a listener ---------------------------------------------------------

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# listener [flags] - clamsmtpd -d 4 -l 127.0.0.1:PORT in the background; LISTEN, LPID; log in $T/err
listener() {
	local port
	port=$(free_port)
	LISTEN=127.0.0.1:$port
	"$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" \
		-l "$LISTEN" "$@" "$SERVER" 2>> "$T/err" < /dev/null &
	LPID=$!
	echo "$LPID" >> "$T/pids"
	wait_file "$T/clamsmtpd.pid"
}

# =========================================================================
# 1. the spool of a session is reused: each message from offset 0

@test "spool reuse: after a scan that never reached clamd, the next messages arrive byte-identical" {
	start_server
	clamd_link
	message "$T/m1" 40000 1
	message "$T/m2" 12000 2          # with dot lines
	plain_message "$T/m3" 9000 3     # without
	cat > "$T/script" <<-EOF
	send EHLO c\r\n
	reply 2
	$(envelope_steps)
	stuffed $T/m1
	reply
	shell ln -s '$CLAMD_SOCK' '$T/clamd.sock'
	$(envelope_steps)
	stuffed $T/m2
	reply
	$(envelope_steps)
	stuffed $T/m3
	reply
	send QUIT\r\n
	reply
	wait 10
	EOF
	play "$T/script"
	[ "$(codes)" = "220 250 250 250 354 451 250 250 354 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 2 ]
	[ "$(tr -cd '\000' < "$SRV/msg-1.eml" | wc -c)" = 0 ]      # no hole of NULs
	delivered_as 1 "$T/m2"
	delivered_as 2 "$T/m3"
	log_lines > "$T/lines"
	[ "$(wc -l < "$T/lines")" = 3 ]
	sed -n 2p "$T/lines" | grep -q "status=CLEAN, size=$(stat -c %s "$T/m2"), "
	sed -n 3p "$T/lines" | grep -q "status=CLEAN, size=$(stat -c %s "$T/m3"), "
}

@test "spool reuse: five messages in one session over TCP clamd (INSTREAM) all get 250 and arrive intact" {
	start_server
	CLAMADDR=$CLAMD_TCP
	printf 'EHLO c\r\n' > "$T/in"
	for i in 1 2 3 4 5; do
		message "$T/m$i" $(( 70000 - i * 9000 )) "$i"
		envelope >> "$T/in"
		stuffed "$T/m$i" "$T/s$i"
		cat "$T/s$i" >> "$T/in"
		printf '.\r\n' >> "$T/in"
	done
	printf 'QUIT\r\n' >> "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 250 250 354 250 250 250 354 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 5 ]
	for i in 1 2 3 4 5; do delivered_as "$i" "$T/m$i"; done
	[ "$(log_lines | grep -c 'status=CLEAN')" = 5 ]
}

@test "spool reuse: after a spool write error (full tmpfs), a small next message is delivered, not 452" {
	small_spool
	start_server
	plain_message "$T/big" 1000000 1
	message "$T/m2" 20000 2
	stuffed "$T/m2" "$T/s2"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/big"; printf '.\r\n'
	  envelope; cat "$T/s2"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	SPOOL_ORIG=$SPOOL
	SPOOL=$T/small
	filter < "$T/in"
	SPOOL=$SPOOL_ORIG
	[ -z "$(ls -A "$T/small")" ]
	umount "$T/small"
	MOUNTED=
	[ "$(codes)" = "220 250 250 250 354 452 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/m2"
}

@test "spool reuse, listener mode: after clamd was unreachable, the next message of the connection arrives intact" {
	start_server
	clamd_link
	listener
	message "$T/m1" 30000 1
	message "$T/m2" 10000 2
	cat > "$T/script" <<-EOF
	reply
	send EHLO c\r\n
	reply
	$(envelope_steps)
	stuffed $T/m1
	reply
	shell ln -s '$CLAMD_SOCK' '$T/clamd.sock'
	$(envelope_steps)
	stuffed $T/m2
	reply
	send QUIT\r\n
	reply
	EOF
	play_at "$LISTEN" "$T/script"
	[ "$(codes)" = "220 250 250 250 354 451 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/m2"
}

@test "spool reuse, listener mode: three messages of one connection over TCP clamd all arrive" {
	start_server
	CLAMADDR=$CLAMD_TCP
	listener
	: > "$T/script"
	echo 'reply' >> "$T/script"
	echo 'send EHLO c\r\n' >> "$T/script"
	echo 'reply' >> "$T/script"
	for i in 1 2 3; do
		message "$T/m$i" $(( 40000 - i * 10000 )) "$i"
		envelope_steps >> "$T/script"
		echo "stuffed $T/m$i" >> "$T/script"
		echo 'reply' >> "$T/script"
	done
	printf 'send QUIT\\r\\n\nreply\n' >> "$T/script"
	play_at "$LISTEN" "$T/script"
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 250 250 354 250 221" ]
	for i in 1 2 3; do delivered_as "$i" "$T/m$i"; done
}

# =========================================================================
# 2. replies that make no sense: the server is lost

@test "a multi-line reply with mixed codes to MAIL: 421 server lost, never relayed" {
	start_server --reply 'mail=250-2.1.0 fine\n550 5.1.0 not fine'
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 421" ]
	grep -q $'^421 4.3.0 Connection to the mail server lost\r$' "$T/out"
	! grep -q 'fine' "$T/out" || false
	! server_commands | grep -q '^RCPT' || false
}

@test "a mixed-code reply at the end of data ('451-' then '250 '): never 250 for the message" {
	start_server --reply 'dataend=451-4.3.0 not taken\n250 2.0.0 Ok: queued as X1'
	message "$T/m1" 3000 1
	stuffed "$T/m1" "$T/s1"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/s1"; printf '.\r\nMAIL FROM:<a@example.test>\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 451 421" ]
	! grep -q 'queued as' "$T/out" || false
	! grep -q 'status=CLEAN' "$T/err" || false
}

@test "the server refuses the client's RSET: 421, the session ends, nothing more goes through it" {
	start_server --reply 'rset=502 5.5.2 no reset here'
	a_message "$T/m"
	{ printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRSET\r\n'; envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 421" ]
	grep -q $'^421 4.3.0 Connection to the mail server lost\r$' "$T/out"
	[ "$(server_commands | grep -c '^MAIL')" = 1 ]
	[ "$(count_messages)" = 0 ]
}

@test "the server refuses the filter's RSET after a virus: the next MAIL gets 421, no message goes on" {
	start_server --reply 'rset=554 5.5.0 no'
	eicar_message "$T/virus"
	a_message "$T/m"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/virus"; printf '.\r\n'
	  envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 421" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(server_commands | grep -c '^MAIL')" = 1 ]
	! server_commands | grep -q '^DATA' || false
	[ "$(count_messages)" = 0 ]
}

@test "the server refuses the filter's RSET after a scan failure: 451, then 421, no message goes on" {
	start_server --reply 'rset=500 5.5.1 what'
	CLAMADDR=$T/no-clamd.sock
	a_message "$T/m"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/m"; printf '.\r\n'
	  envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 451 421" ]
	[ "$(server_commands | grep -c '^MAIL')" = 1 ]
	[ "$(count_messages)" = 0 ]
}

# =========================================================================
# 3. clamd: only the first reply counts, and only after the whole spool

@test "clamd says FOUND, then OK (newline between): a virus, never clean" {
	start_server
	start_fake_clamd answer unix --answer 'fd[9]: Evil.Test-1 FOUND\nfd[9]: OK\0'
	a_message "$T/m"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	grep -q 'status=VIRUS:Evil.Test-1,' "$T/err"
}

@test "clamd says OK, then FOUND (newline between): the first reply, OK, counts" {
	start_server
	start_fake_clamd answer unix --answer 'fd[9]: OK\nfd[9]: Evil.Test-2 FOUND\0'
	a_message "$T/m"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/m"
	grep -q 'status=CLEAN,' "$T/err"
}

@test "TCP clamd says FOUND, then OK: a virus, never clean" {
	start_server
	start_fake_clamd answer tcp --answer 'stream: Evil.Test-3 FOUND\nstream: OK\0'
	a_message "$T/m"
	{ printf 'EHLO c\r\n'; envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 0 ]
	grep -q 'status=VIRUS:Evil.Test-3,' "$T/err"
}

@test "TCP clamd answers OK after the first chunk of a large message and reads on: 451, never clean" {
	start_server
	start_fake_clamd early-ok tcp
	plain_message "$T/big" 8000000 1
	{ printf 'EHLO c\r\n'; envelope; cat "$T/big"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 451 221" ]
	grep -q $'^451 4.3.0 Virus scan failed, try again later\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	! server_commands | grep -q '^DATA' || false
	grep -q 'status=ERROR:scan failed' "$T/err"
}

# =========================================================================
# 4. EHLO keywords end at a space or a TAB

@test "EHLO: 'STARTTLS<TAB>foo' and 'PIPELINING<TAB>' are removed; the reply stays well-formed" {
	start_server --reply "$(printf 'ehlo=250-recorder.test\\n250-STARTTLS\tfoo\\n250-PIPELINING\t\\n250-SIZE 1000\\n250 CHUNKING\t')"
	printf 'EHLO c\r\nQUIT\r\n' | filter
	tr -d '\r' < "$T/out" > "$T/plain"
	! grep -qiE 'STARTTLS|PIPELINING|CHUNKING' "$T/plain" || false
	grep -q '^250-recorder.test$' "$T/plain"
	grep -q '^250 SIZE 1000$' "$T/plain"
	[ "$(codes)" = "220 250 221" ]
}

# =========================================================================
# 5. a -h header that starts with a dot would lose its dot

@test "-h '.X: y' is a usage error: exit 2, one line on stderr" {
	rc=0
	printf 'QUIT\r\n' | timeout 10 "$CLAMSMTPD" -h '.X: y' -D "$SPOOL" -c "$CLAMADDR" 127.0.0.1:1 \
		> "$T/out" 2> "$T/err" || rc=$?
	[ "$rc" = 2 ]
	[ "$(wc -l < "$T/err")" = 1 ]
	grep -q -- '-h' "$T/err"
	[ ! -s "$T/out" ]
}

# =========================================================================
# 6. time limits: a trickle cannot stretch -t (SPEC 2)

@test "a command trickled one byte a second, -t 3: 421 4.4.2 while it trickles, not held" {
	TIMEOUT=3
	start_server
	cat > "$T/script" <<-'EOF'
	send EHLO c\r\n
	reply 2
	trickle 1 MAIL FROM
	within 3
	reply
	wait 5
	EOF
	play "$T/script"
	grep -q ' cut$' "$T/trickled"
	[ "$(codes)" = "220 250 421" ]
	grep -q $'^421 4.4.2 Timeout waiting for input, closing connection\r$' "$T/out"
	! server_commands | grep -q '^MAIL' || false
}

@test "a body trickled at 100 bytes a second, -t 3: 421 4.4.2 once 64 KiB did not come within -t" {
	TIMEOUT=3
	start_server
	plain_message "$T/m" 1000 1
	cat > "$T/script" <<-EOF
	send EHLO c\r\n
	reply 2
	$(envelope_steps)
	tricklefile 100 $T/m
	within 3
	reply
	wait 5
	EOF
	play "$T/script"
	grep -q ' cut$' "$T/trickled"
	[ "$(codes)" = "220 250 250 250 354 421" ]
	grep -q $'^421 4.4.2 Timeout waiting for input, closing connection\r$' "$T/out"
	grep -q 'status=ERROR:client timed out in the body' "$T/err"
	[ "$(count_messages)" = 0 ]
	! server_commands | grep -q '^DATA' || false
}

@test "guard: a body that comes 80 KiB a second for 5 s, -t 3, is not cut off" {
	TIMEOUT=3
	start_server
	message "$T/m" 400000 1
	stuffed "$T/m" "$T/s"
	printf '.\r\n' >> "$T/s"
	cat > "$T/script" <<-EOF
	send EHLO c\r\n
	reply 2
	$(envelope_steps)
	pieces $T/s 81920 1
	reply
	send QUIT\r\n
	reply
	wait 5
	EOF
	play "$T/script"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	delivered_as 1 "$T/m"
}

# =========================================================================
# 7. the log line: our fields first (SPEC 9.3), errno never stale

@test "log line: a sender address holding ', status=CLEAN, ' cannot come before the real status" {
	start_server
	eicar_message "$T/virus"
	{ printf 'EHLO c\r\nMAIL FROM:<"x, status=CLEAN, "@example.org>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n'
	  cat "$T/virus"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	line=$(log_lines)
	[ -n "$line" ]
	[[ "$line" =~ :\ [0-9A-F]+\.[0-9]+:\ status=VIRUS:Eicar-Test-Signature ]]
	first=${line#*status=}
	[[ "$first" == VIRUS:* ]]
	# a dropped virus was not sent on: no server= field (not the RSET's 250)
	[[ "$line" != *server=* ]]
}

@test "log line: fields in SPEC 9.3 order; XFORWARD ADDR/IDENT as client=/qid=, queued_as from the reply, UTF-8 kept" {
	start_server --reply 'dataend=250 2.0.0 Ok: queued as 4XyZ9'
	a_message "$T/m"
	{ printf 'EHLO c\r\nXFORWARD ADDR=192.0.2.7 IDENT=ABC123\r\n'
	  printf 'MAIL FROM:<j\xc3\xb6e@ex\xc3\xa4mple.org>\r\nRCPT TO:<r\xc3\xa9@example.test>\r\nDATA\r\n'
	  cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 250 354 250 221" ]
	line=$(log_lines)
	size=$(stat -c %s "$T/m")
	re=": [0-9A-F]+\.[0-9]+: status=CLEAN, size=$size, server=250, queued_as=4XyZ9, clamd=[^,]+, scan_ms=[0-9]+, client=192\.0\.2\.7, qid=ABC123, from=<j"$'\xc3\xb6'"e@ex"$'\xc3\xa4'"mple\.org>, to=<r"$'\xc3\xa9'"@example\.test>$"
	[[ "$line" =~ $re ]]
}

@test "log line: a connect to the server that times out (full backlog) says 'timed out'" {
	TIMEOUT=2
	python3 - "$T/backlog" <<-'EOF' &
	import os, socket, sys, time
	ls = socket.socket()
	ls.bind(("127.0.0.1", 0))
	ls.listen(0)
	fill = []
	for _ in range(3):                  # the queue is full: later SYNs are dropped
	    s = socket.socket()
	    s.setblocking(False)
	    try:
	        s.connect(ls.getsockname())
	    except BlockingIOError:
	        pass
	    fill.append(s)
	time.sleep(0.3)
	open(sys.argv[1] + ".tmp", "w").write("%d\n" % ls.getsockname()[1])
	os.rename(sys.argv[1] + ".tmp", sys.argv[1])
	time.sleep(60)
	EOF
	echo $! >> "$T/pids"
	wait_file "$T/backlog"
	SERVER=127.0.0.1:$(cat "$T/backlog")
	printf 'QUIT\r\n' | filter
	[ "$(codes)" = "421" ]
	grep -q $'^421 4.3.0 Cannot connect to the mail server\r$' "$T/out"
	grep -qi 'cannot connect to server.*timed out' "$T/err"
}

# =========================================================================
# 8. stopping a session (SPEC 2)

@test "guard: SIGTERM to an idle session: 421 4.3.2 at once, and it exits" {
	start_server
	cat > "$T/script" <<-'EOF'
	send EHLO c\r\n
	reply 2
	signal TERM
	within 3
	reply
	wait 3
	EOF
	play "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 421" ]
	grep -q $'^421 4.3.2 Service shutting down\r$' "$T/out"
}

@test "guard: SIGTERM in the middle of DATA: the message is finished (250), then 421 at the next wait" {
	start_server
	message "$T/m" 200000 1
	stuffed "$T/m" "$T/s"
	head -c 100000 "$T/s" > "$T/s1"
	tail -c +100001 "$T/s" > "$T/s2"
	printf '.\r\n' >> "$T/s2"
	cat > "$T/script" <<-EOF
	send EHLO c\r\n
	reply 2
	$(envelope_steps)
	sendfile $T/s1
	sleep 0.3
	signal TERM
	sleep 0.3
	sendfile $T/s2
	reply
	within 3
	reply
	wait 3
	EOF
	play "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 421" ]
	grep -q $'^421 4.3.2 Service shutting down\r$' "$T/out"
	delivered_as 1 "$T/m"
}

@test "after the client's EOF, a server that never answers QUIT is not waited for" {
	TIMEOUT=10
	start_server --hang quit
	cat > "$T/script" <<-'EOF'
	send EHLO c\r\n
	reply 2
	eof
	wait 3
	EOF
	play "$T/script"
	[ "$(cat "$T/rc")" = 0 ]
	grep -q 'QUIT' "$SRV/commands.log"
}

@test "SIGTERM again and again during a slow clamd connect and scan: no scan failure, then 421" {
	start_server
	start_fake_clamd ok unix --accept-delay 1 --delay 1
	a_message "$T/m"
	cat > "$T/script" <<-EOF
	send EHLO c\r\n
	reply 2
	$(envelope_steps)
	sigloop TERM 0.05
	sendfile $T/m
	send .\r\n
	reply
	sigstop
	within 3
	reply
	wait 3
	EOF
	play "$T/script"
	[ "$(codes)" = "220 250 250 250 354 250 421" ]
	delivered_as 1 "$T/m"
	grep -q 'status=CLEAN' "$T/err"
	! grep -qi 'scan failed\|clamd .* failed' "$T/err" || false
}

# =========================================================================
# 9. the pipe's flags are left as they were found

# pipe_flags [flags] - clamsmtpd on two pipes from a parent that keeps its
# own ends of the same open files; "in=X out=Y" O_NONBLOCK afterwards
pipe_flags() {
	python3 - "$CLAMSMTPD" -d 4 -t 10 -D "$SPOOL" -c "$CLAMADDR" "$@" <<-'EOF'
	import fcntl, os, subprocess, sys
	cmd = sys.argv[1:]
	nonblock_first = os.environ.get("NONBLOCK_FIRST") == "1"
	in_r, in_w = os.pipe()
	out_r, out_w = os.pipe()
	if nonblock_first:
	    for fd in (in_r, out_w):
	        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
	os.write(in_w, b"EHLO c\r\nQUIT\r\n")
	os.close(in_w)
	err = open(os.environ["T"] + "/err", "ab")
	child = subprocess.Popen(cmd, stdin=in_r, stdout=out_w, stderr=err)
	child.wait(timeout=20)
	def nb(fd):
	    return int(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK))
	os.set_blocking(out_r, False)
	try:
	    open(os.environ["T"] + "/out", "wb").write(os.read(out_r, 65536))
	except BlockingIOError:
	    pass
	print("in=%d out=%d" % (nb(in_r), nb(out_w)))
	EOF
}

@test "stdio on pipes: O_NONBLOCK is off again on the pipes when the session ends" {
	start_server
	export T
	[ "$(pipe_flags "$SERVER")" = "in=0 out=0" ]
	[ "$(codes)" = "220 250 221" ]
	# the early way out too: the server cannot be reached
	[ "$(pipe_flags 127.0.0.1:1)" = "in=0 out=0" ]
	grep -q '^421 4.3.0 Cannot connect' "$T/out"
	# and a pipe that was non-blocking stays so
	[ "$(NONBLOCK_FIRST=1 pipe_flags "$SERVER")" = "in=1 out=1" ]
}

# =========================================================================
# 10. the tenth message after a fault in the ninth: faults in turn

@test "ten messages in one session with clamd down, a server 452 and viruses in turn: every 250 is intact" {
	# the server's third message (the client's fourth) gets 452
	start_server --reply-nth 'dataend:3=452 4.3.1 Try later'
	clamd_link
	ln -s "$CLAMD_SOCK" "$T/clamd.sock"
	eicar_message "$T/virus"
	message "$T/m1" 30000 1
	message "$T/m3" 90000 3
	message "$T/m4" 5000 4
	plain_message "$T/m6" 20000 6
	message "$T/m8" 250000 8
	message "$T/m10" 3000 10
	up="shell ln -sf '$CLAMD_SOCK' '$T/clamd.sock'"
	down="shell rm -f '$T/clamd.sock'"
	{
		printf 'send EHLO c\\r\\n\nreply 2\n'
		for step in m1 "$down" m2 "$up" m3 m4 virus m6 "$down" m7 "$up" m8 virus m10; do
			case "$step" in
			shell*) echo "$step"; continue ;;
			m2|m7) message "$T/$step" 60000 "${step#m}" ;;
			esac
			envelope_steps
			echo "stuffed $T/$step"
			echo reply
		done
		printf 'send QUIT\\r\\n\nreply\nwait 10\n'
	} > "$T/script"
	play "$T/script"
	#            m1  m2  m3  m4  virus m6 m7  m8  virus m10
	[ "$(codes | sed 's/250 250 354 //g')" = "220 250 250 451 250 452 250 250 451 250 250 250 221" ]
	[ "$(count_messages)" = 6 ]
	delivered_as 1 "$T/m1"
	delivered_as 2 "$T/m3"
	delivered_as 4 "$T/m6"
	delivered_as 5 "$T/m8"
	delivered_as 6 "$T/m10"
	[ "$(log_lines | wc -l)" = 10 ]
	[ "$(log_lines | grep -c 'status=CLEAN, size=[0-9]*, server=250')" = 5 ]
}
