#!/usr/bin/env python3
"""The farm beside Postfix's smtp-sink, under Postfix's smtp-source (issue 15).

    scripts/bench-vs-smtp-sink.py [--quick] [--rounds N] [--check] [--json FILE]
    scripts/bench-vs-smtp-sink.py --callgrind [--quick]

Both receivers listen on loopback and are started afresh for each round; the rounds
interleave them (sink, farm, farm, sink, ...) so that a drift of the machine falls on
both. Per round and receiver, smtp-source sends:

  (a) 20,000 messages, one per connection, 50 sessions at once
  (b) 20,000 messages, ten per connection (smtp-source -d, 500 at a time)
  (c) 100 messages of 1,000 recipients each (RCPT, distinct addresses)

and the receiver's CPU for each load is the user + system time of the listening process
(/proc/PID/stat) before and after it; the system time alone is shown too, as the part
of the ratio that the kernel's TCP work sets. Then its peak RSS (VmHWM) after (a)-(c), and the
RSS each of N idle connections adds (connected, greeting read, nothing sent). For the
farm alone: a whole fresh session (EHLO to QUIT) timed while those connections are held.

The farm runs with its shipped defaults (in-memory journal of 100,000 events, no journal
file) on a one-host accept-all scenario written here, and once more with --journal FILE
(loads and peak RSS only). Ratios are farm / smtp-sink: below 1 the farm uses less.
Medians over the rounds. Besides VmHWM, the peak of RssAnon (sampled every 20 ms) shows
the memory each process holds for itself, without its program's file-backed pages.

--callgrind: the farm alone under valgrind's callgrind, once per load, for the user-space
instructions per message (per RCPT for (c)): counts that stay put on a noisy machine,
so that a regression shows at a glance (BENCHMARKS.md keeps them).

--quick: one round of small loads (seconds), for CI. --check: exit 1 when a ratio is
beyond LIMITS below, which sit far above today's figures: a regression, not noise.
Only loopback is used. Needs smtp-source and smtp-sink (Debian's postfix package; the
shell wrapper scripts/bench-vs-smtp-sink.sh installs it) and target/release/mxfarm.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FARM = os.path.join(ROOT, "target", "release", "mxfarm")
TICK = os.sysconf("SC_CLK_TCK")
SIZE = 1700  # bytes per message, as the measurement

# Far beyond noise: the first measurement had 0.97, 1.39, 1.15, 2.7 and 0.07.
LIMITS = {"a": 2.5, "b": 3.0, "c": 2.5, "peak_rss": 6.0, "peak_anon": 6.0, "idle_rss": 0.5,
          "journal_a": 3.0, "journal_b": 4.0, "journal_c": 3.0, "journal_peak_rss": 6.0}

SCENARIO = """name = "bench-vs-smtp-sink"
description = "One host that accepts everything: the farm beside smtp-sink"

[[host]]
name = "mx1"
listen = "127.0.0.1:{port}"

[host.limits]
max-connections = 30000
max-connections-per-client = 30000
max-recipients = 1000
max-errors = 1000
command-timeout = "600s"
data-timeout = "600s"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User and system time of a process so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the name: state is field 3, so utime (14) and stime (15) are 11 and 12 here.
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


def wait_port(port, proc, what):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.recv(512)
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within 30 s")


class Receiver:
    def __init__(self, kind, workdir):
        self.kind = kind
        self.port = free_port()
        self.workdir = workdir
        self.proc = None

    def start(self):
        if self.kind == "smtp-sink":
            # -u: the user it runs as when started as root; 1024: the listen backlog.
            argv = ["smtp-sink", "-u", "nobody", f"127.0.0.1:{self.port}", "1024"]
            if os.geteuid() != 0:
                argv = ["smtp-sink", f"127.0.0.1:{self.port}", "1024"]
        else:
            path = os.path.join(self.workdir, "scenario.toml")
            with open(path, "w") as f:
                f.write(SCENARIO.format(port=self.port))
            argv = [FARM, "run", path]
            if self.kind == "mxfarm-journal":
                # The journal file under its contract: each 250 waits for the message's
                # line to be written (the reliability issue's "no acknowledged message
                # lost", SIGKILL included).
                journal = os.path.join(self.workdir, "journal.jsonl")
                if os.path.exists(journal):
                    os.remove(journal)
                argv += ["--journal", journal]
        env = dict(os.environ, RUST_LOG="warn")
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        wait_port(self.port, self.proc, self.kind)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cpu(self):
        return cpu_seconds(self.proc.pid)


def smtp_source(port, args):
    argv = ["smtp-source", *args, "-l", str(SIZE), "-f", "sender@bench.test",
            "-t", "rcpt@example.test", f"127.0.0.1:{port}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()[:300]}")


def loads(quick):
    n = 2_000 if quick else 20_000
    rcpts, rmsgs = (200, 20) if quick else (1_000, 100)
    return {
        "a": dict(what=f"{n:,} msgs, 1 per connection, 50 sessions",
                  runs=[["-s", "50", "-m", str(n)]], units=n, unit="msg"),
        "b": dict(what=f"{n:,} msgs, 10 per connection",
                  runs=[["-d", "-s", "50", "-m", "500"]] * (n // 500), units=n, unit="msg"),
        "c": dict(what=f"{rmsgs} msgs x {rcpts:,} RCPT",
                  runs=[["-s", "5", "-m", str(rmsgs), "-r", str(rcpts), "-N"]],
                  units=rmsgs * rcpts, unit="RCPT"),
    }


def hold_idle(port, count):
    """Opens `count` connections and reads their greetings; returns the sockets and how
    many were greeted. smtp-sink (Postfix 3.7) greets 256 at once and leaves the rest in
    the listen queue (until it is full), so the RSS they add is divided by the greeted
    ones."""
    held = []
    for _ in range(count):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break  # the listen queue is full: smtp-sink took what it takes
    greeted = 0
    for s in held:
        s.settimeout(2 if greeted else 30)
        try:
            if not s.recv(512):
                break
        except TimeoutError:
            break
        greeted += 1
    return held, greeted


def fresh_session_ms(port):
    """A whole session, EHLO to QUIT, one message: its wall time in milliseconds."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        f = s.makefile("rwb", buffering=0)

        def expect(prefix):
            while True:
                line = f.readline()
                if not line:
                    raise RuntimeError("connection closed during the fresh session")
                if line[3:4] != b"-":
                    if not line.startswith(prefix):
                        raise RuntimeError(f"fresh session: {line!r}")
                    return

        expect(b"220")
        for command, reply in [(b"EHLO bench.test", b"250"), (b"MAIL FROM:<a@bench.test>", b"250"),
                               (b"RCPT TO:<b@example.test>", b"250"), (b"DATA", b"354")]:
            f.write(command + b"\r\n")
            expect(reply)
        f.write(b"Subject: fresh\r\n\r\nhello\r\n.\r\n")
        expect(b"250")
        f.write(b"QUIT\r\n")
        expect(b"221")
    return (time.perf_counter() - started) * 1000


class AnonPeak:
    """The highest RssAnon of a process, sampled every 20 ms: the memory it holds for
    itself, without the pages of its program and libraries (file-backed, shared with
    every process that runs them), which VmHWM counts too. The kernel keeps no peak of
    it, so this one can miss a spike shorter than a sample."""

    def __init__(self, pid):
        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, status_kib(self.pid, "RssAnon"))
            except (OSError, ValueError, RuntimeError):
                return
            self.done.wait(0.02)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.peak


def one_round(kind, quick, idle, workdir):
    r = Receiver(kind, workdir)
    r.start()
    out = {}
    try:
        anon = AnonPeak(r.proc.pid)
        for name, load in loads(quick).items():
            (user0, sys0) = r.cpu()
            for args in load["runs"]:
                smtp_source(r.port, args)
            (user1, sys1) = r.cpu()
            out[name] = (user1 - user0 + sys1 - sys0) * 1e6 / load["units"]
            out[f"{name}_sys"] = (sys1 - sys0) * 1e6 / load["units"]
        time.sleep(0.5)  # the last sessions' ends journalled
        out["peak_rss"] = status_kib(r.proc.pid, "VmHWM")
        out["peak_anon"] = anon.stop()
        if kind == "mxfarm-journal":
            return out
        time.sleep(0.5)
        base = status_kib(r.proc.pid, "VmRSS")
        held, greeted = hold_idle(r.port, idle)
        time.sleep(1)
        out["idle_rss"] = (status_kib(r.proc.pid, "VmRSS") - base) / max(greeted, 1)
        out["idle_greeted"] = greeted
        if kind == "mxfarm":
            out["fresh_ms"] = statistics.median(fresh_session_ms(r.port) for _ in range(5))
        for s in held:
            s.close()
    finally:
        r.stop()
    return out


def callgrind(quick, workdir):
    """Instructions per unit of each load, the farm under callgrind (counters zeroed
    once it is ready, dumped after the load)."""
    out = {}
    for name, load in loads(quick).items():
        port = free_port()
        path = os.path.join(workdir, "scenario.toml")
        with open(path, "w") as f:
            f.write(SCENARIO.format(port=port))
        dump = os.path.join(workdir, f"callgrind.{name}")
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", FARM, "run", path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="warn"))
        try:
            wait_port(port, proc, "mxfarm under callgrind")
            subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                           capture_output=True)
            for args in load["runs"]:
                smtp_source(port, args)
            subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                           capture_output=True)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        # callgrind_control --dump writes FILE.1 (counts since the zeroing); the dump at
        # exit, FILE itself, holds only the shutdown.
        total = None
        dumped = f"{dump}.1"
        if os.path.exists(dumped):
            with open(dumped) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        total = int(line.split()[1])
        if total is None:
            raise RuntimeError(f"no callgrind dump for load ({name}) in {workdir}")
        out[name] = total / load["units"]
        print(f"  ({name}) {load['what']}: {out[name]:,.0f} instructions per {load['unit']}",
              flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one round of small loads")
    ap.add_argument("--rounds", type=int, help="rounds (default 3, 1 with --quick)")
    ap.add_argument("--idle", type=int, help="idle connections held (default 5000, 1000 with --quick)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a ratio passes its limit")
    ap.add_argument("--json", help="write the medians and ratios to this file")
    ap.add_argument("--callgrind", action="store_true",
                    help="the farm alone under callgrind: instructions per message")
    a = ap.parse_args()
    rounds = a.rounds or (1 if a.quick else 3)
    idle = a.idle or (1_000 if a.quick else 5_000)
    if not 1 <= rounds <= 20:
        sys.exit("--rounds must be 1..20")
    for tool in ("smtp-source", "smtp-sink"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            sys.exit(f"{tool} is missing: run scripts/bench-vs-smtp-sink.sh, which installs Debian's postfix package")
    if not os.access(FARM, os.X_OK):
        sys.exit(f"{FARM} is missing: cargo build --release")
    commit = subprocess.run(["git", "-C", ROOT, "log", "-1", "--format=%h"], capture_output=True,
                            text=True).stdout.strip()
    if a.callgrind:
        print(f"bench-vs-smtp-sink --callgrind: commit {commit}, user-space instructions of the farm")
        with tempfile.TemporaryDirectory() as workdir:
            counts = callgrind(a.quick, workdir)
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"commit": commit, "quick": a.quick, "instructions": counts}, f, indent=2)
        return 0
    print(f"bench-vs-smtp-sink: commit {commit}, {os.cpu_count()} cores, load "
          f"{open('/proc/loadavg').read().split()[0]}, {rounds} round(s), {idle} idle connections")
    kinds = ["smtp-sink", "mxfarm", "mxfarm-journal"]
    results = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as workdir:
        for n in range(rounds):
            order = kinds if n % 2 == 0 else kinds[::-1]
            for kind in order:
                results[kind].append(one_round(kind, a.quick, idle, workdir))
                print(f"  round {n + 1} {kind}: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in results[kind][-1].items()), flush=True)
    medians = {kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
               for kind, rs in results.items()}
    rows = [(name, f"({name}) {load['what']}: receiver CPU us/{load['unit']}", 1)
            for name, load in loads(a.quick).items()]
    rows += [("peak_rss", "peak RSS (VmHWM) after (a)-(c), KiB", 0),
             ("peak_anon", "peak anonymous RSS (RssAnon, sampled) during (a)-(c), KiB", 0),
             ("idle_rss", f"RSS per idle connection ({idle:,} opened), KiB", 1)]
    ratios, failed = {}, []
    print(f"\n| load | smtp-sink | mxfarm | mxfarm / smtp-sink | limit (--check) |")
    print("|---|---:|---:|---:|---:|")
    for key, label, digits in rows:
        sink, farm = medians["smtp-sink"][key], medians["mxfarm"][key]
        ratio = farm / sink if sink > 0 else float("inf")
        ratios[key] = ratio
        print(f"| {label} | {sink:,.{digits}f} | {farm:,.{digits}f} | {ratio:.2f} | {LIMITS[key]} |")
        if ratio > LIMITS[key]:
            failed.append(f"{key}: {ratio:.2f} > {LIMITS[key]}")
    print("\nWith --journal FILE (each 250 after its message's line is written):\n")
    print("| load | smtp-sink | mxfarm --journal | mxfarm --journal / smtp-sink | limit (--check) |")
    print("|---|---:|---:|---:|---:|")
    for key, label, digits in rows[:4]:  # the loads and the peak RSS
        sink, farm = medians["smtp-sink"][key], medians["mxfarm-journal"][key]
        ratio = farm / sink if sink > 0 else float("inf")
        ratios[f"journal_{key}"] = ratio
        limit = LIMITS[f"journal_{key}"]
        print(f"| {label} | {sink:,.{digits}f} | {farm:,.{digits}f} | {ratio:.2f} | {limit} |")
        if ratio > limit:
            failed.append(f"journal_{key}: {ratio:.2f} > {limit}")
    print("\nThe kernel's part (system time of the same runs): the farm's alone, over smtp-sink's"
          "\nwhole CPU, is the ratio the farm would reach with no user-space time at all.\n")
    print("| load | smtp-sink system / CPU | mxfarm system / CPU | mxfarm system / smtp-sink CPU |")
    print("|---|---:|---:|---:|")
    for name, load in loads(a.quick).items():
        sink, farm = medians["smtp-sink"], medians["mxfarm"]
        floor = farm[f"{name}_sys"] / sink[name] if sink[name] > 0 else float("inf")
        ratios[f"{name}_floor"] = floor
        print(f"| ({name}) us/{load['unit']} | {sink[f'{name}_sys']:.1f} / {sink[name]:.1f} | "
              f"{farm[f'{name}_sys']:.1f} / {farm[name]:.1f} | {floor:.2f} |")
    print(f"\nidle connections greeted: smtp-sink {medians['smtp-sink']['idle_greeted']:,.0f}, "
          f"mxfarm {medians['mxfarm']['idle_greeted']:,.0f} of {idle:,}")
    print(f"farm alone: a fresh whole session with {idle:,} idle connections held: "
          f"{medians['mxfarm']['fresh_ms']:.1f} ms (median of 5 per round)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"commit": commit, "rounds": rounds, "idle": idle, "quick": a.quick,
                       "medians": medians, "ratios": ratios}, f, indent=2)
    if a.check and failed:
        print("bench-vs-smtp-sink: REGRESSED: " + "; ".join(failed))
        return 1
    print("bench-vs-smtp-sink: done" + (" (every ratio within its limit)" if a.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
