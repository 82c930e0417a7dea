//! The request service: NACKs, snapshot requests and TCP Logins, with per-peer
//! token buckets, linger (duplicate suppression) and a bounded peer table.
//!
//! Order of checks for every request: framing and CRC, kind, empty payload,
//! then per kind: its own sanity checks, epoch, range, linger, rate.
//! Whatever fails is counted and answered with nothing.

use super::{IgnoreReason, RequestOutcome, Sequencer, peer_host};
use crate::seq::SeqNo;
use crate::time::Instant;
use crate::wire::{
    DecodeError, FLAG_COOKIE, LoginAckRepr, LoginMode, NackRejectRepr, Packet, PacketKind,
    PacketRepr, StatusRepr, parse_token,
};

use super::peers::Recent;
use super::repair::{MulticastNack, RepairMode};
use super::replies::*;

impl Sequencer {
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
        let host = if self.cfg.limits.validate_addresses { peer_host(peer) } else { peer };
        let outcome = self.dispatch(&mut Answer { peer, host, now, wall_ns, reply }, bytes);
        if let RequestOutcome::Ignored(reason) = outcome {
            let s = &mut self.stats;
            match reason {
                IgnoreReason::Malformed(_) => s.malformed += 1,
                IgnoreReason::WrongEpoch => s.wrong_epoch += 1,
                IgnoreReason::OutOfRange => s.out_of_range += 1,
                IgnoreReason::RateLimited => s.rate_limited += 1,
                IgnoreReason::Duplicate => s.duplicates += 1,
                IgnoreReason::NotARequest(_) => s.not_a_request += 1,
                IgnoreReason::Unvalidated => s.unvalidated += 1,
            }
        }
        outcome
    }

    /// Forget a peer's state (its connection closed).
    pub fn forget_peer(&mut self, peer: u64) {
        self.peers.forget(peer);
        if !self.cfg.limits.validate_addresses {
            // Then the peer is its own host.
            self.hosts.forget(peer);
        }
    }

    /// Peers the service currently tracks.
    pub fn peers_tracked(&self) -> usize {
        self.peers.len()
    }

    fn dispatch(&mut self, a: &mut Answer<'_>, bytes: &[u8]) -> RequestOutcome {
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
            PacketKind::Nack | PacketKind::SnapshotRequest | PacketKind::Probe => true,
            PacketKind::Login => self.cfg.serve_logins,
            _ => false,
        };
        if !served_kind {
            return Ignored(IgnoreReason::NotARequest(repr.kind));
        }
        // The one payload a request may carry is an 8-byte token: a Probe's
        // nonce, or the cookie of a NACK or snapshot request that says so.
        let token = match repr.kind {
            PacketKind::Probe => Some(parse_token(packet.payload())),
            PacketKind::Nack | PacketKind::SnapshotRequest if repr.flags & FLAG_COOKIE != 0 => {
                Some(parse_token(packet.payload()))
            }
            _ if repr.payload_len == 0 => None,
            _ => Some(Err(DecodeError::Malformed("request packets carry no payload"))),
        };
        let token = match token.transpose() {
            Ok(t) => t,
            Err(e) => return Ignored(IgnoreReason::Malformed(e)),
        };
        if repr.kind == PacketKind::Probe {
            return self.serve_probe(a, token.unwrap_or(0));
        }
        if repr.kind != PacketKind::Login && self.cfg.limits.validate_addresses {
            let cookie = self.cookie(a.host);
            if token != Some(cookie) {
                if token.is_some() {
                    self.stats.bad_cookies += 1;
                }
                // The answer to an unvalidated request: the host's cookie, in a Status.
                self.send_status(a, 0);
                return Ignored(IgnoreReason::Unvalidated);
            }
        }
        match repr.kind {
            PacketKind::Nack => self.serve_nack(a, &repr),
            PacketKind::SnapshotRequest => self.serve_snapshot(a, &repr),
            _ => self.serve_login(a, &repr),
        }
    }

    /// The cookie of `host` in this session: a keyed hash of the host and
    /// the epoch, so the service keeps no state per host to check it, and a
    /// cookie of another server instance (another secret) or session fails.
    /// Never 0.
    pub fn cookie(&self, host: u64) -> u64 {
        let mut input = [0u8; 24];
        input[..8].copy_from_slice(b"twcookie");
        input[8..16].copy_from_slice(&host.to_le_bytes());
        input[16..].copy_from_slice(&self.cfg.epoch.to_le_bytes());
        let h = blake3::keyed_hash(&self.cfg.secret, &input);
        let mut c = [0u8; 8];
        c.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(c).max(1)
    }

    /// This server instance's id in Status packets (from the secret: a
    /// restart, even with the same epoch, changes it).
    pub fn instance(&self) -> u64 {
        let h = blake3::keyed_hash(&self.cfg.secret, b"twinstance");
        let mut c = [0u8; 8];
        c.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(c)
    }

    /// Write into the reply buffer the Status that follows every LoginAck on
    /// a stream (no cookie: TCP needs none; `echo` 0); returns its length.
    fn emit_login_status(&mut self, wall_ns: u64) -> usize {
        let body = StatusRepr::login(self.instance(), self.is_ended());
        let next = self.published_next();
        emit_status(&mut self.reply_buf, self.cfg.epoch, wall_ns, next, &body)
    }

    /// The Status that follows a LoginAck on a stream ([`Self::handle_request`]
    /// sends it itself), written into `buf` (at least 72 bytes) for a server
    /// that answers Logins on its own (see [`crate::catchup`]); returns its length.
    pub fn login_status(&self, buf: &mut [u8], wall_ns: u64) -> usize {
        let body = StatusRepr::login(self.instance(), self.is_ended());
        emit_status(buf, self.cfg.epoch, wall_ns, self.published_next(), &body)
    }

    /// A Probe: answer with the session's Status, echoing the nonce.
    fn serve_probe(&mut self, a: &mut Answer<'_>, nonce: u64) -> RequestOutcome {
        self.stats.probes += 1;
        if self.send_status(a, nonce) {
            RequestOutcome::Served
        } else {
            RequestOutcome::Ignored(IgnoreReason::RateLimited)
        }
    }

    /// Send the asking host a Status if its bucket and the global one allow; false if
    /// they did not. Statuses are charged to the host alone: an unvalidated
    /// peer has no state of its own, so a flood from ever new ports (or
    /// forged addresses) cannot evict the peers being served.
    fn send_status(&mut self, a: &mut Answer<'_>, echo: u64) -> bool {
        let now = a.now;
        let slots = Slots { peer: None, host: self.host_slot(a.host, now) };
        if let (allowed, bound) = self.allowance(now, slots)
            && allowed < STATUS_LEN as u64
        {
            self.count_refusal(bound);
            return false;
        }
        let body = StatusRepr {
            cookie: self.cookie(a.host),
            echo,
            instance: self.instance(),
            ended: self.is_ended(),
        };
        let next = self.published_next();
        let len = emit_status(&mut self.reply_buf, self.cfg.epoch, a.wall_ns, next, &body);
        (a.reply)(&self.reply_buf[..len]);
        self.spend(slots, len);
        self.stats.statuses += 1;
        self.stats.reply_packets += 1;
        self.stats.reply_bytes += len as u64;
        true
    }

    /// The peer's slot, counting an eviction.
    fn peer_slot(&mut self, peer: u64, now: Instant) -> usize {
        let (i, evicted) = self.peers.touch(peer, now, self.cfg.limits.burst_bytes);
        if evicted {
            self.stats.peers_evicted += 1;
        }
        i
    }

    /// The host's slot in the host table.
    fn host_slot(&mut self, host: u64, now: Instant) -> usize {
        self.hosts.touch(host, now, self.cfg.limits.host_burst_bytes).0
    }

    /// The slots of the asking peer and its host.
    fn slots(&mut self, a: &Answer<'_>) -> Slots {
        Slots { peer: Some(self.peer_slot(a.peer, a.now)), host: self.host_slot(a.host, a.now) }
    }

    /// Reply bytes that may be sent now: the least of the peer's bucket, its
    /// host's and the service's, and which of them bound it.
    fn allowance(&mut self, now: Instant, slots: Slots) -> (u64, Bound) {
        let l = self.cfg.limits;
        let global = self.global.available(now, l.global_rate_bytes_per_sec, l.global_burst_bytes);
        let host = self.hosts.get_mut(slots.host).bucket.available(
            now,
            l.host_rate_bytes_per_sec,
            l.host_burst_bytes,
        );
        let peer = slots.peer.map_or(u64::MAX, |i| self.peers.get_mut(i).available(now, &l));
        if peer <= host && peer <= global {
            (peer, Bound::Peer)
        } else if host <= global {
            (host, Bound::Host)
        } else {
            (global, Bound::Global)
        }
    }

    /// The request `repr` of the peer in `slot`, to remember once it is
    /// served; `None` if it repeats one served to that peer within the linger.
    fn unrepeated(&mut self, slot: usize, repr: &PacketRepr, now: Instant) -> Option<Recent> {
        let recent = Recent::of(repr, now);
        let linger = self.cfg.limits.linger;
        (!self.peers.get_mut(slot).is_duplicate(&recent, linger)).then_some(recent)
    }

    /// Charge sent reply bytes to every bucket they came out of.
    fn spend(&mut self, slots: Slots, bytes: usize) {
        self.global.charge(bytes);
        self.hosts.get_mut(slots.host).bucket.charge(bytes);
        if let Some(i) = slots.peer {
            self.peers.get_mut(i).bucket.charge(bytes);
        }
    }

    /// Count a refusal by the bucket that caused it (the caller returns
    /// `RateLimited`, which counts it in `rate_limited`).
    fn count_refusal(&mut self, bound: Bound) {
        match bound {
            Bound::Peer => {}
            Bound::Host => self.stats.host_limited += 1,
            Bound::Global => self.stats.global_limited += 1,
        }
    }

    /// A refusal by `bound`, counted.
    fn refuse(&mut self, bound: Bound) -> RequestOutcome {
        self.count_refusal(bound);
        RequestOutcome::Ignored(IgnoreReason::RateLimited)
    }

    fn serve_nack(&mut self, a: &mut Answer<'_>, repr: &PacketRepr) -> RequestOutcome {
        use RequestOutcome::Ignored;
        let now = a.now;
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
        let slots = self.slots(a);
        let slot = slots.peer.expect("a peer slot");
        let Some(recent) = self.unrepeated(slot, repr, now) else {
            return Ignored(IgnoreReason::Duplicate);
        };
        let (available, bound) = self.allowance(now, slots);
        let budget =
            usize::try_from(available).unwrap_or(usize::MAX).min(limits.max_bytes_per_request);
        let oldest = self.store.oldest();
        if s < oldest {
            if budget < NACK_REJECT_LEN {
                return self.refuse(bound);
            }
            let len = emit_nack_reject(
                &mut self.reply_buf,
                self.cfg.epoch,
                a.wall_ns,
                repr,
                NackRejectRepr { oldest, next },
            );
            (a.reply)(&self.reply_buf[..len]);
            self.spend(slots, len);
            self.peers.get_mut(slot).remember(recent);
            self.stats.nack_rejects += 1;
            self.stats.reply_packets += 1;
            self.stats.reply_bytes += len as u64;
            return RequestOutcome::Served;
        }
        let asked_end = s.add(n);
        let end = SeqNo(asked_end.0.min(next.0).min(s.0.saturating_add(limits.max_nack_messages)));
        // A retry from this peer (it was served an overlapping NACK before,
        // past the linger) is not trimmed of what the group was sent: the
        // repair did not reach it.
        let retry = self.peers.get_mut(slot).retries(&recent, limits.linger);
        if self.cfg.repair.mode == RepairMode::Multicast
            && let MulticastNack::Served =
                self.repair_nack_multicast(now, a.wall_ns, s.0, end.0, retry)
        {
            self.peers.get_mut(slot).remember(recent);
            if end < SeqNo(asked_end.0.min(next.0)) {
                self.stats.clipped_requests += 1;
            }
            return RequestOutcome::Served;
        }
        let (served_to, sent) = emit_retransmission(
            &self.store,
            &mut self.reply_buf,
            self.cfg.epoch,
            a.wall_ns,
            s,
            end,
            budget,
            a.reply,
        );
        if sent.packets == 0 {
            return self.refuse(bound);
        }
        if served_to < SeqNo(asked_end.0.min(next.0)) {
            self.stats.clipped_requests += 1;
        }
        self.spend(slots, sent.bytes);
        self.peers.get_mut(slot).remember(recent);
        self.count_retransmission(s, served_to, sent);
        RequestOutcome::Served
    }

    fn serve_snapshot(&mut self, a: &mut Answer<'_>, repr: &PacketRepr) -> RequestOutcome {
        use RequestOutcome::Ignored;
        let now = a.now;
        // Epoch 0: a client that has not seen a packet of this session yet.
        if repr.epoch != self.cfg.epoch && repr.epoch != 0 {
            return Ignored(IgnoreReason::WrongEpoch);
        }
        let limits = self.cfg.limits;
        let slots = self.slots(a);
        let slot = slots.peer.expect("a peer slot");
        let Some(recent) = self.unrepeated(slot, repr, now) else {
            return Ignored(IgnoreReason::Duplicate);
        };
        let total = self.snapshot_bytes();
        let last_snapshot = self.peers.get_mut(slot).last_snapshot;
        if last_snapshot.is_some_and(|t| now < t + limits.snapshot_min_interval) {
            return Ignored(IgnoreReason::RateLimited);
        }
        if self.cfg.repair.mode == RepairMode::Multicast
            && self.repair_snapshot_multicast(now, repr.first_seq)
        {
            let p = self.peers.get_mut(slot);
            p.remember(recent);
            p.last_snapshot = Some(now);
            return RequestOutcome::Served;
        }
        // All parts or none: a snapshot needs buckets holding all of it, or
        // a full per-peer bucket if it is larger than the burst (it then
        // leaves the buckets in debt, which later requests wait out).
        let need = (total as u64).min(limits.burst_bytes);
        if let (allowed, bound) = self.allowance(now, slots)
            && allowed < need
        {
            return self.refuse(bound);
        }
        let image = self.snapshot_image(repr.first_seq);
        let sent = emit_snapshot(
            &self.images[image].states,
            &mut self.reply_buf,
            self.cfg.epoch,
            a.wall_ns,
            self.images[image].at,
            a.reply,
        );
        debug_assert_eq!(sent.bytes, total);
        self.spend(slots, sent.bytes);
        let p = self.peers.get_mut(slot);
        p.remember(recent);
        p.last_snapshot = Some(now);
        self.count_snapshot(sent);
        RequestOutcome::Served
    }

    fn serve_login(&mut self, a: &mut Answer<'_>, repr: &PacketRepr) -> RequestOutcome {
        let now = a.now;
        let slot = self.peer_slot(a.peer, now);
        let Some(recent) = self.unrepeated(slot, repr, now) else {
            return RequestOutcome::Ignored(IgnoreReason::Duplicate);
        };
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
            a.wall_ns,
            from,
            LoginAckRepr { oldest, mode },
        );
        (a.reply)(&self.reply_buf[..len]);
        self.stats.reply_packets += 1;
        self.stats.reply_bytes += len as u64;
        self.stats.logins += 1;
        // The Status names this server instance, so a client that knew the
        // epoch from a server since restarted with it sees the restart (§ 9).
        let len = self.emit_login_status(a.wall_ns);
        (a.reply)(&self.reply_buf[..len]);
        self.stats.statuses += 1;
        self.stats.reply_packets += 1;
        self.stats.reply_bytes += len as u64;
        if mode == LoginMode::Resume {
            // TCP is reliable and flow-controlled: no NACK caps, the window only.
            let (to, sent) = emit_retransmission(
                &self.store,
                &mut self.reply_buf,
                self.cfg.epoch,
                a.wall_ns,
                from,
                next,
                usize::MAX,
                a.reply,
            );
            debug_assert_eq!(to, next);
            self.count_retransmission(from, to, sent);
            self.stats.login_resumes += 1;
        } else {
            let sent = emit_snapshot(
                self.book.states(),
                &mut self.reply_buf,
                self.cfg.epoch,
                a.wall_ns,
                next,
                a.reply,
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
    pub(super) fn snapshot_image(&mut self, wanted: SeqNo) -> usize {
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
        self.stats.snapshot_bytes_unicast += sent.bytes as u64;
        self.stats.reply_packets += sent.packets;
        self.stats.reply_bytes += sent.bytes as u64;
    }
}

/// Who asked, when (the clocks read when the request arrived: monotonic, and
/// wall time for the replies' send stamps), and where its reply packets go.
struct Answer<'r> {
    /// The peer that asked.
    peer: u64,
    /// The host whose buckets it draws on: the peer's address without its
    /// port when addresses are validated, else the peer itself.
    host: u64,
    now: Instant,
    wall_ns: u64,
    reply: &'r mut dyn FnMut(&[u8]),
}

/// The table slots of a request's buckets: the peer's (none for a Status to
/// an unvalidated host) and its host's.
#[derive(Clone, Copy)]
struct Slots {
    peer: Option<usize>,
    host: usize,
}

/// Which bucket bound an allowance.
#[derive(Clone, Copy)]
enum Bound {
    Peer,
    Host,
    Global,
}
