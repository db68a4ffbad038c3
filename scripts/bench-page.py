#!/usr/bin/env python3
"""The timeline page's figures with many deliveries; run by scripts/bench-page.sh.

Sends N messages (one recipient each, so N deliveries) over a few connections, then in
headless Chromium: the first render (from navigation to the rows drawn, while the event
stream replays the whole journal), a scroll to the middle, a filter, and one live update
(a message sent until its row is counted). Prints the figures; fails only if the page
never renders.
"""

import argparse
import os
import re
import smtplib
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from page_cdp import Chromium, PageError  # noqa: E402

CONNECTIONS = 4


def message(i):
    return (f"From: <bench@sender.test>\r\nTo: <user{i}@bench.test>\r\n"
            f"Message-ID: <bench-{i}@sender.test>\r\nSubject: bench {i}\r\n\r\nmessage {i}\r\n")


def send(mx, numbers):
    with smtplib.SMTP(*mx, timeout=30) as smtp:
        smtp.ehlo("sender.test")
        for i in numbers:
            smtp.sendmail("bench@sender.test", [f"user{i}@bench.test"], message(i))


def fill(mx, count):
    threads = [threading.Thread(target=send, args=(mx, range(k, count, CONNECTIONS)))
               for k in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def journal_events(api):
    with urllib.request.urlopen(f"{api}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(r"^mxfarm_journal_events_total (\d+)", text, re.M)
    return int(found.group(1)) if found else 0


COUNT = "((document.getElementById('counts').textContent.match(/^(\\d+)/) || [0, 0])[1] | 0)"
STATS = "window.mxfarmTimeline"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True)
    parser.add_argument("--mx", required=True)
    parser.add_argument("--deliveries", type=int, default=10000)
    args = parser.parse_args()
    host, port = args.mx.rsplit(":", 1)
    mx = (host, int(port))
    n = args.deliveries

    started = time.monotonic()
    fill(mx, n)
    filled = time.monotonic() - started
    events = journal_events(args.api)
    print(f"filled the farm: {n} deliveries, {events} journal events, in {filled:.1f} s")

    # Generous bounds: the figures, not the bounds, are the result.
    bound = 60 + n / 100
    with Chromium() as chromium:
        page = chromium.open(args.api + "/")
        try:
            page.wait_for(f"{COUNT} >= {n} && document.querySelectorAll('#rows [data-delivery]').length > 0",
                          f"{n} deliveries on the page", timeout=bound, every=0.05)
        except PageError as error:
            print(f"FAIL the page never rendered: {error}")
            return 1
        first = page.eval(f"{STATS}.firstRender")
        last = page.eval(f"{STATS}.last")
        drawn = page.eval("document.querySelectorAll('#rows .row').length")
        marks = page.eval("document.querySelectorAll('#rows .mark').length")
        print(f"first render: {first:.0f} ms after navigation "
              f"(fetch and parse {last['fetchMs']:.0f} ms, prepare and draw {last['renderMs']:.0f} ms); "
              f"{drawn} rows and {marks} marks in the DOM for {n} deliveries")
        replay_start = time.monotonic()
        page.wait_for(f"{STATS}.events >= {events}", "the event stream's replay of the journal",
                      timeout=bound, every=0.05)
        page.wait_for(f"!{STATS}.pending", "the refreshes to settle", timeout=bound, every=0.05)
        print(f"event stream: {events} journal events replayed to the page "
              f"(done {time.monotonic() - replay_start:.1f} s after the first render); "
              f"{page.eval(STATS + '.refreshes')} refreshes in all")

        scroll = page.eval(
            "new Promise(done => { const s = document.getElementById('scroller');"
            " s.scrollTop = s.scrollHeight / 2;"
            " requestAnimationFrame(() => requestAnimationFrame(() => done([window.mxfarmTimeline.lastRender,"
            " document.querySelector('#rows .row').dataset.recipient]))); })")
        print(f"scroll to the middle: rows drawn in {scroll[0]:.1f} ms (first row now {scroll[1]})")
        filtered = page.eval(
            "(() => { const f = document.getElementById('f-recipient'); const t = performance.now();"
            " f.value = 'user7'; f.dispatchEvent(new Event('input')); const took = performance.now() - t;"
            " const shown = document.getElementById('shown').textContent;"
            " f.value = ''; f.dispatchEvent(new Event('input')); return [took, shown]; })()")
        print(f"filter by recipient 'user7': {filtered[0]:.1f} ms ({filtered[1]})")

        refreshes = page.eval(f"{STATS}.refreshes")
        sent = time.time() * 1000
        send(mx, [n])
        page.wait_for(f"{COUNT} >= {n + 1}", "the live update", timeout=bound, every=0.02)
        seen = page.eval(f"performance.timeOrigin + {STATS}.last.at")
        last = page.eval(f"{STATS}.last")
        print(f"one live update: the new delivery on the page {seen - sent:.0f} ms after it was sent "
              f"(refresh: fetch and parse {last['fetchMs']:.0f} ms, prepare and draw {last['renderMs']:.0f} ms; "
              f"{page.eval(STATS + '.refreshes') - refreshes} refresh)")
        if page.errors:
            print("page errors: " + "; ".join(page.errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
