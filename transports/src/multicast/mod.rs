//! Kernel UDP multicast: O(1) fan-out per packet, with a unicast request port
//! for NACKs and snapshot requests.
//!
//! ```text
//!   MulticastPublisher                                     MulticastSubscriber (×N)
//!   data socket ── sendmmsg ──▶ group A (239.x:port) ────▶ socket bound to group A  ─▶ Line::A
//!               └─ sendmmsg ──▶ group B (optional) ──────▶ socket bound to group B  ─▶ Line::B
//!   request socket (request_addr) ◀── NACK / snapshot req ── unicast socket (ephemeral)
//!                                 ── reply (send_to) ─────▶                          ─▶ Line::Unicast
//! ```
//!
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

mod sys;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tickwire_core::wire::{DEFAULT_MAX_PACKET, HEADER_LEN, Packet};

use crate::{
    DisconnectReason, Line, PeerId, PubEvent, PubStats, Publisher, SubEvent, SubStats, Subscriber,
};

/// Default `sendmmsg`/`recvmmsg` batch: 32 packets amortise the system call
/// (about 1 µs) to a few tens of ns per packet while keeping a batch of
/// 1472-byte packets (47 KiB) well inside the L2 cache.
pub const DEFAULT_BATCH: usize = 32;

/// Largest batch: the kernel caps `sendmmsg`/`recvmmsg` at `UIO_MAXIOV` (1024)
/// messages per call.
pub const MAX_BATCH: usize = 1024;

/// Default socket buffer request: 8 MiB holds about 3,000 full-size datagrams
/// (kernel accounting ~2.3 KiB each), i.e. a few ms of a saturated feed while
/// the receiver is descheduled on a busy 2-core machine.
pub const DEFAULT_SOCKET_BUFFER: usize = 8 << 20;

/// Largest UDP payload over IPv4 (65,535 − 20 IP − 8 UDP header bytes): the
/// upper bound for [`MulticastConfig::max_packet_len`].
pub const MAX_UDP_PAYLOAD: usize = 65_507;

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

/// Configuration of a multicast publisher or subscriber (both sides use the
/// same values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastConfig {
    /// Feed line A: a multicast group and port, e.g. `239.255.0.1:30001`.
    pub group_a: SocketAddrV4,
    /// Feed line B (A/B feeds): the same packets are published on both.
    pub group_b: Option<SocketAddrV4>,
    /// The local interface address: `IP_MULTICAST_IF` for sending, the join
    /// interface for receiving; `127.0.0.1` for loopback.
    pub interface: Ipv4Addr,
    /// Multicast TTL (1 = this subnet only).
    pub ttl: u32,
    /// `IP_MULTICAST_LOOP`: deliver our own multicast to local subscribers
    /// (needed when publisher and subscribers share a host; on by default).
    pub loopback: bool,
    /// The publisher's unicast request port (NACK / snapshot request);
    /// subscribers send requests there. Port 0 lets the publisher pick one
    /// (read it back with [`MulticastPublisher::request_addr`]).
    pub request_addr: SocketAddrV4,
    /// Requested `SO_SNDBUF` (0: leave the kernel default).
    pub send_buffer: usize,
    /// Requested `SO_RCVBUF` (0: leave the kernel default). Tried with
    /// `SO_RCVBUFFORCE` first (root may exceed `rmem_max`).
    pub recv_buffer: usize,
    /// Largest packet, and the size of each batch slot.
    pub max_packet_len: usize,
    /// `sendmmsg`/`recvmmsg` batch size (1..=[`MAX_BATCH`]).
    pub batch: usize,
}

/// Group of line A in [`MulticastConfig::default`] (administratively
/// scoped, site-local range).
pub const DEFAULT_GROUP_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 30001);

/// Request address in [`MulticastConfig::default`]: the port the binaries'
/// examples use, on loopback.
pub const DEFAULT_REQUEST_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9100);

impl Default for MulticastConfig {
    /// Loopback: [`DEFAULT_GROUP_A`], interface 127.0.0.1,
    /// [`DEFAULT_REQUEST_ADDR`], and the defaults of [`MulticastConfig::new`].
    fn default() -> Self {
        MulticastConfig::new(DEFAULT_GROUP_A, Ipv4Addr::LOCALHOST, DEFAULT_REQUEST_ADDR)
    }
}

impl MulticastConfig {
    /// A configuration with the defaults: no line B, TTL 1, loopback on (the
    /// kernel's own default: local subscribers get the feed; it costs one
    /// extra copy per packet only when a local member exists),
    /// [`DEFAULT_SOCKET_BUFFER`] both ways, [`DEFAULT_MAX_PACKET`],
    /// [`DEFAULT_BATCH`].
    pub fn new(group_a: SocketAddrV4, interface: Ipv4Addr, request_addr: SocketAddrV4) -> Self {
        MulticastConfig {
            group_a,
            group_b: None,
            interface,
            ttl: 1,
            loopback: true,
            request_addr,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            max_packet_len: DEFAULT_MAX_PACKET,
            batch: DEFAULT_BATCH,
        }
    }

    /// [`Self::new`] on the loopback interface (127.0.0.1).
    pub fn loopback(group_a: SocketAddrV4, request_addr: SocketAddrV4) -> Self {
        MulticastConfig::new(group_a, Ipv4Addr::LOCALHOST, request_addr)
    }

    fn validate(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        for g in std::iter::once(self.group_a).chain(self.group_b) {
            if !g.ip().is_multicast() {
                return bad(format!("{g} is not a multicast group address"));
            }
            if g.port() == 0 {
                return bad(format!("{g}: a multicast group needs a port"));
            }
        }
        if self.group_b == Some(self.group_a) {
            return bad("group_b equals group_a".into());
        }
        if !(HEADER_LEN..=MAX_UDP_PAYLOAD).contains(&self.max_packet_len) {
            return bad(format!(
                "max_packet_len {} outside {HEADER_LEN}..={MAX_UDP_PAYLOAD}",
                self.max_packet_len
            ));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(format!("batch {} outside 1..={MAX_BATCH}", self.batch));
        }
        Ok(())
    }
}

/// Socket buffer sizes as requested and as the kernel granted them (the value
/// `getsockopt` reports: Linux doubles the request for bookkeeping and caps it
/// at `wmem_max`/`rmem_max` unless the `FORCE` option worked).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BufferSizes {
    /// Requested `SO_SNDBUF` (publisher data socket; 0 for subscribers).
    pub send_requested: usize,
    /// Granted `SO_SNDBUF`.
    pub send_granted: usize,
    /// Requested `SO_RCVBUF` (every receiving socket).
    pub recv_requested: usize,
    /// Smallest `SO_RCVBUF` granted among the receiving sockets.
    pub recv_granted: usize,
}

/// The [`PeerId`] of a requester: its IPv4 address and port packed as
/// `ip << 16 | port`. Reversible, so the publisher keeps no table.
pub const fn peer_id(addr: SocketAddrV4) -> PeerId {
    ((addr.ip().to_bits() as u64) << 16) | addr.port() as u64
}

/// The address a [`PeerId`] made by [`peer_id`] stands for; `None` if `id`
/// has bits above the 48 an address uses.
pub const fn peer_addr(id: PeerId) -> Option<SocketAddrV4> {
    if id >> 48 != 0 {
        return None;
    }
    Some(SocketAddrV4::new(Ipv4Addr::from_bits((id >> 16) as u32), id as u16))
}

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
    datagrams: usize,
}

/// Where [`drain`] hands each datagram: its source, its bytes, and the
/// kernel's receive stamp (ns since the Unix epoch) when the socket has them on.
type Deliver<'a> = dyn FnMut(Option<SocketAddrV4>, &[u8], Option<u64>) + 'a;

/// Receive from `fd` into `rx` until the socket is empty or
/// [`MAX_RECV_CALLS_PER_POLL`] calls were made, handing each datagram that is
/// a packet to `deliver` (with its source) and counting the rest in
/// `malformed`.
fn drain(
    fd: RawFd,
    rx: &mut sys::Slots,
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
            match Packet::new_checked(bytes) {
                Ok(p) => deliver(rx.source(i), &bytes[..p.total_len()], rx.rx_stamp(i)),
                Err(_) => *malformed += 1,
            }
        }
        if n < rx.count() {
            break; // MSG_DONTWAIT returned short: the queue is empty.
        }
    }
    Ok(out)
}

/// Set `flags` bit 0 (line B) of a packet in place and refresh its CRC.
/// Bytes that are not a packet are left alone (the publisher only queues packets).
fn mark_line_b(bytes: &mut [u8]) {
    let mut p = Packet::new_unchecked(bytes);
    if p.check_len().is_ok() {
        let flags = p.flags() | tickwire_core::wire::FLAG_LINE_B;
        p.set_flags(flags);
        p.fill_crc();
    }
}

fn timeout_is_zero(t: Option<Duration>) -> bool {
    t == Some(Duration::ZERO)
}

/// The server side: publishes to group A (and B) and answers requests by
/// unicast. See the module docs.
#[derive(Debug)]
pub struct MulticastPublisher {
    data: Socket,
    request: Socket,
    request_local: SocketAddrV4,
    groups: Vec<SocketAddrV4>,
    tx: sys::Slots,
    queued: usize,
    rx: sys::Slots,
    pollfd: [libc::pollfd; 1],
    buffers: BufferSizes,
    stats: PubStats,
    /// The configuration, with `request_addr` the address actually bound.
    config: MulticastConfig,
}

impl MulticastPublisher {
    /// Open the data socket (multicast out on `cfg.interface`) and bind the
    /// request socket to `cfg.request_addr`.
    pub fn new(cfg: MulticastConfig) -> io::Result<Self> {
        cfg.validate()?;
        let data = udp_socket()?;
        data.set_multicast_if_v4(&cfg.interface)?;
        data.set_multicast_ttl_v4(cfg.ttl)?;
        data.set_multicast_loop_v4(cfg.loopback)?;
        // Bind to the interface so datagrams carry its address as source.
        data.bind(&SocketAddrV4::new(cfg.interface, 0).into())?;
        let send_granted =
            set_buffer(data.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, cfg.send_buffer)?;

        let request = udp_socket()?;
        request.bind(&cfg.request_addr.into())?;
        let recv_granted = set_buffer(
            request.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            cfg.recv_buffer,
        )?;
        // Replies leave from the request socket too: size its send side.
        set_buffer(request.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, cfg.send_buffer)?;
        let request_local = v4(request.local_addr()?)?;

        let buffers = BufferSizes {
            send_requested: cfg.send_buffer,
            send_granted,
            recv_requested: cfg.recv_buffer,
            recv_granted,
        };
        warn_if_small("send", buffers.send_requested, buffers.send_granted);
        warn_if_small("receive", buffers.recv_requested, buffers.recv_granted);

        let config = MulticastConfig { request_addr: request_local, ..cfg.clone() };
        let pollfd = [libc::pollfd { fd: request.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        Ok(MulticastPublisher {
            data,
            request,
            request_local,
            groups: std::iter::once(cfg.group_a).chain(cfg.group_b).collect(),
            tx: sys::Slots::new(cfg.batch, cfg.max_packet_len),
            queued: 0,
            rx: sys::Slots::new(cfg.batch, cfg.max_packet_len),
            pollfd,
            buffers,
            stats: PubStats::default(),
            config,
        })
    }

    /// The address requests go to (the bound port if `request_addr` said 0).
    pub fn request_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.request_local)
    }

    /// Socket buffer sizes requested and granted.
    pub fn buffer_sizes(&self) -> BufferSizes {
        self.buffers
    }

    /// The configuration this publisher runs with, `request_addr` being the
    /// address actually bound: a subscriber on the same interface can be
    /// made from it as it is (`MulticastSubscriber::new(p.config().clone())`).
    pub fn config(&self) -> &MulticastConfig {
        &self.config
    }

    /// Packets waiting in the batch for the next flush.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Send slots `0..queued` to `dest`, resuming after partial sends and
    /// retrying transient errors a bounded number of times. Returns the first
    /// hard error, after trying every packet.
    fn send_batch(&mut self, dest: SocketAddrV4) -> io::Result<()> {
        let fd = self.data.as_raw_fd();
        let mut next = 0;
        let mut retries = 0;
        let mut first_err = None;
        while next < self.queued {
            self.stats.syscalls += 1;
            match self.tx.sendmmsg(fd, next, self.queued, dest) {
                Ok(n) => {
                    for i in next..next + n {
                        self.stats.packets_sent += 1;
                        self.stats.bytes_sent += self.tx.packet(i).len() as u64;
                    }
                    next += n;
                }
                Err(e) if transient(&e) && retries < MAX_SEND_RETRIES => {
                    retries += 1;
                    sys::wait_writable(fd, SEND_RETRY_WAIT)?;
                }
                Err(e) if transient(&e) => {
                    self.stats.send_errors += (self.queued - next) as u64;
                    break;
                }
                Err(e) => {
                    // The first packet of the rest failed for good: skip it.
                    self.stats.send_errors += 1;
                    next += 1;
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Publisher for MulticastPublisher {
    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.request_addr())
    }

    fn max_packet_len(&self) -> usize {
        self.tx.slot_len()
    }

    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        if self.queued == self.tx.count() {
            self.flush()?;
        }
        let slot = self.queued;
        let len = fill(self.tx.slot_mut(slot));
        if len > self.tx.slot_len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("packet of {len} bytes exceeds max_packet_len {}", self.tx.slot_len()),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        self.tx.set_len(slot, len);
        self.queued += 1;
        if self.queued == self.tx.count() {
            self.flush()?;
        }
        Ok(())
    }

    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        let addr = peer_addr(peer).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("unknown peer {peer:#x}"))
        })?;
        match send_one(&self.request, packet, &addr.into(), &mut self.stats.syscalls) {
            Ok(true) => {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += packet.len() as u64;
                Ok(())
            }
            Ok(false) => {
                self.stats.send_errors += 1;
                Ok(())
            }
            Err(e) => {
                self.stats.send_errors += 1;
                Err(e)
            }
        }
    }

    fn set_live(&mut self, _peer: PeerId, _live: bool) {
        // Datagram transport: subscribers join the group themselves.
    }

    fn disconnect(&mut self, _peer: PeerId, _reason: DisconnectReason) {
        // No connection to close; the core ignores the peer's requests.
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        let mut result = Ok(());
        for g in 0..self.groups.len() {
            if g == 1 {
                // Line B carries the same packets with `flags` bit 0 set (and
                // so another CRC), as docs/PROTOCOL.md § 2.1 specifies.
                for i in 0..self.queued {
                    mark_line_b(self.tx.packet_mut(i));
                }
            }
            let dest = self.groups[g];
            if let Err(e) = self.send_batch(dest) {
                result = result.and(Err(e));
            }
        }
        self.queued = 0;
        result
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(PubEvent<'_>),
    ) -> io::Result<()> {
        let fd = self.request.as_raw_fd();
        let mut pass = |this: &mut Self| {
            let requests = &mut this.stats.requests;
            let mut deliver = |src: Option<SocketAddrV4>, packet: &[u8], _rx: Option<u64>| {
                if let Some(src) = src {
                    *requests += 1;
                    on_event(PubEvent::Request { peer: peer_id(src), packet });
                }
            };
            drain(
                fd,
                &mut this.rx,
                &mut this.stats.syscalls,
                &mut this.stats.malformed,
                &mut deliver,
            )
        };
        if pass(self)?.datagrams > 0 || timeout_is_zero(timeout) {
            return Ok(());
        }
        self.pollfd[0].revents = 0;
        if sys::wait(&mut self.pollfd, timeout)? > 0 {
            pass(self)?;
        }
        Ok(())
    }

    fn stats(&self) -> PubStats {
        self.stats.clone()
    }
}

/// The client side: receives line A (and B) and exchanges requests/replies
/// with the publisher's request port. See the module docs.
#[derive(Debug)]
pub struct MulticastSubscriber {
    /// One socket per feed line, bound to its group.
    lines: Vec<(Line, Socket)>,
    unicast: Socket,
    unicast_local: SocketAddrV4,
    request_addr: SockAddr,
    rx: sys::Slots,
    /// Lines first, unicast last (same order as `lines`).
    pollfds: Vec<libc::pollfd>,
    buffers: BufferSizes,
    stats: SubStats,
}

impl MulticastSubscriber {
    /// Join group A (and B) on `cfg.interface` and open the unicast request
    /// socket (ephemeral port on `cfg.interface`).
    pub fn new(cfg: MulticastConfig) -> io::Result<Self> {
        cfg.validate()?;
        let mut recv_granted = usize::MAX;
        let mut lines = Vec::new();
        for (line, group) in
            std::iter::once((Line::A, cfg.group_a)).chain(cfg.group_b.map(|g| (Line::B, g)))
        {
            let s = udp_socket()?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            // Only the groups this socket joined, not every group any socket
            // on the host joined (Linux's default for sockets on the port).
            s.set_multicast_all_v4(false)?;
            recv_granted = recv_granted.min(set_buffer(
                s.as_raw_fd(),
                libc::SO_RCVBUFFORCE,
                libc::SO_RCVBUF,
                cfg.recv_buffer,
            )?);
            s.bind(&group.into())?;
            s.join_multicast_v4(group.ip(), &cfg.interface)?;
            crate::wait::enable_rx_timestamps(s.as_raw_fd())?;
            lines.push((line, s));
        }
        let unicast = udp_socket()?;
        unicast.bind(&SocketAddrV4::new(cfg.interface, 0).into())?;
        // Connected to the recovery service: the kernel then delivers on this
        // socket only datagrams from that address and port, so nobody else on
        // the network can inject "replies" (forged Retransmissions, snapshots).
        unicast.connect(&cfg.request_addr.into())?;
        recv_granted = recv_granted.min(set_buffer(
            unicast.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            cfg.recv_buffer,
        )?);
        let unicast_local = v4(unicast.local_addr()?)?;

        let buffers = BufferSizes {
            send_requested: 0,
            send_granted: 0,
            recv_requested: cfg.recv_buffer,
            recv_granted,
        };
        warn_if_small("receive", buffers.recv_requested, buffers.recv_granted);

        let pollfds = lines
            .iter()
            .map(|(_, s)| s.as_raw_fd())
            .chain(std::iter::once(unicast.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        Ok(MulticastSubscriber {
            lines,
            unicast,
            unicast_local,
            request_addr: cfg.request_addr.into(),
            rx: sys::Slots::new(cfg.batch, cfg.max_packet_len),
            pollfds,
            buffers,
            stats: SubStats::default(),
        })
    }

    /// The address this subscriber's requests come from (the publisher's
    /// replies go back there).
    pub fn unicast_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.unicast_local)
    }

    /// Socket buffer sizes requested and granted.
    pub fn buffer_sizes(&self) -> BufferSizes {
        self.buffers
    }

    /// One receive pass over every socket; returns the datagrams read.
    fn pass(&mut self, on_event: &mut dyn FnMut(SubEvent<'_>)) -> io::Result<usize> {
        let mut total = 0;
        for k in 0..=self.lines.len() {
            let (line, fd) = match self.lines.get(k) {
                Some((line, s)) => (*line, s.as_raw_fd()),
                None => (Line::Unicast, self.unicast.as_raw_fd()),
            };
            let packets = &mut self.stats.packets_received;
            let bytes = &mut self.stats.bytes_received;
            let mut deliver = |_src: Option<SocketAddrV4>, packet: &[u8], rx: Option<u64>| {
                *packets += 1;
                *bytes += packet.len() as u64;
                on_event(SubEvent::Packet { line, packet, kernel_rx_ns: rx });
            };
            total += drain(
                fd,
                &mut self.rx,
                &mut self.stats.syscalls,
                &mut self.stats.malformed,
                &mut deliver,
            )?
            .datagrams;
        }
        Ok(total)
    }
}

impl Subscriber for MulticastSubscriber {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        if send_one(&self.unicast, packet, &self.request_addr, &mut self.stats.syscalls)? {
            self.stats.requests_sent += 1;
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "request dropped: send buffer full after retries",
            ))
        }
    }

    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(SubEvent<'_>),
    ) -> io::Result<()> {
        if self.pass(on_event)? > 0 || timeout_is_zero(timeout) {
            return Ok(());
        }
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        if sys::wait(&mut self.pollfds, timeout)? > 0 {
            self.pass(on_event)?;
        }
        Ok(())
    }

    fn reconnect(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn stats(&self) -> SubStats {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_and_rejects_high_bits() {
        let a = SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 12), 54_321);
        assert_eq!(peer_id(a), (0x0A4D_000C << 16) | 54_321);
        assert_eq!(peer_addr(peer_id(a)), Some(a));
        let top = SocketAddrV4::new(Ipv4Addr::new(255, 255, 255, 255), 65_535);
        assert_eq!(peer_addr(peer_id(top)), Some(top));
        assert_eq!(peer_addr(1 << 48), None);
    }

    #[test]
    fn config_validation_names_the_problem() {
        let g = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 30001);
        let r = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        assert!(MulticastConfig::loopback(g, r).validate().is_ok());
        assert!(MulticastConfig::default().validate().is_ok());
        assert!(MulticastConfig::default().loopback);
        let not_mc = MulticastConfig::loopback(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1), r);
        assert!(not_mc.validate().unwrap_err().to_string().contains("not a multicast"));
        let same = MulticastConfig { group_b: Some(g), ..MulticastConfig::loopback(g, r) };
        assert!(same.validate().is_err());
        let tiny =
            MulticastConfig { max_packet_len: HEADER_LEN - 1, ..MulticastConfig::loopback(g, r) };
        assert!(tiny.validate().is_err());
        let huge_batch =
            MulticastConfig { batch: MAX_BATCH + 1, ..MulticastConfig::loopback(g, r) };
        assert!(huge_batch.validate().is_err());
        let no_batch = MulticastConfig { batch: 0, ..MulticastConfig::loopback(g, r) };
        assert!(no_batch.validate().is_err());
    }

    #[test]
    fn publisher_is_send() {
        fn is_send<T: Send>() {}
        is_send::<MulticastPublisher>();
        is_send::<MulticastSubscriber>();
    }
}
