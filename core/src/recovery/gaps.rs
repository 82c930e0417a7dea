//! Bookkeeping of the holes in the sequence: which ranges are missing, since
//! when, and where their NACKs stand.

use std::collections::VecDeque;

use crate::time::Instant;

/// A hole: a range of sequences, each of which was missing when it was
/// detected. Its first and last sequences are always still missing; its
/// interior may hold messages that arrived since (the buffer knows which), so
/// NACKs are built from the buffer, hole by hole.
#[derive(Clone, Copy, Debug)]
pub(super) struct Gap {
    /// First sequence of the hole (missing).
    pub start: u64,
    /// One past its last sequence (`end - 1` is missing).
    pub end: u64,
    /// Sequences in `[start, end)` still missing.
    pub missing: u64,
    /// When the hole was seen (start of the recovery-time measurement).
    pub detected: Instant,
    /// When to (re)send its NACK, or — while one is in flight — its retry deadline.
    pub due: Instant,
    /// NACK rounds sent without progress (resets when messages arrive).
    pub retries: u32,
    /// True once a NACK round covered it.
    pub nacked: bool,
    /// `missing` when the last NACK round was sent: progress is measured against it.
    pub missing_at_nack: u64,
    /// Since when its NACK rounds have brought nothing (the first round, or
    /// the last one that brought some of it): the give-up is timed from it.
    pub stalled_since: Instant,
    /// Mid-round: the first sequence not yet requested in the current round
    /// (the outstanding-NACK cap interrupted it).
    pub cursor: Option<u64>,
}

impl Gap {
    /// A fresh hole `[start, end)` seen at `now`, first NACK at `due`.
    pub(super) fn new(start: u64, end: u64, now: Instant, due: Instant) -> Gap {
        Gap {
            start,
            end,
            missing: end - start,
            detected: now,
            due,
            retries: 0,
            nacked: false,
            missing_at_nack: 0,
            stalled_since: now,
            cursor: None,
        }
    }
}

/// The holes, sorted by `start`, disjoint. Pre-allocated and bounded (see
/// `MAX_GAPS`): at the bound, a new hole merges into its neighbour at that
/// end, so memory stays fixed whatever the loss pattern. A merged hole is
/// NACKed as one range; the reorder buffer still knows what arrived inside it.
#[derive(Debug)]
pub(super) struct GapList {
    pub gaps: VecDeque<Gap>,
    cap: usize,
}

impl GapList {
    pub(super) fn with_capacity(n: usize) -> GapList {
        GapList { gaps: VecDeque::with_capacity(n), cap: n.max(1) }
    }

    /// Adds `g`, which lies above every hole, or at the bound extends the
    /// highest hole to cover it.
    pub(super) fn push_back(&mut self, g: Gap) {
        let full = self.gaps.len() >= self.cap;
        match self.gaps.back_mut() {
            Some(last) if full => {
                last.end = g.end;
                last.missing += g.missing;
            }
            _ => self.gaps.push_back(g),
        }
    }

    /// Adds `g`, which lies below every hole, or at the bound extends the
    /// lowest hole down to cover it.
    pub(super) fn push_front(&mut self, g: Gap) {
        let full = self.gaps.len() >= self.cap;
        match self.gaps.front_mut() {
            Some(first) if full => {
                first.start = g.start;
                first.missing += g.missing;
            }
            _ => self.gaps.push_front(g),
        }
    }

    /// Index of the hole whose range contains `seq`.
    pub(super) fn find(&self, seq: u64) -> Option<usize> {
        let i = self.gaps.partition_point(|g| g.end <= seq);
        (i < self.gaps.len() && self.gaps[i].start <= seq).then_some(i)
    }

    /// True when some hole overlaps `[start, end)`.
    pub(super) fn intersects(&self, start: u64, end: u64) -> bool {
        let i = self.gaps.partition_point(|g| g.end <= start);
        i < self.gaps.len() && self.gaps[i].start < end
    }

    pub(super) fn len(&self) -> usize {
        self.gaps.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.gaps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_and_intersect() {
        let mut l = GapList::with_capacity(4);
        l.gaps.push_back(Gap::new(5, 8, Instant::ZERO, Instant::ZERO));
        l.gaps.push_back(Gap::new(10, 11, Instant::ZERO, Instant::ZERO));
        assert_eq!(l.find(4), None);
        assert_eq!(l.find(5), Some(0));
        assert_eq!(l.find(7), Some(0));
        assert_eq!(l.find(8), None);
        assert_eq!(l.find(10), Some(1));
        assert_eq!(l.find(11), None);
        assert!(l.intersects(1, 6) && l.intersects(7, 10) && l.intersects(10, 20));
        assert!(!l.intersects(8, 10) && !l.intersects(11, 99) && !l.intersects(1, 5));
    }

    #[test]
    fn at_the_bound_new_holes_merge_into_the_neighbour() {
        let t = Instant::ZERO;
        let mut l = GapList::with_capacity(2);
        l.push_back(Gap::new(10, 12, t, t));
        l.push_back(Gap::new(20, 21, t, t));
        l.push_back(Gap::new(30, 33, t, t)); // merges into [20, 21)
        l.push_front(Gap::new(1, 5, t, t)); // merges into [10, 12)
        let got: Vec<_> = l.gaps.iter().map(|g| (g.start, g.end, g.missing)).collect();
        assert_eq!(got, vec![(1, 12, 6), (20, 33, 4)]);
    }
}
