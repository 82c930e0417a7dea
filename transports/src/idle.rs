//! Idle strategies for polling loops, as Aeron has them.
//!
//! On a 2-core machine where server, client and the kernel's softirq work share
//! two CPUs, busy-spinning both cores starves packet processing; the default is
//! therefore to block in epoll with a short timeout. `Spin` and `SpinYield` are
//! for machines with cores to spare (and `--cpu` pinning).

use std::str::FromStr;
use std::time::Duration;

/// How a polling loop waits when there is nothing to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdleStrategy {
    /// Never block: poll with a zero timeout, forever.
    Spin,
    /// Poll with a zero timeout `spins` times, then yield the CPU, then block
    /// for up to `block` once idle for long.
    SpinYield {
        /// Empty polls before yielding.
        spins: u32,
    },
    /// Block in epoll/poll for at most the given time.
    Block(Duration),
}

impl Default for IdleStrategy {
    fn default() -> Self {
        IdleStrategy::Block(Duration::from_millis(1))
    }
}

impl FromStr for IdleStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "spin" => Ok(IdleStrategy::Spin),
            "yield" | "spin-yield" => Ok(IdleStrategy::SpinYield { spins: 1000 }),
            "block" => Ok(IdleStrategy::default()),
            other => {
                if let Some(us) = other.strip_prefix("block:") {
                    let us: u64 =
                        us.parse().map_err(|_| format!("bad microseconds in {other:?}"))?;
                    Ok(IdleStrategy::Block(Duration::from_micros(us)))
                } else {
                    Err(format!(
                        "unknown idle strategy {other:?}: use spin, yield, block or block:MICROS"
                    ))
                }
            }
        }
    }
}

/// Tracks consecutive idle polls and says how long the next poll may block.
#[derive(Clone, Debug)]
pub struct Idler {
    strategy: IdleStrategy,
    idle_polls: u32,
}

impl Idler {
    /// A new idler.
    pub fn new(strategy: IdleStrategy) -> Idler {
        Idler { strategy, idle_polls: 0 }
    }

    /// The timeout for the next poll, capped by `deadline` (time until the next
    /// timer). Yields the CPU itself when the strategy says so.
    pub fn timeout(&mut self, deadline: Option<Duration>) -> Option<Duration> {
        let t = match self.strategy {
            IdleStrategy::Spin => Some(Duration::ZERO),
            IdleStrategy::SpinYield { spins } => {
                if self.idle_polls > spins {
                    std::thread::yield_now();
                }
                Some(Duration::ZERO)
            }
            IdleStrategy::Block(d) => {
                if self.idle_polls == 0 {
                    Some(Duration::ZERO)
                } else {
                    Some(d)
                }
            }
        };
        match (t, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// Record whether the last poll did work.
    pub fn record(&mut self, did_work: bool) {
        if did_work {
            self.idle_polls = 0;
        } else {
            self.idle_polls = self.idle_polls.saturating_add(1);
        }
    }
}
