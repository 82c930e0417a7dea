//! The correctness oracle, run live: regenerates the server's stream from its
//! seed alongside delivery and compares every message and every snapshot
//! record with what the server must have sent.
//!
//! Works for both delivery orders: in feed order every message must come
//! next in sequence; in per-symbol order the messages of one symbol must come
//! in sequence while symbols may overtake one another. The regenerated
//! messages not yet delivered wait in a window (no longer than the
//! receiver's reorder buffer) until they are delivered, covered by a
//! snapshot, or given up on.

use std::collections::VecDeque;

use tickwire_core::gbm::{GbmConfig, GbmError, Generator};
use tickwire_core::recovery::Order;
use tickwire_core::{Book, Message, SeqNo, SeqRange, SymbolState};

/// A regenerated message not yet accounted for.
#[derive(Clone, Copy, Debug)]
struct Expected {
    msg: Message,
    delivered: bool,
}

/// The verifier. Message `n` of a session is a pure function of
/// (seed, symbols, n), so the expected value of every delivery is known.
#[derive(Debug)]
pub struct Verifier {
    cfg: GbmConfig,
    order: Order,
    generator: Generator,
    /// The server's state after every message below `base`.
    book: Book,
    /// Lowest sequence not accounted for (delivered, covered or given up).
    base: u64,
    /// Messages `base..` regenerated so far.
    window: VecDeque<Expected>,
    /// Last sequence delivered per symbol.
    last: Vec<u64>,
    /// Messages compared equal.
    pub checked: u64,
    /// Messages that differed from the regenerated stream, came twice, or
    /// out of order (their symbol's, in per-symbol order).
    pub mismatches: u64,
    /// Sequences skipped without a snapshot covering them (silent loss, or
    /// given up on).
    pub skipped: u64,
    /// Snapshot records that differed from the regenerated state.
    pub snapshot_mismatches: u64,
    /// Snapshot records compared.
    pub snapshot_records: u64,
}

impl Verifier {
    /// A verifier for a session generated with `cfg`, delivered in feed order.
    pub fn new(cfg: GbmConfig) -> Result<Verifier, GbmError> {
        Verifier::with_order(cfg, Order::Strict)
    }

    /// A verifier for a session generated with `cfg`, delivered in `order`.
    pub fn with_order(cfg: GbmConfig, order: Order) -> Result<Verifier, GbmError> {
        Ok(Verifier {
            generator: Generator::new(cfg.clone())?,
            book: Book::new(cfg.symbols),
            last: vec![0; cfg.symbols as usize],
            cfg,
            order,
            base: 1,
            window: VecDeque::new(),
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
        self.base = 1;
        self.window.clear();
        self.last.iter_mut().for_each(|l| *l = 0);
        Ok(())
    }

    /// Regenerate up to and including `seq`.
    fn generate_to(&mut self, seq: u64) {
        while self.generator.produced() < seq {
            let msg = self.generator.next_message();
            self.window.push_back(Expected { msg, delivered: false });
        }
    }

    /// Account for everything below `to`: applied to the book in sequence;
    /// `covered`: what was not delivered is in a snapshot (else skipped).
    fn settle_to(&mut self, to: u64, covered: bool) {
        if to <= self.base {
            return;
        }
        self.generate_to(to - 1);
        while self.base < to {
            let e = self.window.pop_front().expect("generated up to `to`");
            if !e.delivered && !covered {
                self.skipped += 1;
            }
            self.book.apply(self.base, &e.msg);
            self.base += 1;
        }
    }

    /// Account for the delivered messages at the front of the window.
    fn settle_delivered(&mut self) {
        while self.window.front().is_some_and(|e| e.delivered) {
            let e = self.window.pop_front().expect("front exists");
            self.book.apply(self.base, &e.msg);
            self.base += 1;
        }
    }

    /// A snapshot consistent at `seq` begins.
    pub fn snapshot_start(&mut self, seq: SeqNo) {
        if seq.0 < self.base {
            // A snapshot behind what was delivered: only possible after a restart.
            self.mismatches += 1;
        }
        self.settle_to(seq.0, true);
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
        let seq = seq.0;
        if seq < self.base {
            self.mismatches += 1; // delivered twice, or below a snapshot
            return;
        }
        if self.order == Order::Strict {
            // Feed order: whatever lies before it was skipped.
            self.settle_to(seq, false);
        }
        self.generate_to(seq);
        let e = &mut self.window[(seq - self.base) as usize];
        if e.delivered {
            self.mismatches += 1;
            return;
        }
        e.delivered = true;
        if e.msg == *msg || with_trade_number_of(e.msg, msg) == *msg {
            self.checked += 1;
        } else {
            self.mismatches += 1;
        }
        if let Some(last) = msg.symbol().and_then(|s| self.last.get_mut(s as usize)) {
            if seq <= *last {
                self.mismatches += 1; // out of its symbol's order
            }
            *last = seq;
        }
        self.settle_delivered();
    }

    /// The receiver gave up on `range`: what it did not deliver is lost.
    pub fn given_up(&mut self, range: SeqRange) {
        if self.order == Order::PerSymbol {
            self.settle_to(range.end.0, false);
        }
        // Feed order counts the jump at the next delivery.
    }

    /// The session ended with every message below `next` delivered.
    pub fn end_of_session(&mut self, next: SeqNo) {
        self.settle_to(next.0, false);
    }

    /// True when nothing was wrong.
    pub fn ok(&self) -> bool {
        self.mismatches == 0 && self.skipped == 0 && self.snapshot_mismatches == 0
    }
}

/// `expected` with the Trade's update number `got` carries, when that is
/// 0: a publisher older than the field (or a replay of its capture) sends
/// the same trade without it, which is not a mismatch.
fn with_trade_number_of(expected: Message, got: &Message) -> Message {
    match (expected, got) {
        (Message::Trade(mut t), Message::Trade(g)) if g.symbol_seq == 0 => {
            t.symbol_seq = 0;
            Message::Trade(t)
        }
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_core::gbm::expected_stream;

    fn cfg() -> GbmConfig {
        GbmConfig { symbols: 8, ..GbmConfig::default() }
    }

    #[test]
    fn a_trade_without_its_update_number_still_matches() {
        let stream: Vec<_> = expected_stream(&cfg(), 50).collect();
        let mut v = Verifier::new(cfg()).unwrap();
        for (s, m) in &stream {
            let m = match *m {
                Message::Trade(t) => Message::Trade(tickwire_core::Trade { symbol_seq: 0, ..t }),
                m => m,
            };
            v.message(*s, &m);
        }
        assert!(v.ok() && v.checked == 50, "{} {} {}", v.checked, v.mismatches, v.skipped);
        // A wrong number is a mismatch.
        let (s, t) = stream.iter().find(|(_, m)| matches!(m, Message::Trade(_))).copied().unwrap();
        let Message::Trade(t) = t else { unreachable!() };
        let mut v = Verifier::new(cfg()).unwrap();
        v.message(s, &Message::Trade(tickwire_core::Trade { symbol_seq: t.symbol_seq + 1, ..t }));
        assert_eq!(v.mismatches, 1);
    }

    #[test]
    fn feed_order_counts_jumps_as_skipped() {
        let stream: Vec<_> = expected_stream(&cfg(), 10).collect();
        let mut v = Verifier::new(cfg()).unwrap();
        for (s, m) in &stream[..3] {
            v.message(*s, m);
        }
        let (s, m) = stream[5];
        v.message(s, &m);
        assert_eq!((v.checked, v.skipped, v.mismatches), (4, 2, 0));
        v.message(stream[4].0, &stream[4].1);
        assert_eq!(v.mismatches, 1, "a message below one delivered is out of order");
    }

    #[test]
    fn per_symbol_order_lets_symbols_overtake_but_not_themselves() {
        let stream: Vec<_> = expected_stream(&cfg(), 200).collect();
        let mut v = Verifier::with_order(cfg(), Order::PerSymbol).unwrap();
        // Hold back every message of symbol 0 from 10 on, deliver the rest,
        // then symbol 0's: each symbol in order, all checked.
        let held = |(s, m): &(SeqNo, Message)| s.0 >= 10 && m.symbol() == Some(0);
        for x in stream.iter().filter(|x| !held(x)) {
            v.message(x.0, &x.1);
        }
        for x in stream.iter().filter(|x| held(x)) {
            v.message(x.0, &x.1);
        }
        v.end_of_session(SeqNo(201));
        assert!(v.ok(), "{} {} {}", v.checked, v.mismatches, v.skipped);
        assert_eq!(v.checked, 200);
        // A symbol overtaking itself is caught.
        let mut v = Verifier::with_order(cfg(), Order::PerSymbol).unwrap();
        let sym0: Vec<_> = stream.iter().filter(|x| x.1.symbol() == Some(0)).take(2).collect();
        v.message(sym0[1].0, &sym0[1].1);
        v.message(sym0[0].0, &sym0[0].1);
        assert_eq!(v.mismatches, 1);
        // What never came is skipped at the end of the session.
        v.end_of_session(SeqNo(201));
        assert!(v.skipped > 0);
    }

    #[test]
    fn a_snapshot_covers_what_was_not_delivered() {
        let stream: Vec<_> = expected_stream(&cfg(), 100).collect();
        let mut v = Verifier::with_order(cfg(), Order::PerSymbol).unwrap();
        for x in &stream[..20] {
            v.message(x.0, &x.1);
        }
        v.snapshot_start(SeqNo(60));
        let book = tickwire_core::gbm::expected_book(&cfg(), 59);
        for s in book.states() {
            v.snapshot_record(s);
        }
        for x in &stream[59..] {
            v.message(x.0, &x.1);
        }
        v.end_of_session(SeqNo(101));
        assert!(v.ok(), "{v:?}");
        assert_eq!(v.snapshot_records, 8);
    }
}
