//! Snapshot assembly on late join: a Receiver waiting for a snapshot is fed
//! snapshot parts (valid CRC, fuzzed part headers and records, a few
//! candidate snapshot sequences), interleaved with live Data, duplicates and
//! timeouts. Never panics; SymbolState events come only between
//! SnapshotStart and SnapshotEnd, and the parts of one snapshot never mix.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tickwire_core::recovery::{Event, LateJoin, Mode, Receiver, ReceiverConfig};
use tickwire_core::wire::{PacketKind, PacketRepr};
use tickwire_core::{Instant, Line, SeqNo};
use tickwire_fuzz::{EPOCH, finish, messages_payload, snapshot_payload};

fn run(u: &mut Unstructured) -> Result<()> {
    let mode = if u.arbitrary()? { Mode::Datagram } else { Mode::Stream };
    let mut rx = Receiver::new(ReceiverConfig {
        mode,
        late_join: LateJoin::Snapshot,
        max_buffered: 256,
        max_snapshot_symbols: u32::from(u.int_in_range(1u8..=32)?),
        ..Default::default()
    });
    let mut now = 1_000_000u64;
    let mut tx = [0u8; 256];
    if mode == Mode::Stream {
        rx.handle_connected(Instant(now));
    }
    let base = u64::from(u.int_in_range(1u16..=1000)?);
    // The snapshot the server would send: parts/symbols fixed per input, but
    // each part's header may lie.
    let parts = u.int_in_range(1u16..=4)?;
    let symbols = u32::from(u.int_in_range(0u8..=24)?);
    let mut in_snapshot = false;
    let mut states = 0usize;
    let mut ops = 0;
    while !u.is_empty() && ops < 128 {
        ops += 1;
        now += u64::from(u.arbitrary::<u16>()?) * 100;
        let seq = base + u64::from(u.int_in_range(0u8..=3)?);
        let repr = |kind, first, count, send_time| PacketRepr {
            kind,
            flags: 0,
            epoch: EPOCH,
            first_seq: SeqNo(first),
            count,
            send_time,
            payload_len: 0,
        };
        match u.int_in_range(0u8..=9)? {
            0..=5 => {
                let (part, pts, syms) = if u.ratio(3, 4)? {
                    (u.int_in_range(0..=parts - 1)?, parts, symbols)
                } else {
                    (u.arbitrary()?, u.arbitrary()?, u.arbitrary()?)
                };
                let n = u.int_in_range(0u8..=8)?;
                let payload = snapshot_payload(u, part, pts, syms, usize::from(n))?;
                let p = finish(&repr(PacketKind::Snapshot, seq, u16::from(n), now), &payload);
                rx.handle_packet(Instant(now), Line::Unicast, &p);
            }
            6 | 7 => {
                let n = u.int_in_range(0u8..=4)?;
                let first = seq.saturating_add_signed(i64::from(u.arbitrary::<i8>()? % 8)).max(1);
                let payload = messages_payload(u, usize::from(n), false)?;
                let p = finish(&repr(PacketKind::Data, first, u16::from(n), now), &payload);
                rx.handle_packet(Instant(now), Line::A, &p);
            }
            8 => {
                let t = rx.poll_timeout().unwrap_or(Instant(now));
                now = now.max(t.0);
                rx.handle_timeout(t);
            }
            _ => {
                if mode == Mode::Stream && u.arbitrary()? {
                    rx.handle_disconnected(Instant(now));
                    rx.handle_connected(Instant(now));
                }
                while rx.poll_transmit(Instant(now), now, &mut tx).is_some() {}
            }
        }
        while let Some(e) = rx.poll_event() {
            match e {
                Event::SnapshotStart { symbols, .. } => {
                    assert!(!in_snapshot, "nested SnapshotStart");
                    in_snapshot = true;
                    states = 0;
                    let _ = symbols;
                }
                Event::SymbolState(_) => {
                    assert!(in_snapshot, "SymbolState outside a snapshot");
                    states += 1;
                }
                Event::SnapshotEnd { .. } => {
                    assert!(in_snapshot, "SnapshotEnd without SnapshotStart");
                    in_snapshot = false;
                }
                Event::Message { .. } => assert!(!in_snapshot, "Message inside a snapshot"),
                _ => {}
            }
        }
    }
    let _ = states;
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
