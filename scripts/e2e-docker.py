#!/usr/bin/env python3
"""The repository's docker-compose.yml with a real Postfix, checked through the farm's API.

Run by scripts/e2e-docker.sh once the project is up. Two parts:

1. A golden transcript: with `smtp_randomize_addresses = no` (so that Postfix tries the
   hosts in the DNS answer's order and the story is the same on every run), one greylisted
   message and one to a gone recipient, each retried after a clock advance;
   `mxfarm ctl transcript --check` compares the farm's transcript with
   tests/e2e/compose-transcript.txt (MXFARM_E2E_UPDATE=1 rewrites it).
2. The tour, as README.md tells it, after a reset through the API: mail through the
   sender container's Postfix (Debian's package, random order among equal-preference MX
   hosts, as shipped). Checks that Postfix
   found the hosts through the farm's DNS (MX and A queries from its address), spread its
   connections over all three equal-preference hosts, was greylisted by mx1, and, after a
   clock advance through the API and `postqueue -f`, retried and delivered everything; and
   that the farm's report finds no problem with this correct sender.

Prints "ok - ..." / "not ok - ..." lines and exits 1 if any check failed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

SENDER_IP = "172.28.25.10"
HOSTS = {"mx1": "172.28.25.11", "mx2": "172.28.25.12", "mx3": "172.28.25.13"}
HOSTNAMES = {f"mx-aol{n}.mail.gm0.yahoodns.test": f"mx{n}" for n in (1, 2, 3)}
# Real MTAs take real time; every wait is bounded.
SETTLE_SECONDS = 90

failures = 0


def check(ok, what, detail=""):
    global failures
    print(("ok - " if ok else "not ok - ") + what, flush=True)
    if not ok:
        failures += 1
        if detail:
            print("  " + str(detail).replace("\n", "\n  "), flush=True)
    return ok


class Project:
    def __init__(self, args):
        self.compose = json.loads(args.compose)
        self.api = args.api.rstrip("/")
        self.token = args.token
        self.mxfarm = args.mxfarm

    def run(self, *words, stdin=None):
        done = subprocess.run(
            self.compose + list(words), input=stdin, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(words)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def sender(self, *command, stdin=None):
        return self.run("exec", "-T", "sender", *command, stdin=stdin)

    def get(self, path):
        with urllib.request.urlopen(self.api + path, timeout=10) as answer:
            return json.load(answer)

    def post(self, path, body):
        request = urllib.request.Request(
            self.api + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Mxfarm-Token": self.token},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def send(self, recipient, subject):
        message = f"From: root@sender.test\nTo: {recipient}\nSubject: {subject}\n\n{subject}\n"
        self.sender("sendmail", "-f", "root@sender.test", recipient, stdin=message)

    def advance(self, by):
        """As the tour does it: `mxfarm ctl` inside the farm's container (the image's token
        and API address from its environment)."""
        return self.run("exec", "-T", "mxfarm", "mxfarm", "ctl", "advance", by).strip()

    def postfix_queue(self):
        """`postqueue -j`: one JSON object per queued message."""
        lines = self.sender("postqueue", "-j").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def journal(self):
        events, after = [], 0
        while True:
            page = self.get(f"/api/v1/journal?after={after}&limit=10000")
            events += page["events"]
            if not page["more"]:
                return events
            after = page["next_after"]

    def deliveries(self):
        return self.get("/api/v1/deliveries")["list"]

    def settle(self, sent):
        """Waits until Postfix holds nothing in its active or incoming queue, the farm has
        seen every one of `sent` messages' recipients and no connection is open."""
        deadline = time.monotonic() + SETTLE_SECONDS
        while True:
            busy = [m for m in self.postfix_queue() if m.get("queue_name") != "deferred"]
            seen = {d["recipient"] for d in self.deliveries() if d["attempts"]}
            open_connections = sum(h["open_connections"] for h in self.get("/api/v1/hosts")["hosts"])
            if not busy and set(sent) <= seen and open_connections == 0:
                return True
            if time.monotonic() > deadline:
                check(False, "Postfix and the farm settle", f"queue {busy}, seen {sorted(seen)}")
                return False
            time.sleep(0.5)


def outcome(delivery):
    return delivery["attempts"][-1]["outcome"] if delivery["attempts"] else None


def code(attempt):
    """The reply's code; None for an attempt that got none (a dropped connection)."""
    return (attempt.get("reply") or {}).get("code")


def greylisted_attempts(deliveries):
    return [a for d in deliveries for a in d["attempts"] if a["host"] == "mx1" and code(a) == 451]


def hosts_reached(project):
    return {e["host"] for e in project.journal() if e["event"] == "connection-opened"}


def wait_for_retries(project, recipients, since_ms):
    """After `postqueue -f`, which only nudges Postfix's queue manager: waits until each
    of `recipients` has an attempt since `since_ms` that was not deferred, then settles."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while time.monotonic() < deadline:
        done = {
            d["recipient"]
            for d in project.deliveries()
            if any(a["start_ms"] >= since_ms - 1 for a in d["attempts"]) and outcome(d) != "deferred"
        }
        if set(recipients) <= done:
            return project.settle(recipients)
        time.sleep(0.5)
    return check(False, f"every one of {sorted(recipients)} was retried", sorted(done))


def tour(project):
    sent, batch = [], 0
    # Postfix picks the first host at random: a batch may miss mx1's greylisting by chance
    # (each message does with odds 1/2, and ends deferred with odds 1/3), or a host. More
    # batches until all were seen, at most four.
    while batch < 4:
        batch += 1
        for n in range(6):
            recipient = f"user{len(sent) + 1}@aol.test"
            project.send(recipient, f"tour {len(sent) + 1}")
            sent.append(recipient)
        if not project.settle(sent):
            return
        deliveries = project.deliveries()
        deferred = [d for d in deliveries if outcome(d) == "deferred"]
        greylisted = greylisted_attempts(deliveries)
        if deferred and greylisted and hosts_reached(project) == set(HOSTS):
            break
    check(True, f"the tour: {len(sent)} messages through Postfix reached the farm")

    events = project.journal()
    queries = [e for e in events if e["event"] == "dns-query"]
    mx = [q for q in queries if q["name"] == "aol.test" and q["type"] == "MX"]
    check(
        bool(mx) and all(q["client"].startswith(SENDER_IP + ":") and q["answer"] == "records" for q in mx),
        f"Postfix looked aol.test's MX up through the farm's DNS ({len(mx)} queries from {SENDER_IP})",
        mx[:2],
    )
    a_names = {q["name"] for q in queries if q["type"] == "A" and q["answer"] == "records"}
    check(set(HOSTNAMES) <= a_names, "and each MX host's address", sorted(a_names))
    opened = [e for e in events if e["event"] == "connection-opened"]
    check(
        all(e["client"].startswith(SENDER_IP + ":") for e in opened),
        f"every connection came from the sender container ({len(opened)})",
    )
    by_host = {host: sum(1 for e in opened if e["host"] == host) for host in HOSTS}
    check(all(by_host.values()), f"Postfix spread its connections over the three equal-preference hosts {by_host}")
    # deferred and greylisted: as the last batch left them (nothing ran since).
    check(bool(greylisted), f"mx1 greylisted Postfix ({len(greylisted)} times); {len(deferred)} messages wait in its queue")
    queued = [m["queue_id"] for m in project.postfix_queue()]
    check(len(queued) == len(deferred), f"Postfix's deferred queue holds those {len(deferred)}", queued)

    said = project.advance("6m")
    check(said.startswith("advanced by 6m"), f"`mxfarm ctl advance 6m` in the farm's container: {said}")
    advanced_at = project.get("/api/v1/clock")["now_ms"]
    project.sender("postqueue", "-f")
    if not wait_for_retries(project, [d["recipient"] for d in deferred], advanced_at):
        return
    deliveries = project.deliveries()
    undelivered = [d["recipient"] for d in deliveries if outcome(d) != "delivered"]
    check(not undelivered, "after the advance and `postqueue -f`, every message is delivered", undelivered)
    retried = {d["recipient"] for d in deliveries if any(a["start_ms"] >= advanced_at - 1 for a in d["attempts"])}
    waited = {d["recipient"] for d in deferred}
    check(waited <= retried, f"each of the {len(waited)} deferred messages was retried after the clock advance")
    check(not project.postfix_queue(), "Postfix's queue is empty")
    with urllib.request.urlopen(project.api + "/api/v1/report?format=text", timeout=10) as answer:
        problems = answer.headers.get("X-Mxfarm-Problems")
        report = answer.read().decode()
    check(problems == "0", "the report finds no problem with Postfix", report)


def golden(project, expected):
    project.sender("postconf", "-e", "smtp_randomize_addresses = no")
    project.sender("postfix", "reload")
    for recipient, then in [("bob@aol.test", "delivered"), ("gone@aol.test", "rejected")]:
        project.send(recipient, f"golden {recipient}")
        if not project.settle([recipient]):
            return
        project.advance("6m")
        advanced_at = project.get("/api/v1/clock")["now_ms"]
        project.sender("postqueue", "-f")
        wait_for_retries(project, [recipient], advanced_at)
        mine = [d for d in project.deliveries() if d["recipient"] == recipient]
        check(bool(mine) and outcome(mine[0]) == then, f"{recipient}: {then} after the advance")
    command = [project.mxfarm, "ctl", "--api", project.api, "transcript", "--granularity", "none"]
    if os.environ.get("MXFARM_E2E_UPDATE") == "1":
        text = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        with open(expected, "w") as file:
            file.write(text)
        print(f"# wrote {expected}")
    checked = subprocess.run(command + ["--check", expected], capture_output=True, text=True)
    check(checked.returncode == 0, f"`mxfarm ctl transcript --check {expected}` passes", checked.stderr + checked.stdout)
    # Back to Postfix as shipped for the tour, on a farm that forgot this part.
    project.sender("postconf", "-e", "smtp_randomize_addresses = yes")
    project.sender("postfix", "reload")
    reset = project.post("/api/v1/reset", {"policy": True, "journal": True, "messages": True})
    check("reset" in reset, f"reset the farm through the API for the tour: {json.dumps(reset)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compose", required=True, help="the compose command, as a JSON list")
    parser.add_argument("--api", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--mxfarm", required=True, help="the host's mxfarm binary, for ctl")
    parser.add_argument("--golden", required=True)
    args = parser.parse_args()
    project = Project(args)
    try:
        # The golden part first, on a fresh farm: connection numbers (which a reset keeps
        # counting) then start at 1 on every run, whatever the tour's random picks were.
        golden(project, args.golden)
        tour(project)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        check(False, "the checks ran to their end", error)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
