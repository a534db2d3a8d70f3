#!/bin/sh
# clamd-stop.sh - stop the private clamd that tests/clamd-start.sh DIR started.
#
# Usage: tests/clamd-stop.sh DIR
#
# Sends SIGTERM to the pid in DIR/clamd.pid (only if that pid is a clamd),
# waits up to 10 s for it to exit, then SIGKILL.  Removes DIR/clamd.pid and
# a left-over DIR/clamd.sock.  Exits 0 when no clamd of DIR runs any more
# (also when none was running).

set -u
me=clamd-stop.sh
[ $# -eq 1 ] || { echo "usage: $me DIR" >&2; exit 2; }
dir=$1

pidfile=$dir/clamd.pid
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile" 2>/dev/null)
case $pid in
''|*[!0-9]*) echo "$me: bad pid in $pidfile" >&2; rm -f "$pidfile"; exit 1 ;;
esac

# running - true while $pid exists and is not a zombie (an orphaned clamd
# may linger as a zombie where nothing reaps it; it is gone for us then).
running() {
	[ -r "/proc/$pid/stat" ] || return 1
	state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1)
	[ -n "$state" ] && [ "$state" != Z ]
}

if running && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = clamd ]; then
	kill -TERM "$pid" 2>/dev/null
	i=0
	while running && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	if running; then
		echo "$me: clamd $pid ignored SIGTERM for 10 s; killing it" >&2
		kill -KILL "$pid" 2>/dev/null
		i=0
		while running && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	fi
	if running; then
		echo "$me: clamd $pid does not go away" >&2
		exit 1
	fi
fi
rm -f "$pidfile" "$dir/clamd.sock"
exit 0
