//! A journal written by hand, event by event, as a farm would record a sender's
//! contacts: what the stories' tests (here and in `report`) read.

use std::sync::Arc;
use std::time::Duration;

use crate::journal::{ClosedBy, Command, DomainRecord, Event, EventKind};
use crate::scenario::{Reply, Stage};

/// Writes a journal: each call adds the events the farm would record, at the current
/// farm time ([`Script::at`] moves it).
pub(crate) struct Script {
    pub events: Vec<Event>,
    now: Duration,
    next_conn: u64,
    hosts: std::collections::HashMap<u64, (Arc<str>, String)>,
}

impl Script {
    /// A journal whose farm plays `domains`: (domain, [(host, preference)]).
    pub fn new(domains: &[(&str, &[(&str, u16)])]) -> Script {
        let mut s = Script {
            events: Vec::new(),
            now: Duration::ZERO,
            next_conn: 1,
            hosts: Default::default(),
        };
        let domains = domains
            .iter()
            .map(|(name, mx)| DomainRecord {
                name: name.to_string(),
                mx: mx.iter().map(|(h, p)| (h.to_string(), *p)).collect(),
            })
            .collect();
        s.push(EventKind::FarmStarted {
            scenario: "script".into(),
            domains,
            hostnames: Vec::new(),
        });
        s
    }

    pub fn push(&mut self, kind: EventKind) {
        let seq = self.events.len() as u64 + 1;
        self.events.push(Event {
            seq,
            at: self.now,
            kind,
        });
    }

    /// Moves farm time to `secs` (fractions allowed).
    pub fn at(&mut self, secs: f64) -> &mut Self {
        self.now = Duration::from_secs_f64(secs);
        self
    }

    pub fn host(&self, conn: u64) -> Arc<str> {
        self.hosts[&conn].0.clone()
    }

    /// A connection from `client` (an IP) to `host`; the greeting is not sent yet.
    pub fn connect(&mut self, host: &str, client: &str) -> u64 {
        let conn = self.next_conn;
        self.next_conn += 1;
        let h: Arc<str> = Arc::from(host);
        self.hosts.insert(conn, (h.clone(), client.to_string()));
        self.push(EventKind::ConnectionOpened {
            host: h,
            conn,
            client: format!("{client}:40000").parse().expect("an IP"),
        });
        conn
    }

    /// A reply; `retry` is (seconds until it clears, whether the text says so).
    pub fn reply(&mut self, conn: u64, stage: Stage, reply: &str, retry: Option<(f64, bool)>) {
        let reply = Reply::parse(reply).expect("a reply");
        let host = self.host(conn);
        self.push(EventKind::Reply {
            host,
            conn,
            stage: Some(stage),
            reply,
            rule: None,
            retry_after: retry.map(|(s, _)| Duration::from_secs_f64(s)),
            retry_after_told: retry.is_some_and(|(_, told)| told),
        });
    }

    pub fn command(&mut self, conn: u64, command: Command) {
        let host = self.host(conn);
        self.push(EventKind::Command {
            host,
            conn,
            line: String::new(),
            command,
        });
    }

    /// Connects, greets with 220 and answers EHLO: a connection ready for MAIL.
    pub fn open(&mut self, host: &str, client: &str) -> u64 {
        let conn = self.connect(host, client);
        self.reply(conn, Stage::Connect, "220 ready", None);
        self.command(conn, Command::Ehlo { name: "c".into() });
        self.reply(conn, Stage::Ehlo, "250 hi", None);
        conn
    }

    pub fn mail(&mut self, conn: u64, sender: &str, size: Option<u64>, reply: &str) {
        self.command(
            conn,
            Command::Mail {
                sender: sender.into(),
                size,
            },
        );
        self.reply(conn, Stage::Mail, reply, None);
    }

    pub fn rcpt(&mut self, conn: u64, recipient: &str, reply: &str, retry: Option<(f64, bool)>) {
        self.command(
            conn,
            Command::Rcpt {
                recipient: recipient.into(),
            },
        );
        self.reply(conn, Stage::Rcpt, reply, retry);
    }

    /// DATA, 354, and the content with this Message-ID.
    pub fn content(&mut self, conn: u64, message_id: Option<&str>) {
        self.command(conn, Command::Data);
        self.reply(conn, Stage::Data, "354 go", None);
        self.command(
            conn,
            Command::EndOfData {
                size: 100,
                message_id: message_id.map(str::to_string),
                digest: Some(format!("{:016x}", message_id.map_or(0, |m| m.len()))),
            },
        );
    }

    /// The farm keeps the message (message number `id`) and answers `reply`, or answers
    /// nothing if `reply` is `None` (a lost reply: the caller closes).
    pub fn kept(&mut self, conn: u64, id: u64, reply: Option<&str>) {
        let host = self.host(conn);
        self.push(EventKind::MessageAccepted {
            host,
            conn,
            id,
            sender: String::new(),
            recipients: Vec::new(),
            size: 100,
            message_id: None,
            subject: None,
            tls: false,
        });
        if let Some(reply) = reply {
            self.reply(conn, Stage::EndOfData, reply, None);
        }
    }

    pub fn close(&mut self, conn: u64, by: ClosedBy, reason: &str) {
        let host = self.host(conn);
        self.push(EventKind::ConnectionClosed {
            host,
            conn,
            by,
            reason: reason.into(),
        });
    }

    /// QUIT, 221, closed by the client.
    pub fn quit(&mut self, conn: u64) {
        self.command(conn, Command::Quit);
        self.reply(conn, Stage::Quit, "221 bye", None);
        self.close(conn, ClosedBy::Client, "QUIT");
    }

    /// One whole transaction on a new connection: MAIL, each RCPT with its reply, then
    /// the content and its reply if a recipient was accepted, then QUIT.
    pub fn send(
        &mut self,
        host: &str,
        client: &str,
        sender: &str,
        rcpts: &[(&str, &str)],
        message_id: &str,
        end: &str,
    ) -> u64 {
        let conn = self.open(host, client);
        self.transaction(conn, sender, rcpts, message_id, end);
        self.quit(conn);
        conn
    }

    /// One transaction on an open connection, as [`Script::send`].
    pub fn transaction(
        &mut self,
        conn: u64,
        sender: &str,
        rcpts: &[(&str, &str)],
        message_id: &str,
        end: &str,
    ) {
        self.mail(conn, sender, Some(100 + message_id.len() as u64), "250 ok");
        let mut accepted = false;
        for (r, reply) in rcpts {
            let retry = reply.starts_with("45").then_some((300.0, false));
            self.rcpt(conn, r, reply, retry);
            accepted |= reply.starts_with('2');
        }
        if accepted {
            self.content(conn, Some(message_id));
            if end.starts_with('2') {
                let id = self.events.len() as u64;
                self.kept(conn, id, Some(end));
            } else {
                self.reply(conn, Stage::EndOfData, end, None);
            }
        } else {
            self.command(conn, Command::Rset);
            self.reply(conn, Stage::Rset, "250 ok", None);
        }
    }

    /// The TLS handshake after a 220 to STARTTLS fails (the caller closes).
    pub fn tls_failed(&mut self, conn: u64) {
        let host = self.host(conn);
        self.push(EventKind::TlsHandshake {
            host,
            conn,
            outcome: crate::journal::TlsOutcome::Failed {
                error: "bad certificate".into(),
                aborted_by: ClosedBy::Client,
            },
        });
    }

    /// A contact the farm refuses at the greeting.
    pub fn refused(&mut self, host: &str, client: &str, greeting: &str) -> u64 {
        let conn = self.connect(host, client);
        self.reply(conn, Stage::Connect, greeting, None);
        self.close(conn, ClosedBy::Farm, "421 at connect");
        conn
    }
}
