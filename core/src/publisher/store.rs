//! The retransmit store: a bounded ring of encoded messages indexed by sequence.
//!
//! Slot `seq % capacity` holds message `seq` as it went out on the wire
//! ([`SLOT_LEN`] bytes reserved, plus its length), so a retransmission is a
//! `memcpy` of the original bytes. The capacity is the window rounded up to a
//! power of two (a mask instead of a division), but only the last `window`
//! messages are ever served: [`RetransmitStore::oldest`] honours the window
//! exactly. Everything is allocated at construction; appending and reading
//! allocate nothing.

use std::fmt;

use crate::seq::SeqNo;
use crate::wire::Quote;

/// Bytes reserved per slot: the largest message this version emits (a Quote,
/// 48 bytes). Fixed-size slots make the ring one flat allocation with no
/// per-message bookkeeping.
pub const SLOT_LEN: usize = Quote::<&[u8]>::LEN;

/// The page size [`RetransmitStore::prefault`] assumes (the smallest in use
/// on Linux; a larger page is touched several times, which is harmless).
const PAGE: usize = 4096;

/// Largest retransmit window accepted: 2^24 messages take 2^24 × 49 bytes
/// ≈ 820 MB, already a large share of a 24 GiB test machine shared with clients
/// and benchmarks. A gap older than that is cheaper to close with a snapshot.
pub const MAX_RETRANSMIT_WINDOW: u64 = 1 << 24;

/// A bounded, append-only ring of the last `window` published messages.
pub struct RetransmitStore {
    window: u64,
    mask: u64,
    data: Vec<u8>,
    lens: Vec<u8>,
    next: SeqNo,
}

impl fmt::Debug for RetransmitStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetransmitStore")
            .field("window", &self.window)
            .field("capacity", &(self.mask + 1))
            .field("oldest", &self.oldest())
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl RetransmitStore {
    /// A store retaining the last `window` messages, starting at sequence 1.
    ///
    /// # Panics
    /// If `window` is 0 or above [`MAX_RETRANSMIT_WINDOW`] (the publisher's
    /// configuration check rejects those first).
    pub fn new(window: u64) -> RetransmitStore {
        assert!(
            (1..=MAX_RETRANSMIT_WINDOW).contains(&window),
            "retransmit window {window} outside 1..={MAX_RETRANSMIT_WINDOW}"
        );
        let capacity = window.next_power_of_two();
        let slots = usize::try_from(capacity).expect("capacity fits in memory");
        RetransmitStore {
            window,
            mask: capacity - 1,
            data: vec![0; slots * SLOT_LEN],
            lens: vec![0; slots],
            next: SeqNo::FIRST,
        }
    }

    /// Touch every page of the ring now, so that the first pass of appends
    /// does not take a page fault every 4096 / [`SLOT_LEN`] (83) messages.
    /// The ring comes zeroed from the allocator, which (for a large one)
    /// maps its pages lazily: at 10M msgs/s, the first 2^20 messages paid a
    /// fault each 83 messages, 13 % of a busy server's profile. Costs one
    /// write per page (≈ 13k pages for the default window) once, at start.
    pub fn prefault(&mut self) {
        let touch = |v: &mut [u8]| {
            // black_box: a store of the zero the memory already holds could
            // otherwise be removed, and the page left unmapped.
            v.iter_mut().step_by(PAGE).for_each(|b| *b = std::hint::black_box(0));
        };
        touch(&mut self.data);
        touch(&mut self.lens);
    }

    /// Messages retained (the configured window).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Slots in the ring (the window rounded up to a power of two).
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// One past the last stored message: the publisher's `published_next`.
    pub fn next(&self) -> SeqNo {
        self.next
    }

    /// The oldest sequence still served: `max(1, next - window)`.
    pub fn oldest(&self) -> SeqNo {
        SeqNo(self.next.0.saturating_sub(self.window).max(SeqNo::FIRST.0))
    }

    /// Store the encoded message that gets sequence [`Self::next`]; returns that
    /// sequence.
    ///
    /// # Panics
    /// If `bytes` is longer than [`SLOT_LEN`]: the publisher only stores
    /// messages it encoded itself, so that would be a bug in this crate.
    pub fn append(&mut self, bytes: &[u8]) -> SeqNo {
        assert!(bytes.len() <= SLOT_LEN, "message of {} bytes exceeds a slot", bytes.len());
        let seq = self.next;
        let slot = self.slot(seq);
        let at = slot * SLOT_LEN;
        self.data[at..at + bytes.len()].copy_from_slice(bytes);
        // SLOT_LEN < 256, checked above.
        self.lens[slot] = bytes.len() as u8;
        self.next = seq.next();
        seq
    }

    /// The encoded message `seq`, if it lies in `[oldest, next)`.
    pub fn get(&self, seq: SeqNo) -> Option<&[u8]> {
        if seq < self.oldest() || seq >= self.next {
            return None;
        }
        let slot = self.slot(seq);
        let at = slot * SLOT_LEN;
        Some(&self.data[at..at + self.lens[slot] as usize])
    }

    fn slot(&self, seq: SeqNo) -> usize {
        // The mask keeps the value below the capacity, which is a usize.
        (seq.0 & self.mask) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefault_keeps_what_is_stored() {
        let mut s = RetransmitStore::new(1 << 12);
        for i in 1..=300u16 {
            s.append(&i.to_le_bytes());
        }
        s.prefault();
        for i in 1..=300u16 {
            assert_eq!(s.get(SeqNo(u64::from(i))), Some(&i.to_le_bytes()[..]));
        }
        assert_eq!(s.append(&[7; SLOT_LEN]), SeqNo(301));
    }

    #[test]
    fn window_is_exact_even_when_capacity_is_larger() {
        let mut s = RetransmitStore::new(5);
        assert_eq!(s.capacity(), 8);
        assert_eq!(s.oldest(), SeqNo(1));
        assert_eq!(s.get(SeqNo(1)), None, "nothing stored yet");
        for i in 1..=12u8 {
            assert_eq!(s.append(&[i; 3]), SeqNo(u64::from(i)));
        }
        assert_eq!(s.next(), SeqNo(13));
        assert_eq!(s.oldest(), SeqNo(8));
        assert_eq!(s.get(SeqNo(7)), None, "just outside the window");
        assert_eq!(s.get(SeqNo(8)), Some(&[8u8; 3][..]), "oldest retained");
        assert_eq!(s.get(SeqNo(12)), Some(&[12u8; 3][..]));
        assert_eq!(s.get(SeqNo(13)), None, "not published");
        assert_eq!(s.get(SeqNo(0)), None);
    }

    #[test]
    fn variable_lengths_round_trip() {
        let mut s = RetransmitStore::new(4);
        s.append(&[1; 48]);
        s.append(&[2; 32]);
        assert_eq!(s.get(SeqNo(1)).unwrap().len(), 48);
        assert_eq!(s.get(SeqNo(2)), Some(&[2u8; 32][..]));
        // Overwrite slot 1 with a shorter message: its old tail must not leak.
        s.append(&[3; 32]);
        s.append(&[4; 32]);
        s.append(&[5; 32]);
        assert_eq!(s.get(SeqNo(5)), Some(&[5u8; 32][..]));
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn zero_window_is_refused() {
        let _ = RetransmitStore::new(0);
    }
}
