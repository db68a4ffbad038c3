//! Table tests of the conditions that read what the farm's DNS lookups found.

use super::learnt::{DnsFacts, Looked};
use super::tests::{CLIENT, line, policy, secs};
use super::{Facts, Mail};

/// Each DNS condition holds for exactly its own result, and for nothing the session did
/// not look up.
#[test]
fn dns_conditions_read_the_lookups_results() {
    use crate::scenario::{DnsCheck, HeloDnsCheck, SpfOutcome};
    let (p, _) = policy(
        r#"
[[host.rule]]
stage = "mail"
when = { ptr = "temperror" }
then = { reply = "451 4.7.1 ptr temperror" }
[[host.rule]]
stage = "mail"
when = { fcrdns = "fail" }
then = { reply = "550 5.7.25 fcrdns fail" }
[[host.rule]]
stage = "mail"
when = { helo-dns = "mismatch" }
then = { reply = "550 5.7.1 helo mismatch" }
[[host.rule]]
stage = "mail"
when = { spf = ["temperror"] }
then = { reply = "451 4.7.1 spf temperror" }
[[host.rule]]
stage = "mail"
when = { spf = ["fail", "softfail"] }
then = { reply = "550 5.7.1 spf fail" }
"#,
    );
    let mail = |dns: DnsFacts| {
        let mut conv = p.open(1, CLIENT.parse().unwrap());
        let facts = Facts {
            helo: Some("mail.client.test"),
            dns: &dns,
            ..Facts::default()
        };
        let point = Mail {
            sender: "a@x.test",
            size: None,
        };
        line(p.decide(point, &facts, &mut conv, secs(0)))
    };
    let spf = |o| DnsFacts {
        spf: Some(("a@x.test".to_string(), o)),
        ..DnsFacts::default()
    };
    let cases: Vec<(DnsFacts, &str)> = vec![
        (DnsFacts::default(), "accept"),
        (
            DnsFacts {
                ptr: Some(Looked::TempError),
                ..DnsFacts::default()
            },
            "refuse 451 4.7.1 ptr temperror",
        ),
        (
            DnsFacts {
                ptr: Some(Looked::Missing),
                ..DnsFacts::default()
            },
            "accept",
        ),
        (
            DnsFacts {
                fcrdns: Some(DnsCheck::Fail),
                ..DnsFacts::default()
            },
            "refuse 550 5.7.25 fcrdns fail",
        ),
        (
            DnsFacts {
                fcrdns: Some(DnsCheck::Pass),
                ..DnsFacts::default()
            },
            "accept",
        ),
        (
            DnsFacts {
                helo: Some(("mail.client.test".into(), HeloDnsCheck::Mismatch)),
                ..DnsFacts::default()
            },
            "refuse 550 5.7.1 helo mismatch",
        ),
        (
            DnsFacts {
                helo: Some(("mail.client.test".into(), HeloDnsCheck::Match)),
                ..DnsFacts::default()
            },
            "accept",
        ),
        (spf(SpfOutcome::TempError), "refuse 451 4.7.1 spf temperror"),
        (spf(SpfOutcome::Fail), "refuse 550 5.7.1 spf fail"),
        (spf(SpfOutcome::Softfail), "refuse 550 5.7.1 spf fail"),
        (spf(SpfOutcome::Pass), "accept"),
        (spf(SpfOutcome::None), "accept"),
    ];
    for (dns, expected) in cases {
        let got = mail(dns.clone());
        assert!(got.starts_with(expected), "{dns:?}: {got}");
    }
}
