//! Throughput of the GBM generator: messages ("ticks") per second.
//!
//! Run: `cargo bench -p tickwire-core --bench gbm -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_core::Message;
use tickwire_core::gbm::{GbmConfig, Generator};

/// Messages per measured iteration: large enough that the per-iteration
/// overhead of criterion vanishes, small enough that the symbol table stays hot.
const BATCH: usize = 1024;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gbm");
    group.throughput(Throughput::Elements(BATCH as u64));
    for symbols in [1000u32, 100_000] {
        let cfg = GbmConfig { symbols, ..GbmConfig::default() };
        let mut g = Generator::new(cfg.clone()).expect("valid config");
        group.bench_function(format!("next_message/{symbols}_symbols"), |b| {
            b.iter(|| {
                for _ in 0..BATCH {
                    black_box(g.next_message());
                }
            })
        });
        let mut g = Generator::new(cfg.clone()).expect("valid config");
        let mut out = vec![Message::Unknown { kind: 0 }; BATCH];
        group.bench_function(format!("fill/{symbols}_symbols"), |b| {
            b.iter(|| {
                g.fill(&mut out);
                black_box(&out[..]);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
