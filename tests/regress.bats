#!/usr/bin/env bats
# Regression tests for what the fuzzers found (tests/fuzz/). Each transcript
# is a regular file on stdin, so every read() returns a full 64 KiB and the
# layout below puts the critical bytes exactly on a read boundary.
# Under `make check-asan` an overflow here is a crash, not a silent pass.

load helpers

# layout OUT - python writes the transcript for the case named in $1
LAYOUT_PY='
import sys
case, out = sys.argv[1], sys.argv[2]
READ = 65536
if case == "decode-room":
    head = b"EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n"
    first = head + b"x" * (READ - len(head) - 1) + b"\r"   # read 1 ends in a bare CR
    second = b"x" + b"\n" * (READ - 1)                     # read 2: each byte a line break
    data = first + second + b"\r\n.\r\nQUIT\r\n"
elif case in ("cr-split", "cr-together"):
    head = b"EHLO c\r\n"
    line = b"NOOP " + b"x" * 2043 + b"\r\n"                # 2048 bytes and CRLF
    before = READ - (len(line) - 1) - len(head) - (case == "cr-together")
    n, r = divmod(before - 6, 6)
    filler = b"NOOP\r\n" * n + b"NOOP" + b" " * r + b"\r\n"
    data = head + filler + line + b"QUIT\r\n"
    assert data.index(b"\r\nQUIT") == READ - 1 - (case == "cr-together")
elif case == "double-cr":
    head = b"EHLO c\r\n"
    filler = b"NOOP\r\n" * ((READ - len(head) - 6) // 6)
    pad = READ - len(head) - len(filler) - 6
    data = head + filler + b"NOOP" + b" " * pad + b"\r\r" + b"\nQUIT\r\n"
    assert data.index(b"\r\r\n") == READ - 2
open(out, "wb").write(data)
'
layout() {
	python3 -c "$LAYOUT_PY" "$1" "$2"
}

@test "regression: a bare CR ending one read, then a read of line breaks, stays in bounds" {
	start_server
	layout decode-room "$T/in"
	filter < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	python3 -c '
import sys
got = open(sys.argv[1], "rb").read()
got = got[got.index(b"\r\n") + 2:]                 # minus the added header
head = len(b"EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
want = b"x" * (65536 - head - 1) + b"\r\n" + b"x" + b"\r\n" * 65535 + b"\r\n"
assert got == want, (len(got), len(want))' "$SRV/msg-1.eml"
}

@test "regression: a 2048-byte command is accepted whether or not its CRLF straddles a read" {
	start_server
	layout cr-split "$T/in"
	filter < "$T/in"
	[ "$(tr -d '\r' < "$T/out" | grep -c '^500')" = 0 ]
	[ "$(server_commands | grep -c '^NOOP x')" = 1 ]
	layout cr-together "$T/in"
	filter < "$T/in"
	[ "$(tr -d '\r' < "$T/out" | grep -c '^500')" = 0 ]
	[ "$(server_commands | grep -c '^NOOP x')" = 2 ]
}

@test "regression: a command ending in CR CR LF is refused even when split across reads" {
	start_server
	layout double-cr "$T/in"
	filter < "$T/in"
	tr -d '\r' < "$T/out" | tail -n2 | head -n1 | grep -q '^500 5.5.2 Invalid character in command$'
	tail -n1 "$T/out" | grep -q '^221'
}
