#!/usr/bin/env python3
"""fake-clamd - a clamd stand-in for tests that can fail on purpose.

It speaks just enough of clamd's protocol (zFILDES, zINSTREAM, zPING, and
the n-prefixed forms) to stand in for the real daemon, and answers every
scan the way --mode says, including wrong answers, silence and hang-ups.
It does not scan anything, except for the EICAR/marker check of "auto".

Files in DIR (when --dir is given):
  port          the TCP port (atomic), TCP only
  pid           own pid
  commands.log  "FILDES <bytes>" / "INSTREAM <bytes>" / "PING" / "OTHER <cmd>"
  last-scan     the content of the last FILDES/INSTREAM scan

Modes beyond the plain verdicts: "answer" sends the bytes of --answer
(escapes allowed) as the whole reply, to test how replies are parsed;
"early-ok" answers "stream: OK" to an INSTREAM right after its first
chunk and goes on reading (a verdict that comes before the end).
--delay S waits S seconds before any verdict (a slow scan); --accept-delay
S keeps the listen queue full (backlog 0, one connection of its own in
it) and waits S seconds before each accept, so connects block.

Python 3 standard library only.
"""

import argparse
import array
import os
import signal
import socket
import stat
import struct
import sys
import threading
import time

MODES = ("ok", "found", "auto", "error", "garbage", "hang", "hangup",
         "hangup-mid", "sizelimit", "refuse", "empty", "cut-ok",
         "answer", "early-ok")

# The EICAR test string, from pieces so this file never holds it whole.
EICAR = b"".join([b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$", b"EICAR-STANDARD-",
                  b"ANTIVIRUS-TEST-FILE!$H+H*"])
MARKER = b"CLAMSMTPD-TEST-MARKER"
LIMIT = 1000            # bytes of data at which hangup-mid / sizelimit fire
MAX_CMD = 1024


class Closed(Exception):
    """The peer went away or broke the protocol."""


def atomic_write(path, data):
    """atomic_write - write bytes to a temp name, then rename into place."""
    tmp = "%s.tmp.%d.%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class State:
    """State - options plus the command log, shared by all connections."""

    def __init__(self, args):
        self.mode = args.mode
        self.virus = args.virus
        self.answer = args.answer.encode("latin-1").decode("unicode_escape").encode("latin-1")
        self.delay = args.delay
        self.dir = args.dir
        self.lock = threading.Lock()
        self.log = None
        if self.dir:
            self.log = open(os.path.join(self.dir, "commands.log"), "ab")

    def note(self, line, content=None):
        if not self.dir:
            return
        with self.lock:
            if content is not None:
                atomic_write(os.path.join(self.dir, "last-scan"), content)
            self.log.write(line.encode("ascii", "backslashreplace") + b"\n")
            self.log.flush()


class Conn:
    """Conn - one client connection; reads keep any passed descriptors."""

    def __init__(self, sock, is_unix):
        self.sock = sock
        self.is_unix = is_unix
        self.buf = bytearray()
        self.fds = []

    def fill(self, want=65536):
        """fill - one read; on unix sockets also collect SCM_RIGHTS fds."""
        try:
            if self.is_unix:
                cmsg_len = socket.CMSG_SPACE(16 * array.array("i").itemsize)
                data, anc, _, _ = self.sock.recvmsg(want, cmsg_len)
                for level, typ, cdata in anc:
                    if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                        a = array.array("i")
                        usable = len(cdata) - len(cdata) % a.itemsize
                        a.frombytes(cdata[:usable])
                        self.fds.extend(a)
            else:
                data = self.sock.recv(want)
        except OSError:
            raise Closed()
        if not data:
            raise Closed()
        self.buf += data

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill(max(n - len(self.buf), 1))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_command(self):
        """read_command - (name, terminator) of the one command."""
        while True:
            if self.buf:
                term = b"\0" if self.buf[:1] == b"z" else b"\n"
                i = self.buf.find(term)
                if i >= 0:
                    cmd = bytes(self.buf[:i])
                    del self.buf[:i + 1]
                    if cmd[:1] in (b"z", b"n"):
                        cmd = cmd[1:]
                    return cmd.rstrip(b"\r"), term
                if len(self.buf) > MAX_CMD:
                    raise Closed()
            # read in small steps so the fd byte of FILDES is not mixed in
            # with a plain read before we know what the command is
            self.fill(MAX_CMD)

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass

    def drain(self):
        """drain - read and discard until the peer closes."""
        try:
            while True:
                self.buf.clear()
                self.fill()
        except Closed:
            pass

    def close_fds(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def close(self):
        self.close_fds()
        try:
            self.sock.close()
        except OSError:
            pass


def verdict(state, prefix, content, term):
    """verdict - the reply bytes for a scan under the chosen mode."""
    mode = state.mode
    if state.delay > 0:
        time.sleep(state.delay)
    if mode == "answer":
        return state.answer
    if mode == "auto" or mode == "sizelimit":
        mode = "found" if (EICAR in content or MARKER in content) else "ok"
    if mode == "ok":
        return prefix + b": OK" + term
    if mode == "found":
        return prefix + b": " + state.virus.encode() + b" FOUND" + term
    if mode == "garbage":
        return b"\x01\x02hello world" + term
    return prefix + b": lstat() failed: Permission denied. ERROR" + term


def read_fd_content(fd):
    """read_fd_content - whole file from offset 0, sender's offset untouched."""
    parts = []
    off = 0
    while True:
        chunk = os.pread(fd, 1 << 20, off)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)
        off += len(chunk)


def do_fildes(state, c, term):
    mode = state.mode
    if mode in ("hangup", "hangup-mid"):
        state.note("FILDES 0")
        return
    while not c.fds:
        c.fill(1)
    if c.buf:                            # the one byte that carried the fd
        del c.buf[:1]
    fd = c.fds.pop(0)
    c.close_fds()
    try:
        content = read_fd_content(fd)
    except OSError as e:
        content = b""
        sys.stderr.write("fake-clamd: read passed fd: %s\n" % e)
    prefix = b"fd[%d]" % fd
    os.close(fd)
    state.note("FILDES %d" % len(content), content)
    if mode == "hang":
        c.drain()                        # keep the socket open, say nothing
    elif mode == "cut-ok":
        c.send(prefix + b": OK")         # no terminator: half of an answer
        c.drain()
    elif mode != "empty":
        c.send(verdict(state, prefix, content, term))


def do_instream(state, c, term):
    mode = state.mode
    if mode == "hangup":
        state.note("INSTREAM 0")
        return
    data = bytearray()
    chunks = 0
    while True:
        (n,) = struct.unpack(">I", c.read_exact(4))
        if n == 0:
            break
        chunks += 1
        if mode == "early-ok" and chunks == 2:
            c.send(b"stream: OK" + term)    # after the first chunk, before the end
            time.sleep(0.3)
        while n > 0:
            if not c.buf:
                c.fill(min(n, 65536))
            take = min(n, len(c.buf))
            if mode in ("hangup-mid", "sizelimit"):
                take = min(take, LIMIT + 1 - len(data))
            data += c.buf[:take]
            del c.buf[:take]
            n -= take
            if mode == "hangup-mid" and len(data) >= LIMIT:
                state.note("INSTREAM %d" % len(data), bytes(data))
                return
            if mode == "sizelimit" and len(data) > LIMIT:
                state.note("INSTREAM %d" % len(data), bytes(data))
                c.send(b"INSTREAM size limit exceeded. ERROR" + term)
                return
    content = bytes(data)
    state.note("INSTREAM %d" % len(content), content)
    if mode == "hang":
        c.drain()
    elif mode == "cut-ok":
        c.send(b"stream: OK")
        c.drain()
    elif mode == "early-ok":
        c.drain()
    elif mode not in ("empty", "hangup-mid"):   # short stream: still no reply
        c.send(verdict(state, b"stream", content, term))


def serve(state, sock, is_unix):
    c = Conn(sock, is_unix)
    try:
        if state.mode == "refuse":
            return
        cmd, term = c.read_command()
        if cmd == b"PING":
            state.note("PING")
            c.send(b"PONG" + term)
        elif cmd == b"VERSION":
            state.note("VERSION")
            c.send(b"ClamAV 1.4.6-fake" + term)
        elif cmd == b"FILDES":
            do_fildes(state, c, term)
        elif cmd == b"INSTREAM":
            do_instream(state, c, term)
        else:
            state.note("OTHER %s" % cmd.decode("latin-1"))
            c.send(b"UNKNOWN COMMAND" + term)
    except Closed:
        pass
    except Exception as e:               # never let one connection kill us
        sys.stderr.write("fake-clamd: %r\n" % e)
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description="fake clamd for tests")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix")
    where.add_argument("--tcp")
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--dir")
    ap.add_argument("--virus", default="Fake-Virus.UNOFFICIAL")
    ap.add_argument("--answer", default="",
                    help='mode answer: the reply bytes, e.g. "stream: OK\\nx FOUND\\0"')
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--accept-delay", type=float, default=0.0)
    args = ap.parse_args()

    if args.tcp and not args.dir:
        ap.error("--tcp needs --dir (to publish the port)")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
    state = State(args)

    if args.unix:
        path = args.unix
        try:
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                os.unlink(path)          # stale socket from an earlier run
        except FileNotFoundError:
            pass
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            ls.bind(path)
        except OSError as e:
            raise SystemExit("fake-clamd: bind %s: %s" % (path, e))
    else:
        host, sep, port = args.tcp.rpartition(":")
        host = host.strip("[]")
        if not sep:
            ap.error("--tcp wants ADDR:PORT")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        ls = socket.socket(family, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            ls.bind((host, int(port)))
        except (OSError, ValueError) as e:
            raise SystemExit("fake-clamd: bind %s: %s" % (args.tcp, e))
    if args.mode == "early-ok":
        # a small window: the sender is still mid-stream when OK arrives
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    filler = None
    if args.accept_delay > 0:
        ls.listen(0)
        filler = socket.socket(ls.family, socket.SOCK_STREAM)
        filler.connect(ls.getsockname())    # the queue is full from now on
    else:
        ls.listen(128)

    def on_term(signum, frame):
        try:
            ls.close()
            if args.unix:
                os.unlink(args.unix)
        except OSError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    if args.dir:
        atomic_write(os.path.join(args.dir, "pid"), b"%d\n" % os.getpid())
        if args.tcp:
            atomic_write(os.path.join(args.dir, "port"),
                         b"%d\n" % ls.getsockname()[1])

    while True:
        if args.accept_delay > 0:
            time.sleep(args.accept_delay)
        try:
            conn, _ = ls.accept()
        except OSError:
            continue
        if filler is not None:              # our own place holder: done
            conn.close()
            filler.close()
            filler = None
            continue
        threading.Thread(target=serve, args=(state, conn, bool(args.unix)),
                         daemon=True).start()


if __name__ == "__main__":
    main()
