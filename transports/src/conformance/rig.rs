//! The rig: one publisher, several subscribers, driven from one thread.

use super::*;

/// A subscriber event, owned.
#[derive(Debug)]
pub(super) enum SubEv {
    Packet(Line, Vec<u8>),
}

/// Per-subscriber bookkeeping.
#[derive(Debug, Default)]
pub(super) struct SubSide {
    pub(super) connected: bool,
    pub(super) acked: bool,
    pub(super) live_on_login: bool,
    pub(super) peer: Option<PeerId>,
    /// Packet events seen, and their bytes.
    pub(super) packets: u64,
    pub(super) bytes: u64,
    pub(super) requests_sent: u64,
    pub(super) pumps_since_login: u32,
    pub(super) base: SubStats,
}

pub(super) struct Rig<P, S> {
    pub(super) profile: Profile,
    pub(super) check: &'static str,
    pub(super) deadline: Instant,
    pub(super) p: P,
    pub(super) subs: Vec<S>,
    pub(super) side: Vec<SubSide>,
    pub(super) peers: HashMap<PeerId, usize>,
    /// Requests other than Logins the publisher reported, not yet taken.
    pub(super) requests_seen: u64,
    pub(super) replies_sent: u64,
    pub(super) reply_bytes_sent: u64,
    pub(super) pub_base: PubStats,
    /// The previous pump saw something: poll without blocking.
    pub(super) busy: bool,
}

impl<P: Publisher, S: Subscriber> Rig<P, S> {
    pub(super) fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!("[{}] {}: {what}", self.profile.name, self.check)
    }

    /// Build the publisher and `n` subscribers and log them all in.
    pub(super) fn new(
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
    pub(super) fn login_all(&mut self) {
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

    pub(super) fn send_login(&mut self, i: usize) {
        if let Err(e) = self.subs[i].send_request(&login(i)) {
            self.fail(format!("subscriber {i}: send_request(Login): {e}"));
        }
        self.side[i].requests_sent += 1;
        self.side[i].pumps_since_login = 0;
    }

    /// Send request `packet` from subscriber `i`.
    pub(super) fn send_request(&mut self, i: usize, packet: &[u8]) {
        if let Err(e) = self.subs[i].send_request(packet) {
            self.fail(format!("subscriber {i}: send_request: {e}"));
        }
        self.side[i].requests_sent += 1;
    }

    pub(super) fn publish(&mut self, k: usize, packet: &[u8]) {
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
    pub(super) fn publish_range(
        &mut self,
        stream: &[Vec<u8>],
        range: std::ops::Range<usize>,
    ) -> u64 {
        let mut bytes = 0;
        for (k, p) in stream.iter().enumerate().take(range.end).skip(range.start) {
            self.publish(k, p);
            bytes += p.len() as u64;
        }
        bytes
    }

    pub(super) fn flush(&mut self) {
        if let Err(e) = self.p.flush() {
            self.fail(format!("flush: {e}"));
        }
    }

    pub(super) fn send_to(&mut self, sub: usize, packet: &[u8]) {
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
    pub(super) fn step(&mut self) -> (Vec<(PeerId, Vec<u8>)>, Vec<(usize, SubEv)>) {
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
    pub(super) fn check_stats(
        &self,
        published: u64,
        published_bytes: u64,
        data_copies: u64,
        data_bytes: u64,
    ) {
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
    pub(super) fn check_error_counters(&self) {
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
pub(super) struct Tracker {
    /// One past the highest index seen on any line.
    pub(super) high: u64,
    /// Per line: index of the next packet expected (reliable) or one past the
    /// last seen (best effort).
    pub(super) next: HashMap<Line, u64>,
    /// Packets received on any line.
    pub(super) seen: Vec<bool>,
    pub(super) distinct: usize,
    /// First index this subscriber should receive.
    pub(super) start: u64,
}

impl Tracker {
    pub(super) fn new(total: usize, start: u64) -> Tracker {
        Tracker { high: start, next: HashMap::new(), seen: vec![false; total], distinct: 0, start }
    }

    /// Check one received packet against the stream.
    pub(super) fn on_packet(
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
pub(super) fn drain_data<P: Publisher, S: Subscriber>(
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
pub(super) fn must_arrive(delivery: Delivery, total: usize) -> usize {
    match delivery {
        Delivery::Reliable => total,
        Delivery::BestEffort { min_fraction } => (total as f64 * min_fraction).ceil() as usize,
    }
}
