/*
 * smtp.c - relay one SMTP session between a client and the server
 *
 * Reads like the dialogue: connect to the server, relay its greeting, then
 * relay one command and one whole reply at a time. Replies are flushed to
 * the client only when we must wait for its input, so a pipelining client
 * gets exactly one reply per command, in order. DATA is ours: the body goes
 * into a spool, clamd scans it, and only a clean message is sent on.
 *
 * What this file does not do: listen, fork, parse options (clamsmtpd.c),
 * talk to clamd (clamd.c) or manage files (spool.c).
 */
#define _GNU_SOURCE
#include "clamsmtpd.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

struct session {
	struct conn client, server;
	int server_lost;        /* set once the server connection is unusable */
	int server_closing;     /* it said 421: once that is relayed, we end too */
	int client_told;        /* a 421 went to the client already */
	int quit_sent;
	int client_gone;        /* EOF, timeout or stop: no QUIT reply to wait for */
	int client_socket;      /* the client is on a socket, which can show a hang-up */
	int recipients;         /* accepted by the server in this transaction */
	unsigned messages;
	char peer[64];          /* the client's IP, when it has one */
	char xclient[64];       /* XFORWARD ADDR, checked characters only */
	char xident[64];        /* XFORWARD IDENT, letters and digits only */
	char sender[300];       /* printable (UTF-8 kept), for the log line */
	char rcpt_log[1024];    /* ", to=<...>" for each accepted recipient */
	char rcpt_list[4096];   /* the same, one per line, for the -x hook */
	size_t reply_len;
	char reply[REPLY_MAX];  /* the server's last whole reply, CRLF lines */
	char line[LINE_MAX_SMTP + 1];
	struct spool spool;
};

enum { NEXT, END };     /* what a command handler says about the session */

/* What log fields taken from peers may hold (SPEC 9.3): nothing that could
 * pass for a separator or another field. */
#define ID_CHARS   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#define ADDR_CHARS ID_CHARS ".:-_"
#define STATUS_FIELD "X-Virus-Status"

/* EHLO keywords whose promises we cannot keep (SPEC 3). */
static const char *const hidden_keywords[] = {
	"STARTTLS", "CHUNKING", "BINARYMIME", "PIPELINING", "XCLIENT", "XEXCH50",
	"CHECKPOINT",
};

/* transcript - -d 4 shows the dialogue; peer bytes made printable first */
static void transcript(const char *who, const char *line, size_t len)
{
	char shown[REPLY_LINE_MAX];

	printable(shown, sizeof(shown), line, len);
	msg(LOG_DEBUG, "%s: %s", who, shown);
}

/* client_reply - a reply of our own, buffered until we wait on the client */
static void client_reply(struct session *s, const char *text)
{
	msg(LOG_DEBUG, "clamsmtpd: %s", text);
	conn_printf(&s->client, "%s", text);
}

/* reply_line_code - the code of one reply line; *last says no '-' follows */
int reply_line_code(const char *line, size_t len, int *last)
{
	if (len < 3 || line[0] < '2' || line[0] > '5' || line[1] < '0' || line[1] > '9' ||
	    line[2] < '0' || line[2] > '9')
		return -1;
	if (len > 3 && line[3] != ' ' && line[3] != '-')
		return -1;
	*last = len == 3 || line[3] == ' ';
	return (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
}

/*
 * read_reply - one whole reply, every continuation line, into s->reply
 *
 * Returns the code, or a negative io_status when the server is gone or
 * makes no sense: then it is marked lost.
 */
static int read_reply(struct session *s)
{
	char line[REPLY_LINE_MAX];
	size_t len;
	int code = -1, first = -1, last = 0, rc;

	s->reply_len = 0;
	while (!last) {
		rc = conn_read_line(&s->server, line, sizeof(line) - 2, &len);
		if (rc == IO_TOO_LONG)
			rc = IO_OK;     /* relay the start of an overlong text line */
		if (rc == IO_OK)
			code = reply_line_code(line, len, &last);
		if (first < 0)
			first = code;
		/* RFC 5321 4.2.1: every line of a reply carries the same code. */
		if (rc != IO_OK || code < 0 || code != first ||
		    s->reply_len + len + 2 > sizeof(s->reply)) {
			char shown[80];
			printable(shown, sizeof(shown), line, rc == IO_OK ? len : 0);
			msg(LOG_ERR, "server %s%s%s", rc == IO_TIMEOUT ? "timed out" :
			    rc == IO_EOF ? "closed the connection" : "sent a bad reply",
			    rc == IO_OK ? ": " : "", shown);
			s->server_lost = 1;
			return rc != IO_OK ? rc : IO_ERROR;
		}
		memcpy(s->reply + s->reply_len, line, len);
		memcpy(s->reply + s->reply_len + len, "\r\n", 2);
		s->reply_len += len + 2;
		if (cfg->debug >= 4)
			transcript("server", line, len);
	}
	if (code == 421)
		s->server_closing = s->server_lost = 1;  /* RFC 5321 3.8: it is going */
	return code;
}

/* to_server - send one command line and read the whole reply */
static int to_server(struct session *s, const char *line, size_t len)
{
	if (s->server_lost)
		return IO_ERROR;
	if (s->server.in_pos != s->server.in_len) {
		/* SPEC 7: a reply nobody asked for would pair with the next command. */
		msg(LOG_ERR, "server sent data nobody asked for; dropping it");
		s->server_lost = 1;
		return IO_ERROR;
	}
	if (conn_write(&s->server, line, len) != IO_OK ||
	    conn_write(&s->server, "\r\n", 2) != IO_OK ||
	    conn_flush(&s->server) != IO_OK) {
		msg(LOG_ERR, "cannot write to server: %s", strerror(errno));
		s->server_lost = 1;
		return IO_ERROR;
	}
	return read_reply(s);
}

/* relay_reply - the server's last whole reply, to the client */
static void relay_reply(struct session *s)
{
	conn_write(&s->client, s->reply, s->reply_len);
	if (s->reply_len >= 3 && memcmp(s->reply, "421", 3) == 0)
		s->client_told = 1;     /* the client knows the end is coming */
}

/* server_keepalive - NOOP to a server that waits on us (SPEC 4.7) */
static void server_keepalive(struct conn *server)
{
	msg(LOG_DEBUG, "server idle, sending NOOP");
	to_server(server->owner, "NOOP", 4);
}

/* reset_transaction - forget the envelope (RSET, HELO, EHLO, after DATA) */
static void reset_transaction(struct session *s)
{
	s->recipients = 0;
	s->sender[0] = '\0';
	s->rcpt_log[0] = '\0';
	s->rcpt_list[0] = '\0';
}

/* envelope_address - the <...> of MAIL FROM:/RCPT TO:, printable (UTF-8 kept), bounded */
static void envelope_address(char *out, size_t cap, const char *line, size_t len)
{
	const char *colon = memchr(line, ':', len);
	const char *start = colon ? colon + 1 : line + len, *end = line + len;

	while (start < end && *start == ' ')
		start++;
	const char *close = start < end && *start == '<'
		? memchr(start, '>', (size_t)(end - start)) : NULL;
	const char *stop = close ? close + 1 : memchr(start, ' ', (size_t)(end - start));
	printable_utf8(out, cap, start, (size_t)((stop ? stop : end) - start));
}

/* span_of - how many of the len bytes at p are in allowed (p need not end in NUL) */
static size_t span_of(const char *p, size_t len, const char *allowed)
{
	size_t n = 0;

	while (n < len && p[n] && strchr(allowed, p[n]))
		n++;
	return n;
}

/* xforward_value - one NAME=value of an XFORWARD line, if every byte is allowed */
static void xforward_value(char *out, size_t cap, const char *line, size_t len,
			   const char *name, const char *allowed)
{
	size_t n = strlen(name);

	for (size_t i = 8; i + n + 1 < len; i++) {
		if (line[i] != ' ' || strncasecmp(line + i + 1, name, n) != 0 || line[i + 1 + n] != '=')
			continue;
		const char *value = line + i + 2 + n, *end = memchr(value, ' ', (size_t)(line + len - value));
		size_t vlen = (size_t)((end ? end : line + len) - value);

		/* [UNAVAILABLE] and xtext escapes fall outside the allowed set. */
		if (vlen == 0 || vlen >= cap || span_of(value, vlen, allowed) < vlen)
			return;
		memcpy(out, value, vlen);
		out[vlen] = '\0';
		return;
	}
}

/*
 * ehlo_filter - drop the keywords we cannot honour from a 250 EHLO reply
 *
 * The first line (the greeting name) always stays; the separators are set
 * again so that the new last line says "250 ".
 */
size_t ehlo_filter(char *reply, size_t len)
{
	size_t in = 0, out = 0, last_start = 0;

	while (in < len) {
		char *line = reply + in, *nl = memchr(line, '\n', len - in);
		size_t line_len = nl ? (size_t)(nl - line) + 1 : len - in;
		size_t text_len = line_len;
		int hide = 0;

		while (text_len > 0 && (line[text_len - 1] == '\n' || line[text_len - 1] == '\r'))
			text_len--;
		if (in > 0 && text_len > 4) {
			size_t key_len = 0;
			while (4 + key_len < text_len && line[4 + key_len] != ' ' &&
			       line[4 + key_len] != '\t')
				key_len++;
			for (size_t i = 0; i < sizeof(hidden_keywords) / sizeof(*hidden_keywords); i++)
				if (strlen(hidden_keywords[i]) == key_len &&
				    strncasecmp(line + 4, hidden_keywords[i], key_len) == 0)
					hide = 1;
		}
		if (!hide) {
			memmove(reply + out, line, line_len);
			if (text_len > 3)
				reply[out + 3] = '-';
			last_start = out;
			out += line_len;
		}
		in += line_len;
	}
	if (out > last_start + 3 && reply[last_start + 3] == '-')
		reply[last_start + 3] = ' ';
	return out;
}

/* verb_is - whether the command is this verb, alone or before a space */
static int verb_is(const char *line, size_t len, const char *verb)
{
	size_t n = strlen(verb);

	return len >= n && strncasecmp(line, verb, n) == 0 && (len == n || line[n] == ' ');
}

/* note_recipient - one more accepted recipient, for the log line and the -x hook */
static void note_recipient(struct session *s, const char *line, size_t len)
{
	char rcpt[260];
	size_t used = strlen(s->rcpt_log);

	envelope_address(rcpt, sizeof(rcpt), line, len);
	if (used + strlen(rcpt) + 16 < sizeof(s->rcpt_log))
		snprintf(s->rcpt_log + used, sizeof(s->rcpt_log) - used, ", to=%s", rcpt);
	else if (!strstr(s->rcpt_log, ", ..."))
		snprintf(s->rcpt_log + used, sizeof(s->rcpt_log) - used, ", ...");
	used = strlen(s->rcpt_list);
	if (used + strlen(rcpt) + 2 < sizeof(s->rcpt_list))
		snprintf(s->rcpt_list + used, sizeof(s->rcpt_list) - used, "%s%s",
			 used ? "\n" : "", rcpt);
	s->recipients++;
}

/* relay_command - pass a command on and its reply back, noting what it did */
static int relay_command(struct session *s, const char *line, size_t len)
{
	int code = to_server(s, line, len);

	if (code / 100 == 3 && code != 334) {
		/* Only our own DATA may start a data phase; 334 is AUTH's dialogue. */
		msg(LOG_ERR, "server answered %d to a relayed command; dropping it", code);
		s->server_lost = 1;
		code = IO_ERROR;
	}
	if (code < 0) {
		client_reply(s, R_SERVER_LOST);
		return END;
	}
	if (verb_is(line, len, "RSET") && code / 100 != 2) {
		/* SPEC 3: a transaction the server will not drop would linger. */
		msg(LOG_ERR, "server refused RSET with %d; dropping it", code);
		s->server_lost = 1;
		client_reply(s, R_SERVER_LOST);
		return END;
	}
	if (verb_is(line, len, "EHLO") && code == 250)
		s->reply_len = ehlo_filter(s->reply, s->reply_len);
	if (verb_is(line, len, "EHLO") || verb_is(line, len, "HELO")) {
		s->xclient[0] = s->xident[0] = '\0';
		reset_transaction(s);
	}
	if (verb_is(line, len, "RSET"))
		reset_transaction(s);
	if (verb_is(line, len, "XFORWARD") && code / 100 == 2) {
		xforward_value(s->xclient, sizeof(s->xclient), line, len, "ADDR", ADDR_CHARS);
		xforward_value(s->xident, sizeof(s->xident), line, len, "IDENT", ID_CHARS);
	}
	if (verb_is(line, len, "MAIL") && code / 100 == 2) {
		reset_transaction(s);
		envelope_address(s->sender, sizeof(s->sender), line, len);
	}
	if (verb_is(line, len, "RCPT") && code / 100 == 2)
		note_recipient(s, line, len);
	relay_reply(s);
	if (verb_is(line, len, "QUIT")) {
		s->quit_sent = 1;
		return END;
	}
	if (code == 421) {
		/* RFC 5321 3.8: the server is closing; so are we. */
		s->server_lost = 1;
		return END;
	}
	return NEXT;
}

/* text_run - the hot path: copy up to a CR or LF, then note which it was */
static size_t text_run(enum data_state *state, const char *in, size_t i, size_t len,
		       char *out, size_t *o)
{
	size_t start = i;
	const char *lf = memchr(in + i, '\n', len - i);
	size_t stop = lf ? (size_t)(lf - in) : len;
	const char *cr = memchr(in + i, '\r', stop - i);

	i = cr ? (size_t)(cr - in) : stop;
	memcpy(out + *o, in + start, i - start);
	*o += i - start;
	if (i == len)
		return i;
	if (in[i] == '\r') {
		*state = D_CR;
	} else {
		out[(*o)++] = '\r';    /* a bare LF is a line break too */
		out[(*o)++] = '\n';
		*state = D_SOFT_BOL;
	}
	return i + 1;
}

/*
 * data_decode - the end-of-data state machine (RFC 5321 4.1.1.4, 4.5.2)
 *
 * The state is named by what was just seen. The end is exactly CRLF "."
 * CRLF; the DATA command's own line break counts as the first CRLF. One
 * leading dot is removed from each line. A bare CR or bare LF becomes a
 * CRLF, so the spool holds clean CRLF lines only; the line after it loses
 * a leading dot too, but can never end the message (D_SOFT_BOL). NUL is
 * data. out must have room for 2 * len + 2 bytes: each byte may become
 * CRLF, and a CR that ended the last piece may still owe its CRLF. Returns
 * how many input bytes were used: at D_END the rest is the next command.
 * *dot_line is set once a stored line starts with a dot (it came as ".."),
 * so that the way out knows whether it must stuff dots again.
 */
size_t data_decode(enum data_state *state, const char *in, size_t len,
		   char *out, size_t *out_len, int *dot_line)
{
	size_t i = 0, o = 0;

	while (i < len && *state != D_END) {
		char c = in[i];

		switch (*state) {
		case D_BOL:
			*state = c == '.' ? D_BOL_DOT : D_TEXT;
			if (c == '.')
				i++;
			break;
		case D_BOL_DOT:
			*state = c == '\r' ? D_DOT_CR : D_TEXT;
			if (c == '\r')
				i++;
			else if (c == '.')
				*dot_line = 1;
			break;
		case D_DOT_CR:
			if (c == '\n') {
				*state = D_END;
				i++;
			} else {
				out[o++] = '\r';        /* ".", bare CR: the dot was stuffing */
				out[o++] = '\n';
				*state = D_SOFT_BOL;
			}
			break;
		case D_CR:
			out[o++] = '\r';
			out[o++] = '\n';
			*state = c == '\n' ? D_BOL : D_SOFT_BOL;
			if (c == '\n')
				i++;
			break;
		case D_SOFT_BOL:
			*state = c == '.' ? D_SOFT_DOT : D_TEXT;
			if (c == '.')
				i++;
			break;
		case D_SOFT_DOT:        /* a dot went; may the line still start with one? */
			if (c == '.')
				*dot_line = 1;
			*state = D_TEXT;
			break;
		case D_TEXT:
			i = text_run(state, in, i, len, out, &o);
			break;
		case D_END:
			break;
		}
	}
	*out_len = o;
	return i;
}

/* data_encode - stuff a dot before each line that starts with one */
size_t data_encode(int *at_bol, const char *in, size_t len, char *out)
{
	size_t i = 0, o = 0;

	while (i < len) {
		const char *nl = memchr(in + i, '\n', len - i);
		size_t end = nl ? (size_t)(nl - in) + 1 : len;

		if (*at_bol && in[i] == '.')
			out[o++] = '.';
		memcpy(out + o, in + i, end - i);
		o += end - i;
		*at_bol = nl != NULL;
		i = end;
	}
	return o;
}

/* receive_body - the client's message, decoded straight into the spool, up to its end */
static int receive_body(struct session *s, struct spool *spool)
{
	enum data_state state = D_BOL;
	size_t since = 0;
	int rc = IO_OK;

	/* SPEC 2: each 64 KiB must come within -t, however slowly it trickles. */
	s->client.deadline = now_seconds() + s->client.timeout;
	s->client.keepalive = &s->server;
	while (rc == IO_OK) {
		size_t used, n, avail = s->client.in_len - s->client.in_pos;
		char *out = spool_room(spool, 2 * avail + 2);   /* data_decode's room */

		used = data_decode(&state, s->client.in + s->client.in_pos, avail, out, &n,
				   &spool->dot_lines);
		s->client.in_pos += used;
		spool_commit(spool, n);
		if (state == D_END)
			break;
		since += used;
		if (since >= IO_CHUNK) {
			s->client.deadline = now_seconds() + s->client.timeout;
			since = 0;
		}
		rc = conn_fill(&s->client);
	}
	s->client.keepalive = NULL;
	s->client.deadline = 0;
	return rc;
}

/* copy_stuffed - spool bytes [at, to) through data_encode: some line starts with "." */
static int copy_stuffed(struct session *s, struct spool *spool, off_t at, off_t to)
{
	static char chunk[IO_CHUNK], stuffed[2 * IO_CHUNK];
	int at_bol = 1;         /* every piece starts at a line start */

	while (at < to) {
		size_t want = to - at < (off_t)sizeof(chunk) ? (size_t)(to - at) : sizeof(chunk);
		ssize_t n = pread(spool->fd, chunk, want, at);
		if (n <= 0) {
			msg(LOG_ERR, "cannot read spool: %s", n < 0 ? strerror(errno) : "it is shorter than stored");
			return IO_ERROR;
		}
		at += n;
		if (conn_write(&s->server, stuffed, data_encode(&at_bol, chunk, (size_t)n, stuffed)) != IO_OK)
			return IO_ERROR;
	}
	return IO_OK;
}

/* copy_direct - spool bytes [at, to), no line needs a dot: the kernel copies */
static int copy_direct(struct session *s, struct spool *spool, off_t at, off_t to)
{
	if (conn_flush(&s->server) != IO_OK)    /* what was written before goes first */
		return IO_ERROR;
	while (at < to) {
		ssize_t n = sendfile(s->server.wfd, spool->fd, &at, (size_t)(to - at));
		if (n > 0 || (n < 0 && errno == EINTR))
			continue;
		if (n == 0)
			errno = EIO;    /* the spool is shorter than what we stored */
		if (n == 0 || errno != EAGAIN ||
		    wait_fd(s->server.wfd, POLLOUT, cfg->timeout, NULL) != IO_OK)
			return IO_ERROR;
	}
	s->server.last_active = now_seconds();
	return IO_OK;
}

/* copy_piece - spool bytes [at, to) to the server, stuffed when they need it */
static int copy_piece(struct session *s, struct spool *spool, off_t at, off_t to)
{
	if (at >= to)
		return IO_OK;
	return spool->dot_lines ? copy_stuffed(s, spool, at, to) : copy_direct(s, spool, at, to);
}

/*
 * copy_message - the spool to the server. When we add a status field, the
 * ones the message brought are left out (SPEC 8.4): no sender forges it.
 */
static int copy_message(struct session *s, struct spool *spool, int strip)
{
	struct range field;
	off_t at = 0;
	int found;

	while (strip && (found = spool_next_field(spool, STATUS_FIELD, at, &field)) != 0) {
		if (found < 0 || copy_piece(s, spool, at, field.from) != IO_OK)
			return IO_ERROR;
		msg(LOG_NOTICE, "left out the message's own %s field", STATUS_FIELD);
		at = field.to;
	}
	return copy_piece(s, spool, at, spool->size);
}

/* header_line - one added header line, if it is set */
static int header_line(struct session *s, const char *line)
{
	if (!line || !line[0])
		return IO_OK;
	if (conn_write(&s->server, line, strlen(line)) != IO_OK)
		return IO_ERROR;
	return conn_write(&s->server, "\r\n", 2);
}

/*
 * client_hung_up - the client closed its connection while we scanned or
 * sent (a before-queue MTA whose proxy timeout ran out): it was told to
 * try again, so the server must not get the message now, or it would
 * arrive twice. Only a socket can say so; a pipe or file at its end is a
 * transcript that still wants its replies.
 */
static int client_hung_up(struct session *s)
{
	struct pollfd p = { .fd = s->client.rfd, .events = POLLIN | POLLRDHUP };
	char byte;
	ssize_t n;

	if (!s->client_socket || s->client.in_pos != s->client.in_len || poll(&p, 1, 0) <= 0)
		return 0;
	n = recv(s->client.rfd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
		msg(LOG_WARNING, "client hung up before the message was passed on; not passing it on");
		s->client_gone = 1;
		return 1;
	}
	return 0;
}

/*
 * send_message - DATA, our headers, the stuffed spool, "."; the server's
 * code. The -h header says the message was scanned (SPEC 1): an unscanned
 * one gets only its status field.
 */
static int send_message(struct session *s, struct spool *spool, int scanned, const char *status)
{
	int code;

	if (client_hung_up(s))
		return IO_EOF;
	code = to_server(s, "DATA", 4);
	if (code < 0 || code / 100 == 4 || code / 100 == 5)
		return code;
	if (code != 354) {
		/* "250" to DATA means no data phase: the message would be lost. */
		msg(LOG_ERR, "server answered %d to DATA", code);
		s->server_lost = 1;
		return IO_ERROR;
	}
	errno = 0;
	if (header_line(s, scanned ? cfg->header : NULL) != IO_OK || header_line(s, status) != IO_OK ||
	    copy_message(s, spool, status != NULL) != IO_OK || conn_flush(&s->server) != IO_OK ||
	    client_hung_up(s) ||
	    conn_write(&s->server, ".\r\n", 3) != IO_OK || conn_flush(&s->server) != IO_OK) {
		/* Dropping the connection before "." is the only safe abort. */
		if (!s->client_gone)
			msg(LOG_ERR, "message transfer to server failed: %s",
			    errno ? strerror(errno) : "timed out");
		s->server_lost = 1;
		return s->client_gone ? IO_EOF : IO_ERROR;
	}
	return read_reply(s);
}

/* queued_as - the id in the server's "... queued as ID" reply, letters and digits */
static void queued_as(const struct session *s, char *out, size_t cap)
{
	const char *at = memmem(s->reply, s->reply_len, "queued as ", 10);
	size_t len;

	out[0] = '\0';
	if (!at)
		return;
	at += 10;
	len = span_of(at, (size_t)(s->reply + s->reply_len - at), ID_CHARS);
	if (len == 0 || len >= cap)
		return;
	memcpy(out, at, len);
	out[len] = '\0';
}

/*
 * log_message - SPEC 9.3: one line per message, whatever became of it;
 * our own findings first, what peers supplied last, so that no address
 * can forge an earlier field. code is the server's reply to the message
 * itself, 0 when it was not sent on.
 */
static void log_message(struct session *s, int level, off_t size, const char *status,
			int code, const struct scan *scan)
{
	char id[40], fields[600] = "", queued[64];
	size_t used = 0;

#define FIELD(...) (used += (size_t)snprintf(fields + used, sizeof(fields) - used, __VA_ARGS__), \
		    used = used < sizeof(fields) ? used : sizeof(fields) - 1)
	snprintf(id, sizeof(id), "%lX%05X.%u", (unsigned long)time(NULL) & 0xFFFFFFF,
		 (unsigned)getpid() & 0xFFFFF, ++s->messages);
	if (code > 0) {
		FIELD(", server=%d", code);
		queued_as(s, queued, sizeof(queued));
		if (queued[0])
			FIELD(", queued_as=%s", queued);
	}
	if (scan && scan->member)
		FIELD(", clamd=%s", scan->member);
	if (scan && (scan->member || scan->result == SCAN_ERROR))
		FIELD(", scan_ms=%ld", scan->ms);
	if (s->xclient[0])
		FIELD(", client=%s", s->xclient);
	if (s->xident[0])
		FIELD(", qid=%s", s->xident);
#undef FIELD
	msg(level, "%s: status=%s, size=%lld%s, from=%s%s", id, status, (long long)size, fields,
	    s->sender[0] ? s->sender : "<>", s->rcpt_log);
}

/* abandon - give up on a message the server has not seen: RSET, our reply */
static void abandon(struct session *s, const char *reply)
{
	int code = to_server(s, "RSET", 4);

	if (code >= 0 && code / 100 != 2) {
		/* SPEC 3: a transaction the server will not drop would linger. */
		msg(LOG_ERR, "server refused RSET with %d; dropping it", code);
		s->server_lost = 1;
	}
	client_reply(s, reply);
}

/* deliver - the message goes on; the server's reply to it is the client's */
static int deliver(struct session *s, struct spool *spool, const char *mark, int level,
		    const char *status, const struct scan *scan)
{
	char field[300];
	int code;

	if (mark)
		snprintf(field, sizeof(field), "%s: %s", STATUS_FIELD, mark);
	code = send_message(s, spool, scan != NULL && scan->result != SCAN_ERROR, mark ? field : NULL);
	if (code < 0) {
		client_reply(s, R_FORWARD_FAIL);
		log_message(s, LOG_ERR, spool->size, s->client_gone ? "ERROR:client gone before it was sent on"
			    : "ERROR:server failed during transfer", 0, scan);
		return code;
	}
	relay_reply(s);
	log_message(s, level, spool->size, status, code, scan);
	return code;
}

/*
 * virus_action - SPEC 9.2: the -x program learns of the virus. Values go
 * in the environment only, never through a shell; each is printable and
 * bounded (the addresses already are).
 */
static void virus_action(struct session *s, const struct spool *spool, const char *virus,
			 const char *action, const char *quarantine)
{
	char env[9][4200];
	const char *envp[10];

	if (!cfg->hook)
		return;
	snprintf(env[0], sizeof(env[0]), "PATH=/usr/bin:/bin");
	snprintf(env[1], sizeof(env[1]), "VIRUS=%.200s", virus);
	snprintf(env[2], sizeof(env[2]), "SENDER=%s", s->sender[0] ? s->sender : "<>");
	snprintf(env[3], sizeof(env[3]), "RECIPIENTS=%s", s->rcpt_list);
	snprintf(env[4], sizeof(env[4]), "CLIENT=%s", s->xclient[0] ? s->xclient : s->peer);
	snprintf(env[5], sizeof(env[5]), "QUEUE_ID=%s", s->xident);
	snprintf(env[6], sizeof(env[6]), "SIZE=%lld", (long long)spool->size);
	snprintf(env[7], sizeof(env[7]), "ACTION=%s", action);
	snprintf(env[8], sizeof(env[8]), "QUARANTINE=%.4000s", quarantine ? quarantine : "");
	for (int i = 0; i < 9; i++)
		envp[i] = env[i];
	envp[9] = NULL;
	conn_flush(&s->client);         /* the client need not wait for the hook */
	run_hook(cfg->hook, envp);
}

/* infected - SPEC 4.5, 8.4: keep it if asked, then drop, reject or pass it marked */
static void infected(struct session *s, struct spool *spool, const struct scan *scan)
{
	char status[300], mark[300], path[4096];
	int kept = cfg->quarantine && spool_quarantine(spool, path, sizeof(path)) == 0, final = 1;

	if (kept)
		msg(LOG_NOTICE, "quarantined message with %s as %s", scan->name, path);
	snprintf(status, sizeof(status), "VIRUS:%.200s", scan->name);
	if (cfg->pass_infected) {
		snprintf(mark, sizeof(mark), "Infected (%.200s)", scan->name);
		/* Only a pass the server took is final: a 4xx comes back again. */
		final = deliver(s, spool, mark, LOG_WARNING, status, scan) / 100 == 2;
	} else if (cfg->bounce) {
		char reply[400];
		snprintf(reply, sizeof(reply), R_VIRUS_BOUNCE, scan->name);
		abandon(s, reply);
		log_message(s, LOG_NOTICE, spool->size, status, 0, scan);
	} else {
		abandon(s, R_VIRUS_DROP);
		log_message(s, LOG_NOTICE, spool->size, status, 0, scan);
	}
	/* After the reply is decided: whatever the hook does changes nothing. */
	if (final)
		virus_action(s, spool, scan->name, cfg->pass_infected ? "passed"
			     : cfg->bounce ? "rejected" : "dropped", kept ? path : NULL);
}

/* scan_failed - SPEC 8.2: 451 by default; with -f pass, on its way marked */
static void scan_failed(struct session *s, struct spool *spool, const struct scan *scan)
{
	if (cfg->fail_open) {
		msg(LOG_WARNING, "scan failed (%s); passing the message on unscanned (-f pass)",
		    scan->name);
		deliver(s, spool, "Unscanned (scan failed)", LOG_WARNING, "UNSCANNED:scan failed", scan);
		return;
	}
	msg(LOG_ERR, "scan failed: %s", scan->name);
	abandon(s, R_SCAN_FAIL);
	log_message(s, LOG_ERR, spool->size, "ERROR:scan failed", 0, scan);
}

/* scan_and_send - the stored message: scanned and sent on, dropped or refused */
static void scan_and_send(struct session *s, struct spool *spool)
{
	struct scan scan;

	if (cfg->max_scan && spool->size > cfg->max_scan) {
		/* SPEC 8.3: over -s, clamd is not asked; the mark says so. */
		deliver(s, spool, "Unscanned (too large)", LOG_WARNING, "UNSCANNED:too large", NULL);
		return;
	}
	clamd_scan(spool, &scan, &s->server);
	if (scan.result == SCAN_CLEAN)
		deliver(s, spool, cfg->mark_clean ? "Clean" : NULL, LOG_INFO, "CLEAN", &scan);
	else if (scan.result == SCAN_VIRUS)
		infected(s, spool, &scan);
	else
		scan_failed(s, spool, &scan);
}

/* do_data - SPEC 4: take the body, scan it, then forward, drop or fail */
static int do_data(struct session *s)
{
	struct spool *spool = &s->spool;
	char status[340];
	int rc, err;

	if (s->recipients == 0) {
		client_reply(s, R_NO_RCPT);
		return NEXT;
	}
	client_reply(s, R_GO_AHEAD);
	spool_open(spool);      /* on failure the body is still read, then refused */
	rc = receive_body(s, spool);
	if (rc != IO_OK) {
		log_message(s, LOG_ERR, spool->size, rc == IO_TIMEOUT ? "ERROR:client timed out in the body"
			    : "ERROR:client went away in the body", 0, NULL);
		if (rc == IO_TIMEOUT)
			client_reply(s, R_TIMEOUT);
		s->client_gone = 1;
		return END;
	}
	if ((err = spool_finish(spool)) != 0) {
		/* SPEC 8.2: never passed on, whatever -f says. */
		abandon(s, err == ENOSPC || err == EDQUOT || err == EFBIG ? R_NO_SPACE : R_SPOOL_FAIL);
		snprintf(status, sizeof(status), "ERROR:spool: %s", strerror(err));
		log_message(s, LOG_ERR, spool->size, status, 0, NULL);
	} else {
		scan_and_send(s, spool);
	}
	reset_transaction(s);
	s->xclient[0] = s->xident[0] = '\0';    /* XFORWARD is per transaction */
	if (!s->server_closing)
		return NEXT;
	if (!s->client_told)
		client_reply(s, R_SERVER_LOST);         /* it closed while we kept it waiting */
	return END;
}

/* connect_server - serveraddr, or with only a port, the client's own IP */
static int connect_server(int client_fd, const char **refusal, char *why, size_t cap)
{
	struct addr addr;
	int fd;

	addr_parse(cfg->serveraddr, "25", &addr);     /* checked at start-up */
	if (addr.kind == ADDR_PORT && peer_addr(client_fd, addr.port, &addr) < 0) {
		msg(LOG_ERR, "server is only a port, but the client has no IP address: %s",
		    strerror(errno));
		*refusal = R_NO_PEER;
		return -1;
	}
	fd = addr_connect(&addr, cfg->timeout, why, cap);
	if (fd < 0) {
		msg(LOG_ERR, "cannot connect to server %s", why);
		*refusal = R_NO_SERVER;
	}
	return fd;
}

/* next_command - 1 for a command line, 0 when answered here, -1 at the end */
static int next_command(struct session *s, size_t *len)
{
	int rc;

	/* SIGTERM ends a session only between commands, never inside a message. */
	stop_point = 1;
	rc = conn_read_line(&s->client, s->line, LINE_MAX_SMTP, len);
	stop_point = 0;
	if (rc == IO_STOP) {
		msg(LOG_NOTICE, "stopping: closing the session");
		client_reply(s, R_SHUTDOWN);
	}
	if (rc != IO_OK && rc != IO_TOO_LONG)
		s->client_gone = 1;
	if (rc == IO_TOO_LONG) {
		client_reply(s, R_LINE_LONG);
		return 0;
	}
	if (rc == IO_TIMEOUT) {
		msg(LOG_NOTICE, "client timed out: no whole command within %d s", cfg->timeout);
		client_reply(s, R_TIMEOUT);
	}
	if (rc != IO_OK)
		return -1;
	if (cfg->debug >= 4)
		transcript("client", s->line, *len);
	return 1;
}

/*
 * command_clean - no control bytes and no leading space (RFC 5321 4.1.1:
 * verb SP arguments). A server that also splits on TAB or skips leading
 * blanks must read the same verb we read, or "DATA<TAB>" could open a data
 * phase we never saw. Bytes over 127 stay allowed for SMTPUTF8.
 */
static int command_clean(const char *line, size_t len)
{
	if (len > 0 && line[0] == ' ')
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < ' ' || line[i] == 0x7f)
			return 0;
	return 1;
}

/* command - one client command: answered here, or relayed */
static int command(struct session *s, const char *line, size_t len)
{
	if (!command_clean(line, len)) {
		client_reply(s, R_BAD_CHARS);
		return NEXT;
	}
	if (verb_is(line, len, "STARTTLS") || verb_is(line, len, "BDAT") ||
	    verb_is(line, len, "XCLIENT")) {
		client_reply(s, R_NOT_IMPL);
		return NEXT;
	}
	if (s->server_lost) {
		client_reply(s, R_SERVER_LOST);
		return END;
	}
	if (verb_is(line, len, "DATA"))
		return do_data(s);
	return relay_command(s, line, len);
}

/*
 * linger_close - closing a socket with unread input sends a reset, which can
 * destroy our last replies (a 421) before the client reads them. Say we are
 * done, then read what is left for a moment.
 */
static void linger_close(struct conn *client)
{
	char sink[4096];
	long until = now_seconds() + 2;

	if (!is_socket(client->wfd) || shutdown(client->wfd, SHUT_WR) < 0)
		return;
	while (now_seconds() < until) {
		struct pollfd p = { .fd = client->rfd, .events = POLLIN };
		if (poll(&p, 1, 500) <= 0 || read(client->rfd, sink, sizeof(sink)) <= 0)
			break;
	}
}

/* log_client - who the session is for, as the log's first line */
static void log_client(struct session *s, int fd)
{
	struct addr peer;

	s->peer[0] = '\0';
	if (is_socket(fd) && peer_addr(fd, "0", &peer) == 0) {
		snprintf(s->peer, sizeof(s->peer), "%.63s", peer.host);
		msg(LOG_INFO, "connection from %s", peer.host);
	} else {
		msg(LOG_INFO, "session on standard input");
	}
}

/* quit_server - QUIT for a server whose client is still there, else a goodbye unread */
static void quit_server(struct session *s)
{
	if (s->server_lost || s->quit_sent)
		return;
	if (!s->client_gone) {
		to_server(s, "QUIT", 4);
		return;
	}
	/* SPEC 2: nobody waits for the reply; the server closes its side itself. */
	if (send(s->server.wfd, "QUIT\r\n", 6, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		msg(LOG_DEBUG, "could not say QUIT to the server: %s", strerror(errno));
}

/* restore_flags - a pipe's O_NONBLOCK is shared with whoever else holds it: undo ours */
static void restore_flags(int in, int in_flags, int out, int out_flags)
{
	if (in_flags >= 0)
		fcntl(in, F_SETFL, in_flags);
	if (out_flags >= 0)
		fcntl(out, F_SETFL, out_flags);
}

/* smtp_session - serve one client on in/out until it is done */
int smtp_session(int in, int out)
{
	static struct session sess;
	struct session *s = &sess;
	const char *refusal = NULL;
	char why[512];
	size_t len;
	int fd, in_flags, out_flags;

	/* Only the small fields: conn_init sets up the conns, and the buffers
	 * are always written before they are read (no page need be touched). */
	memset(&s->server_lost, 0, offsetof(struct session, reply) - offsetof(struct session, server_lost));
	srand((unsigned)getpid() ^ (unsigned)time(NULL));      /* the pool's start (SPEC 8.1) */
	block_stop_signals();
	log_client(s, in);
	s->client_socket = is_socket(in);
	in_flags = fcntl(in, F_GETFL);
	out_flags = fcntl(out, F_GETFL);
	conn_init(&s->client, in, out, "client", cfg->timeout);
	fd = connect_server(in, &refusal, why, sizeof(why));
	if (fd < 0) {
		client_reply(s, refusal);
		conn_flush(&s->client);
		restore_flags(in, in_flags, out, out_flags);
		return 1;
	}
	conn_init(&s->server, fd, fd, "server", cfg->timeout);
	s->server.on_idle = server_keepalive;
	s->server.owner = s;
	s->spool.fd = -1;
	if (read_reply(s) < 0) {
		client_reply(s, R_SERVER_LOST);
		conn_flush(&s->client);
		close(fd);
		restore_flags(in, in_flags, out, out_flags);
		return 1;
	}
	relay_reply(s);
	for (;;) {
		int got = next_command(s, &len);
		if (got < 0 || (got > 0 && command(s, s->line, len) == END))
			break;
	}
	quit_server(s);
	conn_flush(&s->client);
	close(fd);
	spool_close(&s->spool);
	linger_close(&s->client);
	restore_flags(in, in_flags, out, out_flags);
	return 0;
}

/*
 * server_probe - SPEC 9.4: the server greets and answers EHLO; its name and
 * the keywords we pass on go in out. 0 when it works, -1 with why.
 */
int server_probe(char *out, size_t cap)
{
	static struct session sess;
	struct session *s = &sess;
	const char *refusal = NULL;
	size_t used = 0;
	int fd, code;

	memset(&s->server_lost, 0, offsetof(struct session, reply) - offsetof(struct session, server_lost));
	fd = connect_server(-1, &refusal, out, cap);
	if (fd < 0)
		return -1;
	conn_init(&s->server, fd, fd, "server", cfg->timeout);
	code = read_reply(s);
	if (code == 220)
		code = to_server(s, "EHLO clamsmtpd-selftest", 23);
	if (code != 250) {
		snprintf(out, cap, code < 0 ? "no valid greeting or EHLO reply (see the log)"
					    : "EHLO answered %d", code);
		close(fd);
		return -1;
	}
	s->reply_len = ehlo_filter(s->reply, s->reply_len);
	/* "name; keywords passed on: A B C": each reply line after its "250-" */
	for (size_t at = 0, line = 0; at + 4 <= s->reply_len && used + 1 < cap; line++) {
		const char *start = s->reply + at + 4;
		const char *cr = memchr(start, '\r', s->reply_len - at - 4);
		size_t n = cr ? (size_t)(cr - start) : s->reply_len - at - 4;
		char shown[200];

		printable(shown, sizeof(shown), start, n);
		used += (size_t)snprintf(out + used, cap - used, "%s%s",
					 line == 0 ? "" : line == 1 ? "; keywords passed on: " : ", ", shown);
		if (used >= cap)
			used = cap - 1;
		at += 4 + n + 2;
	}
	to_server(s, "QUIT", 4);
	close(fd);
	return 0;
}
