//! The server side: a listener and one outgoing queue per client.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tickwire_core::wire::DEFAULT_MAX_PACKET;

use super::framer::FrameBuf;
use super::{EVENTS_CAPACITY, MAX_READS_PER_POLL};
use crate::{DisconnectReason, PeerId, PubEvent, PubStats, Publisher};

/// The listener's token. Client tokens are their [`PeerId`]s, which start at 1
/// and never reach `usize::MAX`.
const LISTENER: Token = Token(usize::MAX);

/// Default [`TcpPublisherConfig::high_water`]: 4 MiB is several seconds of a
/// busy feed at 1 MB/s, far more than a healthy client on a LAN ever lags,
/// yet small enough that a thousand lagging clients stay under a few GB.
pub const DEFAULT_HIGH_WATER: usize = 4 << 20;
/// Default [`TcpPublisherConfig::slow_timeout`]: 2 s rides out a GC pause or a
/// scheduling hiccup on the client, and still drops a stalled one quickly.
pub const DEFAULT_SLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// Default [`TcpPublisherConfig::max_queue`]: 64 MiB, the memory we accept to
/// spend on one client before dropping it without waiting for the timeout.
pub const DEFAULT_MAX_QUEUE: usize = 64 << 20;
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
const LISTEN_BACKLOG: i32 = 1024;
/// Connections accepted per poll; more wait for the next poll (which does not
/// block while the listener is still ready), so a connect storm cannot starve
/// the clients already connected.
const MAX_ACCEPTS_PER_POLL: usize = 64;
/// Bytes of request buffer per client, in packets of the configured maximum:
/// two, so a partial request never has to be moved more than once per read.
const REQUEST_BUF_PACKETS: usize = 2;

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
        }
    }
}

/// One connected client.
#[derive(Debug)]
struct Client {
    peer: PeerId,
    stream: TcpStream,
    addr: SocketAddr,
    /// Receives published packets.
    live: bool,
    /// Bytes waiting to be written. Grows to the client's high-water mark once
    /// and is reused: no allocation per packet in steady state.
    out: VecDeque<u8>,
    /// Requests being framed.
    rx: FrameBuf,
    /// Edge-triggered readiness, cleared only by `WouldBlock`.
    readable: bool,
    writable: bool,
    /// Queued in `TcpPublisher::ready` (deduplicates readiness events).
    in_ready: bool,
    /// When the queue went above the high-water mark (None: it is below).
    over_since: Option<Instant>,
}

/// The server side of the TCP transport. See the [module docs](super).
#[derive(Debug)]
pub struct TcpPublisher {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    local_addr: SocketAddr,
    cfg: TcpPublisherConfig,
    /// Clients, densely packed for the fan-out loop.
    clients: Vec<Client>,
    /// Peer id → index in `clients`.
    index: HashMap<PeerId, usize>,
    next_peer: PeerId,
    /// Where `publish_with` encodes a packet once before copying it.
    scratch: Vec<u8>,
    /// Clients with pending readiness to read.
    ready: Vec<PeerId>,
    /// The listener may have connections waiting.
    accept_ready: bool,
    /// Clients to close after the loop that found them (reused).
    doomed: Vec<(PeerId, DisconnectReason)>,
    /// Disconnections not reported yet.
    pending: VecDeque<(PeerId, DisconnectReason)>,
    stats: PubStats,
    granted_send_buffer: usize,
    granted_recv_buffer: usize,
}

impl TcpPublisher {
    /// Listen on `addr` (port 0 picks a free port: see [`Self::local_addr`]).
    /// Socket buffers are set on the listener, so accepted sockets inherit them
    /// before their window is negotiated; the sizes granted are logged to stderr.
    pub fn bind(addr: SocketAddr, cfg: TcpPublisherConfig) -> io::Result<TcpPublisher> {
        if cfg.max_packet_len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "max_packet_len is 0"));
        }
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_reuse_address(true)?;
        sock.set_nonblocking(true)?;
        if cfg.send_buffer > 0 {
            sock.set_send_buffer_size(cfg.send_buffer)?;
        }
        if cfg.recv_buffer > 0 {
            sock.set_recv_buffer_size(cfg.recv_buffer)?;
        }
        sock.bind(&addr.into())?;
        sock.listen(LISTEN_BACKLOG)?;
        let granted_send_buffer = sock.send_buffer_size()?;
        let granted_recv_buffer = sock.recv_buffer_size()?;
        let mut listener = TcpListener::from_std(sock.into());
        let local_addr = listener.local_addr()?;
        eprintln!(
            "tcp publisher {local_addr}: SO_SNDBUF requested {} granted {granted_send_buffer}, \
             SO_RCVBUF requested {} granted {granted_recv_buffer}",
            cfg.send_buffer, cfg.recv_buffer
        );
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(TcpPublisher {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listener,
            local_addr,
            scratch: vec![0; cfg.max_packet_len],
            cfg,
            clients: Vec::new(),
            index: HashMap::new(),
            next_peer: 1,
            ready: Vec::new(),
            accept_ready: true,
            doomed: Vec::new(),
            pending: VecDeque::new(),
            stats: PubStats::default(),
            granted_send_buffer,
            granted_recv_buffer,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `(SO_SNDBUF, SO_RCVBUF)` the kernel granted (Linux reports twice the
    /// usable size, capped by `net.core.wmem_max` / `rmem_max`).
    pub fn socket_buffers(&self) -> (usize, usize) {
        (self.granted_send_buffer, self.granted_recv_buffer)
    }

    /// Bytes queued for `peer` and not yet written (None: no such peer).
    pub fn queued(&self, peer: PeerId) -> Option<usize> {
        self.index.get(&peer).map(|&i| self.clients[i].out.len())
    }

    /// The remote address of `peer`.
    pub fn peer_addr(&self, peer: PeerId) -> Option<SocketAddr> {
        self.index.get(&peer).map(|&i| self.clients[i].addr)
    }

    /// Close a client now; its `Disconnected` is reported by the next poll.
    fn close(&mut self, peer: PeerId, reason: DisconnectReason) {
        let Some(i) = self.index.remove(&peer) else {
            return;
        };
        let mut c = self.clients.swap_remove(i);
        if let Some(moved) = self.clients.get(i) {
            self.index.insert(moved.peer, i);
        }
        // Deregistering can only fail if the socket is already gone from epoll;
        // dropping the stream closes it either way.
        let _ = self.poll.registry().deregister(&mut c.stream);
        match &reason {
            DisconnectReason::SlowConsumer { queued } => {
                self.stats.slow_disconnects += 1;
                eprintln!(
                    "tcp publisher: disconnecting slow consumer {peer} ({}): {queued} bytes queued",
                    c.addr
                );
            }
            DisconnectReason::Malformed(_) => self.stats.malformed += 1,
            _ => {}
        }
        self.stats.connected = self.clients.len() as u64;
        self.pending.push_back((peer, reason));
    }

    /// Close every client in `doomed`.
    fn close_doomed(&mut self) {
        while let Some((peer, reason)) = self.doomed.pop() {
            self.close(peer, reason);
        }
    }

    /// Accept waiting connections (at most [`MAX_ACCEPTS_PER_POLL`]).
    fn accept(&mut self, on_event: &mut dyn FnMut(PubEvent<'_>)) {
        for _ in 0..MAX_ACCEPTS_PER_POLL {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                // The connection went away before we took it: take the next.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENOBUFS...: retrying at once would spin. Wait for
                    // the listener's next readiness edge (the next connection).
                    eprintln!("tcp publisher {}: accept failed: {e}", self.local_addr);
                    self.accept_ready = false;
                    return;
                }
            };
            if self.clients.len() >= self.cfg.max_clients {
                eprintln!(
                    "tcp publisher {}: refusing {addr}: {} clients connected (max_clients)",
                    self.local_addr,
                    self.clients.len()
                );
                continue; // dropping `stream` closes it
            }
            // Nagle would hold small packets back for up to 40 ms.
            if let Err(e) = SockRef::from(&stream).set_tcp_nodelay(true) {
                eprintln!("tcp publisher: TCP_NODELAY on {addr} failed: {e}");
            }
            let peer = self.next_peer;
            self.next_peer += 1;
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(peer as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("tcp publisher: cannot register {addr}: {e}");
                continue;
            }
            let buf_len = self.cfg.max_packet_len.saturating_mul(REQUEST_BUF_PACKETS);
            self.index.insert(peer, self.clients.len());
            self.clients.push(Client {
                peer,
                stream,
                addr,
                live: false,
                out: VecDeque::new(),
                rx: FrameBuf::new(buf_len, self.cfg.max_packet_len),
                // Anything that arrived before registration raises no edge:
                // try reading once.
                readable: true,
                writable: true,
                in_ready: true,
                over_since: None,
            });
            self.ready.push(peer);
            self.stats.connections += 1;
            self.stats.connected = self.clients.len() as u64;
            on_event(PubEvent::Connected(peer));
        }
    }

    /// Read and frame requests from the clients with pending readiness.
    fn read_ready(&mut self, on_event: &mut dyn FnMut(PubEvent<'_>)) {
        let mut k = 0;
        while k < self.ready.len() {
            let peer = self.ready[k];
            let Some(&i) = self.index.get(&peer) else {
                self.ready.swap_remove(k);
                continue;
            };
            let c = &mut self.clients[i];
            let mut failed = None;
            for _ in 0..MAX_READS_PER_POLL {
                if !c.readable {
                    break;
                }
                self.stats.syscalls += 1;
                if let Err(reason) = c.rx.read_step(&mut c.stream, &mut c.readable) {
                    failed = Some(reason);
                    break;
                }
                loop {
                    match c.rx.next_packet() {
                        Ok(Some(packet)) => {
                            self.stats.requests += 1;
                            on_event(PubEvent::Request { peer, packet });
                        }
                        Ok(None) => break,
                        Err(e) => {
                            failed = Some(DisconnectReason::Malformed(e));
                            break;
                        }
                    }
                }
                if failed.is_some() {
                    break;
                }
            }
            if let Some(reason) = failed {
                self.ready.swap_remove(k);
                self.close(peer, reason);
            } else if c.readable {
                k += 1; // budget spent: stays ready for the next poll
            } else {
                c.in_ready = false;
                self.ready.swap_remove(k);
            }
        }
    }

    /// Write every non-empty queue until it is empty or the socket is full,
    /// then apply the slow-consumer rules.
    fn write_queues(&mut self) {
        let mut now: Option<Instant> = None;
        for c in &mut self.clients {
            while c.writable && !c.out.is_empty() {
                let (a, b) = c.out.as_slices();
                let bufs = [IoSlice::new(a), IoSlice::new(b)];
                self.stats.syscalls += 1;
                match c.stream.write_vectored(&bufs) {
                    Ok(0) => {
                        self.doomed.push((c.peer, DisconnectReason::Io("write returned 0".into())));
                        break;
                    }
                    Ok(n) => {
                        c.out.drain(..n);
                        self.stats.bytes_sent += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.doomed.push((c.peer, DisconnectReason::Io(e.to_string())));
                        break;
                    }
                }
            }
            if c.out.len() > self.cfg.high_water {
                let now = *now.get_or_insert_with(Instant::now);
                let since = *c.over_since.get_or_insert(now);
                if now.duration_since(since) > self.cfg.slow_timeout {
                    self.doomed
                        .push((c.peer, DisconnectReason::SlowConsumer { queued: c.out.len() }));
                }
            } else {
                c.over_since = None;
            }
        }
        self.close_doomed();
    }

    /// Append `packet` to client `i`'s queue, or doom it if the queue would
    /// exceed `max_queue`.
    fn enqueue(
        c: &mut Client,
        packet: &[u8],
        max_queue: usize,
        stats: &mut PubStats,
        doomed: &mut Vec<(PeerId, DisconnectReason)>,
    ) {
        if c.out.len() + packet.len() > max_queue {
            stats.send_errors += 1;
            if !doomed.iter().any(|(p, _)| *p == c.peer) {
                doomed.push((c.peer, DisconnectReason::SlowConsumer { queued: c.out.len() }));
            }
            return;
        }
        c.out.extend(packet);
        stats.packets_sent += 1;
    }

    fn report_pending(&mut self, on_event: &mut dyn FnMut(PubEvent<'_>)) {
        while let Some((peer, reason)) = self.pending.pop_front() {
            on_event(PubEvent::Disconnected { peer, reason });
        }
    }
}

impl Publisher for TcpPublisher {
    fn local_addr(&self) -> Option<SocketAddr> {
        Some(TcpPublisher::local_addr(self))
    }

    fn max_packet_len(&self) -> usize {
        self.cfg.max_packet_len
    }

    /// Encodes once, then copies into the queue of every live client (O(N)).
    /// `packets_sent` counts one per client queued for; `bytes_sent` counts
    /// bytes the kernel accepted. A fill returning 0 publishes nothing.
    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        let len = fill(&mut self.scratch);
        if len > self.scratch.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fill returned a length beyond the buffer",
            ));
        }
        if len == 0 {
            return Ok(());
        }
        let packet = &self.scratch[..len];
        for c in &mut self.clients {
            if c.live {
                Self::enqueue(c, packet, self.cfg.max_queue, &mut self.stats, &mut self.doomed);
            }
        }
        self.close_doomed();
        Ok(())
    }

    /// Queues `packet` for `peer`, live or not; it goes out with the next
    /// flush or poll. Errors with `NotConnected` for an unknown peer.
    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        if packet.len() > self.cfg.max_packet_len {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "packet above max_packet_len"));
        }
        let Some(&i) = self.index.get(&peer) else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "no such peer"));
        };
        let c = &mut self.clients[i];
        Self::enqueue(c, packet, self.cfg.max_queue, &mut self.stats, &mut self.doomed);
        self.close_doomed();
        Ok(())
    }

    fn set_live(&mut self, peer: PeerId, live: bool) {
        if let Some(&i) = self.index.get(&peer) {
            self.clients[i].live = live;
        }
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        self.close(peer, reason);
    }

    /// Writes every client's queue until empty or the socket is full (one
    /// `writev` per call: a wrapped queue goes out in one system call), and
    /// drops slow consumers. Per-client failures become disconnections; this
    /// never fails. (`writev` raises SIGPIPE on a reset connection: Rust
    /// binaries ignore SIGPIPE by default; a host that does not must.)
    fn flush(&mut self) -> io::Result<()> {
        self.write_queues();
        Ok(())
    }

    /// Reports pending disconnections, writes queued bytes, waits in epoll
    /// (not at all while a socket is known to be ready), accepts, reads and
    /// frames requests (a fixed budget of `read` calls per client), writes
    /// again and applies the slow-consumer rules. `syscalls` counts `read`
    /// and `write` calls, not `epoll_wait` or `accept`.
    fn poll(
        &mut self,
        timeout: Option<Duration>,
        on_event: &mut dyn FnMut(PubEvent<'_>),
    ) -> io::Result<()> {
        self.report_pending(on_event);
        self.write_queues();
        let timeout = if self.accept_ready || !self.ready.is_empty() || !self.pending.is_empty() {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        crate::wait::poll_mio(&mut self.poll, &mut self.events, timeout)?;
        for ev in self.events.iter() {
            if ev.token() == LISTENER {
                self.accept_ready = true;
                continue;
            }
            let peer = ev.token().0 as PeerId;
            let Some(&i) = self.index.get(&peer) else {
                continue;
            };
            let c = &mut self.clients[i];
            let failed = ev.is_error();
            if ev.is_readable() || ev.is_read_closed() || failed {
                c.readable = true;
                if !c.in_ready {
                    c.in_ready = true;
                    self.ready.push(peer);
                }
            }
            if ev.is_writable() || ev.is_write_closed() || failed {
                c.writable = true;
            }
        }
        if self.accept_ready {
            self.accept(on_event);
        }
        self.read_ready(on_event);
        self.write_queues();
        self.report_pending(on_event);
        Ok(())
    }

    fn stats(&self) -> PubStats {
        self.stats.clone()
    }
}
