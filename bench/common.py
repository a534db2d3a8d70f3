"""common.py - what bench/bench.py and bench/peers.py share.

Reading /proc, waiting for a port, timing a client run, keeping the
long-lived processes by pid, and the figures' formatting. Loopback only.
"""

import os
import platform
import re
import signal
import socket
import subprocess
import sys
import threading
import time

HZ = os.sysconf("SC_CLK_TCK")
KiB, MiB = 1024, 1024 * 1024


def size_name(n):
    return "%d MiB" % (n // MiB) if n >= MiB else "%d KiB" % (n // KiB)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def free_ports(n):
    """n distinct free TCP ports on 127.0.0.1 (all bound at once, then freed)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def free_port():
    return free_ports(1)[0]


def listening(port):
    """True once something LISTENs on 127.0.0.1:port (without connecting)."""
    want = ":%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[1].endswith(want) and parts[3] == "0A":
                    return True
    except OSError:
        pass
    return False


def wait_listening(port, proc, what, limit=10.0, poll=0.005):
    """Wait at most limit s for port; fail at once if proc (when given) exits."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if listening(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited at start (status %s)" % (what, proc.returncode))
        time.sleep(poll)
    raise RuntimeError("%s does not listen on port %d" % (what, port))


def stat_fields(pid):
    """The fields of /proc/PID/stat after "(comm) ": state, ppid, ..."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def busy_s():
    """CPU seconds the whole machine has been busy (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / HZ


def status_value(pid, key):
    """A number of /proc/PID/status (VmRSS, VmHWM in KiB, Threads); 0 when gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_timed(argv, out_path, timeout):
    """Run argv; (exit status, wall seconds, CPU seconds of it and its children)."""
    with open(out_path, "wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        t1 = time.monotonic()
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, t1 - t0, ru.ru_utime + ru.ru_stime


class Procs:
    """Every long-lived process started here, stopped by pid at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, **kw):
        with open(log_path, "ab") as logf:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                 close_fds=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, limit=20.0):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(limit)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p, 15.0)


def sink_messages(sink_log):
    """How many messages smtp-sink -c has counted, from the tail of its log."""
    try:
        with open(sink_log, "rb") as f:
            f.seek(0, 2)
            n = f.tell()
            f.seek(max(0, n - 200))
            tail = f.read().decode("ascii", "replace")
    except OSError:
        return 0
    m = re.findall(r"mesg=(\d+)", tail)
    return int(m[-1]) if m else 0


def machine():
    """CPU model, cores, memory, OS and kernel, for a report's heading."""
    info = {"nproc": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1).strip() if m else "?"
    except OSError:
        info["cpu"] = "?"
    with open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s*(\d+)", f.read())
        info["mem"] = "%.1f GiB" % (int(m.group(1)) / 1024 / 1024)
    try:
        with open("/etc/os-release") as f:
            info["os"] = re.search(r'PRETTY_NAME="([^"]*)"', f.read()).group(1)
    except (OSError, AttributeError):
        info["os"] = "?"
    return info


def fmt(x, digits=1):
    """About three significant figures."""
    if x is None:
        return "–"
    if abs(x) >= 100:
        return "%.0f" % x
    if abs(x) >= 10:
        return "%.1f" % x
    if abs(x) >= 1:
        return "%.*f" % (digits, x)
    return "%.*f" % (digits + 1, x)
