//! The server side, sans-IO: sequencer, framer, retransmit store, snapshot
//! state and the request service (NACK, snapshot request, TCP login), shared
//! by every transport.
//!
//! ```text
//!  push(due, msg) ─▶ open packet ─seal─▶ live queue ─poll_transmit(send_time, buf)─▶ transport buffer
//!   (encoded once,     │  (flush policy:                (stamps send_time + CRC,
//!    in place)         │   natural / max_delay)          the one copy out)
//!                      ├──▶ RetransmitStore (last `window` messages, by seq)
//!                      └──▶ Book (state after every sealed message)
//!  handle_request(peer, bytes) ──▶ reply(packet) × n ──▶ transport.send_to(peer)
//! ```
//!
//! The publisher reads no clock and does no I/O: `now` (monotonic: the flush
//! policy, the heartbeat, the end-of-session repetition, the request limits)
//! and wall-clock ns since the Unix epoch (each message's due time, written in
//! the Data packet's timing block; the send time, stamped at transmission)
//! are passed in.
//!
//! ## Run-loop contract
//! 1. [`Publisher::push`] each message with the instant it fell due; when
//!    nothing more is due, call [`Publisher::caught_up`], which applies the
//!    flush policy ([`PublisherConfig::max_delay`]: natural batching seals at
//!    once, a coalescing bound seals once the oldest message waited that long).
//! 2. When `now` reaches [`Publisher::poll_timeout`], call
//!    [`Publisher::handle_timeout`] (coalescing bound, heartbeats while idle,
//!    end-of-session repetition).
//! 3. Hand every [`Publisher::poll_transmit`] packet to the transport
//!    (`publish_with`) **before** handling requests: a Login's catch-up ends at
//!    [`Publisher::published_next`], which is where the live stream continues
//!    only once every sealed packet has been handed over.
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
//! assert_eq!(r.messages(), Packet::new_checked(&live[0][..]).unwrap().messages());
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
/// Bytes of a Data packet before its first message: the header and the
/// timing block.
const DATA_OVERHEAD: usize = HEADER_LEN + wire::TIMING_LEN;

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

/// Default repetition of the EndOfSession after the session ended: every
/// 100 ms, so a datagram receiver that lost it learns the final sequence
/// within a tenth of a second, for 10 small packets a second while the server
/// lingers.
pub const DEFAULT_EOS_REPEAT: Duration = Duration::from_millis(100);

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
    /// The flush policy. `None` (the default): natural batching, the open
    /// packet is sealed as soon as the generator has caught up
    /// ([`Publisher::caught_up`]), so a lone tick goes out at once and a burst
    /// fills packets. `Some(d)`: bounded coalescing, the open packet waits
    /// until its oldest message has been due for `d` (or it is full), trading
    /// at most `d` of latency for fewer, fuller packets.
    pub max_delay: Option<Duration>,
    /// After the end of session, queue the EndOfSession again this often
    /// (default [`DEFAULT_EOS_REPEAT`]; `None`: once).
    pub eos_repeat: Option<Duration>,
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
            max_delay: None,
            eos_repeat: Some(DEFAULT_EOS_REPEAT),
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
        if self.heartbeat_interval.is_zero() || self.eos_repeat.is_some_and(|r| r.is_zero()) {
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
    /// A zero heartbeat interval (or EndOfSession repetition) would send in a busy loop.
    #[error("heartbeat_interval and eos_repeat must be nonzero")]
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
    /// EndOfSession packets queued again after the first ([`PublisherConfig::eos_repeat`]).
    pub eos_repeats: u64,
}

/// One sealed live packet in the [`LiveQueue`]: where its bytes are.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: usize,
    len: usize,
}

/// Live packets, in one flat buffer: the sealed ones waiting for
/// [`Publisher::poll_transmit`], then the open packet being filled. Messages
/// are encoded once, in place, behind the open packet's header; sealing
/// writes the header and the timing block there, and transmitting stamps the
/// send time, computes the CRC and copies the packet into the transport's
/// buffer: the one copy on the way out. Reset when drained, so the steady
/// state allocates nothing.
#[derive(Debug)]
struct LiveQueue {
    /// Zero-filled storage; `buf[..end]` is in use.
    buf: Vec<u8>,
    end: usize,
    entries: Vec<Entry>,
    read: usize,
    /// Start of the open packet: `buf[open..end]` (empty when `open == end`).
    open: usize,
}

impl LiveQueue {
    fn with_capacity(max_packet_len: usize) -> LiveQueue {
        LiveQueue {
            buf: vec![0; max_packet_len * LIVE_QUEUE_PACKETS],
            end: 0,
            entries: Vec::with_capacity(LIVE_QUEUE_PACKETS * 2),
            read: 0,
            open: 0,
        }
    }

    /// Once every sealed packet is taken, move the open packet (if any) to
    /// the front, so the buffer does not grow while a feed never pauses.
    fn compact(&mut self) {
        if self.read < self.entries.len() || self.read == 0 {
            return;
        }
        self.buf.copy_within(self.open..self.end, 0);
        self.end -= self.open;
        self.open = 0;
        self.entries.clear();
        self.read = 0;
    }

    /// `len` more bytes at the end, to write into (grows the storage only if
    /// more than `LIVE_QUEUE_PACKETS` packets wait, which a caller that
    /// transmits every loop iteration never makes happen).
    #[inline]
    fn extend(&mut self, len: usize) -> &mut [u8] {
        let at = self.end;
        if at + len > self.buf.len() {
            self.buf.resize((at + len).max(self.buf.len() * 2), 0);
        }
        self.end += len;
        &mut self.buf[at..at + len]
    }

    /// Bytes of the open packet (0: none).
    fn open_len(&self) -> usize {
        self.end - self.open
    }

    /// The open packet's bytes.
    fn open_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.open..self.end]
    }

    /// Seal the open packet as it stands.
    fn seal_open(&mut self) {
        self.entries.push(Entry { start: self.open, len: self.open_len() });
        self.open = self.end;
    }

    /// Queue a complete packet (control packets; the open packet must be empty).
    fn push(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.open_len(), 0, "control packets go between data packets");
        self.compact();
        self.extend(bytes.len()).copy_from_slice(bytes);
        self.seal_open();
    }

    /// The next sealed packet, stamped with `send_time` and its CRC.
    fn pop(&mut self, send_time: u64) -> Option<&[u8]> {
        let e = *self.entries.get(self.read)?;
        self.read += 1;
        let mut p = Packet::new_unchecked(&mut self.buf[e.start..e.start + e.len]);
        p.set_send_time(send_time);
        p.fill_crc();
        Some(&self.buf[e.start..e.start + e.len])
    }

    fn queued(&self) -> usize {
        self.entries.len() - self.read
    }
}

/// The server's sequencer, framer, retransmit store, snapshot state and
/// request service. See the [module docs](self) for the run-loop contract.
pub struct Publisher {
    cfg: PublisherConfig,
    /// Messages of the open packet, applied to the book when it is sealed.
    pending: Vec<Message>,
    /// Due times of the open packet's first and last messages (wall ns), and
    /// the instant its oldest message fell due (the coalescing bound counts from it).
    first_due: u64,
    last_due: u64,
    oldest_due: Instant,
    /// Sequence of the next pushed message.
    next_seq: SeqNo,
    store: RetransmitStore,
    book: Book,
    live: LiveQueue,
    /// When a live packet last went out (`None`: never).
    last_sent: Option<Instant>,
    /// The latest wall-clock time passed in: the send time [`Self::poll_packet`] stamps.
    last_wall: u64,
    ended: bool,
    /// When the end of session was last queued (it is repeated every `eos_repeat`).
    last_eos: Instant,
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
        let max_msgs = (cfg.max_packet_len - DATA_OVERHEAD) / MIN_MESSAGE_LEN;
        Ok(Publisher {
            pending: Vec::with_capacity(max_msgs),
            first_due: 0,
            last_due: 0,
            oldest_due: Instant::ZERO,
            next_seq: SeqNo::FIRST,
            store: RetransmitStore::new(cfg.retransmit_window),
            book: Book::new(cfg.symbols),
            live: LiveQueue::with_capacity(cfg.max_packet_len),
            last_sent: None,
            last_wall: 0,
            ended: false,
            last_eos: Instant::ZERO,
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

    /// Messages in the open packet, not sealed yet.
    pub fn pending_messages(&self) -> usize {
        self.pending.len()
    }

    /// Append one message to the open packet, sealing it first if the message
    /// does not fit. Returns its sequence.
    ///
    /// `due` is the instant the message fell due (at or before the current
    /// time: a paced feed passes the exchange event's instant, which the
    /// coalescing bound counts from) and `due_wall_ns` the same instant on the
    /// wall clock (ns since the Unix epoch), which goes on the wire in the
    /// packet's [`Timing`](wire::Timing) block.
    ///
    /// A message with no encoding ([`Message::Unknown`]) or pushed after
    /// [`Self::end_session`] is not published: it is counted in
    /// `rejected_messages` and the returned value is the sequence the next
    /// message will get (no sequence is consumed).
    pub fn push(&mut self, due: Instant, due_wall_ns: u64, msg: &Message) -> SeqNo {
        let len = wire::message_len(msg);
        if len == 0 || self.ended {
            self.stats.rejected_messages += 1;
            return self.next_seq;
        }
        if self.live.open_len() + len > self.cfg.max_packet_len {
            self.seal(due);
        }
        if self.live.open_len() == 0 {
            self.live.compact();
            self.live.extend(DATA_OVERHEAD);
            self.first_due = due_wall_ns;
            self.oldest_due = due;
        }
        let written = wire::emit_message(msg, self.live.extend(len));
        debug_assert_eq!(written, Some(len), "a message fits in an empty packet (MIN_PACKET_LEN)");
        self.last_due = due_wall_ns;
        self.pending.push(*msg);
        let seq = self.next_seq;
        self.next_seq = seq.next();
        if self.cfg.max_packet_len - self.live.open_len() < MIN_MESSAGE_LEN {
            // Nothing else can fit: send it now rather than at the next push.
            self.seal(due);
        }
        seq
    }

    /// Seal the open packet if it holds anything, whatever the flush policy.
    pub fn flush(&mut self, now: Instant, wall_ns: u64) {
        self.last_wall = self.last_wall.max(wall_ns);
        self.seal(now);
    }

    /// The generator has nothing more due at `now`: apply the flush policy.
    /// Natural batching ([`PublisherConfig::max_delay`] `None`) seals the open
    /// packet at once, so whatever fell due together goes out together; with a
    /// coalescing bound it is sealed only once its oldest message has waited
    /// that long (else [`Self::poll_timeout`] names the instant it will be).
    pub fn caught_up(&mut self, now: Instant, wall_ns: u64) {
        self.last_wall = self.last_wall.max(wall_ns);
        if self.coalesce_deadline().is_none_or(|d| now >= d) {
            self.seal(now);
        }
    }

    /// When the open packet must be sealed under the coalescing bound (None:
    /// no bound, or nothing open).
    fn coalesce_deadline(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.cfg.max_delay.map(|d| self.oldest_due + d)
    }

    /// The next live packet (Data, Heartbeat, EndOfSession), in order, each
    /// yielded once, stamped with `send_time_ns` and its CRC and copied into
    /// `buf` (at least `max_packet_len` bytes: a transport's send buffer, see
    /// `publish_with`). Returns its length.
    ///
    /// # Panics
    /// If `buf` is shorter than the packet.
    pub fn poll_transmit(&mut self, send_time_ns: u64, buf: &mut [u8]) -> Option<usize> {
        self.last_wall = self.last_wall.max(send_time_ns);
        let p = self.live.pop(send_time_ns)?;
        buf[..p.len()].copy_from_slice(p);
        Some(p.len())
    }

    /// The next live packet like [`Self::poll_transmit`], in place, stamped
    /// with the latest wall-clock time passed to this publisher. The slice
    /// borrows internal storage until the next call.
    #[must_use]
    pub fn poll_packet(&mut self) -> Option<&[u8]> {
        self.live.pop(self.last_wall)
    }

    /// Timers:
    /// - an open packet whose coalescing bound passed is sealed;
    /// - when nothing went out for `heartbeat_interval`, seal the open packet
    ///   if it holds anything, else queue a Heartbeat (`first_seq` =
    ///   `published_next`, count 0). Before the first packet the deadline is
    ///   [`Instant::ZERO`]: the first call announces the session at once;
    /// - after the end of session, the EndOfSession is queued again every
    ///   [`PublisherConfig::eos_repeat`], so a receiver that lost it over a
    ///   datagram transport still learns where the session ends.
    pub fn handle_timeout(&mut self, now: Instant, wall_ns: u64) {
        self.last_wall = self.last_wall.max(wall_ns);
        if self.ended {
            if self.cfg.eos_repeat.is_some_and(|r| now >= self.last_eos + r) {
                self.emit_control(now, PacketKind::EndOfSession);
                self.last_eos = now;
                self.stats.eos_repeats += 1;
            }
            return;
        }
        if self.coalesce_deadline().is_some_and(|d| now >= d) {
            self.seal(now);
            return;
        }
        match self.heartbeat_deadline() {
            Some(deadline) if now >= deadline => {}
            _ => return,
        }
        if !self.pending.is_empty() {
            self.seal(now);
        } else {
            self.emit_control(now, PacketKind::Heartbeat);
            self.stats.heartbeats += 1;
        }
    }

    /// Live packets sealed but not yet taken by [`Self::poll_transmit`]. It
    /// must be 0 when a Login is handled (see the run-loop contract).
    pub fn queued_packets(&self) -> usize {
        self.live.queued()
    }

    fn heartbeat_deadline(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        Some(self.last_sent.map_or(Instant::ZERO, |t| t + self.cfg.heartbeat_interval))
    }

    /// When [`Self::handle_timeout`] wants to be called: the earliest of the
    /// coalescing bound, the heartbeat and (after the end of session) the
    /// next EndOfSession repetition. `None` after the end without repetition.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ended {
            return self.cfg.eos_repeat.map(|r| self.last_eos + r);
        }
        [self.coalesce_deadline(), self.heartbeat_deadline()].into_iter().flatten().min()
    }

    /// Seal what is open and queue an EndOfSession packet (`first_seq` =
    /// `published_next`). Later pushes are refused; requests are still served.
    pub fn end_session(&mut self, now: Instant, wall_ns: u64) {
        if self.ended {
            return;
        }
        self.last_wall = self.last_wall.max(wall_ns);
        self.seal(now);
        self.emit_control(now, PacketKind::EndOfSession);
        self.ended = true;
        self.last_eos = now;
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

    fn seal(&mut self, now: Instant) {
        if self.pending.is_empty() {
            return;
        }
        let first = self.store.next();
        let count = self.pending.len();
        let open_len = self.live.open_len();
        let timing =
            wire::Timing { first_due: self.first_due, last_due: self.last_due.max(self.first_due) };
        {
            let open = self.live.open_mut();
            let mut p = Packet::new_unchecked(&mut open[..]);
            PacketRepr {
                kind: PacketKind::Data,
                flags: wire::FLAG_TIMING,
                epoch: self.cfg.epoch,
                first_seq: first,
                // At most (65536 - 56) / 32 messages fit: always a u16.
                count: count as u16,
                // Stamped when the packet is handed to the transport.
                send_time: 0,
                payload_len: open_len - HEADER_LEN,
            }
            .emit(&mut p);
            timing.emit(&mut open[HEADER_LEN..]);
        }
        let mut off = self.live.open + DATA_OVERHEAD;
        for msg in &self.pending {
            let len = wire::message_len(msg);
            let seq = self.store.append(&self.live.buf[off..off + len]);
            self.book.apply(seq.0, msg);
            off += len;
        }
        self.pending.clear();
        self.live.seal_open();
        self.stats.messages += count as u64;
        self.stats.packets += 1;
        self.stats.bytes += open_len as u64;
        self.last_sent = Some(now);
    }

    fn emit_control(&mut self, now: Instant, kind: PacketKind) {
        let mut buf = [0u8; HEADER_LEN];
        PacketRepr {
            kind,
            flags: 0,
            epoch: self.cfg.epoch,
            first_seq: self.store.next(),
            count: 0,
            send_time: 0,
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
        // 1472 - 40 - 16 = 1416 message bytes: 29 quotes (1392) leave 24 < 32
        // (the smallest message), which seals at once.
        for i in 0..28 {
            p.push(Instant(0), 5, &quote(0, i));
        }
        assert_eq!(p.published_next(), SeqNo(1), "nothing sealed yet");
        p.push(Instant(0), 6, &quote(0, 28));
        assert_eq!(p.published_next(), SeqNo(30));
        assert_eq!(p.poll_transmit(9, &mut [0u8; 1472][..]), Some(1448), "40 + 16 + 29 × 48");
        let mut buf = vec![0u8; 1472];
        p.push(Instant(0), 7, &trade(1, 0));
        p.flush(Instant(0), 8);
        let n = p.poll_transmit(10, &mut buf).unwrap();
        let v = Packet::new_checked(&buf[..n]).unwrap();
        let r = PacketRepr::parse(&v).unwrap();
        assert_eq!(
            (r.kind, r.flags, r.first_seq, r.count, r.send_time),
            (PacketKind::Data, wire::FLAG_TIMING, SeqNo(30), 1, 10),
            "stamped with the send time given at transmission"
        );
        assert_eq!(v.timing(), Some(wire::Timing { first_due: 7, last_due: 7 }));
        assert_eq!(MessageIter::new(v.messages(), 1).count(), 1);
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
        assert_eq!(p.poll_timeout(), Some(Instant(0) + DEFAULT_EOS_REPEAT));
        let once =
            Publisher::new(PublisherConfig { eos_repeat: None, ..PublisherConfig::new(1, 4) });
        let mut once = once;
        once.end_session(Instant(0), 0);
        assert_eq!(once.poll_timeout(), None);
    }

    fn drain_all(p: &mut Publisher) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; p.config().max_packet_len];
        while let Some(n) = p.poll_transmit(1, &mut buf) {
            out.push(buf[..n].to_vec());
        }
        out
    }

    fn counts(packets: &[Vec<u8>]) -> Vec<(PacketKind, u16)> {
        packets
            .iter()
            .map(|b| {
                let v = Packet::new_checked(&b[..]).unwrap();
                (v.kind(), v.count())
            })
            .collect()
    }

    const US: u64 = 1_000;

    #[test]
    fn a_burst_at_a_high_rate_fills_packets() {
        // 100 quotes fell due together (the generator was behind): natural
        // batching seals full packets of 29 and the remainder once caught up.
        let mut p = Publisher::new(PublisherConfig::new(1, 4));
        for i in 0..100 {
            p.push(Instant(i * US), 1_000 + i, &quote(0, i));
        }
        p.caught_up(Instant(100 * US), 2_000);
        let c = counts(&drain_all(&mut p));
        assert_eq!(
            c,
            vec![
                (PacketKind::Data, 29),
                (PacketKind::Data, 29),
                (PacketKind::Data, 29),
                (PacketKind::Data, 13)
            ]
        );
        assert_eq!(p.stats().messages, 100);
    }

    #[test]
    fn a_lone_tick_goes_out_at_once() {
        let mut p = Publisher::new(PublisherConfig::new(1, 4));
        p.push(Instant(50 * US), 7_000, &trade(2, 1));
        assert_eq!(p.queued_packets(), 0, "open until the generator has caught up");
        p.caught_up(Instant(50 * US), 7_001);
        let out = drain_all(&mut p);
        assert_eq!(counts(&out), vec![(PacketKind::Data, 1)]);
        let v = Packet::new_checked(&out[0][..]).unwrap();
        assert_eq!(v.timing(), Some(wire::Timing { first_due: 7_000, last_due: 7_000 }));
    }

    #[test]
    fn coalescing_never_exceeds_its_bound() {
        let bound = Duration::from_micros(100);
        let mut p = Publisher::new(PublisherConfig {
            max_delay: Some(bound),
            ..PublisherConfig::new(1, 4)
        });
        // Heartbeat first, so its deadline does not interfere.
        p.handle_timeout(Instant::ZERO, 0);
        drain_all(&mut p);
        // One message every 30 µs from t = 1 ms; the driver calls caught_up
        // after each and handle_timeout whenever poll_timeout says.
        let mut t = 1_000 * US;
        let mut sealed_at = Vec::new();
        for i in 0..40u64 {
            let due = Instant(t);
            while let Some(d) = p.poll_timeout().filter(|d| *d <= due) {
                p.handle_timeout(d, d.0);
                if p.queued_packets() > 0 {
                    sealed_at.push(d);
                    drain_all(&mut p);
                }
            }
            p.push(due, t, &trade(0, i));
            p.caught_up(due, t);
            if p.queued_packets() > 0 {
                sealed_at.push(due);
                drain_all(&mut p);
            }
            t += 30 * US;
        }
        // Every packet went out exactly at its oldest message's due + 100 µs:
        // messages due at 1000, 1030, 1060, 1090 µs go together at 1100 µs.
        assert_eq!(sealed_at[0], Instant(1_100 * US));
        let mut p2 = p;
        p2.flush(Instant(t), t);
        assert!(sealed_at.windows(2).all(|w| w[1] - w[0] == Duration::from_micros(120)));
        assert_eq!(sealed_at.len(), 9, "36 of 40 messages in packets of 4");
        assert_eq!(p2.stats().messages, 40);
    }

    #[test]
    fn end_of_session_is_repeated_as_configured() {
        let mut p = Publisher::new(PublisherConfig::new(1, 4));
        p.push(Instant(0), 0, &trade(0, 1));
        p.end_session(Instant(10 * US), 0);
        let first = drain_all(&mut p);
        assert_eq!(counts(&first), vec![(PacketKind::Data, 1), (PacketKind::EndOfSession, 0)]);
        let mut t = Instant(10 * US);
        let mut repeats = Vec::new();
        for _ in 0..3 {
            let d = p.poll_timeout().unwrap();
            p.handle_timeout(Instant(d.0 - 1), 0);
            assert_eq!(p.queued_packets(), 0, "not before its time");
            p.handle_timeout(d, 0);
            let out = drain_all(&mut p);
            assert_eq!(counts(&out), vec![(PacketKind::EndOfSession, 0)]);
            let v = Packet::new_checked(&out[0][..]).unwrap();
            assert_eq!(v.first_seq(), SeqNo(2), "one past the last message");
            repeats.push(d - t);
            t = d;
        }
        assert_eq!(repeats, vec![DEFAULT_EOS_REPEAT; 3]);
        assert_eq!(p.stats().eos_repeats, 3);
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
