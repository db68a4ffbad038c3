#!/usr/bin/env python3
"""Soak and abuse checks of the mxfarm release binary, on loopback only.

  scripts/soak.py            the long run (about 1.5 minutes): the figures in README's limits
  scripts/soak.py --quick    a short run for CI (about half a minute after the build)
  scripts/soak.py --only slowloris,flood   some checks only
  scripts/soak.py --bin PATH  this binary instead of building target/release/mxfarm

Each check starts its own farm (`mxfarm run`, release build) on 127.0.0.1 and attacks it:
  slowloris  clients that send a byte every 2 s, in a command and in DATA, are cut off by
             the farm's whole-command and DATA bounds, and a normal client from another
             network is served all the while
  idle       10,000 idle connections at once (2,000 with --quick): all are greeted, a
             normal client is still served, and the RSS they cost per connection
  flood      pipelined messages on a few connections: every message acknowledged with
             250 is in the journal file, and the file has no gap
  sigkill    SIGKILL during load: every `queued as N` a client saw is a message-accepted
             event of the journal file
  api        the control API (`run --api`) under 500 (1,000 long) half-sent HTTP requests:
             the farm holds at most its bound of them (the rest wait in the kernel), SMTP
             is served all the while, the API answers once they go, and event streams
             stop at their bound with 503
  disk-full  the journal on a full tmpfs (needs root; skipped otherwise): 451 4.3.0, not
             250, once the journal cannot be written; every 250 is in the file, which
             still reads, and the error is logged once
Each prints PASS, FAIL or SKIP with its figures; the exit status is 0 only if none
failed (a skipped check says why it could not run here). Every load loop is bounded in time and count, and every address is a loopback
address (127.0.0.0/8), several of them so that per-address limits meet real spreads.
MXFARM_SOAK_KEEP=1 keeps the work directory (scenarios, journals, the farm's output).
"""

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NORMAL_CLIENT = "127.99.0.2"  # the well-behaved client, in a network apart from the attackers
BODY = b"Subject: soak\r\nMessage-ID: <%d.%d@soak.test>\r\n\r\nHello from the soak.\r\n.\r\n"
QUEUED = re.compile(rb"^250 .*queued as (\d+)")

# How big each check is: (quick, long).
SIZES = {
    "slowloris_slots": (120, 120),
    "slowloris_seconds": (12, 40),
    "idle_connections": (2000, 10000),
    "flood_clients": (8, 8),
    "flood_messages": (500, 6250),  # per client; 8 x 6,250 = 50,000 in the long run
    "sigkill_clients": (200, 200),
    "sigkill_seconds": (5, 15),
    "disk_full_messages": (2000, 2000),
    "api_half_requests": (500, 1000),
}


class CheckFailed(Exception):
    """A check could not run to its end (the farm did not start, a client hung)."""


# --- the farm -----------------------------------------------------------------------------


class Farm:
    """One `mxfarm run` of a scenario, with its stdout and stderr in files."""

    def __init__(self, binary, work, name, scenario, journal=None, log="warn", api_port=None):
        self.binary, self.work, self.name = binary, work, name
        self.api_port = api_port
        self.scenario_path = os.path.join(work, f"{name}.toml")
        with open(self.scenario_path, "w") as f:
            f.write(scenario)
        self.journal = journal
        self.log = log
        self.proc = None
        self.ports = {}

    def start(self, timeout=20):
        args = [self.binary, "run", self.scenario_path]
        if self.journal:
            args += ["--journal", self.journal]
        if self.api_port:
            args += ["--api", f"127.0.0.1:{self.api_port}"]
        self.stdout_path = os.path.join(self.work, f"{self.name}.stdout")
        self.stderr_path = os.path.join(self.work, f"{self.name}.stderr")
        env = dict(os.environ, RUST_LOG=self.log)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.stdout()
            if "Ready." in text:
                for host, port in re.findall(r"^\s+host (\S+)\s+127\.0\.0\.1:(\d+)", text, re.M):
                    self.ports[host] = int(port)
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise CheckFailed(f"the farm did not start: {self.stderr()[-500:]}")

    def stdout(self):
        with open(self.stdout_path, errors="replace") as f:
            return f.read()

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    @property
    def port(self):
        return self.ports["mx1"]

    def status_kib(self, field):
        """VmRSS or VmHWM of the farm, in KiB, from /proc."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise CheckFailed(f"no {field} in /proc/{self.proc.pid}/status")

    def stop(self, timeout=60):
        """SIGTERM, as a user stops it; True if it exited within `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill()
            return False

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def scenario(name, limits="", extra=""):
    return f"""name = "soak-{name}"
[[host]]
name = "mx1"
listen = "127.0.0.1:0"
hostname = "mx1.soak.test"
[host.limits]
{limits}
{extra}
"""


def read_journal(path):
    """The events of a journal file, its sequence gaps, and whether the last line is
    torn (cut short without its newline, as a killed farm may leave it)."""
    events, torn = [], False
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(json.loads(line))
        except ValueError:
            if i == len(lines) - 1:
                torn = True  # the last line, without a newline after it
            else:
                raise CheckFailed(f"{path}: line {i + 1} is not JSON")
    seqs = [e.get("seq") for e in events]
    gaps = sum(1 for e in events if "seq" not in e or e.get("event") in ("writer-lagged", "events-dropped"))
    expected = 1
    for seq in seqs:
        if isinstance(seq, int):
            gaps += max(0, seq - expected)
            expected = seq + 1
    return events, gaps, torn


def accepted_ids(events):
    return {e["id"] for e in events if e.get("event") == "message-accepted"}


# --- SMTP clients -------------------------------------------------------------------------


async def reply(reader, timeout=30):
    """One reply (all its lines): (code, the last line's bytes); (0, b"") at EOF."""
    last = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return 0, last
        last = line.rstrip(b"\r\n")
        if len(last) < 4 or last[3:4] != b"-":
            try:
                return int(last[:3]), last
            except ValueError:
                return -1, last


async def connect(port, source="127.0.0.1", timeout=10):
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0), limit=1 << 20), timeout
    )


def close(writer):
    try:
        writer.close()
    except Exception:
        pass


async def one_message(port, source=NORMAL_CLIENT, n=0):
    """A whole session with one message; the `queued as` id, or raises with the reply
    that was not the one expected."""
    reader, writer = await connect(port, source)
    try:
        code, line = await reply(reader)
        if code != 220:
            raise CheckFailed(f"greeting {line.decode(errors='replace')!r}")
        steps = [
            (b"EHLO normal.soak.test\r\n", 250),
            (b"MAIL FROM:<normal@soak.test>\r\n", 250),
            (b"RCPT TO:<bob@example.test>\r\n", 250),
            (b"DATA\r\n", 354),
            (BODY % (os.getpid(), n), 250),
        ]
        for command, expected in steps:
            writer.write(command)
            await writer.drain()
            code, line = await reply(reader)
            if code != expected:
                raise CheckFailed(f"{command[:10]!r} got {line.decode(errors='replace')!r}")
        queued = QUEUED.match(line)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return int(queued.group(1)) if queued else None
    finally:
        close(writer)


# --- the checks ---------------------------------------------------------------------------


class Results:
    def __init__(self):
        self.lines = []

    def add(self, status, name, figures):
        self.lines.append((status, name))
        print(f"{status:<4}  {name:<36} {figures}", flush=True)

    def check(self, ok, name, figures):
        self.add("PASS" if ok else "FAIL", name, figures)

    def failed(self):
        return sum(1 for status, _ in self.lines if status == "FAIL")


async def slowloris(binary, work, size, results):
    """Slow clients from 127.0.0.1, one byte every 2 s, half in a command and half in
    DATA, reconnecting whenever they are cut off, more of them than the host takes at
    once; a normal client from 127.99.0.2 sends a message every half second."""
    command_timeout, data_timeout, interval = 5, 8, 2.0
    farm = Farm(
        binary,
        work,
        "slowloris",
        scenario("slowloris", f'command-timeout = "{command_timeout}s"\ndata-timeout = "{data_timeout}s"'),
    ).start()
    slots, seconds = size("slowloris_slots"), size("slowloris_seconds")
    stats = {"greeted": 0, "refused": 0, "cut": {"command": [], "data": []}, "uncut": 0, "errors": 0}
    # How long a slow connection may last from its first slow byte: its timeout, the
    # byte interval (the farm sees the byte late) and some slack for a busy machine.
    bounds = {"command": command_timeout + interval + 1.5, "data": data_timeout + interval + 1.5}
    # The attack goes on (slow clients reconnect, the normal client sends) until then;
    # a connection opened before it is followed until it is cut off or outlives its bound.
    stop_at = time.monotonic() + seconds

    async def slot(i):
        phase = "data" if i % 2 else "command"
        while time.monotonic() < stop_at:
            try:
                reader, writer = await connect(farm.port)
                code, _ = await reply(reader, 10)
            except (OSError, asyncio.TimeoutError):
                stats["errors"] += 1
                await asyncio.sleep(1)
                continue
            if code != 220:
                stats["refused"] += 1
                close(writer)
                await asyncio.sleep(1)
                continue
            stats["greeted"] += 1
            started = time.monotonic()
            try:
                if phase == "data":
                    writer.write(b"EHLO slow.soak.test\r\nMAIL FROM:<slow@soak.test>\r\nRCPT TO:<v@example.test>\r\nDATA\r\n")
                    for _ in range(4):
                        code, _ = await reply(reader, 10)
                    if code != 354:
                        raise CheckFailed(f"DATA got {code}")
                    payload = b"Subject: slow\r\n\r\n" + b"x" * 200
                else:
                    payload = b"EHLO " + b"x" * 200
                started = time.monotonic()  # from the first slow byte
                cut = False
                for byte in payload:
                    if time.monotonic() - started > bounds[phase] + interval:
                        break
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        data = await asyncio.wait_for(reader.read(4096), interval)
                    except asyncio.TimeoutError:
                        continue
                    if not data or b"421" in data:
                        cut = True
                        break
                if cut:
                    stats["cut"][phase].append(time.monotonic() - started)
                else:
                    stats["uncut"] += 1
            except (OSError, asyncio.TimeoutError, CheckFailed):
                # A reset or a close while writing: the farm cut it off.
                stats["cut"][phase].append(time.monotonic() - started)
            finally:
                close(writer)

    normal = {"tries": 0, "ok": 0, "first_failure": None}

    async def normal_client():
        await asyncio.sleep(1.0)
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            normal["tries"] += 1
            try:
                if await asyncio.wait_for(one_message(farm.port, NORMAL_CLIENT, n), 10) is not None:
                    normal["ok"] += 1
            except (OSError, asyncio.TimeoutError, CheckFailed) as e:
                normal["first_failure"] = normal["first_failure"] or str(e) or type(e).__name__
            await asyncio.sleep(0.5)

    try:
        await asyncio.gather(normal_client(), *(slot(i) for i in range(slots)))
    finally:
        farm.kill()
    cut_cmd, cut_data = stats["cut"]["command"], stats["cut"]["data"]
    longest_cmd = max(cut_cmd, default=0)
    longest_data = max(cut_data, default=0)
    bound_cmd, bound_data = bounds["command"], bounds["data"]
    ok = stats["uncut"] == 0 and longest_cmd <= bound_cmd and longest_data <= bound_data and stats["greeted"] > 0
    results.check(
        ok,
        "slowloris: slow clients cut off",
        f"{stats['greeted']} greeted, {stats['refused']} refused at the greeting, "
        f"{stats['uncut']} not cut off within their bound; longest hold in a command "
        f"{longest_cmd:.1f}s (bound {bound_cmd:.1f}s), in DATA {longest_data:.1f}s (bound {bound_data:.1f}s)",
    )
    results.check(
        normal["tries"] > 0 and normal["ok"] == normal["tries"],
        "slowloris: normal client served",
        f"{normal['ok']} of {normal['tries']} messages from {NORMAL_CLIENT} delivered while {slots} "
        f"slow clients from 127.0.0.1 attacked"
        + (f"; first failure: {normal['first_failure']}" if normal["first_failure"] else ""),
    )


def raise_open_files(needed):
    """`ulimit -n`: raise this process's open-file limit (the farm inherits it) to
    `needed`; returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(needed, soft), max(needed, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def idle(binary, work, size, results):
    """N idle connections at once, 40 from each of many loopback addresses (each in a /24
    of its own, so that a per-address limit of 40 or more lets them all in)."""
    n = size("idle_connections")
    limit = raise_open_files(n + 2000)
    if limit < n + 200:
        results.add("SKIP", "idle: connections at once", f"the open-file limit is {limit}; {n} connections need {n + 200}")
        return
    farm = Farm(binary, work, "idle", scenario("idle", f"max-connections = {n + 100}")).start()
    conns = []
    try:
        await one_message(farm.port)  # warm up: threads, buffers, the allocator
        base = farm.status_kib("VmRSS")
        sources = [f"127.{20 + j // 250}.{j % 250}.1" for j in range(n // 40 + 1)]
        started = time.monotonic()
        greeted = failed = 0

        async def open_one(k):
            nonlocal greeted, failed
            try:
                reader, writer = await connect(farm.port, sources[k // 40], 30)
                code, _ = await reply(reader, 30)
            except (OSError, asyncio.TimeoutError):
                failed += 1
                return
            conns.append(writer)
            if code == 220:
                greeted += 1
            else:
                failed += 1

        for batch in range(0, n, 500):
            await asyncio.gather(*(open_one(k) for k in range(batch, min(n, batch + 500))))
        opened_in = time.monotonic() - started
        await asyncio.sleep(1)
        rss = farm.status_kib("VmRSS")
        per_conn = (rss - base) / max(greeted, 1)
        failed_normal = "its 250 had no `queued as`"
        try:
            served = await asyncio.wait_for(one_message(farm.port), 20) is not None
        except (OSError, asyncio.TimeoutError, CheckFailed) as e:
            served = False
            failed_normal = str(e) or type(e).__name__
        results.check(
            greeted == n and served,
            "idle: connections at once",
            f"{greeted} of {n} greeted in {opened_in:.1f}s ({failed} failed; open-file limit {limit}); "
            f"a normal client {'was served' if served else 'was not served: ' + failed_normal}",
        )
        results.check(
            per_conn <= 64,
            "idle: memory per idle connection",
            f"{per_conn:.1f} KiB RSS each (farm {base} KiB before, {rss} KiB with {greeted} open; bound 64 KiB)",
        )
    finally:
        for writer in conns:
            close(writer)
        farm.kill()


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


async def http_get(port, path, timeout=10):
    """A GET of `path`; the status code, or 0 when none came."""
    reader, writer = await connect(port, NORMAL_CLIENT, timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.split()
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    finally:
        close(writer)


async def api(binary, work, size, results):
    """Half-sent HTTP requests held open on the API (a slowloris of HTTP), from many
    loopback addresses; meanwhile a normal SMTP client sends messages. Then event streams
    beyond their bound."""
    n = size("api_half_requests")
    limit = raise_open_files(n + 2000)
    if limit < n + 500:
        results.add("SKIP", "api: half-sent requests", f"the open-file limit is {limit}; {n} connections need {n + 500}")
        return
    port = free_port()
    farm = Farm(binary, work, "api", scenario("api"), api_port=port).start()
    held = []
    try:
        await one_message(farm.port)
        before = open_fds(farm.proc.pid)

        async def hold(k):
            try:
                reader, writer = await connect(port, f"127.30.{k // 250}.{k % 250 + 1}", 5)
                writer.write(b"GET /api/v1/journal HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                await writer.drain()
                held.append(writer)
            except (OSError, asyncio.TimeoutError):
                pass

        for batch in range(0, n, 250):
            await asyncio.gather(*(hold(k) for k in range(batch, min(n, batch + 250))))
        await asyncio.sleep(1)
        during = open_fds(farm.proc.pid)
        served = 0
        for m in range(5):
            try:
                if await asyncio.wait_for(one_message(farm.port, NORMAL_CLIENT, m), 10) is not None:
                    served += 1
            except (OSError, asyncio.TimeoutError, CheckFailed):
                pass
        bound = 256
        results.check(
            during - before <= bound + 16 and served == 5,
            "api: half-sent requests",
            f"{len(held)} held open; the farm's open files went from {before} to {during} "
            f"(bound {bound} API connections); {served} of 5 SMTP messages delivered meanwhile",
        )
        for writer in held:
            close(writer)
        held.clear()
        status = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and status != 200:
            try:
                status = await http_get(port, "/readyz")
            except (OSError, asyncio.TimeoutError):
                status = 0
            if status != 200:
                await asyncio.sleep(0.2)
        results.check(status == 200, "api: answers once they go", f"GET /readyz: {status or 'no answer'}")

        streams, refused = [], 0
        for k in range(80):
            reader, writer = await connect(port, NORMAL_CLIENT)
            writer.write(b"GET /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 10)
            if b" 200 " in line:
                streams.append(writer)
            else:
                refused += b" 503 " in line
                close(writer)
        results.check(
            len(streams) == 64 and refused == 16,
            "api: event streams bounded",
            f"{len(streams)} streams open, {refused} refused with 503 (bound 64)",
        )
        for writer in streams:
            close(writer)
    finally:
        for writer in held:
            close(writer)
        farm.kill()


async def pipelined(port, source, c, acked, problems, batch=20, messages=None, until=None):
    """One connection that pipelines messages `batch` at a time (MAIL, RCPT, DATA and the
    content in one write), `messages` in all or until `until` (monotonic time) or until
    the farm goes; appends each `queued as N` to `acked`, and what went wrong to
    `problems` unless the farm went away (`until` given: that is the point)."""
    try:
        reader, writer = await connect(port, source)
    except OSError as e:
        problems.append(f"connect: {e}")
        return
    sent = 0
    try:
        code, line = await reply(reader)
        if code != 220:
            problems.append(f"greeting: {line.decode(errors='replace') or 'EOF'}")
            return
        writer.write(b"EHLO pipe%d.soak.test\r\n" % c)
        await reply(reader)
        while (messages is None or sent < messages) and (until is None or time.monotonic() < until):
            count = batch if messages is None else min(batch, messages - sent)
            writer.write(b"".join(
                b"MAIL FROM:<pipe%d@soak.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n" % c
                + BODY % (c, sent + k) for k in range(count)))
            await writer.drain()
            for _ in range(count):
                for expected in (250, 250, 354, 250):
                    code, line = await reply(reader)
                    if code != expected:
                        if until is None or code != 0:
                            problems.append(line.decode(errors="replace") or "EOF")
                        return
                queued = QUEUED.match(line)
                if queued:
                    acked.append(int(queued.group(1)))
            sent += count
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await reply(reader)
    except (OSError, asyncio.TimeoutError) as e:
        if until is None:
            problems.append(str(e) or type(e).__name__)
    finally:
        close(writer)


# A small in-memory journal (the README allows down to 16): what the file gets must not
# depend on how far behind the writer may fall before the journal drops events.
SMALL_JOURNAL = "[journal]\nmax-events = 1000"


async def flood(binary, work, size, results):
    """Clients that pipeline messages 20 at a time on one connection each; then a clean
    SIGTERM, and the journal file must hold every message acknowledged with 250."""
    clients, per_client, batch = size("flood_clients"), size("flood_messages"), 20
    journal = os.path.join(work, "flood.jsonl")
    farm = Farm(binary, work, "flood", scenario("flood", extra=SMALL_JOURNAL), journal).start()
    acked, problems = [], []
    started = time.monotonic()
    try:
        await asyncio.gather(*(pipelined(farm.port, "127.0.0.1", c, acked, problems, batch, per_client)
                               for c in range(clients)))
        took = time.monotonic() - started
        hwm = farm.status_kib("VmHWM")
    finally:
        stopped = farm.stop()
    events, gaps, torn = read_journal(journal)
    missing = set(acked) - accepted_ids(events)
    total = clients * per_client
    results.check(
        not missing and len(acked) == total and not problems and stopped,
        "flood: every 250 in the journal",
        f"{len(acked)} of {total} acknowledged ({clients} clients x {per_client}, {batch} pipelined), "
        f"{len(acked) / took:.0f}/s, {len(missing)} missing from the file; farm peak RSS {hwm} KiB"
        + (f"; clients: {problems[0]}" if problems else "")
        + ("" if stopped else "; the farm did not exit on SIGTERM"),
    )
    results.check(
        gaps == 0 and not torn,
        "flood: journal file without a gap",
        f"{len(events)} events, {gaps} missing by their sequence numbers" + (", last line torn" if torn else ""),
    )


async def sigkill(binary, work, size, results):
    """Clients pipeline messages from many addresses; the farm is killed with SIGKILL
    under that load; every `queued as N` a client saw must be in the journal file."""
    clients, seconds = size("sigkill_clients"), size("sigkill_seconds")
    journal = os.path.join(work, "sigkill.jsonl")
    farm = Farm(binary, work, "sigkill", scenario("sigkill", f"max-connections = {clients + 100}", SMALL_JOURNAL), journal).start()
    acked, problems = [], []
    until = time.monotonic() + seconds + 10  # a bound, should the kill not end them

    async def killer():
        await asyncio.sleep(seconds)
        farm.proc.kill()

    try:
        await asyncio.gather(killer(), *(
            pipelined(farm.port, f"127.0.{1 + c // 40}.{1 + c % 40}", c, acked, problems, 5, until=until)
            for c in range(clients)))
    finally:
        farm.kill()
    events, gaps, torn = read_journal(journal)
    journalled = accepted_ids(events)
    missing = set(acked) - journalled
    results.check(
        acked and not missing and not problems,
        "sigkill: every 250 in the journal",
        f"{len(acked)} acknowledged by {clients} clients in {seconds}s before SIGKILL, "
        f"{len(journalled)} in the file, {len(missing)} acknowledged but missing"
        + (", last line torn" if torn else "") + (f"; clients: {problems[0]}" if problems else ""),
    )


async def full_disk_message(state, port, n):
    """One message on the connection in `state` (opened, and reopened after a close):
    its `queued as` id, or the first reply that was not the positive one (b"EOF" for a
    connection closed without a reply)."""
    if state.get("writer") is None:
        reader, writer = await connect(port)
        code, line = await reply(reader)
        if code != 220:
            close(writer)
            return None, line or b"EOF"
        writer.write(b"EHLO full.soak.test\r\n")
        await reply(reader)
        state.update(reader=reader, writer=writer)
    reader, writer = state["reader"], state["writer"]
    writer.write(b"MAIL FROM:<full@soak.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n")
    await writer.drain()
    refusal = None
    for expected in (250, 250, 354):
        code, line = await reply(reader)
        if code != expected and refusal is None:
            refusal = (code, line)
    if refusal is None:
        writer.write(BODY % (0, n))
        await writer.drain()
        code, line = await reply(reader)
        queued = QUEUED.match(line)
        if queued:
            return int(queued.group(1)), line
        refusal = (code, line)
    if refusal[0] in (0, 421):
        close(writer)
        state["writer"] = None
    return None, refusal[1] or b"EOF"


async def disk_full(binary, work, size, results):
    """The journal on a 128 KiB tmpfs: messages until the file cannot grow; then the farm
    must answer 451 4.3.0 (a 4xx in any case, never a 5xx: a full disk passes), and every
    250 it gave must be in the file."""
    names = ["disk-full: 451 4.3.0, not 250", "disk-full: every 250 in the journal",
             "disk-full: the journal still reads", "disk-full: the error logged once"]
    if os.geteuid() != 0:
        for name in names:
            results.add("SKIP", name, "needs root to mount a small tmpfs (CI runs as root)")
        return
    mount = os.path.join(work, "full")
    os.mkdir(mount)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", mount], capture_output=True, text=True)
    if done.returncode != 0:
        for name in names:
            results.add("SKIP", name, f"cannot mount a tmpfs: {done.stderr.strip()}")
        return
    try:
        journal = os.path.join(mount, "journal.jsonl")
        farm = Farm(binary, work, "disk-full", scenario("disk-full"), journal).start()
        acked, refusals, state = [], [], {}
        try:
            for n in range(size("disk_full_messages")):
                queued, line = await full_disk_message(state, farm.port, n)
                if queued is None:
                    refusals.append((n, line))
                    # Enough seen: a run of refusals once the disk is full.
                    if len(refusals) >= 20 and refusals[-20][0] == n - 19:
                        break
                else:
                    acked.append(queued)
        finally:
            if state.get("writer") is not None:
                close(state["writer"])
            farm.stop()
        attempts = len(acked) + len(refusals)
        journal_refusals = sum(1 for _, line in refusals if line.startswith(b"451 4.3.0"))
        other = [line for _, line in refusals if not line.startswith(b"4")]
        results.check(
            journal_refusals > 0 and not other,
            names[0],
            f"{len(acked)} of {attempts} messages got 250 on a 128 KiB disk, {journal_refusals} got 451 4.3.0, "
            f"{len(refusals) - journal_refusals} another refusal"
            + (f" (the first: {refusals[0][1].decode(errors='replace')!r})" if refusals else ""),
        )
        try:
            events, _, torn = read_journal(journal)
            missing = set(acked) - accepted_ids(events)
            results.check(not missing, names[1],
                          f"{len(acked)} acknowledged, {len(missing)} missing from the file"
                          + (" (its last line torn)" if torn else ""))
        except CheckFailed as e:
            results.check(False, names[1], str(e))
        shown = subprocess.run([binary, "transcript", journal], capture_output=True, text=True)
        results.check(shown.returncode == 0, names[2],
                      f"`mxfarm transcript` on the file exits with {shown.returncode}"
                      + (f": {shown.stderr.strip().splitlines()[0]}" if shown.returncode else ""))
        errors = [line for line in farm.stderr().splitlines() if "ERROR" in line]
        results.check(
            1 <= len(errors) <= 3,
            names[3],
            f"{len(errors)} ERROR lines on stderr for {len(refusals)} refused messages"
            + (f"; the first: {errors[0].split('ERROR', 1)[1].strip()[:70]}" if errors else ""),
        )
    finally:
        subprocess.run(["umount", mount], capture_output=True)


CHECKS = {
    "slowloris": slowloris,
    "idle": idle,
    "flood": flood,
    "sigkill": sigkill,
    "api": api,
    "disk-full": disk_full,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short run, for CI")
    parser.add_argument("--only", help="comma-separated checks: " + ",".join(CHECKS))
    parser.add_argument("--bin", help="the mxfarm binary (default: build target/release/mxfarm)")
    args = parser.parse_args()
    only = args.only.split(",") if args.only else list(CHECKS)
    unknown = [name for name in only if name not in CHECKS]
    if unknown:
        parser.error(f"unknown check {', '.join(unknown)}; the checks are {', '.join(CHECKS)}")
    binary = args.bin
    if binary is None:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        binary = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "mxfarm")
    pick = 0 if args.quick else 1

    def size(key):
        return SIZES[key][pick]

    print(f"soak ({'quick' if args.quick else 'long'}): {binary}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    results = Results()
    work = tempfile.mkdtemp(prefix="mxfarm-soak-")
    started = time.monotonic()
    try:
        for name in only:
            try:
                asyncio.run(CHECKS[name](binary, work, size, results))
            except Exception as e:  # a check that could not run is a failed check
                results.add("FAIL", name, f"could not run: {type(e).__name__}: {e}")
    finally:
        if os.environ.get("MXFARM_SOAK_KEEP"):
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    failed = results.failed()
    skipped = sum(1 for status, _ in results.lines if status == "SKIP")
    print(f"soak: {len(results.lines) - failed - skipped} passed, {failed} failed, {skipped} skipped "
          f"in {time.monotonic() - started:.0f}s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
