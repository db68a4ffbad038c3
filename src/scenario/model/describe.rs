//! How the startup summary and the API show a rule: one line, like
//! `rcpt rcpt=full-*@aol.test -> 452 4.2.2`.

use std::fmt::{self, Write as _};

use super::{
    ActionKind, AddressPattern, AttemptKey, AttemptRange, Condition, DnsCheck, HeloDnsCheck,
    PtrCheck, RateKey, Rule, StateScope, TlsFault,
};

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(self))
    }
}

/// A rule in a few words, for the startup summary:
/// `rcpt rcpt=full-*@aol.test attempt 1-3/recipient -> 452 4.2.2`.
fn describe(rule: &Rule) -> String {
    let mut out = rule.stage.as_str().to_string();
    for condition in &rule.when {
        out.push(' ');
        out.push_str(&condition_text(condition));
    }
    out.push_str(" -> ");
    if let Some(delay) = rule.then.delay {
        let _ = write!(out, "wait {} then ", humantime::format_duration(delay));
    }
    match &rule.then.kind {
        ActionKind::Accept => out.push_str("accept"),
        ActionKind::Reply { reply, close } => {
            out.push_str(&reply.code.to_string());
            if let Some(status) = &reply.status {
                out.push(' ');
                out.push_str(status);
            }
            if *close && !reply.closes_connection() {
                out.push_str(" and close");
            }
        }
        ActionKind::Close => out.push_str("close"),
        ActionKind::Hang(limit) => {
            let _ = write!(out, "hang {}", humantime::format_duration(*limit));
        }
        ActionKind::Reset => out.push_str("reset"),
        ActionKind::TlsFault(fault) => {
            let _ = write!(out, "tls fault: {}", tls_fault(*fault));
        }
        ActionKind::HideStarttls => out.push_str("accept without STARTTLS"),
        ActionKind::LoseReply => out.push_str("keep the message, lose the reply"),
        ActionKind::Greylist(g) => {
            let _ = write!(
                out,
                "greylist {} ({})",
                humantime::format_duration(g.delay),
                scope(g.scope)
            );
        }
        ActionKind::RateLimit(l) => {
            let _ = write!(
                out,
                "limit {} per {} per {} ({}) else {}",
                l.limit,
                humantime::format_duration(l.window),
                rate_key(l.per),
                scope(l.scope),
                l.reply.code
            );
        }
        ActionKind::Concurrency(c) => {
            let _ = write!(
                out,
                "at most {} connections per {} else {}",
                c.limit,
                rate_key(c.per),
                c.reply.code
            );
        }
    }
    out
}

fn tls_fault(fault: TlsFault) -> String {
    match fault {
        TlsFault::CloseAfterReady => "close after 220".to_string(),
        TlsFault::Alert => "handshake_failure alert".to_string(),
        TlsFault::CloseMidHandshake => "close mid-handshake".to_string(),
        TlsFault::Garbage => "garbage instead of a handshake".to_string(),
        TlsFault::Hang(limit) => format!("hang {}", humantime::format_duration(limit)),
    }
}

fn scope(scope: StateScope) -> &'static str {
    match scope {
        StateScope::Shared => "shared",
        StateScope::Host => "per host",
    }
}

fn rate_key(key: RateKey) -> &'static str {
    match key {
        RateKey::Client => "client",
        RateKey::ClientNet => "client-net",
        RateKey::Sender => "sender",
        RateKey::Recipient => "recipient",
    }
}

fn attempt_key(per: AttemptKey) -> &'static str {
    match per {
        AttemptKey::Client => "client",
        AttemptKey::Sender => "sender",
        AttemptKey::Recipient => "recipient",
        AttemptKey::Triplet => "triplet",
    }
}

fn range_text(range: &AttemptRange) -> String {
    if range.max == u32::MAX {
        format!(">={}", range.min)
    } else if range.min == range.max {
        format!("={}", range.min)
    } else {
        format!(" {}-{}", range.min, range.max)
    }
}

fn condition_text(condition: &Condition) -> String {
    fn list<T>(items: &[T], show: impl Fn(&T) -> String) -> String {
        items.iter().map(show).collect::<Vec<_>>().join(",")
    }
    fn address(p: &AddressPattern) -> String {
        match p {
            AddressPattern::Null => "<>".to_string(),
            AddressPattern::Domain(d) => format!("@{d}"),
            AddressPattern::Glob(g) => g.text.clone(),
        }
    }
    match condition {
        Condition::Client(nets) => format!("client={}", list(nets, |n| n.to_string())),
        Condition::Helo(globs) => format!("helo={}", list(globs, |g| g.text.clone())),
        Condition::Sender(p) => format!("mail={}", list(p, address)),
        Condition::Recipient(p) => format!("rcpt={}", list(p, address)),
        Condition::SizeAbove(n) => format!("size>{n}"),
        Condition::SizeBelow(n) => format!("size<{n}"),
        Condition::Attempt { per, range } => {
            format!("attempt{}/{}", range_text(range), attempt_key(*per))
        }
        Condition::Chance(p) => format!("chance={p}"),
        Condition::FirstAttemptWithin { per, within } => format!(
            "first-attempt-within={}/{}",
            humantime::format_duration(*within),
            attempt_key(*per)
        ),
        Condition::Time(range) => match range.until {
            Some(until) => format!(
                "time {}-{}",
                humantime::format_duration(range.from),
                humantime::format_duration(until)
            ),
            None => format!("time>={}", humantime::format_duration(range.from)),
        },
        Condition::Connection(range) => format!("connection{}", range_text(range)),
        Condition::Message(range) => format!("message{}", range_text(range)),
        Condition::Ptr(check) => match check {
            PtrCheck::Missing => "ptr=missing".to_string(),
            PtrCheck::Present => "ptr=present".to_string(),
            PtrCheck::MismatchesHelo => "ptr=mismatch".to_string(),
            PtrCheck::TempError => "ptr=temperror".to_string(),
        },
        Condition::Fcrdns(check) => format!(
            "fcrdns={}",
            match check {
                DnsCheck::Pass => "pass",
                DnsCheck::Fail => "fail",
                DnsCheck::TempError => "temperror",
            }
        ),
        Condition::HeloDns(check) => format!(
            "helo-dns={}",
            match check {
                HeloDnsCheck::Match => "match",
                HeloDnsCheck::Mismatch => "mismatch",
                HeloDnsCheck::Missing => "missing",
                HeloDnsCheck::TempError => "temperror",
            }
        ),
        Condition::Spf(outcomes) => {
            let names: Vec<&str> = outcomes.iter().map(|o| o.as_str()).collect();
            format!("spf={}", names.join("|"))
        }
        Condition::HeloFqdn(fqdn) => format!("helo-fqdn={fqdn}"),
        Condition::Tls(tls) => format!("tls={tls}"),
    }
}
