#!/usr/bin/env python3
"""smtp-client.py - a scripted SMTP client for tests.

Usage: smtp-client.py HOST:PORT [--bind ADDR] [--out FILE] STEP...
  HOST:PORT   127.0.0.1:10025, [::1]:10025, or a unix socket path
  --bind      local address to connect from (e.g. 127.0.0.2)
  --out FILE  where to write every byte received (default stdout)
Steps, run in order after connecting:
  --send FILE     write the file's bytes in one write
  --sleep SECONDS pause
  --wait TEXT     read until TEXT (a Python bytes escape, e.g. '354 ') is received
When the steps are done, it reads until the server closes (at most 30 s).
"""
import socket
import sys
import time


def connect(where, bind):
    if "/" in where:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(where)
        return s
    host, port = where.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    if bind:
        s.bind((bind, 0))
    s.connect((host, int(port)))
    return s


def main(argv):
    where, args = argv[0], argv[1:]
    bind, out_path, steps = None, None, []
    i = 0
    while i < len(args):
        if args[i] == "--bind":
            bind = args[i + 1]
        elif args[i] == "--out":
            out_path = args[i + 1]
        else:
            steps.append((args[i], args[i + 1]))
        i += 2
    out = open(out_path, "wb") if out_path else sys.stdout.buffer
    got = bytearray()
    s = connect(where, bind)
    s.settimeout(30)

    def read_until(marker):
        while marker not in got:
            data = s.recv(65536)
            if not data:
                return
            got.extend(data)
            out.write(data)
            out.flush()

    for kind, value in steps:
        if kind == "--send":
            with open(value, "rb") as f:
                try:
                    s.sendall(f.read())
                except OSError:
                    break
        elif kind == "--sleep":
            time.sleep(float(value))
        elif kind == "--wait":
            read_until(value.encode().decode("unicode_escape").encode("latin-1"))
    try:
        read_until(b"\0\0never\0\0")
    except OSError:
        pass
    s.close()


if __name__ == "__main__":
    main(sys.argv[1:])
