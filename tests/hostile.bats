#!/usr/bin/env bats
# Hostile input: SPEC 6. Random bytes, dots, NULs, a huge body with no line
# break, thousands of commands, and injection attempts into log and header.

load helpers

# watch PROGRAM... < input - run it, sampling its peak memory and open fds;
# writes $T/out, $T/err, $T/rc, $T/hwm (VmHWM in kB) and $T/fds (max open fds)
WATCH_PY='
import subprocess, sys, threading, os
out, err, infile = sys.argv[1:4]
cmd = sys.argv[4:]
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=open(out, "wb"), stderr=open(err, "wb"))
peak = {"hwm": 0, "fds": 0}
def sample():
    try:
        with open("/proc/%d/status" % p.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    peak["hwm"] = max(peak["hwm"], int(line.split()[1]))
        peak["fds"] = max(peak["fds"], len(os.listdir("/proc/%d/fd" % p.pid)))
    except OSError:
        pass
stop = threading.Event()
def sampler():
    while not stop.wait(0.05):
        sample()
threading.Thread(target=sampler, daemon=True).start()
with open(infile, "rb") as f:
    while True:
        chunk = f.read(1 << 20)
        if not chunk:
            break
        try:
            p.stdin.write(chunk)
        except BrokenPipeError:
            break
try:
    p.stdin.close()
except BrokenPipeError:
    pass
rc = p.wait(timeout=300)
stop.set()
open(sys.argv[1] + ".rc", "w").write(str(rc))
print(peak["hwm"], peak["fds"])
'
watch() {
	python3 -c "$WATCH_PY" "$T/out" "$T/err" /dev/stdin "$@" > "$T/peak"
	mv "$T/out.rc" "$T/rc"
	cut -d' ' -f1 "$T/peak" > "$T/hwm"
	cut -d' ' -f2 "$T/peak" > "$T/fds"
}

only_smtp_on_stdout() {
	! tr -d '\r' < "$T/out" | grep -avE '^[2-5][0-9]{2}([ -]|$)' || false
}

@test "1 MB of random bytes as commands: SMTP errors, no crash, nothing delivered" {
	start_server
	{ printf 'EHLO c\r\n'; head -c 1048576 /dev/urandom; printf '\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	only_smtp_on_stdout
	grep -qE '^(500|502)' "$T/out"
	[ "$(count_messages)" = 0 ]
	# no line the server got holds a CR, a NUL or more than 2048 bytes
	python3 -c '
import sys
for line in open(sys.argv[1], "rb").read().split(b"\r\n"):
    assert b"\r" not in line and b"\n" not in line and b"\0" not in line, line[:40]
    assert len(line) <= 2048, len(line)' "$SRV/session-1.raw"
}

@test "a body of only dots arrives exactly, on lines and without line breaks" {
	start_server
	python3 -c '
import sys
lines = [b"." * n for n in list(range(0, 40)) * 50]
body = b"\r\n".join(lines) + b"\r\n" + b"." * 300000 + b"\r\n"
open(sys.argv[1], "wb").write(body)' "$T/meant"
	python3 -c '
import sys
d = open(sys.argv[1], "rb").read().split(b"\r\n")
open(sys.argv[2], "wb").write(b"\r\n".join(b"." + l if l.startswith(b".") else l for l in d))' "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	without_header "$SRV/msg-1.eml" > "$T/got"
	cmp "$T/meant" "$T/got"
}

@test "NUL bytes everywhere: in commands refused, in the body delivered" {
	start_server
	{ printf 'EHLO c\0\r\n\0\r\nEHLO c\r\nMAIL FROM:<a\0@example.test>\r\n'
	  envelope; head -c 100000 /dev/zero; printf '\r\n\0\0\0\r\n.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 500 500 250 500 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	[ "$(tr -cd '\0' < "$SRV/msg-1.eml" | wc -c)" = 100003 ]
}

@test "a 256 MB body with no line break streams through in flat memory" {
	SINKDIR=$T/sink
	mkdir -p "$SINKDIR"
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	smtp-sink -u nobody 127.0.0.1:$port 16 &
	echo $! >> "$T/pids"
	for i in $(seq 50); do
		python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
		sleep 0.1
	done
	SERVER=127.0.0.1:$port
	{ printf 'EHLO c\r\n'; envelope; head -c 268435456 /dev/zero | tr '\0' a; printf '\r\n.\r\nQUIT\r\n'; } |
		watch "$CLAMSMTPD" -d 3 -t 60 -D "$SPOOL" -c "$CLAMADDR" "$SERVER"
	[ "$(cat "$T/rc")" = 0 ]
	grep -q 'status=CLEAN, size=268435458, server=250' "$T/err"
	grep -q '^250 ' "$T/out"
	# the static buffers are a few hundred kB; a held line or message would be 256 MB
	echo "peak RSS $(cat "$T/hwm") kB" >&3
	[ "$(cat "$T/hwm")" -lt 16000 ]
}

@test "10 000 commands in one session: memory and descriptors stay flat" {
	start_server
	{ printf 'EHLO c\r\n'; for i in $(seq 10000); do printf 'NOOP\r\n'; done
	  envelope; printf 'x\r\n.\r\n'
	  for i in $(seq 10000); do printf 'RSET\r\n'; done; printf 'QUIT\r\n'; } > "$T/in"
	watch "$CLAMSMTPD" -t 60 -D "$SPOOL" -c "$CLAMADDR" "$SERVER" < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(grep -c '^250 ' "$T/out")" = 20004 ]
	[ "$(count_messages)" = 1 ]
	echo "peak RSS $(cat "$T/hwm") kB, at most $(cat "$T/fds") fds" >&3
	[ "$(cat "$T/hwm")" -lt 16000 ]
	[ "$(cat "$T/fds")" -le 8 ]
}

@test "an envelope address with control characters is refused, never relayed or logged" {
	start_server
	printf 'EHLO c\r\nMAIL FROM:<a\033[31m\x01b@example.test>\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 500 221" ]
	! server_commands | grep -q MAIL || false
	! grep -q $'\033' "$T/err" || false
}

@test "an envelope address with 8-bit bytes is logged printable: valid UTF-8 kept, C1 CSI and bad bytes made ?" {
	start_server
	a_message "$T/body"
	{ printf 'EHLO c\r\nMAIL FROM:<\xc3\xa9\x9b31mb\xc2\x9b2J@example.test>\r\nRCPT TO:<c\xff\xe2\x82@example.test>\r\nDATA\r\n'
	  cat "$T/body"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	line=$(grep 'status=CLEAN' "$T/err")
	[[ "$line" == *"from=<"$'\xc3\xa9'"?31mb??2J@example.test>, to=<c???@example.test>" ]]
	# every log line starts with the program name, is valid UTF-8 and holds
	# no control character, C0 or C1
	iconv -f UTF-8 -t UTF-8 "$T/err" > /dev/null
	! LC_ALL=C grep -avE '^clamsmtpd\[[0-9]+\]: ' "$T/err" || false
	! LC_ALL=C grep -aP '[\x00-\x1f\x7f]|\xc2[\x80-\x9f]' "$T/err" || false
}

@test "an overlong envelope address is logged bounded, and relayed whole" {
	start_server
	long=$(head -c 1900 /dev/zero | tr '\0' a)
	a_message "$T/body"
	{ printf 'EHLO c\r\nMAIL FROM:<%s@example.test>\r\n' "$long"
	  for i in $(seq 30); do printf 'RCPT TO:<%s%d@example.test>\r\n' "${long:0:300}" $i; done
	  printf 'DATA\r\n'; cat "$T/body"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(count_messages)" = 1 ]
	server_commands | grep -q "^MAIL FROM:<$long@example.test>$"
	line=$(grep 'status=CLEAN' "$T/err")
	[ "${#line}" -lt 2048 ]
	[[ "$line" == *", ..." ]]
}

@test "a header value with CR or LF never reaches a message" {
	start_server
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	run "$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" -h $'X-A: b\nX-Evil: c' "$SERVER" < "$T/in"
	[ "$status" -eq 2 ]
	run "$CLAMSMTPD" -D "$SPOOL" -c "$CLAMADDR" -h $'X-A: b\rX-Evil: c' "$SERVER" < "$T/in"
	[ "$status" -eq 2 ]
	[ ! -s "$SRV/commands.log" ]
}

@test "a valgrind memcheck session (messages, a virus, a failure) is clean, with no leaks" {
	command -v valgrind >/dev/null || skip "valgrind is not installed"
	[[ "$CLAMSMTPD" != *asan* ]] || skip "valgrind does not run the ASan build"
	start_server --reply-nth 'dataend:2=452 4.3.1 Insufficient storage'
	a_message "$T/clean"
	{ "$TESTS/eicar.sh"; printf '\r\n'; } > "$T/virus"
	transcript "$T/in" "$T/clean" "$T/virus" "$T/clean" "$T/clean"
	valgrind --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect,possible \
		--errors-for-leak-kinds=definite,indirect,possible --track-fds=yes --log-file="$T/vg" \
		"$CLAMSMTPD" -d 4 -D "$SPOOL" -c "$CLAMADDR" "$SERVER" < "$T/in" > "$T/out" 2> "$T/err" || {
		cat "$T/vg" >&2; false; }
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 250 250 354 452 250 250 354 250 221" ]
	grep -q 'ERROR SUMMARY: 0 errors' "$T/vg"
}
