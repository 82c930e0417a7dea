//! Hot-path costs of the cache, the buffer pool and the latency recorder.
//!
//! `cargo bench -p tickwire-core --bench cache_pool -- --warm-up-time 1 --measurement-time 3`
//!
//! Floors on the 2-core development VM (medians): cache update <= 15 ns,
//! uncontended read <= 10 ns, pool get + put <= 20 ns.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tickwire_core::cache;
use tickwire_core::latency::Latency;
use tickwire_core::pool::Pool;
use tickwire_core::{Message, Quote};

/// A realistic universe size: the slots (64 B each) fit in L2 like a real
/// feed's hot set.
const SYMBOLS: u32 = 1024;

fn cache_benches(c: &mut Criterion) {
    let (mut w, r) = cache::new(SYMBOLS);
    let mut seq = 0u64;
    c.bench_function("cache/update (apply Quote)", |b| {
        b.iter(|| {
            seq += 1;
            let q = Quote {
                symbol: (seq % u64::from(SYMBOLS)) as u32,
                bid_px: seq as i64,
                ask_px: seq as i64 + 1,
                bid_qty: 100,
                ask_qty: 200,
                exch_ts: seq,
                symbol_seq: seq,
            };
            w.apply(seq, black_box(&Message::Quote(q)))
        })
    });
    let mut sym = 0u32;
    c.bench_function("cache/read (uncontended)", |b| {
        b.iter(|| {
            sym = (sym + 1) % SYMBOLS;
            r.read(black_box(sym))
        })
    });
    c.bench_function("cache/updates (uncontended)", |b| {
        b.iter(|| {
            sym = (sym + 1) % SYMBOLS;
            r.updates(black_box(sym))
        })
    });
}

fn pool_benches(c: &mut Criterion) {
    let mut pool = Pool::new(2048, 64);
    c.bench_function("pool/get+put (same thread)", |b| {
        b.iter(|| {
            let buf = pool.get();
            black_box(&buf);
            drop(buf);
        })
    });
}

fn latency_benches(c: &mut Criterion) {
    let mut lat = Latency::new();
    let mut t = 0u64;
    c.bench_function("latency/record_between", |b| {
        b.iter(|| {
            t += 1;
            lat.record_between(black_box(t), black_box(t + 1_000 + (t & 0xfff)));
        })
    });
}

criterion_group!(benches, cache_benches, pool_benches, latency_benches);
criterion_main!(benches);
