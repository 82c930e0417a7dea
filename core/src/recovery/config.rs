//! What a [`Receiver`](super::Receiver) can be configured with, and its bounds.

use std::time::Duration;

/// Wait this long after a hole appears before NACKing it. A copy on the other
/// line or a reordered datagram normally arrives within tens of µs on a LAN;
/// 200 µs avoids NACKing what is merely late while adding little to a recovery
/// that costs a round trip anyway (Aeron waits 100 µs on unicast).
pub const DEFAULT_NACK_DELAY: Duration = Duration::from_micros(200);
/// Random extra delay, uniform in `[0, jitter]`, added to the first NACK of a
/// hole. After a loss every receiver sees the same hole at the same instant;
/// jitter spreads their NACKs so the request server is not hit by one burst.
/// While the service answers by unicast (no suppression by overhearing,
/// unlike Aeron's multicast NAKs with up to 10 ms back-off) a short spread
/// suffices; once it repairs on multicast, [`DEFAULT_MULTICAST_NACK_JITTER`]
/// applies instead.
pub const DEFAULT_NACK_JITTER: Duration = Duration::from_micros(300);
/// Random extra delay, uniform in `[0, jitter]`, of a hole's first NACK
/// once the session's recovery service has shown (a RepairNotice) that it
/// repairs on multicast. Then one NACK serves every subscriber that lost the
/// same packet, and the others suppress theirs when they see its notice:
/// the spread must be long against a request round trip (≈ 100 µs on a LAN)
/// for few to fire before the first notice arrives. With N subscribers about
/// `1 + N × rtt / jitter` NACK; 1.5 ms keeps it near 2 for 16 on a LAN, at
/// ~0.75 ms more recovery time on average (Aeron backs off up to 10 ms on
/// multicast). Once the round trip is measured the spread is
/// [`MULTICAST_JITTER_RTTS`] × SRTT, at least `nack_jitter`, and this value
/// is its ceiling (and the spread before any sample).
pub const DEFAULT_MULTICAST_NACK_JITTER: Duration = Duration::from_micros(1500);
/// The multicast first-NACK spread in measured round trips (SRTT): with N
/// subscribers about `1 + N / 20` NACK one shared loss (1.8 for 16), as the
/// fixed 1.5 ms gave on a 75 µs LAN, while on a 50 µs path the spread is
/// 1 ms instead of 1.5 ms. Measured in `core/tests/simnet.rs`
/// (`upstream_loss_is_repaired_once_for_every_subscriber`, 16 subscribers,
/// 5 % upstream loss): with 16 round trips the service received 3.0× the
/// NACKs of one subscriber, at its limit; with 20, 2.8×.
pub const MULTICAST_JITTER_RTTS: u32 = 20;
/// First retry timeout of an unanswered NACK *before any round trip was
/// measured* (the initial RTO; from the first sample on, the RTO comes from
/// the measured round trip, `recovery::rtt`). A loopback/LAN round trip plus
/// the server's work is well under a millisecond, so 4 ms is generous on a
/// busy 2-core machine, and it is what receivers used before they measured.
/// The publisher ignores an identical request only within its linger
/// (`publisher::DEFAULT_LINGER`, 100 µs, below [`DEFAULT_NACK_RTO_MIN`]), so
/// every retry is served.
pub const DEFAULT_NACK_RETRY_INITIAL: Duration = Duration::from_millis(4);
/// Floor of the RTO (the first retry timeout once the round trip is
/// measured). On loopback a request round trip is ~50 µs and on a LAN
/// ~100 µs, with tails from VM wake-ups (25–40 µs each way) and timer
/// slack (50 µs); 200 µs is twice the LAN round trip, and twice the
/// publisher's 100 µs linger (`publisher::DEFAULT_LINGER`), so a retry
/// after a lost answer always reaches the service after its linger and is
/// served. A spurious retry costs a 48-byte NACK and a repeated answer;
/// the floor keeps those rare while leaving room for a first NACK (200–500 µs
/// after the hole) plus one retry under 1 ms.
pub const DEFAULT_NACK_RTO_MIN: Duration = Duration::from_micros(200);
/// Ceiling of the RTO: the fixed first retry of before (4 ms). Measuring
/// only ever brings the first retry sooner; an outlier sample (a server
/// stalled once, a Status queued behind a snapshot) cannot stretch it
/// beyond what every receiver lived with, and a path slower than that (a
/// WAN) keeps the old behaviour: an early retry, then the doubling.
pub const DEFAULT_NACK_RTO_MAX: Duration = Duration::from_millis(4);
/// Longest retry timeout: the back-off doubles from the RTO up to this.
pub const DEFAULT_NACK_RETRY_MAX: Duration = Duration::from_millis(50);
/// Shortest time a hole goes without any answer before it is handed to a
/// snapshot (with [`DEFAULT_MAX_NACK_RETRIES`] rounds: both must be spent).
/// Retries from a 200 µs RTO run 8 rounds in ~51 ms (0.2 × (1 + 2 + … + 128)),
/// inside one congestion episode; a snapshot costs `symbols × 56` bytes and
/// one per peer per 100 ms at most (`publisher::DEFAULT_SNAPSHOT_MIN_INTERVAL`),
/// so it is asked for only after as long as the fixed timers waited
/// (4 + 8 + 16 + 32 + 4 × 50 ms ≈ 260 ms), with further rounds every 50 ms
/// meanwhile.
pub const DEFAULT_NACK_GIVE_UP_AFTER: Duration = Duration::from_millis(250);
/// NACK rounds without progress before a hole is handed to a snapshot (and
/// at least [`DEFAULT_NACK_GIVE_UP_AFTER`] since the last progress). Eight
/// rounds survive 30 % loss on both the request and the answer path (a
/// round succeeds with p ≈ 0.49) with probability 1 − 0.51⁹ ≈ 99.8 %; a
/// round that brings any of the hole's messages resets the count, so a long
/// hole served in clipped prefixes never runs out.
pub const DEFAULT_MAX_NACK_RETRIES: u32 = 8;
/// NACK ranges in flight at once. Aeron caps active retransmits at 16; more
/// would let one receiver's burst of requests crowd out the server's live path.
pub const DEFAULT_MAX_OUTSTANDING_NACKS: usize = 16;
/// Longest range one NACK asks for, in messages: the publisher serves at most
/// 1024 messages per NACK (`publisher::DEFAULT_MAX_NACK_MESSAGES`, ~49 KB of
/// answers) and clips the rest, so a longer hole is asked for as several
/// 1024-message ranges at once rather than one range re-asked round after round.
pub const DEFAULT_MAX_NACK_LEN: u64 = 1024;

/// A datagram session whose first packet seen is at most this far past
/// sequence 1 is taken from its start, the missing head NACKed (one NACK's
/// worth, [`DEFAULT_MAX_NACK_LEN`]): its first packets were lost, the
/// receiver did not join late. Beyond it, a late joiner starts from a
/// snapshot ([`LateJoin::Snapshot`]).
pub const EARLY_JOIN_SLACK: u64 = DEFAULT_MAX_NACK_LEN;
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
/// It is not taken from the measured round trip: a snapshot takes its
/// transfer time (unknown before its first part) as well as a round trip,
/// and a re-ask within the publisher's 100 ms interval is refused, so a
/// short timeout would only spend the retries (`max_snapshot_retries`) on
/// refusals. Only a lost *request* would be re-asked sooner; that is left
/// for a timer that tells "no part yet" from "parts arriving".
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
/// Repair announcements (RepairNotices) remembered at once. Each lasts one
/// NACK retry timeout (the RTO, at most 4 ms); 64 cover a loss every 60 µs
/// for 4 ms, and bound what
/// forged notices can hold (the oldest is forgotten first, which only makes
/// the receiver NACK that range itself).
pub const MAX_ANNOUNCED_REPAIRS: usize = 64;
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
pub(super) const RETIRED_EPOCHS: usize = 4;
/// Bytes [`Receiver::poll_transmit`](super::Receiver::poll_transmit) needs
/// in its buffer: a header and an 8-byte token (cookie or nonce).
pub const REQUEST_BUF_LEN: usize = crate::wire::HEADER_LEN + crate::wire::TOKEN_LEN;
/// Wait this long for the recovery service's Status before probing again. A
/// loopback or LAN round trip is tens of µs; 20 ms covers a loaded server
/// and a WAN hop without delaying a real end of session noticeably.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(20);
/// Probes sent for one question before the receiver decides without an
/// answer (then it accepts the claim, and counts it as unconfirmed): 10 × 20 ms,
/// so a recovery service that is down costs 200 ms at the end of a session.
pub const DEFAULT_MAX_PROBE_RETRIES: u32 = 10;

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

/// In what order a [`Receiver`](super::Receiver) delivers messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Order {
    /// Feed order: message `n` is delivered after every message below `n`;
    /// a hole holds back everything behind it. Every consumer written
    /// against a sequenced feed expects this, so it stays the default.
    #[default]
    Strict,
    /// Per-symbol order: a message is delivered at once when its symbol's
    /// update number follows the last one delivered for that symbol, hole or
    /// no hole; the other symbols' messages wait, in feed order, until the
    /// hole is filled. Each symbol sees exactly the messages, in exactly the
    /// order, that [`Order::Strict`] gives it; across symbols, sequence
    /// numbers are no longer increasing. The receiver reports which symbols
    /// wait (`Event::SymbolStale` / `Event::SymbolFresh`).
    PerSymbol,
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

/// Configuration of a [`Receiver`](super::Receiver). Every default is a named constant whose
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
    /// See [`DEFAULT_MULTICAST_NACK_JITTER`]: used instead of `nack_jitter`
    /// once a RepairNotice was seen (the service repairs on multicast).
    pub multicast_nack_jitter: Duration,
    /// See [`DEFAULT_NACK_RETRY_INITIAL`]: the RTO before any round trip
    /// was measured.
    pub nack_retry_initial: Duration,
    /// See [`DEFAULT_NACK_RTO_MIN`]: floor of the measured RTO.
    pub nack_rto_min: Duration,
    /// See [`DEFAULT_NACK_RTO_MAX`]: ceiling of the measured RTO (raised to
    /// the floor if below it).
    pub nack_rto_max: Duration,
    /// See [`DEFAULT_NACK_RETRY_MAX`].
    pub nack_retry_max: Duration,
    /// See [`DEFAULT_NACK_GIVE_UP_AFTER`].
    pub nack_give_up_after: Duration,
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
    /// Datagram mode: check claims of the live feed that no single packet may
    /// make alone (an end of session, another epoch, a sequence beyond the
    /// reorder window, one far behind) with the recovery service before
    /// acting on them: a Probe, answered by a Status. Default true.
    pub confirm_claims: bool,
    /// See [`DEFAULT_PROBE_TIMEOUT`].
    pub probe_timeout: Duration,
    /// See [`DEFAULT_MAX_PROBE_RETRIES`].
    pub max_probe_retries: u32,
    /// Feed order (the default) or per-symbol order: see [`Order`].
    pub order: Order,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            mode: Mode::Datagram,
            seed: 0,
            nack_delay: DEFAULT_NACK_DELAY,
            nack_jitter: DEFAULT_NACK_JITTER,
            multicast_nack_jitter: DEFAULT_MULTICAST_NACK_JITTER,
            nack_retry_initial: DEFAULT_NACK_RETRY_INITIAL,
            nack_rto_min: DEFAULT_NACK_RTO_MIN,
            nack_rto_max: DEFAULT_NACK_RTO_MAX,
            nack_retry_max: DEFAULT_NACK_RETRY_MAX,
            nack_give_up_after: DEFAULT_NACK_GIVE_UP_AFTER,
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
            confirm_claims: true,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            max_probe_retries: DEFAULT_MAX_PROBE_RETRIES,
            order: Order::Strict,
        }
    }
}
