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
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#define USAGE "usage: clamsmtpd [-bqrv] [-c clamaddr] [-d level] [-D tmpdir] [-h header] " \
	"[-l listenaddr] [-m maxconn] [-p pidfile] [-t timeout] serveraddr"
#define MAX_LISTEN 16

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

/* log_open - syslog, or stderr under -d when stderr is not the connection */
void log_open(int debug)
{
	/* Under inetd fd 2 is the connection: nothing but SMTP may go there. */
	log_to_stderr = debug >= 0 && !is_socket(2) && fcntl(2, F_GETFD) >= 0;
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

/* check_tmpdir - SPEC 1: a directory, not world-writable unless sticky */
static void check_tmpdir(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0)
		die_usage("-D tmpdir cannot be used", strerror(errno));
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
	while ((c = getopt(argc, argv, ":bc:d:D:h:l:m:p:qrt:v")) != -1) {
		switch (c) {
		case 'b': config.bounce = 1; break;
		case 'c': config.clamaddr = optarg; break;
		case 'd': config.debug = number(optarg, 0, 4, "-d level"); break;
		case 'D': config.tmpdir = optarg; break;
		case 'h': config.header = optarg; break;
		case 'l': config.listenaddr = optarg; break;
		case 'm': config.maxconn = number(optarg, 1, 100000, "-m maxconn"); break;
		case 'p': config.pidfile = optarg; break;
		case 'q': config.quarantine = 1; break;
		case 'r': config.obsolete_r = 1; break;
		case 't': config.timeout = number(optarg, 1, 86400, "-t timeout"); break;
		case 'v': printf("clamsmtpd %s\n", VERSION); exit(0);
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
	if (is_path(config.clamaddr))
		config.clamaddr = absolute(config.clamaddr);
	if (is_path(config.listenaddr))
		config.listenaddr = absolute(config.listenaddr);
	check_address(config.serveraddr, "25", "serveraddr");
	if (config.clamaddr)
		check_address(config.clamaddr, "3310", "-c clamaddr");
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

/* pidfile_check - refuse to start over a listener that is still running */
static void pidfile_check(const char *path)
{
	FILE *f = fopen(path, "r");
	long pid;

	if (!f)
		return;
	if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM)) {
		fprintf(stderr, "clamsmtpd: %s names process %ld, which is running\n", path, pid);
		exit(1);
	}
	fclose(f);
}

/* pidfile_write - the listener's pid, once it is listening */
static void pidfile_write(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0)
		msg(LOG_ERR, "cannot write pidfile %s: %s", path, strerror(errno));
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
	if (n < 1 || n > MAX_LISTEN) {
		fprintf(stderr, "clamsmtpd: LISTEN_FDS must be 1 to %d\n", MAX_LISTEN);
		exit(1);
	}
	for (int i = 0; i < n; i++) {
		fds[i] = 3 + i;
		if (getsockopt(fds[i], SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
			fprintf(stderr, "clamsmtpd: LISTEN_FDS: fd %d is not a listening socket\n", fds[i]);
			exit(1);
		}
		fcntl(fds[i], F_SETFD, FD_CLOEXEC);
	}
	if (cfg->listenaddr)
		msg(LOG_NOTICE, "serving the sockets systemd passed; -l %s is not used", cfg->listenaddr);
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	return n;
}

/* open_listener - -l, or port 10025 on every local address */
static int open_listener(int *fds)
{
	struct addr addr;
	char why[512];

	addr_parse(cfg->listenaddr ? cfg->listenaddr : "10025", "10025", &addr);
	fds[0] = addr_listen(&addr, cfg->maxconn, why, sizeof(why));
	if (fds[0] < 0) {
		fprintf(stderr, "clamsmtpd: cannot listen on %s\n", why);
		exit(1);
	}
	return 1;
}

/* daemonise - detach from the terminal; errors before this went to stderr */
static void daemonise(void)
{
	pid_t pid = fork();
	int null;

	if (pid < 0) {
		fprintf(stderr, "clamsmtpd: cannot fork: %s\n", strerror(errno));
		exit(1);
	}
	if (pid > 0)
		_exit(0);
	setsid();
	if (chdir("/") < 0)
		msg(LOG_ERR, "cannot chdir to /: %s", strerror(errno));
	null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
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

/* refuse - SPEC 2: over -m, a 421 and close, without waiting on the client */
static void refuse(int client)
{
	static const char reply[] = R_TOO_MANY "\r\n";

	msg(LOG_WARNING, "too many connections (%d), refusing one", cfg->maxconn);
	if (send(client, reply, sizeof(reply) - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		msg(LOG_DEBUG, "could not send refusal: %s", strerror(errno));
	close(client);
}

/* reap - count the sessions that ended; no zombie outlives a loop turn */
static void reap(int *live)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		(*live)--;
}

/* accept_one - take one connection: serve it in a child, or refuse it */
static void accept_one(int listening, int *live, int *fds, int nfds, const sigset_t *child_mask)
{
	int client = accept4(listening, NULL, NULL, SOCK_CLOEXEC);
	pid_t pid;

	if (client < 0)
		return;         /* the peer gave up already, or a signal came */
	if (*live >= cfg->maxconn) {
		refuse(client);
		return;
	}
	pid = fork();
	if (pid == 0)
		serve_child(client, fds, nfds, child_mask);
	if (pid < 0)
		msg(LOG_ERR, "cannot fork: %s", strerror(errno));
	else
		(*live)++;
	close(client);
}

/* stop_listening - no new connections; the running sessions may finish */
static int stop_listening(int *fds, int nfds, int own_socket, int live)
{
	msg(LOG_NOTICE, "stopping: no new connections, waiting for %d session(s)", live);
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (own_socket && is_path(cfg->listenaddr))
		unlink(cfg->listenaddr);
	if (cfg->pidfile)
		unlink(cfg->pidfile);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	return 0;
}

/* listener - accept, fork, serve; stop cleanly on SIGTERM/SIGINT */
static int listener(void)
{
	int fds[MAX_LISTEN], nfds, live = 0, own_socket;
	struct pollfd polls[MAX_LISTEN];
	sigset_t block, old_mask, wait_mask;

	if (cfg->pidfile)
		pidfile_check(cfg->pidfile);
	nfds = inherited_sockets(fds);
	own_socket = nfds == 0;
	if (own_socket)
		nfds = open_listener(fds);
	if (cfg->debug < 0)
		daemonise();
	/* No configuration to reload, and a lost terminal is no reason to stop. */
	signal(SIGHUP, SIG_IGN);
	if (cfg->pidfile)
		pidfile_write(cfg->pidfile);
	msg(LOG_NOTICE, "listening for connections, at most %d at once", cfg->maxconn);

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
	while (!stop_requested) {
		reap(&live);
		/* A steady stream of connections keeps ppoll ready, and then it
		 * lets no signal in: open the door once every turn. */
		sigprocmask(SIG_SETMASK, &wait_mask, NULL);
		sigprocmask(SIG_BLOCK, &block, NULL);
		if (stop_requested)
			break;
		if (ppoll(polls, (nfds_t)nfds, NULL, &wait_mask) < 0) {
			if (errno == EINTR)
				continue;
			msg(LOG_ERR, "cannot wait for connections: %s", strerror(errno));
			return 1;
		}
		for (int i = 0; i < nfds; i++) {
			if (polls[i].revents & (POLLERR | POLLNVAL)) {
				msg(LOG_ERR, "listening socket %d failed", fds[i]);
				return 1;
			}
			if (polls[i].revents & POLLIN)
				accept_one(fds[i], &live, fds, nfds, &old_mask);
		}
	}
	return stop_listening(fds, nfds, own_socket, live);
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

/* main - options, logging, then one session or the listener */
int main(int argc, char **argv)
{
	struct sigaction stop = { .sa_handler = on_stop }, child = { .sa_handler = on_child };

	parse_options(argc, argv);
	log_open(cfg->debug);
	if (cfg->obsolete_r)
		msg(LOG_NOTICE, "-r is obsolete and has no effect");
	signal(SIGPIPE, SIG_IGN);
	signal(SIGXFSZ, SIG_IGN);       /* a file size limit is a write error (452), not death */
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	sigaction(SIGCHLD, &child, NULL);
	if (listener_wanted())
		return listener();
	return smtp_session(0, 1);
}
