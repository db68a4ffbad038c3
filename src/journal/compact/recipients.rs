//! The recipients of an accepted message, kept once for the capture and the journal.

/// The recipients of an accepted message in one string, shared by the capture and the
/// journal's `message-accepted` event: a message for 1,000 recipients is 22 KB of them,
/// which was kept twice, each recipient an allocation of its own.
///
/// Each recipient's length is a LEB128 number (one byte below 128) rather than an end
/// offset of 8 bytes: the 1,000 lengths took 8 KB, nearly as much as the addresses.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Recipients {
    joined: Box<str>,
    /// The length of each recipient in `joined`, in order, as LEB128.
    lengths: Box<[u8]>,
    count: usize,
}

impl Recipients {
    pub(crate) fn new(recipients: &[String]) -> Self {
        let mut joined = String::with_capacity(recipients.iter().map(String::len).sum());
        let mut lengths = Vec::with_capacity(recipients.len());
        for recipient in recipients {
            joined.push_str(recipient);
            let mut n = recipient.len();
            while n >= 0x80 {
                lengths.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            lengths.push(n as u8);
        }
        Self {
            joined: joined.into_boxed_str(),
            lengths: lengths.into_boxed_slice(),
            count: recipients.len(),
        }
    }

    /// One string each, as they were given.
    pub(crate) fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        let mut lengths = self.lengths.iter();
        let mut start = 0;
        (0..self.count).map(move |_| {
            let mut len = 0usize;
            for (shift, &b) in (0..usize::BITS).step_by(7).zip(lengths.by_ref()) {
                len |= usize::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
            }
            let end = start + len;
            let recipient = self.joined.get(start..end).unwrap_or_default();
            start = end;
            recipient
        })
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// The bytes of their text, all together.
    pub(super) fn text_len(&self) -> usize {
        self.joined.len()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.joined.len() + self.lengths.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any list, with empty, long and non-ASCII recipients, comes back as it was.
        #[test]
        fn every_list_reads_back_as_it_was(
            list in proptest::collection::vec(
                prop_oneof![".{0,8}", "[a-z]{120,400}", Just(String::new())], 0..20),
        ) {
            let recipients = Recipients::new(&list);
            prop_assert_eq!(recipients.len(), list.len());
            prop_assert_eq!(recipients.to_vec(), list);
        }
    }

    #[test]
    fn a_short_recipient_costs_one_byte_beside_its_text() {
        let list: Vec<String> = (0..1000).map(|n| format!("{n}r@e.test")).collect();
        let recipients = Recipients::new(&list);
        let text: usize = list.iter().map(String::len).sum();
        assert_eq!(recipients.heap_bytes(), text + 1000);
    }
}
