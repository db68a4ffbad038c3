//! The points of a conversation that rules decide, one type each, with what the command
//! adds to what is known and the effect its stage may have.

use crate::scenario::{ActionKind, Stage, TlsFault};

use super::verdict::{HideStarttls, LoseReply, Never};

/// A command being decided.
pub(crate) trait Point {
    const STAGE: Stage;
    /// What, beyond accepting, refusing and closing, a rule at this stage can do.
    type Effect;
    /// The effect of an action of this stage's own (the loader allows such actions only
    /// at their stage, so for the others this is `None`).
    fn effect(kind: &ActionKind) -> Option<Self::Effect>;
    /// What the command itself tells: the sender of a MAIL, the recipient of a RCPT,
    /// a size.
    fn ask(&self) -> Ask<'_> {
        Ask::default()
    }
}

/// What a command adds to the facts of the conversation.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ask<'a> {
    /// The sender of a MAIL not yet accepted (empty for the null sender).
    pub sender: Option<&'a str>,
    /// The SIZE= of a MAIL, or the size of the received message.
    pub size: Option<u64>,
    /// The recipient of the RCPT being decided.
    pub recipient: Option<&'a str>,
}

/// The connection has just been accepted: the greeting.
pub(crate) struct Connect;
/// EHLO or HELO.
pub(crate) struct Ehlo;
/// STARTTLS, when the host offers it and the session may upgrade.
pub(crate) struct Starttls;
/// MAIL FROM.
pub(crate) struct Mail<'a> {
    pub sender: &'a str,
    pub size: Option<u64>,
}
/// RCPT TO.
pub(crate) struct Rcpt<'a> {
    pub recipient: &'a str,
}
/// DATA, or the first BDAT chunk.
pub(crate) struct Data;
/// The final dot, or the last BDAT chunk.
pub(crate) struct EndOfData {
    pub size: u64,
}
/// RSET.
pub(crate) struct Rset;
/// QUIT.
pub(crate) struct Quit;

/// A point whose stage has no effect of its own.
macro_rules! plain_point {
    ($($point:ty => $stage:expr),* $(,)?) => {$(
        impl Point for $point {
            const STAGE: Stage = $stage;
            type Effect = Never;
            fn effect(_: &ActionKind) -> Option<Never> {
                None
            }
        }
    )*};
}

plain_point! {
    Connect => Stage::Connect,
    Data => Stage::Data,
    Rset => Stage::Rset,
    Quit => Stage::Quit,
}

impl Point for Ehlo {
    const STAGE: Stage = Stage::Ehlo;
    type Effect = HideStarttls;
    fn effect(kind: &ActionKind) -> Option<HideStarttls> {
        matches!(kind, ActionKind::HideStarttls).then_some(HideStarttls)
    }
}

impl Point for Starttls {
    const STAGE: Stage = Stage::Starttls;
    type Effect = TlsFault;
    fn effect(kind: &ActionKind) -> Option<TlsFault> {
        match kind {
            ActionKind::TlsFault(fault) => Some(*fault),
            _ => None,
        }
    }
}

impl Point for Mail<'_> {
    const STAGE: Stage = Stage::Mail;
    type Effect = Never;
    fn effect(_: &ActionKind) -> Option<Never> {
        None
    }
    fn ask(&self) -> Ask<'_> {
        Ask {
            sender: Some(self.sender),
            size: self.size,
            recipient: None,
        }
    }
}

impl Point for Rcpt<'_> {
    const STAGE: Stage = Stage::Rcpt;
    type Effect = Never;
    fn effect(_: &ActionKind) -> Option<Never> {
        None
    }
    fn ask(&self) -> Ask<'_> {
        Ask {
            recipient: Some(self.recipient),
            ..Ask::default()
        }
    }
}

impl Point for EndOfData {
    const STAGE: Stage = Stage::EndOfData;
    type Effect = LoseReply;
    fn effect(kind: &ActionKind) -> Option<LoseReply> {
        matches!(kind, ActionKind::LoseReply).then_some(LoseReply)
    }
    fn ask(&self) -> Ask<'_> {
        Ask {
            size: Some(self.size),
            ..Ask::default()
        }
    }
}
