//! STARTTLS (RFC 3207): `220`, then a real TLS handshake and a session that starts over,
//! or one of the ways a rule can make the handshake go wrong.

use tokio::io::AsyncWriteExt;

use super::act::Done;
use super::input::Limit;
use super::{Closed, Session, Step};
use crate::journal::{ClosedBy, EventKind, TlsOutcome};
use crate::policy;
use crate::scenario::{Stage, TlsFault};
use crate::smtp::transport::Unplugged;

impl Session {
    pub(super) async fn starttls(&mut self) -> Step {
        let host = self.host.clone();
        let Some(acceptor) = host.tls.clone() else {
            return self.protocol_error(&host.replies.not_implemented);
        };
        if self.protocol.encrypted {
            return self.protocol_error(&host.replies.tls_already_active);
        }
        if self.protocol.helo.is_none() {
            return self.protocol_error(&host.replies.need_helo);
        }
        if self.protocol.tx.is_some() {
            return self.protocol_error(&host.replies.transaction_in_progress);
        }
        if !self.protocol.starttls_offered {
            self.answer(Stage::Starttls, &host.replies.tls_not_available, None);
            return Ok(());
        }
        if self.input.start < self.input.buf.len() {
            // Plaintext sent after STARTTLS would be read as if it came over TLS: the
            // command-injection attack of CVE-2011-0411. Refuse rather than upgrade.
            self.input.buf.truncate(self.input.start);
            return self.protocol_error(&host.replies.pipelined_after_starttls);
        }
        let fault = match self.decide(policy::Starttls).await? {
            Done::Accepted { reply, rule } => {
                let reply = reply.as_ref().unwrap_or(&host.replies.ready_to_start_tls);
                self.answer(Stage::Starttls, reply, rule);
                None
            }
            Done::Effect { effect, rule } => {
                let ready = &host.replies.ready_to_start_tls;
                self.answer(Stage::Starttls, ready, rule.clone());
                Some((effect, rule))
            }
            Done::Refused(_) => return Ok(()),
        };
        self.flush().await?;
        if let Some((fault, rule)) = fault {
            return self
                .tls_fault(fault, rule.as_deref().unwrap_or("the farm"))
                .await;
        }
        self.handshake(acceptor).await
    }

    /// The handshake, bounded as a whole by the command timeout. A shutdown lets it run
    /// its grace period (a client whose handshake completes is then told 421 over TLS,
    /// which a sender takes better than a broken handshake); past it, the handshake ends.
    async fn handshake(&mut self, acceptor: tokio_rustls::TlsAcceptor) -> Step {
        let plain = std::mem::replace(&mut self.stream, Box::new(Unplugged));
        let deadline = self.deadline_in(Limit::Command);
        enum Shook<T> {
            Done(T),
            Timeout,
            Aborted,
        }
        let accepted = tokio::select! {
            accepted = acceptor.accept(plain) => Shook::Done(accepted),
            () = self.timer.until(deadline) => Shook::Timeout,
            () = self.shutdown.aborted() => Shook::Aborted,
        };
        let tls = match accepted {
            Shook::Done(Ok(tls)) => tls,
            Shook::Done(Err(error)) => {
                let (by, error) = handshake_failure(&error);
                let aborted = match by {
                    ClosedBy::Client => "the client",
                    ClosedBy::Farm => "the farm",
                };
                self.log_connection(&format!("TLS handshake failed, {aborted} aborted: {error}"));
                self.record_tls_failure(error.clone(), by);
                return Err(Closed {
                    by,
                    reason: format!("TLS handshake failed: {error}").into(),
                });
            }
            Shook::Timeout => {
                self.log_connection("TLS handshake timed out");
                self.record_tls_failure("timed out".to_string(), ClosedBy::Farm);
                return Err(Closed::by_farm("TLS handshake timed out"));
            }
            Shook::Aborted => {
                let ended = "the farm shut down during the handshake";
                self.log_connection(&format!("TLS handshake ended: {ended}"));
                self.record_tls_failure(ended.to_string(), ClosedBy::Farm);
                return Err(Closed::by_farm(
                    "farm shut down: the TLS handshake was still under way when the grace period ended",
                ));
            }
        };
        let (_, connection) = tls.get_ref();
        let version = connection
            .protocol_version()
            .map_or_else(|| "unknown".to_string(), |v| format!("{v:?}"));
        let cipher = connection
            .negotiated_cipher_suite()
            .map_or_else(|| "unknown".to_string(), |c| format!("{:?}", c.suite()));
        let sni = connection.server_name().map(str::to_string);
        self.record(EventKind::TlsHandshake {
            host: self.host.name.clone(),
            conn: self.conn,
            outcome: TlsOutcome::Established {
                version,
                cipher,
                sni,
            },
        });
        self.stream = Box::new(tls);
        // RFC 3207 4.2: the session starts over; the client must send EHLO again.
        self.protocol.encrypted = true;
        self.protocol.helo = None;
        self.protocol.starttls_offered = false;
        self.end_by_client("STARTTLS");
        Ok(())
    }

    /// A handshake that goes wrong on purpose, after `220 Ready to start TLS`.
    async fn tls_fault(&mut self, fault: TlsFault, rule: &str) -> Step {
        let failed = |what: &str| Closed::by_farm(format!("{what} after STARTTLS by {rule}"));
        if fault == TlsFault::CloseAfterReady {
            let closed = failed("closed");
            self.log_connection(&format!("TLS fault: {}", closed.reason));
            return Err(closed);
        }
        // Every other fault waits for the ClientHello first.
        let deadline = self.deadline_in(Limit::Command);
        self.discard_input();
        self.fill_until(deadline).await?;
        let closed = match fault {
            TlsFault::Alert => {
                // A TLS 1.2 record: alert, fatal (2), handshake_failure (40).
                let _ = self
                    .stream
                    .write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
                    .await;
                failed("sent a handshake_failure alert")
            }
            TlsFault::CloseMidHandshake => failed("closed mid-handshake"),
            TlsFault::Garbage => {
                let _ = self
                    .stream
                    .write_all(b"garbage where a TLS ServerHello belongs\r\n")
                    .await;
                failed("sent garbage instead of a handshake")
            }
            TlsFault::Hang(limit) => {
                self.hang(limit).await?;
                failed("hung in the handshake")
            }
            TlsFault::CloseAfterReady => failed("closed"),
        };
        self.discard_input();
        self.log_connection(&format!("TLS fault: {}", closed.reason));
        self.record_tls_failure(closed.reason.to_string(), ClosedBy::Farm);
        Err(closed)
    }

    fn record_tls_failure(&self, error: String, aborted_by: ClosedBy) {
        self.record(EventKind::TlsHandshake {
            host: self.host.name.clone(),
            conn: self.conn,
            outcome: TlsOutcome::Failed { error, aborted_by },
        });
    }
}

/// Who ended a failed handshake, and why, in words for the journal.
fn handshake_failure(error: &std::io::Error) -> (ClosedBy, String) {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        // The client sent an alert: typically it did not trust the certificate.
        Some(rustls::Error::AlertReceived(alert)) => (
            ClosedBy::Client,
            format!("the client sent the alert {alert:?}"),
        ),
        Some(other) => (ClosedBy::Farm, format!("{other}")),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => (
            ClosedBy::Client,
            "the client closed the connection during the handshake".to_string(),
        ),
        None => (ClosedBy::Client, error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::AsyncWriteExt;

    use crate::journal::{EventKind, TlsOutcome};
    use crate::smtp::session::tests::{Logs, host};
    use crate::testing::SmtpClient;

    #[tokio::test(start_paused = true)]
    async fn without_tls_starttls_is_not_implemented() {
        let h = host("");
        let mut c = h.ready().await;
        c.send("STARTTLS\r\n").await;
        c.expect("502 5.5.1 Error: command not implemented").await;
    }

    /// Plaintext pipelined after STARTTLS would be read as if it came over TLS
    /// (CVE-2011-0411): refused, and no upgrade.
    #[tokio::test(start_paused = true)]
    async fn plaintext_pipelined_after_starttls_is_refused() {
        let h = host("tls = \"valid\"\n");
        let mut c = h.ready().await;
        c.send("STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n").await;
        c.expect("554 5.5.1 Error: commands pipelined after STARTTLS are refused")
            .await;
        c.send("NOOP\r\n").await;
        c.expect_code(250).await;
    }

    /// A real handshake over the in-memory stream with a client that trusts the farm's
    /// CA; then the session starts over and wants EHLO again.
    #[tokio::test(start_paused = true)]
    async fn a_handshake_upgrades_the_session_which_starts_over() {
        let h = host("tls = \"valid\"\n");
        let mut c = h.ready().await;
        c.send("STARTTLS\r\n").await;
        c.expect("220 2.0.0 Ready to start TLS").await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(h.ca.cert_der()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = rustls::pki_types::ServerName::try_from("mx1.farm.test").unwrap();
        let tls = connector.connect(name, c.into_inner()).await.unwrap();
        let mut c = SmtpClient::over(tls);
        c.send("MAIL FROM:<s@x.test>\r\n").await;
        c.expect("503 5.5.1 Error: send HELO/EHLO first").await;
        let ehlo = c.ehlo("client.test").await;
        assert!(
            !ehlo.text().contains("STARTTLS"),
            "not offered again: {ehlo}"
        );
        let done = c
            .transaction("s@x.test", &["r@y.test"], "Subject: tls\r\n\r\nhi\r\n")
            .await;
        assert!(done.delivered());
        assert!(h.env.inbox.messages()[0].tls);
        let established = h.journal().into_iter().any(|e| {
            matches!(
                e.kind,
                EventKind::TlsHandshake { outcome: TlsOutcome::Established { sni: Some(ref sni), .. }, .. }
                    if sni == "mx1.farm.test"
            )
        });
        assert!(established);
    }

    /// A TLS fault answers 220, then breaks the handshake as the rule says.
    #[tokio::test(start_paused = true)]
    async fn a_tls_fault_breaks_the_handshake_after_the_220() {
        let logs = Logs::capture();
        let h = host(
            "tls = \"valid\"\n[[host.rule]]\nstage = \"starttls\"\nthen = { tls-fault = \"garbage\" }\n",
        );
        let mut c = h.ready().await;
        c.send("STARTTLS\r\n").await;
        c.expect("220 2.0.0 Ready to start TLS").await;
        let mut stream = c.into_inner();
        stream
            .write_all(b"\x16\x03\x01 pretend ClientHello")
            .await
            .unwrap();
        let mut rest = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut rest)
            .await
            .unwrap();
        assert_eq!(rest, "garbage where a TLS ServerHello belongs\r\n");
        h.finish().await;
        assert_eq!(
            h.closed_reason(1).as_deref(),
            Some("sent garbage instead of a handshake after STARTTLS by host mx1 rule 1")
        );
        let line = logs.line("TLS fault");
        assert!(
            line.contains("sent garbage instead of a handshake after STARTTLS by host mx1 rule 1"),
            "{line}"
        );
        assert!(line.contains("host=mx1 conn=1 client=192.0.2.1"), "{line}");
    }

    /// A handshake that fails (here, a client that sends no TLS at all) is logged, with
    /// who gave up and why.
    #[tokio::test(start_paused = true)]
    async fn a_failed_handshake_is_logged() {
        let logs = Logs::capture();
        let h = host("tls = \"valid\"\n");
        let mut c = h.ready().await;
        c.send("STARTTLS\r\n").await;
        c.expect("220 2.0.0 Ready to start TLS").await;
        let mut stream = c.into_inner();
        stream.write_all(b"EHLO not-tls.test\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest).await;
        h.finish().await;
        let line = logs.line("TLS handshake failed");
        assert!(line.contains("host=mx1 conn=1 client=192.0.2.1"), "{line}");
    }
}
