//! Cost of packet authentication (docs/PROTOCOL.md § 12): sealing and
//! opening (verify + strip) one packet, next to the CRC32C every packet pays
//! anyway, for a full 1472-byte Data packet (29 Quotes) and a 40-byte control
//! packet. Per message = the full packet's figure / 29.
//!
//! `cargo bench -p tickwire-core --bench auth -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_core::SeqNo;
use tickwire_core::wire::auth::{AuthKey, TAG_LEN, open, seal};
use tickwire_core::wire::{HEADER_LEN, Packet, PacketKind, PacketRepr};

/// Messages in a full default-size Data packet: (1472 − 16 − 40 − 16) / 48.
const QUOTES: usize = 29;

fn packet(payload_len: usize) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + payload_len + TAG_LEN];
    let mut p = Packet::new_unchecked(&mut b[..HEADER_LEN + payload_len]);
    PacketRepr {
        kind: if payload_len == 0 { PacketKind::Heartbeat } else { PacketKind::Data },
        flags: 0,
        epoch: 1,
        first_seq: SeqNo(1),
        count: QUOTES as u16,
        send_time: 2,
        payload_len,
    }
    .emit(&mut p);
    for (i, x) in p.payload_mut().iter_mut().enumerate() {
        *x = i as u8;
    }
    p.fill_crc();
    b
}

fn bench(c: &mut Criterion) {
    let key = AuthKey::new([7; 32]);
    // A sealed packet is at most 1472 bytes: 1416 bytes of payload before the tag.
    for (name, payload_len) in [("data 1472 B", 1472 - HEADER_LEN - TAG_LEN), ("control 40 B", 0)] {
        let plain = packet(payload_len);
        let len = HEADER_LEN + payload_len;
        let mut g = c.benchmark_group(format!("auth/{name}"));
        g.throughput(Throughput::Bytes(len as u64));
        let mut buf = plain.clone();
        g.bench_function("crc32c (paid by every packet)", |b| {
            b.iter(|| Packet::new_unchecked(&mut buf[..len]).fill_crc())
        });
        g.bench_function("seal", |b| {
            b.iter(|| {
                buf[..len].copy_from_slice(&plain[..len]);
                seal(&key, black_box(&mut buf), len).unwrap()
            })
        });
        let mut sealed = plain.clone();
        let n = seal(&key, &mut sealed, len).unwrap();
        let mut out = vec![0u8; n];
        g.bench_function("open (verify + strip)", |b| {
            b.iter(|| open(&key, black_box(&sealed[..n]), &mut out).unwrap())
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
