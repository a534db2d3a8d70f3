#!/usr/bin/env bats
# make install: PREFIX and DESTDIR are honoured, every shipped file lands.

setup() {
	T=$BATS_TEST_TMPDIR
}

@test "make install puts the binary, man page, units and xinetd file under DESTDIR" {
	make -C "$BATS_TEST_DIRNAME/.." install DESTDIR="$T/root" PREFIX=/usr > "$T/log"
	[ -x "$T/root/usr/sbin/clamsmtpd" ]
	[ -f "$T/root/usr/share/man/man8/clamsmtpd.8" ]
	[ -f "$T/root/usr/lib/systemd/system/clamsmtpd.socket" ]
	[ -f "$T/root/usr/lib/systemd/system/clamsmtpd@.service" ]
	[ -f "$T/root/usr/lib/systemd/system/clamsmtpd.service" ]
	[ -f "$T/root/etc/xinetd.d/clamsmtpd" ]
	grep -q '^ExecStart=/usr/sbin/clamsmtpd ' "$T/root/usr/lib/systemd/system/clamsmtpd@.service"
	grep -q 'server *= /usr/sbin/clamsmtpd$' "$T/root/etc/xinetd.d/clamsmtpd"
	"$T/root/usr/sbin/clamsmtpd" -v | grep -q '^clamsmtpd '
}

@test "the man page renders without warnings and describes every flag" {
	command -v groff >/dev/null || skip "groff is not installed"
	man=$BATS_TEST_DIRNAME/../man/clamsmtpd.8
	run groff -man -Tutf8 -ww -z "$man"
	[ "$status" -eq 0 ]
	[ -z "$output" ]
	for flag in b c d D h l m p q r t v; do
		grep -q "^\.B.*\\\\-$flag\|^\.TP.*\\\\-$flag\|\\\\-$flag" "$man"
	done
}

@test "README and man page carry the exact Postfix lines the Postfix test runs with" {
	top=$BATS_TEST_DIRNAME/..
	sed 's/\\-/-/g' "$top/man/clamsmtpd.8" > "$T/man.txt"
	n=0
	while IFS= read -r line; do
		case "$line" in ''|'#'*) continue ;; esac
		grep -qF -- "$line" "$top/README.md" || { echo "README lacks: $line" >&2; false; }
		grep -qF -- "$line" "$T/man.txt" || { echo "man page lacks: $line" >&2; false; }
		n=$((n + 1))
	done < "$top/tests/postfix-example.cf"
	[ "$n" -ge 12 ]
}
