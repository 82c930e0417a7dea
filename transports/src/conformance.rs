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
//! [`run_all`] runs them all. Usage, in `tests/<transport>.rs`:
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

// ---------------------------------------------------------------------------
// Test packets
// ---------------------------------------------------------------------------

/// The `index`-th data packet of a test stream, exactly `len` bytes long
/// (`HEADER_LEN <= len`): a Data header (epoch [`TEST_EPOCH`], `first_seq` =
/// `index + 1`), Quotes and Trades, and a pad message of an unknown type to
/// reach the length. CRC filled.
pub fn data_packet(index: u64, len: usize) -> Vec<u8> {
    assert!(
        len == HEADER_LEN || len >= HEADER_LEN + 4,
        "a payload is empty or at least one 4-byte message prefix"
    );
    let mut buf = vec![0u8; len];
    let payload_len = len - HEADER_LEN;
    let mut at = HEADER_LEN;
    let mut count: u16 = 0;
    let mut k = 0u64;
    loop {
        let msg = if (index + k) % 3 == 0 {
            Message::Trade(Trade {
                symbol: (index + k) as u32 % 500,
                side: if k % 2 == 0 { Side::Buy } else { Side::Sell },
                price: 1_000_000 + index as i64,
                qty: 100 + k as u32,
                exch_ts: index * 1000 + k,
            })
        } else {
            Message::Quote(Quote {
                symbol: (index + k) as u32 % 500,
                bid_px: 1_000_000 + index as i64,
                ask_px: 1_000_100 + index as i64,
                bid_qty: 10 + k as u32,
                ask_qty: 20 + k as u32,
                exch_ts: index * 1000 + k,
                symbol_seq: index + k,
            })
        };
        let mlen = tickwire_core::wire::message_len(&msg);
        if at + mlen > len || count == u16::MAX - 1 {
            break;
        }
        // Stop before a message that would leave 1..=3 bytes (too few for a pad).
        if (1..4).contains(&(len - at - mlen)) {
            break;
        }
        emit_message(&msg, &mut buf[at..]).expect("room was checked");
        at += mlen;
        count += 1;
        k += 1;
    }
    let pad = len - at;
    if pad > 0 {
        // pad >= 4 by construction, and < 2^16 since a packet is at most 64 KiB.
        buf[at] = PAD_TYPE;
        buf[at + 1] = 0;
        buf[at + 2..at + 4].copy_from_slice(&(pad as u16).to_le_bytes());
        for (j, b) in buf[at + 4..].iter_mut().enumerate() {
            *b = (index as usize).wrapping_mul(31).wrapping_add(j) as u8;
        }
        count += 1;
    }
    let repr = PacketRepr {
        kind: PacketKind::Data,
        flags: 0,
        epoch: TEST_EPOCH,
        first_seq: SeqNo(index + 1),
        count,
        send_time: index,
        payload_len,
    };
    let mut p = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    p.fill_crc();
    buf
}

/// `n` data packets of mixed sizes between the header alone and `max_len`
/// (both ends included; `max_len >= HEADER_LEN + 4`), deterministic for `seed`.
pub fn test_stream(seed: u64, n: usize, max_len: usize) -> Vec<Vec<u8>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let fixed = [HEADER_LEN, max_len, HEADER_LEN + 4, max_len - 1, HEADER_LEN + 48];
    (0..n)
        .map(|i| {
            let mut len = if i < fixed.len() {
                fixed[i].clamp(HEADER_LEN, max_len)
            } else if rng.random::<bool>() {
                rng.random_range(HEADER_LEN..=(HEADER_LEN + 200).min(max_len))
            } else {
                rng.random_range(HEADER_LEN..=max_len)
            };
            if (1..4).contains(&(len - HEADER_LEN)) {
                // No message fits 1..=3 bytes of payload.
                len = HEADER_LEN + 4;
            }
            data_packet(i as u64, len)
        })
        .collect()
}

/// A header-only packet.
fn bare(kind: PacketKind, first_seq: u64, count: u16) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    PacketRepr {
        kind,
        flags: 0,
        epoch: TEST_EPOCH,
        first_seq: SeqNo(first_seq),
        count,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b
}

/// Subscriber `sub`'s Login.
fn login(sub: usize) -> Vec<u8> {
    bare(PacketKind::Login, sub as u64, 0)
}

/// The answer to subscriber `sub`'s Login.
fn login_ack(sub: usize) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + LoginAck::<&[u8]>::LEN];
    let repr = PacketRepr {
        kind: PacketKind::LoginAck,
        flags: 0,
        epoch: TEST_EPOCH,
        first_seq: SeqNo(sub as u64),
        count: 0,
        send_time: 0,
        payload_len: LoginAck::<&[u8]>::LEN,
    };
    let mut p = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    LoginAck::new_unchecked(p.payload_mut())
        .emit(&LoginAckRepr { oldest: SeqNo::FIRST, mode: LoginMode::Resume });
    p.fill_crc();
    buf
}

/// Tag of request `j` of subscriber `sub`.
fn tag(sub: usize, j: usize) -> u64 {
    ((sub as u64) << 32) | j as u64
}

/// The `(sub, j)` a request or reply was made for: a NACK carries its tag in
/// `first_seq`, packets built by [`data_packet`] the tag plus one.
fn untag(bytes: &[u8]) -> Option<(usize, usize)> {
    let v = Packet::new_checked(bytes).ok()?;
    let t = match v.kind() {
        PacketKind::Nack => v.first_seq().0,
        _ => v.first_seq().0.checked_sub(1)?,
    };
    Some(((t >> 32) as usize, (t & 0xffff_ffff) as usize))
}

/// Request `j` of subscriber `sub`: a NACK, or (one in three) a snapshot
/// request carrying a pad payload, so requests of several sizes are framed.
fn request(sub: usize, j: usize) -> Vec<u8> {
    if j % 3 == 2 {
        let mut p = data_packet(tag(sub, j), HEADER_LEN + 100);
        let mut v = Packet::new_unchecked(&mut p[..]);
        v.set_kind(PacketKind::SnapshotRequest);
        v.fill_crc();
        p
    } else {
        bare(PacketKind::Nack, tag(sub, j), (j % 100) as u16 + 1)
    }
}

/// The reply to request `j` of subscriber `sub`: a Retransmission whose
/// size depends on `j`.
fn reply(sub: usize, j: usize, max_len: usize) -> Vec<u8> {
    let len = (HEADER_LEN + 48 * (j % 20)).min(max_len);
    let mut p = data_packet(tag(sub, j), len);
    let mut v = Packet::new_unchecked(&mut p[..]);
    v.set_kind(PacketKind::Retransmission);
    v.fill_crc();
    p
}

// ---------------------------------------------------------------------------
// The rig: one publisher, several subscribers, driven from one thread
// ---------------------------------------------------------------------------

/// A subscriber event, owned.
#[derive(Debug)]
enum SubEv {
    Packet(Line, Vec<u8>),
}

/// Per-subscriber bookkeeping.
#[derive(Debug, Default)]
struct SubSide {
    connected: bool,
    acked: bool,
    live_on_login: bool,
    peer: Option<PeerId>,
    /// Packet events seen, and their bytes.
    packets: u64,
    bytes: u64,
    requests_sent: u64,
    pumps_since_login: u32,
    base: SubStats,
}

struct Rig<P, S> {
    profile: Profile,
    check: &'static str,
    deadline: Instant,
    p: P,
    subs: Vec<S>,
    side: Vec<SubSide>,
    peers: HashMap<PeerId, usize>,
    /// Requests other than Logins the publisher reported, not yet taken.
    requests_seen: u64,
    replies_sent: u64,
    reply_bytes_sent: u64,
    pub_base: PubStats,
    /// The previous pump saw something: poll without blocking.
    busy: bool,
}

impl<P: Publisher, S: Subscriber> Rig<P, S> {
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("[{}] {}: {what}", self.profile.name, self.check)
    }

    /// Build the publisher and `n` subscribers and log them all in.
    fn new(
        profile: &Profile,
        params: &Params,
        check: &'static str,
        n: usize,
        make_pub: &mut impl FnMut() -> P,
        make_sub: &mut impl FnMut(&P) -> S,
    ) -> Rig<P, S> {
        let p = make_pub();
        let subs: Vec<S> = (0..n).map(|_| make_sub(&p)).collect();
        let side = subs
            .iter()
            .map(|s| SubSide { live_on_login: true, base: s.stats(), ..SubSide::default() })
            .collect();
        let pub_base = p.stats();
        Rig {
            profile: *profile,
            check,
            deadline: Instant::now() + params.deadline,
            p,
            subs,
            side,
            peers: HashMap::new(),
            requests_seen: 0,
            replies_sent: 0,
            reply_bytes_sent: 0,
            pub_base,
            busy: true,
        }
    }

    /// Log every subscriber in (stream: once it reports Connected).
    fn login_all(&mut self) {
        if !self.profile.stream {
            for i in 0..self.subs.len() {
                self.send_login(i);
            }
        }
        let mut pumps = 0u64;
        while !self.side.iter().all(|s| s.acked) {
            pumps += 1;
            if pumps > MAX_PUMPS_PER_DRAIN {
                self.fail("subscribers never all logged in");
            }
            let (reqs, evs) = self.step();
            if let Some((peer, _)) = reqs.first() {
                self.fail(format!("unexpected request from peer {peer} during login"));
            }
            if let Some((i, SubEv::Packet(_, b))) = evs.first() {
                self.fail(format!(
                    "subscriber {i} got an unexpected {}-byte packet during login",
                    b.len()
                ));
            }
            if self.profile.delivery != Delivery::Reliable {
                for i in 0..self.subs.len() {
                    if !self.side[i].acked && self.side[i].pumps_since_login >= LOGIN_RESEND_PUMPS {
                        self.send_login(i);
                    }
                }
            }
        }
    }

    fn send_login(&mut self, i: usize) {
        if let Err(e) = self.subs[i].send_request(&login(i)) {
            self.fail(format!("subscriber {i}: send_request(Login): {e}"));
        }
        self.side[i].requests_sent += 1;
        self.side[i].pumps_since_login = 0;
    }

    /// Send request `packet` from subscriber `i`.
    fn send_request(&mut self, i: usize, packet: &[u8]) {
        if let Err(e) = self.subs[i].send_request(packet) {
            self.fail(format!("subscriber {i}: send_request: {e}"));
        }
        self.side[i].requests_sent += 1;
    }

    fn publish(&mut self, k: usize, packet: &[u8]) {
        // Alternate the two entry points: both must behave the same.
        let r = if k % 2 == 0 {
            self.p.publish(packet)
        } else {
            self.p.publish_with(&mut |buf| {
                buf[..packet.len()].copy_from_slice(packet);
                packet.len()
            })
        };
        if let Err(e) = r {
            self.fail(format!("publish of packet {k}: {e}"));
        }
    }

    /// Publish `stream[range]`; returns their bytes.
    fn publish_range(&mut self, stream: &[Vec<u8>], range: std::ops::Range<usize>) -> u64 {
        let mut bytes = 0;
        for (k, p) in stream.iter().enumerate().take(range.end).skip(range.start) {
            self.publish(k, p);
            bytes += p.len() as u64;
        }
        bytes
    }

    fn flush(&mut self) {
        if let Err(e) = self.p.flush() {
            self.fail(format!("flush: {e}"));
        }
    }

    fn send_to(&mut self, sub: usize, packet: &[u8]) {
        let Some(peer) = self.side[sub].peer else {
            self.fail(format!("subscriber {sub} has no peer id"))
        };
        if let Err(e) = self.p.send_to(peer, packet) {
            self.fail(format!("send_to(peer {peer}): {e}"));
        }
        self.replies_sent += 1;
        self.reply_bytes_sent += packet.len() as u64;
    }

    /// Poll the publisher and every subscriber once. Logins are answered and
    /// LoginAcks consumed here; other requests and packets are returned.
    /// Disconnections fail the check.
    #[allow(clippy::type_complexity)]
    fn step(&mut self) -> (Vec<(PeerId, Vec<u8>)>, Vec<(usize, SubEv)>) {
        if Instant::now() > self.deadline {
            self.fail("deadline passed (the transport is stuck or lost packets)");
        }
        let timeout = if self.busy { Duration::ZERO } else { IDLE_POLL };
        let mut pub_events = Vec::new();
        let mut disconnected = None;
        let r = self.p.poll(Some(timeout), &mut |ev| match ev {
            crate::PubEvent::Connected(_) => {}
            crate::PubEvent::Request { peer, packet } => pub_events.push((peer, packet.to_vec())),
            crate::PubEvent::Disconnected { peer, reason } => disconnected = Some((peer, reason)),
        });
        if let Err(e) = r {
            self.fail(format!("publisher poll: {e}"));
        }
        if let Some((peer, reason)) = disconnected {
            self.fail(format!("publisher reported peer {peer} disconnected: {reason:?}"));
        }
        self.busy = !pub_events.is_empty();
        let mut requests = Vec::new();
        for (peer, packet) in pub_events {
            self.requests_seen += 1;
            let is_login = Packet::new_checked(&packet[..])
                .is_ok_and(|v| v.kind() == PacketKind::Login && v.verify_crc().is_ok());
            if is_login {
                let i = Packet::new_unchecked(&packet[..]).first_seq().0 as usize;
                if i >= self.subs.len() || packet != login(i) {
                    self.fail(format!("peer {peer} sent a Login that is not one the suite sent"));
                }
                if let Some(old) = self.side[i].peer
                    && old != peer
                {
                    self.fail(format!("subscriber {i} logged in as peer {old}, then as {peer}"));
                }
                if let Some(&j) = self.peers.get(&peer)
                    && j != i
                {
                    self.fail(format!("peer {peer} logged in as subscriber {j}, then as {i}"));
                }
                self.side[i].peer = Some(peer);
                self.peers.insert(peer, i);
                if self.side[i].live_on_login {
                    self.p.set_live(peer, true);
                }
                self.send_to(i, &login_ack(i));
                self.flush();
            } else {
                requests.push((peer, packet));
            }
        }
        let mut sub_events = Vec::new();
        for i in 0..self.subs.len() {
            let mut evs: Vec<Result<(Line, Vec<u8>), Option<DisconnectReason>>> = Vec::new();
            let r = self.subs[i].poll(Some(timeout), &mut |ev| match ev {
                SubEvent::Connected => evs.push(Err(None)),
                SubEvent::Packet { line, packet, .. } => evs.push(Ok((line, packet.to_vec()))),
                SubEvent::Disconnected(reason) => evs.push(Err(Some(reason))),
            });
            if let Err(e) = r {
                self.fail(format!("subscriber {i} poll: {e}"));
            }
            self.side[i].pumps_since_login += 1;
            for ev in evs {
                self.busy = true;
                match ev {
                    Err(Some(reason)) => {
                        self.fail(format!("subscriber {i} disconnected: {reason:?}"));
                    }
                    Err(None) => {
                        if !self.profile.stream {
                            self.fail(format!("datagram subscriber {i} reported Connected"));
                        }
                        if self.side[i].connected {
                            self.fail(format!("subscriber {i} reported Connected twice"));
                        }
                        self.side[i].connected = true;
                        self.send_login(i);
                    }
                    Ok((line, packet)) => {
                        self.side[i].packets += 1;
                        self.side[i].bytes += packet.len() as u64;
                        if packet == login_ack(i) {
                            if self.side[i].acked && self.profile.delivery == Delivery::Reliable {
                                self.fail(format!("subscriber {i} got its LoginAck twice"));
                            }
                            self.side[i].acked = true;
                        } else {
                            sub_events.push((i, SubEv::Packet(line, packet)));
                        }
                    }
                }
            }
        }
        (requests, sub_events)
    }

    /// Check the counters of both sides against what the rig saw.
    /// `data_copies`/`data_bytes`: published packets times the subscribers
    /// live for each, and their bytes.
    fn check_stats(&self, published: u64, published_bytes: u64, data_copies: u64, data_bytes: u64) {
        self.check_error_counters();
        if !self.profile.exact_stats {
            return;
        }
        let s = self.p.stats();
        let b = &self.pub_base;
        let sent = s.packets_sent - b.packets_sent;
        let bytes = s.bytes_sent - b.bytes_sent;
        if self.profile.stream {
            let want = data_copies + self.replies_sent;
            if sent != want {
                self.fail(format!("PubStats.packets_sent {sent}, expected {want}"));
            }
            let want = data_bytes + self.reply_bytes_sent;
            if bytes != want {
                self.fail(format!("PubStats.bytes_sent {bytes}, expected {want}"));
            }
        } else {
            let want = published + self.replies_sent;
            if sent < want {
                self.fail(format!("PubStats.packets_sent {sent}, expected at least {want}"));
            }
            let want = published_bytes + self.reply_bytes_sent;
            if bytes < want {
                self.fail(format!("PubStats.bytes_sent {bytes}, expected at least {want}"));
            }
        }
        if s.syscalls == b.syscalls && published > 0 {
            self.fail("PubStats.syscalls did not move");
        }
        let reqs = s.requests - b.requests;
        if reqs != self.requests_seen {
            self.fail(format!(
                "PubStats.requests {reqs}, but {} Request events",
                self.requests_seen
            ));
        }
        for (i, (sub, side)) in self.subs.iter().zip(&self.side).enumerate() {
            let s = sub.stats();
            let b = &side.base;
            let got =
                (s.packets_received - b.packets_received, s.bytes_received - b.bytes_received);
            if got != (side.packets, side.bytes) {
                self.fail(format!(
                    "subscriber {i}: SubStats packets/bytes_received {got:?}, but Packet events {:?}",
                    (side.packets, side.bytes)
                ));
            }
            let sent = s.requests_sent - b.requests_sent;
            if sent != side.requests_sent {
                self.fail(format!(
                    "subscriber {i}: SubStats.requests_sent {sent}, but {} sent",
                    side.requests_sent
                ));
            }
            if s.syscalls == b.syscalls && side.packets > 0 {
                self.fail(format!("subscriber {i}: SubStats.syscalls did not move"));
            }
        }
    }

    /// Counters that must not move on a clean run, and the connection counts.
    fn check_error_counters(&self) {
        let s = self.p.stats();
        let b = &self.pub_base;
        for (what, now, base) in [
            ("malformed", s.malformed, b.malformed),
            ("slow_disconnects", s.slow_disconnects, b.slow_disconnects),
            ("send_errors", s.send_errors, b.send_errors),
        ] {
            if now != base {
                self.fail(format!("PubStats.{what} is {} on a clean run", now - base));
            }
        }
        if self.profile.stream {
            let conns = s.connections - b.connections;
            let n = self.subs.len() as u64;
            if conns != n || s.connected != n {
                self.fail(format!(
                    "PubStats.connections {conns} / connected {}, expected {n}",
                    s.connected
                ));
            }
        }
        for (i, (sub, side)) in self.subs.iter().zip(&self.side).enumerate() {
            let s = sub.stats();
            let b = &side.base;
            if s.malformed != b.malformed {
                self.fail(format!("subscriber {i}: SubStats.malformed moved on a clean run"));
            }
            if self.profile.stream && s.connects - b.connects != 1 {
                self.fail(format!(
                    "subscriber {i}: SubStats.connects {}, expected 1",
                    s.connects - b.connects
                ));
            }
        }
    }
}

/// Checks the data packets of one subscriber, line by line.
#[derive(Debug)]
struct Tracker {
    /// One past the highest index seen on any line.
    high: u64,
    /// Per line: index of the next packet expected (reliable) or one past the
    /// last seen (best effort).
    next: HashMap<Line, u64>,
    /// Packets received on any line.
    seen: Vec<bool>,
    distinct: usize,
    /// First index this subscriber should receive.
    start: u64,
}

impl Tracker {
    fn new(total: usize, start: u64) -> Tracker {
        Tracker { high: start, next: HashMap::new(), seen: vec![false; total], distinct: 0, start }
    }

    /// Check one received packet against the stream.
    fn on_packet(
        &mut self,
        line: Line,
        bytes: &[u8],
        stream: &[Vec<u8>],
        published: usize,
        reliable: bool,
    ) -> Result<(), String> {
        let v = Packet::new_checked(bytes).map_err(|e| format!("undecodable packet: {e}"))?;
        v.verify_crc().map_err(|e| format!("packet fails its CRC: {e}"))?;
        if v.kind() != PacketKind::Data || v.epoch() != TEST_EPOCH || v.first_seq().0 == 0 {
            return Err(format!("unexpected {:?} packet of {} bytes", v.kind(), bytes.len()));
        }
        let idx = v.first_seq().0 - 1;
        if idx >= published as u64 {
            return Err(format!("packet {idx} arrived but only {published} were published"));
        }
        let sent = stream[idx as usize].as_slice();
        let same = if line == Line::B {
            // Line B carries the published packet with flags bit 0 set and
            // its CRC redone (docs/PROTOCOL.md § 2.1).
            let mut flagged = sent.to_vec();
            let mut f = Packet::new_unchecked(&mut flagged[..]);
            f.set_flags(f.flags() | tickwire_core::wire::FLAG_LINE_B);
            f.fill_crc();
            bytes == flagged.as_slice()
        } else {
            bytes == sent
        };
        if !same {
            return Err(format!("packet {idx} differs from what was published (line {line:?})"));
        }
        if idx < self.start {
            return Err(format!("packet {idx} arrived, published before this peer was live"));
        }
        let next = self.next.entry(line).or_insert(self.start);
        if reliable && idx != *next {
            return Err(format!("on line {line:?} expected packet {next}, got {idx}"));
        }
        if idx < *next {
            return Err(format!(
                "on line {line:?} packet {idx} after {} (reordered or duplicated)",
                *next - 1
            ));
        }
        *next = idx + 1;
        self.high = self.high.max(idx + 1);
        if !self.seen[idx as usize] {
            self.seen[idx as usize] = true;
            self.distinct += 1;
        }
        Ok(())
    }
}

/// Drive the rig until every live tracker has every packet below `published`
/// (reliable), or has the last one or nothing arrived for a while (best
/// effort). Checks each packet as it arrives.
fn drain_data<P: Publisher, S: Subscriber>(
    rig: &mut Rig<P, S>,
    trackers: &mut [Option<Tracker>],
    stream: &[Vec<u8>],
    published: usize,
) {
    let reliable = rig.profile.delivery == Delivery::Reliable;
    let mut idle = 0u32;
    let mut pumps = 0u64;
    let end = published as u64;
    loop {
        let done = trackers.iter().all(|t| {
            t.as_ref().is_none_or(|t| {
                if reliable { t.distinct as u64 >= end - t.start } else { t.high >= end }
            })
        });
        if done || (!reliable && idle >= BEST_EFFORT_IDLE_PUMPS) {
            return;
        }
        pumps += 1;
        if pumps > MAX_PUMPS_PER_DRAIN {
            rig.fail(format!("data still missing after {MAX_PUMPS_PER_DRAIN} pumps"));
        }
        let (reqs, evs) = rig.step();
        if let Some((peer, _)) = reqs.first() {
            rig.fail(format!("unexpected request from peer {peer} while publishing"));
        }
        if evs.is_empty() {
            idle += 1;
        } else {
            idle = 0;
        }
        for (i, SubEv::Packet(line, bytes)) in evs {
            let Some(t) = trackers[i].as_mut() else {
                rig.fail(format!(
                    "subscriber {i} is not live but got a {}-byte packet",
                    bytes.len()
                ))
            };
            if let Err(e) = t.on_packet(line, &bytes, stream, published, reliable) {
                rig.fail(format!("subscriber {i}: {e}"));
            }
        }
    }
}

/// Minimum count of `total` items that must arrive under `delivery`.
fn must_arrive(delivery: Delivery, total: usize) -> usize {
    match delivery {
        Delivery::Reliable => total,
        Delivery::BestEffort { min_fraction } => (total as f64 * min_fraction).ceil() as usize,
    }
}

/// (a), (c), (e): `params.packets` packets of mixed sizes reach each of
/// `params.subscribers` subscribers byte-identical and in order; counters agree.
pub fn check_delivery<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let n = params.subscribers;
    let mut rig = Rig::new(profile, params, "delivery", n, make_pub, make_sub);
    rig.login_all();
    let max = rig.p.max_packet_len();
    let stream = test_stream(params.seed, params.packets, max);
    let mut trackers: Vec<Option<Tracker>> =
        (0..n).map(|_| Some(Tracker::new(stream.len(), 0))).collect();
    let mut published = 0;
    let mut published_bytes = 0u64;
    while published < stream.len() {
        let end = (published + params.window.max(1)).min(stream.len());
        published_bytes += rig.publish_range(&stream, published..end);
        published = end;
        rig.flush();
        drain_data(&mut rig, &mut trackers, &stream, published);
    }
    let need = must_arrive(profile.delivery, stream.len());
    for (i, t) in trackers.iter().enumerate() {
        let got = t.as_ref().map_or(0, |t| t.distinct);
        if got < need {
            rig.fail(format!("subscriber {i} got {got} of {} packets (need {need})", stream.len()));
        }
    }
    // Let anything stray (a duplicate, a late packet) show up before counting.
    for _ in 0..SETTLE_PUMPS {
        let (reqs, evs) = rig.step();
        if !reqs.is_empty() {
            rig.fail("unexpected request after publishing");
        }
        for (i, SubEv::Packet(line, bytes)) in evs {
            let t = trackers[i].as_mut().expect("all live");
            if let Err(e) = t.on_packet(
                line,
                &bytes,
                &stream,
                published,
                profile.delivery == Delivery::Reliable,
            ) {
                rig.fail(format!("subscriber {i} after the stream: {e}"));
            }
        }
    }
    rig.check_stats(
        stream.len() as u64,
        published_bytes,
        stream.len() as u64 * n as u64,
        published_bytes * n as u64,
    );
}

/// (b): requests reach the publisher with their exact bytes, attributed to
/// the right peer; `send_to` replies reach that subscriber only, in order.
pub fn check_requests<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let n = params.subscribers.max(2);
    let mut rig = Rig::new(profile, params, "requests", n, make_pub, make_sub);
    rig.login_all();
    let max = rig.p.max_packet_len();
    let reliable = profile.delivery == Delivery::Reliable;
    // Per subscriber: next request index expected at the publisher, and
    // next reply index expected at the subscriber.
    let mut next_req = vec![0usize; n];
    let mut next_reply = vec![0usize; n];
    let mut got_req = vec![0usize; n];
    let mut got_reply = vec![0usize; n];
    let mut sent = 0usize;
    for round in 0..params.request_rounds {
        // Bursts of 1..=8 back-to-back requests per subscriber.
        let burst = 1 + round % 8;
        let first = sent;
        for i in 0..n {
            for j in first..first + burst {
                rig.send_request(i, &request(i, j));
            }
        }
        sent += burst;
        let mut idle = 0u32;
        let mut pumps = 0u64;
        loop {
            // Best effort: once the round's last reply is in, nothing earlier
            // is still coming.
            let done = if reliable {
                got_req.iter().all(|&g| g >= sent) && got_reply.iter().all(|&g| g >= sent)
            } else {
                next_reply.iter().all(|&j| j >= sent)
            };
            if done || (!reliable && idle >= BEST_EFFORT_IDLE_PUMPS) {
                break;
            }
            pumps += 1;
            if pumps > MAX_PUMPS_PER_DRAIN {
                rig.fail("requests or replies still missing");
            }
            let (reqs, evs) = rig.step();
            if reqs.is_empty() && evs.is_empty() {
                idle += 1;
            } else {
                idle = 0;
            }
            for (peer, bytes) in reqs {
                let Some(&i) = rig.peers.get(&peer) else {
                    rig.fail(format!("request from peer {peer}, which never logged in"))
                };
                let Some((_, j)) = untag(&bytes) else {
                    rig.fail(format!("undecodable request from subscriber {i}"))
                };
                if j >= sent || bytes != request(i, j) {
                    rig.fail(format!(
                        "request from subscriber {i} (peer {peer}) differs from any it sent"
                    ));
                }
                if j < next_req[i] || (reliable && j != next_req[i]) {
                    rig.fail(format!(
                        "subscriber {i}: request {j} arrived, expected {}",
                        next_req[i]
                    ));
                }
                next_req[i] = j + 1;
                got_req[i] += 1;
                rig.send_to(i, &reply(i, j, max));
            }
            rig.flush();
            for (i, SubEv::Packet(_, bytes)) in evs {
                let Some((s, j)) = untag(&bytes) else {
                    rig.fail(format!("subscriber {i}: undecodable reply"))
                };
                if s != i {
                    rig.fail(format!("subscriber {i} received a reply meant for subscriber {s}"));
                }
                if j >= sent || bytes != reply(i, j, max) {
                    rig.fail(format!("subscriber {i}: reply differs from the one sent"));
                }
                if j < next_reply[i] || (reliable && j != next_reply[i]) {
                    rig.fail(format!(
                        "subscriber {i}: reply {j} arrived, expected {}",
                        next_reply[i]
                    ));
                }
                next_reply[i] = j + 1;
                got_reply[i] += 1;
            }
        }
    }
    let need = must_arrive(profile.delivery, sent);
    for i in 0..n {
        if got_req[i] < need || got_reply[i] < need {
            rig.fail(format!(
                "subscriber {i}: {} requests and {} replies of {sent} arrived (need {need})",
                got_req[i], got_reply[i]
            ));
        }
    }
    rig.check_stats(0, 0, 0, 0);
}

/// Stream transports: publish reaches exactly the peers marked live, from the
/// moment they are marked, until they are unmarked.
pub fn check_set_live<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let mut rig = Rig::new(profile, params, "set_live", 2, make_pub, make_sub);
    rig.side[1].live_on_login = false;
    rig.login_all();
    let max = rig.p.max_packet_len();
    let total = 300;
    let stream = test_stream(params.seed ^ 0x5e7, total, max);
    let mut trackers = vec![Some(Tracker::new(total, 0)), None];
    let mut bytes = [0u64; 2];
    let mut copies = [0u64; 2];
    // Phase 1: only subscriber 0 is live.
    bytes[0] += rig.publish_range(&stream, 0..200);
    copies[0] += 200;
    rig.flush();
    drain_data(&mut rig, &mut trackers, &stream, 200);
    for _ in 0..SETTLE_PUMPS {
        let (_, evs) = rig.step();
        if let Some((i, _)) = evs.first() {
            rig.fail(format!("subscriber {i} got a packet after phase 1 was drained"));
        }
    }
    // Phase 2: subscriber 1 goes live and gets packets from 200 on.
    let peer1 = rig.side[1].peer.expect("logged in");
    rig.p.set_live(peer1, true);
    trackers[1] = Some(Tracker::new(total, 200));
    let b = rig.publish_range(&stream, 200..250);
    bytes = [bytes[0] + b, bytes[1] + b];
    copies = [copies[0] + 50, copies[1] + 50];
    rig.flush();
    drain_data(&mut rig, &mut trackers, &stream, 250);
    // Phase 3: subscriber 0 is no longer live.
    let peer0 = rig.side[0].peer.expect("logged in");
    rig.p.set_live(peer0, false);
    trackers[0] = None;
    bytes[1] += rig.publish_range(&stream, 250..300);
    copies[1] += 50;
    rig.flush();
    drain_data(&mut rig, &mut trackers, &stream, 300);
    for _ in 0..SETTLE_PUMPS {
        let (_, evs) = rig.step();
        if let Some((i, SubEv::Packet(_, b))) = evs.first() {
            rig.fail(format!("subscriber {i} got a {}-byte packet after all was drained", b.len()));
        }
    }
    let published_bytes: u64 = stream.iter().map(|p| p.len() as u64).sum();
    rig.check_stats(total as u64, published_bytes, copies[0] + copies[1], bytes[0] + bytes[1]);
}

/// (d): a zero-timeout poll returns promptly on both sides, idle or not, and
/// zero-timeout polls alone deliver data and requests.
pub fn check_zero_timeout<P: Publisher, S: Subscriber>(
    profile: &Profile,
    params: &Params,
    make_pub: &mut impl FnMut() -> P,
    make_sub: &mut impl FnMut(&P) -> S,
) {
    let mut rig = Rig::new(profile, params, "zero timeout", 1, make_pub, make_sub);
    rig.login_all();
    // Idle: nothing pending, nothing reported (but a late duplicate of a
    // resent Login or its LoginAck, on a best-effort transport).
    let dup_ok = profile.delivery != Delivery::Reliable;
    let (my_login, my_ack) = (login(0), login_ack(0));
    for k in 0..IDLE_ZERO_POLLS {
        let t = Instant::now();
        let mut seen = 0;
        if let Err(e) = rig.p.poll(Some(Duration::ZERO), &mut |ev| match ev {
            crate::PubEvent::Request { packet, .. } if dup_ok && packet == my_login => {}
            _ => seen += 1,
        }) {
            rig.fail(format!("publisher poll: {e}"));
        }
        if let Err(e) = rig.subs[0].poll(Some(Duration::ZERO), &mut |ev| match ev {
            SubEvent::Packet { packet, .. } if dup_ok && packet == my_ack => {}
            _ => seen += 1,
        }) {
            rig.fail(format!("subscriber poll: {e}"));
        }
        if t.elapsed() > ZERO_POLL_LIVENESS {
            rig.fail(format!("zero-timeout poll {k} blocked for {:?}", t.elapsed()));
        }
        if seen != 0 {
            rig.fail(format!("idle zero-timeout poll {k} reported {seen} events"));
        }
    }
    // Busy: publish, then drive both sides with zero-timeout polls only.
    let max = rig.p.max_packet_len();
    let stream = test_stream(params.seed ^ 0x2e40, 500, max);
    for (k, p) in stream.iter().enumerate() {
        rig.publish(k, p);
    }
    rig.flush();
    rig.send_request(0, &request(0, 0));
    let reliable = profile.delivery == Delivery::Reliable;
    let mut t = Tracker::new(stream.len(), 0);
    let mut got_request = false;
    let mut idle = 0u64;
    let mut polls = 0u64;
    while t.distinct < stream.len() || !got_request {
        polls += 1;
        if polls > MAX_PUMPS_PER_DRAIN {
            rig.fail("zero-timeout polls did not deliver everything");
        }
        if !reliable && idle > BEST_EFFORT_IDLE_ZERO_POLLS {
            break;
        }
        if Instant::now() > rig.deadline {
            rig.fail("deadline passed with zero-timeout polls");
        }
        let start = Instant::now();
        let mut reqs = Vec::new();
        if let Err(e) = rig.p.poll(Some(Duration::ZERO), &mut |ev| {
            if let crate::PubEvent::Request { packet, .. } = ev {
                reqs.push(packet.to_vec());
            }
        }) {
            rig.fail(format!("publisher poll: {e}"));
        }
        let mut pkts = Vec::new();
        if let Err(e) = rig.subs[0].poll(Some(Duration::ZERO), &mut |ev| {
            if let SubEvent::Packet { line, packet, .. } = ev {
                pkts.push((line, packet.to_vec()));
            }
        }) {
            rig.fail(format!("subscriber poll: {e}"));
        }
        if start.elapsed() > ZERO_POLL_LIVENESS {
            rig.fail(format!("a zero-timeout poll blocked for {:?}", start.elapsed()));
        }
        idle = if reqs.is_empty() && pkts.is_empty() { idle + 1 } else { 0 };
        for r in reqs {
            if r != request(0, 0) {
                rig.fail("the publisher got a request that differs from the one sent");
            }
            got_request = true;
        }
        for (line, bytes) in pkts {
            if let Err(e) = t.on_packet(line, &bytes, &stream, stream.len(), reliable) {
                rig.fail(format!("subscriber 0: {e}"));
            }
        }
    }
    let need = must_arrive(profile.delivery, stream.len());
    if t.distinct < need {
        rig.fail(format!(
            "{} of {} packets arrived with zero-timeout polls",
            t.distinct,
            stream.len()
        ));
    }
}
