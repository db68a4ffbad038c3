#!/usr/bin/env python3
"""The timeline page in headless Chromium while a sender is greylisted and retries.

Run by scripts/e2e-page.sh against `mxfarm run greylist --api ...`. The page is loaded
before the first try and never reloaded: every change it shows comes through its live
updates (the /api/v1/events stream). Farm time moves with POST /api/v1/clock/advance
instead of five real minutes. Every wait polls the DOM with a bound; nothing sleeps a
fixed time. Prints ok/FAIL per check and exits 1 on any failure.
"""

import argparse
import json
import os
import smtplib
import sys
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in scripts/
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from page_cdp import Chromium, PageError  # noqa: E402

BOB = "bob@greylist.test"
CAROL = "carol@greylist.test"
SENDER = "alice@sender.test"
MESSAGE = (
    f"From: <{SENDER}>\r\nTo: <{BOB}>, <{CAROL}>\r\n"
    "Message-ID: <e2e-page-1@sender.test>\r\nSubject: timeline\r\n\r\nhello\r\n"
)

failures = []


def check(ok, what, detail=""):
    if ok:
        print(f"ok   {what}")
    else:
        print(f"FAIL {what}" + (f": {detail}" if detail else ""))
        failures.append(what)


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def advance(api, by):
    request = urllib.request.Request(
        f"{api}/api/v1/clock/advance", data=json.dumps({"by": by}).encode(), method="POST",
        headers={"Content-Type": "application/json", "X-Mxfarm-Token": "1"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def first_try(mx1):
    """Both recipients in one transaction on mx1: greylisted, 450 each."""
    with smtplib.SMTP(*mx1, timeout=10) as smtp:
        smtp.ehlo("sender.test")
        smtp.mail(SENDER)
        codes = [smtp.rcpt(BOB)[0], smtp.rcpt(CAROL)[0]]
        smtp.rset()
    return codes


def second_try(mx1, mx2):
    """After the greylist delay: bob on the backup MX, carol on the primary."""
    refused = {}
    with smtplib.SMTP(*mx2, timeout=10) as smtp:
        smtp.ehlo("sender.test")
        refused.update(smtp.sendmail(SENDER, [BOB], MESSAGE))
    with smtplib.SMTP(*mx1, timeout=10) as smtp:
        smtp.ehlo("sender.test")
        refused.update(smtp.sendmail(SENDER, [CAROL], MESSAGE))
    return refused


def row(recipient):
    return f'.row[data-recipient="{recipient}"]'


def kinds_js(recipient):
    return (f"JSON.stringify(Array.from(document.querySelectorAll('{row(recipient)} .mark'))"
            ".map(m => [m.dataset.attempt, m.dataset.kind]))")


ROWS = "document.querySelectorAll('#rows [data-delivery]').length"
RECIPIENTS = ("JSON.stringify(Array.from(document.querySelectorAll('#rows [data-delivery]'))"
              ".map(r => r.dataset.recipient).sort())")


def run(args):
    mx1, mx2 = addr(args.mx1), addr(args.mx2)
    with Chromium() as chromium:
        page = chromium.open(args.api + "/")
        page.wait_for("document.getElementById('live').textContent === 'live'",
                      "the live indicator to say live")
        check(True, "the page loads and its event stream is live")
        page.wait_for("document.getElementById('scenario').textContent === 'greylist'",
                      "the scenario's name in the header")
        check(True, "the header names the scenario (greylist)")
        check(page.eval(ROWS) == 0 and not page.eval("document.getElementById('empty').hidden"),
              "before any mail: no delivery rows, and a hint where to send mail")

        codes = first_try(mx1)
        check(codes == [450, 450], "first try: both recipients greylisted (450)", str(codes))
        page.wait_for(f"{ROWS} === 2", "a delivery row per recipient after the first try")
        check(json.loads(page.eval(RECIPIENTS)) == [BOB, CAROL],
              "one delivery row per recipient", page.eval(RECIPIENTS))
        for who in (BOB, CAROL):
            marks = json.loads(page.wait_for(kinds_js(who), f"{who}'s marks"))
            check(marks == [["1", "deferred"]], f"{who}: one mark, deferred", str(marks))
            check(page.eval(f"document.querySelectorAll('{row(who)} rect.wait').length") == 1,
                  f"{who}: the greylist window is shaded")
        check(page.eval("JSON.stringify(Array.from(document.querySelectorAll('#rows [data-delivery]'))"
                        ".map(r => r.dataset.delivery))") == '["1","1"]',
              "both rows are message 1 (data-delivery)")

        page.click(f"{row(BOB)} .mark[data-attempt='1']")
        page.wait_for("!document.getElementById('details').hidden", "the details panel")
        details = page.eval("document.getElementById('details').innerText")
        check("mx1" in details and "450" in details and "rcpt" in details and "Greylisted" in details,
              "clicking a mark shows its host, stage and reply in the details panel", details[:300])

        refreshes = page.eval("window.mxfarmTimeline.refreshes")
        moved = advance(args.api, "6m")
        check(moved.get("advanced_ms") == 360000, "the clock advances by 6m", str(moved))
        page.wait_for("document.querySelectorAll('#axis .jump-mark').length === 1",
                      "the clock jump on the axis")
        check(True, "the clock jump appears on the axis (live)")
        check(page.eval("window.mxfarmTimeline.refreshes") > refreshes, "the jump refreshed the page")

        refused = second_try(mx1, mx2)
        check(refused == {}, "second try after the jump: both accepted", str(refused))
        for who in (BOB, CAROL):
            want = json.dumps([["1", "deferred"], ["2", "accepted"]], separators=(",", ":"))
            got = page.wait_for(f"{kinds_js(who)} === {json.dumps(want)} && {kinds_js(who)}",
                                f"{who}'s second mark")
            check(True, f"{who}: two marks, deferred then accepted ({got})")
            check(page.eval(f"document.querySelector('{row(who)} .status').textContent") == "delivered",
                  f"{who}: the row says delivered")
        page.wait_for(f"document.querySelector('{row(BOB)} .findings .sev') !== null",
                      "the report's findings beside each delivery")
        check(page.eval("Array.from(document.querySelectorAll('#rows [data-delivery] .findings'))"
                        ".every(f => f.textContent.trim() && !f.textContent.includes('no findings'))"),
              "every row shows the report's findings")
        check(page.eval("document.getElementById('counts').textContent").startswith("2 (2 delivered"),
              "the header counts two deliveries, both delivered",
              page.eval("document.getElementById('counts').textContent"))
        details = page.eval("document.getElementById('details').innerText")
        check(not page.eval("document.getElementById('details').hidden")
              and "bob@greylist.test" in details and "mx2" in details,
              "the details panel stayed open through the live updates, now with the retry",
              details[:300])
        page.screenshot(os.path.join(args.artifacts, "timeline-details.png"))

        page.key("Escape", "Escape", 27)
        page.wait_for("document.getElementById('details').hidden", "Escape to close the panel")
        check(True, "Escape closes the details panel")

        page.hover(f"{row(CAROL)} .mark[data-attempt='2']")
        tip = page.wait_for("!document.getElementById('tip').hidden && document.getElementById('tip').textContent",
                            "the hover tip")
        check("mx1" in tip and "250" in tip, "hovering a mark shows its host and reply", tip)
        check(page.eval(f"document.querySelector('{row(CAROL)} .mark[data-attempt=\"2\"] title').textContent")
              .startswith("attempt 2: accepted on mx1"), "each mark has a <title>")
        shot = page.screenshot(os.path.join(args.artifacts, "timeline.png"))
        print(f"screenshot: {os.path.abspath(shot)}")

        # Keyboard: a row takes focus, arrows move between rows, Enter opens the details.
        page.eval(f"document.querySelector('{row(BOB)}').focus()")
        page.key("ArrowDown", "ArrowDown", 40)
        check(page.eval("document.activeElement.dataset.recipient") == CAROL,
              "ArrowDown moves the focus to the next row")
        page.key("Enter", "Enter", 13)
        page.wait_for("!document.getElementById('details').hidden", "Enter to open the details")
        check(CAROL in page.eval("document.getElementById('details-title').textContent"),
              "Enter opens the focused row's details")
        check("Attempt 2: accepted" in page.eval("document.getElementById('details').textContent"),
              "Enter shows the row's last attempt")
        page.key("ArrowLeft", "ArrowLeft", 37)
        page.wait_for("document.getElementById('details').textContent.includes('Attempt 1: deferred')",
                      "ArrowLeft to step to the first attempt")
        check(page.eval(f"document.querySelector('{row(CAROL)} .mark.selected').dataset.attempt") == "1",
              "ArrowLeft steps to the previous attempt, and its mark is marked")
        page.key("Escape", "Escape", 27)

        # Filters.
        page.eval("document.getElementById('f-recipient').focus()")
        page.type_text("carol")
        page.wait_for(f"{ROWS} === 1", "the recipient filter to hide bob's row")
        check(json.loads(page.eval(RECIPIENTS)) == [CAROL], "the recipient filter hides the other row")
        page.click("#filters button[type=reset]")
        page.wait_for(f"{ROWS} === 2", "clear filters")
        check(True, "clear filters shows both rows again")

        def pick(select, value):
            page.eval(f"(() => {{ const s = document.getElementById('{select}'); s.value = {json.dumps(value)};"
                      " s.dispatchEvent(new Event('change', {bubbles: true})); })()")

        pick("f-host", "mx2")
        page.wait_for(f"{ROWS} === 1", "the host filter")
        check(json.loads(page.eval(RECIPIENTS)) == [BOB], "the host filter (mx2) keeps only bob's row")
        pick("f-host", "")
        pick("f-outcome", "kind:refused")
        page.wait_for(f"{ROWS} === 0", "the outcome filter")
        check(page.eval("document.getElementById('empty').textContent").startswith("No delivery matches"),
              "the outcome filter (refused) hides both rows and says so")
        pick("f-outcome", "delivered")
        page.wait_for(f"{ROWS} === 2", "the outcome filter (delivered)")
        check(True, "the outcome filter (delivered) shows both rows")
        pick("f-outcome", "")

        # A filter survives a live update.
        page.eval("document.getElementById('f-recipient').focus()")
        page.type_text("bob")
        page.wait_for(f"{ROWS} === 1", "the recipient filter")
        refreshes = page.eval("window.mxfarmTimeline.refreshes")
        advance(args.api, "1m")
        page.wait_for(f"window.mxfarmTimeline.refreshes > {refreshes}", "a live update")
        page.wait_for("document.querySelectorAll('#axis .jump-mark').length === 2", "the second jump")
        check(page.eval(ROWS) == 1 and page.eval("document.getElementById('f-recipient').value") == "bob",
              "the recipient filter is kept through a live update")

        check(not page.errors, "the page raised no errors", "; ".join(page.errors))
        foreign = [u for u in page.requests if not (u.startswith(args.api + "/") or u.startswith("data:"))]
        check(not foreign, "every request the page made went to the farm", ", ".join(foreign))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--api", required=True, help="the farm's API, http://127.0.0.1:PORT")
    parser.add_argument("--mx1", required=True)
    parser.add_argument("--mx2", required=True)
    parser.add_argument("--artifacts", required=True)
    args = parser.parse_args()
    try:
        run(args)
    except (PageError, OSError, smtplib.SMTPException) as error:
        print(f"FAIL {error}")
        failures.append(str(error))
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all timeline checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
