#!/usr/bin/env python3
"""fildes-refuser - a unix-socket clamd stand-in that takes no descriptor.

It plays a clamd that cannot receive a passed descriptor (an old clamd, or
one behind a socket proxy): zFILDES is answered with --reply (default
"No file descriptor received. ERROR") after the byte that carried the fd
was read; zINSTREAM is handed on, byte for byte both ways, to the real
clamd at --upstream, so a real scan gives the verdict. zPING gets PONG.

Usage: fildes-refuser.py --unix PATH --upstream CLAMD_SOCK --dir DIR [--reply TEXT]
Files in DIR:
  pid           own pid (atomic)
  commands.log  "FILDES refused" / "INSTREAM relayed" / "PING" / "OTHER <cmd>"

Python 3 standard library only.
"""

import argparse
import array
import os
import signal
import socket
import sys
import threading

MAX_CMD = 1024


def atomic_write(path, data):
    """atomic_write - write bytes to a temp name, then rename into place."""
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class Log:
    """Log - commands.log, one line per request, shared by the threads."""

    def __init__(self, directory):
        self.lock = threading.Lock()
        self.f = open(os.path.join(directory, "commands.log"), "ab")

    def note(self, line):
        with self.lock:
            self.f.write(line.encode("ascii", "backslashreplace") + b"\n")
            self.f.flush()


def recv_dropping_fds(sock, want):
    """recv_dropping_fds - one read; any passed descriptor is closed unused."""
    cmsg_len = socket.CMSG_SPACE(16 * array.array("i").itemsize)
    data, anc, _, _ = sock.recvmsg(want, cmsg_len)
    for level, typ, cdata in anc:
        if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
            for fd in fds:
                os.close(fd)
    return data


def read_command(sock, buf):
    """read_command - (command, terminator, rest of what was read) or None."""
    while True:
        if buf:
            term = b"\0" if buf[:1] == b"z" else b"\n"
            i = buf.find(term)
            if i >= 0:
                cmd = bytes(buf[:i])
                if cmd[:1] in (b"z", b"n"):
                    cmd = cmd[1:]
                return cmd, term, bytes(buf[i + 1:])
            if len(buf) > MAX_CMD:
                return None
        data = recv_dropping_fds(sock, MAX_CMD)
        if not data:
            return None
        buf += data


def pump(src, dst):
    """pump - copy src to dst until src ends, then half-close dst."""
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def relay_instream(sock, term, rest, upstream):
    """relay_instream - the whole INSTREAM exchange through the real clamd."""
    up = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    up.connect(upstream)
    up.sendall(b"zINSTREAM\0" if term == b"\0" else b"nINSTREAM\n")
    if rest:
        up.sendall(rest)
    back = threading.Thread(target=pump, args=(up, sock), daemon=True)
    back.start()
    pump(sock, up)
    back.join(30)
    up.close()


def serve(sock, args, log):
    try:
        got = read_command(sock, bytearray())
        if got is None:
            return
        cmd, term, rest = got
        if cmd == b"FILDES":
            if not rest:
                recv_dropping_fds(sock, 1)   # the byte that carried the fd
            log.note("FILDES refused")
            sock.sendall(args.reply.encode() + term)
        elif cmd == b"INSTREAM":
            log.note("INSTREAM relayed")
            relay_instream(sock, term, rest, args.upstream)
        elif cmd == b"PING":
            log.note("PING")
            sock.sendall(b"PONG" + term)
        else:
            log.note("OTHER %s" % cmd.decode("latin-1"))
            sock.sendall(b"UNKNOWN COMMAND" + term)
    except OSError as e:
        sys.stderr.write("fildes-refuser: %s\n" % e)
    finally:
        sock.close()


def main():
    ap = argparse.ArgumentParser(description="clamd stand-in that refuses FILDES")
    ap.add_argument("--unix", required=True)
    ap.add_argument("--upstream", required=True, help="the real clamd's unix socket")
    ap.add_argument("--dir", required=True)
    ap.add_argument("--reply", default="No file descriptor received. ERROR")
    args = ap.parse_args()

    os.makedirs(args.dir, exist_ok=True)
    log = Log(args.dir)
    try:
        os.unlink(args.unix)
    except FileNotFoundError:
        pass
    ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ls.bind(args.unix)
    ls.listen(64)

    def on_term(signum, frame):
        try:
            os.unlink(args.unix)
        except OSError:
            pass
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    atomic_write(os.path.join(args.dir, "pid"), b"%d\n" % os.getpid())
    while True:
        try:
            conn, _ = ls.accept()
        except OSError:
            continue
        threading.Thread(target=serve, args=(conn, args, log), daemon=True).start()


if __name__ == "__main__":
    main()
