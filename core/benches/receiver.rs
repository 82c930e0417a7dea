//! The receiver's in-order path: what a subscriber pays per message when
//! nothing is lost (parse and CRC, sequencing, the event queue), fed packet
//! by packet and drained after each, as the client does; in feed order and
//! in per-symbol order (which also tracks every symbol's update number).
//!
//! ```text
//! MALLOC_TRIM_THRESHOLD_=4000000000 MALLOC_MMAP_THRESHOLD_=4000000000 \
//!     cargo bench -p tickwire-core --bench receiver -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Set both thresholds when comparing builds: every iteration drops a
//! receiver (its reorder buffer and event queue, ~46 MB) and makes a new one,
//! and glibc's dynamic thresholds decide, by a few MB either way, whether
//! that memory goes back to the kernel in between. When it does, the
//! measured loop pays ~650 page faults for its event queue, and throughput
//! halves: a slot 8 bytes larger (80 → 88, the per-symbol mark) crossed the
//! line and measured 31 → 15 M msgs/s, with 2.7 M page faults against 12 k;
//! with the thresholds fixed the same two builds measure 31 and 49 M/s.
//!
//! The stream is the seeded GBM generator's, in default-sized (1472-byte)
//! Data packets from sequence 1.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tickwire_core::gbm::{GbmConfig, Generator};
use tickwire_core::recovery::{Event, Order, Receiver, ReceiverConfig};
use tickwire_core::wire::{
    DEFAULT_MAX_PACKET, HEADER_LEN, PacketKind, PacketRepr, emit_message, message_len,
};
use tickwire_core::{Instant, Line, SeqNo};

/// Packets in one measured run (the first, which starts the session, is fed
/// before the measurement).
const PACKETS: usize = 1_000;

/// `PACKETS` Data packets of the generator's stream from sequence 1, and the
/// number of messages they hold.
fn stream() -> (Vec<Vec<u8>>, u64) {
    let mut generator = Generator::new(GbmConfig::default()).expect("default config is valid");
    let (mut packets, mut seq) = (Vec::with_capacity(PACKETS), 1u64);
    let mut pending = generator.next_message();
    for _ in 0..PACKETS {
        let mut buf = vec![0u8; DEFAULT_MAX_PACKET];
        let (mut at, first, mut count) = (HEADER_LEN, seq, 0u16);
        while at + message_len(&pending) <= DEFAULT_MAX_PACKET {
            at += emit_message(&pending, &mut buf[at..]).expect("fits");
            count += 1;
            pending = generator.next_message();
        }
        seq += u64::from(count);
        let repr = PacketRepr {
            kind: PacketKind::Data,
            flags: 0,
            epoch: 1,
            first_seq: SeqNo(first),
            count,
            send_time: 0,
            payload_len: at - HEADER_LEN,
        };
        let len = repr.seal(&mut buf);
        buf.truncate(len);
        packets.push(buf);
    }
    (packets, seq - 1)
}

fn bench(c: &mut Criterion) {
    let (packets, messages) = stream();
    let mut g = c.benchmark_group("receiver");
    g.throughput(Throughput::Elements(messages));
    for (name, order) in [
        ("in_order (handle_packet + poll_event)", Order::Strict),
        ("in_order per-symbol (handle_packet + poll_event)", Order::PerSymbol),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                // The session starts outside the measurement: its first
                // packet resets the reorder buffer (2^18 slots), a one-off
                // cost that would otherwise dominate 1,000 packets.
                || {
                    let mut rx =
                        Receiver::new(ReceiverConfig { order, ..ReceiverConfig::default() });
                    rx.handle_packet(Instant(0), Line::A, &packets[0]);
                    let first = std::iter::from_fn(|| rx.poll_event())
                        .filter(|ev| matches!(ev, Event::Message { .. }))
                        .count() as u64;
                    (rx, first)
                },
                |(rx, first)| {
                    let mut delivered = *first;
                    for (i, p) in packets.iter().enumerate().skip(1) {
                        rx.handle_packet(Instant(i as u64 * 1_000), Line::A, p);
                        while let Some(ev) = rx.poll_event() {
                            delivered += u64::from(matches!(ev, Event::Message { .. }));
                        }
                    }
                    assert_eq!(delivered, messages, "every message delivered in order");
                    black_box(delivered)
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
