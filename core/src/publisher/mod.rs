//! The server side, sans-IO: sequencer, framer, retransmit store, snapshot
//! state and the request service (NACK, snapshot request, TCP login), shared
//! by every transport.
//!
//! ```text
//!  push(msg) ─▶ open packet ──seal──▶ live queue ──poll_packet──▶ transport.publish
//!                                │
//!                                ├──▶ RetransmitStore (last `window` messages, by seq)
//!                                └──▶ Book (state after every sealed message)
//!  handle_request(peer, bytes) ──▶ reply(packet) × n ──▶ transport.send_to(peer)
//! ```
//!
//! The publisher reads no clock and does no I/O: `now` (monotonic, drives the
//! heartbeat and the request limits) and `wall_ns` (ns since the Unix epoch,
//! written into packet headers as the send time) are passed in.
//!
//! ## Run-loop contract
//! 1. [`Publisher::push`] messages; [`Publisher::flush`] when the generator
//!    pauses (every loop iteration), so no message waits in a half-full packet.
//! 2. When `now` reaches [`Publisher::poll_timeout`], call
//!    [`Publisher::handle_timeout`] (heartbeats while idle).
//! 3. Drain [`Publisher::poll_packet`] to the transport **before** handling
//!    requests: a Login's catch-up ends at [`Publisher::published_next`], which
//!    is where the live stream continues only once every sealed packet has been
//!    handed over.
//! 4. Hand each request to [`Publisher::handle_request`]; it answers through
//!    its `reply` callback, one complete packet per call.
//!
//! ```
//! use tickwire_core::publisher::{Publisher, PublisherConfig, RequestOutcome};
//! use tickwire_core::wire::{Packet, PacketKind, PacketRepr};
//! use tickwire_core::{Instant, Message, SeqNo, Trade, Side};
//!
//! let mut p = Publisher::new(PublisherConfig::new(7, 16));
//! let now = Instant(1_000);
//! let trade = Message::Trade(Trade { symbol: 3, side: Side::Buy, price: 1, qty: 2, exch_ts: 3 });
//! assert_eq!(p.push(now, 42, &trade), SeqNo(1));
//! p.flush(now, 42);
//! let live: Vec<Vec<u8>> = std::iter::from_fn(|| p.poll_packet().map(<[u8]>::to_vec)).collect();
//! assert_eq!(live.len(), 1);
//!
//! // A client missed it: NACK [1, 2).
//! let mut nack = [0u8; 40];
//! PacketRepr { kind: PacketKind::Nack, flags: 0, epoch: 7, first_seq: SeqNo(1), count: 1,
//!              send_time: 0, payload_len: 0 }.emit_bare(&mut nack);
//! let mut replies = Vec::new();
//! let out = p.handle_request(now, 43, 99, &nack, &mut |r| replies.push(r.to_vec()));
//! assert_eq!(out, RequestOutcome::Served);
//! let r = Packet::new_checked(&replies[0][..]).unwrap();
//! assert_eq!(r.kind(), PacketKind::Retransmission);
//! assert_eq!(r.payload(), Packet::new_checked(&live[0][..]).unwrap().payload());
//! ```

use std::fmt;
use std::time::Duration;

use crate::msg::{Book, Message};
use crate::seq::SeqNo;
use crate::time::Instant;
use crate::wire::{
    self, DecodeError, HEADER_LEN, LoginMode, MAX_PACKET_LEN, Packet, PacketKind, PacketRepr,
    SnapshotHeader, SnapshotRecord, Trade,
};

mod service;
mod store;

pub use store::{MAX_RETRANSMIT_WINDOW, RetransmitStore, SLOT_LEN};

use service::PeerTable;

/// Default retransmit window: 2^20 messages (≈ 50 MB of slots), about a second
/// of a 1M msg/s feed — long enough for a client to notice a gap, wait out its
/// NACK delay and retry a few times before it needs a snapshot.
pub const DEFAULT_RETRANSMIT_WINDOW: u64 = 1 << 20;

/// Default idle time before a heartbeat: 100 ms, so a client notices tail loss
/// (or a dead server) within a fraction of a second, at a cost of 10 small
/// packets a second when the feed is idle.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes of a snapshot part header.
const SNAPSHOT_HEADER_LEN: usize = SnapshotHeader::<&[u8]>::LEN;
/// Bytes of one snapshot record.
const RECORD_LEN: usize = SnapshotRecord::<&[u8]>::LEN;
/// The smallest message this version emits (a Trade): once fewer bytes than
/// this remain in the open packet, nothing more can fit and it is sealed at once.
const MIN_MESSAGE_LEN: usize = Trade::<&[u8]>::LEN;

/// Smallest `max_packet_len` accepted: a header plus a snapshot part header plus
/// one 56-byte record (104 bytes), which also holds any single message. Below
/// that a snapshot could not be framed at all.
pub const MIN_PACKET_LEN: usize = HEADER_LEN + SNAPSHOT_HEADER_LEN + RECORD_LEN;

/// Packets the live queue has room for before it grows: 64 full packets cover
/// what one `flush` of a generator burst seals between two drains; a caller
/// that drains every loop iteration never makes it grow.
const LIVE_QUEUE_PACKETS: usize = 64;

/// Default cap on messages served for one NACK: 1024 messages are at most
/// ~49 KB of replies (~34 full datagrams), which fits in Linux's default
/// 208 KB socket send buffer with room for the live feed. A larger gap is served
/// as a prefix and the client re-NACKs the rest.
pub const DEFAULT_MAX_NACK_MESSAGES: u64 = 1024;
/// Default cap on reply bytes for one request: 64 KiB, for the same reason (one
/// answer must not fill the server's send buffer and delay the live feed).
pub const DEFAULT_MAX_BYTES_PER_REQUEST: usize = 64 * 1024;
/// Default sustained reply rate per requester: 4 MiB/s. A client losing 1% of a
/// 1M msg/s feed needs ~0.5 MB/s of retransmissions, so this leaves 8× headroom,
/// while 30 misbehaving peers are needed to fill a 1 Gb/s link.
pub const DEFAULT_RATE_BYTES_PER_SEC: u64 = 4 << 20;
/// Default token-bucket depth per requester: 256 KiB, enough for a few full
/// NACK answers back to back after a loss burst, or a snapshot of ~4500 symbols.
pub const DEFAULT_BURST_BYTES: u64 = 256 << 10;
/// Default linger: an identical request from the same peer within 10 ms is
/// served once (Aeron's value): duplicates from A/B lines or an impatient
/// client cost nothing.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(10);
/// Default bound on per-peer state: 4096 peers × ~150 bytes ≈ 600 KB, more
/// than the clients one server is sized for; the least recently seen is evicted.
pub const DEFAULT_MAX_PEERS_TRACKED: usize = 4096;
/// Default minimum time between two snapshots to one peer: 100 ms. A client
/// needs one snapshot per recovery episode; a peer asking more often is
/// looping, and each snapshot costs `symbols × 56` bytes. It must stay below the
/// receiver's snapshot timeout (250 ms), or the retry after a lost part would be
/// refused and every lost part would cost two timeouts.
pub const DEFAULT_SNAPSHOT_MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Snapshot images kept for repeated requests. A datagram snapshot of 1000
/// symbols is ~40 parts; at 20% loss all 40 arrive together with probability
/// 0.8^40 ≈ 10^-4, so a client must be able to collect the parts of *one*
/// snapshot over several requests. A request naming the `S` of a kept image
/// is answered from it (the client fills in the parts it lacks). Four images
/// let four clients recovering at once each finish their own before a newer
/// request evicts it (round robin); each costs `symbols × 56` bytes, once.
pub const SNAPSHOT_IMAGES: usize = 4;

/// The book as it was at one sequence, kept to answer repeated snapshot
/// requests with the same `S` (see [`SNAPSHOT_IMAGES`]).
#[derive(Debug, Default)]
struct SnapshotImage {
    /// The sequence it is consistent at (0: slot unused).
    at: SeqNo,
    states: Vec<crate::msg::SymbolState>,
}

/// Limits on the request service (NACKs and snapshot requests; Logins travel
/// over flow-controlled TCP and are bounded by the retransmit window only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Most messages served for one NACK; a longer range is served as its
    /// prefix `[first, first + cap)` and counted in `clipped_requests`.
    /// Default [`DEFAULT_MAX_NACK_MESSAGES`] (why: see there).
    pub max_nack_messages: u64,
    /// Most reply bytes for one NACK (snapshots are all-or-nothing and are
    /// bounded by `snapshot_min_interval` and the token bucket instead).
    /// Default [`DEFAULT_MAX_BYTES_PER_REQUEST`].
    pub max_bytes_per_request: usize,
    /// Sustained reply bytes per second per requester (token-bucket refill).
    /// Default [`DEFAULT_RATE_BYTES_PER_SEC`].
    pub rate_bytes_per_sec: u64,
    /// Token-bucket depth per requester. Default [`DEFAULT_BURST_BYTES`].
    pub burst_bytes: u64,
    /// An identical request (same peer, kind, epoch, range) within this window
    /// of a served one is ignored as a duplicate. Default [`DEFAULT_LINGER`].
    pub linger: Duration,
    /// Bound on per-peer state; the least recently seen peer is evicted.
    /// Default [`DEFAULT_MAX_PEERS_TRACKED`].
    pub max_peers_tracked: usize,
    /// Minimum time between two snapshots served to one peer.
    /// Default [`DEFAULT_SNAPSHOT_MIN_INTERVAL`].
    pub snapshot_min_interval: Duration,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_nack_messages: DEFAULT_MAX_NACK_MESSAGES,
            max_bytes_per_request: DEFAULT_MAX_BYTES_PER_REQUEST,
            rate_bytes_per_sec: DEFAULT_RATE_BYTES_PER_SEC,
            burst_bytes: DEFAULT_BURST_BYTES,
            linger: DEFAULT_LINGER,
            max_peers_tracked: DEFAULT_MAX_PEERS_TRACKED,
            snapshot_min_interval: DEFAULT_SNAPSHOT_MIN_INTERVAL,
        }
    }
}

/// Configuration of a [`Publisher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublisherConfig {
    /// Session epoch (the server picks it at start; nonzero: 0 means "none" in a Login).
    pub epoch: u64,
    /// Universe size: snapshots cover symbols `0..symbols`.
    pub symbols: u32,
    /// Framer limit: no packet is longer (default [`wire::DEFAULT_MAX_PACKET`]).
    pub max_packet_len: usize,
    /// Messages retained for NACKs and resumes (default [`DEFAULT_RETRANSMIT_WINDOW`]).
    pub retransmit_window: u64,
    /// A heartbeat goes out when nothing was sent for this long
    /// (default [`DEFAULT_HEARTBEAT_INTERVAL`]).
    pub heartbeat_interval: Duration,
    /// Request service limits.
    pub limits: RequestLimits,
    /// Answer Logins (default true). Set false on datagram transports: a
    /// Login's catch-up is bounded only by the retransmit window (TCP's flow
    /// control paces it), so over UDP a spoofed 40-byte Login would make the
    /// server an amplifier. Refused Logins are `Ignored(NotARequest(Login))`.
    pub serve_logins: bool,
}

impl PublisherConfig {
    /// A configuration with every default, for session `epoch` and `symbols` symbols.
    pub fn new(epoch: u64, symbols: u32) -> PublisherConfig {
        PublisherConfig {
            epoch,
            symbols,
            max_packet_len: wire::DEFAULT_MAX_PACKET,
            retransmit_window: DEFAULT_RETRANSMIT_WINDOW,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            limits: RequestLimits::default(),
            serve_logins: true,
        }
    }

    /// Check the configuration; [`Publisher::try_new`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.epoch == 0 {
            return Err(ConfigError::ZeroEpoch);
        }
        if !(MIN_PACKET_LEN..=MAX_PACKET_LEN).contains(&self.max_packet_len) {
            return Err(ConfigError::PacketLen(self.max_packet_len));
        }
        if !(1..=MAX_RETRANSMIT_WINDOW).contains(&self.retransmit_window) {
            return Err(ConfigError::Window(self.retransmit_window));
        }
        if self.heartbeat_interval.is_zero() {
            return Err(ConfigError::ZeroHeartbeat);
        }
        let parts = snapshot_parts(self.symbols as usize, self.max_packet_len);
        if parts > usize::from(u16::MAX) {
            return Err(ConfigError::TooManySymbols { symbols: self.symbols, parts });
        }
        let l = &self.limits;
        if l.max_nack_messages == 0 || l.rate_bytes_per_sec == 0 || l.max_peers_tracked == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if l.max_bytes_per_request < self.max_packet_len
            || l.burst_bytes < self.max_packet_len as u64
        {
            return Err(ConfigError::BudgetBelowPacket(self.max_packet_len));
        }
        Ok(())
    }
}

/// Why a [`PublisherConfig`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Epoch 0 means "no epoch" in a Login.
    #[error("the session epoch must be nonzero")]
    ZeroEpoch,
    /// `max_packet_len` outside `MIN_PACKET_LEN..=MAX_PACKET_LEN`.
    #[error("max_packet_len {0} outside {MIN_PACKET_LEN}..={MAX_PACKET_LEN}")]
    PacketLen(usize),
    /// `retransmit_window` outside `1..=MAX_RETRANSMIT_WINDOW`.
    #[error("retransmit_window {0} outside 1..={MAX_RETRANSMIT_WINDOW}")]
    Window(u64),
    /// A zero heartbeat interval would heartbeat in a busy loop.
    #[error("heartbeat_interval must be nonzero")]
    ZeroHeartbeat,
    /// The snapshot would need more parts than the u16 part index can number.
    #[error("a snapshot of {symbols} symbols needs {parts} parts at this packet size (max 65535)")]
    TooManySymbols {
        /// Configured symbols.
        symbols: u32,
        /// Parts they would need.
        parts: usize,
    },
    /// `max_nack_messages`, `rate_bytes_per_sec` or `max_peers_tracked` is zero.
    #[error("request limits must be nonzero")]
    ZeroLimit,
    /// `max_bytes_per_request` or `burst_bytes` cannot hold one full packet, so
    /// some answers could never be sent.
    #[error("max_bytes_per_request and burst_bytes must be at least max_packet_len ({0})")]
    BudgetBelowPacket(usize),
}

/// Why a request was ignored. Every reason has a counter in [`PublisherStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The bytes are not a valid request packet (truncated, bad CRC, a NACK of
    /// zero messages or from sequence 0, a request with a payload...).
    Malformed(DecodeError),
    /// The request names another session.
    WrongEpoch,
    /// A NACK for messages not published yet.
    OutOfRange,
    /// The peer's token bucket (or snapshot interval) does not allow an answer now.
    RateLimited,
    /// The same request was served within the linger window.
    Duplicate,
    /// A packet kind clients do not send.
    NotARequest(PacketKind),
}

/// What [`Publisher::handle_request`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Replies were emitted (retransmissions, a NackReject or a snapshot).
    Served,
    /// A Login was answered: LoginAck, then the catch-up (retransmissions or a
    /// snapshot), which ends exactly at `published_next`. The server must now
    /// mark the peer live (`transport.set_live(peer, true)`): the next
    /// published packet continues the stream without a gap or an overlap.
    LoginAccepted {
        /// How the client is brought up to date.
        mode: LoginMode,
        /// The first sequence of the catch-up (Resume) or the sequence the
        /// snapshot is consistent at (Snapshot).
        resume_from: SeqNo,
    },
    /// Nothing was sent.
    Ignored(IgnoreReason),
}

/// Counters; every mechanism has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages sequenced and sealed into live packets.
    pub messages: u64,
    /// Live packets queued (Data, Heartbeat, EndOfSession).
    pub packets: u64,
    /// Bytes of live packets.
    pub bytes: u64,
    /// Heartbeats queued.
    pub heartbeats: u64,
    /// Messages `push` refused (unknown type, or after `end_session`).
    pub rejected_messages: u64,
    /// Requests received (every call to `handle_request`).
    pub requests: u64,
    /// Well-formed NACKs of this session.
    pub nacks: u64,
    /// NackRejects sent (range older than the window).
    pub nack_rejects: u64,
    /// Messages re-sent (NACK answers and Login resumes).
    pub retransmitted_messages: u64,
    /// Retransmission packets sent.
    pub retransmit_packets: u64,
    /// NACKs served only in part (message cap, byte cap or token bucket).
    pub clipped_requests: u64,
    /// Snapshots served (snapshot requests and Logins in snapshot mode).
    pub snapshots_served: u64,
    /// Snapshots served again from a kept image because the request named its `S`.
    pub snapshot_images_reused: u64,
    /// Snapshot packets sent.
    pub snapshot_packets: u64,
    /// Logins answered.
    pub logins: u64,
    /// Logins answered with a resume.
    pub login_resumes: u64,
    /// Logins answered with a snapshot.
    pub login_snapshots: u64,
    /// Reply packets of any kind.
    pub reply_packets: u64,
    /// Reply bytes of any kind.
    pub reply_bytes: u64,
    /// Requests ignored as malformed.
    pub malformed: u64,
    /// Requests ignored for naming another epoch.
    pub wrong_epoch: u64,
    /// NACKs ignored for asking unpublished messages.
    pub out_of_range: u64,
    /// Requests ignored by the rate limits.
    pub rate_limited: u64,
    /// Requests ignored as duplicates within the linger window.
    pub duplicates: u64,
    /// Packets of a kind clients do not send.
    pub not_a_request: u64,
    /// Peers evicted from the bounded per-peer table.
    pub peers_evicted: u64,
}

/// Sealed live packets waiting for [`Publisher::poll_packet`]: one flat buffer
/// and a list of `(start, len)`, reset when drained, so the steady state
/// allocates nothing.
#[derive(Debug)]
struct LiveQueue {
    buf: Vec<u8>,
    entries: Vec<(usize, usize)>,
    read: usize,
}

impl LiveQueue {
    fn with_capacity(max_packet_len: usize) -> LiveQueue {
        LiveQueue {
            buf: Vec::with_capacity(max_packet_len * LIVE_QUEUE_PACKETS),
            entries: Vec::with_capacity(LIVE_QUEUE_PACKETS * 2),
            read: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.read == self.entries.len() {
            self.buf.clear();
            self.entries.clear();
            self.read = 0;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(bytes);
        self.entries.push((start, bytes.len()));
    }

    fn pop(&mut self) -> Option<&[u8]> {
        let &(start, len) = self.entries.get(self.read)?;
        self.read += 1;
        Some(&self.buf[start..start + len])
    }
}

/// The server's sequencer, framer, retransmit store, snapshot state and
/// request service. See the [module docs](self) for the run-loop contract.
pub struct Publisher {
    cfg: PublisherConfig,
    /// The open packet: header space, then `open_len - HEADER_LEN` payload bytes.
    open: Vec<u8>,
    open_len: usize,
    /// Messages of the open packet, applied to the book when it is sealed.
    pending: Vec<Message>,
    /// Sequence of the next pushed message.
    next_seq: SeqNo,
    store: RetransmitStore,
    book: Book,
    live: LiveQueue,
    /// When a live packet last went out (`None`: never).
    last_sent: Option<Instant>,
    ended: bool,
    /// Scratch buffer for replies (one packet at a time).
    reply_buf: Vec<u8>,
    peers: PeerTable,
    /// Kept snapshot images (at most [`SNAPSHOT_IMAGES`]) and the slot the next capture replaces.
    images: Vec<SnapshotImage>,
    image_next: usize,
    stats: PublisherStats,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("cfg", &self.cfg)
            .field("next_seq", &self.next_seq)
            .field("store", &self.store)
            .field("ended", &self.ended)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// A publisher for `cfg`. Allocates everything it will use: the retransmit
    /// ring, the book, the packet buffers and the peer table.
    ///
    /// # Panics
    /// If `cfg` is invalid ([`PublisherConfig::validate`]); see [`Self::try_new`].
    pub fn new(cfg: PublisherConfig) -> Publisher {
        match Publisher::try_new(cfg) {
            Ok(p) => p,
            Err(e) => panic!("invalid publisher configuration: {e}"),
        }
    }

    /// A publisher for `cfg`, or why the configuration is refused.
    pub fn try_new(cfg: PublisherConfig) -> Result<Publisher, ConfigError> {
        cfg.validate()?;
        let max_msgs = (cfg.max_packet_len - HEADER_LEN) / MIN_MESSAGE_LEN;
        Ok(Publisher {
            open: vec![0; cfg.max_packet_len],
            open_len: HEADER_LEN,
            pending: Vec::with_capacity(max_msgs),
            next_seq: SeqNo::FIRST,
            store: RetransmitStore::new(cfg.retransmit_window),
            book: Book::new(cfg.symbols),
            live: LiveQueue::with_capacity(cfg.max_packet_len),
            last_sent: None,
            ended: false,
            reply_buf: vec![0; cfg.max_packet_len],
            peers: PeerTable::new(cfg.limits.max_peers_tracked),
            images: Vec::with_capacity(SNAPSHOT_IMAGES),
            image_next: 0,
            stats: PublisherStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PublisherConfig {
        &self.cfg
    }

    /// The session epoch.
    pub fn epoch(&self) -> u64 {
        self.cfg.epoch
    }

    /// The sequence the next pushed message gets (starts at [`SeqNo::FIRST`]).
    pub fn next_seq(&self) -> SeqNo {
        self.next_seq
    }

    /// One past the last message in a sealed packet.
    pub fn published_next(&self) -> SeqNo {
        self.store.next()
    }

    /// The oldest sequence still retransmitted: `max(1, published_next - window)`.
    pub fn oldest(&self) -> SeqNo {
        self.store.oldest()
    }

    /// True once [`Self::end_session`] was called.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Bytes a full snapshot takes on the wire (all parts, headers included).
    pub fn snapshot_bytes(&self) -> usize {
        snapshot_bytes(self.cfg.symbols as usize, self.cfg.max_packet_len)
    }

    /// Append one message to the open packet, sealing it first if the message
    /// does not fit. Returns its sequence.
    ///
    /// A message with no encoding ([`Message::Unknown`]) or pushed after
    /// [`Self::end_session`] is not published: it is counted in
    /// `rejected_messages` and the returned value is the sequence the next
    /// message will get (no sequence is consumed).
    pub fn push(&mut self, now: Instant, wall_ns: u64, msg: &Message) -> SeqNo {
        let len = wire::message_len(msg);
        if len == 0 || self.ended {
            self.stats.rejected_messages += 1;
            return self.next_seq;
        }
        if self.open_len + len > self.cfg.max_packet_len {
            self.seal(now, wall_ns);
        }
        let written = wire::emit_message(msg, &mut self.open[self.open_len..]);
        debug_assert_eq!(written, Some(len), "a message fits in an empty packet (MIN_PACKET_LEN)");
        self.open_len += len;
        self.pending.push(*msg);
        let seq = self.next_seq;
        self.next_seq = seq.next();
        if self.cfg.max_packet_len - self.open_len < MIN_MESSAGE_LEN {
            // Nothing else can fit: send it now rather than at the next push.
            self.seal(now, wall_ns);
        }
        seq
    }

    /// Seal the open packet if it holds anything (call when the generator
    /// pauses, or every loop iteration).
    pub fn flush(&mut self, now: Instant, wall_ns: u64) {
        self.seal(now, wall_ns);
    }

    /// The next live packet (Data, Heartbeat, EndOfSession), in order, each
    /// yielded once. The slice borrows internal storage until the next call.
    #[must_use]
    pub fn poll_packet(&mut self) -> Option<&[u8]> {
        self.live.pop()
    }

    /// Timers: when nothing went out for `heartbeat_interval`, seal the open
    /// packet if it holds anything, else queue a Heartbeat (`first_seq` =
    /// `published_next`, count 0). Before the first packet the deadline is
    /// [`Instant::ZERO`]: the first call announces the session at once.
    pub fn handle_timeout(&mut self, now: Instant, wall_ns: u64) {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        if !self.pending.is_empty() {
            self.seal(now, wall_ns);
        } else {
            self.emit_control(now, wall_ns, PacketKind::Heartbeat);
            self.stats.heartbeats += 1;
        }
    }

    /// Live packets sealed but not yet taken by [`Self::poll_packet`]. It must
    /// be 0 when a Login is handled (see the run-loop contract).
    pub fn queued_packets(&self) -> usize {
        self.live.entries.len() - self.live.read
    }

    /// When [`Self::handle_timeout`] wants to be called; `None` after the session ended.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        Some(self.last_sent.map_or(Instant::ZERO, |t| t + self.cfg.heartbeat_interval))
    }

    /// Seal what is open and queue an EndOfSession packet (`first_seq` =
    /// `published_next`). Later pushes are refused; requests are still served.
    pub fn end_session(&mut self, now: Instant, wall_ns: u64) {
        if self.ended {
            return;
        }
        self.seal(now, wall_ns);
        self.emit_control(now, wall_ns, PacketKind::EndOfSession);
        self.ended = true;
    }

    /// The snapshot state: every symbol after all messages below `published_next`.
    pub fn book(&self) -> &Book {
        &self.book
    }

    /// Counters.
    pub fn stats(&self) -> &PublisherStats {
        &self.stats
    }

    /// The retransmit store (read-only).
    pub fn store(&self) -> &RetransmitStore {
        &self.store
    }

    fn seal(&mut self, now: Instant, wall_ns: u64) {
        if self.pending.is_empty() {
            return;
        }
        let first = self.store.next();
        let count = self.pending.len();
        {
            let mut p = Packet::new_unchecked(&mut self.open[..self.open_len]);
            PacketRepr {
                kind: PacketKind::Data,
                flags: 0,
                epoch: self.cfg.epoch,
                first_seq: first,
                // At most (65536 - 40) / 32 messages fit: always a u16.
                count: count as u16,
                send_time: wall_ns,
                payload_len: self.open_len - HEADER_LEN,
            }
            .emit(&mut p);
            p.fill_crc();
        }
        let mut off = HEADER_LEN;
        for msg in &self.pending {
            let len = wire::message_len(msg);
            let seq = self.store.append(&self.open[off..off + len]);
            self.book.apply(seq.0, msg);
            off += len;
        }
        self.pending.clear();
        self.live.push(&self.open[..self.open_len]);
        self.stats.messages += count as u64;
        self.stats.packets += 1;
        self.stats.bytes += self.open_len as u64;
        self.open_len = HEADER_LEN;
        self.last_sent = Some(now);
    }

    fn emit_control(&mut self, now: Instant, wall_ns: u64, kind: PacketKind) {
        let mut buf = [0u8; HEADER_LEN];
        PacketRepr {
            kind,
            flags: 0,
            epoch: self.cfg.epoch,
            first_seq: self.store.next(),
            count: 0,
            send_time: wall_ns,
            payload_len: 0,
        }
        .emit_bare(&mut buf);
        self.live.push(&buf);
        self.stats.packets += 1;
        self.stats.bytes += HEADER_LEN as u64;
        self.last_sent = Some(now);
    }
}

/// Records per snapshot packet at this packet size.
fn records_per_part(max_packet_len: usize) -> usize {
    (max_packet_len - HEADER_LEN - SNAPSHOT_HEADER_LEN) / RECORD_LEN
}

/// Parts a snapshot of `symbols` needs (at least one, even for no symbols).
fn snapshot_parts(symbols: usize, max_packet_len: usize) -> usize {
    symbols.div_ceil(records_per_part(max_packet_len)).max(1)
}

/// Wire bytes of a whole snapshot.
fn snapshot_bytes(symbols: usize, max_packet_len: usize) -> usize {
    snapshot_parts(symbols, max_packet_len) * (HEADER_LEN + SNAPSHOT_HEADER_LEN)
        + symbols * RECORD_LEN
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Quote, Side, Trade};
    use crate::wire::MessageIter;

    fn quote(symbol: u32, n: u64) -> Message {
        Message::Quote(Quote {
            symbol,
            bid_px: 1000 + n as i64,
            ask_px: 1001 + n as i64,
            bid_qty: 1,
            ask_qty: 2,
            exch_ts: n,
            symbol_seq: n,
        })
    }

    fn trade(symbol: u32, n: u64) -> Message {
        Message::Trade(Trade { symbol, side: Side::Sell, price: n as i64, qty: 3, exch_ts: n })
    }

    #[test]
    fn seals_when_the_next_message_does_not_fit() {
        let mut p = Publisher::new(PublisherConfig::new(1, 4));
        // 1472 - 40 = 1432 payload bytes: 29 quotes (1392) leave 40, then a
        // trade (32) fits and leaves 8 < 32, which seals at once.
        for i in 0..29 {
            p.push(Instant(0), 5, &quote(0, i));
        }
        assert_eq!(p.published_next(), SeqNo(1), "nothing sealed yet");
        p.push(Instant(0), 5, &trade(1, 0));
        assert_eq!(p.published_next(), SeqNo(31));
        let pkt = p.poll_packet().unwrap().to_vec();
        assert_eq!(pkt.len(), 1464, "40 + 29 × 48 + 32");
        let v = Packet::new_checked(&pkt[..]).unwrap();
        let r = PacketRepr::parse(&v).unwrap();
        assert_eq!(
            (r.kind, r.first_seq, r.count, r.send_time),
            (PacketKind::Data, SeqNo(1), 30, 5)
        );
        assert_eq!(MessageIter::new(v.payload(), 30).count(), 30);
        assert!(p.poll_packet().is_none());
    }

    #[test]
    fn unknown_and_after_end_are_refused() {
        let mut p = Publisher::new(PublisherConfig::new(1, 4));
        assert_eq!(p.push(Instant(0), 0, &Message::Unknown { kind: 9 }), SeqNo(1));
        assert_eq!(p.next_seq(), SeqNo(1));
        p.push(Instant(0), 0, &trade(0, 1));
        p.end_session(Instant(0), 0);
        assert_eq!(p.push(Instant(0), 0, &trade(0, 2)), SeqNo(2));
        assert_eq!(p.stats().rejected_messages, 2);
        assert_eq!(p.published_next(), SeqNo(2));
        assert_eq!(p.poll_timeout(), None);
    }

    #[test]
    fn config_checks() {
        let ok = PublisherConfig::new(1, 10);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(PublisherConfig { epoch: 0, ..ok }.validate(), Err(ConfigError::ZeroEpoch));
        assert_eq!(
            PublisherConfig { max_packet_len: MIN_PACKET_LEN - 1, ..ok }.validate(),
            Err(ConfigError::PacketLen(MIN_PACKET_LEN - 1))
        );
        assert!(PublisherConfig { max_packet_len: MIN_PACKET_LEN, ..ok }.validate().is_ok());
        assert_eq!(
            PublisherConfig { retransmit_window: 0, ..ok }.validate(),
            Err(ConfigError::Window(0))
        );
        // One record per part at the minimum size: 65536 symbols need 65536 parts.
        let tiny = PublisherConfig { max_packet_len: MIN_PACKET_LEN, symbols: 65_536, ..ok };
        assert!(matches!(tiny.validate(), Err(ConfigError::TooManySymbols { parts: 65_536, .. })));
        let mut l = ok;
        l.limits.burst_bytes = 100;
        assert_eq!(l.validate(), Err(ConfigError::BudgetBelowPacket(1472)));
    }

    #[test]
    fn snapshot_size_arithmetic() {
        // 25 records per 1472-byte part.
        assert_eq!(records_per_part(1472), 25);
        assert_eq!(snapshot_parts(0, 1472), 1);
        assert_eq!(snapshot_parts(25, 1472), 1);
        assert_eq!(snapshot_parts(26, 1472), 2);
        assert_eq!(snapshot_bytes(26, 1472), 2 * 48 + 26 * 56);
    }
}
