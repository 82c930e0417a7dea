//! The client's recovery state machine: in-order delivery, A/B arbitration, gap
//! detection, NACK retransmission, snapshots, TCP login/resume.
//!
//! [`Receiver`] is sans-IO, in quinn-proto's style: it is fed packets and time
//! (`handle_*`), and answers with events to deliver, request packets to send and
//! the time it wants to be called back (`poll_*`). It never reads a clock and
//! its only randomness (NACK jitter, reconnect jitter) comes from a seeded RNG,
//! so a run is a pure function of its inputs.
//!
//! ```text
//!  packets (line A, B, unicast) ─▶ handle_packet ─▶ ┌──────────────────────┐ ─▶ poll_event: Message, Snapshot*, ...
//!  now ──────────────────────────▶ handle_timeout ─▶ │ reorder buffer, gaps │ ─▶ poll_transmit: Nack, SnapshotRequest, Login
//!  (stream) connected/disconnected ───────────────▶ └──────────────────────┘ ─▶ poll_timeout: when to call back
//! ```
//!
//! # Run loop
//! ```
//! use tickwire_core::recovery::{Event, Receiver, ReceiverConfig};
//! use tickwire_core::{Instant, Line, wire::MAX_PACKET_LEN};
//!
//! let mut rx = Receiver::new(ReceiverConfig::default());
//! let mut req = vec![0u8; MAX_PACKET_LEN];
//! let now = Instant(0);
//! # let received: Vec<(Line, Vec<u8>)> = Vec::new();
//! for (line, bytes) in &received {                   // 1. feed what the transport read
//!     rx.handle_packet(now, *line, bytes);
//! }
//! if rx.poll_timeout().is_some_and(|t| t <= now) {   // 2. timers that are due
//!     rx.handle_timeout(now);
//! }
//! while let Some(ev) = rx.poll_event() {             // 3. deliver, in order
//!     if let Event::Message { seq, msg, .. } = ev { let _ = (seq, msg); }
//! }
//! while let Some(n) = rx.poll_transmit(now, 0, &mut req) {  // 4. send requests
//!     let _request: &[u8] = &req[..n];
//! }
//! // 5. sleep until rx.poll_timeout() or the next packet, then repeat.
//! ```
//!
//! # What it guarantees
//! Messages come out strictly in sequence, each once ([`Order::Strict`], the
//! default); or, with [`Order::PerSymbol`], each once and strictly in
//! sequence per symbol, a message whose symbol's update number follows going
//! ahead of the holes in front of it (see `symbols.rs` and
//! docs/RELIABILITY.md: each symbol receives what strict order gives it). A hole is recovered by
//! NACK (several holes at once, coalesced, capped, retried with back-off); if
//! the server can no longer serve it (NackReject), the NACKs run out, or the
//! reorder buffer overflows, a snapshot consistent at some `S` is applied
//! instead: `SnapshotStart`, one `SymbolState` per symbol, `SnapshotEnd { seq: S }`,
//! after which messages continue from `S`. Only if the snapshot cannot be had
//! either does it give up (`Unrecoverable`) and skip. Every outcome is counted
//! in [`RecoveryStats`].

mod buffer;
mod config;
mod event;
mod gaps;
mod nack;
mod order;
mod resync;
mod rtt;
mod session;
mod snapshot;
mod stats;
mod symbols;
#[cfg(test)]
mod tests;
mod validate;

use config::RETIRED_EPOCHS;
pub use config::*;
pub use event::Event;
pub use rtt::{RTT_GRANULARITY, RttEstimator};
pub use stats::{
    RECOVERY_HISTOGRAM_MAX_NS, RECOVERY_HISTOGRAM_SIGFIG, RecoveryStats, RttStats, ValidationStats,
};
pub use symbols::{MAX_TRACKED_SYMBOLS, StaleReason};

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::Line;
use crate::msg::{Message, SymbolId};
use crate::seq::{SeqNo, SeqRange};
use crate::time::Instant;
use crate::wire::{
    DecodeError, FLAG_COOKIE, FLAG_TIMING, HEADER_LEN, LoginAckRepr, LoginMode, MessageIter,
    NackRejectRepr, Packet, PacketKind, PacketRepr, SnapshotRepr, StatusRepr, TIMING_LEN,
    TOKEN_LEN, Timing, emit_token,
};

use buffer::ReorderBuffer;
use gaps::{Gap, GapList};
use snapshot::{Assembly, PartOutcome};
use symbols::Symbols;
pub use validate::LINE_REGRESSION_SLACK;
use validate::ProbeState;

/// A message's send time (its packet's) and due time (0: unknown).
#[derive(Clone, Copy, Debug)]
struct Times {
    sent: u64,
    due: u64,
}

/// A request waiting for `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tx {
    Login,
    Nack { start: u64, count: u16 },
    SnapshotRequest,
    Probe,
}

/// A NACK range in flight.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    start: u64,
    end: u64,
    deadline: Instant,
    /// When `poll_transmit` handed it out (`None`: not yet, or sampled).
    sent: Option<Instant>,
    /// Some of it was asked for before: its answer gives no RTT sample (Karn).
    retry: bool,
}

/// Where the snapshot machinery stands.
#[derive(Clone, Copy, Debug)]
struct SnapState {
    /// A snapshot is wanted (requested, or announced by a LoginAck).
    active: bool,
    /// When to ask (again).
    deadline: Instant,
    /// Requests re-sent so far.
    retries: u32,
    /// Parts consistent below this are ignored (a stream's LoginAck names `S`).
    min_seq: u64,
}

/// The client's recovery state machine. See the [module docs](self).
///
/// Draining order after any `handle_*` call: [`Self::poll_event`] until `None`,
/// then [`Self::poll_transmit`] until `None`, then sleep until
/// [`Self::poll_timeout`] (calling [`Self::handle_timeout`] when it is reached)
/// or the next packet.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    rng: Xoshiro256PlusPlus,
    /// The session's epoch, once known.
    epoch: Option<u64>,
    retired: [Option<u64>; RETIRED_EPOCHS],
    retired_next: usize,
    /// Sequence state is initialised for the current epoch.
    started: bool,
    /// Messages at `next` may be delivered (false while a late joiner waits for its snapshot).
    synced: bool,
    /// Lowest sequence not yet delivered (provisional while not synced).
    next: u64,
    /// One past the highest sequence known to exist.
    high: u64,
    buf: ReorderBuffer,
    /// Every sequence in `[next, high)` not held in `buf` lies in one of these.
    gaps: GapList,
    /// Scratch space for rebuilding `gaps` after a snapshot.
    scratch: GapList,
    outstanding: Vec<Outstanding>,
    tx: VecDeque<Tx>,
    tx_cap: usize,
    snap: SnapState,
    asm: Assembly,
    end_of_session: Option<u64>,
    eos_emitted: bool,
    connected: bool,
    logged_in: bool,
    reconnect_at: Option<Instant>,
    reconnect_delay: Duration,
    events: VecDeque<Event>,
    stats: RecoveryStats,
    /// The recovery service's cookie for this host, this session.
    cookie: Option<u64>,
    /// The server instance its last Status named.
    instance: Option<u64>,
    probe: ProbeState,
    /// Highest sequence (end of range) seen on lines A and B.
    line_high: [u64; 2],
    /// Ranges whose multicast repair the service announced, and until when
    /// they count as requested (see `nack::Announced`).
    announced: VecDeque<nack::Announced>,
    /// Per-symbol order: update numbers and stale symbols.
    syms: Symbols,
    /// The request round trip (NACK retries, notice suppression, jitter).
    rtt: RttEstimator,
    /// The Probe in flight, for an RTT sample.
    probe_rtt: rtt::ProbeSample,
    /// Another subscriber NACKs on this group: a repair or RepairNotice came
    /// on it for a hole this receiver never NACKed (`rtt::note_foreign_repair`;
    /// what it changes: `nack::first_nack_due`, the RTT samples).
    peers_seen: bool,
}

impl Receiver {
    /// A receiver that knows nothing yet. Allocates all its buffers here.
    pub fn new(mut cfg: ReceiverConfig) -> Receiver {
        cfg.max_buffered = cfg.max_buffered.clamp(1, MAX_BUFFERED_LIMIT);
        cfg.max_outstanding_nacks = cfg.max_outstanding_nacks.max(1);
        cfg.max_nack_len = cfg.max_nack_len.clamp(1, MAX_NACK_COUNT);
        cfg.reconnect_max = cfg.reconnect_max.max(cfg.reconnect_min);
        // A zero timer would re-fire at the same instant: retries would run out
        // without time passing.
        cfg.nack_retry_initial = cfg.nack_retry_initial.max(MIN_TIMER);
        cfg.nack_retry_max = cfg.nack_retry_max.max(cfg.nack_retry_initial);
        cfg.nack_rto_min = cfg.nack_rto_min.max(MIN_TIMER);
        cfg.nack_rto_max = cfg.nack_rto_max.max(cfg.nack_rto_min);
        cfg.snapshot_timeout = cfg.snapshot_timeout.max(MIN_TIMER);
        cfg.reconnect_min = cfg.reconnect_min.max(MIN_TIMER);
        cfg.reconnect_max = cfg.reconnect_max.max(cfg.reconnect_min);
        // NACKs in flight, a snapshot request, a Login, a Probe.
        let tx_cap = cfg.max_outstanding_nacks + 3;
        let rtt = RttEstimator::new(cfg.nack_retry_initial, cfg.nack_rto_min, cfg.nack_rto_max);
        let mut stats = RecoveryStats::new();
        stats.rtt = RttStats::of(&rtt);
        Receiver {
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            epoch: None,
            retired: [None; RETIRED_EPOCHS],
            retired_next: 0,
            started: false,
            synced: false,
            next: 1,
            high: 1,
            buf: ReorderBuffer::new(cfg.max_buffered),
            gaps: GapList::with_capacity(MAX_GAPS),
            scratch: GapList::with_capacity(MAX_GAPS),
            outstanding: Vec::with_capacity(cfg.max_outstanding_nacks),
            tx: VecDeque::with_capacity(tx_cap),
            tx_cap,
            snap: SnapState { active: false, deadline: Instant::ZERO, retries: 0, min_seq: 0 },
            asm: Assembly::default(),
            end_of_session: None,
            eos_emitted: false,
            connected: false,
            logged_in: false,
            reconnect_at: None,
            reconnect_delay: cfg.reconnect_min,
            events: VecDeque::with_capacity(cfg.max_buffered + EVENT_QUEUE_SLACK),
            stats,
            cookie: None,
            instance: None,
            probe: ProbeState::default(),
            line_high: [0; 2],
            announced: VecDeque::with_capacity(MAX_ANNOUNCED_REPAIRS),
            syms: Symbols::default(),
            rtt,
            probe_rtt: rtt::ProbeSample::default(),
            peers_seen: false,
            cfg,
        }
    }

    /// The configuration in force (after clamping).
    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// The next sequence to be delivered.
    pub fn next_expected(&self) -> SeqNo {
        SeqNo(self.next)
    }

    /// The session's epoch, once known.
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// Counters.
    pub fn stats(&self) -> &RecoveryStats {
        &self.stats
    }

    /// True while messages can be delivered (false before the start of a
    /// session is known, and while a late joiner waits for its snapshot).
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Holes currently open.
    pub fn open_gaps(&self) -> usize {
        self.gaps.len()
    }

    /// Per-symbol order: symbols stale now (0 in feed order).
    pub fn stale_symbols(&self) -> u64 {
        self.syms.stale
    }

    // ------------------------------------------------------------------ input

    /// One packet from the transport. It is validated (header, CRC, payload
    /// against its count); a malformed packet or a bad CRC is counted and
    /// dropped. Never panics, whatever the bytes.
    pub fn handle_packet(&mut self, now: Instant, line: Line, bytes: &[u8]) {
        self.stats.packets += 1;
        let packet = match Packet::new_checked(bytes) {
            Ok(p) => p,
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let repr = match PacketRepr::parse(&packet) {
            Ok(r) => r,
            Err(DecodeError::BadCrc { .. }) => {
                self.stats.bad_crc += 1;
                return;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let payload = packet.payload();
        let first = repr.first_seq.0;
        match repr.kind {
            PacketKind::Data | PacketKind::Retransmission => {
                let timed = repr.flags & FLAG_TIMING != 0 && repr.kind == PacketKind::Data;
                let messages = packet.messages();
                if first == 0
                    || first >= MAX_SEQ
                    || (timed && payload.len() < TIMING_LEN)
                    || MessageIter::validate(messages, repr.count).is_err()
                {
                    self.stats.malformed += 1;
                    return;
                }
                let timing = packet.timing().unwrap_or_default();
                if repr.kind == PacketKind::Retransmission && self.epoch == Some(repr.epoch) {
                    self.rtt_retransmission(now, line, first, u64::from(repr.count));
                }
                self.on_messages(now, line, &repr, timing, messages);
            }
            PacketKind::Heartbeat | PacketKind::EndOfSession => {
                if first == 0 || first >= MAX_SEQ || !payload.is_empty() {
                    self.stats.malformed += 1;
                    return;
                }
                self.on_marker(now, line, &repr);
            }
            PacketKind::Snapshot => {
                let part = match SnapshotRepr::parse(payload, repr.count) {
                    Ok(p) if first != 0 && first < MAX_SEQ => p,
                    _ => {
                        self.stats.malformed += 1;
                        return;
                    }
                };
                self.on_snapshot_part(now, &repr, &part);
            }
            PacketKind::LoginAck => match LoginAckRepr::parse(payload) {
                Ok(ack) if first != 0 && first < MAX_SEQ => self.on_login_ack(now, &repr, &ack),
                _ => self.stats.malformed += 1,
            },
            PacketKind::NackReject => match NackRejectRepr::parse(payload) {
                Ok(_) if first < MAX_SEQ => self.on_nack_reject(now, &repr),
                _ => self.stats.malformed += 1,
            },
            PacketKind::Status => match StatusRepr::parse(payload) {
                Ok(st) if first != 0 && first < MAX_SEQ => self.on_status(now, &repr, &st),
                _ => self.stats.malformed += 1,
            },
            PacketKind::RepairNotice => {
                if first == 0 || first >= MAX_SEQ || repr.count == 0 || !payload.is_empty() {
                    self.stats.malformed += 1;
                    return;
                }
                self.on_repair_notice(now, &repr);
            }
            PacketKind::Nack
            | PacketKind::SnapshotRequest
            | PacketKind::Login
            | PacketKind::Probe
            | PacketKind::Unknown(_) => self.stats.unexpected += 1,
        }
        self.prune_outstanding(now);
        self.check_end_of_session();
    }

    /// Stream: the transport connected (or reconnected). Queues a Login for
    /// the known epoch and the next sequence wanted (epoch 0 and sequence 1
    /// when nothing is known yet). No-op in datagram mode.
    pub fn handle_connected(&mut self, _now: Instant) {
        if self.cfg.mode != Mode::Stream {
            return;
        }
        self.connected = true;
        self.logged_in = false;
        self.reconnect_at = None;
        self.tx.clear();
        self.outstanding.clear();
        self.tx.push_back(Tx::Login);
    }

    /// Stream: the connection dropped (or a reconnect failed). Arms the
    /// reconnect timer: the delay doubles from `reconnect_min` to
    /// `reconnect_max` with up to 25 % jitter, and is reset by a successful
    /// login. No-op in datagram mode.
    pub fn handle_disconnected(&mut self, now: Instant) {
        if self.cfg.mode != Mode::Stream {
            return;
        }
        self.connected = false;
        self.logged_in = false;
        self.tx.clear();
        self.outstanding.clear();
        self.snap.active = false;
        self.asm.clear();
        let d = self.reconnect_delay;
        let wait = d + self.jitter(d / 4);
        self.reconnect_at = Some(now + wait);
        self.reconnect_delay = (d * 2).min(self.cfg.reconnect_max);
    }

    /// Timers: reconnect, snapshot timeout, NACKs due. Call when
    /// [`Self::poll_timeout`] is reached (calling early or late is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(t) = self.reconnect_at
            && now >= t
        {
            self.reconnect_at = None;
            self.stats.reconnects += 1;
            self.events.push_back(Event::Reconnect);
        }
        if self.probe.deadline().is_some_and(|t| now >= t) {
            self.probe_timed_out(now);
        }
        if self.snap.active && now >= self.snap.deadline {
            self.snapshot_timed_out(now);
        }
        self.schedule_nacks(now);
    }

    // ----------------------------------------------------------------- output

    /// The next event, in order.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Every pending event, in order, by reference; then they are gone (as
    /// if [`Self::poll_event`] had been called until `None`). The hot path's
    /// way to drain: an event is read where it lies instead of being moved
    /// out (an 88-byte copy per message, and the store-forwarding stall of
    /// reading it back, were a quarter of a busy subscriber's profile).
    pub fn drain_events(&mut self, mut f: impl FnMut(&Event)) {
        let (a, b) = self.events.as_slices();
        a.iter().chain(b).for_each(&mut f);
        self.events.clear();
    }

    /// The next request to send (Login, Nack, SnapshotRequest, Probe),
    /// encoded into `buf` (which needs [`REQUEST_BUF_LEN`] bytes); returns its
    /// length. `wall_ns` is stamped as its send time. NACKs and snapshot
    /// requests carry the recovery service's cookie once it is known.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, wall_ns: u64, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < REQUEST_BUF_LEN {
            return None;
        }
        if self.tx.is_empty() {
            self.schedule_nacks(now);
        }
        let epoch = self.epoch.unwrap_or(0);
        while let Some(item) = self.tx.pop_front() {
            let (kind, epoch, first, count) = match item {
                Tx::Login => {
                    self.stats.logins += 1;
                    if self.started && self.synced {
                        (PacketKind::Login, epoch, self.next, 0)
                    } else {
                        (PacketKind::Login, 0, 1, 0)
                    }
                }
                Tx::Nack { start, count } => {
                    if !self.gaps.intersects(start, start + u64::from(count)) {
                        continue; // filled while it waited
                    }
                    self.stats.nacks_sent += 1;
                    self.stats.nack_messages_requested += u64::from(count);
                    self.rtt_nack_sent(now, start, count);
                    (PacketKind::Nack, epoch, start, count)
                }
                Tx::SnapshotRequest => {
                    self.stats.snapshot_requests += 1;
                    // Name the snapshot whose parts are held (0: none), so the
                    // server resends that one and the parts add up over
                    // requests (a 1000-symbol snapshot is ~40 datagrams; at 20%
                    // loss a fresh one arrives whole with p ≈ 10^-4). Named
                    // even when the feed has moved on past the buffer's reach:
                    // a complete older snapshot still gives a consistent state
                    // (and NACKs or the next snapshot carry on from it), where
                    // fresh ones would never complete and end in giving up.
                    let named = self.asm.seq;
                    (PacketKind::SnapshotRequest, epoch, named, 0)
                }
                Tx::Probe => {
                    if self.probe.deadline().is_none() {
                        continue; // answered while it waited
                    }
                    self.probe.mark_sent();
                    self.probe_rtt.on_sent(now, self.probe.retries() == 0);
                    self.stats.validation.probes_sent += 1;
                    (PacketKind::Probe, epoch, self.next, 0)
                }
            };
            let token = match kind {
                PacketKind::Probe => Some(self.probe.nonce()),
                PacketKind::Nack | PacketKind::SnapshotRequest => self.cookie,
                _ => None,
            };
            let flags = match (kind, token) {
                (PacketKind::Nack | PacketKind::SnapshotRequest, Some(_)) => FLAG_COOKIE,
                _ => 0,
            };
            let payload_len = if token.is_some() { TOKEN_LEN } else { 0 };
            let repr = PacketRepr {
                kind,
                flags,
                epoch,
                first_seq: SeqNo(first),
                count,
                send_time: wall_ns,
                payload_len,
            };
            if let Some(t) = token {
                emit_token(&mut buf[HEADER_LEN..HEADER_LEN + payload_len], t);
            }
            return Some(repr.seal(buf));
        }
        None
    }

    /// When to call [`Self::handle_timeout`] next (may be in the past: call it now).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.reconnect_at;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
        if let Some(d) = self.probe.deadline() {
            consider(d);
        }
        if self.snap.active {
            consider(self.snap.deadline);
        } else if self.can_nack() {
            if self.outstanding.len() < self.cfg.max_outstanding_nacks
                && self.tx.len() < self.tx_cap
            {
                if let Some(d) = self.gaps.gaps.iter().map(|g| g.due).min() {
                    consider(d);
                }
            } else if let Some(d) = self.outstanding.iter().map(|o| o.deadline).min() {
                consider(d);
            }
        }
        t
    }
}

#[cfg(test)]
impl Receiver {
    /// Panics if the internal invariants do not hold (tests only).
    pub(crate) fn check_invariants(&self) {
        let mut prev_end = self.next;
        for g in self.gaps.gaps.iter() {
            assert!(g.start < g.end, "empty gap {g:?}");
            assert!(
                g.start >= prev_end,
                "gaps overlap or lie below next: {g:?}, next {}",
                self.next
            );
            assert!(g.end <= self.high, "gap {g:?} beyond high {}", self.high);
            assert!(
                !self.buf.present(g.start) && !self.buf.present(g.end - 1),
                "gap edge held: {g:?}"
            );
            prev_end = g.end;
        }
        assert!(self.next <= self.high, "next {} > high {}", self.next, self.high);
        let end = self.high.min(self.buf.hi());
        for q in self.next..end {
            if !self.buf.present(q) {
                assert!(self.gaps.find(q).is_some(), "missing {q} not in any gap");
            }
        }
        if self.synced && self.started {
            assert!(!self.buf.present(self.next), "next {} held but not delivered", self.next);
        }
        assert!(self.outstanding.len() <= self.cfg.max_outstanding_nacks);
    }
}
