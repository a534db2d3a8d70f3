#!/usr/bin/env bats
# The relay: SPEC 3. Whole replies both ways, EHLO filtering, local refusals,
# pipelining, the line limit, and a 421 when the server is not there.

load helpers

@test "a clean message arrives byte-identical but for the added header" {
	start_server
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(cat "$T/rc")" = 0 ]
	[ "$(codes)" = "220 250 250 250 354 250 221" ]
	[ "$(count_messages)" = 1 ]
	[ "$(head -n1 "$SRV/msg-1.eml")" = $'X-AV-Checked: ClamAV using ClamSMTP\r' ]
	without_header "$SRV/msg-1.eml" > "$T/got"
	cmp "$T/body" "$T/got"
}

@test "the server's multi-line greeting and replies reach the client whole" {
	start_server --reply 'greeting=220-one\n220-two\n220 three' --reply 'rcpt=250-first\n250 2.1.5 second'
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	grep -q $'^220-one\r$' "$T/out"
	grep -q $'^220-two\r$' "$T/out"
	grep -q $'^220 three\r$' "$T/out"
	grep -q $'^250-first\r$' "$T/out"
	grep -q $'^250 2.1.5 second\r$' "$T/out"
	[ "$(count_messages)" = 1 ]
}

@test "EHLO: STARTTLS, CHUNKING and PIPELINING are removed, the rest is kept" {
	start_server
	printf 'EHLO client.test\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	! grep -qiE 'STARTTLS|CHUNKING|PIPELINING' "$T/out" || false
	grep -q $'^250-SIZE 104857600\r$' "$T/out"
	grep -q $'^250-XFORWARD NAME ADDR PROTO HELO\r$' "$T/out"
	grep -q $'^250 DSN\r$' "$T/out"
}

@test "EHLO: a removed last line leaves a well-formed reply" {
	start_server --ehlo-last STARTTLS
	printf 'EHLO client.test\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	! grep -q STARTTLS "$T/out" || false
	# exactly one final line in the EHLO reply: "250 " without a dash
	tr -d '\r' < "$T/out" | sed -n '2,/^250 /p' > "$T/ehlo"
	[ "$(tail -n1 "$T/ehlo" | cut -c1-4)" = "250 " ]
	[ "$(grep -c '^250 ' "$T/ehlo")" = 1 ]
	[ "$(tail -n1 "$T/ehlo")" = "250 DSN" ]
	[ "$(tail -n2 "$T/ehlo" | head -n1)" = "250-XFORWARD NAME ADDR PROTO HELO" ]
}

@test "STARTTLS, BDAT and XCLIENT are answered 502 and never forwarded" {
	start_server
	printf 'EHLO c\r\nSTARTTLS\r\nBDAT 10 LAST\r\nXCLIENT NAME=x\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 502 502 502 221" ]
	! server_commands | grep -qiE 'STARTTLS|BDAT|XCLIENT' || false
}

@test "XFORWARD is passed on to the server" {
	start_server
	printf 'EHLO c\r\nXFORWARD NAME=mx.example.test ADDR=192.0.2.1\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 221" ]
	server_commands | grep -q '^XFORWARD NAME=mx.example.test ADDR=192.0.2.1$'
}

@test "pipelined commands in one write get one reply each, in order" {
	start_server --reply-nth 'rcpt:2=550 5.1.1 No such user'
	a_message "$T/body"
	{ printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<x@example.test>\r\n'
	  printf 'RCPT TO:<nobody@example.test>\r\nRCPT TO:<y@example.test>\r\nNOOP\r\nDATA\r\n'
	  cat "$T/body"; printf '.\r\nRSET\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 550 250 250 354 250 250 221" ]
	grep -q 'to=<x@example.test>, to=<y@example.test>$' "$T/err"
}

@test "a command line over 2048 bytes gets 500 5.5.2 and the session goes on" {
	start_server
	{ printf 'EHLO c\r\nNOOP '; head -c 3000 /dev/zero | tr '\0' x; printf '\r\nNOOP\r\nQUIT\r\n'; } > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 500 250 221" ]
	grep -q $'^500 5.5.2 Line too long\r$' "$T/out"
	! server_commands | grep -q xxxx || false
}

@test "a bare LF ends a command and reaches the server as CRLF" {
	start_server
	printf 'EHLO c\nNOOP\nQUIT\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 221" ]
	grep -q $'NOOP\r\nQUIT\r\n' "$SRV/session-1.raw"
}

@test "a command with a CR or NUL inside is refused, never forwarded" {
	start_server
	printf 'EHLO c\r\nNOOP\rQUIT\r\nNOOP\0x\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 500 500 221" ]
	[ "$(server_commands | tr '\n' ' ')" = "EHLO c QUIT " ]
}

@test "DATA without an accepted recipient: 554 5.5.1, the server sees no DATA" {
	start_server --reply 'rcpt=550 5.1.1 No such user'
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 550 554 221" ]
	! server_commands | grep -q '^DATA' || false
}

@test "no server at serveraddr: 421 4.3.0 to the client and a log line" {
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	SERVER=127.0.0.1:$port
	printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(tr -d '\r' < "$T/out")" = "421 4.3.0 Cannot connect to the mail server" ]
	grep -q "cannot connect to server" "$T/err"
}

@test "serveraddr that is only a port, with stdin not a socket: 421 and a log line" {
	SERVER=2525
	printf 'EHLO c\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(tr -d '\r' < "$T/out" | cut -c1-9)" = "421 4.3.0" ]
	grep -q "only a port" "$T/err"
}

@test "nothing but SMTP replies is written on stdout" {
	start_server
	a_message "$T/body"
	eicar "$T/virus"
	transcript "$T/in" "$T/body" "$T/virus"
	filter < "$T/in"
	[ -s "$T/err" ]
	! tr -d '\r' < "$T/out" | grep -vE '^[2-5][0-9]{2}([ -]|$)' || false
}

@test "a command line of exactly 2048 bytes is relayed; 2049 is refused" {
	start_server
	pad=$(head -c 2043 /dev/zero | tr '\0' x)
	printf 'EHLO c\r\nNOOP %s\r\nNOOP %sy\r\nQUIT\r\n' "$pad" "$pad" > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 500 221" ]
	server_commands | grep -q "^NOOP $pad\$"
	! server_commands | grep -q "^NOOP ${pad}y" || false
}

@test "an overlong reply line from the server is relayed cut short, never with stray bytes" {
	long=$(head -c 6000 /dev/zero | tr '\0' z)
	start_server --reply "noop=250 $long"
	printf 'EHLO c\r\nNOOP\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 221" ]
	line=$(grep -a '^250 zz' "$T/out" | tr -d '\r')
	[ "${#line}" -gt 1000 ]
	[ "${#line}" -lt 6004 ]
	[[ "$line" =~ ^250\ z+$ ]]
}

@test "TAB separators and leading blanks are refused: no verb can hide from the filter" {
	start_server
	printf 'EHLO c\r\nMAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\t\r\n DATA\r\nEHLO\tc\r\nXCLIENT\tADDR=1.2.3.4\r\nSTARTTLS\t\r\nQUIT\r\n' > "$T/in"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 500 500 500 500 500 221" ]
	[ "$(server_commands | tr '\n' ' ')" = "EHLO c MAIL FROM:<a@example.test> RCPT TO:<b@example.test> QUIT " ]
}

@test "a server that answers 250 to DATA: the client gets 451, never 250" {
	start_server --reply 'data=250 2.0.0 Ok'
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	[ "$(codes)" = "220 250 250 250 354 451 421" ]
	grep -q 'answered 250 to DATA' "$T/err"
}

@test "a server that sends a reply nobody asked for: the message is not confirmed" {
	start_server --reply 'rcpt=250 2.1.5 Ok\n250 2.1.5 Ok, and again'
	a_message "$T/body"
	transcript "$T/in" "$T/body"
	filter < "$T/in"
	codes=$(codes)
	[[ "$codes" == "220 250 250 250 354 451"* ]]
	[ "$(count_messages)" = 0 ]
}
