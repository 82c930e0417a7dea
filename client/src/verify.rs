//! The correctness oracle, run live: regenerates the server's stream from its
//! seed in lockstep with delivery and compares every message and every
//! snapshot record with what the server must have sent.

use tickwire_core::gbm::{GbmConfig, GbmError, Generator};
use tickwire_core::{Book, Message, SeqNo, SymbolState};

/// Lockstep verifier. Message `n` of a session is a pure function of
/// (seed, symbols, n), so the expected value of every delivery is known.
#[derive(Debug)]
pub struct Verifier {
    cfg: GbmConfig,
    generator: Generator,
    book: Book,
    /// Messages compared equal.
    pub checked: u64,
    /// Messages that differed from the regenerated stream.
    pub mismatches: u64,
    /// Sequences skipped without a snapshot covering them (silent loss).
    pub skipped: u64,
    /// Snapshot records that differed from the regenerated state.
    pub snapshot_mismatches: u64,
    /// Snapshot records compared.
    pub snapshot_records: u64,
}

impl Verifier {
    /// A verifier for a session generated with `cfg`.
    pub fn new(cfg: GbmConfig) -> Result<Verifier, GbmError> {
        Ok(Verifier {
            generator: Generator::new(cfg.clone())?,
            book: Book::new(cfg.symbols),
            cfg,
            checked: 0,
            mismatches: 0,
            skipped: 0,
            snapshot_mismatches: 0,
            snapshot_records: 0,
        })
    }

    /// A new session began (the server restarted): start again from message 1.
    pub fn restart(&mut self) -> Result<(), GbmError> {
        self.generator = Generator::new(self.cfg.clone())?;
        self.book = Book::new(self.cfg.symbols);
        Ok(())
    }

    /// Advance the regenerated stream so that `next` is the next message.
    fn advance_to(&mut self, next: SeqNo) {
        while self.generator.produced() + 1 < next.0 {
            let seq = self.generator.produced() + 1;
            let m = self.generator.next_message();
            self.book.apply(seq, &m);
        }
    }

    /// A snapshot consistent at `seq` begins.
    pub fn snapshot_start(&mut self, seq: SeqNo) {
        if seq.0 < self.generator.produced() + 1 {
            // A snapshot behind what was delivered: only possible after a restart.
            self.mismatches += 1;
        }
        self.advance_to(seq);
    }

    /// One snapshot record.
    pub fn snapshot_record(&mut self, s: &SymbolState) {
        self.snapshot_records += 1;
        let expected = self.book.states().get(s.symbol as usize);
        if expected != Some(s) {
            self.snapshot_mismatches += 1;
        }
    }

    /// A delivered message.
    pub fn message(&mut self, seq: SeqNo, msg: &Message) {
        let next = self.generator.produced() + 1;
        if seq.0 < next {
            self.mismatches += 1; // delivered twice or out of order
            return;
        }
        if seq.0 > next {
            self.skipped += seq.0 - next;
            self.advance_to(seq);
        }
        let expected = self.generator.next_message();
        self.book.apply(seq.0, &expected);
        if expected == *msg {
            self.checked += 1;
        } else {
            self.mismatches += 1;
        }
    }

    /// True when nothing was wrong.
    pub fn ok(&self) -> bool {
        self.mismatches == 0 && self.skipped == 0 && self.snapshot_mismatches == 0
    }
}
