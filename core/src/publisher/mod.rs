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
//! 1. [`Sequencer::push`] each message with the instant it fell due; when
//!    nothing more is due, call [`Sequencer::caught_up`], which applies the
//!    flush policy ([`SequencerConfig::max_delay`]: natural batching seals at
//!    once, a coalescing bound seals once the oldest message waited that long).
//! 2. When `now` reaches [`Sequencer::poll_timeout`], call
//!    [`Sequencer::handle_timeout`] (coalescing bound, heartbeats while idle,
//!    end-of-session repetition).
//! 3. Hand every [`Sequencer::poll_transmit`] packet to the transport
//!    (`publish_with`) **before** handling requests: a Login's catch-up ends at
//!    [`Sequencer::published_next`], which is where the live stream continues
//!    only once every sealed packet has been handed over.
//! 4. Hand each request to [`Sequencer::handle_request`]; it answers through
//!    its `reply` callback, one complete packet per call.
//! 5. After requests and timers, send every [`Sequencer::poll_group_packet`]
//!    to the feed's group (line A): multicast repairs
//!    ([`RepairMode::Multicast`]; none in the default unicast mode).
//!
//! ```
//! use tickwire_core::publisher::{Sequencer, SequencerConfig, RequestOutcome, peer_host};
//! use tickwire_core::wire::{FLAG_COOKIE, HEADER_LEN, Packet, PacketKind, PacketRepr, TOKEN_LEN, emit_token};
//! use tickwire_core::{Instant, Message, SeqNo, Trade, Side};
//!
//! let mut p = Sequencer::new(SequencerConfig::new(7, 16));
//! let now = Instant(1_000);
//! let trade = Message::Trade(Trade { symbol: 3, side: Side::Buy, price: 1, qty: 2, exch_ts: 3, symbol_seq: 0 });
//! assert_eq!(p.push(now, 42, &trade), SeqNo(1));
//! p.flush(now, 42);
//! let live: Vec<Vec<u8>> = std::iter::from_fn(|| p.poll_packet().map(<[u8]>::to_vec)).collect();
//! assert_eq!(live.len(), 1);
//!
//! // A client missed it: NACK [1, 2), with the cookie its host was given
//! // (an unvalidated request would draw a Status carrying it, and no data).
//! let peer = (0x0A00_0001 << 16) | 5_000; // 10.0.0.1:5000
//! let mut nack = [0u8; HEADER_LEN + TOKEN_LEN];
//! emit_token(&mut nack[HEADER_LEN..], p.cookie(peer_host(peer)));
//! let mut req = Packet::new_unchecked(&mut nack[..]);
//! PacketRepr { kind: PacketKind::Nack, flags: FLAG_COOKIE, epoch: 7, first_seq: SeqNo(1),
//!              count: 1, send_time: 0, payload_len: TOKEN_LEN }.emit(&mut req);
//! req.fill_crc();
//! let mut replies = Vec::new();
//! let out = p.handle_request(now, 43, peer, &nack, &mut |r| replies.push(r.to_vec()));
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
    self, HEADER_LEN, MAX_PACKET_LEN, Packet, PacketKind, PacketRepr, SnapshotHeader,
    SnapshotRecord, Trade,
};

mod config;
mod live;
mod peers;
mod repair;
pub(crate) mod replies;
mod service;
mod stats;
mod store;

pub use config::*;
pub use repair::*;
pub use stats::{IgnoreReason, RequestOutcome, SequencerStats};
pub use store::{MAX_RETRANSMIT_WINDOW, RetransmitStore, SLOT_LEN};

use live::LiveQueue;

/// The host part of a peer id, by which the request service keys its cookies
/// and per-host buckets, so neither can be multiplied by using more ports. Datagram transports number peers
/// `(IPv4 address << 16) | port`; a transport whose peers are connections
/// (TCP) only sends Logins, which are keyed by the whole id.
pub const fn peer_host(peer: u64) -> u64 {
    peer >> 16
}
use peers::{PeerTable, TokenBucket};

/// The book as it was at one sequence, kept to answer repeated snapshot
/// requests with the same `S` (see [`SNAPSHOT_IMAGES`]).
#[derive(Debug, Default)]
struct SnapshotImage {
    /// The sequence it is consistent at (0: slot unused).
    at: SeqNo,
    states: Vec<crate::msg::SymbolState>,
}

/// The server's sequencer, framer, retransmit store, snapshot state and
/// request service. See the [module docs](self) for the run-loop contract.
pub struct Sequencer {
    cfg: SequencerConfig,
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
    /// Per-host buckets (only their buckets are used).
    hosts: PeerTable,
    /// The service's global reply budget.
    global: TokenBucket,
    /// Kept snapshot images (at most [`SNAPSHOT_IMAGES`]) and the slot the next capture replaces.
    images: Vec<SnapshotImage>,
    image_next: usize,
    /// Multicast repair: recent and pending ranges, the group budget, the group queue.
    repair: repair::RepairState,
    stats: SequencerStats,
}

impl fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sequencer")
            .field("cfg", &self.cfg)
            .field("next_seq", &self.next_seq)
            .field("store", &self.store)
            .field("ended", &self.ended)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Sequencer {
    /// A publisher for `cfg`. Allocates everything it will use: the retransmit
    /// ring, the book, the packet buffers and the peer table.
    ///
    /// # Panics
    /// If `cfg` is invalid ([`SequencerConfig::validate`]); see [`Self::try_new`].
    pub fn new(cfg: SequencerConfig) -> Sequencer {
        match Sequencer::try_new(cfg) {
            Ok(p) => p,
            Err(e) => panic!("invalid publisher configuration: {e}"),
        }
    }

    /// A publisher for `cfg`, or why the configuration is refused.
    pub fn try_new(cfg: SequencerConfig) -> Result<Sequencer, ConfigError> {
        cfg.validate()?;
        let max_msgs = (cfg.max_packet_len - DATA_OVERHEAD) / MIN_MESSAGE_LEN;
        Ok(Sequencer {
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
            hosts: PeerTable::new(cfg.limits.max_peers_tracked),
            global: TokenBucket::full(cfg.limits.global_burst_bytes, Instant::ZERO),
            images: Vec::with_capacity(SNAPSHOT_IMAGES),
            image_next: 0,
            repair: repair::RepairState::new(&cfg.repair, cfg.max_packet_len),
            stats: SequencerStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SequencerConfig {
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

    /// Map the retransmit store's memory now rather than on first use (see
    /// [`RetransmitStore::prefault`]): a server calls it once before its
    /// session starts, so the first million messages pay no page faults.
    pub fn prefault(&mut self) {
        self.store.prefault();
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
    /// Natural batching ([`SequencerConfig::max_delay`] `None`) seals the open
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
    ///   [`SequencerConfig::eos_repeat`], so a receiver that lost it over a
    ///   datagram transport still learns where the session ends.
    pub fn handle_timeout(&mut self, now: Instant, wall_ns: u64) {
        self.last_wall = self.last_wall.max(wall_ns);
        self.handle_repair_timeout(now, self.last_wall);
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
    /// next EndOfSession repetition, and the multicast repairs' coalescing
    /// windows ([`RepairConfig`]). `None` after the end without repetition
    /// and with no repair waiting.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let repair = self.repair.deadline();
        if self.ended {
            return [self.cfg.eos_repeat.map(|r| self.last_eos + r), repair]
                .into_iter()
                .flatten()
                .min();
        }
        [self.coalesce_deadline(), self.heartbeat_deadline(), repair].into_iter().flatten().min()
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
    pub fn stats(&self) -> &SequencerStats {
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
        Message::Trade(Trade {
            symbol,
            side: Side::Sell,
            price: n as i64,
            qty: 3,
            exch_ts: n,
            symbol_seq: 0,
        })
    }

    #[test]
    fn seals_when_the_next_message_does_not_fit() {
        let mut p = Sequencer::new(SequencerConfig::new(1, 4));
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
        let mut p = Sequencer::new(SequencerConfig::new(1, 4));
        assert_eq!(p.push(Instant(0), 0, &Message::Unknown { kind: 9 }), SeqNo(1));
        assert_eq!(p.next_seq(), SeqNo(1));
        p.push(Instant(0), 0, &trade(0, 1));
        p.end_session(Instant(0), 0);
        assert_eq!(p.push(Instant(0), 0, &trade(0, 2)), SeqNo(2));
        assert_eq!(p.stats().rejected_messages, 2);
        assert_eq!(p.published_next(), SeqNo(2));
        assert_eq!(p.poll_timeout(), Some(Instant(0) + DEFAULT_EOS_REPEAT));
        let once =
            Sequencer::new(SequencerConfig { eos_repeat: None, ..SequencerConfig::new(1, 4) });
        let mut once = once;
        once.end_session(Instant(0), 0);
        assert_eq!(once.poll_timeout(), None);
    }

    fn drain_all(p: &mut Sequencer) -> Vec<Vec<u8>> {
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
        let mut p = Sequencer::new(SequencerConfig::new(1, 4));
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
        let mut p = Sequencer::new(SequencerConfig::new(1, 4));
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
        let mut p = Sequencer::new(SequencerConfig {
            max_delay: Some(bound),
            ..SequencerConfig::new(1, 4)
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
        let mut p = Sequencer::new(SequencerConfig::new(1, 4));
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
        let ok = SequencerConfig::new(1, 10);
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(SequencerConfig { epoch: 0, ..ok }.validate(), Err(ConfigError::ZeroEpoch));
        assert_eq!(
            SequencerConfig { max_packet_len: MIN_PACKET_LEN - 1, ..ok }.validate(),
            Err(ConfigError::PacketLen(MIN_PACKET_LEN - 1))
        );
        assert!(SequencerConfig { max_packet_len: MIN_PACKET_LEN, ..ok }.validate().is_ok());
        assert_eq!(
            SequencerConfig { retransmit_window: 0, ..ok }.validate(),
            Err(ConfigError::Window(0))
        );
        // One record per part at the minimum size: 65536 symbols need 65536 parts.
        let tiny = SequencerConfig { max_packet_len: MIN_PACKET_LEN, symbols: 65_536, ..ok };
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
