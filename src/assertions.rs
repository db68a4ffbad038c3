//! Expectations on a sender's retry behaviour that read as sentences in a test:
//!
//! ```no_run
//! # async fn example(farm: mxfarm::Farm) {
//! farm.expect_delivery("me@sender.test", "bob@aol.test")
//!     .delivered_after_attempts(3)
//!     .had_no_early_retries()
//!     .tried_a_secondary_mx();
//! # }
//! ```
//!
//! A failed expectation panics with the delivery's transcript, so the test output shows
//! what the sender actually did.

use crate::deliveries::{Identity, Outcome};
use crate::render::Granularity;
use crate::report::{Check, FindingKind, Report};
use crate::scenario::Stage;
use crate::transcript::{DeliveryOutcome, DeliveryTranscript, Transcript};

/// Which delivery an expectation is about.
#[derive(Debug, Clone)]
enum Which {
    /// The one message from `sender` to `recipient`.
    Envelope { sender: String, recipient: String },
    /// The message with this Message-ID, to `recipient`.
    MessageId { id: String, recipient: String },
}

impl std::fmt::Display for Which {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Which::Envelope { sender, recipient } => write!(f, "<{sender}> -> <{recipient}>"),
            Which::MessageId { id, recipient } => write!(f, "of <{id}> to <{recipient}>"),
        }
    }
}

/// What a test expects of one delivery (one message to one recipient). Expectations
/// that the retry report checks too are the report's checks, so a test and `mxfarm
/// report` never disagree.
#[derive(Debug, Clone)]
pub struct DeliveryExpectation {
    which: Which,
    transcript: Transcript,
    report: Report,
}

impl DeliveryExpectation {
    pub(crate) fn new(
        sender: &str,
        recipient: &str,
        transcript: Transcript,
        report: Report,
    ) -> Self {
        let which = Which::Envelope {
            sender: sender.to_string(),
            recipient: recipient.to_string(),
        };
        Self {
            which,
            transcript,
            report,
        }
    }

    pub(crate) fn of_message(
        message_id: &str,
        recipient: &str,
        transcript: Transcript,
        report: Report,
    ) -> Self {
        let which = Which::MessageId {
            id: message_id.trim_matches(['<', '>']).to_string(),
            recipient: recipient.to_string(),
        };
        Self {
            which,
            transcript,
            report,
        }
    }

    /// The delivery's index in the transcript (and the report), or a panic naming the
    /// deliveries the journal does have. An expectation on a journal with events missing
    /// fails: attempts may be missing, so no answer about them would be true; so does one
    /// by sender and recipient when the sender sent that recipient several messages.
    #[track_caller]
    fn index(&self) -> usize {
        let all = || self.transcript.render(Granularity::Seconds);
        if let Some(missing) = &self.transcript.incomplete {
            panic!(
                "cannot check the delivery {}: {missing}\n{}",
                self.which,
                all()
            );
        }
        let found: Vec<usize> = (0..self.transcript.deliveries.len())
            .filter(|&i| self.matches(&self.transcript.deliveries[i]))
            .collect();
        match found.as_slice() {
            [i] => *i,
            [] => panic!(
                "no delivery {} in the journal; it has:\n{}",
                self.which,
                all()
            ),
            _ => panic!(
                "{} messages match the delivery {}; name one by its Message-ID with `expect_delivery_of`:\n{}",
                found.len(),
                self.which,
                all()
            ),
        }
    }

    fn matches(&self, d: &DeliveryTranscript) -> bool {
        let to = |recipient: &str| {
            d.recipient
                .as_deref()
                .is_some_and(|r| r.eq_ignore_ascii_case(recipient))
        };
        match &self.which {
            Which::Envelope { sender, recipient } => {
                d.sender.eq_ignore_ascii_case(sender) && to(recipient)
            }
            Which::MessageId { id, recipient } => {
                to(recipient)
                    && self.transcript.message(d.message).is_some_and(|m| {
                        matches!(&m.identity, Identity::MessageId { message_id } if message_id == id)
                    })
            }
        }
    }

    #[track_caller]
    fn delivery(&self) -> &DeliveryTranscript {
        &self.transcript.deliveries[self.index()]
    }

    #[track_caller]
    fn fail(&self, expected: &str) -> ! {
        panic!(
            "expected the delivery {} {expected}, but:\n{}",
            self.which,
            self.delivery().render(Granularity::Seconds)
        )
    }

    /// The message was handed over (at least once).
    #[track_caller]
    pub fn was_delivered(self) -> Self {
        if !self.delivery().delivered() {
            self.fail("to be delivered");
        }
        self
    }

    /// The message was handed over exactly once: no duplicate.
    #[track_caller]
    pub fn was_delivered_once(self) -> Self {
        if !matches!(self.delivery().outcome, DeliveryOutcome::Delivered { .. }) {
            self.fail("to be delivered exactly once");
        }
        self
    }

    /// The message was handed over on attempt number `n` (the first is 1).
    #[track_caller]
    pub fn delivered_after_attempts(self, n: usize) -> Self {
        match self.delivery().outcome {
            DeliveryOutcome::Delivered { attempts, .. } if attempts == n => self,
            _ => self.fail(&format!("to be delivered on attempt {n}")),
        }
    }

    /// Nothing was delivered.
    #[track_caller]
    pub fn was_never_delivered(self) -> Self {
        if self.delivery().delivered() {
            self.fail("never to be delivered");
        }
        self
    }

    /// The farm refused it permanently (a 5xx to MAIL, RCPT, DATA or the end of data)
    /// and the sender did not try again.
    #[track_caller]
    pub fn bounced_without_retrying(self) -> Self {
        let delivery = self.delivery();
        let first_rejection = delivery.attempts.iter().position(|a| {
            a.outcome == Outcome::Rejected
                && !matches!(a.stage, Stage::Connect | Stage::Ehlo | Stage::Starttls)
        });
        match first_rejection {
            Some(i) if i + 1 == delivery.attempts.len() => self,
            Some(_) => self.fail("not to be retried after a permanent 5xx"),
            None => self.fail("to be refused with a 5xx"),
        }
    }

    /// No retry came before the deferral said it would clear (greylisting delay, a quota
    /// for a while), as the report's `early-retry` check sees it: moving on to the next MX
    /// right away is not a retry.
    #[track_caller]
    pub fn had_no_early_retries(self) -> Self {
        let early = self
            .report
            .deliveries
            .get(self.index())
            .and_then(|d| d.finding(Check::EarlyRetry))
            .is_some_and(|f| matches!(f.kind, FindingKind::EarlyRetry { early, .. } if early > 0));
        if early {
            self.fail("to wait out each deferral before retrying");
        }
        self
    }

    /// At least one attempt went to an MX host with a higher preference value than the
    /// most preferred one: the sender fell back.
    #[track_caller]
    pub fn tried_a_secondary_mx(self) -> Self {
        let attempts = &self.delivery().attempts;
        let best = attempts.iter().filter_map(|a| a.preference).min();
        let fell_back = best.is_some_and(|best| {
            attempts
                .iter()
                .any(|a| a.preference.is_some_and(|p| p > best))
        });
        if !fell_back {
            self.fail("to try a secondary MX");
        }
        self
    }

    /// Every attempt went to one of these hosts.
    #[track_caller]
    pub fn only_tried(self, hosts: &[&str]) -> Self {
        if self
            .delivery()
            .attempts
            .iter()
            .any(|a| !hosts.contains(&a.host.as_str()))
        {
            self.fail(&format!("to try only {hosts:?}"));
        }
        self
    }

    /// The number of attempts, for assertions the methods above do not cover.
    pub fn attempts(&self) -> usize {
        self.delivery().attempts.len()
    }
}
