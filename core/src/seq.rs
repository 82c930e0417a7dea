//! Sequence numbers and ranges of them.

use std::fmt;

/// The sequence number of one message within a session. The first message of a
/// session has sequence 1 (0 means "nothing yet", as in MoldUDP64).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqNo(pub u64);

impl SeqNo {
    /// The sequence number of the first message of every session.
    pub const FIRST: SeqNo = SeqNo(1);

    /// The next sequence number.
    #[must_use]
    pub const fn next(self) -> SeqNo {
        SeqNo(self.0 + 1)
    }

    /// `self + n`.
    #[must_use]
    pub const fn add(self, n: u64) -> SeqNo {
        SeqNo(self.0 + n)
    }
}

impl fmt::Display for SeqNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A half-open range of sequence numbers `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqRange {
    /// First sequence in the range.
    pub start: SeqNo,
    /// One past the last sequence in the range.
    pub end: SeqNo,
}

impl SeqRange {
    /// `[start, end)`; empty when `end <= start`.
    pub const fn new(start: SeqNo, end: SeqNo) -> SeqRange {
        SeqRange { start, end }
    }

    /// Number of sequence numbers in the range.
    pub const fn len(&self) -> u64 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// True when the range holds nothing.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when `seq` lies in the range.
    pub const fn contains(&self, seq: SeqNo) -> bool {
        seq.0 >= self.start.0 && seq.0 < self.end.0
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}
