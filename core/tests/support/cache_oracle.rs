//! What the cache's concurrency tests (the unit tests of `src/cache.rs`,
//! `cache_stress`, `loom_cache`) write and how their readers check a read.
//!
//! Every state a writer produces has all of its fields derived from one
//! number, its update count `n`, so a reader recomputes the state it should
//! see from the `updates` it read and recognises a copy mixing two writes
//! (see [`Reads`]). Two streams:
//!
//! - [`state`]: states stored with `CacheWriter::set`, every field a distinct
//!   function of `k = updates` (the sharpest torn-read detector);
//! - [`message`] and [`after`]: messages applied with `CacheWriter::apply` to
//!   `symbols` symbols in turn, and the state of a symbol after its first `n`
//!   of them (its `n`-th message carries sequence
//!   `(n - 1) * symbols + symbol + 1` and is a trade when `n % 3 == 0`,
//!   otherwise a quote whose fields derive from `n`).
//!
//! Include it with `#[path = "support/cache_oracle.rs"] mod cache_oracle;`;
//! it takes the message types from the crate root (`crate::`), so an
//! integration test imports `Message`, `Quote`, `Side`, `SymbolState` and
//! `Trade` from `tickwire_core` at its root (the library re-exports them at
//! its own root). Not every test uses every part.
#![allow(dead_code)]

use crate::{Message, Quote, Side, SymbolState, Trade};

/// A state whose quote fields derive from `q` and trade fields from `t`.
fn derived(symbol: u32, q: u64, t: u64, updates: u64, last_seq: u64) -> SymbolState {
    SymbolState {
        symbol,
        bid_px: q as i64,
        ask_px: -(q as i64),
        bid_qty: q as u32,
        ask_qty: !(q as u32),
        last_px: (t * 7) as i64,
        last_qty: (t * 3) as u32,
        updates,
        last_seq,
    }
}

/// The state with every field derived from `k` (k = 0 is the empty state).
pub fn state(symbol: u32, k: u64) -> SymbolState {
    if k == 0 {
        return SymbolState::empty(symbol);
    }
    derived(symbol, k, k, k, k * 11)
}

fn is_trade(n: u64) -> bool {
    n % 3 == 0
}

/// The `n`-th (1-based) message of `symbol` in the stream over `symbols`
/// symbols: (sequence, message).
pub fn message(symbols: u32, symbol: u32, n: u64) -> (u64, Message) {
    let seq = (n - 1) * u64::from(symbols) + u64::from(symbol) + 1;
    let msg = if is_trade(n) {
        Message::Trade(Trade {
            symbol,
            side: Side::Buy,
            price: (n * 7) as i64,
            qty: (n * 3) as u32,
            exch_ts: seq,
            symbol_seq: 0,
        })
    } else {
        Message::Quote(Quote {
            symbol,
            bid_px: n as i64,
            ask_px: -(n as i64),
            bid_qty: n as u32,
            ask_qty: !(n as u32),
            exch_ts: seq,
            symbol_seq: n,
        })
    };
    (seq, msg)
}

/// The state of `symbol` after its first `n` messages of the stream over
/// `symbols` symbols.
pub fn after(symbols: u32, symbol: u32, n: u64) -> SymbolState {
    if n == 0 {
        return SymbolState::empty(symbol);
    }
    let q = if is_trade(n) { n - 1 } else { n };
    let last_seq = (n - 1) * u64::from(symbols) + u64::from(symbol) + 1;
    derived(symbol, q, n / 3 * 3, n, last_seq)
}

/// A reader's checks of one symbol whose writer only ever leaves the states
/// `oracle(symbol, n)`, `n` (the update count) at most `max`.
pub struct Reads<F> {
    oracle: F,
    max: u64,
    /// The highest update count seen so far.
    last: u64,
}

impl<F: Fn(u32, u64) -> SymbolState> Reads<F> {
    pub fn new(oracle: F, max: u64) -> Self {
        Reads { oracle, max, last: 0 }
    }

    /// A read state: possible, not torn (the oracle's state for its update
    /// count) and not behind an earlier read; returns its update count.
    pub fn read(&mut self, s: &SymbolState) -> u64 {
        let n = s.updates;
        assert!(n <= self.max, "impossible updates in {s:?}");
        assert_eq!(*s, (self.oracle)(s.symbol, n), "torn read of symbol {}", s.symbol);
        assert!(n >= self.last, "symbol {}: updates went back from {} to {n}", s.symbol, self.last);
        self.last = n;
        n
    }

    /// A `CacheReader::updates` count: not behind what was read before.
    pub fn updates(&mut self, n: u64) {
        assert!(n >= self.last, "updates() {n} went back behind a read's {}", self.last);
        self.last = n;
    }
}
