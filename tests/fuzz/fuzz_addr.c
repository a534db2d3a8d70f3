/*
 * fuzz_addr.c - libFuzzer harness for the small parsers:
 * addr_parse (net.c), clamd_verdict (clamd.c), header_valid (spool.c) and
 * printable (clamsmtpd.c)
 *
 * Input: byte 0 picks the default port (25, 10025, 3310) and printable's
 * cap (0..64), byte 1 clamd_verdict's cap; the rest is the text (for the
 * string functions it ends at the first NUL, as argv and the config do).
 *
 * Invariants:
 *  - addr_parse returns 0 or -1; on 0 host and port are NUL-terminated in
 *    their arrays, the kind fits the text (a '/' makes a unix path, copied
 *    whole and shorter than sun_path; a bare port is the text itself; a host
 *    is a slice of the text with only host characters), and every port is
 *    1..5 digits with a value from 1 to 65535;
 *  - clamd_verdict: clean exactly when the first reply (up to the first NUL
 *    or LF) ends in ": OK"; a virus only when it ends in " FOUND" with a
 *    non-empty name after the last ": "; the name is NUL-terminated within
 *    cap and, for a virus, printable; nothing is written past cap;
 *  - header_valid agrees with a reference: "" or "Name:value" with a name
 *    of visible ASCII not starting with a dot, a value of printable ASCII that is not only spaces
 *    (so no CR, LF or other control byte), at most 998 bytes in all;
 *  - printable writes printable ASCII and a NUL within cap and nothing
 *    beyond (nothing at all for cap 0), keeps as much as fits, and marks a
 *    cut with "..." when cap > 4.
 */
#define _GNU_SOURCE
#include "../../clamsmtpd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define FAIL(...) do { fprintf(stderr, "fuzz_addr: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)
#define GUARD 8

static int port_ok(const char *port)
{
	size_t n = strlen(port);
	long v = 0;

	if (n < 1 || n > 5)
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (port[i] < '0' || port[i] > '9')
			return 0;
		v = v * 10 + (port[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

static void check_addr(const char *text, const char *default_port)
{
	struct addr a;
	int rc;

	memset(&a, 0x5A, sizeof(a));
	rc = addr_parse(text, default_port, &a);
	if (rc != 0 && rc != -1)
		FAIL("addr_parse returned %d", rc);
	if (rc != 0)
		return;
	if (!memchr(a.host, '\0', sizeof(a.host)) || !memchr(a.port, '\0', sizeof(a.port)))
		FAIL("addr_parse left host or port without a NUL");
	switch (a.kind) {
	case ADDR_UNIX:
		if (!strchr(text, '/') || strcmp(a.host, text) != 0 ||
		    strlen(a.host) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			FAIL("bad unix address from \"%s\"", text);
		break;
	case ADDR_PORT:
		if (strcmp(a.port, text) != 0 || a.host[0] || !port_ok(a.port))
			FAIL("bad bare port \"%s\" from \"%s\"", a.port, text);
		break;
	case ADDR_INET: {
		size_t hl = strlen(a.host);
		const char *at = strstr(text, a.host);
		if (hl == 0 || !at || strchr(text, '/'))
			FAIL("bad host \"%s\" from \"%s\"", a.host, text);
		if (strspn(a.host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			   "0123456789.-:_%*") != hl)
			FAIL("host \"%s\" has a byte no host name has", a.host);
		if (!port_ok(a.port))
			FAIL("bad port \"%s\" from \"%s\"", a.port, text);
		/* host:port, [v6]:port, host or [v6]: the rest of the text is the port */
		if (text[0] == '[') {
			if (strncmp(text + 1, a.host, hl) != 0 || text[hl + 1] != ']' ||
			    !strchr(a.host, ':'))
				FAIL("bad bracketed host \"%s\" from \"%s\"", a.host, text);
			if (text[hl + 2] ? text[hl + 2] != ':' || strcmp(text + hl + 3, a.port) != 0
					 : strcmp(a.port, default_port) != 0)
				FAIL("bad port \"%s\" from \"%s\"", a.port, text);
		} else {
			if (strncmp(text, a.host, hl) != 0 || strchr(a.host, ':'))
				FAIL("bad host \"%s\" from \"%s\"", a.host, text);
			if (text[hl] ? text[hl] != ':' || strcmp(text + hl + 1, a.port) != 0
				     : strcmp(a.port, default_port) != 0)
				FAIL("bad port \"%s\" from \"%s\"", a.port, text);
		}
		break;
	}
	default:
		FAIL("addr_parse gave kind %d", (int)a.kind);
	}
}

static char *guarded(size_t cap)
{
	char *p = malloc(cap + GUARD);

	if (!p)
		abort();
	memset(p, 0xA5, cap + GUARD);
	return p;
}

static void check_guard(const char *p, size_t from, size_t to, const char *what)
{
	for (size_t i = from; i < to; i++)
		if ((unsigned char)p[i] != 0xA5)
			FAIL("%s wrote byte %zu, beyond its cap %zu", what, i, from);
}

static int is_printable(char c)
{
	return c >= ' ' && c <= '~';
}

/* check_name - NUL within cap; with printable_only, printable before it */
static size_t check_name(const char *name, size_t cap, int printable_only, const char *what)
{
	const char *nul = memchr(name, '\0', cap);

	if (!nul)
		FAIL("%s: no NUL within cap %zu", what, cap);
	for (const char *p = name; printable_only && p < nul; p++)
		if (!is_printable(*p))
			FAIL("%s: byte 0x%02x at %zu is not printable", what, (unsigned char)*p,
			     (size_t)(p - name));
	return (size_t)(nul - name);
}

static void check_verdict(const char *src, size_t len, size_t cap)
{
	char *reply = malloc(len ? len : 1), *name = guarded(cap);
	const char *nul = memchr(src, '\0', len), *nl = memchr(src, '\n', len);
	size_t n = nul ? (size_t)(nul - src) : len;
	int rc, want = SCAN_ERROR;

	if (!reply)
		abort();
	memcpy(reply, src, len);
	if (nl && (size_t)(nl - src) < n)
		n = (size_t)(nl - src);         /* only the first reply counts */
	if (n >= 4 && memcmp(src + n - 4, ": OK", 4) == 0) {
		want = SCAN_CLEAN;
	} else if (n > 6 && memcmp(src + n - 6, " FOUND", 6) == 0) {
		size_t stop = n - 6;
		for (size_t s = stop; s >= 2; s--)
			if (src[s - 1] == ' ' && src[s - 2] == ':') {
				if (s < stop)
					want = SCAN_VIRUS;
				break;
			}
	}
	rc = clamd_verdict(reply, len, name, cap);
	if (rc != want)
		FAIL("clamd_verdict said %d for a %zu-byte reply, expected %d", rc, len, want);
	check_guard(name, cap, cap + GUARD, "clamd_verdict");
	if (cap > 0) {
		size_t l = check_name(name, cap, rc == SCAN_VIRUS, "clamd_verdict name");
		if (rc == SCAN_VIRUS && cap > 1 && l == 0)
			FAIL("clamd_verdict: empty virus name");
		if (rc == SCAN_CLEAN && cap >= 3 && strcmp(name, "OK") != 0)
			FAIL("clamd_verdict: clean, but the name is \"%s\"", name);
	}
	free(name);
	free(reply);
}

static void check_header(const char *h)
{
	const char *colon = strchr(h, ':'), *value;
	size_t len = strlen(h);
	int want = 1, rc;

	if (*h) {
		want = colon && colon > h && h[0] != '.' && len <= 998;
		for (const char *p = h; want && p < colon; p++)
			want = *p > ' ' && *p <= '~';
		for (value = colon ? colon + 1 : h; want && *value == ' '; value++)
			;
		want = want && *value;
		for (const char *p = colon ? colon + 1 : h; want && *p; p++)
			want = is_printable(*p);
	}
	rc = header_valid(h);
	if (rc != want)
		FAIL("header_valid said %d for a %zu-byte header, expected %d", rc, len, want);
	if (rc && *h) {
		for (const char *p = h; *p; p++)
			if (!is_printable(*p))      /* no CR, LF or any control byte */
				FAIL("header_valid accepted byte 0x%02x", (unsigned char)*p);
	}
}

static void check_printable(const char *src, size_t len, size_t cap)
{
	char *in = malloc(len ? len : 1), *out = guarded(cap);

	if (!in)
		abort();
	memcpy(in, src, len);
	printable(out, cap, in, len);
	check_guard(out, cap, cap + GUARD, "printable");
	if (cap > 0) {
		size_t o = check_name(out, cap, 1, "printable"), keep = len < cap - 1 ? len : cap - 1;
		int cut = len >= cap && cap > 4;
		if (o != keep)
			FAIL("printable kept %zu of %zu bytes with cap %zu", o, len, cap);
		for (size_t i = 0; i < (cut ? o - 3 : o); i++)
			if (out[i] != (is_printable(in[i]) ? in[i] : '?'))
				FAIL("printable changed byte %zu", i);
		if (cut && memcmp(out + o - 3, "...", 3) != 0)
			FAIL("printable cut %zu bytes to cap %zu without \"...\"", len, cap);
	}
	free(out);
	free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const ports[] = { "25", "10025", "3310" };

	if (size < 2)
		return 0;
	const char *p = (const char *)data + 2;
	size_t len = size - 2;
	char *text = malloc(len + 1);

	if (!text)
		abort();
	memcpy(text, p, len);
	text[len] = '\0';
	check_addr(text, ports[data[0] % 3]);
	check_header(text);
	check_printable(p, len, data[0] % 65);
	check_verdict(p, len, data[1]);
	check_verdict(p, len, 300);
	free(text);
	return 0;
}
