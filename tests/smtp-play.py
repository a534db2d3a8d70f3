#!/usr/bin/env python3
"""smtp-play.py - a scripted SMTP client, for tests/faults.bats and tests/reliability.bats.

Usage: smtp-play.py SCRIPT TDIR CLAMSMTPD-ARGV...   clamsmtpd in stdio mode on
                                                    one end of a socketpair;
                                                    its log is appended to TDIR/err
       smtp-play.py SCRIPT TDIR --connect HOST:PORT a client of a listener
The child's pid is appended to TDIR/pids (the helpers' teardown kills it);
what clamsmtpd writes goes to TDIR/out. Steps, one a line:
  send TEXT            write TEXT (\\r \\n \\t \\0 \\xNN escapes)
  sendfile PATH        write a file in one go
  slowfile PATH S      write a file a line at a time, S seconds apart
  stuffed PATH         the stored message PATH dot-stuffed, then ".\\r\\n"
  pieces PATH N S      write PATH in pieces of N bytes, S seconds apart
  trickle R TEXT       write TEXT R bytes a second, a byte at a time (or
  tricklefile R PATH   ten at a time when R >= 10) but stop as soon as
                       clamsmtpd writes or closes; "sent K of L" goes to
                       TDIR/trickled ("cut" appended when stopped early)
  reply [N]            read N whole replies (default 1)
  within S             give each later reply S seconds (default 30)
  drain                read whatever comes until clamsmtpd closes
  eof                  shut down our sending side: clamsmtpd reads EOF
  close                close our socket altogether (no more replies read)
  sleep S
  mark                 start the stopwatch again
  shell CMD            sh -c CMD ($PID set); the script fails if it fails
  signal SIG           send SIG to clamsmtpd
  kill9                SIGKILL clamsmtpd
  sigloop SIG S        from now on send SIG every S seconds, until
  sigstop
  wait S               wait at most S s for clamsmtpd to exit: status in
                       TDIR/rc (128+signal when killed), seconds since the
                       last mark (or the start) in TDIR/elapsed
A failed step fails the script: status 1, the reason on stderr.
"""
import os, select, signal, socket, subprocess, sys, threading, time

script, tdir, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
child = None
if cmd[0] == "--connect":
    host, port = cmd[1].rsplit(":", 1)
    ours = socket.create_connection((host.strip("[]"), int(port)), timeout=10)
else:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    err = open(os.path.join(tdir, "err"), "ab")
    child = subprocess.Popen(cmd, stdin=theirs.fileno(), stdout=theirs.fileno(),
                             stderr=err, close_fds=True)
    theirs.close()
    with open(os.path.join(tdir, "pids"), "a") as f:
        f.write("%d\n" % child.pid)
out = open(os.path.join(tdir, "out"), "ab")
mark = time.monotonic()
within = 30.0
buf = bytearray()
looping = None

def fail(why):
    sys.stderr.write("smtp-play: %s\n" % why)
    if looping:
        looping.set()
    sys.exit(1)

def unescape(text):
    return text.encode("latin-1").decode("unicode_escape").encode("latin-1")

def read_reply():
    deadline = time.monotonic() + within
    while True:
        start = 0
        i = buf.find(b"\n")
        while i >= 0:
            line = bytes(buf[start:i + 1])
            if len(line) >= 4 and line[:3].isdigit() and line[3:4] in (b" ", b"\r", b"\n"):
                del buf[:i + 1]
                return line
            start = i + 1
            i = buf.find(b"\n", start)
        left = deadline - time.monotonic()
        if left <= 0:
            fail("no whole reply within %.0f s" % within)
        ours.settimeout(left)
        try:
            data = ours.recv(65536)
        except socket.timeout:
            fail("no whole reply within %.0f s" % within)
        except OSError as e:
            fail("reading a reply: %s" % e)
        if not data:
            fail("clamsmtpd closed the connection; waiting for a reply")
        out.write(data); out.flush()
        buf.extend(data)

def trickle(data, rate):
    step = 10 if rate >= 10 else 1
    sent, cut = 0, False
    while sent < len(data):
        r, _, _ = select.select([ours], [], [], 0)
        if r:
            cut = True
            break
        try:
            ours.sendall(data[sent:sent + step])
        except OSError:
            cut = True
            break
        sent += len(data[sent:sent + step])
        time.sleep(step / rate)
    with open(os.path.join(tdir, "trickled"), "w") as f:
        f.write("sent %d of %d%s\n" % (sent, len(data), " cut" if cut else ""))

def sigloop(sig, every, stop):
    while not stop.wait(every):
        try:
            child.send_signal(sig)
        except OSError:
            return

for raw in open(script):
    words = raw.rstrip("\n").split(" ", 1)
    step, arg = words[0], words[1] if len(words) > 1 else ""
    if not step or step.startswith("#"):
        continue
    if step == "send":
        ours.sendall(unescape(arg))
    elif step == "sendfile":
        ours.sendall(open(arg, "rb").read())
    elif step == "slowfile":
        path, secs = arg.split()
        for line in open(path, "rb").read().splitlines(keepends=True):
            ours.sendall(line)
            time.sleep(float(secs))
    elif step == "stuffed":
        data = open(arg, "rb").read()
        lines = data.split(b"\r\n")
        ours.sendall(b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines) + b".\r\n")
    elif step == "pieces":
        path, n, secs = arg.split()
        data = open(path, "rb").read()
        for i in range(0, len(data), int(n)):
            ours.sendall(data[i:i + int(n)])
            time.sleep(float(secs))
    elif step == "trickle":
        rate, text = arg.split(" ", 1)
        trickle(unescape(text), float(rate))
    elif step == "tricklefile":
        rate, path = arg.split(" ", 1)
        trickle(open(path, "rb").read(), float(rate))
    elif step == "reply":
        for _ in range(int(arg or 1)):
            read_reply()
    elif step == "within":
        within = float(arg)
    elif step == "drain":
        ours.settimeout(30)
        try:
            while True:
                data = ours.recv(65536)
                if not data:
                    break
                out.write(data); out.flush()
        except OSError:
            pass
    elif step == "eof":
        ours.shutdown(socket.SHUT_WR)
    elif step == "close":
        ours.close()
    elif step == "sleep":
        time.sleep(float(arg))
    elif step == "mark":
        mark = time.monotonic()
    elif step == "shell":
        env = dict(os.environ, PID=str(child.pid if child else 0))
        if subprocess.call(["sh", "-c", arg], env=env) != 0:
            fail("shell step failed: %s" % arg)
    elif step == "signal":
        child.send_signal(getattr(signal, "SIG" + arg))
    elif step == "kill9":
        child.send_signal(signal.SIGKILL)
    elif step == "sigloop":
        sig, every = arg.split()
        looping = threading.Event()
        threading.Thread(target=sigloop, args=(getattr(signal, "SIG" + sig), float(every), looping),
                         daemon=True).start()
    elif step == "sigstop":
        looping.set()
        looping = None
    elif step == "wait":
        try:
            rc = child.wait(timeout=float(arg))
        except subprocess.TimeoutExpired:
            fail("clamsmtpd still running after %s s" % arg)
        with open(os.path.join(tdir, "rc"), "w") as f:
            f.write("%d\n" % (128 - rc if rc < 0 else rc))
        with open(os.path.join(tdir, "elapsed"), "w") as f:
            f.write("%.2f\n" % (time.monotonic() - mark))
    else:
        fail("unknown step %r" % step)
if looping:
    looping.set()
