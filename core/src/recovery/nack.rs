//! NACK scheduling: delays with jitter, coalescing, retries with back-off,
//! the outstanding cap, and NackReject.

use super::*;

/// A range whose repair the service announced on the group (a RepairNotice),
/// counted as requested until `until` (one NACK retry timeout, the RTO,
/// after it was seen): not NACKed meanwhile; if still missing then, NACKed
/// as usual.
#[derive(Clone, Copy, Debug)]
pub(super) struct Announced {
    start: u64,
    end: u64,
    until: Instant,
}

impl Receiver {
    pub(super) fn jitter(&mut self, max: Duration) -> Duration {
        let m = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        if m == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next_u64() % m.saturating_add(1))
    }

    /// When a fresh hole is first NACKed: after the NACK delay and a random
    /// spread, `nack_jitter` — or, once other subscribers are seen NACKing
    /// on the group (a repair or notice of a hole this receiver never
    /// NACKed), the longer multicast spread, so that one of them NACKs a shared
    /// loss and the others see its notice. A receiver alone behind a
    /// multicast repairer has nobody to leave the NACK to: its notices all
    /// answer its own NACKs, and it keeps the short spread.
    pub(super) fn first_nack_due(&mut self, now: Instant) -> Instant {
        let max = if self.peers_seen { self.multicast_jitter() } else { self.cfg.nack_jitter };
        let j = self.jitter(max);
        now + self.cfg.nack_delay + j
    }

    /// The first-NACK spread once the service repairs on multicast: about
    /// `1 + N / MULTICAST_JITTER_RTTS` of N subscribers that lost the same
    /// packet NACK before the first RepairNotice reaches them (it comes a
    /// round trip after the first NACK left), so the spread is a multiple of
    /// the measured round trip, between `nack_jitter` and
    /// `multicast_nack_jitter` (the latter before any sample).
    pub(super) fn multicast_jitter(&self) -> Duration {
        let cap = self.cfg.multicast_nack_jitter;
        match self.rtt.srtt() {
            Some(srtt) => (srtt * MULTICAST_JITTER_RTTS).clamp(self.cfg.nack_jitter.min(cap), cap),
            None => cap,
        }
    }

    /// Retry timeout of a NACK round after `retries` rounds without
    /// progress: the RTO (from the measured round trip; `nack_retry_initial`
    /// before any sample), doubled per round, at most `nack_retry_max`.
    pub(super) fn backoff(&self, retries: u32) -> Duration {
        let f = 1u32 << retries.min(20);
        (self.rtt.rto() * f).min(self.cfg.nack_retry_max)
    }

    pub(super) fn can_nack(&self) -> bool {
        self.started && !self.snap.active && (self.cfg.mode == Mode::Datagram || self.logged_in)
    }

    /// A RepairNotice of the session: `[first_seq, first_seq + count)` will
    /// be multicast; do not NACK it for one retry interval.
    pub(super) fn on_repair_notice(&mut self, now: Instant, repr: &PacketRepr) {
        if !self.session_packet(repr.epoch) {
            return;
        }
        self.stats.repair_notices += 1;
        let start = repr.first_seq.0;
        let end = start + u64::from(repr.count);
        self.note_foreign_repair(start, end);
        if end <= self.next {
            return;
        }
        self.announced.retain(|a| a.until > now && a.end > self.next);
        if self.announced.len() >= MAX_ANNOUNCED_REPAIRS {
            self.announced.pop_front();
        }
        // The notice stands for this receiver's first NACK of the range:
        // its repair follows it at once, so it counts as requested for as
        // long as a NACK sent now would wait before its retry.
        let until = now + self.backoff(0);
        self.announced.push_back(Announced { start, end, until });
    }

    /// End of the live announcement covering `q`, if any.
    fn announced_until(&self, q: u64, now: Instant) -> Option<u64> {
        self.announced
            .iter()
            .filter(|a| a.until > now && a.start <= q && q < a.end)
            .map(|a| a.end)
            .max()
    }

    /// Start of the first live announcement above `q` (u64::MAX: none).
    fn next_announced(&self, q: u64, now: Instant) -> u64 {
        self.announced
            .iter()
            .filter(|a| a.until > now && a.start > q)
            .map(|a| a.start)
            .min()
            .unwrap_or(u64::MAX)
    }

    pub(super) fn prune_outstanding(&mut self, now: Instant) {
        let gaps = &self.gaps;
        self.outstanding.retain(|o| o.deadline > now && gaps.intersects(o.start, o.end));
    }

    /// Queue NACKs for every hole that is due, several at once: neighbouring
    /// holes coalesced, ranges split at `max_nack_len`, at most
    /// `max_outstanding_nacks` in flight. A hole whose retries ran out goes to
    /// a snapshot.
    pub(super) fn schedule_nacks(&mut self, now: Instant) {
        if !self.can_nack() || self.gaps.is_empty() {
            return;
        }
        self.prune_outstanding(now);
        let chunk = self.cfg.max_nack_len;
        let max_out = self.cfg.max_outstanding_nacks;
        // The range being built: start, end, retry deadline, and whether
        // any of it was asked for before (Karn: then no RTT sample).
        let mut cur: Option<(u64, u64, Instant, bool)> = None;
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
                if !g.nacked {
                    g.stalled_since = now;
                } else {
                    if g.missing < g.missing_at_nack {
                        g.retries = 0;
                        g.stalled_since = now;
                    } else {
                        g.retries += 1;
                    }
                    // Rounds *and* time: with retries from the round trip,
                    // eight rounds can pass in a few ms, inside one loss burst.
                    if g.retries > self.cfg.max_nack_retries
                        && now - g.stalled_since >= self.cfg.nack_give_up_after
                    {
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
            // Announcements stand in for the first NACK of a hole (the NACK
            // delay is when a notice narrows it); a retry is never
            // suppressed: the notice may answer this receiver's own NACK,
            // whose repair did not come.
            let first_round = !g.nacked;
            while s < g.end {
                let mut a = s;
                while a < g.end && self.buf.present(a) {
                    a += 1;
                }
                if a >= g.end {
                    break;
                }
                if let Some(e) = self.announced_until(a, now).filter(|_| first_round) {
                    // Its repair is announced: as good as requested.
                    self.stats.nacks_suppressed += 1;
                    s = e.min(g.end);
                    continue;
                }
                let stop = if first_round { self.next_announced(a, now).min(g.end) } else { g.end };
                let mut b = a + 1;
                while b < stop && b - a < chunk && !self.buf.present(b) {
                    b += 1;
                }
                match &mut cur {
                    Some((cs, ce, _, retry))
                        if a - *ce <= NACK_COALESCE_MAX_HOLE && b - *cs <= chunk =>
                    {
                        *ce = b;
                        *retry |= !first_round;
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
                        cur = Some((a, b, now + self.backoff(g.retries), !first_round));
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

    pub(super) fn push_nack(&mut self, (start, end, deadline, retry): (u64, u64, Instant, bool)) {
        self.outstanding.push(Outstanding { start, end, deadline, sent: None, retry });
        // `end - start <= max_nack_len <= u16::MAX`.
        self.tx.push_back(Tx::Nack { start, count: (end - start) as u16 });
    }

    pub(super) fn on_nack_reject(&mut self, now: Instant, repr: &PacketRepr) {
        if !self.session_packet(repr.epoch) {
            return;
        }
        self.stats.nack_rejects += 1;
        let a = repr.first_seq.0;
        if self.gaps.intersects(a, a + u64::from(repr.count)) {
            self.start_snapshot(now);
        }
    }
}
