//! What keeps one peer (or one host) from exhausting the TCP publisher:
//! connection timers, the per-host connection cap and rate-limited log lines.
//!
//! Everything here is sans-IO: the publisher reads its clock once per poll and
//! passes `now` in, so the rules are tested with made-up instants and no
//! sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::DisconnectReason;

/// The timers of one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnTimers {
    /// When the connection was accepted.
    accepted: Instant,
    /// It has logged in (the server accepted a Login).
    logged_in: bool,
    /// Last time a byte was read from it or written to it.
    last_progress: Instant,
}

impl ConnTimers {
    pub(crate) fn new(now: Instant) -> ConnTimers {
        ConnTimers { accepted: now, logged_in: false, last_progress: now }
    }

    /// The server accepted its Login: the login timer stops.
    pub(crate) fn logged_in(&mut self) {
        self.logged_in = true;
    }

    /// Bytes moved in either direction at `now`.
    pub(crate) fn progress(&mut self, now: Instant) {
        self.last_progress = now;
    }

    /// The earliest instant at which [`Self::expired`] can change its answer.
    pub(crate) fn deadline(&self, login_timeout: Duration, idle_timeout: Duration) -> Instant {
        let idle = self.last_progress + idle_timeout;
        if self.logged_in { idle } else { idle.min(self.accepted + login_timeout) }
    }

    /// Why the connection must close at `now`, if it must.
    pub(crate) fn expired(
        &self,
        now: Instant,
        login_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<DisconnectReason> {
        if !self.logged_in && now.saturating_duration_since(self.accepted) >= login_timeout {
            Some(DisconnectReason::LoginTimeout)
        } else if now.saturating_duration_since(self.last_progress) >= idle_timeout {
            Some(DisconnectReason::Idle)
        } else {
            None
        }
    }
}

/// Why an accepted connection was refused at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its host already holds `max_per_host` connections.
    HostFull,
    /// The server holds `max_clients` connections.
    ServerFull,
}

/// Connections per source address (IPv4-mapped IPv6 counted as IPv4; ports
/// ignored), so one host cannot take every slot.
#[derive(Debug, Default)]
pub(crate) struct HostTable {
    per_host: HashMap<IpAddr, u32>,
    total: usize,
}

/// The host a connection is charged to.
pub(crate) fn host_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl HostTable {
    /// Admit one more connection from `ip`, or say why not.
    pub(crate) fn admit(
        &mut self,
        ip: IpAddr,
        max_per_host: usize,
        max_clients: usize,
    ) -> Result<(), Refusal> {
        if self.total >= max_clients {
            return Err(Refusal::ServerFull);
        }
        let n = self.per_host.entry(host_of(ip)).or_insert(0);
        if *n as usize >= max_per_host {
            if *n == 0 {
                self.per_host.remove(&host_of(ip));
            }
            return Err(Refusal::HostFull);
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// A connection from `ip` closed.
    pub(crate) fn release(&mut self, ip: IpAddr) {
        let host = host_of(ip);
        if let Some(n) = self.per_host.get_mut(&host) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.per_host.remove(&host);
            }
        }
    }

    /// Connections held by `ip`'s host.
    #[cfg(test)]
    pub(crate) fn of(&self, ip: IpAddr) -> u32 {
        self.per_host.get(&host_of(ip)).copied().unwrap_or(0)
    }
}

/// Log lines about individual connections allowed per [`LOG_INTERVAL`]; the
/// rest are counted and summarised once the interval ends. A connect flood
/// must not turn into a stderr flood (each line is a `write` under a lock).
pub const LOG_LINES_PER_INTERVAL: u32 = 10;
/// The interval of [`LOG_LINES_PER_INTERVAL`].
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// A limit on per-connection log lines: at most [`LOG_LINES_PER_INTERVAL`]
/// per [`LOG_INTERVAL`], the rest counted.
#[derive(Debug, Default)]
pub struct LogLimiter {
    window_start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// May a line be printed at `now`? When a new interval starts after lines
    /// were suppressed, returns how many (print a summary first).
    pub fn allow(&mut self, now: Instant) -> (bool, u64) {
        let mut dropped = 0;
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < LOG_INTERVAL => {}
            _ => {
                self.window_start = Some(now);
                self.lines = 0;
                dropped = std::mem::take(&mut self.suppressed);
            }
        }
        if self.lines < LOG_LINES_PER_INTERVAL {
            self.lines += 1;
            (true, dropped)
        } else {
            self.suppressed += 1;
            (false, dropped)
        }
    }
}

impl LogLimiter {
    /// The lines suppressed since the last summary, now taken (print them
    /// when the run ends, so no count is lost after a flood stops).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Print `line` to stderr unless `limiter` says too many lines went out
/// lately; when an interval starts after lines were suppressed, first say how
/// many, as `{who}: N similar connection log lines suppressed`.
pub fn log_limited(
    limiter: &mut LogLimiter,
    now: Instant,
    who: &str,
    line: std::fmt::Arguments<'_>,
) {
    let (ok, dropped) = limiter.allow(now);
    if dropped > 0 {
        eprintln!("{who}: {dropped} similar connection log lines suppressed");
    }
    if ok {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn login_timer_then_idle_timer() {
        let t0 = Instant::now();
        let (login, idle) = (1000 * MS, 5000 * MS);
        let mut c = ConnTimers::new(t0);
        assert_eq!(c.deadline(login, idle), t0 + login);
        assert_eq!(c.expired(t0 + 999 * MS, login, idle), None);
        // Bytes that are not a Login do not stop the login timer.
        c.progress(t0 + 500 * MS);
        assert_eq!(c.expired(t0 + login, login, idle), Some(DisconnectReason::LoginTimeout));
        c.logged_in();
        assert_eq!(c.expired(t0 + login, login, idle), None);
        assert_eq!(c.deadline(login, idle), t0 + 5500 * MS);
        assert_eq!(c.expired(t0 + 5499 * MS, login, idle), None);
        assert_eq!(c.expired(t0 + 5500 * MS, login, idle), Some(DisconnectReason::Idle));
        c.progress(t0 + 5400 * MS);
        assert_eq!(c.expired(t0 + 5500 * MS, login, idle), None, "progress pushes idle back");
    }

    #[test]
    fn hosts_are_capped_separately_and_the_total_too() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let a6: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        let mut t = HostTable::default();
        assert_eq!(t.admit(a, 2, 3), Ok(()));
        assert_eq!(t.admit(a6, 2, 3), Ok(()), "v4-mapped is the same host");
        assert_eq!(t.admit(a, 2, 3), Err(Refusal::HostFull));
        assert_eq!(t.admit(b, 2, 3), Ok(()));
        assert_eq!(t.admit(b, 2, 3), Err(Refusal::ServerFull));
        t.release(a);
        assert_eq!(t.of(a), 1);
        assert_eq!(t.admit(b, 2, 3), Ok(()));
        t.release(b);
        t.release(b);
        t.release(b); // unknown: ignored
        assert_eq!(t.of(b), 0);
        assert_eq!(t.admit(b, 0, 3), Err(Refusal::HostFull), "a zero cap admits nobody");
        assert!(!t.per_host.contains_key(&b), "no entry left behind");
    }

    #[test]
    fn log_lines_are_rate_limited_and_summarised() {
        let t0 = Instant::now();
        let mut l = LogLimiter::default();
        let printed = (0..100).filter(|i| l.allow(t0 + *i * MS).0).count();
        assert_eq!(printed, LOG_LINES_PER_INTERVAL as usize);
        assert_eq!(l.allow(t0 + LOG_INTERVAL), (true, 100 - u64::from(LOG_LINES_PER_INTERVAL)));
        assert_eq!(l.allow(t0 + LOG_INTERVAL), (true, 0));
        for i in 0..20 {
            l.allow(t0 + LOG_INTERVAL + i * MS);
        }
        assert_eq!(l.take_suppressed(), 20 + 2 - u64::from(LOG_LINES_PER_INTERVAL));
        assert_eq!(l.take_suppressed(), 0);
    }
}
