/*
 * clamsmtpd.c - options, logging, and the two ways to run
 *
 * stdio mode: inetd, xinetd, systemd Accept=yes or a pipe gives us the
 * client on fd 0/1; we serve it and exit. Listener mode: we accept, fork,
 * and run exactly the same session code in the child. Everything about
 * one session lives in smtp.c.
 */
#define _GNU_SOURCE
#include "clamsmtpd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <grp.h>
#include <pwd.h>
#include <time.h>
#include <syslog.h>
#include <unistd.h>

#define USAGE "usage: clamsmtpd [-bPqrSTv] [-c clamaddr]... [-d level] [-D tmpdir] " \
	"[-f tempfail|pass] [-h header] [-l listenaddr] [-m maxconn] [-p pidfile] [-s size] " \
	"[-t timeout] [-u user] [-x program] serveraddr"
#define MAX_LISTEN 16
#define ACCEPT_PAUSE_MS 250     /* SPEC 2: back off this long when accept() lacks resources */

static struct config config = {
	.debug = -1,
	.tmpdir = "/tmp",
	.header = DEFAULT_HEADER,
	.maxconn = DEFAULT_MAXCONN,
	.timeout = DEFAULT_TIMEOUT,
};
const struct config *cfg = &config;

volatile sig_atomic_t stop_requested;
int stop_point;
static int log_to_stderr, log_level = LOG_INFO;
static int stderr_was_closed;    /* fd 2 was closed at start: it is /dev/null now */

/* printable - peer text made safe for a log line: no control bytes, bounded */
void printable(char *out, size_t cap, const char *in, size_t len)
{
	size_t o = 0;

	if (cap == 0)
		return;
	for (size_t i = 0; i < len && o + 1 < cap; i++)
		out[o++] = in[i] >= ' ' && in[i] <= '~' ? in[i] : '?';
	if (o + 1 == cap && len >= cap && cap > 4)
		memcpy(out + cap - 4, "...", 3);
	out[o] = '\0';
}

/* utf8_length - the length of the valid UTF-8 sequence at in, 0 if none */
static size_t utf8_length(const unsigned char *in, size_t len)
{
	size_t need = in[0] >= 0xf0 && in[0] <= 0xf4 ? 4 : in[0] >= 0xe0 ? 3 : in[0] >= 0xc2 ? 2 : 0;

	if (need == 0 || in[0] > 0xf4 || len < need)
		return 0;
	if (in[0] == 0xc2 && in[1] < 0xa0)
		return 0;               /* C1 controls: a terminal may act on them */
	for (size_t i = 1; i < need; i++)
		if ((in[i] & 0xc0) != 0x80)
			return 0;
	/* No overlong forms, no surrogates, nothing past U+10FFFF. */
	if ((in[0] == 0xe0 && in[1] < 0xa0) || (in[0] == 0xed && in[1] > 0x9f) ||
	    (in[0] == 0xf0 && in[1] < 0x90) || (in[0] == 0xf4 && in[1] > 0x8f))
		return 0;
	return need;
}

/* printable_utf8 - as printable, but valid UTF-8 (SMTPUTF8 addresses) stays */
void printable_utf8(char *out, size_t cap, const char *in, size_t len)
{
	size_t o = 0, i = 0;

	if (cap == 0)
		return;
	while (i < len && o + 1 < cap) {
		size_t n = (unsigned char)in[i] >= 0x80 ? utf8_length((const unsigned char *)in + i, len - i) : 0;
		if (n > 0 && o + n < cap) {
			memcpy(out + o, in + i, n);
			o += n;
			i += n;
			continue;
		}
		if (n > 0)
			break;          /* a character that does not fit whole */
		out[o++] = in[i] >= ' ' && in[i] <= '~' ? in[i] : '?';
		i++;
	}
	if (i < len && cap > 4) {
		while (o > 0 && o + 4 > cap)
			o--;
		while (o > 0 && ((unsigned char)out[o] & 0xc0) == 0x80)
			o--;            /* never cut a character in half */
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* log_open - syslog, or stderr under -d when stderr is not the connection */
void log_open(int debug)
{
	/* Under inetd fd 2 is the connection: nothing but SMTP may go there. */
	log_to_stderr = debug >= 0 && !is_socket(2) && !stderr_was_closed;
	if (debug >= 0)
		log_level = LOG_ERR + debug;
	if (!log_to_stderr)
		openlog("clamsmtpd", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

/* msg - one log line at a syslog level; -d sets how much is shown */
void msg(int level, const char *fmt, ...)
{
	char text[2048];
	va_list ap;

	if (level > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (log_to_stderr)
		fprintf(stderr, "clamsmtpd[%d]: %s\n", (int)getpid(), text);
	else
		syslog(level, "%s", text);
}

/* die_usage - SPEC 1: one line on stderr naming the problem, exit 2 */
static void die_usage(const char *problem, const char *what)
{
	char shown[256];

	/* What the user typed may hold CR, LF or escapes: one printable line only. */
	printable(shown, sizeof(shown), what ? what : "", what ? strlen(what) : 0);
	fprintf(stderr, "clamsmtpd: %s%s%s\n", problem, what ? ": " : "", shown);
	exit(2);
}

/* number - a whole flag value within its range, or die_usage */
static int number(const char *text, int low, int high, const char *flag)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(text, &end, 10);
	if (errno || end == text || *end || n < low || n > high) {
		char problem[80];
		snprintf(problem, sizeof(problem), "%s must be a number from %d to %d",
			 flag, low, high);
		die_usage(problem, text);
	}
	return (int)n;
}

/* fail_policy - -f: what a scan failure does (SPEC 8.2); 1 means pass */
static int fail_policy(const char *text)
{
	if (strcmp(text, "tempfail") == 0)
		return 0;
	if (strcmp(text, "pass") == 0)
		return 1;
	die_usage("-f must be tempfail or pass", text);
	return 0;
}

/* size_value - -s: bytes, or k, M, G multiples of 1024 (SPEC 8.3) */
static off_t size_value(const char *text)
{
	char *end;
	unsigned long long n, unit = 1;

	errno = 0;
	n = strtoull(text, &end, 10);
	if (*end == 'k' || *end == 'K')
		unit = 1024, end++;
	else if (*end == 'M' || *end == 'm')    /* clamd.conf takes both cases too */
		unit = 1024 * 1024, end++;
	else if (*end == 'G' || *end == 'g')
		unit = 1024 * 1024 * 1024, end++;
	if (errno || end == text || !(text[0] >= '0' && text[0] <= '9') || *end || n == 0 ||
	    n > (1ULL << 50) / unit)
		die_usage("-s must be a size above 0, in bytes or with k, M or G", text);
	return (off_t)(n * unit);
}

/* user_entry - -u: a known user, and one we can become (SPEC 9.1) */
static struct passwd *user_entry(const char *user)
{
	struct passwd *pw = getpwnam(user);

	if (!pw)
		die_usage("-u names no such user", user);
	if (geteuid() != 0 && pw->pw_uid != geteuid())
		die_usage("-u names another user, and only root can switch", user);
	return pw;
}

/*
 * drop_privileges - SPEC 9.1: the user's supplementary groups, its group,
 * its uid, in that order; then prove that root cannot be had back
 */
static int drop_privileges(char *why, size_t cap)
{
	struct passwd *pw = cfg->user ? user_entry(cfg->user) : NULL;

	if (!pw || geteuid() != 0)
		return 0;       /* user_entry allowed only our own user then */
	if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		snprintf(why, cap, "cannot become user %s: %s", cfg->user, strerror(errno));
		return -1;
	}
	if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0)) {
		snprintf(why, cap, "root could be regained after -u %s", cfg->user);
		msg(LOG_CRIT, "%s; stopping", why);    /* stderr only if it is not the client */
		abort();        /* never serve a client like that */
	}
	return 0;
}

/* become_user - -u for stdio mode and -T: one line on stderr if it fails */
static void become_user(void)
{
	char why[512];

	if (drop_privileges(why, sizeof(why)) < 0) {
		fprintf(stderr, "clamsmtpd: %s\n", why);
		exit(1);
	}
}

/* check_hook - -x: an absolute path to an executable regular file */
static void check_hook(const char *program)
{
	struct stat st;

	if (program[0] != '/')
		die_usage("-x program must be an absolute path", program);
	if (stat(program, &st) < 0 || !S_ISREG(st.st_mode) || access(program, X_OK) < 0)
		die_usage("-x program is not an executable file", program);
}

/* check_tmpdir - SPEC 1: a directory, not world-writable unless sticky */
static void check_tmpdir(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		char why[4200];
		snprintf(why, sizeof(why), "%s: %s", dir, strerror(errno));
		die_usage("-D tmpdir cannot be used", why);
	}
	if (!S_ISDIR(st.st_mode))
		die_usage("-D tmpdir is not a directory", dir);
	if ((st.st_mode & S_IWOTH) && !(st.st_mode & S_ISVTX))
		die_usage("-D tmpdir is world-writable without the sticky bit", dir);
	if (access(dir, W_OK | X_OK) < 0)
		die_usage("-D tmpdir is not writable", dir);
}

/* check_address - refuse to start on an address that cannot be parsed */
static void check_address(const char *text, const char *port, const char *what)
{
	struct addr addr;
	char problem[80];

	snprintf(problem, sizeof(problem), "bad %s", what);
	if (addr_parse(text, port, &addr) < 0)
		die_usage(problem, text);
}

/*
 * absolute - a path made absolute once, at start-up: the listener changes
 * to / when it becomes a daemon, and a relative -D would then point at an
 * unchecked directory.
 */
static const char *absolute(const char *path)
{
	static char cwd[4096];
	char *joined;

	if (!path || path[0] == '/')
		return path;
	if (!cwd[0] && !getcwd(cwd, sizeof(cwd)))
		die_usage("cannot find the current directory", strerror(errno));
	if (asprintf(&joined, "%s/%s", cwd, path) < 0)
		die_usage("out of memory", NULL);
	return joined;
}

/* is_path - the address form that names a unix socket (SPEC 1) */
static int is_path(const char *address)
{
	return address && strchr(address, '/');
}

/* parse_options - every flag checked before anything starts */
static void parse_options(int argc, char **argv)
{
	int c;

	opterr = 0;
	while ((c = getopt(argc, argv, ":bc:d:D:f:h:l:m:p:Pqrs:St:Tu:vx:")) != -1) {
		switch (c) {
		case 'b': config.bounce = 1; break;
		case 'c':
			if (config.nclamd == CLAMD_MAX)
				die_usage("-c may be given at most 8 times", optarg);
			config.clamaddr[config.nclamd++] = optarg;
			break;
		case 'd': config.debug = number(optarg, 0, 4, "-d level"); break;
		case 'D': config.tmpdir = optarg; break;
		case 'f': config.fail_open = fail_policy(optarg); break;
		case 'h': config.header = optarg; break;
		case 'l': config.listenaddr = optarg; break;
		case 'm': config.maxconn = number(optarg, 1, 100000, "-m maxconn"); break;
		case 'p': config.pidfile = optarg; break;
		case 'q': config.quarantine = 1; break;
		case 'P': config.pass_infected = 1; break;
		case 'r': config.obsolete_r = 1; break;
		case 's': config.max_scan = size_value(optarg); break;
		case 'S': config.mark_clean = 1; break;
		case 't': config.timeout = number(optarg, 1, 86400, "-t timeout"); break;
		case 'v': printf("clamsmtpd %s\n", VERSION); exit(0);
		case 'x': config.hook = optarg; break;
		case 'T': config.self_test = 1; break;
		case 'u': config.user = optarg; break;
		case ':':
			fprintf(stderr, "clamsmtpd: option -%c needs a value; %s\n", optopt, USAGE);
			exit(2);
		default:
			if (optopt == '?') {
				printf("%s\n", USAGE);
				exit(0);
			}
			fprintf(stderr, "clamsmtpd: unknown option -%c; %s\n",
				optopt > ' ' && optopt <= '~' ? optopt : '?', USAGE);
			exit(2);
		}
	}
	if (optind != argc - 1)
		die_usage(optind < argc ? "only one serveraddr may be given; " USAGE
					: "serveraddr is missing; " USAGE, NULL);
	config.serveraddr = argv[optind];
	config.tmpdir = absolute(config.tmpdir);
	config.pidfile = absolute(config.pidfile);
	if (is_path(config.serveraddr))
		config.serveraddr = absolute(config.serveraddr);
	for (int i = 0; i < config.nclamd; i++)
		if (is_path(config.clamaddr[i]))
			config.clamaddr[i] = absolute(config.clamaddr[i]);
	if (is_path(config.listenaddr))
		config.listenaddr = absolute(config.listenaddr);
	check_address(config.serveraddr, "25", "serveraddr");
	for (int i = 0; i < config.nclamd; i++)
		check_address(config.clamaddr[i], "3310", "-c clamaddr");
	if (config.hook)
		check_hook(config.hook);
	if (config.user)
		user_entry(config.user);
	if (config.bounce && config.pass_infected)
		die_usage("-b rejects infected mail and -P passes it on: give one of them", NULL);
	if (config.listenaddr)
		check_address(config.listenaddr, "10025", "-l listenaddr");
	if (!header_valid(config.header))
		die_usage("-h header must be 'Name: value', printable, on one line", config.header);
	check_tmpdir(config.tmpdir);
}

/* on_stop - SIGTERM/SIGINT: finish what is running, then stop */
static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* on_child - only wakes ppoll; the listener reaps in its loop */
static void on_child(int sig)
{
	(void)sig;
}

/*
 * The listener's state. sessions holds the pid of every live session, so
 * that a stop can be passed on to each (SPEC 2); live counts them. The
 * pidfile is opened before we daemonise, so that its errors reach the
 * terminal, and written once we are the daemon. ready_fd is the daemon's
 * end of the pipe its starting parent waits on.
 */
static pid_t *sessions;
static int live;
static int pidfile_fd = -1, pidfile_ours;   /* ours: we created it or wrote our pid */
static int ready_fd = -1;
static int accept_starving;     /* accept() is failing for lack of resources */

/* pidfile_remove - on exit; after -u its directory may no longer let us */
static void pidfile_remove(const char *path)
{
	if (unlink(path) < 0 && errno != ENOENT)
		msg(LOG_WARNING, "cannot remove pidfile %s: %s", path, strerror(errno));
}

/* start_failed - the listener cannot start: tell whoever started it, exit 1 */
static void start_failed(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void start_failed(const char *fmt, ...)
{
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (ready_fd >= 0) {
		/* We are the daemon: the parent waiting in daemonise prints it. */
		if (write(ready_fd, text, strlen(text)) < 0)
			msg(LOG_ERR, "cannot tell the starting process: %s", strerror(errno));
	} else {
		fprintf(stderr, "clamsmtpd: %s\n", text);
	}
	if (!log_to_stderr)
		msg(LOG_ERR, "%s", text);
	if (pidfile_ours)
		pidfile_remove(cfg->pidfile);
	exit(1);
}

/*
 * pidfile_open - SPEC 2: open the pidfile without following a symlink and
 * refuse to start over a listener that is still running. Nothing is
 * truncated here: only pidfile_write does that, once we run.
 */
static void pidfile_open(const char *path)
{
	const int flags = O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC;
	struct stat st;
	char text[32];
	ssize_t n;
	long pid;

	pidfile_fd = open(path, flags);
	if (pidfile_fd < 0 && errno == ENOENT) {
		pidfile_fd = open(path, flags | O_CREAT | O_EXCL, 0644);
		pidfile_ours = pidfile_fd >= 0;
	}
	if (pidfile_fd < 0)
		start_failed("cannot open pidfile %s: %s", path,
			     errno == ELOOP ? "it is a symbolic link" : strerror(errno));
	/* A FIFO would block us, a hard link would let us write over another file. */
	if (fstat(pidfile_fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1)
		start_failed("pidfile %s is not a regular file with one name", path);
	n = pread(pidfile_fd, text, sizeof(text) - 1, 0);
	if (n <= 0)
		return;
	text[n] = '\0';
	pid = strtol(text, NULL, 10);
	/* Our own pid is stale: a container restarts us with the pid we had. */
	if (pid > 0 && pid <= INT_MAX && pid != (long)getpid() &&
	    (kill((pid_t)pid, 0) == 0 || errno == EPERM))
		start_failed("%s names process %ld, which is running", path, pid);
}

/* pidfile_write - our pid, in the file pidfile_open opened; emptied only now */
static void pidfile_write(const char *path)
{
	char text[24];
	int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
	ssize_t n = 0;

	if (ftruncate(pidfile_fd, 0) < 0 || (n = pwrite(pidfile_fd, text, (size_t)len, 0)) != len) {
		if (n >= 0)
			errno = EIO;    /* a short write says nothing in errno */
		start_failed("cannot write pidfile %s: %s", path, strerror(errno));
	}
	if (close(pidfile_fd) < 0)
		start_failed("cannot write pidfile %s: %s", path, strerror(errno));
	pidfile_fd = -1;
	pidfile_ours = 1;
}

/* inherited_sockets - systemd Accept=no: LISTEN_FDS sockets from fd 3 */
static int inherited_sockets(int *fds)
{
	const char *pid = getenv("LISTEN_PID"), *count = getenv("LISTEN_FDS");
	int n, listening;
	socklen_t len = sizeof(listening);

	if (!pid || !count || atol(pid) != (long)getpid())
		return 0;
	n = atoi(count);
	if (n < 1 || n > MAX_LISTEN)
		start_failed("LISTEN_FDS must be 1 to %d", MAX_LISTEN);
	for (int i = 0; i < n; i++) {
		fds[i] = 3 + i;
		if (getsockopt(fds[i], SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)
			start_failed("LISTEN_FDS: fd %d is not a listening socket", fds[i]);
		fcntl(fds[i], F_SETFD, FD_CLOEXEC);
	}
	if (cfg->listenaddr)
		msg(LOG_NOTICE, "serving the sockets systemd passed; -l %s is not used", cfg->listenaddr);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return n;
}

/* open_listener - -l (every address a name resolves to), or port 10025 on every local address */
static int open_listener(int *fds)
{
	struct addr addr;
	char why[512];
	int n;

	addr_parse(cfg->listenaddr ? cfg->listenaddr : "10025", "10025", &addr);
	n = addr_listen(&addr, cfg->maxconn, fds, MAX_LISTEN, why, sizeof(why));
	if (n < 0)
		start_failed("cannot listen on %s", why);
	return n;
}

/* log_sockets - one line per listening socket: where we serve */
static void log_sockets(const int *fds, int nfds)
{
	for (int i = 0; i < nfds; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char host[NI_MAXHOST], port[NI_MAXSERV];

		if (getsockname(fds[i], (struct sockaddr *)&ss, &len) < 0)
			msg(LOG_WARNING, "listening socket %d has no address: %s", fds[i], strerror(errno));
		else if (ss.ss_family == AF_UNIX)
			msg(LOG_INFO, "listening on %s", ((struct sockaddr_un *)&ss)->sun_path);
		else if (getnameinfo((struct sockaddr *)&ss, len, host, sizeof(host), port, sizeof(port),
				     NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			msg(LOG_INFO, "listening on %s port %s", host, port);
	}
}

/* wait_ready - the starting parent: exit 0 once the daemon is ready, 1 with its reason if not */
static void wait_ready(int fd)
{
	char text[1024];
	size_t len = 0;
	ssize_t n;

	while (len < sizeof(text) - 1) {
		n = read(fd, text + len, sizeof(text) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (text[0] == '\0')
			_exit(0);       /* listening, pidfile written */
	}
	text[len] = '\0';
	fprintf(stderr, "clamsmtpd: %s\n", len ? text : "the listener ended while starting; see the log");
	_exit(1);
}

/*
 * daemonise - detach from the terminal. The parent exits only once the
 * daemon has written its pidfile (SPEC 2), so an init script that reads
 * the pidfile right after finds it; a daemon that fails tells it why.
 */
static void daemonise(void)
{
	int ready[2], null;
	pid_t pid;

	if (pipe2(ready, O_CLOEXEC) < 0)
		start_failed("cannot make a pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0)
		start_failed("cannot fork: %s", strerror(errno));
	if (pid > 0) {
		close(ready[1]);
		wait_ready(ready[0]);
	}
	close(ready[0]);
	ready_fd = ready[1];
	if (setsid() < 0)
		msg(LOG_ERR, "cannot start a new session: %s", strerror(errno));
	if (chdir("/") < 0)
		msg(LOG_ERR, "cannot chdir to /: %s", strerror(errno));
	/* fds 0-2 were open from the start (std_fds_open): no socket of ours is among them. */
	null = open("/dev/null", O_RDWR);
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		start_failed("cannot open /dev/null: %s", strerror(errno));
	if (null > 2)
		close(null);
}

/* listener_ready - tell the waiting parent that we listen and the pidfile is written */
static void listener_ready(void)
{
	if (ready_fd < 0)
		return;
	if (write(ready_fd, "", 1) != 1)
		msg(LOG_ERR, "cannot tell the starting process we are ready: %s", strerror(errno));
	close(ready_fd);
	ready_fd = -1;
}

/* serve_child - the forked child runs exactly the stdio-mode session */
static void serve_child(int client, int *fds, int nfds, const sigset_t *old_mask)
{
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	signal(SIGCHLD, SIG_DFL);
	sigprocmask(SIG_SETMASK, old_mask, NULL);
	if (dup2(client, 0) < 0 || dup2(client, 1) < 0)
		_exit(1);
	if (client > 1)
		close(client);
	_exit(smtp_session(0, 1));
}

/* peer_text - the client's address for a log line */
static const char *peer_text(int fd, char *text, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0 || ss.ss_family == AF_UNIX ||
	    getnameinfo((struct sockaddr *)&ss, len, text, (socklen_t)cap, NULL, 0, NI_NUMERICHOST) != 0)
		snprintf(text, cap, "a local client");
	return text;
}

/*
 * turn_away - SPEC 2: one 421 and a graceful close, never waiting on the
 * client (over -m, a failed fork, a stop). Whatever the client sent is
 * read first: a close over unread data resets the connection, and a reset
 * can destroy the reply still in flight.
 */
static void turn_away(int client, const char *reply)
{
	char line[128], sink[4096];
	int len = snprintf(line, sizeof(line), "%s\r\n", reply);

	if (send(client, line, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		msg(LOG_DEBUG, "could not send \"%s\": %s", reply, strerror(errno));
	if (shutdown(client, SHUT_WR) < 0 && errno != ENOTCONN)
		msg(LOG_DEBUG, "could not shut the connection down: %s", strerror(errno));
	for (int i = 0; i < 16 && recv(client, sink, sizeof(sink), MSG_DONTWAIT) > 0; i++)
		;
	close(client);
}

/* session_forget - a session that ended leaves the table */
static void session_forget(pid_t pid)
{
	for (int i = 0; i < live; i++)
		if (sessions[i] == pid) {
			sessions[i] = sessions[--live];
			return;
		}
}

/* reap - forget the sessions that ended; no zombie outlives a loop turn */
static void reap(void)
{
	pid_t pid;

	while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
		session_forget(pid);
}

enum accept_outcome { ACCEPT_DONE, ACCEPT_PAUSE, ACCEPT_BROKEN };

/*
 * accept_failed - what an accept() error means. Out of descriptors or
 * memory, the connection stays in the backlog and the socket stays ready:
 * trying again at once would spin, so we pause (logged once per episode).
 * A broken socket ends the listener. Anything else was that one
 * connection's problem: the peer gave up (ECONNABORTED), a signal came, or
 * one of the network errors accept(2) says to treat like EAGAIN.
 */
static enum accept_outcome accept_failed(int err, int listening)
{
	switch (err) {
	case EMFILE: case ENFILE: case ENOBUFS: case ENOMEM:
		if (!accept_starving)
			msg(LOG_ERR, "cannot accept connections on socket %d: %s; trying again every %d ms",
			    listening, strerror(err), ACCEPT_PAUSE_MS);
		accept_starving = 1;
		return ACCEPT_PAUSE;
	case EBADF: case EFAULT: case EINVAL: case ENOTSOCK:
		msg(LOG_ERR, "listening socket %d is broken: %s", listening, strerror(err));
		return ACCEPT_BROKEN;
	case EAGAIN: case EINTR: case ECONNABORTED:
		return ACCEPT_DONE;
	default:
		msg(LOG_DEBUG, "a connection on socket %d failed before it was accepted: %s",
		    listening, strerror(err));
		return ACCEPT_DONE;
	}
}

/* accept_one - take one connection: serve it in a child, or turn it away */
static enum accept_outcome accept_one(int listening, int *fds, int nfds, const sigset_t *child_mask)
{
	int client = accept4(listening, NULL, NULL, SOCK_CLOEXEC);
	char peer[NI_MAXHOST];
	pid_t pid;

	if (client < 0)
		return accept_failed(errno, listening);
	if (accept_starving) {
		msg(LOG_NOTICE, "accepting connections again");
		accept_starving = 0;
	}
	if (live >= cfg->maxconn) {
		msg(LOG_WARNING, "too many connections (%d), refusing %s", cfg->maxconn,
		    peer_text(client, peer, sizeof(peer)));
		turn_away(client, R_TOO_MANY);
		return ACCEPT_DONE;
	}
	pid = fork();
	if (pid == 0)
		serve_child(client, fds, nfds, child_mask);
	if (pid < 0) {
		msg(LOG_ERR, "cannot fork a session for %s: %s; refusing it with 421",
		    peer_text(client, peer, sizeof(peer)), strerror(errno));
		turn_away(client, R_NO_FORK);
		return ACCEPT_DONE;
	}
	sessions[live++] = pid;
	close(client);
	return ACCEPT_DONE;
}

/* drain_backlog - SPEC 2: connections already waiting get a 421, not a reset */
static int drain_backlog(int *fds, int nfds)
{
	int told = 0;

	for (int i = 0; i < nfds; i++) {
		/* Bounded: new connections may go on arriving while we drain. */
		for (int n = 0; n < cfg->maxconn + 64; n++) {
			int client = accept4(fds[i], NULL, NULL, SOCK_CLOEXEC);
			if (client < 0 && (errno == EINTR || errno == ECONNABORTED))
				continue;
			if (client < 0)
				break;  /* EAGAIN: none left */
			turn_away(client, R_SHUTDOWN);
			told++;
		}
	}
	return told;
}

/*
 * stop_listening - SPEC 2: no new connections, the waiting ones told, the
 * pidfile removed, the stop passed on to every session; exit once the
 * last one has ended.
 */
static int stop_listening(int *fds, int nfds, int own_socket, int status)
{
	int told = drain_backlog(fds, nfds), asked = 0;

	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (own_socket && is_path(cfg->listenaddr) && unlink(cfg->listenaddr) < 0)
		msg(LOG_WARNING, "cannot remove socket %s: %s", cfg->listenaddr, strerror(errno));
	if (cfg->pidfile)
		pidfile_remove(cfg->pidfile);
	for (int i = 0; i < live; i++) {
		if (kill(sessions[i], SIGTERM) == 0)
			asked++;
		else if (errno != ESRCH)
			msg(LOG_WARNING, "cannot pass the stop on to session %ld: %s",
			    (long)sessions[i], strerror(errno));
	}
	msg(LOG_NOTICE, "stopping: %d waiting connection(s) turned away, %d session(s) told to stop",
	    told, asked);
	while (live > 0) {
		pid_t pid = wait(NULL);
		if (pid > 0)
			session_forget(pid);
		else if (errno != EINTR)
			break;  /* ECHILD: none left, whatever the table says */
	}
	msg(LOG_NOTICE, "stopped");
	return status;
}

/* listen_start - sockets, daemon, pidfile: everything before the first accept */
static int listen_start(int *fds, int *own_socket)
{
	char why[512];
	int nfds;

	sessions = calloc((size_t)cfg->maxconn, sizeof(*sessions));
	if (!sessions)
		start_failed("out of memory for %d sessions", cfg->maxconn);
	if (cfg->pidfile)
		pidfile_open(cfg->pidfile);
	nfds = inherited_sockets(fds);
	*own_socket = nfds == 0;
	if (*own_socket)
		nfds = open_listener(fds);
	if (cfg->debug < 0)
		daemonise();
	/* No configuration to reload, and a lost terminal is no reason to stop. */
	signal(SIGHUP, SIG_IGN);
	if (cfg->pidfile)
		pidfile_write(cfg->pidfile);
	/* SPEC 9.1: bound and the pidfile written, then the user, before any accept. */
	if (drop_privileges(why, sizeof(why)) < 0)
		start_failed("%s", why);
	if (cfg->user && access(cfg->tmpdir, W_OK | X_OK) < 0)
		start_failed("-D tmpdir %s is not writable by user %s", cfg->tmpdir, cfg->user);
	if (!cfg->user && geteuid() == 0)
		msg(LOG_WARNING, "running as root; -u user would drop root after binding");
	log_sockets(fds, nfds);
	msg(LOG_NOTICE, "listening for connections, at most %d at once", cfg->maxconn);
	listener_ready();
	return nfds;
}

/* listener - accept, fork, serve; stop cleanly on SIGTERM/SIGINT */
static int listener(void)
{
	int fds[MAX_LISTEN], nfds, own_socket, paused = 0, status = 0;
	struct pollfd polls[MAX_LISTEN];
	sigset_t block, old_mask, wait_mask;
	/* How long to leave the sockets alone when accept() lacks resources. */
	const struct timespec pause = { .tv_nsec = ACCEPT_PAUSE_MS * 1000000L };

	nfds = listen_start(fds, &own_socket);
	/* Our signals are blocked but while we sleep in ppoll, so none is missed. */
	sigemptyset(&block);
	sigaddset(&block, SIGCHLD);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &old_mask);
	wait_mask = old_mask;
	sigdelset(&wait_mask, SIGCHLD);
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	for (int i = 0; i < nfds; i++) {
		polls[i] = (struct pollfd){ .fd = fds[i], .events = POLLIN };
		set_nonblocking(fds[i]);
	}
	while (!stop_requested && status == 0) {
		int rc;

		reap();
		/* A steady stream of connections keeps ppoll ready, and then it
		 * lets no signal in: open the door once every turn. */
		sigprocmask(SIG_SETMASK, &wait_mask, NULL);
		sigprocmask(SIG_BLOCK, &block, NULL);
		if (stop_requested)
			break;
		/* Paused, we watch no socket (they would be ready at once), only signals. */
		rc = paused ? ppoll(NULL, 0, &pause, &wait_mask)
			    : ppoll(polls, (nfds_t)nfds, NULL, &wait_mask);
		if (rc < 0 && errno != EINTR) {
			msg(LOG_ERR, "cannot wait for connections: %s", strerror(errno));
			status = 1;
		}
		if (paused || rc <= 0) {
			paused = 0;
			continue;
		}
		for (int i = 0; i < nfds && !paused && status == 0; i++) {
			if (polls[i].revents & (POLLERR | POLLNVAL)) {
				msg(LOG_ERR, "listening socket %d failed", fds[i]);
				status = 1;
			} else if (polls[i].revents & POLLIN) {
				enum accept_outcome got = accept_one(fds[i], fds, nfds, &old_mask);
				paused = got == ACCEPT_PAUSE;
				status = got == ACCEPT_BROKEN;
			}
		}
	}
	return stop_listening(fds, nfds, own_socket, status);
}

/* hook_child - in the forked child: nothing of ours but the environment goes along */
static void hook_child(const char *program, const char *const *envp)
{
	char *argv[] = { (char *)program, NULL };
	sigset_t none;
	int null = open("/dev/null", O_RDWR);

	/* In stdio mode fds 0-2 are the client: the hook must not reach it. */
	if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0)
		_exit(126);
	for (int fd = 3; fd < 1024; fd++)
		close(fd);      /* no other descriptor is inherited */
	setpgid(0, 0);          /* its own group, so a timeout kills its children too */
	signal(SIGPIPE, SIG_DFL);
	signal(SIGXFSZ, SIG_DFL);
	signal(SIGHUP, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(program, argv, (char *const *)envp);
	_exit(127);
}

/* hook_wait - reap the hook within its time limit, or kill it; 0 done, -1 killed */
static int hook_wait(pid_t pid, int limit, int *status)
{
	struct timespec tick = { .tv_nsec = 10 * 1000000L };
	long deadline = now_seconds() + limit;

	for (;;) {
		pid_t got = waitpid(pid, status, WNOHANG);
		if (got == pid)
			return 0;
		if (got < 0 && errno != EINTR)
			return 0;       /* reaped by someone else: nothing left to wait on */
		if (now_seconds() >= deadline)
			break;
		nanosleep(&tick, NULL);
	}
	kill(-pid, SIGKILL);
	kill(pid, SIGKILL);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	return -1;
}

/*
 * run_hook - SPEC 9.2: run -x with no shell, a fixed environment, /dev/null
 * on fds 0-2, at most 10 s (or -t); reap it and log how it ended.
 */
void run_hook(const char *program, const char *const *envp)
{
	int limit = cfg->timeout < HOOK_SECONDS ? cfg->timeout : HOOK_SECONDS, status = 0;
	pid_t pid = fork();

	if (pid < 0) {
		msg(LOG_ERR, "cannot run %s: fork: %s", program, strerror(errno));
		return;
	}
	if (pid == 0)
		hook_child(program, envp);
	if (hook_wait(pid, limit, &status) < 0)
		msg(LOG_WARNING, "%s ran longer than %d s and was killed", program, limit);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		msg(LOG_INFO, "%s exited with status 0", program);
	else if (WIFEXITED(status))
		msg(LOG_WARNING, "%s exited with status %d", program, WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		msg(LOG_WARNING, "%s was killed by signal %d", program, WTERMSIG(status));
}

/* report - one line of -T: "ok" or "FAIL", what was checked, what was found */
static int report(int ok, const char *what, const char *where, const char *detail)
{
	printf("%-4s %s %s: %s\n", ok ? "ok" : "FAIL", what, where, detail);
	return ok ? 0 : 1;
}

/*
 * self_test - SPEC 9.4: with the flags of a real run, as its user, check
 * every clamd member, the server and the spool directory; 0 if all is well
 */
static int self_test(void)
{
	const char *members[CLAMD_MAX];
	char detail[1024];
	struct addr server;
	struct spool spool = { .fd = -1 };
	int failed = 0, n = clamd_members(members);

	for (int i = 0; i < n; i++)
		failed |= report(clamd_probe(members[i], detail, sizeof(detail)) == 0, "clamd",
				 members[i], detail);
	addr_parse(cfg->serveraddr, "25", &server);
	if (server.kind == ADDR_PORT)
		report(1, "server", cfg->serveraddr,
		       "skipped: a bare port means each client's own address");
	else
		failed |= report(server_probe(detail, sizeof(detail)) == 0, "server",
				 cfg->serveraddr, detail);
	if (spool_open(&spool) == 0)
		snprintf(detail, sizeof(detail), "a spool file can be made%s%s",
			 cfg->user ? " as user " : "", cfg->user ? cfg->user : "");
	else
		snprintf(detail, sizeof(detail), "cannot make a spool file: %s", strerror(spool.error));
	failed |= report(spool.fd >= 0, "tmpdir", cfg->tmpdir, detail);
	spool_close(&spool);
	fflush(stdout);
	return failed;
}

/* listener_wanted - SPEC 2: -l, systemd's sockets, or no client on stdin */
static int listener_wanted(void)
{
	struct stat st;

	const char *pid = getenv("LISTEN_PID");

	if (cfg->listenaddr || (pid && getenv("LISTEN_FDS") && atol(pid) == (long)getpid()))
		return 1;
	return fstat(0, &st) < 0 || S_ISCHR(st.st_mode);
}

/*
 * std_fds_open - SPEC 2: a closed fd 0, 1 or 2 is opened on /dev/null
 * first. Otherwise our first socket would get that number, and the
 * daemon's redirection to /dev/null would replace the listening socket.
 */
static void std_fds_open(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		/* The lower ones are open now, so open() gives us exactly fd. */
		if (open("/dev/null", O_RDWR) != fd)
			exit(1);        /* no /dev/null, and nowhere to say so */
		if (fd == 2)
			stderr_was_closed = 1;
	}
}

/* main - options, logging, then one session or the listener */
int main(int argc, char **argv)
{
	struct sigaction stop = { .sa_handler = on_stop }, child = { .sa_handler = on_child };

	std_fds_open();
	parse_options(argc, argv);
	log_open(cfg->debug);
	if (cfg->obsolete_r)
		msg(LOG_NOTICE, "-r is obsolete and has no effect");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);       /* a file size limit is a write error (452), not death */
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGCHLD, &child, NULL);
	if (cfg->self_test) {
		become_user();
		return self_test();
	}
	if (listener_wanted())
		return listener();
	/* SPEC 9.1: stdio mode is that user before it reads a client byte. */
	become_user();
	check_tmpdir(cfg->tmpdir);
	return smtp_session(0, 1);
}
