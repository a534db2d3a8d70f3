#!/usr/bin/env python3
"""session-probe.py - talk SMTP to one clamsmtpd session and look inside it.

Usage:
  session-probe.py --out FILE [--err FILE] --spawn CMD [ARG...] -- STEP...
  session-probe.py --out FILE --connect HOST:PORT --listener PID -- STEP...

--spawn runs CMD in stdio mode with one end of a socket pair as its stdin
and stdout (as inetd would); its stderr goes to --err.  --connect talks to
a listener whose pid is PID; the session is the listener's child that
appears once the greeting has arrived.  Every byte received goes to --out.

Steps, in order:
  --send TEXT        write TEXT (Python escapes: '\\r\\n', '\\xff')
  --send-file FILE   write the file's bytes
  --wait TEXT        read until TEXT has been received (at most 30 s)
  --sleep SECONDS    pause
  --status FILE      the session's /proc/PID/status lines Uid, Gid, Groups,
                     CapInh, CapPrm, CapEff
  --spool FILE       "uid gid mode" of every file the session holds open in
                     DIR (the spool file: unlinked at once, so only its
                     descriptor shows it), one line each; DIR is --spool-dir
  --children FILE    the session's children, "pid state comm" one a line
  --pid FILE         the session's pid
When the steps are done it reads until the session closes (at most 30 s);
with --spawn the exit status is written to OUT.rc.
Python 3 standard library only.
"""
import os
import socket
import subprocess
import sys
import time


def session_of(listener):
    """session_of - the pid of the listener's child (waits up to 10 s)."""
    for _ in range(100):
        for pid in children_of(listener):
            return pid[0]
        time.sleep(0.1)
    raise SystemExit("session-probe: listener %d has no session" % listener)


def children_of(parent):
    """children_of - [(pid, state, comm)] of parent's children."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == parent:
            found.append((int(name), fields[0], comm))
    return sorted(found)


def main(argv):
    out_path = err_path = spool_dir = connect = None
    listener = None
    cmd = []
    i = 0
    while i < len(argv) and argv[i] != "--":
        opt = argv[i]
        if opt == "--spawn":
            cmd = argv[i + 1:argv.index("--", i)]
            i = argv.index("--", i)
            break
        value = argv[i + 1]
        if opt == "--out":
            out_path = value
        elif opt == "--err":
            err_path = value
        elif opt == "--connect":
            connect = value
        elif opt == "--listener":
            listener = int(value)
        elif opt == "--spool-dir":
            spool_dir = os.path.realpath(value)
        else:
            raise SystemExit("session-probe: unknown option %s" % opt)
        i += 2
    steps = argv[i + 1:]
    out = open(out_path, "wb")
    proc = None
    if cmd:
        ours, theirs = socket.socketpair()
        err = open(err_path or os.devnull, "wb")
        proc = subprocess.Popen(cmd, stdin=theirs, stdout=theirs, stderr=err,
                                close_fds=True)
        theirs.close()
        sock, pid = ours, proc.pid
    else:
        host, port = connect.rsplit(":", 1)
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
        pid = None
    sock.settimeout(30)
    got = bytearray()

    def read_until(marker):
        while marker not in got:
            data = sock.recv(65536)
            if not data:
                return
            got.extend(data)
            out.write(data)
            out.flush()

    def text(value):
        return value.encode().decode("unicode_escape").encode("latin-1")

    j = 0
    while j < len(steps):
        kind, value = steps[j], steps[j + 1]
        j += 2
        if pid is None and kind not in ("--send", "--send-file", "--sleep"):
            read_until(b"220 ")
            pid = session_of(listener)
        if kind == "--send":
            sock.sendall(text(value))
        elif kind == "--send-file":
            with open(value, "rb") as f:
                sock.sendall(f.read())
        elif kind == "--wait":
            read_until(text(value))
        elif kind == "--sleep":
            time.sleep(float(value))
        elif kind == "--pid":
            with open(value, "w") as f:
                f.write("%d\n" % pid)
        elif kind == "--status":
            with open("/proc/%d/status" % pid) as f:
                keep = [line for line in f if line.split(":")[0] in
                        ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff")]
            with open(value, "w") as f:
                f.writelines(keep)
        elif kind == "--spool":
            lines = []
            fd_dir = "/proc/%d/fd" % pid
            for fd in sorted(os.listdir(fd_dir), key=int):
                try:
                    target = os.readlink("%s/%s" % (fd_dir, fd))
                except OSError:
                    continue
                if spool_dir and target.startswith(spool_dir + "/"):
                    st = os.stat("%s/%s" % (fd_dir, fd))
                    lines.append("%d %d %o %s\n" % (st.st_uid, st.st_gid,
                                                     st.st_mode & 0o7777, target))
            with open(value, "w") as f:
                f.writelines(lines)
        elif kind == "--children":
            with open(value, "w") as f:
                for child in children_of(pid):
                    f.write("%d %s %s\n" % child)
        else:
            raise SystemExit("session-probe: unknown step %s" % kind)
    try:
        read_until(b"\0\0never\0\0")
    except OSError:
        pass
    sock.close()
    if proc:
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        with open(out_path + ".rc", "w") as f:
            f.write("%d\n" % rc)


if __name__ == "__main__":
    main(sys.argv[1:])
