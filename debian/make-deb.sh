#!/bin/sh
# make-deb.sh - build the clamsmtpd binary package into DIST (default: dist/).
#
# Usage: debian/make-deb.sh [DIST]
#
# The build runs in a private copy of the work tree (its tracked files and
# the untracked ones git does not ignore), so that dh_auto_clean's
# "make clean" and the build products never touch the tree others build
# and test from. DIST gets the .deb, the debug symbols (-dbgsym), .buildinfo
# and .changes; older clamsmtpd packages in DIST are removed first.
set -eu
me=make-deb.sh
top=$(cd "$(dirname "$0")/.." && pwd)
dist=${1:-$top/dist}

work=$(mktemp -d "${TMPDIR:-/tmp}/clamsmtpd-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/clamsmtpd
mkdir "$src"

if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	# files deleted from the work tree but still in the index are skipped
	git -C "$top" ls-files --cached --others --exclude-standard |
		while IFS= read -r f; do
			if [ -e "$top/$f" ] || [ -L "$top/$f" ]; then printf '%s\n' "$f"; fi
		done |
		tar -C "$top" --no-recursion -T - -cf - | tar -C "$src" -xf -
else
	tar -C "$top" --exclude=./.git --exclude=./dist -cf - . | tar -C "$src" -xf -
fi

(cd "$src" && dpkg-buildpackage -us -uc -b) > "$work/build.log" 2>&1 || {
	tail -n 40 "$work/build.log" >&2
	echo "$me: dpkg-buildpackage failed" >&2
	exit 1
}

mkdir -p "$dist"
rm -f "$dist"/clamsmtpd_*.deb "$dist"/clamsmtpd-dbgsym_*.deb "$dist"/clamsmtpd-dbgsym_*.ddeb \
	"$dist"/clamsmtpd_*.buildinfo "$dist"/clamsmtpd_*.changes
for f in "$work"/*.deb "$work"/*.ddeb "$work"/*.buildinfo "$work"/*.changes; do
	[ -e "$f" ] && cp "$f" "$dist/"
done
ls "$dist"/clamsmtpd_*.deb
