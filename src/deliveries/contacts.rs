//! The journal read back into contacts: one per connection, with what the sender saw of
//! it (greeting, TLS) and each mail transaction on it, reply by reply.
//!
//! This is the only place that walks the journal's events; the rest of [`super`] works on
//! contacts. A contact without transactions ended before the sender offered any message
//! (a 421 greeting, a reset at connect, a failed TLS handshake, a client that left).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::journal::{ClosedBy, Command, Event, EventKind, TlsOutcome};
use crate::scenario::{Reply, Stage};

/// One connection.
#[derive(Debug, Clone)]
pub(super) struct Contact {
    pub conn: u64,
    pub host: String,
    pub client: IpAddr,
    pub opened: Duration,
    /// When the connection ended; the last event seen on it while it is still open.
    pub ended: Duration,
    pub transactions: Vec<Transaction>,
    /// Where a contact without transactions ended.
    pub before_mail: BeforeMail,
    /// Whether the connection is still open at the end of the journal.
    pub open: bool,
    /// The sequence number of its first event.
    pub first_seq: u64,
}

/// What ended a contact that carried no transaction.
#[derive(Debug, Clone, Default)]
pub(super) struct BeforeMail {
    /// The last stage the conversation reached.
    pub stage: Option<Stage>,
    /// The refusal that ended it (a 4xx or 5xx greeting, EHLO or STARTTLS reply).
    pub refusal: Option<Reply>,
    pub tls_failed: Option<String>,
    /// `closed by farm: reset`, as the transcript says it.
    pub closed: Option<String>,
    /// The farm closed it, or the client left while a command waited for its answer
    /// (a tarpit or a hang): the farm's doing, not the sender's choice.
    pub farm_ended: bool,
    /// The client left cleanly (QUIT after positive replies).
    pub client_quit: bool,
}

/// One mail transaction: from MAIL to its end.
#[derive(Debug, Clone)]
pub(super) struct Transaction {
    /// The connection's opening for its first transaction (the sender connected for
    /// it), else the MAIL command.
    pub started: Duration,
    pub ended: Duration,
    pub sender: String,
    /// `SIZE=` on MAIL: a sender declares the same size on every retry of a message.
    pub declared_size: Option<u64>,
    pub mail_reply: Option<Reply>,
    pub recipients: Vec<Recipient>,
    /// The refusal of DATA or of the first BDAT chunk.
    pub data_refusal: Option<Reply>,
    /// Seen at the end of the content.
    pub content: Option<Content>,
    /// The farm's message number, when it kept the message.
    pub kept: Option<u64>,
    pub end: TxEnd,
    /// The sequence numbers of its first event (the connection's opening for the first
    /// transaction on a connection, else its MAIL) and of its last: what happened at once
    /// on other connections falls between them, even at the same farm time.
    pub seqs: (u64, u64),
}

/// A recipient as the transaction's RCPT gave it.
#[derive(Debug, Clone)]
pub(super) struct Recipient {
    pub address: String,
    /// `None` while unanswered (the connection ended before the reply).
    pub reply: Option<Reply>,
    pub at: Duration,
    pub hint: Option<RetryHint>,
}

/// What a deferral said about its end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct RetryHint {
    /// How long until a retry can pass, from the reply.
    pub after: Duration,
    /// Farm time when it can pass.
    pub clears_at: Duration,
    /// Whether the reply's text told the sender.
    pub told: bool,
}

/// What the content said about the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Content {
    pub message_id: Option<String>,
    pub digest: Option<String>,
}

/// How a transaction ended.
#[derive(Debug, Clone, Default)]
pub(super) enum TxEnd {
    /// Still going at the end of the journal.
    #[default]
    Open,
    /// A reply ended it: to MAIL, DATA or the end of data.
    Reply { stage: Stage, reply: Reply },
    /// The client ended it itself (RSET, QUIT, a new EHLO).
    ByClient { how: Stage },
    /// The connection ended without a reply.
    Closed { stage: Stage, closed: String },
}

/// The command that waits for its reply on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Awaiting {
    Nothing,
    Greeting,
    Ehlo,
    Starttls,
    Mail,
    Rcpt,
    Data,
    EndOfData,
    Rset,
    Quit,
    Other,
}

struct Open {
    contact: Contact,
    awaiting: Awaiting,
    tx: Option<Transaction>,
    /// The transaction is past a positive reply to DATA (or a first chunk).
    in_content: bool,
    /// The sequence number of the event being read.
    seq: u64,
}

/// Every contact of the journal, in the order the connections opened.
pub(super) fn contacts(events: &[Event]) -> Vec<Contact> {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut done: Vec<Contact> = Vec::new();
    for event in events {
        let Some((host, conn)) = event.kind.connection() else {
            continue;
        };
        let o = open.entry(conn).or_insert_with(|| Open {
            contact: Contact {
                conn,
                host: host.to_string(),
                // The opening was dropped from a full journal.
                client: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                opened: event.at,
                ended: event.at,
                transactions: Vec::new(),
                before_mail: BeforeMail::default(),
                open: true,
                first_seq: event.seq,
            },
            awaiting: Awaiting::Greeting,
            tx: None,
            in_content: false,
            seq: event.seq,
        });
        o.contact.ended = event.at;
        o.seq = event.seq;
        match &event.kind {
            EventKind::ConnectionOpened { client, .. } => {
                o.contact.client = client.ip();
                o.contact.before_mail.stage = Some(Stage::Connect);
            }
            EventKind::Command { command, .. } => o.command(command, event.at),
            EventKind::Reply {
                reply,
                retry_after,
                retry_after_told,
                stage,
                ..
            } => {
                let hint = retry_after.map(|after| RetryHint {
                    after,
                    clears_at: event.at + after,
                    told: *retry_after_told,
                });
                o.reply(*stage, reply, hint, event.at);
            }
            EventKind::MessageAccepted { id, .. } => {
                if let Some(tx) = &mut o.tx {
                    tx.kept = Some(*id);
                }
            }
            EventKind::TlsHandshake { outcome, .. } => {
                if let TlsOutcome::Failed { error, .. } = outcome {
                    o.contact.before_mail.stage = Some(Stage::Starttls);
                    o.contact.before_mail.tls_failed = Some(error.clone());
                    o.contact.before_mail.farm_ended = true;
                }
            }
            EventKind::ConnectionClosed { by, reason, .. } => {
                let Some(mut o) = open.remove(&conn) else {
                    continue;
                };
                o.close(*by, reason, event.at);
                done.push(o.contact);
            }
            EventKind::FarmStarted { .. }
            | EventKind::ScenarioReplaced { .. }
            | EventKind::DnsQuery { .. }
            | EventKind::DnsCheck { .. }
            | EventKind::ClockAdvanced { .. }
            | EventKind::Reset { .. } => {}
        }
    }
    let mut still: Vec<Open> = open.into_values().collect();
    still.sort_by_key(|o| o.contact.conn);
    for mut o in still {
        if let Some(mut tx) = o.tx.take() {
            tx.ended = o.contact.ended;
            tx.seqs.1 = o.seq;
            o.contact.transactions.push(tx);
        }
        done.push(o.contact);
    }
    done.sort_by_key(|c| (c.opened, c.conn));
    done
}

impl Open {
    fn command(&mut self, command: &Command, at: Duration) {
        self.awaiting = match command {
            Command::Ehlo { .. } | Command::Helo { .. } => {
                // A new EHLO ends the transaction in progress (RFC 5321 4.1.4).
                self.end_tx(TxEnd::ByClient { how: Stage::Ehlo }, at);
                Awaiting::Ehlo
            }
            Command::Starttls => Awaiting::Starttls,
            Command::Mail { sender, size } => {
                if self.tx.is_none() {
                    let (started, first_seq) = if self.contact.transactions.is_empty() {
                        (self.contact.opened, self.contact.first_seq)
                    } else {
                        (at, self.seq)
                    };
                    self.tx = Some(Transaction {
                        started,
                        ended: at,
                        sender: sender.clone(),
                        declared_size: *size,
                        mail_reply: None,
                        recipients: Vec::new(),
                        data_refusal: None,
                        content: None,
                        kept: None,
                        end: TxEnd::Open,
                        seqs: (first_seq, self.seq),
                    });
                    self.in_content = false;
                    Awaiting::Mail
                } else {
                    // A nested MAIL, refused by the farm; the transaction goes on.
                    Awaiting::Other
                }
            }
            Command::Rcpt { recipient } => {
                if let Some(tx) = self.tx.as_mut().filter(|tx| tx.mail_reply.is_some()) {
                    tx.recipients.push(Recipient {
                        address: recipient.clone(),
                        reply: None,
                        at,
                        hint: None,
                    });
                    Awaiting::Rcpt
                } else {
                    Awaiting::Other
                }
            }
            Command::Data | Command::Bdat { .. } => Awaiting::Data,
            Command::EndOfData {
                message_id, digest, ..
            } => {
                if let Some(tx) = &mut self.tx {
                    tx.content = Some(Content {
                        message_id: message_id.clone(),
                        digest: digest.clone(),
                    });
                }
                Awaiting::EndOfData
            }
            Command::Rset => Awaiting::Rset,
            Command::Quit => Awaiting::Quit,
            Command::Noop | Command::Vrfy | Command::Help | Command::Other => Awaiting::Other,
        };
    }

    fn reply(
        &mut self,
        stage: Option<Stage>,
        reply: &Reply,
        hint: Option<RetryHint>,
        at: Duration,
    ) {
        let awaiting = std::mem::replace(&mut self.awaiting, Awaiting::Nothing);
        let positive = reply.code < 400;
        let before = &mut self.contact.before_mail;
        match (awaiting, stage) {
            (Awaiting::Greeting, _) | (_, Some(Stage::Connect)) => {
                before.stage = Some(Stage::Connect);
                if !positive {
                    before.refusal = Some(reply.clone());
                }
            }
            (Awaiting::Ehlo, _) => {
                before.stage = Some(Stage::Ehlo);
                // A refused EHLO is followed by HELO or the end; only the last counts.
                before.refusal = (!positive).then(|| reply.clone());
            }
            (Awaiting::Starttls, _) => {
                before.stage = Some(Stage::Starttls);
                if !positive {
                    before.refusal = Some(reply.clone());
                }
            }
            (Awaiting::Mail, _) => {
                let Some(tx) = &mut self.tx else { return };
                tx.mail_reply = Some(reply.clone());
                if !positive {
                    let reply = reply.clone();
                    self.end_tx(
                        TxEnd::Reply {
                            stage: Stage::Mail,
                            reply,
                        },
                        at,
                    );
                }
            }
            (Awaiting::Rcpt, _) => {
                let Some(r) = self.tx.as_mut().and_then(|tx| tx.recipients.last_mut()) else {
                    return;
                };
                r.reply = Some(reply.clone());
                r.at = at;
                r.hint = hint.filter(|_| !positive);
                if reply.code == 421 {
                    // The farm closes after a 421: the transaction ends with it.
                    let reply = reply.clone();
                    self.end_tx(
                        TxEnd::Reply {
                            stage: Stage::Rcpt,
                            reply,
                        },
                        at,
                    );
                }
            }
            (Awaiting::Data, Some(Stage::Data)) => {
                if positive {
                    self.in_content = true;
                } else if let Some(tx) = &mut self.tx {
                    tx.data_refusal = Some(reply.clone());
                    let reply = reply.clone();
                    self.end_tx(
                        TxEnd::Reply {
                            stage: Stage::Data,
                            reply,
                        },
                        at,
                    );
                }
            }
            (_, Some(Stage::EndOfData)) => {
                if !positive && let Some(tx) = &mut self.tx {
                    // Kept, then given back: its journal line could not be written, and
                    // the client was told to try again.
                    tx.kept = None;
                }
                let reply = reply.clone();
                self.end_tx(
                    TxEnd::Reply {
                        stage: Stage::EndOfData,
                        reply,
                    },
                    at,
                );
            }
            (Awaiting::Rset, Some(Stage::Rset)) if positive => {
                self.end_tx(TxEnd::ByClient { how: Stage::Rset }, at);
            }
            (Awaiting::Quit, Some(Stage::Quit)) if positive => {
                self.end_tx(TxEnd::ByClient { how: Stage::Quit }, at);
                self.contact.before_mail.client_quit = self.contact.before_mail.refusal.is_none()
                    && self.contact.before_mail.tls_failed.is_none();
            }
            _ => {}
        }
    }

    fn end_tx(&mut self, end: TxEnd, at: Duration) {
        if let Some(mut tx) = self.tx.take() {
            tx.end = end;
            tx.ended = at;
            tx.seqs.1 = self.seq;
            self.contact.transactions.push(tx);
        }
        self.in_content = false;
    }

    fn close(&mut self, by: ClosedBy, reason: &str, at: Duration) {
        let who = match by {
            ClosedBy::Client => "client",
            ClosedBy::Farm => "farm",
        };
        let closed = format!("closed by {who}: {reason}");
        self.contact.open = false;
        self.contact.ended = at;
        let before = &mut self.contact.before_mail;
        if !before.client_quit {
            before.closed = Some(closed.clone());
            before.farm_ended |= by == ClosedBy::Farm || self.awaiting != Awaiting::Nothing;
        }
        let Some(tx) = &self.tx else { return };
        let stage = if tx.content.is_some() || tx.kept.is_some() {
            Stage::EndOfData
        } else if self.in_content || self.awaiting == Awaiting::Data {
            Stage::Data
        } else if !tx.recipients.is_empty() {
            Stage::Rcpt
        } else {
            Stage::Mail
        };
        self.end_tx(TxEnd::Closed { stage, closed }, at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Event;
    use std::sync::Arc;

    fn ev(seq: u64, ms: u64, kind: EventKind) -> Event {
        Event {
            seq,
            at: Duration::from_millis(ms),
            kind,
        }
    }

    fn host() -> Arc<str> {
        Arc::from("mx1")
    }

    fn reply(seq: u64, stage: Option<Stage>, code: u16) -> Event {
        ev(
            seq,
            seq,
            EventKind::Reply {
                host: host(),
                conn: 1,
                stage,
                reply: Reply::new(code, None, "x"),
                rule: None,
                retry_after: None,
                retry_after_told: false,
            },
        )
    }

    fn command(seq: u64, command: Command) -> Event {
        ev(
            seq,
            seq,
            EventKind::Command {
                host: host(),
                conn: 1,
                line: String::new(),
                command,
            },
        )
    }

    fn opened(seq: u64) -> Event {
        ev(
            seq,
            seq,
            EventKind::ConnectionOpened {
                host: host(),
                conn: 1,
                client: "192.0.2.7:2525".parse().unwrap(),
            },
        )
    }

    fn closed(seq: u64, by: ClosedBy) -> Event {
        ev(
            seq,
            seq,
            EventKind::ConnectionClosed {
                host: host(),
                conn: 1,
                by,
                reason: "reset".into(),
            },
        )
    }

    #[test]
    fn a_refused_greeting_is_a_contact_without_transactions() {
        let events = [
            opened(1),
            reply(2, Some(Stage::Connect), 421),
            closed(3, ClosedBy::Farm),
        ];
        let c = &contacts(&events)[0];
        assert!(c.transactions.is_empty());
        assert_eq!(c.before_mail.refusal.as_ref().map(|r| r.code), Some(421));
        assert!(c.before_mail.farm_ended);
        assert_eq!(c.client.to_string(), "192.0.2.7");
    }

    #[test]
    fn a_transaction_records_recipients_content_and_its_end() {
        let events = [
            opened(1),
            reply(2, Some(Stage::Connect), 220),
            command(3, Command::Ehlo { name: "c".into() }),
            reply(4, Some(Stage::Ehlo), 250),
            command(
                5,
                Command::Mail {
                    sender: "a@x.test".into(),
                    size: Some(300),
                },
            ),
            reply(6, Some(Stage::Mail), 250),
            command(
                7,
                Command::Rcpt {
                    recipient: "b@y.test".into(),
                },
            ),
            reply(8, Some(Stage::Rcpt), 451),
            command(
                9,
                Command::Rcpt {
                    recipient: "c@y.test".into(),
                },
            ),
            reply(10, Some(Stage::Rcpt), 250),
            command(11, Command::Data),
            reply(12, Some(Stage::Data), 354),
            command(
                13,
                Command::EndOfData {
                    size: 300,
                    message_id: Some("m@x.test".into()),
                    digest: Some("abcd".into()),
                },
            ),
            closed(14, ClosedBy::Client),
        ];
        let c = &contacts(&events)[0];
        let tx = &c.transactions[0];
        assert_eq!(tx.declared_size, Some(300));
        assert_eq!(tx.recipients.len(), 2);
        assert_eq!(tx.recipients[0].reply.as_ref().map(|r| r.code), Some(451));
        assert_eq!(
            tx.content.as_ref().and_then(|c| c.message_id.as_deref()),
            Some("m@x.test")
        );
        assert!(matches!(
            tx.end,
            TxEnd::Closed {
                stage: Stage::EndOfData,
                ..
            }
        ));
        assert_eq!(tx.started, Duration::from_millis(1));
    }
}
