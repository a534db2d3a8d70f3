#!/usr/bin/env python3
"""bench.py - throughput, CPU and memory of clamsmtpd beside its ceilings.

Run through bench/run.sh, which builds the helpers and clamsmtpd first.
Everything listens on 127.0.0.1; every process started here is stopped by
its pid before the script ends (also on an error or ^C).

Systems measured for each cell (message size x sessions x connection mode):
  direct    smtp-source -> smtp-sink                 (transport ceiling)
  clamd     clamd-load: the same message bytes, FILDES, same concurrency
  listener  smtp-source -> clamsmtpd -l ... -> smtp-sink
  stdio     smtp-source -> systemd-socket-activate --inetd clamsmtpd -> smtp-sink
  cs110     smtp-source -> Debian's clamsmtp 1.10 -> smtp-sink
"""

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf("SC_CLK_TCK")
KiB, MiB = 1024, 1024 * 1024
SYSTEMS = ["direct", "clamd", "listener", "stdio", "cs110"]
FILTERS = ["listener", "stdio", "cs110"]
NAMES = {
    "direct": "direct (smtp-source→smtp-sink)",
    "clamd": "clamd alone (FILDES)",
    "listener": "clamsmtpd listener",
    "stdio": "clamsmtpd stdio (socket-activate)",
    "cs110": "clamsmtp 1.10",
}
SHORT = {"direct": "direct", "clamd": "clamd alone", "listener": "**clamsmtpd -l**",
         "stdio": "**clamsmtpd stdio**", "cs110": "clamsmtp 1.10"}

# Messages per run: (one message per connection, many per connection).
# None: the cell is not run (see README: 64 x 2 x 20 MiB is ~80 s per system
# and run; BIG=1 runs it).
FULL_COUNTS = {
    4 * KiB: {1: (100, 100), 16: (320, 640), 64: (640, 1280)},
    100 * KiB: {1: (60, 60), 16: (160, 320), 64: (256, 512)},
    2 * MiB: {1: (8, 8), 16: (32, 48), 64: (64, 128)},
    20 * MiB: {1: (2, 2), 16: (16, 32), 64: (64, None)},
}
QUICK_COUNTS = {
    4 * KiB: {1: (60, 60), 16: (160, 320)},
    2 * MiB: {1: (4, 4), 16: (16, 32)},
}
# direct is so fast that small counts would mostly time process start-up.
DIRECT_SCALE = {4 * KiB: 10, 100 * KiB: 5, 2 * MiB: 2, 20 * MiB: 1}


def size_name(n):
    return "%d MiB" % (n // MiB) if n >= MiB else "%d KiB" % (n // KiB)


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


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


def wait_listening(port, proc, what, limit=10.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if listening(port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited at start (status %s)" % (what, proc.returncode))
        time.sleep(0.01)
    raise RuntimeError("%s does not listen on port %d" % (what, port))


def stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    return data[data.rindex(")") + 2:].split()


def cpu_seconds(pid):
    """utime+stime of pid and of its waited-for descendants (cutime+cstime)."""
    f = stat_fields(pid)
    # fields after ')' start at 3 (state); utime is field 14 -> index 11
    return sum(int(x) for x in f[11:15]) / HZ


def status_value(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(root):
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = stat_fields(int(d))
        except (OSError, ValueError):
            continue
        if f[0] != "Z":
            parent[int(d)] = int(f[1])
    out = []
    for pid in parent:
        p, depth = pid, 0
        while p in parent and depth < 64:
            p = parent[p]
            depth += 1
            if p == root:
                out.append(pid)
                break
    return out


class Procs:
    """Every process started here, stopped by pid at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, **kw):
        logf = open(log_path, "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                             close_fds=True, **kw)
        logf.close()
        self.procs.append(p)
        return p

    def stop(self, p, limit=15.0):
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
            self.stop(p, 5.0)


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.dirname(os.path.abspath(__file__))
        self.main = os.path.dirname(self.root)
        self.work = args.workdir
        self.procs = Procs()
        self.results = {}      # key "size/s/mode/system" -> list of run dicts
        self.notes = []
        self.started = time.monotonic()
        self.clamd_dir = os.path.join(self.work, "clamd")
        self.sock = os.path.join(self.clamd_dir, "clamd.sock")
        self.clamd_pid = None
        self.sink = None
        self.sink_port = None
        self.sink_log = os.path.join(self.work, "sink.log")

    # ---------------------------------------------------------------- setup
    def setup(self):
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o755)     # smtp-sink -u nobody writes the capture below
        r = subprocess.run([os.path.join(self.main, "tests", "clamd-start.sh"), self.clamd_dir],
                           stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError("clamd-start.sh failed")
        with open(os.path.join(self.clamd_dir, "clamd.pid")) as f:
            self.clamd_pid = int(f.read())
        self.spool = os.path.join(self.work, "spool")
        os.makedirs(self.spool, mode=0o700, exist_ok=True)
        self.make_messages()
        self.sink_port = free_port()
        # -c: running counters on stdout, used to check every message arrived
        self.sink = self.procs.start(["smtp-sink", "-c", "-u", "nobody",
                                      "127.0.0.1:%d" % self.sink_port, "1024"], self.sink_log)
        wait_listening(self.sink_port, self.sink, "smtp-sink")

    def make_messages(self):
        """The exact bytes smtp-source sends for each size (for clamd alone)."""
        dump = os.path.join(self.work, "dump")
        os.makedirs(dump, exist_ok=True)
        os.chmod(dump, 0o777)
        port = free_port()
        p = self.procs.start(["smtp-sink", "-u", "nobody", "-d", dump + "/%M.",
                              "127.0.0.1:%d" % port, "16"], os.path.join(self.work, "capture.log"))
        wait_listening(port, p, "capture smtp-sink")
        self.msgfile = {}
        for size in self.sizes():
            before = set(os.listdir(dump))
            subprocess.run(["smtp-source", "-s", "1", "-m", "1", "-l", str(size),
                            "127.0.0.1:%d" % port], check=True, timeout=60)
            new = []
            for _ in range(200):
                new = sorted(set(os.listdir(dump)) - before)
                if new:
                    break
                time.sleep(0.02)
            if not new:
                raise RuntimeError("capture of a %d-byte message failed" % size)
            time.sleep(0.1)     # let the sink finish writing it
            with open(os.path.join(dump, new[0]), "rb") as f:
                data = f.read()
            # drop what smtp-sink adds in front (X-* lines and its Received:)
            at = data.index(b"\nFrom: ") + 1
            body = data[at:].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            path = os.path.join(self.work, "msg-%d.eml" % size)
            with open(path, "wb") as f:
                f.write(body)
            self.msgfile[size] = path
            for n in new:
                os.unlink(os.path.join(dump, n))
        self.procs.stop(p)

    def teardown(self):
        self.procs.stop_all()
        subprocess.run([os.path.join(self.main, "tests", "clamd-stop.sh"), self.clamd_dir],
                       stdin=subprocess.DEVNULL)

    # ------------------------------------------------------------- the grid
    def counts(self):
        c = QUICK_COUNTS if self.args.quick else FULL_COUNTS
        if self.args.big and not self.args.quick:
            c = json.loads(json.dumps({str(k): v for k, v in c.items()}))
            c = {int(k): {int(s): tuple(v) for s, v in d.items()} for k, d in c.items()}
            c[20 * MiB][64] = (64, 128)
        return c

    def sizes(self):
        return sorted(self.counts())

    def cells(self):
        for size, per in sorted(self.counts().items()):
            for s in sorted(per):
                for mode in ("one", "many"):
                    yield size, s, mode

    def sink_messages(self):
        try:
            with open(self.sink_log, "rb") as f:
                f.seek(0, 2)
                n = f.tell()
                f.seek(max(0, n - 200))
                tail = f.read().decode("ascii", "replace")
        except OSError:
            return 0
        m = re.findall(r"mesg=(\d+)", tail)
        return int(m[-1]) if m else 0

    # ----------------------------------------------------------- one system
    def start_filter(self, system, port):
        logp = os.path.join(self.work, "%s.log" % system)
        sink = "127.0.0.1:%d" % self.sink_port
        if system == "listener":
            argv = [self.args.clamsmtpd, "-d", "1", "-l", "127.0.0.1:%d" % port, "-m", "128",
                    "-D", self.spool, "-c", self.sock, sink]
        elif system == "stdio":
            argv = ["systemd-socket-activate", "-l", "127.0.0.1:%d" % port, "-a", "--inetd",
                    self.args.clamsmtpd, "-d", "1", "-D", self.spool, "-c", self.sock, sink]
        else:
            conf = os.path.join(self.work, "clamsmtp110.conf")
            spool = os.path.join(self.work, "spool110")
            os.makedirs(spool, mode=0o700, exist_ok=True)
            with open(conf, "w") as f:
                f.write("OutAddress: %s\nListen: 127.0.0.1:%d\nClamAddress: %s\n"
                        "TempDirectory: %s\nMaxConnections: 128\nTimeOut: 180\n"
                        "Header: X-AV-Checked: ClamAV using ClamSMTP\nAction: drop\n"
                        % (sink, port, self.sock, spool))
            argv = [self.args.clamsmtp110, "-d", "1", "-f", conf]
        p = self.procs.start(argv, logp)
        wait_listening(port, p, system)
        return p

    def quiesce(self, p, system, threads0, limit=60.0):
        """Wait until the filter has no session left (children reaped)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if system == "cs110":
                if status_value(p.pid, "Threads") <= threads0:
                    return True
            elif not descendants(p.pid):
                return True
            time.sleep(0.02)
        return False

    def run_one(self, system, size, s, mode, count):
        timeout = self.args.timeout
        res = {"count": count}
        clamd0 = cpu_seconds(self.clamd_pid)
        if system == "clamd":
            argv = [os.path.join(self.args.tools, "clamd-load"), "-c", str(s), "-n", str(count),
                    "-m", "fildes", self.sock, self.msgfile[size]]
            t0 = time.monotonic()
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            t1 = time.monotonic()
            m = re.search(r"seconds=([0-9.]+)", r.stdout)
            res["seconds"] = float(m.group(1)) if m else t1 - t0
            res["ok"] = r.returncode == 0
            if not res["ok"]:
                res["error"] = (r.stderr or r.stdout).strip()[-300:]
            res["clamd_cpu"] = cpu_seconds(self.clamd_pid) - clamd0
            return res

        port = self.sink_port
        p = mon = None
        if system != "direct":
            port = free_port()
            p = self.start_filter(system, port)
            threads0 = status_value(p.pid, "Threads")
            cpu0 = cpu_seconds(p.pid)
            mon = subprocess.Popen([os.path.join(self.args.tools, "procmon"), str(p.pid),
                                    str(self.args.sample_ms)],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        sink0 = self.sink_messages()
        argv = ["smtp-source", "-s", str(s), "-m", str(count), "-l", str(size)]
        if mode == "many":
            argv.append("-d")
        argv.append("127.0.0.1:%d" % port)
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            rc, err = r.returncode, (r.stderr or "").strip()
        except subprocess.TimeoutExpired:
            rc, err = -1, "smtp-source timed out after %d s" % timeout
        t1 = time.monotonic()
        res["seconds"] = t1 - t0
        if p is not None:
            if not self.quiesce(p, system, threads0):
                err += " (sessions still alive after 60 s)"
            res["cpu"] = cpu_seconds(p.pid) - cpu0
            mon.send_signal(signal.SIGTERM)
            out, _ = mon.communicate(timeout=10)
            res["mem"] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", out)}
            res["threads0"] = threads0
            self.procs.stop(p)
            if p.returncode not in (0, -signal.SIGTERM):
                err += " (filter exited with %s)" % p.returncode
        res["clamd_cpu"] = cpu_seconds(self.clamd_pid) - clamd0
        # every message must have reached the sink
        got = 0
        for _ in range(100):
            got = self.sink_messages() - sink0
            if got >= count:
                break
            time.sleep(0.02)
        res["delivered"] = got
        res["ok"] = rc == 0 and got == count and not err
        if not res["ok"]:
            res["error"] = ("rc=%s delivered=%d/%d %s" % (rc, got, count, err)).strip()[-300:]
        return res

    # ----------------------------------------------------------------- main
    def run(self):
        self.setup()
        runs = self.args.runs
        deadline = self.started + self.args.max_seconds
        for size, s, mode in self.cells():
            one, many = self.counts()[size][s]
            count = one if mode == "one" else many
            if count is None:
                continue
            for r in range(runs):
                for system in SYSTEMS:
                    if system == "clamd" and mode == "many":
                        continue    # clamd scans one message per connection either way
                    if time.monotonic() > deadline:
                        self.notes.append("time limit (%d s) reached: later cells were not run"
                                          % self.args.max_seconds)
                        return
                    n = count * DIRECT_SCALE.get(size, 1) if system == "direct" else count
                    key = "%d/%d/%s/%s" % (size, s, mode, system)
                    try:
                        res = self.run_one(system, size, s, mode, n)
                    except Exception as e:  # keep going: one bad cell is a result too
                        res = {"ok": False, "error": repr(e)[-300:], "count": n, "seconds": 0}
                    self.results.setdefault(key, []).append(res)
                    log("%-8s %7s s=%-2d %-4s run %d: %d msgs in %.2f s%s" % (
                        system, size_name(size), s, mode, r + 1, n, res.get("seconds", 0),
                        "" if res.get("ok") else "  FAILED: %s" % res.get("error")))
                    self.save()

    def save(self):
        with open(os.path.join(self.work, "results.json"), "w") as f:
            json.dump({"results": self.results, "notes": self.notes}, f, indent=1)


# ------------------------------------------------------------------ report
def median(v):
    return statistics.median(v) if v else None


def rates(runs, size):
    ok = [r for r in runs if r.get("ok") and r.get("seconds", 0) > 0]
    return [r["count"] / r["seconds"] for r in ok], ok


def machine():
    info = {}
    info["nproc"] = os.cpu_count()
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            info["cpu"] = m.group(1).strip() if m else "?"
    except OSError:
        info["cpu"] = "?"
    with open("/proc/meminfo") as f:
        m = re.search(r"MemTotal:\s*(\d+)", f.read())
        info["mem"] = "%.1f GiB" % (int(m.group(1)) / 1024 / 1024)
    info["kernel"] = platform.release()
    try:
        info["clamav"] = subprocess.run(["clamd", "--version"], capture_output=True,
                                        text=True).stdout.strip()
    except OSError:
        info["clamav"] = "?"
    try:
        info["os"] = re.search(r'PRETTY_NAME="([^"]*)"', open("/etc/os-release").read()).group(1)
    except (OSError, AttributeError):
        info["os"] = "?"
    with open("/proc/loadavg") as f:
        info["load"] = " ".join(f.read().split()[:3])
    return info


def fmt(x, digits=1):
    """Three significant figures or so; digits only matters below 10."""
    if x is None:
        return "–"
    if x >= 100:
        return "%.0f" % x
    if x >= 10:
        return "%.1f" % x
    if x >= 1:
        return "%.*f" % (digits, x)
    return "%.*f" % (digits + 1, x)


def report(args, results, notes, info, started, finished):
    """Markdown: one row per cell and system; then the targets."""
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    lines = []
    W = lines.append
    W("# clamsmtpd benchmark results")
    W("")
    W("Run %s, %s mode, %d run(s) per cell (medians; spread is min–max of the runs), "
      "%.0f s in all." % (started, "QUICK" if args.quick else "full", args.runs, finished))
    W("")
    W("| machine | |")
    W("|---|---|")
    W("| CPU | %s, nproc %s |" % (info["cpu"], info["nproc"]))
    W("| memory | %s |" % info["mem"])
    W("| OS, kernel | %s, %s |" % (info["os"], info["kernel"]))
    W("| ClamAV | %s (private clamd, 3-signature DB, `DisableCache yes`, MaxThreads 20) |"
      % info["clamav"])
    W("| clamsmtpd | `%s` (%s) |" % (args.clamsmtpd_desc, args.clamsmtpd_version))
    W("| load average at the end | %s |" % info["load"])
    W("")
    W("Columns: **msg/s** median messages per second (min–max over runs); **MiB/s** payload "
      "(`-l` size) × msg/s; **CPU ms/msg** user+system CPU of the filter's process tree per "
      "message (reaped children included); **clamd ms/msg** clamd's CPU per message; "
      "**RSS/conn** peak resident memory of one session process (VmHWM; for clamsmtp 1.10, "
      "a threaded single process: growth of its RSS over idle ÷ sessions); **×1.10** "
      "clamsmtpd ÷ clamsmtp 1.10; **×ceil** msg/s ÷ min(direct, clamd alone). "
      "clamd alone has no connection mode: its one-per-connection figure is the ceiling for "
      "both modes.")
    W("")
    W("| size | sess | msgs/conn | system | n | msg/s (min–max) | MiB/s | CPU ms/msg | "
      "clamd ms/msg | RSS/conn KiB | ×1.10 | ×ceil |")
    W("|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for size in sorted(counts):
        for s in sorted(counts[size]):
            for mode in ("one", "many"):
                cell = {}
                for system in SYSTEMS:
                    key = "%d/%d/%s/%s" % (size, s, "one" if system == "clamd" else mode,
                                           system)
                    runs = results.get(key, [])
                    rs, ok = rates(runs, size)
                    d = {"n": len(ok), "runs": runs, "tried": len(runs)}
                    if rs:
                        d["rate"] = median(rs)
                        d["min"], d["max"] = min(rs), max(rs)
                        d["count"] = ok[0]["count"]
                        if any("cpu" in r for r in ok):
                            d["cpu"] = median([r["cpu"] / r["count"] * 1000 for r in ok])
                        d["clamd_cpu"] = median([r["clamd_cpu"] / r["count"] * 1000
                                                 for r in ok if "clamd_cpu" in r])
                        mems = []
                        for r in ok:
                            m = r.get("mem")
                            if not m:
                                continue
                            if system == "cs110":
                                grow = m.get("root_rss_max", 0) - m.get("root_rss0", 0)
                                mems.append(max(grow, 0) / s)
                            elif m.get("children_seen"):
                                mems.append(m.get("child_hwm_max", 0))
                        d["mem"] = median(mems) if mems else None
                    cell[system] = d
                summary[(size, s, mode)] = cell
                ceil_rate = None
                if cell["direct"].get("rate") and cell["clamd"].get("rate"):
                    ceil_rate = min(cell["direct"]["rate"], cell["clamd"]["rate"])
                for system in SYSTEMS:
                    d = cell[system]
                    if not d["tried"]:
                        continue
                    if "rate" not in d:
                        err = next((r.get("error") for r in d["runs"] if r.get("error")), "?")
                        W("| %s | %d | %s | %s | 0/%d | failed: %s | | | | | | |" % (
                            size_name(size), s, mode, SHORT[system], d["tried"],
                            str(err).replace("|", "/")[:80]))
                        continue
                    x110 = xceil = None
                    if system in ("listener", "stdio"):
                        if cell["cs110"].get("rate"):
                            x110 = d["rate"] / cell["cs110"]["rate"]
                        if ceil_rate:
                            xceil = d["rate"] / ceil_rate
                    elif system == "cs110" and ceil_rate:
                        xceil = d["rate"] / ceil_rate
                    d["x110"], d["xceil"] = x110, xceil
                    W("| %s | %d | %s | %s | %d×%d | %s (%s–%s) | %s | %s | %s | %s | %s | %s |" % (
                        size_name(size), s, "1" if mode == "one" else "many",
                        SHORT[system], d["n"], d["count"], fmt(d["rate"]),
                        fmt(d["min"]), fmt(d["max"]), fmt(d["rate"] * size / MiB),
                        fmt(d.get("cpu"), 2) if d.get("cpu") is not None else "–",
                        fmt(d.get("clamd_cpu"), 2) if d.get("clamd_cpu") is not None else "–",
                        "%.0f" % d["mem"] if d.get("mem") else "–",
                        "%.2f" % x110 if x110 else "–",
                        "%.0f%%" % (100 * xceil) if xceil else "–"))
    W("")
    W("## Targets")
    W("")
    W(targets(summary, counts))
    for n in notes:
        W("")
        W("Note: " + n)
    return "\n".join(lines) + "\n", summary


def targets(summary, counts):
    out = ["| target | clamsmtpd -l | clamsmtpd stdio |", "|---|---|---|"]

    def check(name, pred):
        row = [name]
        for system in ("listener", "stdio"):
            bad, seen = [], 0
            for (size, s, mode), cell in sorted(summary.items()):
                d = cell[system]
                verdict = pred(size, s, mode, d, cell)
                if verdict is None:
                    continue
                seen += 1
                if verdict is not True:
                    bad.append("%s/%d/%s: %s" % (size_name(size), s, mode, verdict))
            if not seen:
                row.append("not measured")
            elif not bad:
                row.append("**met** (%d cells)" % seen)
            else:
                row.append("**not met** in %d of %d: %s" % (len(bad), seen, "; ".join(bad)))
        out.append("| " + " | ".join(row) + " |")

    def x110(minimum, only=None):
        def pred(size, s, mode, d, cell):
            if only and not only(size, s, mode):
                return None
            if d.get("x110") is None:
                return None
            return True if d["x110"] >= minimum else "%.2f×" % d["x110"]
        return pred

    def ceil(size_want, minimum):
        def pred(size, s, mode, d, cell):
            if size not in size_want or d.get("xceil") is None:
                return None
            return True if d["xceil"] >= minimum else "%.0f%%" % (100 * d["xceil"])
        return pred

    def cpu(size_want, limit):
        def pred(size, s, mode, d, cell):
            if size != size_want or d.get("cpu") is None:
                return None
            return True if d["cpu"] <= limit else "%.2f ms" % d["cpu"]
        return pred

    check("every cell ≥ 2× clamsmtp 1.10", x110(2.0))
    check("4 KiB, 1 session ≥ 10× clamsmtp 1.10",
          x110(10.0, lambda size, s, mode: size == 4 * KiB and s == 1))
    check("≥ 70% of ceiling, 2 MiB and 20 MiB", ceil((2 * MiB, 20 * MiB), 0.70))
    check("≥ 40% of ceiling, 4 KiB", ceil((4 * KiB,), 0.40))
    check("CPU ≤ 0.4 ms per 4 KiB message", cpu(4 * KiB, 0.4))
    check("CPU ≤ 6 ms per 2 MiB message", cpu(2 * MiB, 6.0))

    # memory flat in message size: largest size's RSS/conn ≤ 1.25 × smallest's
    row = ["RSS/conn flat in size (largest ≤ 1.25 × 4 KiB)"]
    sizes = sorted(counts)
    for system in ("listener", "stdio"):
        bad, seen = [], 0
        for (size, s, mode), cell in sorted(summary.items()):
            if size != sizes[-1]:
                continue
            big = cell[system].get("mem")
            small = summary.get((sizes[0], s, mode), {}).get(system, {}).get("mem")
            if not big or not small:
                continue
            seen += 1
            if big > 1.25 * small:
                bad.append("%d/%s: %.0f→%.0f KiB" % (s, mode, small, big))
        row.append("not measured" if not seen else "**met** (%d cells)" % seen if not bad
                   else "**not met**: " + "; ".join(bad))
    out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--big", action="store_true", help="also 20 MiB × 64 × many")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--tools", required=True, help="where clamd-load and procmon are")
    ap.add_argument("--clamsmtpd", required=True)
    ap.add_argument("--clamsmtpd-desc", default="")
    ap.add_argument("--clamsmtp110", default="/usr/sbin/clamsmtpd")
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=int, default=300, help="per smtp-source run, seconds")
    ap.add_argument("--max-seconds", type=int, default=1800, help="stop starting new runs after")
    ap.add_argument("--sample-ms", type=int, default=20)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite --out from WORKDIR/results.json")
    args = ap.parse_args()
    args.clamsmtpd_desc = args.clamsmtpd_desc or args.clamsmtpd
    try:
        args.clamsmtpd_version = subprocess.run([args.clamsmtpd, "-v"], capture_output=True,
                                                text=True).stdout.strip()
    except OSError:
        args.clamsmtpd_version = "?"
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M %Z").strip()
    t0 = time.monotonic()
    if args.report_only:
        with open(os.path.join(args.workdir, "results.json")) as f:
            data = json.load(f)
        results, notes = data["results"], data["notes"]
    else:
        b = Bench(args)

        def on_term(sig, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, on_term)
        try:
            b.run()
        except KeyboardInterrupt:
            b.notes.append("interrupted: the table is incomplete")
        finally:
            b.teardown()
            b.save()
        results, notes = b.results, b.notes
    text, _ = report(args, results, notes, machine(), started, time.monotonic() - t0)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
