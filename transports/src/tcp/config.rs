//! [`TcpPublisherConfig`] and the limits a [`TcpPublisher`] works within.

use std::time::Duration;

use tickwire_core::wire::DEFAULT_MAX_PACKET;

#[allow(unused_imports)] // for doc links
use super::TcpPublisher;
#[allow(unused_imports)] // for doc links
use crate::{DisconnectReason, Publisher};

/// Default [`TcpPublisherConfig::high_water`]: 512 KiB on top of the kernel's
/// send buffer (1 MiB requested) is a few hundred ms of a busy feed at
/// 10 MB/s, more than a healthy client on a LAN ever lags, yet small enough
/// that a thousand lagging clients stay around half a GB.
pub const DEFAULT_HIGH_WATER: usize = 512 << 10;
/// Default [`TcpPublisherConfig::slow_timeout`]: 2 s rides out a GC pause or a
/// scheduling hiccup on the client, and still drops a stalled one quickly.
pub const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`TcpPublisherConfig::max_queue`]: 2 MiB, the memory we accept to
/// spend on one client before dropping it without waiting for the timeout.
/// It bounds a connection's memory whatever it asked for: a Login's catch-up
/// is streamed from the retransmit store as the socket drains (the server
/// keeps it under [`CATCHUP_BUDGET`]), never queued whole. With the request
/// buffer (two packets) this makes a connection cost at most about 2 MiB of
/// user memory, and [`DEFAULT_MAX_CLIENTS`] of them about 2 GiB.
pub const DEFAULT_MAX_QUEUE: usize = 2 << 20;
/// Bytes a catch-up (the replay a Login asked for) may hold in a connection's
/// queue: 256 KiB, refilled from the retransmit store each time the socket
/// drains below half of it. Enough to keep a LAN connection busy between two
/// polls (≈ 2.5 ms at 100 MB/s), small enough that 500 connections replaying
/// the whole window hold 128 MiB.
pub const CATCHUP_BUDGET: usize = 256 << 10;
/// Default [`TcpPublisherConfig::login_timeout`]: 1 s. A client sends its
/// Login right after connecting (40 bytes); a connection that has not been
/// accepted as logged in by then is a port scan, a stuck peer or an attacker
/// holding slots with partial headers.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Default [`TcpPublisherConfig::idle_timeout`]: 10 s without a byte read from
/// or written to a connection. A live client is written heartbeats every
/// 100 ms even when the feed is quiet, so only a dead or stalled one gets
/// there. The same value goes to `TCP_USER_TIMEOUT`, so the kernel also drops
/// a peer that stops acknowledging (or holds a zero window) for that long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`TcpPublisherConfig::max_per_host`]: 128 connections from one
/// source address (ports ignored), an eighth of [`DEFAULT_MAX_CLIENTS`]: one
/// host cannot lock others out, and a benchmark running 100 clients on one
/// machine still fits.
pub const DEFAULT_MAX_PER_HOST: usize = 128;
/// How often (at most) the connection timers are checked: 50 ms, so a timeout
/// fires at most that late and a poll loop at 1M msgs/s reads no extra clock
/// and walks no connection list per poll for it.
pub(super) const TIMER_GRANULARITY: Duration = Duration::from_millis(50);
/// Default [`TcpPublisherConfig::send_buffer`]: 1 MiB of kernel send buffer
/// absorbs bursts without touching our queue (Linux caps it at
/// `net.core.wmem_max`; the size granted is logged).
pub const DEFAULT_SEND_BUFFER: usize = 1 << 20;
/// Default [`TcpPublisherConfig::recv_buffer`]: requests are 40-byte packets
/// and rare, 64 KiB is plenty.
pub const DEFAULT_PUB_RECV_BUFFER: usize = 64 << 10;
/// Default [`TcpPublisherConfig::max_clients`]: the fan-out is O(N) copies per
/// packet; beyond ~1000 clients a TCP feed should be split (or use multicast).
pub const DEFAULT_MAX_CLIENTS: usize = 1024;
/// Pending connections the kernel holds for us between polls: a burst of
/// reconnecting clients after a restart must not be refused.
pub(super) const LISTEN_BACKLOG: i32 = 1024;
/// Connections accepted per poll; more wait for the next poll (which does not
/// block while the listener is still ready), so a connect storm cannot starve
/// the clients already connected.
pub(super) const MAX_ACCEPTS_PER_POLL: usize = 64;
/// Bytes of request buffer per client, in packets of the configured maximum:
/// two, so a partial request never has to be moved more than once per read.
pub(super) const REQUEST_BUF_PACKETS: usize = 2;

/// Configuration of a [`TcpPublisher`].
#[derive(Clone, Debug)]
pub struct TcpPublisherConfig {
    /// Largest packet published or accepted as a request. A request longer than
    /// this is malformed and closes its connection.
    pub max_packet_len: usize,
    /// Bytes queued for one client above which it counts as slow.
    pub high_water: usize,
    /// How long a client may stay above `high_water` before it is disconnected.
    pub slow_timeout: Duration,
    /// Hard cap on one client's queue: exceeding it disconnects at once.
    pub max_queue: usize,
    /// `SO_SNDBUF` requested for client sockets (0: the kernel's default).
    pub send_buffer: usize,
    /// `SO_RCVBUF` requested for client sockets (0: the kernel's default).
    pub recv_buffer: usize,
    /// Connections beyond this many are closed as soon as they are accepted.
    pub max_clients: usize,
    /// Connections from one source address (any port) beyond this many are
    /// closed as soon as they are accepted.
    pub max_per_host: usize,
    /// A connection not marked logged in ([`Publisher::logged_in`] or
    /// [`Publisher::set_live`]) this long after it was accepted is closed
    /// ([`DisconnectReason::LoginTimeout`]).
    pub login_timeout: Duration,
    /// A connection with no byte read from it or written to it for this long
    /// is closed ([`DisconnectReason::Idle`]); also set as `TCP_USER_TIMEOUT`.
    pub idle_timeout: Duration,
}

impl Default for TcpPublisherConfig {
    fn default() -> Self {
        TcpPublisherConfig {
            max_packet_len: DEFAULT_MAX_PACKET,
            high_water: DEFAULT_HIGH_WATER,
            slow_timeout: DEFAULT_SLOW_TIMEOUT,
            max_queue: DEFAULT_MAX_QUEUE,
            send_buffer: DEFAULT_SEND_BUFFER,
            recv_buffer: DEFAULT_PUB_RECV_BUFFER,
            max_clients: DEFAULT_MAX_CLIENTS,
            max_per_host: DEFAULT_MAX_PER_HOST,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}
