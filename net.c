/*
 * net.c - addresses, connecting and listening, timed reads and writes
 *
 * Every wait on a peer goes through wait_fd(), so every read, write and
 * connect is bounded by -t and keeps an idle server awake (SPEC 4.7).
 * Nothing here knows SMTP.
 */
#define _GNU_SOURCE
#include "clamsmtpd.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* now_seconds - a clock that does not jump with the wall clock */
long now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec;
}

/* port_valid - decimal 1..65535, nothing else */
static int port_valid(const char *port)
{
	char *end;
	long n;

	if (!*port || strlen(port) > 5 || port[strspn(port, "0123456789")])
		return 0;
	n = strtol(port, &end, 10);
	return n > 0 && n <= 65535;
}

/* addr_parse - split "path", "host:port", "[v6]:port", "host" or "port" */
int addr_parse(const char *text, const char *default_port, struct addr *out)
{
	const char *colon, *host = text, *port = default_port;
	size_t host_len;

	memset(out, 0, sizeof(*out));
	if (!text || !*text)
		return -1;
	if (strchr(text, '/')) {
		if (strlen(text) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return -1;
		out->kind = ADDR_UNIX;
		strcpy(out->host, text);
		return 0;
	}
	if (text[strspn(text, "0123456789")] == '\0') {
		/* "0" or "65536" is a port out of range, not a host name */
		if (!port_valid(text))
			return -1;
		out->kind = ADDR_PORT;
		strcpy(out->port, text);
		return 0;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');
		if (!close || close == text + 1)
			return -1;
		host = text + 1;
		host_len = (size_t)(close - host);
		if (close[1] == ':')
			port = close + 2;
		else if (close[1])
			return -1;
		if (memchr(host, ':', host_len) == NULL)
			return -1;      /* brackets are for IPv6 literals only */
	} else {
		colon = strchr(text, ':');
		if (colon && strchr(colon + 1, ':'))
			return -1;      /* a bare IPv6 literal needs brackets */
		host_len = colon ? (size_t)(colon - text) : strlen(text);
		if (colon)
			port = colon + 1;
	}
	if (host_len == 0 || host_len >= sizeof(out->host) || !port_valid(port))
		return -1;
	for (size_t i = 0; i < host_len; i++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			    "0123456789.-:_%*", host[i]))
			return -1;
	out->kind = ADDR_INET;
	memcpy(out->host, host, host_len);
	out->host[host_len] = '\0';
	strcpy(out->port, port);
	return 0;
}

/* peer_addr - the client's own IP with the given port (the loopback feature) */
int peer_addr(int fd, const char *port_text, struct addr *out)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[NI_MAXHOST], port[sizeof(out->port)];

	/* port_text may point into *out, which is rewritten below. */
	if (strlen(port_text) >= sizeof(port))
		return -1;
	strcpy(port, port_text);
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		return -1;
	if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), NULL, 0,
			NI_NUMERICHOST) != 0)
		return -1;
	/* A v4-mapped peer is reached again at its IPv4 address. */
	const char *plain = strncmp(host, "::ffff:", 7) == 0 && strchr(host, '.')
		? host + 7 : host;
	if (strlen(plain) >= sizeof(out->host))
		return -1;
	memset(out, 0, sizeof(*out));
	out->kind = ADDR_INET;
	strcpy(out->host, plain);
	strcpy(out->port, port);
	return 0;
}

/* connect_timed - a non-blocking connect, waited on for at most timeout seconds */
static int connect_timed(int fd, const struct sockaddr *sa, socklen_t len, int timeout)
{
	int flags = fcntl(fd, F_GETFL), err = 0;
	socklen_t errlen = sizeof(err);

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -1;
	if (connect(fd, sa, len) < 0) {
		if (errno != EINPROGRESS)
			return -1;
		if (wait_fd(fd, POLLOUT, timeout, NULL) != IO_OK) {
			errno = ETIMEDOUT;      /* not whatever an earlier call left */
			return -1;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) < 0)
			return -1;
		if (err) {
			errno = err;
			return -1;
		}
	}
	return fcntl(fd, F_SETFL, flags);
}

/* unix_address - a sockaddr_un for a path that addr_parse has bounded */
static struct sockaddr_un unix_address(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t len = strlen(path);

	if (len >= sizeof(sun.sun_path))
		len = sizeof(sun.sun_path) - 1;
	memcpy(sun.sun_path, path, len);
	return sun;
}

/*
 * connect_unix - a unix connect does not complete in the background: with
 * a full backlog it fails with EAGAIN at once when non-blocking. Blocking,
 * with SO_SNDTIMEO, it waits for room, at most timeout seconds.
 */
static int connect_unix(const char *path, int timeout, char *why, size_t cap)
{
	struct sockaddr_un sun = unix_address(path);
	struct timeval limit = { .tv_sec = timeout };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit)) == 0 &&
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0)
		return fd;
	snprintf(why, cap, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* addr_connect - connect with a timeout, trying every address in turn */
int addr_connect(const struct addr *addr, int timeout, char *why, size_t cap)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *list, *ai;
	int fd = -1, rc, one = 1;

	if (addr->kind == ADDR_UNIX)
		return connect_unix(addr->host, timeout, why, cap);
	rc = getaddrinfo(addr->host, addr->port, &hints, &list);
	if (rc != 0) {
		snprintf(why, cap, "%s: %s", addr->host, gai_strerror(rc));
		return -1;
	}
	snprintf(why, cap, "%s port %s: no address", addr->host, addr->port);
	for (ai = list; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd >= 0 && connect_timed(fd, ai->ai_addr, ai->ai_addrlen, timeout) == 0)
			break;
		snprintf(why, cap, "%s port %s: %s", addr->host, addr->port, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	freeaddrinfo(list);
	/* We wait on every reply, so Nagle would only add latency. */
	if (fd >= 0)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* listen_unix - a listening unix socket at path */
static int listen_unix(const char *path, int backlog, char *why, size_t cap)
{
	struct sockaddr_un sun = unix_address(path);
	struct stat st;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* Replace a stale socket left by an earlier run; never a live one or a file. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
		int probe = connect_unix(path, 1, why, cap);
		if (probe >= 0) {
			close(probe);
			snprintf(why, cap, "%s: another process is listening there", path);
			if (fd >= 0)
				close(fd);
			return -1;
		}
		unlink(path);
	}
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 &&
	    listen(fd, backlog) == 0)
		return fd;
	snprintf(why, cap, "%s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* listen_one - a socket bound to one address and listening; -1 with errno */
static int listen_one(const struct addrinfo *ai, int backlog, int v6only)
{
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
	int one = 1, saved;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ai->ai_family == AF_INET6 && v6only >= 0 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)
		goto fail;
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0)
		return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* numeric_host - an address as text, for messages */
static const char *numeric_host(const struct addrinfo *ai, char *text, size_t cap)
{
	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, text, (socklen_t)cap, NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(text, cap, "?");
	return text;
}

/* listed_before - whether an earlier entry has the same address (a hosts file may repeat one) */
static int listed_before(const struct addrinfo *list, const struct addrinfo *ai)
{
	for (const struct addrinfo *p = list; p != ai; p = p->ai_next)
		if (p->ai_addrlen == ai->ai_addrlen && memcmp(p->ai_addr, ai->ai_addr, ai->ai_addrlen) == 0)
			return 1;
	return 0;
}

/* listen_any - a bare port: one dual-stack [::] socket, or 0.0.0.0 without IPv6 */
static int listen_any(const char *port, int backlog, char *why, size_t cap)
{
	struct addrinfo hints = { .ai_family = AF_INET6, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *list;
	int fd = -1, rc;

	rc = getaddrinfo(NULL, port, &hints, &list);
	if (rc == 0) {
		fd = listen_one(list, backlog, 0);
		freeaddrinfo(list);
		if (fd >= 0 || errno != EAFNOSUPPORT)
			goto done;
	}
	hints.ai_family = AF_INET;      /* a host with IPv6 disabled */
	rc = getaddrinfo(NULL, port, &hints, &list);
	if (rc != 0) {
		snprintf(why, cap, "* port %s: %s", port, gai_strerror(rc));
		return -1;
	}
	fd = listen_one(list, backlog, -1);
	freeaddrinfo(list);
done:
	if (fd < 0)
		snprintf(why, cap, "* port %s: %s", port, strerror(errno));
	return fd;
}

/* close_all - the sockets opened so far, when one address fails */
static void close_all(int *fds, int n)
{
	while (n > 0)
		close(fds[--n]);
}

/*
 * addr_listen - bind and listen; fds gets one socket per address, at most
 * max; returns how many, or -1 with why. A bare port means every local
 * address; a host name, every address it resolves to (SPEC 2), so that
 * "localhost" serves both 127.0.0.1 and ::1. An address whose family the
 * host lacks (::1 with IPv6 off) is skipped while another one works.
 */
int addr_listen(const struct addr *addr, int backlog, int *fds, int max, char *why, size_t cap)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *list, *ai;
	char text[NI_MAXHOST], skipped[512] = "";
	int n = 0, rc, has_v4 = 0;

	if (addr->kind == ADDR_UNIX || addr->kind == ADDR_PORT) {
		fds[0] = addr->kind == ADDR_UNIX ? listen_unix(addr->host, backlog, why, cap)
						  : listen_any(addr->port, backlog, why, cap);
		return fds[0] < 0 ? -1 : 1;
	}
	rc = getaddrinfo(addr->host, addr->port, &hints, &list);
	if (rc != 0) {
		snprintf(why, cap, "%s: %s", addr->host, gai_strerror(rc));
		return -1;
	}
	for (ai = list; ai; ai = ai->ai_next)
		has_v4 |= ai->ai_family == AF_INET;
	for (ai = list; ai; ai = ai->ai_next) {
		if (listed_before(list, ai))
			continue;
		if (n == max) {
			msg(LOG_WARNING, "%s resolves to more than %d addresses; listening on the first %d",
			    addr->host, max, max);
			break;
		}
		/* With an IPv4 address in the list too, [::] must not claim IPv4 as well. */
		fds[n] = listen_one(ai, backlog, ai->ai_family == AF_INET6 && has_v4 ? 1 : -1);
		if (fds[n] >= 0) {
			n++;
			continue;
		}
		snprintf(why, cap, "%s port %s (%s): %s", addr->host, addr->port,
			 numeric_host(ai, text, sizeof(text)), strerror(errno));
		if (errno != EADDRNOTAVAIL && errno != EAFNOSUPPORT) {
			close_all(fds, n);
			freeaddrinfo(list);
			return -1;
		}
		snprintf(skipped, sizeof(skipped), "%s", why);
	}
	freeaddrinfo(list);
	if (n > 0 && skipped[0])
		msg(LOG_WARNING, "not listening on %s", skipped);
	return n > 0 ? n : -1;
}
/* is_socket - whether fd is a socket (the connection under inetd) */
int is_socket(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

/*
 * set_nonblocking - sockets and pipes only: a terminal or file may be shared
 * with a shell. A TCP socket also gets TCP_NODELAY: we write whole replies in one
 * write and then wait for an answer, so Nagle could only add delay.
 */
void set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL), one = 1;
	struct stat st;

	if (flags < 0 || fstat(fd, &st) < 0)
		return;
	if (S_ISFIFO(st.st_mode)) {
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);  /* a pipe's end is ours alone too */
		return;
	}
	if (!S_ISSOCK(st.st_mode))
		return;
	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	/* Fails harmlessly on a unix socket. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The signal mask that lets SIGTERM/SIGINT in: only while waiting for a command. */
static sigset_t stop_open_mask;
static int stop_signals_blocked;

/*
 * block_stop_signals - a session keeps SIGTERM/SIGINT blocked, so that no
 * connect, write or scan is cut short by them, and lets them in only in
 * the ppoll of a wait for a command: a stop can then never slip in between
 * the check and the wait.
 */
void block_stop_signals(void)
{
	sigset_t stop;

	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	if (sigprocmask(SIG_BLOCK, &stop, &stop_open_mask) < 0)
		return;
	sigdelset(&stop_open_mask, SIGTERM);
	sigdelset(&stop_open_mask, SIGINT);
	stop_signals_blocked = 1;
}

/*
 * wait_fd - wait until fd is ready, at most timeout seconds
 *
 * While we wait, a server that has sat idle for a while is sent NOOP, so
 * that its own idle timeout cannot end the session (SPEC 4.7).
 */
int wait_fd(int fd, short events, int timeout, struct conn *keepalive)
{
	long deadline = now_seconds() + timeout;
	long interval = KEEPALIVE_SECONDS;

	/* Keep a server awake at least as often as we ourselves would give up. */
	if (timeout / 2 < interval)
		interval = timeout / 2 > 0 ? timeout / 2 : 1;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		long now = now_seconds(), slice = deadline - now;
		int rc;

		if (slice <= 0) {
			/* Time is up, perhaps spent on a keepalive: one last look. */
			struct pollfd last = { .fd = fd, .events = events };
			return poll(&last, 1, 0) > 0 ? IO_OK : IO_TIMEOUT;
		}
		if (keepalive) {
			long due = keepalive->last_active + interval - now;
			if (due <= 0) {
				keepalive->last_active = now;
				keepalive->on_idle(keepalive);
				continue;
			}
			if (due < slice)
				slice = due;
		}
		/* SIGTERM may end a wait for a command, never a write of replies. */
		int stoppable = stop_point && (events & POLLIN);
		struct timespec wait = { .tv_sec = slice };
		if (stoppable && stop_requested)
			return IO_STOP;
		rc = ppoll(&p, 1, &wait, stoppable && stop_signals_blocked ? &stop_open_mask : NULL);
		if (rc > 0)
			return IO_OK;
		if (rc < 0 && errno != EINTR)
			return IO_ERROR;
	}
}

/* write_all - write everything or fail; short writes and EINTR are retried */
int write_all(int fd, const void *data, size_t len, int timeout, struct conn *keepalive)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return IO_ERROR;
		int rc = wait_fd(fd, POLLOUT, timeout, keepalive);
		if (rc != IO_OK)
			return rc;
	}
	return IO_OK;
}

/* conn_init - empty buffers over a peer's descriptors */
void conn_init(struct conn *c, int rfd, int wfd, const char *name, int timeout)
{
	c->rfd = rfd;
	c->wfd = wfd;
	c->name = name;
	c->timeout = timeout;
	c->last_active = now_seconds();
	c->deadline = 0;
	c->keepalive = NULL;
	c->on_idle = NULL;
	c->owner = NULL;
	c->in_pos = c->in_len = c->out_len = 0;
	/* Sockets are ours alone: non-blocking, so no write outlasts -t. */
	set_nonblocking(rfd);
	set_nonblocking(wfd);
}

/* time_left - seconds of -t for this wait, or what is left before the deadline */
static int time_left(const struct conn *c)
{
	long left;

	if (c->deadline == 0)
		return c->timeout;
	left = c->deadline - now_seconds();
	return left > 0 ? (int)left : 0;
}

/* conn_fill - read more input; flushes our output first (pipelining) */
int conn_fill(struct conn *c)
{
	int rc;

	if (c->out_len && (rc = conn_flush(c)) != IO_OK)
		return rc;
	if (c->in_pos > 0) {
		memmove(c->in, c->in + c->in_pos, c->in_len - c->in_pos);
		c->in_len -= c->in_pos;
		c->in_pos = 0;
	}
	/* Sockets and pipes are non-blocking (conn_init), files never block:
	 * try the read first and wait only when there is nothing yet. */
	for (;;) {
		ssize_t n = read(c->rfd, c->in + c->in_len, sizeof(c->in) - c->in_len);
		if (n > 0) {
			c->in_len += (size_t)n;
			c->last_active = now_seconds();
			return IO_OK;
		}
		if (n == 0)
			return IO_EOF;
		if (errno != EINTR && errno != EAGAIN)
			return IO_ERROR;
		if (errno == EAGAIN && (rc = wait_fd(c->rfd, POLLIN, time_left(c), c->keepalive)) != IO_OK)
			return rc;
	}
}

/*
 * conn_read_line - one line without its CRLF (or bare LF)
 *
 * A line longer than cap is consumed to its end and reported as
 * IO_TOO_LONG, so the dialogue can go on; line then holds its first cap
 * bytes. The bytes are not NUL-terminated; len says how many there are.
 */
int conn_read_line(struct conn *c, char *line, size_t cap, size_t *len)
{
	int too_long = 0, rc;

	*len = 0;
	/* SPEC 2: the whole line within -t, not -t for each trickled byte. */
	c->deadline = now_seconds() + c->timeout;
	for (;;) {
		char *start = c->in + c->in_pos;
		size_t avail = c->in_len - c->in_pos;
		char *nl = memchr(start, '\n', avail);
		size_t take = nl ? (size_t)(nl - start) : avail;
		size_t keep, room = cap - *len;

		/* A CR at the end of a read waits for the next: it may be a CRLF's. */
		if (!nl && take > 0 && start[take - 1] == '\r')
			take--;
		keep = take;
		if (nl && keep > 0 && start[keep - 1] == '\r')
			keep--;         /* the CR of CRLF is no part of the line */
		if (keep > room)
			too_long = 1;
		memcpy(line + *len, start, keep < room ? keep : room);
		*len += keep < room ? keep : room;
		c->in_pos += nl ? take + 1 : take;
		if (nl)
			break;
		if ((rc = conn_fill(c)) != IO_OK) {
			c->deadline = 0;
			return rc;
		}
	}
	c->deadline = 0;
	return too_long ? IO_TOO_LONG : IO_OK;
}

/* conn_flush - write out what is buffered, within the timeout */
int conn_flush(struct conn *c)
{
	int rc;

	if (c->out_len == 0)
		return IO_OK;
	rc = write_all(c->wfd, c->out, c->out_len, c->timeout, c->keepalive);
	c->out_len = 0;
	if (rc == IO_OK)
		c->last_active = now_seconds();
	return rc;
}

/* conn_write - buffer output; large pieces go out in large writes */
int conn_write(struct conn *c, const void *data, size_t len)
{
	const char *p = data;
	int rc;

	while (len > 0) {
		size_t room = sizeof(c->out) - c->out_len;
		size_t take = len < room ? len : room;

		memcpy(c->out + c->out_len, p, take);
		c->out_len += take;
		p += take;
		len -= take;
		if (c->out_len == sizeof(c->out) && (rc = conn_flush(c)) != IO_OK)
			return rc;
	}
	return IO_OK;
}

/* conn_printf - one formatted line with CRLF, cut to a reply line's length */
int conn_printf(struct conn *c, const char *fmt, ...)
{
	char line[REPLY_LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 2, fmt, ap);
	va_end(ap);
	if (n < 0)
		return IO_ERROR;
	if ((size_t)n > sizeof(line) - 3)
		n = (int)sizeof(line) - 3;
	memcpy(line + n, "\r\n", 2);
	return conn_write(c, line, (size_t)n + 2);
}
