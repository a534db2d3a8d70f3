/*
 * fuzz_reply.c - libFuzzer harness for reply_line_code and ehlo_filter (smtp.c)
 *
 * Input: byte 0 picks the mode, the rest is the payload.
 *  - reply_line_code runs on the payload and on each of its '\n' lines and
 *    must agree with a reference written from RFC 5321 4.2 ("ddd", "ddd "
 *    or "ddd-", first digit 2..5).
 *  - ehlo_filter runs on a reply built from the payload: mode bit 0 set:
 *    each payload line becomes "250-<line>\r\n" (the last "250 <line>",
 *    or "250" when it is empty), so most inputs are well-formed EHLO
 *    replies; bit 0 clear: the payload as it is. Either way the buffer ends
 *    in '\n', as read_reply() always leaves it (CRLF after every line).
 *
 * ehlo_filter invariants: the new length is <= the old; when the input was
 * a well-formed reply (every line "text\r\n", every text a reply line, all
 * but the last with '-', the last with ' ' or exactly 3 bytes) the output
 * is one too, keeps the first line, keeps every other line whose keyword is
 * not one of the hidden ones (byte for byte but for index 3), drops the
 * rest, advertises no hidden keyword (case-insensitive, the keyword being
 * the text from index 4 up to the first space or TAB) on a non-first line, and a
 * second pass changes nothing.
 */
#define _GNU_SOURCE
#include "../../clamsmtpd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define FAIL(...) do { fprintf(stderr, "fuzz_reply: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

static const char *const hidden[] = {
	"STARTTLS", "CHUNKING", "BINARYMIME", "PIPELINING", "XCLIENT", "XEXCH50", "CHECKPOINT",
};

static void check_code(const char *src, size_t len)
{
	char *line = malloc(len ? len : 1);     /* exactly len: no reading past it */
	int last = -7, code, want = -1, want_last = -7;

	if (!line)
		abort();
	memcpy(line, src, len);
	code = reply_line_code(line, len, &last);
	if (len >= 3 && line[0] >= '2' && line[0] <= '5' && line[1] >= '0' && line[1] <= '9' &&
	    line[2] >= '0' && line[2] <= '9' && (len == 3 || line[3] == ' ' || line[3] == '-')) {
		want = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		want_last = len == 3 || line[3] == ' ';
	}
	if (code != want || last != want_last)
		FAIL("reply_line_code on %zu bytes: %d last=%d, expected %d last=%d",
		     len, code, last, want, want_last);
	free(line);
}

struct line {
	const char *p;
	size_t len;             /* with the line end */
	size_t text;            /* without the final "\r\n" (or "\n") */
};

/* split - the '\n'-ended lines of buf (buf ends in '\n'); returns the count */
static size_t split(const char *buf, size_t len, struct line *lines)
{
	size_t n = 0, at = 0;

	while (at < len) {
		const char *nl = memchr(buf + at, '\n', len - at);
		size_t l = nl ? (size_t)(nl - (buf + at)) + 1 : len - at;
		lines[n].p = buf + at;
		lines[n].len = l;
		lines[n].text = l - (nl != NULL);
		if (nl && lines[n].text > 0 && lines[n].p[lines[n].text - 1] == '\r')
			lines[n].text--;
		n++;
		at += l;
	}
	return n;
}

/* well_formed - a whole reply as read_reply() stores it */
static int well_formed(const struct line *lines, size_t n)
{
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		int last = 0;
		if (lines[i].len != lines[i].text + 2 ||
		    memcmp(lines[i].p + lines[i].text, "\r\n", 2) != 0)
			return 0;
		if (reply_line_code(lines[i].p, lines[i].text, &last) < 0 || last != (i == n - 1))
			return 0;
	}
	return 1;
}

/* hidden_line - does a non-first line advertise a hidden keyword? */
static int hidden_line(const struct line *l)
{
	size_t k = 4;

	if (l->text <= 4)
		return 0;
	while (k < l->text && l->p[k] != ' ' && l->p[k] != '\t')
		k++;
	for (size_t i = 0; i < sizeof(hidden) / sizeof(*hidden); i++)
		if (strlen(hidden[i]) == k - 4 && strncasecmp(l->p + 4, hidden[i], k - 4) == 0)
			return 1;
	return 0;
}

/*
 * dropped - the lines ehlo_filter is meant to drop: the keyword is the text
 * from index 4 up to the first space, the text being the line without every
 * CR and LF at its end (a little stricter than hidden_line)
 */
static int dropped(const struct line *l)
{
	size_t k = 4, stripped = l->len;

	while (stripped > 0 && (l->p[stripped - 1] == '\r' || l->p[stripped - 1] == '\n'))
		stripped--;
	if (stripped <= 4)
		return 0;
	while (k < stripped && l->p[k] != ' ' && l->p[k] != '\t')
		k++;
	for (size_t i = 0; i < sizeof(hidden) / sizeof(*hidden); i++)
		if (strlen(hidden[i]) == k - 4 && strncasecmp(l->p + 4, hidden[i], k - 4) == 0)
			return 1;
	return 0;
}

static void check_ehlo(const char *src, size_t len)
{
	char *buf = malloc(len ? len : 1), *again;
	struct line *in = malloc((len + 1) * sizeof(*in)), *out = malloc((len + 1) * sizeof(*out));
	size_t n_in, n_out, new_len, kept = 0;

	if (!buf || !in || !out)
		abort();
	memcpy(buf, src, len);
	n_in = split(src, len, in);
	new_len = ehlo_filter(buf, len);
	if (new_len > len)
		FAIL("ehlo_filter grew the reply from %zu to %zu bytes", len, new_len);
	if (!well_formed(in, n_in))
		goto done;

	n_out = split(buf, new_len, out);
	if (!well_formed(out, n_out))
		FAIL("ehlo_filter made a malformed reply from a well-formed one (%zu lines -> %zu)",
		     n_in, n_out);
	for (size_t i = 0; i < n_in; i++) {
		if (i > 0 && dropped(&in[i]))
			continue;
		if (kept >= n_out)
			FAIL("input line %zu is missing from the output", i);
		const struct line *a = &in[i], *b = &out[kept];
		if (a->len != b->len || memcmp(a->p, b->p, 3) != 0 ||
		    (a->len > 4 && memcmp(a->p + 4, b->p + 4, a->len - 4) != 0))
			FAIL("input line %zu changed in the output (as line %zu)", i, kept);
		kept++;
	}
	if (kept != n_out)
		FAIL("the output has %zu lines, %zu expected", n_out, kept);
	for (size_t i = 1; i < n_out; i++)
		if (hidden_line(&out[i]))
			FAIL("a hidden keyword survived in output line %zu", i);

	again = malloc(new_len ? new_len : 1);
	if (!again)
		abort();
	memcpy(again, buf, new_len);
	if (ehlo_filter(again, new_len) != new_len || memcmp(again, buf, new_len) != 0)
		FAIL("a second ehlo_filter pass changed the reply");
	free(again);
done:
	free(in);
	free(out);
	free(buf);
}

/* build - mode 1: every payload line becomes an EHLO reply line */
static char *build(const char *p, size_t len, size_t *out_len)
{
	char *r = malloc(7 * len + 16), *o = r;     /* "250-" "\r\n" per line */
	size_t at = 0;

	if (!r)
		abort();
	do {
		const char *nl = memchr(p + at, '\n', len - at);
		size_t l = nl ? (size_t)(nl - (p + at)) : len - at;
		int last = !nl || (size_t)(nl - p) + 1 == len;
		if (last && l == 0) {
			memcpy(o, "250", 3);
			o += 3;
		} else {
			memcpy(o, last ? "250 " : "250-", 4);
			memcpy(o + 4, p + at, l);
			o += 4 + l;
		}
		memcpy(o, "\r\n", 2);
		o += 2;
		at += l + (nl != NULL);
	} while (at < len);
	*out_len = (size_t)(o - r);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	const char *p = (const char *)data + 1;
	size_t len = size - 1, at = 0;

	check_code(p, len);
	while (at < len) {
		const char *nl = memchr(p + at, '\n', len - at);
		size_t l = nl ? (size_t)(nl - (p + at)) : len - at;
		check_code(p + at, l);
		if (l > 0 && p[at + l - 1] == '\r')
			check_code(p + at, l - 1);
		at += l + 1;
	}

	if (data[0] & 1) {
		size_t n;
		char *r = build(p, len, &n);
		check_ehlo(r, n);
		free(r);
	} else {
		char *r = malloc(len + 2);
		if (!r)
			abort();
		memcpy(r, p, len);
		size_t n = len;
		if (n == 0 || r[n - 1] != '\n') {
			memcpy(r + n, "\r\n", 2);
			n += 2;
		}
		check_ehlo(r, n);
		free(r);
	}
	return 0;
}
