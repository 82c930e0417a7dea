//! # tickwire-core
//!
//! The sans-IO heart of Tickwire. Nothing in this crate performs I/O or reads a
//! clock: every state machine is driven by explicit inputs (bytes received,
//! `now` passed in) and answers with outputs (bytes to send, messages to
//! deliver, timers to arm). Transports only move bytes.
//!
//! ```text
//!  gbm::Generator ──Message──▶ publisher::Sequencer ──packets──▶ Transport ─ ─ ▶
//!                                   ▲  retransmit store, snapshot state
//!                                   └── requests (NACK, snapshot, login)
//!
//!  ─ ─ ▶ Transport ──bytes──▶ recovery::Receiver ──Event──▶ cache::Cache
//!                                  │  gaps, NACKs, snapshots       latency::Latency
//!                                  └──requests──▶ Transport
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod catchup;
pub mod gbm;
pub mod latency;
pub mod msg;
pub mod pacing;
pub mod pool;
pub mod publisher;
pub mod recovery;
pub mod seq;
pub mod time;
pub mod wire;

pub use msg::{Book, Message, PRICE_SCALE, Quote, Side, SymbolId, SymbolState, Trade};
pub use seq::{SeqNo, SeqRange};
pub use time::Instant;

/// Where a packet reached a subscriber from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Line {
    /// The primary feed (TCP's only line).
    A,
    /// The secondary feed of an A/B pair.
    B,
    /// The unicast request channel (answers to NACKs and snapshot requests).
    Unicast,
}
