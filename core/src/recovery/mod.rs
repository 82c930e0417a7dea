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
//! Messages come out strictly in sequence, each once. A hole is recovered by
//! NACK (several holes at once, coalesced, capped, retried with back-off); if
//! the server can no longer serve it (NackReject), the NACKs run out, or the
//! reorder buffer overflows, a snapshot consistent at some `S` is applied
//! instead: `SnapshotStart`, one `SymbolState` per symbol, `SnapshotEnd { seq: S }`,
//! after which messages continue from `S`. Only if the snapshot cannot be had
//! either does it give up (`Unrecoverable`) and skip. Every outcome is counted
//! in [`RecoveryStats`].

mod buffer;
mod gaps;
mod snapshot;
mod stats;
#[cfg(test)]
mod tests;

pub use stats::{RECOVERY_HISTOGRAM_MAX_NS, RECOVERY_HISTOGRAM_SIGFIG, RecoveryStats};

use std::collections::VecDeque;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::Line;
use crate::msg::{Message, SymbolState};
use crate::seq::{SeqNo, SeqRange};
use crate::time::Instant;
use crate::wire::{
    DecodeError, FLAG_TIMING, HEADER_LEN, LoginAckRepr, LoginMode, MessageIter, NackRejectRepr,
    Packet, PacketKind, PacketRepr, SnapshotRepr, TIMING_LEN, Timing,
};

use buffer::ReorderBuffer;
use gaps::{Gap, GapList};
use snapshot::{Assembly, PartOutcome};

/// Wait this long after a hole appears before NACKing it. A copy on the other
/// line or a reordered datagram normally arrives within tens of µs on a LAN;
/// 200 µs avoids NACKing what is merely late while adding little to a recovery
/// that costs a round trip anyway (Aeron waits 100 µs on unicast).
pub const DEFAULT_NACK_DELAY: Duration = Duration::from_micros(200);
/// Random extra delay, uniform in `[0, jitter]`, added to the first NACK of a
/// hole. After a loss every receiver sees the same hole at the same instant;
/// jitter spreads their NACKs so the request server is not hit by one burst.
/// NACKs are unicast here (no suppression by overhearing, unlike Aeron's
/// multicast NAKs with up to 10 ms back-off), so a short spread suffices.
pub const DEFAULT_NACK_JITTER: Duration = Duration::from_micros(300);
/// First retry timeout of an unanswered NACK. A loopback/LAN round trip plus
/// the server's work is well under a millisecond, so 4 ms is generous on a
/// busy 2-core machine. The publisher ignores an identical request repeated
/// within its 10 ms linger (`publisher::DEFAULT_LINGER`); a retry of a range
/// whose answer was lost is therefore served from the second retry on (4 + 8 ms),
/// while a retry after a lost *request*, or of a range that shrank, is served at once.
pub const DEFAULT_NACK_RETRY_INITIAL: Duration = Duration::from_millis(4);
/// Longest retry timeout: the back-off doubles from the initial value up to this.
pub const DEFAULT_NACK_RETRY_MAX: Duration = Duration::from_millis(50);
/// NACK rounds without progress before a hole is handed to a snapshot. Eight
/// rounds (4+8+16+32+50+50+50+50 ms ≈ 260 ms) survive 30 % loss on both the
/// request and the answer path (a round succeeds with p ≈ 0.49) with
/// probability 1 − 0.51⁹ ≈ 99.8 %; a round that brings any of the hole's
/// messages resets the count, so a long hole served in clipped prefixes never
/// runs out.
pub const DEFAULT_MAX_NACK_RETRIES: u32 = 8;
/// NACK ranges in flight at once. Aeron caps active retransmits at 16; more
/// would let one receiver's burst of requests crowd out the server's live path.
pub const DEFAULT_MAX_OUTSTANDING_NACKS: usize = 16;
/// Longest range one NACK asks for, in messages: the publisher serves at most
/// 1024 messages per NACK (`publisher::DEFAULT_MAX_NACK_MESSAGES`, ~49 KB of
/// answers) and clips the rest, so a longer hole is asked for as several
/// 1024-message ranges at once rather than one range re-asked round after round.
pub const DEFAULT_MAX_NACK_LEN: u64 = 1024;
/// The wire's limit on one NACK: its count field is a `u16`.
pub const MAX_NACK_COUNT: u64 = u16::MAX as u64;
/// Two holes this close (messages already held between them) are requested as
/// one range: re-receiving up to 8 messages (≈400 bytes) is cheaper than one
/// more request, its processing and its answer's packet.
pub const NACK_COALESCE_MAX_HOLE: u64 = 8;
/// Messages held out of order while a hole is recovered (and live data kept
/// while a snapshot is fetched). 262 144 messages hold ~1.3 s of a 200 k msg/s
/// feed (~260 ms at 1 M msg/s) in about 20 MB, allocated once: enough to
/// assemble a 40-part snapshot over a path losing 20% of packets in both
/// directions (a few request rounds of `DEFAULT_SNAPSHOT_TIMEOUT`) before the
/// live data buffered meanwhile overflows. With 65 536 (~330 ms at 200 k/s)
/// such a client lived on successive snapshots. Overflow → snapshot.
pub const DEFAULT_MAX_BUFFERED: usize = 1 << 18;
/// Upper bound on `max_buffered` accepted from a configuration (16 M messages,
/// ~1.3 GB): beyond this a configuration error, not a wish, is assumed.
pub const MAX_BUFFERED_LIMIT: usize = 1 << 24;
/// How long to wait for a complete snapshot before asking again. A snapshot of
/// 10 000 symbols is ~560 KB, a few ms on a LAN. The publisher serves one peer
/// at most one snapshot per 100 ms (`publisher::DEFAULT_SNAPSHOT_MIN_INTERVAL`):
/// 250 ms re-asks quickly when the *request* was lost (it was never served),
/// and is already past that interval when a lost *answer* must be served again.
pub const DEFAULT_SNAPSHOT_TIMEOUT: Duration = Duration::from_millis(250);
/// Snapshot requests after the first before giving up (`Unrecoverable`):
/// twelve (3 s, about six served answers at the publisher's interval) ride out
/// heavy loss; giving up means the server is gone or unreachable.
pub const DEFAULT_MAX_SNAPSHOT_RETRIES: u32 = 12;
/// First reconnect delay (stream). Short: a dropped connection to a live server
/// should come back fast.
pub const DEFAULT_RECONNECT_MIN: Duration = Duration::from_millis(10);
/// Longest reconnect delay: a server that is down is probed every 2 s at most.
pub const DEFAULT_RECONNECT_MAX: Duration = Duration::from_secs(2);
/// Largest snapshot (symbols) accepted. A million symbols covers every listed
/// instrument of the major exchanges and bounds what one header can make the
/// receiver allocate (64 B per symbol: 64 MB).
pub const DEFAULT_MAX_SNAPSHOT_SYMBOLS: u32 = 1 << 20;
/// Distinct holes tracked at once. Beyond this a new hole is merged into the
/// last one; NACKs are built from the buffer, so merging loses no precision,
/// only per-hole timing. 4096 holes is far past any loss a NACK can fix.
pub const MAX_GAPS: usize = 4096;
/// Sequences at or above this are rejected as malformed: no session reaches
/// 2⁶² messages (146 years at 10⁹/s), and the bound keeps `seq + count + window`
/// arithmetic free of overflow whatever a packet claims.
pub const MAX_SEQ: u64 = 1 << 62;
/// Events the queue holds beyond `max_buffered` before it has to grow: room
/// for the control events (epoch, snapshot start/end, unrecoverable) around a
/// full buffer's worth of messages released at once.
pub const EVENT_QUEUE_SLACK: usize = 1024;
/// Shortest retry, snapshot and reconnect timeout accepted from a
/// configuration: a zero timeout would fire again at the same instant and use
/// up its retries without any time passing.
pub const MIN_TIMER: Duration = Duration::from_micros(1);
/// Epochs remembered as finished: packets of a retired session still in flight
/// after a restart must not flip the receiver back to it.
const RETIRED_EPOCHS: usize = 4;

/// How the transport carries the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Multicast or AF_XDP datagrams, possibly on two lines (A/B): holes are
    /// NACKed and snapshots requested over the unicast request channel.
    Datagram,
    /// TCP: the client logs in (resuming from a sequence); the server answers
    /// with a retransmission or a snapshot. A hole on the stream (should not
    /// happen) is still NACKed in-band.
    Stream,
}

/// What a client joining a session already under way does (datagram mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LateJoin {
    /// Fetch a snapshot and merge into the live stream after it (the default):
    /// the client's state is complete.
    Snapshot,
    /// Start delivering from the first sequence seen; earlier state is unknown.
    FromFirstSeen,
}

/// Configuration of a [`Receiver`]. Every default is a named constant whose
/// doc says why.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Datagram (NACK + snapshot) or stream (login/resume).
    pub mode: Mode,
    /// Seed of the jitter RNG (Xoshiro256PlusPlus): same inputs, same seed → same run.
    pub seed: u64,
    /// See [`DEFAULT_NACK_DELAY`].
    pub nack_delay: Duration,
    /// See [`DEFAULT_NACK_JITTER`].
    pub nack_jitter: Duration,
    /// See [`DEFAULT_NACK_RETRY_INITIAL`].
    pub nack_retry_initial: Duration,
    /// See [`DEFAULT_NACK_RETRY_MAX`].
    pub nack_retry_max: Duration,
    /// See [`DEFAULT_MAX_NACK_RETRIES`].
    pub max_nack_retries: u32,
    /// See [`DEFAULT_MAX_OUTSTANDING_NACKS`] (at least 1).
    pub max_outstanding_nacks: usize,
    /// See [`DEFAULT_MAX_NACK_LEN`] (clamped to `1..=`[`MAX_NACK_COUNT`]).
    pub max_nack_len: u64,
    /// See [`DEFAULT_MAX_BUFFERED`] (clamped to `1..=`[`MAX_BUFFERED_LIMIT`]).
    pub max_buffered: usize,
    /// See [`DEFAULT_SNAPSHOT_TIMEOUT`].
    pub snapshot_timeout: Duration,
    /// See [`DEFAULT_MAX_SNAPSHOT_RETRIES`].
    pub max_snapshot_retries: u32,
    /// See [`DEFAULT_RECONNECT_MIN`].
    pub reconnect_min: Duration,
    /// See [`DEFAULT_RECONNECT_MAX`].
    pub reconnect_max: Duration,
    /// What a late joiner does (datagram mode; a stream's server decides).
    pub late_join: LateJoin,
    /// See [`DEFAULT_MAX_SNAPSHOT_SYMBOLS`].
    pub max_snapshot_symbols: u32,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            mode: Mode::Datagram,
            seed: 0,
            nack_delay: DEFAULT_NACK_DELAY,
            nack_jitter: DEFAULT_NACK_JITTER,
            nack_retry_initial: DEFAULT_NACK_RETRY_INITIAL,
            nack_retry_max: DEFAULT_NACK_RETRY_MAX,
            max_nack_retries: DEFAULT_MAX_NACK_RETRIES,
            max_outstanding_nacks: DEFAULT_MAX_OUTSTANDING_NACKS,
            max_nack_len: DEFAULT_MAX_NACK_LEN,
            max_buffered: DEFAULT_MAX_BUFFERED,
            snapshot_timeout: DEFAULT_SNAPSHOT_TIMEOUT,
            max_snapshot_retries: DEFAULT_MAX_SNAPSHOT_RETRIES,
            reconnect_min: DEFAULT_RECONNECT_MIN,
            reconnect_max: DEFAULT_RECONNECT_MAX,
            late_join: LateJoin::Snapshot,
            max_snapshot_symbols: DEFAULT_MAX_SNAPSHOT_SYMBOLS,
        }
    }
}

/// A message's send time (its packet's) and due time (0: unknown).
#[derive(Clone, Copy, Debug)]
struct Times {
    sent: u64,
    due: u64,
}

/// What the receiver reports. Copy types only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// The next message, in sequence.
    Message {
        /// Its sequence number.
        seq: SeqNo,
        /// The message.
        msg: Message,
        /// The `send_time` of the packet that carried it (ns since the Unix epoch).
        send_time: u64,
        /// When it was due at the exchange (ns since the Unix epoch), from the
        /// Data packet's timing block; 0 when the packet carried none (a
        /// Retransmission, or a server that does not stamp due times).
        due_time: u64,
        /// True when it came by retransmission or waited in the reorder buffer
        /// (its latency is not the feed's latency).
        recovered: bool,
    },
    /// A snapshot consistent at `seq` follows: `SymbolState` events, then `SnapshotEnd`.
    SnapshotStart {
        /// The snapshot is the state after every message below `seq`.
        seq: SeqNo,
        /// Symbols the snapshot announces.
        symbols: u32,
    },
    /// One symbol's state in the snapshot; replace the cached state with it.
    SymbolState(SymbolState),
    /// The client's state now equals the server's after every message below
    /// `seq`; `Message` events continue from `seq`.
    SnapshotEnd {
        /// Where messages continue.
        seq: SeqNo,
    },
    /// The session's epoch is learnt (`old: None`, the first one) or changed
    /// (the server restarted: sequences restart; reset the state).
    EpochChanged {
        /// The previous epoch, if any.
        old: Option<u64>,
        /// The new one.
        new: u64,
    },
    /// Stream: reconnect the transport now (then call `handle_connected`, or
    /// `handle_disconnected` if it fails).
    Reconnect,
    /// The session ended; every message below `next` has been delivered.
    EndOfSession {
        /// One past the session's last message.
        next: SeqNo,
    },
    /// The receiver gave up on `range`: neither retransmission nor a snapshot
    /// could be had. Messages continue after it. Should not happen while the
    /// server is up.
    Unrecoverable {
        /// What was given up.
        range: SeqRange,
    },
}

/// A request waiting for `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tx {
    Login,
    Nack { start: u64, count: u16 },
    SnapshotRequest,
}

/// A NACK range in flight.
#[derive(Clone, Copy, Debug)]
struct Outstanding {
    start: u64,
    end: u64,
    deadline: Instant,
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
        cfg.snapshot_timeout = cfg.snapshot_timeout.max(MIN_TIMER);
        cfg.reconnect_min = cfg.reconnect_min.max(MIN_TIMER);
        cfg.reconnect_max = cfg.reconnect_max.max(cfg.reconnect_min);
        let tx_cap = cfg.max_outstanding_nacks + 2;
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
            stats: RecoveryStats::new(),
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
                self.on_messages(now, line, &repr, timing, messages);
            }
            PacketKind::Heartbeat | PacketKind::EndOfSession => {
                if first == 0 || first >= MAX_SEQ || !payload.is_empty() {
                    self.stats.malformed += 1;
                    return;
                }
                self.on_marker(now, &repr);
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
            PacketKind::Nack
            | PacketKind::SnapshotRequest
            | PacketKind::Login
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

    /// The next request to send (Login, Nack, SnapshotRequest), encoded into
    /// `buf` (which needs [`HEADER_LEN`] bytes); returns its length. `wall_ns`
    /// is stamped as its send time.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, wall_ns: u64, buf: &mut [u8]) -> Option<usize> {
        if buf.len() < HEADER_LEN {
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
            };
            let repr = PacketRepr {
                kind,
                flags: 0,
                epoch,
                first_seq: SeqNo(first),
                count,
                send_time: wall_ns,
                payload_len: 0,
            };
            return Some(repr.emit_bare(buf));
        }
        None
    }

    /// When to call [`Self::handle_timeout`] next (may be in the past: call it now).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = self.reconnect_at;
        let mut consider = |x: Instant| t = Some(t.map_or(x, |t| t.min(x)));
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

    // ------------------------------------------------------------- internals

    fn jitter(&mut self, max: Duration) -> Duration {
        let m = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if m == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next_u64() % m.saturating_add(1))
    }

    fn first_nack_due(&mut self, now: Instant) -> Instant {
        let j = self.jitter(self.cfg.nack_jitter);
        now + self.cfg.nack_delay + j
    }

    fn backoff(&self, retries: u32) -> Duration {
        let f = 1u32 << retries.min(20);
        (self.cfg.nack_retry_initial * f).min(self.cfg.nack_retry_max)
    }

    fn can_nack(&self) -> bool {
        self.started && !self.snap.active && (self.cfg.mode == Mode::Datagram || self.logged_in)
    }

    fn is_retired(&self, epoch: u64) -> bool {
        self.retired.contains(&Some(epoch))
    }

    /// A live packet (data, heartbeat, end of session) of `epoch` in datagram
    /// mode: learn or switch the epoch if needed. False: drop the packet.
    fn live_epoch(&mut self, now: Instant, epoch: u64, first: u64) -> bool {
        if self.epoch == Some(epoch) {
            return true;
        }
        if self.is_retired(epoch) {
            self.stats.wrong_epoch += 1;
            return false;
        }
        self.switch_epoch(epoch);
        self.begin_session(now, first);
        true
    }

    /// Packets other than live ones (and, on a stream, every packet after the
    /// LoginAck) must belong to the running session.
    fn session_packet(&mut self, epoch: u64) -> bool {
        if self.epoch != Some(epoch) {
            self.stats.wrong_epoch += 1;
            return false;
        }
        let ok = self.started && (self.cfg.mode == Mode::Datagram || self.logged_in);
        if !ok {
            self.stats.unexpected += 1;
        }
        ok
    }

    fn switch_epoch(&mut self, new: u64) {
        let old = self.epoch;
        if let Some(o) = old {
            self.retired[self.retired_next] = Some(o);
            self.retired_next = (self.retired_next + 1) % RETIRED_EPOCHS;
            self.stats.epoch_changes += 1;
            self.reset_session();
        }
        self.epoch = Some(new);
        self.events.push_back(Event::EpochChanged { old, new });
    }

    /// Forget the sequence state of the session that ended.
    fn reset_session(&mut self) {
        self.stats.gaps_abandoned_epoch += self.gaps.len() as u64;
        self.gaps.gaps.clear();
        self.buf.reset(1);
        self.started = false;
        self.synced = false;
        self.next = 1;
        self.high = 1;
        self.snap.active = false;
        self.asm.clear();
        self.outstanding.clear();
        self.tx.retain(|t| *t == Tx::Login);
        self.end_of_session = None;
        self.eos_emitted = false;
    }

    /// Start the sequence at `first`, delivering at once (`synced`) or after a snapshot.
    fn start_at(&mut self, first: u64, synced: bool) {
        self.started = true;
        self.synced = synced;
        self.next = first;
        self.high = first;
        self.buf.reset(first);
        self.gaps.gaps.clear();
    }

    /// Datagram: the first live packet of a session shows sequence `first`.
    fn begin_session(&mut self, now: Instant, first: u64) {
        let from_start = first == 1 || self.cfg.late_join == LateJoin::FromFirstSeen;
        self.start_at(first, from_start);
        if !from_start {
            self.start_snapshot(now);
        }
    }

    /// Data or Retransmission.
    fn on_messages(
        &mut self,
        now: Instant,
        line: Line,
        repr: &PacketRepr,
        timing: Timing,
        payload: &[u8],
    ) {
        let retrans = repr.kind == PacketKind::Retransmission;
        let first = repr.first_seq.0;
        let count = u64::from(repr.count);
        let accepted = if self.cfg.mode == Mode::Stream || retrans {
            self.session_packet(repr.epoch)
        } else {
            self.live_epoch(now, repr.epoch, first)
        };
        if !accepted {
            return;
        }
        if count == 0 {
            self.reveal(now, first);
            return;
        }
        if !self.synced && first == 1 && self.cfg.mode == Mode::Datagram {
            self.rebase_to_session_start(now);
        }
        if first + count <= self.next {
            self.stats.duplicates += count;
            return;
        }
        if self.synced
            && first == self.next
            && self.high == self.next
            && self.gaps.is_empty()
            && self.buf.lo() == first
            && first + count <= self.buf.hi()
        {
            self.deliver_in_order(line, repr, timing, payload);
            return;
        }
        for ((i, m), due) in
            MessageIter::new(payload, repr.count).enumerate().zip(timing.dues(count))
        {
            let Ok(msg) = m else { break };
            let times = Times { sent: repr.send_time, due };
            self.on_message(now, line, first + i as u64, msg, times, retrans);
        }
    }

    /// The fast path of [`Self::on_messages`]: the packet continues the
    /// stream exactly (`first == next`), nothing is held beyond it and no gap
    /// is open, so every message is delivered as it comes. The outcome is the
    /// per-message path's (same events, counters and state), without its
    /// per-message reorder-buffer bookkeeping.
    fn deliver_in_order(&mut self, line: Line, repr: &PacketRepr, timing: Timing, payload: &[u8]) {
        let retrans = repr.kind == PacketKind::Retransmission;
        let first = repr.first_seq.0;
        let count = u64::from(repr.count);
        let mut n = 0u64;
        for (m, due) in MessageIter::new(payload, repr.count).zip(timing.dues(count)) {
            let Ok(msg) = m else { break };
            self.events.push_back(Event::Message {
                seq: SeqNo(first + n),
                msg,
                send_time: repr.send_time,
                due_time: due,
                recovered: retrans,
            });
            n += 1;
        }
        match (retrans, line) {
            (true, _) => self.stats.messages_retransmitted += n,
            (false, Line::A) => self.stats.line_a_won += n,
            (false, Line::B) => self.stats.line_b_won += n,
            (false, Line::Unicast) => {}
        }
        self.stats.messages_delivered += n;
        self.next = first + n;
        self.high = self.next;
        // Nothing at or above the old `next` was held (`high == next`), so
        // the window moves without anything to empty.
        self.buf.advance_past_empty(self.next);
    }

    /// A late joiner waiting for a snapshot sees the session's first packet
    /// after all (it was reordered behind later ones): start from 1 instead.
    fn rebase_to_session_start(&mut self, now: Instant) {
        if self.next <= 1 || self.high - 1 > self.buf.cap() {
            return;
        }
        let old_next = self.next;
        self.buf.rebase(1);
        self.next = 1;
        self.synced = true;
        self.snap.active = false;
        self.asm.clear();
        self.tx.retain(|t| *t != Tx::SnapshotRequest);
        self.stats.gaps_detected += 1;
        self.stats.messages_missed += old_next - 1;
        let due = self.first_nack_due(now);
        if self.gaps.len() >= MAX_GAPS {
            if let Some(g) = self.gaps.gaps.front_mut() {
                g.missing += old_next - 1;
                g.start = 1;
            }
        } else {
            self.gaps.gaps.push_front(Gap::new(1, old_next, now, due));
        }
    }

    fn on_message(
        &mut self,
        now: Instant,
        line: Line,
        s: u64,
        msg: Message,
        times: Times,
        retrans: bool,
    ) {
        let Times { sent: send_time, due: due_time } = times;
        if s < self.next || self.buf.present(s) {
            self.stats.duplicates += 1;
            return;
        }
        if s >= self.buf.hi() {
            self.overflow(now, s);
        }
        let deliverable = self.synced && s == self.next;
        if s < self.buf.lo() && !deliverable {
            // Below a window that slid forward while a snapshot is awaited: it
            // stays missing (the snapshot or a NACK will cover it).
            self.stats.buffer_dropped += 1;
            return;
        }
        if s >= self.high {
            if s > self.high {
                self.add_gap(now, self.high, s);
            }
            self.high = s + 1;
        } else {
            self.fill(now, s);
        }
        match (retrans, line) {
            (true, _) => self.stats.messages_retransmitted += 1,
            (false, Line::A) => self.stats.line_a_won += 1,
            (false, Line::B) => self.stats.line_b_won += 1,
            (false, Line::Unicast) => {}
        }
        if deliverable {
            self.deliver(s, msg, send_time, due_time, retrans);
            self.drain();
        } else {
            self.buf.store(s, msg, send_time, due_time);
        }
    }

    /// Heartbeat or EndOfSession: `first_seq` is the next sequence the server
    /// will send (one past the last, for EndOfSession).
    fn on_marker(&mut self, now: Instant, repr: &PacketRepr) {
        let n = repr.first_seq.0;
        if repr.kind == PacketKind::Heartbeat {
            self.stats.heartbeats += 1;
        }
        let accepted = if self.cfg.mode == Mode::Stream {
            self.session_packet(repr.epoch)
        } else {
            self.live_epoch(now, repr.epoch, n)
        };
        if !accepted {
            return;
        }
        if repr.kind == PacketKind::EndOfSession && self.end_of_session.is_none() {
            self.end_of_session = Some(n);
        }
        self.reveal(now, n);
    }

    /// Sequences below `n` exist: anything in `[high, n)` is missing.
    fn reveal(&mut self, now: Instant, n: u64) {
        if n > self.high {
            self.add_gap(now, self.high, n);
            self.high = n;
        }
    }

    fn add_gap(&mut self, now: Instant, a: u64, b: u64) {
        self.stats.gaps_detected += 1;
        self.stats.messages_missed += b - a;
        if self.gaps.len() >= MAX_GAPS {
            if let Some(g) = self.gaps.gaps.back_mut() {
                g.end = b;
                g.missing += b - a;
            }
            return;
        }
        let due = self.first_nack_due(now);
        self.gaps.gaps.push_back(Gap::new(a, b, now, due));
    }

    /// Message `s`, inside a hole, arrived.
    fn fill(&mut self, now: Instant, s: u64) {
        let Some(i) = self.gaps.find(s) else { return };
        let buf = &self.buf;
        let g = &mut self.gaps.gaps[i];
        g.missing = g.missing.saturating_sub(1);
        if s == g.start {
            g.start += 1;
            while g.start < g.end && buf.present(g.start) {
                g.start += 1;
            }
        } else if s + 1 == g.end {
            g.end = s;
            while g.end > g.start && buf.present(g.end - 1) {
                g.end -= 1;
            }
        }
        if g.start >= g.end {
            let g = *g;
            self.gaps.gaps.remove(i);
            if g.nacked {
                self.stats.gaps_filled_retransmit += 1;
            } else {
                self.stats.gaps_filled_reorder += 1;
            }
            self.stats.record_recovery((now - g.detected).as_nanos() as u64);
        }
    }

    /// `s` is too far ahead for the buffer: a snapshot is needed (unless one is
    /// already awaited), and the window slides so `s` fits. Everything below the
    /// new window becomes one hole.
    fn overflow(&mut self, now: Instant, s: u64) {
        if !self.snap.active {
            self.stats.buffer_overflows += 1;
            self.start_snapshot(now);
        }
        let new_lo = s + 1 - self.buf.cap();
        let old_lo = self.buf.lo().max(self.next);
        for q in old_lo..new_lo.min(self.buf.hi()) {
            if self.buf.present(q) {
                self.stats.buffer_dropped += 1;
            }
        }
        self.buf.advance(new_lo);
        let mut merged = Gap::new(self.next, new_lo, now, now);
        merged.due = self.first_nack_due(now);
        let mut absorbed = false;
        while let Some(g) = self.gaps.gaps.front().copied() {
            if g.start >= new_lo {
                break;
            }
            self.gaps.gaps.pop_front();
            absorbed = true;
            merged.detected = merged.detected.min(g.detected);
            merged.nacked |= g.nacked;
            if g.end > new_lo {
                merged.end = g.end;
                let still =
                    (new_lo..g.end.min(self.buf.hi())).filter(|q| !self.buf.present(*q)).count();
                merged.missing =
                    (new_lo - self.next) + still as u64 + g.end.saturating_sub(self.buf.hi());
            }
        }
        if new_lo > self.high {
            self.stats.messages_missed += new_lo - self.high;
            self.high = new_lo;
        }
        if !absorbed {
            self.stats.gaps_detected += 1;
        }
        if self.gaps.len() >= MAX_GAPS {
            if let Some(g) = self.gaps.gaps.front_mut() {
                g.missing += merged.missing;
                g.start = merged.start;
            }
        } else {
            self.gaps.gaps.push_front(merged);
        }
    }

    fn deliver(&mut self, s: u64, msg: Message, send_time: u64, due_time: u64, recovered: bool) {
        self.events.push_back(Event::Message {
            seq: SeqNo(s),
            msg,
            send_time,
            due_time,
            recovered,
        });
        self.stats.messages_delivered += 1;
        self.next = s + 1;
        self.buf.advance(self.next);
    }

    /// Deliver what the buffer holds from `next` on.
    fn drain(&mut self) {
        if !self.synced {
            return;
        }
        while let Some((msg, t, due)) = self.buf.get(self.next) {
            self.deliver(self.next, msg, t, due, true);
        }
        self.check_end_of_session();
    }

    fn check_end_of_session(&mut self) {
        if let Some(e) = self.end_of_session
            && !self.eos_emitted
            && self.synced
            && self.next >= e
        {
            self.eos_emitted = true;
            self.events.push_back(Event::EndOfSession { next: SeqNo(e) });
        }
    }

    // -------------------------------------------------------------- NACKs

    fn prune_outstanding(&mut self, now: Instant) {
        let gaps = &self.gaps;
        self.outstanding.retain(|o| o.deadline > now && gaps.intersects(o.start, o.end));
    }

    /// Queue NACKs for every hole that is due, several at once: neighbouring
    /// holes coalesced, ranges split at `max_nack_len`, at most
    /// `max_outstanding_nacks` in flight. A hole whose retries ran out goes to
    /// a snapshot.
    fn schedule_nacks(&mut self, now: Instant) {
        if !self.can_nack() || self.gaps.is_empty() {
            return;
        }
        self.prune_outstanding(now);
        let chunk = self.cfg.max_nack_len;
        let max_out = self.cfg.max_outstanding_nacks;
        // The range being built: start, end, retry deadline.
        let mut cur: Option<(u64, u64, Instant)> = None;
        let mut i = 0;
        while i < self.gaps.len() {
            let mut g = self.gaps.gaps[i];
            if g.due > now {
                if let Some(c) = cur.take() {
                    self.push_nack(c);
                }
                i += 1;
                continue;
            }
            if g.cursor.is_none() {
                if g.nacked {
                    if g.missing < g.missing_at_nack {
                        g.retries = 0;
                    } else {
                        g.retries += 1;
                    }
                    if g.retries > self.cfg.max_nack_retries {
                        self.gaps.gaps[i] = g;
                        self.stats.nack_retries_exhausted += 1;
                        self.start_snapshot(now);
                        return;
                    }
                }
                g.missing_at_nack = g.missing;
            }
            let mut s = g.cursor.unwrap_or(g.start).max(g.start);
            let mut blocked = false;
            while s < g.end {
                let mut a = s;
                while a < g.end && self.buf.present(a) {
                    a += 1;
                }
                if a >= g.end {
                    break;
                }
                let mut b = a + 1;
                while b < g.end && b - a < chunk && !self.buf.present(b) {
                    b += 1;
                }
                match &mut cur {
                    Some((cs, ce, _)) if a - *ce <= NACK_COALESCE_MAX_HOLE && b - *cs <= chunk => {
                        *ce = b
                    }
                    _ => {
                        if let Some(c) = cur.take() {
                            self.push_nack(c);
                        }
                        if self.outstanding.len() >= max_out || self.tx.len() >= self.tx_cap {
                            blocked = true;
                            s = a;
                            break;
                        }
                        cur = Some((a, b, now + self.backoff(g.retries)));
                    }
                }
                s = b;
            }
            if blocked {
                g.cursor = Some(s);
                self.gaps.gaps[i] = g;
                break;
            }
            g.cursor = None;
            g.nacked = true;
            g.due = now + self.backoff(g.retries);
            self.gaps.gaps[i] = g;
            i += 1;
        }
        if let Some(c) = cur {
            self.push_nack(c);
        }
    }

    fn push_nack(&mut self, (start, end, deadline): (u64, u64, Instant)) {
        self.outstanding.push(Outstanding { start, end, deadline });
        // `end - start <= max_nack_len <= u16::MAX`.
        self.tx.push_back(Tx::Nack { start, count: (end - start) as u16 });
    }

    fn on_nack_reject(&mut self, now: Instant, repr: &PacketRepr) {
        if !self.session_packet(repr.epoch) {
            return;
        }
        self.stats.nack_rejects += 1;
        let a = repr.first_seq.0;
        if self.gaps.intersects(a, a + u64::from(repr.count)) {
            self.start_snapshot(now);
        }
    }

    // ----------------------------------------------------------- snapshots

    fn start_snapshot(&mut self, now: Instant) {
        if self.snap.active {
            return;
        }
        self.snap = SnapState {
            active: true,
            deadline: now + self.cfg.snapshot_timeout,
            retries: 0,
            min_seq: 0,
        };
        self.outstanding.clear();
        self.tx.retain(|t| !matches!(t, Tx::Nack { .. }));
        self.queue_snapshot_request();
    }

    fn queue_snapshot_request(&mut self) {
        if self.cfg.mode == Mode::Stream && !self.logged_in {
            return;
        }
        if !self.tx.contains(&Tx::SnapshotRequest) {
            self.tx.push_back(Tx::SnapshotRequest);
        }
    }

    fn snapshot_timed_out(&mut self, now: Instant) {
        self.snap.retries += 1;
        if self.snap.retries > self.cfg.max_snapshot_retries {
            self.give_up(now);
        } else {
            self.snap.deadline = now + self.cfg.snapshot_timeout;
            self.queue_snapshot_request();
        }
    }

    fn on_snapshot_part(&mut self, now: Instant, repr: &PacketRepr, part: &SnapshotRepr<'_>) {
        if !self.session_packet(repr.epoch) {
            return;
        }
        let s = repr.first_seq.0;
        if !self.snap.active || s < self.snap.min_seq || (self.synced && s <= self.next) {
            self.stats.snapshot_parts_ignored += 1;
            return;
        }
        match self.asm.add(s, part, self.cfg.max_snapshot_symbols) {
            PartOutcome::Stored => self.stats.snapshot_parts += 1,
            PartOutcome::Complete => {
                self.stats.snapshot_parts += 1;
                self.apply_snapshot(now);
            }
            PartOutcome::Duplicate
            | PartOutcome::Older
            | PartOutcome::Inconsistent
            | PartOutcome::TooLarge => self.stats.snapshot_parts_ignored += 1,
        }
    }

    /// A complete snapshot consistent at `S` is assembled: deliver it, count the
    /// holes it covers, drop what it supersedes, go on from `S`.
    fn apply_snapshot(&mut self, now: Instant) {
        let s = self.asm.seq;
        self.events.push_back(Event::SnapshotStart { seq: SeqNo(s), symbols: self.asm.symbols });
        for st in self.asm.states() {
            self.events.push_back(Event::SymbolState(st));
        }
        self.events.push_back(Event::SnapshotEnd { seq: SeqNo(s) });
        self.stats.snapshots_applied += 1;

        // Holes below S are covered; the snapshot's effect includes them.
        for g in self.gaps.gaps.iter() {
            let covered_end = g.end.min(s);
            if covered_end <= g.start {
                break;
            }
            let window = self.buf.lo().max(g.start)..covered_end.min(self.buf.hi());
            let held = window.filter(|q| self.buf.present(*q)).count() as u64;
            let missing_below = (covered_end - g.start).saturating_sub(held);
            self.stats.messages_covered_snapshot += missing_below.min(g.missing);
            if g.end <= s {
                self.stats.gaps_covered_snapshot += 1;
                self.stats.record_recovery((now - g.detected).as_nanos() as u64);
            }
        }
        self.rebuild_gaps(now, s);
        self.snap.active = false;
        self.asm.clear();
        self.tx.retain(|t| *t != Tx::SnapshotRequest);
        self.synced = true;
        self.drain();
    }

    /// Restart the sequence at `s` keeping what is held at or above it, and
    /// recompute the holes in `[s, high)`; holes that overlap old ones keep
    /// their detection time.
    fn rebuild_gaps(&mut self, now: Instant, s: u64) {
        std::mem::swap(&mut self.gaps, &mut self.scratch);
        self.gaps.gaps.clear();
        self.buf.rebase(s);
        self.next = s;
        self.high = self.high.max(s);
        let (hi, high) = (self.buf.hi(), self.high);
        let mut j = 0;
        let mut a = s;
        while a < high {
            if a < hi && self.buf.present(a) {
                a += 1;
                continue;
            }
            let mut b = a + 1;
            while b < high {
                if b >= hi {
                    b = high;
                    break;
                }
                if self.buf.present(b) {
                    break;
                }
                b += 1;
            }
            self.push_rebuilt(now, a, b, &mut j);
            a = b;
        }
        self.scratch.gaps.clear();
    }

    fn push_rebuilt(&mut self, now: Instant, a: u64, b: u64, j: &mut usize) {
        let old = &self.scratch.gaps;
        while *j < old.len() && old[*j].end <= a {
            *j += 1;
        }
        let mut detected = now;
        let mut nacked = false;
        let mut found = false;
        let mut k = *j;
        while k < old.len() && old[k].start < b {
            found = true;
            detected = detected.min(old[k].detected);
            nacked |= old[k].nacked;
            k += 1;
        }
        if !found {
            self.stats.gaps_detected += 1;
            self.stats.messages_missed += b - a;
        }
        if self.gaps.len() >= MAX_GAPS {
            if let Some(g) = self.gaps.gaps.back_mut() {
                g.end = b;
                g.missing += b - a;
            }
            return;
        }
        let due = self.first_nack_due(now);
        let mut g = Gap::new(a, b, detected, due);
        g.nacked = nacked;
        self.gaps.gaps.push_back(g);
    }

    /// The snapshot could not be had: give up on every hole (and, for a late
    /// joiner, on the state before its first message), deliver what is held.
    fn give_up(&mut self, now: Instant) {
        let _ = now;
        self.snap.active = false;
        self.asm.clear();
        self.tx.retain(|t| *t != Tx::SnapshotRequest);
        if !self.synced {
            self.synced = true;
            if self.next > 1 {
                self.unrecoverable(1, self.next, self.next - 1);
            }
        }
        while let Some(g) = self.gaps.gaps.pop_front() {
            self.stats.unrecovered += 1;
            self.stats.messages_unrecovered += g.missing;
            self.skip_to(g.end);
        }
        self.drain();
    }

    fn unrecoverable(&mut self, a: u64, b: u64, missing: u64) {
        self.stats.unrecovered += 1;
        self.stats.messages_unrecovered += missing;
        self.report_missing(a, b);
    }

    fn report_missing(&mut self, a: u64, b: u64) {
        self.events.push_back(Event::Unrecoverable { range: SeqRange::new(SeqNo(a), SeqNo(b)) });
    }

    /// Deliver what is held in `[next, end)` and skip what is missing, each
    /// run of missing sequences reported as `Unrecoverable` in stream order
    /// (a gap given up on may hold messages that did arrive: they are
    /// delivered between the runs, so no event names a delivered message).
    fn skip_to(&mut self, end: u64) {
        let mut missing_from: Option<u64> = None;
        while self.next < end {
            let s = self.next;
            let held = if s < self.buf.lo() || s >= self.buf.hi() { None } else { self.buf.get(s) };
            match held {
                Some((m, t, due)) => {
                    if let Some(a) = missing_from.take() {
                        self.report_missing(a, s);
                    }
                    self.deliver(s, m, t, due, true);
                }
                None => {
                    missing_from.get_or_insert(s);
                    self.next = if s < self.buf.lo() {
                        self.buf.lo().min(end)
                    } else if s >= self.buf.hi() {
                        end
                    } else {
                        s + 1
                    };
                }
            }
        }
        if let Some(a) = missing_from {
            self.report_missing(a, self.next);
        }
        self.high = self.high.max(self.next);
        self.buf.advance(self.next);
    }

    // -------------------------------------------------------------- stream

    fn on_login_ack(&mut self, now: Instant, repr: &PacketRepr, ack: &LoginAckRepr) {
        if self.cfg.mode != Mode::Stream || !self.connected {
            self.stats.unexpected += 1;
            return;
        }
        let e = repr.epoch;
        if self.epoch != Some(e) {
            if self.is_retired(e) {
                self.stats.wrong_epoch += 1;
                return;
            }
            self.switch_epoch(e);
        }
        let s = repr.first_seq.0;
        match ack.mode {
            LoginMode::Resume => {
                if !(self.started && self.synced) {
                    self.start_at(s, true);
                }
                // What was missing will come with the resume; give it time first.
                let due = now + self.cfg.nack_retry_initial;
                for g in self.gaps.gaps.iter_mut() {
                    g.due = due;
                    g.retries = 0;
                    g.cursor = None;
                }
            }
            LoginMode::Snapshot => {
                if !(self.started && self.synced && s <= self.next) {
                    if !(self.started && self.synced) {
                        self.start_at(s, false);
                    }
                    self.snap = SnapState {
                        active: true,
                        deadline: now + self.cfg.snapshot_timeout,
                        retries: 0,
                        min_seq: s,
                    };
                    self.asm.clear();
                }
            }
            LoginMode::Unknown(_) => {
                self.stats.malformed += 1;
                return;
            }
        }
        self.logged_in = true;
        self.reconnect_delay = self.cfg.reconnect_min;
        self.reconnect_at = None;
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
