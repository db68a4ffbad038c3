//! What a decision tells the session to do. The effect type `E` is the decided stage's
//! own: only `ehlo` can hide STARTTLS, only `starttls` can break the handshake, only
//! `end-of-data` can lose the reply. Every other stage's effect is [`Never`], which has no
//! value, so a stage handler has no arm for what its stage cannot do.

use std::sync::Arc;
use std::time::Duration;

use crate::scenario::Reply;

/// The effect of a stage that has none: no value of it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Never {}

/// At `ehlo`: accept, but leave STARTTLS out of this EHLO reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HideStarttls;

/// At `end-of-data`: keep the message, then close without the 250.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoseReply;

/// Everything the session must do for one decided command.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict<E> {
    /// The rule that decided (`host mx1 rule 2`); `None` when no rule did and the stage
    /// gets its usual positive reply.
    pub rule: Option<Arc<str>>,
    /// Farm time to let pass, counted from when the command arrived, before acting.
    pub delay: Option<Duration>,
    pub act: Act<E>,
    /// For a deferral that clears after a known time (greylisting, a quota for a while):
    /// how long until a retry can pass, for the journal and the reports on early retries.
    pub retry_after: Option<Duration>,
    /// Whether the reply tells the client that time (a greylist reply with
    /// `{remaining}`): only then can a sender be blamed for retrying sooner.
    pub retry_after_told: bool,
}

/// What to do, after the delay.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Act<E> {
    /// The stage's own positive reply, or this positive reply of the rule's.
    Accept(Option<Reply>),
    /// Send this reply (a refusal, or any reply that is followed by a close); then close
    /// if `close` (a 421 always closes).
    Refuse { reply: Reply, close: bool },
    /// Close without a reply.
    Close,
    /// Close at once with a TCP reset.
    Reset,
    /// Send nothing; close after this long unless the client gives up first.
    Hang(Duration),
    /// The stage's own effect.
    Effect(E),
}

impl<E> Verdict<E> {
    /// No rule decided: the stage's usual positive reply.
    pub(crate) fn accept() -> Self {
        Verdict {
            rule: None,
            delay: None,
            act: Act::Accept(None),
            retry_after: None,
            retry_after_told: false,
        }
    }
}
