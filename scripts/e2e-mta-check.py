#!/usr/bin/env python3
"""Checks a real MTA's own log against mxfarm's journal, for scripts/e2e-mta.sh.

    e2e-mta-check.py postfix|exim MTA-LOG MANIFEST JOURNAL...

MANIFEST has one injected message a line, tab-separated: the scenario (a journal named
<scenario>.jsonl), the Message-ID, the envelope sender and the recipients (comma-separated).

Next to each JOURNAL (x.jsonl) it reads x.transcript.json, `mxfarm transcript --json` of
it, and checks the stories against the MTA's log too: one delivery per message and
recipient, the outcome the MTA logged, and as many attempts (reaching RCPT, and refused
before it) as the MTA made.

Prints one `ok   ...` or `FAIL ...` line per check (scripts/e2e-mta.sh counts them), then,
for each message, the MTA's log lines about it. Exits with 1 only if it cannot run.

What an "attempt" is here: one recipient offered to one host in one SMTP transaction. In
the journal that is one RCPT command; in the MTA's log it is the line that shows the
reply (or the lost connection) for that recipient on that host. Attempts that ended
before RCPT (a 421 at MAIL, a refused connection) are not counted: the farm's journal
has no recipient for them.
"""

import json
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field

# ------------------------------------------------------------------ what the log says


UNKNOWN = "?"  # what the log cannot tell


@dataclass
class Attempt:
    """One recipient offered to one host, as the MTA logged it."""

    recipient: str
    reached_dot: bool | None  # the whole message was sent (final dot, BDAT LAST); None: can't tell
    rcpt_class: int | str | None  # class of the RCPT reply (2, 4, 5); None: none came; UNKNOWN
    final: str | None  # sent, deferred, bounced; None when the MTA moved to the next host
    line: str


@dataclass
class Message:
    scenario: str
    message_id: str
    sender: str
    recipients: list
    queue_id: str | None = None
    attempts: list = field(default_factory=list)
    lines: list = field(default_factory=list)
    # recipient -> contacts that failed before any RCPT (a 421 to MAIL, a refused
    # greeting) while the MTA was delivering to it
    before_rcpt: dict = field(default_factory=lambda: defaultdict(int))

    def attempts_for(self, recipient):
        return [a for a in self.attempts if a.recipient == recipient]

    def outcome(self, recipient):
        finals = [a.final for a in self.attempts_for(recipient) if a.final]
        return finals[-1] if finals else None


def reached(text):
    """How far an SMTP transaction got, from the MTA's words for where it failed:
    'before' RCPT, 'rcpt' (RCPT sent), 'data' (DATA sent), 'dot' (the message sent)."""
    if re.search(r"RCPT TO", text):
        return "rcpt"
    if re.search(r"end of data|end of DATA|message body|BDAT", text, re.IGNORECASE):
        return "dot"
    if re.search(r"DATA", text):
        return "data"
    return "before"


def reply_class(text):
    """The class (2, 4, 5) of the first SMTP reply code in an MTA's log text, if any."""
    match = re.search(r"\b([245])\d\d[ -]", text)
    return int(match.group(1)) if match else None


def named_recipient(text, candidates):
    """A recipient that the reply text names (`<rcpt>`), if it is one of candidates."""
    for address in re.findall(r"<([^<>\s]+@[^<>\s]+)>", text):
        if address in candidates:
            return address
    return None


# ------------------------------------------------------------------ Postfix

POSTFIX_LINE = re.compile(r"^\w{3} [ \d]\d [\d:]{8} \S+ postfix/(?P<prog>\S+)\[(?P<pid>\d+)\]: (?P<text>.*)$")
POSTFIX_QID = re.compile(r"^(?P<qid>[0-9A-F]{6,}): (?P<text>.*)$")
POSTFIX_STATUS = re.compile(
    r"^to=<(?P<rcpt>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>[^,]+), .*status=(?P<status>\w+) \((?P<why>.*)\)$"
)
POSTFIX_TLS = re.compile(r"TLS connection established to [^:\s]+:(?P<port>\d+):")


def parse_postfix(path, by_id):
    """Postfix logs one `status=` line per recipient and delivery attempt, naming the
    recipient and the host (`relay=...:port`) of the last host it tried. A 4xx from a host
    that is not the last one in the list is logged as `host ... said: ...` with neither the
    recipient nor the port. Those lines are given to recipients as follows (see
    postfix_attempt): the recipient named in the reply, if any; else, in turn, the
    recipients of that delivery attempt that had not been finished on that host, in the
    order Postfix sends RCPTs (its queue manager sorts them by address). With
    smtp_tls_loglevel = 1 each TLS session starts with a line naming its port, which marks
    where one host's lines end and the next host's begin."""
    by_qid = {}
    items = defaultdict(list)  # qid -> the log items of its current delivery attempt
    new_session = {}  # smtp pid -> the TLS line of a session it started since its last qid line
    with open(path, errors="replace") as log:
        for raw in log:
            raw = raw.rstrip("\n")
            line = POSTFIX_LINE.match(raw)
            if not line:
                continue
            prog, pid, text = line["prog"], line["pid"], line["text"]
            if prog == "smtp" and POSTFIX_TLS.search(text):
                new_session[pid] = raw
                continue
            qid_line = POSTFIX_QID.match(text)
            if not qid_line:
                continue
            qid, text = qid_line["qid"], qid_line["text"]
            if prog == "cleanup" and text.startswith("message-id="):
                message = by_id.get(text[len("message-id=") :].strip("<>"))
                if message:
                    message.queue_id = qid
                    by_qid[qid] = message
            message = by_qid.get(qid)
            if not message:
                continue
            if prog == "smtp" and pid in new_session:
                session = new_session.pop(pid)
                message.lines.append(session)
                items[qid].append(("session", None, session))
            message.lines.append(raw)
            if prog == "qmgr" and ("(queue active)" in text or text == "removed"):
                postfix_attempt(message, items.pop(qid, []))
            elif prog == "smtp":
                items[qid].append(("line", text, raw))
    for qid, rest in items.items():
        postfix_attempt(by_qid[qid], rest)


def postfix_attempt(message, items):
    """The attempts of one delivery attempt (one queue-manager run of the message):
    items are its smtp lines, with a ("session", ...) item where a TLS session began."""
    statuses = [POSTFIX_STATUS.match(text) for kind, text, _ in items if kind == "line"]
    # Every recipient of the delivery attempt gets one status line; relay=none: not tried.
    pending = sorted({s["rcpt"] for s in statuses if s and s["relay"] != "none"})
    finished = set()  # sent or bounced on a host before this one
    turns, turn = [], 0
    mail_failed = False  # the line before was a host's reply to MAIL FROM

    def new_host(index):
        """The recipients that this host's unnamed lines go to, in turn: those not
        finished before it, less those it accepted or refused for good, whose status
        lines come after its unnamed ones."""
        nonlocal turns, turn
        done_here = set()
        for kind, text, _ in items[index:]:
            if kind == "session":
                break
            status = POSTFIX_STATUS.match(text)
            if status and status["status"] in ("sent", "bounced"):
                done_here.add(status["rcpt"])
        turns, turn = [r for r in pending if r not in finished | done_here], 0

    new_host(0)
    for index, (kind, text, raw) in enumerate(items):
        if kind == "session":
            new_host(index + 1)
            continue
        after_mail, mail_failed = mail_failed, "in reply to MAIL FROM" in text
        status = POSTFIX_STATUS.match(text)
        if status:
            if status["relay"] == "none":
                continue
            stage = "dot" if status["status"] == "sent" else reached(status["why"])
            postfix_try(message, status["rcpt"], stage, status["why"], status["status"], raw)
            if status["status"] in ("sent", "bounced"):
                finished.add(status["rcpt"])
            continue
        stage = reached(text)
        # After a 421 to MAIL FROM, Postfix (which pipelined the RCPTs with it) logs
        # "lost connection ... while sending RCPT TO": the farm never read those RCPTs,
        # since it closes after its 421.
        if stage == "rcpt" and after_mail:
            continue
        if stage == "before":
            # A host that refused before RCPT: a contact for every recipient it was for.
            if failed_before_rcpt(text):
                for rcpt in turns:
                    message.before_rcpt[rcpt] += 1
            continue
        # A 4xx (or a lost connection) from a host that was not the last one.
        rcpt = named_recipient(text, pending)
        if rcpt is None and turns:
            rcpt, turn = turns[turn % len(turns)], turn + 1
        postfix_try(message, rcpt or UNKNOWN, stage, text, None, raw)


def failed_before_rcpt(text):
    """Whether an MTA's log text is a host's refusal before RCPT: a reply to MAIL FROM,
    a greeting or EHLO refusal, or a connection lost before the transaction."""
    return re.search(
        r"in reply to MAIL FROM|refused to talk to me|while receiving the initial server greeting|in reply to (EHLO|HELO)|after pipelined end of data|after MAIL FROM",
        text,
    ) is not None


def postfix_try(message, rcpt, stage, why, final, raw):
    if stage == "before":
        return
    cls = 2 if stage in ("data", "dot") else reply_class(why)
    message.attempts.append(Attempt(rcpt, stage == "dot", cls, final, raw))


# ------------------------------------------------------------------ Exim

EXIM_LINE = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]{8,12} (?P<id>\w{6}-\w{6}-\w{2,4}) (?P<text>.*)$")
EXIM_ADDRESS = re.compile(r"^(?P<flag>=>|->|\*\*|==) (?P<rcpt>\S+) (?P<rest>.*)$")
EXIM_HOST = re.compile(r"H=\S+ \[[^\]]+\](?::(?P<port>\d+))?")


def parse_exim(path, by_id):
    """Exim logs one line per address and delivery: `=>` (delivered; `->` for more
    addresses of the same delivery), `==` (deferred) and `**` (bounced), each with the
    host (`H=... [ip]:port`) and the reply. A host that is not the last one tried gets a
    line of its own, `H=...: SMTP error ... after RCPT TO:<rcpt>: ...` for a recipient's
    4xx (Exim 4.96 shows port 25 there, whatever the port was), or without a recipient for
    a failure of the whole transaction. The last host's failure of the whole transaction
    is logged twice: as such a line, then as the `==` lines of its addresses."""
    by_eid = {}
    state = {}  # eid -> ExiDelivery: the delivery under way
    with open(path, errors="replace") as log:
        for raw in log:
            raw = raw.rstrip("\n")
            line = EXIM_LINE.match(raw)
            if not line:
                continue
            eid, text = line["id"], line["text"]
            if text.startswith("<= "):
                mid = re.search(r" id=(\S+)", text)
                message = by_id.get(mid.group(1).strip("<>")) if mid else None
                if message:
                    message.queue_id = eid
                    by_eid[eid] = message
            message = by_eid.get(eid)
            if not message:
                continue
            message.lines.append(raw)
            delivery = state.setdefault(eid, ExiDelivery())
            address = EXIM_ADDRESS.match(text)
            if address:
                delivery.address_line(message, address, raw)
            elif text.startswith("H="):
                delivery.host_line(message, text, raw)


@dataclass
class ExiDelivery:
    """The lines of one Exim delivery of a message, as they come."""

    host_failures: list = field(default_factory=list)  # (port, why, line) of whole transactions
    in_addresses: bool = False  # the last line was an address line: a new delivery starts next

    def host_line(self, message, text, raw):
        if self.in_addresses:
            self.host_failures, self.in_addresses = [], False
        host = EXIM_HOST.match(text)
        why = text[host.end() :].lstrip(": ") if host else text
        rcpt = re.search(r"(?:after|in response to) RCPT TO:<([^>]+)>", why)
        if rcpt:
            message.attempts.append(Attempt(rcpt.group(1), False, reply_class(why), None, raw))
        else:
            self.host_failures.append((host["port"] if host else None, why, raw))

    def address_line(self, message, address, raw):
        flag, rcpt, rest = address["flag"], address["rcpt"], address["rest"]
        self.in_addresses = True
        host = EXIM_HOST.search(rest)
        if not host:
            return  # "retry time not reached": no host was tried
        # A failed whole transaction on a host before this one, if it got as far as RCPT,
        # was an attempt for this address too; the last host's own line about the same
        # failure (same port) is not another attempt.
        for port, why, line in self.host_failures:
            if port != host["port"]:
                if exim_reached(why) == "before":
                    message.before_rcpt[rcpt] += 1
                exim_attempt(message, rcpt, why, None, line)
        final = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}[flag]
        if final != "sent" and exim_reached(exim_why(rest)) == "before":
            message.before_rcpt[rcpt] += 1
        if final == "sent":
            message.attempts.append(Attempt(rcpt, True, 2, final, raw))
        else:
            exim_attempt(message, rcpt, exim_why(rest), final, raw)


def exim_attempt(message, rcpt, why, final, raw):
    """The attempt that a failure (why) on one host was for rcpt, if it reached RCPT."""
    stage = exim_reached(why)
    if stage == "before":
        return
    if exim_lost_in_pipeline(why):
        message.attempts.append(Attempt(rcpt, None, UNKNOWN, final, raw))
    else:
        cls = 2 if stage in ("data", "dot") else reply_class(why)
        message.attempts.append(Attempt(rcpt, stage == "dot", cls, final, raw))


def exim_why(rest):
    """The reason after the host in an address line (`... H=... DT=0.002s: why`)."""
    host = EXIM_HOST.search(rest)
    after = rest[host.end() :] if host else rest
    return after.split(": ", 1)[1] if ": " in after else ""


def exim_lost_in_pipeline(why):
    """A connection lost, or a timeout, while MAIL, RCPT and BDAT LAST were in flight
    together: Exim names the last of them ("in response to pipelined end of data")
    whichever reply was missing, so its log cannot tell a close at RCPT (drop-*) from a
    close after the message (lost-*)."""
    return "pipelined" in why and reply_class(why) is None


def exim_reached(why):
    """As reached(), but for a 421: Exim 4.96 pipelines MAIL, RCPT and BDAT LAST (with the
    message) in one write, and names the last of them for a 421 whatever command the 421
    answered: mx2's 421 to MAIL FROM is logged "after pipelined end of data". A 421 closes
    the connection, and in these scenarios only MAIL gets one, so it counts as before RCPT."""
    if re.search(r"\b421[ -]", why) and "RCPT TO" not in why:
        return "before"
    return reached(why)


# ------------------------------------------------------------------ what the journal says


@dataclass
class Rcpt:
    """One RCPT command in the journal, with the class of its reply (None: no reply)."""

    seq: int
    host: str
    conn: int
    sender: str
    recipient: str
    reply_class: int | None = None


def read_journal(path):
    """The RCPT commands and the accepted messages of a journal file. A command's reply
    is the next reply on its connection: the farm answers commands in order."""
    rcpts, accepted = [], []
    sender = {}  # conn -> the MAIL FROM of its current transaction
    awaiting = {}  # conn -> the RCPT awaiting its reply
    with open(path) as journal:
        for text in journal:
            event = json.loads(text)
            kind, conn = event["event"], event.get("conn")
            if kind == "command":
                awaiting.pop(conn, None)
                verb = event.get("verb")
                if verb == "MAIL":
                    sender[conn] = event.get("sender", "")
                elif verb in ("RSET", "EHLO", "HELO"):
                    sender.pop(conn, None)
                elif verb == "RCPT":
                    rcpt = Rcpt(
                        event["seq"], event["host"], conn, sender.get(conn, ""), event.get("recipient", "")
                    )
                    rcpts.append(rcpt)
                    awaiting[conn] = rcpt
            elif kind == "reply":
                rcpt = awaiting.pop(conn, None)
                if rcpt:
                    rcpt.reply_class = event["reply"]["code"] // 100
            elif kind == "message-accepted":
                accepted.append(event)
            elif kind == "connection-closed":
                awaiting.pop(conn, None)
                sender.pop(conn, None)
    return rcpts, accepted


# ------------------------------------------------------------------ the checks


class Checks:
    def __init__(self, mta):
        self.mta = mta

    def ok(self, what):
        print(f"ok   {self.mta}: {what}")

    def fail(self, what, *details):
        print(f"FAIL {self.mta}: {what}")
        for detail in details:
            print(f"       {detail}")

    def check(self, good, what, *details):
        (self.ok if good else self.fail)(what, *(() if good else details))


def kept_when_reply_lost(recipient):
    """lost-* and late-* recipients: the farm keeps the message but never answers, so the
    MTA sends it again and the farm holds more than one copy; that is right."""
    return re.match(r"(lost|late)-", recipient) is not None


def pair_attempts(messages, journal_rcpts):
    """Pairs each attempt in the MTA's log with the journal RCPT that records it. Most
    messages have an envelope sender of their own, so (sender, recipient) finds their
    RCPTs. Two messages share sender and recipient (to carol@ from pair@); their attempts
    pair in the order of time: the n-th attempt for (sender, recipient) in the MTA's log,
    which the MTA writes as it goes, with the n-th RCPT for them in the journal, in
    sequence order. check_scenario then checks the pairing: a paired RCPT on whose
    connection the farm kept a message must have kept this message.
    Returns {(message_id, recipient): [(attempt, rcpt or None)]}, and the journal's RCPTs
    that no attempt pairs with, by (sender, recipient)."""
    log_side = defaultdict(list)
    for message in messages:
        for attempt in message.attempts:
            log_side[(message.sender, attempt.recipient)].append((message, attempt))
    journal_side = defaultdict(list)
    for rcpt in journal_rcpts:
        journal_side[(rcpt.sender, rcpt.recipient)].append(rcpt)
    pairs, extra = defaultdict(list), {}
    for key in set(log_side) | set(journal_side):
        logged, journalled = log_side.get(key, []), journal_side.get(key, [])
        for index, (message, attempt) in enumerate(logged):
            rcpt = journalled[index] if index < len(journalled) else None
            pairs[(message.message_id, attempt.recipient)].append((attempt, rcpt))
        extra[key] = journalled[len(logged) :]
    return pairs, extra


def check_scenario(checks, scenario, messages, journal_path):
    rcpts, accepted = read_journal(journal_path)
    pairs, extra = pair_attempts(messages, rcpts)
    copies = defaultdict(list)  # (message_id, recipient) -> its message-accepted events
    kept_on = defaultdict(set)  # (conn, recipient) -> Message-IDs kept on that connection
    for event in accepted:
        for recipient in event["recipients"]:
            copies[(event.get("message_id"), recipient)].append(event)
            kept_on[(event["conn"], recipient)].add(event.get("message_id"))

    for message in messages:
        label = f"{scenario} <{message.message_id}>"
        if message.queue_id is None:
            checks.fail(f"{label}: not found in the {checks.mta} log")
            continue
        for attempt in message.attempts:
            if attempt.recipient not in message.recipients:
                checks.fail(f"{label}: cannot tell which recipient this attempt was for", attempt.line)
        for recipient in message.recipients:
            what = f"{label} -> {recipient}"
            attempts = message.attempts_for(recipient)
            paired = pairs.get((message.message_id, recipient), [])
            journalled = [r for _, r in paired if r]
            left_over = extra.get((message.sender, recipient), [])
            outcome = message.outcome(recipient)
            expected = "bounced" if recipient.startswith("gone@") else "sent"  # only gone@ is refused for good
            checks.check(
                outcome == expected,
                f"{what}: {checks.mta} logged it {outcome or 'unfinished'} ({expected} expected)",
                *[a.line for a in attempts],
            )

            # 1. What the MTA sent is in the journal once; a lost reply's copies are right.
            got = copies.get((message.message_id, recipient), [])
            if kept_when_reply_lost(recipient):
                want = sum(1 for a in attempts if a.reached_dot is not False)
                why = f"once per attempt that sent the whole message ({want}): the farm kept each"
            else:
                want = 1 if outcome == "sent" else 0
                why = "exactly once" if want else "never"
            checks.check(
                len(got) == want,
                f"{what}: accepted {len(got)} time(s) in the journal, {why}",
                *[
                    f"journal seq {e['seq']}: {e['host']} conn {e['conn']} message-accepted as {e['id']}"
                    for e in got
                ],
            )

            # 3. The attempts that reached RCPT: one journal RCPT each, with the reply the
            #    MTA logged (its class), and on the connection that kept this message.
            unmatched = [a for a, r in paired if r is None]
            mismatched = [(a, r) for a, r in paired if r and a.rcpt_class not in (UNKNOWN, r.reply_class)]
            misplaced = [
                (a, r)
                for a, r in paired
                if r
                and a.reached_dot is not False
                and kept_on.get((r.conn, recipient))
                and message.message_id not in kept_on[(r.conn, recipient)]
            ]
            classes = "/".join(f"{a.rcpt_class or '-'}xx" for a in attempts)  # -: no reply; ?: can't tell
            checks.check(
                not unmatched and not mismatched and not misplaced and not left_over,
                f"{what}: {len(attempts)} attempt(s) reached RCPT in the {checks.mta} log ({classes or 'none'}), "
                f"{len(journalled) + len(left_over)} RCPT(s) in the journal",
                *[f"not in the journal: {a.line}" for a in unmatched],
                *[
                    f"the journal has a {r.reply_class or '-'}xx (seq {r.seq}, {r.host} conn {r.conn}) for: {a.line}"
                    for a, r in mismatched
                ],
                *[
                    f"{r.host} conn {r.conn} kept {sorted(kept_on[(r.conn, recipient)])}, not this message, for: {a.line}"
                    for a, r in misplaced
                ],
                *[
                    f"not in the {checks.mta} log: journal seq {r.seq}, {r.host} conn {r.conn}, RCPT from <{r.sender}>"
                    for r in left_over
                ],
            )

            # 2. A bounced address was refused with a 5xx and never offered again.
            if outcome == "bounced":
                last = journalled[-1] if journalled else None
                checks.check(
                    last is not None and last.reply_class == 5 and not unmatched and not left_over,
                    f"{what}: bounced after {len(attempts)} attempt(s); the last of its {len(journalled) + len(left_over)} RCPT(s) "
                    f"in the journal got a {last.reply_class if last else '-'}xx, and none came after it",
                )


def check_transcript(checks, scenario, messages, transcript_path):
    """The transcript (`mxfarm transcript --json`) against the MTA's log: per message and
    recipient, a delivery of that Message-ID, the outcome the MTA logged, as many attempts
    that reached RCPT as the MTA logged, and as many contacts refused before RCPT."""
    try:
        with open(transcript_path) as f:
            transcript = json.load(f)
    except (OSError, ValueError) as e:
        checks.fail(f"{scenario}: cannot read the transcript {transcript_path}: {e}")
        return
    number = {
        m["message_id"]: m["number"]
        for m in transcript.get("messages", [])
        if m.get("identified_by") == "message-id"
    }
    for message in messages:
        label = f"{scenario} <{message.message_id}>"
        n = number.get(message.message_id)
        if n is None:
            # A message whose every recipient was refused at RCPT never sent its content:
            # the transcript knows it by its envelope (each has a sender of its own here).
            by_envelope = [
                m["number"]
                for m in transcript.get("messages", [])
                if m.get("identified_by") == "envelope" and m["sender"] == message.sender
            ]
            n = by_envelope[0] if len(by_envelope) == 1 else None
        if n is None:
            checks.fail(f"{label}: no message with this Message-ID (or only this envelope) in the transcript")
            continue
        for recipient in message.recipients:
            what = f"{label} -> {recipient}: the transcript"
            found = [
                d
                for d in transcript["deliveries"]
                if d["message"] == n and (d.get("recipient") or "").lower() == recipient.lower()
            ]
            if len(found) != 1:
                checks.fail(f"{what} has {len(found)} deliveries for it (message {n}), 1 expected")
                continue
            delivery = found[0]
            attempts = delivery["attempts"]
            result = delivery["outcome"]["result"]
            logged = message.outcome(recipient)
            wanted = {"sent": {"delivered"}, "bounced": {"bounced"}}.get(logged, {"still-deferred"})
            if logged == "sent" and kept_when_reply_lost(recipient):
                wanted = {"duplicated", "delivered"}
            checks.check(
                result in wanted,
                f"{what} says {result}, the {checks.mta} log {logged or 'unfinished'}",
            )
            reached_rcpt = [a for a in attempts if "carried" in a]
            before = [a for a in attempts if "carried" not in a]
            logged_rcpt = len(message.attempts_for(recipient))
            logged_before = message.before_rcpt.get(recipient, 0)
            checks.check(
                len(reached_rcpt) == logged_rcpt and len(before) == logged_before,
                f"{what} has {len(reached_rcpt)} attempt(s) that reached RCPT and {len(before)} refused before it; "
                f"the {checks.mta} log {logged_rcpt} and {logged_before}",
                *[
                    f"#{i + 1} {a['host']} conn {a['conn']} {a['stage']}: "
                    + (f"{a['reply']['code']}" if a.get("reply") else a.get("closed", ""))
                    for i, a in enumerate(attempts)
                ],
            )
            guessed = [a for a in attempts if a.get("also_possible")]
            checks.check(
                not guessed,
                f"{what} ties every attempt to this message for certain",
                *[f"conn {a['conn']} could be message {a['also_possible']}" for a in guessed],
            )


def main(argv):
    if len(argv) < 5 or argv[1] not in ("postfix", "exim"):
        print(__doc__, file=sys.stderr)
        return 1
    mta, log_path, manifest_path, journals = argv[1], argv[2], argv[3], argv[4:]
    messages = []
    with open(manifest_path) as manifest:
        for line in manifest:
            if line.strip():
                scenario, mid, sender, recipients = line.rstrip("\n").split("\t")
                messages.append(Message(scenario, mid, sender, recipients.split(",")))
    by_id = {m.message_id: m for m in messages}
    (parse_postfix if mta == "postfix" else parse_exim)(log_path, by_id)

    checks = Checks(mta)
    for journal in journals:
        scenario = re.sub(r"\.jsonl$", "", journal.rsplit("/", 1)[-1])
        mine = [m for m in messages if m.scenario == scenario]
        check_scenario(checks, scenario, mine, journal)
        check_transcript(checks, scenario, mine, re.sub(r"\.jsonl$", ".transcript.json", journal))

    print(f"\n--- {mta}: its log lines, message by message")
    for message in messages:
        print(
            f"\n<{message.message_id}> from <{message.sender}> to {', '.join(message.recipients)} ({message.scenario}, queue id {message.queue_id})"
        )
        for line in message.lines:
            print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
