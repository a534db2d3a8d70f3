#!/usr/bin/env python3
"""peers.py - clamsmtpd beside clamav-milter and amavisd-new, behind one Postfix.

Run it through bench/peers.sh, which installs the peers and builds clamsmtpd.
Each system is a private Postfix instance (own config, queue and log
directories; 127.0.0.1 and high ports only) that relays everything to one
smtp-sink, with the same private clamd (tests/clamd-start.sh) behind every
filter:

  postfix  Postfix alone: smtpd -> queue -> smtp -> sink          (the floor)
  milter   smtpd_milters = clamav-milter (Debian's, generated config)
  amavis   content_filter = amavisd-new (Debian's, generated config, spam,
           banned and header checks off) -> re-injection smtpd -> queue
  after    content_filter = clamsmtpd -l, the lines of tests/postfix-example.cf
  before   smtpd_proxy_filter = clamsmtpd -b -l, the lines of
           tests/postfix-proxy-example.cf

smtp-source drives each public smtpd, one message per connection. A run
ends when the sink has counted every message. CPU: each Postfix instance,
each filter and clamd is started in a cpuacct cgroup of its own, whose
nanosecond counter includes every process it ever forked (where no such
cgroup can be made, the sum over the process tree of utime+stime+cutime+
cstime from /proc/PID/stat, in 10 ms ticks); memory is sampled from
/proc/PID/status during the run. Every process started here is stopped by
its pid at the end (also on an error, SIGTERM or ^C).
"""

import argparse
import datetime
import email.mime.application
import email.mime.multipart
import email.mime.text
import json
import os
import pwd
import re
import shutil
import signal
import smtplib
import statistics
import subprocess
import threading
import time

import common
from common import (HZ, KiB, MiB, busy_s, fmt, free_ports, log, machine, run_timed,
                    size_name, sink_messages, stat_fields, status_value)
SYSTEMS = ["postfix", "milter", "amavis", "after", "before"]
FILTERS = ["milter", "amavis", "after", "before"]
NAME = {"postfix": "Postfix alone", "milter": "clamav-milter", "amavis": "amavisd-new",
        "after": "clamsmtpd after-queue", "before": "clamsmtpd before-queue"}
SHORT = {"postfix": "Postfix alone", "milter": "clamav-milter", "amavis": "amavisd-new",
         "after": "**clamsmtpd after**", "before": "**clamsmtpd before**"}
# messages per run: size -> sessions -> count
FULL_COUNTS = {4 * KiB: {1: 100, 16: 320}, 100 * KiB: {1: 50, 16: 160},
               2 * MiB: {1: 12, 16: 48}}
QUICK_COUNTS = {4 * KiB: {1: 10, 16: 32}, 100 * KiB: {1: 5, 16: 16},
                2 * MiB: {1: 2, 16: 16}}
SETTLE = 2.2      # s after the last delivery: Postfix's cached connections close after 2 s
SENDER, RCPT = "sender@example.test", "rcpt@example.test"


def wait_listening(port, proc, what, limit=30.0):
    common.wait_listening(port, proc, what, limit, 0.02)


# ------------------------------------------------------------------ /proc
def snapshot():
    """pid -> (ppid, CPU seconds including reaped children) for every process."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            f = stat_fields(int(d))
        except OSError:
            continue
        out[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]) / HZ)
    return out


def tree(snap, root):
    """root and every descendant of it in snap."""
    kids = {}
    for pid, (ppid, _) in snap.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if p in snap:
            out.append(p)
            todo.extend(kids.get(p, []))
    return out


def tree_cpu(snap, root):
    return sum(snap[p][1] for p in tree(snap, root))


class CpuGroups:
    """Exact CPU time of process groups: one cpuacct cgroup (v1) or cgroup (v2) each.

    A process joins its group just before it execs (see join), so everything
    it forks is counted, exited processes too. None of this when no cgroup
    can be made here: then usage() is None and /proc ticks are used.
    """

    def __init__(self, tag):
        self.base, self.kind, self.groups = None, None, []
        for base, kind in (("/sys/fs/cgroup/cpuacct", "v1"), ("/sys/fs/cgroup/unified", "v2"),
                           ("/sys/fs/cgroup", "v2")):
            usage = "cpuacct.usage" if kind == "v1" else "cpu.stat"
            if not os.path.exists(os.path.join(base, usage)) and kind == "v1":
                continue
            path = os.path.join(base, tag)
            try:
                os.mkdir(path)
            except OSError:
                continue
            if os.path.exists(os.path.join(path, usage)):
                self.base, self.kind = path, kind
                break
            os.rmdir(path)

    def make(self, name):
        if self.base is None:
            return None
        path = os.path.join(self.base, name)
        os.mkdir(path)
        self.groups.append(path)
        return path

    @staticmethod
    def join(path):
        """A preexec_fn: the child moves itself into the group."""
        if path is None:
            return None

        def fn():
            with open(os.path.join(path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        return fn

    def usage(self, path):
        """CPU seconds used by everything that ever ran in the group."""
        if path is None:
            return None
        if self.kind == "v1":
            with open(os.path.join(path, "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        with open(os.path.join(path, "cpu.stat")) as f:
            m = re.search(r"usage_usec (\d+)", f.read())
        return int(m.group(1)) / 1e6

    def remove(self):
        for path in list(reversed(self.groups)) + ([self.base] if self.base else []):
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:    # processes still leaving
                    time.sleep(0.1)


class MemSampler(threading.Thread):
    """Samples the RSS of a process tree: the largest sum, and the largest VmHWM."""

    def __init__(self, root, interval):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.rss_sum_max, self.hwm_max, self.procs_max = 0, 0, 0
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            pids = tree(snapshot(), self.root)
            rss = sum(status_value(p, "VmRSS") for p in pids)
            self.rss_sum_max = max(self.rss_sum_max, rss)
            self.hwm_max = max([self.hwm_max] + [status_value(p, "VmHWM") for p in pids])
            self.procs_max = max(self.procs_max, len(pids))
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.join(5)


class Procs(common.Procs):
    """common.Procs, each process started in its CPU group (see CpuGroups)."""

    def start(self, argv, log_path, group=None, **kw):
        return super().start(argv, log_path, preexec_fn=CpuGroups.join(group), **kw)


def example_block(path, name):
    """The non-comment lines of one "#=== NAME" block (as tests/postfix-instance.sh)."""
    out, on = [], False
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#=== "):
                on = line == "#=== " + name
                continue
            if on and not line.startswith("#") and line.strip():
                out.append(line)
    if not out:
        raise RuntimeError("no '#=== %s' block in %s" % (name, path))
    return out


class System:
    """One Postfix instance with (or without) its filter."""

    def __init__(self, bench, name):
        self.b, self.name = bench, name
        self.dir = os.path.join(bench.work, name)
        self.pf = os.path.join(self.dir, "pf")
        self.submit, self.filter_port, self.reinject = free_ports(3)
        self.filter = None        # Popen of the filter (root of its process tree)
        self.master = None        # pid of Postfix's master
        self.configs = {}         # name -> text, for the report
        self.pf_group = bench.cg.make(name + "-postfix")
        self.filter_group = bench.cg.make(name + "-filter") if name in FILTERS else None

    # ------------------------------------------------------------ configs
    def main_cf(self):
        d = self.pf
        lines = [
            "# private Postfix instance for bench/peers.py (%s)" % self.name,
            "compatibility_level = 3.6",
            "mail_owner = postfix",
            "setgid_group = postdrop",
            "queue_directory = %s/queue" % d,
            "data_directory = %s/data" % d,
            "maillog_file = %s/maillog" % d,
            "maillog_file_prefixes = %s" % d,
            "myhostname = %s.clamsmtpd.test" % self.name,
            "mydomain = clamsmtpd.test",
            "myorigin = $myhostname",
            "mydestination =",
            "local_transport = error:5.1.1 no local delivery in this instance",
            "alias_maps =",
            "alias_database =",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8",
            "relayhost = [127.0.0.1]:%d" % self.b.sink_port,
            "smtp_dns_support_level = disabled",
            "smtpd_peername_lookup = no",
            "delay_warning_time = 0",
            "biff = no",
            "# no pause before accepting a message when mail arrives faster than",
            "# it leaves: the benchmark measures the filters, not flow control",
            "in_flow_delay = 0s",
            "# --- %s" % NAME[self.name],
        ]
        if self.name == "milter":
            lines += ["smtpd_milters = %s" % self.milter_addr("postfix"),
                      "milter_default_action = tempfail"]
        elif self.name == "amavis":
            lines += ["content_filter = amavisfeed:[127.0.0.1]:%d" % self.filter_port,
                      "receive_override_options = no_address_mappings"]
        elif self.name == "after":
            lines += self.sub(example_block(self.b.example, "main.cf"))
        elif self.name == "before":
            lines += self.sub(example_block(self.b.proxy_example, "main.cf"))
        return "\n".join(lines) + "\n"

    def sub(self, lines):
        out = []
        for line in lines:
            line = line.replace("10025", str(self.filter_port))
            line = line.replace("10026", str(self.reinject))
            line = line.replace("/usr/sbin/clamsmtpd", self.b.args.clamsmtpd)
            line = line.replace("/var/spool/clamsmtpd", os.path.join(self.dir, "spool"))
            line = line.replace("/run/clamav/clamd.ctl", self.b.sock)
            line = line.replace("/run/clamsmtpd.pid", os.path.join(self.dir, "clamsmtpd.pid"))
            line = re.sub(r"^smtp(\s+)inet ", r"127.0.0.1:%d\1inet " % self.submit, line)
            if self.name == "amavis":
                line = re.sub(r"^scan(\s+)unix ", r"amavisfeed unix ", line)
            out.append(line)
        return out

    def master_cf(self):
        text = "# private Postfix instance for bench/peers.py (%s)\n" % self.name
        text += self.b.master_services
        public = "127.0.0.1:%d inet n -      n       -       -       smtpd\n" % self.submit
        if self.name in ("postfix", "milter"):
            text += public
        elif self.name in ("after", "amavis"):
            text += public + "# --- from tests/postfix-example.cf, block master.cf\n"
            text += "\n".join(self.sub(example_block(self.b.example, "master.cf"))) + "\n"
        else:
            text += "# --- from tests/postfix-proxy-example.cf, block master.cf\n"
            text += "\n".join(self.sub(example_block(self.b.proxy_example, "master.cf"))) + "\n"
        return text

    def milter_addr(self, side):
        """Where clamav-milter listens, as Postfix and as clamav-milter write it."""
        if self.b.args.milter_socket == "unix":
            path = os.path.join(self.dir, "milter.sock")
            return "unix:" + path
        if side == "postfix":
            return "inet:127.0.0.1:%d" % self.filter_port
        return "inet:%d@127.0.0.1" % self.filter_port

    def milter_conf(self):
        d = self.dir
        return """\
# clamav-milter for bench/peers.py
Foreground yes
MilterSocket %s
MilterSocketMode 666
FixStaleSocket yes
ClamdSocket unix:%s
TemporaryDirectory %s/tmp
PidFile %s/milter.pid
LogFile %s/milter.log
LogFileUnlock yes
LogTime yes
LogInfected Basic
LogClean Off
OnClean Accept
OnInfected Reject
OnFail Defer
AddHeader Replace
MaxFileSize 50M
ReadTimeout 300
""" % (self.milter_addr("milter"), self.b.sock, d, d, d)

    def amavis_conf(self):
        home = os.path.join(self.dir, "home")
        return """\
# amavisd-new for bench/peers.py: virus checks with the bench's clamd, no spam,
# banned-file or header checks, no quarantine, no notifications
use strict;
$MYHOME = '%s';
$TEMPBASE = "$MYHOME/tmp";
$db_home = "$MYHOME/db";
$helpers_home = $MYHOME;
$pid_file = "$MYHOME/amavisd.pid";
$lock_file = "$MYHOME/amavisd.lock";
$daemon_user = 'amavis';
$daemon_group = 'amavis';
$mydomain = 'clamsmtpd.test';
$myhostname = 'amavis.clamsmtpd.test';
$max_servers = 16;
$max_requests = 1000;
$child_timeout = 600;
$inet_socket_bind = '127.0.0.1';
$inet_socket_port = %d;
@inet_acl = qw(127.0.0.1);
$forward_method = 'smtp:[127.0.0.1]:%d';
$notify_method = $forward_method;
$file = 'file';
$DO_SYSLOG = 0;
$LOGFILE = "$MYHOME/amavis.log";
$log_level = 0;
$enable_db = 0;
$enable_global_cache = 0;
$enable_dkim_verification = 0;
$enable_dkim_signing = 0;
@bypass_spam_checks_maps = (1);
@bypass_banned_checks_maps = (1);
@bypass_header_checks_maps = (1);
$final_virus_destiny = D_DISCARD;
$QUARANTINEDIR = undef;
$virus_quarantine_method = undef;
$virus_admin = undef;
$warnvirusrecip = 0;
$warnvirussender = 0;
@av_scanners = (['ClamAV-clamd', \\&ask_daemon, ["CONTSCAN {}\\n", '%s'],
  qr/\\bOK$/m, qr/\\bFOUND$/m, qr/^.*?: (?!Infected Archive)(.*) FOUND$/m ]);
@av_scanners_backup = ();
1;
""" % (home, self.filter_port, self.reinject, self.b.sock)

    # ------------------------------------------------------------ running
    def start(self):
        os.makedirs(os.path.join(self.pf, "etc"), exist_ok=True)
        for sub in ("queue", "data"):
            os.makedirs(os.path.join(self.pf, sub), exist_ok=True)
        shutil.chown(os.path.join(self.pf, "data"), "postfix")
        self.configs["main.cf"] = self.main_cf()
        self.configs["master.cf"] = self.master_cf()
        for n in ("main.cf", "master.cf"):
            with open(os.path.join(self.pf, "etc", n), "w") as f:
                f.write(self.configs[n])
        self.start_filter()
        r = subprocess.run([self.b.instance, "start", self.pf], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True,
                           preexec_fn=CpuGroups.join(self.pf_group))
        if r.returncode != 0:
            raise RuntimeError("%s: postfix-instance.sh start: %s" % (self.name, r.stderr))
        with open(os.path.join(self.pf, "master.pid")) as f:
            self.master = int(f.read())
        wait_listening(self.submit, None, "%s's smtpd" % self.name)

    def start_filter(self):
        logp = os.path.join(self.dir, "filter.log")
        if self.name in ("after", "before"):
            spool = os.path.join(self.dir, "spool")
            os.makedirs(spool, mode=0o700, exist_ok=True)
            ex = self.b.example if self.name == "after" else self.b.proxy_example
            line = self.sub(example_block(ex, "listener"))[0]
            argv = line.split()
            argv[1:1] = ["-d", "1"]      # in the foreground, errors only
            self.configs["clamsmtpd"] = " ".join(argv)
            if self.b.args.perf:
                # the profile of every session the listener forks (the VM has no PMU)
                argv = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "2999", "-g",
                        "-o", os.path.join(self.b.work, "perf-%s.data" % self.name),
                        "--"] + argv
            self.filter = self.b.procs.start(argv, logp, self.filter_group)
        elif self.name == "milter":
            os.makedirs(os.path.join(self.dir, "tmp"), exist_ok=True)
            conf = os.path.join(self.dir, "clamav-milter.conf")
            self.configs["clamav-milter.conf"] = self.milter_conf()
            with open(conf, "w") as f:
                f.write(self.configs["clamav-milter.conf"])
            self.filter = self.b.procs.start(["clamav-milter", "-c", conf], logp,
                                             self.filter_group)
        elif self.name == "amavis":
            home = os.path.join(self.dir, "home")
            for sub in ("tmp", "db"):
                os.makedirs(os.path.join(home, sub), exist_ok=True)
            pw = pwd.getpwnam("amavis")
            for root, dirs, _ in os.walk(home):
                os.chown(root, pw.pw_uid, pw.pw_gid)
            conf = os.path.join(self.dir, "amavisd.conf")
            self.configs["amavisd.conf"] = self.amavis_conf()
            with open(conf, "w") as f:
                f.write(self.configs["amavisd.conf"])
            self.filter = self.b.procs.start(["amavisd", "-c", conf, "foreground"], logp,
                                             self.filter_group)
        else:
            return
        if self.name == "milter" and self.b.args.milter_socket == "unix":
            path = os.path.join(self.dir, "milter.sock")
            end = time.monotonic() + 60
            while not os.path.exists(path):
                if self.filter.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("clamav-milter does not listen on %s" % path)
                time.sleep(0.05)
        else:
            wait_listening(self.filter_port, self.filter, NAME[self.name], 60)
        if self.name == "amavis":
            # its children are forked after the socket is open: wait for them
            end = time.monotonic() + 60
            while time.monotonic() < end and \
                    len(tree(snapshot(), self.filter.pid)) < 17:
                time.sleep(0.1)

    def stop(self):
        if self.master:
            subprocess.run([self.b.instance, "stop", self.pf], stdin=subprocess.DEVNULL)
            self.master = None
        if self.filter is not None:
            if self.b.args.perf and self.name in ("after", "before"):
                # perf waits for its workload: stop clamsmtpd, then perf writes
                snap = snapshot()
                for pid in [p for p, (pp, _) in snap.items() if pp == self.filter.pid]:
                    os.kill(pid, signal.SIGTERM)
                try:
                    self.filter.wait(60)
                except subprocess.TimeoutExpired:
                    pass
            self.b.procs.stop(self.filter, 30.0)
            self.filter = None

    def queue_empty(self):
        r = subprocess.run(["postqueue", "-c", os.path.join(self.pf, "etc"), "-p"],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return "Mail queue is empty" in r.stdout


class Bench:
    def __init__(self, args):
        self.args = args
        self.root = os.path.dirname(os.path.abspath(__file__))
        self.main = os.path.dirname(self.root)
        self.example = os.path.join(self.main, "tests", "postfix-example.cf")
        self.proxy_example = os.path.join(self.main, "tests", "postfix-proxy-example.cf")
        self.instance = os.path.join(self.main, "tests", "postfix-instance.sh")
        # the master.cf lines of Postfix's own services, as the tests' instances have them
        self.master_services = subprocess.run([self.instance, "services"], capture_output=True,
                                              text=True, check=True).stdout
        self.work = args.workdir
        self.procs = Procs()
        self.results = {}
        self.checks = {}
        self.notes = []
        self.started = time.monotonic()
        self.gate_spent = 0.0
        self.clamd_dir = os.path.join(self.work, "clamd")
        self.sock = os.path.join(self.clamd_dir, "clamd.sock")
        self.sink_log = os.path.join(self.work, "sink.log")
        self.systems = {}
        self.only = args.systems.split(",") if args.systems else SYSTEMS
        self.cg = CpuGroups("clamsmtpd-peers.%d" % os.getpid())
        self.clamd_group = self.cg.make("clamd")
        self.sink_group = self.cg.make("sink")

    # -------------------------------------------------------------- setup
    def setup(self):
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o755)
        r = subprocess.run([os.path.join(self.main, "tests", "clamd-start.sh"), self.clamd_dir],
                           stdin=subprocess.DEVNULL, preexec_fn=CpuGroups.join(self.clamd_group))
        if r.returncode != 0:
            raise RuntimeError("clamd-start.sh failed")
        # amavisd's children run as amavis and must reach the socket
        os.chmod(self.sock, 0o666)
        with open(os.path.join(self.clamd_dir, "clamd.pid")) as f:
            self.clamd_pid = int(f.read())
        self.sink_port = free_ports(1)[0]
        self.sink = self.procs.start(["smtp-sink", "-c", "-u", "nobody",
                                      "127.0.0.1:%d" % self.sink_port, "1024"], self.sink_log,
                                     self.sink_group)
        wait_listening(self.sink_port, self.sink, "smtp-sink")
        for name in self.only:
            s = System(self, name)
            self.systems[name] = s
            log("starting %s" % NAME[name])
            s.start()
        for name in self.only:
            self.check(self.systems[name])
            self.warm_up(self.systems[name])

    def teardown(self):
        for s in self.systems.values():
            try:
                s.stop()
            except Exception as e:  # stop the rest all the same
                log("stopping %s: %r" % (s.name, e))
        self.procs.stop_all()
        subprocess.run([os.path.join(self.main, "tests", "clamd-stop.sh"), self.clamd_dir],
                       stdin=subprocess.DEVNULL)
        self.cg.remove()

    def sink_messages(self):
        return sink_messages(self.sink_log)

    def settled(self, s, limit=60.0):
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if s.queue_empty():
                return True
            time.sleep(0.2)
        return False

    def check(self, s):
        """One EICAR message: what the client is told, and whether it arrives."""
        msg = email.mime.multipart.MIMEMultipart()
        msg["From"], msg["To"], msg["Subject"] = SENDER, RCPT, "eicar check"
        msg.attach(email.mime.text.MIMEText("The attachment is the EICAR test file.\n"))
        eicar = subprocess.run([os.path.join(self.main, "tests", "eicar.sh")],
                               capture_output=True, check=True).stdout
        att = email.mime.application.MIMEApplication(eicar, Name="eicar.com")
        att["Content-Disposition"] = 'attachment; filename="eicar.com"'
        msg.attach(att)
        before = self.sink_messages()
        try:
            with smtplib.SMTP("127.0.0.1", s.submit, timeout=60) as c:
                c.sendmail(SENDER, [RCPT], msg.as_bytes())
            reply = "250"
        except smtplib.SMTPResponseException as e:
            reply = "%d %s" % (e.smtp_code, e.smtp_error.decode(errors="replace"))
        except smtplib.SMTPRecipientsRefused as e:
            reply = repr(e)
        self.settled(s)
        time.sleep(0.5)
        got = self.sink_messages() - before
        self.checks[s.name] = {"reply": reply, "delivered": got}
        log("%s: EICAR: client got %s; delivered: %d" % (NAME[s.name], reply[:80], got))

    def warm_up(self, s):
        """A few messages, so that Postfix and the filter have their processes."""
        n0 = self.sink_messages()
        subprocess.run(["smtp-source", "-s", "16", "-m", "32", "-l", "4096", "-f", SENDER,
                        "-t", RCPT, "127.0.0.1:%d" % s.submit], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        end = time.monotonic() + 120
        while self.sink_messages() - n0 < 32 and time.monotonic() < end:
            time.sleep(0.05)
        if self.sink_messages() - n0 < 32:
            raise RuntimeError("%s: warm-up messages did not arrive" % s.name)

    # --------------------------------------------------------------- grid
    def counts(self):
        return QUICK_COUNTS if self.args.quick else FULL_COUNTS

    def cells(self):
        want = [c.split("x") for c in self.args.cells.split(",")] if self.args.cells else None
        for size, per in sorted(self.counts().items()):
            for n in sorted(per):
                if want is None or [str(size), str(n)] in want:
                    yield size, n, per[n]

    def quiet_gate(self):
        """Wait (bounded) while other work on the machine keeps a core busy."""
        waited = 0.0
        while True:
            b0, t0 = busy_s(), time.monotonic()
            time.sleep(0.1)
            load = (busy_s() - b0) / (time.monotonic() - t0)
            if load < self.args.quiet_load or waited >= 5.0 or \
                    self.gate_spent >= self.args.quiet_budget:
                return load
            time.sleep(0.5)
            waited += 0.6
            self.gate_spent += 0.6

    def run_one(self, s, size, sessions, count):
        res = {"count": count, "bg_before": self.quiet_gate()}
        outp = os.path.join(self.work, "client.out")
        sink0 = self.sink_messages()
        groups = {"postfix_cpu": s.pf_group, "filter_cpu": s.filter_group,
                  "clamd_cpu": self.clamd_group, "sink_cpu": self.sink_group}
        exact0 = {k: self.cg.usage(g) for k, g in groups.items()}
        snap0, busy0 = snapshot(), busy_s()
        mem = None
        if s.filter is not None:
            mem = MemSampler(s.filter.pid, self.args.sample_s)
            mem.start()
        argv = ["smtp-source", "-s", str(sessions), "-m", str(count), "-l", str(size),
                "-f", SENDER, "-t", RCPT, "127.0.0.1:%d" % s.submit]
        t0 = time.monotonic()
        rc, wall, ccpu = run_timed(argv, outp, self.args.timeout)
        res["client_s"] = wall
        end = t0 + self.args.timeout
        got = 0
        while time.monotonic() < end:
            got = self.sink_messages() - sink0
            if got >= count:
                break
            time.sleep(0.005)
        res["seconds"] = time.monotonic() - t0
        if mem is not None:
            mem.stop()
            res["rss_sum"], res["hwm"], res["procs"] = mem.rss_sum_max, mem.hwm_max, mem.procs_max
        time.sleep(SETTLE)
        snap1, busy1 = snapshot(), busy_s()
        exact1 = {k: self.cg.usage(g) for k, g in groups.items()}
        span = time.monotonic() - t0
        res["postfix_cpu"] = tree_cpu(snap1, s.master) - tree_cpu(snap0, s.master)
        res["clamd_cpu"] = tree_cpu(snap1, self.clamd_pid) - tree_cpu(snap0, self.clamd_pid)
        res["filter_cpu"] = 0.0
        if s.filter is not None:
            res["filter_cpu"] = tree_cpu(snap1, s.filter.pid) - tree_cpu(snap0, s.filter.pid)
        res["sink_cpu"] = tree_cpu(snap1, self.sink.pid) - tree_cpu(snap0, self.sink.pid)
        res["ticks"] = {k: res[k] for k in groups}
        for k in groups:
            if exact0[k] is not None:
                res[k] = exact1[k] - exact0[k]
        res["exact"] = exact0["clamd_cpu"] is not None
        res["client_cpu"] = ccpu
        res["chain_cpu"] = res["postfix_cpu"] + res["filter_cpu"] + res["clamd_cpu"]
        ours = res["chain_cpu"] + res["sink_cpu"] + ccpu
        res["bg"] = max(busy1 - busy0 - ours, 0.0) / span
        res["delivered"] = got
        text = open(outp, errors="replace").read().strip()
        err = ""
        if rc != 0:
            err = "smtp-source exit %s: %s" % (rc, text[-200:])
        res["ok"] = rc == 0 and got == count
        if not res["ok"]:
            res["error"] = ("delivered %d/%d %s" % (got, count, err)).strip()[-300:]
            self.settled(s, 30)
        return res

    def run(self):
        self.setup()
        deadline = self.started + self.args.max_seconds
        for r in range(self.args.runs):
            for size, sessions, count in self.cells():
                for name in self.only:
                    if time.monotonic() > deadline:
                        self.notes.append("time limit (%d s) reached in run %d: later runs "
                                          "were not made" % (self.args.max_seconds, r + 1))
                        return
                    key = "%d/%d/%s" % (size, sessions, name)
                    try:
                        res = self.run_one(self.systems[name], size, sessions, count)
                    except Exception as e:  # keep going: one bad cell is a result too
                        res = {"ok": False, "error": repr(e)[-300:], "count": count}
                    self.results.setdefault(key, []).append(res)
                    log("%-7s %7s s=%-2d run %d: %4d msgs %6.2f s %6.1f/s filter %s chain %s "
                        "bg %3.0f%%%s" % (
                            name, size_name(size), sessions, r + 1, count,
                            res.get("seconds", 0),
                            count / res["seconds"] if res.get("seconds") else 0,
                            "%.2f ms" % (1000 * res["filter_cpu"] / count)
                            if "filter_cpu" in res else "-",
                            "%.2f ms" % (1000 * res["chain_cpu"] / count)
                            if "chain_cpu" in res else "-",
                            100 * res.get("bg", 0),
                            "" if res.get("ok") else "  FAILED: %s" % res.get("error")))
                    self.save()

    def save(self):
        with open(os.path.join(self.work, "results.json"), "w") as f:
            json.dump({"results": self.results, "notes": self.notes, "checks": self.checks,
                       "configs": {n: s.configs for n, s in self.systems.items()},
                       "work": self.work, "quick": self.args.quick,
                       "milter_socket": self.args.milter_socket,
                       "cpu_source": ("cgroup %s" % self.cg.kind) if self.cg.base else "/proc",
                       "date": datetime.datetime.now(datetime.timezone.utc).strftime(
                           "%Y-%m-%d %H:%M UTC")}, f, indent=1)


# ------------------------------------------------------------------ report
def versions():
    def pkg(name):
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", name],
                           capture_output=True, text=True)
        return r.stdout.strip() or "?"
    return {"postfix": pkg("postfix"), "clamav-daemon": pkg("clamav-daemon"),
            "clamav-milter": pkg("clamav-milter"), "amavisd-new": pkg("amavisd-new"),
            "perl": pkg("perl")}


def summarise(results, counts):
    """(size, sessions) -> system -> medians and spreads over the good runs."""
    out = {}
    for size in sorted(counts):
        for n in sorted(counts[size]):
            if not any(k.startswith("%d/%d/" % (size, n)) for k in results):
                continue
            cell = {}
            for name in SYSTEMS:
                runs = results.get("%d/%d/%s" % (size, n, name), [])
                ok = [r for r in runs if r.get("ok") and r.get("seconds", 0) > 0]
                d = {"n": len(ok), "tried": len(runs), "errors": [r.get("error") for r in runs
                                                                  if not r.get("ok")]}
                if ok:
                    c = ok[0]["count"]
                    d["count"] = c

                    def spread(key, f):
                        v = [f(r) for r in ok if key in r]
                        return (statistics.median(v), min(v), max(v)) if v else None
                    d["rate"] = spread("seconds", lambda r: r["count"] / r["seconds"])
                    d["e2e_ms"] = spread("seconds", lambda r: 1000 * r["seconds"] / r["count"])
                    d["client_ms"] = spread("client_s",
                                            lambda r: 1000 * r["client_s"] / r["count"])
                    for k in ("filter_cpu", "chain_cpu", "postfix_cpu", "clamd_cpu"):
                        d[k] = spread(k, lambda r, k=k: 1000 * r[k] / r["count"])
                    d["bg"] = statistics.median([r.get("bg", 0) for r in ok])
                    if any("rss_sum" in r for r in ok):
                        d["rss_sum"] = max(r.get("rss_sum", 0) for r in ok)
                        d["hwm"] = max(r.get("hwm", 0) for r in ok)
                        d["procs"] = max(r.get("procs", 0) for r in ok)
                cell[name] = d
            out[(size, n)] = cell
    return out


def med(d, k):
    v = d.get(k)
    return v[0] if v else None


def sp(v, f=fmt):
    """median (min–max)"""
    if not v:
        return "–"
    return "%s (%s–%s)" % (f(v[0]), f(v[1]), f(v[2]))


def targets(summ):
    """The targets of bench/README.md, judged on these medians."""
    lines = []
    # 1. before-queue chain >= milter chain in msg/s, every cell
    cells, fails = 0, []
    for (size, n), cell in sorted(summ.items()):
        b, m = med(cell["before"], "rate"), med(cell["milter"], "rate")
        if b is None or m is None:
            continue
        cells += 1
        if b < m:
            fails.append("%s × %d: %s vs %s msg/s" % (size_name(size), n, fmt(b), fmt(m)))
    if cells:
        lines.append("| whole chain with clamsmtpd before-queue ≥ clamav-milter in msg/s, every "
                     "cell | %s |" % ("**met** in all %d cells" % cells if not fails else
                                      "**not met in %d of %d cells**: %s" %
                                      (len(fails), cells, "; ".join(fails))))
    # 2. filter CPU <= 1/2 milter and <= 1/10 amavis, both modes
    for mode in ("after", "before"):
        for peer, factor in (("milter", 0.5), ("amavis", 0.1)):
            cells, fails = 0, []
            for (size, n), cell in sorted(summ.items()):
                c, p = med(cell[mode], "filter_cpu"), med(cell[peer], "filter_cpu")
                if c is None or p is None:
                    continue
                cells += 1
                if c > factor * p:
                    fails.append("%s × %d: %s vs %s ms (%.2f×)" % (
                        size_name(size), n, fmt(c), fmt(p), c / p if p else 0))
            if cells:
                lines.append("| %s CPU per message ≤ %s of %s's | %s |" % (
                    NAME[mode], "½" if factor == 0.5 else "1/10", NAME[peer],
                    "**met** in all %d cells" % cells if not fails else
                    "**not met in %d of %d cells**: %s" % (len(fails), cells, "; ".join(fails))))
    # 3. per MiB and per 4 KiB connection
    small, big = 4 * KiB, 2 * MiB
    for mode in ("after", "before"):
        for n in (1, 16):
            cs, cb = summ.get((small, n)), summ.get((big, n))
            if not cs or not cb:
                continue
            a, b = med(cs[mode], "filter_cpu"), med(cb[mode], "filter_cpu")
            if a is None or b is None:
                continue
            per_mib = (b - a) / ((big - small) / MiB)
            lines.append("| %s, %d session(s): filter CPU ≤ 1 ms per MiB | %s: %s ms per MiB "
                         "((2 MiB − 4 KiB) / 2) |" % (NAME[mode], n,
                                                      "**met**" if per_mib <= 1 else
                                                      "**not met**", fmt(per_mib)))
            lines.append("| %s, %d session(s): filter CPU ≤ 0.4 ms per 4 KiB message | "
                         "%s: %s ms |" % (NAME[mode], n, "**met**" if a <= 0.4 else
                                          "**not met**", fmt(a)))
    return lines


def report(data, counts, out_md, out_svg, svg_ref, tools_desc):
    summ = summarise(data["results"], counts)
    info, ver = machine(), versions()
    L = []
    L.append("# clamsmtpd beside clamav-milter and amavisd-new, behind one Postfix")
    L.append("")
    L.append("Written by `bench/peers.sh` (`make bench-peers`) on %s%s. Machine: %s, %d cores, "
             "%s, %s, kernel %s. **The machine may have been shared** with other work (test "
             "suites of other people); the `bg` column is the CPU others used during each run, "
             "in %% of one core. Medians of %s runs; the spread (min–max) in parentheses."
             % (data["date"], " (QUICK: tiny runs, not for comparing)" if data.get("quick")
                else "", info["cpu"], info["nproc"], info["mem"], info["os"], info["kernel"],
                max((len(v) for v in data["results"].values()), default=0)))
    L.append("")
    L.append("Versions: Postfix %s, clamd %s (clamav-daemon), clamav-milter %s, amavisd-new %s "
             "(perl %s), clamsmtpd %s." % (ver["postfix"], ver["clamav-daemon"],
                                           ver["clamav-milter"], ver["amavisd-new"],
                                           ver["perl"], tools_desc))
    L.append("")
    L.append("![msg/s, filter CPU and chain CPU per message](%s)" % svg_ref)
    L.append("")
    L.append("## What runs")
    L.append("")
    L.append("Each system is its own private Postfix instance (config, queue and log in the "
             "run's directory; 127.0.0.1 and free high ports; DNS off; `in_flow_delay = 0s`) "
             "relaying everything to the same `smtp-sink`; every filter asks the same private "
             "clamd (`tests/clamd-start.sh`: 3 signatures, `DisableCache yes`, so every message "
             "is really scanned). `smtp-source -s SESSIONS -m N -l SIZE` sends into the public "
             "smtpd, one message per connection. All five systems run at the same time, idle "
             "but for the one being measured; the systems of one cell are measured back to "
             "back, and all cells once before the next round.")
    L.append("")
    L.append("| system | what runs |")
    L.append("|---|---|")
    L.append("| Postfix alone | smtpd → queue → smtp → sink: the floor, no scanning |")
    sock = data.get("milter_socket", "inet")
    L.append("| clamav-milter | Debian's `clamav-milter -c CONF` (`Foreground`, %s, "
             "`OnInfected Reject`, `OnFail Defer`, `AddHeader Replace`) as "
             "`smtpd_milters`, `milter_default_action = tempfail`; it streams each message to "
             "clamd (`INSTREAM`).%s |" % (
                 "`MilterSocket unix:…` (Debian's default)" if sock == "unix" else
                 "`MilterSocket inet:…@127.0.0.1`",
                 " With `inet:` instead, one session waited ~90 ms more per message "
                 "(10 instead of 87 msg/s at 4 KiB in a trial run here): use the unix socket"
                 if sock == "unix" else
                 " A unix socket (Debian's default) is much faster in one session"))
    L.append("| amavisd-new | Debian's `amavisd -c CONF foreground`, 16 children, as "
             "`content_filter` (the transport and re-injection smtpd of "
             "`tests/postfix-example.cf`, renamed); spam, banned-file and header checks off, "
             "no quarantine; MIME-decodes each message and has clamd scan the parts "
             "(`CONTSCAN`); then the second queue pass |")
    L.append("| clamsmtpd after-queue | `clamsmtpd -d 1 -l …` as `content_filter`, exactly the "
             "lines of `tests/postfix-example.cf` (`zFILDES` to clamd); then the second queue "
             "pass. Postfix's smtp client reuses its connections to clamsmtpd |")
    L.append("| clamsmtpd before-queue | `clamsmtpd -d 1 -b -l …` as `smtpd_proxy_filter`, "
             "exactly the lines of `tests/postfix-proxy-example.cf`; one clamsmtpd session per "
             "message; one queue pass |")
    L.append("")
    L.append("The EICAR check before the runs (one message with the EICAR file attached):")
    L.append("")
    L.append("| system | the sending client got | delivered |")
    L.append("|---|---|---|")
    for name in SYSTEMS:
        c = data["checks"].get(name)
        if c:
            L.append("| %s | `%s` | %d |" % (NAME[name], c["reply"].replace("\n", " ")[:90],
                                            c["delivered"]))
    L.append("")
    L.append("## Columns")
    L.append("")
    L.append("| column | meaning |")
    L.append("|---|---|")
    L.append("| msg/s | messages ÷ seconds from the start of smtp-source until the sink has "
             "counted the last one (end to end, both queue passes included) |")
    L.append("| e2e ms, +ms | one session: that time per message, and what the filter adds "
             "to it over Postfix alone |")
    L.append("| client ms | one session: smtp-source's own time per message (what the "
             "sending client waits; an after-queue filter works after it) |")
    if str(data.get("cpu_source", "")).startswith("cgroup"):
        how = ("from the %s cpuacct counter (ns) of a group the filter was started in, so "
               "every process it ever forked counts, exited ones too" % data["cpu_source"])
    else:
        how = ("the sum over its process tree of utime+stime+cutime+cstime from "
               "`/proc/PID/stat`, in 10 ms ticks")
    L.append("| filter CPU | ms of CPU per message of everything the filter ran: %s; read "
             "before the run and 2.2 s after the last delivery, so that cached connections "
             "are closed and counted |" % how)
    L.append("| Postfix, clamd | the same for the Postfix instance (`postfix start`, the master "
             "and everything it forked) and for clamd |")
    L.append("| chain CPU | Postfix + filter + clamd per message (smtp-source and smtp-sink are "
             "not counted) |")
    L.append("| filter RSS | the largest sum of VmRSS over the filter's processes, sampled "
             "every %s ms during the runs, and (after the slash) the largest VmHWM of any one "
             "of them; MiB |" % int(1000 * data.get("sample_s", 0.2)))
    L.append("| bg | CPU that other programs used during the run, % of one core |")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append("| size | sess. | system | runs×msgs | msg/s (min–max) | e2e ms | +ms | client ms "
             "| filter CPU ms (min–max) | Postfix | clamd | chain CPU ms | filter RSS MiB | bg |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (size, n), cell in sorted(summ.items()):
        floor = med(cell["postfix"], "e2e_ms")
        for name in SYSTEMS:
            d = cell[name]
            if not d.get("tried"):
                continue
            if not d.get("n"):
                L.append("| %s | %d | %s | 0/%d | failed: %s | | | | | | | | | |" % (
                    size_name(size), n, SHORT[name], d["tried"],
                    "; ".join(str(e) for e in d["errors"])[:200]))
                continue
            e2e = med(d, "e2e_ms")
            added = "–"
            if n == 1 and name != "postfix" and floor is not None:
                added = fmt(e2e - floor)
            L.append("| %s | %d | %s | %d×%d | %s | %s | %s | %s | %s | %s | %s | %s | %s | "
                     "%.0f%% |" % (
                         size_name(size), n, SHORT[name], d["n"], d["count"], sp(d["rate"]),
                         fmt(e2e) if n == 1 else "–", added,
                         fmt(med(d, "client_ms")) if n == 1 else "–",
                         sp(d["filter_cpu"]) if name != "postfix" else "–",
                         fmt(med(d, "postfix_cpu")), fmt(med(d, "clamd_cpu")),
                         sp(d["chain_cpu"]),
                         "%s / %s" % (fmt(d["rss_sum"] / 1024), fmt(d["hwm"] / 1024))
                         if d.get("rss_sum") else "–", 100 * d["bg"]))
    L.append("")
    L.append("## Targets (from bench/README.md), judged on these medians")
    L.append("")
    L.append("| target | verdict |")
    L.append("|---|---|")
    L.extend(targets(summ))
    L.append("")
    if data.get("notes"):
        L.append("Notes: " + "; ".join(data["notes"]))
        L.append("")
    L.append("## Configurations")
    L.append("")
    L.append("As generated for this run (`%s` is the run's directory)." % "$W")
    L.append("")
    for name in SYSTEMS:
        cfg = data["configs"].get(name)
        if not cfg:
            continue
        L.append("### %s" % NAME[name])
        L.append("")
        for fname, text in cfg.items():
            text = text.replace(data["work"], "$W")
            if fname == "main.cf":
                text = text.split("# --- %s\n" % NAME[name], 1)[-1]
                fname = "main.cf (after the common lines)"
                if not text.strip():
                    continue
            elif fname == "master.cf":
                keep = [l for l in text.splitlines() if l.startswith("127.0.0.1:") or
                        l.startswith(" ") or l.startswith("amavisfeed") or
                        l.startswith("scan ")]
                text = "\n".join(keep) + "\n"
                fname = "master.cf (besides Postfix's own services)"
            L.append("%s:" % fname)
            L.append("")
            L.append("```")
            L.append(text.rstrip("\n"))
            L.append("```")
            L.append("")
        if name == "postfix":
            common = cfg.get("main.cf", "").replace(data["work"], "$W")
            L.append("The main.cf lines every system shares:")
            L.append("")
            L.append("```")
            L.append(common.split("# --- ")[0].rstrip("\n"))
            L.append("```")
            L.append("")
    with open(out_md, "w") as f:
        f.write("\n".join(L) + "\n")
    chart(summ, out_svg, data)


def chart(summ, out_svg, data):
    """Three bar charts side by side with gnuplot: msg/s, filter CPU, chain CPU."""
    if shutil.which("gnuplot") is None:
        log("gnuplot is missing: no chart")
        return
    work = data["work"]
    dat = os.path.join(work, "peers.dat")
    with open(dat, "w") as f:
        for block, key in (("rate", "rate"), ("filter", "filter_cpu"), ("chain", "chain_cpu")):
            # a header line in every block: gnuplot's columnheader reads each block's first
            f.write('"cell" ' + " ".join('"%s"' % NAME[n] for n in SYSTEMS) + "\n")
            for (size, n), cell in sorted(summ.items()):
                vals = []
                for name in SYSTEMS:
                    v = med(cell[name], key)
                    if key == "filter_cpu" and name == "postfix":
                        v = None
                    vals.append("%.4f" % v if v else "NaN")
                f.write('"%s×%d" %s\n' % (size_name(size).replace(" ", "").replace("iB", ""),
                                            n, " ".join(vals)))
            f.write("\n\n")
    gp = os.path.join(work, "peers.gp")
    colors = ["#999999", "#e69f00", "#cc79a7", "#56b4e9", "#0072b2"]
    with open(gp, "w") as f:
        f.write("""\
set terminal svg size 1500,520 dynamic font "sans,12" background "#ffffff"
set output '%s'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set boxwidth 0.9
set grid ytics
set xtics nomirror font ",10"
set key top left font ",10"
set datafile missing "NaN"
set multiplot layout 1,3 title "clamsmtpd, clamav-milter and amavisd-new behind one Postfix (%s; medians)"
set title "throughput, end to end (msg/s)"
set key top right
set logscale y
plot for [i=2:6] '%s' index 0 using i:xtic(1) title columnheader(i) lc rgb word("%s", i-1)
set title "filter CPU per message (ms)"
set key top left
plot for [i=3:6] '%s' index 1 using i:xtic(1) title columnheader(i) lc rgb word("%s", i-1)
set title "whole chain CPU per message (ms): Postfix + filter + clamd"
plot for [i=2:6] '%s' index 2 using i:xtic(1) title columnheader(i) lc rgb word("%s", i-1)
unset multiplot
""" % (out_svg, data["date"], dat, " ".join(colors), dat, " ".join(colors), dat,
               " ".join(colors)))
    r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
    if r.returncode != 0:
        log("gnuplot failed: %s" % r.stderr[-500:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--clamsmtpd", required=True)
    ap.add_argument("--clamsmtpd-desc", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--svg-ref", default="peers.svg")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--systems", default="", help="comma-separated subset of " +
                    ",".join(SYSTEMS))
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--max-seconds", type=float, default=1500)
    ap.add_argument("--quiet-load", type=float, default=0.3)
    ap.add_argument("--quiet-budget", type=float, default=60)
    ap.add_argument("--sample-s", type=float, default=0.2)
    ap.add_argument("--milter-socket", choices=("unix", "inet"), default="unix",
                    help="clamav-milter's socket (Debian's default is a unix socket)")
    ap.add_argument("--cells", default="", help="only these cells: SIZExSESSIONS,...")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--perf", action="store_true",
                    help="run clamsmtpd under perf record (its CPU figures then include perf)")
    args = ap.parse_args()
    counts = QUICK_COUNTS if args.quick else FULL_COUNTS
    if not args.report_only:
        b = Bench(args)

        def on_signal(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, on_signal)
        try:
            b.run()
        except KeyboardInterrupt:
            b.notes.append("interrupted")
            log("interrupted")
        finally:
            b.save()
            b.teardown()
    with open(os.path.join(args.workdir, "results.json")) as f:
        data = json.load(f)
    data["sample_s"] = args.sample_s
    report(data, counts, args.out, args.svg, args.svg_ref, args.clamsmtpd_desc)
    log("report in %s, chart in %s" % (args.out, args.svg))


if __name__ == "__main__":
    main()
