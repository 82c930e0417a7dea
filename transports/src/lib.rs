//! # tickwire-transports
//!
//! Transports move bytes and nothing else. Framing, sequencing and recovery
//! live in `tickwire-core`; a transport hands complete packets up and sends
//! complete packets down.
//!
//! ```text
//!            server                                     client
//!  core::publisher ─▶ [Publisher] ══ tcp / multicast / xdp ══▶ [Subscriber] ─▶ core::recovery
//!        ▲                 │  requests (Login, NACK, snapshot request) ◀══        │
//!        └── PubEvent ◀────┘                                  send_request ◀─────┘
//! ```
//!
//! Faults are wrappers, not flags: [`lossy::Lossy`] drops packets with a seeded
//! probability in either direction, around any transport.
//!
//! ## The polling contract
//! `poll(timeout, on_event)` does the transport's pending I/O (accept, read,
//! write queued bytes) and reports what happened through `on_event`, then
//! returns. `timeout = Some(Duration::ZERO)` never blocks (busy-spin idle
//! strategy); `Some(d)` blocks at most `d` in epoll/poll; `None` blocks until
//! something happens. Spurious wake-ups are allowed: a `poll` may report nothing.

#![warn(missing_docs)]
// Unsafe code lives only in the modules that talk to the kernel directly
// (each says `allow(unsafe_code)`), every block with its SAFETY comment.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::time::Duration;

pub use tickwire_core::wire::DecodeError;

/// The [`Publisher`] methods that a wrapper (a MAC, injected loss) passes
/// through to its `inner` publisher unchanged: peer and queue controls.
macro_rules! forward_peer_controls {
    () => {
        fn set_live(&mut self, peer: $crate::PeerId, live: bool) {
            self.inner.set_live(peer, live)
        }

        fn disconnect(&mut self, peer: $crate::PeerId, reason: $crate::DisconnectReason) {
            self.inner.disconnect(peer, reason)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.inner.flush()
        }

        fn logged_in(&mut self, peer: $crate::PeerId) {
            self.inner.logged_in(peer)
        }

        fn queued(&self, peer: $crate::PeerId) -> Option<usize> {
            self.inner.queued(peer)
        }

        fn watch_drain(&mut self, peer: $crate::PeerId, low_water: Option<usize>) {
            self.inner.watch_drain(peer, low_water)
        }

        fn sends_to_group(&self) -> bool {
            self.inner.sends_to_group()
        }
    };
}

pub mod affinity;
pub mod args;
pub mod auth;
pub mod backoff;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod idle;
pub mod kernel;
pub mod lossy;
pub mod metrics;
pub mod multicast;
pub mod pcap;
pub mod select;
pub mod tcp;
pub mod wait;
#[cfg(feature = "xdp")]
pub mod xdp;

/// Identifies one peer of a publisher: a TCP connection, or the UDP address a
/// request came from (mapped to an id by the transport).
pub type PeerId = u64;

/// Why a peer was dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The peer closed the connection.
    Closed,
    /// Its send queue stayed above the high-water mark for too long.
    SlowConsumer {
        /// Bytes queued when it was dropped.
        queued: usize,
    },
    /// It sent bytes that are not Tickwire packets (bad magic, absurd length...).
    Malformed(DecodeError),
    /// An I/O error on its socket.
    Io(String),
    /// It did not log in within the publisher's login timeout.
    LoginTimeout,
    /// Nothing was read from it or written to it for the idle timeout.
    Idle,
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DisconnectReason::Closed => f.write_str("closed by the peer"),
            DisconnectReason::SlowConsumer { queued } => {
                write!(f, "too slow: {queued} bytes queued")
            }
            DisconnectReason::Malformed(e) => {
                write!(f, "sent bytes that are not Tickwire packets: {e}")
            }
            DisconnectReason::LoginTimeout => f.write_str("did not log in in time"),
            DisconnectReason::Idle => f.write_str("idle for too long"),
            DisconnectReason::Io(s) => {
                // "Connection refused (os error 111)" -> "connection refused".
                let s = s.rfind(" (os error ").map_or(s.as_str(), |i| &s[..i]);
                let mut c = s.chars();
                if let Some(first) = c.next() {
                    write!(f, "{}{}", first.to_lowercase(), c.as_str())?;
                }
                Ok(())
            }
        }
    }
}

/// Where [`Publisher::poll`] reports its events, one call per event, in
/// order. The same type as `OnPubEvent<'_>`: an
/// implementation may spell its `poll` either way.
pub type OnPubEvent<'a> = &'a mut (dyn FnMut(PubEvent<'_>) + 'a);

/// What a publisher transport reports from [`Publisher::poll`].
#[derive(Debug)]
pub enum PubEvent<'a> {
    /// A subscriber connected (stream transports only). It receives nothing
    /// from [`Publisher::publish`] until [`Publisher::set_live`] marks it live.
    Connected(PeerId),
    /// One complete packet from a peer (a Login, a NACK, a snapshot request).
    /// Its header has been framed but not CRC-checked: the core does that.
    Request {
        /// Who sent it; answer with [`Publisher::send_to`].
        peer: PeerId,
        /// The packet's bytes.
        packet: &'a [u8],
    },
    /// A subscriber went away or was dropped.
    Disconnected {
        /// Who.
        peer: PeerId,
        /// Why.
        reason: DisconnectReason,
    },
}

/// Counters a publisher transport keeps. Every mechanism is counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PubStats {
    /// Packets handed to the network (a fan-out to N TCP clients counts N).
    pub packets_sent: u64,
    /// Bytes handed to the network.
    pub bytes_sent: u64,
    /// Send system calls made (`write`, `sendmmsg`, XDP kicks).
    pub syscalls: u64,
    /// Requests received from peers.
    pub requests: u64,
    /// Connections accepted (stream transports).
    pub connections: u64,
    /// Peers currently connected (stream transports).
    pub connected: u64,
    /// Peers dropped for being slow.
    pub slow_disconnects: u64,
    /// Peers dropped for sending garbage, and datagrams that were not packets.
    pub malformed: u64,
    /// Packets that could not be sent (queue full, error), and packets a
    /// datagram socket refused.
    pub send_errors: u64,
    /// Connections closed for not logging in within the login timeout.
    pub login_timeouts: u64,
    /// Connections closed for being idle (nothing read or written) too long.
    pub idle_timeouts: u64,
    /// Connections refused because their host held its per-host maximum.
    pub refused_per_host: u64,
    /// Connections refused because the server held its maximum.
    pub refused_full: u64,
    /// Bytes queued now over all peers (not yet handed to the kernel).
    pub queued_bytes: u64,
    /// The most [`Self::queued_bytes`] ever reached.
    pub peak_queued_bytes: u64,
    /// Requests refused for a missing or wrong MAC (with a key: [`auth`]).
    pub auth_rejected: u64,
    /// Datagram transports: UDP GSO is in use (runs of full packets leave
    /// in one `sendmsg` each, cut into datagrams by the kernel).
    pub gso: bool,
    /// GSO sends made (each carried 2 or more datagrams, counted in
    /// [`Self::packets_sent`]).
    pub gso_sends: u64,
}

/// The server side of a transport.
pub trait Publisher {
    /// Largest packet this transport carries (the framer's size limit).
    fn max_packet_len(&self) -> usize;

    /// Publish one packet to every live subscriber. `fill` writes the packet
    /// straight into the transport's buffer (a pooled buffer, a sendmmsg slot,
    /// a UMEM frame) and returns its length; it is called exactly once with a
    /// buffer of at least [`Self::max_packet_len`] bytes.
    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()>;

    /// Publish an already encoded packet.
    fn publish(&mut self, packet: &[u8]) -> io::Result<()> {
        self.publish_with(&mut |buf| {
            buf[..packet.len()].copy_from_slice(packet);
            packet.len()
        })
    }

    /// Send one packet to one peer (the answer to a request).
    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()>;

    /// Send one packet to the feed's group (line A), from the feed's source,
    /// as a live packet goes: a multicast repair
    /// (`Sequencer::poll_group_packet`, docs/PROTOCOL.md § 10.2). Anything
    /// batched by [`Self::publish_with`] goes out first, so the group sees
    /// packets in the order they were handed over. The default (and stream
    /// transports, which have no group) refuses with `Unsupported`.
    fn send_to_group(&mut self, _packet: &[u8]) -> io::Result<()> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "this transport has no group to repair on"))
    }

    /// True when [`Self::send_to_group`] works: the server repairs on
    /// multicast only then.
    fn sends_to_group(&self) -> bool {
        false
    }

    /// Mark a stream peer live (it receives [`Self::publish`]ed packets) or not.
    /// Datagram transports ignore it: their subscribers join the group themselves.
    fn set_live(&mut self, peer: PeerId, live: bool);

    /// Drop a peer (stream transports: close its connection, reporting
    /// `Disconnected` with `reason` from the next `poll`). The server calls it when
    /// a peer's requests fail the core's checks (bad CRC...). Datagram transports
    /// have no connection to close and ignore it.
    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason);

    /// Push out anything batched (sendmmsg batches, XDP TX ring).
    fn flush(&mut self) -> io::Result<()>;

    /// Stream transports: the peer has logged in (its login timer stops) but
    /// is not live yet (its catch-up is being streamed). [`Self::set_live`]
    /// with `true` implies it. Datagram transports ignore it.
    fn logged_in(&mut self, _peer: PeerId) {}

    /// Stream transports: bytes queued for `peer` and not yet handed to the
    /// kernel. `None` for an unknown peer, and on datagram transports.
    fn queued(&self, _peer: PeerId) -> Option<usize> {
        None
    }

    /// Stream transports: while `peer`'s queue is at or below `low_water`
    /// bytes and its socket can take more, [`Self::poll`] does not block, so
    /// the caller can refill it (a catch-up streamed as the socket drains).
    /// `None` stops watching. Datagram transports ignore it.
    fn watch_drain(&mut self, _peer: PeerId, _low_water: Option<usize>) {}

    /// Do pending I/O and report events; see the crate's polling contract.
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()>;

    /// Counters.
    fn stats(&self) -> PubStats;

    /// The address clients reach this publisher at: the TCP listener, or the
    /// unicast request (recovery) socket of a datagram transport. Useful when
    /// binding port 0.
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }
}

pub use tickwire_core::Line;

/// Where [`Subscriber::poll`] reports its events, one call per event, in
/// order. The same type as `OnSubEvent<'_>`: an
/// implementation may spell its `poll` either way.
pub type OnSubEvent<'a> = &'a mut (dyn FnMut(SubEvent<'_>) + 'a);

/// What a subscriber transport reports from [`Subscriber::poll`].
#[derive(Debug)]
pub enum SubEvent<'a> {
    /// A stream transport (re)connected: the client should log in.
    Connected,
    /// One complete packet. Framed, not CRC-checked: the core does that.
    Packet {
        /// Which line it came on.
        line: Line,
        /// Its bytes.
        packet: &'a [u8],
        /// When the kernel received it (ns since the Unix epoch), where the
        /// kernel stamps packets (`SO_TIMESTAMPNS`: UDP and TCP sockets; for
        /// TCP, the last segment of the read that brought it). `None` where
        /// it cannot (AF_XDP frames bypass the kernel's stack).
        kernel_rx_ns: Option<u64>,
    },
    /// A stream transport lost its connection; call [`Subscriber::reconnect`]
    /// (after a back-off) to try again.
    Disconnected(DisconnectReason),
}

/// Counters a subscriber transport keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SubStats {
    /// Packets received.
    pub packets_received: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Receive system calls made.
    pub syscalls: u64,
    /// Requests sent.
    pub requests_sent: u64,
    /// Bytes that could not be framed (stream transports: the connection is then dropped).
    pub malformed: u64,
    /// Successful (re)connections.
    pub connects: u64,
    /// Datagram feeds: packets on a feed line from an address or port other
    /// than the publisher's, dropped.
    pub wrong_source: u64,
    /// Packets refused for a missing or wrong MAC (with a key: [`auth`]).
    pub auth_rejected: u64,
    /// Datagram transports: UDP GRO is on for the feed sockets (the kernel
    /// merges datagrams; each merged receive is split into its packets).
    pub gro: bool,
    /// Datagrams that arrived merged into an earlier one's receive (GRO).
    pub gro_merged: u64,
}

/// The client side of a transport.
pub trait Subscriber {
    /// Send a request packet (Login, NACK, snapshot request) to the server.
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()>;

    /// Do pending I/O and report events; see the crate's polling contract.
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()>;

    /// Stream transports: start a new connection attempt (its outcome is
    /// reported by `poll` as `Connected` or `Disconnected`). Datagram
    /// transports: nothing to do.
    fn reconnect(&mut self) -> io::Result<()>;

    /// Counters.
    fn stats(&self) -> SubStats;
}

impl<P: Publisher + ?Sized> Publisher for Box<P> {
    fn max_packet_len(&self) -> usize {
        (**self).max_packet_len()
    }
    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        (**self).publish_with(fill)
    }
    fn publish(&mut self, packet: &[u8]) -> io::Result<()> {
        (**self).publish(packet)
    }
    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        (**self).send_to(peer, packet)
    }
    fn send_to_group(&mut self, packet: &[u8]) -> io::Result<()> {
        (**self).send_to_group(packet)
    }
    fn sends_to_group(&self) -> bool {
        (**self).sends_to_group()
    }
    fn set_live(&mut self, peer: PeerId, live: bool) {
        (**self).set_live(peer, live)
    }
    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        (**self).disconnect(peer, reason)
    }
    fn flush(&mut self) -> io::Result<()> {
        (**self).flush()
    }
    fn logged_in(&mut self, peer: PeerId) {
        (**self).logged_in(peer)
    }
    fn queued(&self, peer: PeerId) -> Option<usize> {
        (**self).queued(peer)
    }
    fn watch_drain(&mut self, peer: PeerId, low_water: Option<usize>) {
        (**self).watch_drain(peer, low_water)
    }
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        (**self).poll(timeout, on_event)
    }
    fn stats(&self) -> PubStats {
        (**self).stats()
    }
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        (**self).local_addr()
    }
}

impl<S: Subscriber + ?Sized> Subscriber for Box<S> {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        (**self).send_request(packet)
    }
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        (**self).poll(timeout, on_event)
    }
    fn reconnect(&mut self) -> io::Result<()> {
        (**self).reconnect()
    }
    fn stats(&self) -> SubStats {
        (**self).stats()
    }
}
