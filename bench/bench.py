#!/usr/bin/env python3
"""bench.py - throughput, CPU and memory of clamsmtpd beside its ceilings.

Run it through bench/run.sh, which builds the helpers and clamsmtpd first.
Everything listens on 127.0.0.1; every process started here is stopped by
its pid before the script ends (also on an error, SIGTERM or ^C).

Systems measured in each cell (message size x sessions x messages/connection):
  direct    smtp-source -> smtp-sink                 (transport ceiling)
  clamd     clamd-load: the same message bytes, zFILDES, same concurrency
  listener  smtp-source -> clamsmtpd -l ... -> smtp-sink
  stdio     smtp-source -> systemd-socket-activate --inetd clamsmtpd -> smtp-sink
  cs110     smtp-source -> Debian's clamsmtp 1.10 -> smtp-sink
Each filter is started afresh for every run under bench/procmon.c, which
gives its exact CPU (getrusage of the whole tree, reaped sessions included)
and samples the memory of its session processes.
"""

import argparse
import datetime
import json
import os
import re
import signal
import statistics
import subprocess
import time

from common import (HZ, KiB, MiB, Procs, busy_s, fmt, free_port, log, run_timed,
                    size_name, sink_messages, stat_fields, status_value, wait_listening)
import common

SYSTEMS = ["direct", "clamd", "listener", "stdio", "cs110"]
FILTERS = ["listener", "stdio", "cs110"]
SHORT = {"direct": "direct", "clamd": "clamd alone", "listener": "**clamsmtpd -l**",
         "stdio": "**clamsmtpd stdio**", "cs110": "clamsmtp 1.10"}

# Messages per run: (one message per connection, many per connection).
# None: not run by default (64 x 2 x 20 MiB is ~80 s per system and run;
# BIG=1 runs it).
FULL_COUNTS = {
    4 * KiB: {1: (150, 300), 16: (320, 640), 64: (640, 1280)},
    100 * KiB: {1: (40, 80), 16: (128, 256), 64: (128, 256)},
    2 * MiB: {1: (8, 8), 16: (32, 48), 64: (64, 128)},
    20 * MiB: {1: (2, 2), 16: (16, 32), 64: (64, None)},
}
QUICK_COUNTS = {
    4 * KiB: {1: (100, 200), 16: (240, 480)},
    2 * MiB: {1: (4, 4), 16: (16, 32)},
}
# direct is so fast that small counts would mostly time process start-up.
DIRECT_SCALE = {4 * KiB: 10, 100 * KiB: 5, 2 * MiB: 2, 20 * MiB: 1}
# clamsmtp 1.10 stalls ~44 ms per message in a single session, and with 16 or
# more sessions connecting at once its listen backlog of 5 overflows, so
# connections wait for SYN retransmits (1 s, 3 s...): fewer messages keep
# those runs short. (size, sessions, mode) -> messages.
CS110_COUNT = {
    (4 * KiB, 1, "one"): 40, (4 * KiB, 1, "many"): 80, (100 * KiB, 1, "one"): 20,
    (100 * KiB, 1, "many"): 40, (4 * KiB, 16, "one"): 160, (4 * KiB, 64, "one"): 128,
    (100 * KiB, 64, "one"): 96,
}


def cpu_ticks_s(pid):
    """utime+stime+cutime+cstime of pid, in seconds (clock-tick resolution)."""
    try:
        f = stat_fields(pid)
    except OSError:
        return 0.0
    return sum(int(x) for x in f[11:15]) / HZ


def parents():
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = stat_fields(int(d))
        except (OSError, ValueError):
            continue
        if f[0] != "Z":
            out[int(d)] = int(f[1])
    return out


def descendants(root):
    parent = parents()
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


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.dirname(os.path.abspath(__file__))
        self.main = os.path.dirname(self.root)
        self.work = args.workdir
        self.procs = Procs()
        self.results = {}      # "size/s/mode/system" -> list of run dicts
        self.baseline = {}     # filter -> CPU s of starting and stopping it idle
        self.notes = []
        self.started = time.monotonic()
        self.gate_spent = 0.0
        self.clamd_dir = os.path.join(self.work, "clamd")
        self.sock = os.path.join(self.clamd_dir, "clamd.sock")
        self.clamd_pid = None
        self.sink = None
        self.sink_port = None
        self.sink_log = os.path.join(self.work, "sink.log")
        self.seq = 0

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
        for system in FILTERS:
            v = []
            for _ in range(3):
                p, port, _ = self.start_filter(system)
                v.append(self.stop_filter(p)["cpu_us"] / 1e6)
            self.baseline[system] = statistics.median(v)
        log("start+stop CPU subtracted: %s" % ", ".join(
            "%s %.1f ms" % (k, v * 1000) for k, v in self.baseline.items()))

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
                            "127.0.0.1:%d" % port], check=True, timeout=60,
                           stdin=subprocess.DEVNULL)
            data, last, stable = b"", -1, 0
            for _ in range(250):   # the dump has LF line ends: a little under size
                new = sorted(set(os.listdir(dump)) - before)
                if new:
                    with open(os.path.join(dump, new[0]), "rb") as f:
                        data = f.read()
                    stable = stable + 1 if len(data) == last else 0
                    last = len(data)
                    if stable >= 3 and len(data) > 0.9 * size:
                        break
                time.sleep(0.02)
            if stable < 3 or len(data) <= 0.9 * size:
                raise RuntimeError("capture of a %d-byte message failed" % size)
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
        if self.args.quick:
            return QUICK_COUNTS
        c = {size: dict(per) for size, per in FULL_COUNTS.items()}
        if self.args.big:
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
        return sink_messages(self.sink_log)

    # -------------------------------------------------------------- filters
    def start_filter(self, system):
        """(procmon process, port, filter pid) for a filter listening on a new port."""
        port = free_port()
        self.seq += 1
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
        out = os.path.join(self.work, "procmon-%d.out" % self.seq)
        mon = self.procs.start([os.path.join(self.args.tools, "procmon"), "-i",
                                str(self.args.sample_ms), "-o", out, "--"] + argv, logp)
        mon.outfile = out
        wait_listening(port, mon, system)
        kids = [pid for pid, pp in parents().items() if pp == mon.pid]
        if len(kids) != 1:
            raise RuntimeError("cannot find the %s process under procmon" % system)
        mon.filter_pid = kids[0]
        return mon, port, kids[0]

    def stop_filter(self, mon):
        self.procs.stop(mon, 30.0)
        res = {}
        try:
            with open(mon.outfile) as f:
                res = {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", f.read())}
            os.unlink(mon.outfile)
        except OSError:
            pass
        if "cpu_us" not in res:
            raise RuntimeError("procmon gave no report")
        return res

    def quiesce(self, system, pid, threads0, limit=60.0):
        """Wait until the filter has no session left (children reaped, threads gone)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if system == "cs110":
                if status_value(pid, "Threads") <= threads0:
                    return True
            elif not descendants(pid):
                return True
            time.sleep(0.01)
        return False

    def quiet_gate(self):
        """Wait (bounded) while other work on the machine keeps a core busy."""
        limit = self.args.quiet_wait
        waited = 0.0
        while True:
            b0, t0 = busy_s(), time.monotonic()
            time.sleep(0.1)
            load = (busy_s() - b0) / (time.monotonic() - t0)
            if load < self.args.quiet_load or waited >= limit or \
                    self.gate_spent >= self.args.quiet_budget:
                return load
            time.sleep(0.5)
            waited += 0.75
            self.gate_spent += 0.75
            if waited == 0.75:
                log("machine busy (%.0f%% of a core used by others): waiting" % (100 * load))

    # ----------------------------------------------------------- one system
    def run_one(self, system, size, s, mode, count):
        res = {"count": count}
        res["bg_before"] = self.quiet_gate()
        outp = os.path.join(self.work, "client.out")
        clamd0, sink0_cpu = cpu_ticks_s(self.clamd_pid), cpu_ticks_s(self.sink.pid)
        if system == "clamd":
            argv = [os.path.join(self.args.tools, "clamd-load"), "-c", str(s), "-n", str(count),
                    "-m", "fildes", self.sock, self.msgfile[size]]
            b0 = busy_s()
            rc, wall, ccpu = run_timed(argv, outp, self.args.timeout)
            busy = busy_s() - b0
            text = open(outp, errors="replace").read()
            m = re.search(r"seconds=([0-9.]+)", text)
            res["seconds"] = float(m.group(1)) if m else wall
            res["ok"] = rc == 0 and m is not None
            if not res["ok"]:
                res["error"] = "rc=%s %s" % (rc, text.strip()[-300:])
            res["clamd_cpu"] = cpu_ticks_s(self.clamd_pid) - clamd0
            ours = res["clamd_cpu"] + ccpu
            res["bg"] = max(busy - ours, 0.0) / wall if wall > 0 else 0.0
            return res

        port, mon, err = self.sink_port, None, ""
        if system != "direct":
            mon, port, fpid = self.start_filter(system)
            threads0 = status_value(fpid, "Threads")
            mon_cpu0 = cpu_ticks_s(mon.pid)
        sink0 = self.sink_messages()
        argv = ["smtp-source", "-s", str(s), "-m", str(count), "-l", str(size)]
        if mode == "many":
            argv.append("-d")
        argv.append("127.0.0.1:%d" % port)
        b0 = busy_s()
        rc, wall, ccpu = run_timed(argv, outp, self.args.timeout)
        res["seconds"] = wall
        text = open(outp, errors="replace").read().strip()
        if rc != 0:
            err = "smtp-source exit %s: %s" % (rc, text[-200:])
        filter_cpu = 0.0
        if mon is not None:
            if not self.quiesce(system, fpid, threads0):
                err += " (sessions still alive after 60 s)"
            busy = busy_s() - b0
            mon_cpu = cpu_ticks_s(mon.pid) - mon_cpu0
            rep = self.stop_filter(mon)
            filter_cpu = rep["cpu_us"] / 1e6
            res["cpu"] = max(filter_cpu - self.baseline[system], 0.0)
            res["mem"] = rep
            res["threads0"] = threads0
            st = rep.get("status", 0)
            # 0: exit 0; 15: killed by SIGTERM (clamsmtp 1.10 does not catch it)
            if st not in (0, 15):
                err += " (filter wait status %d)" % st
        else:
            busy = busy_s() - b0
            mon_cpu = 0.0
        res["clamd_cpu"] = cpu_ticks_s(self.clamd_pid) - clamd0
        sink_cpu = cpu_ticks_s(self.sink.pid) - sink0_cpu
        ours = res["clamd_cpu"] + sink_cpu + ccpu + filter_cpu + mon_cpu
        res["bg"] = max(busy - ours, 0.0) / wall if wall > 0 else 0.0
        got = 0
        for _ in range(150):    # every message must have reached the sink
            got = self.sink_messages() - sink0
            if got >= count:
                break
            time.sleep(0.02)
        res["delivered"] = got
        res["ok"] = rc == 0 and got == count and not err
        if not res["ok"]:
            res["error"] = ("delivered %d/%d %s" % (got, count, err)).strip()[-300:]
        return res

    # ----------------------------------------------------------------- main
    def run(self):
        self.setup()
        deadline = self.started + self.args.max_seconds
        # Run 1 of every cell first, then run 2...: if the time limit stops
        # the benchmark, every cell has a figure. Inside a cell the systems
        # run back to back, so they see the same machine.
        for r in range(self.args.runs):
            for size, s, mode in self.cells():
                one, many = self.counts()[size][s]
                count = one if mode == "one" else many
                if count is None:
                    continue
                for system in SYSTEMS:
                    if system == "clamd" and mode == "many":
                        continue    # clamd scans one message per connection either way
                    if time.monotonic() > deadline:
                        self.notes.append("time limit (%d s) reached in run %d: later runs "
                                          "were not made" % (self.args.max_seconds, r + 1))
                        return
                    n = count
                    if system == "direct":
                        n = count * DIRECT_SCALE.get(size, 1)
                    elif system == "cs110":
                        n = CS110_COUNT.get((size, s, mode), count)
                    key = "%d/%d/%s/%s" % (size, s, mode, system)
                    try:
                        res = self.run_one(system, size, s, mode, n)
                    except Exception as e:  # keep going: one bad cell is a result too
                        res = {"ok": False, "error": repr(e)[-300:], "count": n, "seconds": 0}
                    self.results.setdefault(key, []).append(res)
                    log("%-8s %7s s=%-2d %-4s run %d: %5d msgs %6.2f s %7.1f/s cpu %s bg %3.0f%%%s"
                        % (system, size_name(size), s, mode, r + 1, n, res.get("seconds", 0),
                           n / res["seconds"] if res.get("seconds") else 0,
                           "%.3f ms" % (1000 * res["cpu"] / n) if "cpu" in res else "-",
                           100 * res.get("bg", 0),
                           "" if res.get("ok") else "  FAILED: %s" % res.get("error")))
                    self.save()

    def save(self):
        with open(os.path.join(self.work, "results.json"), "w") as f:
            json.dump({"results": self.results, "notes": self.notes,
                       "baseline": self.baseline}, f, indent=1)


# ------------------------------------------------------------------ report
def machine():
    info = common.machine()
    try:
        info["clamav"] = subprocess.run(["clamd", "--version"], capture_output=True,
                                        text=True).stdout.strip()
    except OSError:
        info["clamav"] = "?"
    with open("/proc/loadavg") as f:
        info["load"] = " ".join(f.read().split()[:3])
    return info


def summarise(results, counts):
    """(size, s, mode) -> system -> figures (medians over the good runs)."""
    summary = {}
    for size in sorted(counts):
        for s in sorted(counts[size]):
            for mode in ("one", "many"):
                if counts[size][s][0 if mode == "one" else 1] is None:
                    continue    # a cell that is not run (20 MiB x 64 x many without BIG=1)
                cell = {}
                for system in SYSTEMS:
                    key = "%d/%d/%s/%s" % (size, s, "one" if system == "clamd" else mode, system)
                    runs = results.get(key, [])
                    ok = [r for r in runs if r.get("ok") and r.get("seconds", 0) > 0]
                    d = {"n": len(ok), "tried": len(runs), "runs": runs}
                    if ok:
                        rs = [r["count"] / r["seconds"] for r in ok]
                        d["rate"] = statistics.median(rs)
                        d["min"], d["max"] = min(rs), max(rs)
                        d["count"] = ok[0]["count"]
                        d["bg"] = statistics.median([r.get("bg", 0) for r in ok])
                        if any("cpu" in r for r in ok):
                            d["cpu"] = statistics.median([1000 * r["cpu"] / r["count"]
                                                          for r in ok if "cpu" in r])
                        d["clamd_cpu"] = statistics.median([1000 * r["clamd_cpu"] / r["count"]
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
                                mems.append(m["child_hwm_max"])
                        d["mem"] = statistics.median(mems) if mems else None
                    cell[system] = d
                ceil_rate = None
                if cell["direct"].get("rate") and cell["clamd"].get("rate"):
                    ceil_rate = min(cell["direct"]["rate"], cell["clamd"]["rate"])
                for system in FILTERS:
                    d = cell[system]
                    if "rate" not in d:
                        continue
                    if system != "cs110" and cell["cs110"].get("rate"):
                        d["x110"] = d["rate"] / cell["cs110"]["rate"]
                    if ceil_rate:
                        d["xceil"] = d["rate"] / ceil_rate
                if cell.get("clamd", {}).get("tried") or cell.get("direct", {}).get("tried") \
                        or any(cell[f]["tried"] for f in FILTERS):
                    summary[(size, s, mode)] = cell
    return summary


def report(args, results, notes, baseline, info, started, elapsed):
    counts = QUICK_COUNTS if args.quick else {size: dict(per) for size, per in FULL_COUNTS.items()}
    if args.big and not args.quick:
        counts[20 * MiB][64] = (64, 128)
    summary = summarise(results, counts)
    lines = []
    W = lines.append
    W("# clamsmtpd benchmark results")
    W("")
    W("%s, %s mode, %d run(s) per cell, %.0f s in all. Produced by `bench/run.sh`; "
      "bench/README.md explains the columns and the targets." % (
          started, "QUICK" if args.quick else "full", args.runs, elapsed))
    W("")
    W("| machine | |")
    W("|---|---|")
    W("| CPU | %s, nproc %s |" % (info["cpu"], info["nproc"]))
    W("| memory | %s |" % info["mem"])
    W("| OS, kernel | %s, %s |" % (info["os"], info["kernel"]))
    W("| ClamAV | %s (private clamd from tests/clamd-start.sh: 3 signatures, "
      "`DisableCache yes`, MaxThreads 20) |" % info["clamav"])
    W("| clamsmtpd | %s (`%s`) |" % (args.clamsmtpd_desc, args.clamsmtpd_version))
    W("| clamsmtp 1.10 | Debian package `clamsmtp`, `%s` |" % args.clamsmtp110)
    W("| load average at the end | %s |" % info["load"])
    if baseline:
        W("| idle start+stop CPU subtracted | %s |" % ", ".join(
            "%s %.1f ms" % (SHORT[k].strip("*"), v * 1000) for k, v in baseline.items()))
    W("")
    W("Medians over the runs; msg/s shows min–max. **CPU** = filter process tree, "
      "**clamd** = clamd's CPU, both ms per message. **RSS/conn** KiB. **bg** = CPU used "
      "by other programs on the machine during the run, % of one core (the machine is "
      "shared; high bg means the row is pessimistic). **×1.10** = ÷ clamsmtp 1.10, "
      "**×ceil** = ÷ min(direct, clamd alone).")
    W("")
    W("| size | sess | msgs/conn | system | runs×msgs | msg/s (min–max) | MiB/s | CPU | "
      "clamd | RSS/conn | ×1.10 | ×ceil | bg |")
    W("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = {"one": 0, "many": 1}
    for (size, s, mode), cell in sorted(summary.items(), key=lambda kv: (
            kv[0][0], kv[0][1], order[kv[0][2]])):
        for system in SYSTEMS:
            d = cell[system]
            if not d["tried"]:
                continue
            label = (size_name(size), s, "1" if mode == "one" else "many", SHORT[system])
            if system == "clamd" and mode == "many":
                label = label[:3] + ("clamd alone (= 1/conn)",)
            if "rate" not in d:
                err = next((r.get("error") for r in d["runs"] if r.get("error")), "?")
                W("| %s | %d | %s | %s | 0/%d | failed: %s | | | | | | | |" % (
                    label + (d["tried"], str(err).replace("|", "/")[:90])))
                continue
            W("| %s | %d | %s | %s | %d×%d | %s (%s–%s) | %s | %s | %s | %s | %s | %s | %.0f%% |"
              % (label + (d["n"], d["count"], fmt(d["rate"]), fmt(d["min"]), fmt(d["max"]),
                          fmt(d["rate"] * size / MiB),
                          fmt(d["cpu"], 2) if d.get("cpu") is not None else "–",
                          fmt(d["clamd_cpu"], 2) if d.get("clamd_cpu") else "–",
                          "%.0f" % d["mem"] if d.get("mem") else "–",
                          "%.2f" % d["x110"] if d.get("x110") else "–",
                          "%.0f%%" % (100 * d["xceil"]) if d.get("xceil") else "–",
                          100 * d.get("bg", 0))))
    skipped = ["%s × %d sessions × %s" % (size_name(z), ss, "many" if i else "1")
               for z, per in sorted(counts.items()) for ss, v in sorted(per.items())
               for i in (0, 1) if v[i] is None]
    if skipped:
        W("")
        W("Not run: %s (BIG=1 runs it)." % ", ".join(skipped))
    W("")
    W("## Memory per connection by message size (KiB)")
    W("")
    sizes = sorted(counts)
    W("| system | sess | msgs/conn | " + " | ".join(size_name(z) for z in sizes) + " |")
    W("|---|---|---|" + "---|" * len(sizes))
    for system in FILTERS:
        for s in sorted({s for per in counts.values() for s in per}):
            for mode in ("one", "many"):
                row = []
                for z in sizes:
                    m = summary.get((z, s, mode), {}).get(system, {}).get("mem")
                    row.append("%.0f" % m if m else "–")
                if any(x != "–" for x in row):
                    W("| %s | %d | %s | %s |" % (SHORT[system], s, "1" if mode == "one" else
                                                "many", " | ".join(row)))
    W("")
    W("## Targets")
    W("")
    W(targets(summary, counts))
    for n in notes:
        W("")
        W("Note: " + n)
    return "\n".join(lines) + "\n"


def targets(summary, counts):
    out = ["| target | clamsmtpd -l | clamsmtpd stdio |", "|---|---|---|"]
    sizes = sorted(counts)

    def check(name, pred):
        row = [name]
        for system in ("listener", "stdio"):
            bad, seen = [], 0
            for (size, s, mode), cell in sorted(summary.items()):
                verdict = pred(size, s, mode, cell[system], system)
                if verdict is None:
                    continue
                seen += 1
                if verdict is not True:
                    bad.append("%s/%d/%s: %s" % (size_name(size), s,
                                                 "1" if mode == "one" else "many", verdict))
            if not seen:
                row.append("not measured")
            elif not bad:
                row.append("**met** (%d cells)" % seen)
            else:
                row.append("**not met** in %d of %d: %s" % (len(bad), seen, "; ".join(bad)))
        out.append("| " + " | ".join(row) + " |")

    def x110(minimum, only=None):
        def pred(size, s, mode, d, system):
            if (only and not only(size, s)) or d.get("x110") is None:
                return None
            return True if d["x110"] >= minimum else "%.2f×" % d["x110"]
        return pred

    def ceil(size_want, minimum):
        def pred(size, s, mode, d, system):
            if size not in size_want or d.get("xceil") is None:
                return None
            return True if d["xceil"] >= minimum else "%.0f%%" % (100 * d["xceil"])
        return pred

    def cpu(size_want, limit):
        def pred(size, s, mode, d, system):
            if size != size_want or d.get("cpu") is None:
                return None
            return True if d["cpu"] <= limit else "%.2f ms" % d["cpu"]
        return pred

    def flat(size, s, mode, d, system):
        # From the size where every buffer is in use (≥ 100 KiB) to the
        # largest: no growth beyond 10 %; and at most 1.5 × the 4 KiB figure.
        if size != sizes[-1] or d.get("mem") is None:
            return None
        ref = [summary.get((z, s, mode), {}).get(system, {}).get("mem") for z in sizes]
        small = ref[0]
        mid = next((m for z, m in zip(sizes, ref) if z >= 100 * KiB and m), None)
        if not small:
            return None
        if d["mem"] > 1.5 * small or (mid and d["mem"] > 1.1 * mid):
            return "%s KiB" % "→".join("%.0f" % m for m in ref if m)
        return True

    check("every cell ≥ 2× clamsmtp 1.10", x110(2.0))
    check("4 KiB, 1 session ≥ 10× clamsmtp 1.10",
          x110(10.0, lambda size, s: size == 4 * KiB and s == 1))
    check("≥ 70% of ceiling at 2 MiB and 20 MiB", ceil((2 * MiB, 20 * MiB), 0.70))
    check("≥ 40% of ceiling at 4 KiB", ceil((4 * KiB,), 0.40))
    check("CPU ≤ 0.4 ms per 4 KiB message", cpu(4 * KiB, 0.4))
    check("CPU ≤ 6 ms per 2 MiB message", cpu(2 * MiB, 6.0))
    check("RSS/conn flat in message size", flat)
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
    ap.add_argument("--timeout", type=int, default=300, help="per client run, seconds")
    ap.add_argument("--max-seconds", type=int, default=1800, help="start no run after this")
    ap.add_argument("--sample-ms", type=int, default=20)
    ap.add_argument("--quiet-load", type=float, default=0.3,
                    help="before a run, wait while others use more than this many cores")
    ap.add_argument("--quiet-wait", type=float, default=5, help="most seconds to wait per run")
    ap.add_argument("--quiet-budget", type=float, default=120, help="most seconds to wait in all")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite --out from WORKDIR/results.json")
    args = ap.parse_args()
    args.clamsmtpd_desc = args.clamsmtpd_desc or args.clamsmtpd
    try:
        args.clamsmtpd_version = subprocess.run([args.clamsmtpd, "-v"], capture_output=True,
                                                text=True).stdout.strip()
    except OSError:
        args.clamsmtpd_version = "?"
    started = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.monotonic()
    if args.report_only:
        with open(os.path.join(args.workdir, "results.json")) as f:
            data = json.load(f)
        results, notes, baseline = data["results"], data["notes"], data.get("baseline", {})
        meta = data.get("meta", {})
        info = meta.get("machine") or dict(machine(), load="n/a (report re-rendered)")
        args.clamsmtpd_desc = meta.get("clamsmtpd_desc", args.clamsmtpd_desc)
        args.clamsmtpd_version = meta.get("clamsmtpd_version", args.clamsmtpd_version)
        text = report(args, results, notes, baseline, info, meta.get("started", started),
                      meta.get("elapsed", 0))
        with open(args.out, "w") as f:
            f.write(text)
        print(text)
        return
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
        results, notes, baseline = b.results, b.notes, b.baseline
    info, elapsed = machine(), time.monotonic() - t0
    path = os.path.join(args.workdir, "results.json")
    with open(path) as f:
        data = json.load(f)
    data["meta"] = {"started": started, "elapsed": elapsed, "machine": info,
                    "clamsmtpd_desc": args.clamsmtpd_desc,
                    "clamsmtpd_version": args.clamsmtpd_version}
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    text = report(args, results, notes, baseline, info, started, elapsed)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
