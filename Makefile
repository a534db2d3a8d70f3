# clamsmtpd - an SMTP filter that scans mail with ClamAV's clamd
PREFIX  ?= /usr/local
SBINDIR ?= $(PREFIX)/sbin
MANDIR  ?= $(PREFIX)/share/man
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
CC      ?= cc
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -Wall -Wextra -Werror
# Bind every symbol before the listener forks, not once per session (and relro).
LDFLAGS += -Wl,-z,now -Wl,-z,relro
SRCS     = clamsmtpd.c net.c smtp.c clamd.c spool.c
HDRS     = clamsmtpd.h
SAN      = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

all: clamsmtpd

clamsmtpd: $(SRCS) $(HDRS)
	$(CC) $(CFLAGS) -o $@ $(SRCS) $(LDFLAGS)

# The same program built with AddressSanitizer and UBSan; the tests pass on it too.
clamsmtpd-asan: $(SRCS) $(HDRS)
	$(CC) $(CFLAGS) -O1 $(SAN) -o $@ $(SRCS) $(LDFLAGS)

asan: clamsmtpd-asan

check: clamsmtpd
	tests/deps.sh
	bats tests

# ASAN_TESTS picks test files (CI runs the ones that drive clamsmtpd's own code paths).
ASAN_TESTS ?= tests
check-asan: clamsmtpd-asan
	tests/deps.sh
	CLAMSMTPD=$(CURDIR)/clamsmtpd-asan bats $(ASAN_TESTS)

# The unit and xinetd files name the binary where this install puts it.
# A real clamd, a receiving server and clamsmtpd; a clean and an infected message.
demo: clamsmtpd
	tests/deps.sh
	tests/demo.sh

FUZZ_SECONDS ?= 60
fuzz:
	tests/deps.sh clang libclang-rt-14-dev
	tests/fuzz/run.sh $(FUZZ_SECONDS)

bench: clamsmtpd
	tests/deps.sh clamsmtp
	bench/run.sh

# clamsmtpd beside clamav-milter and amavisd-new behind one private Postfix
# (bench/peers.sh installs them as root; bench/PEERS.md has the last run).
bench-peers: clamsmtpd
	NO_BUILD=1 bench/peers.sh

# The Debian package, built in a copy of the tree (debian/make-deb.sh), into
# dist/; no error or warning from lintian.
deb:
	tests/deps.sh debhelper lintian fakeroot dpkg-dev build-essential
	debian/make-deb.sh $(CURDIR)/dist
	lintian --fail-on error,warning dist/clamsmtpd_*.deb

install: clamsmtpd
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSCONFDIR)/xinetd.d
	install -m 755 clamsmtpd $(DESTDIR)$(SBINDIR)/clamsmtpd
	install -m 644 man/clamsmtpd.8 $(DESTDIR)$(MANDIR)/man8/clamsmtpd.8
	for f in systemd/clamsmtpd.socket systemd/clamsmtpd.service 'systemd/clamsmtpd@.service'; do \
		sed 's|/usr/local/sbin/clamsmtpd|$(SBINDIR)/clamsmtpd|g' "$$f" > "$(DESTDIR)$(UNITDIR)/$${f#systemd/}" && \
		chmod 644 "$(DESTDIR)$(UNITDIR)/$${f#systemd/}" || exit 1; \
	done
	sed 's|/usr/local/sbin/clamsmtpd|$(SBINDIR)/clamsmtpd|g' xinetd.d/clamsmtpd > $(DESTDIR)$(SYSCONFDIR)/xinetd.d/clamsmtpd
	chmod 644 $(DESTDIR)$(SYSCONFDIR)/xinetd.d/clamsmtpd

clean:
	rm -f clamsmtpd clamsmtpd-asan
	rm -rf tests/fuzz/out

.PHONY: all asan check check-asan demo fuzz bench bench-peers deb install clean
