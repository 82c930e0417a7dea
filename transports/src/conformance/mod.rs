//! A conformance suite every transport runs, in its own integration tests.
//!
//! The suite drives one publisher and several subscribers from one thread,
//! alternating short polls, with real Tickwire packets (headers, Quote and
//! Trade messages, CRC filled) of mixed sizes up to the transport's
//! `max_packet_len`. It checks:
//!
//! * [`check_delivery`]: every published packet reaches every subscriber
//!   byte-identical and in order (and, for a best-effort transport, what does
//!   arrive is intact, in order per line, and at least a given fraction); the
//!   counters of both sides agree with what was seen.
//! * [`check_requests`]: requests reach the publisher with their exact bytes
//!   and the peer they came from; `send_to` replies reach that subscriber only.
//! * [`check_set_live`] (stream transports): publish reaches live peers only.
//! * [`check_zero_timeout`]: a zero-timeout poll returns, and zero-timeout
//!   polls alone move data.
//!
//! [`run_all`] runs them all. It is built with the `conformance` feature:
//! in the transport crate's `Cargo.toml`,
//! ```toml
//! [dev-dependencies]
//! tickwire-transports = { version = "0.1", features = ["conformance"] }
//! ```
//! then, in `tests/<transport>.rs`:
//! ```no_run
//! use tickwire_transports::conformance::{self, Params, Profile};
//! use tickwire_transports::tcp::*;
//! let any = "127.0.0.1:0".parse().unwrap();
//! conformance::run_all(
//!     &Profile::STREAM,
//!     &Params::default(),
//!     || TcpPublisher::bind(any, TcpPublisherConfig::default()).unwrap(),
//!     |p| TcpSubscriber::connect(p.local_addr(), TcpSubscriberConfig::default()).unwrap(),
//! );
//! ```
//!
//! Failures panic with the transport's name, the check and what differed.
//! Nothing is timed except a generous overall deadline per check (a stuck
//! transport fails instead of hanging), and a liveness bound on a single
//! zero-timeout poll.
//!
//! ## What a transport must do to pass
//! * Subscribers identify themselves with a `Login` request (its `first_seq`
//!   is the subscriber's index); the suite's publisher side answers each with
//!   a `LoginAck` through `send_to` (on the peer the request came from) and
//!   marks the peer live. Stream transports send the Login after reporting
//!   `Connected`; datagram transports at once (they report no `Connected`).
//! * Data packets arrive as `SubEvent::Packet` on line A (or B, for an A/B
//!   feed: each line is checked on its own); replies on any line.
//! * `SubStats::{packets_received, bytes_received}` count exactly the
//!   `Packet` events and their bytes; `PubStats::requests` the `Request`
//!   events; a stream publisher's `packets_sent`/`bytes_sent` count every
//!   copy (fan-out N counts N), a datagram one's at least one per packet;
//!   `SubStats::requests_sent` counts the `send_request` calls that returned
//!   `Ok`; `malformed`, `slow_disconnects` and `send_errors` stay 0; a stream
//!   transport counts one connection per subscriber.
//!
//! ## Best-effort transports
//! A datagram transport declares what it promises, e.g.
//! ```
//! use tickwire_transports::conformance::{Delivery, Profile};
//! let multicast = Profile {
//!     name: "multicast",
//!     stream: false,
//!     delivery: Delivery::BestEffort { min_fraction: 0.99 },
//!     exact_stats: true,
//! };
//! ```
//! The suite then resends an unanswered Login, accepts a late duplicate
//! LoginAck, and after each window of packets waits until the window's last
//! packet has arrived (a loss before it is known from the gap) or until
//! [`BEST_EFFORT_IDLE_PUMPS`] pumps in a row saw nothing. What arrives must
//! still be byte-identical, and in order without duplicates on each line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tickwire_core::msg::{Message, Quote, Side, Trade};
use tickwire_core::seq::SeqNo;
use tickwire_core::wire::{
    HEADER_LEN, LoginAck, LoginAckRepr, LoginMode, Packet, PacketKind, PacketRepr, emit_message,
};

use crate::{DisconnectReason, Line, PeerId, PubStats, Publisher, SubEvent, SubStats, Subscriber};

mod checks;
mod packets;
mod rig;

pub use checks::{check_delivery, check_requests, check_set_live, check_zero_timeout};
use packets::*;
pub use packets::{data_packet, test_stream};
use rig::*;

/// The epoch every packet of the suite carries.
pub const TEST_EPOCH: u64 = 0x7e57_0000_0000_0001;

/// A pad message's type byte: a type no version knows, which receivers skip
/// by its length (lets the suite build packets of any size).
const PAD_TYPE: u8 = b'Z';

/// Pumps without a new event after which a best-effort transport is assumed
/// to have delivered all it will of a window. Each idle pump blocks 1 ms per
/// endpoint, so this is at least 50 ms of silence; on loopback a packet in
/// flight arrives within microseconds. (Waits happen only when the last
/// packet of a window is lost: an earlier loss is known as soon as a later
/// packet arrives.)
pub const BEST_EFFORT_IDLE_PUMPS: u32 = 50;

/// Zero-timeout polls without an event after which [`check_zero_timeout`]
/// stops waiting on a best-effort transport (zero-timeout polls cost a few
/// microseconds, so this is a few tens of milliseconds of silence).
const BEST_EFFORT_IDLE_ZERO_POLLS: u64 = 20_000;

/// Pumps between resends of an unanswered Login on a best-effort transport.
const LOGIN_RESEND_PUMPS: u32 = 50;

/// Extra pumps after a phase, to catch packets that should not arrive (a
/// reply at the wrong subscriber, data at a peer that is not live).
const SETTLE_PUMPS: u32 = 50;

/// Upper bound on pumps of one drain loop, so a transport that keeps
/// reporting events but never the right ones fails instead of spinning.
const MAX_PUMPS_PER_DRAIN: u64 = 2_000_000;

/// Poll timeout after a pump that saw nothing: long enough not to burn the
/// CPU the kernel needs to move the packets, short enough to keep tests fast.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// A single zero-timeout poll taking longer than this is taken to be
/// blocking. A liveness bound, not a speed assertion: it is thousands of
/// times what a poll costs, even on a loaded 2-core machine.
const ZERO_POLL_LIVENESS: Duration = Duration::from_secs(2);

/// Zero-timeout polls of each side in the idle part of [`check_zero_timeout`].
const IDLE_ZERO_POLLS: usize = 1000;

/// What a transport promises.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Name in failure messages.
    pub name: &'static str,
    /// A stream transport: subscribers report `Connected`, publish reaches a
    /// peer only once `set_live`, and the publisher's counters count each copy.
    pub stream: bool,
    /// What delivery is guaranteed.
    pub delivery: Delivery,
    /// The counters must match what the suite saw (see the module docs).
    /// False only for wrappers that remove packets above the transport's
    /// counters ([`crate::lossy::Lossy`]); the error counters are checked anyway.
    pub exact_stats: bool,
}

impl Profile {
    /// A reliable stream transport (TCP).
    pub const STREAM: Profile =
        Profile { name: "tcp", stream: true, delivery: Delivery::Reliable, exact_stats: true };
}

/// Delivery guarantee of a transport.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Delivery {
    /// Every packet, exactly once per line, in order.
    Reliable,
    /// What arrives is intact and in order per line, nothing is duplicated on
    /// a line, and at least `min_fraction` of the packets arrive (the suite
    /// paces its sends and waits, so on loopback this is normally 1.0).
    BestEffort {
        /// Smallest fraction of packets (and requests, and replies) that must arrive.
        min_fraction: f64,
    },
}

/// Sizes of a run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Data packets per delivery check.
    pub packets: usize,
    /// Subscribers in the fan-out checks.
    pub subscribers: usize,
    /// Published packets between waits for the subscribers.
    pub window: usize,
    /// Request rounds in [`check_requests`].
    pub request_rounds: usize,
    /// Seed of packet sizes and contents.
    pub seed: u64,
    /// Time a check may take before it fails (generous: a deadline against
    /// hangs, not a speed requirement).
    pub deadline: Duration,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            packets: 3000,
            subscribers: 3,
            window: 64,
            request_rounds: 40,
            seed: 1,
            deadline: Duration::from_secs(120),
        }
    }
}

/// Run every check: delivery to one subscriber, to `params.subscribers`,
/// requests and replies, live gating (stream transports), zero-timeout polls.
pub fn run_all<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    mut make_pub: impl FnMut() -> P,
    mut make_sub: impl FnMut(&P) -> S,
) {
    let one = Params { subscribers: 1, ..params.clone() };
    check_delivery(profile, &one, &mut make_pub, &mut make_sub);
    check_delivery(profile, params, &mut make_pub, &mut make_sub);
    check_requests(profile, params, &mut make_pub, &mut make_sub);
    if profile.stream {
        check_set_live(profile, params, &mut make_pub, &mut make_sub);
    }
    check_zero_timeout(profile, params, &mut make_pub, &mut make_sub);
}
