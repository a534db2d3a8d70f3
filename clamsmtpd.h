/*
 * clamsmtpd.h - what the modules of clamsmtpd share
 *
 * clamsmtpd.c  options, modes, listener
 * net.c        addresses, connecting, timed reads and writes
 * smtp.c       the per-connection relay: dialogue, DATA, forwarding
 * clamd.c      the clamd client (FILDES on a unix socket, INSTREAM on TCP)
 * spool.c      the spool file, the added header, quarantine
 */
#ifndef CLAMSMTPD_H
#define CLAMSMTPD_H

#include <stddef.h>
#include <sys/types.h>
#include <signal.h>
#include <sys/socket.h>

#define VERSION "1.0"

#define DEFAULT_HEADER    "X-AV-Checked: ClamAV using ClamSMTP"
#define DEFAULT_TIMEOUT   180
#define DEFAULT_MAXCONN   64
#define SERVER_PORT       25
#define LISTEN_PORT       10025
#define CLAMD_PORT        3310
#define KEEPALIVE_SECONDS 60          /* SPEC 4.7: NOOP to an idle server */
#define HOOK_SECONDS      10          /* SPEC 9.2: the -x program's time limit */
#define LINE_MAX_SMTP     2048        /* longest command line we accept */
#define REPLY_LINE_MAX    4096        /* longest server reply line we keep */
#define REPLY_MAX         65536       /* longest whole server reply */
#define IO_CHUNK          65536
/* INSTREAM backstop: ClamAV's built-in StreamMaxLength. A clamd set lower
 * (Debian ships 25M) answers "size limit exceeded", which is a 4xx too. */
#define STREAM_MAX        (100L * 1024 * 1024)
#define CLAMD_MAX         8           /* SPEC 8.1: -c at most 8 times */
#define VIRUS_NAME_MAX    200         /* SPEC 8.4: names cut at 200 bytes */

/* Every reply clamsmtpd itself sends. The man page lists the same texts. */
#define R_NO_SERVER   "421 4.3.0 Cannot connect to the mail server"
#define R_NO_PEER     "421 4.3.0 Client address unknown, cannot relay back"
#define R_SERVER_LOST "421 4.3.0 Connection to the mail server lost"
#define R_TIMEOUT     "421 4.4.2 Timeout waiting for input, closing connection"
#define R_SHUTDOWN    "421 4.3.2 Service shutting down"
#define R_TOO_MANY    "421 4.3.2 Too many connections, try again later"
#define R_NO_FORK     "421 4.3.2 Cannot start a session, try again later"
#define R_LINE_LONG   "500 5.5.2 Line too long"
#define R_BAD_CHARS   "500 5.5.2 Invalid character in command"
#define R_NOT_IMPL    "502 5.5.1 Command not implemented"
#define R_NO_RCPT     "554 5.5.1 No valid recipients"
#define R_GO_AHEAD    "354 End data with <CR><LF>.<CR><LF>"
#define R_VIRUS_DROP  "250 2.7.0 Virus detected; message discarded"
#define R_VIRUS_BOUNCE "550 5.7.1 Virus detected (%.200s); message rejected"
#define R_SCAN_FAIL   "451 4.3.0 Virus scan failed, try again later"
#define R_SPOOL_FAIL  "451 4.3.0 Local error writing message, try again later"
#define R_NO_SPACE    "452 4.3.1 Insufficient system storage"
#define R_FORWARD_FAIL "451 4.3.0 Error passing message on, try again later"

/* Settings from the command line; read-only once parsed. */
struct config {
	int bounce;             /* -b */
	const char *clamaddr[CLAMD_MAX]; /* -c, the pool (SPEC 8.1) */
	int nclamd;             /* how many -c; 0: the default socket search */
	int debug;              /* -d level, -1 without -d */
	int fail_open;          /* -f pass: a scan failure passes mail, marked */
	off_t max_scan;         /* -s: larger mail passes unscanned; 0 no limit */
	int mark_clean;         /* -S: X-Virus-Status: Clean on scanned mail */
	int pass_infected;      /* -P: infected mail goes on, marked */
	const char *hook;       /* -x: run for every virus found (SPEC 9.2) */
	const char *user;       /* -u: drop root to this user (SPEC 9.1) */
	int self_test;          /* -T: check the configuration and exit (SPEC 9.4) */
	const char *tmpdir;     /* -D */
	const char *header;     /* -h, "" for none */
	const char *listenaddr; /* -l */
	int maxconn;            /* -m */
	const char *pidfile;    /* -p */
	int quarantine;         /* -q */
	int obsolete_r;         /* -r: accepted, no effect */
	int timeout;            /* -t, seconds */
	const char *serveraddr;
};

/* A parsed address: a unix socket path, host and port, or only a port. */
enum addr_kind { ADDR_UNIX, ADDR_INET, ADDR_PORT };
struct addr {
	enum addr_kind kind;
	char host[256];         /* ADDR_UNIX: the path; ADDR_INET: name or literal */
	char port[8];
};

/* A buffered connection to a peer; every wait is bounded by timeout. */
struct conn {
	int rfd, wfd;
	const char *name;       /* "client", "server": for log lines */
	int timeout;            /* seconds */
	long last_active;       /* monotonic seconds of the last exchange */
	long deadline;          /* monotonic seconds a whole line or piece must come by; 0 none */
	struct conn *keepalive; /* a peer to keep awake while we wait on this one */
	void (*on_idle)(struct conn *); /* pokes this conn's peer when it sat idle */
	void *owner;            /* for on_idle: whose connection this is */
	size_t in_pos, in_len;
	size_t out_len;
	char in[IO_CHUNK];
	char out[IO_CHUNK];
};

enum io_status {
	IO_OK = 0, IO_EOF = -1, IO_ERROR = -2, IO_TIMEOUT = -3, IO_TOO_LONG = -4,
	IO_STOP = -5,   /* SIGTERM while waiting for a command */
};

/* clamsmtpd.c */
extern const struct config *cfg;
extern volatile sig_atomic_t stop_requested;  /* SIGTERM/SIGINT seen */
extern int stop_point;          /* a wait that SIGTERM may end (IO_STOP) */

/* net.c */
int addr_parse(const char *text, const char *default_port, struct addr *out);
int addr_connect(const struct addr *addr, int timeout, char *why, size_t why_cap);
int addr_listen(const struct addr *addr, int backlog, int *fds, int max,
		char *why, size_t why_cap);
int peer_addr(int fd, const char *port, struct addr *out);
long now_seconds(void);
int wait_fd(int fd, short events, int timeout, struct conn *keepalive);
int write_all(int fd, const void *data, size_t len, int timeout, struct conn *keepalive);
void conn_init(struct conn *c, int rfd, int wfd, const char *name, int timeout);
int conn_fill(struct conn *c);
int conn_read_line(struct conn *c, char *line, size_t cap, size_t *len);
int conn_write(struct conn *c, const void *data, size_t len);
int conn_printf(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int conn_flush(struct conn *c);
int is_socket(int fd);
void set_nonblocking(int fd);
void block_stop_signals(void);

/* logging (clamsmtpd.c) */
void log_open(int debug);
void msg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void printable(char *out, size_t cap, const char *in, size_t len);
void printable_utf8(char *out, size_t cap, const char *in, size_t len);

/* the -x hook (clamsmtpd.c): envp is the whole environment, NULL-ended */
void run_hook(const char *program, const char *const *envp);

/* smtp.c */
int smtp_session(int in, int out);
int server_probe(char *out, size_t cap);

/* DATA decoding: a pure state machine, testable without sockets. */
enum data_state { D_BOL, D_BOL_DOT, D_DOT_CR, D_TEXT, D_CR, D_SOFT_BOL, D_SOFT_DOT, D_END };
size_t data_decode(enum data_state *state, const char *in, size_t len,
		   char *out, size_t *out_len, int *dot_line);
size_t data_encode(int *at_bol, const char *in, size_t len, char *out);

/* Reply and EHLO parsing, pure. */
int reply_line_code(const char *line, size_t len, int *last);
size_t ehlo_filter(char *reply, size_t len);

/* clamd.c */
enum scan_result { SCAN_CLEAN, SCAN_VIRUS, SCAN_ERROR, SCAN_NO_FILDES };
struct scan {                   /* what the pool said about one message */
	int result;             /* SCAN_CLEAN, SCAN_VIRUS or SCAN_ERROR */
	char name[512];         /* the virus, or why no verdict came */
	const char *member;     /* who gave the verdict; NULL without one */
	long ms;                /* how long the scan took, all attempts */
};
struct spool;
int clamd_members(const char **members);
int clamd_scan(struct spool *spool, struct scan *scan, struct conn *keepalive);
int clamd_verdict(const char *reply, size_t len, char *name, size_t cap);
int clamd_probe(const char *member, char *out, size_t cap);

/* spool.c */
struct spool {
	int fd;                 /* -1 until the first message of a session */
	off_t size;             /* bytes of the message, buffered or stored */
	off_t stored;           /* bytes in the file: where the next write goes */
	int error;              /* errno of the first failed write, 0 if none */
	int dot_lines;          /* a stored line starts with ".": it needs stuffing */
	size_t len;
	char buf[4 * IO_CHUNK]; /* room for a whole decoded read (2 * IO_CHUNK + 2) and more */
};
struct range { off_t from, to; };       /* bytes [from, to) of the spool */
int spool_open(struct spool *s);
int spool_next_field(struct spool *s, const char *name, off_t from, struct range *found);
char *spool_room(struct spool *s, size_t need);
void spool_commit(struct spool *s, size_t len);
int spool_finish(struct spool *s);
int spool_quarantine(struct spool *s, char *path, size_t cap);
void spool_close(struct spool *s);
int header_valid(const char *header);

#endif
