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
		    -e "s|-l [^ ]*|-l 127.0.0.1:$2|" -e "s| [^ ]*\$| $SERVER|"
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
