//! The recovery Receiver in per-symbol order under an arbitrary sequence of
//! operations: packets (raw bytes, or built from fuzzed fields with a valid
//! CRC, whose messages carry arbitrary update numbers), timeouts, transmits
//! and event drains. Never panics; within a session no sequence is
//! delivered twice, each symbol's messages come in sequence order whatever
//! the update numbers claim, stale and fresh reports alternate per symbol,
//! and the receiver's own counters agree with what it delivered.
#![no_main]

use std::collections::{HashMap, HashSet};

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tickwire_core::Instant;
use tickwire_core::recovery::{Event, LateJoin, Mode, Order, Receiver, ReceiverConfig};
use tickwire_fuzz::{advance, line, valid_packet};

#[derive(Default)]
struct Checker {
    /// Sequences delivered in this session.
    seen: HashSet<u64>,
    /// Last sequence delivered per symbol in this session.
    last: HashMap<u32, u64>,
    /// Symbols reported stale and not yet fresh.
    stale: HashSet<u32>,
    delivered: u64,
    in_snapshot: bool,
}

impl Checker {
    fn on(&mut self, e: &Event) {
        match *e {
            Event::Message { seq, msg, .. } => {
                assert!(!self.in_snapshot, "message {seq:?} inside a snapshot");
                assert!(self.seen.insert(seq.0), "{seq:?} delivered twice");
                if let Some(sym) = msg.symbol() {
                    let last = self.last.entry(sym).or_insert(0);
                    assert!(seq.0 > *last, "symbol {sym}: {seq:?} after {last}");
                    *last = seq.0;
                }
                self.delivered += 1;
            }
            Event::EpochChanged { .. } => {
                self.seen.clear();
                self.last.clear();
                self.stale.clear();
            }
            Event::SnapshotStart { .. } => self.in_snapshot = true,
            Event::SymbolState(_) => assert!(self.in_snapshot, "SymbolState outside a snapshot"),
            Event::SnapshotEnd { .. } => {
                assert!(self.in_snapshot, "SnapshotEnd without SnapshotStart");
                self.in_snapshot = false;
            }
            Event::SymbolStale { symbol, .. } => {
                self.stale.insert(symbol);
            }
            Event::SymbolFresh { symbol, .. } => {
                assert!(self.stale.remove(&symbol), "symbol {symbol} fresh but not stale");
            }
            Event::Unrecoverable { .. } | Event::Reconnect | Event::EndOfSession { .. } => {}
        }
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let flags: u8 = u.arbitrary()?;
    let late_join = if flags & 1 == 0 { LateJoin::Snapshot } else { LateJoin::FromFirstSeen };
    let mut rx = Receiver::new(ReceiverConfig {
        mode: Mode::Datagram,
        late_join,
        order: Order::PerSymbol,
        seed: u64::from(flags >> 1),
        // Small, so the window slides (and overflows into snapshots) often.
        max_buffered: 64,
        confirm_claims: flags & 2 == 0,
        ..Default::default()
    });
    let mut check = Checker::default();
    let mut now = 1_000_000u64;
    let mut tx = vec![0u8; 2048];
    let mut ops = 0;
    while !u.is_empty() && ops < 256 {
        ops += 1;
        now = advance(u, now)?;
        let line = line(u)?;
        match u.int_in_range(0u8..=11)? {
            0 => {
                let n = u.arbitrary_len::<u8>()?.min(2048);
                rx.handle_packet(Instant(now), line, u.bytes(n)?);
            }
            1..=8 => {
                let near = rx.next_expected().0;
                let p = valid_packet(u, near)?;
                rx.handle_packet(Instant(now), line, &p);
            }
            9 | 10 => {
                let t = rx.poll_timeout().unwrap_or(Instant(now));
                now = now.max(t.0);
                rx.handle_timeout(Instant(now));
            }
            _ => while rx.poll_transmit(Instant(now), now, &mut tx).is_some() {},
        }
        while let Some(e) = rx.poll_event() {
            check.on(&e);
        }
        assert_eq!(rx.stale_symbols(), check.stale.len() as u64, "stale count");
    }
    assert_eq!(rx.stats().messages_delivered, check.delivered, "delivered count");
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
