//! What the receiver reports.

use std::time::Duration;

use super::StaleReason;
use crate::msg::{Message, SymbolId, SymbolState};
use crate::seq::{SeqNo, SeqRange};
use crate::time::Instant;

/// What the receiver reports. Copy types only.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// The next message: in sequence ([`Order::Strict`](super::Order)), or
    /// the next of its symbol ([`Order::PerSymbol`](super::Order)).
    Message {
        /// Its sequence number.
        seq: SeqNo,
        /// The message.
        msg: Message,
        /// The `send_time` of the packet that carried it (ns since the Unix epoch).
        send_time: u64,
        /// When it was due at the exchange (ns since the Unix epoch), from the
        /// Data packet's timing block; 0 when the packet carried none (a
        /// Retransmission, or a server that does not stamp due times).
        due_time: u64,
        /// True when it came by retransmission or waited in the reorder buffer
        /// (its latency is not the feed's latency).
        recovered: bool,
    },
    /// Per-symbol order: the symbol's cached state is behind the feed since
    /// `since` (a message of it waits for a hole, or an update of it was
    /// given up on). Sent again with `GivenUp` if a wait ends in giving up.
    SymbolStale {
        /// The symbol.
        symbol: SymbolId,
        /// When it became stale (the receiver's clock).
        since: Instant,
        /// Why.
        reason: StaleReason,
    },
    /// Per-symbol order: the symbol is up to date again.
    SymbolFresh {
        /// The symbol.
        symbol: SymbolId,
        /// How long it was stale.
        stale_for: Duration,
    },
    /// A snapshot consistent at `seq` follows: `SymbolState` events, then `SnapshotEnd`.
    SnapshotStart {
        /// The snapshot is the state after every message below `seq`.
        seq: SeqNo,
        /// Symbols the snapshot announces.
        symbols: u32,
    },
    /// One symbol's state in the snapshot; replace the cached state with it.
    SymbolState(SymbolState),
    /// The client's state now equals the server's after every message below
    /// `seq`; `Message` events continue from `seq`.
    SnapshotEnd {
        /// Where messages continue.
        seq: SeqNo,
    },
    /// The session's epoch is learnt (`old: None`, the first one) or changed
    /// (the server restarted: sequences restart; reset the state).
    EpochChanged {
        /// The previous epoch, if any.
        old: Option<u64>,
        /// The new one.
        new: u64,
    },
    /// Stream: reconnect the transport now (then call `handle_connected`, or
    /// `handle_disconnected` if it fails).
    Reconnect,
    /// The session ended; every message below `next` has been delivered.
    EndOfSession {
        /// One past the session's last message.
        next: SeqNo,
    },
    /// The receiver gave up on `range`: neither retransmission nor a snapshot
    /// could be had. Messages continue after it. Should not happen while the
    /// server is up.
    Unrecoverable {
        /// What was given up.
        range: SeqRange,
    },
}
