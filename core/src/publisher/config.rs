//! What a [`Sequencer`](super::Sequencer) is configured with: windows, limits, the flush
//! policy, and the checks a configuration must pass.

use super::*;

/// Default retransmit window: 2^20 messages (≈ 50 MB of slots), about a second
/// of a 1M msg/s feed — long enough for a client to notice a gap, wait out its
/// NACK delay and retry a few times before it needs a snapshot.
pub const DEFAULT_RETRANSMIT_WINDOW: u64 = 1 << 20;

/// Default idle time before a heartbeat: 100 ms, so a client notices tail loss
/// (or a dead server) within a fraction of a second, at a cost of 10 small
/// packets a second when the feed is idle.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes of a snapshot part header.
pub(super) const SNAPSHOT_HEADER_LEN: usize = SnapshotHeader::<&[u8]>::LEN;
/// Bytes of one snapshot record.
pub(super) const RECORD_LEN: usize = SnapshotRecord::<&[u8]>::LEN;
/// The smallest message this version emits (a Trade): once fewer bytes than
/// this remain in the open packet, nothing more can fit and it is sealed at once.
pub(super) const MIN_MESSAGE_LEN: usize = Trade::<&[u8]>::LEN;
/// Bytes of a Data packet before its first message: the header and the
/// timing block.
pub(super) const DATA_OVERHEAD: usize = HEADER_LEN + wire::TIMING_LEN;

/// Smallest `max_packet_len` accepted: a header plus a snapshot part header plus
/// one 56-byte record (104 bytes), which also holds any single message. Below
/// that a snapshot could not be framed at all.
pub const MIN_PACKET_LEN: usize = HEADER_LEN + SNAPSHOT_HEADER_LEN + RECORD_LEN;

/// Packets the live queue has room for before it grows: 64 full packets cover
/// what one `flush` of a generator burst seals between two drains; a caller
/// that drains every loop iteration never makes it grow.
pub(super) const LIVE_QUEUE_PACKETS: usize = 64;

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
/// Default sustained reply rate per host, whatever number of ports (and
/// processes) it asks from: 16 MiB/s, four requesters at the full per-peer
/// rate. Feed handlers on one machine share it; a host that opens ports to
/// multiply its allowance gets no more than this.
pub const DEFAULT_HOST_RATE_BYTES_PER_SEC: u64 = 16 << 20;
/// Default token-bucket depth per host: 1 MiB, four per-peer bursts.
pub const DEFAULT_HOST_BURST_BYTES: u64 = 1 << 20;
/// Default cap on everything the request service sends, per second: 64 MiB/s
/// (about half of a 1 Gb/s link), so recovery traffic for all peers together
/// cannot crowd out the live feed however many hosts ask.
pub const DEFAULT_GLOBAL_RATE_BYTES_PER_SEC: u64 = 64 << 20;
/// Default depth of the global bucket: 4 MiB.
pub const DEFAULT_GLOBAL_BURST_BYTES: u64 = 4 << 20;
/// Default linger: an identical request from the same peer within 100 µs
/// of one served is ignored, so copies of one request (duplicated on the
/// path, sent twice by a client's loop) cost nothing. It was 10 ms (Aeron's
/// value) while receivers retried after a fixed 4 ms; receivers now retry
/// after a measured RTO of at least 200 µs (`recovery::DEFAULT_NACK_RTO_MIN`),
/// and a retry means its answer was lost: a 10 ms linger would ignore it
/// and the fast timer would buy nothing. So the linger is below the
/// shortest retry of a conforming receiver (half of it), and old receivers
/// (4 ms) are served on every retry as before. What bounds an impatient or
/// hostile requester is not the linger but the per-peer, per-host and
/// global token buckets, the per-NACK caps, the snapshot interval and,
/// before validation, the 3× rule: none of them changed.
pub const DEFAULT_LINGER: Duration = Duration::from_micros(100);
/// Default bound on per-peer state: 4096 peers × ~700 bytes ≈ 2.9 MB, more
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
    /// Sustained reply bytes per second per host (all its ports together;
    /// the host of a peer is [`super::peer_host`] when `validate_addresses`
    /// is on, the peer itself otherwise). Default [`DEFAULT_HOST_RATE_BYTES_PER_SEC`].
    pub host_rate_bytes_per_sec: u64,
    /// Token-bucket depth per host. Default [`DEFAULT_HOST_BURST_BYTES`].
    pub host_burst_bytes: u64,
    /// Sustained reply bytes per second of the whole service.
    /// Default [`DEFAULT_GLOBAL_RATE_BYTES_PER_SEC`].
    pub global_rate_bytes_per_sec: u64,
    /// Depth of the service's bucket. Default [`DEFAULT_GLOBAL_BURST_BYTES`].
    pub global_burst_bytes: u64,
    /// An identical request (same peer, kind, epoch, range) within this window
    /// of a served one is ignored as a duplicate. Default [`DEFAULT_LINGER`]
    /// (for NACKs in multicast repair mode too).
    pub linger: Duration,
    /// Bound on per-peer state; the least recently seen peer is evicted.
    /// Default [`DEFAULT_MAX_PEERS_TRACKED`].
    pub max_peers_tracked: usize,
    /// Minimum time between two snapshots served to one peer.
    /// Default [`DEFAULT_SNAPSHOT_MIN_INTERVAL`].
    pub snapshot_min_interval: Duration,
    /// Serve NACKs and snapshot requests only to hosts that proved they
    /// receive at the address they claim: the request must carry the cookie
    /// ([`crate::wire::FLAG_COOKIE`]) that a Status packet sent to that host
    /// gave it. Any other request is answered with that Status alone (72
    /// bytes for a request of at least 40: under 2×), so a forged source
    /// address draws no amplified reply. The cookie, and the host's bucket,
    /// are per host ([`super::peer_host`]), so neither can be multiplied by
    /// using more ports; linger, the per-peer bucket and the snapshot
    /// interval stay per peer, so several clients on one host do not
    /// suppress each other's requests. Default true, for datagram transports,
    /// whose peer ids carry the address; a TCP publisher (its peers are
    /// connections, which completed a handshake) turns it off.
    pub validate_addresses: bool,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_nack_messages: DEFAULT_MAX_NACK_MESSAGES,
            max_bytes_per_request: DEFAULT_MAX_BYTES_PER_REQUEST,
            rate_bytes_per_sec: DEFAULT_RATE_BYTES_PER_SEC,
            burst_bytes: DEFAULT_BURST_BYTES,
            host_rate_bytes_per_sec: DEFAULT_HOST_RATE_BYTES_PER_SEC,
            host_burst_bytes: DEFAULT_HOST_BURST_BYTES,
            global_rate_bytes_per_sec: DEFAULT_GLOBAL_RATE_BYTES_PER_SEC,
            global_burst_bytes: DEFAULT_GLOBAL_BURST_BYTES,
            linger: DEFAULT_LINGER,
            max_peers_tracked: DEFAULT_MAX_PEERS_TRACKED,
            snapshot_min_interval: DEFAULT_SNAPSHOT_MIN_INTERVAL,
            validate_addresses: true,
        }
    }
}

/// Configuration of a [`Sequencer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerConfig {
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
    /// ([`Sequencer::caught_up`]), so a lone tick goes out at once and a burst
    /// fills packets. `Some(d)`: bounded coalescing, the open packet waits
    /// until its oldest message has been due for `d` (or it is full), trading
    /// at most `d` of latency for fewer, fuller packets.
    pub max_delay: Option<Duration>,
    /// After the end of session, queue the EndOfSession again this often
    /// (default [`DEFAULT_EOS_REPEAT`]; `None`: once).
    pub eos_repeat: Option<Duration>,
    /// Key of the address-validation cookies and of the instance id in Status
    /// packets. **Set it to 32 random bytes** at start (the server binary
    /// reads them from the OS): whoever knows it can forge cookies for any
    /// address. The default is derived from the epoch, which makes runs
    /// reproducible in tests and is predictable.
    pub secret: [u8; 32],
    /// How validated NACKs and snapshot requests are answered: by unicast
    /// (the default) or once on the feed's group, within a budget of its own.
    pub repair: RepairConfig,
}

impl SequencerConfig {
    /// A configuration with every default, for session `epoch` and `symbols` symbols.
    pub fn new(epoch: u64, symbols: u32) -> SequencerConfig {
        SequencerConfig {
            epoch,
            symbols,
            max_packet_len: wire::DEFAULT_MAX_PACKET,
            retransmit_window: DEFAULT_RETRANSMIT_WINDOW,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            limits: RequestLimits::default(),
            serve_logins: true,
            secret: *blake3::hash(&epoch.to_le_bytes()).as_bytes(),
            max_delay: None,
            eos_repeat: Some(DEFAULT_EOS_REPEAT),
            repair: RepairConfig::default(),
        }
    }

    /// Check the configuration; [`Sequencer::try_new`] calls it.
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
        if l.max_nack_messages == 0
            || l.rate_bytes_per_sec == 0
            || l.host_rate_bytes_per_sec == 0
            || l.global_rate_bytes_per_sec == 0
            || l.max_peers_tracked == 0
        {
            return Err(ConfigError::ZeroLimit);
        }
        let r = &self.repair;
        if r.group_rate_bytes_per_sec == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if r.coalesce > MAX_REPAIR_COALESCE || r.snapshot_coalesce > MAX_REPAIR_COALESCE {
            return Err(ConfigError::RepairWindow);
        }
        let packet = self.max_packet_len as u64;
        if r.group_burst_bytes < packet {
            return Err(ConfigError::BudgetBelowPacket(self.max_packet_len));
        }
        if l.max_bytes_per_request < self.max_packet_len
            || l.burst_bytes.min(l.host_burst_bytes).min(l.global_burst_bytes) < packet
        {
            return Err(ConfigError::BudgetBelowPacket(self.max_packet_len));
        }
        Ok(())
    }
}

/// Why a [`SequencerConfig`] is refused.
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
    /// `max_nack_messages`, a rate or `max_peers_tracked` is zero.
    #[error("request limits must be nonzero")]
    ZeroLimit,
    /// `max_bytes_per_request` or a burst cannot hold one full packet, so
    /// some answers could never be sent.
    #[error("max_bytes_per_request and the bursts must be at least max_packet_len ({0})")]
    BudgetBelowPacket(usize),
    /// A repair coalescing window above [`MAX_REPAIR_COALESCE`].
    #[error("repair coalescing windows must be at most {MAX_REPAIR_COALESCE:?}")]
    RepairWindow,
}
