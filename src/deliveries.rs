//! Deliveries: the journal seen from the sender's side. For each (sender, recipient), every
//! attempt to hand the message over, on which host and connection, where it ended and how.
//!
//! Derived from the journal alone (DESIGN principle 6), so a journal read back from a
//! JSON-lines file gives the same deliveries as a live farm.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde::Serialize;

use crate::journal::{ClosedBy, Command, Event, EventKind, Missing, gaps};
use crate::scenario::{Reply, Stage};

/// Every attempt for one (sender, recipient) pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Empty for the null sender.
    pub sender: String,
    /// `None` for attempts that ended before any recipient was given (a refused MAIL).
    pub recipient: Option<String>,
    pub attempts: Vec<Attempt>,
}

impl Delivery {
    /// Whether some attempt handed the message over.
    pub fn delivered(&self) -> bool {
        self.attempts
            .iter()
            .any(|a| a.outcome == Outcome::Delivered)
    }

    /// How many attempts delivered it (more than one is a duplicate).
    pub fn times_delivered(&self) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.outcome == Outcome::Delivered)
            .count()
    }
}

/// One try, on one connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attempt {
    /// Farm time when the attempt ended.
    #[serde(rename = "ms", serialize_with = "crate::millis::serialize")]
    pub at: Duration,
    pub host: String,
    pub conn: u64,
    /// The stage at which the attempt ended.
    pub stage: Stage,
    /// The reply that ended it; `None` if the connection closed without one.
    pub reply: Option<Reply>,
    pub outcome: Outcome,
    /// Set when the connection closed without a reply: who closed it and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closed: Option<String>,
    /// The client's address.
    pub client: IpAddr,
    /// The Message-ID of the message, when the farm kept it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// For a deferral that clears after a known time: how long until then.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::millis::optional::serialize"
    )]
    pub retry_after: Option<Duration>,
}

/// How an attempt ended, as a sender must treat it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// 250 to the final dot.
    Delivered,
    /// A 4xx, or the connection ended before the message was accepted: retry later.
    Deferred,
    /// A 5xx: do not retry.
    Rejected,
    /// The client reset or quit the transaction on its own.
    Abandoned,
}

fn outcome_of(reply: &Reply) -> Outcome {
    match reply.code {
        200..=399 => Outcome::Delivered,
        400..=499 => Outcome::Deferred,
        _ => Outcome::Rejected,
    }
}

/// The transaction in progress on one connection.
#[derive(Default)]
struct Conn {
    host: String,
    sender: Option<String>,
    /// Sender of a MAIL command awaiting its reply.
    pending_sender: Option<String>,
    pending_recipient: Option<String>,
    recipients: Vec<String>,
    /// Whether a refused RCPT already recorded an attempt in this transaction.
    recipient_refused: bool,
    in_data: bool,
    /// The final dot arrived and awaits its reply.
    dot_received: bool,
    /// The farm kept the message but has not answered yet (a lost reply, if it closes).
    kept: bool,
    client: Option<IpAddr>,
    /// The Message-ID of the message kept in this transaction.
    message_id: Option<String>,
}

/// The deliveries of a journal, and whether events are missing from it (then attempts
/// may be missing from the deliveries). Reads as the list itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Deliveries {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Missing>,
    pub list: Vec<Delivery>,
}

impl std::ops::Deref for Deliveries {
    type Target = Vec<Delivery>;

    fn deref(&self) -> &Vec<Delivery> {
        &self.list
    }
}

impl IntoIterator for Deliveries {
    type Item = Delivery;
    type IntoIter = std::vec::IntoIter<Delivery>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.into_iter()
    }
}

impl<'a> IntoIterator for &'a Deliveries {
    type Item = &'a Delivery;
    type IntoIter = std::slice::Iter<'a, Delivery>;

    fn into_iter(self) -> Self::IntoIter {
        self.list.iter()
    }
}

/// Groups the journal's attempts by (sender, recipient), in order of first appearance.
pub fn deliveries(events: &[Event]) -> Deliveries {
    Deliveries {
        incomplete: gaps(events),
        list: group(events),
    }
}

fn group(events: &[Event]) -> Vec<Delivery> {
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut order: Vec<(String, Option<String>)> = Vec::new();
    let mut by_key: HashMap<(String, Option<String>), Vec<Attempt>> = HashMap::new();
    let mut push = |sender: &str, recipient: Option<&str>, attempt: Attempt| {
        let key = (sender.to_string(), recipient.map(str::to_string));
        by_key
            .entry(key.clone())
            .or_insert_with(|| {
                order.push(key);
                Vec::new()
            })
            .push(attempt);
    };

    for event in events {
        match &event.kind {
            EventKind::ConnectionOpened { host, conn, client } => {
                conns.insert(
                    *conn,
                    Conn {
                        host: host.to_string(),
                        client: Some(client.ip()),
                        ..Conn::default()
                    },
                );
            }
            EventKind::Command { conn, command, .. } => {
                let Some(c) = conns.get_mut(conn) else {
                    continue;
                };
                match command {
                    Command::Mail { sender, .. } => c.pending_sender = Some(sender.clone()),
                    Command::Rcpt { recipient } => c.pending_recipient = Some(recipient.clone()),
                    Command::EndOfData { .. } => c.dot_received = true,
                    _ => {}
                }
            }
            EventKind::Reply {
                conn,
                stage,
                reply,
                retry_after,
                ..
            } => {
                let Some(c) = conns.get_mut(conn) else {
                    continue;
                };
                let attempt = |stage: Stage, outcome: Outcome| Attempt {
                    at: event.at,
                    host: c.host.clone(),
                    conn: *conn,
                    stage,
                    reply: Some(reply.clone()),
                    outcome,
                    closed: None,
                    client: c.client.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    message_id: if outcome == Outcome::Delivered {
                        c.message_id.clone()
                    } else {
                        None
                    },
                    retry_after: *retry_after,
                };
                let positive = reply.code < 400;
                match stage {
                    Some(Stage::Mail) => {
                        let sender = c.pending_sender.take().unwrap_or_default();
                        if positive {
                            c.sender = Some(sender);
                            c.recipients.clear();
                            c.recipient_refused = false;
                        } else {
                            push(&sender, None, attempt(Stage::Mail, outcome_of(reply)));
                        }
                    }
                    Some(Stage::Rcpt) => {
                        let recipient = c.pending_recipient.take().unwrap_or_default();
                        match &c.sender {
                            Some(_) if positive => c.recipients.push(recipient),
                            Some(sender) => {
                                let a = attempt(Stage::Rcpt, outcome_of(reply));
                                push(sender, Some(&recipient), a);
                                c.recipient_refused = true;
                            }
                            None => {}
                        }
                    }
                    Some(Stage::Data) if positive => c.in_data = true,
                    Some(stage @ (Stage::Data | Stage::EndOfData)) => {
                        if let Some(sender) = c.sender.take() {
                            for r in std::mem::take(&mut c.recipients) {
                                push(&sender, Some(&r), attempt(*stage, outcome_of(reply)));
                            }
                        }
                        c.in_data = false;
                        c.dot_received = false;
                        c.kept = false;
                    }
                    Some(stage @ (Stage::Ehlo | Stage::Rset | Stage::Quit)) if positive => {
                        if let Some(sender) = c.sender.take() {
                            let recipients = std::mem::take(&mut c.recipients);
                            let mut a = attempt(*stage, Outcome::Abandoned);
                            a.reply = None;
                            a.closed = Some(format!("client sent {stage} mid-transaction"));
                            if recipients.is_empty() {
                                if !c.recipient_refused {
                                    push(&sender, None, a);
                                }
                            } else {
                                for r in recipients {
                                    push(&sender, Some(&r), a.clone());
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
            EventKind::ConnectionClosed {
                conn, by, reason, ..
            } => {
                let Some(mut c) = conns.remove(conn) else {
                    continue;
                };
                // A MAIL or RCPT still waiting for its reply when the connection ended
                // was part of the attempt too.
                let sender = match (c.sender.take(), c.pending_sender.take()) {
                    (Some(sender), _) => sender,
                    (None, Some(pending)) => pending,
                    (None, None) => continue,
                };
                let unanswered = c.pending_recipient.take();
                let stage = if c.kept || c.dot_received {
                    Stage::EndOfData
                } else if c.in_data {
                    Stage::Data
                } else if unanswered.is_some() || !c.recipients.is_empty() {
                    Stage::Rcpt
                } else {
                    Stage::Mail
                };
                c.recipients.extend(unanswered);
                let who = match by {
                    ClosedBy::Client => "client",
                    ClosedBy::Farm => "farm",
                };
                let a = Attempt {
                    at: event.at,
                    host: c.host,
                    conn: *conn,
                    stage,
                    reply: None,
                    // The farm has the message even though the sender never heard so.
                    outcome: if c.kept {
                        Outcome::Delivered
                    } else {
                        Outcome::Deferred
                    },
                    closed: Some(format!("closed by {who}: {reason}")),
                    client: c.client.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                    message_id: if c.kept { c.message_id.clone() } else { None },
                    retry_after: None,
                };
                if c.recipients.is_empty() {
                    if !c.recipient_refused {
                        push(&sender, None, a);
                    }
                } else {
                    for r in &c.recipients {
                        push(&sender, Some(r), a.clone());
                    }
                }
            }
            EventKind::MessageAccepted {
                conn, message_id, ..
            } => {
                if let Some(c) = conns.get_mut(conn) {
                    c.kept = true;
                    c.message_id = message_id.clone();
                }
            }
            EventKind::TlsHandshake { .. } | EventKind::FarmStarted { .. } => {}
        }
    }

    order
        .into_iter()
        .map(|key| {
            let attempts = by_key.remove(&key).unwrap_or_default();
            Delivery {
                sender: key.0,
                recipient: key.1,
                attempts,
            }
        })
        .collect()
}
