//! The recovery Receiver (datagram and stream modes) under an arbitrary
//! sequence of operations: packets (raw bytes, or built from fuzzed fields
//! with a valid CRC), timeouts, connects, disconnects, transmits and event
//! drains. Never panics; delivered messages are in sequence order without
//! duplicates or silent holes.
#![no_main]

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tickwire_core::SeqNo;
use tickwire_core::recovery::{Event, LateJoin, Mode, Receiver, ReceiverConfig};
use tickwire_core::wire::{Packet, PacketKind, PacketRepr, Status, StatusRepr, parse_token};
use tickwire_core::{Instant, Line};
use tickwire_fuzz::{EPOCH, EPOCH2, advance, finish, line, valid_packet};

/// The service's answer to the Probe `nonce`: a session near `near`.
fn status(u: &mut Unstructured, nonce: u64, near: u64) -> Result<Vec<u8>> {
    let epoch = if u.arbitrary()? { EPOCH } else { EPOCH2 };
    let next = near.saturating_add_signed(i64::from(u.arbitrary::<i16>()?)).max(1);
    let body = StatusRepr {
        cookie: u.arbitrary()?,
        echo: if u.ratio(7, 8)? { nonce } else { u.arbitrary()? },
        instance: u64::from(u.int_in_range(1u8..=2)?),
        ended: u.arbitrary()?,
    };
    let mut b = [0u8; 32];
    Status::new_unchecked(&mut b[..]).emit(&body);
    let repr = PacketRepr {
        kind: PacketKind::Status,
        flags: 0,
        epoch,
        first_seq: SeqNo(next),
        count: 0,
        send_time: 0,
        payload_len: b.len(),
    };
    Ok(finish(&repr, &b))
}

/// Checks the delivered stream: each Message is the one after the last,
/// except across an epoch change, a snapshot (which restarts the stream at
/// its sequence) or an Unrecoverable range (which skips it).
#[derive(Default)]
struct Checker {
    next: Option<u64>,
    in_snapshot: bool,
}

impl Checker {
    fn on(&mut self, e: &Event) {
        match *e {
            Event::Message { seq, .. } => {
                assert!(!self.in_snapshot, "message {seq:?} inside a snapshot");
                if let Some(n) = self.next {
                    assert_eq!(seq.0, n, "message out of sequence");
                }
                self.next = Some(seq.0 + 1);
            }
            Event::EpochChanged { .. } => self.next = None,
            Event::SnapshotStart { .. } => self.in_snapshot = true,
            Event::SymbolState(_) => assert!(self.in_snapshot, "SymbolState outside a snapshot"),
            Event::SnapshotEnd { seq } => {
                assert!(self.in_snapshot, "SnapshotEnd without SnapshotStart");
                self.in_snapshot = false;
                self.next = Some(seq.0);
            }
            Event::Unrecoverable { range } => {
                if let Some(n) = self.next {
                    assert_eq!(range.start.0, n, "unrecoverable range not at the gap");
                }
                self.next = Some(range.end.0);
            }
            Event::Reconnect | Event::EndOfSession { .. } => {}
            Event::SymbolStale { .. } | Event::SymbolFresh { .. } => {
                panic!("stale symbols reported in feed order")
            }
        }
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let flags: u8 = u.arbitrary()?;
    let mode = if flags & 1 == 0 { Mode::Datagram } else { Mode::Stream };
    let late_join = if flags & 2 == 0 { LateJoin::Snapshot } else { LateJoin::FromFirstSeen };
    let mut rx = Receiver::new(ReceiverConfig {
        mode,
        late_join,
        seed: u64::from(flags >> 2),
        // Small, so each input allocates little (the default buffers 2^18).
        max_buffered: 256,
        ..Default::default()
    });
    let mut check = Checker::default();
    let mut now = 1_000_000u64;
    let mut tx = vec![0u8; 2048];
    if mode == Mode::Stream {
        rx.handle_connected(Instant(now));
    }
    let mut ops = 0;
    while !u.is_empty() && ops < 256 {
        ops += 1;
        now = advance(u, now)?;
        let line = line(u)?;
        match u.int_in_range(0u8..=15)? {
            0 | 1 => {
                let n = u.arbitrary_len::<u8>()?.min(2048);
                rx.handle_packet(Instant(now), line, u.bytes(n)?);
            }
            2..=9 => {
                let near = rx.next_expected().0;
                let p = valid_packet(u, near)?;
                rx.handle_packet(Instant(now), line, &p);
            }
            10 | 11 => {
                let t = if u.arbitrary()? {
                    rx.poll_timeout().unwrap_or(Instant(now))
                } else {
                    Instant(now)
                };
                now = now.max(t.0);
                rx.handle_timeout(t);
            }
            12 => rx.handle_connected(Instant(now)),
            13 => rx.handle_disconnected(Instant(now)),
            _ => {
                let len = usize::from(u.int_in_range(0u8..=64)?) * 32;
                while let Some(n) = rx.poll_transmit(Instant(now), now, &mut tx[..len]) {
                    assert!(n <= len);
                    let probe = Packet::new_checked(&tx[..n])
                        .ok()
                        .filter(|p| p.kind() == PacketKind::Probe)
                        .and_then(|p| parse_token(p.payload()).ok());
                    // Sometimes the recovery service answers it.
                    if let Some(nonce) = probe
                        && u.arbitrary()?
                    {
                        let st = status(u, nonce, rx.next_expected().0)?;
                        rx.handle_packet(Instant(now), Line::Unicast, &st);
                    }
                }
            }
        }
        while let Some(e) = rx.poll_event() {
            check.on(&e);
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
