//! Kernel UDP multicast: O(1) fan-out per packet, with a unicast request port
//! for NACKs and snapshot requests.
//!
//! ```text
//!   MulticastPublisher                                     MulticastSubscriber (×N)
//!   request socket ─ sendmmsg ──▶ group A (239.x:port) ──▶ socket bound to group A  ─▶ Line::A
//!   (request_addr) └ sendmmsg ──▶ group B (optional) ────▶ socket bound to group B  ─▶ Line::B
//!                  ◀── NACK / snapshot req ──────────────── unicast socket (ephemeral,
//!                  ── reply (send_to) ───────────────────▶  connected)               ─▶ Line::Unicast
//! ```
//!
//! * The feed leaves from the recovery service's address and port
//!   (`request_addr`), so a subscriber takes feed datagrams only from that
//!   address and port, without being told anything more: datagrams from any
//!   other are counted in `wrong_source` and dropped. When the interface
//!   address differs from the service's, the feed has a socket of its own,
//!   bound to the interface address and the service's port.
//! * Packets are written straight into a preallocated `sendmmsg` batch
//!   ([`MulticastConfig::batch`] slots of [`MulticastConfig::max_packet_len`]
//!   bytes); [`Publisher::flush`] sends it with one `sendmmsg` per group, and a
//!   full batch flushes itself. Nothing is allocated per packet.
//! * A/B feeds: every packet is sent, byte-identical, to both groups; the
//!   subscriber tells the lines apart by the socket it arrived on.
//! * Subscribers bind to the *group* address (not `INADDR_ANY`) with
//!   `SO_REUSEADDR`/`SO_REUSEPORT` and `IP_MULTICAST_ALL = 0`, so several
//!   subscribers on one host each get every datagram and nothing else.
//! * A [`PeerId`] *is* the requester's IPv4 address and port
//!   (`ip << 16 | port`, see [`peer_id`]): no table, so no bound to enforce and
//!   nothing to evict.
//! * Datagrams that are not Tickwire packets (`Packet::new_checked` fails, or
//!   longer than a slot) are counted in `malformed` and dropped.
//!
//! * The interface: [`MulticastConfig::ifname`] picks it by name for sends
//!   (`IP_MULTICAST_IF`) and joins (`IP_ADD_MEMBERSHIP`), by index; without
//!   it, the interface holding [`MulticastConfig::interface`] does. A join,
//!   bind or send that fails says which interface it was on.
//! * [`MulticastConfig::ttl`] (default 1) is what lets the feed cross
//!   routers: each takes 1, and docs/DEPLOYMENT.md covers the rest.
//!
//! Loopback works with `interface = 127.0.0.1` and `loopback = true`
//! (`IP_MULTICAST_IF` + `IP_MULTICAST_LOOP`); see [`MulticastConfig::loopback`].
//!
//! A run loop (server side):
//! ```no_run
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::time::Duration;
//! use tickwire_transports::multicast::{MulticastConfig, MulticastPublisher};
//! use tickwire_transports::{PubEvent, Publisher};
//!
//! let cfg = MulticastConfig::loopback(
//!     SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 30001),
//!     SocketAddrV4::new(Ipv4Addr::LOCALHOST, 30000),
//! );
//! let mut publisher = MulticastPublisher::new(cfg)?;
//! let heartbeat = [0u8; 40]; // a real server encodes packets with tickwire_core::wire
//! publisher.publish(&heartbeat)?;
//! publisher.flush()?;
//! publisher.poll(Some(Duration::from_millis(1)), &mut |ev| {
//!     if let PubEvent::Request { peer, packet } = ev {
//!         println!("request from {peer:#x}: {} bytes", packet.len());
//!     }
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod config;
mod publisher;
mod subscriber;
mod sys;

pub use config::{
    BufferSizes, DEFAULT_BATCH, DEFAULT_GROUP_A, DEFAULT_REQUEST_ADDR, DEFAULT_SOCKET_BUFFER,
    FeedSource, GSO_PAD_MAX, MAX_BATCH, MAX_TTL, MAX_UDP_PAYLOAD, MulticastConfig, peer_addr,
    peer_id,
};
pub use publisher::MulticastPublisher;
pub use subscriber::MulticastSubscriber;

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tickwire_core::wire::Packet;

#[allow(unused_imports)] // for doc links
use crate::{PeerId, Publisher};

/// `recvmmsg` calls per socket per `poll`: bounds the work one `poll` does
/// (16 × batch packets) so a flooded line cannot starve the other line, the
/// unicast socket or the caller's own timers.
pub const MAX_RECV_CALLS_PER_POLL: usize = 16;

/// How many times a send that hit `EAGAIN`/`ENOBUFS` is retried before the
/// remaining packets are dropped and counted in `send_errors` (a datagram
/// feed recovers loss by NACK; a publisher that blocks forever stalls every
/// subscriber).
pub const MAX_SEND_RETRIES: u32 = 8;

/// How long each retry waits for the socket to become writable: 1 ms lets the
/// NIC/softirq drain a full send buffer; with [`MAX_SEND_RETRIES`] a stuck
/// socket costs the publisher at most ~8 ms per flush.
pub const SEND_RETRY_WAIT: Duration = Duration::from_millis(1);

fn udp_socket() -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Request `size` bytes of buffer with `force` (root may exceed the sysctl
/// cap), falling back to `plain`; returns the size the kernel reports.
fn set_buffer(fd: RawFd, force: i32, plain: i32, size: usize) -> io::Result<usize> {
    if size > 0 {
        let v = size.min(i32::MAX as usize / 2) as i32;
        if sys::set_int_opt(fd, libc::SOL_SOCKET, force, v).is_err() {
            sys::set_int_opt(fd, libc::SOL_SOCKET, plain, v)?;
        }
    }
    Ok(sys::get_int_opt(fd, libc::SOL_SOCKET, plain)?.max(0) as usize)
}

fn warn_if_small(what: &str, requested: usize, granted: usize) {
    // Linux doubles what it was asked for (bookkeeping) and reports that:
    // anything below twice the request means it was capped at
    // rmem_max / wmem_max, and bursts may overflow.
    if requested > 0 && granted < requested.saturating_mul(2) {
        eprintln!(
            "tickwire multicast: {what} buffer: requested {requested} B, kernel granted {granted} B \
             (raise net.core.{}mem_max or run as root)",
            if what == "send" { "w" } else { "r" }
        );
    }
}

fn v4(addr: SockAddr) -> io::Result<SocketAddrV4> {
    addr.as_socket_ipv4()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "socket has no IPv4 address"))
}

/// Errors a datagram send retries: the socket's queue is full for now.
fn transient(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
        || e.kind() == io::ErrorKind::Interrupted
        || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Send one datagram with the bounded retry policy. `Ok(false)`: dropped
/// after [`MAX_SEND_RETRIES`] transient failures.
fn send_one(sock: &Socket, packet: &[u8], to: &SockAddr, syscalls: &mut u64) -> io::Result<bool> {
    let mut retries = 0;
    loop {
        *syscalls += 1;
        match sock.send_to(packet, to) {
            Ok(_) => return Ok(true),
            Err(e) if transient(&e) && retries < MAX_SEND_RETRIES => {
                retries += 1;
                sys::wait_writable(sock.as_raw_fd(), SEND_RETRY_WAIT)?;
            }
            Err(e) if transient(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// What one receive pass found.
#[derive(Default)]
struct Drained {
    /// Receives that returned data (a merged GRO receive counts once).
    datagrams: usize,
    /// Datagrams beyond the first in merged (GRO) receives.
    merged: usize,
}

/// Where [`drain`] hands each datagram: its source, its bytes, and the
/// kernel's receive stamp (ns since the Unix epoch) when the socket has them on.
type Deliver<'a> = dyn FnMut(Option<SocketAddrV4>, &[u8], Option<u64>) + 'a;

/// Receive from `fd` into `rx` until the socket is empty or
/// [`MAX_RECV_CALLS_PER_POLL`] calls were made, handing each datagram that is
/// a packet of at most `max_len` bytes to `deliver` (with its source) and
/// counting the rest in `malformed`. A receive the kernel merged (GRO) is
/// split into its datagrams first.
fn drain(
    fd: RawFd,
    rx: &mut sys::Slots,
    max_len: usize,
    syscalls: &mut u64,
    malformed: &mut u64,
    deliver: &mut Deliver<'_>,
) -> io::Result<Drained> {
    let mut out = Drained::default();
    for _ in 0..MAX_RECV_CALLS_PER_POLL {
        *syscalls += 1;
        let n = match rx.recvmmsg(fd) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // An ICMP error queued on the socket (a request port that was
            // closed): not data, nothing to deliver.
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => continue,
            Err(e) => return Err(e),
        };
        out.datagrams += n;
        for i in 0..n {
            let bytes = rx.packet(i);
            if rx.truncated(i) {
                *malformed += 1;
                continue;
            }
            // A receive the kernel merged (UDP_GRO) holds datagrams of the
            // segment size, the last one possibly shorter: each is one
            // packet (padding after it allowed), handed up in place.
            let seg = rx.gro_segment(i).unwrap_or(bytes.len()).max(1);
            let mut datagrams = 0usize;
            for datagram in bytes.chunks(seg) {
                datagrams += 1;
                match Packet::new_checked(datagram) {
                    Ok(p) if datagram.len() <= max_len => {
                        deliver(rx.source(i), &datagram[..p.total_len()], rx.rx_stamp(i))
                    }
                    _ => *malformed += 1,
                }
            }
            if datagrams == 0 {
                *malformed += 1; // an empty datagram
            }
            out.merged += datagrams.saturating_sub(1);
        }
        if n < rx.count() {
            break; // MSG_DONTWAIT returned short: the queue is empty.
        }
    }
    Ok(out)
}

fn timeout_is_zero(t: Option<Duration>) -> bool {
    t == Some(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publisher_is_send() {
        fn is_send<T: Send>() {}
        is_send::<MulticastPublisher>();
        is_send::<MulticastSubscriber>();
    }
}
