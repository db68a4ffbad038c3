//! How each contact ended for each recipient, as a sender must treat it: the attempts
//! of the stories, built from contacts.

use std::time::Duration;

use super::contacts::{Contact, Transaction, TxEnd};
use super::{Attempt, Outcome};
use crate::scenario::{Reply, Stage};

fn outcome_of(reply: &Reply) -> Outcome {
    match reply.code {
        200..=399 => Outcome::Delivered,
        400..=499 => Outcome::Deferred,
        _ => Outcome::Rejected,
    }
}

/// Whether a contact without transactions ended by the farm's doing (a refusal, a failed
/// handshake, a close or a wait the client gave up on), so that the sender had to try
/// again; otherwise the client left on its own without offering a message.
pub(super) fn unreached(contact: &Contact) -> bool {
    let b = &contact.before_mail;
    if b.client_quit {
        return false;
    }
    b.refusal.is_some() || b.tls_failed.is_some() || b.farm_ended || contact.open
}

/// How the transaction as a whole ended, for the recipients it accepted (or for the
/// message, if it named none): outcome, stage, reply and why it closed.
pub(super) fn end_outcome(tx: &Transaction) -> (Outcome, Stage, Option<Reply>, Option<String>) {
    match &tx.end {
        TxEnd::Reply { stage, reply } => (outcome_of(reply), *stage, Some(reply.clone()), None),
        TxEnd::ByClient { how } => {
            let closed = match how {
                Stage::Ehlo => "the client began again with EHLO".to_string(),
                how => format!(
                    "the client sent {} before the end",
                    how.as_str().to_uppercase()
                ),
            };
            let stage = if tx.recipients.is_empty() {
                Stage::Mail
            } else {
                Stage::Rcpt
            };
            (Outcome::Abandoned, stage, None, Some(closed))
        }
        TxEnd::Closed { stage, closed } => {
            // The farm has the message even though the sender never heard so.
            let outcome = if tx.kept.is_some() {
                Outcome::Delivered
            } else {
                Outcome::Deferred
            };
            (outcome, *stage, None, Some(closed.clone()))
        }
        TxEnd::Open => (
            Outcome::Open,
            Stage::Mail,
            None,
            Some("still open when the journal ends".to_string()),
        ),
    }
}

/// For each recipient the transaction named: its outcome and when it was decided.
pub(super) fn recipient_outcomes(tx: &Transaction) -> Vec<(&str, Outcome, Duration)> {
    let (end, _, _, _) = end_outcome(tx);
    tx.recipients
        .iter()
        .map(|r| match &r.reply {
            Some(reply) if reply.code >= 400 => (r.address.as_str(), outcome_of(reply), r.at),
            Some(_) => (r.address.as_str(), end, tx.ended),
            None => (r.address.as_str(), not_answered(end), tx.ended),
        })
        .collect()
}

/// A recipient whose RCPT was never answered did not get the message.
fn not_answered(end: Outcome) -> Outcome {
    match end {
        Outcome::Open => Outcome::Open,
        _ => Outcome::Deferred,
    }
}

/// The attempts a transaction makes, one per recipient it named; `pending` stands for
/// the recipients of a transaction that named none (its MAIL was refused, or it ended
/// before any RCPT).
pub(super) fn tx_attempts(
    contact: &Contact,
    number: u32,
    tx: &Transaction,
    pending: &[Option<String>],
) -> Vec<(Option<String>, Attempt)> {
    let (end, stage, reply, closed) = end_outcome(tx);
    let carried: Vec<String> = tx.recipients.iter().map(|r| r.address.clone()).collect();
    let message_id = tx.content.as_ref().and_then(|c| c.message_id.clone());
    let base = Attempt {
        started: tx.started,
        transaction: number,
        at: tx.ended,
        host: contact.host.clone(),
        conn: contact.conn,
        client: contact.client,
        stage,
        reply,
        outcome: end,
        closed,
        message_id,
        retry_after: None,
        retry_after_told: false,
        clears_at: None,
        carried,
        kept: tx.kept,
        also_possible: Vec::new(),
    };
    if tx.recipients.is_empty() {
        return pending.iter().map(|r| (r.clone(), base.clone())).collect();
    }
    // A recipient named twice in one transaction is one attempt: its first RCPT.
    let mut seen: Vec<&str> = Vec::new();
    tx.recipients
        .iter()
        .filter(|r| {
            let again = seen.iter().any(|s| s.eq_ignore_ascii_case(&r.address));
            seen.push(&r.address);
            !again
        })
        .map(|r| {
            let mut a = base.clone();
            match &r.reply {
                Some(reply) if reply.code >= 400 => {
                    a.at = r.at;
                    a.stage = Stage::Rcpt;
                    a.reply = Some(reply.clone());
                    a.outcome = outcome_of(reply);
                    a.closed = None;
                    a.kept = None;
                    if let Some(hint) = r.hint {
                        a.retry_after = Some(hint.after);
                        a.retry_after_told = hint.told;
                        a.clears_at = Some(hint.clears_at);
                    }
                }
                Some(_) => {}
                None => {
                    a.stage = Stage::Rcpt;
                    a.reply = None;
                    a.outcome = not_answered(end);
                    a.kept = None;
                }
            }
            (Some(r.address.clone()), a)
        })
        .collect()
}

/// The attempt of a contact that ended before any MAIL.
pub(super) fn contact_attempt(contact: &Contact) -> Attempt {
    let b = &contact.before_mail;
    let closed = match (&b.tls_failed, &b.closed) {
        (Some(error), _) => Some(format!("TLS handshake failed: {error}")),
        (None, Some(closed)) => Some(closed.clone()),
        (None, None) if contact.open => Some("still open when the journal ends".to_string()),
        (None, None) => Some("the client quit without offering a message".to_string()),
    };
    let outcome = if contact.open && b.refusal.is_none() && b.tls_failed.is_none() {
        Outcome::Open
    } else if unreached(contact) {
        Outcome::Unreached
    } else {
        Outcome::Abandoned
    };
    Attempt {
        started: contact.opened,
        transaction: 0,
        at: contact.ended,
        host: contact.host.clone(),
        conn: contact.conn,
        client: contact.client,
        stage: b.stage.unwrap_or(Stage::Connect),
        reply: b.refusal.clone(),
        outcome,
        closed,
        message_id: None,
        retry_after: None,
        retry_after_told: false,
        clears_at: None,
        carried: Vec::new(),
        kept: None,
        also_possible: Vec::new(),
    }
}
