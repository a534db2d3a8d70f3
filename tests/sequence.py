#!/usr/bin/env python3
"""sequence.py - stateful session test for clamsmtpd: sequences, not steps.

Many SMTP sessions, each a random (seeded, reproducible) sequence of
transactions: messages from empty to a few MB, with and without lines that
start with a dot, bare CR, bare LF, NUL bytes and long lines, some with
EICAR; RSET, HELO, EHLO, NOOP and refused recipients in between. Before
every step the driver tells its own stand-ins how to fail: clamd down,
ERROR, silent, size limit, closing, garbage; the server refusing MAIL,
RCPT, DATA or the end of data, or hanging up; a file size limit that makes
the spool write fail. Every message must end one of three ways:

  delivered  the client got the server's own 250, and the server received
             exactly the message the client meant (SPEC 4.2 decoding, the
             -h header first, dots stuffed again), byte for byte;
  refused    the client got a 4xx/5xx, and the server accepted nothing;
  virus      the client got the virus reply, and nothing was delivered.

Every command gets exactly one reply, in order. At the end of a session the
spool directory is empty, clamsmtpd has exited (stdio mode) or is still
running (listener mode), and no sanitizer report was written.

The stand-ins run inside this process: a recording SMTP server (loopback
TCP) and a clamd that speaks zFILDES (unix socket) and zINSTREAM (TCP).

A failure prints the seed and the session, and
  sequence.py --seed S --session K --mode M --clamd C
replays exactly that session. Python 3 standard library only.
"""

import argparse
import array
import collections
import os
import random
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

# The EICAR test string, from pieces so this file never holds it whole.
EICAR = b"".join([b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR-STANDARD-",
                  b"ANTIVIRUS-TEST-FILE!$H+H*"])
VIRUS = "Seq-Test.Eicar.UNOFFICIAL"
DEFAULT_HEADER = b"X-AV-Checked: ClamAV using ClamSMTP"

# clamsmtpd's own replies that SPEC fixes word for word
R_GO_AHEAD = "354 End data with <CR><LF>.<CR><LF>"
R_NO_RCPT = "554 5.5.1 No valid recipients"
R_NOT_IMPL = "502 5.5.1 Command not implemented"
R_VIRUS_DROP = "250 2.7.0 Virus detected; message discarded"
R_VIRUS_BOUNCE = "550 5.7.1 Virus detected (%s); message rejected" % VIRUS
# ... and those where only the code (and enhanced code) is fixed
R_SCAN_FAIL = "451"       # 451 4.3.0 ... scan failed
R_SPOOL_FULL = "452"      # 452 4.3.1 ... storage
R_FORWARD_FAIL = "451"    # 451 4.3.0 ... passing message on
R_SERVER_LOST = "421"     # 421 4.3.0 ... server lost

EHLO_SENT = ["250-recorder.test Hello", "250-PIPELINING", "250-SIZE 104857600",
             "250-STARTTLS", "250-8BITMIME", "250-ENHANCEDSTATUSCODES",
             "250 CHUNKING"]
EHLO_SEEN = ["250-recorder.test Hello", "250-SIZE 104857600",
             "250-8BITMIME", "250 ENHANCEDSTATUSCODES"]

LINE_BREAK = re.compile(rb"\r\n|\r|\n")
SANITIZER = re.compile(rb"AddressSanitizer|LeakSanitizer|runtime error:|"
                       rb"UndefinedBehaviorSanitizer")


class Fail(Exception):
    """A broken promise of clamsmtpd: the session fails."""


class Closed(Exception):
    """A peer of a stand-in went away."""


# ---------------------------------------------------------------------------
# The model of SPEC 4.2: what the client means by the bytes it sends

def decoded(body):
    """decoded - what the spool must hold for body (the bytes before the
    final ".CRLF"): the text split at every CRLF, bare CR and bare LF; each
    line loses one leading dot (after a bare CR or LF too) and ends in CRLF"""
    lines = LINE_BREAK.split(body)
    assert lines[-1] == b"", "a body ends with CRLF, or is empty"
    return b"".join((l[1:] if l[:1] == b"." else l) + b"\r\n"
                    for l in lines[:-1])


def stuffed(content):
    """stuffed - clean CRLF lines as they go to the server, with ".CRLF" """
    out = [b"." + l + b"\r\n" if l[:1] == b"." else l + b"\r\n"
           for l in content.split(b"\r\n")[:-1]]
    out.append(b".\r\n")
    return b"".join(out)


def make_endless(body):
    """make_endless - stuff one dot wherever body would end early, so the
    only end is the one the driver sends (body ends with CRLF or is empty)"""
    s = bytearray(b"\r\n" + body + b".\r\n")
    at = 0
    while True:
        i = s.find(b"\r\n.\r\n", at)
        if i == len(s) - 5:
            return bytes(s[2:-3])
        s[i + 2:i + 2] = b"."
        at = i + 2


# ---------------------------------------------------------------------------
# Message bodies

WORDS = [b"hello", b"world", b"Subject:", b"From:", b"clamsmtpd", b"x", b"",
         b"MAIL FROM:<a@b>", b"DATA", b"QUIT", b"\t", b"  ", b"\xc3\xa9t\xc3\xa9",
         b"\xff\xfe", b"<html>", b"=?utf-8?q?x?=", b"--boundary", b"end.",
         b"RSET", b"250 ok", b"Lorem", b"ipsum", b"dolor", b"sit", b"amet"]


def text_piece(rng, style):
    """text_piece - one line's text, without CR or LF"""
    r = rng.random()
    if style == "messy" and r < 0.15:
        data = bytearray(rng.randbytes(rng.randint(1, 200)))
        return bytes(data).replace(b"\r", b"r").replace(b"\n", b"n")
    if style == "messy" and r < 0.3:
        return b"\0".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
    if r < 0.015 and style != "plain":
        n = rng.choice([1000, 2047, 2048, 2049, 4096, 65535, 65536, 65537, 100000])
        return bytes(rng.choice(b"abcdefghij.\0 ") for _ in range(min(n, 64))) * (n // 64) \
            + b"z" * (n % 64)
    return b" ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 14)))


def a_line(rng, style):
    """a_line - text plus line break, in the given style"""
    text = text_piece(rng, style)
    if style != "plain" and rng.random() < (0.25 if style == "dots" else 0.12):
        text = b"." * rng.choice([1, 1, 1, 2, 2, 3]) + text
    if style == "plain":
        text = text.lstrip(b".")
    brk = b"\r\n"
    if style == "messy":
        brk = rng.choices([b"\r\n", b"\n", b"\r"], [6, 2, 2])[0]
    return text + brk


def body_of(rng, size, style, virus):
    """body_of - about size bytes of body in a style; EICAR on a line if virus"""
    parts, have = [], 0
    if rng.random() < 0.6:
        head = b"From: <s@example.test>\r\nTo: <r@example.test>\r\nSubject: seq\r\n"
        if rng.random() < 0.8:
            head += b"\r\n"
        parts.append(head)
        have += len(head)
    block = None
    while have < size:
        if size - have > 200000 and block is None:
            lines, n = [], 0
            while n < 65536:
                lines.append(a_line(rng, style))
                n += len(lines[-1])
            block = b"".join(lines)
        if block is not None and size - have > len(block):
            parts.append(block)
            have += len(block)
            continue
        line = a_line(rng, style)
        parts.append(line)
        have += len(line)
    if virus:
        at = rng.randint(0, len(parts))
        parts.insert(at, rng.choice([b"", b"x ", b"\0"]) + EICAR + b"\r\n")
    body = b"".join(parts)
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    return make_endless(body)


def body_size(rng, small_only):
    """body_size - mostly small, some around 1-3 MB"""
    kind = rng.choices(["empty", "tiny", "small", "medium", "large", "huge"],
                       [4, 22, 36, 24, 10, 4])[0]
    if small_only and kind in ("large", "huge"):
        kind = "medium"
    return {"empty": 0, "tiny": rng.randint(1, 120), "small": rng.randint(120, 4096),
            "medium": rng.randint(4096, 140000), "large": rng.randint(140000, 1000000),
            "huge": rng.randint(1000000, 3000000)}[kind]


# ---------------------------------------------------------------------------
# The recording SMTP server, scripted step by step by the driver

class ServerConn:
    """ServerConn - one connection from clamsmtpd to our server"""

    def __init__(self, sock, session):
        self.sock = sock
        self.session = session
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.actions = collections.defaultdict(collections.deque)
        self.tx = None              # the driver's transaction number
        self.events = []            # (tx, verb, line)
        self.messages = []          # dicts: tx, raw, complete, reply
        self.errors = []            # what clamsmtpd did that nobody planned
        self.closed = threading.Event()

    def plan(self, verb, action):
        with self.lock:
            self.actions[verb].append(action)

    def take(self, verb):
        with self.lock:
            q = self.actions[verb]
            return q.popleft() if q else None

    def leftover(self):
        with self.lock:
            left = {v: list(q) for v, q in self.actions.items() if q}
            self.actions.clear()
            return left

    def fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise Closed()
        self.buf += data

    def read_line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                if not line.endswith(b"\r\n"):
                    self.errors.append("command without CRLF: %r" % line[:80])
                return line.rstrip(b"\r\n")
            if len(self.buf) > 100000:
                self.errors.append("command line over 100000 bytes")
                raise Closed()
            self.fill()

    def send(self, lines):
        self.sock.sendall(b"".join(l.encode("latin-1") + b"\r\n" for l in lines))

    def run(self):
        try:
            self.sock.settimeout(120)
            self.send(["220 recorder.test ESMTP S%s" % self.session])
            while self.command(self.read_line()):
                pass
        except (Closed, OSError):
            pass
        except Exception as e:          # a bug of ours: make it visible
            self.errors.append("recorder: %r" % e)
        finally:
            try:
                self.sock.close()
            except OSError:
                pass
            self.closed.set()

    def command(self, line):
        """command - one command; False when the connection is to end"""
        text = line.decode("latin-1")
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        self.events.append((self.tx, verb, line))
        if verb == "NOOP":
            self.send(["250 2.0.0 Ok" + (" " + arg if arg else "")])
        elif verb == "EHLO":
            self.send(EHLO_SENT)
        elif verb == "HELO":
            self.send(["250 recorder.test"])
        elif verb == "RSET":
            self.send(["250 2.0.0 Ok reset"])
        elif verb == "QUIT":
            self.send(["221 2.0.0 Bye"])
            return False
        elif verb in ("MAIL", "RCPT", "DATA"):
            action = self.take(verb)
            if action is None:
                self.errors.append("unplanned %s: %r" % (verb, line[:100]))
                self.send(["503 5.5.1 Unplanned command"])
                return True
            return self.act(verb, action)
        else:
            self.errors.append("unexpected command %r" % line[:100])
            self.send(["502 5.5.2 Error: command not recognized"])
        return True

    def act(self, verb, action):
        what = action[0]
        if what == "hangup":
            return False
        if what == "close421":
            self.send(action[1])
            return False
        self.send(action[1])
        if verb == "DATA" and action[1][-1].startswith("354"):
            return self.receive()
        return True

    def receive(self):
        """receive - the message after our 354, then what the plan says"""
        action = self.take("END")
        if action is None:
            self.errors.append("no plan for the end of data")
            action = ("reply", ["250 2.0.0 Ok unplanned"])
        rec = {"tx": self.tx, "raw": b"", "complete": False, "reply": None}
        self.messages.append(rec)
        limit = action[1] if action[0] == "hangup-mid" else None
        # the 354's own CRLF counts as the first of CRLF.CRLF
        looked = 0
        while True:
            if self.buf[:3] == b".\r\n":
                end = 3
                break
            i = self.buf.find(b"\r\n.\r\n", max(0, looked - 4))
            if i >= 0:
                end = i + 5
                break
            looked = len(self.buf)
            if limit is not None and len(self.buf) >= limit:
                rec["raw"] = bytes(self.buf)
                return False                # hang up mid-transfer
            try:
                self.fill()
            except (Closed, OSError):
                rec["raw"] = bytes(self.buf)
                raise
        rec["raw"] = bytes(self.buf[:end])
        rec["complete"] = True
        del self.buf[:end]
        what = action[0]
        if what in ("hangup-mid", "hangup-end"):
            return False
        if what == "silent":
            try:
                while True:
                    self.fill()
                    self.buf.clear()
            except (Closed, OSError):
                return False
        rec["reply"] = action[1]
        self.send(action[1])
        return what != "close421"


class Recorder:
    """Recorder - the server behind clamsmtpd, on 127.0.0.1, port 0"""

    def __init__(self):
        self.ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.lock = threading.Lock()
        self.session = None
        self.conns = {}             # session -> [ServerConn]
        self.cond = threading.Condition(self.lock)
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                sock, _ = self.ls.accept()
            except OSError:
                continue
            with self.lock:
                c = ServerConn(sock, self.session)
                self.conns.setdefault(self.session, []).append(c)
                self.cond.notify_all()
            threading.Thread(target=c.run, daemon=True).start()

    def expect(self, session):
        with self.lock:
            self.session = session

    def conn_for(self, session, timeout=10):
        with self.lock:
            self.cond.wait_for(lambda: self.conns.get(session), timeout)
            got = self.conns.get(session, [])
            return got[0] if got else None

    def forget(self, session):
        with self.lock:
            return self.conns.pop(session, [])


# ---------------------------------------------------------------------------
# The clamd stand-in: zFILDES on a unix socket, zINSTREAM on TCP

class ClamdConn:
    """ClamdConn - reads that keep any descriptors passed with them"""

    def __init__(self, sock, unix):
        self.sock = sock
        self.unix = unix
        self.buf = bytearray()
        self.fds = []

    def fill(self, want=1 << 20):
        if self.unix:
            space = socket.CMSG_SPACE(8 * array.array("i").itemsize)
            data, anc, _, _ = self.sock.recvmsg(want, space)
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
                    self.fds.extend(a)
        else:
            data = self.sock.recv(want)
        if not data:
            raise Closed()
        self.buf += data

    def command(self):
        while b"\0" not in self.buf:
            if len(self.buf) > 100:
                raise Closed()
            self.fill(16)           # small: do not read past the command
        i = self.buf.index(b"\0")
        cmd = bytes(self.buf[:i])
        del self.buf[:i + 1]
        return cmd

    def drain(self):
        try:
            while True:
                self.buf.clear()
                self.fill()
        except (Closed, OSError):
            pass

    def close(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []
        try:
            self.sock.close()
        except OSError:
            pass


def read_whole(fd):
    """read_whole - a passed file from offset 0; the sender's offset stays"""
    parts, at = [], 0
    while True:
        chunk = os.pread(fd, 1 << 20, at)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        at += len(chunk)


class Clamd:
    """Clamd - a clamd whose next answers the driver chooses, one per connection"""

    def __init__(self, kind, work):
        self.kind = kind
        self.unix = kind == "fildes"
        self.path = os.path.join(work, "clamd.sock")
        self.port = 0
        self.lock = threading.Lock()
        self.plan = collections.deque()     # (tx, command, action) per connection
        self.scans = []             # dicts: tx, cmd, content, complete, reply
        self.errors = []
        self.ls = None
        self.thread = None
        self.stopping = False
        self.timer = None
        self.up()

    def address(self):
        return self.path if self.unix else "127.0.0.1:%d" % self.port

    def up(self):
        """up - listen again, on the same address"""
        for attempt in range(50):
            try:
                if self.unix:
                    if os.path.exists(self.path):
                        os.unlink(self.path)
                    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    ls.bind(self.path)
                else:
                    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    ls.bind(("127.0.0.1", self.port))
                    self.port = ls.getsockname()[1]
                ls.listen(16)
                break
            except OSError:
                ls.close()
                time.sleep(0.1)
        else:
            raise SystemExit("sequence: cannot listen again on %s" % self.address())
        ls.settimeout(0.05)
        self.ls = ls
        self.stopping = False
        self.thread = threading.Thread(target=self.accept_loop, args=(ls,), daemon=True)
        self.thread.start()

    def down(self, unlink=False):
        """down - nobody listens: connects are refused (or find no socket)"""
        self.stopping = True
        self.thread.join()
        self.ls.close()
        if self.unix and unlink:
            os.unlink(self.path)

    def up_later(self, seconds):
        """up_later - a clamd that restarts: back before clamsmtpd's retry"""
        self.timer = threading.Timer(seconds, self.up)
        self.timer.start()

    def settle(self):
        """settle - listening again, whatever happened to this message"""
        if self.timer is not None:
            self.timer.join()
            self.timer = None
        if self.stopping:
            self.up()

    def accept_loop(self, ls):
        while not self.stopping:
            try:
                sock, _ = ls.accept()
            except (socket.timeout, OSError):
                continue
            sock.settimeout(60)
            with self.lock:
                entry = self.plan.popleft() if self.plan else None
            threading.Thread(target=self.serve, args=(sock, entry), daemon=True).start()

    def expect(self, tx, entries):
        """expect - the next connections: [(command, action, optional), ...]"""
        with self.lock:
            self.plan = collections.deque((tx, cmd, act, opt) for cmd, act, opt in entries)

    def unused_plan(self):
        """unused_plan - the planned connections that never came (and must have)"""
        with self.lock:
            left, self.plan = [e for e in self.plan if not e[3]], collections.deque()
            return left

    def serve(self, sock, entry):
        c = ClamdConn(sock, self.unix)
        try:
            if entry is None:
                self.errors.append("a clamd connection nobody planned")
                return
            tx, want, action, _ = entry
            rec = {"tx": tx, "cmd": None, "content": None, "complete": False, "reply": None}
            with self.lock:
                self.scans.append(rec)
            rec["cmd"] = cmd = c.command()
            if cmd != want:
                self.errors.append("clamd got %r, expected %r" % (cmd, want))
                return
            if action[0] == "close-early":
                return
            if action[0] == "refuse-fd":    # says no before it reads anything
                rec["reply"] = action[1]
                c.sock.sendall(action[1])
                return
            if cmd == b"zFILDES":
                prefix = self.fildes(c, rec)
            else:
                prefix = self.instream(c, rec, action)
                if prefix is None:
                    return
            self.answer(c, rec, action, prefix)
        except (Closed, OSError):
            pass
        except Exception as e:
            self.errors.append("clamd stand-in: %r" % e)
        finally:
            c.close()

    def fildes(self, c, rec):
        while not c.fds:
            c.fill(1)
        del c.buf[:1]               # the byte that carried the descriptor
        fd = c.fds.pop(0)
        st = os.fstat(fd)
        if st.st_nlink != 0:
            self.errors.append("the spool file has a name (%d links)" % st.st_nlink)
        rec["content"] = read_whole(fd)
        rec["complete"] = True
        os.close(fd)
        return b"fd[%d]" % fd

    def instream(self, c, rec, action):
        """instream - the chunks; None when the plan cut the stream short"""
        data = bytearray()
        limit = action[1] if action[0] in ("sizelimit", "close-mid") else None
        while True:
            while len(c.buf) < 4:
                c.fill()
            (n,) = struct.unpack(">I", c.buf[:4])
            del c.buf[:4]
            if n == 0:
                break
            while n > 0:
                if not c.buf:
                    c.fill()
                take = min(n, len(c.buf))
                data += c.buf[:take]
                del c.buf[:take]
                n -= take
                if limit is not None and len(data) >= limit:
                    rec["content"] = bytes(data)
                    if action[0] == "sizelimit":
                        c.sock.sendall(b"INSTREAM size limit exceeded. ERROR\0")
                    return None
        rec["content"] = bytes(data)
        rec["complete"] = True
        if limit is not None:        # the stream was shorter than the limit
            if action[0] == "sizelimit":
                c.sock.sendall(b"INSTREAM size limit exceeded. ERROR\0")
            return None
        return b"stream"

    def answer(self, c, rec, action, prefix):
        what = action[0]
        if what == "slow":              # long enough for a NOOP to the server
            time.sleep(action[1])
        if what in ("ok", "slow"):
            reply = prefix + (b": " + VIRUS.encode() + b" FOUND\0"
                              if EICAR in rec["content"] else b": OK\0")
        elif what == "error":
            reply = prefix + b": Can't allocate memory ERROR\0"
        elif what == "garbage":
            reply = action[1]
        elif what == "cut":
            reply = prefix + b": OK"
        elif what == "hang":
            c.drain()
            return
        else:                       # close-late
            return
        rec["reply"] = reply
        c.sock.sendall(reply)


# ---------------------------------------------------------------------------
# The client side

class Client:
    """Client - our end of the connection to clamsmtpd, with timeouts"""

    def __init__(self, rfd, wfd, sock=None):
        self.rfd, self.wfd, self.sock = rfd, wfd, sock
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        self.buf = bytearray()
        self.eof = False

    def send(self, data, timeout):
        view = memoryview(data)
        deadline = time.monotonic() + timeout
        p = select.poll()
        p.register(self.wfd, select.POLLOUT)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("clamsmtpd stopped reading (%d bytes unsent)" % len(view))
            if not p.poll(left * 1000):
                continue
            try:
                n = os.write(self.wfd, view[:1 << 20])
            except BlockingIOError:
                continue
            except OSError as e:
                raise Fail("writing to clamsmtpd: %s (%d bytes unsent)" % (e, len(view)))
            view = view[n:]

    def fill(self, deadline):
        p = select.poll()
        p.register(self.rfd, select.POLLIN)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if p.poll(left * 1000):
                try:
                    data = os.read(self.rfd, 65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.eof = True
                else:
                    self.buf += data
                return True

    def read_reply(self, timeout):
        """read_reply - one whole reply as a list of lines; None at EOF"""
        deadline = time.monotonic() + timeout
        lines = []
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                if self.eof:
                    if self.buf or lines:
                        raise Fail("connection ended inside a reply: %r" %
                                   (lines + [bytes(self.buf)]))
                    return None
                if not self.fill(deadline):
                    raise Fail("no reply within %d s (so far %r)" % (timeout, lines))
                continue
            raw = bytes(self.buf[:i + 1])
            del self.buf[:i + 1]
            if not raw.endswith(b"\r\n"):
                raise Fail("reply line without CRLF: %r" % raw)
            line = raw[:-2].decode("latin-1")
            if not re.match(r"^[2-5][0-9][0-9]([ -]|$)", line):
                raise Fail("not a reply line: %r" % line)
            if lines and line[:3] != lines[0][:3]:
                raise Fail("reply lines with mixed codes: %r" % (lines + [line]))
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return lines

    def read_eof(self, timeout):
        """read_eof - what arrives until the end (should be nothing)"""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self.fill(deadline):
                raise Fail("clamsmtpd did not end the connection within %d s" % timeout)
        extra, self.buf = bytes(self.buf), bytearray()
        return extra

    def shut_write(self):
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        elif self.wfd != self.rfd:
            os.close(self.wfd)
            self.wfd = -1

    def close(self):
        if self.sock is not None:
            self.sock.close()
        else:
            for fd in {self.rfd, self.wfd}:
                if fd >= 0:
                    try:
                        os.close(fd)
                    except OSError:
                        pass


# ---------------------------------------------------------------------------
# One session: the model of what must happen, step by step

# What clamd does with one connection, per 1000 (a failure costs clamsmtpd's
# pause between its two passes over the pool, SPEC 8.1: about a second).
CLAMD_FAULTS = {
    "fildes": [("ok", 860), ("slow", 4), ("down", 20), ("down-unlink", 10), ("error", 20),
               ("hang", 2), ("close-early", 12), ("close-late", 15), ("garbage", 15),
               ("cut", 8), ("refuse-fd", 12)],
    "instream": [("ok", 860), ("slow", 4), ("down", 25), ("error", 20), ("hang", 2),
                 ("sizelimit", 20), ("close-early", 10), ("close-mid", 10),
                 ("close-late", 12), ("garbage", 12), ("cut", 8)],
}
VERDICTS = ("ok", "slow")           # clamd answers OK or FOUND (by content)
GARBAGE = [b"\x01\x02hello world\0", b"stream: OKAY\0", b"stream: FOUND\0", b"\0",
           b"OK\0", b"fd[3]: OK but not really\0", b"stream: FOUND ERROR\0"]
# a unix-socket clamd that takes no descriptor (SPEC 8.1: stream instead)
REFUSALS = [b"UNKNOWN COMMAND\0", b"fd[-1]: No file descriptor received. ERROR\0"]


def weighted(rng, table):
    names = [n for n, _ in table]
    return rng.choices(names, [w for _, w in table])[0]


class Stats:
    """Stats - the figures of one lane; merged at the end"""

    def __init__(self):
        self.sessions = 0
        self.messages = 0
        self.commands = 0
        self.bytes = 0
        self.faults = collections.Counter()
        self.outcomes = collections.Counter()
        self.failures = []

    def add(self, other):
        for name in ("sessions", "messages", "commands", "bytes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.faults.update(other.faults)
        self.outcomes.update(other.outcomes)
        self.failures += other.failures


class Session:
    """Session - one client session; every step checks the one before"""

    def __init__(self, run, k, mode):
        self.run = run
        self.k = k
        self.mode = mode
        self.rng = random.Random("%d/%d" % (run.seed, k))
        self.stats = run.stats
        self.log = []               # what happened, for a failure report
        self.proc = None
        self.client = None
        self.srv = None
        # whether the server has a transaction open (MAIL accepted)
        self.in_tx = False
        # clamsmtpd's count of accepted recipients (SPEC 3)
        self.rcpts = 0
        # "lost": clamsmtpd knows the server is gone; "gone": it will find out
        self.gone = None
        self.ended = False
        self.addr_n = 0

    # -- set-up ------------------------------------------------------------

    def options(self):
        """options - per session in stdio mode, per run in listener mode"""
        if self.mode == "listener":
            return self.run.listener_opts
        return self.run.pick_options(self.rng)

    def start(self):
        run = self.run
        self.opts = self.options()
        run.recorder.expect(self.k)
        if self.mode == "stdio":
            argv = run.argv(self.opts) + ["-d", "4", "127.0.0.1:%d" % run.recorder.port]
            if self.opts["fsize"]:
                argv = ["prlimit", "--fsize=%d" % self.opts["fsize"], "--"] + argv
            self.errpath = os.path.join(run.work, "session-%d.log" % self.k)
            err = open(self.errpath, "wb")
            if self.rng.random() < 0.5:
                ours, theirs = socket.socketpair()
                try:
                    self.proc = subprocess.Popen(argv, stdin=theirs, stdout=theirs,
                                                 stderr=err, close_fds=True)
                finally:
                    theirs.close()
                    err.close()
                self.client = Client(ours.fileno(), ours.fileno(), ours)
                self.note("stdio on a socketpair: %s" % shlex.join(argv))
            else:
                r1, w1 = os.pipe()
                r2, w2 = os.pipe()
                try:
                    self.proc = subprocess.Popen(argv, stdin=r1, stdout=w2,
                                                 stderr=err, close_fds=True)
                finally:
                    os.close(r1)
                    os.close(w2)
                    err.close()
                self.client = Client(r2, w1)
                self.note("stdio on pipes: %s" % shlex.join(argv))
        else:
            s = socket.create_connection(("127.0.0.1", run.listen_port), timeout=10)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.client = Client(s.fileno(), s.fileno(), s)
            self.note("listener connection")
        greeting = self.reply()
        want = ["220 recorder.test ESMTP S%d" % self.k]
        if greeting != want:
            raise Fail("greeting %r, expected %r" % (greeting, want))
        self.srv = run.recorder.conn_for(self.k)
        if self.srv is None:
            raise Fail("clamsmtpd never connected to the server")
        self.fds = self.open_fds()

    def open_fds(self):
        """open_fds - clamsmtpd's descriptors and what they are (stdio mode)"""
        if self.proc is None:
            return {}
        where = "/proc/%d/fd" % self.proc.pid
        fds = {}
        try:
            for fd in os.listdir(where):
                try:
                    fds[fd] = os.readlink(os.path.join(where, fd))
                except OSError:
                    pass
        except OSError:
            pass
        return fds

    def check_fds(self):
        """check_fds - no descriptor piles up: only the one spool file is new"""
        new = {fd: what for fd, what in self.open_fds().items() if fd not in self.fds}
        spool = [w for w in new.values()
                 if w.startswith(self.run.spool + "/") and w.endswith(" (deleted)")]
        if len(new) > 1 or len(spool) != len(new):
            raise Fail("descriptors opened during the session and still open: %r" % new)

    # -- small helpers -----------------------------------------------------

    def note(self, text):
        self.log.append(text)

    def reply(self):
        r = self.client.read_reply(self.run.reply_wait)
        self.note("  <- %r" % (r if r is None or len(r) < 3 else r[:2] + ["..."]))
        return r

    def check(self, got, want, what):
        """check - want is a list of lines, or a code; None means EOF"""
        if want is None or got is None:
            ok = want is None and got is None
        elif isinstance(want, str):
            ok = got[-1][:3] == want
        else:
            ok = got == want
        if not ok:
            raise Fail("%s: got %r, expected %r" % (what, got, want))

    def address(self, what):
        self.addr_n += 1
        return "<%s-%d-%d@example.test>" % (what, self.k, self.addr_n)

    def fault(self, name):
        self.stats.faults[name] += 1
        self.note("  fault %s" % name)

    # -- the model: what a relayed command must get back --------------------

    def lost_reply(self):
        """lost_reply - the server is gone: 421 and the session ends"""
        self.ended = True
        self.gone = "lost"
        return R_SERVER_LOST

    def model(self, cmd):
        """model - script the server for cmd; the reply the client must get"""
        verb = cmd.split(" ", 1)[0].upper()
        if verb == "STARTTLS":
            return [R_NOT_IMPL]
        if verb == "DATA" and self.gone != "lost" and self.rcpts == 0:
            return [R_NO_RCPT]          # answered here, the server is not asked
        if self.gone:
            return self.lost_reply()
        if verb == "NOOP":
            arg = cmd[5:]
            return ["250 2.0.0 Ok" + (" " + arg if arg else "")]
        if verb in ("EHLO", "HELO", "RSET"):
            self.in_tx, self.rcpts = False, 0
            return {"EHLO": EHLO_SEEN, "HELO": ["250 recorder.test"],
                    "RSET": ["250 2.0.0 Ok reset"]}[verb]
        if verb == "QUIT":
            self.ended = True
            return ["221 2.0.0 Bye"]
        if verb == "MAIL":
            return self.model_mail()
        if verb == "RCPT":
            return self.model_rcpt(cmd)
        raise AssertionError(cmd)

    def server_fault(self, verb, table):
        """server_fault - choose and script the server's answer to verb"""
        what = weighted(self.rng, table)
        tag = "S%dA%d" % (self.k, self.addr_n)
        if what == "4xx" or what == "5xx":
            code = self.rng.choice(["421", "450", "451", "452"] if what == "4xx"
                                   else ["500", "550", "552", "553", "554"])
            if code == "421":       # 421 promises a close: keep it for close421
                code = "450"
            lines = ["%s %s.0.0 %s refused %s" % (code, code[0], verb, tag)]
            if self.rng.random() < 0.3:
                lines = ["%s-%s.0.0 %s first line %s" % (code, code[0], verb, tag)] + lines
            self.fault("server:%s-%s" % (verb.lower(), what))
            return ("reply", lines)
        if what == "hangup":
            self.fault("server:%s-hangup" % verb.lower())
            return ("hangup",)
        if what == "close421":
            self.fault("server:%s-421" % verb.lower())
            return ("close421", ["421 4.3.2 %s closing %s" % (verb, tag)])
        return None

    def model_mail(self):
        if self.in_tx:
            self.srv.plan("MAIL", ("reply", ["503 5.5.1 Error: nested MAIL command"]))
            return ["503 5.5.1 Error: nested MAIL command"]
        act = self.server_fault("MAIL", [("ok", 930), ("4xx", 25), ("5xx", 25),
                                         ("hangup", 10), ("close421", 10)])
        if act is None:
            ok = ["250 2.1.0 Sender ok S%dA%d" % (self.k, self.addr_n)]
            act = ("reply", ok)
        return self.scripted("MAIL", act)

    def model_rcpt(self, cmd):
        if not self.in_tx:
            self.srv.plan("RCPT", ("reply", ["503 5.5.1 Error: need MAIL command"]))
            return ["503 5.5.1 Error: need MAIL command"]
        act = self.server_fault("RCPT", [("ok", 920), ("4xx", 30), ("5xx", 30),
                                         ("hangup", 10), ("close421", 10)])
        if act is None:
            act = ("reply", ["250 2.1.5 Recipient ok S%dA%d" % (self.k, self.addr_n)])
        return self.scripted("RCPT", act)

    def scripted(self, verb, act):
        """scripted - what the client gets when the server does act"""
        self.srv.plan(verb, act)
        if act[0] == "hangup":
            return self.lost_reply()
        if act[0] == "close421":
            self.ended = True
            self.gone = "lost"
            return act[1]
        if act[1][-1].startswith("2"):
            if verb == "MAIL":
                self.in_tx, self.rcpts = True, 0
            else:
                self.rcpts += 1
        return act[1]

    # -- commands ----------------------------------------------------------

    def commands(self, cmds, pipelined):
        """commands - send, read one reply each, in order"""
        wants = []
        for cmd in cmds:
            wants.append(self.model(cmd))
            if self.ended:
                break
        if pipelined:
            self.note("  -> %r (pipelined)" % cmds)
            self.client.send(b"".join(c.encode() + b"\r\n" for c in cmds), 30)
        for i, want in enumerate(wants):
            if not pipelined:
                self.note("  -> %r" % cmds[i])
                self.client.send(cmds[i].encode() + b"\r\n", 30)
            self.stats.commands += 1
            self.check(self.reply(), want, cmds[i])
        if self.ended:
            self.expect_end()

    def expect_end(self):
        """expect_end - no reply more: clamsmtpd closes the connection"""
        extra = self.client.read_eof(self.run.reply_wait)
        if extra:
            raise Fail("bytes after the last reply: %r" % extra[:200])

    # -- one transaction ---------------------------------------------------

    def transaction(self, t):
        rng = self.rng
        self.srv.tx = t
        self.note("transaction %d" % t)
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2])):
            cmd = rng.choices(["RSET", "NOOP", "NOOP seq-%d-%d" % (self.k, t), "HELO client.test",
                               "EHLO client.test", "STARTTLS"], [3, 2, 2, 2, 2, 1])[0]
            self.commands([cmd], False)
            if self.ended:
                return
        shape = rng.choices(["normal", "no-mail", "nested", "abandon", "helo-reset"],
                            [86, 4, 3, 5, 2])[0]
        cmds = []
        if shape != "no-mail":
            cmds.append("MAIL FROM:%s" % self.address("from"))
            if shape == "nested":
                cmds.append("MAIL FROM:%s" % self.address("again"))
        for _ in range(rng.choices([0, 1, 2, 3], [2, 70, 18, 10])[0]):
            cmds.append("RCPT TO:%s" % self.address("to"))
        if shape == "abandon":
            cmds.append("RSET")
        if shape == "helo-reset":           # forgets the recipients: DATA gets 554
            cmds.append(rng.choice(["HELO client.test", "EHLO client.test"]))
        self.commands(cmds, rng.random() < 0.2)
        if self.ended or shape == "abandon":
            if shape == "abandon":
                self.stats.outcomes["abandoned before DATA"] += 1
            return
        self.message(t)

    def message(self, t):
        rng = self.rng
        virus = rng.random() < 0.08
        style = rng.choices(["plain", "dots", "messy"], [40, 30, 30])[0]
        size = body_size(rng, self.opts["small"])
        fsize = self.opts["fsize"]
        if fsize and rng.random() < 0.3:
            size = rng.randint(fsize - 2000, fsize + 2000)
        after = rng.random() < 0.1         # a command in the same write as "."
        if self.rcpts == 0:
            self.commands(["DATA"], False)
            self.stats.outcomes["no recipients (554)"] += 1
            return
        body = body_of(rng, size, style, virus)
        content = decoded(body)
        self.stats.messages += 1
        self.stats.bytes += len(body)
        self.client.send(b"DATA\r\n", 30)
        self.stats.commands += 1
        self.note("  -> DATA (%d bytes, %s%s)" % (len(body), style, ", EICAR" if virus else ""))
        self.check(self.reply(), [R_GO_AHEAD], "DATA")

        want, outcome = self.plan_message(t, content, virus)
        wire = body + b".\r\n"
        next_cmd = None
        if after:
            next_cmd = rng.choice(["NOOP after-%d" % t, "RSET", "STARTTLS"])
            wire += next_cmd.encode() + b"\r\n"
        # varied write boundaries: the end must be found wherever it falls
        at = 0
        pause = rng.random() < self.run.args.hang_weight / 200
        if pause:
            self.fault("client:pause-in-body")
        while at < len(wire):
            n = rng.choice([1, 2, 3, 7, 100, 4096, 65536, 1 << 20]) if rng.random() < 0.3 \
                else len(wire)
            if pause and at + n >= len(wire) // 2:
                # a client this slow makes clamsmtpd send NOOPs to the server
                self.client.send(wire[at:len(wire) // 2], 60)
                at = len(wire) // 2
                time.sleep(self.run.pause)
                pause = False
                continue
            self.client.send(wire[at:at + n], 60)
            at += n
        if self.restart_clamd:
            self.run.clamd.up_later(0.3)
        got = self.reply()
        self.verify_scan(t, content, got)   # first: it often says why
        self.check(got, want, "end of data (message %d, %s)" % (t, outcome))
        self.verify_message(t, content, virus, outcome, got)
        self.stats.outcomes[outcome] += 1
        self.rcpts = 0
        if next_cmd is not None and self.ended:
            self.expect_end()               # a relayed 421 answered the message: gone
        elif next_cmd is not None:
            wants = self.model(next_cmd)
            self.stats.commands += 1
            self.check(self.reply(), wants, next_cmd + " (after the dot)")
            if self.ended:
                self.expect_end()

    def plan_message(self, t, content, virus):
        """plan_message - faults for this message; (reply, outcome)"""
        rng = self.rng
        fsize = self.opts["fsize"]
        self.restart_clamd = False
        if fsize and len(content) > fsize:
            self.fault("spool:file-size-limit")
            self.run.clamd.expect(t, [])    # clamd must not be asked at all
            self.srv_rset = True
            return R_SPOOL_FULL, "452 spool write failed"
        if not self.clamd_plan(t, content):
            self.srv_rset = True
            return R_SCAN_FAIL, "451 scan failed"
        if virus:
            self.srv_rset = True
            if self.opts["bounce"]:
                return [R_VIRUS_BOUNCE], "virus rejected (550)"
            return [R_VIRUS_DROP], "virus dropped (250)"
        self.srv_rset = False
        # the server's part: DATA, then the end of data
        tag = "S%dT%d" % (self.k, t)
        act = self.server_fault("DATA", [("ok", 930), ("4xx", 25), ("5xx", 25),
                                         ("hangup", 10), ("close421", 10)])
        self.in_tx = False
        if act is not None:
            self.srv.plan("DATA", act)
            if act[0] == "hangup":
                self.gone = "lost"
                return R_FORWARD_FAIL, "451 server hung up at DATA"
            if act[0] == "close421":
                # RFC 5321 3.8: the relayed 421 ends the session at once
                self.gone = "gone"
                self.ended = True
                return act[1], "421 server closed at DATA"
            return act[1], "server refused DATA (%s)" % act[1][0][:3]
        self.srv.plan("DATA", ("reply", ["354 Go ahead %s" % tag]))
        what = weighted(rng, [("ok", 830), ("4xx", 40), ("5xx", 40), ("hangup-mid", 30),
                              ("hangup-end", 30), ("silent", self.run.args.hang_weight / 2),
                              ("close421", 10)])
        if what == "ok":
            lines = ["250 2.0.0 Ok: queued as %s" % tag]
            if rng.random() < 0.2:
                lines = ["250-2.0.0 first line %s" % tag] + lines
            self.srv.plan("END", ("reply", lines))
            return lines, "delivered"
        self.fault("server:end-%s" % what)
        if what in ("4xx", "5xx"):
            code = rng.choice(["450", "451", "452"] if what == "4xx" else ["550", "552", "554"])
            lines = ["%s %s.0.0 message refused %s" % (code, code[0], tag)]
            self.srv.plan("END", ("reply", lines))
            return lines, "server refused the message (%s)" % what
        if what == "close421":
            lines = ["421 4.3.2 closing at the end %s" % tag]
            self.srv.plan("END", ("close421", lines))
            self.gone = "gone"
            self.ended = True
            return lines, "421 server closed at the end"
        if what == "hangup-mid":
            raw_len = len(self.run.header_line(self.opts)) + len(stuffed(content))
            self.srv.plan("END", ("hangup-mid", rng.randint(0, max(0, raw_len - 1))))
        else:
            self.srv.plan("END", (what,))
        self.gone = "lost"
        return R_FORWARD_FAIL, "451 server lost in the transfer"

    def clamd_plan(self, t, content):
        """clamd_plan - clamd's answer to each of clamsmtpd's attempts (SPEC
        8.1: one member is tried, and after a pause tried again; a unix one
        that takes no descriptor is asked to stream); True for a verdict"""
        rng, run = self.rng, self.run
        first = weighted(rng, run.clamd_faults)
        attempts = [first]
        if first not in VERDICTS and first != "refuse-fd" and run.args.clamd_tries > 1:
            if first == "sizelimit":
                # clamsmtpd need not ask again after a size refusal, but may
                # when the refusal was lost in the reset of the connection
                attempts.append("sizelimit?")
            elif rng.random() < 0.45:
                attempts.append("ok")           # a clamd that is back in time
                self.fault("clamd:recovers-for-the-retry")
            else:
                attempts.append(weighted(rng, [
                    (n, w) for n, w in run.clamd_faults if n not in VERDICTS + ("refuse-fd",)
                    and (first.startswith("down") or not n.startswith("down"))]))
        entries, verdict = [], False
        own = b"zFILDES" if run.clamd.unix else b"zINSTREAM"
        for a in attempts:
            optional = a.endswith("?")
            a = a.rstrip("?")
            if a != "ok" and not optional:
                self.fault("clamd:%s" % a)
            if a.startswith("down"):
                continue                        # no connection at all
            if a == "refuse-fd":
                entries.append((own, (a, rng.choice(REFUSALS)), False))
                if not run.args.single_scan:
                    entries.append((b"zINSTREAM", ("ok",), False))
                    verdict = True
                continue
            if a == "slow":
                action = (a, run.pause)
            elif a in ("sizelimit", "close-mid"):
                action = (a, rng.randint(0, len(content) + 10))
            elif a == "garbage":
                action = (a, rng.choice(GARBAGE))
            else:
                action = (a,)
            entries.append((own, action, optional))
            verdict = verdict or a in VERDICTS
        run.clamd.expect(t, entries)
        if first.startswith("down"):
            run.clamd.down(unlink=first == "down-unlink")
            # back after the first attempt, before the retry (after the body)
            self.restart_clamd = len(attempts) > 1 and not attempts[1].startswith("down")
        self.scan_entries = entries
        return verdict

    def verify_scan(self, t, content, got):
        """verify_scan - clamd was asked as planned, and saw exactly the
        spool the model predicts"""
        clamd = self.run.clamd
        clamd.settle()
        left = clamd.unused_plan()
        scans = [s for s in clamd.scans if s["tx"] == t]
        clamd.scans = []
        if clamd.errors:
            raise Fail("message %d: %s (the client got %r)" % (t, "; ".join(clamd.errors), got))
        if left:
            raise Fail("message %d: clamd was asked %d times, expected %d (the client got %r)"
                       % (t, len(scans), len(scans) + len(left), got))
        for s in scans:
            if s["content"] is not None:
                seen = content if s["complete"] else content[:len(s["content"])]
                if s["content"] != seen:
                    raise Fail("message %d: clamd scanned %s" % (t, differ(s["content"], seen)))

    def verify_message(self, t, content, virus, outcome, got):
        """verify_message - what the server saw of message t"""
        if self.srv.errors:
            raise Fail("message %d: %s" % (t, "; ".join(self.srv.errors)))
        left = self.srv.leftover()
        if left:
            raise Fail("message %d: the server never got %s" % (t, ", ".join(left)))
        msgs = [m for m in self.srv.messages if m["tx"] == t]
        self.srv.messages = [m for m in self.srv.messages if m["tx"] != t]
        datas = [e for e in self.srv.events if e[0] == t and e[1] == "DATA"]
        accepted = [m for m in msgs if m["reply"] and m["reply"][-1].startswith("250")]
        if outcome == "delivered":
            raw = self.run.header_line(self.opts) + stuffed(content)
            if len(msgs) != 1 or not msgs[0]["complete"]:
                raise Fail("message %d: client got 250 but the server got %d messages"
                           % (t, len(msgs)))
            if msgs[0]["raw"] != raw:
                raise Fail("message %d delivered with 250 but %s"
                           % (t, differ(msgs[0]["raw"], raw)))
            if msgs[0]["reply"] != got:
                raise Fail("message %d: server said %r, client got %r"
                           % (t, msgs[0]["reply"], got))
        else:
            if accepted:
                raise Fail("message %d: client got %r but the server accepted it (%r)"
                           % (t, got, accepted[0]["reply"]))
            if self.srv_rset:
                if datas or msgs:
                    raise Fail("message %d: the server got DATA for a message that "
                               "was not clean or not scanned" % t)
                tail = [e[1] for e in self.srv.events if e[0] == t and e[1] != "NOOP"]
                if tail[-1:] != ["RSET"]:
                    raise Fail("message %d: no RSET to the server after %s (it got %r)"
                               % (t, outcome, tail[-3:]))
                self.in_tx = False
        self.srv.events = [e for e in self.srv.events if e[0] != t]

    # -- the whole session -------------------------------------------------

    def play(self):
        rng = self.rng
        self.start()
        first = rng.choices(["EHLO client.test", "HELO client.test", None], [6, 3, 1])[0]
        if first:
            self.commands([first], False)
        n = rng.choices(range(1, 13), [8, 14, 14, 12, 10, 9, 8, 7, 6, 5, 4, 3])[0]
        if rng.random() < 0.02:
            n = rng.randint(30, 60)         # a long session: state piling up
            self.opts = dict(self.opts, small=True)
        for t in range(n):
            if self.ended or self.gone:
                break
            self.transaction(t)
        if not self.ended:
            self.check_fds()
        if not self.ended and self.gone and rng.random() < 0.3:
            self.commands(["STARTTLS"], False)      # answered even now
        if not self.ended:
            how = rng.choices(["QUIT", "close", "NOOP", "DATA", "MAIL"], [10, 3, 1, 1, 1])[0]
            if how == "close":
                self.note("  client closes without QUIT")
                self.client.shut_write()
                self.ended = True
                self.expect_end()
            elif how == "DATA" and self.rcpts:
                self.commands(["QUIT"], False)
            elif how == "MAIL":
                self.commands(["MAIL FROM:%s" % self.address("last"), "QUIT"], False)
            else:
                self.commands([how, "QUIT"], False)
        self.finish()

    def finish(self):
        """finish - the session is over: process, server side, spool"""
        run = self.run
        self.client.close()
        self.client = None
        if self.proc is not None:
            try:
                rc = self.proc.wait(timeout=run.reply_wait)
            except subprocess.TimeoutExpired:
                raise Fail("clamsmtpd did not exit after the session")
            self.proc = None
            if rc != 0:
                raise Fail("clamsmtpd exited with status %d" % rc)
        elif run.listener.poll() is not None:
            raise Fail("the listener exited (status %d)" % run.listener.returncode)
        if self.srv is not None and not self.srv.closed.wait(run.reply_wait):
            raise Fail("clamsmtpd left its server connection open")
        conns = run.recorder.forget(self.k)
        if len(conns) != 1:
            raise Fail("%d server connections for one session" % len(conns))
        if self.srv.errors:
            raise Fail("server side: %s" % "; ".join(self.srv.errors))
        if run.clamd.errors:
            raise Fail("clamd side: %s" % "; ".join(run.clamd.errors))
        left = os.listdir(run.spool)
        if left:
            raise Fail("spool directory not empty: %s" % left)
        run.check_logs(self)
        if self.mode == "stdio":
            os.unlink(self.errpath)

    def abort(self):
        """abort - after a failure: stop our processes, reset the stand-ins"""
        run = self.run
        if self.client is not None:
            self.client.close()
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        run.clamd.settle()
        run.clamd.unused_plan()
        run.clamd.scans = []
        run.clamd.errors = []
        for c in run.recorder.forget(self.k):
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def differ(got, want):
    """differ - a short account of how two byte strings differ"""
    n = 0
    while n < min(len(got), len(want)) and got[n] == want[n]:
        n += 1
    nuls = len(got) - len(got.lstrip(b"\0"))
    return ("%d bytes instead of %d, first difference at offset %d: got %r, expected %r%s"
            % (len(got), len(want), n, got[n:n + 40], want[n:n + 40],
               ", starting with %d NUL bytes" % nuls if nuls else ""))


# ---------------------------------------------------------------------------
# A run: the stand-ins, the listener, many sessions

class Run:
    """Run - one lane: its own server, clamd, spool and listener"""

    def __init__(self, args, clamd_kind, stats, lane):
        self.args = args
        self.seed = args.seed
        self.clamd_kind = clamd_kind
        self.stats = stats
        self.work = tempfile.mkdtemp(prefix="seq-%s-" % clamd_kind, dir=args.workdir)
        # lanes run at the same time: each its own spool, checked empty
        self.spool = os.path.join(args.spool or self.work, "lane-%d" % lane)
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        self.reply_wait = 3 * args.timeout + 20
        # a delay that lets clamsmtpd's keepalive (every -t/2 s) fire, yet
        # stays well inside -t, which clamsmtpd counts in whole seconds
        self.pause = max(0.0, (args.timeout - 1) * 0.6)
        self.recorder = Recorder()
        self.clamd = Clamd(clamd_kind, self.work)
        self.clamd_faults = [(n, args.hang_weight if n == "hang" else w)
                             for n, w in CLAMD_FAULTS[clamd_kind]]
        self.listener = None
        self.listener_opts = None
        self.log_seen = 0

    def pick_options(self, rng):
        header = rng.choices([None, "X-Seq-Test: seq", ""], [3, 2, 1])[0]
        if self.args.bounce != "random":
            bounce = self.args.bounce == "always"
        else:
            bounce = rng.random() < 0.3
        fsize = 0
        if rng.random() < 0.15:
            fsize = rng.randint(256 * 1024, 2 * 1024 * 1024)
        return {"header": header, "bounce": bounce, "fsize": fsize,
                "small": self.args.small}

    def header_line(self, opts):
        if opts["header"] is None:
            return DEFAULT_HEADER + b"\r\n"
        if opts["header"] == "":
            return b""
        return opts["header"].encode() + b"\r\n"

    def argv(self, opts):
        a = [self.args.clamsmtpd, "-t", str(self.args.timeout), "-D", self.spool,
             "-c", self.clamd.address()]
        if opts["bounce"]:
            a.append("-b")
        if opts["header"] is not None:
            a += ["-h", opts["header"]]
        return a

    def start_listener(self):
        rng = random.Random("%d/listener/%s" % (self.seed, self.clamd_kind))
        self.listener_opts = self.pick_options(rng)
        self.listener_opts["fsize"] = 0       # its log must not hit the limit
        self.listen_log = os.path.join(self.work, "listener.log")
        for attempt in range(5):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            argv = self.argv(self.listener_opts) + [
                "-d", "1", "-l", "127.0.0.1:%d" % port, "127.0.0.1:%d" % self.recorder.port]
            with open(self.listen_log, "ab") as err:
                self.listener = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                                 stdout=err, stderr=err, close_fds=True)
            if wait_listening(port, self.listener, 10):
                self.listen_port = port
                print("sequence: listener pid %d: %s" % (self.listener.pid, shlex.join(argv)),
                      flush=True)
                return
            if self.listener.poll() is None:
                self.listener.kill()
            self.listener.wait()
        raise SystemExit("sequence: the listener did not start; see %s" % self.listen_log)

    def stop_listener(self):
        """stop_listener - SIGTERM; it must exit 0, its sessions with it"""
        if self.listener is None:
            return None
        kids = children(self.listener.pid)
        self.listener.send_signal(signal.SIGTERM)
        problem = None
        try:
            rc = self.listener.wait(timeout=30)
            if rc != 0:
                problem = "the listener exited with status %d after SIGTERM" % rc
        except subprocess.TimeoutExpired:
            problem = "the listener did not exit within 30 s of SIGTERM"
            self.listener.kill()
            self.listener.wait()
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.listener = None
        return problem

    def check_logs(self, sess):
        """check_logs - no sanitizer report in what clamsmtpd wrote"""
        path = sess.errpath if sess.mode == "stdio" else self.listen_log
        with open(path, "rb") as f:
            if sess.mode == "listener":
                f.seek(self.log_seen)
            text = f.read()
        if sess.mode == "listener":
            self.log_seen += len(text)
        m = SANITIZER.search(text)
        if m:
            raise Fail("sanitizer report in %s: %r" % (path, text[max(0, m.start() - 200):
                                                             m.start() + 800]))

    def close(self, keep):
        try:
            self.clamd.settle()
            self.clamd.down()
        except Exception:
            pass
        try:
            os.rmdir(self.spool)        # fails if anything was left there
        except OSError:
            keep = True
        if not keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return keep


def children(pid):
    """children - the processes our listener forked (for a last clean-up)"""
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def wait_listening(port, proc, seconds):
    """wait_listening - until 127.0.0.1:port is in LISTEN state (no probe
    connection, which would be a session)"""
    want = "0100007F:%04X" % port
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with open("/proc/net/tcp") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 3 and parts[1] == want and parts[3] == "0A":
                    return True
        time.sleep(0.05)
    return False


def session_mode(args, k):
    if args.mode != "both":
        return args.mode
    return random.Random("%d/%d/mode" % (args.seed, k)).choice(["stdio", "listener"])


def run_kind(args, kind, stats, deadline, sessions):
    """run_kind - the sessions for one clamd kind in parallel lanes (much
    of a session is waiting: on -t, on clamsmtpd's pause before a retry)"""
    lanes = max(1, min(args.lanes, len(sessions)))
    lane_stats = [Stats() for _ in range(lanes)]
    threads = [threading.Thread(target=run_lane,
                                args=(args, kind, lane_stats[i], deadline, sessions[i::lanes], i,
                                      stats, lane_stats))
               for i in range(lanes)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for one in lane_stats:
        failures = one.failures
        one.failures = []
        stats.add(one)
        stats.failures += failures


def run_lane(args, kind, stats, deadline, sessions, lane, total, lanes):
    """run_lane - sessions one after the other, on one lane's stand-ins"""
    run = Run(args, kind, stats, lane)
    keep = False
    try:
        for k in sessions:
            mode = session_mode(args, k)
            if deadline and time.monotonic() > deadline:
                break
            failed = len(total.failures) + sum(len(one.failures) for one in lanes)
            if args.max_failures and failed >= args.max_failures:
                break
            if mode == "listener" and run.listener is None:
                run.start_listener()
            sess = Session(run, k, mode)
            stats.sessions += 1
            before = stats.messages
            try:
                sess.play()
                if not args.quiet:
                    print("session %d (seed %d/%d): %s %s, %d messages: ok"
                          % (k, args.seed, k, mode, kind, stats.messages - before),
                          flush=True)
            except Fail as e:
                keep = True
                replay = ("%s --seed %d --session %d --mode %s --clamd %s"
                          % (sys.argv[0], args.seed, k, mode, kind))
                stats.failures.append("%s [%s]" % (e, replay))
                print("FAIL session %d (seed %d/%d): %s %s: %s" % (k, args.seed, k, mode, kind, e),
                      flush=True)
                print("  replay: %s" % replay, flush=True)
                for line in (sess.log[-args.context:] if args.context > 0 else []):
                    print("    " + line[:300])
                if mode == "stdio":
                    print("  clamsmtpd's log: %s" % sess.errpath)
                sess.abort()
                if run.listener is not None and run.listener.poll() is not None:
                    run.listener = None         # gone: the next session starts one
        problem = run.stop_listener()
        if problem:
            keep = True
            stats.failures.append(problem)
            print("FAIL: %s" % problem)
        if run.listener_opts is not None:
            with open(run.listen_log, "rb") as f:
                m = SANITIZER.search(f.read())
            if m:
                keep = True
                stats.failures.append("sanitizer report in %s" % run.listen_log)
                print("FAIL: sanitizer report in %s" % run.listen_log)
    except Exception as e:          # a bug of the driver: never a silent pass
        stats.failures.append("driver error in lane %d: %r" % (lane, e))
        print("FAIL: driver error in lane %d: %r" % (lane, e), flush=True)
        keep = True
        raise
    finally:
        run.stop_listener()
        if run.close(keep):
            print("sequence: kept %s" % run.work)


def main():
    ap = argparse.ArgumentParser(description="stateful session test for clamsmtpd")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--sessions", type=int, default=100)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--session", type=int, help="replay only this session")
    ap.add_argument("--seconds", type=float, default=0,
                    help="start no new session after this many seconds")
    ap.add_argument("--clamsmtpd", default=os.environ.get("CLAMSMTPD",
                                                          os.path.join(here, "..", "clamsmtpd")))
    ap.add_argument("--mode", choices=["stdio", "listener", "both"], default="both")
    ap.add_argument("--clamd", choices=["fildes", "instream", "both"], default="both")
    ap.add_argument("--bounce", choices=["random", "always", "never"], default="random")
    ap.add_argument("--timeout", type=int, default=3, help="clamsmtpd -t")
    ap.add_argument("--single-scan", action="store_true",
                    help="model a clamsmtpd without SPEC 8.1's retry and stream fallback")
    ap.add_argument("--small", action="store_true", help="no messages over 140 kB")
    ap.add_argument("--hang-weight", type=float, default=2,
                    help="weight (of 1000) of the faults that cost -t seconds each")
    ap.add_argument("--spool", help="the -D directory (default: a private one)")
    ap.add_argument("--workdir", help="where the private files go")
    ap.add_argument("--context", type=int, default=30,
                    help="lines of the session shown with a failure")
    ap.add_argument("--max-failures", type=int, default=0,
                    help="start no new session after this many failures (0: no limit)")
    ap.add_argument("--quiet", action="store_true", help="no line per passed session")
    ap.add_argument("--lanes", type=int, default=3,
                    help="sessions run this many at a time, each on its own stand-ins")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    args.clamsmtpd = os.path.abspath(args.clamsmtpd)
    if not os.access(args.clamsmtpd, os.X_OK):
        raise SystemExit("sequence: %s is not an executable" % args.clamsmtpd)
    if args.spool:
        args.spool = os.path.abspath(args.spool)
    args.clamd_tries = 1 if args.single_scan else 2
    kinds = ["fildes", "instream"] if args.clamd == "both" else [args.clamd]
    print("sequence: seed %d, clamsmtpd %s, mode %s, clamd %s, -t %d"
          % (args.seed, args.clamsmtpd, args.mode, args.clamd, args.timeout), flush=True)

    stats = Stats()
    started = time.monotonic()
    if args.session is not None:
        sessions = {kinds[0]: [args.session]}
    else:
        # sessions alternate between the clamd kinds: K even, K odd
        sessions = {k: [] for k in kinds}
        for k in range(args.sessions):
            sessions[kinds[k % len(kinds)]].append(k)
    for i, kind in enumerate(kinds):
        # the kinds one after the other, each with its share of the time
        deadline = started + args.seconds * (i + 1) / len(kinds) if args.seconds else 0
        run_kind(args, kind, stats, deadline, sessions[kind])

    elapsed = time.monotonic() - started
    print("sequence: seed %d: %d sessions, %d messages (%.1f MB of body), %d commands in %.0f s"
          % (args.seed, stats.sessions, stats.messages, stats.bytes / 1e6, stats.commands, elapsed))
    print("sequence: faults injected: %d" % sum(stats.faults.values()))
    for name, n in sorted(stats.faults.items()):
        print("  %-28s %d" % (name, n))
    print("sequence: outcomes:")
    for name, n in sorted(stats.outcomes.items()):
        print("  %-40s %d" % (name, n))
    print("sequence: %d failures" % len(stats.failures))
    for f in stats.failures:
        print("  " + f[:600])
    sys.exit(1 if stats.failures or stats.sessions == 0 else 0)


if __name__ == "__main__":
    main()
