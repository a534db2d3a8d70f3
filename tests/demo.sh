#!/bin/sh
# demo.sh - see clamsmtpd work, in a few seconds, without touching the system.
#
# Usage: tests/demo.sh        (make demo runs it after tests/deps.sh and make)
#
# Starts, all on 127.0.0.1 and all private to this run:
#   a real clamd with a tiny signature database (tests/clamd-start.sh),
#   a receiving SMTP server that keeps what it is given (tests/smtp-recorder.py),
#   clamsmtpd in listener mode between the two (-d 3, logging to a file).
# Then sends two messages through clamsmtpd with swaks: a clean one, and one
# with the EICAR test file as a MIME attachment.  Prints what happened.
#
# The delivered message is kept in demo-output/ (beside the Makefile); all
# else is removed, and every process started here is stopped by its pid,
# however the script ends.  Exit status 0 only when the clean message was
# delivered with the X-AV-Checked header and the EICAR one was discarded.

set -u
me=demo.sh
here=$(cd "$(dirname "$0")" && pwd) || exit 1
root=$(cd "$here/.." && pwd) || exit 1
CLAMSMTPD=${CLAMSMTPD:-$root/clamsmtpd}
out=$root/demo-output

die() { echo "$me: $*" >&2; exit 1; }

for tool in swaks python3; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (run tests/deps.sh)"
done
[ -x "$CLAMSMTPD" ] || die "no $CLAMSMTPD (run make)"

work=$(mktemp -d "${TMPDIR:-/tmp}/clamsmtpd-demo.XXXXXX") || die "cannot make a temp dir"
server_pid='' filter_pid=''

# shellcheck disable=SC2317 # called from the EXIT trap
# cleanup - stop what we started, by pid, and remove the work directory
cleanup() {
	for pid in $filter_pid $server_pid; do
		kill "$pid" 2>/dev/null
	done
	for pid in $filter_pid $server_pid; do
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	"$here/clamd-stop.sh" "$work/clamd"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# wait_file PATH - up to 10 s for a non-empty file
wait_file() {
	i=0
	while [ ! -s "$1" ]; do
		[ "$i" -lt 100 ] || return 1
		sleep 0.1
		i=$((i + 1))
	done
}

# -- start the three programs ------------------------------------------------

"$here/clamd-start.sh" "$work/clamd" > "$work/clamd-start.out" 2>&1 ||
	{ cat "$work/clamd-start.out" >&2; die "clamd did not start"; }

mkdir "$work/server" || die "cannot create $work/server"
mkdir -m 700 "$work/spool" || die "cannot create $work/spool"
python3 "$here/smtp-recorder.py" --listen 127.0.0.1:0 --dir "$work/server" \
	2> "$work/server.err" < /dev/null &
server_pid=$!
wait_file "$work/server/port" || { cat "$work/server.err" >&2; die "the SMTP server did not start"; }
server=127.0.0.1:$(cat "$work/server/port")

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])') ||
	die "cannot find a free port"
log=$work/clamsmtpd.log
"$CLAMSMTPD" -d 3 -l "127.0.0.1:$port" -D "$work/spool" -c "$work/clamd/clamd.sock" \
	-p "$work/clamsmtpd.pid" "$server" < /dev/null 2> "$log" &
filter_pid=$!
wait_file "$work/clamsmtpd.pid" || { cat "$log" >&2; die "clamsmtpd did not start"; }

# -- send the two messages ---------------------------------------------------

# send NAME [swaks options] - one message through clamsmtpd; swaks' talk in $work/NAME
send() {
	name=$1
	shift
	swaks --server "127.0.0.1:$port" --from alice@example.test --to bob@example.test \
		--helo demo.example.test --timeout 20 "$@" > "$work/$name" 2>&1
}
# last_reply NAME - clamsmtpd's reply to the end of the data (the last one before QUIT's)
last_reply() {
	sed -n 's/^<-  *\([0-9][0-9][0-9] .*\)/\1/p' "$work/$1" | tr -d '\r' |
		grep -v '^221 ' | tail -n 1
}

send clean --header 'Subject: clamsmtpd demo: a clean message' \
	--body 'Hello Bob, this message carries nothing harmful.'
clean_reply=$(last_reply clean)

"$here/eicar.sh" > "$work/eicar.com"
send infected --header 'Subject: clamsmtpd demo: the EICAR test file attached' \
	--body 'Hello Bob, the attachment is the EICAR anti-virus test file.' \
	--attach "$work/eicar.com"
infected_reply=$(last_reply infected)

# -- keep the delivered message, judge, report -------------------------------

mkdir -p "$out" || die "cannot create $out"
rm -f "$out"/msg-*.eml
delivered=0
for f in "$work"/server/msg-*.eml; do
	[ -e "$f" ] || continue
	cp "$f" "$out/" || die "cannot copy into $out"
	delivered=$((delivered + 1))
done

clean_ok=no infected_ok=no
kept=$out/msg-1.eml
if [ "$delivered" -ge 1 ] && grep -q 'carries nothing harmful' "$kept" &&
	head -n 1 "$kept" | tr -d '\r' | grep -q '^X-AV-Checked: ClamAV using ClamSMTP$'; then
	clean_ok=yes
fi
virus_line=$(grep 'status=VIRUS:' "$log" | head -n 1)
case $infected_reply in
"250 2.7.0 Virus detected; message discarded")
	[ "$delivered" = 1 ] && [ -n "$virus_line" ] && infected_ok=yes ;;
esac

echo
echo "clamsmtpd demo: clamsmtpd on 127.0.0.1:$port scans with a private clamd and"
echo "passes clean mail on to a test SMTP server on $server."
echo
if [ "$clean_ok" = yes ]; then
	echo "1. Clean message: DELIVERED  (clamsmtpd replied: $clean_reply)"
else
	echo "1. Clean message: NOT AS EXPECTED  (clamsmtpd replied: ${clean_reply:-nothing})"
fi
if [ "$delivered" -ge 1 ]; then
	echo "   The server received it with these headers:"
	tr -d '\r' < "$kept" | sed -n '/^$/q; s/^/     | /; p' | head -n 8
fi
echo
if [ "$infected_ok" = yes ]; then
	echo "2. EICAR attachment: DISCARDED  (clamsmtpd replied: $infected_reply)"
else
	echo "2. EICAR attachment: NOT AS EXPECTED  (clamsmtpd replied: ${infected_reply:-nothing})"
fi
if [ -n "$virus_line" ]; then
	echo "   clamsmtpd's log says:"
	echo "     | $virus_line"
fi
echo "   The server received $delivered message(s) in all."
echo
if [ "$delivered" -ge 1 ]; then
	echo "Kept: the delivered message, ${out#"$PWD"/}/msg-1.eml."
fi
echo "Removed: clamd, the SMTP server and clamsmtpd (stopped) and their files."
echo
if [ "$clean_ok" = yes ] && [ "$infected_ok" = yes ]; then
	echo "demo: OK"
	exit 0
fi
echo "demo: FAILED; clamsmtpd's log:" >&2
sed 's/^/  /' "$log" >&2
exit 1
