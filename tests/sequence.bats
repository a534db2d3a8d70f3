#!/usr/bin/env bats
# Sequences, not single steps (issue 9): many sessions, each a seeded random
# sequence of transactions (empty to 3 MB, dot lines, bare CR/LF, NULs, long
# lines, EICAR; RSET, HELO, EHLO, NOOP, refused recipients in between) while
# the driver's own clamd and server fail at random steps. Every message ends
# delivered byte-identical with the server's 250, or with a 4xx/5xx and
# nothing delivered, or as a virus; one reply per command; the spool empty.
# tests/sequence.py is the driver; a failure prints the command that replays
# exactly that session (--seed S --session K --mode M --clamd C).
#
# Length: SEQUENCE_SESSIONS sessions per test at most (default 250), and no
# new session after SEQUENCE_SECONDS seconds (default 25), so the file takes
# about two minutes here; SEQUENCE_SEED fixes the seed. CI runs it longer on
# the sanitizer build (.ci/run sets both for `make check-asan`).

load helpers

# The stand-ins live inside the driver: no real clamd for this file.
setup_file() { :; }
teardown_file() { :; }

# sequence ARGS... - one bounded run; its figures go to the TAP output
sequence() {
	run python3 "$TESTS/sequence.py" --quiet --max-failures 5 \
		--clamsmtpd "$CLAMSMTPD" --spool "$SPOOL" \
		--sessions "${SEQUENCE_SESSIONS:-250}" --seconds "${SEQUENCE_SECONDS:-25}" \
		${SEQUENCE_SEED:+--seed "$SEQUENCE_SEED"} "$@"
	printf '%s\n' "$output"
	printf '%s\n' "$output" | grep -E '^sequence: (seed .*sessions|faults|[0-9]+ failures)' |
		sed 's/^/# /' >&3
	[ "$status" -eq 0 ]
	[[ "$output" == *$'\nsequence: 0 failures'* ]]
	# it really ran: messages went through, and faults were injected
	[[ "$output" =~ [1-9][0-9]*\ messages ]]
	[[ "$output" =~ faults\ injected:\ [1-9] ]]
}

@test "sequence: FILDES clamd, stdio mode (socketpair or pipes)" {
	sequence --mode stdio --clamd fildes
}

@test "sequence: INSTREAM clamd, stdio mode (socketpair or pipes)" {
	sequence --mode stdio --clamd instream
}

@test "sequence: FILDES clamd, one listener for all sessions, drop viruses" {
	sequence --mode listener --clamd fildes --bounce never
}

@test "sequence: INSTREAM clamd, one listener for all sessions, -b rejects viruses" {
	sequence --mode listener --clamd instream --bounce always
}
