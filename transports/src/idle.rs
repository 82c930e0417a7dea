//! Idle strategies for polling loops: how a loop waits for its next event or
//! deadline.
//!
//! Waiting costs latency in two ways on these machines (measured, see
//! docs/BENCHMARKS.md): a blocked thread wakes tens of microseconds after its
//! packet arrived, and a timed sleep ends late — a 50 µs sleep lasts 75–90 µs
//! even with the timer slack at 1 ns ([`crate::wait`]). Spinning costs a CPU.
//! So:
//!
//! | strategy | waits by | pays when |
//! |---|---|---|
//! | [`Block`](IdleStrategy::Block) | blocking until the event or the deadline, precisely | CPU matters more than tens of µs |
//! | [`Spin`](IdleStrategy::Spin) | never blocking | a core can be given to the loop (`--cpu`) |
//! | [`SpinBlock`](IdleStrategy::SpinBlock) | spinning for a budget after the last work, then blocking | traffic comes in bursts: the next packet is likely soon |
//! | [`Auto`](IdleStrategy::Auto) (default) | spinning when the next deadline is closer than [`SPIN_BELOW`], else blocking until [`WAKE_MARGIN`] before it, then spinning | a paced publisher: its deadlines are known |
//!
//! An [`Idler`] counts what it did ([`IdleStats`]), so the CPU a strategy
//! spends can be reported beside the latency it buys.

use std::str::FromStr;
use std::time::{Duration, Instant};

/// Under [`IdleStrategy::Auto`], a deadline closer than this is waited for by
/// spinning: blocking would wake too late (a 50 µs timed wait ends 25–40 µs
/// late here, see the module docs).
pub const SPIN_BELOW: Duration = Duration::from_micros(100);
/// Under [`IdleStrategy::Auto`], a farther deadline is waited for by blocking
/// until this long before it, then spinning: more than the 25–40 µs a timed
/// wait overshoots by on these VMs.
pub const WAKE_MARGIN: Duration = Duration::from_micros(50);
/// Default budget of [`IdleStrategy::SpinBlock`]: 50 µs, five message
/// intervals at 100k msgs/s.
pub const DEFAULT_SPIN_BUDGET: Duration = Duration::from_micros(50);

/// How a polling loop waits when there is nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IdleStrategy {
    /// Never block: poll with a zero timeout, forever. Give the loop a CPU of
    /// its own (`--cpu`), or it competes with the kernel's packet processing.
    Spin,
    /// Block until an event or the next deadline, to the nanosecond.
    Block,
    /// Spin for `budget` after the last poll that did work, then block.
    SpinBlock {
        /// How long to keep spinning after work.
        budget: Duration,
    },
    /// Decide from the time to the next deadline: spin when it is closer than
    /// [`SPIN_BELOW`], else block until [`WAKE_MARGIN`] before it. With no
    /// deadline, block until an event.
    #[default]
    Auto,
}

impl FromStr for IdleStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spin" => Ok(IdleStrategy::Spin),
            "block" => Ok(IdleStrategy::Block),
            "auto" => Ok(IdleStrategy::Auto),
            "spin-block" => Ok(IdleStrategy::SpinBlock { budget: DEFAULT_SPIN_BUDGET }),
            other => match other.strip_prefix("spin-block:") {
                Some(d) => {
                    let budget = humantime::parse_duration(d).map_err(|e| {
                        format!("bad spin budget {d:?}: {e} (e.g. spin-block:50us)")
                    })?;
                    if budget > Duration::from_secs(1) {
                        return Err(format!("spin budget {d} above 1s: use block"));
                    }
                    Ok(IdleStrategy::SpinBlock { budget })
                }
                None => Err(format!(
                    "unknown idle strategy {other:?}: use auto, block, spin, spin-block or spin-block:DURATION"
                )),
            },
        }
    }
}

impl std::fmt::Display for IdleStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdleStrategy::Spin => f.write_str("spin"),
            IdleStrategy::Block => f.write_str("block"),
            IdleStrategy::Auto => f.write_str("auto"),
            IdleStrategy::SpinBlock { budget } => write!(f, "spin-block:{budget:?}"),
        }
    }
}

/// What an [`Idler`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleStats {
    /// Polls with a zero timeout (spinning).
    pub spins: u64,
    /// Polls allowed to block.
    pub blocks: u64,
}

/// Says how long the next poll may block, by the strategy.
#[derive(Clone, Debug)]
pub struct Idler {
    strategy: IdleStrategy,
    last_work: Instant,
    /// The last poll did no work.
    idle: bool,
    stats: IdleStats,
}

impl Idler {
    /// A new idler.
    pub fn new(strategy: IdleStrategy) -> Idler {
        Idler { strategy, last_work: Instant::now(), idle: false, stats: IdleStats::default() }
    }

    /// The strategy.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// The timeout for the next poll, given the time until the loop's next
    /// deadline (`None`: no deadline, wait for an event).
    pub fn timeout(&mut self, until_deadline: Option<Duration>) -> Option<Duration> {
        let t = match self.strategy {
            IdleStrategy::Spin => Some(Duration::ZERO),
            IdleStrategy::Block => until_deadline,
            IdleStrategy::SpinBlock { budget } => {
                if self.last_work.elapsed() < budget {
                    Some(Duration::ZERO)
                } else {
                    until_deadline
                }
            }
            IdleStrategy::Auto => match until_deadline {
                Some(d) if d < SPIN_BELOW => {
                    // Spin politely once idle: a task woken onto this CPU (the
                    // kernel likes to wake a receiver next to its sender) runs
                    // now, not after our time slice. A busy loop does not yield.
                    if self.idle {
                        std::thread::yield_now();
                    }
                    Some(Duration::ZERO)
                }
                Some(d) => Some(d - WAKE_MARGIN),
                None => None,
            },
        };
        if t == Some(Duration::ZERO) {
            self.stats.spins += 1;
        } else {
            self.stats.blocks += 1;
        }
        t
    }

    /// Record whether the last poll did work.
    pub fn record(&mut self, did_work: bool) {
        self.idle = !did_work;
        if did_work && matches!(self.strategy, IdleStrategy::SpinBlock { .. }) {
            self.last_work = Instant::now();
        }
    }

    /// Counters.
    pub fn stats(&self) -> IdleStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        assert_eq!("spin".parse(), Ok(IdleStrategy::Spin));
        assert_eq!("block".parse(), Ok(IdleStrategy::Block));
        assert_eq!("auto".parse(), Ok(IdleStrategy::Auto));
        assert_eq!(
            "spin-block:20us".parse(),
            Ok(IdleStrategy::SpinBlock { budget: Duration::from_micros(20) })
        );
        assert_eq!(
            "spin-block".parse(),
            Ok(IdleStrategy::SpinBlock { budget: DEFAULT_SPIN_BUDGET })
        );
        assert!("spin-block:forever".parse::<IdleStrategy>().unwrap_err().contains("spin budget"));
        assert!("spin-block:5s".parse::<IdleStrategy>().is_err());
        assert!("yield".parse::<IdleStrategy>().unwrap_err().contains("use auto"));
        assert_eq!(IdleStrategy::Auto.to_string(), "auto");
    }

    #[test]
    fn auto_spins_near_a_deadline_and_blocks_until_just_before_a_far_one() {
        let mut i = Idler::new(IdleStrategy::Auto);
        assert_eq!(i.timeout(Some(Duration::from_micros(10))), Some(Duration::ZERO));
        assert_eq!(i.timeout(Some(Duration::from_micros(99))), Some(Duration::ZERO));
        assert_eq!(i.timeout(Some(Duration::from_micros(300))), Some(Duration::from_micros(250)));
        assert_eq!(i.timeout(None), None);
        assert_eq!(i.stats(), IdleStats { spins: 2, blocks: 2 });
    }

    #[test]
    fn block_waits_exactly_until_the_deadline() {
        let mut i = Idler::new(IdleStrategy::Block);
        assert_eq!(i.timeout(Some(Duration::from_micros(50))), Some(Duration::from_micros(50)));
        i.record(true);
        assert_eq!(i.timeout(None), None);
    }

    #[test]
    fn spin_block_spins_only_within_its_budget() {
        let mut i = Idler::new(IdleStrategy::SpinBlock { budget: Duration::from_millis(200) });
        i.record(true);
        assert_eq!(i.timeout(Some(Duration::from_secs(1))), Some(Duration::ZERO));
        let mut j = Idler::new(IdleStrategy::SpinBlock { budget: Duration::ZERO });
        j.record(true);
        assert_eq!(j.timeout(Some(Duration::from_secs(1))), Some(Duration::from_secs(1)));
        assert_eq!(Idler::new(IdleStrategy::Spin).timeout(None), Some(Duration::ZERO));
    }
}
