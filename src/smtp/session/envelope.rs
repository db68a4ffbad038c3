//! The envelope commands: EHLO/HELO, MAIL, RCPT, RSET and QUIT.

use memchr::memchr;

use super::act::Done;
use super::{Closed, REFUSED_NAMED, Session, Step, Transaction};
use crate::policy;
use crate::scenario::{Extensions, Parsing, Stage};

impl Session {
    pub(super) async fn ehlo(&mut self, name: String, extended: bool) -> Step {
        let host = self.host.clone();
        // A new EHLO/HELO ends any transaction in progress (RFC 5321 4.1.4).
        self.end_by_client("new EHLO/HELO");
        let previous = self.protocol.helo.replace(name);
        let (rule, hide) = match self.decide(policy::Ehlo).await? {
            Done::Accepted { rule, .. } => (rule, false),
            Done::Effect {
                effect: policy::HideStarttls,
                rule,
            } => (rule, true),
            Done::Refused(_) => {
                self.protocol.helo = previous;
                return Ok(());
            }
        };
        let offer = host.tls.is_some() && !self.protocol.encrypted && !hide;
        self.protocol.starttls_offered = extended && offer;
        let reply = match (extended, offer) {
            (true, true) => &host.replies.ehlo_with_starttls,
            (true, false) => &host.replies.ehlo,
            (false, _) => &host.replies.helo,
        };
        self.answer(Stage::Ehlo, reply, rule);
        Ok(())
    }

    /// MAIL from `sender`; `line` is the command as sent, whose parameters a strict host
    /// checks against its EHLO reply.
    pub(super) async fn mail(&mut self, line: &[u8], sender: String, size: Option<u64>) -> Step {
        let host = self.host.clone();
        let config = &host.config;
        if self.protocol.helo.is_none() {
            return self.protocol_error(&host.replies.need_helo);
        }
        if self.protocol.tx.is_some() {
            return self.protocol_error(&host.replies.nested_mail);
        }
        if !self.parameters_advertised(line, true)? {
            return Ok(());
        }
        if size.is_some_and(|s| s > config.limits.max_message_size) {
            self.answer(Stage::Mail, &host.replies.size_exceeds_limit, None);
            return Ok(());
        }
        let point = policy::Mail {
            sender: &sender,
            size,
        };
        let done = match self.decide(point).await {
            Ok(done) => done,
            Err(closed) => {
                self.log_refused_mail(sender, &format!("refused at mail: {}", closed.reason));
                return Err(closed);
            }
        };
        match done {
            Done::Accepted { reply, rule } => {
                self.protocol.transactions += 1;
                self.protocol.tx = Some(Transaction {
                    sender,
                    declared_size: size,
                    ..Transaction::default()
                });
                self.answer(
                    Stage::Mail,
                    reply.as_ref().unwrap_or(&host.replies.mail_ok),
                    rule,
                );
            }
            Done::Refused(reply) => {
                self.log_refused_mail(sender, &format!("refused at mail: {}", reply.one_line()));
            }
        }
        Ok(())
    }

    /// A transaction refused at MAIL never began, but still gets its log line.
    fn log_refused_mail(&self, sender: String, result: &str) {
        let refused = Transaction {
            sender,
            ..Transaction::default()
        };
        self.log_transaction(&refused, result);
    }

    /// Whether MAIL's (`mail`) or RCPT's parameters in `line` are all of extensions the
    /// host advertised; answers 555 5.5.4 when they are not. RFC 5321 4.1.1.11 and
    /// RFC 1869 6: parameters belong to the extensions of the EHLO reply, and a server
    /// answers 555 to one it does not implement, as Postfix does ("555 5.5.4 Unsupported
    /// option: RET=HDRS"). Only a lenient host takes them all (and ignores them).
    fn parameters_advertised(&mut self, line: &[u8], mail: bool) -> Step<bool> {
        let host = self.host.clone();
        let config = &host.config;
        if config.parsing == Parsing::Lenient {
            return Ok(true);
        }
        let Some(param) = unadvertised_parameter(line, mail, &config.extensions) else {
            return Ok(true);
        };
        let enhanced = config.extensions.enhanced_status_codes;
        let reply = host.replies.unsupported_parameter(enhanced, &param);
        self.protocol_error(&reply).map(|()| false)
    }

    /// RCPT to `recipient`; `line` is the command as sent.
    pub(super) async fn rcpt(&mut self, line: &[u8], recipient: String) -> Step {
        let host = self.host.clone();
        if self.protocol.tx.is_none() {
            return self.protocol_error(&host.replies.need_mail);
        }
        if !self.parameters_advertised(line, false)? {
            return Ok(());
        }
        let Some(tx) = self.protocol.tx.as_mut() else {
            return Ok(());
        };
        tx.rcpt_tried = true;
        // Every RCPT decided counts, refused or accepted: otherwise a client could send
        // refused recipients for ever, each one kept and each one a decision of the
        // policy. Past the limit the answer is 452 without a decision (RFC 5321
        // 4.5.3.1.10: the client tries those again in another transaction), as Postfix
        // answers past smtpd_recipient_limit; past as many again (Postfix's
        // smtpd_recipient_overshoot_limit) each one also counts as a protocol error, so
        // that max-errors ends a client that never stops.
        let max = host.config.limits.max_recipients;
        if tx.recipients.len() + tx.refused_count >= max {
            tx.overshoot += 1;
            let counted = tx.overshoot > max;
            self.answer(Stage::Rcpt, &host.replies.too_many_recipients, None);
            return if counted { self.count_error() } else { Ok(()) };
        }
        let point = policy::Rcpt {
            recipient: &recipient,
        };
        match self.decide(point).await? {
            Done::Accepted { reply, rule } => {
                let reply = reply.as_ref().unwrap_or(&host.replies.rcpt_ok);
                self.answer(Stage::Rcpt, reply, rule);
                if let Some(tx) = self.protocol.tx.as_mut() {
                    tx.recipients.push(recipient);
                }
            }
            Done::Refused(reply) => {
                if let Some(tx) = self.protocol.tx.as_mut() {
                    tx.refused_count += 1;
                    if tx.refused.len() < REFUSED_NAMED {
                        tx.refused.push((recipient, reply.code));
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) async fn rset(&mut self) -> Step {
        let host = self.host.clone();
        if let Done::Accepted { reply, rule } = self.decide(policy::Rset).await? {
            self.end_by_client("RSET");
            self.answer(
                Stage::Rset,
                reply.as_ref().unwrap_or(&host.replies.rset_ok),
                rule,
            );
        }
        Ok(())
    }

    pub(super) async fn quit(&mut self) -> Step {
        let host = self.host.clone();
        match self.decide(policy::Quit).await? {
            Done::Accepted { reply, rule } => {
                self.end_by_client("QUIT");
                self.answer(
                    Stage::Quit,
                    reply.as_ref().unwrap_or(&host.replies.bye),
                    rule,
                );
                Err(Closed::by_client("QUIT"))
            }
            Done::Refused(_) => Ok(()),
        }
    }
}

/// The first parameter of a MAIL (`mail`) or RCPT line that is not of an extension the
/// host advertises, as written (`RET=HDRS`, `BODY=BINARYMIME`). The farm implements no
/// parameter of RCPT, and of MAIL only SIZE (RFC 1870), BODY=7BIT or 8BITMIME
/// (RFC 6152) and SMTPUTF8 (RFC 6531), each when the host advertises its extension; DSN
/// (RET, ENVID, NOTIFY, ORCPT), AUTH, BINARYMIME and the rest it never advertises.
fn unadvertised_parameter(line: &[u8], mail: bool, ext: &Extensions) -> Option<String> {
    let advertised = |param: &[u8]| {
        let (key, value) = match memchr(b'=', param) {
            Some(at) => (&param[..at], Some(&param[at + 1..])),
            None => (param, None),
        };
        let is = |name: &str| key.eq_ignore_ascii_case(name.as_bytes());
        let body =
            |v: &[u8]| v.eq_ignore_ascii_case(b"7BIT") || v.eq_ignore_ascii_case(b"8BITMIME");
        mail && match value {
            None => is("SMTPUTF8") && ext.smtputf8,
            Some(v) => (is("SIZE") && ext.size) || (is("BODY") && body(v) && ext.eight_bit_mime),
        }
    };
    after_path(line)
        .split(u8::is_ascii_whitespace)
        .filter(|param| !param.is_empty())
        .find(|param| !advertised(param))
        .map(|param| String::from_utf8_lossy(param).into_owned())
}

/// What follows the path of a MAIL or RCPT line (`<...>`, whose quoted local part may
/// hold a `>`): its parameters.
fn after_path(line: &[u8]) -> &[u8] {
    let Some(open) = memchr(b'<', line) else {
        return &[];
    };
    if memchr::memchr2(b'"', b'\\', &line[open..]).is_none() {
        // Nothing quoted: the path ends at the first `>`.
        return memchr(b'>', &line[open..]).map_or(&[], |close| &line[open + close + 1..]);
    }
    let (mut quoted, mut escaped) = (false, false);
    for (at, &b) in line.iter().enumerate().skip(open + 1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return &line[at + 1..],
            _ => {}
        }
    }
    &[]
}

/// Whether a MAIL parameter named `name` (as the parser names one it could not read)
/// is of an extension the host advertises: then its fault is its syntax (501), else that
/// it was used at all (555).
pub(super) fn advertised_parameter(name: &str, ext: &Extensions) -> bool {
    (name.eq_ignore_ascii_case("SIZE") && ext.size)
        || (name.eq_ignore_ascii_case("BODY") && ext.eight_bit_mime)
}

#[cfg(test)]
mod tests {
    use crate::smtp::session::tests::{Logs, host};

    #[tokio::test(start_paused = true)]
    async fn ehlo_lists_the_extensions_and_helo_does_not() {
        let h = host("[host.extensions]\nchunking = false\nsmtputf8 = false\n");
        let mut c = h.connect();
        c.greeting().await;
        c.send("EHLO a.test\r\n").await;
        c.expect("250-mx1.farm.test\n250-PIPELINING\n250-SIZE 36700160\n250-8BITMIME\n250 ENHANCEDSTATUSCODES")
            .await;
        c.send("HELO a.test\r\n").await;
        c.expect("250 mx1.farm.test").await;
    }

    /// `hide-starttls` takes STARTTLS out of this EHLO reply only.
    #[tokio::test(start_paused = true)]
    async fn hide_starttls_leaves_it_out_of_one_ehlo_reply() {
        let h = host(
            "tls = \"valid\"\n[[host.rule]]\nstage = \"ehlo\"\nwhen = { helo = \"hide.test\" }\n\
             then = { hide-starttls = true }\n",
        );
        let mut c = h.connect();
        c.greeting().await;
        let hidden = c.command("EHLO hide.test").await;
        assert!(!hidden.text().contains("STARTTLS"), "{hidden}");
        // Not offered, so refused: 454, as Postfix answers.
        assert_eq!(c.command("STARTTLS").await.code, 454);
        let shown = c.command("EHLO show.test").await;
        assert!(shown.text().ends_with("250 STARTTLS"), "{shown}");
    }

    #[tokio::test(start_paused = true)]
    async fn commands_out_of_order_get_503_and_limits_their_codes() {
        let h = host("[host.limits]\nmax-recipients = 1\nmax-message-size = 1000\n");
        let mut c = h.connect();
        c.greeting().await;
        c.send("MAIL FROM:<s@x.test>\r\n").await;
        c.expect("503 5.5.1 Error: send HELO/EHLO first").await;
        c.ehlo("a.test").await;
        c.send("RCPT TO:<r@y.test>\r\n").await;
        c.expect("503 5.5.1 Error: need MAIL command").await;
        c.send("MAIL FROM:<s@x.test> SIZE=5000\r\n").await;
        c.expect("552 5.3.4 Message size exceeds fixed maximum message size")
            .await;
        c.send("MAIL FROM:<s@x.test>\r\nMAIL FROM:<s@x.test>\r\n")
            .await;
        c.expect("250 2.1.0 Ok").await;
        c.expect("503 5.5.1 Error: nested MAIL command").await;
        c.send("RCPT TO:<a@y.test>\r\nRCPT TO:<b@y.test>\r\n").await;
        c.expect("250 2.1.5 Ok").await;
        c.expect("452 4.5.3 Error: too many recipients").await;
        c.send("RSET\r\nRCPT TO:<a@y.test>\r\nQUIT\r\n").await;
        c.expect("250 2.0.0 Ok").await;
        c.expect("503 5.5.1 Error: need MAIL command").await;
        c.expect("221 2.0.0 Bye").await;
        c.expect_closed().await;
    }

    /// Refused recipients count against `max-recipients` too: past it a RCPT gets 452
    /// without a decision, and a client that carries on as many times again has each
    /// further RCPT counted as a protocol error, so it is closed in the end.
    #[tokio::test(start_paused = true)]
    async fn refused_recipients_count_against_the_limit_until_the_client_is_closed() {
        let h = host(
            "[host.limits]\nmax-recipients = 2\nmax-errors = 2\n\
             [[host.rule]]\nstage = \"rcpt\"\nthen = { reply = \"550 5.1.1 No such user\" }\n",
        );
        let mut c = h.ready().await;
        c.command("MAIL FROM:<s@x.test>").await;
        for n in 0..2 {
            c.send(format!("RCPT TO:<u{n}@y.test>\r\n")).await;
            c.expect("550 5.1.1 No such user").await;
        }
        // Past the limit: 452, as many times again without counting as errors...
        for n in 2..4 {
            c.send(format!("RCPT TO:<u{n}@y.test>\r\n")).await;
            c.expect("452 4.5.3 Error: too many recipients").await;
        }
        // ...then each one is an error, and max-errors ends the connection.
        c.send("RCPT TO:<u4@y.test>\r\nRCPT TO:<u5@y.test>\r\n")
            .await;
        c.expect("452 4.5.3 Error: too many recipients").await;
        c.expect("452 4.5.3 Error: too many recipients").await;
        c.expect("421 4.7.0 mx1.farm.test Error: too many errors")
            .await;
        c.expect_closed().await;
    }

    /// What a transaction remembers of its refused recipients is bounded, and its log
    /// line says how many more were refused than it names.
    #[tokio::test(start_paused = true)]
    async fn the_log_line_names_a_bounded_number_of_refused_recipients() {
        let logs = Logs::capture();
        let h = host(
            "[host.limits]\nmax-recipients = 1000\n\
             [[host.rule]]\nstage = \"rcpt\"\nthen = { reply = \"550 5.1.1 No such user\" }\n",
        );
        let mut c = h.ready().await;
        c.command("MAIL FROM:<many@x.test>").await;
        let mut batch = String::new();
        for n in 0..250 {
            batch.push_str(&format!("RCPT TO:<u{n}@y.test>\r\n"));
        }
        c.send(batch).await;
        for _ in 0..250 {
            c.expect_code(550).await;
        }
        c.command("RSET").await;
        let line = logs.line("from=many@x.test");
        assert!(line.contains("u99@y.test (550)"), "{line}");
        assert!(!line.contains("u100@y.test"), "{line}");
        assert!(line.contains("and 150 more"), "{line}");
    }

    /// After a refusing greeting, only QUIT is served.
    #[tokio::test(start_paused = true)]
    async fn a_refusing_greeting_serves_only_quit() {
        let h = host(
            "[[host.rule]]\nstage = \"connect\"\nthen = { reply = \"554 5.7.1 No service for you\" }\n",
        );
        let mut c = h.connect();
        c.expect("554 5.7.1 No service for you").await;
        c.send("EHLO a.test\r\nQUIT\r\n").await;
        c.expect("503 5.5.1 Error: no service here, only QUIT")
            .await;
        c.expect("221 2.0.0 Bye").await;
    }

    /// A refused EHLO keeps the name given before; a refused MAIL starts no transaction.
    #[tokio::test(start_paused = true)]
    async fn refusals_leave_the_state_as_it_was() {
        let h = host(
            "[[host.rule]]\nstage = \"ehlo\"\nwhen = { helo = \"bad.test\" }\nthen = { reply = \"550 5.7.1 Go away\" }\n\
             [[host.rule]]\nstage = \"mail\"\nwhen = { mail = \"spam@x.test\" }\nthen = { reply = \"550 5.7.1 No\" }\n",
        );
        let mut c = h.ready().await;
        c.send("EHLO bad.test\r\nMAIL FROM:<spam@x.test>\r\nRCPT TO:<r@y.test>\r\n")
            .await;
        c.expect("550 5.7.1 Go away").await;
        c.expect("550 5.7.1 No").await;
        c.expect("503 5.5.1 Error: need MAIL command").await;
        let done = c
            .transaction("s@x.test", &["r@y.test"], "Subject: x\r\n\r\nhi\r\n")
            .await;
        assert!(
            done.delivered(),
            "the EHLO before the refused one still counts"
        );
    }

    /// RSET or QUIT after every recipient was refused is what a client should do, and not
    /// abandoning a transaction; one with an accepted recipient is abandoned.
    #[tokio::test(start_paused = true)]
    async fn a_transaction_without_an_accepted_recipient_is_not_abandoned() {
        let logs = Logs::capture();
        let h = host(
            "[[host.rule]]\nstage = \"rcpt\"\nwhen = { rcpt = \"no@y.test\" }\n\
             then = { reply = \"550 5.1.1 No such user\" }\n",
        );
        let mut c = h.ready().await;
        for (sender, recipient, end) in [
            ("a@x.test", "no@y.test", "RSET"),
            ("b@x.test", "ok@y.test", "RSET"),
            ("c@x.test", "no@y.test", "QUIT"),
        ] {
            c.command(&format!("MAIL FROM:<{sender}>")).await;
            c.command(&format!("RCPT TO:<{recipient}>")).await;
            c.command(end).await;
        }
        let refused = logs.line("from=a@x.test");
        assert!(
            refused.contains("ended by RSET: no recipient accepted"),
            "{refused}"
        );
        assert!(refused.contains("refused=no@y.test (550)"), "{refused}");
        let abandoned = logs.line("from=b@x.test");
        assert!(
            abandoned.contains("abandoned by the client: RSET"),
            "{abandoned}"
        );
        let quit = logs.line("from=c@x.test");
        assert!(
            quit.contains("ended by QUIT: no recipient accepted"),
            "{quit}"
        );
    }
}
