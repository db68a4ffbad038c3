//! The loader's tests of what a scenario loads into; the problems it reports are the
//! fixture cases under tests/fixtures/scenarios.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::tls::TLS_MODES;
use crate::scenario::duration::{parse as parse_duration, show};
use crate::scenario::error::Issue;
use crate::scenario::model::*;
use crate::scenario::{ScenarioError, load_str};

const HOST: &str = "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:2525\"\n";

/// A one-host scenario with one rule written as `stage = ..., when = ..., then = ...`.
fn with_rule(rule: &str) -> String {
    format!("{HOST}[[host.rule]]\n{rule}\n")
}

fn load(text: &str) -> Result<Scenario, ScenarioError> {
    load_str("t.toml", text)
}

/// The (message, hint) of every problem; panics if the text loads.
fn problems(text: &str) -> Vec<(String, String)> {
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
fn assert_loads(text: &str) -> Scenario {
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
fn rule(stage: &str, when: &str, then: &str) -> String {
    with_rule(&format!(
        "stage = \"{stage}\"\nwhen = {when}\nthen = {then}"
    ))
}

/// The conditions and action of the one rule of `rule(stage, when, then)`.
#[track_caller]
fn loaded(stage: &str, when: &str, then: &str) -> (Vec<Condition>, Action) {
    let s = assert_loads(&rule(stage, when, then));
    let r = &s.hosts[0].rules[0];
    (r.when.clone(), r.then.clone())
}

fn secs(n: u64) -> Duration {
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
fn greylist_defaults_are_postgrey_s() {
    let (_, then) = loaded("rcpt", "{}", "{ greylist = {} }");
    assert_eq!(
        then,
        Action {
            delay: None,
            kind: ActionKind::Greylist(Arc::new(Greylist {
                delay: secs(300),
                retry_window: secs(2 * 86_400),
                expiry: secs(35 * 86_400),
                whitelist_after: Some(5),
                scope: StateScope::Shared,
                ipv4_prefix: 24,
                ipv6_prefix: 64,
                normalize_sender: true,
                max_entries: 1_000_000,
                reply: Reply::parse(
                    "450 4.2.0 <{recipient}>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/{domain}.html"
                )
                .unwrap(),
            }))
        }
    );
}

#[test]
fn every_greylist_value_is_read() {
    let (_, then) = loaded(
        "end-of-data",
        "{ mail = \"<>\" }",
        "{ greylist = { delay = \"30m\", retry-window = \"1d\", expiry = \"5d\", whitelist-after = 0, state = \"host\", ipv4-prefix = 32, ipv6-prefix = 128, normalize-sender = false, max-entries = 5000, reply = \"451 4.7.1 Greylisting in action, please come back in {remaining-hms} ({remaining}s)\" }, delay = \"2s\" }",
    );
    assert_eq!(then.delay, Some(secs(2)));
    let ActionKind::Greylist(g) = then.kind else {
        panic!("{:?}", then.kind)
    };
    assert_eq!(
        *g,
        Greylist {
            delay: secs(1800),
            retry_window: secs(86_400),
            expiry: secs(5 * 86_400),
            whitelist_after: None,
            scope: StateScope::Host,
            ipv4_prefix: 32,
            ipv6_prefix: 128,
            normalize_sender: false,
            max_entries: 5000,
            reply: Reply::new(
                451,
                Some("4.7.1"),
                "Greylisting in action, please come back in {remaining-hms} ({remaining}s)"
            ),
        }
    );
    let (_, then) = loaded(
        "data",
        "{}",
        "{ greylist = { whitelist-after = 3, state = \"shared\" } }",
    );
    let ActionKind::Greylist(g) = then.kind else {
        panic!()
    };
    assert_eq!((g.whitelist_after, g.scope), (Some(3), StateScope::Shared));
}

#[test]
fn rate_limit_defaults_and_values() {
    let (_, then) = loaded(
        "connect",
        "{}",
        "{ rate-limit = { limit = 100, window = \"1h\" } }",
    );
    assert_eq!(
        then.kind,
        ActionKind::RateLimit(Arc::new(RateLimit {
            per: RateKey::Client,
            limit: 100,
            window: secs(3600),
            sliding: true,
            scope: StateScope::Shared,
            reply: Reply::new(451, Some("4.7.1"), "Rate limit exceeded, try again later"),
            close: false,
            max_entries: 1_000_000,
        }))
    );
    let (_, then) = loaded(
        "rcpt",
        "{ rcpt = \"@yahoo.test\" }",
        "{ rate-limit = { per = \"recipient\", limit = 1, window = \"10m\", kind = \"fixed\", state = \"host\", reply = \"450 User is receiving mail too quickly\", close = true, max-entries = 300 } }",
    );
    assert_eq!(
        then.kind,
        ActionKind::RateLimit(Arc::new(RateLimit {
            per: RateKey::Recipient,
            limit: 1,
            window: secs(600),
            sliding: false,
            scope: StateScope::Host,
            reply: Reply::new(450, None, "User is receiving mail too quickly"),
            close: true,
            max_entries: 300,
        }))
    );
    for (stage, per, key) in [
        ("mail", "sender", RateKey::Sender),
        ("end-of-data", "client-net", RateKey::ClientNet),
        ("data", "sender", RateKey::Sender),
        ("connect", "client-net", RateKey::ClientNet),
    ] {
        let (_, then) = loaded(
            stage,
            "{}",
            &format!(
                "{{ rate-limit = {{ per = \"{per}\", limit = 5, window = \"1m\", reply = \"554 5.7.1 Too many\" }} }}"
            ),
        );
        let ActionKind::RateLimit(limit) = then.kind else {
            panic!()
        };
        assert_eq!(limit.per, key);
        assert_eq!(limit.reply.code, 554);
    }
}

#[test]
fn concurrency_defaults_and_values() {
    let (_, then) = loaded("connect", "{}", "{ concurrency = { limit = 10 } }");
    assert_eq!(
        then.kind,
        ActionKind::Concurrency(Arc::new(Concurrency {
            per: RateKey::Client,
            limit: 10,
            reply: Reply::new(
                421,
                Some("4.7.0"),
                "{hostname} Error: too many connections from {client}"
            ),
        }))
    );
    let (_, then) = loaded(
        "connect",
        "{ client = \"198.51.100.0/24\" }",
        "{ concurrency = { per = \"client-net\", limit = 2, reply = \"451 4.7.652 The mail server [{client}] has exceeded the maximum number of connections.\" }, delay = \"1s\" }",
    );
    assert_eq!(then.delay, Some(secs(1)));
    let ActionKind::Concurrency(c) = then.kind else {
        panic!()
    };
    assert_eq!((c.per, c.limit, c.reply.code), (RateKey::ClientNet, 2, 451));
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
const TLS_HOST: &str =
    "name = \"t\"\n[[host]]\nname = \"mx1\"\nlisten = \"127.0.0.1:2525\"\ntls = \"valid\"\n";

/// `TLS_HOST` with one rule at `stage`.
fn tls_rule(stage: &str, when: &str, then: &str) -> String {
    format!("{TLS_HOST}[[host.rule]]\nstage = \"{stage}\"\nwhen = {when}\nthen = {then}\n")
}

/// The host's TLS settings when it is written `tls = <value>`.
#[track_caller]
fn tls_of(value: &str) -> TlsSettings {
    assert_loads(&format!("{HOST}tls = {value}\n")).hosts[0]
        .tls
        .clone()
}

/// Validates `text` as a scenario file in `dir`.
fn load_in(dir: &Path, text: &str) -> Result<Scenario, Vec<Issue>> {
    crate::scenario::load::load(text, Some(dir))
}

const PEM_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const PEM_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

#[test]
fn tls_is_off_unless_written_and_each_mode_reads_as_a_string() {
    assert_eq!(assert_loads(HOST).hosts[0].tls, TlsSettings::default());
    assert_eq!(TlsSettings::default().mode, TlsMode::Off);
    for (name, mode) in TLS_MODES {
        assert_eq!(
            tls_of(&format!("\"{name}\"")),
            TlsSettings {
                mode,
                versions: TlsVersions::Any,
                files: None
            },
            "{name}"
        );
        assert_eq!(mode.as_str(), name);
    }
    assert_eq!(tls_of("\" Self-Signed \"").mode, TlsMode::SelfSigned);
}

#[test]
fn tls_as_a_table_defaults_to_valid_and_any_version() {
    let valid = |versions| TlsSettings {
        mode: TlsMode::Valid,
        versions,
        files: None,
    };
    assert_eq!(tls_of("{}"), valid(TlsVersions::Any));
    assert_eq!(tls_of("{ versions = \"1.2\" }"), valid(TlsVersions::Only12));
    assert_eq!(
        tls_of("{ mode = \"valid\", versions = \"1.3\" }"),
        valid(TlsVersions::Only13)
    );
    assert_eq!(tls_of("{ versions = \"ANY\" }"), valid(TlsVersions::Any));
    assert_eq!(
        tls_of("{ mode = \"expired\", versions = \"1.3\" }"),
        TlsSettings {
            mode: TlsMode::Expired,
            versions: TlsVersions::Only13,
            files: None
        }
    );
    assert_eq!(tls_of("{ mode = \"off\" }"), TlsSettings::default());
    // and as a [host.tls] table
    let s = assert_loads(&format!(
        "{HOST}[host.tls]\nmode = \"wrong-hostname\"\nversions = \"1.2\"\n"
    ));
    assert_eq!(
        (s.hosts[0].tls.mode, s.hosts[0].tls.versions),
        (TlsMode::WrongHostname, TlsVersions::Only12)
    );
}

#[test]
fn tls_cert_and_key_files_are_found_relative_to_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    let cert = dir.path().join("certs/chain.pem");
    let key = dir.path().join("certs/key.pem");
    std::fs::write(&cert, PEM_CERT).unwrap();
    // a key file may hold the certificate too
    std::fs::write(&key, format!("{PEM_CERT}{PEM_KEY}")).unwrap();

    // absolute paths, from anywhere
    let s = assert_loads(&format!(
        "{HOST}tls = {{ cert = {:?}, key = {:?} }}\n",
        cert.display().to_string(),
        key.display().to_string()
    ));
    let files = |s: &Scenario| s.hosts[0].tls.files.clone().unwrap();
    assert_eq!(
        files(&s),
        TlsFiles {
            cert: cert.clone(),
            key: key.clone()
        }
    );
    assert_eq!(s.hosts[0].tls.mode, TlsMode::Valid);

    // relative paths, from the scenario file's directory
    let text = format!(
        "{HOST}tls = {{ mode = \"valid\", versions = \"1.3\", cert = \"certs/chain.pem\", key = \"certs/key.pem\" }}\n"
    );
    let s = load_in(dir.path(), &text).unwrap();
    assert_eq!(files(&s), TlsFiles { cert, key });
    assert_eq!(s.hosts[0].tls.versions, TlsVersions::Only13);

    // from the current directory when the scenario is given as text
    let here = tempfile::tempdir_in(".").unwrap();
    std::fs::write(here.path().join("c.pem"), PEM_CERT).unwrap();
    std::fs::write(here.path().join("k.pem"), PEM_KEY).unwrap();
    let name = here.path().file_name().unwrap().to_str().unwrap();
    let s = assert_loads(&format!(
        "{HOST}tls = {{ cert = \"{name}/c.pem\", key = \"{name}/k.pem\" }}\n"
    ));
    assert_eq!(files(&s).cert, PathBuf::from(format!("{name}/c.pem")));

    // a missing file is named as written, and where it was looked for
    let err = load_in(
        dir.path(),
        &format!("{HOST}tls = {{ cert = \"certs/nope.pem\", key = \"certs/key.pem\" }}\n"),
    )
    .unwrap_err();
    assert_eq!(err.len(), 1, "{err:#?}");
    let looked = dir.path().join("certs/nope.pem");
    assert_eq!(
        err[0].message,
        format!(
            "the certificate chain file `certs/nope.pem` does not exist (looked for {})",
            looked.display()
        )
    );
    assert!(
        err[0]
            .hint
            .contains("relative to the directory of the scenario file")
    );
    let found = problems(&format!(
        "{HOST}tls = {{ cert = \"no/such/chain.pem\", key = \"no/such/key.pem\" }}\n"
    ));
    assert_eq!(
        found.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>(),
        [
            "the certificate chain file `no/such/chain.pem` does not exist",
            "the private key file `no/such/key.pem` does not exist"
        ]
    );

    // files that are not what they should be
    let text =
        |cert: &str, key: &str| format!("{HOST}tls = {{ cert = \"{cert}\", key = \"{key}\" }}\n");
    std::fs::write(dir.path().join("junk.der"), [0x30u8, 0x82, 0x01]).unwrap();
    let cases = [
        (
            text("certs/key.pem", "certs/chain.pem"),
            "`certs/chain.pem` holds a certificate, not a private key",
            "may be swapped",
        ),
        (
            text("junk.der", "certs/key.pem"),
            "`junk.der` holds no PEM certificate",
            "openssl x509 -inform der",
        ),
        (
            text("certs/chain.pem", "junk.der"),
            "`junk.der` holds no PEM private key",
            "BEGIN PRIVATE KEY",
        ),
        (
            text("certs", "certs/key.pem"),
            "`certs` is a directory, not a certificate chain file",
            "PEM file",
        ),
    ];
    std::fs::write(dir.path().join("certs/only-key.pem"), PEM_KEY).unwrap();
    let swapped = load_in(dir.path(), &text("certs/only-key.pem", "certs/key.pem")).unwrap_err();
    assert_eq!(
        swapped[0].message,
        "`certs/only-key.pem` holds a private key, not a certificate"
    );
    for (text, message, hint) in cases {
        let err = load_in(dir.path(), &text).unwrap_err();
        assert!(
            err.iter()
                .any(|i| i.message.contains(message) && i.hint.contains(hint)),
            "{message}: {err:#?}"
        );
    }
}

#[test]
fn starttls_rules_conditions_and_actions_are_read() {
    let action = |stage: &str, when: &str, then: &str| {
        let s = assert_loads(&tls_rule(stage, when, then));
        let rule = &s.hosts[0].rules[0];
        assert_eq!(rule.stage, Stage::parse(stage).unwrap());
        (rule.when.clone(), rule.then.clone())
    };
    let kind = |then: &str| action("starttls", "{}", then).1.kind;
    assert_eq!(kind("{ accept = true }"), ActionKind::Accept);
    assert_eq!(
        kind("{ reply = \"454 4.7.0 TLS not available due to temporary reason\" }"),
        ActionKind::Reply {
            reply: Reply::new(
                454,
                Some("4.7.0"),
                "TLS not available due to temporary reason"
            ),
            close: false
        }
    );
    assert_eq!(
        kind("{ reply = \"220 2.0.0 Go ahead\" }"),
        ActionKind::Reply {
            reply: Reply::new(220, Some("2.0.0"), "Go ahead"),
            close: false
        }
    );
    for (name, fault) in [
        ("close-after-ready", TlsFault::CloseAfterReady),
        ("alert", TlsFault::Alert),
        ("close-mid-handshake", TlsFault::CloseMidHandshake),
        ("Garbage", TlsFault::Garbage),
    ] {
        assert_eq!(
            kind(&format!("{{ tls-fault = \"{name}\" }}")),
            ActionKind::TlsFault(fault)
        );
    }
    assert_eq!(
        action(
            "starttls",
            "{ chance = 0.5 }",
            "{ tls-fault = { hang = \"10m\" }, delay = \"2s\" }"
        )
        .1,
        Action {
            delay: Some(secs(2)),
            kind: ActionKind::TlsFault(TlsFault::Hang(secs(600)))
        }
    );
    assert_eq!(
        action(
            "ehlo",
            "{ connection = \"<=3\" }",
            "{ hide-starttls = true }"
        )
        .1,
        Action {
            delay: None,
            kind: ActionKind::HideStarttls
        }
    );
    assert_eq!(
        action("ehlo", "{}", "{ hide-starttls = true, delay = \"1s\" }").1,
        Action {
            delay: Some(secs(1)),
            kind: ActionKind::HideStarttls
        }
    );
    // `tls` from `ehlo` on
    for stage in [
        "ehlo",
        "mail",
        "rcpt",
        "data",
        "end-of-data",
        "rset",
        "quit",
    ] {
        let (when, _) = action(
            stage,
            "{ tls = false }",
            "{ reply = \"530 5.7.0 Must issue a STARTTLS command first\" }",
        );
        assert_eq!(when, [Condition::Tls(false)], "{stage}");
    }
    let (when, _) = action(
        "mail",
        "{ tls = true, client = \"192.0.2.1\" }",
        "{ accept = true }",
    );
    assert_eq!(when[1], Condition::Tls(true));
    // the conditions that need no MAIL FROM work at `starttls`
    let (when, _) = action(
        "starttls",
        "{ helo = \"*.test\", attempt = \"<3\", per = \"client\" }",
        "{ reply = \"454 4.7.0 TLS not available due to temporary reason\" }",
    );
    assert_eq!(when.len(), 2);
}

#[test]
fn a_ruleset_may_hold_starttls_rules_for_hosts_without_tls() {
    let s = assert_loads(
        "name = \"t\"\n\
         [[host]]\nname = \"plain\"\nlisten = \"127.0.0.1:0\"\nrulesets = [\"tls\"]\n\
         [[host]]\nname = \"secure\"\nlisten = \"127.0.0.1:0\"\ntls = \"valid\"\nrulesets = [\"tls\"]\n\
         [[ruleset]]\nname = \"tls\"\n\
         [[ruleset.rule]]\nstage = \"starttls\"\nwhen = { chance = 0.5 }\nthen = { tls-fault = \"alert\" }\n\
         [[ruleset.rule]]\nstage = \"ehlo\"\nwhen = { chance = 0.5 }\nthen = { hide-starttls = true }\n\
         [[ruleset.rule]]\nstage = \"mail\"\nwhen = { tls = false }\nthen = { reply = \"530 5.7.0 Must issue a STARTTLS command first\" }\n",
    );
    assert_eq!(s.host("plain").unwrap().rules.len(), 3);
    assert_eq!(s.host("plain").unwrap().tls.mode, TlsMode::Off);
    assert_eq!(s.host("secure").unwrap().tls.mode, TlsMode::Valid);
}

#[test]
fn a_host_without_tls_gets_one_problem_per_rule_that_needs_it() {
    let text = format!(
        "{HOST}[[host.rule]]\nstage = \"starttls\"\nwhen = {{ tls = false }}\nthen = {{ tls-fault = \"alert\" }}\n\
         [[host.rule]]\nstage = \"mail\"\nwhen = {{ tls = false }}\nthen = {{ reply = \"530 5.7.0 Must issue a STARTTLS command first\" }}\n\
         [[host.rule]]\nstage = \"ehlo\"\nthen = {{ hide-starttls = true }}\n\
         [[host.rule]]\nstage = \"rcpt\"\nthen = {{ tls-fault = \"alert\" }}\n"
    );
    let err = load(&text).unwrap_err();
    let found: Vec<(&str, &str)> = err
        .problems()
        .iter()
        .map(|p| (&text[p.span.clone().unwrap()], p.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                "\"starttls\"",
                "a rule at `starttls`, but this host does not offer STARTTLS (tls is off)"
            ),
            (
                "false",
                "`tls` cannot be tested at `starttls`: STARTTLS is not offered again once TLS is on (RFC 3207), so it is always false"
            ),
            (
                "false",
                "a `tls` condition, but this host does not offer STARTTLS (tls is off)"
            ),
            (
                "true",
                "`hide-starttls`, but this host does not offer STARTTLS (tls is off)"
            ),
            (
                "\"alert\"",
                "`tls-fault` cannot be used at `rcpt`: it breaks the TLS handshake that follows STARTTLS"
            ),
        ],
        "{err}"
    );
    assert!(
        err.problems()[0]
            .hint
            .contains("add tls = \"valid\" (or another mode) to this [[host]] on line 2")
    );
    // a broken `tls` is reported alone
    let found = problems(&format!(
        "{HOST}tls = \"of\"\n[[host.rule]]\nstage = \"starttls\"\nthen = {{ accept = true }}\n"
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].1.contains("did you mean `off`?"), "{found:#?}");
}

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
