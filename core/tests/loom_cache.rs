//! Model-checks the cache's seqlock with loom: no interleaving or weak-memory
//! reordering lets a reader return a torn state.
//!
//! Run with:
//! `RUSTFLAGS="--cfg loom" cargo test -p tickwire-core --test loom_cache --release`
//!
//! Every state the writer stores has all of its fields derived from one number
//! `k`, so a copy mixing two writes is recognisable (the states and the
//! reader's checks are `support/cache_oracle.rs`, shared with the stress test
//! and the unit tests). Readers mostly use `try_read` (one seqlock attempt):
//! the property lives in a single attempt, and `read` is only `try_read` in a
//! loop; the retry loop multiplies loom's state space without adding new
//! orderings, so it is checked in the smallest model only.
#![cfg(loom)]

use loom::thread;
use tickwire_core::cache::{self, CacheReader};
use tickwire_core::{Message, Quote, Side, SymbolState, Trade};

#[path = "support/cache_oracle.rs"]
mod cache_oracle;
use cache_oracle::{Reads, after, message, state};

/// Preemption bound for the small models: 2 forced context switches per
/// execution let a read straddle two writes in every way. (Weak-memory
/// outcomes of the Relaxed payload loads are explored regardless of the bound.)
const PREEMPTION_BOUND: usize = 2;
/// Preemption bound for the larger models (more writes or attempts): 1 keeps
/// each under ~15 s and the file under a minute. It is enough to catch each
/// of the seqlock's ordering bugs: removing the reader's acquire fence, the
/// writer's release fence, or making the final version store Relaxed each
/// fails every model here within 0.5 s (checked by hand).
const LARGE_PREEMPTION_BOUND: usize = 1;

fn builder() -> loom::model::Builder {
    bounded(PREEMPTION_BOUND)
}

fn bounded(preemptions: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b
}

/// `reads` single attempts; every successful one is untorn and none goes back.
fn try_reads(r: &CacheReader, reads: usize, max_k: u64) {
    let mut check = Reads::new(state, max_k);
    for _ in 0..reads {
        if let Ok(s) = r.try_read(0) {
            check.read(&s);
        }
    }
}

/// One writer storing states 1..=`writes` into symbol 0 while `readers`
/// threads each make `reads` read attempts.
fn model(writes: u64, readers: usize, reads: usize, preemptions: usize) {
    bounded(preemptions).check(move || {
        let (mut w, r) = cache::new(1);
        let handles: Vec<_> = (0..readers)
            .map(|_| {
                let r = r.clone();
                thread::spawn(move || try_reads(&r, reads, writes))
            })
            .collect();
        for k in 1..=writes {
            assert!(w.set(&state(0, k)));
        }
        for t in handles {
            t.join().unwrap();
        }
    });
}

#[test]
fn one_write_blocking_read_is_untorn() {
    builder().check(|| {
        let (mut w, r) = cache::new(1);
        let reader = thread::spawn(move || {
            Reads::new(state, 1).read(&r.read(0).unwrap());
        });
        assert!(w.set(&state(0, 1)));
        reader.join().unwrap();
    });
}

#[test]
fn two_writes_one_reader() {
    model(2, 1, 1, PREEMPTION_BOUND);
}

#[test]
fn two_writes_one_reader_two_attempts() {
    model(2, 1, 2, LARGE_PREEMPTION_BOUND);
}

#[test]
fn three_writes_one_reader() {
    model(3, 1, 1, LARGE_PREEMPTION_BOUND);
}

/// Two readers add no new ordering (readers only load) but triple the state
/// space: ~35 s on its own. Run with `-- --ignored`.
#[test]
#[ignore = "slow (~35 s); readers do not interact"]
fn one_write_two_readers() {
    model(1, 2, 1, LARGE_PREEMPTION_BOUND);
}

#[test]
fn apply_path_never_torn() {
    // apply() reads the writer's own slot, then writes; readers see either the
    // empty state or the state after one or two messages of the stress test's
    // stream, and updates() never goes back behind what a read returned.
    bounded(LARGE_PREEMPTION_BOUND).check(|| {
        let (mut w, r) = cache::new(1);
        let reader = thread::spawn(move || {
            if let Ok(s) = r.try_read(0) {
                let mut check = Reads::new(|symbol, n| after(1, symbol, n), 2);
                check.read(&s);
                check.updates(r.updates(0).unwrap());
            }
        });
        for n in 1..=2u64 {
            let (seq, msg) = message(1, 0, n);
            assert!(w.apply(seq, &msg));
        }
        reader.join().unwrap();
    });
}
