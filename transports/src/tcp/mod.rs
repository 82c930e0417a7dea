//! TCP transport on mio (edge-triggered epoll).
//!
//! ```text
//!  TcpPublisher                                   TcpSubscriber
//!   listener ──accept──▶ client 1: out queue ══▶ frame_len ─▶ SubEvent::Packet
//!   publish ─copy─▶      client 2: out queue ══▶ ...
//!   PubEvent::Request ◀─ frame_len ◀══ requests (Login, NACK, snapshot request)
//! ```
//!
//! * **Fan-out is O(N).** [`TcpPublisher::publish_with`] encodes a packet once
//!   into a scratch buffer and copies it into the queue of every live client;
//!   the bytes go out in [`Publisher::flush`] / [`Publisher::poll`], each
//!   client's queue written until the socket says `WouldBlock`. This is TCP's
//!   inherent cost, and the reason multicast exists.
//! * **Edge-triggered rules.** Every socket is registered once for reading and
//!   writing. Readiness is remembered per socket and cleared only by
//!   `WouldBlock`: a socket whose read budget ran out in one poll stays ready,
//!   and the next poll does not block in epoll.
//! * **Slow consumers are dropped, not waited for.** A client whose queue stays
//!   above [`TcpPublisherConfig::high_water`] for longer than
//!   [`TcpPublisherConfig::slow_timeout`], or exceeds
//!   [`TcpPublisherConfig::max_queue`] at once, is disconnected with
//!   [`DisconnectReason::SlowConsumer`]; the others never notice.
//! * **No peer exhausts the server.** A connection's memory is bounded by
//!   [`TcpPublisherConfig::max_queue`] whatever it asks for (a Login's
//!   catch-up is streamed as the socket drains: [`Publisher::watch_drain`],
//!   [`CATCHUP_BUDGET`]); one that has not logged in within
//!   [`TcpPublisherConfig::login_timeout`] or moved no byte for
//!   [`TcpPublisherConfig::idle_timeout`] is closed; one source address holds
//!   at most [`TcpPublisherConfig::max_per_host`] connections. Each refusal and
//!   timeout is counted in [`crate::PubStats`]; per-connection log lines are
//!   rate-limited ([`LOG_LINES_PER_INTERVAL`] per [`LOG_INTERVAL`]).
//! * **Framing.** Both directions carry Tickwire packets back to back; the
//!   receiver cuts the stream with [`tickwire_core::wire::frame_len`]. A bad
//!   magic, bad version or impossible length closes the connection
//!   ([`DisconnectReason::Malformed`]) and is counted: a stream cannot be
//!   resynchronised.
//!
//! Run loop of a server (sketch):
//! ```no_run
//! use std::time::Duration;
//! use tickwire_transports::{Publisher, PubEvent};
//! use tickwire_transports::tcp::{TcpPublisher, TcpPublisherConfig};
//! # fn main() -> std::io::Result<()> {
//! let mut publisher = TcpPublisher::bind("127.0.0.1:0".parse().unwrap(), TcpPublisherConfig::default())?;
//! loop {
//!     let mut logins = Vec::new();
//!     publisher.poll(Some(Duration::from_millis(1)), &mut |ev| {
//!         if let PubEvent::Request { peer, .. } = ev { logins.push(peer) }
//!     })?;
//!     for peer in logins { publisher.set_live(peer, true) }
//!     // publisher.publish(&packet)?; ...
//!     publisher.flush()?;
//! #   break;
//! }
//! # Ok(()) }
//! ```

mod config;
mod framer;
mod guard;
mod peers;
mod publisher;
mod subscriber;

pub use config::{
    CATCHUP_BUDGET, DEFAULT_HIGH_WATER, DEFAULT_IDLE_TIMEOUT, DEFAULT_LOGIN_TIMEOUT,
    DEFAULT_MAX_CLIENTS, DEFAULT_MAX_PER_HOST, DEFAULT_MAX_QUEUE, DEFAULT_PUB_RECV_BUFFER,
    DEFAULT_SEND_BUFFER, DEFAULT_SLOW_TIMEOUT, TcpPublisherConfig,
};
pub use guard::{LOG_INTERVAL, LOG_LINES_PER_INTERVAL, LogLimiter, log_limited};
pub use publisher::TcpPublisher;
pub use subscriber::{DEFAULT_SUB_RECV_BUFFER, TcpSubscriber, TcpSubscriberConfig};

#[allow(unused_imports)] // for doc links
use crate::{DisconnectReason, Publisher};

/// Readiness events fetched from epoll per poll. 1024 covers every client of
/// a full [`DEFAULT_MAX_CLIENTS`] server in one `epoll_wait`; more
/// events simply wait for the next poll.
const EVENTS_CAPACITY: usize = 1024;

/// `read` calls per connection per poll. Bounds the time one busy connection
/// can hold the loop (fairness between clients, and between reading and
/// writing); a connection still readable after its budget is polled again at
/// once without blocking.
const MAX_READS_PER_POLL: usize = 16;

/// Is this error one that means "try again", not "the connection failed"?
fn is_transient(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted)
}
