//! SMTP replies as scenarios write them, and as the farm writes them on the wire.

use serde::Serialize;

/// An SMTP reply: a code, an optional enhanced status code, and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Reply {
    pub code: u16,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, status: Option<&str>, text: impl Into<String>) -> Self {
        Self {
            code,
            status: status.map(str::to_string),
            lines: vec![text.into()],
        }
    }

    /// Parses `"CODE [X.Y.Z] text"`, where `\n` in the text starts another line.
    /// Returns why it is not a reply otherwise, phrased for a scenario author.
    pub fn parse(text: &str) -> Result<Reply, String> {
        let text = text.trim_end_matches(['\r', '\n']);
        let (code, rest) = match text.split_once(' ') {
            Some((code, rest)) => (code, rest),
            None => (text, ""),
        };
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "a reply starts with a three-digit code, not {code:?}"
            ));
        }
        let code: u16 = code.parse().map_err(|_| "bad reply code".to_string())?;
        if !(200..=599).contains(&code) {
            return Err(format!("reply code {code} is outside 200-599"));
        }
        let (status, rest) = match rest.split_once(' ') {
            Some((first, rest)) if is_enhanced_status(first) => (Some(first.to_string()), rest),
            _ if is_enhanced_status(rest) => (Some(rest.to_string()), ""),
            _ => (None, rest),
        };
        if let Some(status) = &status {
            let class = status.as_bytes()[0];
            let expected = code.to_string().as_bytes()[0];
            if class != expected {
                return Err(format!(
                    "enhanced status {status} does not match the class of code {code} (write {}{})",
                    expected as char,
                    &status[1..]
                ));
            }
        }
        let lines: Vec<String> = rest.split('\n').map(|l| l.trim_end().to_string()).collect();
        if lines
            .iter()
            .any(|l| l.bytes().any(|b| b.is_ascii_control() && b != b'\t'))
        {
            return Err("a reply's text cannot hold control characters".to_string());
        }
        Ok(Reply {
            code,
            status,
            lines,
        })
    }

    /// The reply with each `{name}` in its text replaced by `lookup(name)`; names that
    /// `lookup` does not know stay as written. Cheap when there is no placeholder.
    pub fn fill(&self, lookup: impl Fn(&str) -> Option<String>) -> Reply {
        if !self.lines.iter().any(|l| l.contains('{')) {
            return self.clone();
        }
        let lines = self
            .lines
            .iter()
            .map(|line| {
                let mut out = String::with_capacity(line.len());
                let mut rest = line.as_str();
                while let Some(open) = rest.find('{') {
                    out.push_str(&rest[..open]);
                    let after = &rest[open + 1..];
                    match after
                        .find('}')
                        .and_then(|close| lookup(&after[..close]).map(|value| (value, close)))
                    {
                        Some((value, close)) => {
                            out.push_str(&value);
                            rest = &after[close + 1..];
                        }
                        None => {
                            out.push('{');
                            rest = after;
                        }
                    }
                }
                out.push_str(rest);
                out
            })
            .collect();
        Reply {
            code: self.code,
            status: self.status.clone(),
            lines,
        }
    }

    /// A 421 reply tells the client the server is closing the connection (RFC 5321 3.8).
    pub fn closes_connection(&self) -> bool {
        self.code == 421
    }

    /// The reply as it is written on the wire, CRLF-terminated lines.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            out.extend_from_slice(&three_digits(self.code));
            out.push(if i == last { b' ' } else { b'-' });
            if let Some(status) = &self.status {
                out.extend_from_slice(status.as_bytes());
                if !line.is_empty() {
                    out.push(b' ');
                }
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The reply text on one line (lines joined with a space), for logs and transcripts.
    pub fn one_line(&self) -> String {
        let mut s = self.code.to_string();
        if let Some(status) = &self.status {
            s.push(' ');
            s.push_str(status);
        }
        for line in &self.lines {
            if !line.is_empty() {
                s.push(' ');
                s.push_str(line);
            }
        }
        s
    }
}

/// A `{name}` in a reply's text, filled in when the reply is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    Client,
    Helo,
    Sender,
    Recipient,
    /// The recipient's domain.
    Domain,
    Hostname,
    /// Seconds a greylisted client has left to wait (greylist replies only).
    Remaining,
    /// The same as HH:MM:SS.
    RemainingHms,
}

impl Placeholder {
    pub const ALL: [Placeholder; 8] = [
        Placeholder::Client,
        Placeholder::Helo,
        Placeholder::Sender,
        Placeholder::Recipient,
        Placeholder::Domain,
        Placeholder::Hostname,
        Placeholder::Remaining,
        Placeholder::RemainingHms,
    ];

    /// The name between the braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Client => "client",
            Placeholder::Helo => "helo",
            Placeholder::Sender => "sender",
            Placeholder::Recipient => "recipient",
            Placeholder::Domain => "domain",
            Placeholder::Hostname => "hostname",
            Placeholder::Remaining => "remaining",
            Placeholder::RemainingHms => "remaining-hms",
        }
    }

    pub fn parse(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Whether it means anything only in a greylist reply.
    pub fn only_in_greylist(self) -> bool {
        matches!(self, Placeholder::Remaining | Placeholder::RemainingHms)
    }
}

/// Reply codes are validated to 200-599, so three ASCII digits always suffice.
fn three_digits(code: u16) -> [u8; 3] {
    [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]
}

/// `X.Y.Z` with X in 2, 4, 5 and Y, Z of at most three digits (RFC 3463).
pub fn is_enhanced_status(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_replies_with_and_without_status() {
        let r = Reply::parse("452 4.2.2 Mailbox full").unwrap();
        assert_eq!(r.code, 452);
        assert_eq!(r.status.as_deref(), Some("4.2.2"));
        assert_eq!(r.lines, vec!["Mailbox full"]);

        let r = Reply::parse("421 Service not available").unwrap();
        assert_eq!(r.status, None);
        assert_eq!(r.one_line(), "421 Service not available");
    }

    #[test]
    fn writes_multi_line_replies_with_status_on_every_line() {
        let r = Reply::parse("421 4.7.28 Our system has detected\nan unusual rate.").unwrap();
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "421-4.7.28 Our system has detected\r\n421 4.7.28 an unusual rate.\r\n"
        );
    }

    #[test]
    fn rejects_bad_codes_and_mismatched_status() {
        assert!(Reply::parse("199 too low").is_err());
        assert!(Reply::parse("600 too high").is_err());
        assert!(Reply::parse("45 short").is_err());
        assert!(Reply::parse("451 5.7.1 mismatch").is_err());
    }

    #[test]
    fn fills_placeholders_and_leaves_unknown_ones() {
        let r =
            Reply::parse("450 4.2.0 <{recipient}>: Greylisted for {remaining}s {other}").unwrap();
        let filled = r.fill(|name| match name {
            "recipient" => Some("a@b.test".into()),
            "remaining" => Some("300".into()),
            _ => None,
        });
        assert_eq!(
            filled.one_line(),
            "450 4.2.0 <a@b.test>: Greylisted for 300s {other}"
        );
    }
}
