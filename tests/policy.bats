#!/usr/bin/env bats
# Scanning policies: SPEC 8.2 (-f), 8.3 (-s), 8.4 (-S, -P and the
# X-Virus-Status field) and the flags of SPEC 1 that set them. A real clamd
# (the file's own, over FILDES on its socket and INSTREAM on its port);
# stdio mode unless a test says listener. Every delivered message is
# compared byte for byte with what it must be.

load helpers
load pool-helpers

eval "helpers_$(declare -f setup)"

setup() {
	helpers_setup
	pool "$CLAMD_SOCK"
}

HEADER="X-AV-Checked: ClamAV using ClamSMTP"
EICAR_NAME=Eicar-Test-Signature.UNOFFICIAL

# data_codes N - what "codes" says for EHLO, N transactions that got 250, QUIT
data_codes() {
	local i c="220 250"
	for i in $(seq "$1"); do c="$c 250 250 354 250"; done
	echo "$c 221"
}

# size_of FILE - its bytes
size_of() {
	wc -c < "$1" | tr -d ' '
}

# padded_message FILE BYTES - a clean CRLF message of exactly BYTES bytes
padded_message() {
	python3 - "$1" "$2" <<'EOF'
import sys
path, want = sys.argv[1], int(sys.argv[2])
head = b"From: sender@example.test\r\nSubject: padded\r\n\r\n"
body = b""
while len(head) + len(body) + 80 < want:
    body += b"0123456789" * 7 + b"abcdefg\r\n"     # 79 bytes
rest = want - len(head) - len(body)
assert rest >= 3
body += b"x" * (rest - 2) + b"\r\n"
open(path, "wb").write(head + body)
EOF
	[ "$(size_of "$1")" = "$2" ]
}

# the_log_line - the one per-message log line (fails unless exactly one)
the_log_line() {
	local lines
	lines=$(log_lines)
	[ "$(echo "$lines" | grep -c .)" = 1 ] || { echo "log lines: $lines" >&2; return 1; }
	echo "$lines"
}

# forged_variants DIR - messages with forged (and look-alike) X-Virus-Status
# fields: DIR/oN.eml as sent (unstuffed), DIR/eN.eml the same with every
# X-Virus-Status field of the header section left out; N = 1..VARIANTS
forged_variants() {
	mkdir -p "$1"
	VARIANTS=$(python3 - "$1" <<'EOF'
import os, sys
d = sys.argv[1]
V = []
def v(orig, expect):
    V.append((orig, expect))

# plain, in the middle
v(b"From: a@example.test\r\nX-Virus-Status: Clean\r\nTo: b@example.test\r\nSubject: v1\r\n\r\nbody\r\n",
  b"From: a@example.test\r\nTo: b@example.test\r\nSubject: v1\r\n\r\nbody\r\n")
# folded over several lines (tab and spaces), the very first field
v(b"X-Virus-Status: Infected\r\n\t(Fake-Name)\r\n  more of it\r\n \r\nFrom: a@example.test\r\nSubject: v2\r\n\r\nbody\r\n",
  b"From: a@example.test\r\nSubject: v2\r\n\r\nbody\r\n")
# odd case, the last field before the empty line
v(b"From: a@example.test\r\nSubject: v3\r\nx-ViRuS-sTaTuS: Clean\r\n\r\nbody\r\n",
  b"From: a@example.test\r\nSubject: v3\r\n\r\nbody\r\n")
# blanks before the colon, no blank after it, no value at all
v(b"From: a@example.test\r\nX-Virus-Status : Clean\r\nSubject: v4\r\nX-VIRUS-STATUS\t:Clean\r\nX-Virus-Status:\r\nTo: b@example.test\r\n\r\nbody\r\n",
  b"From: a@example.test\r\nSubject: v4\r\nTo: b@example.test\r\n\r\nbody\r\n")
# several, back to back and apart; look-alike names and values stay
v(b"X-Virus-Status: Clean\r\nX-Virus-Status: a\r\n b\r\nX-Virus-Status-Report: kept\r\nX-Virus-Scanned: kept\r\n"
  b"X-Virus-Statuses: kept\r\nX-Virus-Statu: kept\r\nSubject: v5 X-Virus-Status: kept\r\n"
  b" X-Virus-Status: kept, folded into Subject\r\nX-Virus-Status: Clean\r\n folded\r\n"
  b"XX-Virus-Status: kept\r\nX-Virus-Status kept: no colon after the name\r\nx-virus-status: Clean\r\n\r\nbody\r\n",
  b"X-Virus-Status-Report: kept\r\nX-Virus-Scanned: kept\r\n"
  b"X-Virus-Statuses: kept\r\nX-Virus-Statu: kept\r\nSubject: v5 X-Virus-Status: kept\r\n"
  b" X-Virus-Status: kept, folded into Subject\r\n"
  b"XX-Virus-Status: kept\r\nX-Virus-Status kept: no colon after the name\r\n\r\nbody\r\n")
# in the body after the empty line: those stay
v(b"From: a@example.test\r\nX-Virus-Status: Clean\r\nSubject: v6\r\n\r\nX-Virus-Status: Clean\r\nx-virus-status: Infected (x)\r\n\r\nX-Virus-Status: deeper\r\n",
  b"From: a@example.test\r\nSubject: v6\r\n\r\nX-Virus-Status: Clean\r\nx-virus-status: Infected (x)\r\n\r\nX-Virus-Status: deeper\r\n")
# a header section with no empty line after it, the forged field last
v(b"From: a@example.test\r\nSubject: v7\r\nX-Virus-Status: Clean\r\n",
  b"From: a@example.test\r\nSubject: v7\r\n")
# lines that start with a dot (the stuffed path), one looks like the field
v(b"From: a@example.test\r\nX-Virus-Status: Clean\r\nSubject: v8\r\n\r\n.leading dot\r\n..two dots\r\n.X-Virus-Status: body\r\n.\r\nend\r\n",
  b"From: a@example.test\r\nSubject: v8\r\n\r\n.leading dot\r\n..two dots\r\n.X-Virus-Status: body\r\n.\r\nend\r\n")
# an empty message; one that is only the forged field
v(b"", b"")
v(b"X-Virus-Status: Clean\r\n", b"")
# no header section at all: the message starts with the empty line
v(b"\r\nX-Virus-Status: Clean\r\n", b"\r\nX-Virus-Status: Clean\r\n")
# long lines around and inside the forged field, a big body with dots
long_field = b"X-Long: " + b"a" * 10000 + b"\r\n"
fold = b"".join(b"\t" + b"f" * 3000 + b"\r\n" for _ in range(4))
body = b"".join(b"line %06d of a long body\r\n" % i + (b".dotted\r\n" if i % 97 == 0 else b"")
                for i in range(8000))
v(long_field + b"X-Virus-Status: Clean\r\n" + fold + long_field + b"Subject: v12\r\nX-Virus-Status: x\r\n" + fold + b"\r\n" + body,
  long_field + long_field + b"Subject: v12\r\n\r\n" + body)
# thousands of them, between thousands of other fields
kept = [b"X-Kept-%d: value %d\r\n" % (i, i) for i in range(3000)]
forged = [b"X-Virus-Status: Clean %d\r\n" % i + (b"\tfolded %d\r\n" % i if i % 3 == 0 else b"") for i in range(3000)]
v(b"".join(f + k for f, k in zip(forged, kept)) + b"\r\n.body\r\n", b"".join(kept) + b"\r\n.body\r\n")
v(b"".join(f + k for f, k in zip(forged, kept)) + b"\r\nbody\r\n", b"".join(kept) + b"\r\nbody\r\n")
for i, (o, e) in enumerate(V, 1):
    open(os.path.join(d, "o%d.eml" % i), "wb").write(o)
    open(os.path.join(d, "e%d.eml" % i), "wb").write(e)
print(len(V))
EOF
)
	MSGS=()
	local i
	for i in $(seq "$VARIANTS"); do MSGS+=("$1/o$i.eml"); done
}

# delivered_as N LINE... FILE - msg-N.eml is exactly LINE... (CRLF each) then FILE
delivered_as() {
	local n=$1 want=$T/want.$1
	shift
	local file=${*: -1}
	{
		local l
		for l in "${@:1:$#-1}"; do printf '%s\r\n' "$l"; done
		cat "$file"
	} > "$want"
	cmp "$SRV/msg-$n.eml" "$want"
}

# --- -s: the size limit (SPEC 8.3) -------------------------------------------

@test "-s equal to the spooled size is scanned; one byte less passes it unscanned, marked 'Unscanned (too large)' (FILDES)" {
	start_server
	clean_message "$T/m.eml" size-boundary
	n=$(size_of "$T/m.eml")
	session_of "$T/in" "$T/m.eml"
	pool_filter -s "$n" < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 1 "$HEADER" "$T/m.eml"
	the_log_line | grep -q "status=CLEAN, size=$n, server=250, .*clamd=$CLAMD_SOCK, scan_ms="

	pool_filter -s "$((n - 1))" < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 2 "X-Virus-Status: Unscanned (too large)" "$T/m.eml"
	the_log_line | grep -q "status=UNSCANNED:too large, size=$n, server=250, "
	run grep -c 'clamd=\|scan_ms=' <(log_lines)
	[ "$output" = 0 ]
	# logged at WARNING: shown under -d 1
	pool_filter -s "$((n - 1))" -d 1 < "$T/in"
	the_log_line | grep -q "status=UNSCANNED:too large, size=$n, "
}

@test "-s counts the spooled bytes: dots unstuffed, bare LF stored as CRLF, without the added header (INSTREAM)" {
	start_server
	pool "$CLAMD_TCP"
	# sent with bare LF line ends and stuffed dots; spooled as CRLF, unstuffed
	# (the last line ends in CRLF: only CRLF.CRLF ends the data)
	printf 'From: sender@example.test\nSubject: lf lines\n\n..dotted\nplain\nlast\r\n' > "$T/sent"
	printf 'From: sender@example.test\r\nSubject: lf lines\r\n\r\n.dotted\r\nplain\r\nlast\r\n' > "$T/spooled"
	n=$(size_of "$T/spooled")
	{ printf 'EHLO c\r\n'; envelope; cat "$T/sent"; printf '.\r\nQUIT\r\n'; } > "$T/in"
	pool_filter -s "$n" < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 1 "$HEADER" "$T/spooled"
	the_log_line | grep -q "status=CLEAN, size=$n, .*clamd=$CLAMD_TCP, "
	pool_filter -s "$((n - 1))" < "$T/in"
	delivered_as 2 "X-Virus-Status: Unscanned (too large)" "$T/spooled"
	the_log_line | grep -q "status=UNSCANNED:too large, size=$n, "
}

@test "-s: EICAR inside a message one byte over is delivered marked 'Unscanned (too large)' (by design); at the limit it is dropped" {
	start_server
	eicar_message "$T/v.eml" eicar-size
	n=$(size_of "$T/v.eml")
	session_of "$T/in" "$T/v.eml"
	pool_filter -s "$((n - 1))" < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 1 "X-Virus-Status: Unscanned (too large)" "$T/v.eml"
	the_log_line | grep -q "status=UNSCANNED:too large, size=$n, server=250"

	pool_filter -s "$n" < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/out"
	[ "$(count_messages)" = 1 ]
	the_log_line | grep -q "status=VIRUS:$EICAR_NAME, size=$n, clamd=$CLAMD_SOCK, "
}

@test "-s 1k is 1024 bytes: a 1024-byte message is scanned, a 1025-byte one is not; 1M and 1G scan both" {
	start_server
	padded_message "$T/m1024.eml" 1024
	padded_message "$T/m1025.eml" 1025
	session_of "$T/in" "$T/m1024.eml" "$T/m1025.eml"
	pool_filter -s 1k < "$T/in"
	[ "$(codes)" = "$(data_codes 2)" ]
	delivered_as 1 "$HEADER" "$T/m1024.eml"
	delivered_as 2 "X-Virus-Status: Unscanned (too large)" "$T/m1025.eml"
	for limit in 1M 1G 1025; do
		pool_filter -s "$limit" < "$T/in"
		[ "$(codes)" = "$(data_codes 2)" ]
		[ "$(log_lines | grep -c 'status=CLEAN, ')" = 2 ]
	done
}

@test "-s: clamd is not asked about an oversized message (a stand-in counts the scans)" {
	start_server
	pool "$(stand_in counter --mode auto)"
	clean_message "$T/m.eml" not-asked
	n=$(size_of "$T/m.eml")
	session_of "$T/in" "$T/m.eml"
	pool_filter -s "$((n - 1))" < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	[ ! -s "$T/counter/commands.log" ]
	pool_filter -s "$n" < "$T/in"
	[ "$(cat "$T/counter/commands.log")" = "FILDES $n" ]
	cmp "$T/counter/last-scan" "$T/m.eml"
}

# --- -S and the forged field (SPEC 8.4) --------------------------------------

@test "-S: 'X-Virus-Status: Clean' right after the -h header; every forged X-Virus-Status field of the header left out, the rest byte-identical" {
	start_server
	forged_variants "$T/v"
	session_of "$T/in" "${MSGS[@]}"
	pool_filter -S < "$T/in"
	[ "$(codes)" = "$(data_codes "$VARIANTS")" ]
	for i in $(seq "$VARIANTS"); do
		delivered_as "$i" "$HEADER" "X-Virus-Status: Clean" "$T/v/e$i.eml"
	done
	[ "$(log_lines | grep -c 'status=CLEAN, ')" = "$VARIANTS" ]
}

@test "without -S, -P, -f pass or -s nothing in the message changes: forged X-Virus-Status fields pass as they are" {
	start_server
	forged_variants "$T/v"
	session_of "$T/in" "${MSGS[@]}"
	pool_filter < "$T/in"
	[ "$(codes)" = "$(data_codes "$VARIANTS")" ]
	for i in $(seq "$VARIANTS"); do
		delivered_as "$i" "$HEADER" "$T/v/o$i.eml"
	done
	# -s a message stays under, -f pass with a working clamd: no field added
	pool_filter -s 10M -f pass < "$T/in"
	[ "$(codes)" = "$(data_codes "$VARIANTS")" ]
	for i in $(seq "$VARIANTS"); do
		n=$((VARIANTS + i))
		delivered_as "$n" "$HEADER" "$T/v/o$i.eml"
	done
}

@test "-S -h '': X-Virus-Status is the very first line (INSTREAM)" {
	start_server
	pool "$CLAMD_TCP"
	forged_variants "$T/v"
	session_of "$T/in" "$T/v/o1.eml" "$T/v/o2.eml" "$T/v/o12.eml"
	pool_filter -S -h '' < "$T/in"
	[ "$(codes)" = "$(data_codes 3)" ]
	delivered_as 1 "X-Virus-Status: Clean" "$T/v/e1.eml"
	delivered_as 2 "X-Virus-Status: Clean" "$T/v/e2.eml"
	delivered_as 3 "X-Virus-Status: Clean" "$T/v/e12.eml"
}

@test "listener: -S over INSTREAM and FILDES members, forged fields left out, the rest byte-identical" {
	start_server
	pool "$CLAMD_TCP" "$CLAMD_SOCK"
	forged_variants "$T/v"
	pool_listener -S
	for i in $(seq "$VARIANTS"); do session_of "$T/in$i" "$T/v/o$i.eml"; done
	for i in $(seq "$VARIANTS"); do
		session_to_listener "$T/in$i" "$T/got$i"
		[ "$(codes_of "$T/got$i")" = "$(data_codes 1)" ]
		delivered_as "$i" "$HEADER" "X-Virus-Status: Clean" "$T/v/e$i.eml"
	done
}

# --- -P: infected mail passed on, marked (SPEC 8.4) --------------------------

@test "-P: infected mail is delivered marked 'Infected (Eicar-Test-Signature.UNOFFICIAL)', forged fields left out; clean mail unmarked" {
	start_server
	{
		printf 'From: sender@example.test\r\nX-Virus-Status: Clean\r\nSubject: passed virus\r\n'
		printf 'x-virus-status : Clean\r\n\tfolded\r\n\r\n.dotted\r\n'
		"$TESTS/eicar.sh"
		printf '\r\n'
	} > "$T/v.eml"
	{
		printf 'From: sender@example.test\r\nSubject: passed virus\r\n\r\n.dotted\r\n'
		"$TESTS/eicar.sh"
		printf '\r\n'
	} > "$T/v-expected.eml"
	clean_message "$T/c.eml" clean-with-P
	session_of "$T/in" "$T/v.eml" "$T/c.eml"
	pool_filter -P < "$T/in"
	[ "$(codes)" = "$(data_codes 2)" ]
	run grep -c '2.7.0' "$T/out"
	[ "$output" = 0 ]
	delivered_as 1 "$HEADER" "X-Virus-Status: Infected ($EICAR_NAME)" "$T/v-expected.eml"
	delivered_as 2 "$HEADER" "$T/c.eml"
	log_lines | grep -q "status=VIRUS:$EICAR_NAME, size=$(size_of "$T/v.eml"), server=250, .*clamd=$CLAMD_SOCK, "
	log_lines | grep -q "status=CLEAN, "
	# with -S the clean one is marked too
	pool_filter -P -S < "$T/in"
	delivered_as 3 "$HEADER" "X-Virus-Status: Infected ($EICAR_NAME)" "$T/v-expected.eml"
	delivered_as 4 "$HEADER" "X-Virus-Status: Clean" "$T/c.eml"
}

@test "-P -q: infected mail is delivered marked and also quarantined as virus.XXXXXX holding the message as received" {
	KEEP_SPOOL=1
	start_server
	eicar_message "$T/v.eml" quarantined-and-passed
	session_of "$T/in" "$T/v.eml"
	pool_filter -P -q < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 1 "$HEADER" "X-Virus-Status: Infected ($EICAR_NAME)" "$T/v.eml"
	ls -A "$SPOOL" > "$T/kept"
	[ "$(wc -l < "$T/kept")" = 1 ]
	grep -qE '^virus\.[A-Za-z0-9]{6}$' "$T/kept"
	q=$SPOOL/$(cat "$T/kept")
	[ "$(stat -c %a "$q")" = 600 ]
	cmp "$T/v.eml" "$q"
	grep -q "quarantined message with $EICAR_NAME as $q" "$T/err"
	rm -f "$q"
	[ -z "$(ls -A "$SPOOL")" ]
}

@test "listener: -P over INSTREAM delivers EICAR marked; without -P it is dropped with 250 2.7.0" {
	start_server
	pool "$CLAMD_TCP"
	eicar_message "$T/v.eml" listener-P
	session_of "$T/in" "$T/v.eml"
	pool_listener -P
	session_to_listener "$T/in" "$T/got"
	[ "$(codes_of "$T/got")" = "$(data_codes 1)" ]
	delivered_as 1 "$HEADER" "X-Virus-Status: Infected ($EICAR_NAME)" "$T/v.eml"
	listener_stop
	pool_listener
	session_to_listener "$T/in" "$T/got"
	grep -q $'^250 2.7.0 Virus detected; message discarded\r$' "$T/got"
	[ "$(count_messages)" = 1 ]
}

@test "-P: the name in 'Infected (<name>)' is made printable and cut at 200 bytes; the header stays one line" {
	# (clamd's reply is "<path>: <name> FOUND": the name is what follows the
	# last ": ", so the stand-in's names hold none)
	start_server
	long=$(printf 'N%.0s' $(seq 300))
	pool "$(stand_in odd-name --mode found --virus "$(printf 'Evil\rX-Injected:yes\tname\001')")"
	clean_message "$T/m.eml" odd-virus-name
	session_of "$T/in" "$T/m.eml"
	pool_filter -P < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 1 "$HEADER" "X-Virus-Status: Infected (Evil?X-Injected:yes?name?)" "$T/m.eml"
	pool "$(stand_in long-name --tcp --mode found --virus "$long")"
	pool_filter -P < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	# the field is one line, then the message as it came
	m=$SRV/msg-2.eml
	[ "$(head -n 1 "$m")" = "$HEADER"$'\r' ]
	tail -n +3 "$m" | cmp - "$T/m.eml"
	inner=$(sed -n '2s/^X-Virus-Status: Infected (\(.*\))\r$/\1/p' "$m")
	echo "name of ${#inner} bytes: $inner"
	# at most 200 bytes of the name (a cut may be marked "...")
	[ "${#inner}" -le 200 ] && [ "${#inner}" -ge 190 ]
	[[ "$long" == "${inner%...}"* ]]
	the_log_line | grep -q "status=VIRUS:$inner, "
}

@test "the log line: status, size, server, queued_as, clamd, scan_ms, then from and to, in that order" {
	start_server
	eicar_message "$T/v.eml" log-line
	clean_message "$T/c.eml" log-line
	session_of "$T/in" "$T/v.eml" "$T/c.eml"
	pool_filter -P -s 100k < "$T/in"
	id='[0-9A-F]+\.[0-9]+'
	log_lines | grep -qE "^clamsmtpd\[[0-9]+\]: $id: status=VIRUS:$EICAR_NAME, size=$(size_of "$T/v.eml"), server=250, queued_as=1, clamd=$CLAMD_SOCK, scan_ms=[0-9]+, from=<sender@example.test>, to=<rcpt@example.test>$"
	log_lines | grep -qE "^clamsmtpd\[[0-9]+\]: $id: status=CLEAN, size=$(size_of "$T/c.eml"), server=250, queued_as=2, clamd=$CLAMD_SOCK, scan_ms=[0-9]+, from=<sender@example.test>, to=<rcpt@example.test>$"
	pool_filter -s 10 < "$T/in"
	log_lines | grep -qE "^clamsmtpd\[[0-9]+\]: $id: status=UNSCANNED:too large, size=$(size_of "$T/c.eml"), server=250, queued_as=4, from=<sender@example.test>, to=<rcpt@example.test>$"
}

# --- -f: a scan failure (SPEC 8.2) --------------------------------------------

@test "-f pass: clamd unreachable, mail delivered marked 'Unscanned (scan failed)' (never Clean, even with -S), forged fields left out" {
	start_server
	pool "$T/no-clamd.sock"
	forged_variants "$T/v"
	session_of "$T/in" "$T/v/o1.eml" "$T/v/o8.eml"
	pool_filter -f pass -S < "$T/in"
	[ "$(codes)" = "$(data_codes 2)" ]
	delivered_as 1 "X-Virus-Status: Unscanned (scan failed)" "$T/v/e1.eml"
	delivered_as 2 "X-Virus-Status: Unscanned (scan failed)" "$T/v/e8.eml"
	[ "$(log_lines | grep -c 'status=UNSCANNED:scan failed, ')" = 2 ]
	run grep -ci 'clean' <(log_lines)
	[ "$output" = 0 ]
	grep -q "clamd $T/no-clamd.sock failed (pass 2 of 2)" "$T/err"
	# -f tempfail is the default and can be said
	pool_filter -f tempfail -S < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 451 250 250 354 451 221" ]
	[ "$(count_messages)" = 2 ]
}

@test "-f pass: a clamd that answers ERROR gives a marked delivery; the same in listener mode over TCP" {
	start_server
	pool "$(stand_in error-unix --mode error)"
	clean_message "$T/m.eml" error-pass
	session_of "$T/in" "$T/m.eml"
	pool_filter -f pass < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	delivered_as 1 "X-Virus-Status: Unscanned (scan failed)" "$T/m.eml"
	[ "$(grep -c 'failed (pass [12] of 2): .*ERROR' "$T/err")" = 2 ]
	pool "$(stand_in err-tcp --tcp --mode error)"
	pool_listener -f pass
	session_to_listener "$T/in" "$T/got"
	[ "$(codes_of "$T/got")" = "$(data_codes 1)" ]
	delivered_as 2 "X-Virus-Status: Unscanned (scan failed)" "$T/m.eml"
}

@test "-f pass: a spool write error and a lost server stay 4xx, with clamd down or not" {
	start_server --hangup dataend
	python3 -c '
import sys
sys.stdout.buffer.write(b"Subject: big\r\n\r\n" + (b"0123456789" * 7 + b"abcdefg\r\n") * 13000)' > "$T/big.eml"
	clean_message "$T/c.eml" server-lost
	session_of "$T/in" "$T/big.eml"
	for where in "$CLAMD_SOCK" "$T/no-clamd.sock"; do
		pool "$where"
		( ulimit -f 256; pool_filter -f pass < "$T/in" )
		[ "$(cat "$T/rc")" = 0 ]
		[ "$(codes)" = "220 250 250 250 354 452 221" ]
		grep -q $'^452 4.3.1 Insufficient system storage\r$' "$T/out"
	done
	[ "$(count_messages)" = 0 ]
	# the server takes the data but hangs up before its reply
	session_of "$T/in" "$T/c.eml"
	for where in "$CLAMD_SOCK" "$T/no-clamd.sock"; do
		pool "$where"
		pool_filter -f pass < "$T/in"
		[ "$(codes | cut -d' ' -f1-6)" = "220 250 250 250 354 451" ]
		run grep -c '^250 ' <(codes | tr ' ' '\n' | tail -n +6)
		[ "$output" = 0 ]
		log_lines | grep -q 'status=ERROR:'
	done
}

# --- the flags' values (SPEC 1) ------------------------------------------------

# bad_usage ARGS... - clamsmtpd ARGS 127.0.0.1:1 exits 2 with exactly one
# line on stderr, nothing on stdout, nothing started
bad_usage() {
	local rc=0
	"$CLAMSMTPD" -D "$SPOOL" "$@" 127.0.0.1:1 < /dev/null > "$T/usage.out" 2> "$T/usage.err" || rc=$?
	if [ "$rc" != 2 ] || [ "$(wc -l < "$T/usage.err")" != 1 ] || [ -s "$T/usage.out" ]; then
		echo "clamsmtpd $*: status $rc, stderr:" >&2
		cat "$T/usage.err" >&2
		return 1
	fi
	cat "$T/usage.err"
}

@test "bad values: -s 0, -s 12Q, -s -5 and the like, a ninth -c, -f maybe, -b -P: exit 2 and one line on stderr" {
	for s in 0 12Q -5 '' k 1.5M 0k ' 5' 5kk 99999999999G 18446744073709551617; do
		bad_usage -s "$s" | grep -q -- '-s'
	done
	nine=()
	for i in $(seq 9); do nine+=(-c "$T/clamd$i.sock"); done
	bad_usage "${nine[@]}" | grep -q -- '-c'
	for f in maybe '' PASS tempfail,pass; do
		bad_usage -f "$f" | grep -q -- '-f'
	done
	bad_usage -b -P | grep -q -- '-P'
	bad_usage -P -b | grep -q -- '-b'
	bad_usage -P -q -b
}

@test "good values: -s 1, 10k, 1M, 1G, eight -c, -f tempfail and pass, -S -P -q start and serve" {
	start_server
	printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
	eight=()
	for i in $(seq 7); do eight+=(-c "$T/clamd$i.sock"); done
	eight+=(-c "$CLAMD_SOCK")
	for flags in "-s 1" "-s 10k" "-s 1M" "-s 1G" "-f tempfail" "-f pass" "-S" "-P" "-P -q -S"; do
		# shellcheck disable=SC2086
		pool_filter $flags < "$T/in"
		[ "$(cat "$T/rc")" = 0 ]
		[ "$(codes)" = "220 250 221" ]
	done
	POOL=("${eight[@]}")
	clean_message "$T/m.eml" eight-members
	session_of "$T/in" "$T/m.eml"
	pool_filter < "$T/in"
	[ "$(codes)" = "$(data_codes 1)" ]
	the_log_line | grep -q "status=CLEAN, .*clamd=$CLAMD_SOCK, "
}
