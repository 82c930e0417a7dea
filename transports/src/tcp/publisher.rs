//! The server side: a listener and one outgoing queue per client.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::config::{LISTEN_BACKLOG, TIMER_GRANULARITY, TcpPublisherConfig};
use super::guard::{HostTable, LogLimiter};
use super::peers::Client;
use super::{EVENTS_CAPACITY, MAX_READS_PER_POLL};
use crate::{DisconnectReason, OnPubEvent, PeerId, PubEvent, PubStats, Publisher};

/// The listener's token. Client tokens are their [`PeerId`]s, which start at 1
/// and never reach `usize::MAX`.
const LISTENER: Token = Token(usize::MAX);

/// The server side of the TCP transport. See the [module docs](super).
#[derive(Debug)]
pub struct TcpPublisher {
    pub(super) poll: Poll,
    events: Events,
    pub(super) listener: TcpListener,
    pub(super) local_addr: SocketAddr,
    pub(super) cfg: TcpPublisherConfig,
    /// Clients, densely packed for the fan-out loop.
    pub(super) clients: Vec<Client>,
    /// Peer id → index in `clients`.
    pub(super) index: HashMap<PeerId, usize>,
    pub(super) next_peer: PeerId,
    /// Where `publish_with` encodes a packet once before copying it.
    scratch: Vec<u8>,
    /// Clients with pending readiness to read.
    pub(super) ready: Vec<PeerId>,
    /// The listener may have connections waiting.
    pub(super) accept_ready: bool,
    /// Clients to close after the loop that found them (reused).
    pub(super) doomed: Vec<(PeerId, DisconnectReason)>,
    /// Disconnections not reported yet.
    pub(super) pending: VecDeque<(PeerId, DisconnectReason)>,
    pub(super) stats: PubStats,
    granted_send_buffer: usize,
    granted_recv_buffer: usize,
    /// Connections per source address.
    pub(super) hosts: HostTable,
    /// Per-connection log lines.
    pub(super) log: LogLimiter,
    /// Bytes queued over all clients.
    pub(super) queued_total: usize,
    /// When the connection timers are next checked.
    pub(super) next_timer_check: Instant,
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
            hosts: HostTable::default(),
            log: LogLimiter::default(),
            queued_total: 0,
            next_timer_check: Instant::now() + TIMER_GRANULARITY,
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

    /// Read and frame requests from the clients with pending readiness.
    fn read_ready(&mut self, on_event: OnPubEvent<'_>) {
        let mut now: Option<Instant> = None;
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
                if c.readable {
                    // Bytes arrived (or a signal interrupted the read: close enough).
                    c.timers.progress(*now.get_or_insert_with(Instant::now));
                }
                let requests = &mut self.stats.requests;
                if let Err(e) = c.rx.drain(|packet| {
                    *requests += 1;
                    on_event(PubEvent::Request { peer, packet });
                }) {
                    failed = Some(DisconnectReason::Malformed(e));
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
        let mut wrote = 0usize;
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
                        wrote += n;
                        self.stats.bytes_sent += n as u64;
                        c.timers.progress(*now.get_or_insert_with(Instant::now));
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
        self.queued_total -= wrote;
        self.stats.queued_bytes = self.queued_total as u64;
        self.close_doomed();
    }

    /// A client watching its drain ([`Publisher::watch_drain`]) is at or
    /// below its low-water mark and its socket can take more.
    fn wants_refill(&self) -> bool {
        self.clients.iter().any(|c| c.writable && c.low_water.is_some_and(|lw| c.out.len() <= lw))
    }

    /// Append `packet` to client `i`'s queue, or doom it if the queue would
    /// exceed `max_queue`.
    fn enqueue(
        c: &mut Client,
        packet: &[u8],
        max_queue: usize,
        stats: &mut PubStats,
        doomed: &mut Vec<(PeerId, DisconnectReason)>,
    ) -> usize {
        if c.out.len() + packet.len() > max_queue {
            stats.send_errors += 1;
            if !doomed.iter().any(|(p, _)| *p == c.peer) {
                doomed.push((c.peer, DisconnectReason::SlowConsumer { queued: c.out.len() }));
            }
            return 0;
        }
        c.out.extend(packet);
        stats.packets_sent += 1;
        packet.len()
    }

    /// Account for `n` bytes just queued.
    fn queued_more(&mut self, n: usize) {
        self.queued_total += n;
        self.stats.queued_bytes = self.queued_total as u64;
        self.stats.peak_queued_bytes = self.stats.peak_queued_bytes.max(self.stats.queued_bytes);
    }

    fn report_pending(&mut self, on_event: OnPubEvent<'_>) {
        while let Some((peer, reason)) = self.pending.pop_front() {
            on_event(PubEvent::Disconnected { peer, reason });
        }
    }
}

impl Drop for TcpPublisher {
    /// Say how many connection log lines the limit held back at the end, so
    /// no count is lost when a flood stops before the next line.
    fn drop(&mut self) {
        let n = self.log.take_suppressed();
        if n > 0 {
            eprintln!("tcp publisher: {n} similar connection log lines suppressed");
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
        let mut queued = 0;
        for c in &mut self.clients {
            if c.live {
                queued +=
                    Self::enqueue(c, packet, self.cfg.max_queue, &mut self.stats, &mut self.doomed);
            }
        }
        self.queued_more(queued);
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
        let n = Self::enqueue(c, packet, self.cfg.max_queue, &mut self.stats, &mut self.doomed);
        self.queued_more(n);
        self.close_doomed();
        Ok(())
    }

    /// Also marks the peer logged in (its login timer stops) when `live`.
    fn set_live(&mut self, peer: PeerId, live: bool) {
        if let Some(&i) = self.index.get(&peer) {
            let c = &mut self.clients[i];
            c.live = live;
            if live {
                c.timers.logged_in();
            }
        }
    }

    fn logged_in(&mut self, peer: PeerId) {
        if let Some(&i) = self.index.get(&peer) {
            self.clients[i].timers.logged_in();
        }
    }

    fn queued(&self, peer: PeerId) -> Option<usize> {
        TcpPublisher::queued(self, peer)
    }

    fn watch_drain(&mut self, peer: PeerId, low_water: Option<usize>) {
        if let Some(&i) = self.index.get(&peer) {
            self.clients[i].low_water = low_water;
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

    /// Closes connections whose login or idle timer expired, reports pending
    /// disconnections, writes queued bytes, waits in epoll (not at all while
    /// a socket is known to be ready or a watched queue is at its low-water
    /// mark; at most until the next timer check), accepts, reads and
    /// frames requests (a fixed budget of `read` calls per client), writes
    /// again and applies the slow-consumer rules. `syscalls` counts `read`
    /// and `write` calls, not `epoll_wait` or `accept`.
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        let until_timers = self.check_timers();
        self.report_pending(on_event);
        self.write_queues();
        let busy = self.accept_ready || !self.ready.is_empty() || !self.pending.is_empty();
        let timeout = if busy || self.wants_refill() {
            Some(Duration::ZERO)
        } else if self.clients.is_empty() {
            timeout
        } else {
            // Wake for the connection timers.
            Some(timeout.map_or(until_timers, |t| t.min(until_timers)))
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
