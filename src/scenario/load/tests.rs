//! The loader's tests of what a scenario loads into; the problems it reports are the
//! fixture cases under tests/fixtures/scenarios.

use std::net::IpAddr;
use std::time::Duration;

use crate::scenario::duration::{parse as parse_duration, show};
use crate::scenario::model::*;
use crate::scenario::{ScenarioError, load_str};

pub(super) const HOST: &str =
    "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:2525\"\n";

/// A one-host scenario with one rule written as `stage = ..., when = ..., then = ...`.
pub(super) fn with_rule(rule: &str) -> String {
    format!("{HOST}[[host.rule]]\n{rule}\n")
}

pub(super) fn load(text: &str) -> Result<Scenario, ScenarioError> {
    load_str("t.toml", text)
}

/// The (message, hint) of every problem; panics if the text loads.
pub(super) fn problems(text: &str) -> Vec<(String, String)> {
    match load(text) {
        Ok(_) => panic!("this loaded, but should not have:\n{text}"),
        Err(e) => e
            .problems()
            .iter()
            .map(|p| (p.message.clone(), p.hint.clone()))
            .collect(),
    }
}

#[track_caller]
pub(super) fn assert_loads(text: &str) -> Scenario {
    match load(text) {
        Ok(s) => s,
        Err(e) => panic!("should load:\n{text}\n{e}"),
    }
}

#[test]
fn defaults_and_lowercasing() {
    let s = assert_loads(
        "name = \"t\"\n[[domain]]\nname = \"AOL.Test.\"\nmx = [{ host = \"MX1\" }]\n\
         [[host]]\nname = \"MX1\"\nlisten = \"127.0.0.1:0\"\n\
         [[host]]\nname = \"mx2\"\nlisten = \"127.0.0.1:0\"\nhostname = \"Mx2.AOL.test\"\n",
    );
    assert_eq!(s.description, "");
    assert_eq!(s.seed, 0);
    assert_eq!(s.capture, CaptureLimits::default());
    assert_eq!(s.journal, JournalLimits::default());
    assert_eq!(s.limits.max_buffered_data, 256 * 1024 * 1024);
    assert_eq!(s.domains[0].name, "aol.test");
    assert_eq!(s.domains[0].mx[0].preference, 10);
    let mx1 = s.host("MX1").unwrap();
    assert_eq!(mx1.hostname, "mx1.mxfarm.test");
    assert_eq!(mx1.greeting, "ESMTP mxfarm");
    assert_eq!(mx1.extensions, Extensions::default());
    assert_eq!(mx1.limits, Limits::default());
    assert_eq!(mx1.parsing, Parsing::Strict);
    assert!(mx1.rules.is_empty());
    assert_eq!(s.host("mx2").unwrap().hostname, "mx2.aol.test");
}

#[test]
fn every_value_is_read() {
    let s = assert_loads(
        r#"
        name = "full"
        description = "All of it"
        seed = 42
        [capture]
        max-messages = 0
        max-bytes = "1MB"
        [journal]
        max-events = 10
        [limits]
        max-buffered-data = "100MiB"
        [[host]]
        name = "mx1"
        listen = "[::1]:2525"
        greeting = "ESMTP hi"
        parsing = "lenient"
        [host.extensions]
        pipelining = false
        8bitmime = false
        [host.limits]
        max-connections = 2
        max-connections-per-client = 1
        max-recipients = 3
        max-line-length = 512
        max-errors = 1
        command-timeout = "1m"
        data-timeout = "2m"
        [[host.rule]]
        stage = "rcpt"
        when = { client = ["192.0.2.9/24", "2001:db8::1"], helo = "*.test", mail = ["<>", "@Example.test"], rcpt = "Full-*@aol.test", size-above = "1KiB", size-below = 4096, attempt = 3, per = "recipient", chance = 1 }
        then = { reply = "452 4.2.2 Mailbox full\nTry later", delay = "2s" }
        "#,
    );
    assert_eq!((s.seed, s.description.as_str()), (42, "All of it"));
    assert_eq!(s.capture.max_messages, 0);
    assert_eq!(s.capture.max_bytes, 1_000_000);
    assert_eq!(s.journal.max_events, 10);
    assert_eq!(s.limits.max_buffered_data, 100 * 1024 * 1024);
    let h = &s.hosts[0];
    assert_eq!(h.parsing, Parsing::Lenient);
    assert_eq!(h.listen, "[::1]:2525".parse().unwrap());
    assert_eq!(h.greeting, "ESMTP hi");
    assert!(!h.extensions.pipelining && !h.extensions.eight_bit_mime);
    assert!(h.extensions.size && h.extensions.chunking);
    let l = h.limits;
    assert_eq!((l.max_connections, l.max_recipients), (2, 3));
    assert_eq!(l.max_connections_per_client, 1);
    assert_eq!((l.max_line_length, l.max_errors), (512, 1));
    assert_eq!(l.command_timeout, Duration::from_secs(60));
    assert_eq!(l.data_timeout, Duration::from_secs(120));
    let rule = &h.rules[0];
    assert_eq!(&*rule.origin, "host mx1 rule 1");
    assert_eq!(
        rule.when,
        vec![
            Condition::Client(vec![
                "192.0.2.0/24".parse().unwrap(),
                "2001:db8::1/128".parse().unwrap()
            ]),
            Condition::Helo(vec![Glob::new("*.test")]),
            Condition::Sender(vec![
                AddressPattern::Null,
                AddressPattern::Domain("example.test".into())
            ]),
            Condition::Recipient(vec![AddressPattern::Glob(Glob::new("Full-*@aol.test"))]),
            Condition::SizeAbove(1024),
            Condition::SizeBelow(4096),
            Condition::Attempt {
                per: AttemptKey::Recipient,
                range: AttemptRange { min: 3, max: 3 }
            },
            Condition::Chance(1.0),
        ]
    );
    assert_eq!(
        rule.then,
        Action {
            delay: Some(Duration::from_secs(2)),
            kind: ActionKind::Reply {
                reply: Reply::parse("452 4.2.2 Mailbox full\nTry later").unwrap(),
                close: false
            }
        }
    );
}

#[test]
fn actions() {
    let then = |stage: &str, then: &str| {
        let s = assert_loads(&with_rule(&format!("stage = \"{stage}\"\nthen = {then}")));
        s.hosts[0].rules[0].then.clone()
    };
    let kind = |stage: &str, t: &str| then(stage, t).kind;
    assert_eq!(kind("rcpt", "{ accept = true }"), ActionKind::Accept);
    assert_eq!(kind("end-of-data", "{ close = true }"), ActionKind::Close);
    assert_eq!(
        kind("data", "{ hang = \"10m\" }"),
        ActionKind::Hang(Duration::from_secs(600))
    );
    assert_eq!(
        then("connect", "{ delay = \"30s\" }"),
        Action {
            delay: Some(Duration::from_secs(30)),
            kind: ActionKind::Accept
        }
    );
    // a 421 always closes; close = true closes after any refusal
    let closes = |stage: &str, t: &str| match kind(stage, t) {
        ActionKind::Reply { close, .. } => close,
        other => panic!("{other:?}"),
    };
    assert!(closes("mail", "{ reply = \"421 4.7.0 Bye\" }"));
    assert!(closes("rcpt", "{ reply = \"550 5.1.1 No\", close = true }"));
    assert!(!closes(
        "rcpt",
        "{ reply = \"550 5.1.1 No\", close = false }"
    ));
    assert!(!closes("rcpt", "{ reply = \"550 5.1.1 No\" }"));
    // each stage's own positive code is allowed
    for (stage, reply) in [
        ("connect", "220 mx ready"),
        ("mail", "250 2.1.0 Fine"),
        ("rcpt", "250 2.1.5 Ok"),
        ("rcpt", "251 2.1.5 Forwarding"),
        ("data", "354 Go ahead"),
        ("end-of-data", "250 2.0.0 Queued"),
        ("rset", "250 Ok"),
        ("quit", "221 2.0.0 Bye"),
    ] {
        kind(stage, &format!("{{ reply = \"{reply}\" }}"));
    }
}

#[test]
fn rule_order_is_own_rules_then_each_ruleset_in_listed_order() {
    let s = assert_loads(
        r#"
        name = "t"
        [[host]]
        name = "mx1"
        listen = "127.0.0.1:2525"
        rulesets = ["b", "a"]
        [[host.rule]]
        stage = "rcpt"
        when = { rcpt = "own1@x.test" }
        then = { reply = "451 own 1" }
        [[host.rule]]
        stage = "mail"
        then = { reply = "451 own 2" }
        [[host]]
        name = "mx2"
        listen = "127.0.0.1:2526"
        rulesets = "a"
        [[ruleset]]
        name = "a"
        [[ruleset.rule]]
        stage = "rcpt"
        then = { reply = "451 a 1" }
        [[ruleset]]
        name = "b"
        [[ruleset.rule]]
        stage = "rcpt"
        when = { rcpt = "b1@x.test" }
        then = { reply = "451 b 1" }
        [[ruleset.rule]]
        stage = "rcpt"
        when = { rcpt = "b2@x.test" }
        then = { reply = "451 b 2" }
        "#,
    );
    let origins = |host: &str| -> Vec<String> {
        s.host(host)
            .unwrap()
            .rules
            .iter()
            .map(|r| r.origin.to_string())
            .collect()
    };
    assert_eq!(
        origins("mx1"),
        [
            "host mx1 rule 1",
            "host mx1 rule 2",
            "ruleset b rule 1",
            "ruleset b rule 2",
            "ruleset a rule 1"
        ]
    );
    assert_eq!(origins("mx2"), ["ruleset a rule 1"]);
    let texts: Vec<String> = s.hosts[0]
        .rules
        .iter()
        .map(|r| match &r.then.kind {
            ActionKind::Reply { reply, .. } => reply.one_line(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        ["451 own 1", "451 own 2", "451 b 1", "451 b 2", "451 a 1"]
    );
}

/// A one-host scenario with one rule at `stage`.
pub(super) fn rule(stage: &str, when: &str, then: &str) -> String {
    with_rule(&format!(
        "stage = \"{stage}\"\nwhen = {when}\nthen = {then}"
    ))
}

/// The conditions and action of the one rule of `rule(stage, when, then)`.
#[track_caller]
pub(super) fn loaded(stage: &str, when: &str, then: &str) -> (Vec<Condition>, Action) {
    let s = assert_loads(&rule(stage, when, then));
    let r = &s.hosts[0].rules[0];
    (r.when.clone(), r.then.clone())
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn reverse_dns_names_addresses_lowercase_without_the_trailing_dot() {
    let s = assert_loads(&format!(
        "{HOST}[reverse-dns]\n\"192.0.2.1\" = \"Mail.Sender.TEST.\"\n' 2001:DB8::1 ' = \"mail6.sender.test\"\n"
    ));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(
        s.reverse_dns.into_iter().collect::<Vec<_>>(),
        [
            (ip("192.0.2.1"), "mail.sender.test".to_string()),
            (ip("2001:db8::1"), "mail6.sender.test".to_string()),
        ]
    );
    // no table: no names, and `ptr` still works (every client lacks a PTR)
    let s = assert_loads(&rule(
        "connect",
        "{ ptr = \"missing\" }",
        "{ reset = true }",
    ));
    assert!(s.reverse_dns.is_empty());
    assert_loads(&format!("{HOST}[reverse-dns]\n"));
}

#[test]
fn new_conditions_are_read() {
    let (when, _) = loaded(
        "rcpt",
        "{ attempt = \"<3\", first-attempt-within = \"2h\", per = \"recipient\", time = \"10m-1h\", connection = \"<=3\", message = \">5\", ptr = \"Mismatch\", helo-fqdn = false }",
        "{ reply = \"452 4.2.2 Mailbox full\" }",
    );
    assert_eq!(
        when,
        vec![
            Condition::Attempt {
                per: AttemptKey::Recipient,
                range: AttemptRange { min: 1, max: 2 }
            },
            Condition::FirstAttemptWithin {
                per: AttemptKey::Recipient,
                within: secs(7200)
            },
            Condition::Time(TimeRange {
                from: secs(600),
                until: Some(secs(3600))
            }),
            Condition::Connection(AttemptRange { min: 1, max: 3 }),
            Condition::Message(AttemptRange {
                min: 6,
                max: u32::MAX
            }),
            Condition::Ptr(PtrCheck::MismatchesHelo),
            Condition::HeloFqdn(false),
        ]
    );
    // `first-attempt-within` alone counts per triplet by default, and `per` applies
    // to it as to `attempt`
    let (when, _) = loaded(
        "rcpt",
        "{ first-attempt-within = \"1d\" }",
        "{ reply = \"452 4.2.2 Full\" }",
    );
    assert_eq!(
        when,
        [Condition::FirstAttemptWithin {
            per: AttemptKey::Triplet,
            within: secs(86_400)
        }]
    );
    let (when, _) = loaded(
        "connect",
        "{ first-attempt-within = \"3d\", per = \"client\", connection = 2, ptr = \"present\" }",
        "{ reply = \"421 4.7.0 Warming up\" }",
    );
    assert_eq!(
        when,
        [
            Condition::FirstAttemptWithin {
                per: AttemptKey::Client,
                within: secs(3 * 86_400)
            },
            Condition::Connection(AttemptRange { min: 2, max: 2 }),
            Condition::Ptr(PtrCheck::Present),
        ]
    );
    let (when, _) = loaded(
        "ehlo",
        "{ ptr = \"missing\", helo-fqdn = true }",
        "{ reply = \"550 5.7.1 No\" }",
    );
    assert_eq!(
        when,
        [Condition::Ptr(PtrCheck::Missing), Condition::HeloFqdn(true)]
    );
}

#[test]
fn durations_are_shown_as_written() {
    for (d, shown) in [
        (Duration::ZERO, "0s"),
        (secs(300), "5m"),
        (secs(5400), "1h30m"),
        (secs(2 * 86_400), "2d"),
        (secs(35 * 86_400 + 61), "35d1m1s"),
        (Duration::from_millis(1250), "1s250ms"),
    ] {
        assert_eq!(show(d), shown);
        assert_eq!(parse_duration(shown).unwrap(), d);
    }
}

#[test]
fn reset_and_lose_reply() {
    assert_eq!(
        loaded("connect", "{ time = \"<10m\" }", "{ reset = true }").1,
        Action {
            delay: None,
            kind: ActionKind::Reset
        }
    );
    assert_eq!(
        loaded("rcpt", "{}", "{ reset = true, delay = \"1s\" }").1,
        Action {
            delay: Some(secs(1)),
            kind: ActionKind::Reset
        }
    );
    assert_eq!(
        loaded("end-of-data", "{ chance = 0.1 }", "{ lose-reply = true }").1,
        Action {
            delay: None,
            kind: ActionKind::LoseReply
        }
    );
}

#[test]
fn reply_placeholders() {
    // every known placeholder, in a plain reply and in each limit's
    let all = "{client} {helo} {sender} {recipient} {domain} {hostname}";
    let (_, then) = loaded("rcpt", "{}", &format!("{{ reply = \"550 5.7.1 {all}\" }}"));
    let ActionKind::Reply { reply, .. } = then.kind else {
        panic!()
    };
    assert_eq!(reply.lines, [all]);
    loaded(
        "rcpt",
        "{}",
        &format!("{{ rate-limit = {{ limit = 1, window = \"1h\", reply = \"450 {all}\" }} }}"),
    );
    loaded(
        "connect",
        "{}",
        &format!("{{ concurrency = {{ limit = 1, reply = \"421 {all}\" }} }}"),
    );
    // a problem points at the placeholder itself, when it can be found in the file
    let text = rule(
        "rcpt",
        "{}",
        "{ reply = \"550 5.1.1 <{recipent}> unknown {\" }",
    );
    let err = load(&text).unwrap_err();
    let spans: Vec<&str> = err
        .problems()
        .iter()
        .map(|p| &text[p.span.clone().unwrap()])
        .collect();
    assert_eq!(spans, ["{recipent}", "{"], "{err}");
    let text = rule("rcpt", "{}", "{ reply = \"550 a\\nb {x}\" }");
    let err = load(&text).unwrap_err();
    assert_eq!(&text[err.problems()[0].span.clone().unwrap()], "{x}");
    // a `{` written as an escape cannot be found: the whole value
    let text = rule("rcpt", "{}", "{ reply = \"550 \\u007Bx}\" }");
    let err = load(&text).unwrap_err();
    assert_eq!(
        err.problems()[0].message,
        "unknown placeholder `{x}` in the reply"
    );
    assert_eq!(
        &text[err.problems()[0].span.clone().unwrap()],
        "\"550 \\u007Bx}\""
    );
}

#[test]
fn stateful_rules_without_when_do_not_hide_later_rules() {
    let s = assert_loads(&with_rule(
        "stage = \"rcpt\"\nthen = { greylist = {} }\n\
         [[host.rule]]\nstage = \"rcpt\"\nthen = { rate-limit = { limit = 10, window = \"1h\" } }\n\
         [[host.rule]]\nstage = \"connect\"\nthen = { concurrency = { limit = 5 } }\n\
         [[host.rule]]\nstage = \"connect\"\nthen = { rate-limit = { limit = 5, window = \"1m\" } }\n\
         [[host.rule]]\nstage = \"rcpt\"\nthen = { reply = \"550 5.1.1 No\" }",
    ));
    assert_eq!(s.hosts[0].rules.len(), 5);
    // but any other action still does
    let found = problems(&with_rule(
        "stage = \"connect\"\nthen = { reset = true }\n\
         [[host.rule]]\nstage = \"connect\"\nthen = { concurrency = { limit = 5 } }",
    ));
    assert!(found[0].0.contains("can never match"), "{found:?}");
}

/// A one-host scenario whose host offers STARTTLS (`tls = "valid"`).
pub(super) const TLS_HOST: &str =
    "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:2525\"\ntls = \"valid\"\n";

/// `TLS_HOST` with one rule at `stage`.
#[test]
fn a_misspelt_required_key_is_reported_once() {
    let found = problems("nmae = \"t\"\n[[host]]\nnam = \"mx1\"\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found.iter().all(|(m, _)| m.starts_with("unknown key")));
    // but an unrelated unknown key does not hide a missing one
    let found = problems("name = \"t\"\n[[host]]\ncolour = \"red\"\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(found.len(), 2, "{found:#?}");
}

#[test]
fn all_problems_are_reported_together_in_file_order() {
    let err = load(&with_rule(
        "stage = \"rcpto\"\nwhen = { client = \"x\", chance = 2 }\nthen = { reply = \"45\" }",
    ))
    .unwrap_err();
    let lines: Vec<usize> = err.problems().iter().map(|p| p.line).collect();
    assert_eq!(err.problems().len(), 4, "{err}");
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

/// Loading never panics, whatever is cut out of a real scenario: every problem is a
/// `ScenarioError`, rendered without panicking.
#[test]
fn truncated_or_mangled_scenarios_are_errors_not_panics() {
    let source = crate::scenario::embedded()[0].source;
    let boundaries: Vec<usize> = source
        .char_indices()
        .map(|(i, _)| i)
        .filter(|i| i % 7 == 0)
        .collect();
    for &cut in &boundaries {
        if let Err(e) = load(&source[..cut]) {
            let _ = e.to_string();
        }
        let mut mangled = String::from(&source[..cut]);
        let rest: String = source[cut..].chars().skip(3).collect();
        mangled.push_str(&rest.replacen('"', "", 1));
        if let Err(e) = load(&mangled) {
            let _ = e.to_string();
        }
    }
}
