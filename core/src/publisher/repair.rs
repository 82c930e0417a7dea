//! Multicast repair: answering a validated NACK (or snapshot request) once,
//! on the feed's group, for every subscriber that lost the same messages.
//!
//! ```text
//!  validated NACK [F, F+N) ─▶ trim what was repaired (or announced) within the linger
//!        │ nothing left: served (the requester gets the repair on the group)
//!        ▼
//!  group budget holds it? ──no──▶ unicast, as in RepairMode::Unicast (per-requester buckets)
//!        │ yes
//!        ▼
//!  RepairNotice [a, b) ─▶ group queue (at once: other subscribers suppress their NACKs)
//!  pending [a, b) ─(coalesce window, handle_timeout)─▶ Retransmission × n ─▶ group queue
//! ```
//!
//! The group queue is drained with [`Sequencer::poll_group_packet`] and sent
//! by the transport to the feed's group (line A), from the feed's source
//! address: a subscriber that already has the messages drops them as
//! duplicates with one header check.

use std::collections::VecDeque;
use std::time::Duration;

use super::live::LiveQueue;
use super::peers::TokenBucket;
use super::replies::{emit_retransmission, emit_snapshot, seal_reply};
use super::{Sequencer, snapshot_bytes};
use crate::seq::SeqNo;
use crate::time::Instant;
use crate::wire::{HEADER_LEN, PacketKind};

/// Default coalescing window of multicast repairs: 0, the repair goes out
/// on the call that accepted the NACK. Repeated NACKs for the same messages
/// cost nothing without a window (they are trimmed against what was repaired
/// within the repair linger), so a window only merges *different*
/// overlapping ranges, and every µs of it is added to every repair, during
/// which more subscribers' NACK timers run out. Measured in
/// `core/tests/simnet.rs` (16 subscribers, 30 seeds, `SIMNET_REPAIR_COALESCE_US`):
/// a 100 µs window repaired +5% messages at 1% upstream loss and −6% at 5%,
/// received 21% and 12% more NACKs, and added 130–180 µs to the median
/// recovery; a server whose loop rounds timers to 1 ms (mio) would stretch it further.
pub const DEFAULT_REPAIR_COALESCE: Duration = Duration::ZERO;
/// Default repair linger: a NACK overlapping a range multicast within the
/// last 3 ms is trimmed of it. A *retry* of a requester (it was served an
/// overlapping NACK before, past the per-peer linger: the repair did not
/// reach it) is trimmed only of what went out within the per-peer linger
/// (`DEFAULT_LINGER`, 100 µs) and repaired again at once. Longer than the spread of the
/// subscribers' first NACKs for one loss (the receiver's multicast jitter,
/// at most 1.5 ms, plus a round trip), so those cost nothing; shorter than
/// the fixed first retry of receivers that do not measure the round trip
/// (4 ms, `recovery::DEFAULT_NACK_RETRY_INITIAL`), so their retries are
/// served as before (a 10 ms linger made that 12 ms: measured p99 13.8 ms
/// at 1% upstream loss, against 1.x ms with 3 ms). Receivers that retry
/// from a measured RTO (from 200 µs) are told apart by their own earlier
/// request. The per-peer linger (`DEFAULT_LINGER`) applies to multicast
/// NACKs too.
pub const DEFAULT_REPAIR_LINGER: Duration = Duration::from_millis(3);
/// Largest coalescing window accepted: 10 ms, the linger. Beyond it a NACK
/// retry (4 ms, 8 ms) would arrive while the range still waits.
pub const MAX_REPAIR_COALESCE: Duration = Duration::from_millis(10);
/// Default window in which snapshot requests share one multicast snapshot:
/// 2 ms. Late joiners that start together ask within a round trip and a
/// cookie challenge of each other (well under a millisecond on a LAN), and
/// 2 ms is under 1% of the receiver's 250 ms snapshot timeout.
pub const DEFAULT_SNAPSHOT_COALESCE: Duration = Duration::from_millis(2);
/// Default sustained rate of multicast repairs for the whole group: 8 MiB/s.
/// A feed of 1M msgs/s (~45 MB/s) losing 1% upstream needs ~0.5 MB/s of
/// repairs, a 1000-symbol snapshot is 58 KB: 8 MiB/s leaves 16× headroom,
/// and caps what validated requesters together can make every subscriber
/// receive at about a sixth of a 1 Gb/s link.
pub const DEFAULT_GROUP_RATE_BYTES_PER_SEC: u64 = 8 << 20;
/// Default depth of the group bucket: 512 KiB, ten full NACK answers (or
/// eight 1000-symbol snapshots) back to back after a loss burst.
pub const DEFAULT_GROUP_BURST_BYTES: u64 = 512 << 10;
/// Ranges remembered as repaired (or announced and pending) for trimming:
/// 256 ranges cover 10 ms of a feed that loses a packet every 40 µs, and
/// bound the work per NACK. The oldest is forgotten first (a NACK that
/// overlaps it is then repaired again: a cost, never a loss).
pub const MAX_RECENT_REPAIRS: usize = 256;
/// Snapshots waiting for their coalescing window at once: one per kept
/// image ([`super::SNAPSHOT_IMAGES`]), so every waiting one still has its image.
pub const MAX_PENDING_SNAPSHOTS: usize = super::SNAPSHOT_IMAGES;
/// Bytes of a RepairNotice packet (a bare header).
pub const REPAIR_NOTICE_LEN: usize = HEADER_LEN;
/// Messages per NACK range the service handles: a u16 count.
const MAX_RANGE: u64 = u16::MAX as u64;

/// How the request service answers validated NACKs and snapshot requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepairMode {
    /// Each requester gets its own copy by unicast (the default of the core,
    /// which cannot know whether its transport reaches a group).
    Unicast,
    /// Repairs go once to the feed's group ([`Sequencer::poll_group_packet`]);
    /// unicast only when the group budget refuses.
    Multicast,
}

/// Multicast repair settings ([`super::SequencerConfig::repair`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairConfig {
    /// Unicast (default) or multicast.
    pub mode: RepairMode,
    /// See [`DEFAULT_REPAIR_COALESCE`] (at most [`MAX_REPAIR_COALESCE`]).
    pub coalesce: Duration,
    /// See [`DEFAULT_REPAIR_LINGER`].
    pub linger: Duration,
    /// See [`DEFAULT_SNAPSHOT_COALESCE`] (at most [`MAX_REPAIR_COALESCE`]).
    pub snapshot_coalesce: Duration,
    /// See [`DEFAULT_GROUP_RATE_BYTES_PER_SEC`].
    pub group_rate_bytes_per_sec: u64,
    /// See [`DEFAULT_GROUP_BURST_BYTES`].
    pub group_burst_bytes: u64,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            mode: RepairMode::Unicast,
            coalesce: DEFAULT_REPAIR_COALESCE,
            linger: DEFAULT_REPAIR_LINGER,
            snapshot_coalesce: DEFAULT_SNAPSHOT_COALESCE,
            group_rate_bytes_per_sec: DEFAULT_GROUP_RATE_BYTES_PER_SEC,
            group_burst_bytes: DEFAULT_GROUP_BURST_BYTES,
        }
    }
}

/// A range repaired (or announced) at `at`.
#[derive(Clone, Copy, Debug)]
struct Repaired {
    start: u64,
    end: u64,
    at: Instant,
}

/// A range waiting for the coalescing window, with the bytes reserved for it.
#[derive(Clone, Copy, Debug)]
struct PendingRange {
    start: u64,
    end: u64,
    reserved: u64,
}

/// A multicast snapshot waiting for its window.
#[derive(Clone, Copy, Debug)]
struct PendingSnapshot {
    at: SeqNo,
    due: Instant,
    reserved: u64,
}

/// The multicast repair state of a [`Sequencer`].
#[derive(Debug)]
pub(super) struct RepairState {
    recent: VecDeque<Repaired>,
    pending: Vec<PendingRange>,
    pending_due: Option<Instant>,
    snapshots: Vec<PendingSnapshot>,
    /// Bytes promised to pending repairs, not yet charged.
    reserved: u64,
    budget: TokenBucket,
    /// Packets for the group, sealed, waiting for `poll_group_packet`.
    pub(super) out: LiveQueue,
    /// Scratch for range subtraction.
    pieces: Vec<(u64, u64)>,
    next_pieces: Vec<(u64, u64)>,
}

impl RepairState {
    pub(super) fn new(cfg: &RepairConfig, max_packet_len: usize) -> RepairState {
        RepairState {
            recent: VecDeque::with_capacity(MAX_RECENT_REPAIRS),
            pending: Vec::with_capacity(MAX_RECENT_REPAIRS),
            pending_due: None,
            snapshots: Vec::with_capacity(MAX_PENDING_SNAPSHOTS),
            reserved: 0,
            budget: TokenBucket::full(cfg.group_burst_bytes, Instant::ZERO),
            out: LiveQueue::with_capacity(max_packet_len),
            pieces: Vec::with_capacity(MAX_RECENT_REPAIRS + 1),
            next_pieces: Vec::with_capacity(MAX_RECENT_REPAIRS + 1),
        }
    }

    /// The earliest repair timer.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let snap = self.snapshots.iter().map(|s| s.due).min();
        [self.pending_due, snap].into_iter().flatten().min()
    }

    /// Split `[start, end)` into what no range repaired within `linger` (or
    /// pending) covers; the pieces are left in `self.pieces`.
    fn trim(&mut self, start: u64, end: u64, now: Instant, linger: Duration) {
        self.pieces.clear();
        self.pieces.push((start, end));
        let covers = self
            .recent
            .iter()
            .filter(|r| now < r.at + linger)
            .map(|r| (r.start, r.end))
            .chain(self.pending.iter().map(|p| (p.start, p.end)));
        for (cs, ce) in covers {
            if cs >= end || ce <= start {
                continue;
            }
            self.next_pieces.clear();
            for &(ps, pe) in &self.pieces {
                if ps < cs.min(pe) {
                    self.next_pieces.push((ps, cs.min(pe)));
                }
                if ce.max(ps) < pe {
                    self.next_pieces.push((ce.max(ps), pe));
                }
            }
            std::mem::swap(&mut self.pieces, &mut self.next_pieces);
            if self.pieces.is_empty() {
                return;
            }
        }
    }

    fn remember(&mut self, start: u64, end: u64, at: Instant) {
        if self.recent.len() >= MAX_RECENT_REPAIRS {
            self.recent.pop_front();
        }
        self.recent.push_back(Repaired { start, end, at });
    }
}

/// What [`Sequencer::repair_nack_multicast`] decided.
pub(super) enum MulticastNack {
    /// The range is (or will be) repaired on the group.
    Served,
    /// The group budget refused: serve it by unicast.
    Refused,
}

impl Sequencer {
    /// The next packet for the feed's group (RepairNotice, Retransmission,
    /// Snapshot of a multicast repair), stamped with the latest wall time
    /// passed in. Drain it after every [`Self::handle_request`] and
    /// [`Self::handle_timeout`], and send each to the group (line A) from the
    /// feed's source. Always `None` in [`RepairMode::Unicast`].
    #[must_use]
    pub fn poll_group_packet(&mut self) -> Option<&[u8]> {
        self.repair.out.pop(self.last_wall)
    }

    /// Group packets waiting for [`Self::poll_group_packet`].
    pub fn queued_group_packets(&self) -> usize {
        self.repair.out.queued()
    }

    /// Upper bound of the wire bytes of a repair of `[start, end)`: the
    /// stored messages plus one header per packet they can take, plus the
    /// RepairNotice.
    fn repair_estimate(&self, start: u64, end: u64) -> u64 {
        let mut msg_bytes = 0usize;
        for s in start..end {
            match self.store.get(SeqNo(s)) {
                Some(m) => msg_bytes += m.len(),
                None => break,
            }
        }
        // A packet leaves less than one largest message (48 bytes) unused.
        let per = self.cfg.max_packet_len - HEADER_LEN - 48;
        (msg_bytes + HEADER_LEN * msg_bytes.div_ceil(per).max(1) + REPAIR_NOTICE_LEN) as u64
    }

    /// Bytes the group budget holds beyond what pending repairs reserved.
    fn group_available(&mut self, now: Instant) -> u64 {
        let r = self.cfg.repair;
        let avail =
            self.repair.budget.available(now, r.group_rate_bytes_per_sec, r.group_burst_bytes);
        avail.saturating_sub(self.repair.reserved)
    }

    /// A validated NACK for `[start, end)` (inside the window, clipped to
    /// what is published and the per-NACK cap), in multicast mode. `retry`:
    /// the requester was served an overlapping NACK before (past the
    /// per-peer linger), so the repairs sent since did not reach it: it is
    /// trimmed only of what went out within the per-peer linger (still on
    /// its way to it; the other subscribers that lost the same repair retry
    /// at about the same time, and share the next one) and repaired again on
    /// the group, where those others get it too.
    pub(super) fn repair_nack_multicast(
        &mut self,
        now: Instant,
        wall_ns: u64,
        start: u64,
        end: u64,
        retry: bool,
    ) -> MulticastNack {
        let linger = if retry { self.cfg.limits.linger } else { self.cfg.repair.linger };
        self.repair.trim(start, end, now, linger);
        let asked = end - start;
        let left: u64 = self.repair.pieces.iter().map(|(a, b)| b - a).sum();
        if left < asked {
            self.stats.repair_coalesced += 1;
            self.stats.repair_messages_coalesced += asked - left;
        }
        if left == 0 {
            self.stats.multicast_repairs_joined += 1;
            return MulticastNack::Served;
        }
        let pieces = std::mem::take(&mut self.repair.pieces);
        let need: u64 = pieces.iter().map(|&(a, b)| self.repair_estimate(a, b)).sum();
        if self.group_available(now) < need {
            self.repair.pieces = pieces;
            self.stats.repair_budget_refused += 1;
            return MulticastNack::Refused;
        }
        for &(a, b) in &pieces {
            let reserved = self.repair_estimate(a, b);
            self.repair.reserved += reserved;
            self.emit_repair_notice(wall_ns, a, b);
            self.repair.remember(a, b, now);
            self.repair.pending.push(PendingRange { start: a, end: b, reserved });
        }
        self.repair.pieces = pieces;
        self.stats.multicast_repairs += 1;
        let window = self.cfg.repair.coalesce;
        if window.is_zero() || self.repair.pending.len() >= MAX_RECENT_REPAIRS {
            self.flush_repairs(now, wall_ns);
        } else if self.repair.pending_due.is_none() {
            self.repair.pending_due = Some(now + window);
        }
        MulticastNack::Served
    }

    fn emit_repair_notice(&mut self, wall_ns: u64, start: u64, end: u64) {
        let mut buf = [0u8; REPAIR_NOTICE_LEN];
        // Ranges come from one NACK: at most u16::MAX messages.
        let count = (end - start).min(MAX_RANGE) as u16;
        let len = seal_reply(
            &mut buf,
            PacketKind::RepairNotice,
            self.cfg.epoch,
            SeqNo(start),
            count,
            wall_ns,
            0,
        );
        self.repair.out.push(&buf[..len]);
        self.repair.budget.charge(len);
        self.stats.ncf_sent += 1;
        self.stats.repair_bytes_multicast += len as u64;
    }

    /// Send every pending range (merged where they touch) to the group.
    fn flush_repairs(&mut self, now: Instant, wall_ns: u64) {
        self.repair.pending_due = None;
        if self.repair.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.repair.pending);
        pending.sort_unstable_by_key(|p| p.start);
        let mut i = 0;
        while i < pending.len() {
            let (start, mut end) = (pending[i].start, pending[i].end);
            let mut reserved = pending[i].reserved;
            let mut j = i + 1;
            while j < pending.len() && pending[j].start <= end {
                end = end.max(pending[j].end);
                reserved += pending[j].reserved;
                j += 1;
            }
            if j > i + 1 {
                self.stats.repair_ranges_merged += (j - i - 1) as u64;
            }
            self.repair.reserved = self.repair.reserved.saturating_sub(reserved);
            self.send_group_retransmission(now, wall_ns, start, end);
            i = j;
        }
        pending.clear();
        self.repair.pending = pending;
    }

    fn send_group_retransmission(&mut self, now: Instant, wall_ns: u64, start: u64, end: u64) {
        let out = &mut self.repair.out;
        let mut bytes = 0usize;
        let (to, sent) = emit_retransmission(
            &self.store,
            &mut self.reply_buf,
            self.cfg.epoch,
            wall_ns,
            SeqNo(start),
            SeqNo(end),
            usize::MAX,
            &mut |p| {
                bytes += p.len();
                out.push(p);
            },
        );
        debug_assert_eq!(bytes, sent.bytes);
        self.repair.budget.charge(sent.bytes);
        // Linger counts from the repair itself.
        self.repair.remember(start, to.0, now);
        self.stats.repair_messages_multicast += to.0 - start;
        self.stats.repair_packets_multicast += sent.packets;
        self.stats.repair_bytes_multicast += sent.bytes as u64;
        self.stats.retransmitted_messages += to.0 - start;
        self.stats.retransmit_packets += sent.packets;
    }

    /// A validated snapshot request in multicast mode: join a snapshot of
    /// the same image waiting for its window, or schedule one. `false`:
    /// the group budget refused (serve it by unicast).
    pub(super) fn repair_snapshot_multicast(&mut self, now: Instant, wanted: SeqNo) -> bool {
        let next = self.store.next();
        // A named S still kept is sent again; otherwise the image of now.
        let at = if wanted.0 != 0
            && wanted >= self.store.oldest()
            && self.images.iter().any(|im| im.at == wanted)
        {
            wanted
        } else {
            next
        };
        if self.repair.snapshots.iter().any(|p| p.at == at) {
            self.stats.snapshot_requests_joined += 1;
            return true;
        }
        if self.repair.snapshots.len() >= MAX_PENDING_SNAPSHOTS {
            self.stats.repair_budget_refused += 1;
            return false;
        }
        let total = snapshot_bytes(self.cfg.symbols as usize, self.cfg.max_packet_len) as u64;
        let need = total.min(self.cfg.repair.group_burst_bytes);
        if self.group_available(now) < need {
            self.stats.repair_budget_refused += 1;
            return false;
        }
        let image = self.snapshot_image(at);
        let at = self.images[image].at;
        self.repair.reserved += need;
        let due = now + self.cfg.repair.snapshot_coalesce;
        self.repair.snapshots.push(PendingSnapshot { at, due, reserved: need });
        if self.cfg.repair.snapshot_coalesce.is_zero() {
            self.flush_snapshots(now, self.last_wall);
        }
        true
    }

    fn flush_snapshots(&mut self, now: Instant, wall_ns: u64) {
        let mut i = 0;
        while i < self.repair.snapshots.len() {
            let p = self.repair.snapshots[i];
            if p.due > now {
                i += 1;
                continue;
            }
            self.repair.snapshots.swap_remove(i);
            self.repair.reserved = self.repair.reserved.saturating_sub(p.reserved);
            let Some(image) = self.images.iter().position(|im| im.at == p.at) else {
                // Evicted meanwhile: the requesters ask again.
                self.stats.multicast_snapshots_lost += 1;
                continue;
            };
            let out = &mut self.repair.out;
            let sent = emit_snapshot(
                &self.images[image].states,
                &mut self.reply_buf,
                self.cfg.epoch,
                wall_ns,
                p.at,
                &mut |b| out.push(b),
            );
            self.repair.budget.charge(sent.bytes);
            self.stats.multicast_snapshots += 1;
            self.stats.snapshots_served += 1;
            self.stats.snapshot_packets += sent.packets;
            self.stats.snapshot_bytes_multicast += sent.bytes as u64;
            self.stats.repair_bytes_multicast += sent.bytes as u64;
        }
    }

    /// Repair timers (the coalescing windows).
    pub(super) fn handle_repair_timeout(&mut self, now: Instant, wall_ns: u64) {
        if self.repair.pending_due.is_some_and(|d| now >= d) {
            self.flush_repairs(now, wall_ns);
        }
        if self.repair.snapshots.iter().any(|s| now >= s.due) {
            self.flush_snapshots(now, wall_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Message, Side, Trade};
    use crate::publisher::{RequestOutcome, SequencerConfig, peer_host};
    use crate::wire::{FLAG_COOKIE, Packet, PacketRepr, TOKEN_LEN, emit_token};

    /// Small group budget of the budget test: 3 full packets, 10 kB/s.
    const SMALL_BURST: u64 = 3 * 1472;
    const SMALL_RATE: u64 = 10_000;

    fn server(coalesce: Duration) -> Sequencer {
        server_with(coalesce, DEFAULT_GROUP_RATE_BYTES_PER_SEC, DEFAULT_GROUP_BURST_BYTES)
    }

    fn server_with(coalesce: Duration, rate: u64, burst: u64) -> Sequencer {
        let mut cfg = SequencerConfig::new(7, 4);
        cfg.repair.mode = RepairMode::Multicast;
        cfg.repair.coalesce = coalesce;
        cfg.repair.group_rate_bytes_per_sec = rate;
        cfg.repair.group_burst_bytes = burst;
        let mut p = Sequencer::new(cfg);
        for i in 0..100u64 {
            let m = Message::Trade(Trade {
                symbol: 1,
                side: Side::Buy,
                price: 1,
                qty: 1,
                exch_ts: i,
                symbol_seq: 0,
            });
            p.push(Instant(0), 0, &m);
        }
        p.flush(Instant(0), 0);
        while p.poll_packet().is_some() {}
        p
    }

    fn nack(p: &Sequencer, peer: u64, first: u64, count: u16, good_cookie: bool) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN + TOKEN_LEN];
        let cookie = if good_cookie { p.cookie(peer_host(peer)) } else { 0xdead };
        emit_token(&mut b[HEADER_LEN..], cookie);
        PacketRepr {
            kind: PacketKind::Nack,
            flags: FLAG_COOKIE,
            epoch: 7,
            first_seq: SeqNo(first),
            count,
            send_time: 0,
            payload_len: TOKEN_LEN,
        }
        .seal(&mut b);
        b
    }

    /// (kind, first_seq, count) of every group packet queued.
    fn group(p: &mut Sequencer) -> Vec<(PacketKind, u64, u16)> {
        let mut v = Vec::new();
        while let Some(b) = p.poll_group_packet() {
            let k = Packet::new_checked(b).unwrap();
            assert!(k.verify_crc().is_ok());
            v.push((k.kind(), k.first_seq().0, k.count()));
        }
        v
    }

    const A: u64 = (0x0A00_0001 << 16) | 1;
    const B: u64 = (0x0A00_0002 << 16) | 1;
    const C: u64 = (0x0A00_0003 << 16) | 1;

    #[test]
    fn one_repair_for_every_requester() {
        let mut p = server(Duration::ZERO);
        let mut unicast = 0;
        let n = nack(&p, A, 10, 5, true);
        let out = p.handle_request(Instant(1), 1, A, &n, &mut |_| unicast += 1);
        assert_eq!(out, RequestOutcome::Served);
        assert_eq!(
            group(&mut p),
            vec![(PacketKind::RepairNotice, 10, 5), (PacketKind::Retransmission, 10, 5)]
        );
        // Another subscriber asks for the same and more: only the rest goes out.
        let n = nack(&p, B, 10, 8, true);
        assert_eq!(
            p.handle_request(Instant(2), 2, B, &n, &mut |_| unicast += 1),
            RequestOutcome::Served
        );
        assert_eq!(
            group(&mut p),
            vec![(PacketKind::RepairNotice, 15, 3), (PacketKind::Retransmission, 15, 3)]
        );
        // Within the linger, a third subscriber's first NACK of the whole
        // range: nothing (it will see the repair sent).
        let n = nack(&p, C, 11, 6, true);
        let later = Instant(2) + Duration::from_millis(1);
        assert_eq!(
            p.handle_request(later, 3, C, &n, &mut |_| unicast += 1),
            RequestOutcome::Served
        );
        assert!(group(&mut p).is_empty());
        assert_eq!(unicast, 0, "nothing by unicast");
        let s = p.stats();
        assert_eq!((s.multicast_repairs, s.multicast_repairs_joined, s.ncf_sent), (2, 1, 2));
        assert_eq!(s.repair_messages_multicast, 8);
        // B asks again for what it asked before: a retry (its repair was
        // lost), repaired again at once, inside the repair linger.
        let n = nack(&p, B, 11, 6, true);
        assert_eq!(p.handle_request(later, 3, B, &n, &mut |_| {}), RequestOutcome::Served);
        assert_eq!(
            group(&mut p),
            vec![(PacketKind::RepairNotice, 11, 6), (PacketKind::Retransmission, 11, 6)]
        );
        // A copy of that retry within the per-peer linger: a duplicate.
        let copy = later + Duration::from_micros(10);
        assert_eq!(
            p.handle_request(copy, 3, B, &n, &mut |_| {}),
            RequestOutcome::Ignored(super::super::IgnoreReason::Duplicate)
        );
        // After the linger it is repaired again (a retry after a lost repair).
        let n = nack(&p, A, 10, 5, true);
        let t = Instant(1) + DEFAULT_REPAIR_LINGER + Duration::from_micros(1);
        assert_eq!(p.handle_request(t, 4, A, &n, &mut |_| {}), RequestOutcome::Served);
        assert_eq!(group(&mut p).len(), 2);
    }

    #[test]
    fn the_window_merges_ranges_and_its_timer_sends_them() {
        let w = Duration::from_micros(100);
        let mut p = server(w);
        let n = nack(&p, A, 10, 5, true);
        assert_eq!(p.handle_request(Instant(1), 1, A, &n, &mut |_| {}), RequestOutcome::Served);
        let n = nack(&p, B, 15, 5, true);
        assert_eq!(p.handle_request(Instant(2), 2, B, &n, &mut |_| {}), RequestOutcome::Served);
        assert_eq!(
            group(&mut p),
            vec![(PacketKind::RepairNotice, 10, 5), (PacketKind::RepairNotice, 15, 5)]
        );
        assert_eq!(p.poll_timeout(), Some(Instant(1) + w));
        p.handle_timeout(Instant(1) + w, 9);
        assert_eq!(group(&mut p), vec![(PacketKind::Retransmission, 10, 10)]);
        assert_eq!(p.stats().repair_ranges_merged, 1);
    }

    #[test]
    fn forged_cookies_reach_no_group_and_the_budget_falls_back_to_unicast() {
        let mut p = server_with(Duration::ZERO, SMALL_RATE, SMALL_BURST);
        let n = nack(&p, A, 1, 99, false);
        assert_eq!(
            p.handle_request(Instant(1), 1, A, &n, &mut |_| {}),
            RequestOutcome::Ignored(crate::publisher::IgnoreReason::Unvalidated)
        );
        assert!(group(&mut p).is_empty());
        // Drain the group budget with distinct ranges, then the next is unicast.
        let mut unicast = 0u64;
        let mut t = 10u64;
        while p.stats().repair_budget_refused == 0 {
            for first in (1..100).step_by(10) {
                let n = nack(&p, B, first, 10, true);
                t += 1;
                let _ = p.handle_request(Instant(t), t, B, &n, &mut |r| unicast += r.len() as u64);
                let _ = group(&mut p);
            }
            t += DEFAULT_REPAIR_LINGER.as_nanos() as u64;
            assert!(t < 10_000_000_000, "the budget never ran out");
        }
        assert!(unicast > 0, "the refused repair went by unicast");
        let cap = SMALL_BURST + SMALL_RATE * t / 1_000_000_000;
        assert!(p.stats().repair_bytes_multicast <= cap + 1472);
    }
}
