#!/usr/bin/env python3
"""A sender that gets retrying wrong, for scripts/e2e-mta.sh: the report must blame it.

    e2e-bad-sender.py MX2-PORT MX3-PORT

Against tests/e2e/aol-fast.toml on 127.0.0.1 (mx2 answers 421 to MAIL for 15s per
client; every host refuses gone@aol.test with a 550):

1. <bad-550@bad.test> goes to bob@aol.test and gone@aol.test on mx3; bob is accepted,
   gone@ refused with a 550. Two seconds later the sender sends the same message to both
   again: a retry after a 5xx, and a resend after a 250 it received.
2. <bad-mx@bad.test> goes to alice@aol.test on mx2, which answers 421 at MAIL; the sender
   retries mx2, and only mx2, twice more, two seconds apart: no failover to another MX.

Prints what each attempt got; exits with 1 if the farm did not answer as expected.
"""

import smtplib
import sys
import time


def message(message_id, sender, recipients):
    return (
        f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in recipients)}\r\n"
        f"Subject: e2e bad sender\r\nMessage-ID: <{message_id}>\r\n\r\nHello.\r\n"
    )


def send(port, sender, recipients, message_id):
    """One transaction on a new connection; returns {recipient: code} and the MAIL reply."""
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=10)
    try:
        smtp.ehlo("bad-sender.test")
        refused = smtp.sendmail(sender, recipients, message(message_id, sender, recipients))
        codes = {r: 250 for r in recipients}
        codes.update({r: code for r, (code, _) in refused.items()})
        smtp.quit()
        return codes, 250
    except smtplib.SMTPSenderRefused as e:
        return {}, e.smtp_code
    except smtplib.SMTPRecipientsRefused as e:
        smtp.rset()
        smtp.quit()
        return {r: code for r, (code, _) in e.recipients.items()}, 250
    except smtplib.SMTPServerDisconnected:
        return {}, None


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 1
    mx2, mx3 = int(argv[1]), int(argv[2])
    good = True
    both = ["bob@aol.test", "gone@aol.test"]
    for attempt in (1, 2):
        codes, _ = send(mx3, "bad550@sender.test", both, "bad-550@bad.test")
        print(f"bad-550 attempt {attempt} on mx3: {codes}")
        good &= codes == {"bob@aol.test": 250, "gone@aol.test": 550}
        time.sleep(2)
    for attempt in (1, 2, 3):
        codes, mail = send(mx2, "badmx@sender.test", ["alice@aol.test"], "bad-mx@bad.test")
        print(f"bad-mx attempt {attempt} on mx2: MAIL got {mail}")
        good &= mail == 421
        time.sleep(2)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
