//! What the client reads: one whole reply, and how one transaction went.

use std::fmt;

/// One whole reply as the farm wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code, `250` in `250 2.1.0 Ok`.
    pub code: u16,
    /// The text of each line after the code and its `-` or space, without the CRLF:
    /// `["mx1.test", "PIPELINING"]` for `250-mx1.test` and `250 PIPELINING`.
    pub lines: Vec<String>,
    /// The lines as written, without their CRLFs.
    pub(super) written: Vec<String>,
}

impl Reply {
    /// The reply as written, its lines joined with `\n`, without CRLFs:
    /// `"250-mx1.test\n250 PIPELINING"`.
    pub fn text(&self) -> String {
        self.written.join("\n")
    }

    /// Whether the code is 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// What became of one [`SmtpClient::transaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The reply to MAIL; `None` if the connection closed first.
    pub mail: Option<Reply>,
    /// One entry per recipient, in order: the reply to its RCPT, or `None` if it got none
    /// (the transaction stopped before it, or the connection closed).
    pub rcpt: Vec<Option<Reply>>,
    /// The reply to DATA; `None` if DATA was not sent (MAIL or every recipient was
    /// refused, or a RCPT got a 421) or got no reply.
    pub data: Option<Reply>,
    /// The reply to the final dot; `None` if the message was not sent or got no reply.
    pub end_of_data: Option<Reply>,
    /// Whether a command went unanswered because the connection ended.
    pub(super) lost: bool,
}

impl Transaction {
    /// Whether the final dot got a 250: the farm took the message.
    pub fn delivered(&self) -> bool {
        self.end_of_data.as_ref().is_some_and(|r| r.code == 250)
    }

    /// Whether the connection ended during the transaction: a command got no reply, or a
    /// reply was a 421.
    pub fn closed(&self) -> bool {
        self.lost || self.replies().any(|r| r.code == 421)
    }

    /// The first negative (4xx or 5xx) reply: to MAIL, a RCPT, DATA or the final dot.
    pub fn refusal(&self) -> Option<&Reply> {
        self.replies().find(|r| !r.is_positive())
    }

    fn replies(&self) -> impl Iterator<Item = &Reply> {
        self.mail
            .iter()
            .chain(self.rcpt.iter().flatten())
            .chain(self.data.iter())
            .chain(self.end_of_data.iter())
    }
}
