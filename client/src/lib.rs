//! # tickwire-client
//!
//! The feed handler as a library: transport → [`tickwire_core::recovery::Receiver`]
//! (gap detection, NACK, snapshot, resume) → [`tickwire_core::cache`] (seqlock
//! per symbol) → [`tickwire_core::latency::TickToCache`] (HdrHistogram), all
//! driven by a [`Subscriber`]. A program builds one, receives in-order,
//! recovered messages through a callback ([`Subscriber::run`],
//! [`Subscriber::poll`]) or an iterator ([`Subscriber::events`]), and reads
//! the lock-free cache from other threads ([`Subscriber::cache`]):
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use tickwire_client::{Event, Subscriber};
//!
//! let mut sub = Subscriber::builder()
//!     .tcp("127.0.0.1:9000".parse().unwrap())
//!     .universe(1000)
//!     .symbols([7])
//!     .build()?;
//! sub.run(&AtomicBool::new(false), |ev| {
//!     if let Event::Message { seq, msg, .. } = ev {
//!         println!("{seq} {msg:?}");
//!     }
//! })?;
//! println!("{} delivered", sub.summary().messages_delivered);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The `client` binary is [`run`]: a [`ClientConfig`] mapped onto a
//! [`SubscriberBuilder`], with the live view, metrics and output files
//! around the same loop. `examples/subscribe.rs` at the workspace root is a
//! complete program.

#![warn(missing_docs)]

mod driver;
pub mod subscriber;
mod summary;
pub mod verify;
pub mod view;

pub use driver::{ClientConfig, run};
pub use subscriber::{
    BuildError, Events, LIVENESS_TIMEOUT, MAX_POLL_WAIT, PipelineStats, Subscriber,
    SubscriberBuilder, Threading,
};
pub use summary::{DeliverySummary, RecordSummary, RecoveryTimes, Summary, VerifySummary};
pub use tickwire_core::recovery::Event;

use tickwire_core::SymbolId;

/// Parse a subscription filter: `0-9,42,100-199`.
pub fn parse_filter(s: &str) -> Result<Vec<SymbolId>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad symbol filter {part:?}: use e.g. 0-9,42");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (SymbolId, SymbolId) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("empty symbol filter".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(parse_filter("0-2,7"), Ok(vec![0, 1, 2, 7]));
        assert!(parse_filter("3-1").is_err());
        assert!(parse_filter("x").is_err());
        assert!(parse_filter("").is_err());
    }
}
