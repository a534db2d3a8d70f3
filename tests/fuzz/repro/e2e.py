#!/usr/bin/env python3
"""e2e.py - show the fuzz findings on the real program, end to end.

usage: e2e.py CLAMSMTPD decode-room|cr-split|long-reply

Starts a tiny SMTP server on 127.0.0.1, runs CLAMSMTPD in stdio mode with
the client transcript as a regular file on stdin (so every read() returns
as much as asked: 64 KiB), and prints what happened. Build CLAMSMTPD with
AddressSanitizer (make clamsmtpd-asan) to see decode-room as a crash.

decode-room: the body is laid out so that the first 64 KiB read ends in a
  bare CR and the next 64 KiB read is "x" and 65535 LFs: data_decode then
  writes 2 + 1 + 2 * 65535 = 131073 bytes into receive_body's 131072-byte
  static buffer 'decoded' (global-buffer-overflow by one byte).
cr-split: a NOOP command of exactly 2048 bytes (the limit) whose CR is the
  last byte of the first 64 KiB read and whose LF is the first byte of the
  next read gets "500 5.5.2 Line too long"; the same line one byte earlier
  in the stream, CRLF in one read, is accepted. Both runs are shown.
long-reply: the server's EHLO reply has a 5000-byte line. Before commit
  8afb8ac conn_read_line returned IO_TOO_LONG without copying any of it and
  read_reply() relayed 4094 bytes of its line buffer (the previous line and
  stale stack bytes, pointers included) to the client; now the client
  should get the first 4094 bytes of the line.
"""
import os
import socket
import subprocess
import sys
import tempfile
import threading


def server(ls, ehlo_reply):
    c, _ = ls.accept()
    f = c.makefile("rb")
    c.sendall(b"220 mx.test ESMTP\r\n")
    while True:
        line = f.readline()
        if not line:
            break
        verb = line.split()[0].upper() if line.split() else b""
        if verb == b"EHLO":
            c.sendall(ehlo_reply)
        elif verb == b"QUIT":
            c.sendall(b"221 bye\r\n")
            break
        else:
            c.sendall(b"250 ok\r\n")
    c.close()


def run(binary, tmp, spool, ehlo, transcript):
    path = os.path.join(tmp, "transcript")
    with open(path, "wb") as f:
        f.write(transcript)
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    t = threading.Thread(target=server, args=(ls, ehlo), daemon=True)
    t.start()
    with open(path, "rb") as stdin:
        p = subprocess.run([binary, "-d", "4", "-t", "5", "-D", spool,
                            "-c", os.path.join(tmp, "no-clamd"), "127.0.0.1:%d" % port],
                           stdin=stdin, capture_output=True, timeout=60)
    ls.close()
    return p


def cr_split(binary, tmp, spool):
    head = b"EHLO client.test\r\n"
    long_line = b"NOOP " + b"x" * (2048 - 5) + b"\r\n"      # 2048 bytes + CRLF
    for split in (True, False):
        before = 65536 - (len(long_line) - 1) - len(head)    # CR at offset 65535
        if not split:
            before -= 1                                      # CRLF at 65534, 65535
        n, r = divmod(before - 6, 6)
        filler = b"NOOP\r\n" * n + b"NOOP" + b" " * r + b"\r\n"
        transcript = head + filler + long_line + b"QUIT\r\n"
        assert transcript.index(b"\r\nQUIT") == (65535 if split else 65534)
        p = run(binary, tmp, spool, b"250 mx.test\r\n", transcript)
        replies = [l for l in p.stdout.split(b"\r\n") if l]
        print("CRLF %s: the 2048-byte NOOP got %r" %
              ("split between two reads" if split else "in one read", replies[-2]))


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("decode-room", "cr-split", "long-reply"):
        sys.exit(__doc__)
    binary, case = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp()
    spool = os.path.join(tmp, "spool")
    os.mkdir(spool, 0o700)
    if case == "cr-split":
        cr_split(binary, tmp, spool)
        return
    if case == "decode-room":
        ehlo = b"250-mx.test\r\n250 SIZE 1000000\r\n"
        head = (b"EHLO client.test\r\nMAIL FROM:<a@example.test>\r\n"
                b"RCPT TO:<b@example.test>\r\nDATA\r\n")
        first = head + b"x" * (65536 - len(head) - 1) + b"\r"    # read 1 ends in a bare CR
        second = b"x" + b"\n" * 65535                             # read 2: 64 KiB
        transcript = first + second + b"\r\n.\r\nQUIT\r\n"
        assert len(first) == 65536 and len(second) == 65536
    else:
        ehlo = b"250-mx.test\r\n250-" + b"A" * 5000 + b"\r\n250 DSN\r\n"
        transcript = b"EHLO client.test\r\nQUIT\r\n"
    p = run(binary, tmp, spool, ehlo, transcript)
    print("exit status:", p.returncode)
    if case == "decode-room":
        err = p.stderr.decode(errors="replace")
        asan = [l for l in err.splitlines() if "ERROR: AddressSanitizer" in l or
                "SUMMARY" in l or " in data_decode" in l or " in receive_body" in l]
        print("\n".join(asan) if asan else "no sanitizer report (build with ASan to see it)")
        print("replies:", p.stdout.decode(errors="replace").replace("\r\n", " | ")[:300])
    else:
        for line in p.stdout.split(b"\r\n"):
            if line.startswith(b"250"):
                print("client got a %d-byte line: %r%s" % (len(line), line[:60],
                      "..." if len(line) > 60 else ""))
        print("of it, bytes that are not from the server's 5000-byte line: %r"
              % sorted(set(b for b in p.stdout.split(b"\r\n")[2]) - set(b"A"))[:20]
              if len(p.stdout.split(b"\r\n")) > 2 else "")


main()
