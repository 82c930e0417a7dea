//! Helpers shared by the fuzz targets: building well-formed packets (valid
//! CRC) from fuzzed fields, so that a good fraction of inputs gets past the
//! header and CRC checks into the handlers.

use arbitrary::{Result, Unstructured};
use tickwire_core::wire::{
    FLAG_TIMING, HEADER_LEN, MAX_PACKET_LEN, PacketKind, PacketRepr, SnapshotHeader,
    SnapshotRecord, TIMING_LEN, emit_message, emit_record, message_len,
};
use tickwire_core::{Line, Message, Quote, SeqNo, Side, SymbolState, Trade};

/// The clock after one fuzzed step from `now` (ns): none, up to 65 µs, up
/// to 255 ms, or up to ~19 hours.
pub fn advance(u: &mut Unstructured, now: u64) -> Result<u64> {
    Ok(now.saturating_add(match u.int_in_range(0u8..=3)? {
        0 => 0,
        1 => u64::from(u.arbitrary::<u16>()?),
        2 => u64::from(u.arbitrary::<u8>()?) * 1_000_000,
        _ => u64::from(u.arbitrary::<u32>()?) * 16,
    }))
}

/// The line a fuzzed packet comes on.
pub fn line(u: &mut Unstructured) -> Result<Line> {
    Ok(match u.int_in_range(0u8..=2)? {
        0 => Line::A,
        1 => Line::B,
        _ => Line::Unicast,
    })
}

/// The epoch the targets' publishers and most built packets use.
pub const EPOCH: u64 = 0xE90C;
/// A second epoch, to exercise epoch changes.
pub const EPOCH2: u64 = 0xE90D;

/// A fuzzed message over a few symbols (so states and updates collide).
pub fn message(u: &mut Unstructured) -> Result<Message> {
    let symbol = u32::from(u.int_in_range(0u8..=7)?);
    Ok(if u.arbitrary::<bool>()? {
        Message::Quote(Quote {
            symbol: if u.ratio(1, 16)? { u.arbitrary()? } else { symbol },
            bid_px: u.arbitrary()?,
            ask_px: u.arbitrary()?,
            bid_qty: u.arbitrary()?,
            ask_qty: u.arbitrary()?,
            exch_ts: u.arbitrary()?,
            // Mostly small update numbers, so per-symbol order sees some
            // that follow, some that jump and some that repeat.
            symbol_seq: if u.ratio(7, 8)? { u.int_in_range(1..=12)? } else { u.arbitrary()? },
        })
    } else {
        Message::Trade(Trade {
            symbol: if u.ratio(1, 16)? { u.arbitrary()? } else { symbol },
            side: if u.arbitrary()? { Side::Buy } else { Side::Sell },
            price: u.arbitrary()?,
            qty: u.arbitrary()?,
            exch_ts: u.arbitrary()?,
            symbol_seq: if u.ratio(7, 8)? { u.int_in_range(1..=12)? } else { u.arbitrary()? },
        })
    })
}

/// A fuzzed symbol state.
pub fn symbol_state(u: &mut Unstructured) -> Result<SymbolState> {
    Ok(SymbolState {
        symbol: if u.ratio(1, 16)? { u.arbitrary()? } else { u32::from(u.int_in_range(0u8..=7)?) },
        bid_px: u.arbitrary()?,
        ask_px: u.arbitrary()?,
        bid_qty: u.arbitrary()?,
        ask_qty: u.arbitrary()?,
        last_px: u.arbitrary()?,
        last_qty: u.arbitrary()?,
        updates: u.arbitrary()?,
        last_seq: u.arbitrary()?,
    })
}

/// A header with fuzzed fields; `payload_len` is set by the caller.
pub fn header(u: &mut Unstructured, kind: PacketKind, near: u64) -> Result<PacketRepr> {
    let epoch = match u.int_in_range(0u8..=7)? {
        0 => EPOCH2,
        1 => u.arbitrary()?,
        2 => 0,
        _ => EPOCH,
    };
    Ok(PacketRepr {
        kind,
        flags: if u.ratio(1, 8)? { u.arbitrary()? } else { 0 },
        epoch,
        first_seq: SeqNo(seq_near(u, near)?),
        count: 0,
        send_time: u.arbitrary()?,
        payload_len: 0,
    })
}

/// A sequence number, usually close to `near`.
pub fn seq_near(u: &mut Unstructured, near: u64) -> Result<u64> {
    Ok(match u.int_in_range(0u8..=7)? {
        0 => u.arbitrary()?,
        1 => 0,
        2 => u64::MAX - u64::from(u.arbitrary::<u8>()?),
        _ => near.saturating_add_signed(i64::from(u.arbitrary::<i8>()?)).max(1),
    })
}

/// Write `repr` and `payload` into a packet and fill its CRC.
pub fn finish(repr: &PacketRepr, payload: &[u8]) -> Vec<u8> {
    let repr = PacketRepr { payload_len: payload.len(), ..*repr };
    let mut buf = vec![0u8; repr.buffer_len()];
    buf[HEADER_LEN..].copy_from_slice(payload);
    repr.seal(&mut buf);
    buf
}

/// Payload of a Data/Retransmission packet with `n` fuzzed messages (and a
/// timing block when `timing`). Returns the payload.
pub fn messages_payload(u: &mut Unstructured, n: usize, timing: bool) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if timing {
        let mut t = [0u8; TIMING_LEN];
        u.fill_buffer(&mut t)?;
        out.extend_from_slice(&t);
    }
    for _ in 0..n {
        let m = message(u)?;
        let at = out.len();
        out.resize(at + message_len(&m), 0);
        let _ = emit_message(&m, &mut out[at..]);
    }
    Ok(out)
}

/// A snapshot part payload: header then `n` records.
pub fn snapshot_payload(
    u: &mut Unstructured,
    part: u16,
    parts: u16,
    symbols: u32,
    n: usize,
) -> Result<Vec<u8>> {
    let hl = SnapshotHeader::<&[u8]>::LEN;
    let rl = SnapshotRecord::<&[u8]>::LEN;
    let mut out = vec![0u8; hl + n * rl];
    SnapshotHeader::new_unchecked(&mut out[..hl]).emit(part, parts, symbols);
    for i in 0..n {
        let s = symbol_state(u)?;
        emit_record(&s, &mut out[hl + i * rl..hl + (i + 1) * rl]);
    }
    Ok(out)
}

/// A packet of any kind with fuzzed fields and a valid CRC; `near` is the
/// sequence the receiver expects next, so sequences land near it. Counts and
/// lengths are usually consistent, sometimes off by a fuzzed amount.
pub fn valid_packet(u: &mut Unstructured, near: u64) -> Result<Vec<u8>> {
    let kind = match u.int_in_range(0u8..=12)? {
        11 => PacketKind::Status,
        0..=3 => PacketKind::Data,
        4 => PacketKind::Retransmission,
        5 => PacketKind::Heartbeat,
        6 => PacketKind::EndOfSession,
        7 => PacketKind::Snapshot,
        8 => PacketKind::LoginAck,
        9 => PacketKind::NackReject,
        10 => PacketKind::from_byte(u.arbitrary()?),
        _ => PacketKind::Nack,
    };
    let mut repr = header(u, kind, near)?;
    let payload = match kind {
        PacketKind::Data | PacketKind::Retransmission => {
            let n = usize::from(u.int_in_range(0u8..=12)?);
            let timing = kind == PacketKind::Data && u.arbitrary()?;
            if timing {
                repr.flags |= FLAG_TIMING;
            }
            repr.count = n as u16;
            messages_payload(u, n, timing)?
        }
        PacketKind::Snapshot => {
            let parts = u.int_in_range(1u16..=4)?;
            let part = u.int_in_range(0..=parts - 1)?;
            let n = usize::from(u.int_in_range(0u8..=8)?);
            repr.count = n as u16;
            let symbols = u32::from(u.int_in_range(0u8..=16)?);
            snapshot_payload(u, part, parts, symbols, n)?
        }
        PacketKind::Status => {
            let mut b = [0u8; 32];
            u.fill_buffer(&mut b)?;
            b[24] %= 3; // live, ended, or an unknown state
            b[25..].fill(0);
            b.to_vec()
        }
        PacketKind::LoginAck | PacketKind::NackReject => {
            let mut b = [0u8; 16];
            u.fill_buffer(&mut b)?;
            if kind == PacketKind::LoginAck {
                b[8] %= 3;
                b[9..].fill(0);
            }
            b.to_vec()
        }
        _ => Vec::new(),
    };
    if u.ratio(1, 16)? {
        repr.count = u.arbitrary()?;
    }
    let mut bytes = finish(&repr, &payload);
    debug_assert!(bytes.len() <= MAX_PACKET_LEN && bytes.len() >= HEADER_LEN);
    if u.ratio(1, 32)? {
        // Trailing padding (allowed on datagrams).
        let n = usize::from(u.arbitrary::<u8>()? % 16);
        bytes.extend_from_slice(u.bytes(n)?);
    }
    Ok(bytes)
}
