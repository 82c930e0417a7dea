//! Stress test of the seqlock cache on real threads: one writer applies
//! millions of messages across a few symbols while two readers check that every
//! read is internally consistent (never torn) and that `updates` never goes
//! back, per symbol.
//!
//! The stream (`support/cache_oracle.rs`, shared with the loom model) is built
//! so that a symbol's whole state is a function of how many messages it has
//! received (`n = updates`): its `n`-th message carries sequence
//! `(n - 1) * SYMBOLS + symbol + 1` and is a trade when `n % 3 == 0`,
//! otherwise a quote whose fields derive from `n`. A reader recomputes the
//! expected state from `n` and compares every field. The test is bounded by
//! message count; readers stop when the writer is done.
#![cfg(not(loom))]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use tickwire_core::cache::{self, CacheReader};
use tickwire_core::{Message, Quote, Side, SymbolState, Trade};

#[path = "support/cache_oracle.rs"]
mod cache_oracle;
use cache_oracle::{Reads, after};

/// Few symbols, so the writer keeps hitting the slots the readers are reading.
const SYMBOLS: u32 = 4;
/// Messages the writer applies: millions, enough for many reads to straddle
/// writes on a 2-core machine, while the debug build finishes in seconds.
const MESSAGES: u64 = 2_000_000;
/// Concurrent readers (the machine has 2 cores; more readers only queue).
const READERS: usize = 2;
/// The writer waits, every this many messages, until each reader has read at
/// least once since the previous checkpoint: it guarantees readers observe
/// intermediate states regardless of scheduling (no timing involved).
const CHECKPOINT_EVERY: u64 = 50_000;

/// The stream's `i`-th (0-based) message: symbols take turns.
fn message(i: u64) -> (u32, u64, u64, Message) {
    let symbol = (i % u64::from(SYMBOLS)) as u32;
    let n = i / u64::from(SYMBOLS) + 1;
    let (seq, msg) = cache_oracle::message(SYMBOLS, symbol, n);
    (symbol, n, seq, msg)
}

/// The state of `symbol` after its first `n` messages.
fn expected(symbol: u32, n: u64) -> SymbolState {
    after(SYMBOLS, symbol, n)
}

/// Reader loop: returns (reads, reads that saw an intermediate state).
fn reader(r: CacheReader, done: Arc<AtomicBool>, seen: Arc<AtomicU64>) -> (u64, u64) {
    let per_symbol = MESSAGES / u64::from(SYMBOLS);
    let mut checks: Vec<_> = (0..SYMBOLS).map(|_| Reads::new(expected, per_symbol)).collect();
    let mut reads = 0u64;
    let mut intermediate = 0u64;
    loop {
        // Load `done` before the pass, so the pass after the writer finished
        // is complete.
        let finished = done.load(Ordering::Acquire);
        for (s, check) in (0..SYMBOLS).zip(&mut checks) {
            let n = check.read(&r.read(s).expect("in range"));
            check.updates(r.updates(s).expect("in range"));
            reads += 1;
            if n != 0 && n != per_symbol {
                intermediate += 1;
            }
        }
        seen.fetch_add(1, Ordering::Release);
        if finished {
            return (reads, intermediate);
        }
        std::hint::spin_loop();
    }
}

#[test]
fn concurrent_reads_are_never_torn_and_updates_are_monotonic() {
    let (mut w, r) = cache::new(SYMBOLS);
    let done = Arc::new(AtomicBool::new(false));
    let seen: Vec<Arc<AtomicU64>> = (0..READERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let readers: Vec<_> = seen
        .iter()
        .map(|seen| {
            let (r, done, seen) = (r.clone(), Arc::clone(&done), Arc::clone(seen));
            thread::spawn(move || reader(r, done, seen))
        })
        .collect();

    for i in 0..MESSAGES {
        let (_, _, seq, msg) = message(i);
        assert!(w.apply(seq, &msg));
        if i % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
            for (s, t) in seen.iter().zip(&readers) {
                // Wait for one full pass that started after this point (the
                // pass in progress ends at +1, the next complete one at +2).
                let now = s.load(Ordering::Acquire);
                // A reader that panicked stops counting: stop waiting for it
                // (its join below reports the failure).
                while s.load(Ordering::Acquire) < now + 2 && !t.is_finished() {
                    thread::yield_now();
                }
            }
        }
    }
    done.store(true, Ordering::Release);

    for (i, t) in readers.into_iter().enumerate() {
        let (reads, intermediate) = t.join().expect("reader panicked: see its message");
        eprintln!("reader {i}: {reads} reads, {intermediate} of intermediate states");
        // Every checkpoint but the last (the final state) forces one pass over
        // all symbols in an intermediate state.
        let forced = (MESSAGES / CHECKPOINT_EVERY - 1) * u64::from(SYMBOLS);
        assert!(intermediate >= forced, "checkpoints force {forced} intermediate reads");
    }
    let book = r.to_book();
    for s in 0..SYMBOLS {
        assert_eq!(book.states()[s as usize], expected(s, MESSAGES / u64::from(SYMBOLS)));
    }
}

#[test]
fn stream_helpers_agree_with_book() {
    // The stream and its oracle (support/cache_oracle.rs) are themselves
    // checked against core's Book.
    let mut book = tickwire_core::Book::new(SYMBOLS);
    for i in 0..10_000u64 {
        let (symbol, n, seq, msg) = message(i);
        assert!(book.apply(seq, &msg));
        assert_eq!(book.states()[symbol as usize], expected(symbol, n));
    }
}
