//! Unit tests of the receiver with hand-built packets.

use std::time::Duration;

use super::*;
use crate::msg::Quote;
use crate::msg::SymbolState;
use crate::wire::{
    FLAG_COOKIE, LoginAck, NackReject, SnapshotHeader, Status, emit_message, emit_record,
    parse_token,
};

const E: u64 = 0xE1;
const E2: u64 = 0xE2;

// ------------------------------------------------------------- test encoder

/// The message at `seq` in every test stream: its fields derive from `seq`.
fn quote(seq: u64) -> Message {
    Message::Quote(Quote {
        symbol: (seq % 4) as u32,
        bid_px: seq as i64 * 10,
        ask_px: seq as i64 * 10 + 5,
        bid_qty: seq as u32,
        ask_qty: 7,
        exch_ts: seq * 1000,
        symbol_seq: seq,
    })
}

fn packet(kind: PacketKind, epoch: u64, first: u64, count: u16, payload: &[u8]) -> Vec<u8> {
    let repr = PacketRepr {
        kind,
        flags: 0,
        epoch,
        first_seq: SeqNo(first),
        count,
        send_time: 1_000 + first,
        payload_len: payload.len(),
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    buf[HEADER_LEN..].copy_from_slice(payload);
    repr.seal(&mut buf);
    buf
}

fn messages(kind: PacketKind, epoch: u64, first: u64, n: u16) -> Vec<u8> {
    let mut payload = vec![0u8; 48 * n as usize];
    let mut at = 0;
    for s in first..first + u64::from(n) {
        at += emit_message(&quote(s), &mut payload[at..]).unwrap();
    }
    payload.truncate(at);
    packet(kind, epoch, first, n, &payload)
}

fn data(epoch: u64, first: u64, n: u16) -> Vec<u8> {
    messages(PacketKind::Data, epoch, first, n)
}

fn retrans(epoch: u64, first: u64, n: u16) -> Vec<u8> {
    messages(PacketKind::Retransmission, epoch, first, n)
}

fn heartbeat(epoch: u64, next: u64) -> Vec<u8> {
    packet(PacketKind::Heartbeat, epoch, next, 0, &[])
}

fn end_of_session(epoch: u64, next: u64) -> Vec<u8> {
    packet(PacketKind::EndOfSession, epoch, next, 0, &[])
}

fn state(symbol: u32, s: u64) -> SymbolState {
    SymbolState {
        symbol,
        bid_px: s as i64,
        ask_px: s as i64 + 1,
        updates: s,
        last_seq: s - 1,
        ..SymbolState::empty(symbol)
    }
}

fn snap_part(
    epoch: u64,
    s: u64,
    part: u16,
    parts: u16,
    symbols: u32,
    states: &[SymbolState],
) -> Vec<u8> {
    let mut payload = vec![0u8; SnapshotRepr::buffer_len(states.len())];
    SnapshotHeader::new_unchecked(&mut payload[..]).emit(part, parts, symbols);
    for (i, st) in states.iter().enumerate() {
        emit_record(st, &mut payload[8 + 56 * i..]);
    }
    packet(PacketKind::Snapshot, epoch, s, states.len() as u16, &payload)
}

fn login_ack(epoch: u64, first: u64, mode: LoginMode) -> Vec<u8> {
    let mut body = [0u8; 16];
    LoginAck::new_unchecked(&mut body[..]).emit(&LoginAckRepr { oldest: SeqNo(1), mode });
    packet(PacketKind::LoginAck, epoch, first, 0, &body)
}

/// The recovery service's Status: session `epoch` at `next`.
fn status(epoch: u64, next: u64, echo: u64, instance: u64, ended: bool) -> Vec<u8> {
    let mut body = [0u8; 32];
    Status::new_unchecked(&mut body[..]).emit(&StatusRepr {
        cookie: COOKIE,
        echo,
        instance,
        ended,
    });
    packet(PacketKind::Status, epoch, next, 0, &body)
}

const COOKIE: u64 = 0xC00C1E;

/// Everything the receiver sends now, with each request's token (the
/// Probe's nonce, a request's cookie; 0 when it carries none).
fn sent(rx: &mut Receiver, now: Instant) -> Vec<(PacketKind, u64, u64, u16, u64)> {
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    while let Some(n) = rx.poll_transmit(now, 77, &mut buf) {
        let p = Packet::new_checked(&buf[..n]).unwrap();
        let r = PacketRepr::parse(&p).unwrap();
        let token = if r.payload_len > 0 { parse_token(p.payload()).unwrap() } else { 0 };
        assert_eq!(r.flags & FLAG_COOKIE != 0, r.kind != PacketKind::Probe && token != 0);
        out.push((r.kind, r.epoch, r.first_seq.0, r.count, token));
    }
    out
}

/// Take the receiver's Probe from what it sends now and answer it with the
/// service's Status (instance 1); returns the other requests.
fn answer_probe(
    rx: &mut Receiver,
    now: Instant,
    epoch: u64,
    next: u64,
    ended: bool,
) -> Vec<(PacketKind, u64, u64, u16)> {
    answer_probe_from(rx, now, epoch, next, ended, 1)
}

fn answer_probe_from(
    rx: &mut Receiver,
    now: Instant,
    epoch: u64,
    next: u64,
    ended: bool,
    instance: u64,
) -> Vec<(PacketKind, u64, u64, u16)> {
    let all = sent(rx, now);
    let probe = all.iter().find(|r| r.0 == PacketKind::Probe).expect("a Probe");
    rx.handle_packet(now, Line::Unicast, &status(epoch, next, probe.4, instance, ended));
    all.iter().filter(|r| r.0 != PacketKind::Probe).map(|r| (r.0, r.1, r.2, r.3)).collect()
}

fn nack_reject(epoch: u64, first: u64, count: u16) -> Vec<u8> {
    let mut body = [0u8; 16];
    NackReject::new_unchecked(&mut body[..])
        .emit(&NackRejectRepr { oldest: SeqNo(1000), next: SeqNo(2000) });
    packet(PacketKind::NackReject, epoch, first, count, &body)
}

// ------------------------------------------------------------------ helpers

fn cfg() -> ReceiverConfig {
    ReceiverConfig { nack_jitter: Duration::ZERO, ..ReceiverConfig::default() }
}

fn t(us: u64) -> Instant {
    Instant(us * 1000)
}

fn events(rx: &mut Receiver) -> Vec<Event> {
    rx.check_invariants();
    std::iter::from_fn(|| rx.poll_event()).collect()
}

/// Sequences of the Message events, checking each carries the right message.
fn seqs(evs: &[Event]) -> Vec<u64> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Message { seq, msg, .. } => {
                assert_eq!(*msg, quote(seq.0), "wrong message at {seq}");
                Some(seq.0)
            }
            _ => None,
        })
        .collect()
}

fn range(a: u64, b: u64) -> Vec<u64> {
    (a..b).collect()
}

/// The requests the receiver wants to send now: (kind, epoch, first, count).
/// Probes (which the session's start sends) are left out: see [`sent`].
fn requests(rx: &mut Receiver, now: Instant) -> Vec<(PacketKind, u64, u64, u16)> {
    let mut buf = [0u8; 64];
    let mut out = Vec::new();
    while let Some(n) = rx.poll_transmit(now, 77, &mut buf) {
        let p = Packet::new_checked(&buf[..n]).unwrap();
        let r = PacketRepr::parse(&p).unwrap();
        assert_eq!(r.send_time, 77);
        if r.kind != PacketKind::Probe {
            out.push((r.kind, r.epoch, r.first_seq.0, r.count));
        }
    }
    out
}

fn nack(first: u64, count: u16) -> (PacketKind, u64, u64, u16) {
    (PacketKind::Nack, E, first, count)
}

fn snap_req(epoch: u64) -> (PacketKind, u64, u64, u16) {
    (PacketKind::SnapshotRequest, epoch, 0, 0)
}

// -------------------------------------------------------------------- tests

#[test]
fn delivers_in_order_from_the_session_start() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &data(E, 4, 2));
    let evs = events(&mut rx);
    assert_eq!(evs[0], Event::EpochChanged { old: None, new: E });
    assert_eq!(seqs(&evs), range(1, 6));
    assert!(evs.iter().all(|e| !matches!(e, Event::Message { recovered: true, .. })));
    assert!(matches!(evs[1], Event::Message { send_time: 1001, .. }));
    assert_eq!(rx.next_expected(), SeqNo(6));
    assert_eq!(rx.epoch(), Some(E));
    assert_eq!(rx.stats().messages_delivered, 5);
    assert_eq!(rx.stats().epoch_changes, 0);
    assert_eq!(requests(&mut rx, t(1)), vec![]);
    assert_eq!(rx.poll_timeout(), None);
}

#[test]
fn ab_arbitration_takes_the_first_copy_and_counts_the_winner() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::B, &data(E, 1, 3));
    rx.handle_packet(t(2), Line::B, &data(E, 4, 3));
    rx.handle_packet(t(3), Line::A, &data(E, 4, 3));
    // B has 7..9 first, A then re-sends 7..8 and adds 10 in one packet
    rx.handle_packet(t(4), Line::B, &data(E, 7, 2));
    rx.handle_packet(t(5), Line::A, &data(E, 7, 4));
    assert_eq!(seqs(&events(&mut rx)), range(1, 11));
    let st = rx.stats();
    assert_eq!((st.line_a_won, st.line_b_won, st.duplicates), (5, 5, 8));
    assert_eq!(st.gaps_detected, 0);
}

#[test]
fn gap_is_buffered_then_nacked_after_the_delay_and_filled() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(10), Line::A, &data(E, 7, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 4));
    assert_eq!(rx.stats().gaps_detected, 1);
    assert_eq!(rx.stats().messages_missed, 3);
    // Nothing before the NACK delay.
    assert_eq!(requests(&mut rx, t(100)), vec![]);
    assert_eq!(rx.poll_timeout(), Some(t(10) + DEFAULT_NACK_DELAY));
    rx.handle_timeout(t(210));
    assert_eq!(requests(&mut rx, t(210)), vec![nack(4, 3)]);
    assert_eq!(rx.poll_timeout(), Some(t(210) + DEFAULT_NACK_RETRY_INITIAL));
    rx.handle_packet(t(300), Line::Unicast, &retrans(E, 4, 3));
    let evs = events(&mut rx);
    assert_eq!(seqs(&evs), range(4, 10));
    assert!(evs.iter().all(|e| matches!(e, Event::Message { recovered: true, .. })));
    let st = rx.stats();
    assert_eq!((st.gaps_filled_retransmit, st.nacks_sent, st.nack_messages_requested), (1, 1, 3));
    assert_eq!(st.messages_retransmitted, 3);
    assert_eq!(st.recoveries(), 1);
    assert_eq!(st.recovery_percentile(50.0) / 1000, 290); // seen at 10 µs, filled at 300 µs
    assert_eq!(rx.poll_timeout(), None);
    assert_eq!(rx.open_gaps(), 0);
}

#[test]
fn a_fill_from_the_other_line_cancels_the_nack() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(10), Line::A, &data(E, 7, 3));
    rx.handle_packet(t(50), Line::B, &data(E, 4, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 10));
    rx.handle_timeout(t(1000));
    assert_eq!(requests(&mut rx, t(1000)), vec![]);
    let st = rx.stats();
    assert_eq!((st.gaps_filled_reorder, st.gaps_filled_retransmit, st.nacks_sent), (1, 0, 0));
    assert_eq!(st.line_b_won, 3);
}

#[test]
fn a_nack_filled_while_queued_is_not_sent() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 5, 1));
    rx.handle_timeout(t(300)); // queued
    rx.handle_packet(t(301), Line::B, &data(E, 2, 3));
    assert_eq!(requests(&mut rx, t(302)), vec![]);
    assert_eq!(seqs(&events(&mut rx)), range(1, 6));
}

#[test]
fn several_gaps_are_nacked_at_once_coalesced_and_split() {
    let mut rx = Receiver::new(ReceiverConfig { max_nack_len: 10, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 3, 1)); // hole 2
    rx.handle_packet(t(0), Line::A, &data(E, 5, 25)); // hole 4; 5..29 held
    rx.handle_packet(t(0), Line::A, &data(E, 60, 1)); // hole 30..59
    assert_eq!(rx.stats().gaps_detected, 3);
    rx.handle_timeout(t(200));
    // 2 and 4 are 1 apart: one range; 30..59 is 25 past it: its own, split at 10.
    assert_eq!(
        requests(&mut rx, t(200)),
        vec![nack(2, 3), nack(30, 10), nack(40, 10), nack(50, 10)]
    );
    rx.handle_packet(t(300), Line::Unicast, &retrans(E, 2, 3));
    rx.handle_packet(t(300), Line::Unicast, &retrans(E, 30, 10));
    rx.handle_packet(t(300), Line::Unicast, &retrans(E, 50, 10)); // 40..49 lost
    assert_eq!(seqs(&events(&mut rx)), range(1, 40));
    // The retry asks only for what is still missing.
    rx.handle_timeout(t(200) + DEFAULT_NACK_RETRY_INITIAL);
    assert_eq!(requests(&mut rx, t(2200)), vec![nack(40, 10)]);
    rx.handle_packet(t(2300), Line::Unicast, &retrans(E, 40, 10));
    assert_eq!(seqs(&events(&mut rx)), range(40, 61));
    assert_eq!(rx.stats().duplicates, 1); // 3 came again inside the coalesced range
}

#[test]
fn outstanding_nacks_are_capped() {
    let mut rx = Receiver::new(ReceiverConfig { max_outstanding_nacks: 2, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    for s in [20, 40, 60, 80] {
        // holes 2..19, 30..39, 50..59, 70..79, too far apart to coalesce
        rx.handle_packet(t(0), Line::A, &data(E, s, 10));
    }
    rx.handle_timeout(t(200));
    assert_eq!(requests(&mut rx, t(200)), vec![nack(2, 18), nack(30, 10)]);
    // Timer: the cap is full, so the next wake-up is the first NACK's deadline.
    assert_eq!(rx.poll_timeout(), Some(t(200) + DEFAULT_NACK_RETRY_INITIAL));
    // Filling the first range frees a slot: the next hole goes out at once.
    rx.handle_packet(t(300), Line::Unicast, &retrans(E, 2, 18));
    assert_eq!(rx.poll_timeout(), Some(t(200)));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(50, 10)]);
    assert_eq!(seqs(&events(&mut rx)), range(1, 30));
}

#[test]
fn unanswered_nacks_back_off_then_go_to_a_snapshot() {
    let retry = Duration::from_millis(1);
    let mut rx = Receiver::new(ReceiverConfig {
        nack_retry_initial: retry,
        nack_retry_max: Duration::from_millis(3),
        max_nack_retries: 3,
        // Rounds alone decide here (the time bound has a test of its own).
        nack_give_up_after: Duration::ZERO,
        ..cfg()
    });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 5, 1));
    let mut now = t(200);
    rx.handle_timeout(now);
    assert_eq!(requests(&mut rx, now), vec![nack(2, 3)]);
    // Retries at +1, +2, +3 (capped), then the snapshot.
    for wait_ms in [1, 2, 3] {
        assert_eq!(rx.poll_timeout(), Some(now + Duration::from_millis(wait_ms)));
        now = now + Duration::from_millis(wait_ms);
        rx.handle_timeout(now);
        assert_eq!(requests(&mut rx, now), vec![nack(2, 3)], "retry after {wait_ms} ms");
    }
    now = rx.poll_timeout().unwrap();
    rx.handle_timeout(now);
    assert_eq!(requests(&mut rx, now), vec![snap_req(E)]);
    let st = rx.stats();
    assert_eq!((st.nacks_sent, st.nack_retries_exhausted, st.snapshot_requests), (4, 1, 1));
    assert_eq!(rx.poll_timeout(), Some(now + DEFAULT_SNAPSHOT_TIMEOUT));
}

#[test]
fn progress_resets_the_nack_retries() {
    let mut rx = Receiver::new(ReceiverConfig { max_nack_retries: 1, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 10, 1));
    let mut now = t(200);
    rx.handle_timeout(now);
    assert_eq!(requests(&mut rx, now), vec![nack(2, 8)]);
    // Each round the server answers only a prefix (clipped): never a snapshot.
    for (got, rest) in [(2u64, 4u64), (4, 6), (6, 8)] {
        rx.handle_packet(now, Line::Unicast, &retrans(E, got, 2));
        now = rx.poll_timeout().unwrap();
        rx.handle_timeout(now);
        assert_eq!(requests(&mut rx, now), vec![nack(rest, (10 - rest) as u16)]);
    }
    rx.handle_packet(now, Line::Unicast, &retrans(E, 8, 2));
    assert_eq!(seqs(&events(&mut rx)), range(1, 11));
    assert_eq!(rx.stats().snapshot_requests, 0);
}

#[test]
fn a_heartbeat_reveals_tail_loss() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(5), Line::A, &heartbeat(E, 6));
    rx.handle_packet(t(6), Line::B, &heartbeat(E, 5)); // older: nothing new
    rx.handle_timeout(t(205));
    assert_eq!(requests(&mut rx, t(205)), vec![nack(4, 2)]);
    rx.handle_packet(t(300), Line::Unicast, &retrans(E, 4, 2));
    assert_eq!(seqs(&events(&mut rx)), range(1, 6));
    assert_eq!(rx.stats().heartbeats, 2);
}

#[test]
fn end_of_session_waits_for_the_tail() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 5));
    // The service confirms the end (and gives the cookie).
    assert_eq!(answer_probe(&mut rx, t(1), E, 5, true), vec![]);
    let evs = events(&mut rx);
    assert!(!evs.iter().any(|e| matches!(e, Event::EndOfSession { .. })));
    rx.handle_timeout(t(300));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(4, 1)]);
    rx.handle_packet(t(400), Line::Unicast, &retrans(E, 4, 1));
    rx.handle_packet(t(401), Line::B, &end_of_session(E, 5));
    let evs = events(&mut rx);
    assert_eq!(seqs(&evs), vec![4]);
    assert_eq!(evs.last(), Some(&Event::EndOfSession { next: SeqNo(5) }));
    assert_eq!(evs.iter().filter(|e| matches!(e, Event::EndOfSession { .. })).count(), 1);
}

#[test]
fn nack_reject_leads_to_a_snapshot_merged_with_the_buffer() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 2));
    rx.handle_packet(t(0), Line::A, &data(E, 6, 10)); // hole 3..5, 6..15 held
    rx.handle_timeout(t(200));
    assert_eq!(requests(&mut rx, t(200)), vec![nack(3, 3)]);
    rx.handle_packet(t(300), Line::Unicast, &nack_reject(E, 3, 3));
    assert_eq!(requests(&mut rx, t(300)), vec![snap_req(E)]);
    // Live data keeps coming while the snapshot is awaited.
    rx.handle_packet(t(310), Line::A, &data(E, 16, 4));
    // A part of an older snapshot (S = 9) is superseded by S = 12.
    rx.handle_packet(t(320), Line::Unicast, &snap_part(E, 9, 0, 2, 4, &[state(0, 9), state(1, 9)]));
    rx.handle_packet(
        t(330),
        Line::Unicast,
        &snap_part(E, 12, 1, 2, 4, &[state(2, 12), state(3, 12)]),
    );
    rx.handle_packet(t(331), Line::Unicast, &snap_part(E, 9, 1, 2, 4, &[state(2, 9), state(3, 9)]));
    assert_eq!(seqs(&events(&mut rx)), vec![1, 2]);
    rx.handle_packet(
        t(340),
        Line::Unicast,
        &snap_part(E, 12, 0, 2, 4, &[state(0, 12), state(1, 12)]),
    );
    let evs = events(&mut rx);
    assert_eq!(evs[0], Event::SnapshotStart { seq: SeqNo(12), symbols: 4 });
    let states: Vec<SymbolState> = evs
        .iter()
        .filter_map(|e| if let Event::SymbolState(s) = e { Some(*s) } else { None })
        .collect();
    assert_eq!(states, (0..4).map(|s| state(s, 12)).collect::<Vec<_>>());
    assert_eq!(evs[5], Event::SnapshotEnd { seq: SeqNo(12) });
    assert_eq!(seqs(&evs[6..]), range(12, 20));
    let st = rx.stats();
    assert_eq!((st.nack_rejects, st.snapshots_applied, st.gaps_covered_snapshot), (1, 1, 1));
    assert_eq!(st.messages_covered_snapshot, 3);
    // The first S = 9 part was stored, then superseded; the second was older.
    assert_eq!((st.snapshot_parts, st.snapshot_parts_ignored), (3, 1));
    assert_eq!(rx.next_expected(), SeqNo(20));
    assert_eq!(rx.poll_timeout(), None);
}

#[test]
fn a_snapshot_with_a_lost_part_is_requested_again_then_given_up() {
    let mut rx = Receiver::new(ReceiverConfig { max_snapshot_retries: 2, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 2));
    rx.handle_packet(t(0), Line::A, &data(E, 6, 2));
    rx.handle_timeout(t(200));
    let _ = requests(&mut rx, t(200));
    rx.handle_packet(t(300), Line::Unicast, &nack_reject(E, 3, 3));
    let mut now = t(300);
    assert_eq!(requests(&mut rx, now), vec![snap_req(E)]);
    rx.handle_packet(t(400), Line::Unicast, &snap_part(E, 8, 0, 2, 4, &[state(0, 8), state(1, 8)]));
    for _ in 0..2 {
        now = now + DEFAULT_SNAPSHOT_TIMEOUT;
        assert_eq!(rx.poll_timeout(), Some(now));
        rx.handle_timeout(now);
        // The retry names the snapshot whose part it holds (S = 8), so the
        // server can resend the same one and the parts add up.
        assert_eq!(requests(&mut rx, now), vec![(PacketKind::SnapshotRequest, E, 8, 0)]);
    }
    now = now + DEFAULT_SNAPSHOT_TIMEOUT;
    rx.handle_timeout(now);
    let evs = events(&mut rx);
    assert_eq!(
        evs.iter().filter(|e| !matches!(e, Event::Message { .. })).copied().collect::<Vec<_>>(),
        vec![
            Event::EpochChanged { old: None, new: E },
            Event::Unrecoverable { range: SeqRange::new(SeqNo(3), SeqNo(6)) }
        ]
    );
    assert_eq!(seqs(&evs), vec![1, 2, 6, 7]);
    let st = rx.stats();
    assert_eq!((st.unrecovered, st.messages_unrecovered, st.snapshot_requests), (1, 3, 3));
    // The feed goes on.
    rx.handle_packet(now, Line::A, &data(E, 8, 1));
    assert_eq!(seqs(&events(&mut rx)), vec![8]);
}

#[test]
fn late_joiner_starts_from_a_snapshot_and_merges_into_live_data() {
    // Joined at 10_100: beyond EARLY_JOIN_SLACK, so a late join.
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 10_100, 3));
    assert!(!rx.is_synced());
    assert_eq!(requests(&mut rx, t(0)), vec![snap_req(E)]);
    rx.handle_packet(t(10), Line::A, &data(E, 10_103, 3));
    rx.handle_packet(t(10), Line::A, &data(E, 10_107, 3)); // 10_106 lost
    // The snapshot was taken at 10_104 (before it was published): 10_104.. follow it.
    let states: Vec<_> = (0..4).map(|s| state(s, 10_104)).collect();
    rx.handle_packet(t(20), Line::Unicast, &snap_part(E, 10_104, 0, 1, 4, &states));
    let evs = events(&mut rx);
    assert_eq!(evs[0], Event::EpochChanged { old: None, new: E });
    assert_eq!(evs[1], Event::SnapshotStart { seq: SeqNo(10_104), symbols: 4 });
    assert_eq!(evs[6], Event::SnapshotEnd { seq: SeqNo(10_104) });
    assert_eq!(seqs(&evs), vec![10_104, 10_105]);
    // 10_106 is still recovered by NACK.
    rx.handle_timeout(t(300));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(10_106, 1)]);
    rx.handle_packet(t(400), Line::Unicast, &retrans(E, 10_106, 1));
    assert_eq!(seqs(&events(&mut rx)), range(10_106, 10_110));
}

/// The session's first packets lost on the way (the receiver was there from
/// the start): a first packet within EARLY_JOIN_SLACK of sequence 1 starts
/// the session at 1 and the head is NACKed, not replaced by a snapshot, so
/// every message is delivered.
#[test]
fn a_lost_session_start_is_nacked_not_snapshotted() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 5, 3)); // 1..5 lost
    assert!(rx.is_synced());
    assert_eq!(requests(&mut rx, t(0)), vec![], "no snapshot request");
    rx.handle_timeout(t(300));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(1, 4)]);
    rx.handle_packet(t(400), Line::Unicast, &retrans(E, 1, 4));
    assert_eq!(seqs(&events(&mut rx)), range(1, 8));
    assert_eq!((rx.stats().snapshot_requests, rx.stats().unrecovered), (0, 0));
    // Beyond the slack it is a late join.
    let mut late = Receiver::new(cfg());
    late.handle_packet(t(0), Line::A, &data(E, EARLY_JOIN_SLACK + 2, 1));
    assert!(!late.is_synced());
    assert_eq!(requests(&mut late, t(0)), vec![snap_req(E)]);
}

#[test]
fn late_joiner_from_first_seen() {
    let mut rx = Receiver::new(ReceiverConfig { late_join: LateJoin::FromFirstSeen, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 100, 3));
    assert_eq!(seqs(&events(&mut rx)), range(100, 103));
    assert_eq!(requests(&mut rx, t(0)), vec![]);
}

#[test]
fn the_session_start_arriving_late_cancels_the_late_join_snapshot() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 3, 2)); // 1..2 reordered behind
    rx.handle_packet(t(1), Line::B, &data(E, 1, 2));
    assert_eq!(seqs(&events(&mut rx)), range(1, 5));
    assert_eq!(requests(&mut rx, t(1)), vec![]);
    assert!(rx.is_synced());
}

#[test]
fn epoch_change_resets_the_sequence() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 5));
    rx.handle_packet(t(0), Line::A, &data(E, 8, 1)); // a hole the restart abandons
    rx.handle_packet(t(1), Line::A, &data(E2, 1, 2));
    // Held until the service confirms the restart; then its line B copy counts.
    assert_eq!(rx.stats().validation.epoch_held, 1);
    assert_eq!(answer_probe(&mut rx, t(1), E2, 3, false), vec![]);
    rx.handle_packet(t(1), Line::B, &data(E2, 1, 2));
    let evs = events(&mut rx);
    let i = evs.iter().position(|e| *e == Event::EpochChanged { old: Some(E), new: E2 }).unwrap();
    assert_eq!(seqs(&evs[..i]), range(1, 6));
    assert_eq!(seqs(&evs[i..]), range(1, 3));
    // A straggler of the old session does not flip it back.
    rx.handle_packet(t(2), Line::B, &data(E, 6, 2));
    rx.handle_packet(t(2), Line::Unicast, &retrans(E, 6, 2));
    assert_eq!(events(&mut rx), vec![]);
    let st = rx.stats();
    assert_eq!((st.epoch_changes, st.wrong_epoch, st.gaps_abandoned_epoch), (1, 2, 1));
    assert_eq!(rx.epoch(), Some(E2));
    assert_eq!(rx.next_expected(), SeqNo(3));
}

#[test]
fn epoch_change_mid_session_fetches_a_snapshot_of_the_new_one() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 5));
    rx.handle_packet(t(1), Line::A, &data(E2, 10_040, 2));
    assert_eq!(answer_probe(&mut rx, t(1), E2, 10_042, false), vec![]);
    rx.handle_packet(t(1), Line::B, &data(E2, 10_040, 2));
    assert_eq!(requests(&mut rx, t(1)), vec![snap_req(E2)]);
    rx.handle_packet(t(2), Line::Unicast, &snap_part(E2, 10_041, 0, 1, 1, &[state(0, 10_041)]));
    let evs = events(&mut rx);
    assert!(evs.contains(&Event::EpochChanged { old: Some(E), new: E2 }));
    assert!(evs.contains(&Event::SnapshotEnd { seq: SeqNo(10_041) }));
    assert_eq!(seqs(&evs), [range(1, 6), vec![10_041]].concat());
}

#[test]
fn buffer_overflow_leads_to_a_snapshot() {
    let mut rx = Receiver::new(ReceiverConfig { max_buffered: 8, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    for s in 3..12 {
        rx.handle_packet(t(0), Line::A, &data(E, s, 1)); // 2 lost; 11 does not fit [2, 10)
    }
    assert_eq!(rx.stats().buffer_overflows, 1);
    assert_eq!(requests(&mut rx, t(0)), vec![snap_req(E)]);
    for s in 12..20 {
        rx.handle_packet(t(1), Line::A, &data(E, s, 1)); // the window slides while waiting
    }
    rx.handle_packet(t(2), Line::Unicast, &snap_part(E, 14, 0, 1, 1, &[state(0, 14)]));
    let evs = events(&mut rx);
    assert!(evs.contains(&Event::SnapshotEnd { seq: SeqNo(14) }));
    assert_eq!(seqs(&evs), [vec![1], range(14, 20)].concat());
    assert_eq!(rx.stats().buffer_overflows, 1);
}

#[test]
fn a_snapshot_older_than_the_slid_window_leaves_a_hole_to_nack() {
    let mut rx = Receiver::new(ReceiverConfig { max_buffered: 4, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 3, 10)); // 2 lost, window slides to [9, 13)
    // S = 6 moves the window back to [6, 10): 9 stays held, 10..12 no longer fit.
    assert_eq!(requests(&mut rx, t(0)), vec![snap_req(E)]);
    rx.handle_packet(t(1), Line::Unicast, &snap_part(E, 6, 0, 1, 1, &[state(0, 6)]));
    let evs = events(&mut rx);
    assert!(evs.contains(&Event::SnapshotEnd { seq: SeqNo(6) }));
    assert_eq!(seqs(&evs), vec![1]);
    rx.handle_timeout(t(300));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(6, 7)]); // 6..8 and 10..12, coalesced
    rx.handle_packet(t(400), Line::Unicast, &retrans(E, 6, 7));
    assert_eq!(seqs(&events(&mut rx)), range(6, 13));
}

#[test]
fn nack_ranges_respect_the_u16_count() {
    let mut rx = Receiver::new(ReceiverConfig { max_nack_len: 1 << 20, ..cfg() });
    assert_eq!(rx.config().max_nack_len, MAX_NACK_COUNT);
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &heartbeat(E, 70_002));
    rx.handle_timeout(t(300));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(2, 65_535), nack(65_537, 4_465)]);
}

#[test]
fn malformed_and_corrupt_packets_are_counted_and_dropped() {
    let mut rx = Receiver::new(cfg());
    let mut p = data(E, 1, 2);
    p[50] ^= 0xff;
    rx.handle_packet(t(0), Line::A, &p);
    rx.handle_packet(t(0), Line::A, &p[..30]);
    rx.handle_packet(t(0), Line::A, &[0u8; 100]);
    // Valid CRC, but the count disagrees with the payload.
    let good = data(E, 1, 2);
    let mut bad = packet(PacketKind::Data, E, 1, 3, &good[HEADER_LEN..]);
    rx.handle_packet(t(0), Line::A, &bad);
    bad = packet(PacketKind::Data, E, 0, 2, &good[HEADER_LEN..]); // sequence 0
    rx.handle_packet(t(0), Line::A, &bad);
    bad = packet(PacketKind::Data, E, MAX_SEQ, 2, &good[HEADER_LEN..]);
    rx.handle_packet(t(0), Line::A, &bad);
    rx.handle_packet(t(0), Line::A, &packet(PacketKind::Nack, E, 1, 1, &[]));
    rx.handle_packet(t(0), Line::A, &login_ack(E, 1, LoginMode::Resume)); // datagram: unexpected
    let st = rx.stats();
    assert_eq!((st.bad_crc, st.malformed, st.unexpected, st.packets), (1, 5, 2, 8));
    assert_eq!(events(&mut rx), vec![]);
    assert_eq!(rx.epoch(), None);
}

// ------------------------------------------------------------------- stream

fn stream() -> Receiver {
    Receiver::new(ReceiverConfig { mode: Mode::Stream, ..cfg() })
}

fn login(epoch: u64, first: u64) -> (PacketKind, u64, u64, u16) {
    (PacketKind::Login, epoch, first, 0)
}

#[test]
fn stream_login_resume_reconnect_and_snapshot() {
    let mut rx = stream();
    rx.handle_connected(t(0));
    assert_eq!(requests(&mut rx, t(0)), vec![login(0, 1)]);
    rx.handle_packet(t(1), Line::A, &data(E, 1, 1)); // before the ack: ignored
    rx.handle_packet(t(2), Line::A, &login_ack(E, 1, LoginMode::Resume));
    rx.handle_packet(t(3), Line::A, &retrans(E, 1, 3));
    rx.handle_packet(t(4), Line::A, &data(E, 4, 2));
    let evs = events(&mut rx);
    assert_eq!(evs[0], Event::EpochChanged { old: None, new: E });
    assert_eq!(seqs(&evs), range(1, 6));

    // Disconnect: back-off from 10 ms, doubling, with up to 25 % jitter.
    let mut now = t(1000);
    rx.handle_disconnected(now);
    let due = rx.poll_timeout().unwrap();
    assert!(due >= now + DEFAULT_RECONNECT_MIN && due <= now + DEFAULT_RECONNECT_MIN * 5 / 4);
    rx.handle_timeout(due);
    assert_eq!(events(&mut rx), vec![Event::Reconnect]);
    now = due;
    rx.handle_disconnected(now); // the reconnect failed
    let due = rx.poll_timeout().unwrap();
    assert!(due >= now + DEFAULT_RECONNECT_MIN * 2 && due <= now + DEFAULT_RECONNECT_MIN * 5 / 2);
    rx.handle_timeout(due);
    assert_eq!(events(&mut rx), vec![Event::Reconnect]);
    rx.handle_connected(due);
    assert_eq!(requests(&mut rx, due), vec![login(E, 6)]);
    // Too far behind: the server sends a snapshot at 50, then live data.
    rx.handle_packet(due, Line::A, &login_ack(E, 50, LoginMode::Snapshot));
    rx.handle_packet(due, Line::A, &snap_part(E, 50, 0, 1, 2, &[state(0, 50), state(1, 50)]));
    rx.handle_packet(due, Line::A, &data(E, 50, 2));
    let evs = events(&mut rx);
    assert_eq!(evs[0], Event::SnapshotStart { seq: SeqNo(50), symbols: 2 });
    assert_eq!(evs[3], Event::SnapshotEnd { seq: SeqNo(50) });
    assert_eq!(seqs(&evs), vec![50, 51]);
    let st = rx.stats();
    assert_eq!(
        (st.logins, st.reconnects, st.snapshots_applied, st.snapshot_requests),
        (2, 2, 1, 0)
    );
    // A successful login reset the back-off.
    rx.handle_disconnected(t(10_000_000));
    assert!(rx.poll_timeout().unwrap() <= t(10_000_000) + DEFAULT_RECONNECT_MIN * 5 / 4);
}

#[test]
fn stream_server_restart_is_an_epoch_change() {
    let mut rx = stream();
    rx.handle_connected(t(0));
    let _ = requests(&mut rx, t(0));
    rx.handle_packet(t(1), Line::A, &login_ack(E, 1, LoginMode::Resume));
    rx.handle_packet(t(1), Line::A, &data(E, 1, 3));
    rx.handle_disconnected(t(2));
    rx.handle_connected(t(20_000));
    assert_eq!(requests(&mut rx, t(20_000)), vec![login(E, 4)]);
    rx.handle_packet(t(20_001), Line::A, &login_ack(E2, 1, LoginMode::Resume));
    rx.handle_packet(t(20_001), Line::A, &data(E2, 1, 2));
    let evs = events(&mut rx);
    let i = evs.iter().position(|e| *e == Event::EpochChanged { old: Some(E), new: E2 }).unwrap();
    assert_eq!(seqs(&evs[i..]), range(1, 3));
}

/// Issue 21 item 5: a server killed and restarted with the same `--epoch`.
/// The Status after each LoginAck names the server instance; another instance
/// with the known epoch resets the session (an epoch change and a restart
/// counted) and logs in again from 1 on a new connection.
#[test]
fn stream_restart_with_the_same_epoch_is_seen_by_its_instance() {
    const OLD: u64 = 0x01d;
    const NEW: u64 = 0x2e2;
    let mut rx = stream();
    rx.handle_connected(t(0));
    assert_eq!(requests(&mut rx, t(0)), vec![login(0, 1)]);
    rx.handle_packet(t(1), Line::A, &login_ack(E, 1, LoginMode::Resume));
    rx.handle_packet(t(1), Line::A, &status(E, 1, 0, OLD, false));
    rx.handle_packet(t(1), Line::A, &data(E, 1, 10));
    let evs = events(&mut rx);
    assert_eq!(seqs(&evs), range(1, 11));
    // A reconnect to the same server: the same instance changes nothing.
    rx.handle_disconnected(t(2));
    rx.handle_connected(t(20_000));
    assert_eq!(requests(&mut rx, t(20_000)), vec![login(E, 11)]);
    rx.handle_packet(t(20_001), Line::A, &login_ack(E, 11, LoginMode::Resume));
    rx.handle_packet(t(20_001), Line::A, &status(E, 11, 0, OLD, false));
    rx.handle_packet(t(20_001), Line::A, &data(E, 11, 5));
    assert_eq!(seqs(&events(&mut rx)), range(11, 16));
    assert_eq!(rx.stats().epoch_changes, 0);

    // The server restarts with the same epoch and has published 20 messages
    // of its new session: the client's Login (E, 16) is resumed at 16.
    rx.handle_disconnected(t(30_000));
    rx.handle_connected(t(60_000));
    assert_eq!(requests(&mut rx, t(60_000)), vec![login(E, 16)]);
    rx.handle_packet(t(60_001), Line::A, &login_ack(E, 16, LoginMode::Resume));
    rx.handle_packet(t(60_001), Line::A, &status(E, 21, 0, NEW, false));
    // What the old position's catch-up brings is not delivered.
    rx.handle_packet(t(60_001), Line::A, &retrans(E, 16, 5));
    let evs = events(&mut rx);
    assert_eq!(evs, vec![Event::EpochChanged { old: Some(E), new: E }, Event::Reconnect]);
    assert_eq!(rx.stats().epoch_changes, 1);
    assert_eq!(rx.stats().validation.restarts_detected, 1);
    // Logged in again as a new client (epoch 0, from 1), the whole new
    // session is delivered once.
    rx.handle_connected(t(60_002));
    assert_eq!(requests(&mut rx, t(60_002)), vec![login(0, 1)]);
    rx.handle_packet(t(60_003), Line::A, &login_ack(E, 1, LoginMode::Resume));
    rx.handle_packet(t(60_003), Line::A, &status(E, 21, 0, NEW, false));
    rx.handle_packet(t(60_003), Line::A, &retrans(E, 1, 20));
    rx.handle_packet(t(60_004), Line::A, &data(E, 21, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 24));
    assert_eq!(rx.stats().epoch_changes, 1);
    assert_eq!(rx.stats().duplicates, 0);
}

/// A new epoch at login is an epoch change, and its Status (another instance,
/// naturally) is not counted as a second restart.
#[test]
fn stream_new_epoch_and_its_instance_count_one_change() {
    let mut rx = stream();
    rx.handle_connected(t(0));
    let _ = requests(&mut rx, t(0));
    rx.handle_packet(t(1), Line::A, &login_ack(E, 1, LoginMode::Resume));
    rx.handle_packet(t(1), Line::A, &status(E, 1, 0, 1, false));
    rx.handle_packet(t(1), Line::A, &data(E, 1, 3));
    rx.handle_disconnected(t(2));
    rx.handle_connected(t(20_000));
    let _ = requests(&mut rx, t(20_000));
    rx.handle_packet(t(20_001), Line::A, &login_ack(E2, 1, LoginMode::Resume));
    rx.handle_packet(t(20_001), Line::A, &status(E2, 1, 0, 2, false));
    rx.handle_packet(t(20_001), Line::A, &data(E2, 1, 2));
    let evs = events(&mut rx);
    assert!(!evs.contains(&Event::Reconnect), "{evs:?}");
    assert_eq!(rx.stats().epoch_changes, 1);
    assert_eq!(rx.stats().validation.restarts_detected, 0);
}

#[test]
fn stream_gap_is_nacked_in_band() {
    let mut rx = stream();
    rx.handle_connected(t(0));
    let _ = requests(&mut rx, t(0));
    rx.handle_packet(t(1), Line::A, &login_ack(E, 1, LoginMode::Resume));
    rx.handle_packet(t(1), Line::A, &data(E, 1, 2));
    rx.handle_packet(t(1), Line::A, &data(E, 5, 2));
    rx.handle_timeout(t(300));
    assert_eq!(requests(&mut rx, t(300)), vec![nack(3, 2)]);
}

// ------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn random_bytes_never_panic(packets in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
            let mut rx = Receiver::new(ReceiverConfig { max_buffered: 64, ..cfg() });
            for p in &packets {
                rx.handle_packet(t(0), Line::A, p);
                // Also a packet with a valid header and CRC around random payload.
                for kind in [1u8, 2, 3, 4, 5, 6, 7] {
                    let q = packet(PacketKind::from_byte(kind), E, u64::from(p.first().copied().unwrap_or(1)), p.len() as u16 / 8, p);
                    rx.handle_packet(t(1), Line::Unicast, &q);
                }
            }
            rx.handle_timeout(t(1_000_000));
            let _ = requests(&mut rx, t(1_000_000));
            let _ = events(&mut rx);
        }
    }

    /// One input of the random-sequence property.
    #[derive(Clone, Debug)]
    enum Op {
        Data { line: u8, first: u64, n: u16, new_epoch: bool },
        Retrans { first: u64, n: u16 },
        Heartbeat { next: u64 },
        Eos { next: u64 },
        Snapshot { s: u64, part: u16, parts: u16 },
        Reject { first: u64, n: u16 },
        Ack { first: u64, snapshot: bool },
        Connected,
        Disconnected,
        Time { us: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..2, 1u64..120, 1u16..6, proptest::bool::weighted(0.03))
                .prop_map(|(line, first, n, new_epoch)| Op::Data { line, first, n, new_epoch }),
            2 => (1u64..120, 1u16..10).prop_map(|(first, n)| Op::Retrans { first, n }),
            1 => (1u64..130).prop_map(|next| Op::Heartbeat { next }),
            1 => (1u64..130).prop_map(|next| Op::Eos { next }),
            2 => (1u64..130, 0u16..2, 1u16..3).prop_map(|(s, part, parts)| Op::Snapshot { s, part: part.min(parts - 1), parts }),
            1 => (1u64..120, 1u16..10).prop_map(|(first, n)| Op::Reject { first, n }),
            1 => (1u64..120, any::<bool>()).prop_map(|(first, snapshot)| Op::Ack { first, snapshot }),
            1 => Just(Op::Connected),
            1 => Just(Op::Disconnected),
            3 => (0u64..20_000).prop_map(|us| Op::Time { us }),
        ]
    }

    /// Checks the delivered stream: messages in sequence, each the right one,
    /// jumps only after a snapshot, an epoch change or an Unrecoverable.
    #[derive(Default)]
    struct Oracle {
        next: Option<u64>,
        in_snapshot: bool,
    }

    impl Oracle {
        fn check(&mut self, ev: &Event) {
            match ev {
                Event::Message { seq, msg, .. } => {
                    assert!(!self.in_snapshot);
                    assert_eq!(*msg, quote(seq.0));
                    if let Some(n) = self.next {
                        assert_eq!(seq.0, n, "out of sequence");
                    }
                    self.next = Some(seq.0 + 1);
                }
                Event::SnapshotStart { .. } => self.in_snapshot = true,
                Event::SymbolState(_) => assert!(self.in_snapshot),
                Event::SnapshotEnd { seq } => {
                    assert!(self.in_snapshot);
                    self.in_snapshot = false;
                    if let Some(n) = self.next {
                        assert!(seq.0 > n, "a snapshot must move forward");
                    }
                    self.next = Some(seq.0);
                }
                Event::EpochChanged { .. } => self.next = None,
                Event::Unrecoverable { range } => {
                    if let Some(n) = self.next {
                        assert!(range.start.0 >= n.min(range.start.0));
                    }
                    self.next = None;
                }
                Event::Reconnect | Event::EndOfSession { .. } => {}
                Event::SymbolStale { .. } | Event::SymbolFresh { .. } => {
                    panic!("stale symbols in feed order")
                }
            }
        }
    }

    fn run(ops: &[Op], mode: Mode, max_buffered: usize) {
        let mut rx =
            Receiver::new(ReceiverConfig { mode, max_buffered, max_snapshot_retries: 1, ..cfg() });
        let mut oracle = Oracle::default();
        let mut now = t(0);
        let mut epoch = E;
        for op in ops {
            match *op {
                Op::Data { line, first, n, new_epoch } => {
                    if new_epoch {
                        epoch += 1;
                    }
                    let line = if line == 0 { Line::A } else { Line::B };
                    rx.handle_packet(now, line, &data(epoch, first, n));
                }
                Op::Retrans { first, n } => {
                    rx.handle_packet(now, Line::Unicast, &retrans(epoch, first, n))
                }
                Op::Heartbeat { next } => rx.handle_packet(now, Line::A, &heartbeat(epoch, next)),
                Op::Eos { next } => rx.handle_packet(now, Line::A, &end_of_session(epoch, next)),
                Op::Snapshot { s, part, parts } => rx.handle_packet(
                    now,
                    Line::Unicast,
                    &snap_part(epoch, s, part, parts, 2, &[state(part as u32 % 2, s)]),
                ),
                Op::Reject { first, n } => {
                    rx.handle_packet(now, Line::Unicast, &nack_reject(epoch, first, n))
                }
                Op::Ack { first, snapshot } => {
                    let mode = if snapshot { LoginMode::Snapshot } else { LoginMode::Resume };
                    rx.handle_packet(now, Line::A, &login_ack(epoch, first, mode))
                }
                Op::Connected => rx.handle_connected(now),
                Op::Disconnected => rx.handle_disconnected(now),
                Op::Time { us } => {
                    now = now + Duration::from_micros(us);
                    rx.handle_timeout(now);
                }
            }
            rx.check_invariants();
            while let Some(ev) = rx.poll_event() {
                oracle.check(&ev);
            }
            let _ = requests(&mut rx, now);
            if let Some(to) = rx.poll_timeout()
                && to <= now
            {
                // Whatever is due must make progress when handled.
                rx.handle_timeout(now);
                let _ = requests(&mut rx, now);
                assert!(
                    rx.poll_timeout().is_none_or(|t2| t2 > now || t2 != to),
                    "timer livelock at {to:?}"
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn random_valid_packets_keep_the_invariants_datagram(ops in proptest::collection::vec(op(), 1..80), big in any::<bool>()) {
            run(&ops, Mode::Datagram, if big { 1024 } else { 8 });
        }

        #[test]
        fn random_valid_packets_keep_the_invariants_stream(ops in proptest::collection::vec(op(), 1..80)) {
            run(&ops, Mode::Stream, 16);
        }
    }
}

// ------------------------------------------------- claims the service checks

#[test]
fn an_end_of_session_below_what_was_seen_is_refused_at_once() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 10));
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 4));
    assert_eq!(sent(&mut rx, t(1)), vec![], "no Probe needed");
    rx.handle_packet(t(2), Line::A, &data(E, 11, 2));
    let evs = events(&mut rx);
    assert_eq!(seqs(&evs), range(1, 13));
    assert!(!evs.iter().any(|e| matches!(e, Event::EndOfSession { .. })));
    assert_eq!(rx.stats().validation.eos_rejected, 1);
}

#[test]
fn a_forged_end_of_session_is_refused_by_the_service() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 4));
    // The service says the session is live at 10: the claim was false, and
    // 4..10 exist (they are NACKed, with the cookie the Status gave).
    assert_eq!(answer_probe(&mut rx, t(1), E, 10, false), vec![]);
    assert!(!events(&mut rx).iter().any(|e| matches!(e, Event::EndOfSession { .. })));
    rx.handle_timeout(t(300));
    assert_eq!(sent(&mut rx, t(300)), vec![(PacketKind::Nack, E, 4, 6, COOKIE)]);
    rx.handle_packet(t(400), Line::Unicast, &retrans(E, 4, 6));
    assert_eq!(seqs(&events(&mut rx)), range(4, 10));
    let v = rx.stats().validation;
    assert_eq!((v.eos_rejected, v.statuses, v.probes_sent, v.cookies_learnt), (1, 1, 1, 1));
}

#[test]
fn an_end_of_session_the_service_never_answers_is_taken_after_the_retries() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 4));
    let mut now = t(1);
    let mut probes = 0;
    let mut evs = events(&mut rx);
    while let Some(next) = rx.poll_timeout() {
        probes += sent(&mut rx, now).iter().filter(|r| r.0 == PacketKind::Probe).count();
        assert!(!evs.iter().any(|e| matches!(e, Event::EndOfSession { .. })));
        now = next;
        rx.handle_timeout(now);
        evs = events(&mut rx);
    }
    assert_eq!(probes as u32, DEFAULT_MAX_PROBE_RETRIES + 1);
    assert_eq!(now, t(1) + DEFAULT_PROBE_TIMEOUT * (DEFAULT_MAX_PROBE_RETRIES + 1));
    assert_eq!(evs, vec![Event::EndOfSession { next: SeqNo(4) }]);
    assert_eq!(rx.stats().validation.eos_unconfirmed, 1);
    assert_eq!(rx.poll_timeout(), None);
}

/// The tail before an end of session nobody confirms was lost too (the
/// server has gone): the end's sequence says it existed, so it is NACKed and,
/// with no answer, given up and counted; the session then ends instead of
/// waiting forever for messages that will never come.
#[test]
fn the_tail_before_an_unconfirmed_end_is_recovered_or_given_up_then_the_session_ends() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    // 4..10 lost; the end says the session stopped at 10.
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 10));
    let mut now = t(1);
    let mut nacked = Vec::new();
    let mut evs = events(&mut rx);
    while let Some(next) = rx.poll_timeout() {
        nacked.extend(sent(&mut rx, now).into_iter().filter(|r| r.0 == PacketKind::Nack));
        assert!(now < t(60_000_000), "the receiver never gave up");
        now = next;
        rx.handle_timeout(now);
        evs.extend(events(&mut rx));
    }
    assert_eq!(rx.stats().validation.eos_unconfirmed, 1);
    assert!(nacked.iter().any(|r| (r.2, r.3) == (4, 6)), "the tail was NACKed: {nacked:?}");
    assert_eq!(rx.stats().unrecovered, 1, "{:?}", rx.stats());
    assert_eq!(evs.last(), Some(&Event::EndOfSession { next: SeqNo(10) }), "{evs:?}");
}

#[test]
fn a_forged_epoch_does_not_switch_the_session() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &heartbeat(E2, 1_000));
    rx.handle_packet(t(1), Line::A, &data(E2, 5, 1));
    assert_eq!(answer_probe(&mut rx, t(1), E, 4, false), vec![]);
    rx.handle_packet(t(2), Line::A, &data(E, 4, 2));
    let evs = events(&mut rx);
    assert_eq!(seqs(&evs), range(1, 6));
    assert_eq!(evs.iter().filter(|e| matches!(e, Event::EpochChanged { .. })).count(), 1);
    assert_eq!(rx.epoch(), Some(E));
    let v = rx.stats().validation;
    assert_eq!((v.epoch_held, v.epoch_rejected, rx.stats().epoch_changes), (2, 1, 0));
}

#[test]
fn a_sequence_far_ahead_is_checked_before_anything_is_skipped_or_nacked() {
    let mut rx = Receiver::new(ReceiverConfig { max_buffered: 64, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &data(E, 10_000_000, 1));
    rx.handle_packet(t(1), Line::A, &heartbeat(E, 20_000_000));
    assert_eq!(answer_probe(&mut rx, t(1), E, 4, false), vec![]);
    // Nothing to NACK, nothing skipped: the real stream goes on.
    for now in [t(500), t(5_000), t(50_000)] {
        rx.handle_timeout(now);
        assert_eq!(sent(&mut rx, now), vec![]);
    }
    rx.handle_packet(t(60_000), Line::A, &data(E, 4, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 7));
    let v = rx.stats().validation;
    assert_eq!((v.far_ahead_held, v.far_ahead_rejected), (2, 1));
    assert_eq!(
        (rx.stats().nacks_sent, rx.stats().unrecovered, rx.stats().snapshot_requests),
        (0, 0, 0)
    );
}

#[test]
fn a_real_jump_beyond_the_window_is_confirmed_then_recovered() {
    let mut rx = Receiver::new(ReceiverConfig { max_buffered: 16, ..cfg() });
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &data(E, 100, 1)); // 4..100 were lost
    // The service confirms the stream is at 101: the hole is real, and too
    // large for the buffer, so it is recovered as any overflow is.
    assert_eq!(answer_probe(&mut rx, t(1), E, 101, false), vec![]);
    rx.handle_timeout(t(300));
    let reqs = sent(&mut rx, t(300));
    assert!(!reqs.is_empty() && reqs.iter().all(|r| r.4 == COOKIE), "{reqs:?}");
    assert_eq!(rx.stats().validation.far_ahead_rejected, 0);
}

#[test]
fn a_restart_with_the_same_epoch_is_told_by_the_instance() {
    let mut rx = Receiver::new(ReceiverConfig { max_buffered: 8, ..cfg() });
    let n = LINE_REGRESSION_SLACK as u16 + 100;
    for first in (1..=n).step_by(1000) {
        rx.handle_packet(t(0), Line::A, &data(E, u64::from(first), 1000.min(n + 1 - first)));
    }
    // Something makes the receiver ask (here a packet far ahead): instance 1.
    rx.handle_packet(t(1), Line::A, &data(E, 100_000, 1));
    assert_eq!(answer_probe_from(&mut rx, t(1), E, u64::from(n) + 1, false, 1), vec![]);
    // A small step back on line A is reordering, or line B lagging: no question.
    rx.handle_packet(t(1), Line::A, &data(E, u64::from(n) - 50, 2));
    rx.handle_packet(t(1), Line::B, &data(E, 1, 2));
    assert_eq!(sent(&mut rx, t(1)), vec![]);
    // The server restarts with the same epoch: line A starts again at 1.
    rx.handle_packet(t(2), Line::A, &data(E, 1, 2));
    assert_eq!(answer_probe_from(&mut rx, t(2), E, 3, false, 2), vec![]);
    let evs = events(&mut rx);
    assert!(evs.contains(&Event::EpochChanged { old: Some(E), new: E }));
    assert_eq!(rx.stats().validation.restarts_detected, 1);
    // The new session from 1 is NACKed and delivered.
    rx.handle_timeout(t(300));
    assert_eq!(sent(&mut rx, t(300)), vec![(PacketKind::Nack, E, 1, 2, COOKIE)]);
    rx.handle_packet(t(400), Line::Unicast, &retrans(E, 1, 2));
    assert_eq!(seqs(&events(&mut rx)), range(1, 3));
}

#[test]
fn a_challenged_nack_goes_out_again_with_the_cookie_at_once() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(0), Line::A, &data(E, 6, 1));
    rx.handle_timeout(t(200));
    assert_eq!(sent(&mut rx, t(200)), vec![(PacketKind::Nack, E, 4, 2, 0)]);
    // The service answers with its challenge (a Status echoing no nonce).
    rx.handle_packet(t(250), Line::Unicast, &status(E, 7, 0, 1, false));
    rx.handle_timeout(t(250));
    assert_eq!(sent(&mut rx, t(250)), vec![(PacketKind::Nack, E, 4, 2, COOKIE)]);
    // A Status of another session, or a forged echo, teaches nothing.
    rx.handle_packet(t(260), Line::Unicast, &status(E2, 7, 0, 1, false));
    rx.handle_packet(t(260), Line::Unicast, &status(E, 7, 12345, 1, true));
    let v = rx.stats().validation;
    assert_eq!((v.cookies_learnt, v.statuses_stale), (1, 2));
    assert!(!events(&mut rx).iter().any(|e| matches!(e, Event::EndOfSession { .. })));
}

/// PROTOCOL.md § 4 (issue 26 item 6): a `Data` packet with a timing block and
/// no message (`count` 0, `payload_len` 16) is a marker like a heartbeat:
/// not malformed, its block ignored, the sequences below its `first_seq`
/// known to exist. A timing flag with a shorter payload is malformed.
#[test]
fn timed_data_with_no_message_is_a_marker_like_a_heartbeat() {
    let timed_empty = |payload_len: usize| {
        let repr = PacketRepr {
            kind: PacketKind::Data,
            flags: FLAG_TIMING,
            epoch: E,
            first_seq: SeqNo(10),
            count: 0,
            send_time: 1_010,
            payload_len,
        };
        let mut buf = vec![0u8; repr.buffer_len()];
        repr.seal(&mut buf);
        buf
    };
    let run = |marker: &[u8]| {
        let mut rx = Receiver::new(cfg());
        rx.handle_packet(t(0), Line::A, &data(E, 1, 5));
        rx.handle_packet(t(1), Line::A, marker);
        let _ = events(&mut rx);
        let s = rx.stats();
        (s.malformed, s.gaps_detected, s.messages_missed)
    };
    let by_heartbeat = run(&heartbeat(E, 10));
    assert_eq!(by_heartbeat, (0, 1, 4), "the heartbeat reveals [6, 10)");
    assert_eq!(run(&timed_empty(TIMING_LEN)), by_heartbeat);
    assert_eq!(run(&timed_empty(TIMING_LEN - 1)).0, 1, "a cut timing block is malformed");
}

fn repair_notice(epoch: u64, first: u64, count: u16) -> Vec<u8> {
    packet(PacketKind::RepairNotice, epoch, first, count, &[])
}

#[test]
fn a_repair_notice_suppresses_the_nack_it_covers_and_a_retry_still_goes() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    // 4..=9 lost; the service announces a repair of 4..=6 before the NACK is due.
    rx.handle_packet(t(10), Line::A, &data(E, 10, 1));
    rx.handle_packet(t(50), Line::A, &repair_notice(E, 4, 3));
    assert_eq!(rx.stats().repair_notices, 1);
    assert_eq!(requests(&mut rx, t(50)), vec![]);
    rx.handle_timeout(t(210));
    assert_eq!(requests(&mut rx, t(210)), vec![nack(7, 3)], "only what was not announced");
    assert!(rx.stats().nacks_suppressed >= 1);
    // The announced repair comes: a subscriber that already had it would
    // drop it as a duplicate.
    rx.handle_packet(t(300), Line::A, &retrans(E, 4, 3));
    rx.handle_packet(t(301), Line::A, &retrans(E, 4, 3));
    assert_eq!(rx.stats().duplicates, 3);
    // 7..=9's repair is lost: the retry asks for it even though a notice of
    // it arrives (it answers this receiver's own NACK).
    rx.handle_packet(t(400), Line::A, &repair_notice(E, 7, 3));
    let retry = rx.poll_timeout().unwrap();
    rx.handle_timeout(retry);
    assert_eq!(requests(&mut rx, retry), vec![nack(7, 3)]);
    rx.handle_packet(retry, Line::Unicast, &retrans(E, 7, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 11));
    assert_eq!(rx.stats().unrecovered, 0);
}

#[test]
fn a_fully_announced_hole_is_nacked_on_retry_if_its_repair_never_comes() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(10), Line::A, &data(E, 6, 1));
    rx.handle_packet(t(20), Line::A, &repair_notice(E, 4, 2));
    rx.handle_timeout(t(210));
    assert_eq!(requests(&mut rx, t(210)), vec![], "treated as requested");
    // The retry timer runs as if the NACK had been sent.
    let retry = rx.poll_timeout().unwrap();
    assert!(retry >= t(210) + DEFAULT_NACK_RETRY_INITIAL, "{retry:?}");
    rx.handle_timeout(retry);
    assert_eq!(requests(&mut rx, retry), vec![nack(4, 2)]);
    // Malformed notices are counted, never acted on.
    rx.handle_packet(retry, Line::A, &repair_notice(E, 0, 2));
    rx.handle_packet(retry, Line::A, &repair_notice(E, 4, 0));
    assert_eq!(rx.stats().malformed, 2);
    assert_eq!(rx.stats().repair_notices, 1);
}

#[test]
fn snapshot_parts_nobody_asked_for_are_dropped_cheaply() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    let states: Vec<SymbolState> = (0..4).map(|s| state(s, 1)).collect();
    rx.handle_packet(t(1), Line::A, &snap_part(E, 2, 0, 1, 4, &states));
    assert_eq!(rx.stats().snapshot_parts_ignored, 1);
    assert_eq!(rx.stats().snapshots_applied, 0);
    assert_eq!(seqs(&events(&mut rx)), range(1, 4));
}

// ------------------------------------------------------- per-symbol order

/// Message `seq` of a per-symbol stream: symbol `seq % 4`, numbered per
/// symbol as the generator does (its `(seq + 3) / 4`-th update).
fn per_symbol_quote(seq: u64) -> Message {
    Message::Quote(Quote {
        symbol: (seq % 4) as u32,
        symbol_seq: seq.div_ceil(4),
        ..quote_fields(seq)
    })
}

fn quote_fields(seq: u64) -> Quote {
    match quote(seq) {
        Message::Quote(q) => q,
        _ => unreachable!(),
    }
}

fn per_symbol_packet(kind: PacketKind, first: u64, n: u16) -> Vec<u8> {
    let mut payload = vec![0u8; 48 * n as usize];
    let mut at = 0;
    for s in first..first + u64::from(n) {
        at += emit_message(&per_symbol_quote(s), &mut payload[at..]).unwrap();
    }
    packet(kind, E, first, n, &payload)
}

/// What the events say, compactly: `M<seq>`, `S<symbol>` (stale), `F<symbol>` (fresh).
fn trace(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Message { seq, .. } => Some(format!("M{}", seq.0)),
            Event::SymbolStale { symbol, reason, .. } => {
                assert_eq!(*reason, StaleReason::Gap);
                Some(format!("S{symbol}"))
            }
            Event::SymbolFresh { symbol, .. } => Some(format!("F{symbol}")),
            _ => None,
        })
        .collect()
}

#[test]
fn per_symbol_order_holds_back_only_the_lost_packets_symbols() {
    let mut rx = Receiver::new(ReceiverConfig { order: Order::PerSymbol, ..cfg() });
    for first in [1, 5] {
        rx.handle_packet(t(0), Line::A, &per_symbol_packet(PacketKind::Data, first, 4));
    }
    assert_eq!(trace(&events(&mut rx)), ["M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8"]);
    // 9 (symbol 1) and 10 (symbol 2) are lost; symbols 3 and 0 go on.
    for first in [11, 13, 15] {
        rx.handle_packet(t(10), Line::A, &per_symbol_packet(PacketKind::Data, first, 2));
    }
    assert_eq!(trace(&events(&mut rx)), ["M11", "M12", "S1", "S2", "M15", "M16"]);
    assert_eq!((rx.stale_symbols(), rx.next_expected().0), (2, 9));
    // 9 comes back: symbol 1's waiting message goes too, though 10 is still missing.
    rx.handle_packet(t(500), Line::Unicast, &per_symbol_packet(PacketKind::Retransmission, 9, 1));
    let evs = events(&mut rx);
    assert_eq!(trace(&evs), ["M9", "M13", "F1"]);
    assert!(
        evs.iter().any(|e| matches!(e, Event::SymbolFresh { stale_for, .. } if *stale_for == Duration::from_micros(490)))
    );
    assert_eq!(rx.next_expected().0, 10);
    // 10 comes back: symbol 2 catches up and the feed order moves past what went ahead.
    rx.handle_packet(t(800), Line::Unicast, &per_symbol_packet(PacketKind::Retransmission, 10, 1));
    assert_eq!(trace(&events(&mut rx)), ["M10", "M14", "F2"]);
    assert_eq!((rx.stale_symbols(), rx.next_expected().0, rx.open_gaps()), (0, 17, 0));
    let st = rx.stats();
    assert_eq!(
        (st.messages_delivered, st.messages_ahead, st.messages_held, st.stale_periods),
        (16, 6, 2, 2)
    );
    assert_eq!(st.stale_ns_total, 490_000 + 790_000);
    // A copy of what went ahead is a duplicate, not a second delivery.
    rx.handle_packet(t(900), Line::B, &per_symbol_packet(PacketKind::Data, 11, 6));
    assert!(trace(&events(&mut rx)).is_empty());
    assert_eq!(rx.stats().duplicates, 6);
}

#[test]
fn per_symbol_snapshot_keeps_symbols_already_past_it() {
    let mut rx = Receiver::new(ReceiverConfig { order: Order::PerSymbol, ..cfg() });
    rx.handle_packet(t(0), Line::A, &per_symbol_packet(PacketKind::Data, 1, 4));
    // 5 (symbol 1's update 2) is lost; the other symbols go ahead, symbol 1's
    // next ones (9, 13) wait.
    for first in [6, 8, 10, 12] {
        rx.handle_packet(t(1), Line::A, &per_symbol_packet(PacketKind::Data, first, 2));
    }
    assert_eq!(
        trace(&events(&mut rx)),
        ["M1", "M2", "M3", "M4", "M6", "M7", "M8", "S1", "M10", "M11", "M12"]
    );
    // The service cannot serve 5: a snapshot consistent at 8 (after 1..=7).
    rx.handle_packet(t(300), Line::Unicast, &nack_reject(E, 5, 1));
    let book = |s: u32| {
        let updates = (1..8).filter(|q| q % 4 == u64::from(s)).count() as u64;
        SymbolState { updates, ..state(s, 8) }
    };
    let states: Vec<SymbolState> = (0..4).map(book).collect();
    rx.handle_packet(t(400), Line::Unicast, &snap_part(E, 8, 0, 1, 4, &states));
    let evs = events(&mut rx);
    // Symbols 0, 2 and 3 were applied past 8 already: their records are
    // older than the cache and are left out; symbol 1 takes its record and
    // its waiting message follows.
    let applied: Vec<u32> = evs
        .iter()
        .filter_map(|e| if let Event::SymbolState(s) = e { Some(s.symbol) } else { None })
        .collect();
    assert_eq!(applied, [1]);
    assert_eq!(trace(&evs), ["M9", "M13", "F1"]);
    assert_eq!(rx.stats().snapshot_records_behind, 3);
    assert_eq!((rx.stale_symbols(), rx.next_expected().0), (0, 14));
}

// ------------------------------------------------ round trips and timers

/// A receiver whose first NACK (2..5, sent at 200 µs) was answered at
/// 260 µs: one 60 µs sample (SRTT 60, RTTVAR 30, RTO max(200, 60 + 120)).
fn measured() -> Receiver {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 5, 1));
    rx.handle_timeout(t(200));
    assert_eq!(requests(&mut rx, t(200)), vec![nack(2, 3)]);
    assert_eq!(rx.stats().rtt.rto_ns, 4_000_000, "the initial RTO before any sample");
    assert_eq!(rx.stats().rtt.samples, 0);
    rx.handle_packet(t(260), Line::Unicast, &retrans(E, 2, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 6));
    rx
}

#[test]
fn a_nack_answered_once_is_an_rtt_sample_and_retries_follow_the_rto() {
    let mut rx = measured();
    let r = rx.stats().rtt;
    assert_eq!((r.samples, r.srtt_ns, r.rttvar_ns, r.latest_ns), (1, 60_000, 30_000, 60_000));
    assert_eq!(r.rto_ns, DEFAULT_NACK_RTO_MIN.as_nanos() as u64, "60 + 4 × 30 = 180: the floor");
    // A second copy of the answer is no sample.
    rx.handle_packet(t(270), Line::Unicast, &retrans(E, 2, 3));
    assert_eq!(rx.stats().rtt.samples, 1);
    // Next hole: 6 lost. Its NACK goes at 1200; unanswered, it is retried
    // after the RTO (200 µs), not after 4 ms, then after twice that.
    rx.handle_packet(t(1000), Line::A, &data(E, 7, 1));
    rx.handle_timeout(t(1200));
    assert_eq!(requests(&mut rx, t(1200)), vec![nack(6, 1)]);
    assert_eq!(rx.poll_timeout(), Some(t(1400)));
    rx.handle_timeout(t(1400));
    assert_eq!(requests(&mut rx, t(1400)), vec![nack(6, 1)], "the retry");
    assert_eq!(rx.poll_timeout(), Some(t(1800)), "doubled");
    // Karn: the answer to a retried range may be to either request: no sample.
    rx.handle_packet(t(1450), Line::Unicast, &retrans(E, 6, 1));
    assert_eq!(seqs(&events(&mut rx)), range(6, 8));
    assert_eq!(rx.stats().rtt.samples, 1);
}

#[test]
fn a_range_coalesced_with_a_retried_hole_gives_no_sample() {
    let mut rx = measured();
    // 6 lost; its NACK goes unanswered.
    rx.handle_packet(t(1000), Line::A, &data(E, 7, 1));
    rx.handle_timeout(t(1200));
    assert_eq!(requests(&mut rx, t(1200)), vec![nack(6, 1)]);
    // 8 lost too, seen before 6's retry: the retry covers both holes.
    rx.handle_packet(t(1250), Line::A, &data(E, 9, 1));
    rx.handle_timeout(t(1450));
    assert_eq!(requests(&mut rx, t(1450)), vec![nack(6, 3)]);
    rx.handle_packet(t(1500), Line::Unicast, &retrans(E, 6, 3));
    assert_eq!(seqs(&events(&mut rx)), range(6, 10));
    assert_eq!(rx.stats().rtt.samples, 1, "6 was asked for twice");
}

#[test]
fn a_probe_answered_by_its_status_is_an_rtt_sample_unless_it_was_retried() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 4));
    let probe = sent(&mut rx, t(1));
    assert_eq!(probe.len(), 1);
    rx.handle_packet(t(81), Line::Unicast, &status(E, 4, probe[0].4, 1, true));
    let r = rx.stats().rtt;
    assert_eq!((r.samples, r.srtt_ns), (1, 80_000));
    // A claim whose Probe is retried (same nonce) before its Status comes.
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 3));
    rx.handle_packet(t(1), Line::A, &end_of_session(E, 4));
    let first = sent(&mut rx, t(1));
    let retry_at = rx.poll_timeout().unwrap();
    rx.handle_timeout(retry_at);
    let again = sent(&mut rx, retry_at);
    assert_eq!(first[0].4, again[0].4, "a retry carries the same nonce");
    rx.handle_packet(
        retry_at + Duration::from_micros(50),
        Line::Unicast,
        &status(E, 4, first[0].4, 1, true),
    );
    assert_eq!(rx.stats().validation.statuses, 1);
    assert_eq!(rx.stats().rtt.samples, 0, "Karn");
}

#[test]
fn fast_retries_give_up_on_a_hole_only_after_rounds_and_time() {
    let mut rx = measured();
    rx.handle_packet(t(1000), Line::A, &data(E, 7, 1));
    let mut rounds = 0u32;
    let mut now;
    let mut at_rounds_only = None;
    let first = t(1200);
    loop {
        now = rx.poll_timeout().unwrap();
        rx.handle_timeout(now);
        let reqs = requests(&mut rx, now);
        if reqs.contains(&snap_req(E)) {
            break;
        }
        rounds += reqs.iter().filter(|r| **r == nack(6, 1)).count() as u32;
        if rounds == DEFAULT_MAX_NACK_RETRIES + 1 && at_rounds_only.is_none() {
            at_rounds_only = Some(now);
        }
        assert!(now < first + Duration::from_secs(1), "never gave up");
    }
    // Rounds alone would have given up after ~51 ms (0.2 ms doubling), in
    // the middle of a loss burst; it waits as long as the fixed timers did.
    let rounds_only = at_rounds_only.unwrap();
    assert!(rounds_only < first + Duration::from_millis(60), "{rounds_only:?}");
    assert!(now >= first + DEFAULT_NACK_GIVE_UP_AFTER, "{now:?}");
    assert!(now < first + DEFAULT_NACK_GIVE_UP_AFTER + DEFAULT_NACK_RETRY_MAX, "{now:?}");
    assert!(rounds > DEFAULT_MAX_NACK_RETRIES + 1);
    assert_eq!(rx.stats().nack_retries_exhausted, 1);
}

#[test]
fn a_repair_notice_stands_for_a_nack_for_one_rto() {
    let mut rx = measured();
    rx.handle_packet(t(1000), Line::A, &data(E, 8, 1));
    rx.handle_packet(t(1020), Line::A, &repair_notice(E, 6, 2));
    rx.handle_timeout(t(1200));
    assert_eq!(requests(&mut rx, t(1200)), vec![], "announced: as good as requested");
    // The announcement lapses with the RTO (200 µs), as the NACK it
    // stands for would have been retried.
    let retry = rx.poll_timeout().unwrap();
    assert_eq!(retry, t(1400));
    rx.handle_timeout(retry);
    assert_eq!(requests(&mut rx, retry), vec![nack(6, 2)]);
}

#[test]
fn the_multicast_nack_spread_is_a_multiple_of_the_round_trip() {
    let rx = Receiver::new(cfg());
    assert_eq!(rx.multicast_jitter(), DEFAULT_MULTICAST_NACK_JITTER, "before any sample");
    let rx = measured();
    assert_eq!(rx.multicast_jitter(), Duration::from_micros(60) * MULTICAST_JITTER_RTTS);
    // Never above the configured spread, never below the unicast one.
    let mut rx = Receiver::new(ReceiverConfig { nack_jitter: Duration::from_micros(300), ..cfg() });
    rx.rtt.on_sample(Duration::from_micros(10));
    assert_eq!(rx.multicast_jitter(), Duration::from_micros(300));
    rx.rtt.on_sample(Duration::from_millis(3));
    assert_eq!(rx.multicast_jitter(), DEFAULT_MULTICAST_NACK_JITTER);
}

#[test]
fn only_a_repair_of_a_hole_never_nacked_shows_other_subscribers() {
    let mut rx = measured();
    // Hole 6: NACKed; its notice and repair come on the group after the
    // RTO ran out (a slow round trip): still its own, it is alone.
    rx.handle_packet(t(1000), Line::A, &data(E, 7, 1));
    rx.handle_timeout(t(1200));
    assert_eq!(requests(&mut rx, t(1200)), vec![nack(6, 1)]);
    rx.handle_packet(t(1450), Line::A, &repair_notice(E, 6, 1));
    rx.handle_packet(t(1451), Line::A, &retrans(E, 6, 1));
    assert!(!rx.peers_seen);
    // A notice of what it already holds says nothing either.
    rx.handle_packet(t(1460), Line::A, &repair_notice(E, 2, 3));
    assert!(!rx.peers_seen);
    // Hole 8 is announced before this receiver NACKed it: someone else did.
    rx.handle_packet(t(2000), Line::A, &data(E, 9, 1));
    rx.handle_packet(t(2050), Line::A, &repair_notice(E, 8, 1));
    assert!(rx.peers_seen);
    // From now on group repairs are no samples (they may answer others).
    let n = rx.stats().rtt.samples;
    rx.handle_packet(t(2060), Line::A, &retrans(E, 8, 1));
    assert_eq!(rx.stats().rtt.samples, n);
    assert_eq!(seqs(&events(&mut rx)), range(6, 10));
}

#[test]
fn the_cookie_challenge_of_the_first_nack_is_an_rtt_sample() {
    let mut rx = Receiver::new(cfg());
    rx.handle_packet(t(0), Line::A, &data(E, 1, 1));
    rx.handle_packet(t(0), Line::A, &data(E, 5, 1));
    rx.handle_timeout(t(200));
    assert_eq!(sent(&mut rx, t(200)), vec![(PacketKind::Nack, E, 2, 3, 0)], "no cookie yet");
    // The service answers with its cookie (echo 0) 70 µs later.
    rx.handle_packet(t(270), Line::Unicast, &status(E, 6, 0, 1, false));
    let r = rx.stats().rtt;
    assert_eq!((r.samples, r.srtt_ns), (1, 70_000));
    // The NACK goes again at once, with the cookie; that one was asked
    // before (Karn): its answer is no sample.
    assert_eq!(sent(&mut rx, t(270)), vec![(PacketKind::Nack, E, 2, 3, COOKIE)]);
    rx.handle_packet(t(330), Line::Unicast, &retrans(E, 2, 3));
    assert_eq!(seqs(&events(&mut rx)), range(1, 6));
    assert_eq!(rx.stats().rtt.samples, 1);
    // Another challenge of the same cookie is no sample.
    rx.handle_packet(t(400), Line::Unicast, &status(E, 6, 0, 1, false));
    assert_eq!(rx.stats().rtt.samples, 1);
}
