#!/usr/bin/env bats
# DATA: SPEC 4, 5 and 7. The body as the client meant it reaches the server
# (dot-stuffing, empty and huge messages, long lines, NUL, bare CR/LF), no
# smuggled end-of-data is ever honoured, viruses are dropped, rejected or
# quarantined, the header is added, and each message gets its log line.

load helpers

# no_bare_crlf FILE - FILE holds no CR without LF after it and no LF without CR before it
no_bare_crlf() {
	python3 -c '
import re, sys
d = open(sys.argv[1], "rb").read()
m = re.search(rb"\r(?!\n)|(?<!\r)\n", d)
if m:
    sys.exit("bare %r at offset %d of %s" % (m.group(0), m.start(), sys.argv[1]))
' "$1"
}

# stuff MEANT SENT - SENT is MEANT (CRLF lines) as a client sends it: a dot before every line that starts with one
stuff() {
	python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
lines = d.split(b"\r\n")
open(sys.argv[2], "wb").write(b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines))
' "$1" "$2"
}

# delivered_as N MEANT - message N, minus the added header, is exactly MEANT;
# on the wire it was the header, MEANT stuffed, and ".\r\n"
delivered_as() {
	local n=$1 meant=$2
	[ "$(head -n1 "$SRV/msg-$n.eml")" = $'X-AV-Checked: ClamAV using ClamSMTP\r' ]
	without_header "$SRV/msg-$n.eml" > "$T/got-$n"
	cmp "$meant" "$T/got-$n"
	stuff "$meant" "$T/stuffed-$n"
	{ printf 'X-AV-Checked: ClamAV using ClamSMTP\r\n'; cat "$T/stuffed-$n"; printf '.\r\n'; } > "$T/wire-$n"
	cmp "$T/wire-$n" "$SRV/msg-$n.raw"
	no_bare_crlf "$SRV/msg-$n.raw"
}

# feed [options] -- command... : run a command with a pipe on its stdin
#   --in FILE        what to write first
#   --bytewise SECS  one byte per write, SECS between writes
#   --replies N      then keep stdin open until N final replies came (else fail)
#   --then FILE      then write this, and close stdin
# Its stdout goes to $T/out, stderr to $T/err, status to $T/rc. Every wait is
# bounded: a hang makes feed fail with "TIMEOUT" on stderr.
FEED_PY='
import os, re, subprocess, sys, threading, time
args = sys.argv[1:]
opt = {"in": None, "bytewise": None, "replies": None, "then": None}
while args[0] != "--":
    opt[args[0][2:]] = args[1]
    args = args[2:]
cmd, out, err = args[1:-2], args[-2], args[-1]
p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(err, "wb"))
got = bytearray()
def reader():
    while True:
        b = os.read(p.stdout.fileno(), 65536)
        if not b:
            return
        got.extend(b)
t = threading.Thread(target=reader, daemon=True)
t.start()
def finals():
    return len(re.findall(rb"(?m)^[2-5][0-9][0-9](?: [^\r\n]*)?\r?\n", bytes(got)))
def write(data, delay):
    fd = p.stdin.fileno()
    if delay is None:
        os.write(fd, data)
        return
    for i in range(len(data)):
        os.write(fd, data[i:i + 1])
        time.sleep(delay)
ok = True
try:
    if opt["in"]:
        write(open(opt["in"], "rb").read(), None if opt["bytewise"] is None else float(opt["bytewise"]))
    if opt["replies"]:
        deadline = time.monotonic() + 5
        while finals() < int(opt["replies"]) and time.monotonic() < deadline:
            time.sleep(0.01)
        if finals() < int(opt["replies"]):
            sys.stderr.write("TIMEOUT: %d of %s replies after 5 s: %r\n" % (finals(), opt["replies"], bytes(got)))
            ok = False
    if ok and opt["then"]:
        write(open(opt["then"], "rb").read(), None)
except BrokenPipeError:
    pass
try:
    p.stdin.close()
except BrokenPipeError:
    pass
try:
    rc = p.wait(timeout=10)
except subprocess.TimeoutExpired:
    sys.stderr.write("TIMEOUT: still running 10 s after stdin was closed\n")
    p.kill()
    rc = p.wait()
    ok = False
t.join(2)
open(out, "wb").write(bytes(got))
print(rc)
sys.exit(0 if ok else 1)
'
feed() {
	local opts=()
	while [ "$1" != -- ]; do opts+=("$1"); shift; done
	shift
	python3 -c "$FEED_PY" "${opts[@]}" -- "$@" "$T/out" "$T/err" > "$T/rc"
}

# clamsmtpd_cmd [flags] - the filter command line (as filter runs it)
clamsmtpd_cmd() {
	echo "$CLAMSMTPD" -d 4 -t "${TIMEOUT:-10}" -D "$SPOOL" -c "$CLAMADDR" "$@" "$SERVER"
}

# big_message MEANT BYTES - about BYTES of CRLF text lines, some starting with dots
big_message() {
	dotted_text "$1" "$2" 'From: sender@example.test\r\nSubject: big\r\n\r\n'
}

# smuggle VARIANT - a one-message session whose body holds VARIANT (printf
# escapes) followed by a whole second transaction; it must stay body text
smuggle() {
	start_server
	printf "Subject: smuggling\r\n\r\nhello${1}MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n" > "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	smuggle_check
}

smuggle_check() {
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	[ "$(server_commands | tr '\n' '|')" = "EHLO client.test|MAIL FROM:<sender@example.test>|RCPT TO:<rcpt@example.test>|DATA|QUIT|" ]
	[ "$(server_commands | grep -c '^MAIL FROM')" = 1 ]
	[ "$(server_commands | grep -c '^DATA')" = 1 ]
	! server_commands | grep -q evil || false
	no_bare_crlf "$SRV/msg-1.raw"
	# the only end-of-data mark the server saw is the real one, at the very end
	python3 -c '
import sys
d = open(sys.argv[1], "rb").read()
assert d.endswith(b"\r\n.\r\n") and d.count(b"\r\n.\r\n") == 1, d
assert b"smuggled\r\n" in d and b"MAIL FROM:<evil@example.test>\r\n" in d, d
' "$SRV/msg-1.raw"
}

# virus_dropped BODY NAME - BODY is dropped as virus NAME: 250 2.7.0, RSET, no DATA
virus_dropped() {
	start_server
	transcript "$T/in" "$1"
	filter < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	[ "$(server_commands | tr '\n' '|')" = "EHLO client.test|MAIL FROM:<sender@example.test>|RCPT TO:<rcpt@example.test>|RSET|QUIT|" ]
	grep -qE "^clamsmtpd\[[0-9]+\]: [^ ]+: status=VIRUS:$2, size=[0-9]+, clamd=[^ ]+, scan_ms=[0-9]+, from=<sender@example.test>, to=<rcpt@example.test>$" "$T/err"
}

# eicar_mime FILE - a multipart message with EICAR as a base64 attachment folded at 76
eicar_mime() {
	eicar "$T/eicar.com"
	{
		printf 'From: sender@example.test\nTo: rcpt@example.test\nSubject: attachment\n'
		printf 'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="XYZ"\n\n'
		printf -- '--XYZ\nContent-Type: text/plain\n\nSee the attachment.\n\n'
		printf -- '--XYZ\nContent-Type: application/octet-stream; name="eicar.com"\n'
		printf 'Content-Transfer-Encoding: base64\nContent-Disposition: attachment; filename="eicar.com"\n\n'
		base64 -w 76 "$T/eicar.com"
		printf -- '--XYZ--\n'
	} | sed 's/$/\r/' > "$1"
	! grep -q 'EICAR' "$1" || false
	[ "$(sed -n '/^Content-Transfer/,$p' "$1" | awk '{ print length($0) }' | sort -n | tail -n1)" = 77 ]
}

# --- dot-stuffing, empty and odd-ended messages -------------------------------

@test "dot-stuffed lines reach the server exactly as the client meant them" {
	start_server
	printf 'Subject: dots\r\n\r\n.one dot\r\n..two dots\r\n...three dots\r\n..\r\n.\r\nmid.dle\r\n. space\r\n.\r\nend\r\n' > "$T/meant"
	stuff "$T/meant" "$T/body"
	grep -q $'^\\.\\.\\.\\.three dots\r$' "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/meant"
}

@test "with -h '' a first body line starting with a dot is stuffed too" {
	start_server
	printf '.starts with a dot\r\n..\r\nplain\r\n' > "$T/meant"
	stuff "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	filter -h '' < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	cmp "$T/meant" "$SRV/msg-1.eml"
	{ cat "$T/body"; printf '.\r\n'; } > "$T/wire"
	cmp "$T/wire" "$SRV/msg-1.raw"
}

@test "an empty message (DATA and . in one write) is delivered with only the header and does not hang" {
	start_server
	printf 'EHLO client.test\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<rcpt@example.test>\r\nDATA\r\n.\r\n' > "$T/in"
	printf 'QUIT\r\n' > "$T/quit"
	# stdin stays open: the 250 for the message must come before QUIT is sent
	feed --in "$T/in" --replies 6 --then "$T/quit" -- $(clamsmtpd_cmd)
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	[ "$(cat "$SRV/msg-1.eml")" = $'X-AV-Checked: ClamAV using ClamSMTP\r' ]
	[ "$(cat "$SRV/msg-1.raw")" = $'X-AV-Checked: ClamAV using ClamSMTP\r\n.\r' ]
	grep -qE 'status=CLEAN, size=0, server=250, ' "$T/err"
}

@test "an empty first message in a stdin file, then a second message: both delivered" {
	start_server
	: > "$T/empty"
	a_message "$T/body"
	transcript "$T/in" "$T/empty" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 2 ]
	[ "$(wc -c < "$SRV/msg-1.eml")" = 37 ]
	delivered_as 2 "$T/body"
}

@test "a message whose last line is empty keeps that empty line" {
	start_server
	printf 'Subject: trailing\r\n\r\ntext\r\n\r\n' > "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	delivered_as 1 "$T/body"
}

@test "a message of only header lines, no blank line, no body, gets the header added" {
	start_server
	printf 'Subject: no body\r\nX-Other: x\r\n' > "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	delivered_as 1 "$T/body"
}

# --- size ----------------------------------------------------------------------

# twenty_mb_arrives - a 20 MB message, sent through clamd at $CLAMADDR, arrives intact
twenty_mb_arrives() {
	start_server
	big_message "$T/meant" $((20 * 1024 * 1024))
	stuff "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/meant"
	grep -qE "status=CLEAN, size=$(wc -c < "$T/meant"), server=250, " "$T/err"
}

@test "a 20 MB message arrives intact through the unix-socket clamd (FILDES)" {
	twenty_mb_arrives
}

@test "a 20 MB message arrives intact through the TCP clamd (INSTREAM)" {
	CLAMADDR=$CLAMD_TCP
	twenty_mb_arrives
}

@test "a 64 KiB line (and a longer dotted one) in the body arrives intact" {
	start_server
	{ printf 'Subject: long line\r\n\r\n'
	  head -c 65536 /dev/zero | tr '\0' a; printf '\r\n'
	  printf '.'; head -c 200000 /dev/zero | tr '\0' b; printf '\r\n'
	  printf 'after\r\n'; } > "$T/meant"
	stuff "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/meant"
}

# --- sessions --------------------------------------------------------------------

@test "three messages in one session (clean, virus, clean): the server gets the two clean ones, RSET between" {
	start_server
	a_message "$T/one"
	eicar "$T/virus"; printf '\r\n' >> "$T/virus"
	printf 'Subject: third\r\n\r\nthird message\r\n' > "$T/three"
	transcript "$T/in" "$T/one" "$T/virus" "$T/three"
	filter < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 250 250 354 250 221" ]
	[ "$(tr -d '\r' < "$T/out" | grep -c '^250 2.7.0 Virus detected; message discarded$')" = 1 ]
	[ "$(count_messages)" = 2 ]
	delivered_as 1 "$T/one"
	delivered_as 2 "$T/three"
	[ "$(server_commands | grep -E '^(MAIL|RSET|DATA)' | cut -c1-4 | tr '\n' ' ')" = "MAIL DATA MAIL RSET MAIL DATA " ]
	# one log line per message, each with its own id
	grep -E ': status=.*, from=<sender@example.test>, to=<rcpt@example.test>$' "$T/err" > "$T/loglines"
	[ "$(wc -l < "$T/loglines")" = 3 ]
	[ "$(sed -E 's/.*status=([^,]*), size=[0-9]+(, server=[0-9]+)?.*/\1\2/' "$T/loglines" | tr '\n' ' ')" = "CLEAN, server=250 VIRUS:Eicar-Test-Signature.UNOFFICIAL CLEAN, server=250 " ]
	[ "$(cut -d' ' -f2 "$T/loglines" | sort -u | wc -l)" = 3 ]
}

@test "RSET from the client resets the transaction: DATA after it gets 554" {
	start_server
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRSET\r\nDATA\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 250 554 221" ]
	grep -q $'^554 5.5.1 No valid recipients\r$' "$T/out"
	[ "$(server_commands | tr '\n' '|')" = "EHLO c|MAIL FROM:<a@example.test>|RCPT TO:<b@example.test>|RSET|QUIT|" ]
	[ "$(count_messages)" = 0 ]
}

@test "a new EHLO resets the transaction: DATA after it gets 554" {
	start_server
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nEHLO c\r\nDATA\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 250 554 221" ]
	! server_commands | grep -q '^DATA' || false
}

@test "input written one byte at a time is relayed and the message arrives intact" {
	start_server
	printf 'Subject: slow\r\n\r\nbyte\r\n.dot\r\n..\r\nby byte\r\n' > "$T/meant"
	stuff "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	feed --in "$T/in" --bytewise 0.0005 -- $(clamsmtpd_cmd)
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/meant"
}

# --- bare CR, bare LF, NUL ----------------------------------------------------------

@test "bare LF and bare CR in the body are stored as CRLF line breaks" {
	start_server
	printf 'Subject: bare\r\n\r\nlf\nonly\ncr\ronly\rmixed\r\r\nlf\n\nend\r\n' > "$T/body"
	printf 'Subject: bare\r\n\r\nlf\r\nonly\r\ncr\r\nonly\r\nmixed\r\n\r\nlf\r\n\r\nend\r\n' > "$T/meant"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	no_bare_crlf "$SRV/msg-1.raw"
	delivered_as 1 "$T/meant"
	[ "$(tr -d '\r' < "$SRV/msg-1.eml" | sed -n '4,7p' | tr '\n' '|')" = "lf|only|cr|only|" ]
}

@test "NUL bytes in the body are data: they arrive and no line is glued or cut" {
	start_server
	printf 'Subject: nul\r\n\r\nline\0one\r\n\0\r\n\0\0\0\r\nmid\0\0dle\r\n.\0dot\r\n\0.x\r\nlast\r\n' > "$T/meant"
	stuff "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	delivered_as 1 "$T/meant"
	[ "$(tr -cd '\0' < "$SRV/msg-1.eml" | wc -c)" = 9 ]
	[ "$(wc -l < "$SRV/msg-1.eml")" = 10 ]
}

# --- SMTP smuggling: nothing but <CR><LF>.<CR><LF> ends the body ---------------------

@test "smuggling: <LF>.<LF> does not end the message" {
	smuggle '\n.\n'
}

@test "smuggling: <LF>.<CR><LF> does not end the message" {
	smuggle '\n.\r\n'
}

@test "smuggling: <CR><LF>.<LF> does not end the message" {
	smuggle '\r\n.\n'
}

@test "smuggling: <CR>.<CR> does not end the message" {
	smuggle '\r.\r'
}

@test "smuggling: <CR><LF>.<CR> does not end the message" {
	smuggle '\r\n.\r'
}

@test "smuggling: <CR>.<CR><LF> does not end the message" {
	smuggle '\r.\r\n'
}

@test "smuggling: <LF>.<CR> does not end the message" {
	smuggle '\n.\r'
}

@test "smuggling: <CR><LF>.<CR><CR><LF> does not end the message" {
	smuggle '\r\n.\r\r\n'
}

@test "smuggling: <CR><CR><LF>.<CR><CR><LF> does not end the message" {
	smuggle '\r\r\n.\r\r\n'
}

@test "smuggling: <CR><LF><NUL>.<CR><LF> does not end the message" {
	smuggle '\r\n\0.\r\n'
}

@test "smuggling: <CR><LF>.<NUL><CR><LF> does not end the message" {
	smuggle '\r\n.\0\r\n'
}

@test "smuggling: every variant written one byte at a time ends nothing early" {
	start_server
	printf 'Subject: smuggling\r\n\r\nstart' > "$T/body"
	for v in '\n.\n' '\n.\r\n' '\r\n.\n' '\r.\r' '\r\n.\r' '\r.\r\n' '\n.\r' \
		 '\r\n.\r\r\n' '\r\r\n.\r\r\n' '\r\n\0.\r\n' '\r\n.\0\r\n'; do
		printf "${v}MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nsmuggled\r\n" >> "$T/body"
	done
	transcript "$T/in" "$T/body"
	feed --in "$T/in" --bytewise 0.0002 -- $(clamsmtpd_cmd)
	smuggle_check
	[ "$(grep -c '^MAIL FROM:<evil@example.test>' "$SRV/msg-1.eml")" = 11 ]
}

# --- viruses ---------------------------------------------------------------------------

@test "EICAR in the body is dropped (FILDES): 250 2.7.0, RSET to the server, a VIRUS log line" {
	eicar "$T/body"; printf '\r\n' >> "$T/body"
	virus_dropped "$T/body" Eicar-Test-Signature.UNOFFICIAL
}

@test "EICAR in the body is dropped (INSTREAM): 250 2.7.0, RSET to the server, a VIRUS log line" {
	CLAMADDR=$CLAMD_TCP
	eicar "$T/body"; printf '\r\n' >> "$T/body"
	virus_dropped "$T/body" Eicar-Test-Signature.UNOFFICIAL
}

@test "EICAR in a base64 MIME attachment is dropped (FILDES)" {
	eicar_mime "$T/body"
	virus_dropped "$T/body" Eicar-Test-Signature.UNOFFICIAL
}

@test "EICAR in a base64 MIME attachment is dropped (INSTREAM)" {
	CLAMADDR=$CLAMD_TCP
	eicar_mime "$T/body"
	virus_dropped "$T/body" Eicar-Test-Signature.UNOFFICIAL
}

@test "the marker signature is dropped and named (FILDES)" {
	printf 'Subject: marker\r\n\r\nthis text carries CLAMSMTPD-TEST-MARKER inside\r\n' > "$T/body"
	virus_dropped "$T/body" Clamsmtpd-Test-Marker.UNOFFICIAL
}

@test "the marker signature is dropped and named (INSTREAM)" {
	CLAMADDR=$CLAMD_TCP
	printf 'Subject: marker\r\n\r\nthis text carries CLAMSMTPD-TEST-MARKER inside\r\n' > "$T/body"
	virus_dropped "$T/body" Clamsmtpd-Test-Marker.UNOFFICIAL
}

@test "-b: a virus is rejected with 550 5.7.1 naming it, the server sees RSET and no DATA" {
	start_server
	eicar "$T/body"; printf '\r\n' >> "$T/body"
	transcript "$T/in" "$T/body"
	filter -b < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 550 221" ]
	grep -q $'^550 5.7.1 Virus detected (Eicar-Test-Signature.UNOFFICIAL); message rejected\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	[ "$(server_commands | tr '\n' '|')" = "EHLO client.test|MAIL FROM:<sender@example.test>|RCPT TO:<rcpt@example.test>|RSET|QUIT|" ]
	grep -qE 'status=VIRUS:Eicar-Test-Signature.UNOFFICIAL, size=[0-9]+, clamd=' "$T/err"
	! grep -q 'server=' "$T/err" || false
}

@test "-q: a virus is kept as tmpdir/virus.XXXXXX, mode 0600, holding the message" {
	KEEP_SPOOL=1
	start_server
	{ printf 'Subject: quarantine\r\n\r\n.dotted\r\n'; "$TESTS/eicar.sh"; printf '\r\n'; } > "$T/meant"
	stuff "$T/meant" "$T/body"
	transcript "$T/in" "$T/body"
	filter -q < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(count_messages)" = 0 ]
	! server_commands | grep -q '^DATA' || false
	ls -A "$SPOOL" > "$T/kept"
	[ "$(wc -l < "$T/kept")" = 1 ]
	grep -qE '^virus\.[A-Za-z0-9]{6}$' "$T/kept"
	q=$SPOOL/$(cat "$T/kept")
	[ "$(stat -c %a "$q")" = 600 ]
	cmp "$T/meant" "$q"
	grep -q "quarantined message with Eicar-Test-Signature.UNOFFICIAL as $q" "$T/err"
	rm -f "$q"
}

# --- the added header ----------------------------------------------------------------------

@test "-h 'X-Scanned: yes' puts that header at the very top" {
	start_server
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter -h 'X-Scanned: yes' < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	{ printf 'X-Scanned: yes\r\n'; cat "$T/body"; } > "$T/want"
	cmp "$T/want" "$SRV/msg-1.eml"
	! grep -q X-AV-Checked "$SRV/msg-1.eml" || false
}

@test "-h '' adds no header: the message arrives byte-identical" {
	start_server
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter -h '' < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	cmp "$T/body" "$SRV/msg-1.eml"
	{ cat "$T/body"; printf '.\r\n'; } > "$T/wire"
	cmp "$T/wire" "$SRV/msg-1.raw"
}

# --- the log line -----------------------------------------------------------------------------

@test "one log line per message: id, status=CLEAN, size, server=250, queued_as, clamd, scan_ms, from, every accepted to" {
	start_server --reply-nth 'rcpt:2=550 5.1.1 No such user'
	a_message "$T/body"
	{ printf 'EHLO c\r\nMAIL FROM:<sender@example.test>\r\nRCPT TO:<one@example.test>\r\n'
	  printf 'RCPT TO:<nobody@example.test>\r\nRCPT TO:<two@example.test>\r\nDATA\r\n'
	  cat "$T/body"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 550 250 354 250 221" ]
	size=$(wc -c < "$T/body")
	grep -E ': status=' "$T/err" > "$T/loglines"
	[ "$(wc -l < "$T/loglines")" = 1 ]
	grep -qE "^clamsmtpd\[[0-9]+\]: [A-Za-z0-9.]+: status=CLEAN, size=$size, server=250, queued_as=1, clamd=$CLAMADDR, scan_ms=[0-9]+, from=<sender@example.test>, to=<one@example.test>, to=<two@example.test>$" "$T/loglines"
}

@test "the log line carries the server's own final code when it refuses the message" {
	start_server --reply 'dataend=554 5.7.0 Refused'
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 554 221" ]
	grep -q $'^554 5.7.0 Refused\r$' "$T/out"
	grep -qE ": status=CLEAN, size=$(wc -c < "$T/body"), server=554, clamd=[^ ]+, scan_ms=[0-9]+, from=<sender@example.test>, to=<rcpt@example.test>$" "$T/err"
}

# --- swaks as a real client ----------------------------------------------------------------------

@test "swaks --pipe delivers a message through clamsmtpd" {
	start_server
	run swaks --pipe "$CLAMSMTPD -D $SPOOL -c $CLAMD_SOCK $SERVER" --to a@example.test --from b@example.test
	[ "$status" = 0 ]
	[ "$(count_messages)" = 1 ]
	grep -q '^to=<a@example.test>$' "$SRV/msg-1.env"
	grep -q '^from=<b@example.test>$' "$SRV/msg-1.env"
	[ "$(head -n1 "$SRV/msg-1.eml")" = $'X-AV-Checked: ClamAV using ClamSMTP\r' ]
	no_bare_crlf "$SRV/msg-1.raw"
}

@test "swaks --pipe --attach with EICAR gets the virus reply and nothing is delivered" {
	start_server
	eicar "$T/eicar.com"
	run swaks --pipe "$CLAMSMTPD -D $SPOOL -c $CLAMD_SOCK $SERVER" --to a@example.test --from b@example.test --attach "@$T/eicar.com"
	[ "$status" = 0 ]
	[[ "$output" == *"250 2.7.0 Virus detected; message discarded"* ]]
	[ "$(count_messages)" = 0 ]
	server_commands | grep -q '^RSET$'
	! server_commands | grep -q '^DATA' || false
}

@test "a line after a bare LF or bare CR loses one leading dot too, and ends nothing" {
	start_server
	printf 'Subject: soft\r\n\r\none\n.two\r.three\n..four\r\n' > "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	printf 'Subject: soft\r\n\r\none\r\ntwo\r\nthree\r\n.four\r\n' > "$T/meant"
	without_header "$SRV/msg-1.eml" > "$T/got"
	cmp "$T/meant" "$T/got"
	no_bare_crlf "$SRV/msg-1.raw"
}

@test "a 5 MB message without dot lines, and one whose only dot line is its last, arrive exactly" {
	start_server
	python3 -c '
import sys
line = b"abcdefghijklmnopqrstuvwxyz0123456789 " * 2 + b"\r\n"
plain = line * (5 * 1024 * 1024 // len(line))
open(sys.argv[1], "wb").write(plain)
open(sys.argv[2], "wb").write(plain + b".last line\r\n")
open(sys.argv[3], "wb").write(plain + b"..last line\r\n")' "$T/plain" "$T/dotted-meant" "$T/dotted"
	transcript "$T/in" "$T/plain" "$T/dotted"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 250 250 250 354 250 221" ]
	without_header "$SRV/msg-1.eml" > "$T/got1"
	cmp "$T/plain" "$T/got1"
	without_header "$SRV/msg-2.eml" > "$T/got2"
	cmp "$T/dotted-meant" "$T/got2"
	tail -c 16 "$SRV/msg-2.raw" | grep -q '^\.\.last line'
}
