//! The bytes of the conversation: reply lines parsed, messages dot-stuffed, and what was
//! sent and received made printable for the panic messages.

use std::fmt::Write as _;
use std::io::ErrorKind;

/// Longer lines are shortened in the conversation log.
const LINE_WIDTH: usize = 200;

/// The code of a reply line, and whether it is the reply's last line.
pub(super) fn parse_line(line: &[u8]) -> Result<(u16, bool), &'static str> {
    let digits = line.get(..3).filter(|d| d.iter().all(u8::is_ascii_digit));
    let Some(digits) = digits else {
        return Err("a reply line must start with three digits");
    };
    let code = digits
        .iter()
        .fold(0u16, |code, d| code * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None | Some(b' ') => Ok((code, true)),
        Some(b'-') => Ok((code, false)),
        Some(_) => Err("a reply code must be followed by a space, a hyphen or the line end"),
    }
}

/// `message` as DATA content: a dot doubled at the start of each line, a CRLF added if
/// the message does not end with one, then the final dot.
pub(super) fn dot_stuffed(message: &str) -> String {
    let mut out = String::with_capacity(message.len() + 8);
    for (i, line) in message.split("\r\n").enumerate() {
        if i > 0 {
            out.push_str("\r\n");
        }
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !message.is_empty() && !message.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out
}

/// The conversation lines for bytes sent: one per CRLF-ended line, and the rest.
pub(super) fn sent_lines(bytes: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) => {
                lines.push(format!("C: {}", printable(&rest[..end])));
                rest = &rest[end + 2..];
            }
            None => {
                lines.push(format!("C: {} (no line end)", printable(rest)));
                rest = &[];
            }
        }
    }
    lines
}

/// `bytes` for the conversation log: control characters and invalid UTF-8 escaped, long
/// lines shortened.
pub(super) fn printable(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut shortened = false;
    'chunks: for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if shown == LINE_WIDTH {
                shortened = true;
                break 'chunks;
            }
            match c {
                '\r' => out.push_str("\\r"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", u32::from(c));
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
                }
                c => out.push(c),
            }
            shown += 1;
        }
        for b in chunk.invalid() {
            if shown == LINE_WIDTH {
                shortened = true;
                break 'chunks;
            }
            let _ = write!(out, "\\x{b:02x}");
            shown += 1;
        }
    }
    if shortened {
        let _ = write!(out, "… ({} bytes)", bytes.len());
    }
    out
}

/// Whether a read or write error means the peer closed or reset the connection.
pub(super) fn is_closed(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected
    )
}
