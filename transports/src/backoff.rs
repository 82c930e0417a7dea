//! Reconnect back-off for stream clients, sans-IO: exponential with jitter,
//! reset only by a session that lasted.
//!
//! A client whose sessions fail the same way at once (a `--max-packet` below
//! the server's, a server that accepts and drops) must not reconnect in a
//! tight loop: each reconnect costs the server an accept and a Login (and
//! the Login a replay of the window). A successful Login is no proof that the
//! next session will work, so what resets the delay is a session that stayed
//! up for [`STABLE_SESSION`].
//!
//! ```
//! use std::time::Duration;
//! use tickwire_core::Instant;
//! use tickwire_transports::backoff::{Backoff, RECONNECT_MIN};
//!
//! let mut b = Backoff::new(7);
//! b.handle_connected(Instant(0));
//! let at = b.handle_disconnected(Instant(1_000));
//! assert!(at >= Instant(1_000) + RECONNECT_MIN / 2 && at <= Instant(1_000) + RECONNECT_MIN);
//! assert!(!b.may_reconnect(Instant(1_000)));
//! assert!(b.may_reconnect(at));
//! ```

use std::time::Duration;

use tickwire_core::Instant;

/// First reconnect delay: 50 ms. A server that dropped one connection (a
/// restart, a slow-consumer cut) is usually back or willing at once; 50 ms is
/// imperceptible to a user and caps a failing client at 20 attempts a second.
pub const RECONNECT_MIN: Duration = Duration::from_millis(50);
/// Longest reconnect delay: 2 s. The delay doubles from [`RECONNECT_MIN`] up
/// to this, so a server that is down is probed every 1–2 s.
pub const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// A session that stayed up this long resets the delay to [`RECONNECT_MIN`]:
/// 5 s is longer than any failure that follows a Login at once (a packet the
/// client cannot frame, a server dropping it as slow) and shorter than the
/// gap between two unrelated outages.
pub const STABLE_SESSION: Duration = Duration::from_secs(5);

/// The reconnect gate. Each wait is drawn uniformly from `[d/2, d]`
/// ("equal jitter": clients dropped together spread out, yet none waits much
/// less than the back-off says), `d` doubling per failed session from
/// [`RECONNECT_MIN`] to [`RECONNECT_MAX`].
///
/// Inputs: [`Self::handle_connected`], [`Self::handle_disconnected`] (also for
/// a connection attempt that failed). Output: [`Self::poll_timeout`], the
/// earliest instant [`Self::may_reconnect`] is true.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    stable: Duration,
    /// The next failure's delay before jitter.
    delay: Duration,
    connected_at: Option<Instant>,
    not_before: Option<Instant>,
    rng: u64,
}

impl Backoff {
    /// The default gate ([`RECONNECT_MIN`], [`RECONNECT_MAX`],
    /// [`STABLE_SESSION`]), its jitter seeded with `seed`.
    pub fn new(seed: u64) -> Backoff {
        Backoff::with_limits(RECONNECT_MIN, RECONNECT_MAX, STABLE_SESSION, seed)
    }

    /// A gate with other limits (`max` is raised to `min` if below it).
    pub fn with_limits(min: Duration, max: Duration, stable: Duration, seed: u64) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            stable,
            delay: min,
            connected_at: None,
            not_before: None,
            // xorshift64 must not start at 0.
            rng: seed | 1,
        }
    }

    /// A connection was established at `now`.
    pub fn handle_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
        self.not_before = None;
    }

    /// The connection dropped (or an attempt failed) at `now`: arms the gate
    /// and returns when the next attempt may be made.
    pub fn handle_disconnected(&mut self, now: Instant) -> Instant {
        if self.connected_at.take().is_some_and(|c| now.saturating_duration_since(c) >= self.stable)
        {
            self.delay = self.min;
        }
        let d = self.delay;
        let half = d / 2;
        let span = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        let jitter = if span == 0 { 0 } else { self.next_random() % (span + 1) };
        let at = now + half + Duration::from_nanos(jitter);
        self.not_before = Some(at);
        self.delay = (d * 2).min(self.max);
        at
    }

    /// May a reconnect be attempted at `now`?
    pub fn may_reconnect(&self, now: Instant) -> bool {
        self.not_before.is_none_or(|t| now >= t)
    }

    /// When the gate opens (None: it is open).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.not_before
    }

    /// The delay (before jitter) the next failure will get.
    pub fn next_delay(&self) -> Duration {
        self.delay
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Sessions that fail right after connecting: the waits double from 50 ms
    /// to 2 s, each within [d/2, d], and stay at 2 s.
    #[test]
    fn failing_sessions_back_off_exponentially_with_jitter() {
        for seed in 0..50 {
            let mut b = Backoff::new(seed);
            let mut now = Instant(1_000_000_000);
            let mut d = RECONNECT_MIN;
            let mut waits = Vec::new();
            for _ in 0..10 {
                b.handle_connected(now);
                now = now + 20 * MS; // a Login, then the first packet fails
                let at = b.handle_disconnected(now);
                let wait = at - now;
                assert!(wait >= d / 2 && wait <= d, "seed {seed}: wait {wait:?} for {d:?}");
                assert!(!b.may_reconnect(now));
                assert!(!b.may_reconnect(Instant(at.0 - 1)));
                assert!(b.may_reconnect(at));
                assert_eq!(b.poll_timeout(), Some(at));
                waits.push(wait);
                now = at;
                d = (d * 2).min(RECONNECT_MAX);
            }
            // 50, 100, 200, 400, 800, 1600 then 2000 ms: at most 10 attempts in
            // the first ~8 s instead of one every 24 ms.
            let total: Duration = waits.iter().sum();
            assert!(total >= Duration::from_millis(5_500), "seed {seed}: {total:?}");
        }
    }

    #[test]
    fn a_session_that_lasted_resets_the_delay() {
        let mut b = Backoff::new(3);
        let mut now = Instant::ZERO;
        for _ in 0..6 {
            b.handle_connected(now);
            now = b.handle_disconnected(now + MS);
        }
        assert_eq!(b.next_delay(), RECONNECT_MAX);
        b.handle_connected(now);
        assert!(b.may_reconnect(now), "connected: the gate is open");
        // Just short of stable: no reset.
        let at = b.handle_disconnected(now + (STABLE_SESSION - MS));
        assert!(at - (now + (STABLE_SESSION - MS)) >= RECONNECT_MAX / 2);
        b.handle_connected(at);
        let end = at + STABLE_SESSION;
        let again = b.handle_disconnected(end);
        assert!(again - end <= RECONNECT_MIN, "reset after a session that lasted");
        assert_eq!(b.next_delay(), RECONNECT_MIN * 2);
    }

    #[test]
    fn failed_attempts_without_a_connection_back_off_too() {
        let mut b = Backoff::new(9);
        let t = Instant::ZERO;
        let first = b.handle_disconnected(t);
        let second = b.handle_disconnected(first);
        assert!(second - first >= RECONNECT_MIN, "{:?}", second - first);
        assert!(b.may_reconnect(second));
        assert_eq!(Backoff::with_limits(MS, Duration::ZERO, MS, 0).next_delay(), MS);
    }
}
