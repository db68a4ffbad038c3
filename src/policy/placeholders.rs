//! What a reply's placeholders ([`Placeholder`]) stand for when it is sent. The loader
//! accepts exactly these names, so every `{name}` in a loaded reply is filled.

use std::time::Duration;

use super::conditions::Known;
use crate::scenario::{Placeholder, Reply};

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
            Some(match Placeholder::parse(name)? {
                Placeholder::Client => k.client.to_string(),
                Placeholder::Helo => k.helo.unwrap_or("").to_string(),
                Placeholder::Sender => k.sender.unwrap_or("").to_string(),
                Placeholder::Recipient => recipient.unwrap_or("").to_string(),
                Placeholder::Domain => recipient
                    .and_then(|r| r.rsplit_once('@'))
                    .map_or(String::new(), |(_, d)| d.to_string()),
                Placeholder::Hostname => self.hostname.to_string(),
                Placeholder::Remaining => self.remaining.map_or(0, |r| r.as_secs()).to_string(),
                Placeholder::RemainingHms => {
                    let secs = self.remaining.map_or(0, |r| r.as_secs());
                    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
                }
            })
        })
    }
}
