//! Assembling a snapshot from its parts. Parts of one snapshot share the
//! sequence it is consistent at (`S`); they may arrive in any order, twice, or
//! not at all (datagrams), and parts of an older snapshot may still be in flight.

use crate::msg::SymbolState;
use crate::wire::SnapshotRepr;

/// Why a part was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PartOutcome {
    /// Stored; the snapshot is not complete yet.
    Stored,
    /// Stored, and it was the last missing part.
    Complete,
    /// Already had it.
    Duplicate,
    /// From a snapshot older than the one being assembled.
    Older,
    /// Disagrees with the other parts of its snapshot (part count, symbol
    /// count) or carries a symbol outside the universe it announces.
    Inconsistent,
    /// Announces more symbols than the configured bound.
    TooLarge,
}

/// The snapshot being assembled. Its vectors are sized to the largest
/// snapshot seen so far and reused.
#[derive(Debug, Default)]
pub(super) struct Assembly {
    /// `S` of the snapshot being assembled, 0 when none.
    pub seq: u64,
    parts: u16,
    pub symbols: u32,
    parts_have: Vec<bool>,
    parts_received: u16,
    states: Vec<SymbolState>,
    have: Vec<bool>,
}

impl Assembly {
    /// Drop whatever is being assembled.
    pub(super) fn clear(&mut self) {
        self.seq = 0;
        self.parts = 0;
        self.symbols = 0;
        self.parts_received = 0;
    }

    fn begin(&mut self, seq: u64, parts: u16, symbols: u32) {
        self.seq = seq;
        self.parts = parts;
        self.symbols = symbols;
        self.parts_received = 0;
        self.parts_have.clear();
        self.parts_have.resize(parts as usize, false);
        self.have.clear();
        self.have.resize(symbols as usize, false);
        if self.states.len() < symbols as usize {
            self.states.resize(symbols as usize, SymbolState::default());
        }
    }

    /// Take one part of the snapshot consistent at `seq`. A part of a newer
    /// snapshot (higher `seq`) replaces whatever was being assembled.
    pub(super) fn add(
        &mut self,
        seq: u64,
        part: &SnapshotRepr<'_>,
        max_symbols: u32,
    ) -> PartOutcome {
        if part.symbols > max_symbols {
            return PartOutcome::TooLarge;
        }
        if self.seq != 0 && seq < self.seq {
            return PartOutcome::Older;
        }
        if part.records().any(|r| r.symbol >= part.symbols) {
            return PartOutcome::Inconsistent;
        }
        if self.seq == seq {
            if part.parts != self.parts || part.symbols != self.symbols {
                return PartOutcome::Inconsistent;
            }
        } else {
            self.begin(seq, part.parts, part.symbols);
        }
        let p = part.part as usize;
        if self.parts_have[p] {
            return PartOutcome::Duplicate;
        }
        self.parts_have[p] = true;
        self.parts_received += 1;
        for r in part.records() {
            let i = r.symbol as usize;
            self.states[i] = r;
            self.have[i] = true;
        }
        if self.parts_received == self.parts { PartOutcome::Complete } else { PartOutcome::Stored }
    }

    /// The assembled records, in symbol order.
    pub(super) fn states(&self) -> impl Iterator<Item = SymbolState> + '_ {
        self.have.iter().zip(self.states.iter()).filter(|(h, _)| **h).map(|(_, s)| *s)
    }
}
