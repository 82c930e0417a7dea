//! The comparison harness behind `compare` (and the helpers `latency` shares).
//!
//! One run measures, side by side and in the same session: the kernel floor
//! ([`floor`], sockperf ping-pong and throughput over each path), and a grid
//! of cells ([`cell`]): the real `server` and `client` binaries over tcp,
//! multicast and xdp, on loopback and across a namespace topology
//! ([`netns`], with real kernel loss on its bridge), under offered rate,
//! subscriber count, seeded in-process loss (lossy cells in strict and
//! per-symbol delivery order), A/B feeds and idle mode
//! ([`profile`]). Each cell runs after a warm-up, several times; the report
//! ([`report`]) gives medians with min and max, and [`plots`] draws them.
//!
//! ```text
//! cargo build --release --bins --all-features
//! target/release/compare                     # default profile, report in results/<timestamp>/
//! target/release/compare --full --out /tmp/r  # wider sweeps
//! ```

pub mod cell;
pub mod floor;
pub mod netns;
pub mod plots;
pub mod proc;
pub mod profile;
pub mod report;
pub mod stats;
