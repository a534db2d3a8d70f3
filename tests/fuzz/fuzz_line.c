/*
 * fuzz_line.c - libFuzzer harness for conn_read_line (net.c)
 *
 * The payload goes into a memfd that is the connection's rfd; read() is
 * wrapped (link with -Wl,--wrap=read) so that each read on it returns at
 * most a fuzzer-chosen number of bytes, which puts the buffer boundaries
 * anywhere: inside a line, between CR and LF, just before a line end.
 *
 * Input: byte 0: low 3 bits pick cap (16, 2048, 0, 1, 2, 3, 4094, 64),
 * the next 4 bits how many read-size bytes follow (each gives at most
 * byte+1 bytes per read, used in turn; none: unlimited); then the payload.
 *
 * Invariants, checked against a reference that splits the payload at '\n'
 * (a line is the bytes before '\n', without the CR of a CRLF), whatever the
 * read boundaries:
 *  - lines come back in order; a line of at most cap bytes is IO_OK with
 *    len <= cap, no '\n', and exactly the line's bytes (a CR inside or a
 *    second CR before the CRLF is data);
 *  - a longer line is IO_TOO_LONG, consumed to its '\n' (the next call
 *    returns the next line), with len == cap and line[0..cap) the start of
 *    the line, which read_reply() relays; FUZZ_SKIP=toolong-prefix leaves
 *    that last check out;
 *  - the result does not depend on where reads end: a line of exactly cap
 *    bytes whose CRLF is split between two reads is IO_OK, and a line that
 *    itself ends in CR (CR CR LF) keeps that CR however it is split
 *    (FUZZ_SKIP=line-cr leaves these two checks out);
 *  - the last, unterminated piece gives IO_EOF, and by then everything was
 *    consumed but perhaps a final CR still waiting for its LF;
 *  - nothing is written to line beyond cap (ASan: line is exactly cap bytes).
 */
#define _GNU_SOURCE
#include "../../clamsmtpd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FAIL(...) do { fprintf(stderr, "fuzz_line: " __VA_ARGS__); fputc('\n', stderr); abort(); } while (0)

ssize_t __real_read(int fd, void *buf, size_t n);
ssize_t __wrap_read(int fd, void *buf, size_t n);

static int data_fd = -1;
static const uint8_t *read_sizes;
static size_t n_read_sizes, read_index, reads;

/* __wrap_read - net.c's read(): short reads on our memfd, the rest as is */
ssize_t __wrap_read(int fd, void *buf, size_t n)
{
	if (fd == data_fd) {
		reads++;
		if (n_read_sizes) {
			size_t most = (size_t)read_sizes[read_index++ % n_read_sizes] + 1;
			if (n > most)
				n = most;
		}
	}
	return __real_read(fd, buf, n);
}

static int skip_prefix_check, skip_cr_check;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *skip = getenv("FUZZ_SKIP");

	(void)argc;
	(void)argv;
	skip_prefix_check = skip && strstr(skip, "toolong-prefix") != NULL;
	skip_cr_check = skip && strstr(skip, "line-cr") != NULL;
	data_fd = memfd_create("fuzz_line", MFD_CLOEXEC);
	if (data_fd < 0) {
		perror("memfd_create");
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[] = { 16, 2048, 0, 1, 2, 3, 4094, 64 };
	static struct conn c;
	size_t cap, at = 0, consumed = 0;
	char *line;

	if (size == 0)
		return 0;
	cap = caps[data[0] & 7];
	n_read_sizes = (data[0] >> 3) & 15;
	if (n_read_sizes > size - 1)
		n_read_sizes = size - 1;
	read_sizes = data + 1;
	read_index = reads = 0;
	const char *p = (const char *)data + 1 + n_read_sizes;
	size_t len = size - 1 - n_read_sizes;

	if (ftruncate(data_fd, 0) < 0 || pwrite(data_fd, p, len, 0) != (ssize_t)len ||
	    lseek(data_fd, 0, SEEK_SET) != 0)
		abort();
	conn_init(&c, data_fd, data_fd, "fuzz", 5);
	line = malloc(cap ? cap : 1);
	if (!line)
		abort();

	for (;;) {
		const char *nl = memchr(p + at, '\n', len - at);
		size_t raw = nl ? (size_t)(nl - (p + at)) : len - at, got = (size_t)-1;
		int rc;

		memset(line, 0x5A, cap ? cap : 1);
		rc = conn_read_line(&c, line, cap, &got);
		if (!nl) {
			if (rc != IO_EOF)
				FAIL("at %zu: %d at the end of the input, IO_EOF expected", at, rc);
			consumed += raw;
			break;
		}
		/* The line is what stands before '\n', without the CR of a CRLF. */
		size_t want = raw > 0 && p[at + raw - 1] == '\r' ? raw - 1 : raw;
		/* FUZZ_SKIP=line-cr: let the CR questions pass (see the comment above) */
		if (skip_cr_check && want < raw && want == cap && rc == IO_TOO_LONG)
			goto next;
		if (skip_cr_check && rc == IO_OK && want > 0 && p[at + want - 1] == '\r' &&
		    got == want - 1 && memcmp(line, p + at, got) == 0)
			goto next;
		if (want > cap) {
			if (rc != IO_TOO_LONG)
				FAIL("at %zu: a %zu-byte line with cap %zu gave %d, IO_TOO_LONG expected",
				     at, want, cap, rc);
			if (!skip_prefix_check && (got != cap || memcmp(line, p + at, cap) != 0))
				FAIL("at %zu: IO_TOO_LONG, but line holds %zu bytes that are not the "
				     "first %zu of the %zu-byte line (read_reply relays them)",
				     at, got, cap, want);
		} else {
			if (rc != IO_OK)
				FAIL("at %zu: a %zu-byte line with cap %zu gave %d, IO_OK expected",
				     at, want, cap, rc);
			if (got > cap || got != want || memcmp(line, p + at, got) != 0 ||
			    memchr(line, '\n', got))
				FAIL("at %zu: got %zu bytes, the line is %zu bytes", at, got, want);
		}
next:
		at += raw + 1;
		consumed += raw + 1;
	}
	/* At EOF a lone CR may stay unread: it was waiting for its LF. */
	size_t unread = c.in_len - c.in_pos;
	if (consumed != len || unread > 1 || (unread == 1 && c.in[c.in_pos] != '\r'))
		FAIL("consumed %zu of %zu bytes (%zu left in the buffer)", consumed, len,
		     c.in_len - c.in_pos);
	if (lseek(data_fd, 0, SEEK_CUR) != (off_t)len)
		FAIL("the reader stopped at %lld of %zu bytes", (long long)lseek(data_fd, 0, SEEK_CUR), len);
	free(line);
	return 0;
}
