#!/usr/bin/env bats
# The Debian package (issue 13): make deb, lintian, apt-get install, the
# installed units' command lines with a real clamd, remove, purge, install
# again. Root only: it installs and removes packages on this machine, and
# leaves them as it found them (Debian's clamsmtp, which the package
# replaces, is put back if it was there).
#
# These tests use the installed /usr/sbin/clamsmtpd, built by make deb from
# this tree, not $CLAMSMTPD.

load helpers

TOP=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
DEFAULTS=/etc/default/clamsmtpd
UNITDIR=/lib/systemd/system
PKGSPOOL=/var/spool/clamsmtpd
APT="apt-get -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends"
export DEBIAN_FRONTEND=noninteractive

# installed PKG - true when dpkg has PKG installed (not just its conffiles)
installed() {
	dpkg-query -W -f '${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# no_service_starts CMD... - run CMD with policy-rc.d refusing every
# service start (Debian's clamsmtp would start its daemon otherwise)
no_service_starts() {
	local made=0 rc=0
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		made=1
	fi
	"$@" || rc=$?
	[ "$made" = 0 ] || rm -f /usr/sbin/policy-rc.d
	return "$rc"
}

# install_deb - apt-get install ./dist/clamsmtpd_*.deb, dependencies from the archive
install_deb() {
	(cd "$TOP" && no_service_starts $APT install ./dist/clamsmtpd_*.deb) > "$BATS_FILE_TMPDIR/apt.log" 2>&1 ||
		{ cat "$BATS_FILE_TMPDIR/apt.log" >&2; return 1; }
}

purge_deb() {
	no_service_starts $APT purge clamsmtpd > "$BATS_FILE_TMPDIR/apt.log" 2>&1 ||
		{ cat "$BATS_FILE_TMPDIR/apt.log" >&2; return 1; }
}

setup_file() {
	SKIPFILE=$BATS_FILE_TMPDIR/skip
	export SKIPFILE
	# bats 1.8 cannot skip from setup_file: each test's setup reads the reason
	if [ "$(id -u)" != 0 ]; then
		echo "tests/deb.bats installs and removes packages: run as root" > "$SKIPFILE"
		return 0
	fi
	case $CLAMSMTPD in *-asan)
		echo "the package builds its own binary: tested once, under make check, not again for the sanitizer build" > "$SKIPFILE"
		return 0 ;;
	esac
	# Two runs at once would install and purge under each other's feet.
	exec {DEB_LOCK}> /run/lock/clamsmtpd-deb-test.lock
	flock -w 600 "$DEB_LOCK" || { echo "another tests/deb.bats holds the lock" >&2; return 1; }
	if installed clamsmtpd; then
		echo "the clamsmtpd package is already installed here; this test would purge it" > "$SKIPFILE"
		return 0
	fi
	installed clamsmtp && echo yes > "$BATS_FILE_TMPDIR/had-clamsmtp"
	getent passwd clamsmtp > "$BATS_FILE_TMPDIR/user-before" || true
	start_real_clamd
	make -C "$TOP" deb > "$BATS_FILE_TMPDIR/make-deb.log" 2>&1 ||
		{ tail -n 30 "$BATS_FILE_TMPDIR/make-deb.log" >&2; return 1; }
	install_deb
	cp "$DEFAULTS" "$BATS_FILE_TMPDIR/defaults.orig"
}

teardown_file() {
	stop_real_clamd
	[ -e "$SKIPFILE" ] && return 0
	local rc=0
	if installed clamsmtpd; then purge_deb || rc=1; fi
	if [ -e "$BATS_FILE_TMPDIR/had-clamsmtp" ] && ! installed clamsmtp; then
		no_service_starts $APT install clamsmtp > "$BATS_FILE_TMPDIR/apt.log" 2>&1 ||
			{ echo "could not put Debian's clamsmtp back:" >&2; cat "$BATS_FILE_TMPDIR/apt.log" >&2; rc=1; }
	fi
	return "$rc"
}

setup() {
	[ -e "$SKIPFILE" ] && skip "$(cat "$SKIPFILE")"
	T=$BATS_TEST_TMPDIR
	SPOOL=$T/spool
	mkdir -m 700 "$SPOOL"
	: > "$T/pids"
	installed clamsmtpd || install_deb
}

teardown() {
	[ -e "$SKIPFILE" ] && return 0
	# every test starts from the packaged defaults file
	if [ -e "$DEFAULTS" ] && [ -e "$BATS_FILE_TMPDIR/defaults.orig" ]; then
		cp "$BATS_FILE_TMPDIR/defaults.orig" "$DEFAULTS"
	fi
	stop_pids
	# the filter's own spool: nothing may be left in it
	if [ -d "$PKGSPOOL" ] && [ -n "$(ls -A "$PKGSPOOL")" ]; then
		echo "$PKGSPOOL not empty:" >&2
		ls -la "$PKGSPOOL" >&2
		return 1
	fi
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# send_mail TARGET [swaks options] - one message; swaks' transcript in $T/swaks
send_mail() {
	local target=$1
	shift
	swaks --server "$target" --from sender@example.test --to rcpt@example.test \
		--timeout 20 "$@" > "$T/swaks" 2>&1
}

# set_defaults NAME=VALUE... - edit /etc/default/clamsmtpd as an admin would
set_defaults() {
	local kv
	for kv in "$@"; do
		grep -q "^${kv%%=*}=" "$DEFAULTS"
		sed -i "s|^${kv%%=*}=.*|$kv|" "$DEFAULTS"
	done
}

# unit_key UNIT KEY - a key's value in an installed unit (the last one wins)
unit_key() {
	sed -n "s/^$2=//p" "$UNITDIR/$1" | tail -n 1
}

# unit_argv UNIT - the installed unit's ExecStart, one word per line,
# expanded the way systemd does: the unit's Environment= first, then
# EnvironmentFile= (/etc/default/clamsmtpd) over it; "${VAR}" is one word,
# a "$VAR" word is split on blanks (so an empty one is no word at all).
unit_argv() {
	python3 - "$UNITDIR/$1" <<'EOF'
import re, shlex, sys
env, files, execstart = {}, [], None
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("Environment="):
        for kv in shlex.split(line[len("Environment="):]):
            k, _, v = kv.partition("=")
            env[k] = v
    elif line.startswith("EnvironmentFile="):
        files.append(line[len("EnvironmentFile="):])
    elif line.startswith("ExecStart="):
        execstart = line[len("ExecStart="):]
for f in files:
    optional = f.startswith("-")
    try:
        text = open(f.lstrip("-")).read()
    except OSError:
        if optional:
            continue
        raise
    for l in text.splitlines():
        l = l.strip()
        if not l or l[0] in "#;":
            continue
        k, _, v = l.partition("=")
        v = v.strip()
        env[k.strip()] = " ".join(shlex.split(v)) if v else ""
words = []
for w in shlex.split(execstart):
    m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
    if m:
        words += env.get(m.group(1), "").split()
        continue
    words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), w))
print("\n".join(words))
EOF
}

# as_unit_user UNIT - the setpriv prefix for the unit's User= and Group=
# (with the user's supplementary groups, as systemd gives them)
as_unit_user() {
	echo setpriv --reuid="$(unit_key "$1" User)" --regid="$(unit_key "$1" Group)" --init-groups
}

# self_test_supported - the installed binary has -T and -u (issue 11)
self_test_supported() {
	local usage
	usage=$(/usr/sbin/clamsmtpd -'?' 2>&1 || true)
	[[ "$usage" =~ \[-[A-Za-z]*T[A-Za-z]*\]|-T[^A-Za-z] ]] && [[ "$usage" == *"-u "* ]]
}

@test "make deb: dist/clamsmtpd_*.deb with the right relations, and lintian finds no error or warning" {
	deb=$(ls "$TOP"/dist/clamsmtpd_*.deb)
	[ "$(dpkg-deb -f "$deb" Package)" = clamsmtpd ]
	[ "$(dpkg-deb -f "$deb" Conflicts)" = clamsmtp ]
	[ "$(dpkg-deb -f "$deb" Replaces)" = clamsmtp ]
	[ "$(dpkg-deb -f "$deb" Recommends)" = clamav-daemon ]
	dpkg-deb -c "$deb" | grep -q ' \./usr/sbin/clamsmtpd$'
	# make deb ran lintian --fail-on error,warning; its findings are in the log
	grep -q '^lintian ' "$BATS_FILE_TMPDIR/make-deb.log"
	grep -E '^[A-Z]: ' "$BATS_FILE_TMPDIR/make-deb.log" || true
	! grep -E '^[EW]: ' "$BATS_FILE_TMPDIR/make-deb.log"
	# the build ran in a copy: no build product appears in the work tree
	for f in debian/clamsmtpd debian/.debhelper debian/files debian/debhelper-build-stamp \
		debian/clamsmtpd.substvars; do
		[ ! -e "$TOP/$f" ] || { echo "build product in the tree: $f" >&2; false; }
	done
}

@test "install: the clamsmtp user and group, clamav membership, the spool directory" {
	getent group clamsmtp
	entry=$(getent passwd clamsmtp)
	shell=$(cut -d: -f7 <<< "$entry")
	home=$(cut -d: -f6 <<< "$entry")
	if [ -s "$BATS_FILE_TMPDIR/user-before" ]; then
		# a user that was there before (Debian's clamsmtp makes one) is kept as it was
		[ "$entry" = "$(cat "$BATS_FILE_TMPDIR/user-before")" ]
	else
		[ "$shell" = /usr/sbin/nologin ]
		[ "$home" = /nonexistent ]
		[ "$(id -g clamsmtp)" = "$(getent group clamsmtp | cut -d: -f3)" ]
	fi
	[ -s "$BATS_FILE_TMPDIR/user-before" ] || [ ! -e "$home" ]
	case $shell in /usr/sbin/nologin|/sbin/nologin|/bin/false|/usr/bin/false) ;; *) false ;; esac
	# clamav-daemon is installed for the tests: its group exists
	getent group clamav
	id -nG clamsmtp | tr ' ' '\n' | grep -qx clamav
	[ "$(stat -c '%U:%G %a' "$PKGSPOOL")" = "clamsmtp:clamsmtp 700" ]
}

@test "install: the files, their modes, the conffiles, clamsmtpd -v" {
	[ "$(stat -c '%U:%G %a' /usr/sbin/clamsmtpd)" = "root:root 755" ]
	for f in $UNITDIR/clamsmtpd.service $UNITDIR/clamsmtpd.socket "$UNITDIR/clamsmtpd@.service" \
		"$DEFAULTS" /etc/xinetd.d/clamsmtpd /usr/share/man/man8/clamsmtpd.8.gz \
		/usr/share/doc/clamsmtpd/copyright; do
		[ "$(stat -c '%U:%G %a' "$f")" = "root:root 644" ] || { echo "mode of $f" >&2; false; }
	done
	conffiles=$(dpkg-query -W -f '${Conffiles}' clamsmtpd)
	grep -q "^ $DEFAULTS " <<< "$conffiles"
	grep -q '^ /etc/xinetd.d/clamsmtpd ' <<< "$conffiles"
	# the xinetd file is there, disabled
	grep -Eq '^\s*disable\s*=\s*yes\s*$' /etc/xinetd.d/clamsmtpd
	grep -Eq '^\s*server\s*=\s*/usr/sbin/clamsmtpd\s*$' /etc/xinetd.d/clamsmtpd
	# the defaults file is commented and holds the README's Postfix addresses
	grep -q '^# ' "$DEFAULTS"
	( . "$DEFAULTS"
	  [ "$CLAMADDR" = /run/clamav/clamd.ctl ]
	  [ "$SERVERADDR" = 127.0.0.1:10026 ]
	  [ "$LISTENADDR" = 127.0.0.1:10025 ]
	  grep -qF -- "-c $CLAMADDR" "$TOP/README.md"
	  grep -qF -- "$SERVERADDR" "$TOP/README.md"
	  grep -qF -- "content_filter = scan:[${LISTENADDR%:*}]:${LISTENADDR#*:}" "$TOP/README.md" )
	# the version the package says is the one the program says
	[ "$(/usr/sbin/clamsmtpd -v)" = "clamsmtpd $(dpkg-query -W -f '${Version}' clamsmtpd)" ]
}

@test "install: the units are there, read /etc/default/clamsmtpd, and none is enabled or started" {
	for u in clamsmtpd.service "clamsmtpd@.service"; do
		grep -qx "EnvironmentFile=-$DEFAULTS" "$UNITDIR/$u"
		unit_key "$u" ExecStart | grep -q '^/usr/sbin/clamsmtpd '
		[ "$(unit_key "$u" User)" = clamsmtp ]
	done
	grep -qx 'Accept=yes' $UNITDIR/clamsmtpd.socket
	# not enabled: no symlink to any of them; not started: no process runs it
	! find /etc/systemd/system -name 'clamsmtpd*' | grep .
	! pgrep -x -u clamsmtp clamsmtpd
	if [ -d /run/systemd/system ]; then
		! systemctl is-enabled clamsmtpd.socket
		! systemctl is-active clamsmtpd.socket
		! systemctl is-active clamsmtpd.service
		systemd-analyze verify $UNITDIR/clamsmtpd.socket $UNITDIR/clamsmtpd.service
	fi
}

@test "the installed listener unit's command line, options from /etc/default/clamsmtpd: clean delivered, EICAR dropped" {
	start_server
	port=$(free_port)
	set_defaults "CLAMADDR=$CLAMD_TCP" "SERVERADDR=$SERVER" "LISTENADDR=127.0.0.1:$port"
	mapfile -t argv < <(unit_argv clamsmtpd.service)
	[ "${argv[0]}" = /usr/sbin/clamsmtpd ]
	[[ " ${argv[*]} " == *" -l 127.0.0.1:$port "* ]]
	[ "${argv[-1]}" = "$SERVER" ]
	# shellcheck disable=SC2046
	(umask 077; exec $(as_unit_user clamsmtpd.service) "${argv[@]}") < /dev/null 2> "$T/listener.log" &
	lpid=$!
	echo $lpid >> "$T/pids"
	for i in $(seq 50); do grep -q listening "$T/listener.log" && break; sleep 0.1; done
	send_mail 127.0.0.1:$port --body 'through the packaged listener'
	grep -q '^<- *250 ' "$T/swaks"
	eicar "$T/eicar.com"
	send_mail 127.0.0.1:$port --attach "$T/eicar.com"
	grep -q '250 2.7.0 Virus detected; message discarded' "$T/swaks"
	[ "$(count_messages)" = 1 ]
	grep -q 'through the packaged listener' "$SRV/msg-1.eml"
	grep -q 'status=VIRUS:Eicar-Test-Signature' "$T/listener.log"
	# the listener runs as the unit's user
	[ "$(stat -c %U "/proc/$lpid")" = clamsmtp ]
}

@test "the installed socket unit's session command line under systemd-socket-activate: clean delivered, EICAR dropped" {
	start_server
	[ "$(unit_key clamsmtpd.socket ListenStream)" = 127.0.0.1:10025 ]
	set_defaults "CLAMADDR=$CLAMD_TCP" "SERVERADDR=$SERVER" 'OPTIONS="-t 30"'
	mapfile -t argv < <(unit_argv "clamsmtpd@.service")
	[ "${argv[0]}" = /usr/sbin/clamsmtpd ]
	[[ " ${argv[*]} " == *" -t 30 "* ]]
	[ "${argv[-1]}" = "$SERVER" ]
	# the socket's own port, 10025, may be taken on a shared machine: a free one
	port=$(free_port)
	# shellcheck disable=SC2046
	systemd-socket-activate -l 127.0.0.1:$port -a --inetd \
		$(as_unit_user "clamsmtpd@.service") "${argv[@]}" 2> "$T/activate.log" &
	echo $! >> "$T/pids"
	for i in $(seq 50); do grep -q Listening "$T/activate.log" && break; sleep 0.1; done
	send_mail 127.0.0.1:$port --body 'through the packaged socket unit'
	grep -q '^<- *250 ' "$T/swaks"
	eicar "$T/eicar.com"
	send_mail 127.0.0.1:$port --attach "$T/eicar.com"
	grep -q '250 2.7.0 Virus detected; message discarded' "$T/swaks"
	[ "$(count_messages)" = 1 ]
	grep -q 'through the packaged socket unit' "$SRV/msg-1.eml"
	head -n1 "$SRV/msg-1.eml" | grep -q '^X-AV-Checked: '
}

@test "README's self-test line with /etc/default/clamsmtpd: exit 0 when all is up, 1 with the server down" {
	self_test_supported || skip "the installed clamsmtpd has no -T/-u yet (issue 11)"
	line=$(grep -m1 -E '^\s*\. /etc/default/clamsmtpd && clamsmtpd -T ' "$TOP/README.md")
	[ -n "$line" ]
	start_server
	set_defaults "CLAMADDR=$CLAMD_TCP" "SERVERADDR=$SERVER"
	run env PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c "$line"
	echo "$output"
	[ "$status" -eq 0 ]
	grep -q 'ok' <<< "$output"
	! grep -q 'FAIL' <<< "$output"
	set_defaults "SERVERADDR=127.0.0.1:$(free_port)"
	run env PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c "$line"
	echo "$output"
	[ "$status" -eq 1 ]
	grep -q 'FAIL' <<< "$output"
}

@test "remove keeps the conffiles, purge leaves nothing but the user; postinst runs twice; a second install works" {
	dpkg-query -L clamsmtpd > "$T/files"
	uid=$(id -u clamsmtp)
	# postinst again (dpkg-reconfigure): nothing changes
	getent passwd clamsmtp > "$T/pw1"; getent group clamsmtp clamav > "$T/gr1"
	stat -c '%U:%G %a' "$PKGSPOOL" > "$T/sp1"
	dpkg-reconfigure clamsmtpd
	getent passwd clamsmtp | cmp - "$T/pw1"
	getent group clamsmtp clamav | cmp - "$T/gr1"
	stat -c '%U:%G %a' "$PKGSPOOL" | cmp - "$T/sp1"
	# and, as README.md says, puts the user back into group clamav
	gpasswd -d clamsmtp clamav
	! id -nG clamsmtp | tr ' ' '\n' | grep -qx clamav
	dpkg-reconfigure clamsmtpd
	id -nG clamsmtp | tr ' ' '\n' | grep -qx clamav

	no_service_starts $APT remove clamsmtpd > "$T/apt.log" 2>&1 || { cat "$T/apt.log"; false; }
	[ ! -e /usr/sbin/clamsmtpd ]
	[ -e "$DEFAULTS" ]
	[ -e /etc/xinetd.d/clamsmtpd ]
	[ -d "$PKGSPOOL" ]
	purge_deb
	! installed clamsmtpd
	[ -z "$(dpkg-query -W -f '${Status}' clamsmtpd 2>/dev/null | grep -v 'not-installed')" ]
	# every file of its own is gone (directories are shared, but for its doc directory)
	while read -r f; do
		[ -d "$f" ] && continue
		[ ! -e "$f" ] || { echo "left behind: $f" >&2; false; }
	done < "$T/files"
	[ ! -e "$DEFAULTS" ]
	[ ! -e /etc/xinetd.d/clamsmtpd ]
	[ ! -e "$PKGSPOOL" ]
	[ ! -d /usr/share/doc/clamsmtpd ]
	! ls /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked 2>/dev/null | grep clamsmtpd
	! ls /var/lib/dpkg/info | grep '^clamsmtpd\.'
	# the user and group stay, as Debian does
	[ "$(id -u clamsmtp)" = "$uid" ]
	getent group clamsmtp

	install_deb
	installed clamsmtpd
	[ "$(id -u clamsmtp)" = "$uid" ]
	[ "$(stat -c '%U:%G %a' "$PKGSPOOL")" = "clamsmtp:clamsmtp 700" ]
	# a fresh defaults file, not the one the tests edited
	cmp "$DEFAULTS" "$BATS_FILE_TMPDIR/defaults.orig"
	/usr/sbin/clamsmtpd -v
}
