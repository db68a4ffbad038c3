#!/usr/bin/env python3
"""Checks a real MTA's own log against the farm's journal when the MTA found the farm
through the farm's DNS server alone (scripts/e2e-mta.sh, fixture tests/e2e/dns-mta.toml).

    e2e-mta-dns-check.py postfix|exim MTA-LOG MANIFEST JOURNAL [FIXTURE]

MANIFEST has one injected message a line, tab-separated: the scenario, the Message-ID,
the envelope sender and the recipients. The messages are told apart by their tags (the
Message-ID up to its first dot): dnsfail (dnsfail.test, whose MX SERVFAILs for the first
20 s), failoverN (sent while aol.test's two preference-10 hosts greet with 421) and
spreadN (sent after that), spffail (SPF fail at mx5: bounced) and spfslow (SPF temperror
after a slow TXT lookup for 20 s: deferred, then delivered).

Prints one `ok   ...` or `FAIL ...` line per check (scripts/e2e-mta.sh counts them), then
the MTA's log lines about the deferred message. Exits with 1 only if it cannot run.
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
# slow.sender.test's TXT lookup (its SPF) SERVFAILs, after DNS_DELAY, before SPF_UNTIL.
SPF_UNTIL = 20_000
DNS_DELAY = 2_000
# What each MTA logs when the MX lookup fails with SERVFAIL (glibc: TRY_AGAIN).
NAME_SERVICE_ERROR = {
    "postfix": "Host or domain name not found. Name service error for name=dnsfail.test type=MX: "
    "Host not found, try again",
    "exim": "host lookup did not complete",
}

POSTFIX_LINE = re.compile(r"^\w{3} [ \d]\d [\d:]{8} \S+ postfix/(?P<prog>\S+)\[\d+\]: (?P<text>.*)$")
POSTFIX_QID = re.compile(r"^(?P<qid>[0-9A-F]{6,}): (?P<text>.*)$")
POSTFIX_STATUS = re.compile(
    r"^to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]+), .*status=(?P<status>\w+) \((?P<why>.*)\)$"
)
POSTFIX_REFUSED = re.compile(r"^host (?P<host>\S+) refused to talk to me: 421 ")
EXIM_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]{8,12} (?P<id>\w{6}-\w{6}-\w{2,4}) (?P<text>.*)$")
EXIM_ADDRESS = re.compile(r"^(?P<flag>=>|->|\*\*|==) (?P<rcpt>\S+) (?P<rest>.*)$")
EXIM_HOST = re.compile(r"H=(?P<name>\S+) \[(?P<ip>[^\]]+)\](?::(?P<port>\d+))?")
EXIM_REFUSED = re.compile(r"^H=(?P<name>\S+) \[(?P<ip>[^\]]+)\](?::\d+)?: SMTP error from remote mail server after initial connection: 421 ")


def parse_postfix(path, tags):
    """Per message tag: its status lines as {status, relay, why}, the hosts (`name[ip]`)
    that refused it with a 421 greeting, and its log lines."""
    by_qid, statuses, refused, lines = {}, defaultdict(list), defaultdict(list), defaultdict(list)
    with open(path, errors="replace") as f:
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
            if line["prog"] != "smtp":
                continue
            status = POSTFIX_STATUS.match(text)
            if status:
                # conn_use=N (N > 1): sent over a connection cached from an earlier delivery.
                statuses[tag].append({"status": status["status"], "relay": status["relay"], "why": status["why"],
                                      "reused": re.search(r", conn_use=\d+,", text) is not None})
            host = POSTFIX_REFUSED.match(text)
            if host:
                refused[tag].append(host["host"])
    return statuses, refused, lines


def parse_exim(path, tags):
    """The same from Exim's main log: `=>` is sent, `==` deferred, `**` bounced; a host
    that refused with 421 before the next one was tried has a line of its own."""
    by_eid, statuses, refused, lines = {}, defaultdict(list), defaultdict(list), defaultdict(list)
    with open(path, errors="replace") as f:
        for raw in f:
            raw = raw.rstrip("\n")
            line = EXIM_LINE.match(raw)
            if not line:
                continue
            eid, text = line["id"], line["text"]
            if text.startswith("<= "):
                mid = re.search(r" id=(\S+)", text)
                tag = tags.get(mid.group(1).strip("<>")) if mid else None
                if tag:
                    by_eid[eid] = tag
            tag = by_eid.get(eid)
            if not tag:
                continue
            lines[tag].append(raw)
            address = EXIM_ADDRESS.match(text)
            if address:
                host = EXIM_HOST.search(address["rest"])
                relay = f"{host['name']}[{host['ip']}]:{host['port']}" if host else "none"
                status = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}[address["flag"]]
                statuses[tag].append({"status": status, "relay": relay, "why": address["rest"]})
            host = EXIM_REFUSED.match(text)
            if host:
                refused[tag].append(f"{host['name']}[{host['ip']}]")
    return statuses, refused, lines


results = []


def check(ok, what, detail=""):
    results.append(("ok   " if ok else "FAIL ") + what + ("" if ok or not detail else f": {detail}"))


def main():
    if len(sys.argv) not in (5, 6) or sys.argv[1] not in NAME_SERVICE_ERROR:
        sys.exit(__doc__)
    mta, log_path, manifest_path, journal_path = sys.argv[1:5]
    fixture_path = sys.argv[5] if len(sys.argv) == 6 else "tests/e2e/dns-mta.toml"
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
    parse = parse_postfix if mta == "postfix" else parse_exim
    statuses, refused_by, lines = parse(log_path, tags)
    name = "Postfix" if mta == "postfix" else "Exim"

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

    # (a) The MTA asked the farm: the MX of each domain, then the A of its hosts.
    who = f"{mta}-dns"
    check(queries and all(q["client"].startswith("127.0.0.1:") for q in queries),
          f"{who}: {name}'s resolver asked the farm's DNS ({len(queries)} dns-query events, all from 127.0.0.1)")
    check(answered("aol.test", "MX"), f"{who}: {name} looked up aol.test MX at the farm and got its records")
    for host in ("mx1", "mx2", "mx3"):
        hostname = hosts[host][0]
        check(answered(hostname, "A"), f"{who}: {name} looked up {hostname} A at the farm")
    check(not [q for q in queries if q["type"] == "AAAA"], f"{who}: no AAAA lookups (IPv4 only)")
    sent_relays = {s["relay"] for tag in statuses for s in statuses[tag] if s["status"] == "sent"}
    check(sent_relays and sent_relays <= set(relay_of.values()),
          f"{who}: every host {name} delivered to is an MX hostname at the address the farm's DNS gave",
          f"{sorted(sent_relays)}")

    # (b) failover by preference: while mx1 and mx2 greet with 421, mx3 takes the mail.
    failover = sorted(t for t in messages if t.startswith("failover"))
    spread = sorted(t for t in messages if t.startswith("spread"))
    for tag in failover:
        sent = [s["relay"] for s in statuses[tag] if s["status"] == "sent"]
        check(sent == [relay_of["mx3"]] and [h for h, _ in accepted_on[tag]] == ["mx3"],
              f"{who}: {tag} went to mx3 (preference 20) once while mx1 and mx2 refused, as log and journal say",
              f"log {sent}, journal {accepted_on[tag]}")
    # The MTA's own words for the hosts it tried first. Postfix tries both for each
    # message; Exim, once both have failed, waits out their retry time and goes to mx3
    # at once, so at least the first message names both.
    # Postfix may also send a later one over the connection to mx3 it cached from an
    # earlier delivery (conn_use=2 in its log), without asking mx1 and mx2 again.
    wanted = {relay_of[h].rsplit(":", 1)[0] for h in ("mx1", "mx2")}
    named = [tag for tag in failover if set(refused_by[tag]) == wanted]
    reused = [tag for tag in failover if tag not in named
              and any(s.get("reused") for s in statuses[tag] if s["status"] == "sent")]
    if mta == "postfix":
        enough = len(named) >= 1 and len(named) + len(reused) == len(failover)
    else:
        enough = len(named) >= 1
    check(enough, f"{who}: {name}'s log has both preference-10 hosts refusing with 421 before mx3 "
          f"({', '.join(named) or 'none'}" + (f"; over a cached connection to mx3: {', '.join(reused)}" if reused else "")
          + ")", f"{dict(refused_by)}")
    refused = Counter(e["host"] for e in events if e["event"] == "reply" and e.get("stage") == "connect"
                      and e["reply"]["code"] == 421)
    opened = defaultdict(list)
    for e in events:
        if e["event"] == "connection-opened":
            opened[e["host"]].append(e["ms"])
    first_refusal = {h: min((e["ms"] for e in events if e["event"] == "reply" and e["host"] == h
                             and e.get("stage") == "connect" and e["reply"]["code"] == 421), default=None)
                     for h in ("mx1", "mx2")}
    check(refused["mx1"] >= 1 and refused["mx2"] >= 1 and opened["mx3"]
          and all(t is not None and t <= min(opened["mx3"]) for t in first_refusal.values()),
          f"{who}: mx3 was first tried after both mx1 and mx2 had refused (421 at connect: mx1 "
          f"{refused['mx1']}, mx2 {refused['mx2']})", f"first refusals {first_refusal}, mx3 at {opened['mx3']}")
    check(opened["mx3"] and max(opened["mx3"]) < DOWN_UNTIL,
          f"{who}: mx3 got connections only while mx1 and mx2 refused ({len(opened['mx3'])}, all before {DOWN_UNTIL} ms)",
          f"at {opened['mx3']}")

    # (b) spread over equal preferences: after the window, over mx1 and mx2, never mx3.
    hosts_used = Counter()
    for tag in spread:
        sent = [s["relay"] for s in statuses[tag] if s["status"] == "sent"]
        where = [h for h, _ in accepted_on[tag]]
        good = (len(sent) == 1 and len(where) == 1 and where[0] in ("mx1", "mx2") and sent[0] == relay_of[where[0]]
                and not refused_by[tag])
        check(good, f"{who}: {tag} delivered once, to {where[0] if where else '?'} (preference 10), as log and journal say",
              f"log {sent}, journal {accepted_on[tag]}")
        hosts_used.update(where)
    check(hosts_used["mx1"] > 0 and hosts_used["mx2"] > 0 and hosts_used["mx3"] == 0,
          f"{who}: {len(spread)} messages spread over the equal preferences: mx1 {hosts_used['mx1']}, "
          f"mx2 {hosts_used['mx2']}, mx3 {hosts_used['mx3']}")

    # (c) an MX SERVFAIL: the MTA defers with its name-service error, then delivers.
    error = NAME_SERVICE_ERROR[mta]
    deferred = [s for s in statuses["dnsfail"] if s["status"] == "deferred"]
    # Exim also logs a queue run that came before its own retry time as a deferral.
    waits = [s for s in deferred if mta == "exim" and "retry time not reached" in s["why"]]
    looked_up = [s for s in deferred if s not in waits]
    check(looked_up and all(error in s["why"] and s["relay"] == "none" for s in looked_up),
          f"{who}: dnsfail deferred {len(looked_up)} time(s) with \"{error}\""
          + (f" (and {len(waits)} wait(s) for its retry time)" if waits else ""),
          f"{[s['why'] for s in statuses['dnsfail']]}")
    check(answered("dnsfail.test", "MX", "servfail", before=SERVFAIL_UNTIL)
          and all(q["rule"] for q in answered("dnsfail.test", "MX", "servfail")),
          f"{who}: the journal has the MX SERVFAILs of dnsfail.test by the rule, within its window")
    check(not answered("dnsfail.test", "MX", "servfail", after=SERVFAIL_UNTIL)
          and answered("dnsfail.test", "MX", "records", after=SERVFAIL_UNTIL),
          f"{who}: after the window the MX of dnsfail.test is answered")
    final = statuses["dnsfail"][-1] if statuses["dnsfail"] else None
    check(final is not None and final["status"] == "sent" and final["relay"] == relay_of["mx4"]
          and [h for h, _ in accepted_on["dnsfail"]] == ["mx4"] and accepted_on["dnsfail"][0][1] >= SERVFAIL_UNTIL,
          f"{who}: dnsfail delivered once to mx4 on a later queue run, after the SERVFAIL window",
          f"log {final and final['relay']} {final and final['status']}, journal {accepted_on['dnsfail']}")

    # (d) SPF through the farm's DNS: fail is refused for good, temperror for a while.
    spf_checks = [e for e in events if e["event"] == "dns-check" and e["check"] == "spf"]
    def spf_of(sender):
        return [(e["result"], e["took_ms"], e["ms"]) for e in spf_checks if e["subject"].startswith(f"<{sender}>")]
    bounced = [s for s in statuses["spffail"] if s["status"] == "bounced"]
    check(bounced and "550 5.7.1 SPF: 127.0.0.1 is not allowed to send mail for spffail@sender.test" in bounced[0]["why"]
          and not [s for s in statuses["spffail"] if s["status"] != "bounced"],
          f"{who}: spffail bounced at once with mx5's 550 5.7.1 SPF reply", f"{statuses['spffail']}")
    check([r for r, _, _ in spf_of("spffail@sender.test")] == ["fail"] and not accepted_on["spffail"],
          f"{who}: the journal has the SPF check of spffail@sender.test: fail, once, nothing accepted",
          f"{spf_of('spffail@sender.test')}")
    slow = spf_of("spfslow@slow.sender.test")
    temp = [c for c in slow if c[0] == "temperror"]
    check(temp and all(took >= DNS_DELAY and at < SPF_UNTIL + DNS_DELAY for _, took, at in temp)
          and slow[-1][0] == "pass" and slow[-1][2] >= SPF_UNTIL,
          f"{who}: spfslow's SPF was temperror {len(temp)} time(s), each after its {DNS_DELAY} ms TXT lookup, then pass",
          f"{slow}")
    held = [q for q in queries if q["name"] == "slow.sender.test" and q["type"] == "TXT" and q.get("by_farm")
            and q["answer"] == "servfail" and q.get("delay_ms") == DNS_DELAY]
    check(held and all(q["ms"] < SPF_UNTIL + DNS_DELAY for q in held),
          f"{who}: the farm's own TXT lookups of slow.sender.test SERVFAILed after {DNS_DELAY} ms, within the window ({len(held)})")
    deferred_spf = [s for s in statuses["spfslow"] if s["status"] == "deferred"
                    and "451 4.7.1 Temporary SPF lookup failure" in s["why"]]
    final = statuses["spfslow"][-1] if statuses["spfslow"] else None
    check(deferred_spf and final and final["status"] == "sent" and final["relay"] == relay_of["mx5"]
          and [h for h, _ in accepted_on["spfslow"]] == ["mx5"] and accepted_on["spfslow"][0][1] >= SPF_UNTIL,
          f"{who}: spfslow deferred {len(deferred_spf)} time(s) with mx5's 451 4.7.1, then delivered once to mx5",
          f"log {statuses['spfslow']}, journal {accepted_on['spfslow']}")

    # Nothing lost, nothing twice, nothing unknown; the SPF failure is never accepted.
    counts = Counter(tags.get(e.get("message_id"), "?") for e in accepted)
    expected = {t: 0 if t == "spffail" else 1 for t in messages}
    check(all(counts[t] == n for t, n in expected.items()) and sum(counts.values()) == sum(expected.values()),
          f"{who}: each of the {sum(expected.values())} deliverable messages accepted exactly once, spffail never",
          f"{dict(counts)}")

    for line in results:
        print(line)
    print(f"--- {name}'s log lines about the deferred message")
    for raw in lines["dnsfail"]:
        print("  " + raw)


if __name__ == "__main__":
    main()
