/*
 * clamd.c - ask clamd whether a spool file holds a virus
 *
 * On a unix socket we pass the open spool descriptor (zFILDES), so clamd
 * reads the file itself and needs no access to tmpdir. On TCP we stream it
 * (zINSTREAM). One scan per connection; the verdict is strict: only
 * "...: OK" is clean, only "... <name> FOUND" is a virus, and anything else
 * (an error, garbage, silence, a closed connection) is a failure.
 */
#define _GNU_SOURCE
#include "clamsmtpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <unistd.h>

static const char *const default_sockets[] = {
	"/var/run/clamav/clamd",
	"/var/run/clamav/clamd.ctl",    /* Debian */
	"/var/run/clamav/clamd.sock",
};

/* clamd_address - -c, or the first default socket that exists */
static const char *clamd_address(void)
{
	struct stat st;

	if (cfg->clamaddr)
		return cfg->clamaddr;
	for (size_t i = 0; i < sizeof(default_sockets) / sizeof(*default_sockets); i++)
		if (stat(default_sockets[i], &st) == 0)
			return default_sockets[i];
	return default_sockets[0];
}

/* send_fildes - zFILDES, then the spool's descriptor as SCM_RIGHTS data */
static int send_fildes(int fd, int spool_fd)
{
	static const char command[] = "zFILDES";
	char byte = 0;
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = control, .msg_controllen = sizeof(control) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	if (write_all(fd, command, sizeof(command), cfg->timeout, NULL) != IO_OK)
		return -1;
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &spool_fd, sizeof(int));
	if (lseek(spool_fd, 0, SEEK_SET) < 0)
		return -1;
	for (;;) {
		if (sendmsg(fd, &mh, MSG_NOSIGNAL) == 1)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return -1;
		if (wait_fd(fd, POLLOUT, cfg->timeout, NULL) != IO_OK)
			return -1;
	}
}

/* send_stream - the spool in INSTREAM chunks: 4-byte big-endian length, data */
static int send_stream(int fd, int spool_fd, off_t size, struct conn *keepalive)
{
	static const char command[] = "zINSTREAM";
	char chunk[4 + IO_CHUNK];
	off_t at = 0;

	if (write_all(fd, command, sizeof(command), cfg->timeout, keepalive) != IO_OK)
		return -1;
	for (;;) {
		ssize_t n = pread(spool_fd, chunk + 4, IO_CHUNK, at);
		if (n < 0)
			return -1;
		uint32_t be = htonl((uint32_t)n);
		memcpy(chunk, &be, 4);
		if (write_all(fd, chunk, 4 + (size_t)n, cfg->timeout, keepalive) != IO_OK)
			return -1;
		if (n == 0)
			return at == size ? 0 : -1;
		at += n;
	}
}

/* read_reply - up to the NUL (or newline) that ends clamd's answer; -1 on timeout */
static ssize_t read_reply(int fd, char *reply, size_t cap, struct conn *keepalive)
{
	size_t len = 0;

	while (len < cap) {
		if (wait_fd(fd, POLLIN, cfg->timeout, keepalive) != IO_OK)
			return len ? (ssize_t)len : -1;
		ssize_t n = read(fd, reply + len, cap - len);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		len += (size_t)n;
		if (memchr(reply, '\0', len) || memchr(reply, '\n', len))
			break;
	}
	return (ssize_t)len;
}

/*
 * clamd_scan - scan the spool; SCAN_CLEAN, SCAN_VIRUS (name in verdict)
 * or SCAN_ERROR (the reason in verdict)
 */
int clamd_scan(int spool_fd, off_t size, char *verdict, size_t cap, struct conn *keepalive)
{
	const char *where = clamd_address();
	char reply[1024], why[512];
	struct addr addr;
	int fd, sent, result;
	ssize_t len;

	if (addr_parse(where, "3310", &addr) < 0) {
		snprintf(verdict, cap, "bad clamd address %s", where);
		return SCAN_ERROR;
	}
	if (addr.kind == ADDR_PORT) {
		strcpy(addr.host, "127.0.0.1");         /* a bare port: clamd on this host */
		addr.kind = ADDR_INET;
	}
	if (addr.kind == ADDR_INET && size > STREAM_MAX) {
		snprintf(verdict, cap, "message of %lld bytes is over the stream limit",
			 (long long)size);
		return SCAN_ERROR;
	}
	fd = addr_connect(&addr, cfg->timeout, why, sizeof(why));
	if (fd < 0) {
		snprintf(verdict, cap, "clamd unreachable: %s", why);
		return SCAN_ERROR;
	}
	set_nonblocking(fd);
	sent = addr.kind == ADDR_UNIX ? send_fildes(fd, spool_fd)
				      : send_stream(fd, spool_fd, size, keepalive);
	if (sent < 0)
		msg(LOG_DEBUG, "sending to clamd failed: %s", strerror(errno));
	/* Read the reply even after a failed send: clamd says why it closed. */
	len = read_reply(fd, reply, sizeof(reply) - 1, keepalive);
	close(fd);
	if (len <= 0) {
		snprintf(verdict, cap, len < 0 ? "clamd did not answer in time"
					       : "clamd closed the connection without a verdict");
		return SCAN_ERROR;
	}
	if (!memchr(reply, '\0', (size_t)len) && !memchr(reply, '\n', (size_t)len)) {
		/* Cut off before its terminator: "stream: OK" may be half of more. */
		snprintf(verdict, cap, "clamd's answer was cut short");
		return SCAN_ERROR;
	}
	result = clamd_verdict(reply, (size_t)len, verdict, cap);
	if (result == SCAN_CLEAN && sent < 0) {
		snprintf(verdict, cap, "clamd answered OK to an incomplete message");
		return SCAN_ERROR;
	}
	return result;
}

/* clamd_verdict - parse one reply; the virus name or the reply goes in name */
int clamd_verdict(const char *reply, size_t len, char *name, size_t cap)
{
	static const char ok[] = ": OK", found[] = " FOUND";
	const char *end = memchr(reply, '\0', len);
	size_t n = end ? (size_t)(end - reply) : len;

	while (n > 0 && reply[n - 1] == '\n')
		n--;
	if (n >= sizeof(ok) - 1 && memcmp(reply + n - (sizeof(ok) - 1), ok, sizeof(ok) - 1) == 0) {
		snprintf(name, cap, "OK");
		return SCAN_CLEAN;
	}
	if (n > sizeof(found) - 1 &&
	    memcmp(reply + n - (sizeof(found) - 1), found, sizeof(found) - 1) == 0) {
		size_t stop = n - (sizeof(found) - 1), start = stop;

		while (start > 0 && !(reply[start - 1] == ' ' && start >= 2 && reply[start - 2] == ':'))
			start--;
		if (start > 0 && stop > start) {
			printable(name, cap, reply + start, stop - start);
			return SCAN_VIRUS;
		}
	}
	char shown[200];
	printable(shown, sizeof(shown), reply, n);
	snprintf(name, cap, "clamd said: %s", shown);
	return SCAN_ERROR;
}
