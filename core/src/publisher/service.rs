//! The request service: NACKs, snapshot requests and TCP Logins, with per-peer
//! token buckets, linger (duplicate suppression) and a bounded peer table.
//!
//! Order of checks for every request: framing and CRC, kind, empty payload,
//! then per kind: its own sanity checks, epoch, range, linger, rate.
//! Whatever fails is counted and answered with nothing.

use std::collections::HashMap;

use super::{IgnoreReason, Publisher, RequestLimits, RequestOutcome, snapshot_parts};
use crate::msg::SymbolState;
use crate::seq::SeqNo;
use crate::time::Instant;
use crate::wire::{
    DecodeError, HEADER_LEN, LoginAck, LoginAckRepr, LoginMode, NackReject, NackRejectRepr, Packet,
    PacketKind, PacketRepr, SnapshotHeader, emit_record,
};

use super::store::RetransmitStore;
use super::{RECORD_LEN, SNAPSHOT_HEADER_LEN};

/// Served requests remembered per peer for linger: 4 covers a client that
/// NACKs a few distinct gaps at once and repeats each, without letting one
/// peer's state grow.
const LINGER_SLOTS: usize = 4;

/// Token-bucket amounts are kept in byte·nanoseconds (bytes × 10^9), so a
/// refill of `rate × elapsed_ns` is exact however often it runs.
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Bytes of a NackReject packet (header + 16-byte body).
const NACK_REJECT_LEN: usize = HEADER_LEN + NackReject::<&[u8]>::LEN;
/// Bytes of a LoginAck packet (header + 16-byte body).
const LOGIN_ACK_LEN: usize = HEADER_LEN + LoginAck::<&[u8]>::LEN;

/// A served request, for linger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recent {
    kind: u8,
    epoch: u64,
    first_seq: u64,
    count: u16,
    at: Instant,
}

/// What the service remembers about one peer.
#[derive(Clone, Debug)]
pub(super) struct PeerState {
    id: u64,
    /// Token bucket in byte·ns; negative after a snapshot larger than the burst.
    tokens: i128,
    refilled_at: Instant,
    last_snapshot: Option<Instant>,
    recent: [Option<Recent>; LINGER_SLOTS],
    recent_next: usize,
}

impl PeerState {
    fn new(id: u64, now: Instant, limits: &RequestLimits) -> PeerState {
        PeerState {
            id,
            tokens: i128::from(limits.burst_bytes) * NANOS_PER_SEC,
            refilled_at: now,
            last_snapshot: None,
            recent: [None; LINGER_SLOTS],
            recent_next: 0,
        }
    }

    /// Refill the bucket up to `now`; returns whole bytes available (0 in debt).
    fn available(&mut self, now: Instant, limits: &RequestLimits) -> u64 {
        let elapsed = i128::from(now.0.saturating_sub(self.refilled_at.0));
        let cap = i128::from(limits.burst_bytes) * NANOS_PER_SEC;
        self.tokens = (self.tokens + elapsed * i128::from(limits.rate_bytes_per_sec)).min(cap);
        if now > self.refilled_at {
            self.refilled_at = now;
        }
        u64::try_from(self.tokens.max(0) / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }

    fn charge(&mut self, bytes: usize) {
        self.tokens -= bytes as i128 * NANOS_PER_SEC;
    }

    fn is_duplicate(&self, r: &Recent, linger: std::time::Duration) -> bool {
        self.recent.iter().flatten().any(|x| {
            x.kind == r.kind
                && x.epoch == r.epoch
                && x.first_seq == r.first_seq
                && x.count == r.count
                && r.at < x.at + linger
        })
    }

    fn remember(&mut self, r: Recent) {
        self.recent[self.recent_next] = Some(r);
        self.recent_next = (self.recent_next + 1) % LINGER_SLOTS;
    }
}

/// "No slot" in the LRU links.
const NIL: usize = usize::MAX;

/// One slot of the peer table: the state and its links in the LRU list.
#[derive(Clone, Debug)]
struct Entry {
    state: PeerState,
    prev: usize,
    next: usize,
}

/// Per-peer state, bounded: when full, the least recently seen peer is
/// evicted. An intrusive doubly linked LRU list over a slab makes lookup,
/// touch, eviction and removal O(1), so a flood of requests from ever new
/// peer ids costs no more per request than one from a known peer.
#[derive(Debug)]
pub(super) struct PeerTable {
    slots: Vec<Entry>,
    free: Vec<usize>,
    index: HashMap<u64, usize>,
    /// Most recently seen.
    head: usize,
    /// Least recently seen: the next to evict.
    tail: usize,
    max: usize,
}

impl PeerTable {
    pub(super) fn new(max: usize) -> PeerTable {
        PeerTable {
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            // Twice the entries: hashbrown then always rehashes in place when
            // eviction tombstones use up its growth room, so churn never allocates.
            index: HashMap::with_capacity(max.saturating_mul(2)),
            head: NIL,
            tail: NIL,
            max,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
        self.slots[i].prev = NIL;
        self.slots[i].next = NIL;
    }

    fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head == NIL {
            self.tail = i;
        } else {
            self.slots[self.head].prev = i;
        }
        self.head = i;
    }

    /// The slot of `peer`, created (evicting the least recently seen peer if
    /// the table is full) if needed. Returns the slot and whether a peer was evicted.
    fn touch(&mut self, peer: u64, now: Instant, limits: &RequestLimits) -> (usize, bool) {
        if let Some(&i) = self.index.get(&peer) {
            self.unlink(i);
            self.push_front(i);
            return (i, false);
        }
        let state = PeerState::new(peer, now, limits);
        let (i, evicted) = if let Some(i) = self.free.pop() {
            self.slots[i].state = state;
            (i, false)
        } else if self.slots.len() < self.max {
            self.slots.push(Entry { state, prev: NIL, next: NIL });
            (self.slots.len() - 1, false)
        } else {
            let victim = self.tail;
            self.unlink(victim);
            self.index.remove(&self.slots[victim].state.id);
            self.slots[victim].state = state;
            (victim, true)
        };
        self.index.insert(peer, i);
        self.push_front(i);
        (i, evicted)
    }

    fn forget(&mut self, peer: u64) {
        if let Some(i) = self.index.remove(&peer) {
            self.unlink(i);
            self.free.push(i);
        }
    }

    fn get_mut(&mut self, i: usize) -> &mut PeerState {
        &mut self.slots[i].state
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

/// What a reply run sent.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    packets: u64,
    bytes: usize,
}

impl Publisher {
    /// Handle a request packet from `peer` (Nack, SnapshotRequest or Login).
    /// Replies go out through `reply`, one complete packet per call, in order.
    /// Any bytes are accepted: what is not a valid request is counted and
    /// ignored. Drain [`Self::poll_packet`] first (see the module docs).
    pub fn handle_request(
        &mut self,
        now: Instant,
        wall_ns: u64,
        peer: u64,
        bytes: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> RequestOutcome {
        self.stats.requests += 1;
        let outcome = self.dispatch(now, wall_ns, peer, bytes, reply);
        if let RequestOutcome::Ignored(reason) = outcome {
            let s = &mut self.stats;
            match reason {
                IgnoreReason::Malformed(_) => s.malformed += 1,
                IgnoreReason::WrongEpoch => s.wrong_epoch += 1,
                IgnoreReason::OutOfRange => s.out_of_range += 1,
                IgnoreReason::RateLimited => s.rate_limited += 1,
                IgnoreReason::Duplicate => s.duplicates += 1,
                IgnoreReason::NotARequest(_) => s.not_a_request += 1,
            }
        }
        outcome
    }

    /// Forget a peer's state (its connection closed).
    pub fn forget_peer(&mut self, peer: u64) {
        self.peers.forget(peer);
    }

    /// Peers the service currently tracks.
    pub fn peers_tracked(&self) -> usize {
        self.peers.len()
    }

    fn dispatch(
        &mut self,
        now: Instant,
        wall_ns: u64,
        peer: u64,
        bytes: &[u8],
        reply: &mut dyn FnMut(&[u8]),
    ) -> RequestOutcome {
        use RequestOutcome::Ignored;
        let packet = match Packet::new_checked(bytes) {
            Ok(p) => p,
            Err(e) => return Ignored(IgnoreReason::Malformed(e)),
        };
        let repr = match PacketRepr::parse(&packet) {
            Ok(r) => r,
            Err(e) => return Ignored(IgnoreReason::Malformed(e)),
        };
        let served_kind = match repr.kind {
            PacketKind::Nack | PacketKind::SnapshotRequest => true,
            PacketKind::Login => self.cfg.serve_logins,
            _ => false,
        };
        if !served_kind {
            return Ignored(IgnoreReason::NotARequest(repr.kind));
        }
        if repr.payload_len != 0 {
            return Ignored(IgnoreReason::Malformed(DecodeError::Malformed(
                "request packets carry no payload",
            )));
        }
        match repr.kind {
            PacketKind::Nack => self.serve_nack(now, wall_ns, peer, &repr, reply),
            PacketKind::SnapshotRequest => self.serve_snapshot(now, wall_ns, peer, &repr, reply),
            _ => self.serve_login(now, wall_ns, peer, &repr, reply),
        }
    }

    /// The peer's slot, counting an eviction.
    fn peer_slot(&mut self, peer: u64, now: Instant) -> usize {
        let (i, evicted) = self.peers.touch(peer, now, &self.cfg.limits);
        if evicted {
            self.stats.peers_evicted += 1;
        }
        i
    }

    fn serve_nack(
        &mut self,
        now: Instant,
        wall_ns: u64,
        peer: u64,
        repr: &PacketRepr,
        reply: &mut dyn FnMut(&[u8]),
    ) -> RequestOutcome {
        use RequestOutcome::Ignored;
        let (s, n) = (repr.first_seq, u64::from(repr.count));
        if n == 0 || s.0 == 0 {
            return Ignored(IgnoreReason::Malformed(DecodeError::Malformed(
                "NACK of zero messages or from sequence 0",
            )));
        }
        if repr.epoch != self.cfg.epoch {
            return Ignored(IgnoreReason::WrongEpoch);
        }
        self.stats.nacks += 1;
        let next = self.store.next();
        if s >= next {
            return Ignored(IgnoreReason::OutOfRange);
        }
        let limits = self.cfg.limits;
        let slot = self.peer_slot(peer, now);
        let recent = Recent {
            kind: PacketKind::Nack.to_byte(),
            epoch: repr.epoch,
            first_seq: s.0,
            count: repr.count,
            at: now,
        };
        if self.peers.get_mut(slot).is_duplicate(&recent, limits.linger) {
            return Ignored(IgnoreReason::Duplicate);
        }
        let available = self.peers.get_mut(slot).available(now, &limits);
        let budget =
            usize::try_from(available).unwrap_or(usize::MAX).min(limits.max_bytes_per_request);
        let oldest = self.store.oldest();
        if s < oldest {
            if budget < NACK_REJECT_LEN {
                return Ignored(IgnoreReason::RateLimited);
            }
            let len = emit_nack_reject(
                &mut self.reply_buf,
                self.cfg.epoch,
                wall_ns,
                repr,
                NackRejectRepr { oldest, next },
            );
            reply(&self.reply_buf[..len]);
            let p = self.peers.get_mut(slot);
            p.charge(len);
            p.remember(recent);
            self.stats.nack_rejects += 1;
            self.stats.reply_packets += 1;
            self.stats.reply_bytes += len as u64;
            return RequestOutcome::Served;
        }
        let asked_end = s.add(n);
        let end = SeqNo(asked_end.0.min(next.0).min(s.0.saturating_add(limits.max_nack_messages)));
        let (served_to, sent) = emit_retransmission(
            &self.store,
            &mut self.reply_buf,
            self.cfg.epoch,
            wall_ns,
            s,
            end,
            budget,
            reply,
        );
        if sent.packets == 0 {
            return Ignored(IgnoreReason::RateLimited);
        }
        if served_to < SeqNo(asked_end.0.min(next.0)) {
            self.stats.clipped_requests += 1;
        }
        let p = self.peers.get_mut(slot);
        p.charge(sent.bytes);
        p.remember(recent);
        self.count_retransmission(s, served_to, sent);
        RequestOutcome::Served
    }

    fn serve_snapshot(
        &mut self,
        now: Instant,
        wall_ns: u64,
        peer: u64,
        repr: &PacketRepr,
        reply: &mut dyn FnMut(&[u8]),
    ) -> RequestOutcome {
        use RequestOutcome::Ignored;
        // Epoch 0: a client that has not seen a packet of this session yet.
        if repr.epoch != self.cfg.epoch && repr.epoch != 0 {
            return Ignored(IgnoreReason::WrongEpoch);
        }
        let limits = self.cfg.limits;
        let slot = self.peer_slot(peer, now);
        let recent = Recent {
            kind: PacketKind::SnapshotRequest.to_byte(),
            epoch: repr.epoch,
            first_seq: repr.first_seq.0,
            count: repr.count,
            at: now,
        };
        let total = self.snapshot_bytes();
        {
            let p = self.peers.get_mut(slot);
            if p.is_duplicate(&recent, limits.linger) {
                return Ignored(IgnoreReason::Duplicate);
            }
            if p.last_snapshot.is_some_and(|t| now < t + limits.snapshot_min_interval) {
                return Ignored(IgnoreReason::RateLimited);
            }
            // All parts or none: a snapshot needs a bucket holding all of it, or
            // a full bucket if it is larger than the burst (it then leaves the
            // bucket in debt, which later requests wait out).
            let need = (total as u64).min(limits.burst_bytes);
            if p.available(now, &limits) < need {
                return Ignored(IgnoreReason::RateLimited);
            }
        }
        let image = self.snapshot_image(repr.first_seq);
        let sent = emit_snapshot(
            &self.images[image].states,
            &mut self.reply_buf,
            self.cfg.epoch,
            wall_ns,
            self.images[image].at,
            reply,
        );
        debug_assert_eq!(sent.bytes, total);
        let p = self.peers.get_mut(slot);
        p.charge(sent.bytes);
        p.remember(recent);
        p.last_snapshot = Some(now);
        self.count_snapshot(sent);
        RequestOutcome::Served
    }

    fn serve_login(
        &mut self,
        now: Instant,
        wall_ns: u64,
        peer: u64,
        repr: &PacketRepr,
        reply: &mut dyn FnMut(&[u8]),
    ) -> RequestOutcome {
        let limits = self.cfg.limits;
        let slot = self.peer_slot(peer, now);
        let recent = Recent {
            kind: PacketKind::Login.to_byte(),
            epoch: repr.epoch,
            first_seq: repr.first_seq.0,
            count: repr.count,
            at: now,
        };
        if self.peers.get_mut(slot).is_duplicate(&recent, limits.linger) {
            return RequestOutcome::Ignored(IgnoreReason::Duplicate);
        }
        self.peers.get_mut(slot).remember(recent);
        let requested = SeqNo(repr.first_seq.0.max(SeqNo::FIRST.0));
        let (oldest, next) = (self.store.oldest(), self.store.next());
        let same_session = repr.epoch == self.cfg.epoch && requested >= oldest && requested <= next;
        let fresh_from_start =
            repr.epoch == 0 && requested == SeqNo::FIRST && oldest == SeqNo::FIRST;
        let (mode, from) = if same_session || fresh_from_start {
            (LoginMode::Resume, requested)
        } else {
            (LoginMode::Snapshot, next)
        };
        let len = emit_login_ack(
            &mut self.reply_buf,
            self.cfg.epoch,
            wall_ns,
            from,
            LoginAckRepr { oldest, mode },
        );
        reply(&self.reply_buf[..len]);
        self.stats.reply_packets += 1;
        self.stats.reply_bytes += len as u64;
        self.stats.logins += 1;
        if mode == LoginMode::Resume {
            // TCP is reliable and flow-controlled: no NACK caps, the window only.
            let (to, sent) = emit_retransmission(
                &self.store,
                &mut self.reply_buf,
                self.cfg.epoch,
                wall_ns,
                from,
                next,
                usize::MAX,
                reply,
            );
            debug_assert_eq!(to, next);
            self.count_retransmission(from, to, sent);
            self.stats.login_resumes += 1;
        } else {
            let sent = emit_snapshot(
                self.book.states(),
                &mut self.reply_buf,
                self.cfg.epoch,
                wall_ns,
                next,
                reply,
            );
            self.count_snapshot(sent);
            self.stats.login_snapshots += 1;
        }
        RequestOutcome::LoginAccepted { mode, resume_from: from }
    }

    fn count_retransmission(&mut self, from: SeqNo, to: SeqNo, sent: Sent) {
        self.stats.retransmitted_messages += to.0 - from.0;
        self.stats.retransmit_packets += sent.packets;
        self.stats.reply_packets += sent.packets;
        self.stats.reply_bytes += sent.bytes as u64;
    }

    /// The image to answer a snapshot request with: the kept one consistent at
    /// `wanted` if the client names one (it holds some of its parts) and it is
    /// still inside the retransmit window (so the client can NACK forward from
    /// it), else the book as it is now, captured into the next slot.
    fn snapshot_image(&mut self, wanted: SeqNo) -> usize {
        let (oldest, next) = (self.store.oldest(), self.store.next());
        let usable = |at: SeqNo| at.0 != 0 && at >= oldest;
        if wanted.0 != 0
            && let Some(i) = self.images.iter().position(|im| im.at == wanted && usable(im.at))
        {
            self.stats.snapshot_images_reused += 1;
            return i;
        }
        if let Some(i) = self.images.iter().position(|im| im.at == next) {
            return i;
        }
        let i = if self.images.len() < super::SNAPSHOT_IMAGES {
            self.images.push(super::SnapshotImage::default());
            self.images.len() - 1
        } else {
            let i = self.image_next;
            self.image_next = (self.image_next + 1) % super::SNAPSHOT_IMAGES;
            i
        };
        let image = &mut self.images[i];
        image.at = next;
        image.states.clear();
        image.states.extend_from_slice(self.book.states());
        i
    }

    fn count_snapshot(&mut self, sent: Sent) {
        self.stats.snapshots_served += 1;
        self.stats.snapshot_packets += sent.packets;
        self.stats.reply_packets += sent.packets;
        self.stats.reply_bytes += sent.bytes as u64;
    }
}

/// Write a header into `buf[..HEADER_LEN]` for a packet whose payload is
/// already in place, and fill its CRC. Returns the packet length.
fn seal_reply(
    buf: &mut [u8],
    kind: PacketKind,
    epoch: u64,
    first_seq: SeqNo,
    count: u16,
    wall_ns: u64,
    payload_len: usize,
) -> usize {
    let len = HEADER_LEN + payload_len;
    let mut p = Packet::new_unchecked(&mut buf[..len]);
    PacketRepr { kind, flags: 0, epoch, first_seq, count, send_time: wall_ns, payload_len }
        .emit(&mut p);
    p.fill_crc();
    len
}

/// Frame the stored messages `[from, to)` into Retransmission packets of at
/// most `buf.len()` bytes, stopping before the total would exceed `budget`.
/// Returns one past the last message sent, and what was sent.
#[allow(clippy::too_many_arguments)]
fn emit_retransmission(
    store: &RetransmitStore,
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    from: SeqNo,
    to: SeqNo,
    budget: usize,
    reply: &mut dyn FnMut(&[u8]),
) -> (SeqNo, Sent) {
    let mut sent = Sent::default();
    let mut s = from;
    while s < to {
        let first = s;
        let mut off = HEADER_LEN;
        while s < to {
            let Some(m) = store.get(s) else { break };
            let end = off + m.len();
            if end > buf.len() || sent.bytes.saturating_add(end) > budget {
                break;
            }
            buf[off..end].copy_from_slice(m);
            off = end;
            s = s.next();
        }
        if s == first {
            break;
        }
        // At most (65536 - 40) / 32 messages per packet: always a u16.
        let count = (s.0 - first.0) as u16;
        let len = seal_reply(
            buf,
            PacketKind::Retransmission,
            epoch,
            first,
            count,
            wall_ns,
            off - HEADER_LEN,
        );
        reply(&buf[..len]);
        sent.packets += 1;
        sent.bytes += len;
    }
    (s, sent)
}

/// Send the whole book as Snapshot parts consistent at `at`.
fn emit_snapshot(
    states: &[SymbolState],
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    at: SeqNo,
    reply: &mut dyn FnMut(&[u8]),
) -> Sent {
    let per = super::records_per_part(buf.len());
    let parts = snapshot_parts(states.len(), buf.len());
    // The configuration check bounds `parts` to u16 and `symbols` to u32.
    let (parts16, symbols) = (parts as u16, states.len() as u32);
    let mut sent = Sent::default();
    for part in 0..parts {
        let chunk = &states[(part * per).min(states.len())..((part + 1) * per).min(states.len())];
        let mut off = HEADER_LEN;
        SnapshotHeader::new_unchecked(&mut buf[off..off + SNAPSHOT_HEADER_LEN]).emit(
            part as u16,
            parts16,
            symbols,
        );
        off += SNAPSHOT_HEADER_LEN;
        for st in chunk {
            emit_record(st, &mut buf[off..off + RECORD_LEN]);
            off += RECORD_LEN;
        }
        let len = seal_reply(
            buf,
            PacketKind::Snapshot,
            epoch,
            at,
            chunk.len() as u16,
            wall_ns,
            off - HEADER_LEN,
        );
        reply(&buf[..len]);
        sent.packets += 1;
        sent.bytes += len;
    }
    sent
}

fn emit_nack_reject(
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    nack: &PacketRepr,
    body: NackRejectRepr,
) -> usize {
    NackReject::new_unchecked(&mut buf[HEADER_LEN..NACK_REJECT_LEN]).emit(&body);
    seal_reply(
        buf,
        PacketKind::NackReject,
        epoch,
        nack.first_seq,
        nack.count,
        wall_ns,
        NACK_REJECT_LEN - HEADER_LEN,
    )
}

fn emit_login_ack(
    buf: &mut [u8],
    epoch: u64,
    wall_ns: u64,
    first_seq: SeqNo,
    body: LoginAckRepr,
) -> usize {
    LoginAck::new_unchecked(&mut buf[HEADER_LEN..LOGIN_ACK_LEN]).emit(&body);
    seal_reply(buf, PacketKind::LoginAck, epoch, first_seq, 0, wall_ns, LOGIN_ACK_LEN - HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RequestLimits {
        RequestLimits { rate_bytes_per_sec: 1000, burst_bytes: 2000, ..RequestLimits::default() }
    }

    #[test]
    fn bucket_refills_exactly_and_caps_at_burst() {
        let l = limits();
        let mut p = PeerState::new(1, Instant(0), &l);
        assert_eq!(p.available(Instant(0), &l), 2000);
        p.charge(1500);
        assert_eq!(p.available(Instant(0), &l), 500);
        // 1 ns at a time for 1 ms: 1000 B/s × 1 ms = 1 byte, not lost to rounding.
        for t in 1..=1_000_000u64 {
            p.available(Instant(t), &l);
        }
        assert_eq!(p.available(Instant(1_000_000), &l), 501);
        assert_eq!(p.available(Instant(10_000_000_000), &l), 2000, "capped at the burst");
        p.charge(5000);
        assert_eq!(p.available(Instant(10_000_000_000), &l), 0, "in debt");
        assert_eq!(p.available(Instant(13_000_000_000), &l), 0, "debt of 3000 repaid");
        assert_eq!(p.available(Instant(13_500_000_000), &l), 500);
    }

    #[test]
    fn linger_matches_only_identical_requests_inside_the_window() {
        let l = RequestLimits { linger: Duration::from_millis(10), ..limits() };
        let mut p = PeerState::new(1, Instant(0), &l);
        let r = Recent { kind: 16, epoch: 1, first_seq: 5, count: 3, at: Instant(0) };
        p.remember(r);
        assert!(p.is_duplicate(&Recent { at: Instant(9_999_999), ..r }, l.linger));
        assert!(!p.is_duplicate(&Recent { at: Instant(10_000_000), ..r }, l.linger));
        assert!(!p.is_duplicate(&Recent { count: 4, ..r }, l.linger));
        assert!(!p.is_duplicate(&Recent { kind: 17, ..r }, l.linger));
    }

    #[test]
    fn peer_table_evicts_least_recently_seen_and_forgets() {
        let l = limits();
        let mut t = PeerTable::new(2);
        assert_eq!(t.touch(10, Instant(1), &l), (0, false));
        assert_eq!(t.touch(20, Instant(2), &l), (1, false));
        assert_eq!(t.touch(10, Instant(3), &l), (0, false));
        // 20 was seen least recently.
        assert_eq!(t.touch(30, Instant(4), &l), (1, true));
        assert!(t.index.contains_key(&10) && t.index.contains_key(&30));
        assert!(!t.index.contains_key(&20));
        // Now 10 is the least recently seen.
        assert_eq!(t.touch(40, Instant(5), &l), (0, true));
        assert!(!t.index.contains_key(&10));
        t.forget(30);
        assert_eq!(t.len(), 1);
        t.forget(99);
        assert_eq!(t.len(), 1);
        // The freed slot is reused without evicting anyone.
        assert_eq!(t.touch(50, Instant(6), &l), (1, false));
        assert_eq!(t.len(), 2);
        assert_eq!(t.touch(60, Instant(7), &l), (0, true), "40 was least recent");
        assert_eq!(t.get_mut(0).id, 60);
    }

    #[test]
    fn peer_table_lru_order_survives_churn() {
        // Against a naive model: a Vec ordered from least to most recent.
        let l = limits();
        let mut t = PeerTable::new(5);
        let mut model: Vec<u64> = Vec::new();
        let mut x = 7u64;
        for step in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let peer = (x >> 33) % 9;
            if (x >> 20) % 5 == 0 {
                t.forget(peer);
                model.retain(|&p| p != peer);
            } else {
                let (_, evicted) = t.touch(peer, Instant(step), &l);
                let known = model.contains(&peer);
                model.retain(|&p| p != peer);
                let model_evicts = !known && model.len() == 5;
                if model_evicts {
                    model.remove(0);
                }
                model.push(peer);
                assert_eq!(evicted, model_evicts, "step {step}");
            }
            assert_eq!(t.len(), model.len());
            let mut order = Vec::new();
            let mut i = t.tail;
            while i != NIL {
                order.push(t.slots[i].state.id);
                i = t.slots[i].prev;
            }
            assert_eq!(order, model, "step {step}");
        }
    }
}
