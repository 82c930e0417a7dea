//! The client side: one connection, framed into packets.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};
use tickwire_core::wire::MAX_PACKET_LEN;

use super::framer::FrameBuf;
use super::{EVENTS_CAPACITY, MAX_READS_PER_POLL, is_transient};
use crate::wait::StampedReader;
use crate::{DisconnectReason, Line, OnSubEvent, SubEvent, SubStats, Subscriber};

/// Default [`TcpSubscriberConfig::recv_buffer`]: 4 MiB of kernel receive
/// buffer lets a client fall behind by a burst without the server's queue
/// growing (Linux caps it at `net.core.rmem_max`; the size granted is logged).
pub const DEFAULT_SUB_RECV_BUFFER: usize = 4 << 20;
/// Bytes of the user-space receive buffer one `read` fills: 256 KiB takes a
/// whole loopback burst in one system call, and holds at least two packets of
/// the largest size ([`MAX_PACKET_LEN`]).
const READ_BUF_LEN: usize = 256 << 10;
/// Requests queued while the socket is full or still connecting. Requests are
/// small and rare (Login, a few NACKs); 1 MiB queued means the server is not
/// reading, and further requests fail rather than grow the queue.
const MAX_REQUEST_QUEUE: usize = 1 << 20;

/// Configuration of a [`TcpSubscriber`].
#[derive(Clone, Debug)]
pub struct TcpSubscriberConfig {
    /// `SO_RCVBUF` requested before connecting (0: the kernel's default).
    pub recv_buffer: usize,
    /// Largest packet accepted from the stream; a longer one is malformed and
    /// closes the connection. Must be at least the server's `max_packet_len`.
    pub max_packet_len: usize,
}

impl Default for TcpSubscriberConfig {
    fn default() -> Self {
        TcpSubscriberConfig { recv_buffer: DEFAULT_SUB_RECV_BUFFER, max_packet_len: MAX_PACKET_LEN }
    }
}

/// One connection attempt or established connection.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    token: Token,
    connected: bool,
    /// Edge-triggered readiness, cleared only by `WouldBlock`.
    readable: bool,
    writable: bool,
}

/// An event to report from the next poll.
#[derive(Debug)]
enum Pending {
    Connected,
    Disconnected(DisconnectReason),
}

/// The client side of the TCP transport. See the [module docs](super).
#[derive(Debug)]
pub struct TcpSubscriber {
    poll: Poll,
    events: Events,
    addr: SocketAddr,
    cfg: TcpSubscriberConfig,
    conn: Option<Conn>,
    /// Token of the next connection attempt: a fresh one per attempt, so no
    /// event of an old socket is mistaken for the new one.
    next_token: usize,
    rx: FrameBuf,
    /// Requests not written yet.
    out: VecDeque<u8>,
    pending: VecDeque<Pending>,
    stats: SubStats,
    granted_recv_buffer: usize,
}

impl TcpSubscriber {
    /// Start connecting to `addr` without blocking. `poll` reports
    /// [`SubEvent::Connected`] once the connection is up, or
    /// [`SubEvent::Disconnected`] if it fails. Errors only if no socket can be made.
    pub fn connect(addr: SocketAddr, cfg: TcpSubscriberConfig) -> io::Result<TcpSubscriber> {
        if cfg.max_packet_len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "max_packet_len is 0"));
        }
        let mut s = TcpSubscriber {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            addr,
            rx: FrameBuf::new(READ_BUF_LEN.max(2 * cfg.max_packet_len), cfg.max_packet_len),
            cfg,
            conn: None,
            next_token: 0,
            out: VecDeque::new(),
            pending: VecDeque::new(),
            stats: SubStats::default(),
            granted_recv_buffer: 0,
        };
        s.start_connect()?;
        eprintln!(
            "tcp subscriber -> {addr}: SO_RCVBUF requested {} granted {}",
            s.cfg.recv_buffer, s.granted_recv_buffer
        );
        Ok(s)
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `SO_RCVBUF` the kernel granted (Linux reports twice the usable size).
    pub fn socket_recv_buffer(&self) -> usize {
        self.granted_recv_buffer
    }

    /// True once the current connection is established (until it fails).
    pub fn is_connected(&self) -> bool {
        self.conn.as_ref().is_some_and(|c| c.connected)
    }

    /// Open a socket and start a non-blocking connect. A connect that fails at
    /// once (nothing listening, on loopback) is reported as `Disconnected` by
    /// the next poll; only failing to create the socket is an error here.
    fn start_connect(&mut self) -> io::Result<()> {
        let sock = Socket::new(Domain::for_address(self.addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        sock.set_tcp_nodelay(true)?;
        crate::wait::enable_rx_timestamps(sock.as_raw_fd())?;
        if self.cfg.recv_buffer > 0 {
            sock.set_recv_buffer_size(self.cfg.recv_buffer)?;
        }
        self.granted_recv_buffer = sock.recv_buffer_size()?;
        match sock.connect(&self.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) || is_transient(&e) => {}
            Err(e) => {
                self.pending.push_back(Pending::Disconnected(DisconnectReason::Io(e.to_string())));
                return Ok(());
            }
        }
        let mut stream = TcpStream::from_std(sock.into());
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1);
        self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.conn =
            Some(Conn { stream, token, connected: false, readable: false, writable: false });
        Ok(())
    }

    /// Close the current connection (if any) and forget its buffered bytes.
    fn drop_conn(&mut self) {
        if let Some(mut c) = self.conn.take() {
            // Only fails if the socket is not registered; closing it is what matters.
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
        self.rx.clear();
        self.out.clear();
    }

    /// Close the connection and report why from the next poll.
    fn fail(&mut self, reason: DisconnectReason) {
        if matches!(reason, DisconnectReason::Malformed(_)) {
            self.stats.malformed += 1;
        }
        self.drop_conn();
        self.pending.push_back(Pending::Disconnected(reason));
    }

    /// A connecting socket became writable or failed: did the connect succeed?
    fn check_connected(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        match c.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.fail(DisconnectReason::Io(e.to_string())),
        }
        match c.stream.peer_addr() {
            Ok(_) => {
                c.connected = true;
                c.writable = true;
                c.readable = true;
                self.stats.connects += 1;
                self.pending.push_back(Pending::Connected);
            }
            // Still connecting: a spurious wake-up.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => self.fail(DisconnectReason::Io(e.to_string())),
        }
    }

    /// Write queued requests until done or the socket is full.
    fn write_out(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        if !c.connected {
            return;
        }
        while c.writable && !self.out.is_empty() {
            let (a, b) = self.out.as_slices();
            let bufs = [IoSlice::new(a), IoSlice::new(b)];
            self.stats.syscalls += 1;
            match c.stream.write_vectored(&bufs) {
                Ok(0) => return self.fail(DisconnectReason::Io("write returned 0".into())),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(DisconnectReason::Io(e.to_string())),
            }
        }
    }

    /// Read and frame, up to [`MAX_READS_PER_POLL`] reads.
    fn read_in(&mut self, on_event: OnSubEvent<'_>) {
        let Some(c) = self.conn.as_mut() else { return };
        if !c.connected {
            return;
        }
        let mut failed = None;
        for _ in 0..MAX_READS_PER_POLL {
            if !c.readable {
                break;
            }
            self.stats.syscalls += 1;
            let mut src = StampedReader::new(c.stream.as_raw_fd());
            if let Err(reason) = self.rx.read_step(&mut src, &mut c.readable) {
                failed = Some(reason);
                break;
            }
            let stats = &mut self.stats;
            if let Err(e) = self.rx.drain(|packet| {
                stats.packets_received += 1;
                stats.bytes_received += packet.len() as u64;
                on_event(SubEvent::Packet { line: Line::A, packet, kernel_rx_ns: src.stamp });
            }) {
                failed = Some(DisconnectReason::Malformed(e));
                break;
            }
        }
        if let Some(reason) = failed {
            self.fail(reason);
        }
    }

    fn report_pending(&mut self, on_event: OnSubEvent<'_>) {
        while let Some(p) = self.pending.pop_front() {
            match p {
                Pending::Connected => on_event(SubEvent::Connected),
                Pending::Disconnected(reason) => on_event(SubEvent::Disconnected(reason)),
            }
        }
    }
}

impl Subscriber for TcpSubscriber {
    /// Queues the request and writes it at once if the socket takes it; while
    /// connecting, it goes out once connected. Errors with `NotConnected` when
    /// there is no connection (call [`Subscriber::reconnect`]). A write failure
    /// closes the connection and is reported by the next poll.
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        if self.conn.is_none() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"));
        }
        if packet.len() > self.cfg.max_packet_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "request above max_packet_len",
            ));
        }
        if self.out.len() + packet.len() > MAX_REQUEST_QUEUE {
            return Err(io::Error::other("request queue full: the server is not reading"));
        }
        self.out.extend(packet);
        self.stats.requests_sent += 1;
        self.write_out();
        Ok(())
    }

    /// Reports pending connection events, waits in epoll (not at all while
    /// data is known to be waiting; not at all with `None` when there is no
    /// connection to wait on), completes a connect, writes queued requests,
    /// then reads and frames up to a fixed budget of `read` calls.
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        self.report_pending(on_event);
        if self.conn.is_none() && timeout.is_none() {
            // Nothing registered: blocking "until something happens" would
            // block forever. The caller must reconnect.
            return Ok(());
        }
        let busy = self.conn.as_ref().is_some_and(|c| c.connected && c.readable);
        let timeout = if busy { Some(Duration::ZERO) } else { timeout };
        crate::wait::poll_mio(&mut self.poll, &mut self.events, timeout)?;
        let mut connecting_event = false;
        if let Some(c) = self.conn.as_mut() {
            for ev in self.events.iter() {
                if ev.token() != c.token {
                    continue;
                }
                let failed = ev.is_error();
                if ev.is_readable() || ev.is_read_closed() || failed {
                    c.readable = true;
                }
                if ev.is_writable() || ev.is_write_closed() || failed {
                    c.writable = true;
                }
                if !c.connected {
                    connecting_event = true;
                }
            }
        }
        if connecting_event {
            self.check_connected();
            self.report_pending(on_event);
        }
        self.write_out();
        self.read_in(on_event);
        self.report_pending(on_event);
        Ok(())
    }

    /// Drops the current connection, if any (without reporting it), and starts
    /// a new attempt. Queued requests and partial packets are discarded.
    fn reconnect(&mut self) -> io::Result<()> {
        self.drop_conn();
        self.pending.clear();
        self.start_connect()
    }

    fn stats(&self) -> SubStats {
        self.stats.clone()
    }
}
