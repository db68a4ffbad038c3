//! The bytes of the compact journal: numbers as LEB128, strings with their length, and
//! the parts of commands, replies and addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use super::super::event::{Command, CommandRef};
use super::{COMMAND, CommandRecord, Names, REPLY, ReplyRecord, canonical, stage_number};
use crate::scenario::Reply;

// Command verbs and their numbers.
const EHLO: u8 = 0;
const HELO: u8 = 1;
const MAIL: u8 = 2;
const RCPT: u8 = 3;
const DATA: u8 = 4;
const BDAT: u8 = 5;
const RSET: u8 = 6;
const NOOP: u8 = 7;
const VRFY: u8 = 8;
const HELP: u8 = 9;
const QUIT: u8 = 10;
const STARTTLS: u8 = 11;
const END_OF_DATA: u8 = 12;
const OTHER: u8 = 13;

pub(super) struct Writer<'a>(pub(super) &'a mut Vec<u8>);

impl Writer<'_> {
    pub(super) fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    /// LEB128: seven bits a byte, the high bit says more follow.
    pub(super) fn uint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    pub(super) fn duration(&mut self, d: Duration) {
        self.uint(d.as_secs());
        self.uint(d.subsec_nanos().into());
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    pub(super) fn str(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    pub(super) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.uint(0),
            Some(s) => {
                self.uint(s.len() as u64 + 1);
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }

    pub(super) fn opt_uint(&mut self, n: Option<u64>) {
        match n {
            None => self.uint(0),
            Some(n) => {
                self.u8(1);
                self.uint(n);
            }
        }
    }

    /// A part of the command: where it is in `line` if it is there (it nearly always is:
    /// `MAIL FROM:<sender>`), else the text itself.
    pub(super) fn part(&mut self, line: &str, part: &str) {
        // Where it nearly always is: right after the first `<` (`RCPT TO:<r@x.test>`), or
        // after the first space (`EHLO name`); else wherever it is.
        let after = |b: u8| {
            memchr::memchr(b, line.as_bytes())
                .map(|at| at + 1)
                .filter(|&at| line.as_bytes()[at..].starts_with(part.as_bytes()))
        };
        let found = after(b'<')
            .or_else(|| after(b' '))
            .or_else(|| memchr::memmem::find(line.as_bytes(), part.as_bytes()));
        match found {
            Some(at) if !part.is_empty() => {
                self.uint(at as u64 * 2 + 1);
                self.uint(part.len() as u64);
            }
            _ => {
                self.uint(part.len() as u64 * 2);
                self.0.extend_from_slice(part.as_bytes());
            }
        }
    }

    pub(super) fn command(&mut self, line: &str, command: CommandRef<'_>) {
        match command {
            CommandRef::Ehlo { name } => {
                self.u8(EHLO);
                self.part(line, name);
            }
            CommandRef::Helo { name } => {
                self.u8(HELO);
                self.part(line, name);
            }
            CommandRef::Mail { sender, size } => {
                self.u8(MAIL);
                self.part(line, sender);
                self.opt_uint(size);
            }
            CommandRef::Rcpt { recipient } => {
                self.u8(RCPT);
                self.part(line, recipient);
            }
            CommandRef::Data => self.u8(DATA),
            CommandRef::Bdat { size, last } => {
                self.u8(BDAT);
                self.uint(size);
                self.u8(u8::from(last));
            }
            CommandRef::Rset => self.u8(RSET),
            CommandRef::Noop => self.u8(NOOP),
            CommandRef::Vrfy => self.u8(VRFY),
            CommandRef::Help => self.u8(HELP),
            CommandRef::Quit => self.u8(QUIT),
            CommandRef::Starttls => self.u8(STARTTLS),
            CommandRef::EndOfData {
                size,
                message_id,
                digest,
            } => {
                self.u8(END_OF_DATA);
                self.uint(size);
                self.opt_str(message_id);
                self.opt_str(digest);
            }
            CommandRef::Other => self.u8(OTHER),
        }
    }

    /// A command event. A line the command spells out is kept as a flag, its parts as
    /// text; another is kept whole, and its parts as where they are in it.
    pub(super) fn command_event(&mut self, names: &mut Names, c: &CommandRecord<'_>) {
        self.u8(COMMAND);
        self.uint(names.id(c.host).into());
        self.uint(c.conn);
        if canonical::is_canonical(c.line, c.command) {
            self.uint(0);
            self.command("", c.command);
        } else {
            self.uint(c.line.len() as u64 + 1);
            self.bytes(c.line.as_bytes());
            self.command(c.line, c.command);
        }
    }

    /// A reply event: its reply in full, or as `copy`, the number of a copy of it kept
    /// in full earlier in the segment. Gives where the reply in full starts, if it is.
    pub(super) fn reply_event(
        &mut self,
        names: &mut Names,
        r: &ReplyRecord<'_>,
        copy: Option<u32>,
    ) -> Option<usize> {
        self.u8(REPLY);
        self.uint(names.id(r.host).into());
        self.uint(r.conn);
        self.u8(r.stage.map_or(0, stage_number));
        let start = match copy {
            Some(number) => {
                self.uint(u64::from(number) * 2 + 1);
                None
            }
            None => {
                let start = self.0.len();
                self.reply(r.reply);
                Some(start)
            }
        };
        self.uint(
            r.rule
                .as_ref()
                .map_or(0, |rule| u64::from(names.id(rule)) + 1),
        );
        self.u8(u8::from(r.retry_after.is_some()) | (u8::from(r.retry_after_told) << 1));
        if let Some(after) = r.retry_after {
            self.duration(after);
        }
        start
    }

    /// A reply in full: its code times two (an odd number is a copy's), its status and
    /// its lines.
    pub(super) fn reply(&mut self, reply: &Reply) {
        self.uint(u64::from(reply.code) * 2);
        self.opt_str(reply.status.as_deref());
        self.uint(reply.lines.len() as u64);
        for line in &reply.lines {
            self.str(line);
        }
    }

    pub(super) fn addr(&mut self, addr: SocketAddr) {
        match addr {
            SocketAddr::V4(v4) => {
                self.u8(4);
                self.0.extend_from_slice(&v4.ip().octets());
                self.0.extend_from_slice(&v4.port().to_le_bytes());
            }
            SocketAddr::V6(v6) => {
                self.u8(6);
                self.0.extend_from_slice(&v6.ip().octets());
                self.0.extend_from_slice(&v6.port().to_le_bytes());
                self.uint(v6.flowinfo().into());
                self.uint(v6.scope_id().into());
            }
        }
    }
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl Reader<'_> {
    pub(super) fn take(&mut self, n: usize) -> Option<&[u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    pub(super) fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    pub(super) fn uint(&mut self) -> Option<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
        }
        None
    }

    pub(super) fn len(&mut self) -> Option<usize> {
        usize::try_from(self.uint()?).ok()
    }

    pub(super) fn duration(&mut self) -> Option<Duration> {
        let secs = self.uint()?;
        let nanos = u32::try_from(self.uint()?).ok()?;
        Some(Duration::new(secs, nanos))
    }

    pub(super) fn text(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    pub(super) fn string(&mut self) -> Option<String> {
        let len = self.len()?;
        self.text(len)
    }

    pub(super) fn opt_string(&mut self) -> Option<Option<String>> {
        match self.len()? {
            0 => Some(None),
            n => Some(Some(self.text(n - 1)?)),
        }
    }

    pub(super) fn opt_uint(&mut self) -> Option<Option<u64>> {
        match self.u8()? {
            0 => Some(None),
            _ => Some(Some(self.uint()?)),
        }
    }

    pub(super) fn part(&mut self, line: &str) -> Option<String> {
        let tag = self.len()?;
        if tag % 2 == 1 {
            let at = tag / 2;
            let len = self.len()?;
            Some(line.get(at..at.checked_add(len)?)?.to_string())
        } else {
            self.text(tag / 2)
        }
    }

    pub(super) fn command(&mut self, line: &str) -> Option<Command> {
        Some(match self.u8()? {
            EHLO => Command::Ehlo {
                name: self.part(line)?,
            },
            HELO => Command::Helo {
                name: self.part(line)?,
            },
            MAIL => Command::Mail {
                sender: self.part(line)?,
                size: self.opt_uint()?,
            },
            RCPT => Command::Rcpt {
                recipient: self.part(line)?,
            },
            DATA => Command::Data,
            BDAT => Command::Bdat {
                size: self.uint()?,
                last: self.u8()? == 1,
            },
            RSET => Command::Rset,
            NOOP => Command::Noop,
            VRFY => Command::Vrfy,
            HELP => Command::Help,
            QUIT => Command::Quit,
            STARTTLS => Command::Starttls,
            END_OF_DATA => Command::EndOfData {
                size: self.uint()?,
                message_id: self.opt_string()?,
                digest: self.opt_string()?,
            },
            OTHER => Command::Other,
            _ => return None,
        })
    }

    /// A reply in full, or the number of a copy kept in full earlier (`Err`).
    pub(super) fn reply_or_copy(&mut self) -> Option<Result<Reply, u64>> {
        let tag = self.uint()?;
        if tag % 2 == 1 {
            return Some(Err(tag / 2));
        }
        self.reply_after(tag).map(Ok)
    }

    /// A reply in full.
    pub(super) fn reply(&mut self) -> Option<Reply> {
        let tag = self.uint()?;
        if tag % 2 == 1 {
            return None;
        }
        self.reply_after(tag)
    }

    fn reply_after(&mut self, tag: u64) -> Option<Reply> {
        let code = u16::try_from(tag / 2).ok()?;
        let status = self.opt_string()?;
        let count = self.len()?;
        let mut lines = Vec::with_capacity(count.min(self.0.len()));
        for _ in 0..count {
            lines.push(self.string()?);
        }
        Some(Reply {
            code,
            status,
            lines,
        })
    }

    /// Whether the reply in full here is `reply`, read without making one.
    pub(super) fn reply_matches(&mut self, reply: &Reply) -> bool {
        self.same_reply(reply).unwrap_or(false)
    }

    fn same_reply(&mut self, reply: &Reply) -> Option<bool> {
        if self.uint()? != u64::from(reply.code) * 2 {
            return Some(false);
        }
        let status = match self.len()? {
            0 => None,
            n => Some(self.take(n - 1)?),
        };
        if status != reply.status.as_deref().map(str::as_bytes) || self.len()? != reply.lines.len()
        {
            return Some(false);
        }
        for line in &reply.lines {
            let len = self.len()?;
            if self.take(len)? != line.as_bytes() {
                return Some(false);
            }
        }
        Some(true)
    }

    pub(super) fn addr(&mut self) -> Option<SocketAddr> {
        match self.u8()? {
            4 => {
                let ip: [u8; 4] = self.take(4)?.try_into().ok()?;
                let port = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
                Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port))
            }
            6 => {
                let ip: [u8; 16] = self.take(16)?.try_into().ok()?;
                let port = u16::from_le_bytes(self.take(2)?.try_into().ok()?);
                let flowinfo = u32::try_from(self.uint()?).ok()?;
                let scope_id = u32::try_from(self.uint()?).ok()?;
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    flowinfo,
                    scope_id,
                )))
            }
            _ => None,
        }
    }
}
