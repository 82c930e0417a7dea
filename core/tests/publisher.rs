//! Behaviour of `tickwire_core::publisher::Sequencer`: framing, retransmission,
//! window edges, request limits, linger, snapshots, logins, heartbeats, hostile
//! input and allocation in the steady state. Everything is driven by a
//! simulated clock; no test depends on real time.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use tickwire_core::publisher::{
    DEFAULT_LINGER, IgnoreReason, RequestLimits, RequestOutcome, Sequencer, SequencerConfig,
    peer_host,
};
use tickwire_core::wire::{
    DecodeError, FLAG_COOKIE, FLAG_TIMING, HEADER_LEN, LoginAckRepr, LoginMode, MessageIter,
    NackRejectRepr, Packet, PacketKind, PacketRepr, SnapshotRepr, StatusRepr, TOKEN_LEN, Timing,
    emit_token, parse_message, parse_token,
};
use tickwire_core::{Book, Instant, Message, Quote, SeqNo, Side, SymbolState, Trade};

const EPOCH: u64 = 0xE90C;
const MS: u64 = 1_000_000;

// ---------------------------------------------------------------- helpers

/// Message `n` of a test stream: quotes and trades over `symbols` symbols.
fn msg(n: u64, symbols: u32) -> Message {
    let symbol = (n.wrapping_mul(7) % u64::from(symbols)) as u32;
    if n % 3 == 0 {
        Message::Trade(Trade {
            symbol,
            side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
            price: 100_000 + n as i64,
            qty: (n % 97) as u32 + 1,
            exch_ts: n * 10,
            symbol_seq: 0,
        })
    } else {
        Message::Quote(Quote {
            symbol,
            bid_px: 99_000 + n as i64,
            ask_px: 99_100 + n as i64,
            bid_qty: (n % 13) as u32 + 1,
            ask_qty: (n % 17) as u32 + 1,
            exch_ts: n * 10,
            symbol_seq: n,
        })
    }
}

fn config(symbols: u32, window: u64) -> SequencerConfig {
    SequencerConfig { retransmit_window: window, ..SequencerConfig::new(EPOCH, symbols) }
}

fn drain(p: &mut Sequencer) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| p.poll_packet().map(<[u8]>::to_vec)).collect()
}

/// Push messages `1..=n` (message i gets sequence i), flush, drain.
fn publish(p: &mut Sequencer, n: u64, symbols: u32) -> Vec<Vec<u8>> {
    for i in 1..=n {
        assert_eq!(p.push(Instant(i), i, &msg(i, symbols)), SeqNo(i));
    }
    p.flush(Instant(n), n);
    drain(p)
}

fn header(bytes: &[u8]) -> PacketRepr {
    let pkt = Packet::new_checked(bytes).expect("framed");
    PacketRepr::parse(&pkt).expect("valid CRC")
}

/// `(seq, message, raw bytes)` of every message in Data/Retransmission packets.
fn messages_of(packets: &[Vec<u8>]) -> Vec<(SeqNo, Message, Vec<u8>)> {
    let mut out = Vec::new();
    for b in packets {
        let r = header(b);
        assert!(r.kind.carries_messages(), "{:?} carries no messages", r.kind);
        let payload = Packet::new_checked(&b[..]).unwrap().messages().to_vec();
        MessageIter::validate(&payload, r.count).expect("payload matches count");
        let mut rest = &payload[..];
        for i in 0..u64::from(r.count) {
            let (m, len) = parse_message(rest).unwrap();
            out.push((r.first_seq.add(i), m, rest[..len].to_vec()));
            rest = &rest[len..];
        }
    }
    out
}

/// Raw bytes of every published message, by sequence.
fn originals(live: &[Vec<u8>]) -> BTreeMap<u64, Vec<u8>> {
    messages_of(live).into_iter().map(|(s, _, raw)| (s.0, raw)).collect()
}

fn request(kind: PacketKind, epoch: u64, first_seq: u64, count: u16) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    PacketRepr {
        kind,
        flags: 0,
        epoch,
        first_seq: SeqNo(first_seq),
        count,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b
}

fn nack(first_seq: u64, count: u16) -> [u8; HEADER_LEN] {
    request(PacketKind::Nack, EPOCH, first_seq, count)
}

/// The peer id of test requester `n`: host `n`, port 7 (as datagram
/// transports number peers).
fn peer_id(n: u64) -> u64 {
    n.wrapping_shl(16) | 7
}

/// `bytes` with the cookie of `host` added when it is a NACK or snapshot
/// request without one, as a client that has its cookie sends it.
fn with_cookie(p: &Sequencer, host: u64, bytes: &[u8]) -> Vec<u8> {
    let Some(mut r) = Packet::new_checked(bytes).ok().and_then(|pk| PacketRepr::parse(&pk).ok())
    else {
        return bytes.to_vec();
    };
    if !matches!(r.kind, PacketKind::Nack | PacketKind::SnapshotRequest) || r.payload_len != 0 {
        return bytes.to_vec();
    }
    r.flags |= FLAG_COOKIE;
    r.payload_len = TOKEN_LEN;
    let mut b = vec![0u8; HEADER_LEN + TOKEN_LEN];
    emit_token(&mut b[HEADER_LEN..], p.cookie(host));
    let mut pk = Packet::new_unchecked(&mut b[..]);
    r.emit(&mut pk);
    pk.fill_crc();
    b
}

/// A NACK carrying `host`'s cookie, built without allocating.
fn cookie_nack(
    p: &Sequencer,
    host: u64,
    first_seq: u64,
    count: u16,
) -> [u8; HEADER_LEN + TOKEN_LEN] {
    let mut r =
        PacketRepr::parse(&Packet::new_checked(&nack(first_seq, count)[..]).unwrap()).unwrap();
    r.flags |= FLAG_COOKIE;
    r.payload_len = TOKEN_LEN;
    let mut b = [0u8; HEADER_LEN + TOKEN_LEN];
    emit_token(&mut b[HEADER_LEN..], p.cookie(host));
    let mut pk = Packet::new_unchecked(&mut b[..]);
    r.emit(&mut pk);
    pk.fill_crc();
    b
}

/// Requester `peer` (a validated host: its requests carry its cookie) sends `bytes`.
fn call(p: &mut Sequencer, now: u64, peer: u64, bytes: &[u8]) -> (RequestOutcome, Vec<Vec<u8>>) {
    let b = with_cookie(p, peer_host(peer_id(peer)), bytes);
    call_raw(p, now, peer_id(peer), &b)
}

/// `bytes` exactly as given, from peer id `peer`.
fn call_raw(
    p: &mut Sequencer,
    now: u64,
    peer: u64,
    bytes: &[u8],
) -> (RequestOutcome, Vec<Vec<u8>>) {
    let mut replies = Vec::new();
    let out =
        p.handle_request(Instant(now), 7_000 + now, peer, bytes, &mut |r| replies.push(r.to_vec()));
    (out, replies)
}

/// Reassemble Snapshot parts; checks the part headers and returns (at, states).
fn snapshot_of(parts: &[Vec<u8>], expected_symbols: u32) -> (SeqNo, Vec<SymbolState>) {
    let mut at = None;
    let mut states = Vec::new();
    for (i, b) in parts.iter().enumerate() {
        let r = header(b);
        assert_eq!(r.kind, PacketKind::Snapshot);
        assert_eq!(r.epoch, EPOCH);
        assert_eq!(*at.get_or_insert(r.first_seq), r.first_seq, "all parts consistent at one seq");
        let payload = Packet::new_checked(&b[..]).unwrap().messages().to_vec();
        let s = SnapshotRepr::parse(&payload, r.count).unwrap();
        assert_eq!(s.part as usize, i);
        assert_eq!(s.parts as usize, parts.len());
        assert_eq!(s.symbols, expected_symbols);
        states.extend(s.records());
    }
    (at.expect("at least one part"), states)
}

/// The book an independent observer computes from the pushed stream.
fn oracle_book(symbols: u32, upto: u64) -> Book {
    let mut b = Book::new(symbols);
    for i in 1..upto {
        b.apply(i, &msg(i, symbols));
    }
    b
}

// ---------------------------------------------------------------- framing

#[test]
fn framing_round_trips_every_message_within_the_size_limit() {
    for max in [104usize, 200, 1472, 9000] {
        let mut p = Sequencer::new(SequencerConfig { max_packet_len: max, ..config(50, 1 << 14) });
        let n = 5_000;
        let mut live = Vec::new();
        for i in 1..=n {
            assert_eq!(p.push(Instant(i), 1_000 + i, &msg(i, 50)), SeqNo(i));
            live.extend(drain(&mut p));
        }
        p.flush(Instant(n), 1_000 + n);
        live.extend(drain(&mut p));
        let mut expected_first = 1;
        for (k, b) in live.iter().enumerate() {
            assert!(b.len() <= max, "packet of {} bytes over the {max} limit", b.len());
            let r = header(b);
            assert_eq!(
                (r.kind, r.epoch, r.first_seq),
                (PacketKind::Data, EPOCH, SeqNo(expected_first))
            );
            assert!(r.count > 0);
            expected_first += u64::from(r.count);
            // Never flushed early: every packet but the last is as full as it can be.
            if k + 1 < live.len() {
                let next_len = if expected_first % 3 == 0 { 32 } else { 48 };
                assert!(b.len() + next_len > max, "packet {k} ({} B) had room for more", b.len());
            }
        }
        let got = messages_of(&live);
        assert_eq!(got.len() as u64, n);
        for (i, (seq, m, _)) in got.iter().enumerate() {
            assert_eq!(*seq, SeqNo(i as u64 + 1));
            assert_eq!(*m, msg(i as u64 + 1, 50));
        }
        assert_eq!(p.published_next(), SeqNo(n + 1));
        assert_eq!(p.stats().messages, n);
        assert_eq!(p.stats().packets, live.len() as u64);
        assert_eq!(p.stats().bytes, live.iter().map(|b| b.len() as u64).sum::<u64>());
    }
}

#[test]
fn data_header_carries_send_and_due_times_and_flush_seals_partial_packets() {
    let mut p = Sequencer::new(config(8, 64));
    p.push(Instant(1), 111, &msg(1, 8));
    p.push(Instant(2), 222, &msg(2, 8));
    assert_eq!(p.published_next(), SeqNo(1));
    assert!(p.poll_packet().is_none(), "nothing sealed before flush");
    p.flush(Instant(3), 333);
    p.flush(Instant(4), 444); // nothing open: no empty packet
    let mut buf = vec![0u8; 64 * 1024];
    let n = p.poll_transmit(555, &mut buf).expect("one packet");
    assert!(p.poll_transmit(556, &mut buf).is_none());
    let r = header(&buf[..n]);
    // Sent when handed over (555), each message due when it was pushed.
    assert_eq!((r.first_seq, r.count, r.send_time, r.flags), (SeqNo(1), 2, 555, FLAG_TIMING));
    let v = Packet::new_checked(&buf[..n]).unwrap();
    assert_eq!(v.timing(), Some(Timing { first_due: 111, last_due: 222 }));
    assert_eq!(messages_of(&[buf[..n].to_vec()]).len(), 2);
    assert_eq!(p.published_next(), SeqNo(3));
    assert_eq!(p.next_seq(), SeqNo(3));
}

#[test]
fn book_is_the_state_after_every_sealed_message() {
    let mut p = Sequencer::new(config(10, 1024));
    publish(&mut p, 300, 10);
    assert_eq!(p.book(), &oracle_book(10, 301));
    // An unsealed message is not in the book yet.
    p.push(Instant(400), 0, &msg(301, 10));
    assert_eq!(p.book(), &oracle_book(10, 301));
    p.flush(Instant(400), 0);
    assert_eq!(p.book(), &oracle_book(10, 302));
}

// ---------------------------------------------------------------- NACK

#[test]
fn nack_returns_exactly_the_asked_messages_byte_identical() {
    let mut p = Sequencer::new(config(20, 4096));
    let live = publish(&mut p, 2_000, 20);
    let orig = originals(&live);
    for (k, &(s, n)) in [(1u64, 1u16), (1, 37), (500, 300), (1999, 2), (1234, 1)].iter().enumerate()
    {
        let peer = k as u64; // fresh bucket each
        let (out, replies) = call(&mut p, 1_000 * MS, peer, &nack(s, n));
        assert_eq!(out, RequestOutcome::Served);
        for b in &replies {
            let r = header(b);
            assert_eq!(r.kind, PacketKind::Retransmission);
            assert_eq!(r.epoch, EPOCH);
            assert!(b.len() <= 1472);
        }
        let got = messages_of(&replies);
        let seqs: Vec<u64> = got.iter().map(|(s, _, _)| s.0).collect();
        assert_eq!(seqs, (s..s + u64::from(n)).collect::<Vec<_>>());
        for (seq, m, raw) in &got {
            assert_eq!(raw, &orig[&seq.0], "seq {seq} differs from the original bytes");
            assert_eq!(*m, msg(seq.0, 20));
        }
    }
    assert_eq!(p.stats().nacks, 5);
    assert_eq!(p.stats().retransmitted_messages, 1 + 37 + 300 + 2 + 1);
    assert_eq!(p.stats().clipped_requests, 0);
}

#[test]
fn nack_window_edges() {
    // Window 100 over 250 messages: [151, 251) retained.
    let mut p = Sequencer::new(config(5, 100));
    publish(&mut p, 250, 5);
    assert_eq!(p.oldest(), SeqNo(151));

    let (out, replies) = call(&mut p, 0, 1, &nack(151, 1));
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(messages_of(&replies)[0].0, SeqNo(151), "just inside");

    let (out, replies) = call(&mut p, 0, 2, &nack(150, 1));
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(replies.len(), 1, "just outside: one NackReject");
    let r = header(&replies[0]);
    assert_eq!((r.kind, r.first_seq, r.count), (PacketKind::NackReject, SeqNo(150), 1));
    let body = Packet::new_checked(&replies[0][..]).unwrap().payload().to_vec();
    assert_eq!(
        NackRejectRepr::parse(&body).unwrap(),
        NackRejectRepr { oldest: SeqNo(151), next: SeqNo(251) }
    );

    // Straddling the old edge is still a reject: the client must re-plan.
    let (_, replies) = call(&mut p, 0, 3, &nack(140, 20));
    assert_eq!(header(&replies[0]).kind, PacketKind::NackReject);

    let (out, replies) = call(&mut p, 0, 4, &nack(250, 1));
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(messages_of(&replies)[0].0, SeqNo(250), "last published");

    let (out, replies) = call(&mut p, 0, 5, &nack(251, 1));
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::OutOfRange));
    assert!(replies.is_empty());

    // Straddling the new edge: only what exists is sent, never more than asked.
    let (out, replies) = call(&mut p, 0, 6, &nack(249, 10));
    assert_eq!(out, RequestOutcome::Served);
    let seqs: Vec<u64> = messages_of(&replies).iter().map(|m| m.0.0).collect();
    assert_eq!(seqs, vec![249, 250]);

    let s = p.stats();
    assert_eq!((s.nack_rejects, s.out_of_range, s.clipped_requests), (2, 1, 0));
}

#[test]
fn nack_sanity_checks() {
    let mut p = Sequencer::new(config(5, 100));
    publish(&mut p, 10, 5);
    let (out, _) = call(&mut p, 0, 1, &nack(0, 5));
    assert!(matches!(
        out,
        RequestOutcome::Ignored(IgnoreReason::Malformed(DecodeError::Malformed(_)))
    ));
    let (out, _) = call(&mut p, 0, 1, &nack(3, 0));
    assert!(matches!(out, RequestOutcome::Ignored(IgnoreReason::Malformed(_))));
    let (out, r) = call(&mut p, 0, 1, &request(PacketKind::Nack, EPOCH + 1, 3, 1));
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::WrongEpoch));
    assert!(r.is_empty());
    let (out, _) = call(&mut p, 0, 1, &request(PacketKind::Data, EPOCH, 3, 0));
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::NotARequest(PacketKind::Data)));
    // A request with a payload (valid CRC) is malformed.
    let mut with_payload = [0u8; HEADER_LEN + 4];
    let mut pk = Packet::new_unchecked(&mut with_payload[..]);
    PacketRepr {
        kind: PacketKind::Nack,
        flags: 0,
        epoch: EPOCH,
        first_seq: SeqNo(1),
        count: 1,
        send_time: 0,
        payload_len: 4,
    }
    .emit(&mut pk);
    pk.fill_crc();
    let (out, _) = call(&mut p, 0, 1, &with_payload);
    assert!(matches!(out, RequestOutcome::Ignored(IgnoreReason::Malformed(_))));
    // A flipped bit fails the CRC.
    let mut bad = nack(3, 1);
    bad[20] ^= 0x40;
    let (out, _) = call(&mut p, 0, 1, &bad);
    assert!(matches!(
        out,
        RequestOutcome::Ignored(IgnoreReason::Malformed(DecodeError::BadCrc { .. }))
    ));
    let s = p.stats();
    assert_eq!((s.malformed, s.wrong_epoch, s.not_a_request, s.requests), (4, 1, 1, 6));
    assert_eq!(s.reply_packets, 0);
}

#[test]
fn huge_nack_is_clipped_to_the_message_cap() {
    let limits = RequestLimits { max_nack_messages: 50, ..RequestLimits::default() };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(5, 1 << 16) });
    publish(&mut p, 10_000, 5);
    let (out, replies) = call(&mut p, 0, 1, &nack(100, u16::MAX));
    assert_eq!(out, RequestOutcome::Served);
    let seqs: Vec<u64> = messages_of(&replies).iter().map(|m| m.0.0).collect();
    assert_eq!(seqs, (100..150).collect::<Vec<_>>());
    assert_eq!(p.stats().clipped_requests, 1);
}

#[test]
fn huge_nack_is_clipped_to_the_byte_cap() {
    let limits = RequestLimits { max_bytes_per_request: 3_000, ..RequestLimits::default() };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(5, 1 << 16) });
    let orig = originals(&publish(&mut p, 10_000, 5));
    let (out, replies) = call(&mut p, 0, 1, &nack(1, 1000));
    assert_eq!(out, RequestOutcome::Served);
    let total: usize = replies.iter().map(Vec::len).sum();
    assert!(total <= 3_000, "{total} reply bytes over the 3000-byte cap");
    assert!(total > 3_000 - 2 * 1472, "cap used, not wasted: {total}");
    let got = messages_of(&replies);
    for (i, (seq, _, raw)) in got.iter().enumerate() {
        assert_eq!(seq.0, i as u64 + 1, "a prefix of the range");
        assert_eq!(raw, &orig[&seq.0]);
    }
    assert_eq!(p.stats().clipped_requests, 1);
    // The client re-NACKs the rest and gets the continuation.
    let rest = got.len() as u64 + 1;
    let (_, replies) = call(&mut p, 1_000 * MS, 1, &nack(rest, 5));
    assert_eq!(messages_of(&replies)[0].0, SeqNo(rest));
}

#[test]
fn flood_from_one_peer_stays_within_its_bucket_and_others_are_served() {
    let limits = RequestLimits {
        rate_bytes_per_sec: 100_000,
        burst_bytes: 20_000,
        max_bytes_per_request: 8_000,
        ..RequestLimits::default()
    };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(5, 1 << 16) });
    publish(&mut p, 50_000, 5);
    let mut rng = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let attacker = 666;
    let step = 100_000; // 100 µs
    let requests = 10_000u64;
    let mut reply_bytes = 0usize;
    let mut garbage = 0u64;
    for i in 0..requests {
        let now = 1_000 * MS + i * step;
        let mut bytes = match i % 4 {
            0 => nack(10, 500).to_vec(), // the same request over and over
            1 => nack(1 + next() % 49_000, 1000).to_vec(), // distinct large requests
            2 => nack(1 + next() % 10, u16::MAX).to_vec(), // huge ranges
            _ => (0..(next() % 100) as usize).map(|_| next() as u8).collect(), // garbage
        };
        if i % 4 == 3 {
            garbage += 1;
            if bytes.len() >= 2 {
                bytes[0] = 0; // never accidentally a valid packet
            }
        }
        let (_, replies) = call(&mut p, now, attacker, &bytes);
        reply_bytes += replies.iter().map(Vec::len).sum::<usize>();
    }
    let elapsed_s = (requests * step) as f64 / 1e9;
    let bound = 20_000.0 + 100_000.0 * elapsed_s;
    assert!(reply_bytes as f64 <= bound, "{reply_bytes} reply bytes over the bucket bound {bound}");
    assert!(reply_bytes as f64 >= 0.8 * 100_000.0 * elapsed_s, "the bucket is used: {reply_bytes}");
    let s = p.stats().clone();
    assert_eq!(s.malformed, garbage);
    // The same request every 400 µs is past the 100 µs linger: the bucket,
    // not the linger, bounds it.
    assert!(s.rate_limited > 0, "{s:?}");
    assert_eq!(s.reply_bytes as usize, reply_bytes);

    // Another peer is unaffected.
    let now = 1_000 * MS + requests * step;
    let (out, replies) = call(&mut p, now, 7, &nack(42, 3));
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(messages_of(&replies).iter().map(|m| m.0.0).collect::<Vec<_>>(), vec![42, 43, 44]);
}

#[test]
fn linger_serves_an_identical_request_once() {
    let mut p = Sequencer::new(config(5, 1024));
    publish(&mut p, 100, 5);
    let t0 = 50 * MS;
    let linger = DEFAULT_LINGER.as_nanos() as u64;
    assert_eq!(call(&mut p, t0, 1, &nack(10, 5)).0, RequestOutcome::Served);
    // A copy of it (duplicated on the path) inside the linger: nothing.
    let (out, r) = call(&mut p, t0 + linger - 1, 1, &nack(10, 5));
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::Duplicate));
    assert!(r.is_empty());
    // Other range, other peer: not duplicates.
    assert_eq!(call(&mut p, t0 + 10_000, 1, &nack(10, 6)).0, RequestOutcome::Served);
    assert_eq!(call(&mut p, t0 + 10_000, 2, &nack(10, 5)).0, RequestOutcome::Served);
    // After the linger the same request is served again: a retry from a
    // receiver timing it from the round trip (200 µs at the least: its
    // answer was lost) ...
    assert_eq!(call(&mut p, t0 + 200_000, 1, &nack(10, 5)).0, RequestOutcome::Served);
    // ... and one from a receiver with the fixed 4 ms first retry.
    assert_eq!(call(&mut p, t0 + 4 * MS, 1, &nack(10, 5)).0, RequestOutcome::Served);
    assert_eq!(p.stats().duplicates, 1);
}

#[test]
fn forget_and_evict_reset_peer_state() {
    let limits = RequestLimits { max_peers_tracked: 2, ..RequestLimits::default() };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(5, 1024) });
    publish(&mut p, 100, 5);
    assert_eq!(call(&mut p, 0, 1, &nack(10, 5)).0, RequestOutcome::Served);
    p.forget_peer(peer_id(1));
    assert_eq!(p.peers_tracked(), 0);
    assert_eq!(call(&mut p, 0, 1, &nack(10, 5)).0, RequestOutcome::Served, "linger forgotten");
    call(&mut p, MS, 2, &nack(1, 1));
    call(&mut p, 2 * MS, 3, &nack(1, 1)); // evicts peer 1 (least recently seen)
    assert_eq!(p.peers_tracked(), 2);
    assert_eq!(p.stats().peers_evicted, 1);
}

// ---------------------------------------------------------------- snapshots

#[test]
fn snapshot_parts_reassemble_to_the_book_at_published_next() {
    let symbols = 60; // 25 records per 1472-byte part: 3 parts
    let mut p = Sequencer::new(config(symbols, 1024));
    publish(&mut p, 1_000, symbols);
    p.push(Instant(0), 0, &msg(1_001, symbols)); // open, unsealed: not in the snapshot
    let (out, parts) = call(&mut p, 0, 9, &request(PacketKind::SnapshotRequest, EPOCH, 0, 0));
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(parts.len(), 3);
    assert!(parts.iter().all(|b| b.len() <= 1472));
    let (at, states) = snapshot_of(&parts, symbols);
    assert_eq!(at, SeqNo(1_001));
    assert_eq!(at, p.published_next());
    assert_eq!(states, p.book().states());
    assert_eq!(states, oracle_book(symbols, 1_001).states());
    assert_eq!(p.stats().snapshots_served, 1);
    assert_eq!(p.stats().snapshot_packets, 3);
    assert_eq!(parts.iter().map(Vec::len).sum::<usize>(), p.snapshot_bytes());
}

#[test]
fn snapshot_of_an_empty_universe_is_one_empty_part() {
    let mut p = Sequencer::new(config(0, 16));
    let (out, parts) = call(&mut p, 0, 9, &request(PacketKind::SnapshotRequest, 0, 0, 0));
    assert_eq!(out, RequestOutcome::Served);
    let (at, states) = snapshot_of(&parts, 0);
    assert_eq!((at, states.len()), (SeqNo(1), 0));
}

#[test]
fn snapshot_requests_are_limited_per_peer() {
    let mut p = Sequencer::new(config(30, 1024));
    publish(&mut p, 100, 30);
    let snap = request(PacketKind::SnapshotRequest, EPOCH, 0, 0);
    let t0 = 10_000 * MS;
    let limit = RequestLimits::default().snapshot_min_interval.as_nanos() as u64;
    assert!(limit > 2 * MS, "the test needs room between linger and the limit");
    assert_eq!(call(&mut p, t0, 1, &snap).0, RequestOutcome::Served);
    assert_eq!(
        call(&mut p, t0 + 10_000, 1, &snap).0,
        RequestOutcome::Ignored(IgnoreReason::Duplicate)
    );
    assert_eq!(
        call(&mut p, t0 + MS, 1, &snap).0,
        RequestOutcome::Ignored(IgnoreReason::RateLimited)
    );
    assert_eq!(
        call(&mut p, t0 + limit - MS, 1, &snap).0,
        RequestOutcome::Ignored(IgnoreReason::RateLimited)
    );
    assert_eq!(call(&mut p, t0 + limit - MS, 2, &snap).0, RequestOutcome::Served, "other peer");
    assert_eq!(call(&mut p, t0 + limit, 1, &snap).0, RequestOutcome::Served);
    assert_eq!(
        call(&mut p, t0, 3, &request(PacketKind::SnapshotRequest, EPOCH + 1, 0, 0)).0,
        RequestOutcome::Ignored(IgnoreReason::WrongEpoch)
    );
}

#[test]
fn a_snapshot_larger_than_the_burst_is_sent_whole_then_repaid() {
    let symbols = 500; // 20 parts, 28 960 bytes
    let limits = RequestLimits {
        rate_bytes_per_sec: 10_000,
        burst_bytes: 4_096,
        snapshot_min_interval: Duration::ZERO,
        ..RequestLimits::default()
    };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(symbols, 1024) });
    publish(&mut p, 2_000, symbols);
    let total = p.snapshot_bytes();
    assert_eq!(total, 20 * 48 + 500 * 56);
    let snap = request(PacketKind::SnapshotRequest, EPOCH, 0, 0);
    let (out, parts) = call(&mut p, 0, 1, &snap);
    assert_eq!(out, RequestOutcome::Served);
    let (_, states) = snapshot_of(&parts, symbols);
    assert_eq!(states, p.book().states(), "all parts, never half");
    // In debt by total - burst: nothing until repaid at 10 kB/s.
    let debt_s = (total - 4_096) as f64 / 10_000.0;
    let just_before = ((debt_s - 0.01) * 1e9) as u64;
    let (out, r) = call(&mut p, just_before, 1, &nack(5, 1));
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::RateLimited));
    assert!(r.is_empty());
    let (out, r) = call(&mut p, just_before + 20 * MS, 1, &snap);
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::RateLimited), "not half a snapshot");
    assert!(r.is_empty());
    let refilled = ((debt_s + 4_096.0 / 10_000.0) * 1e9) as u64 + MS;
    let (out, parts) = call(&mut p, refilled, 1, &snap);
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(parts.len(), 20);
}

// ---------------------------------------------------------------- login

fn login(epoch: u64, first_seq: u64) -> [u8; HEADER_LEN] {
    request(PacketKind::Login, epoch, first_seq, 0)
}

fn login_ack(b: &[u8]) -> (SeqNo, LoginAckRepr) {
    let r = header(b);
    assert_eq!((r.kind, r.epoch), (PacketKind::LoginAck, EPOCH));
    let body = Packet::new_checked(b).unwrap().payload().to_vec();
    (r.first_seq, LoginAckRepr::parse(&body).unwrap())
}

#[test]
fn login_in_window_resumes_and_the_live_stream_continues_seamlessly() {
    let limits = RequestLimits {
        max_nack_messages: 10,
        max_bytes_per_request: 1472,
        ..RequestLimits::default()
    };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(8, 1000) });
    let orig = originals(&publish(&mut p, 700, 8));
    let (out, replies) = call(&mut p, 0, 1, &login(EPOCH, 40));
    assert_eq!(
        out,
        RequestOutcome::LoginAccepted { mode: LoginMode::Resume, resume_from: SeqNo(40) }
    );
    let (at, ack) = login_ack(&replies[0]);
    assert_eq!((at, ack.oldest, ack.mode), (SeqNo(40), SeqNo(1), LoginMode::Resume));
    // Not subject to the NACK caps: all of [40, 701).
    assert_eq!(header(&replies[1]).kind, PacketKind::Status, "the instance follows the ack");
    let got = messages_of(&replies[2..]);
    assert_eq!(got.len(), 661);
    for (i, (seq, _, raw)) in got.iter().enumerate() {
        assert_eq!(seq.0, 40 + i as u64);
        assert_eq!(raw, &orig[&seq.0]);
    }
    // The next live packet starts exactly where the catch-up ended.
    p.push(Instant(0), 0, &msg(701, 8));
    p.flush(Instant(0), 0);
    let live = drain(&mut p);
    assert_eq!(header(&live[0]).first_seq, SeqNo(701));
    let s = p.stats();
    assert_eq!((s.logins, s.login_resumes, s.login_snapshots), (1, 1, 0));
}

#[test]
fn login_at_published_next_is_an_ack_alone() {
    let mut p = Sequencer::new(config(8, 1000));
    publish(&mut p, 50, 8);
    let (out, replies) = call(&mut p, 0, 1, &login(EPOCH, 51));
    assert_eq!(
        out,
        RequestOutcome::LoginAccepted { mode: LoginMode::Resume, resume_from: SeqNo(51) }
    );
    // The LoginAck, then the Status naming this server instance (§ 9).
    assert_eq!(replies.len(), 2);
    let st = header(&replies[1]);
    assert_eq!((st.kind, st.epoch, st.first_seq), (PacketKind::Status, EPOCH, SeqNo(51)));
    let body = StatusRepr::parse(Packet::new_checked(&replies[1][..]).unwrap().payload()).unwrap();
    assert_eq!(body, StatusRepr { cookie: 0, echo: 0, instance: p.instance(), ended: false });
    // A restart (another secret), with the same epoch: another instance.
    let q = Sequencer::new(SequencerConfig { secret: [7; 32], ..config(8, 1000) });
    assert_ne!(q.instance(), p.instance());
}

#[test]
fn fresh_login_resumes_from_one_while_nothing_was_lost() {
    let mut p = Sequencer::new(config(8, 100));
    publish(&mut p, 100, 8);
    for first in [0, 1] {
        let (out, replies) = call(&mut p, 0, 10 + first, &login(0, first));
        assert_eq!(
            out,
            RequestOutcome::LoginAccepted { mode: LoginMode::Resume, resume_from: SeqNo(1) }
        );
        assert_eq!(messages_of(&replies[2..]).len(), 100);
    }
    // One more message and sequence 1 has left the window: a snapshot.
    publish_more(&mut p, 101, 8);
    let (out, _) = call(&mut p, 0, 20, &login(0, 0));
    assert_eq!(
        out,
        RequestOutcome::LoginAccepted { mode: LoginMode::Snapshot, resume_from: SeqNo(102) }
    );
}

fn publish_more(p: &mut Sequencer, seq: u64, symbols: u32) {
    assert_eq!(p.push(Instant(seq), seq, &msg(seq, symbols)), SeqNo(seq));
    p.flush(Instant(seq), seq);
    drain(p);
}

#[test]
fn login_falls_back_to_a_snapshot_when_it_cannot_resume() {
    let symbols = 40;
    let mut p = Sequencer::new(config(symbols, 50));
    publish(&mut p, 200, symbols);
    assert_eq!(p.oldest(), SeqNo(151));
    let cases = [
        ("too old", login(EPOCH, 150)),
        ("other epoch", login(EPOCH + 1, 180)),
        ("future", login(EPOCH, 202)),
        ("new client after loss", login(0, 0)),
    ];
    for (peer, (what, bytes)) in cases.iter().enumerate() {
        let (out, replies) = call(&mut p, 0, peer as u64, bytes);
        assert_eq!(
            out,
            RequestOutcome::LoginAccepted { mode: LoginMode::Snapshot, resume_from: SeqNo(201) },
            "{what}"
        );
        let (at, ack) = login_ack(&replies[0]);
        assert_eq!(
            (at, ack.oldest, ack.mode),
            (SeqNo(201), SeqNo(151), LoginMode::Snapshot),
            "{what}"
        );
        let (snap_at, states) = snapshot_of(&replies[2..], symbols);
        assert_eq!(snap_at, SeqNo(201), "{what}");
        assert_eq!(states, oracle_book(symbols, 201).states(), "{what}");
    }
    // The edges that do resume.
    let (out, _) = call(&mut p, 0, 10, &login(EPOCH, 151));
    assert_eq!(
        out,
        RequestOutcome::LoginAccepted { mode: LoginMode::Resume, resume_from: SeqNo(151) }
    );
    let (out, _) = call(&mut p, 0, 11, &login(EPOCH, 201));
    assert_eq!(
        out,
        RequestOutcome::LoginAccepted { mode: LoginMode::Resume, resume_from: SeqNo(201) }
    );
    assert_eq!(p.stats().login_snapshots, 4);
    assert_eq!(p.stats().login_resumes, 2);
}

#[test]
fn logins_can_be_refused_on_datagram_transports() {
    let mut p = Sequencer::new(SequencerConfig { serve_logins: false, ..config(8, 100) });
    publish(&mut p, 10, 8);
    let (out, replies) = call(&mut p, 0, 1, &login(EPOCH, 1));
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::NotARequest(PacketKind::Login)));
    assert!(replies.is_empty());
    assert_eq!((p.stats().not_a_request, p.stats().logins), (1, 0));
    assert_eq!(call(&mut p, 0, 1, &nack(1, 1)).0, RequestOutcome::Served, "NACKs still served");
}

// ------------------------------------------------------ address validation

/// The Status among `replies` (exactly one, alone).
fn only_status(replies: &[Vec<u8>]) -> (PacketRepr, StatusRepr) {
    assert_eq!(replies.len(), 1, "a Status alone");
    let pk = Packet::new_checked(&replies[0][..]).unwrap();
    let r = PacketRepr::parse(&pk).unwrap();
    assert_eq!(r.kind, PacketKind::Status);
    (r, StatusRepr::parse(pk.payload()).unwrap())
}

fn probe(nonce: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + TOKEN_LEN];
    emit_token(&mut b[HEADER_LEN..], nonce);
    let mut pk = Packet::new_unchecked(&mut b[..]);
    PacketRepr {
        kind: PacketKind::Probe,
        flags: 0,
        epoch: EPOCH,
        first_seq: SeqNo(1),
        count: 0,
        send_time: 0,
        payload_len: TOKEN_LEN,
    }
    .emit(&mut pk);
    pk.fill_crc();
    b
}

#[test]
fn an_unvalidated_host_gets_its_cookie_and_nothing_else_until_it_echoes_it() {
    let mut p = Sequencer::new(config(1_000, 1 << 12));
    publish(&mut p, 2_000, 1_000);
    let who = peer_id(0x0A00_0001);
    let host = peer_host(who);
    // A 40-byte NACK of 1,000 messages and a 40-byte SnapshotRequest: each
    // draws a 72-byte Status, never the 40 KB or 58 KB they ask for.
    let big = nack(1, 1_000);
    let snap = request(PacketKind::SnapshotRequest, EPOCH, 0, 0);
    for req in [&big[..], &snap[..]] {
        let (out, replies) = call_raw(&mut p, 0, who, req);
        assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::Unvalidated));
        let (r, st) = only_status(&replies);
        assert!(replies[0].len() <= 3 * req.len(), "{} bytes for {}", replies[0].len(), req.len());
        assert_eq!((r.epoch, r.first_seq, st.echo, st.ended), (EPOCH, SeqNo(2_001), 0, false));
        assert_eq!(st.cookie, p.cookie(host));
    }
    assert_eq!((p.stats().unvalidated, p.stats().statuses, p.stats().bad_cookies), (2, 2, 0));
    assert_eq!((p.stats().retransmitted_messages, p.stats().snapshots_served), (0, 0));
    // Echoing the cookie, from any port of that host, is served in full.
    let other_port = (who & !0xffff) | 40_000;
    let req = with_cookie(&p, host, &nack(1, 100));
    let (out, replies) = call_raw(&mut p, MS, other_port, &req);
    assert_eq!(out, RequestOutcome::Served);
    assert_eq!(messages_of(&replies).len(), 100);
}

#[test]
fn a_wrong_cookie_is_counted_and_served_nothing() {
    let mut p = Sequencer::new(config(8, 64));
    publish(&mut p, 50, 8);
    let (a, b) = (peer_id(1), peer_id(2));
    // Host 2's cookie does not validate host 1, nor does another server's.
    let other = Sequencer::new(SequencerConfig { secret: [9; 32], ..config(8, 64) });
    for cookie in [p.cookie(peer_host(b)), other.cookie(peer_host(a)), 0x1234] {
        let mut req = with_cookie(&p, peer_host(a), &nack(1, 5));
        emit_token(&mut req[HEADER_LEN..], cookie);
        let mut pk = Packet::new_unchecked(&mut req[..]);
        pk.fill_crc();
        let (out, replies) = call_raw(&mut p, 0, a, &req);
        assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::Unvalidated));
        only_status(&replies);
    }
    assert_eq!((p.stats().bad_cookies, p.stats().unvalidated), (3, 3));
    assert_ne!(p.instance(), other.instance());
}

#[test]
fn a_flood_from_many_ports_of_one_host_shares_one_budget() {
    // Each port alone could draw far more than the host is allowed.
    let limits = RequestLimits {
        rate_bytes_per_sec: 1_000_000,
        burst_bytes: 200_000,
        host_rate_bytes_per_sec: 100_000,
        host_burst_bytes: 20_000,
        linger: Duration::ZERO,
        ..RequestLimits::default()
    };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(16, 1 << 12) });
    publish(&mut p, 3_000, 16);
    let host = 0x0A00_0002u64;
    let mut bytes = 0usize;
    // 16 source ports, 1,600 NACKs over 100 ms.
    for k in 0..1_600u64 {
        let who = (host << 16) | (10_000 + k % 16);
        let req = with_cookie(&p, host, &nack(1 + (k * 7) % 2_000, 50));
        let (_, replies) = call_raw(&mut p, k * MS / 16, who, &req);
        bytes += replies.iter().map(Vec::len).sum::<usize>();
    }
    // At most the burst plus 100 ms of refill, however many ports.
    assert!(bytes <= 20_000 + 10_000 + 1_472, "{bytes} bytes");
    assert!(p.stats().rate_limited > 1_000);
    assert_eq!(p.stats().host_limited, p.stats().rate_limited, "{:?}", p.stats());
    // Another host is served.
    let (out, _) = call(&mut p, 100 * MS, 0x0B00_0001, &nack(1, 5));
    assert_eq!(out, RequestOutcome::Served);
}

/// Several feed handlers on one host (one port each) recover independently:
/// the same NACK from two of them inside the linger window, and a snapshot
/// for each inside the snapshot interval, are all served.
#[test]
fn clients_sharing_a_host_do_not_suppress_each_other() {
    let mut p = Sequencer::new(config(16, 1 << 12));
    publish(&mut p, 500, 16);
    let host = 0x0A00_0003u64;
    let (a, b) = ((host << 16) | 4_001, (host << 16) | 4_002);
    let asked = with_cookie(&p, host, &nack(10, 20));
    for who in [a, b] {
        let (out, replies) = call_raw(&mut p, 0, who, &asked);
        assert_eq!(out, RequestOutcome::Served);
        let got: Vec<u64> = messages_of(&replies).iter().map(|m| m.0.0).collect();
        assert_eq!(got, (10..30).collect::<Vec<_>>());
    }
    let (out, _) = call_raw(&mut p, 10_000, a, &asked);
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::Duplicate), "linger holds per peer");
    let snap = with_cookie(&p, host, &request(PacketKind::SnapshotRequest, EPOCH, 0, 0));
    for who in [a, b] {
        let (out, parts) = call_raw(&mut p, 2 * MS, who, &snap);
        assert_eq!(out, RequestOutcome::Served);
        assert_eq!(snapshot_of(&parts, 16).1, oracle_book(16, 501).states());
    }
}

/// The global budget caps what the service sends in total, however many
/// validated hosts ask, and each refusal it causes is counted as such.
#[test]
fn the_global_budget_caps_all_replies_together() {
    let limits = RequestLimits {
        global_rate_bytes_per_sec: 200_000,
        global_burst_bytes: 30_000,
        linger: Duration::ZERO,
        ..RequestLimits::default()
    };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(16, 1 << 12) });
    publish(&mut p, 3_000, 16);
    let mut bytes = 0usize;
    // 200 hosts, 2,000 NACKs over 100 ms: each host's own budget would allow
    // them all.
    for k in 0..2_000u64 {
        let (_, replies) = call(&mut p, k * MS / 20, 100 + k % 200, &nack(1 + (k * 7) % 2_000, 50));
        bytes += replies.iter().map(Vec::len).sum::<usize>();
    }
    assert!(bytes <= 30_000 + 20_000 + 1_472, "{bytes} bytes");
    assert!(p.stats().global_limited > 1_000, "{:?}", p.stats());
    assert_eq!(p.stats().global_limited, p.stats().rate_limited);
}

#[test]
fn a_probe_is_answered_with_the_session_status() {
    let mut p = Sequencer::new(config(8, 64));
    publish(&mut p, 30, 8);
    let who = peer_id(5);
    let (out, replies) = call_raw(&mut p, 0, who, &probe(0xABCD));
    assert_eq!(out, RequestOutcome::Served);
    let (r, st) = only_status(&replies);
    assert_eq!((r.epoch, r.first_seq, st.echo, st.ended), (EPOCH, SeqNo(31), 0xABCD, false));
    assert_eq!((st.cookie, st.instance), (p.cookie(peer_host(who)), p.instance()));
    assert!(replies[0].len() <= 3 * probe(1).len());
    p.end_session(Instant(0), 0);
    drain(&mut p);
    let (_, replies) = call_raw(&mut p, MS, who, &probe(7));
    let (r, st) = only_status(&replies);
    assert_eq!((r.first_seq, st.echo, st.ended), (SeqNo(31), 7, true));
    assert_eq!(p.stats().probes, 2);
    // A Probe must carry its nonce.
    let bare = request(PacketKind::Probe, EPOCH, 1, 0);
    assert!(matches!(
        call_raw(&mut p, MS, who, &bare).0,
        RequestOutcome::Ignored(IgnoreReason::Malformed(_))
    ));
    assert_eq!(parse_token(&probe(99)[HEADER_LEN..]).unwrap(), 99);
}

#[test]
fn forged_sources_draw_at_most_three_times_what_they_send() {
    // One request from each of 2,000 forged addresses (none ever sees the
    // reply, so none has a cookie): bytes out over bytes in.
    let mut p = Sequencer::new(config(1_000, 1 << 12));
    publish(&mut p, 4_000, 1_000);
    let (mut sent, mut drawn) = (0usize, 0usize);
    for k in 0..2_000u64 {
        let req = if k % 2 == 0 {
            nack(1 + k, 1_000).to_vec()
        } else {
            request(PacketKind::SnapshotRequest, EPOCH, 0, 0).to_vec()
        };
        let (_, replies) = call_raw(&mut p, k * MS, peer_id(0x0C00_0000 + k), &req);
        sent += req.len();
        drawn += replies.iter().map(Vec::len).sum::<usize>();
    }
    assert!(drawn <= 3 * sent, "{drawn} bytes drawn by {sent}");
    assert_eq!(p.stats().unvalidated, 2_000);
}

// ---------------------------------------------------------------- heartbeats

#[test]
fn heartbeats_follow_the_simulated_clock() {
    let mut p = Sequencer::new(config(4, 64));
    let t0 = 5_000 * MS;
    assert_eq!(p.poll_timeout(), Some(Instant::ZERO), "announce the session at once");
    p.handle_timeout(Instant(t0), 1);
    let hb = drain(&mut p);
    assert_eq!(hb.len(), 1);
    let r = header(&hb[0]);
    assert_eq!(
        (r.kind, r.first_seq, r.count, r.send_time),
        (PacketKind::Heartbeat, SeqNo(1), 0, 1)
    );

    assert_eq!(p.poll_timeout(), Some(Instant(t0 + 100 * MS)));
    p.handle_timeout(Instant(t0 + 99 * MS), 2);
    assert!(drain(&mut p).is_empty(), "not due yet");
    p.handle_timeout(Instant(t0 + 100 * MS), 3);
    assert_eq!(header(&drain(&mut p)[0]).kind, PacketKind::Heartbeat);

    // Data resets the idle timer.
    p.push(Instant(t0 + 150 * MS), 4, &msg(1, 4));
    p.flush(Instant(t0 + 150 * MS), 4);
    drain(&mut p);
    assert_eq!(p.poll_timeout(), Some(Instant(t0 + 250 * MS)));
    p.handle_timeout(Instant(t0 + 250 * MS), 5);
    let r = header(&drain(&mut p)[0]);
    assert_eq!((r.kind, r.first_seq), (PacketKind::Heartbeat, SeqNo(2)), "carries published_next");

    // An open packet nobody flushed is sealed at the deadline instead of a heartbeat.
    p.push(Instant(t0 + 300 * MS), 6, &msg(2, 4));
    p.handle_timeout(Instant(t0 + 350 * MS), 7);
    let live = drain(&mut p);
    assert_eq!(live.len(), 1);
    let r = header(&live[0]);
    assert_eq!((r.kind, r.first_seq, r.count), (PacketKind::Data, SeqNo(2), 1));

    p.end_session(Instant(t0 + 360 * MS), 8);
    let r = header(&drain(&mut p)[0]);
    assert_eq!((r.kind, r.first_seq, r.count), (PacketKind::EndOfSession, SeqNo(3), 0));
    // After the end: no heartbeat, the EndOfSession again every 100 ms.
    assert_eq!(p.poll_timeout(), Some(Instant(t0 + 460 * MS)));
    p.handle_timeout(Instant(t0 + 10_000 * MS), 9);
    let again = drain(&mut p);
    assert_eq!(again.len(), 1);
    assert_eq!(header(&again[0]).kind, PacketKind::EndOfSession);
    assert_eq!(p.stats().heartbeats, 3);
}

#[test]
fn end_session_seals_the_open_packet_first() {
    let mut p = Sequencer::new(config(4, 64));
    p.push(Instant(0), 0, &msg(1, 4));
    p.end_session(Instant(0), 0);
    let live = drain(&mut p);
    let kinds: Vec<_> = live.iter().map(|b| header(b).kind).collect();
    assert_eq!(kinds, vec![PacketKind::Data, PacketKind::EndOfSession]);
    assert_eq!(header(&live[1]).first_seq, SeqNo(2));
    // Requests are still served after the end.
    assert_eq!(call(&mut p, 0, 1, &nack(1, 1)).0, RequestOutcome::Served);
}

// ---------------------------------------------------------------- hostile input

fn hostile_publisher() -> Sequencer {
    let limits = RequestLimits { max_nack_messages: 300, ..RequestLimits::default() };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(30, 256) });
    publish(&mut p, 1_000, 30);
    p
}

/// Every reply is a CRC-valid packet within the size limit, of a server kind.
fn check_replies(replies: &[Vec<u8>]) {
    for b in replies {
        assert!(b.len() <= 1472);
        let r = header(b);
        assert!(matches!(
            r.kind,
            PacketKind::Retransmission
                | PacketKind::NackReject
                | PacketKind::Snapshot
                | PacketKind::LoginAck
                | PacketKind::Status
        ));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), peer in any::<u64>()) {
        let mut p = hostile_publisher();
        let (out, replies) = call(&mut p, 0, peer, &bytes);
        prop_assert!(matches!(out, RequestOutcome::Ignored(_)));
        prop_assert!(replies.is_empty());
        prop_assert_eq!(p.stats().requests, 1);
    }

    /// Well-framed packets with a valid CRC and arbitrary fields reach the
    /// request logic: still no panic, and every answer obeys the contract.
    #[test]
    fn valid_crc_arbitrary_fields_never_panic(
        kind in any::<u8>(),
        epoch in prop_oneof![Just(EPOCH), Just(0u64), any::<u64>()],
        first in prop_oneof![0u64..1100, any::<u64>()],
        count in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..3),
        now in any::<u64>(),
    ) {
        let mut p = hostile_publisher();
        let mut b = vec![0u8; HEADER_LEN + payload.len()];
        b[HEADER_LEN..].copy_from_slice(&payload);
        let mut pk = Packet::new_unchecked(&mut b[..]);
        PacketRepr {
            kind: PacketKind::from_byte(kind), flags: 0, epoch, first_seq: SeqNo(first), count,
            send_time: 0, payload_len: payload.len(),
        }.emit(&mut pk);
        pk.fill_crc();
        let (out, replies) = call(&mut p, now, 1, &b);
        check_replies(&replies);
        if PacketKind::from_byte(kind) == PacketKind::Nack && out == RequestOutcome::Served {
            let msgs: Vec<_> = replies.iter().filter(|r| header(r).kind == PacketKind::Retransmission).cloned().collect();
            let got = messages_of(&msgs);
            prop_assert!(got.len() as u64 <= u64::from(count).min(300));
            for (i, (seq, _, _)) in got.iter().enumerate() {
                prop_assert_eq!(seq.0, first + i as u64);
            }
        }
        if !matches!(out, RequestOutcome::Ignored(_)) {
            prop_assert!(!replies.is_empty());
        } else {
            prop_assert!(replies.is_empty());
        }
    }
}

/// One step of a random run-loop.
#[derive(Clone, Debug)]
enum Op {
    Push(u8),
    Flush,
    Timeout(u32),
    Nack { peer: u8, back: u16, count: u16 },
    Snapshot { peer: u8 },
    Login { peer: u8, same_epoch: bool, back: u16 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u8>().prop_map(Op::Push),
        1 => Just(Op::Flush),
        1 => (0u32..300).prop_map(Op::Timeout),
        2 => (0u8..4, any::<u16>(), 1u16..400).prop_map(|(peer, back, count)| Op::Nack { peer, back, count }),
        1 => (0u8..4).prop_map(|peer| Op::Snapshot { peer }),
        1 => (0u8..4, any::<bool>(), any::<u16>()).prop_map(|(peer, same_epoch, back)| Op::Login { peer, same_epoch, back }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random interleavings of publishing, timers and requests keep the
    /// contract: the live stream is gap-free and in order, every retransmitted
    /// message is byte-identical to the original, snapshots equal the book at
    /// `published_next`, a resume ends exactly at `published_next`, and
    /// nothing is ever sent that was not asked for.
    #[test]
    fn random_run_loops_keep_the_contract(ops in proptest::collection::vec(op(), 1..120)) {
        let symbols = 30;
        let limits = RequestLimits { max_nack_messages: 100, ..RequestLimits::default() };
        let mut p = Sequencer::new(SequencerConfig { limits, max_packet_len: 300, ..config(symbols, 200) });
        let mut orig: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut next_live = 1u64;
        let mut n = 0u64; // messages pushed
        let mut now = 0u64;
        for op in ops {
            now += MS;
            let mut replies = Vec::new();
            let mut asked = None;
            let out = match op {
                Op::Push(k) => {
                    for _ in 0..(k % 16) {
                        n += 1;
                        prop_assert_eq!(p.push(Instant(now), now, &msg(n, symbols)), SeqNo(n));
                    }
                    None
                }
                Op::Flush => { p.flush(Instant(now), now); None }
                Op::Timeout(ms) => {
                    now += u64::from(ms) * MS;
                    if p.poll_timeout().is_some_and(|t| Instant(now) >= t) {
                        p.handle_timeout(Instant(now), now);
                    }
                    None
                }
                Op::Nack { peer, back, count } => {
                    let s = p.published_next().0.saturating_sub(u64::from(back)).max(1);
                    asked = Some((s, count));
                    Some(p.handle_request(Instant(now), now, u64::from(peer), &nack(s, count), &mut |r| replies.push(r.to_vec())))
                }
                Op::Snapshot { peer } => {
                    let b = request(PacketKind::SnapshotRequest, EPOCH, 0, 0);
                    Some(p.handle_request(Instant(now), now, u64::from(peer), &b, &mut |r| replies.push(r.to_vec())))
                }
                Op::Login { peer, same_epoch, back } => {
                    let s = p.published_next().0.saturating_sub(u64::from(back));
                    let b = login(if same_epoch { EPOCH } else { 3 }, s);
                    Some(p.handle_request(Instant(now), now, 100 + u64::from(peer), &b, &mut |r| replies.push(r.to_vec())))
                }
            };
            // Drain the live stream after every step (the run-loop contract).
            for b in drain(&mut p) {
                prop_assert!(b.len() <= 300);
                let r = header(&b);
                prop_assert_eq!(r.epoch, EPOCH);
                match r.kind {
                    PacketKind::Data => {
                        prop_assert_eq!(r.first_seq, SeqNo(next_live));
                        for (seq, m, raw) in messages_of(std::slice::from_ref(&b)) {
                            prop_assert_eq!(m, msg(seq.0, symbols));
                            orig.insert(seq.0, raw);
                        }
                        next_live += u64::from(r.count);
                    }
                    PacketKind::Heartbeat => prop_assert_eq!(r.first_seq, SeqNo(next_live)),
                    k => prop_assert!(false, "unexpected live kind {:?}", k),
                }
            }
            prop_assert_eq!(p.published_next(), SeqNo(next_live));
            let Some(out) = out else { continue };
            for b in &replies {
                prop_assert!(b.len() <= 300);
            }
            let retrans: Vec<Vec<u8>> = replies.iter().filter(|b| header(b).kind == PacketKind::Retransmission).cloned().collect();
            let got = messages_of(&retrans);
            for (seq, _, raw) in &got {
                prop_assert_eq!(raw, &orig[&seq.0]);
            }
            let snaps: Vec<Vec<u8>> = replies.iter().filter(|b| header(b).kind == PacketKind::Snapshot).cloned().collect();
            if !snaps.is_empty() {
                let (at, states) = snapshot_of(&snaps, symbols);
                prop_assert_eq!(at, p.published_next());
                prop_assert_eq!(&states[..], p.book().states());
            }
            if let Some((s, count)) = asked {
                let seqs: Vec<u64> = got.iter().map(|m| m.0.0).collect();
                let expect_max = u64::from(count).min(100);
                prop_assert!(seqs.len() as u64 <= expect_max);
                prop_assert!(seqs.iter().enumerate().all(|(i, &q)| q == s + i as u64));
                if out == RequestOutcome::Served && seqs.is_empty() {
                    prop_assert_eq!(header(&replies[0]).kind, PacketKind::NackReject);
                    prop_assert!(s < p.oldest().0);
                }
            }
            if let RequestOutcome::LoginAccepted { mode, resume_from } = out {
                let (at, _) = login_ack(&replies[0]);
                prop_assert_eq!(at, resume_from);
                match mode {
                    LoginMode::Resume => {
                        let seqs: Vec<u64> = got.iter().map(|m| m.0.0).collect();
                        prop_assert_eq!(seqs, (resume_from.0..next_live).collect::<Vec<_>>());
                    }
                    _ => prop_assert_eq!(resume_from, p.published_next()),
                }
            }
        }
    }
}

// ---------------------------------------------------------------- allocation

#[path = "support/alloc_count.rs"]
mod alloc_count;

#[test]
fn steady_state_push_seal_poll_and_retransmit_allocate_nothing() {
    let mut p = Sequencer::new(config(100, 1 << 12));
    let mut sink = 0usize;
    let mut cycle = |p: &mut Sequencer, from: u64, to: u64, now: u64| {
        for i in from..to {
            p.push(Instant(now), now, &msg(i, 100));
            if i % 50 == 0 {
                p.flush(Instant(now), now);
            }
            while let Some(b) = p.poll_packet() {
                sink += b.len();
            }
        }
        p.handle_timeout(Instant(now + 200 * MS), now);
        while let Some(b) = p.poll_packet() {
            sink += b.len();
        }
        let n = nack(from, 200);
        let s = snapshot_request_bytes();
        p.handle_request(Instant(now), now, from % 7, &n, &mut |r| sink += r.len());
        p.handle_request(Instant(now), now, from % 7, &s, &mut |r| sink += r.len());
        p.handle_request(Instant(now), now, from % 7, b"garbage", &mut |r| sink += r.len());
    };
    // Warm up: every peer slot exists, the ring has wrapped.
    for k in 0..10u64 {
        cycle(&mut p, 1 + k * 1_000, 1 + (k + 1) * 1_000, k * 1_000 * MS);
    }
    let probe = alloc_count::count();
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(alloc_count::count(), probe + 1, "the counter sees allocations");
    let before = alloc_count::count();
    for k in 10..30u64 {
        cycle(&mut p, 1 + k * 1_000, 1 + (k + 1) * 1_000, k * 1_000 * MS);
    }
    let allocations = alloc_count::count() - before;
    assert_eq!(allocations, 0, "steady state allocated {allocations} times");
    assert!(sink > 0);
    assert_eq!(p.published_next(), SeqNo(30_001));
}

#[test]
fn peer_churn_beyond_the_table_bound_allocates_nothing() {
    let limits = RequestLimits { max_peers_tracked: 16, ..RequestLimits::default() };
    let mut p = Sequencer::new(SequencerConfig { limits, ..config(10, 1 << 10) });
    publish(&mut p, 2_000, 10);
    let mut sink = 0usize;
    let mut round = |p: &mut Sequencer, from: u64, to: u64| {
        for peer in from..to {
            let b = cookie_nack(p, peer_host(peer_id(peer)), 1_000 + peer % 500, 3);
            p.handle_request(Instant(peer * MS), 0, peer_id(peer), &b, &mut |r| sink += r.len());
            if peer % 5 == 0 {
                p.forget_peer(peer_id(peer - 1));
            }
        }
    };
    round(&mut p, 1, 20_000);
    let before = alloc_count::count();
    round(&mut p, 20_000, 120_000);
    assert_eq!(alloc_count::count() - before, 0);
    assert!(p.peers_tracked() <= 16);
    assert!(p.stats().peers_evicted > 90_000);
    assert!(sink > 0);
}

fn snapshot_request_bytes() -> [u8; HEADER_LEN] {
    request(PacketKind::SnapshotRequest, EPOCH, 0, 0)
}

// ---------------------------------------------------------------- measurement

/// Throughput of the hot paths, printed, never asserted (speed is for
/// measurement only). Run with:
/// `cargo test --release -p tickwire-core --test publisher -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run explicitly in release"]
#[allow(clippy::disallowed_methods)] // the harness reads the clock, not the core
fn measure_hot_paths() {
    use std::time::Instant as Clock;
    /// CPU time this thread has run, in ns (Linux schedstat), so a loaded
    /// shared machine inflates the wall time but not this.
    fn cpu_ns() -> u64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }
    struct Span(Clock, u64);
    impl Span {
        fn start() -> Span {
            Span(Clock::now(), cpu_ns())
        }
        /// (wall ns, on-CPU ns) per `n` operations.
        fn per(&self, n: u64) -> (f64, f64) {
            let wall = self.0.elapsed().as_nanos() as f64;
            let cpu = cpu_ns().saturating_sub(self.1) as f64;
            (wall / n as f64, cpu / n as f64)
        }
    }

    let symbols = 10_000;
    let msgs: Vec<Message> = (0..4096).map(|i| msg(i, symbols)).collect();
    let mut p = Sequencer::new(config(symbols, 1 << 20));
    let n = 10_000_000u64;
    let mut sink = 0usize;
    let t = Span::start();
    for i in 0..n {
        p.push(Instant(i), i, &msgs[(i & 4095) as usize]);
        if i % 64 == 63 {
            p.flush(Instant(i), i);
        }
        while let Some(b) = p.poll_packet() {
            sink += b.len();
        }
    }
    let (wall, cpu) = t.per(n);
    println!(
        "push+seal+poll ({n} msgs, {} packets): {wall:.1} ns/msg wall, {cpu:.1} ns/msg on CPU ({:.1} M msg/s)",
        p.stats().packets,
        1e3 / cpu
    );

    let limits = RequestLimits {
        rate_bytes_per_sec: u64::MAX / 4,
        burst_bytes: u64::MAX / 4,
        ..RequestLimits::default()
    };
    let mut p2 = Sequencer::new(SequencerConfig { limits, ..config(symbols, 1 << 20) });
    for i in 1..=2_000_000u64 {
        p2.push(Instant(0), 0, &msgs[(i & 4095) as usize]);
        while p2.poll_packet().is_some() {}
    }
    p2.flush(Instant(0), 0);
    while p2.poll_packet().is_some() {}
    let reqs = 20_000u64;
    let t = Span::start();
    for k in 0..reqs {
        let b = nack(1_000_000 + (k * 7919) % 900_000, 1024);
        // A new peer id each time: the table (4096) evicts on every request.
        p2.handle_request(Instant(k * 20 * MS), 0, k, &b, &mut |r| sink += r.len());
    }
    let (wall, cpu) = t.per(reqs);
    println!(
        "NACK of 1024 messages (new peer each, evicting): {:.1} µs wall, {:.1} µs on CPU per request ({:.0} ns/message)",
        wall / 1e3,
        cpu / 1e3,
        cpu / 1024.0
    );
    let garbage = 1_000_000u64;
    let t = Span::start();
    for k in 0..garbage {
        let mut b = nack(5, 1);
        b[36] ^= (k as u8) | 1; // bad CRC
        p2.handle_request(Instant(0), 0, 1, &b, &mut |r| sink += r.len());
    }
    let (wall, cpu) = t.per(garbage);
    println!("bad-CRC request rejected: {wall:.1} ns wall, {cpu:.1} ns on CPU");
    let snaps = 200u64;
    let t = Span::start();
    for k in 0..snaps {
        let b = request(PacketKind::SnapshotRequest, EPOCH, 0, 0);
        p2.handle_request(Instant(k * 1_000 * MS), 0, 1_000_000 + k, &b, &mut |r| sink += r.len());
    }
    let (wall, cpu) = t.per(snaps);
    println!(
        "snapshot of {symbols} symbols ({} bytes): {:.1} µs wall, {:.1} µs on CPU",
        p2.snapshot_bytes(),
        wall / 1e3,
        cpu / 1e3
    );
    assert!(sink > 0);
}

/// Issue 26 item 2 (PROTOCOL.md § 10.1, vector `nack_wrong_epoch`): the
/// cookie is checked first and keyed on the service's own epoch. Un-cookied,
/// a NACK the service would ignore anyway (wrong epoch, N = 0, F = 0,
/// F >= next) draws the challenge; with the valid cookie (the same whatever
/// epoch the request names) it draws nothing.
#[test]
fn the_cookie_is_checked_first_and_keyed_on_the_services_epoch() {
    let mut p = Sequencer::new(config(16, 1 << 12));
    publish(&mut p, 100, 16);
    let who = peer_id(0x0A00_0009);
    let host = peer_host(who);
    let ignored = [
        request(PacketKind::Nack, EPOCH - 1, 3, 2),
        request(PacketKind::Nack, EPOCH, 3, 0),
        request(PacketKind::Nack, EPOCH, 0, 2),
        request(PacketKind::Nack, EPOCH, 101, 2),
    ];
    for (k, req) in ignored.iter().enumerate() {
        let (out, replies) = call_raw(&mut p, 1_000 * k as u64, who, req);
        assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::Unvalidated), "case {k}");
        let (r, st) = only_status(&replies);
        assert_eq!((r.epoch, st.echo, st.cookie), (EPOCH, 0, p.cookie(host)), "case {k}");
    }
    let statuses = p.stats().statuses;
    for (k, req) in ignored.iter().enumerate() {
        let cookied = with_cookie(&p, host, req);
        let (out, replies) = call_raw(&mut p, 10_000 + 1_000 * k as u64, who, &cookied);
        assert!(matches!(out, RequestOutcome::Ignored(_)), "case {k}: {out:?}");
        assert!(replies.is_empty(), "case {k}: a validated host gets nothing");
    }
    let cookied = with_cookie(&p, host, &ignored[0]);
    let (out, _) = call_raw(&mut p, 20_000, who, &cookied);
    assert_eq!(out, RequestOutcome::Ignored(IgnoreReason::WrongEpoch));
    assert_eq!(p.stats().statuses, statuses, "no challenge once the cookie is valid");
    assert_eq!(p.stats().bad_cookies, 0);
}
