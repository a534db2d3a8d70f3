/*
 * spool.c - the spool file that holds one message while clamd scans it
 *
 * The file is made with mkstemp (mode 0600) in tmpdir and unlinked at once,
 * so it can never be left behind, not even by kill -9. Only quarantine
 * gives a message a name again, as a copy. Writes are buffered; the first
 * write error is kept and reported when the message ends, because the body
 * must still be read to its end to keep the dialogue in step.
 */
#define _GNU_SOURCE
#include "clamsmtpd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>
#include <unistd.h>

/* spool_close - the only reference to a nameless file: closing deletes it */
void spool_close(struct spool *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

/*
 * spool_open - an empty, nameless spool file in tmpdir; a session keeps
 * one and empties it for each message rather than create and free a file
 */
int spool_open(struct spool *s)
{
	char path[4096];

	s->size = 0;
	s->stored = 0;
	s->len = 0;
	s->error = 0;
	s->dot_lines = 0;
	if (s->fd >= 0 && ftruncate(s->fd, 0) == 0)
		return 0;
	spool_close(s);
	if (snprintf(path, sizeof(path), "%s/clamsmtpd.XXXXXX", cfg->tmpdir) >= (int)sizeof(path)) {
		s->error = ENAMETOOLONG;
		return -1;
	}
	s->fd = mkostemp(path, O_CLOEXEC);
	if (s->fd < 0) {
		s->error = errno;
		msg(LOG_ERR, "cannot create spool file in %s: %s", cfg->tmpdir, strerror(errno));
		return -1;
	}
	if (unlink(path) < 0)
		msg(LOG_ERR, "cannot unlink spool file %s: %s", path, strerror(errno));
	return 0;
}

/*
 * spool_drain - the buffer to the file at its own offset; the first error
 * is kept. pwrite, because clamd shares the descriptor's file offset (FILDES)
 * and a reused spool must never be written behind the last message.
 */
static void spool_drain(struct spool *s)
{
	const char *p = s->buf;
	size_t left = s->len;

	while (left > 0 && !s->error && s->fd >= 0) {
		ssize_t n = pwrite(s->fd, p, left, s->stored);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			s->error = n < 0 ? errno : EIO;
			break;
		}
		p += n;
		left -= (size_t)n;
		s->stored += n;
	}
	if (s->fd < 0 && !s->error)
		s->error = EBADF;
	s->len = 0;
}

/*
 * spool_room - where the next need bytes may be decoded straight into the
 * buffer (no copy); what is buffered goes to the file first if they would
 * not fit. need is at most sizeof(buf).
 */
char *spool_room(struct spool *s, size_t need)
{
	if (sizeof(s->buf) - s->len < need)
		spool_drain(s);
	return s->buf + s->len;
}

/* spool_commit - len bytes were put at spool_room: keep them; after an error, only count them */
void spool_commit(struct spool *s, size_t len)
{
	s->size += (off_t)len;
	if (!s->error)
		s->len += len;
}

/* spool_finish - everything on disk; 0, or the errno of the first failure */
int spool_finish(struct spool *s)
{
	/* No fsync: the file has no name, so a crash loses nothing the sender keeps. */
	spool_drain(s);
	if (s->error)
		msg(LOG_ERR, "spool write failed: %s", strerror(s->error));
	return s->error;
}

/* spool_quarantine - keep a copy of the message as tmpdir/virus.XXXXXX */
int spool_quarantine(struct spool *s, char *path, size_t cap)
{
	char buf[IO_CHUNK];
	off_t at = 0;
	int fd;

	if (snprintf(path, cap, "%s/virus.XXXXXX", cfg->tmpdir) >= (int)cap)
		return -1;
	fd = mkostemp(path, O_CLOEXEC);
	if (fd < 0) {
		msg(LOG_ERR, "cannot create quarantine file in %s: %s", cfg->tmpdir, strerror(errno));
		return -1;
	}
	for (;;) {
		ssize_t n = pread(s->fd, buf, sizeof(buf), at);
		if (n == 0)
			break;
		if (n < 0 || write_all(fd, buf, (size_t)n, cfg->timeout, NULL) != IO_OK) {
			msg(LOG_ERR, "cannot write quarantine file %s: %s", path, strerror(errno));
			unlink(path);
			close(fd);
			return -1;
		}
		at += n;
	}
	if (close(fd) < 0) {
		msg(LOG_ERR, "cannot write quarantine file %s: %s", path, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}


/* header_valid - "Name: value" on one line: RFC 5322 2.2 name, printable value */
int header_valid(const char *header)
{
	const char *colon = strchr(header, ':'), *value;

	if (!*header)
		return 1;       /* -h '' adds no header */
	/* A leading dot would be taken as stuffing and lost (RFC 5321 4.5.2). */
	if (!colon || colon == header || header[0] == '.' || strlen(header) > 998)
		return 0;
	for (const char *p = header; p < colon; p++)
		if (*p <= ' ' || *p > '~')
			return 0;
	for (value = colon + 1; *value == ' '; value++)
		;
	if (!*value)
		return 0;
	for (const char *p = colon + 1; *p; p++)
		if (*p < ' ' || *p > '~')
			return 0;
	return 1;
}

/* A window on the spool, for reading its header section a line at a time. */
struct window { off_t at; size_t len; char data[8192]; };

/* window_at - spool bytes from at on, at least a line's start of them */
static const char *window_at(struct spool *s, struct window *w, off_t at, size_t *avail)
{
	off_t have_to = w->at + (off_t)w->len;
	off_t want = s->size - at < 256 ? s->size - at : 256;

	if (at < w->at || at + want > have_to) {
		ssize_t n = pread(s->fd, w->data, sizeof(w->data), at);
		if (n <= 0)
			return NULL;
		w->at = at;
		w->len = (size_t)n;
	}
	*avail = (size_t)(w->at + (off_t)w->len - at);
	return w->data + (at - w->at);
}

/* line_end - the offset just past the line break of the line starting at at */
static off_t line_end(struct spool *s, struct window *w, off_t at)
{
	while (at < s->size) {
		size_t avail;
		const char *p = window_at(s, w, at, &avail);
		const char *nl = p ? memchr(p, '\n', avail) : NULL;

		if (!p)
			return s->size;
		if (nl)
			return at + (nl - p) + 1;
		at += (off_t)avail;
	}
	return s->size;
}

/* field_named - whether a header line starts the field name (any case, RFC 5322 2.2) */
static int field_named(const char *line, size_t len, const char *name)
{
	size_t n = strlen(name), i = n;

	if (len < n + 1 || strncasecmp(line, name, n) != 0)
		return 0;
	while (i < len && (line[i] == ' ' || line[i] == '\t'))
		i++;                    /* RFC 5322 4.5.3: obsolete space before the colon */
	return i < len && line[i] == ':';
}

/*
 * spool_next_field - the next field of this name in the header section, at
 * or after the line start from, with its folded lines: 1 and its bytes in
 * found, 0 when there is none, -1 on a read error. The spool holds CRLF
 * lines only; the header section ends at the first empty line.
 */
int spool_next_field(struct spool *s, const char *name, off_t from, struct range *found)
{
	static struct window w;
	off_t at = from;

	if (from == 0)
		w.at = w.len = 0;
	*found = (struct range){ -1, -1 };
	while (at < s->size) {
		size_t avail;
		const char *line = window_at(s, &w, at, &avail);
		int folded;
		off_t end;

		if (!line) {
			msg(LOG_ERR, "cannot read spool: %s", strerror(errno ? errno : EIO));
			return -1;
		}
		if (line[0] == '\r' || line[0] == '\n')
			break;          /* the empty line: the body follows */
		folded = line[0] == ' ' || line[0] == '\t';
		if (found->from >= 0 && !folded)
			return 1;       /* the field ended with the line before */
		end = line_end(s, &w, at);
		if (found->from >= 0)
			found->to = end;
		else if (!folded && field_named(line, avail, name))
			*found = (struct range){ at, end };
		at = end;
	}
	return found->from >= 0;
}
