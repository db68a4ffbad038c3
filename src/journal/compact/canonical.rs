//! The command lines the journal need not keep: those that the command's own parts spell
//! out exactly (`RCPT TO:<a@b.test>`, `DATA`), which is what nearly every sender sends.
//! Such a line is kept as a flag and made again when it is read; any other line (another
//! case, extra spaces, parameters the command does not keep) is kept as it arrived.

use super::super::event::CommandRef;

/// Calls `f` with the pieces that, joined, are the line `command` spells out, if any.
/// The one list serves both ways: the check when writing, the line when reading.
fn with_pieces<R>(command: CommandRef<'_>, f: impl FnOnce(&[&str]) -> R) -> Option<R> {
    let mut number = itoa::Buffer::new();
    Some(match command {
        CommandRef::Ehlo { name } => f(&["EHLO ", name]),
        CommandRef::Helo { name } => f(&["HELO ", name]),
        CommandRef::Mail { sender, size: None } => f(&["MAIL FROM:<", sender, ">"]),
        CommandRef::Mail {
            sender,
            size: Some(size),
        } => f(&["MAIL FROM:<", sender, "> SIZE=", number.format(size)]),
        CommandRef::Rcpt { recipient } => f(&["RCPT TO:<", recipient, ">"]),
        CommandRef::Data => f(&["DATA"]),
        CommandRef::Bdat { size, last } => f(&[
            "BDAT ",
            number.format(size),
            if last { " LAST" } else { "" },
        ]),
        CommandRef::Rset => f(&["RSET"]),
        CommandRef::Noop => f(&["NOOP"]),
        CommandRef::Help => f(&["HELP"]),
        CommandRef::Quit => f(&["QUIT"]),
        CommandRef::Starttls => f(&["STARTTLS"]),
        // The final dot after DATA; a last BDAT chunk's line is empty, and kept.
        CommandRef::EndOfData { .. } => f(&["."]),
        CommandRef::Vrfy | CommandRef::Other => return None,
    })
}

/// Whether `line` is exactly what `command` spells out.
pub(super) fn is_canonical(line: &str, command: CommandRef<'_>) -> bool {
    with_pieces(command, |pieces| {
        let mut rest = line;
        for piece in pieces {
            match rest.strip_prefix(piece) {
                Some(after) => rest = after,
                None => return false,
            }
        }
        rest.is_empty()
    })
    .unwrap_or(false)
}

/// The line `command` spells out.
pub(super) fn canonical_line(command: CommandRef<'_>) -> Option<String> {
    with_pieces(command, |pieces| pieces.concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Command;

    #[test]
    fn only_the_exact_spelling_is_canonical() {
        let rcpt = Command::Rcpt {
            recipient: "a@b.test".into(),
        };
        assert!(is_canonical("RCPT TO:<a@b.test>", rcpt.borrowed()));
        for other in [
            "rcpt to:<a@b.test>",
            "RCPT TO: <a@b.test>",
            "RCPT TO:<a@b.test> NOTIFY=NEVER",
            "RCPT TO:<a@b.test",
        ] {
            assert!(!is_canonical(other, rcpt.borrowed()), "{other}");
        }
        let mail = Command::Mail {
            sender: String::new(),
            size: Some(1700),
        };
        assert!(is_canonical("MAIL FROM:<> SIZE=1700", mail.borrowed()));
        assert!(!is_canonical(
            "MAIL FROM:<> BODY=8BITMIME SIZE=1700",
            mail.borrowed()
        ));
        assert_eq!(
            canonical_line(mail.borrowed()).as_deref(),
            Some("MAIL FROM:<> SIZE=1700")
        );
        assert!(!is_canonical("VRFY x", CommandRef::Vrfy));
        assert_eq!(canonical_line(CommandRef::Other), None);
    }
}
