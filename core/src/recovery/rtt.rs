//! The request round trip, measured: an RFC 6298 estimator (SRTT, RTTVAR,
//! RTO), and the bookkeeping that turns a receiver's own requests and their
//! answers into samples.
//!
//! ```text
//!  first sample R:  SRTT = R            RTTVAR = R / 2
//!  later samples:   RTTVAR = 3/4 RTTVAR + 1/4 |SRTT − R|     (with the old SRTT)
//!                   SRTT   = 7/8 SRTT   + 1/8 R
//!  RTO = clamp(SRTT + max(G, 4 · RTTVAR), floor, ceiling)     (before any sample: the initial RTO)
//! ```
//!
//! Models: RFC 6298 § 2, RFC 9002 §§ 5–6 (QUIC's `smoothed_rtt`, `rttvar`
//! and PTO), quinn-proto's `RttEstimator` (`update`, `pto_base`). Like them it
//! is sans-IO: it is given the instants a request left
//! ([`Receiver::poll_transmit`](super::Receiver::poll_transmit)'s `now`) and
//! its answer came in (`handle_packet`'s `now`).
//!
//! # Samples
//! * **A NACK** range answered by the first Retransmission that brings a
//!   message of it that is still missing. **Karn's rule**: a range that
//!   was asked for before (a retry, or a range coalesced with a retried
//!   hole) gives no sample, since its answer may be to either request.
//! * **A Probe** answered by the Status that echoes its nonce, if the round
//!   sent it once (a retried Probe carries the same nonce: Karn again).
//! * **A challenge**: the Status that gives a cookie the receiver lacked
//!   answers the NACKs it sent without one (the session's first NACK).
//!
//! **Multicast repair.** With the service repairing on the group, the
//! Retransmission that fills a NACKed range may answer another subscriber's
//! NACK for the same loss, sent up to a round trip earlier: the sample is
//! then *shorter* than this receiver's round trip (anywhere in `(0, RTT)`),
//! never longer (the service trims a NACK of what it just repaired, so an
//! answer to its own would come no sooner). For the RTO alone that would be
//! harmless — a short sample makes a retry early, never late, and on a LAN
//! the floor, not the estimate, sets the RTO — but the multicast NACK
//! spread is a multiple of SRTT, and there the bias feeds on itself (more
//! subscribers → shorter samples → a shorter spread → more NACKs; measured
//! in `core/tests/simnet.rs`: 16 subscribers sent 3.5× the NACKs of one).
//! So group repairs are sampled only while the receiver is alone: until a
//! repair (or a RepairNotice) comes on the group for a hole it had not
//! NACKed (someone else asks on this group), every answer is to its own
//! NACK, and the samples are true;
//! from then on only unicast answers (and Probes) are samples, and the
//! estimate made meanwhile stands. A subscriber behind a multicast
//! repairer that is alone from the start thus still measures (its answers
//! all come on the group).

use std::time::Duration;

use crate::Line;
use crate::time::Instant;

/// `G` of RFC 6298: the least the variance term adds to SRTT, so the RTO
/// stays above the round trip once the variance of a steady path decays to
/// ~0. 50 µs is a thread's default timer slack on Linux (a receiver
/// blocked in `epoll_pwait2` or `nanosleep` wakes up to that much late, and
/// so may read an answer late) and covers a VM wake-up (25–40 µs here,
/// `shared/FACTS.md`).
pub const RTT_GRANULARITY: Duration = Duration::from_micros(50);

/// An RFC 6298 round-trip estimator with a floor and a ceiling on its RTO.
#[derive(Clone, Copy, Debug)]
pub struct RttEstimator {
    srtt: Option<Duration>,
    rttvar: Duration,
    latest: Duration,
    min: Duration,
    samples: u64,
    initial: Duration,
    floor: Duration,
    ceiling: Duration,
}

impl RttEstimator {
    /// No sample yet: [`Self::rto`] is `initial` (clamped to
    /// `floor..=ceiling`) until the first one. A `ceiling` below `floor` is
    /// raised to it.
    pub fn new(initial: Duration, floor: Duration, ceiling: Duration) -> RttEstimator {
        RttEstimator {
            srtt: None,
            rttvar: Duration::ZERO,
            latest: Duration::ZERO,
            min: Duration::ZERO,
            samples: 0,
            initial,
            floor,
            ceiling: ceiling.max(floor),
        }
    }

    /// One round-trip sample (RFC 6298 § 2.2–2.3: the variance is updated
    /// with the SRTT of before the sample).
    pub fn on_sample(&mut self, rtt: Duration) {
        self.latest = rtt;
        self.samples += 1;
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
                self.min = rtt;
            }
            Some(srtt) => {
                let dev = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + dev) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
                self.min = self.min.min(rtt);
            }
        }
    }

    /// The retransmission timeout: `SRTT + max(G, 4·RTTVAR)` clamped to the
    /// floor and the ceiling; the initial RTO (clamped) before any sample.
    pub fn rto(&self) -> Duration {
        let raw = match self.srtt {
            Some(srtt) => srtt + (self.rttvar * 4).max(RTT_GRANULARITY),
            None => self.initial,
        };
        raw.clamp(self.floor, self.ceiling)
    }

    /// The smoothed round trip (`None` before any sample).
    pub fn srtt(&self) -> Option<Duration> {
        self.srtt
    }

    /// The round-trip variation (zero before any sample).
    pub fn rttvar(&self) -> Duration {
        self.rttvar
    }

    /// The last sample (zero before any).
    pub fn latest(&self) -> Duration {
        self.latest
    }

    /// The smallest sample (zero before any).
    pub fn min(&self) -> Duration {
        self.min
    }

    /// Samples taken.
    pub fn samples(&self) -> u64 {
        self.samples
    }
}

/// A Probe in flight, for a sample.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProbeSample {
    /// When the round's Probe left, if it left once (a retry clears it: Karn).
    sent: Option<Instant>,
}

impl ProbeSample {
    /// A Probe of the current round left at `now`; `first` is false for a
    /// retry of the round (the same nonce again).
    pub(super) fn on_sent(&mut self, now: Instant, first: bool) {
        self.sent = first.then_some(now);
    }

    /// The round was answered (or ended) at `now`: the sample it gives, if any.
    pub(super) fn on_answered(&mut self, now: Instant) -> Option<Duration> {
        self.sent.take().map(|t| now - t)
    }
}

impl super::Receiver {
    /// The NACK `[start, start + count)` left at `now` (`poll_transmit`).
    pub(super) fn rtt_nack_sent(&mut self, now: Instant, start: u64, count: u16) {
        let end = start + u64::from(count);
        if let Some(o) = self
            .outstanding
            .iter_mut()
            .find(|o| o.start == start && o.end == end && o.sent.is_none())
        {
            o.sent = Some(now);
        }
    }

    /// A Retransmission of `[first, first + count)` arrived at `now`, before
    /// it is taken: the first one that brings a still-missing message of a
    /// NACK range in flight, asked for once, gives that range's sample.
    pub(super) fn rtt_retransmission(&mut self, now: Instant, line: Line, first: u64, count: u64) {
        let end = first + count;
        if line != Line::Unicast {
            self.note_foreign_repair(first, end);
        }
        // A repair on the group may answer another subscriber's earlier NACK
        // (module docs): once others are seen, only unicast answers count.
        if self.peers_seen && line != Line::Unicast {
            return;
        }
        let (gaps, buf) = (&self.gaps, &self.buf);
        let missing = |a: u64, b: u64| {
            gaps.intersects(a, b) && (a..b).any(|q| !buf.present(q) && gaps.find(q).is_some())
        };
        let mut sample = None;
        for o in self.outstanding.iter_mut() {
            let (a, b) = (o.start.max(first), o.end.min(end));
            if a >= b || o.deadline <= now {
                continue;
            }
            let Some(sent) = o.sent else { continue };
            if !missing(a, b) {
                continue;
            }
            // Taken once per range: later packets of the answer are no sample.
            o.sent = None;
            if !o.retry {
                sample = Some(sample.map_or(now - sent, |s: Duration| s.min(now - sent)));
            }
        }
        if let Some(s) = sample {
            self.rtt_sample(s);
        }
    }

    /// A repair (or its RepairNotice) of `[start, end)` came on the group:
    /// if it covers a hole this receiver never NACKed, another subscriber
    /// did, and the receiver is not alone. (Holes it did NACK say nothing:
    /// the repair may be its own, however late; what it already holds says
    /// nothing either: it may be its own notice, overtaken by its repair.)
    pub(super) fn note_foreign_repair(&mut self, start: u64, end: u64) {
        if self.peers_seen {
            return;
        }
        let i = self.gaps.gaps.partition_point(|g| g.end <= start);
        self.peers_seen = self
            .gaps
            .gaps
            .range(i..)
            .take_while(|g| g.start < end)
            .any(|g| !g.nacked && g.cursor.is_none());
    }

    /// A challenge (a Status with a cookie this receiver lacked) answered
    /// its NACKs in flight at `now`: they were sent without the cookie, so
    /// no data will answer them. The latest one sent once gives the sample
    /// (the session's first NACK is always challenged: without this the
    /// first holes would wait the initial RTO).
    pub(super) fn rtt_challenge(&mut self, now: Instant) {
        let latest = self.outstanding.iter().filter(|o| !o.retry).filter_map(|o| o.sent).max();
        for o in self.outstanding.iter_mut() {
            o.sent = None;
        }
        if let Some(sent) = latest {
            self.rtt_sample(now - sent);
        }
    }

    /// The Probe round was answered at `now` by its Status.
    pub(super) fn rtt_probe_answered(&mut self, now: Instant) {
        if let Some(s) = self.probe_rtt.on_answered(now) {
            self.rtt_sample(s);
        }
    }

    fn rtt_sample(&mut self, rtt: Duration) {
        self.rtt.on_sample(rtt);
        self.stats.rtt = super::RttStats::of(&self.rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    fn est() -> RttEstimator {
        RttEstimator::new(4000 * US, US, Duration::from_secs(60))
    }

    #[test]
    fn before_any_sample_the_initial_rto_applies() {
        let e = est();
        assert_eq!(e.rto(), 4000 * US);
        assert_eq!(e.srtt(), None);
        assert_eq!(e.samples(), 0);
    }

    #[test]
    fn hand_computed_rfc6298_values() {
        let mut e = est();
        // First: SRTT = 100, RTTVAR = 50, RTO = 100 + max(50, 200) = 300.
        e.on_sample(100 * US);
        assert_eq!(e.srtt(), Some(100 * US));
        assert_eq!(e.rttvar(), 50 * US);
        assert_eq!(e.rto(), 300 * US);
        // R = 200: RTTVAR = 3/4·50 + 1/4·|100 − 200| = 37.5 + 25 = 62.5;
        // SRTT = 7/8·100 + 1/8·200 = 112.5; RTO = 112.5 + 250 = 362.5.
        e.on_sample(200 * US);
        assert_eq!(e.rttvar(), Duration::from_nanos(62_500));
        assert_eq!(e.srtt(), Some(Duration::from_nanos(112_500)));
        assert_eq!(e.rto(), Duration::from_nanos(362_500));
        // R = 50: RTTVAR = 3/4·62.5 + 1/4·62.5 = 62.5 (|112.5 − 50| = 62.5);
        // SRTT = 7/8·112.5 + 1/8·50 = 98.4375 + 6.25 = 104.6875.
        e.on_sample(50 * US);
        assert_eq!(e.rttvar(), Duration::from_nanos(62_500));
        assert_eq!(e.srtt(), Some(Duration::from_nanos(104_687)));
        assert_eq!(e.rto(), Duration::from_nanos(104_687 + 250_000));
        assert_eq!((e.samples(), e.min(), e.latest()), (3, 50 * US, 50 * US));
    }

    #[test]
    fn a_steady_path_converges_and_the_granularity_keeps_rto_above_srtt() {
        let mut e = est();
        for _ in 0..200 {
            e.on_sample(80 * US);
        }
        assert_eq!(e.srtt(), Some(80 * US));
        assert!(e.rttvar() < US, "{:?}", e.rttvar());
        // 4·RTTVAR has decayed below G: RTO = SRTT + G.
        assert_eq!(e.rto(), 80 * US + RTT_GRANULARITY);
    }

    #[test]
    fn floor_and_ceiling_clamp_the_rto() {
        let mut e = RttEstimator::new(4000 * US, 200 * US, 2000 * US);
        e.on_sample(10 * US); // 10 + max(50, 20) = 60 → floor
        assert_eq!(e.rto(), 200 * US);
        for _ in 0..3 {
            e.on_sample(30_000 * US);
        }
        assert_eq!(e.rto(), 2000 * US, "ceiling");
        // The initial RTO is clamped too.
        assert_eq!(RttEstimator::new(10 * US, 200 * US, 2000 * US).rto(), 200 * US);
        assert_eq!(RttEstimator::new(9000 * US, 200 * US, 2000 * US).rto(), 2000 * US);
        // A ceiling below the floor is raised to it.
        assert_eq!(RttEstimator::new(Duration::ZERO, 300 * US, 100 * US).rto(), 300 * US);
    }

    #[test]
    fn a_retried_probe_round_gives_no_sample() {
        let t = |us: u64| Instant(us * 1000);
        let mut p = ProbeSample::default();
        p.on_sent(t(10), true);
        assert_eq!(p.on_answered(t(70)), Some(60 * US));
        p.on_sent(t(100), true);
        p.on_sent(t(200), false); // the same nonce again
        assert_eq!(p.on_answered(t(230)), None, "Karn: which Probe did it answer?");
        // A round that ended unanswered does not spoil the next one.
        p.on_sent(t(240), true);
        p.on_sent(t(250), false);
        // The next round samples again.
        p.on_sent(t(300), true);
        assert_eq!(p.on_answered(t(350)), Some(50 * US));
    }
}
