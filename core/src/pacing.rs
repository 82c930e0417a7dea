//! Pacing, sans-IO: when each message of a session falls due.
//!
//! The simulated exchange produces message `i` (0-based; sequence `i + 1`)
//! at `start + i / rate`. A [`Pacer`] answers "which messages are due at
//! `now`", and when the next one will be ([`Pacer::poll_timeout`]), in the
//! `poll_timeout()` style of the rest of the core: the driver reads the
//! clock, asks, and waits until the deadline by whatever means it has. At
//! `rate` 0 the feed runs flat out and a message is due when it is generated.
//!
//! ```
//! use std::time::Duration;
//! use tickwire_core::{Instant, pacing::Pacer};
//!
//! // 100k msgs/s from t = 1 ms, three messages.
//! let mut p = Pacer::new(100_000, Instant(1_000_000), Some(3));
//! assert_eq!(p.poll_due(Instant(1_000_000)), Some(Instant(1_000_000)));
//! assert_eq!(p.poll_due(Instant(1_005_000)), None, "the next is due 10 µs after the first");
//! assert_eq!(p.poll_timeout(), Some(Instant(1_010_000)));
//! // Late: both remaining messages are due, each at its own instant.
//! assert_eq!(p.poll_due(Instant(1_030_000)), Some(Instant(1_010_000)));
//! assert_eq!(p.poll_due(Instant(1_030_000)), Some(Instant(1_020_000)));
//! assert!(p.is_done());
//! assert_eq!(p.poll_timeout(), None);
//! ```

use crate::time::Instant;

/// When each message of a paced session is due. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: u64,
    start: Instant,
    limit: u64,
    next: u64,
    /// S: the start on the wall clock, ns since the Unix epoch.
    wall_start: Option<u64>,
}

impl Pacer {
    /// Messages at `rate` per second (0: as fast as possible) from `start`,
    /// at most `limit` of them (`None`: no limit).
    pub fn new(rate: u64, start: Instant, limit: Option<u64>) -> Pacer {
        Pacer { rate, start, limit: limit.unwrap_or(u64::MAX), next: 0, wall_start: None }
    }

    /// The configured rate (0: flat out).
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Messages handed out so far.
    pub fn produced(&self) -> u64 {
        self.next
    }

    /// True once the message limit is reached.
    pub fn is_done(&self) -> bool {
        self.next >= self.limit
    }

    /// Stop: no message is due any more (the session's duration passed).
    pub fn stop(&mut self) {
        self.limit = self.next;
    }

    /// When message `i` (0-based) is due (at `rate` 0: the start).
    pub fn due_at(&self, i: u64) -> Instant {
        if self.rate == 0 {
            return self.start;
        }
        let ns = u128::from(i) * 1_000_000_000 / u128::from(self.rate);
        Instant(self.start.0.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX)))
    }

    /// Tie the schedule to the wall clock: the session starts (message 0 is
    /// due) at `wall_ns` ns since the Unix epoch, read together with the
    /// monotonic `start`. This is S of PROTOCOL.md § 4.3.
    pub fn set_wall_start(&mut self, wall_ns: u64) {
        self.wall_start = Some(wall_ns);
    }

    /// The session start S on the wall clock, once known (set, or taken at
    /// the first [`Self::due_wall`]).
    pub fn wall_start(&self) -> Option<u64> {
        self.wall_start
    }

    /// When message `i` is due on the wall clock (ns since the Unix epoch),
    /// the instant the packet's timing block carries: S + `i`/rate, exactly
    /// (at rate 0: `wall_ns`, it is due when generated). `now` and `wall_ns`
    /// are the clocks the caller read last; they are used only to place S
    /// when [`Self::set_wall_start`] was not called, once.
    ///
    /// The due instant is not `wall_ns − (now − due)`: the two clocks are
    /// not read at the same instant, and a thread preempted between the two
    /// reads would shift the messages of that loop iteration later by the
    /// gap (tens of µs), off the schedule, hiding the lateness it measures.
    pub fn due_wall(&mut self, i: u64, now: Instant, wall_ns: u64) -> u64 {
        if self.rate == 0 {
            return wall_ns;
        }
        let start = self.start;
        let s = *self
            .wall_start
            .get_or_insert_with(|| wall_ns.saturating_sub(now.0.saturating_sub(start.0)));
        s.saturating_add(self.due_at(i).0 - start.0)
    }

    /// If the next message is due by `now`, take it and return its due
    /// instant (at `rate` 0: `now`, it is due when generated).
    pub fn poll_due(&mut self, now: Instant) -> Option<Instant> {
        if self.is_done() {
            return None;
        }
        let due = if self.rate == 0 { now } else { self.due_at(self.next) };
        if due > now {
            return None;
        }
        self.next += 1;
        Some(due)
    }

    /// Take up to `max` messages due by `now` at once; returns how many (the
    /// due instant of each is [`Self::due_at`] of its index, or `now` at
    /// `rate` 0). Equivalent to calling [`Self::poll_due`] until it says
    /// `None` or `max` were taken, with one division instead of one per message.
    pub fn take_due(&mut self, now: Instant, max: u64) -> u64 {
        if self.is_done() {
            return 0;
        }
        let room = (self.limit - self.next).min(max);
        let n = if self.rate == 0 {
            room
        } else {
            if self.due_at(self.next) > now {
                return 0;
            }
            // Messages with index i <= elapsed * rate / 1e9 are due.
            let elapsed = u128::from(now.0.saturating_sub(self.start.0));
            let last_due = elapsed * u128::from(self.rate) / 1_000_000_000;
            let due = u64::try_from(last_due).unwrap_or(u64::MAX).saturating_add(1);
            due.saturating_sub(self.next).min(room)
        };
        self.next += n;
        n
    }

    /// When the next message falls due (`None` once done; at `rate` 0 it is
    /// always due: the start, which is in the past).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_done() { None } else { Some(self.due_at(self.next)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_exact_over_a_long_session() {
        // 3 msgs/s does not divide a second: no drift from accumulated rounding.
        let p = Pacer::new(3, Instant(0), None);
        assert_eq!(p.due_at(0), Instant(0));
        assert_eq!(p.due_at(1), Instant(333_333_333));
        assert_eq!(p.due_at(3), Instant(1_000_000_000));
        assert_eq!(p.due_at(3_000_000), Instant(1_000_000 * 1_000_000_000));
    }

    #[test]
    fn limit_and_stop_end_the_session() {
        let mut p = Pacer::new(1_000, Instant(0), Some(10));
        while p.poll_due(Instant(2_500_000)).is_some() {}
        assert_eq!(p.produced(), 3, "due at 0, 1 and 2 ms");
        while p.poll_due(Instant(60_000_000_000)).is_some() {}
        assert_eq!(p.produced(), 10, "capped by the limit");
        assert!(p.is_done());
        let mut q = Pacer::new(1_000, Instant(0), None);
        assert!(q.poll_due(Instant(0)).is_some());
        q.stop();
        assert_eq!((q.poll_due(Instant(u64::MAX)), q.poll_timeout()), (None, None));
    }

    #[test]
    fn take_due_agrees_with_poll_due() {
        for rate in [0u64, 1, 3, 7_000, 100_000, 1_000_000_007] {
            let (mut a, mut b) = (
                Pacer::new(rate, Instant(11), Some(5_000)),
                Pacer::new(rate, Instant(11), Some(5_000)),
            );
            let mut t = 11u64;
            for step in 0..400u64 {
                t += step * 977;
                let now = Instant(t);
                let max = 1 + step % 40;
                let mut by_poll = 0;
                while by_poll < max && a.poll_due(now).is_some() {
                    by_poll += 1;
                }
                let first = b.produced();
                let n = b.take_due(now, max);
                assert_eq!(n, by_poll, "rate {rate} at {t}");
                if rate > 0 && n > 0 {
                    assert!(b.due_at(first + n - 1) <= now);
                }
            }
            assert_eq!(a.produced(), b.produced());
        }
    }

    #[test]
    fn wall_due_times_follow_the_start_not_the_last_clock_reads() {
        let mut p = Pacer::new(100_000, Instant(1_000), None);
        p.set_wall_start(5_000_000);
        // Clocks read 25 µs apart (a preempted thread): no effect.
        assert_eq!(p.due_wall(0, Instant(1_000), 5_000_000 + 25_000), 5_000_000);
        assert_eq!(p.due_wall(7, Instant(90_000), 5_089_000 + 25_000), 5_070_000);
        // Unset, S is placed once, from the first reads.
        let mut q = Pacer::new(100_000, Instant(1_000), None);
        assert_eq!(q.due_wall(0, Instant(3_000), 9_000), 7_000);
        assert_eq!(q.due_wall(1, Instant(50_000), 99_999), 17_000);
        assert_eq!(q.wall_start(), Some(7_000));
    }

    #[test]
    fn flat_out_is_due_when_generated() {
        let mut p = Pacer::new(0, Instant(5), Some(2));
        assert_eq!(p.poll_timeout(), Some(Instant(5)));
        assert_eq!(p.poll_due(Instant(9)), Some(Instant(9)));
        assert_eq!(p.poll_due(Instant(11)), Some(Instant(11)));
        assert_eq!(p.poll_due(Instant(12)), None);
    }
}
