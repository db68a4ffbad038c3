//! What a reply's placeholders stand for when it is sent: `{client}`, `{helo}`,
//! `{sender}`, `{recipient}`, `{domain}` (the recipient's), `{hostname}`, and in a
//! greylist reply `{remaining}` (seconds left of the delay) and `{remaining-hms}` (the
//! same as HH:MM:SS). The loader accepts exactly these names.

use std::time::Duration;

use super::conditions::Known;
use crate::scenario::Reply;

/// The values at the point being decided.
#[derive(Clone, Copy)]
pub(crate) struct Values<'a> {
    pub known: &'a Known<'a>,
    pub hostname: &'a str,
    /// How long a greylisted client has left to wait.
    pub remaining: Option<Duration>,
}

impl Values<'_> {
    /// The reply with its placeholders filled in.
    pub(crate) fn fill(&self, reply: &Reply) -> Reply {
        reply.fill(|name| {
            let k = self.known;
            let recipient = k.recipient.or(k.accepted.first().map(String::as_str));
            Some(match name {
                "client" => k.client.to_string(),
                "helo" => k.helo.unwrap_or("").to_string(),
                "sender" => k.sender.unwrap_or("").to_string(),
                "recipient" => recipient.unwrap_or("").to_string(),
                "domain" => recipient
                    .and_then(|r| r.rsplit_once('@'))
                    .map_or(String::new(), |(_, d)| d.to_string()),
                "hostname" => self.hostname.to_string(),
                "remaining" => self.remaining.map_or(0, |r| r.as_secs()).to_string(),
                "remaining-hms" => {
                    let secs = self.remaining.map_or(0, |r| r.as_secs());
                    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
                }
                _ => return None,
            })
        })
    }
}
