/*
 * procmon - run a command, sample its process tree, report CPU and memory
 *
 * Usage: procmon [-i INTERVAL_MS] -o OUTFILE -- COMMAND [ARGS...]
 *
 * Forks and runs COMMAND. Every INTERVAL_MS (default 20) it walks /proc
 * (ppid links; this kernel has no /proc/PID/task/TID/children), finds every
 * descendant of COMMAND, and reads VmHWM and VmRSS from /proc/PID/status.
 * SIGTERM or SIGINT is passed on to COMMAND (SIGKILL 10 s later if it is
 * still there). When COMMAND has exited, one line of key=value pairs goes
 * to OUTFILE (sizes in KiB, CPU in microseconds):
 *   status          COMMAND's wait status
 *   cpu_us          user+system CPU of COMMAND and of every descendant that
 *                   was waited for (getrusage RUSAGE_CHILDREN: exact, and it
 *                   includes the sessions a listener forked and reaped)
 *   maxrss          largest RSS of any one of those processes (ru_maxrss)
 *   samples         how many walks were made
 *   root_rss0       VmRSS of COMMAND at the first sample
 *   root_hwm        VmHWM of COMMAND at the last sample
 *   root_rss_max    largest VmRSS of COMMAND
 *   child_hwm_max   largest VmHWM of any descendant seen
 *   child_hwm_med   median of the VmHWM of each descendant seen
 *   children_seen   how many distinct descendants were seen
 *   children_max    most descendants alive at one sample
 *   tree_rss_max    largest sum of VmRSS over COMMAND and its descendants
 * Short-lived children that live between two samples are not seen; they
 * have the same VmHWM as their siblings, which is what the median is for.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXP 65536
#define MAXSEEN 200000

static volatile sig_atomic_t done;
static void on_sig(int s) { (void)s; done = 1; }

static int pids[MAXP], ppids[MAXP], npids;
static struct { int pid; long hwm; } seen[MAXSEEN];
static int nseen;

static int read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, cap - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return (int)n;
}

static int status_kb(int pid, long *hwm, long *rss)
{
	char path[64], buf[4096], *p;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	if (read_file(path, buf, sizeof(buf)) < 0)
		return -1;
	*hwm = *rss = 0;
	if ((p = strstr(buf, "VmHWM:")))
		*hwm = strtol(p + 6, NULL, 10);
	if ((p = strstr(buf, "VmRSS:")))
		*rss = strtol(p + 6, NULL, 10);
	return 0;
}

static void scan_parents(void)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	char path[300], buf[512];

	npids = 0;
	if (!d)
		return;
	while ((e = readdir(d)) && npids < MAXP) {
		if (!isdigit((unsigned char)e->d_name[0]))
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if (read_file(path, buf, sizeof(buf)) < 0)
			continue;
		char *close_paren = strrchr(buf, ')');
		int ppid;
		char state;
		if (!close_paren || sscanf(close_paren + 2, "%c %d", &state, &ppid) != 2)
			continue;
		if (state == 'Z')
			continue;
		pids[npids] = atoi(e->d_name);
		ppids[npids] = ppid;
		npids++;
	}
	closedir(d);
}

static int is_descendant(int pid, int root)
{
	for (int depth = 0; depth < 64; depth++) {
		int parent = -1;
		for (int i = 0; i < npids; i++)
			if (pids[i] == pid) {
				parent = ppids[i];
				break;
			}
		if (parent == root)
			return 1;
		if (parent <= 1)
			return 0;
		pid = parent;
	}
	return 0;
}

static void remember(int pid, long hwm)
{
	for (int i = nseen - 1; i >= 0; i--)
		if (seen[i].pid == pid) {
			if (hwm > seen[i].hwm)
				seen[i].hwm = hwm;
			return;
		}
	if (nseen < MAXSEEN) {
		seen[nseen].pid = pid;
		seen[nseen].hwm = hwm;
		nseen++;
	}
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	struct sigaction sa = { .sa_handler = on_sig };
	long samples = 0, root_rss0 = -1, root_hwm = 0, root_rss_max = 0;
	long child_hwm_max = 0, children_max = 0, tree_rss_max = 0;
	int root, interval = 20, c, status = 0, forwarded = 0;
	const char *outfile = NULL;
	struct timespec term_at = { 0, 0 };

	while ((c = getopt(argc, argv, "+i:o:")) != -1) {
		switch (c) {
		case 'i': interval = atoi(optarg); break;
		case 'o': outfile = optarg; break;
		default: goto usage;
		}
	}
	if (!outfile || optind >= argc || interval < 1)
		goto usage;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	root = fork();
	if (root < 0) {
		perror("procmon: fork");
		return 2;
	}
	if (root == 0) {
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		execvp(argv[optind], argv + optind);
		perror(argv[optind]);
		_exit(127);
	}
	for (;;) {
		long hwm, rss, tree = 0, alive = 0;
		pid_t w = waitpid(root, &status, WNOHANG);

		if (w == root)
			break;
		if (done && !forwarded) {
			kill(root, SIGTERM);
			forwarded = 1;
			clock_gettime(CLOCK_MONOTONIC, &term_at);
		}
		if (forwarded) {
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec - term_at.tv_sec > 10 && forwarded == 1) {
				kill(root, SIGKILL);
				forwarded = 2;
			}
		}
		if (status_kb(root, &hwm, &rss) == 0) {
			if (root_rss0 < 0)
				root_rss0 = rss;
			root_hwm = hwm;
			if (rss > root_rss_max)
				root_rss_max = rss;
			tree += rss;
			scan_parents();
			for (int i = 0; i < npids; i++) {
				if (pids[i] == root || !is_descendant(pids[i], root))
					continue;
				long chwm, crss;
				if (status_kb(pids[i], &chwm, &crss) < 0)
					continue;
				alive++;
				tree += crss;
				if (chwm > child_hwm_max)
					child_hwm_max = chwm;
				remember(pids[i], chwm);
			}
			if (alive > children_max)
				children_max = alive;
			if (tree > tree_rss_max)
				tree_rss_max = tree;
			samples++;
		}
		struct timespec ts = { interval / 1000, (long)(interval % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	struct rusage ru;
	getrusage(RUSAGE_CHILDREN, &ru);
	long long cpu_us = (long long)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000LL +
			   ru.ru_utime.tv_usec + ru.ru_stime.tv_usec;
	long med = 0;
	if (nseen > 0) {
		long *v = malloc(sizeof(long) * (size_t)nseen);
		for (int i = 0; i < nseen; i++)
			v[i] = seen[i].hwm;
		qsort(v, (size_t)nseen, sizeof(long), cmp_long);
		med = v[nseen / 2];
		free(v);
	}
	FILE *out = fopen(outfile, "w");
	if (!out) {
		perror(outfile);
		return 2;
	}
	fprintf(out, "status=%d cpu_us=%lld maxrss=%ld samples=%ld root_rss0=%ld root_hwm=%ld "
		"root_rss_max=%ld child_hwm_max=%ld child_hwm_med=%ld children_seen=%d "
		"children_max=%ld tree_rss_max=%ld\n",
		status, cpu_us, ru.ru_maxrss, samples, root_rss0 < 0 ? 0 : root_rss0, root_hwm,
		root_rss_max, child_hwm_max, med, nseen, children_max, tree_rss_max);
	fclose(out);
	return 0;
usage:
	fprintf(stderr, "usage: procmon [-i INTERVAL_MS] -o OUTFILE -- COMMAND [ARGS...]\n");
	return 2;
}
