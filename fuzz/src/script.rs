//! A fuzz input read as what a client does: the bytes it sends, with a few escapes for
//! what bytes cannot say (wait, open another connection, end a connection's input).
//!
//! The escapes keep the seeds readable: a seed is an SMTP session as sent, and plain
//! SMTP has no 0xFF byte (it is not even UTF-8), so the fuzzer mutates the protocol, not
//! a framing of it. `0xFF` followed by:
//!
//! | byte        | means                                                          |
//! |-------------|----------------------------------------------------------------|
//! | `0xFF`      | a literal 0xFF byte                                            |
//! | `0xF0`      | open the next connection; what follows goes to it              |
//! | `0xF1`      | end the current connection's input (the farm reads EOF)        |
//! | `0xF2`      | hold every connection open at the end, instead of ending their input: the farm's own timeouts must end them |
//! | `0x00`      | let the farm run (a yield, no time passes)                     |
//! | `n` < 0xF0  | wait n² seconds of farm time (up to ~16 h: past greylisting delays, timeouts, hangs) |
//!
//! A lone 0xFF at the very end is a literal byte.

use std::time::Duration;

/// The escape byte.
pub const ESC: u8 = 0xFF;
/// After [`ESC`]: open the next connection.
pub const NEW_CONNECTION: u8 = 0xF0;
/// After [`ESC`]: end the current connection's input.
pub const END_INPUT: u8 = 0xF1;
/// After [`ESC`]: keep every connection open at the end.
pub const HOLD_OPEN: u8 = 0xF2;

/// At most this many connections per input, so that one input stays cheap.
pub const MAX_CONNECTIONS: usize = 8;

/// One thing the client does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes on the current connection.
    Send(Vec<u8>),
    /// Wait this long in farm time (zero: only let the farm run).
    Wait(Duration),
    /// Open the next connection.
    Connect,
    /// End the current connection's input.
    EndInput,
}

/// What the client does with one input.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Script {
    pub steps: Vec<Step>,
    /// Keep the connections open at the end (the farm must time them out).
    pub hold_open: bool,
}

/// Reads `data` as a client's script (see the module's table). The first connection is
/// opened before the first step; [`Step::Connect`] past [`MAX_CONNECTIONS`] is dropped.
pub fn script(data: &[u8]) -> Script {
    let mut script = Script::default();
    let mut text = Vec::new();
    let mut connections = 1;
    let mut bytes = data.iter().copied();
    let flush = |text: &mut Vec<u8>, steps: &mut Vec<Step>| {
        if !text.is_empty() {
            steps.push(Step::Send(std::mem::take(text)));
        }
    };
    while let Some(b) = bytes.next() {
        if b != ESC {
            text.push(b);
            continue;
        }
        let Some(op) = bytes.next() else {
            text.push(ESC);
            break;
        };
        match op {
            ESC => text.push(ESC),
            NEW_CONNECTION => {
                flush(&mut text, &mut script.steps);
                if connections < MAX_CONNECTIONS {
                    connections += 1;
                    script.steps.push(Step::Connect);
                }
            }
            END_INPUT => {
                flush(&mut text, &mut script.steps);
                script.steps.push(Step::EndInput);
            }
            HOLD_OPEN => script.hold_open = true,
            n if n < NEW_CONNECTION => {
                flush(&mut text, &mut script.steps);
                let seconds = u64::from(n) * u64::from(n);
                script.steps.push(Step::Wait(Duration::from_secs(seconds)));
            }
            // 0xF3..=0xFE: not (yet) an escape; kept as the two bytes they are.
            other => text.extend([ESC, other]),
        }
    }
    flush(&mut text, &mut script.steps);
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_escapes() {
        let s = script(b"EHLO a\r\n\xff\x02QUIT\r\n\xff\xf0NOOP\xff\xf1\xff\xff\xff\xf2\xff");
        assert_eq!(
            s.steps,
            [
                Step::Send(b"EHLO a\r\n".to_vec()),
                Step::Wait(Duration::from_secs(4)),
                Step::Send(b"QUIT\r\n".to_vec()),
                Step::Connect,
                Step::Send(b"NOOP".to_vec()),
                Step::EndInput,
                Step::Send(b"\xff\xff".to_vec()),
            ]
        );
        assert!(s.hold_open);
    }
}
