/*
 * clamd.c - ask a pool of clamd servers whether a spool file holds a virus
 *
 * On a unix socket we pass the open spool descriptor (zFILDES), so clamd
 * reads the file itself and needs no access to tmpdir. On TCP we stream it
 * (zINSTREAM). One scan per connection; the verdict is strict: only
 * "...: OK" is clean, only "... <name> FOUND" is a virus, and anything else
 * (an error, garbage, silence, a closed connection) is a failure of that
 * member. SPEC 8.1: each member is tried once from a random start, then,
 * after a pause that lets a restarting clamd come back, once more.
 *
 * What this file does not do: decide what a failure means for the
 * message (smtp.c, -f) or read the spool's content (spool.c).
 */
#define _GNU_SOURCE
#include "clamsmtpd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_MAX   10        /* SPEC 8.1: a connect waits at most 10 s */
#define RETRY_PAUSE_MS 1000     /* between the two passes over the pool */

static const char *const default_sockets[] = {
	"/var/run/clamav/clamd",
	"/var/run/clamav/clamd.ctl",    /* Debian */
	"/var/run/clamav/clamd.sock",
};

enum { SENT_ALL = 0, SEND_FAILED = -1, ANSWERED_EARLY = -2 };

/* clamd_members - the -c addresses, or the first default socket that exists */
int clamd_members(const char **members)
{
	struct stat st;

	if (cfg->nclamd > 0) {
		for (int i = 0; i < cfg->nclamd; i++)
			members[i] = cfg->clamaddr[i];
		return cfg->nclamd;
	}
	members[0] = default_sockets[0];
	for (size_t i = 0; i < sizeof(default_sockets) / sizeof(*default_sockets); i++)
		if (stat(default_sockets[i], &st) == 0) {
			members[0] = default_sockets[i];
			break;
		}
	return 1;
}

/* clamd_connect - one member, its connect bounded by SPEC 8.1's 10 s */
static int clamd_connect(const char *member, int *is_unix, char *why, size_t cap)
{
	struct addr addr;
	int limit = cfg->timeout < CONNECT_MAX ? cfg->timeout : CONNECT_MAX;

	if (addr_parse(member, "3310", &addr) < 0) {
		snprintf(why, cap, "bad address");
		return -1;
	}
	if (addr.kind == ADDR_PORT) {
		strcpy(addr.host, "127.0.0.1");         /* a bare port: clamd on this host */
		addr.kind = ADDR_INET;
	}
	*is_unix = addr.kind == ADDR_UNIX;
	int fd = addr_connect(&addr, limit, why, cap);
	if (fd >= 0)
		set_nonblocking(fd);
	return fd;
}

/* send_fildes - zFILDES, then the spool's descriptor as SCM_RIGHTS data */
static int send_fildes(int fd, struct spool *spool)
{
	static const char command[] = "zFILDES";
	char byte = 0;
	char control[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
			     .msg_control = control, .msg_controllen = sizeof(control) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

	if (write_all(fd, command, sizeof(command), cfg->timeout, NULL) != IO_OK)
		return SEND_FAILED;
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &spool->fd, sizeof(int));
	/* clamd shares the descriptor's offset; it scans from wherever it is.
	 * Our own reads and writes use explicit offsets and do not care. */
	if (lseek(spool->fd, 0, SEEK_SET) < 0)
		return SEND_FAILED;
	for (;;) {
		if (sendmsg(fd, &mh, MSG_NOSIGNAL) == 1)
			return SENT_ALL;
		if (errno != EINTR && errno != EAGAIN)
			return SEND_FAILED;
		if (wait_fd(fd, POLLOUT, cfg->timeout, NULL) != IO_OK)
			return SEND_FAILED;
	}
}

/* answered - whether clamd has spoken already (it may only after the end) */
static int answered(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) > 0;
}

/* send_stream - the spool in INSTREAM chunks: 4-byte big-endian length, data */
static int send_stream(int fd, struct spool *spool, struct conn *keepalive)
{
	static const char command[] = "zINSTREAM";
	static char chunk[4 + IO_CHUNK];
	off_t at = 0;

	if (write_all(fd, command, sizeof(command), cfg->timeout, keepalive) != IO_OK)
		return SEND_FAILED;
	for (;;) {
		ssize_t n = pread(spool->fd, chunk + 4, IO_CHUNK, at);
		if (n < 0)
			return SEND_FAILED;
		uint32_t be = htonl((uint32_t)n);
		memcpy(chunk, &be, 4);
		/* A reply before the last chunk is an error (a size limit), never a verdict. */
		if (answered(fd))
			return ANSWERED_EARLY;
		if (write_all(fd, chunk, 4 + (size_t)n, cfg->timeout, keepalive) != IO_OK)
			return SEND_FAILED;
		if (n == 0)
			return at == spool->size ? SENT_ALL : SEND_FAILED;
		at += n;
	}
}

/* read_answer - up to the NUL (or newline) that ends clamd's first reply */
static ssize_t read_answer(int fd, char *reply, size_t cap, struct conn *keepalive)
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

/* refused_fildes - clamd's ways of saying it takes no descriptor here */
static int refused_fildes(const char *reply, size_t len)
{
	return memmem(reply, len, "No file descriptor received", 27) ||
	       memmem(reply, len, "UNKNOWN COMMAND", 15);
}

/*
 * ask - one scan by one member over one connection: SCAN_CLEAN,
 * SCAN_VIRUS (name in out), SCAN_ERROR (reason in out), or SCAN_NO_FILDES
 */
static int ask(const char *member, int stream, struct spool *spool, char *out, size_t cap,
	       struct conn *keepalive)
{
	char reply[1024], why[400];
	int is_unix, sent;
	int fd = clamd_connect(member, &is_unix, why, sizeof(why));
	ssize_t len;

	if (fd < 0) {
		snprintf(out, cap, "cannot connect: %.400s", why);
		return SCAN_ERROR;
	}
	if (!is_unix)
		stream = 1;
	if (stream && spool->size > STREAM_MAX) {
		close(fd);
		snprintf(out, cap, "message of %lld bytes is over the stream limit of %ld",
			 (long long)spool->size, (long)STREAM_MAX);
		return SCAN_ERROR;
	}
	sent = stream ? send_stream(fd, spool, keepalive) : send_fildes(fd, spool);
	if (sent == SEND_FAILED)
		snprintf(why, sizeof(why), "%s", strerror(errno));
	/* Read the reply even after a failed send: clamd says why it closed. */
	len = read_answer(fd, reply, sizeof(reply) - 1, keepalive);
	close(fd);
	if (len <= 0) {
		if (len < 0)
			snprintf(out, cap, "timed out after %d s waiting for an answer", cfg->timeout);
		else
			snprintf(out, cap, "closed the connection without a verdict%s%.300s",
				 sent == SEND_FAILED ? " after: " : "", sent == SEND_FAILED ? why : "");
		return SCAN_ERROR;
	}
	if (!memchr(reply, '\0', (size_t)len) && !memchr(reply, '\n', (size_t)len)) {
		/* Cut off before its terminator: "stream: OK" may be half of more. */
		snprintf(out, cap, "answer cut short before its end");
		return SCAN_ERROR;
	}
	if (!stream && refused_fildes(reply, (size_t)len))
		return SCAN_NO_FILDES;
	int result = clamd_verdict(reply, (size_t)len, out, cap);
	if (result != SCAN_ERROR && sent != SENT_ALL) {
		/* SPEC 5: a verdict counts only once the whole spool was sent. */
		char said[300];
		snprintf(said, sizeof(said), "%s", out);
		snprintf(out, cap, "answered %s before the whole message was sent", said);
		return SCAN_ERROR;
	}
	return result;
}

/* ask_member - one member: FILDES, and INSTREAM on the same socket if refused */
static int ask_member(const char *member, struct spool *spool, char *out, size_t cap,
		      struct conn *keepalive)
{
	int result = ask(member, 0, spool, out, cap, keepalive);

	if (result == SCAN_NO_FILDES) {
		msg(LOG_NOTICE, "clamd %s takes no descriptor; streaming instead", member);
		result = ask(member, 1, spool, out, cap, keepalive);
	}
	return result;
}

/* pause_pool - SPEC 8.1: a second or so for a restarting clamd, server kept awake */
static void pause_pool(struct conn *keepalive)
{
	struct timespec pause = { .tv_sec = RETRY_PAUSE_MS / 1000,
				  .tv_nsec = (RETRY_PAUSE_MS % 1000) * 1000000L };

	if (keepalive && keepalive->on_idle &&
	    now_seconds() - keepalive->last_active >= KEEPALIVE_SECONDS) {
		keepalive->last_active = now_seconds();
		keepalive->on_idle(keepalive);
	}
	while (nanosleep(&pause, &pause) < 0 && errno == EINTR)
		;
}

/* elapsed_ms - milliseconds since start, for the log line's scan_ms */
static long elapsed_ms(const struct timespec *start)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1000L + (now.tv_nsec - start->tv_nsec) / 1000000L;
}

/*
 * clamd_scan - scan the spool with the pool: the first OK or FOUND from any
 * member is final; SCAN_ERROR only when every member failed twice
 */
int clamd_scan(struct spool *spool, struct scan *scan, struct conn *keepalive)
{
	const char *members[CLAMD_MAX];
	int n = clamd_members(members), start = (int)((unsigned)rand() % (unsigned)n);
	int too_big[CLAMD_MAX] = { 0 }, retry = n;
	struct timespec began;

	clock_gettime(CLOCK_MONOTONIC, &began);
	scan->member = NULL;
	for (int pass = 0; pass < 2 && retry > 0; pass++) {
		if (pass > 0)
			pause_pool(keepalive);
		for (int i = 0; i < n; i++) {
			int at = (start + i) % n, result;

			if (too_big[at])
				continue;       /* a size refusal would only come again */
			result = ask_member(members[at], spool, scan->name, sizeof(scan->name), keepalive);
			if (result != SCAN_ERROR) {
				scan->member = members[at];
				scan->ms = elapsed_ms(&began);
				return scan->result = result;
			}
			msg(LOG_WARNING, "clamd %s failed (pass %d of 2): %s", members[at], pass + 1, scan->name);
			if (strstr(scan->name, "size limit exceeded") || strstr(scan->name, "over the stream limit")) {
				too_big[at] = 1;
				retry--;
			}
		}
	}
	scan->ms = elapsed_ms(&began);
	snprintf(scan->name, sizeof(scan->name), n > 1 ? "no clamd of the pool could scan"
						       : "clamd could not scan");
	return scan->result = SCAN_ERROR;
}

/* clamd_verdict - parse clamd's first reply; the virus name or the reply goes in name */
int clamd_verdict(const char *reply, size_t len, char *name, size_t cap)
{
	static const char ok[] = ": OK", found[] = " FOUND";
	const char *nul = memchr(reply, '\0', len), *nl = memchr(reply, '\n', len);
	size_t n = len;

	/* SPEC 5: only the first reply counts, up to its first NUL or newline. */
	if (nul)
		n = (size_t)(nul - reply);
	if (nl && (size_t)(nl - reply) < n)
		n = (size_t)(nl - reply);
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
			printable(name, cap < VIRUS_NAME_MAX + 1 ? cap : VIRUS_NAME_MAX + 1,
				  reply + start, stop - start);
			return SCAN_VIRUS;
		}
	}
	char shown[200];
	printable(shown, sizeof(shown), reply, n);
	snprintf(name, cap, "clamd said: %s", shown);
	return SCAN_ERROR;
}

/* clamd_probe - SPEC 9.4: PING and VERSION to one member; 0 and the version, or -1 and why */
int clamd_probe(const char *member, char *out, size_t cap)
{
	static const char *const commands[] = { "zPING", "zVERSION" };
	char reply[2][256];

	for (int i = 0; i < 2; i++) {
		char why[400];
		int is_unix, fd = clamd_connect(member, &is_unix, why, sizeof(why));
		ssize_t len;

		if (fd < 0) {
			snprintf(out, cap, "cannot connect: %s", why);
			return -1;
		}
		if (write_all(fd, commands[i], strlen(commands[i]) + 1, cfg->timeout, NULL) != IO_OK) {
			snprintf(out, cap, "cannot send %s: %s", commands[i] + 1, strerror(errno));
			close(fd);
			return -1;
		}
		len = read_answer(fd, reply[i], sizeof(reply[i]) - 1, NULL);
		close(fd);
		if (len <= 0 || (!memchr(reply[i], '\0', (size_t)len) && !memchr(reply[i], '\n', (size_t)len))) {
			snprintf(out, cap, "no answer to %s", commands[i] + 1);
			return -1;
		}
		reply[i][len] = '\0';
		reply[i][strcspn(reply[i], "\n")] = '\0';
	}
	if (strcmp(reply[0], "PONG") != 0) {
		char shown[200];
		printable(shown, sizeof(shown), reply[0], strlen(reply[0]));
		snprintf(out, cap, "PING answered \"%s\", not PONG", shown);
		return -1;
	}
	printable(out, cap, reply[1], strlen(reply[1]));
	return 0;
}
