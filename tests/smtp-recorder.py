#!/usr/bin/env python3
"""smtp-recorder - a recording SMTP server with fault injection, for tests.

It plays "the server" behind clamsmtpd.  Every byte it receives is kept,
every message it accepts is stored three ways (raw, unstuffed, envelope),
and every command is logged, so a test can prove what clamsmtpd really sent.
Faults (odd replies, hangs, hang-ups, delays, idle timeouts) are switched on
from the command line.  It does not relay or deliver anything.

Files in DIR:
  port, pid            bound port and own pid (written atomically)
  session-N.raw        every byte received in session N (N = 1, 2, ...)
  msg-M.raw            DATA bytes after our 354 up to and including CRLF.CRLF
  msg-M.eml            the same, dot-unstuffed, without the final ".CRLF"
  msg-M.env            from=<...>, to=<...> (one per accepted RCPT), peer=IP
  msg-M.dropped        present when --hangup dataend closed without a reply
  commands.log         "N COMMANDLINE" per command; "N *IDLE-TIMEOUT*"
msg-M.raw is renamed into place last, so once it exists the others do too.

Python 3 standard library only.
"""

import argparse
import os
import signal
import socket
import sys
import threading
import time

STEPS = ("greeting", "ehlo", "helo", "mail", "rcpt", "data", "dataend",
         "rset", "noop", "quit", "xforward", "unknown", "body")

VERB_STEP = {
    b"EHLO": "ehlo", b"HELO": "helo", b"MAIL": "mail", b"RCPT": "rcpt",
    b"DATA": "data", b"RSET": "rset", b"NOOP": "noop", b"QUIT": "quit",
    b"XFORWARD": "xforward",
}

EHLO_KEYWORDS = ["PIPELINING", "SIZE 104857600", "8BITMIME",
                 "ENHANCEDSTATUSCODES", "XFORWARD NAME ADDR PROTO HELO",
                 "STARTTLS", "CHUNKING", "DSN"]

DEFAULT_REPLY = {
    "greeting": "220 recorder.test ESMTP",
    "helo": "250 recorder.test",
    "mail": "250 2.1.0 Ok",
    "rcpt": "250 2.1.5 Ok",
    "data": "354 End data with <CR><LF>.<CR><LF>",
    "dataend": "250 2.0.0 Ok: queued as {M}",
    "rset": "250 2.0.0 Ok",
    "noop": "250 2.0.0 Ok",
    "xforward": "250 2.0.0 Ok",
    "quit": "221 2.0.0 Bye",
    "unknown": "502 5.5.2 Error: command not recognized",
}

IDLE_REPLY = b"421 4.4.2 Idle timeout\r\n"


class Closed(Exception):
    """The client went away (EOF or socket error)."""


class IdleTimeout(Exception):
    """Nothing arrived within --idle-timeout."""


class Hangup(Exception):
    """A --hangup fault fired: close without a word."""


def printable(data):
    """printable - bytes as text, non-printable bytes shown as \\xNN."""
    out = []
    for b in data:
        if 0x20 <= b < 0x7f:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    return "".join(out)


def atomic_write(path, data):
    """atomic_write - write bytes to a temp name, then rename into place."""
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


def parse_step_key(key, what):
    """parse_step_key - "step" or "step:K" -> (step, K or None)."""
    k = None
    if ":" in key:
        key, ks = key.split(":", 1)
        try:
            k = int(ks)
        except ValueError:
            raise SystemExit("smtp-recorder: bad count in %s: %r" % (what, ks))
    key = key.strip().lower()
    if key not in STEPS:
        raise SystemExit("smtp-recorder: unknown step in %s: %r" % (what, key))
    return key, k


def parse_listen(addr):
    """parse_listen - "host:port" or "[v6]:port" -> (family, sockaddr)."""
    if addr.startswith("["):
        host, sep, port = addr[1:].partition("]:")
        if not sep:
            raise SystemExit("smtp-recorder: bad --listen %r" % addr)
    else:
        host, sep, port = addr.rpartition(":")
        if not sep:
            raise SystemExit("smtp-recorder: bad --listen %r" % addr)
    try:
        infos = socket.getaddrinfo(host, int(port), socket.AF_UNSPEC,
                                   socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except (OSError, ValueError) as e:
        raise SystemExit("smtp-recorder: bad --listen %r: %s" % (addr, e))
    return infos[0][0], infos[0][4]


class Config:
    """Config - the parsed command line, shared read-only by all sessions."""

    def __init__(self, args):
        self.dir = args.dir
        self.idle = args.idle_timeout
        self.reply = {}
        self.reply_nth = {}
        self.hang = {}
        self.hangup = {}
        self.delay = {}
        for spec in args.reply:
            key, sep, text = spec.partition("=")
            if not sep:
                raise SystemExit("smtp-recorder: --reply needs STEP=TEXT")
            step, k = parse_step_key(key, "--reply")
            if k is None:
                self.reply[step] = text
            else:
                self.reply_nth[(step, k)] = text
        for spec in args.reply_nth:
            key, sep, text = spec.partition("=")
            if not sep or ":" not in key:
                raise SystemExit("smtp-recorder: --reply-nth needs STEP:K=TEXT")
            step, k = parse_step_key(key, "--reply-nth")
            self.reply_nth[(step, k)] = text
        for spec in args.hang:
            step, k = parse_step_key(spec, "--hang")
            self.hang.setdefault(step, set()).add(k)
        for spec in args.hangup:
            step, k = parse_step_key(spec, "--hangup")
            self.hangup.setdefault(step, set()).add(k)
        for spec in args.delay:
            key, sep, secs = spec.partition("=")
            if not sep:
                raise SystemExit("smtp-recorder: --delay needs STEP=SECONDS")
            step, k = parse_step_key(key, "--delay")
            try:
                self.delay[(step, k)] = float(secs)
            except ValueError:
                raise SystemExit("smtp-recorder: bad seconds in --delay %r" % spec)
        kws = list(EHLO_KEYWORDS)
        if args.ehlo_last:
            last = args.ehlo_last
            word = last.split()[0].upper()
            kws = [kw for kw in kws if kw.split()[0].upper() != word]
            kws.append(last)
        lines = ["250-recorder.test"]
        lines += ["250-" + kw for kw in kws[:-1]]
        lines.append("250 " + kws[-1])
        DEFAULT_REPLY["ehlo"] = "\\n".join(lines)

    @staticmethod
    def _match(table, step, k):
        ks = table.get(step)
        return bool(ks) and (None in ks or k in ks)

    def is_hang(self, step, k):
        return self._match(self.hang, step, k)

    def is_hangup(self, step, k):
        return self._match(self.hangup, step, k)

    def delay_for(self, step, k):
        return self.delay.get((step, k), self.delay.get((step, None), 0.0))

    def text_for(self, step, k):
        if (step, k) in self.reply_nth:
            return self.reply_nth[(step, k)]
        return self.reply.get(step, DEFAULT_REPLY[step])


class Shared:
    """Shared - counters and the command log, guarded by one lock."""

    def __init__(self, directory):
        self.lock = threading.Lock()
        self.sessions = 0
        self.messages = 0
        self.log = open(os.path.join(directory, "commands.log"), "ab")

    def next_session(self):
        with self.lock:
            self.sessions += 1
            return self.sessions

    def next_message(self):
        with self.lock:
            self.messages += 1
            return self.messages

    def log_line(self, text):
        with self.lock:
            self.log.write(text.encode("ascii", "backslashreplace") + b"\n")
            self.log.flush()


def envelope_addr(arg, prefix):
    """envelope_addr - the <address> of "FROM:<a> ..." / "TO:<a> ..."."""
    rest = arg
    if rest[:len(prefix)].upper() == prefix:
        rest = rest[len(prefix):]
    rest = rest.lstrip(b" ")
    if rest.startswith(b"<"):
        end = rest.find(b">")
        return rest[1:end] if end >= 0 else rest[1:]
    return rest.split(b" ", 1)[0]


def unstuff(raw):
    """unstuff - DATA bytes incl. terminator -> message as stored."""
    if raw == b".\r\n":
        return b""
    body = raw[:-3]                      # drop ".\r\n", keep the last CRLF
    lines = body.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


class Session:
    """Session - one SMTP conversation on an accepted socket."""

    def __init__(self, cfg, shared, sock, peer):
        self.cfg = cfg
        self.shared = shared
        self.sock = sock
        self.peer = peer[0]
        self.n = shared.next_session()
        self.raw = open(os.path.join(cfg.dir, "session-%d.raw" % self.n), "wb")
        self.buf = bytearray()
        self.eof = False
        self.counts = {}
        self.mail_from = None
        self.rcpts = []

    # -- input -------------------------------------------------------------

    def fill(self, timeout):
        """fill - one recv() into the buffer; timeout None waits forever."""
        if self.eof:
            raise Closed()
        if timeout is not None and timeout <= 0:
            raise IdleTimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise IdleTimeout()
        except OSError:
            raise Closed()
        if not data:
            self.eof = True
            raise Closed()
        self.raw.write(data)
        self.raw.flush()
        self.buf += data

    def read_line(self):
        """read_line - next command line without its CRLF (or bare LF)."""
        deadline = None
        if self.cfg.idle is not None:
            deadline = time.monotonic() + self.cfg.idle
        scan = 0
        while True:
            i = self.buf.find(b"\n", scan)
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                return line
            scan = len(self.buf)
            self.fill(None if deadline is None else deadline - time.monotonic())

    def read_data(self):
        """read_data - bytes up to and including the end-of-data mark."""
        scan = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 3
                break
            i = self.buf.find(b"\r\n.\r\n", scan)
            if i >= 0:
                end = i + 5
                break
            scan = max(0, len(self.buf) - 4)
            self.fill(self.cfg.idle)
        data = bytes(self.buf[:end])
        del self.buf[:end]
        return data

    def discard_forever(self):
        """discard_forever - --hang: read (and record) until the client goes."""
        self.buf.clear()
        try:
            while True:
                self.fill(None)
                self.buf.clear()
        except (Closed, IdleTimeout):
            pass

    # -- output ------------------------------------------------------------

    def send(self, text):
        """send - a reply; "\\n" (two characters) separates lines."""
        lines = text.split("\\n")
        data = b"".join(l.encode("latin-1", "replace") + b"\r\n" for l in lines)
        self.sock.settimeout(None)
        try:
            self.sock.sendall(data)
        except OSError:
            raise Closed()

    def step(self, step, **subst):
        """step - faults, delay and reply for one step; returns reply text."""
        k = self.counts.get(step, 0) + 1
        self.counts[step] = k
        secs = self.cfg.delay_for(step, k)
        if secs > 0:
            time.sleep(secs)
        if self.cfg.is_hangup(step, k):
            raise Hangup()
        if self.cfg.is_hang(step, k):
            self.discard_forever()
            raise Closed()
        text = self.cfg.text_for(step, k)
        for name, val in subst.items():
            text = text.replace("{%s}" % name, str(val))
        self.send(text)
        return text

    # -- the dialogue ------------------------------------------------------

    def run(self):
        try:
            try:
                self.dialogue()
            except IdleTimeout:
                self.shared.log_line("%d *IDLE-TIMEOUT*" % self.n)
                try:
                    self.sock.settimeout(2)
                    self.sock.sendall(IDLE_REPLY)
                except OSError:
                    pass
            except (Closed, Hangup):
                pass
        except Exception as e:              # never let one session kill us
            sys.stderr.write("smtp-recorder: session %d: %r\n" % (self.n, e))
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self.raw.close()

    def dialogue(self):
        self.step("greeting")
        while True:
            line = self.read_line()
            self.shared.log_line("%d %s" % (self.n, printable(line)))
            verb, _, arg = line.partition(b" ")
            step = VERB_STEP.get(verb.upper(), "unknown")
            if step in ("ehlo", "helo", "rset"):
                self.step(step)
                self.mail_from, self.rcpts = None, []
            elif step == "mail":
                if self.step(step).startswith("2"):
                    self.mail_from = envelope_addr(arg, b"FROM:")
                    self.rcpts = []
            elif step == "rcpt":
                if self.step(step).startswith("2"):
                    self.rcpts.append(envelope_addr(arg, b"TO:"))
            elif step == "data":
                if self.step(step).startswith("354"):
                    self.receive_message()
            elif step == "quit":
                self.step(step)
                return
            else:
                self.step(step)

    def receive_message(self):
        """receive_message - after our 354: read, record, answer."""
        nth = self.counts.get("dataend", 0) + 1
        if self.cfg.is_hangup("body", nth) or self.cfg.is_hang("body", nth):
            if not self.buf:
                self.fill(self.cfg.idle)
            if self.cfg.is_hangup("body", nth):
                raise Hangup()
            self.discard_forever()
            raise Closed()
        data = self.read_data()
        m = self.shared.next_message()
        k = self.counts.get("dataend", 0) + 1
        dropped = self.cfg.is_hangup("dataend", k)
        self.store(m, data, dropped)
        self.mail_from, self.rcpts = None, []
        self.step("dataend", M=m)

    def store(self, m, data, dropped):
        base = os.path.join(self.cfg.dir, "msg-%d" % m)
        env = []
        if self.mail_from is not None:      # no line at all without MAIL
            env.append("from=<%s>" % printable(self.mail_from))
        env += ["to=<%s>" % printable(r) for r in self.rcpts]
        env.append("peer=%s" % self.peer)
        atomic_write(base + ".env", ("\n".join(env) + "\n").encode())
        atomic_write(base + ".eml", unstuff(data))
        if dropped:
            atomic_write(base + ".dropped", b"")
        atomic_write(base + ".raw", data)


def main():
    ap = argparse.ArgumentParser(description="recording SMTP server for tests")
    ap.add_argument("--listen", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--ehlo-last")
    ap.add_argument("--reply", action="append", default=[])
    ap.add_argument("--reply-nth", action="append", default=[])
    ap.add_argument("--hang", action="append", default=[])
    ap.add_argument("--hangup", action="append", default=[])
    ap.add_argument("--idle-timeout", type=float)
    ap.add_argument("--delay", action="append", default=[])
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    cfg = Config(args)
    shared = Shared(args.dir)

    family, sockaddr = parse_listen(args.listen)
    ls = socket.socket(family, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        ls.bind(sockaddr)
    except OSError as e:
        raise SystemExit("smtp-recorder: bind %s: %s" % (args.listen, e))
    ls.listen(128)

    def on_term(signum, frame):
        try:
            ls.close()
        finally:
            os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    atomic_write(os.path.join(args.dir, "pid"), b"%d\n" % os.getpid())
    atomic_write(os.path.join(args.dir, "port"),
                 b"%d\n" % ls.getsockname()[1])

    while True:
        try:
            conn, peer = ls.accept()
        except OSError:
            continue
        try:
            sess = Session(cfg, shared, conn, peer)
        except OSError as e:
            sys.stderr.write("smtp-recorder: %s\n" % e)
            conn.close()
            continue
        threading.Thread(target=sess.run, daemon=True).start()


if __name__ == "__main__":
    main()
