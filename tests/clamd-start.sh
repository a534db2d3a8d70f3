#!/bin/sh
# clamd-start.sh - start a private, real clamd for the tests.
#
# Usage: tests/clamd-start.sh DIR
#
# Writes into DIR (created if missing):
#   db/test.hdb, db/test.ndb   a three-signature database (EICAR by md5 and by
#                              body, plus the marker CLAMSMTPD-TEST-MARKER)
#   clamd.conf                 Foreground, LocalSocket DIR/clamd.sock (0600),
#                              TCPSocket on a free 127.0.0.1 port
#   clamd.tcpport              that port
#   eicar.com                  the 68 EICAR bytes
#   clamd.pid                  clamd's pid (stop it with tests/clamd-stop.sh DIR)
#   clamd.log, clamd.out       clamd's log file and its stdout/stderr
# Exits 0 once clamd answers zPING with PONG on the unix socket (and on TCP),
# non-zero with a reason on stderr otherwise; then nothing is left running.
# Nothing is contacted outside 127.0.0.1; no freshclam, no official database.

set -u

me=clamd-start.sh
die() { echo "$me: $*" >&2; exit 1; }

[ $# -eq 1 ] || { echo "usage: $me DIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd) || die "cannot find my directory"
mkdir -p "$1/db" || die "cannot create $1/db"
dir=$(cd "$1" && pwd -P) || die "cannot enter $1"

CLAMD=${CLAMD:-}
if [ -z "$CLAMD" ]; then
	CLAMD=$(command -v clamd 2>/dev/null || true)
	[ -n "$CLAMD" ] || CLAMD=/usr/sbin/clamd
fi
[ -x "$CLAMD" ] || die "no clamd binary (install clamav-daemon or set CLAMD)"
command -v python3 >/dev/null 2>&1 || die "python3 is needed"

sock=$dir/clamd.sock
# sun_path holds 108 bytes including the NUL
[ ${#sock} -lt 108 ] || die "socket path too long for a unix socket: $sock"

if [ -f "$dir/clamd.pid" ]; then
	old=$(cat "$dir/clamd.pid" 2>/dev/null)
	if [ -n "$old" ] && [ "$(cat /proc/"$old"/comm 2>/dev/null)" = clamd ]; then
		die "a clamd (pid $old) already runs for $dir; stop it first"
	fi
	rm -f "$dir/clamd.pid"
fi

# The EICAR bytes come from eicar.sh, which keeps the string out of the repo.
"$here/eicar.sh" > "$dir/eicar.com" || die "cannot write $dir/eicar.com"
[ "$(wc -c < "$dir/eicar.com")" -eq 68 ] || die "eicar.sh did not give 68 bytes"
hex() { od -An -v -tx1 | tr -d ' \n'; }
eicar_hex=$(hex < "$dir/eicar.com")
marker_hex=$(printf '%s' CLAMSMTPD-TEST-MARKER | hex)

printf '%s\n' '44d88612fea8a8f36de82e1278abb02f:68:Eicar-Test-Signature' \
	> "$dir/db/test.hdb" || die "cannot write $dir/db/test.hdb"
printf '%s\n' "Eicar-Test-Signature:0:*:$eicar_hex" \
	"Clamsmtpd-Test-Marker:0:*:$marker_hex" \
	> "$dir/db/test.ndb" || die "cannot write $dir/db/test.ndb"

# A free loopback port: bind port 0, read what the kernel chose, let it go.
port=$(python3 -c '
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()') || die "cannot find a free TCP port"

# As root, clamd keeps running as root unless "User" is set, which is what
# we want: it must read the db and write the log in DIR.  No User line.
cat > "$dir/clamd.conf" <<EOF || die "cannot write $dir/clamd.conf"
# private clamd for clamsmtpd tests, written by tests/clamd-start.sh
Foreground yes
LocalSocket $sock
LocalSocketMode 600
FixStaleSocket yes
TCPSocket $port
TCPAddr 127.0.0.1
DatabaseDirectory $dir/db
TemporaryDirectory $dir
LogFile $dir/clamd.log
LogFileUnlock yes
LogTime yes
PidFile $dir/clamd.pid
SelfCheck 0
Bytecode no
PhishingSignatures no
PhishingScanURLs no
StreamMaxLength 50M
MaxFileSize 50M
MaxScanSize 100M
MaxThreads 20
MaxConnectionQueueLength 64
DisableCache yes
EOF
if ! { echo "$port" > "$dir/clamd.tcpport.tmp" &&
	mv "$dir/clamd.tcpport.tmp" "$dir/clamd.tcpport"; }; then
	die "cannot write $dir/clamd.tcpport"
fi
rm -f "$dir/clamd.log"

# Foreground mode: $! is clamd itself.  stdin from /dev/null and every other
# descriptor closed (fd 3 especially: bats waits for whoever holds it).
"$CLAMD" -c "$dir/clamd.conf" </dev/null >"$dir/clamd.out" 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
pid=$!
echo "$pid" > "$dir/clamd.pid"

fail() {
	echo "$me: $*" >&2
	if [ -s "$dir/clamd.out" ]; then
		sed 's/^/  clamd: /' "$dir/clamd.out" | tail -n 20 >&2
	elif [ -s "$dir/clamd.log" ]; then
		sed 's/^/  clamd.log: /' "$dir/clamd.log" | tail -n 20 >&2
	fi
	kill "$pid" 2>/dev/null
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	rm -f "$dir/clamd.pid"
	exit 1
}

# Wait up to 10 s for PONG on the unix socket and on TCP.
python3 - "$sock" "$port" "$pid" <<'EOF' || fail "clamd is not ready (see $dir/clamd.out and clamd.log)"
import os, socket, sys, time
path, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def ping(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(addr)
        s.sendall(b"zPING\0")
        r = b""
        while True:
            d = s.recv(64)
            if not d:
                break
            r += d
        return r == b"PONG\0"
    except OSError:
        return False
    finally:
        s.close()

def alive():
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False

deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if not alive():
        sys.stderr.write("clamd-start.sh: clamd exited during start-up\n")
        sys.exit(1)
    if ping(socket.AF_UNIX, path) and ping(socket.AF_INET, ("127.0.0.1", port)):
        sys.exit(0)
    time.sleep(0.05)
sys.stderr.write("clamd-start.sh: no PONG from clamd within 10 s\n")
sys.exit(1)
EOF
exit 0
