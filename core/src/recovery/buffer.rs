//! The reorder buffer: messages that arrived ahead of a hole, held until the
//! hole is filled (or a snapshot supersedes them).
//!
//! A ring of `cap` slots indexed by `seq % cap`, each tagged with the sequence
//! it holds. It holds sequences in the window `[lo, lo + cap)`; a slot is valid
//! only when its tag equals the sequence looked up *and* that sequence lies in
//! the window, so moving the window forward needs no clearing. Tag 0 marks an
//! empty slot (sequence 0 never exists). Allocated once, never grows.

use crate::msg::Message;

/// One held message.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Sequence held, 0 when empty.
    seq: u64,
    msg: Message,
    send_time: u64,
    due_time: u64,
    /// Already delivered, ahead of a hole (per-symbol order): it only marks
    /// the sequence as received.
    delivered: bool,
}

const EMPTY: Slot =
    Slot { seq: 0, msg: Message::Unknown { kind: 0 }, send_time: 0, due_time: 0, delivered: false };

/// A message held in the buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub(super) msg: Message,
    pub(super) send_time: u64,
    pub(super) due_time: u64,
    /// Delivered ahead of a hole already (per-symbol order).
    pub(super) delivered: bool,
}

/// See the module docs.
#[derive(Debug)]
pub(super) struct ReorderBuffer {
    slots: Box<[Slot]>,
    lo: u64,
}

impl ReorderBuffer {
    /// A buffer of `cap` slots (at least 1) whose window starts at 1.
    pub(super) fn new(cap: usize) -> ReorderBuffer {
        ReorderBuffer { slots: vec![EMPTY; cap.max(1)].into_boxed_slice(), lo: 1 }
    }

    /// Number of slots.
    pub(super) fn cap(&self) -> u64 {
        self.slots.len() as u64
    }

    /// Lowest sequence the window holds.
    pub(super) fn lo(&self) -> u64 {
        self.lo
    }

    /// One past the highest sequence the window holds.
    pub(super) fn hi(&self) -> u64 {
        self.lo + self.cap()
    }

    fn idx(&self, seq: u64) -> usize {
        (seq % self.cap()) as usize
    }

    /// True when `seq` lies in the window.
    pub(super) fn fits(&self, seq: u64) -> bool {
        seq >= self.lo && seq < self.hi()
    }

    /// True when the message `seq` is held.
    pub(super) fn present(&self, seq: u64) -> bool {
        self.fits(seq) && self.slots[self.idx(seq)].seq == seq
    }

    /// Hold `msg` at `seq`, which must fit the window (ignored otherwise).
    pub(super) fn store(&mut self, seq: u64, msg: Message, send_time: u64, due_time: u64) {
        if self.fits(seq) {
            let i = self.idx(seq);
            self.slots[i] = Slot { seq, msg, send_time, due_time, delivered: false };
        }
    }

    /// Mark `seq` as received and already delivered (per-symbol order), so
    /// the hole logic sees it and the in-order drain passes over it. Ignored
    /// if it does not fit the window.
    pub(super) fn store_delivered(&mut self, seq: u64, msg: Message) {
        if self.fits(seq) {
            let i = self.idx(seq);
            self.slots[i] = Slot { seq, msg, send_time: 0, due_time: 0, delivered: true };
        }
    }

    /// Mark the message held at `seq` as delivered (ahead of a hole).
    pub(super) fn mark_delivered(&mut self, seq: u64) {
        if self.present(seq) {
            let i = self.idx(seq);
            self.slots[i].delivered = true;
        }
    }

    /// The message held at `seq`.
    pub(super) fn get(&self, seq: u64) -> Option<Held> {
        if !self.present(seq) {
            return None;
        }
        let s = &self.slots[self.idx(seq)];
        Some(Held {
            msg: s.msg,
            send_time: s.send_time,
            due_time: s.due_time,
            delivered: s.delivered,
        })
    }

    /// Move the window's start forward to `lo` (no-op if it is not forward);
    /// what falls below it is no longer held. Slots of the sequences leaving the
    /// window are emptied so no stale tag can come back into a later window.
    pub(super) fn advance(&mut self, lo: u64) {
        if lo <= self.lo {
            return;
        }
        if lo - self.lo >= self.cap() {
            self.clear_slots();
        } else {
            for seq in self.lo..lo {
                let i = self.idx(seq);
                if self.slots[i].seq == seq {
                    self.slots[i].seq = 0;
                }
            }
        }
        self.lo = lo;
    }

    /// Move the window's start forward to `lo` when the caller knows no
    /// sequence in `[self.lo, lo)` is held (an in-order run was delivered
    /// straight through): [`Self::advance`] without scanning the slots.
    pub(super) fn advance_past_empty(&mut self, lo: u64) {
        debug_assert!(
            (self.lo..lo.min(self.lo + self.cap())).all(|s| !self.present(s)),
            "advance_past_empty over held messages"
        );
        self.lo = self.lo.max(lo);
    }

    /// Move the window's start to `lo`, forward or backward. Backward: only
    /// tags in `[old lo, lo + cap)` stay valid, every other slot is emptied.
    pub(super) fn rebase(&mut self, lo: u64) {
        if lo >= self.lo {
            self.advance(lo);
            return;
        }
        let (keep_lo, keep_hi) = (self.lo, lo + self.cap());
        for s in self.slots.iter_mut() {
            if s.seq < keep_lo || s.seq >= keep_hi {
                s.seq = 0;
            }
        }
        self.lo = lo;
    }

    /// Forget everything and restart the window at `lo`.
    pub(super) fn reset(&mut self, lo: u64) {
        self.clear_slots();
        self.lo = lo;
    }

    fn clear_slots(&mut self) {
        for s in self.slots.iter_mut() {
            s.seq = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(k: u8) -> Message {
        Message::Unknown { kind: k }
    }

    #[test]
    fn window_and_tags() {
        let mut b = ReorderBuffer::new(4);
        b.store(1, m(1), 10, 0);
        b.store(4, m(4), 40, 0);
        b.store(5, m(5), 50, 0); // outside [1, 5): ignored
        assert!(b.present(1) && b.present(4) && !b.present(5) && !b.present(2));
        let h = b.get(4).unwrap();
        assert_eq!((h.msg, h.send_time, h.due_time, h.delivered), (m(4), 40, 0, false));
        b.store_delivered(3, m(3));
        assert!(b.present(3) && b.get(3).unwrap().delivered);
        b.advance(3);
        assert!(!b.present(1) && b.present(4));
        b.store(6, m(6), 60, 0);
        assert!(b.present(6));
        // the slot 2 used to hold (seq 2, never stored) stays empty
        assert!(!b.present(2));
        b.rebase(2); // window [2, 6): 6 is out, and must not come back
        assert!(!b.present(6) && b.present(4));
        b.advance(3);
        assert!(!b.present(6), "a stale tag came back into the window");
        b.reset(100);
        assert!(!b.present(4) && b.fits(103) && !b.fits(104));
    }
}
