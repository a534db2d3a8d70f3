#!/usr/bin/env bats
# Operations: issue 11, SPEC 9. The privilege drop (-u), the virus action
# hook (-x), the per-message log line and the self-test (-T), with a real
# clamd, a recording server and real processes, read from /proc while a
# session is open (tests/session-probe.py). Needs root for -u.

load helpers

# The helpers' setup and teardown under other names: ours add to them (the
# teardown first shows what happened).
eval "helpers_$(declare -f teardown)"
eval "helpers_$(declare -f setup)"

setup_file() {
	start_real_clamd
	# -u nobody: the session must reach its spool directory (under bats'
	# 0700 run directory) and clamd's socket (0600 root)
	local d=$BATS_FILE_TMPDIR
	while [ "$d" != "$(dirname "$BATS_RUN_TMPDIR")" ]; do
		chmod o+x "$d"
		d=$(dirname "$d")
	done
	chmod 666 "$CLAMD_SOCK"
}

setup() {
	helpers_setup
	H=$T/hook               # what a hook found out lands here
	mkdir -m 777 "$H"
	cd "$T" || return 1     # a hook that dumps core would leave it here
	NOBODY_UID=$(id -u nobody)
	NOBODY_GID=$(id -g nobody)
}

teardown() {
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then       # failed: show what happened
		echo "--- replies:" >&2; tr -d "\r" 2>/dev/null < "$T/out" | tail -20 >&2
		echo "--- log:" >&2; tail -30 "$T/err" >&2 2>/dev/null
	fi
	# a hook's own children (recorded by the hook) are ours to end too
	cat "$H"/*.child >> "$T/pids" 2>/dev/null || true
	helpers_teardown
	if grep -qE 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$T/err" 2>/dev/null; then
		grep -E -A20 'ERROR: [A-Za-z]+Sanitizer|runtime error:' "$T/err" >&2
		return 1
	fi
}

need_root() {
	[ "$(id -u)" = 0 ] || skip "-u needs root"
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# refute COMMAND... - fails when COMMAND succeeds (a bare "!" would not fail a test)
refute() { ! "$@"; }

# dead PID - the process is gone, or a zombie whose parent is not ours to
# watch (an orphan left to a PID 1 that does not reap, as in some containers)
dead() {
	[ ! -e "/proc/$1" ] || [ "$(sed 's/.*) //' "/proc/$1/stat" | cut -d' ' -f1)" = Z ]
}

# as_nobody COMMAND... - run it as nobody, without root's groups
as_nobody() {
	setpriv --reuid=nobody --regid="$NOBODY_GID" --clear-groups "$@"
}

# probe_stdio OUT [clamsmtpd flags] -- STEP... - one stdio-mode session on a
# socket pair (as inetd gives it), looked at by tests/session-probe.py;
# replies in OUT, log in $T/err, exit status in OUT.rc
probe_stdio() {
	local out=$1 flags=()
	shift
	while [ "$1" != -- ]; do flags+=("$1"); shift; done
	python3 "$TESTS/session-probe.py" --out "$out" --err "$T/err" --spool-dir "$SPOOL" \
		--spawn "$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" -D "$SPOOL" -c "$CLAMADDR" \
		"${flags[@]}" "$SERVER" "$@"
}

# probe_listener OUT -- STEP... - one session of the listener $LPID on $LPORT
probe_listener() {
	local out=$1
	shift
	python3 "$TESTS/session-probe.py" --out "$out" --spool-dir "$SPOOL" \
		--connect "127.0.0.1:$LPORT" --listener "$LPID" "$@"
}

# listen [flags] - clamsmtpd -d 3 -l 127.0.0.1:LPORT in the background,
# ready once it says it listens (so after any -u); LPID, log in $T/err
listen() {
	LPORT=$(free_port)
	"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" \
		-l "127.0.0.1:$LPORT" "$@" "$SERVER" 2> "$T/err" < /dev/null &
	LPID=$!
	echo "$LPID" >> "$T/pids"
	local i
	for i in $(seq 100); do
		grep -q 'listening for connections' "$T/err" && return 0
		kill -0 "$LPID" 2>/dev/null || break
		sleep 0.1
	done
	echo "the listener did not start" >&2
	return 1
}

# ids_are_nobody FILE - the /proc status lines of a process that is nobody
# through and through: real, effective, saved and fs ids, nobody's groups
# only, and no capability left
ids_are_nobody() {
	local u=$NOBODY_UID g=$NOBODY_GID
	[ "$(grep '^Uid:' "$1" | awk '{$1=$1; print}')" = "Uid: $u $u $u $u" ]
	[ "$(grep '^Gid:' "$1" | awk '{$1=$1; print}')" = "Gid: $g $g $g $g" ]
	[ "$(grep '^Groups:' "$1" | awk '{$1=""; print}' | tr ' ' '\n' | sed '/^$/d' | sort -n | tr '\n' ' ')" = \
	  "$(id -G nobody | tr ' ' '\n' | sort -n | tr '\n' ' ')" ]
	[ "$(grep -c '^Cap\(Inh\|Prm\|Eff\):[[:space:]]*0000000000000000$' "$1")" = 3 ]
}

# status_of PID FILE - the id and capability lines of a running process
status_of() {
	grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff):' "/proc/$1/status" > "$2"
}

# eicar_body FILE - a message whose body is the EICAR line (as sent: CRLF lines)
eicar_body() {
	printf 'From: sender@example.test\r\nSubject: eicar\r\n\r\n' > "$1"
	"$TESTS/eicar.sh" >> "$1"
	printf '\r\n' >> "$1"
}

# virus_in OUT [SENDER] - EHLO, one EICAR message, QUIT
virus_in() {
	eicar_body "$T/virus"
	{ printf 'EHLO client.test\r\nMAIL FROM:<%s>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n' \
		"${2:-sender@example.test}"
	  cat "$T/virus"; printf '.\r\nQUIT\r\n'; } > "$1"
}

# hook NAME - an executable hook script $T/NAME.sh from the lines on stdin;
# the environment gives it PATH=/usr/bin:/bin only, so paths are absolute
hook() {
	{ echo '#!/bin/sh'; cat; } > "$T/$1.sh"
	chmod 755 "$T/$1.sh"
}

# dump_hook - a hook that writes down what it was given: its environment
# exactly as it was passed (/proc/$$/environ), its argument count and $0,
# its open descriptors, what its stdin holds and who it runs as
dump_hook() {
	hook dump <<-EOF
	/bin/cat /proc/\$\$/environ > $H/env
	printf '%s %s\n' "\$0" "\$#" > $H/argv
	/bin/ls -l /proc/self/fd > $H/fds
	/bin/cat > $H/stdin
	/usr/bin/id -u > $H/uid
	EOF
}

# hook_fds - the hook's descriptors as "fd target", ls's own one for
# reading /proc/self/fd shown as /proc/N/fd
hook_fds() {
	grep -- '->' "$H/fds" | awk '{print $(NF-2), $NF}' | sed 's|^\([0-9]*\) /proc/[0-9]*/fd$|\1 /proc/N/fd|'
}

# log_lines - the per-message log lines
log_lines() {
	grep ': status=' "$T/err" | sed 's/^clamsmtpd\[[0-9]*\]: //'
}

# =========================================================================
# -u user (SPEC 9.1)

@test "-u nobody, stdio mode: before the first client byte every uid and gid is nobody, no capability; the spool file is nobody's" {
	need_root
	start_server
	chown nobody "$SPOOL"
	a_message "$T/m"
	probe_stdio "$T/out" -u nobody -- \
		--wait '220 ' --status "$T/status" \
		--send 'EHLO c\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n' \
		--wait '354 ' --spool "$T/spool-fds" \
		--send-file "$T/m" --send '.\r\nQUIT\r\n'
	[ "$(cat "$T/out.rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	ids_are_nobody "$T/status"
	# the one open spool file, already unlinked, made by nobody, mode 0600
	[ "$(wc -l < "$T/spool-fds")" = 1 ]
	[[ "$(cat "$T/spool-fds")" =~ ^$NOBODY_UID\ $NOBODY_GID\ 600\ $SPOOL/clamsmtpd\.[A-Za-z0-9]{6}\ \(deleted\)$ ]]
	[ "$(count_messages)" = 1 ]
}

@test "-u nobody -q: the quarantined copy belongs to nobody, mode 0600" {
	need_root
	start_server
	chown nobody "$SPOOL"
	virus_in "$T/in"
	filter -u nobody -q < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	ls "$SPOOL" > "$T/kept"
	[ "$(wc -l < "$T/kept")" = 1 ]
	q=$SPOOL/$(cat "$T/kept")
	[[ "$q" == "$SPOOL"/virus.* ]]
	[ "$(stat -c '%u %g %a' "$q")" = "$NOBODY_UID $NOBODY_GID 600" ]
	cmp "$q" "$T/virus"
	rm -f "$q"
}

@test "-u nobody, listener: the listener drops after binding, its session is nobody too, spools as nobody, and the hook runs as nobody" {
	need_root
	start_server --reply 'noop=250 2.0.0 noop done'
	chown nobody "$SPOOL"
	dump_hook
	listen -u nobody -x "$T/dump.sh"
	status_of "$LPID" "$T/listener-status"
	ids_are_nobody "$T/listener-status"
	# it still listens on the address root bound for it
	eicar_body "$T/virus"
	probe_listener "$T/out" -- \
		--status "$T/session-status" \
		--send 'EHLO c\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n' \
		--wait '354 ' --spool "$T/spool-fds" \
		--send-file "$T/virus" --send '.\r\n' --wait '250 2.7.0' \
		--send 'NOOP\r\n' --wait 'noop done\r\n' --children "$T/children" --send 'QUIT\r\n'
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	ids_are_nobody "$T/session-status"
	[[ "$(cat "$T/spool-fds")" =~ ^$NOBODY_UID\ $NOBODY_GID\ 600\ $SPOOL/clamsmtpd\. ]]
	[ "$(cat "$H/uid")" = "$NOBODY_UID" ]
	# the listener's session: CLIENT is the peer's address, no XFORWARD
	tr '\0' '\n' < "$H/env" | grep -qx 'CLIENT=127.0.0.1'
	tr '\0' '\n' < "$H/env" | grep -qx 'QUEUE_ID='
	# the hook was reaped before the next command was read
	[ ! -s "$T/children" ]
	refute grep -q 'running as root' "$T/err"
}

@test "a listener started as root without -u warns once, however many sessions it serves" {
	need_root
	start_server
	listen
	for i in 1 2 3; do
		printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
		python3 "$TESTS/smtp-client.py" "127.0.0.1:$LPORT" --send "$T/in" > "$T/got"
		grep -q '^221' "$T/got"
	done
	[ "$(grep -c 'running as root' "$T/err")" = 1 ]
	grep -q 'running as root; -u user would drop root after binding' "$T/err"
}

@test "-u with a tmpdir only root can write: stdio mode refuses, one line naming it, nothing reaches the server" {
	need_root
	start_server
	rc=0
	printf 'QUIT\r\n' | "$CLAMSMTPD" -u nobody -D "$SPOOL" -c "$CLAMADDR" "$SERVER" > "$T/out" 2> "$T/err" || rc=$?
	[ "$rc" != 0 ]
	[ ! -s "$T/out" ]
	[ "$(wc -l < "$T/err")" = 1 ]
	grep -qF "$SPOOL" "$T/err"
	[ ! -s "$SRV/commands.log" ]
}

@test "-u with a tmpdir only root can write: the listener refuses to start, one line naming it" {
	need_root
	start_server
	port=$(free_port)
	rc=0
	"$CLAMSMTPD" -d 3 -u nobody -D "$SPOOL" -c "$CLAMADDR" -l "127.0.0.1:$port" "$SERVER" \
		< /dev/null > "$T/out" 2> "$T/err" || rc=$?
	[ "$rc" = 1 ]
	[ "$(wc -l < "$T/err")" = 1 ]
	grep -qF "$SPOOL" "$T/err"
	grep -q 'nobody' "$T/err"
	# daemonising: the starting process tells it and fails
	rc=0
	"$CLAMSMTPD" -u nobody -D "$SPOOL" -c "$CLAMADDR" -p "$T/d.pid" -l "127.0.0.1:$port" "$SERVER" \
		< /dev/null > "$T/out" 2> "$T/err" || rc=$?
	cat "$T/d.pid" >> "$T/pids" 2>/dev/null || true      # should it have started after all
	[ "$rc" = 1 ]
	[ "$(wc -l < "$T/err")" = 1 ]
	grep -qF "$SPOOL" "$T/err"
}

@test "-u nobody, listener: a pidfile in a directory nobody can write is removed when it stops; in one only root can write the failure is logged" {
	need_root
	start_server
	chown nobody "$SPOOL"
	mkdir -m 755 "$T/run"
	chown nobody "$T/run"
	listen -u nobody -p "$T/run/clamsmtpd.pid"
	[ "$(cat "$T/run/clamsmtpd.pid")" = "$LPID" ]
	kill -TERM "$LPID"
	wait_gone "$LPID"
	grep -q 'stopped' "$T/err"
	[ ! -e "$T/run/clamsmtpd.pid" ]
	# where the examples put it, /run itself: root's directory
	listen -u nobody
	kill -TERM "$LPID"
	wait_gone "$LPID"
	grep -q "cannot remove pidfile $T/clamsmtpd.pid: Permission denied" "$T/err"
}

@test "-u nobody, listener: a start refused after the switch (tmpdir) leaves no pidfile in a directory nobody can write" {
	need_root
	start_server
	mkdir -m 755 "$T/run"
	chown nobody "$T/run"
	port=$(free_port)
	rc=0
	"$CLAMSMTPD" -d 3 -u nobody -D "$SPOOL" -c "$CLAMADDR" -p "$T/run/refused.pid" \
		-l "127.0.0.1:$port" "$SERVER" < /dev/null 2> "$T/err" || rc=$?
	[ "$rc" = 1 ]
	[ "$(wc -l < "$T/err")" = 1 ]
	grep -q "tmpdir $SPOOL is not writable by user nobody" "$T/err"
	[ ! -e "$T/run/refused.pid" ]
	# in root's directory it cannot, and says so
	rc=0
	"$CLAMSMTPD" -d 3 -u nobody -D "$SPOOL" -c "$CLAMADDR" -p "$T/refused.pid" \
		-l "127.0.0.1:$port" "$SERVER" < /dev/null 2> "$T/err" || rc=$?
	[ "$rc" = 1 ]
	grep -q "cannot remove pidfile $T/refused.pid: Permission denied" "$T/err"
}

@test "-u with an unknown user: exit 2, one line naming it, nothing started" {
	start_server
	rc=0
	printf 'QUIT\r\n' | "$CLAMSMTPD" -u no-such-user-clamsmtpd -D "$SPOOL" -c "$CLAMADDR" "$SERVER" \
		> "$T/out" 2> "$T/err" || rc=$?
	[ "$rc" = 2 ]
	[ ! -s "$T/out" ]
	[ "$(wc -l < "$T/err")" = 1 ]
	grep -q 'no-such-user-clamsmtpd' "$T/err"
	[ ! -s "$SRV/commands.log" ]
}

@test "-u naming another user when not root: exit 2, one line; its own user is accepted" {
	need_root
	start_server
	chown nobody "$SPOOL"
	for other in root daemon; do
		rc=0
		printf 'QUIT\r\n' | as_nobody "$CLAMSMTPD" -u "$other" -D "$SPOOL" -c "$CLAMADDR" "$SERVER" \
			> "$T/out" 2> "$T/err" || rc=$?
		[ "$rc" = 2 ]
		[ ! -s "$T/out" ]
		[ "$(wc -l < "$T/err")" = 1 ]
		grep -q "$other" "$T/err"
	done
	[ ! -s "$SRV/commands.log" ]
	# runuser as well as setpriv: -u nobody as nobody simply runs
	printf 'QUIT\r\n' | runuser -u nobody -- "$CLAMSMTPD" -u nobody -D "$SPOOL" -c "$CLAMADDR" "$SERVER" \
		> "$T/out" 2> "$T/err"
	[ "$(codes)" = "220 221" ]
}

# a shim that lets setuid(0) and seteuid(0) "succeed" for a process that is
# no longer root, as a kernel or a setuid bug would
setuid_shim() {
	command -v cc > /dev/null || skip "no C compiler for the shim"
	cat > "$T/shim.c" <<-'EOF'
	#define _GNU_SOURCE
	#include <dlfcn.h>
	#include <unistd.h>
	int setuid(uid_t uid)
	{
		int (*real)(uid_t) = (int (*)(uid_t))dlsym(RTLD_NEXT, "setuid");
		return uid == 0 && getuid() != 0 ? 0 : real(uid);
	}
	int seteuid(uid_t uid)
	{
		int (*real)(uid_t) = (int (*)(uid_t))dlsym(RTLD_NEXT, "seteuid");
		return uid == 0 && geteuid() != 0 ? 0 : real(uid);
	}
	EOF
	cc -shared -fPIC -o "$T/shim.so" "$T/shim.c" -ldl
}

@test "-u: when root could be had back after the drop, the session stops before the first client byte" {
	need_root
	start_server
	chown nobody "$SPOOL"
	setuid_shim
	rc=0
	printf 'EHLO c\r\nQUIT\r\n' | LD_PRELOAD=$T/shim.so ASAN_OPTIONS=verify_asan_link_order=0 "$CLAMSMTPD" -d 4 -u nobody -D "$SPOOL" \
		-c "$CLAMADDR" "$SERVER" > "$T/out" 2> "$T/err" || rc=$?
	[ "$rc" != 0 ]
	refute grep -q 'ASan runtime does not come first' "$T/err"     # the shim was in effect
	[ ! -s "$T/out" ]
	[ ! -s "$SRV/commands.log" ]
	! ls "$SRV" | grep -q '^session-' || false
	# the same binary without the shim serves
	printf 'EHLO c\r\nQUIT\r\n' | "$CLAMSMTPD" -u nobody -D "$SPOOL" -c "$CLAMADDR" "$SERVER" > "$T/out"
	[ "$(codes)" = "220 250 221" ]
}

@test "-u: when root could be had back after the drop, the log says why it stopped" {
	need_root
	start_server
	chown nobody "$SPOOL"
	setuid_shim
	printf 'QUIT\r\n' | LD_PRELOAD=$T/shim.so ASAN_OPTIONS=verify_asan_link_order=0 "$CLAMSMTPD" -d 4 -u nobody -D "$SPOOL" \
		-c "$CLAMADDR" "$SERVER" > "$T/out" 2> "$T/err" || true
	grep -q 'root could be regained' "$T/err" ||
		{ echo "nothing in the log says why the session stopped" >&2; false; }
}

# =========================================================================
# -x program (SPEC 9.2)

@test "-x: the hook's environment is exactly the nine variables, argv only its name, fds 0-2 /dev/null and nothing else; shell metacharacters in addresses run nothing" {
	start_server
	dump_hook
	eicar_body "$T/virus"
	# a sender and a recipient that would run commands if any shell saw them;
	# \xff and the C1 byte pair \xc2\x9b are made printable, UTF-8 stays
	sender="<a\$(/usr/bin/touch $T/pwned1)\`/usr/bin/touch $T/pwned2\`;|&\"q'u\\\\o*?{}[]~#!\xff\xc2\x9b\xc3\xa9@example.test>"
	rcpt2="<\"\$(/usr/bin/touch $T/pwned3)\"@example.test>"
	{ printf 'EHLO client.test\r\nXFORWARD ADDR=192.0.2.9 IDENT=4Rb2Wn0Kp3z\r\n'
	  # a control byte is refused by clamsmtpd itself: no newline reaches a value
	  printf 'MAIL FROM:<a\x01b@example.test>\r\n'
	  printf "MAIL FROM:$sender\r\n"
	  printf "RCPT TO:<rcpt@example.test>\r\nRCPT TO:$rcpt2\r\nDATA\r\n"
	  cat "$T/virus"; printf '.\r\nNOOP\r\nQUIT\r\n'; } > "$T/in"
	CLAMSMTPD_SECRET=leak filter -x "$T/dump.sh" < "$T/in"
	[ "$(codes)" = "220 250 250 500 250 250 250 354 250 250 221" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	# nothing was executed
	[ ! -e "$T/pwned1" ] && [ ! -e "$T/pwned2" ] && [ ! -e "$T/pwned3" ]
	# the environment, exactly (order aside)
	printf '%s\0' 'PATH=/usr/bin:/bin' 'VIRUS=Eicar-Test-Signature.UNOFFICIAL' \
		"SENDER=<a\$(/usr/bin/touch $T/pwned1)\`/usr/bin/touch $T/pwned2\`;|&\"q'u\\o*?{}[]~#!???"$'\xc3\xa9'"@example.test>" \
		"RECIPIENTS=<rcpt@example.test>"$'\n'"<\"\$(/usr/bin/touch $T/pwned3)\"@example.test>" \
		'CLIENT=192.0.2.9' 'QUEUE_ID=4Rb2Wn0Kp3z' "SIZE=$(stat -c %s "$T/virus")" \
		'ACTION=dropped' 'QUARANTINE=' | sort -z > "$T/env.want"
	sort -z "$H/env" > "$T/env.got"
	cmp "$T/env.want" "$T/env.got" || { diff <(tr '\0' '\n' < "$T/env.want") <(tr '\0' '\n' < "$T/env.got") >&2; false; }
	# argv: only the program
	[ "$(cat "$H/argv")" = "$T/dump.sh 0" ]
	# fds: 0 and 2 /dev/null, 1 the file the dump went to, 3 ls's own; no other
	printf '0 /dev/null\n1 %s\n2 /dev/null\n3 /proc/N/fd\n' "$H/fds" > "$T/fds.want"
	hook_fds | diff "$T/fds.want" -
	# its stdin held nothing: the NOOP and QUIT after the message were the session's
	[ ! -s "$H/stdin" ]
	grep -q "$T/dump.sh exited with status 0" "$T/err"
}

@test "-x: ACTION is dropped, rejected (-b) or passed (-P); QUARANTINE names the -q copy" {
	start_server
	dump_hook
	virus_in "$T/in"
	action() { tr '\0' '\n' < "$H/env" | sed -n "s/^$1=//p"; }

	filter -x "$T/dump.sh" < "$T/in"
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(action ACTION)" = dropped ] && [ "$(action QUARANTINE)" = "" ]

	rm -f "$H/env"
	filter -b -x "$T/dump.sh" < "$T/in"
	grep -q $'^550 5.7.1 Virus detected (Eicar-Test-Signature.UNOFFICIAL); message rejected\r$' "$T/out"
	[ "$(action ACTION)" = rejected ] && [ "$(action QUARANTINE)" = "" ]

	rm -f "$H/env"
	filter -P -x "$T/dump.sh" < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	[ "$(action ACTION)" = passed ] && [ "$(action QUARANTINE)" = "" ]

	rm -f "$H/env"
	filter -q -x "$T/dump.sh" < "$T/in"
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(action ACTION)" = dropped ]
	q=$(action QUARANTINE)
	[[ "$q" == "$SPOOL"/virus.* ]]
	cmp "$q" "$T/virus"
	rm -f "$q"
	# a clean message runs no hook
	rm -f "$H/env"
	a_message "$T/m"
	transcript "$T/in" "$T/m"
	filter -x "$T/dump.sh" < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ ! -e "$H/env" ]
}

@test "-x: a hook that hangs is killed after -t (3 s) with its children; the reply came first, it is reaped, the session goes on" {
	start_server --reply 'noop=250 2.0.0 noop done'
	hook hang <<-EOF
	echo \$\$ > $H/hook.pid
	/bin/sleep 120 &
	echo \$! > $H/sleep.child
	wait
	EOF
	eicar_body "$T/virus"
	a_message "$T/m"
	TIMEOUT=3 probe_stdio "$T/out" -x "$T/hang.sh" -- \
		--wait '220 ' --send 'EHLO c\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n' \
		--wait '354 ' --send-file "$T/virus" --send '.\r\n' \
		--wait '250 2.7.0 Virus detected; message discarded\r\n' \
		--sleep 1 --children "$T/during" \
		--send 'NOOP\r\n' --wait 'noop done\r\n' --children "$T/after" \
		--send 'MAIL FROM:<s@example.test>\r\nRCPT TO:<r@example.test>\r\nDATA\r\n' \
		--wait '354 ' --send-file "$T/m" --send '.\r\nQUIT\r\n'
	[ "$(cat "$T/out.rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 250 250 250 354 250 221" ]
	# the client had its reply while the hook still ran
	[ "$(awk '{print $1}' "$T/during")" = "$(cat "$H/hook.pid")" ]
	# then it was killed, its sleep with it, and reaped: no zombie
	[ ! -s "$T/after" ]
	dead "$(cat "$H/sleep.child")"
	grep -q "$T/hang.sh ran longer than 3 s and was killed" "$T/err"
	[ "$(count_messages)" = 1 ]
}

@test "-x: a hook that exits 1 changes nothing (-b still 550); the status is logged" {
	start_server
	hook fail <<-'EOF'
	exit 1
	EOF
	virus_in "$T/in"
	filter -b -x "$T/fail.sh" < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 550 221" ]
	grep -q $'^550 5.7.1 Virus detected (Eicar-Test-Signature.UNOFFICIAL); message rejected\r$' "$T/out"
	grep -q "$T/fail.sh exited with status 1" "$T/err"
	[ "$(count_messages)" = 0 ]
}

@test "-x: a hook killed by a signal changes nothing (-P still delivered); the signal is logged" {
	start_server
	hook crash <<-'EOF'
	ulimit -c 0
	kill -SEGV $$
	EOF
	virus_in "$T/in"
	filter -P -x "$T/crash.sh" < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	grep -q $'^250 2.0.0 Ok: queued as 1\r$' "$T/out"
	[ "$(count_messages)" = 1 ]
	grep -q '^X-Virus-Status: Infected (Eicar-Test-Signature.UNOFFICIAL)' "$SRV/msg-1.eml"
	grep -q "$T/crash.sh was killed by signal 11" "$T/err"
}

@test "-x: a hook that prints megabytes on stdout and stderr: none of it reaches the client or the log" {
	start_server
	hook loud <<-'EOF'
	/usr/bin/yes 'hook output' | /usr/bin/head -c 5000000
	/usr/bin/yes 'hook error' | /usr/bin/head -c 5000000 >&2
	exit 0
	EOF
	virus_in "$T/in"
	filter -x "$T/loud.sh" < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	refute grep -q 'hook output\|hook error' "$T/out"
	refute grep -q 'hook output\|hook error' "$T/err"
	grep -q "$T/loud.sh exited with status 0" "$T/err"
	[ "$(tr -d '\r' < "$T/out" | grep -cvE '^[0-9]{3}[ -]')" = 0 ]
}

@test "-x at start-up: a relative path, a missing file, a file that is not executable: exit 2, one line" {
	start_server
	hook ok <<-'EOF'
	exit 0
	EOF
	printf 'exit 0\n' > "$T/plain.sh"
	chmod 644 "$T/plain.sh"
	for prog in ok.sh "$T/missing.sh" "$T/plain.sh" "$T"; do
		rc=0
		printf 'QUIT\r\n' | "$CLAMSMTPD" -x "$prog" -D "$SPOOL" -c "$CLAMADDR" "$SERVER" \
			> "$T/out" 2> "$T/err" || rc=$?
		[ "$rc" = 2 ]
		[ "$(wc -l < "$T/err")" = 1 ]
		grep -qF -- "$prog" "$T/err"
	done
	[ ! -s "$SRV/commands.log" ]
}

# =========================================================================
# the per-message log line (SPEC 9.3)

@test "log line without XFORWARD: no client= or qid=; queued_as= from the server's reply, left out when it names none" {
	start_server --reply-nth 'dataend:2=250 2.0.0 Ok'
	a_message "$T/m"
	transcript "$T/in" "$T/m" "$T/m"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 221" ]
	log_lines > "$T/lines"
	[ "$(wc -l < "$T/lines")" = 2 ]
	size=$(stat -c %s "$T/m")
	re1="^[0-9A-F]+\.1: status=CLEAN, size=$size, server=250, queued_as=1, clamd=$CLAMADDR, scan_ms=[0-9]+, from=<sender@example\.test>, to=<rcpt@example\.test>$"
	re2="^[0-9A-F]+\.2: status=CLEAN, size=$size, server=250, clamd=$CLAMADDR, scan_ms=[0-9]+, from=<sender@example\.test>, to=<rcpt@example\.test>$"
	[[ "$(sed -n 1p "$T/lines")" =~ $re1 ]]
	[[ "$(sed -n 2p "$T/lines")" =~ $re2 ]]
}

@test "log line with XFORWARD: client= and qid= for that transaction only; not from a refused XFORWARD or unusable values" {
	start_server --reply-nth 'xforward:3=550 5.5.4 Bad XFORWARD'
	a_message "$T/m"
	{ printf 'EHLO c\r\n'
	  # 1: both, as Postfix sends them
	  printf 'XFORWARD NAME=mx.example.org ADDR=203.0.113.7\r\nXFORWARD PROTO=ESMTP IDENT=4Rb2Wn0Kp3z\r\n'
	  envelope; cat "$T/m"; printf '.\r\n'
	  # 2: none: what the first transaction said is gone
	  envelope; cat "$T/m"; printf '.\r\n'
	  # 3: refused by the server
	  printf 'XFORWARD ADDR=198.51.100.1 IDENT=ABC\r\n'
	  envelope; cat "$T/m"; printf '.\r\n'
	  # 4: values a log reader could mistake for fields
	  printf 'XFORWARD ADDR=[UNAVAILABLE] IDENT=a,b=c\r\n'
	  envelope; cat "$T/m"; printf '.\r\n'
	  # 5: IPv6 as Postfix writes it
	  printf 'XFORWARD ADDR=IPV6:2001:db8::5 IDENT=4Rb2Wn0Kp4z\r\n'
	  envelope; cat "$T/m"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(count_messages)" = 5 ]
	log_lines > "$T/lines"
	[ "$(wc -l < "$T/lines")" = 5 ]
	re='scan_ms=[0-9]+, client=203\.0\.113\.7, qid=4Rb2Wn0Kp3z, from=<sender@example\.test>, to=<rcpt@example\.test>$'
	[[ "$(sed -n 1p "$T/lines")" =~ $re ]]
	for n in 2 3 4; do
		refute grep -q 'client=\|qid=' <(sed -n ${n}p "$T/lines")
	done
	[[ "$(sed -n 5p "$T/lines")" =~ ,\ client=IPV6:2001:db8::5,\ qid=4Rb2Wn0Kp4z,\ from= ]]
}

@test "log line of a virus: no server= or queued_as= when dropped or rejected; both when passed with -P" {
	start_server
	virus_in "$T/in"
	for flag in "" -b -P; do
		filter $flag < "$T/in"
		log_lines > "$T/lines"
		[ "$(wc -l < "$T/lines")" = 1 ]
		line=$(cat "$T/lines")
		[[ "$line" =~ ^[0-9A-F]+\.1:\ status=VIRUS:Eicar-Test-Signature\.UNOFFICIAL,\ size=[0-9]+, ]]
		[[ "$line" == *", clamd=$CLAMADDR, scan_ms="* ]]
		if [ "$flag" = -P ]; then
			[[ "$line" == *", server=250, queued_as=1, clamd="* ]]
		else
			[[ "$line" != *server=* ]] && [[ "$line" != *queued_as=* ]]
		fi
	done
}

# =========================================================================
# -T (SPEC 9.4)

# self_test [flags] SERVER - clamsmtpd -T; its lines in $T/out, status in $T/rc
self_test() {
	local rc=0
	"$CLAMSMTPD" -T -D "$SPOOL" "$@" > "$T/out" 2> "$T/err" < /dev/null || rc=$?
	echo "$rc" > "$T/rc"
}

@test "-T with everything up: exit 0, one ok line per clamd member (with its version), the server (name, keywords passed on), tmpdir" {
	start_server
	version=$(printf 'zVERSION\0' | socat - "UNIX-CONNECT:$CLAMD_SOCK" | tr -d '\0')
	[[ "$version" == ClamAV\ * ]]
	self_test -c "$CLAMD_SOCK" -c "$CLAMD_TCP" "$SERVER"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(wc -l < "$T/out")" = 4 ]
	[ "$(sed -n 1p "$T/out")" = "ok   clamd $CLAMD_SOCK: $version" ]
	[ "$(sed -n 2p "$T/out")" = "ok   clamd $CLAMD_TCP: $version" ]
	line=$(sed -n 3p "$T/out")
	[[ "$line" == "ok   server $SERVER: recorder.test; keywords passed on: "* ]]
	[[ "$line" == *SIZE* ]] && [[ "$line" == *XFORWARD* ]]
	[[ "$line" != *STARTTLS* ]] && [[ "$line" != *CHUNKING* ]] && [[ "$line" != *PIPELINING* ]]
	[ "$(sed -n 4p "$T/out")" = "ok   tmpdir $SPOOL: a spool file can be made" ]
	# it sent no mail and left no file
	[ "$(server_commands | tr '\n' ' ')" = "EHLO clamsmtpd-selftest QUIT " ]
	[ -z "$(ls -A "$SPOOL")" ]
}

@test "-T with a dead clamd member among live ones: exit 1, that member FAIL, the others ok" {
	start_server
	dead=127.0.0.1:$(free_port)
	self_test -c "$CLAMD_SOCK" -c "$dead" -c "$T/no-clamd.sock" -c "$CLAMD_TCP" "$SERVER"
	[ "$(cat "$T/rc")" = 1 ]
	[ "$(wc -l < "$T/out")" = 6 ]
	[[ "$(sed -n 1p "$T/out")" == "ok   clamd $CLAMD_SOCK: ClamAV "* ]]
	[[ "$(sed -n 2p "$T/out")" == "FAIL clamd $dead: "*"refused"* ]]
	[[ "$(sed -n 3p "$T/out")" == "FAIL clamd $T/no-clamd.sock: "*"No such file"* ]]
	[[ "$(sed -n 4p "$T/out")" == "ok   clamd $CLAMD_TCP: ClamAV "* ]]
	[[ "$(sed -n 5p "$T/out")" == "ok   server $SERVER: "* ]]
	[[ "$(sed -n 6p "$T/out")" == "ok   tmpdir $SPOOL: "* ]]
}

@test "-T with the server down: exit 1, FAIL server, the rest ok" {
	down=127.0.0.1:$(free_port)
	self_test -c "$CLAMD_SOCK" "$down"
	[ "$(cat "$T/rc")" = 1 ]
	[ "$(wc -l < "$T/out")" = 3 ]
	[[ "$(sed -n 1p "$T/out")" == "ok   clamd "* ]]
	[[ "$(sed -n 2p "$T/out")" == "FAIL server $down: "* ]]
	[[ "$(sed -n 3p "$T/out")" == "ok   tmpdir $SPOOL: "* ]]
}

@test "-T -u nobody: a tmpdir only root can write is FAIL tmpdir (exit 1); one nobody owns is ok as user nobody" {
	need_root
	start_server
	self_test -u nobody -c "$CLAMD_SOCK" "$SERVER"
	[ "$(cat "$T/rc")" = 1 ]
	[ "$(wc -l < "$T/out")" = 3 ]
	[[ "$(sed -n 1p "$T/out")" == "ok   clamd "* ]]
	[[ "$(sed -n 2p "$T/out")" == "ok   server "* ]]
	[[ "$(sed -n 3p "$T/out")" == "FAIL tmpdir $SPOOL: "*"Permission denied"* ]]
	chown nobody "$SPOOL"
	self_test -u nobody -c "$CLAMD_SOCK" "$SERVER"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(sed -n 3p "$T/out")" = "ok   tmpdir $SPOOL: a spool file can be made as user nobody" ]
	# it checks clamd as nobody too: a socket only root may use fails
	chmod 600 "$CLAMD_SOCK"
	self_test -u nobody -c "$CLAMD_SOCK" "$SERVER"
	chmod 666 "$CLAMD_SOCK"
	[ "$(cat "$T/rc")" = 1 ]
	[[ "$(sed -n 1p "$T/out")" == "FAIL clamd $CLAMD_SOCK: "*"Permission denied"* ]]
}

@test "-T with a bare-port serveraddr: the server line says skipped, and that is not a failure" {
	self_test -c "$CLAMD_SOCK" 10026
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(wc -l < "$T/out")" = 3 ]
	[[ "$(sed -n 2p "$T/out")" == "ok   server 10026: skipped"* ]]
}

# =========================================================================
# the man page's samples

# man_sample TITLE - the first .EX block after ".SS TITLE", as plain text
man_sample() {
	awk -v want=".SS $1" '
		$0 == want { on = 1; next }
		on && /^\.EX$/ { ex = 1; next }
		ex && /^\.EE$/ { exit }
		ex { print }
	' "$TESTS/../man/clamsmtpd.8" | sed -e 's/\\-/-/g' -e "s/\\\\(aq/'/g" -e 's/\\e/\\/g' -e 's/^\\&//'
}

@test "man page: the sample -x program runs as shown, one logger call with the values, nothing of the sender's executed" {
	start_server
	man_sample 'A virus action program' > "$T/sample"
	head -n1 "$T/sample" | grep -qx '#!/bin/sh'
	grep -q '/usr/bin/logger' "$T/sample"
	# logger itself is replaced by a recorder of its arguments
	hook logger <<-EOF
	for a; do printf '%s\n' "\$a"; done > $H/logger.args
	EOF
	sed "s|/usr/bin/logger|$T/logger.sh|" "$T/sample" > "$T/virus-hook"
	chmod 755 "$T/virus-hook"
	eicar_body "$T/virus"
	sender="<\$(/usr/bin/touch $T/pwned1)\`/usr/bin/touch $T/pwned2\`'\"@example.test>"
	{ printf 'EHLO c\r\nXFORWARD ADDR=192.0.2.9 IDENT=4Rb2Wn0Kp3z\r\n'
	  printf "MAIL FROM:$sender\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
	  cat "$T/virus"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter -q -x "$T/virus-hook" < "$T/in"
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	q=$(ls "$SPOOL")
	printf '%s\n' -t clamsmtpd-virus -p mail.warning -- \
		"dropped Eicar-Test-Signature.UNOFFICIAL from <\$(/usr/bin/touch $T/pwned1)\`/usr/bin/touch $T/pwned2\`'\"@example.test> via 192.0.2.9 qid=4Rb2Wn0Kp3z size=$(stat -c %s "$T/virus")" \
		"to <a@example.test> <b@example.test>" "kept as $SPOOL/$q" | diff - "$H/logger.args"
	[ ! -e "$T/pwned1" ] && [ ! -e "$T/pwned2" ]
	rm -f "$SPOOL/$q"
	# without XFORWARD (a pipe has no peer address) and without -q
	virus_in "$T/in"
	filter -x "$T/virus-hook" < "$T/in"
	printf '%s\n' -t clamsmtpd-virus -p mail.warning -- \
		"dropped Eicar-Test-Signature.UNOFFICIAL from <sender@example.test> via ? qid=? size=$(stat -c %s "$T/virus")" \
		"to <rcpt@example.test>" | diff - "$H/logger.args"
	grep -q "$T/virus-hook exited with status 0" "$T/err"
}
