#!/bin/sh
# postfix-instance.sh - a private Postfix instance with clamsmtpd as its
# after-queue content filter or its before-queue proxy filter, for tests and
# demonstrations.
#
# Usage:
#   tests/postfix-instance.sh create DIR MODE SUBMIT FILTER REINJECT RELAY \
#       CLAMSMTPD SPOOL CLAMD [USER]
#   tests/postfix-instance.sh start DIR
#   tests/postfix-instance.sh stop DIR
#   tests/postfix-instance.sh services
#
# create writes DIR/etc/main.cf and DIR/etc/master.cf.  Everything about
# clamsmtpd comes from tests/postfix-example.cf (the lines the README and
# the man page quote), with its ports, paths and user replaced:
#   MODE      listener or spawn; or proxy: before-queue, with the lines of
#             tests/postfix-proxy-example.cf instead (clamsmtpd a listener)
#   SUBMIT    port of the smtpd that mail is submitted to (127.0.0.1)
#   FILTER    port clamsmtpd listens on (10025 in the example)
#   REINJECT  port of the re-injection smtpd (10026 in the example)
#   RELAY     port of the SMTP server all mail is finally delivered to
#   CLAMSMTPD, SPOOL, CLAMD   clamsmtpd's path, -D and -c
#   USER      spawn mode: the account clamsmtpd runs as (default nobody)
# In listener and proxy mode, DIR/listener.cmd holds the clamsmtpd command line to run
# (its pidfile is DIR/clamsmtpd.pid); the caller starts and stops it.
#
# The rest of the instance lives in DIR too: queue/, data/, maillog (Postfix
# logs there through postlogd, not syslog).  Only 127.0.0.1 is used, and DNS
# is switched off.  The system's own Postfix is never touched.
#
# start checks the configuration (postfix check), starts the master and
# waits until it has initialised; DIR/master.pid holds its pid.  stop sends
# the master SIGTERM (which it passes on to its process group, spawned
# clamsmtpd processes included), waits for every process of that group to
# exit, then kills stragglers by pid.  Must run as root.  services prints
# the master.cf lines of Postfix's own services that every instance has
# (bench/peers.py builds its instances on them).

set -u
me=postfix-instance.sh
die() { echo "$me: $*" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd) || die "cannot find my directory"
example=$here/postfix-example.cf

# block NAME - the non-comment lines of one "#=== NAME" block of the example
block() {
	awk -v want="#=== $1" '
		/^#=== / { on = ($0 == want); next }
		on && !/^#/ && !/^[ \t]*$/ { print }
	' "$example"
}

# substitute - the example's ports, paths and user replaced by ours
substitute() {
	sed -e "s|10025|$filter|g" -e "s|10026|$reinject|g" \
		-e "s|/usr/sbin/clamsmtpd|$clamsmtpd|g" \
		-e "s|/var/spool/clamsmtpd|$spool|g" \
		-e "s|/run/clamav/clamd.ctl|$clamd|g" \
		-e "s|/run/clamsmtpd.pid|$dir/clamsmtpd.pid|g" \
		-e "s|user=clamsmtp |user=$user |g" \
		-e "s|^smtp\( *\)inet |127.0.0.1:$submit\1inet |"
}

create() {
	[ $# -ge 9 ] || die "usage: $me create DIR MODE SUBMIT FILTER REINJECT RELAY CLAMSMTPD SPOOL CLAMD [USER]"
	mkdir -p "$1/etc" || die "cannot create $1/etc"
	dir=$(cd "$1" && pwd -P) || die "cannot enter $1"
	mode=$2 submit=$3 filter=$4 reinject=$5 relay=$6
	clamsmtpd=$7 spool=$8 clamd=$9 user=${10:-nobody}
	case $mode in listener|spawn|proxy) ;; *) die "MODE is listener, spawn or proxy, not $mode" ;; esac
	blocks="main.cf master.cf listener"
	if [ "$mode" = proxy ]; then
		example=$here/postfix-proxy-example.cf
	else
		blocks="$blocks master.cf-spawn"
	fi
	[ -r "$example" ] || die "cannot read $example"
	for b in $blocks; do
		b=$(echo "$b" | tr - ' ')
		[ -n "$(block "$b")" ] || die "no '#=== $b' block in $example"
	done

	{
		cat <<EOF
# private Postfix instance for clamsmtpd tests, written by tests/$me
compatibility_level = 3.6
mail_owner = postfix
setgid_group = postdrop
queue_directory = $dir/queue
data_directory = $dir/data
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
myhostname = postfix.clamsmtpd.test
mydomain = clamsmtpd.test
myorigin = \$myhostname
mydestination =
local_transport = error:5.1.1 no local delivery in this instance
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:$relay
# loopback only: no DNS, no reverse lookups of clients
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
# the recording test server announces CHUNKING but has no BDAT
smtp_discard_ehlo_keywords = chunking
# quick retries, so a deferred message is retried within seconds
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
smtp_connect_timeout = 5s
delay_warning_time = 0
biff = no
EOF
		echo "# --- from tests/$(basename "$example"), block main.cf"
		block main.cf | substitute
	} > "$dir/etc/main.cf" || die "cannot write $dir/etc/main.cf"

	{
		echo "# private Postfix instance for clamsmtpd tests, written by tests/$me"
		services
		# in proxy mode the example's public smtpd is the submission port
		if [ "$mode" != proxy ]; then
			echo "127.0.0.1:$submit inet n -      n       -       -       smtpd"
		fi
		echo "# --- from tests/$(basename "$example"), block master.cf"
		block master.cf | substitute
		if [ "$mode" = spawn ]; then
			echo "# --- from tests/postfix-example.cf, block master.cf spawn"
			block "master.cf spawn" | substitute
		fi
	} > "$dir/etc/master.cf" || die "cannot write $dir/etc/master.cf"

	rm -f "$dir/listener.cmd"
	if [ "$mode" != spawn ]; then
		block listener | substitute > "$dir/listener.cmd" ||
			die "cannot write $dir/listener.cmd"
	fi
	mkdir -p "$dir/queue" "$dir/data" || die "cannot create $dir/queue, $dir/data"
	chown postfix "$dir/data" || die "cannot chown $dir/data to postfix"
}

# services - the master.cf lines of Postfix's own services (no smtpd)
services() {
	cat <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command + args
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# group_members PGID - pids of live processes in that process group
group_members() {
	for stat in /proc/[0-9]*/stat; do
		# fields after "(comm) ": state ppid pgrp ...
		# shellcheck disable=SC2046 # split the stat fields on purpose
		set -- $(sed 's/.*) //' "$stat" 2>/dev/null)
		[ $# -ge 3 ] && [ "$3" = "$pgid" ] && [ "$1" != Z ] &&
			basename "$(dirname "$stat")"
	done
}

start() {
	[ $# -eq 1 ] || die "usage: $me start DIR"
	dir=$(cd "$1" && pwd -P) || die "cannot enter $1"
	[ -f "$dir/etc/main.cf" ] || die "no $dir/etc/main.cf (run create first)"
	command -v postfix >/dev/null 2>&1 || die "no postfix command (install postfix)"
	# check creates the queue directories with their owners and modes
	postfix -c "$dir/etc" check >"$dir/check.out" 2>&1 ||
		{ cat "$dir/check.out" >&2; die "postfix check failed"; }
	postfix -c "$dir/etc" start >"$dir/start.out" 2>&1 ||
		{ cat "$dir/start.out" >&2; tail -n 20 "$dir/maillog" >&2 2>/dev/null; die "postfix start failed"; }
	pid=$(tr -d ' \n' < "$dir/queue/pid/master.pid" 2>/dev/null)
	case $pid in ''|*[!0-9]*) die "no pid in $dir/queue/pid/master.pid" ;; esac
	echo "$pid" > "$dir/master.pid"
}

stop() {
	[ $# -eq 1 ] || die "usage: $me stop DIR"
	dir=$1
	[ -f "$dir/master.pid" ] || exit 0
	pgid=$(cat "$dir/master.pid")
	case $pgid in ''|*[!0-9]*) die "bad pid in $dir/master.pid" ;; esac
	# only a Postfix master of this instance
	if [ "$(cat /proc/"$pgid"/comm 2>/dev/null)" = master ]; then
		kill -TERM "$pgid" 2>/dev/null
	fi
	i=0
	while [ -n "$(group_members)" ] && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	left=$(group_members)
	if [ -n "$left" ]; then
		echo "$me: killing processes left after 10 s: $left" >&2
		# shellcheck disable=SC2086 # a list of pids
		kill -KILL $left 2>/dev/null
	fi
	rm -f "$dir/master.pid"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
create) create "$@" ;;
start) start "$@" ;;
stop) stop "$@" ;;
services) services ;;
*) echo "usage: $me create|start|stop DIR ... | services" >&2; exit 2 ;;
esac
