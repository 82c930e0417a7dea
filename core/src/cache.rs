//! Lock-free per-symbol cache: one seqlock slot per symbol, one writer, many
//! readers.
//!
//! ```text
//!   recovery::Receiver ──Message──▶ CacheWriter::apply ──▶ [Slot 0][Slot 1]...[Slot n-1]
//!                                                              ▲  ▲  (one cache line each)
//!   live view / strategy threads ──▶ CacheReader::read ────────┘  │
//!   stats thread ─────────────────▶ CacheReader::updates ─────────┘
//! ```
//!
//! Each slot is one 64-byte cache line: a version counter and seven payload
//! words holding a [`SymbolState`] (the symbol id is the slot index). Every
//! field is an atomic accessed `Relaxed` between explicit fences, so there is
//! no data race (unlike the `seqlock` crate, which reads non-atomically) and
//! loom can model it. The protocol is the standard fence-based seqlock (Boehm,
//! "Can seqlocks get along with programming language memory models?", 2012):
//!
//! - writer: `version = v + 1` (odd: write in progress), `fence(Release)`,
//!   payload stores (`Relaxed`), `version = v + 2` with `Release`;
//! - reader: `v1 = version` (`Acquire`; retry while odd), payload loads
//!   (`Relaxed`), `fence(Acquire)`, `v2 = version` (`Relaxed`); the copy is
//!   consistent iff `v1 == v2`.
//!
//! If a reader's payload load sees any store of a write that began after `v1`,
//! the writer's release fence synchronises with the reader's acquire fence, so
//! the odd version store happens-before the `v2` load and `v2 != v1`: a torn
//! copy is always detected.
//!
//! Single-writer is enforced by types: [`new`] returns exactly one
//! [`CacheWriter`] (not `Clone`; mutation takes `&mut self`) and any number of
//! [`CacheReader`]s (`Clone + Send + Sync`).
//!
//! The module needs no `unsafe`.

use std::fmt;
use std::sync::Arc;

#[cfg(loom)]
use loom::hint::spin_loop;
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(loom))]
use std::hint::spin_loop;
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering, fence};

use crate::msg::{Book, Message, SymbolId, SymbolState};
use crate::recovery::StaleReason;

/// Whether a symbol's cached state is up to date (per-symbol delivery order,
/// where one symbol may wait for a lost packet while the others go on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Every update of the symbol the feed has shown was applied.
    Fresh,
    /// The state is behind the feed.
    Stale {
        /// Since when (ns since the Unix epoch).
        since_ns: u64,
        /// Why.
        reason: StaleReason,
    },
}

impl Freshness {
    /// One word: 0 fresh; else `since << 1 | given_up` (since at least 1).
    fn encode(self) -> u64 {
        match self {
            Freshness::Fresh => 0,
            Freshness::Stale { since_ns, reason } => {
                (since_ns.clamp(1, u64::MAX >> 1) << 1) | u64::from(reason == StaleReason::GivenUp)
            }
        }
    }

    fn decode(w: u64) -> Freshness {
        if w == 0 {
            return Freshness::Fresh;
        }
        let reason = if w & 1 == 1 { StaleReason::GivenUp } else { StaleReason::Gap };
        Freshness::Stale { since_ns: w >> 1, reason }
    }
}

/// Payload words per slot: 7 × 8 bytes + the 8-byte version fill exactly one
/// 64-byte cache line, so one symbol's update never touches another's line.
const WORDS: usize = 7;
/// Word index: best bid price (`i64` bits).
const W_BID_PX: usize = 0;
/// Word index: best ask price (`i64` bits).
const W_ASK_PX: usize = 1;
/// Word index: last trade price (`i64` bits).
const W_LAST_PX: usize = 2;
/// Word index: `bid_qty << 32 | ask_qty`.
const W_QTYS: usize = 3;
/// Word index: last trade quantity.
const W_LAST_QTY: usize = 4;
/// Word index: number of messages applied.
const W_UPDATES: usize = 5;
/// Word index: sequence number of the last message applied.
const W_LAST_SEQ: usize = 6;

/// One symbol's seqlock: a version (odd while a write is in progress) and the
/// payload words of a [`SymbolState`]. Aligned to a cache line so that writes
/// to one symbol never invalidate a neighbour's line (no false sharing).
#[repr(C, align(64))]
struct Slot {
    version: AtomicU64,
    words: [AtomicU64; WORDS],
}

// The layout promise: one slot is exactly one cache line (loom's atomics are
// larger, so the check applies to the real build only).
#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Slot>() == 64 && std::mem::align_of::<Slot>() == 64);

impl Slot {
    fn new() -> Slot {
        Slot { version: AtomicU64::new(0), words: std::array::from_fn(|_| AtomicU64::new(0)) }
    }

    /// Encode `state` (all but the symbol id) into payload words.
    fn encode(state: &SymbolState) -> [u64; WORDS] {
        let mut w = [0u64; WORDS];
        w[W_BID_PX] = state.bid_px as u64;
        w[W_ASK_PX] = state.ask_px as u64;
        w[W_LAST_PX] = state.last_px as u64;
        w[W_QTYS] = (u64::from(state.bid_qty) << 32) | u64::from(state.ask_qty);
        w[W_LAST_QTY] = u64::from(state.last_qty);
        w[W_UPDATES] = state.updates;
        w[W_LAST_SEQ] = state.last_seq;
        w
    }

    /// Decode payload words into the state of `symbol`.
    fn decode(symbol: SymbolId, w: &[u64; WORDS]) -> SymbolState {
        SymbolState {
            symbol,
            bid_px: w[W_BID_PX] as i64,
            ask_px: w[W_ASK_PX] as i64,
            bid_qty: (w[W_QTYS] >> 32) as u32,
            ask_qty: w[W_QTYS] as u32,
            last_px: w[W_LAST_PX] as i64,
            // The writer only ever stores a u32 here.
            last_qty: w[W_LAST_QTY] as u32,
            updates: w[W_UPDATES],
            last_seq: w[W_LAST_SEQ],
        }
    }

    /// Load the payload words `Relaxed` (no ordering by itself: the caller
    /// brackets it with the seqlock protocol, or is the single writer).
    #[inline]
    fn load_words(&self) -> [u64; WORDS] {
        std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed))
    }

    /// The seqlock write. Only the single [`CacheWriter`] calls this.
    #[inline]
    fn write(&self, words: &[u64; WORDS]) {
        // Only the writer stores the version, so its own Relaxed load is exact.
        let v = self.version.load(Ordering::Relaxed);
        self.version.store(v.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd version before every payload store below: a reader
        // that sees any of them (and then runs its acquire fence) sees the odd
        // version or later on its re-check.
        fence(Ordering::Release);
        for (slot, &w) in self.words.iter().zip(words) {
            slot.store(w, Ordering::Relaxed);
        }
        // Publishes the payload: a reader acquiring this even version sees it.
        self.version.store(v.wrapping_add(2), Ordering::Release);
    }

    /// One attempt of the seqlock read: `None` if a write overlapped it.
    #[inline]
    fn try_read(&self) -> Option<[u64; WORDS]> {
        let v1 = self.version.load(Ordering::Acquire);
        if v1 & 1 == 1 {
            return None;
        }
        let words = self.load_words();
        // Orders the payload loads before the re-check of the version.
        fence(Ordering::Acquire);
        let v2 = self.version.load(Ordering::Relaxed);
        (v1 == v2).then_some(words)
    }

    /// The seqlock read: retries until it copies a payload no write
    /// overlapped (a write is a handful of stores long).
    #[inline]
    fn read(&self) -> [u64; WORDS] {
        loop {
            if let Some(words) = self.try_read() {
                return words;
            }
            spin_loop();
        }
    }
}

/// Why [`CacheReader::try_read`] returned no state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryReadError {
    /// The symbol is outside the universe.
    #[error("symbol out of range")]
    OutOfRange,
    /// The writer was updating the symbol during the attempt; try again.
    #[error("a write to the symbol was in progress")]
    Busy,
}

/// Create a cache of `symbols` empty states: the one writer and a reader (clone
/// the reader, or ask the writer for more).
pub fn new(symbols: u32) -> (CacheWriter, CacheReader) {
    let slots: Arc<[Slot]> = (0..symbols).map(|_| Slot::new()).collect();
    let fresh: Arc<[AtomicU64]> = (0..symbols).map(|_| AtomicU64::new(0)).collect();
    (
        CacheWriter { slots: Arc::clone(&slots), fresh: Arc::clone(&fresh) },
        CacheReader { slots, fresh },
    )
}

/// The single writer of a cache. Not `Clone`: there is exactly one per cache,
/// and every mutation takes `&mut self`, so the seqlock's single-writer
/// precondition holds by construction. `Send`: it may live on the receive
/// thread while the cache was built elsewhere.
pub struct CacheWriter {
    slots: Arc<[Slot]>,
    /// Per symbol, its [`Freshness`] as one word (beside the seqlock: a
    /// reader may see a state and a freshness of slightly different moments).
    fresh: Arc<[AtomicU64]>,
}

impl CacheWriter {
    /// Apply `msg`, carried at sequence `seq`, to its symbol's state (the same
    /// semantics as [`Book::apply`]). Returns `false`, changing nothing, if the
    /// message is of an unknown type or its symbol is outside the universe.
    #[inline]
    pub fn apply(&mut self, seq: u64, msg: &Message) -> bool {
        let Some(symbol) = msg.symbol() else {
            return false;
        };
        let Some(slot) = self.slots.get(symbol as usize) else {
            return false;
        };
        // We are the only writer: the slot cannot change under us, so a plain
        // Relaxed copy is consistent and needs no retry. No second copy is kept.
        let mut state = Slot::decode(symbol, &slot.load_words());
        state.apply(seq, msg);
        slot.write(&Slot::encode(&state));
        true
    }

    /// Replace one symbol's state (snapshot application; same semantics as
    /// [`Book::set`]). Returns `false` if `state.symbol` is out of range.
    pub fn set(&mut self, state: &SymbolState) -> bool {
        match self.slots.get(state.symbol as usize) {
            Some(slot) => {
                slot.write(&Slot::encode(state));
                true
            }
            None => false,
        }
    }

    /// Forget every symbol's state (a new session begins from nothing: the
    /// server restarted). Readers see each symbol as never updated.
    pub fn clear(&mut self) {
        for (i, slot) in self.slots.iter().enumerate() {
            let empty = SymbolState { symbol: i as SymbolId, ..SymbolState::default() };
            slot.write(&Slot::encode(&empty));
        }
        for w in self.fresh.iter() {
            w.store(0, Ordering::Release);
        }
    }

    /// Mark `symbol` stale or fresh. Returns `false` if it is out of range.
    pub fn set_freshness(&mut self, symbol: SymbolId, f: Freshness) -> bool {
        match self.fresh.get(symbol as usize) {
            Some(w) => {
                w.store(f.encode(), Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// A new reader of this cache.
    pub fn reader(&self) -> CacheReader {
        CacheReader { slots: Arc::clone(&self.slots), fresh: Arc::clone(&self.fresh) }
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the universe is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheWriter").field("symbols", &self.slots.len()).finish()
    }
}

/// A reader of a cache: cheap to clone, shareable across threads. Reads never
/// block the writer and never return a torn state.
#[derive(Clone)]
pub struct CacheReader {
    slots: Arc<[Slot]>,
    fresh: Arc<[AtomicU64]>,
}

impl CacheReader {
    /// A consistent copy of `symbol`'s state, or `None` if it is out of range.
    /// Spins while the writer is in the middle of updating this symbol (a few
    /// stores long).
    #[inline]
    pub fn read(&self, symbol: SymbolId) -> Option<SymbolState> {
        let slot = self.slots.get(symbol as usize)?;
        Some(Slot::decode(symbol, &slot.read()))
    }

    /// One read attempt that never spins: the consistent state of `symbol`,
    /// or [`TryReadError::Busy`] if the writer was updating it meanwhile.
    #[inline]
    pub fn try_read(&self, symbol: SymbolId) -> Result<SymbolState, TryReadError> {
        let slot = self.slots.get(symbol as usize).ok_or(TryReadError::OutOfRange)?;
        slot.try_read().map(|w| Slot::decode(symbol, &w)).ok_or(TryReadError::Busy)
    }

    /// The number of messages applied to `symbol` (one atomic load: a single
    /// word is never torn). `None` if out of range.
    #[inline]
    pub fn updates(&self, symbol: SymbolId) -> Option<u64> {
        self.slots.get(symbol as usize).map(|s| s.words[W_UPDATES].load(Ordering::Acquire))
    }

    /// Whether `symbol`'s state is up to date (`None` if out of range).
    /// Always fresh in feed order; in per-symbol order a symbol that waits
    /// for a lost packet is stale, since when and why.
    #[inline]
    pub fn freshness(&self, symbol: SymbolId) -> Option<Freshness> {
        self.fresh.get(symbol as usize).map(|w| Freshness::decode(w.load(Ordering::Acquire)))
    }

    /// Symbols stale now (a scan of the universe: for views, not hot paths).
    pub fn stale_count(&self) -> usize {
        self.fresh.iter().filter(|w| w.load(Ordering::Relaxed) != 0).count()
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when the universe is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A [`Book`] holding every symbol's state. Each symbol's state is
    /// consistent; different symbols may be copied at different moments (there
    /// is no cross-symbol snapshot).
    pub fn to_book(&self) -> Book {
        let mut book = Book::new(self.slots.len() as u32);
        for (i, slot) in self.slots.iter().enumerate() {
            book.set(Slot::decode(i as SymbolId, &slot.read()));
        }
        book
    }
}

impl fmt::Debug for CacheReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheReader").field("symbols", &self.slots.len()).finish()
    }
}

/// The states and reader checks of the cache's concurrency tests, shared
/// with the loom model and the stress test.
#[cfg(all(test, not(loom)))]
#[path = "../tests/support/cache_oracle.rs"]
mod cache_oracle;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::cache_oracle::{Reads, state};
    use super::*;
    use crate::msg::{Quote, Side, Trade};
    use rand::{Rng, RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn freshness_round_trips_and_clears() {
        let (mut w, r) = new(4);
        assert_eq!(r.freshness(2), Some(Freshness::Fresh));
        let gap =
            Freshness::Stale { since_ns: 1_765_000_000_123_456_789, reason: StaleReason::Gap };
        let given_up = Freshness::Stale { since_ns: 7, reason: StaleReason::GivenUp };
        assert!(w.set_freshness(2, gap) && w.set_freshness(3, given_up));
        assert!(!w.set_freshness(4, gap), "out of range");
        assert_eq!(
            (r.freshness(2), r.freshness(3), r.freshness(4)),
            (Some(gap), Some(given_up), None)
        );
        assert_eq!(r.stale_count(), 2);
        w.set_freshness(2, Freshness::Fresh);
        assert_eq!((r.freshness(2), r.stale_count()), (Some(Freshness::Fresh), 1));
        w.clear();
        assert_eq!(r.stale_count(), 0);
    }

    fn random_message(rng: &mut impl Rng, symbols: u32) -> Message {
        // Symbols slightly beyond the universe exercise the out-of-range path.
        let symbol = rng.random_range(0..symbols + 2);
        match rng.random_range(0..10u8) {
            0 => Message::Unknown { kind: rng.random() },
            1..=3 => Message::Trade(Trade {
                symbol,
                side: Side::from_byte(rng.random_range(0..4)),
                price: rng.random_range(-1_000_000..1_000_000_000),
                qty: rng.random(),
                exch_ts: rng.random(),
                symbol_seq: 0,
            }),
            _ => Message::Quote(Quote {
                symbol,
                bid_px: rng.random(),
                ask_px: rng.random(),
                bid_qty: rng.random(),
                ask_qty: rng.random(),
                exch_ts: rng.random(),
                symbol_seq: rng.random(),
            }),
        }
    }

    #[test]
    fn clear_forgets_every_symbol() {
        let (mut w, r) = new(4);
        let mut book = Book::new(4);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for seq in 1..200 {
            w.apply(seq, &random_message(&mut rng, 4));
        }
        w.clear();
        assert_eq!(r.to_book(), book, "a cleared cache is a new session's empty book");
        let m = random_message(&mut rng, 2);
        w.apply(1, &m);
        book.apply(1, &m);
        assert_eq!(r.to_book(), book);
    }

    #[test]
    fn slot_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::align_of::<Slot>(), 64);
    }

    #[test]
    fn encode_decode_round_trips_extremes() {
        let s = SymbolState {
            symbol: 7,
            bid_px: i64::MIN,
            ask_px: i64::MAX,
            bid_qty: u32::MAX,
            ask_qty: 0,
            last_px: -1,
            last_qty: u32::MAX,
            updates: u64::MAX,
            last_seq: 1 << 63,
        };
        assert_eq!(Slot::decode(7, &Slot::encode(&s)), s);
        let t = SymbolState { bid_qty: 0, ask_qty: u32::MAX, ..s };
        assert_eq!(Slot::decode(7, &Slot::encode(&t)), t);
    }

    #[test]
    fn new_cache_is_empty_states() {
        let (w, r) = new(3);
        assert_eq!((w.len(), r.len()), (3, 3));
        for s in 0..3 {
            assert_eq!(r.read(s), Some(SymbolState::empty(s)));
            assert_eq!(r.updates(s), Some(0));
        }
        assert_eq!(r.read(3), None);
        assert_eq!(r.try_read(3), Err(TryReadError::OutOfRange));
        assert_eq!(r.try_read(2), Ok(SymbolState::empty(2)));
        assert_eq!(r.updates(3), None);
        assert_eq!(r.to_book(), Book::new(3));
        let (w0, r0) = new(0);
        assert!(w0.is_empty() && r0.is_empty());
        assert_eq!(r0.read(0), None);
    }

    #[test]
    fn apply_and_set_match_book_on_random_stream() {
        const SYMBOLS: u32 = 16;
        for seed in 0..8u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let (mut w, r) = new(SYMBOLS);
            let r2 = w.reader();
            let mut book = Book::new(SYMBOLS);
            for seq in 1..=5_000u64 {
                if rng.random_range(0..50u8) == 0 {
                    // Occasionally a snapshot record replaces a state.
                    let symbol = rng.random_range(0..SYMBOLS + 2);
                    let st = SymbolState {
                        symbol,
                        bid_px: rng.random(),
                        ask_px: rng.random(),
                        bid_qty: rng.random(),
                        ask_qty: rng.random(),
                        last_px: rng.random(),
                        last_qty: rng.random(),
                        updates: rng.random_range(0..1_000_000),
                        last_seq: seq,
                    };
                    assert_eq!(w.set(&st), book.set(st), "seed {seed} seq {seq}");
                } else {
                    let msg = random_message(&mut rng, SYMBOLS);
                    assert_eq!(w.apply(seq, &msg), book.apply(seq, &msg), "seed {seed} seq {seq}");
                }
                if seq % 97 == 0 {
                    assert_eq!(r.to_book(), book, "seed {seed} seq {seq}");
                }
            }
            assert_eq!(r.to_book(), book);
            assert_eq!(r2.to_book(), book);
            for (s, st) in book.states().iter().enumerate() {
                assert_eq!(r.read(s as u32).as_ref(), Some(st));
                assert_eq!(r.updates(s as u32), Some(st.updates));
            }
        }
    }

    #[test]
    fn try_read_reports_a_write_in_progress() {
        let (mut w, r) = new(1);
        assert!(w.set(&SymbolState { updates: 5, ..SymbolState::empty(0) }));
        // Simulate the writer halfway through a write: the version is odd.
        let v = r.slots[0].version.load(Ordering::Relaxed);
        r.slots[0].version.store(v + 1, Ordering::Relaxed);
        assert_eq!(r.try_read(0), Err(TryReadError::Busy));
        r.slots[0].version.store(v + 2, Ordering::Relaxed);
        assert_eq!(r.try_read(0).map(|s| s.updates), Ok(5));
    }

    #[test]
    fn apply_rejects_unknown_and_out_of_range() {
        let (mut w, r) = new(2);
        assert!(!w.apply(1, &Message::Unknown { kind: 9 }));
        let q = Quote {
            symbol: 2,
            bid_px: 1,
            ask_px: 2,
            bid_qty: 3,
            ask_qty: 4,
            exch_ts: 0,
            symbol_seq: 1,
        };
        assert!(!w.apply(2, &Message::Quote(q)));
        assert!(!w.set(&SymbolState::empty(2)));
        assert_eq!(r.to_book(), Book::new(2));
        assert!(w.apply(3, &Message::Quote(Quote { symbol: 1, ..q })));
        let s = r.read(1).unwrap();
        assert_eq!((s.bid_px, s.ask_px, s.bid_qty, s.ask_qty), (1, 2, 3, 4));
        assert_eq!((s.updates, s.last_seq, s.symbol), (1, 3, 1));
    }

    /// A small threaded race, sized for miri (its data-race detector and
    /// weak-memory emulation check what the native stress test cannot):
    /// every state written has all fields derived from one number.
    #[test]
    fn small_threaded_race_is_never_torn() {
        /// Writes: small enough for miri to finish in seconds.
        const WRITES: u64 = 300;
        let (mut w, r) = new(1);
        assert!(w.set(&state(0, 0)));
        let reader = std::thread::spawn(move || {
            let mut check = Reads::new(state, WRITES);
            while check.read(&r.read(0).unwrap()) != WRITES {
                std::thread::yield_now();
            }
        });
        for k in 1..=WRITES {
            assert!(w.set(&state(0, k)));
            if k % 16 == 0 {
                std::thread::yield_now();
            }
        }
        reader.join().unwrap();
    }

    #[test]
    fn writer_and_reader_are_send_and_reader_sync() {
        fn send<T: Send>() {}
        fn sync<T: Sync>() {}
        send::<CacheWriter>();
        send::<CacheReader>();
        sync::<CacheReader>();
    }
}
