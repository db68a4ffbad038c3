//! The loader's tests of the stateful actions' tables (greylisting, rate and concurrency
//! limits): their defaults and every value they read.

use std::sync::Arc;

use super::tests::{loaded, secs};
use crate::scenario::model::*;

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
