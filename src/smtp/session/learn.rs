//! The DNS lookups a stage's rules test (`ptr`, `fcrdns`, `helo-dns`, `spf`), made
//! before the stage is decided: real queries to the farm's DNS server, so that a slow
//! or failing DNS answer holds or changes the reply as it would at a provider. Each is
//! made once per connection (the EHLO name's and the sender's again when they change),
//! and journalled with the time it took.

use std::fmt::Display;

use super::Session;
use crate::journal::EventKind;
use crate::policy::learnt::Looked;
use crate::scenario::{DnsCheck, HeloDnsCheck, SpfOutcome, Stage};

impl Session {
    /// Looks up what the rules of `stage` need and the session does not know yet;
    /// `sender`: the sender of a MAIL being decided (else the transaction's).
    pub(super) async fn learn(&mut self, stage: Stage, sender: Option<String>) {
        let needs = self.host.policy.dns_needs(stage);
        if !needs.any() {
            return;
        }
        let Some(lookups) = self.env.lookups.clone() else {
            return;
        };
        let client = self.client.ip();
        if (needs.ptr || needs.fcrdns) && self.protocol.dns.ptr.is_none() {
            let started = self.env.clock.now();
            let ptr = lookups.ptr(client).await;
            let result = match &ptr {
                Looked::Found(names) => format!("found {}", names.join(", ")),
                Looked::Missing => "missing".to_string(),
                Looked::TempError => "temperror".to_string(),
            };
            self.journal_check("ptr", client, result, started);
            self.protocol.dns.ptr = Some(ptr);
        }
        if needs.fcrdns
            && self.protocol.dns.fcrdns.is_none()
            && let Some(ptr) = self.protocol.dns.ptr.clone()
        {
            let started = self.env.clock.now();
            let check = lookups.fcrdns(client, &ptr).await;
            let result = match check {
                DnsCheck::Pass => "pass",
                DnsCheck::Fail => "fail",
                DnsCheck::TempError => "temperror",
            };
            self.journal_check("fcrdns", client, result, started);
            self.protocol.dns.fcrdns = Some(check);
        }
        if needs.helo
            && let Some(helo) = self.protocol.helo.clone()
            && self
                .protocol
                .dns
                .helo
                .as_ref()
                .is_none_or(|(name, _)| *name != helo)
        {
            let started = self.env.clock.now();
            let check = lookups.helo(client, &helo).await;
            let result = match check {
                HeloDnsCheck::Match => "match",
                HeloDnsCheck::Mismatch => "mismatch",
                HeloDnsCheck::Missing => "missing",
                HeloDnsCheck::TempError => "temperror",
            };
            self.journal_check("helo-dns", &helo, result, started);
            self.protocol.dns.helo = Some((helo, check));
        }
        // For `<>`, SPF checks the HELO name: the result is that of the sender and HELO.
        let spf_key = |sender: &str, helo: Option<&str>| {
            if sender.is_empty() {
                format!("<> {}", helo.unwrap_or(""))
            } else {
                sender.to_string()
            }
        };
        if needs.spf
            && let Some(sender) =
                sender.or_else(|| self.protocol.tx.as_ref().map(|tx| tx.sender.clone()))
            && self
                .protocol
                .dns
                .spf
                .as_ref()
                .is_none_or(|(k, _)| *k != spf_key(&sender, self.protocol.helo.as_deref()))
        {
            let started = self.env.clock.now();
            let helo = self.protocol.helo.clone();
            let outcome: SpfOutcome = lookups.spf(client, &sender, helo.as_deref()).await;
            let subject = if sender.is_empty() {
                format!("<> (HELO {})", helo.as_deref().unwrap_or("-"))
            } else {
                format!("<{sender}> from {client}")
            };
            self.journal_check("spf", subject, outcome.as_str(), started);
            self.protocol.dns.spf = Some((spf_key(&sender, helo.as_deref()), outcome));
        }
    }

    fn journal_check(
        &self,
        check: &str,
        subject: impl Display,
        result: impl Display,
        started: std::time::Duration,
    ) {
        self.record(EventKind::DnsCheck {
            host: self.host.name.clone(),
            conn: self.conn,
            check: check.to_string(),
            subject: subject.to_string(),
            result: result.to_string(),
            took: self.env.clock.now().saturating_sub(started),
        });
    }
}
