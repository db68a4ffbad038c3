//! Replies kept once per segment: a session sends the same few replies again and again
//! (`250 2.1.5 Ok` to every RCPT), each from where its host keeps it, so a reply met
//! again at the same address, with the same text, is kept as the number of its first
//! copy in the segment. The address only finds the candidate; the text decides, so a
//! reply built afresh where another was (`250 2.0.0 Ok: queued as 7`) is never mistaken.

use super::codec::Reader;
use crate::scenario::Reply;

/// How many addresses are remembered: more than the distinct replies of a busy host.
const SLOTS: usize = 64;

#[derive(Debug)]
pub(super) struct ReplyCache {
    slots: [Slot; SLOTS],
    /// Where each reply kept in full starts in the segment's bytes, by its number.
    starts: Vec<u32>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    address: usize,
    number: u32,
}

impl Default for ReplyCache {
    fn default() -> Self {
        Self {
            slots: [Slot::default(); SLOTS],
            starts: Vec::new(),
        }
    }
}

fn slot_of(address: usize) -> usize {
    ((address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SLOTS
}

impl ReplyCache {
    /// The number of a copy of `reply` kept in full in `bytes`, if one is known.
    pub(super) fn find(&self, reply: &Reply, bytes: &[u8]) -> Option<u32> {
        let address = std::ptr::from_ref(reply) as usize;
        let slot = self.slots[slot_of(address)];
        if slot.address != address {
            return None;
        }
        let start = *self.starts.get(usize::try_from(slot.number).ok()?)? as usize;
        Reader(bytes.get(start..)?)
            .reply_matches(reply)
            .then_some(slot.number)
    }

    /// `reply` was kept in full from `start` on: later copies may refer to it.
    pub(super) fn remember(&mut self, reply: &Reply, start: usize) {
        let (Ok(start), Ok(number)) = (u32::try_from(start), u32::try_from(self.starts.len()))
        else {
            return;
        };
        let address = std::ptr::from_ref(reply) as usize;
        self.starts.push(start);
        self.slots[slot_of(address)] = Slot { address, number };
    }

    /// Where reply `number` starts in the segment's bytes.
    pub(super) fn start(&self, number: u64) -> Option<usize> {
        Some(*self.starts.get(usize::try_from(number).ok()?)? as usize)
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.starts.capacity() * size_of::<u32>()
    }

    pub(super) fn seal(&mut self) {
        self.starts.shrink_to_fit();
    }
}
