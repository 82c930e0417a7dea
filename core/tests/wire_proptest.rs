//! Property tests of the wire format: every representation survives
//! emit → parse unchanged, and no parser panics on arbitrary bytes (the
//! contract of `wire`: malformed input is an `Err`, never a crash).

use proptest::prelude::*;
use tickwire_core::wire::{
    HEADER_LEN, LoginAck, LoginAckRepr, LoginMode, MAX_PAYLOAD_LEN, MessageIter, MessageKind,
    NackReject, NackRejectRepr, Packet, PacketKind, PacketRepr, SnapshotHeader, SnapshotRepr,
    emit_message, emit_record, frame_len, message_len, parse_message, parse_record,
};
use tickwire_core::{Message, Quote, SeqNo, Side, SymbolState, Trade};

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![
        Just(Side::Buy),
        Just(Side::Sell),
        any::<u8>().prop_filter("not a known side", |b| *b != 1 && *b != 2).prop_map(Side::Unknown),
    ]
}

fn quote() -> impl Strategy<Value = Quote> {
    (
        any::<u32>(),
        any::<i64>(),
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|(symbol, bid_px, ask_px, bid_qty, ask_qty, exch_ts, symbol_seq)| Quote {
            symbol,
            bid_px,
            ask_px,
            bid_qty,
            ask_qty,
            exch_ts,
            symbol_seq,
        })
}

fn trade() -> impl Strategy<Value = Trade> {
    (any::<u32>(), side(), any::<i64>(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(
        |(symbol, side, price, qty, exch_ts, symbol_seq)| Trade {
            symbol,
            side,
            price,
            qty,
            exch_ts,
            symbol_seq,
        },
    )
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![quote().prop_map(Message::Quote), trade().prop_map(Message::Trade)]
}

fn symbol_state() -> impl Strategy<Value = SymbolState> {
    (
        any::<u32>(),
        any::<i64>(),
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
        any::<i64>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(symbol, bid_px, ask_px, bid_qty, ask_qty, last_px, last_qty, updates, last_seq)| {
                SymbolState {
                    symbol,
                    bid_px,
                    ask_px,
                    bid_qty,
                    ask_qty,
                    last_px,
                    last_qty,
                    updates,
                    last_seq,
                }
            },
        )
}

const KNOWN_KINDS: [u8; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 18, 19];

fn packet_kind() -> impl Strategy<Value = PacketKind> {
    any::<u8>().prop_map(PacketKind::from_byte)
}

/// A header with a payload length the receiver accepts (kept small for speed).
fn packet_repr() -> impl Strategy<Value = PacketRepr> {
    (
        packet_kind(),
        any::<u16>(),
        any::<u64>(),
        any::<u64>(),
        any::<u16>(),
        any::<u64>(),
        0usize..2048,
    )
        .prop_map(|(kind, flags, epoch, first_seq, count, send_time, payload_len)| {
            PacketRepr {
                kind,
                flags,
                epoch,
                first_seq: SeqNo(first_seq),
                count,
                send_time,
                payload_len,
            }
        })
}

/// Emit a Data packet holding `msgs`.
fn data_packet(header: &PacketRepr, msgs: &[Message]) -> Vec<u8> {
    let payload_len: usize = msgs.iter().map(message_len).sum();
    let h = PacketRepr { kind: PacketKind::Data, count: msgs.len() as u16, payload_len, ..*header };
    let mut buf = vec![0u8; h.buffer_len()];
    let mut p = Packet::new_unchecked(&mut buf[..]);
    h.emit(&mut p);
    let mut off = 0;
    for m in msgs {
        off += emit_message(m, &mut p.payload_mut()[off..]).expect("fits");
    }
    p.fill_crc();
    buf
}

/// Run every parser over `bytes`; none may panic. Returns nothing: only the
/// absence of a panic is the property (results are consumed so nothing is
/// optimised away).
fn parse_everything(bytes: &[u8], count: u16) {
    let _ = frame_len(bytes);
    let _ = parse_message(bytes);
    let _ = parse_record(bytes);
    let _ = LoginAckRepr::parse(bytes);
    let _ = NackRejectRepr::parse(bytes);
    if let Ok(s) = SnapshotRepr::parse(bytes, count) {
        assert_eq!(s.records().count(), count as usize);
    }
    let _ = MessageIter::validate(bytes, count);
    for m in MessageIter::new(bytes, count) {
        let _ = m;
    }
    if let Ok(p) = Packet::new_checked(bytes) {
        // After check_len, every accessor is safe.
        let _ = (p.magic(), p.version(), p.kind(), p.count(), p.flags(), p.epoch());
        let _ = (p.first_seq(), p.send_time(), p.crc(), p.as_bytes().len());
        assert_eq!(p.payload().len(), p.payload_len());
        assert_eq!(frame_len(bytes), Ok(Some(p.total_len())));
        let _ = p.verify_crc();
        let payload = p.payload();
        let _ = PacketRepr::parse(&p);
        for m in MessageIter::new(payload, p.count()) {
            let _ = m;
        }
        if let Ok(s) = SnapshotRepr::parse(payload, p.count()) {
            assert_eq!(s.records().count(), p.count() as usize);
        }
        let _ = LoginAckRepr::parse(payload);
        let _ = NackRejectRepr::parse(payload);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn quote_round_trip(q in quote()) {
        let m = Message::Quote(q);
        let mut buf = [0u8; 48];
        prop_assert_eq!(emit_message(&m, &mut buf), Some(48));
        prop_assert_eq!(parse_message(&buf).unwrap(), (m, 48));
    }

    #[test]
    fn trade_round_trip(t in trade()) {
        let m = Message::Trade(t);
        let mut buf = [0u8; 32];
        prop_assert_eq!(emit_message(&m, &mut buf), Some(32));
        prop_assert_eq!(parse_message(&buf).unwrap(), (m, 32));
    }

    #[test]
    fn symbol_state_round_trip(s in symbol_state()) {
        let mut buf = [0u8; 56];
        emit_record(&s, &mut buf);
        prop_assert_eq!(parse_record(&buf).unwrap(), s);
    }

    #[test]
    fn snapshot_part_round_trip(
        states in proptest::collection::vec(symbol_state(), 0..20),
        parts in 1u16..8,
        symbols in any::<u32>(),
        part_seed in any::<u16>(),
    ) {
        let part = part_seed % parts;
        let mut payload = vec![0u8; SnapshotRepr::buffer_len(states.len())];
        SnapshotHeader::new_unchecked(&mut payload[..8]).emit(part, parts, symbols);
        for (i, s) in states.iter().enumerate() {
            emit_record(s, &mut payload[8 + 56 * i..]);
        }
        let r = SnapshotRepr::parse(&payload, states.len() as u16).unwrap();
        prop_assert_eq!((r.part, r.parts, r.symbols), (part, parts, symbols));
        prop_assert_eq!(r.records().collect::<Vec<_>>(), states);
    }

    #[test]
    fn control_bodies_round_trip(oldest in any::<u64>(), next in any::<u64>(), mode in any::<u8>()) {
        let mut b = [0u8; 16];
        let ack = LoginAckRepr { oldest: SeqNo(oldest), mode: LoginMode::from_byte(mode) };
        LoginAck::new_unchecked(&mut b[..]).emit(&ack);
        prop_assert_eq!(LoginAckRepr::parse(&b).unwrap(), ack);
        let rej = NackRejectRepr { oldest: SeqNo(oldest), next: SeqNo(next) };
        NackReject::new_unchecked(&mut b[..]).emit(&rej);
        prop_assert_eq!(NackRejectRepr::parse(&b).unwrap(), rej);
    }

    /// Header emit → parse gives the same values, for any kind (known or not),
    /// with any payload bytes; the CRC verifies and flipping any bit breaks it.
    #[test]
    fn packet_repr_round_trip(
        h in packet_repr(),
        fill in any::<u8>(),
        flip in any::<proptest::sample::Index>(),
    ) {
        let mut buf = vec![fill; h.buffer_len()];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        h.emit(&mut p);
        p.fill_crc();
        let p = Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(PacketRepr::parse(&p).unwrap(), h);
        prop_assert_eq!(frame_len(&buf), Ok(Some(h.buffer_len())));
        // Any single-bit error is detected (by check_len or the CRC).
        let i = flip.index(buf.len() * 8);
        let mut bad = buf.clone();
        bad[i / 8] ^= 1 << (i % 8);
        let detected = Packet::new_checked(&bad[..]).and_then(|p| PacketRepr::parse(&p)).is_err();
        prop_assert!(detected, "bit {} flipped unnoticed", i);
    }

    #[test]
    fn kind_bytes_round_trip(b in any::<u8>()) {
        prop_assert_eq!(PacketKind::from_byte(b).to_byte(), b);
        prop_assert_eq!(Side::from_byte(b).to_byte(), b);
        prop_assert_eq!(MessageKind::from_byte(b).to_byte(), b);
        prop_assert_eq!(LoginMode::from_byte(b).to_byte(), b);
        prop_assert_eq!(
            matches!(PacketKind::from_byte(b), PacketKind::Unknown(_)),
            !KNOWN_KINDS.contains(&b)
        );
    }

    /// A whole Data packet: header and every message come back in order.
    #[test]
    fn data_packet_round_trip(
        h in packet_repr(),
        msgs in proptest::collection::vec(message(), 0..30),
    ) {
        let buf = data_packet(&h, &msgs);
        let p = Packet::new_checked(&buf[..]).unwrap();
        let r = PacketRepr::parse(&p).unwrap();
        prop_assert_eq!(r.kind, PacketKind::Data);
        prop_assert_eq!((r.epoch, r.first_seq, r.flags, r.send_time), (h.epoch, h.first_seq, h.flags, h.send_time));
        let got: Vec<Message> = MessageIter::new(p.payload(), r.count).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, msgs);
    }

    /// Arbitrary bytes never panic a parser.
    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        count in any::<u16>(),
    ) {
        parse_everything(&bytes, count);
    }

    /// Bytes that pass the framing checks (right magic and version, a sane
    /// length) but are otherwise random reach the deeper parsers.
    #[test]
    fn framed_random_bytes_never_panic(
        mut bytes in proptest::collection::vec(any::<u8>(), HEADER_LEN..600),
        count in any::<u16>(),
        fix_crc in any::<bool>(),
    ) {
        bytes[0..2].copy_from_slice(&0x5754u16.to_le_bytes());
        bytes[2] = 1;
        let payload = (bytes.len() - HEADER_LEN) as u32;
        bytes[32..36].copy_from_slice(&payload.to_le_bytes());
        if fix_crc {
            let mut p = Packet::new_unchecked(&mut bytes[..]);
            p.fill_crc();
        }
        parse_everything(&bytes, count);
        // And any absurd payload length is refused, not trusted.
        bytes[32..36].copy_from_slice(&((MAX_PAYLOAD_LEN + 1) as u32).to_le_bytes());
        prop_assert!(Packet::new_checked(&bytes[..]).is_err());
        prop_assert!(frame_len(&bytes).is_err());
    }

    /// Valid Data packets with random byte corruptions never panic, and a
    /// corrupted packet that still parses has the right CRC for its bytes.
    #[test]
    fn corrupted_packets_never_panic(
        h in packet_repr(),
        msgs in proptest::collection::vec(message(), 1..10),
        edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        count in any::<u16>(),
    ) {
        let mut buf = data_packet(&h, &msgs);
        for (i, v) in edits {
            let at = i.index(buf.len());
            buf[at] = v;
        }
        parse_everything(&buf, count);
        if let Ok(p) = Packet::new_checked(&buf[..])
            && PacketRepr::parse(&p).is_ok()
        {
            prop_assert_eq!(p.compute_crc(), p.crc());
        }
    }
}
