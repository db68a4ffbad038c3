#!/usr/bin/env python3
"""Checks a sender model against the real MTA it models, for scripts/e2e-mta.sh.

    e2e-mta-model-check.py MTA REAL-TRANSCRIPT.json SIMULATION.json...

REAL-TRANSCRIPT.json is `mxfarm transcript --json` of the journal the real MTA left on
tests/e2e/model-check.toml, in real time; SIMULATION.json is `mxfarm simulate --json` of
the model with the same settings and messages, in virtual time (one per phase of the
real run: the deliveries of all of them together). Both are the farm's own account of
the sessions, so the two are read the same way.

Per delivery (one sender and recipient: each message of the fixture has a sender of its
own) it checks that the two have the same tries, the same hosts in the same order within
each try, and the same outcome. A try is a run of attempts less than GAP apart, each on
another host: the sessions of one try follow each other at once, and no MTA tries a host
twice in one delivery.
It also checks that the same deliveries went over one connection: Postfix's connection
cache hands a delivery the connection an earlier one left open (an RSET, no new
connection), and so must its model.
Retry times are not compared: the real MTA's queue runs have a phase of their own.

Prints one `ok   ...` or `FAIL ...` line per check; exits with 1 only if it cannot run.
"""

import json
import sys

GAP_MS = 2000


def tries(delivery):
    """The hosts of each try of a delivery, in order. A host tried again starts a try:
    a queue run can follow the first delivery within milliseconds."""
    out, last = [], None
    for attempt in delivery["attempts"]:
        at = attempt["offset_ms"]
        if last is None or at - last > GAP_MS or attempt["host"] in out[-1]:
            out.append([])
        out[-1].append(attempt["host"])
        last = at
    return out


def deliveries(transcript):
    return {(d["sender"], d["recipient"]): d for d in transcript["deliveries"]}


def shared_connections(by_key):
    """The pairs of deliveries that had an attempt over the same connection."""
    users = {}
    for key, d in by_key.items():
        for attempt in d["attempts"]:
            users.setdefault((attempt["host"], attempt["conn"]), set()).add(key)
    pairs = set()
    for keys in users.values():
        ordered = sorted(keys)
        for i, a in enumerate(ordered):
            # Two recipients of one message share its session: not what is checked.
            for b in ordered[i + 1:]:
                if a[0] != b[0]:
                    pairs.add((a[0], b[0]))
    return pairs


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 1
    mta, real_path, model_paths = argv[1], argv[2], argv[3:]
    with open(real_path) as f:
        real = deliveries(json.load(f))
    model, model_pairs = {}, set()
    for path in model_paths:
        with open(path) as f:
            phase = deliveries(json.load(f)["transcript"])
        # Each simulation has a farm of its own, so its connection numbers are its own.
        model_pairs |= shared_connections(phase)
        model.update(phase)
    if not real:
        print(f"FAIL {mta} model: the real run left no delivery in {real_path}")
        return 0
    for key in sorted(set(real) | set(model)):
        sender, recipient = key
        name = f"{mta} model: <{sender}> -> <{recipient}>"
        if key not in real or key not in model:
            where = "the real run" if key not in real else "the model"
            print(f"FAIL {name}: missing from {where}")
            continue
        r, m = real[key], model[key]
        r_tries, m_tries = tries(r), tries(m)
        if r_tries == m_tries:
            print(f"ok   {name}: the same {len(r_tries)} tries, hosts {r_tries}")
        else:
            print(f"FAIL {name}: real tries {r_tries}, model tries {m_tries}")
        r_out, m_out = r["outcome"]["result"], m["outcome"]["result"]
        if r_out == m_out:
            print(f"ok   {name}: both {r_out}")
        else:
            print(f"FAIL {name}: real {r_out}, model {m_out}")
    real_pairs = shared_connections(real)
    if real_pairs == model_pairs:
        shown = ", ".join(f"<{a}> and <{b}>" for a, b in sorted(real_pairs)) or "none"
        print(f"ok   {mta} model: the same deliveries shared a connection: {shown}")
    else:
        print(f"FAIL {mta} model: shared connections: real {sorted(real_pairs)}, model {sorted(model_pairs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
