/*
 * clamd-load - "clamd alone": scan one message file N times at concurrency C
 *
 * Usage: clamd-load [-c concurrency] [-n count] [-m fildes|instream] [-q]
 *                   clamaddr file
 *
 * clamaddr is a unix socket path (needed for fildes) or host:port (instream).
 * fildes:   every scan opens the file afresh and passes the descriptor with
 *           zFILDES, as clamsmtpd does with its spool file.
 * instream: every scan streams the bytes (read into memory once) with
 *           zINSTREAM in 64 KiB chunks.
 * One scan per clamd connection, C threads, N scans in all. Prints one line:
 *   scans=N errors=E seconds=S
 * and exits 1 if any scan did not answer "...: OK".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536

static const char *clamaddr, *path;
static int use_fildes = 1, quiet;
static long total = 1;
static atomic_long next_scan, errors;
static char *data;
static size_t data_len;

static int connect_clamd(void)
{
	int fd;

	if (strchr(clamaddr, '/')) {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", clamaddr);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
			goto fail;
		return fd;
	}
	char host[256], *colon;
	snprintf(host, sizeof(host), "%s", clamaddr);
	colon = strrchr(host, ':');
	if (!colon)
		return -1;
	*colon = '\0';
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -1;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		close(fd);
		fd = -1;
	}
	freeaddrinfo(ai);
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int scan_once(void)
{
	char reply[1024];
	size_t got = 0;
	int fd = connect_clamd(), file = -1, ok = -1;

	if (fd < 0)
		return -1;
	if (use_fildes) {
		static const char cmd[] = "zFILDES";
		char byte = 0, control[CMSG_SPACE(sizeof(int))] = { 0 };
		struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = control, .msg_controllen = sizeof(control) };
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);

		file = open(path, O_RDONLY | O_CLOEXEC);
		if (file < 0 || write_all(fd, cmd, sizeof(cmd)) < 0)
			goto out;
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &file, sizeof(int));
		if (sendmsg(fd, &mh, MSG_NOSIGNAL) != 1)
			goto out;
	} else {
		static const char cmd[] = "zINSTREAM";
		char hdr[4];
		if (write_all(fd, cmd, sizeof(cmd)) < 0)
			goto out;
		for (size_t at = 0; at < data_len; at += CHUNK) {
			size_t n = data_len - at < CHUNK ? data_len - at : CHUNK;
			uint32_t be = htonl((uint32_t)n);
			memcpy(hdr, &be, 4);
			if (write_all(fd, hdr, 4) < 0 || write_all(fd, data + at, n) < 0)
				goto out;
		}
		memset(hdr, 0, 4);
		if (write_all(fd, hdr, 4) < 0)
			goto out;
	}
	while (got < sizeof(reply) - 1) {
		ssize_t n = read(fd, reply + got, sizeof(reply) - 1 - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (memchr(reply, '\0', got))
			break;
	}
	reply[got] = '\0';
	ok = got >= 4 && strstr(reply, ": OK") ? 0 : -1;
	if (ok < 0 && !quiet)
		fprintf(stderr, "clamd-load: reply: %s\n", reply);
out:
	if (file >= 0)
		close(file);
	close(fd);
	return ok;
}

static void *worker(void *arg)
{
	(void)arg;
	while (atomic_fetch_add(&next_scan, 1) < total)
		if (scan_once() < 0)
			atomic_fetch_add(&errors, 1);
	return NULL;
}

int main(int argc, char **argv)
{
	int c, conc = 1;
	struct timespec t0, t1;

	while ((c = getopt(argc, argv, "c:n:m:q")) != -1) {
		switch (c) {
		case 'c': conc = atoi(optarg); break;
		case 'n': total = atol(optarg); break;
		case 'm': use_fildes = strcmp(optarg, "instream") != 0; break;
		case 'q': quiet = 1; break;
		default:
			fprintf(stderr, "usage: clamd-load [-c conc] [-n count] [-m fildes|instream] "
				"clamaddr file\n");
			return 2;
		}
	}
	if (optind != argc - 2 || conc < 1 || total < 1) {
		fprintf(stderr, "usage: clamd-load [-c conc] [-n count] [-m fildes|instream] "
			"clamaddr file\n");
		return 2;
	}
	clamaddr = argv[optind];
	path = argv[optind + 1];
	if (use_fildes && !strchr(clamaddr, '/')) {
		fprintf(stderr, "clamd-load: fildes needs a unix socket\n");
		return 2;
	}
	if (!use_fildes) {
		int fd = open(path, O_RDONLY);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) < 0) {
			perror(path);
			return 2;
		}
		data_len = (size_t)st.st_size;
		data = malloc(data_len ? data_len : 1);
		for (size_t at = 0; at < data_len;) {
			ssize_t n = read(fd, data + at, data_len - at);
			if (n <= 0) {
				perror(path);
				return 2;
			}
			at += (size_t)n;
		}
		close(fd);
	}
	if (conc > total)
		conc = (int)total;
	pthread_t *t = calloc((size_t)conc, sizeof(*t));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < conc; i++)
		if (pthread_create(&t[i], NULL, worker, NULL) != 0) {
			perror("pthread_create");
			return 2;
		}
	for (int i = 0; i < conc; i++)
		pthread_join(t[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("scans=%ld errors=%ld seconds=%.6f\n", total, (long)errors,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return errors ? 1 : 0;
}
