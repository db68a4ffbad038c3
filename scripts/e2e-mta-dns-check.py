#!/usr/bin/env python3
"""Checks Postfix's own log against the farm's journal when Postfix found the farm through
the farm's DNS server (scripts/e2e-mta.sh, fixture tests/e2e/dns-mta.toml).

    e2e-mta-dns-check.py POSTFIX-LOG MANIFEST JOURNAL [FIXTURE]

MANIFEST has one injected message a line, tab-separated: the scenario, the Message-ID,
the envelope sender and the recipients. The messages are told apart by their tags (the
Message-ID up to its first dot): dnsfail (dnsfail.test, whose MX SERVFAILs for the first
20 s), failoverN (sent while aol.test's two preference-10 hosts greet with 421) and
spreadN (sent after that).

Prints one `ok   ...` or `FAIL ...` line per check (scripts/e2e-mta.sh counts them), then
Postfix's log lines for each message. Exits with 1 only if it cannot run.
"""

import json
import re
import sys
import tomllib
from collections import Counter, defaultdict

# The fixture's windows, in farm milliseconds: mx1 and mx2 greet with 421 before
# DOWN_UNTIL; dnsfail.test's MX lookup SERVFAILs before SERVFAIL_UNTIL.
DOWN_UNTIL = 15_000
SERVFAIL_UNTIL = 20_000
NAME_SERVICE_ERROR = (
    "Host or domain name not found. Name service error for name=dnsfail.test type=MX: "
    "Host not found, try again"
)

POSTFIX_LINE = re.compile(r"^\w{3} [ \d]\d [\d:]{8} \S+ postfix/(?P<prog>\S+)\[\d+\]: (?P<text>.*)$")
POSTFIX_QID = re.compile(r"^(?P<qid>[0-9A-F]{6,}): (?P<text>.*)$")
POSTFIX_STATUS = re.compile(
    r"^to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]+), .*status=(?P<status>\w+) \((?P<why>.*)\)$"
)

results = []


def check(ok, what, detail=""):
    results.append(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else f": {detail}"))


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    log_path, manifest_path, journal_path = sys.argv[1:4]
    fixture_path = sys.argv[4] if len(sys.argv) == 5 else "tests/e2e/dns-mta.toml"
    with open(fixture_path, "rb") as f:
        fixture = tomllib.load(f)
    # host name -> (its hostname, its listen address): what the farm's DNS serves.
    hosts = {h["name"]: (h["hostname"], h["listen"]) for h in fixture["host"]}
    relay_of = {name: f"{hostname}[{listen.rsplit(':', 1)[0]}]:{listen.rsplit(':', 1)[1]}" for name, (hostname, listen) in hosts.items()}

    messages = {}  # tag -> Message-ID
    with open(manifest_path) as f:
        for line in f:
            _, mid, _, _ = line.rstrip("\n").split("\t")
            messages[mid.split(".", 1)[0]] = mid
    tags = {mid: tag for tag, mid in messages.items()}

    # Postfix: each message's status lines, in order.
    by_qid, statuses, lines = {}, defaultdict(list), defaultdict(list)
    with open(log_path, errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            line = POSTFIX_LINE.match(raw)
            qid_line = line and POSTFIX_QID.match(line["text"])
            if not qid_line:
                continue
            qid, text = qid_line["qid"], qid_line["text"]
            if line["prog"] == "cleanup" and text.startswith("message-id="):
                tag = tags.get(text[len("message-id="):].strip("<>"))
                if tag:
                    by_qid[qid] = tag
            tag = by_qid.get(qid)
            if not tag:
                continue
            lines[tag].append(raw)
            status = POSTFIX_STATUS.match(text)
            if line["prog"] == "smtp" and status:
                statuses[tag].append(status)

    events = []
    with open(journal_path) as f:
        for line in f:
            if line.strip():
                events.append(json.loads(line))
    queries = [e for e in events if e["event"] == "dns-query"]
    accepted = [e for e in events if e["event"] == "message-accepted"]
    accepted_on = defaultdict(list)  # tag -> [(host, ms)]
    for e in accepted:
        accepted_on[tags.get(e.get("message_id"), "?")].append((e["host"], e["ms"]))

    def answered(name, kind, answer="records", before=None, after=None):
        return [q for q in queries if q["name"] == name and q["type"] == kind and q["answer"] == answer
                and (before is None or q["ms"] < before) and (after is None or q["ms"] >= after)]

    # (a) Postfix asked the farm: the MX of each domain, then the A of its hosts.
    check(queries and all(q["client"].startswith("127.0.0.1:") for q in queries),
          f"postfix-dns: Postfix's resolver asked the farm's DNS ({len(queries)} dns-query events, all from 127.0.0.1)")
    check(answered("aol.test", "MX"), "postfix-dns: Postfix looked up aol.test MX at the farm and got its records")
    for name in ("mx1", "mx2", "mx3"):
        hostname = hosts[name][0]
        check(answered(hostname, "A"), f"postfix-dns: Postfix looked up {hostname} A at the farm")
    check(not [q for q in queries if q["type"] == "AAAA"], "postfix-dns: no AAAA lookups (inet_protocols = ipv4)")
    sent_relays = {s["relay"] for tag in statuses for s in statuses[tag] if s["status"] == "sent"}
    check(sent_relays and sent_relays <= set(relay_of.values()),
          "postfix-dns: every relay Postfix delivered to is an MX hostname at the address the farm's DNS gave",
          f"{sorted(sent_relays)}")

    # (b) failover by preference: while mx1 and mx2 greet with 421, mx3 takes the mail.
    failover = sorted(t for t in messages if t.startswith("failover"))
    spread = sorted(t for t in messages if t.startswith("spread"))
    for tag in failover:
        sent = [s["relay"] for s in statuses[tag] if s["status"] == "sent"]
        check(sent == [relay_of["mx3"]] and [h for h, _ in accepted_on[tag]] == ["mx3"],
              f"postfix-dns: {tag} went to mx3 (preference 20) once while mx1 and mx2 refused, as log and journal say",
              f"log {sent}, journal {accepted_on[tag]}")
    for tag in failover:
        # Postfix's own words for each host it tried first, before the status line.
        tried = [m.group(1) for raw in lines[tag]
                 for m in [re.search(r": host (\S+) refused to talk to me: 421 ", raw)] if m]
        wanted = {relay_of[h].rsplit(":", 1)[0] for h in ("mx1", "mx2")}
        check(set(tried) == wanted,
              f"postfix-dns: for {tag} Postfix's log has both preference-10 hosts refusing with 421 before mx3",
              f"{tried}")
    refused = Counter(e["host"] for e in events if e["event"] == "reply" and e["stage"] == "connect"
                      and e["reply"]["code"] == 421)
    check(refused["mx1"] >= 1 and refused["mx2"] >= 1,
          f"postfix-dns: Postfix tried both preference-10 hosts first (421 at connect: mx1 {refused['mx1']}, mx2 {refused['mx2']})")
    opened = defaultdict(list)
    for e in events:
        if e["event"] == "connection-opened":
            opened[e["host"]].append(e["ms"])
    check(opened["mx3"] and max(opened["mx3"]) < DOWN_UNTIL,
          f"postfix-dns: mx3 got connections only while mx1 and mx2 refused ({len(opened['mx3'])}, all before {DOWN_UNTIL} ms)",
          f"at {opened['mx3']}")

    # (b) spread over equal preferences: after the window, over mx1 and mx2, never mx3.
    hosts_used = Counter()
    for tag in spread:
        sent = [s["relay"] for s in statuses[tag] if s["status"] == "sent"]
        where = [h for h, _ in accepted_on[tag]]
        good = (len(sent) == 1 and len(where) == 1 and where[0] in ("mx1", "mx2") and sent[0] == relay_of[where[0]]
                and not any("refused to talk to me" in raw for raw in lines[tag]))
        check(good, f"postfix-dns: {tag} delivered once, to {where[0] if where else '?'} (preference 10), as log and journal say",
              f"log {sent}, journal {accepted_on[tag]}")
        hosts_used.update(where)
    check(hosts_used["mx1"] > 0 and hosts_used["mx2"] > 0 and hosts_used["mx3"] == 0,
          f"postfix-dns: {len(spread)} messages spread over the equal preferences: mx1 {hosts_used['mx1']}, mx2 {hosts_used['mx2']}, mx3 {hosts_used['mx3']}")

    # (c) an MX SERVFAIL: Postfix defers with its "Name service error", then delivers.
    deferred = [s for s in statuses["dnsfail"] if s["status"] == "deferred"]
    check(deferred and all(NAME_SERVICE_ERROR in s["why"] and s["relay"] == "none" for s in deferred),
          f"postfix-dns: dnsfail deferred {len(deferred)} time(s) with \"{NAME_SERVICE_ERROR}\"",
          f"{[s['why'] for s in statuses['dnsfail']]}")
    check(answered("dnsfail.test", "MX", "servfail", before=SERVFAIL_UNTIL)
          and all(q["rule"] for q in answered("dnsfail.test", "MX", "servfail")),
          "postfix-dns: the journal has the MX SERVFAILs of dnsfail.test by the rule, within its window")
    check(not answered("dnsfail.test", "MX", "servfail", after=SERVFAIL_UNTIL)
          and answered("dnsfail.test", "MX", "records", after=SERVFAIL_UNTIL),
          "postfix-dns: after the window the MX of dnsfail.test is answered")
    final = statuses["dnsfail"][-1] if statuses["dnsfail"] else None
    check(final is not None and final["status"] == "sent" and final["relay"] == relay_of["mx4"]
          and [h for h, _ in accepted_on["dnsfail"]] == ["mx4"] and accepted_on["dnsfail"][0][1] >= SERVFAIL_UNTIL,
          "postfix-dns: dnsfail delivered once to mx4 on a later queue run, after the SERVFAIL window",
          f"log {final and final['relay']} {final and final['status']}, journal {accepted_on['dnsfail']}")

    # Nothing lost, nothing twice, nothing unknown.
    counts = Counter(tags.get(e.get("message_id"), "?") for e in accepted)
    check(all(counts[t] == 1 for t in messages) and sum(counts.values()) == len(messages),
          f"postfix-dns: each of the {len(messages)} messages accepted exactly once",
          f"{dict(counts)}")

    for line in results:
        print(line)
    print("--- Postfix's log lines about the deferred message")
    for raw in lines["dnsfail"]:
        print("  " + raw)


if __name__ == "__main__":
    main()
