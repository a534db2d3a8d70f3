#!/bin/sh
# deps.sh - install what the tests and the demo need, from Debian's archive.
# As root it runs apt-get; otherwise it prints the command to run and fails.
# Usage: tests/deps.sh [extra-package ...]
set -e
need="bats clamav-daemon swaks libio-socket-inet6-perl socat python3 xinetd systemd postfix netcat-openbsd groff-base procps util-linux mount $*"
missing=
for pkg in $need; do
	dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $pkg"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing packages:$missing" >&2
	echo "deps.sh: run as root: apt-get update && apt-get install -y$missing" >&2
	exit 1
fi
echo "deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# No service may start from a package install here: tests run private instances.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get install -y -qq --no-install-recommends $missing >/dev/null
