#!/usr/bin/env bats
# A real Postfix in front of clamsmtpd, as its after-queue content filter,
# with the exact main.cf/master.cf lines of tests/postfix-example.cf:
#
#   swaks -> Postfix smtpd :SUBMIT -> queue -> scan transport -> clamsmtpd
#         -> re-injection smtpd :REINJECT -> queue -> smtp-recorder.py
#
# Two ways to run clamsmtpd: "listener" (its own daemon, -l) and "spawn"
# (Postfix's spawn(8) starts one per connection, as an unprivileged user).
# Each test gets a private Postfix instance, clamd and recording server in a
# directory of its own (see tests/postfix-instance.sh); all on 127.0.0.1.
# Needs root (Postfix's master) and Debian's postfix package.
# POSTFIX_LOGS=1 prints the maillog and clamsmtpd's log after each test.

load helpers

PATH=$PATH:/usr/sbin:/usr/lib/postfix/sbin
SPAWN_USER=nobody

# free_ports N - N different free TCP ports on 127.0.0.1, one a line
free_ports() {
	python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
for s in socks:
    print(s.getsockname()[1])' "$1"
}

# Nothing is shared between tests: no per-file clamd.
setup_file() { :; }
teardown_file() { :; }

setup() {
	command -v postfix >/dev/null 2>&1 || skip "postfix is not installed (apt-get install postfix)"
	[ "$(id -u)" = 0 ] || skip "a private Postfix instance needs root"
	# Not under bats' 0700 directory: in spawn mode clamsmtpd runs as
	# $SPAWN_USER and must reach its spool directory and clamd's socket.
	T=$(mktemp -d "${TMPDIR:-/tmp}/clamsmtpd-postfix.XXXXXX")
	chmod 755 "$T"
	echo "$T" > "$BATS_TEST_TMPDIR/base"
	: > "$T/pids"
	SPOOL=$T/spool
	mkdir -m 700 "$SPOOL"
	PF=$T/pf
	"$TESTS/clamd-start.sh" "$T/clamd" || return 1
	CLAMD_SOCK=$T/clamd/clamd.sock
}

teardown() {
	local rc=0
	T=$(cat "$BATS_TEST_TMPDIR/base" 2>/dev/null) || return 0
	[ -n "$T" ] && [ -d "$T" ] || return 0
	"$TESTS/postfix-instance.sh" stop "$T/pf" || rc=1
	stop_pids
	"$TESTS/clamd-stop.sh" "$T/clamd" || rc=1
	if [ -n "$(ls -A "$T/spool")" ]; then
		echo "spool directory not empty:" >&2
		ls -la "$T/spool" >&2
		rc=1
	fi
	if [ "$rc" != 0 ] || [ -n "${POSTFIX_LOGS:-}" ]; then
		echo "--- maillog" >&2; cat "$T/pf/maillog" >&2 2>/dev/null
		echo "--- clamsmtpd.log" >&2; cat "$T/clamsmtpd.log" >&2 2>/dev/null
	fi
	rm -rf "$T"
	return "$rc"
}

# clamd_for_spawn - let $SPAWN_USER connect to clamd's socket (clamd-start.sh
# makes it 0600 root; Debian's own clamd.ctl is 0666)
clamd_for_spawn() {
	chmod 666 "$CLAMD_SOCK"
}

# postfix_up MODE - recorder, Postfix with clamsmtpd in MODE (listener|spawn|proxy)
# sets SUBMIT (port), SRV (recorder dir), LOG (listener's -d 3 log)
postfix_up() {
	local mode=$1 filter reinject cmd
	start_server
	{ read -r SUBMIT; read -r filter; read -r reinject; } < <(free_ports 3)
	if [ "$mode" = spawn ]; then
		chown "$SPAWN_USER" "$SPOOL"
		clamd_for_spawn
	fi
	"$TESTS/postfix-instance.sh" create "$PF" "$mode" "$SUBMIT" "$filter" "$reinject" \
		"$(cat "$SRV/port")" "$CLAMSMTPD" "$SPOOL" "$CLAMD_SOCK" "$SPAWN_USER"
	if [ "$mode" != spawn ]; then
		# the example's command line, with -d 3 to keep it in the foreground
		read -r -a cmd < "$PF/listener.cmd"
		LOG=$T/clamsmtpd.log
		"${cmd[0]}" -d 3 "${cmd[@]:1}" < /dev/null 2> "$LOG" 3>&- &
		echo $! >> "$T/pids"
		wait_file "$PF/clamsmtpd.pid"
	fi
	"$TESTS/postfix-instance.sh" start "$PF"
	# postfix check had nothing to say about the configuration
	[ ! -s "$PF/check.out" ]
}

# submit [swaks options] - one message to Postfix; swaks' output in $T/swaks
submit() {
	swaks --server "127.0.0.1:$SUBMIT" --from sender@example.test --to rcpt@example.test \
		--timeout 20 "$@" > "$T/swaks" 2>&1
}

# wait_for SECONDS COMMAND... - poll until COMMAND succeeds
wait_for() {
	local n=$(( $1 * 10 ))
	shift
	while ! "$@"; do
		n=$((n - 1))
		if [ "$n" -le 0 ]; then
			echo "timed out waiting for: $*" >&2
			return 1
		fi
		sleep 0.1
	done
}

# refute COMMAND... - fails when COMMAND succeeds (a bare "!" would not fail a test)
refute() { ! "$@"; }

maillog_has() { grep -q -- "$1" "$PF/maillog" 2>/dev/null; }
delivered() { [ "$(count_messages)" -ge "$1" ]; }
queue() { postqueue -c "$PF/etc" -p; }
queue_empty() { queue | grep -q 'Mail queue is empty'; }

# settled - the queue is empty: whatever Postfix would deliver has been
settled() { wait_for 20 queue_empty; }

# headers FILE - the header section of a delivered message
headers() { tr -d '\r' < "$1" | sed '/^$/q'; }

clean_message_delivered_once() {
	postfix_up "$1"
	submit --body "clean via postfix, $1 mode"
	grep -q '^<- *250 2.0.0 Ok: queued' "$T/swaks"
	wait_for 20 delivered 1
	settled
	[ "$(count_messages)" = 1 ]
	headers "$SRV/msg-1.eml" > "$T/headers"
	[ "$(grep -c '^X-AV-Checked: ClamAV using ClamSMTP$' "$T/headers")" = 1 ]
	grep -q "clean via postfix, $1 mode" "$SRV/msg-1.eml"
	grep -q '^to=<rcpt@example.test>$' "$SRV/msg-1.env"
	maillog_has "relay=127.0.0.1\[127.0.0.1\]:[0-9]*, .*status=sent (250 2.0.0 Ok"
}

@test "listener: a clean message reaches the server exactly once, with X-AV-Checked" {
	clean_message_delivered_once listener
}

@test "spawn: a clean message reaches the server exactly once, with X-AV-Checked" {
	clean_message_delivered_once spawn
}

# eicar_discarded MODE - EICAR is dropped: no delivery, no bounce, no retry
eicar_discarded() {
	postfix_up "$1"
	eicar "$T/eicar.com"
	submit --attach "$T/eicar.com"
	grep -q '^<- *250 2.0.0 Ok: queued' "$T/swaks"
	wait_for 20 maillog_has 'status=sent (250 2.7.0 Virus detected; message discarded'
	settled
	# a bounce to sender@example.test would go to the recorder as well
	[ "$(count_messages)" = 0 ]
	refute maillog_has 'status=bounced'
	refute maillog_has 'status=deferred'
}

@test "listener: an EICAR message is discarded and the log names the virus" {
	eicar_discarded listener
	grep -q 'status=VIRUS:Eicar-Test-Signature.UNOFFICIAL' "$LOG"
}

@test "spawn: an EICAR message is discarded, not delivered and not bounced" {
	eicar_discarded spawn
	# spawn's stderr is the connection, so clamsmtpd logs to syslog only;
	# clamd's own log names what clamsmtpd had it scan
	grep -q 'Eicar-Test-Signature.UNOFFICIAL FOUND' "$T/clamd/clamd.log"
}

# deferred_until_clamd_returns MODE - 451 keeps the message queued
deferred_until_clamd_returns() {
	postfix_up "$1"
	"$TESTS/clamd-stop.sh" "$T/clamd"
	submit --body "waits for clamd, $1 mode"
	grep -q '^<- *250 2.0.0 Ok: queued' "$T/swaks"
	wait_for 20 maillog_has 'status=deferred (host 127.0.0.1\[127.0.0.1\] said: 451 4.3.0'
	queue > "$T/queue"
	grep -q 'sender@example.test' "$T/queue"
	grep -q '451 4.3.0' "$T/queue"
	[ "$(count_messages)" = 0 ]
	"$TESTS/clamd-start.sh" "$T/clamd"
	if [ "$1" = spawn ]; then clamd_for_spawn; fi
	postqueue -c "$PF/etc" -f
	wait_for 20 delivered 1
	settled
	[ "$(count_messages)" = 1 ]
	grep -q "waits for clamd, $1 mode" "$SRV/msg-1.eml"
	headers "$SRV/msg-1.eml" | grep -q '^X-AV-Checked: ClamAV using ClamSMTP$'
}

@test "listener: with clamd down the message stays deferred (451), then is delivered once" {
	deferred_until_clamd_returns listener
}

@test "spawn: with clamd down the message stays deferred (451), then is delivered once" {
	deferred_until_clamd_returns spawn
}

# xforward_reaches_reinjection MODE - the original client survives the filter
xforward_reaches_reinjection() {
	local qid
	postfix_up "$1"
	submit --local-interface 127.0.0.5 --body "from 127.0.0.5, $1 mode"
	wait_for 20 delivered 1
	settled
	# The first smtpd saw the client itself ...
	qid=$(sed -n 's/.* postfix\/smtpd\[[0-9]*\]: \([0-9A-F]*\): client=unknown\[127\.0\.0\.5\]$/\1/p' "$PF/maillog")
	[ -n "$qid" ]
	# ... and the re-injection smtpd, connected to by clamsmtpd from
	# 127.0.0.1, learnt it and the first queue id only through XFORWARD.
	# (Postfix uses XFORWARD for logging; its Received: header keeps the
	# real peer, 127.0.0.1.)
	maillog_has "client=unknown\[127\.0\.0\.1\], orig_queue_id=$qid, orig_client=unknown\[127\.0\.0\.5\]$"
	headers "$SRV/msg-1.eml" | grep -q '^X-AV-Checked: ClamAV using ClamSMTP$'
}

@test "listener: XFORWARD gives the re-injection smtpd the original client" {
	xforward_reaches_reinjection listener
}

@test "spawn: XFORWARD gives the re-injection smtpd the original client" {
	xforward_reaches_reinjection spawn
}

@test "listener: clamsmtpd's log line joins Postfix's two queue IDs of a message: qid= as it entered, queued_as= as it was re-injected" {
	local up down cmd
	postfix_up listener
	submit --local-interface 127.0.0.5 --body "two queue ids"
	wait_for 20 delivered 1
	settled
	up=$(sed -n 's/.* postfix\/smtpd\[[0-9]*\]: \([0-9A-F]*\): client=unknown\[127\.0\.0\.5\]$/\1/p' "$PF/maillog")
	down=$(sed -n "s/.* postfix\/smtpd\[[0-9]*\]: \([0-9A-F]*\): client=unknown\[127\.0\.0\.1\], orig_queue_id=$up, .*/\1/p" "$PF/maillog")
	[ -n "$up" ] && [ -n "$down" ] && [ "$up" != "$down" ]
	# Postfix's scan transport delivered $up to clamsmtpd, which passed on
	# the re-injection smtpd's "queued as $down"
	maillog_has "$up: to=<rcpt@example.test>, relay=127.0.0.1\[127.0.0.1\]:[0-9]*, .*status=sent (250 2.0.0 Ok: queued as $down)"
	[ "$(grep -c 'status=CLEAN' "$LOG")" = 1 ]
	grep 'status=CLEAN' "$LOG" | grep -qE ", server=250, queued_as=$down, clamd=[^,]+, scan_ms=[0-9]+, client=127\.0\.0\.5, qid=$up, from=<sender@example\.test>, to=<rcpt@example\.test>$"
	# Postfix sends XFORWARD IDENT only to a server that announces it: the
	# re-injection smtpd does, and clamsmtpd passes that on
	read -r -a cmd < "$PF/listener.cmd"
	printf 'EHLO client.test\r\nQUIT\r\n' | "$CLAMSMTPD" -D "$SPOOL" -c "$CLAMD_SOCK" "${cmd[-1]}" > "$T/ehlo"
	grep -qE $'^250-XFORWARD( [A-Z]+)* IDENT( [A-Z]+)*\r$' "$T/ehlo"
}

# --- before-queue: Postfix's smtpd_proxy_filter, with the lines of
# tests/postfix-proxy-example.cf (clamsmtpd -b as a listener):
#
#   swaks -> public smtpd :SUBMIT (no queue) -> clamsmtpd -> smtpd :REINJECT
#         -> queue -> smtp-recorder.py
#
# The sending client gets the verdict itself, so nothing is ever queued for a
# virus or a failed scan.

# entered_queue - how many messages from sender@example.test reached qmgr
# (qmgr logs "from=" for every message that enters the active queue)
entered_queue() {
	grep -c 'postfix/qmgr\[[0-9]*\]: [0-9A-F]*: from=<sender@example.test>' "$PF/maillog" || true
}

# never_queued - nothing was delivered, queued or bounced
never_queued() {
	settled
	[ "$(count_messages)" = 0 ]
	[ "$(entered_queue)" = 0 ]
	refute maillog_has 'status=bounced'
	# the queueing smtpd removed the file it had opened for the transaction
	[ -z "$(find "$PF/queue/incoming" "$PF/queue/active" "$PF/queue/deferred" -type f)" ]
}

@test "proxy: a clean message is accepted in the client's session and delivered once, with X-AV-Checked" {
	postfix_up proxy
	submit --local-interface 127.0.0.5 --body "clean via postfix, before-queue"
	# the client's 250 is the queueing smtpd's, passed back through clamsmtpd
	grep -q '^<- *250 2.0.0 Ok: queued as [0-9A-F]' "$T/swaks"
	wait_for 20 delivered 1
	settled
	[ "$(count_messages)" = 1 ]
	[ "$(entered_queue)" = 1 ]
	headers "$SRV/msg-1.eml" > "$T/headers"
	[ "$(grep -c '^X-AV-Checked: ClamAV using ClamSMTP$' "$T/headers")" = 1 ]
	grep -q "clean via postfix, before-queue" "$SRV/msg-1.eml"
	grep 'status=CLEAN' "$LOG" | grep -q 'server=250'
	# the public smtpd saw the client; the queueing one learnt it through
	# XFORWARD, which Postfix's proxy sends and clamsmtpd passes on
	maillog_has 'postfix/smtpd\[[0-9]*\]: NOQUEUE: client=unknown\[127\.0\.0\.5\]$'
	maillog_has 'postfix/smtpd\[[0-9]*\]: [0-9A-F]*: client=unknown\[127\.0\.0\.1\], orig_client=unknown\[127\.0\.0\.5\]$'
}

@test "proxy: an EICAR message is rejected at SMTP time with the virus name, and nothing is queued" {
	postfix_up proxy
	eicar "$T/eicar.com"
	refute submit --attach "$T/eicar.com"
	grep -q '^<\*\* *550 5.7.1 Virus detected (Eicar-Test-Signature.UNOFFICIAL); message rejected$' "$T/swaks"
	refute grep -q 'queued as' "$T/swaks"
	grep -q 'status=VIRUS:Eicar-Test-Signature.UNOFFICIAL' "$LOG"
	never_queued
}

@test "proxy: with clamd down the sending client gets 451 and nothing is queued" {
	postfix_up proxy
	"$TESTS/clamd-stop.sh" "$T/clamd"
	refute submit --body "clamd is down, before-queue"
	grep -q '^<\*\* *451 4.3.0 Virus scan failed, try again later$' "$T/swaks"
	refute grep -q 'queued as' "$T/swaks"
	never_queued
}

# big_text FILE BYTES - a message of about BYTES of CRLF text lines, some
# starting with dots, without its last CRLF: swaks ends the data with
# CRLF . CRLF itself
big_text() {
	dotted_text "$1" "$2" 'From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: big\r\n\r\n' \
		--no-last-crlf
}

@test "proxy: a 20 MB message passes within smtpd_proxy_timeout and arrives intact, once" {
	postfix_up proxy
	# the example's limits: 50 MB messages, 300 s for each proxy wait
	[ "$(postconf -c "$PF/etc" -h message_size_limit)" = 52428800 ]
	postconf -c "$PF/etc" -P "127.0.0.1:$SUBMIT/inet/smtpd_proxy_timeout" | grep -q '= 300s$'
	big_text "$T/big.eml" $((20 * 1024 * 1024))
	submit --data "$T/big.eml" --timeout 600
	grep -q '^<- *250 2.0.0 Ok: queued as [0-9A-F]' "$T/swaks"
	wait_for 60 delivered 1
	settled
	[ "$(count_messages)" = 1 ]
	[ "$(entered_queue)" = 1 ]
	refute maillog_has 'timeout'
	refute maillog_has 'proxy-reject'
	# the delivered message is the sent one, after the added header and
	# Postfix's Received: line
	headers "$SRV/msg-1.eml" | grep -q '^X-AV-Checked: ClamAV using ClamSMTP$'
	{ tr -d '\r' < "$T/big.eml"; echo; } | sed '1,/^$/d' > "$T/sent.body"
	tr -d '\r' < "$SRV/msg-1.eml" | sed '1,/^$/d' > "$T/got.body"
	[ "$(wc -c < "$T/sent.body")" -gt $((20 * 1000 * 1000)) ]
	cmp "$T/sent.body" "$T/got.body"
	grep 'status=CLEAN' "$LOG" | grep 'server=250' | grep -qE 'size=[0-9]{8},'
}

@test "README and man page carry the exact before-queue lines these tests run with" {
	local line n=0 top=$TESTS/..
	sed 's/\\-/-/g' "$top/man/clamsmtpd.8" > "$T/man.txt"
	while IFS= read -r line; do
		case "$line" in ''|'#'*) continue ;; esac
		grep -qF -- "$line" "$top/README.md" || { echo "README lacks: $line" >&2; false; }
		grep -qF -- "$line" "$T/man.txt" || { echo "man page lacks: $line" >&2; false; }
		n=$((n + 1))
	done < "$TESTS/postfix-proxy-example.cf"
	[ "$n" -ge 17 ]
}

@test "proxy: a scan slower than smtpd_proxy_timeout gives the client 4xx, and the message is not delivered behind its back" {
	# A clean verdict that comes after Postfix has given up on clamsmtpd:
	# the sender was told to try again, so passing the message on now
	# would deliver it twice.
	start_fake_clamd ok unix --delay 8
	CLAMD_SOCK=$CLAMADDR
	postfix_up proxy
	postconf -c "$PF/etc" -P "127.0.0.1:$SUBMIT/inet/smtpd_proxy_timeout=3s"
	postfix -c "$PF/etc" reload > /dev/null 2>&1
	sleep 1
	refute submit --body "slower than the proxy timeout"
	grep -q '^<\*\* *4[0-9][0-9] ' "$T/swaks"
	refute grep -q 'queued as' "$T/swaks"
	# the verdict comes 8 s after the scan began (3 s before swaks returned);
	# then give clamsmtpd and Postfix time to act on it
	sleep 8
	settled
	# Postfix reports the proxy error to the postmaster; nothing else may arrive
	refute grep -qs '^to=<rcpt@example.test>$' "$SRV"/*.env
	[ "$(entered_queue)" = 0 ]
}
