//! Carrying out a policy verdict: the delay first, then a refusal, a close, a reset or a
//! hang. What accepts is left to the stage handler, which knows the stage's own positive
//! reply, and so is the stage's own effect.

use std::sync::Arc;

use super::input::{RetryHint, Waited};
use super::{Closed, Session, Step};
use crate::policy::{Act, Verdict};
use crate::scenario::{Reply, Stage};

/// What is left for the stage handler once a verdict is carried out.
#[derive(Debug)]
pub(super) enum Done<E> {
    /// Send the stage's positive reply, or this one from the rule.
    Accepted {
        reply: Option<Reply>,
        rule: Option<Arc<str>>,
    },
    /// This refusal was sent; the connection stays open.
    Refused(Reply),
    /// The stage's own effect, from this rule.
    Effect { effect: E, rule: Option<Arc<str>> },
}

/// The close of a client that did not wait for the farm's answer at `stage`.
pub(super) fn client_left(stage: Stage) -> Closed {
    Closed::by_client(format!(
        "the client closed the connection during the delay at {stage}, before the farm answered"
    ))
}

impl Session {
    /// Carries out `verdict` on `stage`. A verdict that ends the connection (a close, a
    /// reset, a hang, a reply with a close) comes back as `Err(Closed)`.
    pub(super) async fn carry_out<E>(
        &mut self,
        stage: Stage,
        verdict: Verdict<E>,
    ) -> Step<Done<E>> {
        let Verdict {
            rule,
            delay,
            act,
            retry_after,
            retry_after_told,
        } = verdict;
        if let Some(delay) = delay
            && self.pause(delay).await? == Waited::ClientLeft
        {
            return Err(client_left(stage));
        }
        let by = rule.as_deref().unwrap_or("the farm");
        match act {
            Act::Accept(reply) => Ok(Done::Accepted { reply, rule }),
            Act::Effect(effect) => Ok(Done::Effect { effect, rule }),
            Act::Refuse { reply, close } => {
                let reason = format!("{} reply at {stage} by {by}", reply.code);
                if stage == Stage::Connect {
                    // Later refusals have their transaction's log line; this one has none.
                    let greeting = reply.one_line();
                    self.log_connection(&format!("refused at connect by {by}: {greeting}"));
                }
                let hint = RetryHint {
                    after: retry_after,
                    told: retry_after_told,
                };
                self.write_reply(Some(stage), &reply, rule.clone(), hint);
                if close {
                    return Err(Closed::by_farm(reason));
                }
                Ok(Done::Refused(reply))
            }
            Act::Close => Err(Closed::by_farm(format!(
                "closed without reply at {stage} by {by}"
            ))),
            Act::Reset => {
                self.flush().await?;
                self.stream.reset();
                self.was_reset = true;
                let reason = format!("reset the connection at {stage} by {by}");
                self.log_connection(&reason);
                Err(Closed::by_farm(reason))
            }
            Act::Hang(limit) => {
                self.hang(limit).await?;
                Err(Closed::by_farm(format!(
                    "hung at {stage} by {by} for {}",
                    humantime::format_duration(limit)
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::journal::EventKind;
    use crate::smtp::session::tests::{Logs, host};

    /// A tarpit counts from when the command arrived, on the farm's clock; the refusal
    /// that follows is journalled with its rule and retry hint.
    #[tokio::test(start_paused = true)]
    async fn a_delay_then_a_refusal_with_its_rule_and_hint() {
        let h = host(
            "[[host.rule]]\nstage = \"rcpt\"\n\
             then = { greylist = { delay = \"5m\" }, delay = \"30s\" }\n",
        );
        let mut c = h.ready().await;
        c.command("MAIL FROM:<s@x.test>").await;
        let before = h.env.clock.now();
        let reply = c.command("RCPT TO:<r@y.test>").await;
        assert_eq!(reply.code, 450, "{reply}");
        assert!(h.env.clock.now() - before >= Duration::from_secs(30));
        let journalled = h.journal().into_iter().find_map(|e| match e.kind {
            EventKind::Reply {
                rule, retry_after, ..
            } if rule.is_some() => Some((rule, retry_after)),
            _ => None,
        });
        assert_eq!(
            journalled,
            Some((
                Some("host mx1 rule 1".into()),
                Some(Duration::from_secs(300))
            ))
        );
        // Refused, not closed: the session goes on.
        c.command("RSET").await;
    }

    #[tokio::test(start_paused = true)]
    async fn close_hang_and_reset_end_the_connection_and_say_why() {
        let h = host(
            "[[host.rule]]\nstage = \"mail\"\nwhen = { mail = \"close@x.test\" }\nthen = { close = true }\n\
             [[host.rule]]\nstage = \"mail\"\nwhen = { mail = \"hang@x.test\" }\nthen = { hang = \"10m\" }\n\
             [[host.rule]]\nstage = \"mail\"\nwhen = { mail = \"reset@x.test\" }\nthen = { reset = true }\n\
             [[host.rule]]\nstage = \"mail\"\nwhen = { mail = \"bye@x.test\" }\nthen = { reply = \"421 4.7.0 Bye\" }\n",
        );
        for (conn, sender) in [(1, "close"), (2, "hang"), (3, "reset"), (4, "bye")] {
            let mut c = h.ready().await;
            c.send(format!("MAIL FROM:<{sender}@x.test>\r\n")).await;
            if sender == "bye" {
                c.expect("421 4.7.0 Bye").await;
            }
            let before = h.env.clock.now();
            c.expect_closed().await;
            if sender == "hang" {
                assert!(h.env.clock.now() - before >= Duration::from_secs(600));
            }
            h.finish().await;
            h.tasks.reopen();
            let reason = h.closed_reason(conn).unwrap();
            let expected = match sender {
                "close" => "closed without reply at mail by host mx1 rule 1",
                "hang" => "hung at mail by host mx1 rule 2 for 10m",
                "reset" => "reset the connection at mail by host mx1 rule 3",
                _ => "421 reply at mail by host mx1 rule 4",
            };
            assert_eq!(reason, expected);
        }
    }

    /// A client that gives up during a hang ends it at once.
    #[tokio::test(start_paused = true)]
    async fn a_hang_ends_when_the_client_gives_up() {
        let h = host("[[host.rule]]\nstage = \"connect\"\nthen = { hang = \"1h\" }\n");
        let mut stream = h.connect_raw();
        stream.write_all(b"EHLO anyone\r\n").await.unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        h.finish().await;
        assert!(h.env.clock.now() < Duration::from_secs(3600));
        assert_eq!(
            h.closed_reason(1).as_deref(),
            Some("client gave up while the farm hung")
        );
    }

    /// A client that pipelines QUIT and half-closes (Exim does, with BDAT) still reads:
    /// the hang runs its course, and the farm, not the client, ends it.
    #[tokio::test(start_paused = true)]
    async fn a_half_close_after_quit_does_not_end_a_hang() {
        let h = host("[[host.rule]]\nstage = \"mail\"\nthen = { hang = \"10m\" }\n");
        let mut stream = h.connect_raw();
        stream
            .write_all(b"EHLO me\r\nMAIL FROM:<s@x.test>\r\nQUIT\r\n")
            .await
            .unwrap();
        stream.shutdown().await.unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        h.finish().await;
        assert!(h.env.clock.now() >= Duration::from_secs(600));
        let reason = h.closed_reason(1).unwrap_or_default();
        assert!(!reason.contains("client gave up"), "{reason}");
    }

    /// A refusing greeting (from a rule, or when the host is full) and a reset are about
    /// the connection: each has a log line with the connection's fields.
    #[tokio::test(start_paused = true)]
    async fn refused_greetings_and_resets_are_logged() {
        let logs = Logs::capture();
        for (code, text) in [(554, "5.7.1 No service"), (421, "4.7.0 Go away")] {
            let h = host(&format!(
                "[[host.rule]]\nstage = \"connect\"\nthen = {{ reply = \"{code} {text}\" }}\n"
            ));
            let mut c = h.connect();
            c.expect(&format!("{code} {text}")).await;
            let line = logs.line(&format!("{code} {text}"));
            assert!(
                line.contains("refused at connect by host mx1 rule 1"),
                "{line}"
            );
            assert!(line.contains("host=mx1 conn=1 client=192.0.2.1"), "{line}");
        }
        let h = host(
            "[host.limits]\nmax-connections = 1\n\
             [[host.rule]]\nstage = \"mail\"\nthen = { reset = true }\n",
        );
        let mut first = h.ready().await;
        let mut second = h.connect();
        second.expect_code(421).await;
        let full = logs.line("max-connections reached");
        assert!(full.contains("refused at connect: 421 4.3.2"), "{full}");
        assert!(full.contains("conn=2"), "{full}");
        first.send("MAIL FROM:<s@x.test>\r\n").await;
        first.expect_closed().await;
        h.finish().await;
        let reset = logs.line("session: reset the connection");
        assert!(reset.contains("at mail by host mx1 rule 1"), "{reset}");
        assert!(reset.contains("conn=1"), "{reset}");
    }
}
