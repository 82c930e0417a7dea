//! Wire benchmarks: encode and parse(+CRC) throughput in messages per second.
//!
//! `cargo bench -p tickwire-core --bench wire -- --warm-up-time 1 --measurement-time 3`
//!
//! A packet is the publisher's default: 1472 bytes (one Ethernet MTU), GBM
//! messages (80% quotes of 48 bytes, 20% trades of 32 bytes) back to back.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_core::gbm::{GbmConfig, Generator};
use tickwire_core::wire::{
    DEFAULT_MAX_PACKET, HEADER_LEN, MessageIter, Packet, PacketKind, PacketRepr, emit_message,
    message_len,
};
use tickwire_core::{Message, SeqNo};

/// Messages that fill one default-sized packet, from the seeded generator.
fn packet_messages() -> Vec<Message> {
    let mut generator = Generator::new(GbmConfig::default()).expect("default config is valid");
    let mut out = Vec::new();
    let mut len = HEADER_LEN;
    loop {
        let m = generator.next_message();
        if len + message_len(&m) > DEFAULT_MAX_PACKET {
            return out;
        }
        len += message_len(&m);
        out.push(m);
    }
}

/// Encode `msgs` into `buf` as a Data packet with its CRC; returns its length.
fn encode(msgs: &[Message], buf: &mut [u8]) -> usize {
    let mut at = HEADER_LEN;
    for m in msgs {
        at += emit_message(m, &mut buf[at..]).expect("fits");
    }
    let repr = PacketRepr {
        kind: PacketKind::Data,
        flags: 0,
        epoch: 1,
        first_seq: SeqNo(1),
        count: msgs.len() as u16,
        send_time: 0,
        payload_len: at - HEADER_LEN,
    };
    let mut p = Packet::new_unchecked(&mut buf[..at]);
    repr.emit(&mut p);
    p.fill_crc();
    at
}

fn bench_wire(c: &mut Criterion) {
    let msgs = packet_messages();
    let mut buf = vec![0u8; DEFAULT_MAX_PACKET];
    let len = encode(&msgs, &mut buf);
    let packet = buf[..len].to_vec();

    let mut g = c.benchmark_group("wire");
    g.throughput(Throughput::Elements(msgs.len() as u64));
    g.bench_function("encode_packet_with_crc", |b| {
        b.iter(|| black_box(encode(black_box(&msgs), &mut buf)));
    });
    g.bench_function("parse_packet_with_crc", |b| {
        b.iter(|| {
            let p = Packet::new_checked(black_box(&packet[..])).expect("valid");
            let repr = PacketRepr::parse(&p).expect("valid");
            let mut n = 0u64;
            for m in MessageIter::new(p.payload(), repr.count) {
                if let Ok(Message::Quote(q)) = m {
                    n = n.wrapping_add(q.bid_px as u64);
                } else if let Ok(Message::Trade(t)) = m {
                    n = n.wrapping_add(t.price as u64);
                }
            }
            black_box(n)
        });
    });
    g.finish();
}

criterion_group!(benches, bench_wire);
criterion_main!(benches);
