#!/usr/bin/env bats
# Listener mode and daemon life: SPEC 2. Real processes on loopback.

load helpers

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# listen_filter ADDR [flags] - clamsmtpd -d 3 -l ADDR in the background; LPID, LOG
listen_filter() {
	local addr=$1
	shift
	LOG=$T/listener.log
	"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l "$addr" "$@" "$SERVER" \
		2> "$LOG" < /dev/null &
	LPID=$!
	echo "$LPID" >> "$T/pids"
	wait_file "$T/clamsmtpd.pid"
}

# send_mail TARGET [swaks options] - one message through swaks; output in $T/swaks
send_mail() {
	local target=$1
	shift
	swaks --server "$target" --from sender@example.test --to rcpt@example.test \
		--timeout 20 "$@" > "$T/swaks" 2>&1
}

@test "-l host:port: a clean message is delivered and EICAR is dropped" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port
	send_mail 127.0.0.1:$port --body 'clean text'
	eicar "$T/eicar.com"
	send_mail 127.0.0.1:$port --attach "$T/eicar.com"
	grep -q '250 2.7.0 Virus detected; message discarded' "$T/swaks"
	[ "$(count_messages)" = 1 ]
	grep -q 'clean text' "$SRV/msg-1.eml"
	grep -q 'status=VIRUS:Eicar-Test-Signature.UNOFFICIAL' "$LOG"
}

@test "-l [::1]:port serves IPv6 clients" {
	start_server
	port=$(free_port)
	listen_filter "[::1]:$port"
	send_mail "[::1]:$port" --body 'over v6'
	[ "$(count_messages)" = 1 ]
}

@test "-l [::]:port and a bare port serve both IPv4 and IPv6" {
	start_server
	port=$(free_port)
	listen_filter "[::]:$port"
	send_mail "127.0.0.1:$port" --body v4
	send_mail "[::1]:$port" --body v6
	kill "$LPID"; wait "$LPID" || true
	rm -f "$T/clamsmtpd.pid"
	port=$(free_port)
	listen_filter "$port"
	send_mail "127.0.0.1:$port" --body v4bare
	send_mail "[::1]:$port" --body v6bare
	[ "$(count_messages)" = 4 ]
}

@test "-l /path listens on a unix socket" {
	start_server
	listen_filter "$T/clamsmtpd.sock"
	[ -S "$T/clamsmtpd.sock" ]
	printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
	python3 "$TESTS/smtp-client.py" "$T/clamsmtpd.sock" --send "$T/in" > "$T/got"
	grep -q '^221' "$T/got"
}

@test "stdin a character device and no -l: listens on port 10025" {
	python3 -c 'import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1",10025))' ||
		skip "port 10025 is taken on this machine"
	start_server
	"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" "$SERVER" 2> "$T/log" < /dev/null &
	echo $! >> "$T/pids"
	wait_file "$T/clamsmtpd.pid"
	send_mail 127.0.0.1:10025 --body 'default port'
	[ "$(count_messages)" = 1 ]
}

@test "systemd Accept=no (LISTEN_FDS): the inherited socket is served" {
	start_server
	port=$(free_port)
	systemd-socket-activate -l 127.0.0.1:$port \
		"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" "$SERVER" 2> "$T/log" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do grep -q Listening "$T/log" && break; sleep 0.1; done
	send_mail 127.0.0.1:$port --body 'socket activated'
	send_mail 127.0.0.1:$port --body 'second one'
	[ "$(count_messages)" = 2 ]
	grep -q 'listening for connections' "$T/log"
}

@test "systemd Accept=yes (--inetd): one stdio-mode process per connection" {
	start_server
	port=$(free_port)
	systemd-socket-activate -l 127.0.0.1:$port -a --inetd \
		"$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" "$SERVER" 2> "$T/log" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do grep -q Listening "$T/log" && break; sleep 0.1; done
	send_mail 127.0.0.1:$port --body 'inetd style'
	eicar "$T/eicar.com"
	send_mail 127.0.0.1:$port --attach "$T/eicar.com"
	grep -q '250 2.7.0 Virus detected' "$T/swaks"
	[ "$(count_messages)" = 1 ]
}

@test "-m 2: with three sessions at once, the third gets 421 4.3.2" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port -m 2
	printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
	held=
	for n in 1 2; do
		python3 "$TESTS/smtp-client.py" 127.0.0.1:$port --wait '220 ' --sleep 3 --send "$T/in" \
			--out "$T/held$n" &
		held="$held $!"
		echo $! >> "$T/pids"
	done
	for i in $(seq 50); do [ -s "$T/held1" ] && [ -s "$T/held2" ] && break; sleep 0.1; done
	python3 "$TESTS/smtp-client.py" 127.0.0.1:$port --send "$T/in" --out "$T/third"
	[ "$(tr -d '\r' < "$T/third")" = "421 4.3.2 Too many connections, try again later" ]
	wait $held
	grep -q '^221' "$T/held1"
	grep -q '^221' "$T/held2"
	grep -q 'too many connections' "$LOG"
}

@test "pidfile: written once listening, refused while that process lives, removed on exit" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port
	[ "$(cat "$T/clamsmtpd.pid")" = "$LPID" ]
	run "$CLAMSMTPD" -d 3 -D "$SPOOL" -p "$T/clamsmtpd.pid" -l 127.0.0.1:$(free_port) "$SERVER"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"is running"* ]]
	kill -TERM "$LPID"
	rc=0; wait "$LPID" || rc=$?
	[ "$rc" -eq 0 ]
	[ ! -e "$T/clamsmtpd.pid" ]
}

@test "SIGTERM during DATA: that message is delivered, new connections refused, exit 0" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: x\r\n\r\nfirst half\r\n' > "$T/part1"
	printf 'second half\r\n.\r\nQUIT\r\n' > "$T/part2"
	python3 "$TESTS/smtp-client.py" 127.0.0.1:$port --send "$T/part1" --wait '354 ' --sleep 2 \
		--send "$T/part2" --out "$T/client" &
	client=$!
	echo $client >> "$T/pids"
	for i in $(seq 50); do grep -q '^354' "$T/client" 2>/dev/null && break; sleep 0.1; done
	kill -TERM "$LPID"
	sleep 0.5
	! python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 2)" 2>/dev/null || false
	wait "$client"
	rc=0; wait "$LPID" || rc=$?
	[ "$rc" -eq 0 ]
	[ ! -e "$T/clamsmtpd.pid" ]
	grep -q '^250 2.0.0 Ok' "$T/client"
	[ "$(count_messages)" = 1 ]
	grep -q 'second half' "$SRV/msg-1.eml"
}

@test "the loopback feature: each message returns to its own sender's IP" {
	port=$(free_port)
	start_server a --listen 127.0.0.2:$port
	A=$SRV
	start_server b --listen 127.0.0.3:$port
	B=$SRV
	SERVER=$port
	lport=$(free_port)
	listen_filter 127.0.0.1:$lport
	send_mail 127.0.0.1:$lport --local-interface 127.0.0.2 --body 'from two'
	send_mail 127.0.0.1:$lport --local-interface 127.0.0.3 --body 'from three'
	grep -q 'from two' "$A/msg-1.eml"
	grep -q 'from three' "$B/msg-1.eml"
	[ "$(ls "$A" | grep -c '^msg-.*raw$')" = 1 ]
	[ "$(ls "$B" | grep -c '^msg-.*raw$')" = 1 ]
}

@test "the loopback feature over IPv6: a [::1] client is relayed to [::1]" {
	port=$(free_port)
	start_server --listen "[::1]:$port"
	SERVER=$port
	lport=$(free_port)
	listen_filter "[::1]:$lport"
	send_mail "[::1]:$lport" --body 'six'
	[ "$(count_messages)" = 1 ]
	grep -q '^peer=::1$' "$SRV/msg-1.env"
}

@test "without -d the listener daemonises; the pidfile names the daemon" {
	start_server
	port=$(free_port)
	run "$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l 127.0.0.1:$port "$SERVER"
	[ "$status" -eq 0 ]
	wait_file "$T/clamsmtpd.pid"
	daemon=$(cat "$T/clamsmtpd.pid")
	echo "$daemon" >> "$T/pids"
	kill -0 "$daemon"
	send_mail 127.0.0.1:$port --body 'daemon'
	[ "$(count_messages)" = 1 ]
	kill -TERM "$daemon"
	for i in $(seq 50); do [ -e "$T/clamsmtpd.pid" ] || break; sleep 0.1; done
	[ ! -e "$T/clamsmtpd.pid" ]
}

@test "finished sessions leave no zombie children" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port
	for n in 1 2 3; do send_mail 127.0.0.1:$port --body "n$n"; done
	sleep 0.5
	[ "$(count_messages)" = 3 ]
	[ -z "$(ps -o stat= --ppid "$LPID" | grep Z || true)" ]
	[ -z "$(ps -o pid= --ppid "$LPID" || true)" ]
}

@test "an address that cannot be bound: one line on stderr, exit status 1" {
	start_server
	port=$(cat "$SRV/port")       # the recorder holds it
	run "$CLAMSMTPD" -d 3 -D "$SPOOL" -l 127.0.0.1:$port "$SERVER"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"cannot listen"*"Address already in use"* ]]
}

@test "the loopback feature with a v4-mapped peer on a [::] listener goes back over IPv4" {
	port=$(free_port)
	start_server --listen 127.0.0.2:$port
	SERVER=$port
	lport=$(free_port)
	listen_filter "[::]:$lport"
	send_mail 127.0.0.1:$lport --local-interface 127.0.0.2 --body 'mapped'
	# only a server on 127.0.0.2 exists at that port: arriving there is the proof
	[ "$(count_messages)" = 1 ]
	grep -q 'mapped' "$SRV/msg-1.eml"
}

@test "xinetd with the shipped xinetd.d/clamsmtpd delivers a clean message and drops EICAR" {
	command -v xinetd >/dev/null || skip "xinetd is not installed"
	start_server
	port=$(free_port)
	# the shipped file, with only its port, user and paths changed for the test
	sed -e "s|^\(\s*port\s*=\).*|\1 $port|" \
	    -e "s|^\(\s*disable\s*=\).*|\1 no|" \
	    -e "s|^\(\s*user\s*=\).*|\1 $(id -un)|" \
	    -e "s|^\(\s*server\s*=\).*|\1 $(readlink -f "$CLAMSMTPD")|" \
	    -e "s|^\(\s*server_args\s*=\).*|\1 -c $CLAMADDR -D $SPOOL $SERVER|" \
	    "$TESTS/../xinetd.d/clamsmtpd" > "$T/xinetd.conf"
	grep -q "port *= $port" "$T/xinetd.conf"
	xinetd -dontfork -f "$T/xinetd.conf" -pidfile "$T/xinetd.pid" -filelog "$T/xinetd.log" 2>"$T/xinetd.err" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
		sleep 0.1
	done
	send_mail 127.0.0.1:$port --body 'via xinetd'
	grep -q '^<- *250 2.0.0 Ok' "$T/swaks"
	eicar "$T/eicar.com"
	send_mail 127.0.0.1:$port --attach "$T/eicar.com"
	grep -q '250 2.7.0 Virus detected; message discarded' "$T/swaks"
	[ "$(count_messages)" = 1 ]
	grep -q 'via xinetd' "$SRV/msg-1.eml"
	head -n1 "$SRV/msg-1.eml" | grep -q '^X-AV-Checked: ClamAV using ClamSMTP'
}

# unit_command UNIT PORT - the unit's ExecStart, with the test's paths and ports
unit_command() {
	sed -n 's/^ExecStart=//p' "$TESTS/../systemd/$1" |
		sed -e "s|/usr/local/sbin/clamsmtpd|$(readlink -f "$CLAMSMTPD")|" \
		    -e "s|-c [^ ]*|-c $CLAMADDR|" -e "s|-D [^ ]*|-D $SPOOL|" \
		    -e "s|-l [^ ]*|-l 127.0.0.1:$2|" -e "s| [^ ]*\$| $SERVER|" -e 's| \$OPTIONS||'
}

@test "the shipped systemd units: Accept=yes socket + service, and the listener service" {
	start_server
	grep -q '^Accept=yes$' "$TESTS/../systemd/clamsmtpd.socket"
	grep -q '^StandardError=journal$' "$TESTS/../systemd/clamsmtpd@.service"
	port=$(free_port)
	# shellcheck disable=SC2046
	systemd-socket-activate -l 127.0.0.1:$port -a --inetd $(unit_command clamsmtpd@.service) 2> "$T/log" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do grep -q Listening "$T/log" && break; sleep 0.1; done
	send_mail 127.0.0.1:$port --body 'per-connection unit'
	port=$(free_port)
	# shellcheck disable=SC2046
	$(unit_command clamsmtpd.service $port) 2> "$T/listener.log" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do grep -q 'listening' "$T/listener.log" && break; sleep 0.1; done
	send_mail 127.0.0.1:$port --body 'listener unit'
	[ "$(count_messages)" = 2 ]
	if command -v systemd-analyze >/dev/null && [ -d /run/systemd/system ]; then
		systemd-analyze verify "$TESTS"/../systemd/clamsmtpd.socket
	fi
}

@test "LISTEN_FDS naming something that is not a listening socket: one line, exit 1" {
	run bash -c 'export LISTEN_PID=$$ LISTEN_FDS=1; exec 3</dev/null; exec "$0" -d 3 -D "$1" 127.0.0.1:25' \
		"$CLAMSMTPD" "$SPOOL"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"fd 3 is not a listening socket"* ]]
}

@test "relative -D, -p and -l paths keep working after the listener daemonises" {
	start_server
	mkdir -m 700 "$T/rel"
	cd "$T"
	run "$CLAMSMTPD" -D rel -p rel.pid -c "$CLAMADDR" -l ./rel.sock "$SERVER"
	[ "$status" -eq 0 ]
	wait_file "$T/rel.pid"
	echo "$(cat "$T/rel.pid")" >> "$T/pids"
	[ -S "$T/rel.sock" ]
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nhi\r\n.\r\nQUIT\r\n' > "$T/in"
	python3 "$TESTS/smtp-client.py" "$T/rel.sock" --send "$T/in" > "$T/got"
	grep -q '^250 2.0.0 Ok' "$T/got"
	[ "$(count_messages)" = 1 ]
	[ -z "$(ls -A "$T/rel")" ]
	kill "$(cat "$T/rel.pid")"
	for i in $(seq 50); do [ -e "$T/rel.pid" ] || break; sleep 0.1; done
	[ ! -e "$T/rel.pid" ]
	[ ! -e "$T/rel.sock" ]
}

@test "-l on a unix socket another listener holds: refused, the socket left alone" {
	start_server
	listen_filter "$T/held.sock"
	run "$CLAMSMTPD" -d 3 -D "$SPOOL" -l "$T/held.sock" "$SERVER"
	[ "$status" -eq 1 ]
	[[ "$output" == *"another process is listening there"* ]]
	[ -S "$T/held.sock" ]
	printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
	python3 "$TESTS/smtp-client.py" "$T/held.sock" --send "$T/in" > "$T/got"
	grep -q '^221' "$T/got"
}

# --- start-up and stopping (SPEC 2) ----------------------------------------

# cpu_ticks PID - user plus system CPU time the process has used, in clock ticks
cpu_ticks() {
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# wait_log TEXT [FILE] - wait up to 10 s for TEXT in the log
wait_log() {
	local i
	for i in $(seq 100); do
		grep -qF -- "$1" "${2:-$LOG}" 2>/dev/null && return 0
		sleep 0.1
	done
	echo "timed out waiting for '$1' in ${2:-$LOG}" >&2
	return 1
}

# gone PID - wait up to 5 s for a process to end; fails if it is still there
gone() {
	local i
	for i in $(seq 50); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "process $1 is still running" >&2
	return 1
}

@test "started with fds 0, 1 and 2 closed: the daemon keeps its socket, serves, and does not spin" {
	start_server
	port=$(free_port)
	rc=0
	"$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l 127.0.0.1:$port "$SERVER" \
		<&- >&- 2>&- || rc=$?
	[ "$rc" -eq 0 ]
	wait_file "$T/clamsmtpd.pid"
	daemon=$(cat "$T/clamsmtpd.pid")
	echo "$daemon" >> "$T/pids"
	send_mail 127.0.0.1:$port --body 'closed descriptors'
	[ "$(count_messages)" = 1 ]
	for fd in 0 1 2; do [ "$(readlink "/proc/$daemon/fd/$fd")" = /dev/null ]; done
	before=$(cpu_ticks "$daemon")
	sleep 1
	# an idle listener uses next to no CPU; a spinning one ~100 ticks a second
	[ $(( $(cpu_ticks "$daemon") - before )) -lt 20 ]
}

@test "stdin closed, with -d: still listener mode" {
	start_server
	port=$(free_port)
	"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l 127.0.0.1:$port "$SERVER" \
		2> "$T/listener.log" <&- &
	echo $! >> "$T/pids"
	wait_file "$T/clamsmtpd.pid"
	send_mail 127.0.0.1:$port --body 'no stdin'
	[ "$(count_messages)" = 1 ]
}

@test "accept() out of descriptors (EMFILE): logged once, no busy loop, serving again once they are free" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port
	# accept() takes the lowest free descriptor: with the limit there, it fails with EMFILE
	free=0
	while [ -e "/proc/$LPID/fd/$free" ]; do free=$((free + 1)); done
	prlimit --pid "$LPID" --nofile=$free:
	printf 'QUIT\r\n' > "$T/in"
	clients=
	for n in 1 2 3; do
		python3 "$TESTS/smtp-client.py" 127.0.0.1:$port --wait '220 ' --send "$T/in" --out "$T/c$n" &
		clients="$clients $!"
		echo $! >> "$T/pids"
	done
	wait_log 'cannot accept'
	before=$(cpu_ticks "$LPID")
	sleep 2
	after=$(cpu_ticks "$LPID")
	# a busy loop would burn ~200 ticks in 2 s
	[ $((after - before)) -lt 40 ]
	[ "$(grep -c 'cannot accept' "$LOG")" = 1 ]
	[ ! -s "$T/c1" ]
	prlimit --pid "$LPID" --nofile=1024:
	wait $clients
	for n in 1 2 3; do grep -q '^221' "$T/c$n"; done
	grep -q 'accepting connections again' "$LOG"
}

@test "a fork that fails: that client gets 421 4.3.2 and the failure is logged" {
	command -v setpriv >/dev/null && command -v prlimit >/dev/null || skip "no setpriv or prlimit"
	[ "$(id -u)" = 0 ] || skip "needs root to run the listener as a uid of its own"
	uid=64977       # a uid with no process: RLIMIT_NPROC 1 then lets the listener fork nothing
	[ -z "$(ps -o pid= -u $uid)" ] || skip "uid $uid has processes"
	start_server
	port=$(free_port)
	LOG=$T/listener.log
	prlimit --nproc=1:1 setpriv --reuid=$uid --regid=$uid --clear-groups \
		"$CLAMSMTPD" -d 3 -D /tmp -c "$CLAMADDR" -l 127.0.0.1:$port "$SERVER" 2> "$LOG" < /dev/null &
	echo $! >> "$T/pids"
	wait_log 'listening for connections'
	python3 "$TESTS/smtp-client.py" 127.0.0.1:$port --out "$T/got"
	[ "$(tr -d '\r' < "$T/got")" = "421 4.3.2 Cannot start a session, try again later" ]
	grep -q 'cannot fork' "$LOG"
	[ ! -s "$SRV/commands.log" ]
}

@test "the daemonising parent exits only once the pidfile names the running daemon" {
	start_server
	for n in 1 2 3 4 5; do
		port=$(free_port)
		rm -f "$T/clamsmtpd.pid"
		run "$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l 127.0.0.1:$port "$SERVER"
		[ "$status" -eq 0 ]
		# no wait: it must be there already
		[ -s "$T/clamsmtpd.pid" ]
		daemon=$(cat "$T/clamsmtpd.pid")
		echo "$daemon" >> "$T/pids"
		kill -0 "$daemon"
		kill -TERM "$daemon"
		gone "$daemon"
	done
}

@test "a pidfile that cannot be written: the daemonising parent exits 1 and nothing keeps running" {
	start_server
	port=$(free_port)
	# a file size limit of 0 lets the pidfile be opened but not written
	run prlimit --fsize=0 "$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" \
		-l 127.0.0.1:$port "$SERVER"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"$T/clamsmtpd.pid"* ]]
	[ ! -s "$T/clamsmtpd.pid" ]
	sleep 0.5
	! python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 2)" 2>/dev/null || false
}

@test "a pidfile naming our own pid is stale (a restarted container)" {
	start_server
	port=$(free_port)
	LOG=$T/listener.log
	# exec keeps the pid: the pidfile names the very process that starts
	bash -c 'echo $$ > "$1"; shift; exec "$@"' _ "$T/clamsmtpd.pid" \
		"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l 127.0.0.1:$port "$SERVER" \
		2> "$LOG" < /dev/null &
	LPID=$!
	echo $LPID >> "$T/pids"
	wait_log 'listening for connections'
	send_mail 127.0.0.1:$port --body 'same pid'
	[ "$(count_messages)" = 1 ]
	[ "$(cat "$T/clamsmtpd.pid")" = "$LPID" ]
}

@test "a pidfile that is a symlink is refused, and its target left alone" {
	start_server
	port=$(free_port)
	echo precious > "$T/victim"
	ln -s "$T/victim" "$T/clamsmtpd.pid"
	run timeout 10 "$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" \
		-l 127.0.0.1:$port "$SERVER"
	[ "$status" -eq 1 ]
	[ "${#lines[@]}" -eq 1 ]
	[[ "$output" == *"symbolic link"* ]]
	[ "$(cat "$T/victim")" = precious ]
	[ -L "$T/clamsmtpd.pid" ]
}

@test "-l hostname:port listens on every address the name resolves to" {
	unshare -m true 2>/dev/null || skip "cannot make a mount namespace for a private hosts file"
	start_server
	port=$(free_port)
	printf '127.0.0.2 multi.test\n127.0.0.3 multi.test\n::1 multi.test\n' > "$T/hosts"
	LOG=$T/listener.log
	# a private /etc/hosts for this process only (unshare makes the mount private)
	unshare -m sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' _ "$T/hosts" \
		"$CLAMSMTPD" -d 3 -D "$SPOOL" -c "$CLAMADDR" -p "$T/clamsmtpd.pid" -l multi.test:$port "$SERVER" \
		2> "$LOG" < /dev/null &
	echo $! >> "$T/pids"
	wait_file "$T/clamsmtpd.pid"
	send_mail 127.0.0.2:$port --body two
	send_mail 127.0.0.3:$port --body three
	send_mail "[::1]:$port" --body six
	[ "$(count_messages)" = 3 ]
	# and on nothing else
	! python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 2)" 2>/dev/null || false
}

@test "SIGTERM: idle sessions get 421 4.3.2 at once and the listener exits 0 in seconds, not -t" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port -t 120
	printf 'EHLO c\r\n' > "$T/ehlo"
	clients=
	for n in 1 2; do
		python3 "$TESTS/smtp-client.py" 127.0.0.1:$port --wait '220 ' --send "$T/ehlo" --wait '250 ' \
			--out "$T/idle$n" &
		clients="$clients $!"
		echo $! >> "$T/pids"
	done
	for i in $(seq 100); do grep -q '^250 ' "$T/idle1" "$T/idle2" 2>/dev/null &&
		[ "$(grep -l '^250 ' "$T/idle1" "$T/idle2" | wc -l)" = 2 ] && break; sleep 0.1; done
	kill -TERM "$LPID"
	gone "$LPID"
	rc=0; wait "$LPID" || rc=$?
	[ "$rc" -eq 0 ]
	wait $clients
	for n in 1 2; do [ "$(tr -d '\r' < "$T/idle$n" | tail -n1)" = "421 4.3.2 Service shutting down" ]; done
	[ ! -e "$T/clamsmtpd.pid" ]
}

@test "SIGTERM: connections waiting in the backlog get 421 4.3.2 Service shutting down, not a reset" {
	start_server
	port=$(free_port)
	listen_filter 127.0.0.1:$port
	kill -STOP "$LPID"
	# the kernel completes these connections; the stopped listener accepts none
	python3 - "$port" "$T/backlog" <<-'EOF' &
	import socket, sys
	port, out = int(sys.argv[1]), sys.argv[2]
	socks = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(5)]
	with open(out + ".ready", "w") as f:
	    f.write("connected\n")
	with open(out, "w") as f:
	    for s in socks:
	        data = b""
	        try:
	            while True:
	                chunk = s.recv(4096)
	                if not chunk:
	                    break
	                data += chunk
	        except OSError as e:
	            data += ("<%s>" % type(e).__name__).encode()
	        f.write(data.decode("latin-1").replace("\r", "").strip() + "\n")
	EOF
	reader=$!
	echo $reader >> "$T/pids"
	wait_file "$T/backlog.ready"
	kill -TERM "$LPID"
	kill -CONT "$LPID"
	wait "$reader"
	gone "$LPID"
	rc=0; wait "$LPID" || rc=$?
	[ "$rc" -eq 0 ]
	cat "$T/backlog" >&2
	[ "$(wc -l < "$T/backlog")" = 5 ]
	[ "$(sort -u "$T/backlog")" = "421 4.3.2 Service shutting down" ]
	[ ! -e "$T/clamsmtpd.pid" ]
}
