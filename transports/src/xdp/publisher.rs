//! The AF_XDP publisher: feed frames out of a UMEM through the TX ring;
//! requests in (and answers out) on a kernel UDP socket.

use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use tickwire_core::wire::{DEFAULT_MAX_PACKET, Packet};
use xsk_rs::FrameDesc;

use super::frame::{self, HEADERS_LEN, UdpEndpoints};
use super::sys::{self, Kick};
use super::xsk::{self, Steering, Xsk};
use super::{BindMode, XdpConfig};
use crate::{DisconnectReason, OnPubEvent, PeerId, PubEvent, PubStats, Publisher};

/// Kicks per submission at most. Copy mode sends 32 descriptors per `sendto`
/// and answers EAGAIN while more remain; 64 kicks drain a full 2048-entry
/// ring, and the bound keeps one call from spinning on a stuck device.
const MAX_KICKS_PER_SUBMIT: u32 = 64;
/// How long `publish_with` waits for the kernel to complete a frame when all
/// UMEM frames are in flight, before giving up with `WouldBlock`. Completions
/// arrive within microseconds unless the device is stuck; 10 ms rides out a
/// descheduled softirq on a loaded 2-core VM without hiding a real stall.
const FRAME_WAIT: Duration = Duration::from_millis(10);
/// Requests read per `poll`, so a flood of NACKs cannot starve publishing.
const MAX_REQUESTS_PER_POLL: usize = 64;
/// Receive buffer for requests: requests are header-sized, but a datagram up
/// to the UDP maximum is read whole so that it can be counted as malformed.
const REQUEST_BUF_LEN: usize = 65_536;

/// Counters specific to the AF_XDP publisher.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpPubStats {
    /// Descriptors handed to the TX ring.
    pub tx_submitted: u64,
    /// Frames the kernel gave back through the completion ring.
    pub tx_completed: u64,
    /// `sendto` kicks.
    pub kicks: u64,
    /// Submissions that found the TX ring full (frames kept pending, retried).
    pub tx_ring_full: u64,
    /// Kicks the kernel answered with "busy" (EBUSY/ENOBUFS): the ring is
    /// kicked again on the next submission, flush or poll.
    pub kicks_busy: u64,
    /// `publish_with` calls that found every frame in flight and waited.
    pub frame_waits: u64,
    /// Kernel statistics of the socket (`XDP_STATISTICS`): invalid TX descriptors.
    pub tx_invalid_descs: u64,
}

/// The PeerId of a request's sender: its IPv4 address and port, packed
/// (`ip << 16 | port`), so no table is needed and [`peer_addr`] inverts it.
pub fn peer_id(addr: SocketAddrV4) -> PeerId {
    (u64::from(u32::from(*addr.ip())) << 16) | u64::from(addr.port())
}

/// The address a [`peer_id`] was made from.
pub fn peer_addr(peer: PeerId) -> SocketAddrV4 {
    SocketAddrV4::new(((peer >> 16) as u32).into(), peer as u16)
}

/// AF_XDP publisher. See the [module doc](super).
pub struct XdpPublisher {
    xsk: Xsk,
    /// Frames owned by the transport, ready to be written.
    free: Vec<FrameDesc>,
    /// Written frames not yet on the TX ring (oldest first).
    pending: Vec<FrameDesc>,
    /// Scratch for completion-ring reads.
    completed: Vec<FrameDesc>,
    /// Frames on the TX ring or awaiting completion.
    in_kernel: usize,
    frame_count: usize,
    tx_ring_size: usize,
    endpoints: UdpEndpoints,
    max_packet: usize,
    batch: usize,
    requests: UdpSocket,
    request_buf: Vec<u8>,
    stats: PubStats,
    xstats: XdpPubStats,
}

impl std::fmt::Debug for XdpPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPublisher")
            .field("xsk", &self.xsk)
            .field("endpoints", &self.endpoints)
            .field("free", &self.free.len())
            .field("pending", &self.pending.len())
            .field("in_kernel", &self.in_kernel)
            .finish()
    }
}

impl XdpPublisher {
    /// Bind an AF_XDP socket on `cfg.ifname` (in the calling thread's network
    /// namespace) and a kernel UDP socket on `cfg.request`.
    pub fn new(cfg: &XdpConfig) -> io::Result<XdpPublisher> {
        if cfg.batch == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "batch must be positive"));
        }
        let info = sys::if_info(&cfg.ifname)?;
        let src_ip = match cfg.src_ip.or(info.ipv4) {
            Some(ip) => ip,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("{} has no IPv4 address: set XdpConfig::src_ip", cfg.ifname),
                ));
            }
        };
        let dst_ip = *cfg.dst.ip();
        let dst_mac = match cfg.dst_mac {
            Some(m) => m,
            None if dst_ip.is_multicast() => frame::multicast_mac(dst_ip),
            None => sys::neighbour_mac(&cfg.ifname, dst_ip).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!(
                        "no neighbour entry for {dst_ip} on {}: set XdpConfig::dst_mac, or add \
                         `ip neigh replace {dst_ip} lladdr MAC dev {} nud permanent`",
                        cfg.ifname, cfg.ifname
                    ),
                )
            })?,
        };
        let requests = UdpSocket::bind(cfg.request).map_err(|e| {
            io::Error::new(e.kind(), format!("binding the request socket to {}: {e}", cfg.request))
        })?;
        // The feed leaves from the recovery service's port unless told
        // otherwise: subscribers check the source port of every frame.
        let src_port = match cfg.src_port {
            0 => requests.local_addr()?.port(),
            p => p,
        };
        let endpoints = UdpEndpoints {
            src_mac: cfg.src_mac.unwrap_or(info.mac),
            dst_mac,
            src: SocketAddrV4::new(src_ip, src_port),
            dst: cfg.dst,
            ttl: cfg.ttl,
        };
        requests.set_nonblocking(true)?;

        let mut xsk = xsk::open(cfg, Steering::TxOnly, "publisher")?;
        // The largest UDP payload: what the interface's MTU carries without
        // fragmenting, what a UMEM frame holds, and the datagram default.
        let frame_room = xsk.frame_room;
        let mtu_room = (info.mtu as usize).saturating_sub(HEADERS_LEN - frame::ETH_HEADER_LEN);
        let max_packet = DEFAULT_MAX_PACKET.min(frame_room - HEADERS_LEN).min(mtu_room);
        let free = std::mem::take(&mut xsk.frames);
        let frame_count = free.len();
        Ok(XdpPublisher {
            xsk,
            free,
            pending: Vec::with_capacity(frame_count),
            completed: vec![FrameDesc::default(); cfg.ring_size as usize],
            in_kernel: 0,
            frame_count,
            tx_ring_size: cfg.ring_size as usize,
            endpoints,
            max_packet,
            batch: cfg.batch,
            requests,
            request_buf: vec![0; REQUEST_BUF_LEN],
            stats: PubStats::default(),
            xstats: XdpPubStats::default(),
        })
    }

    /// The mode the socket was bound in.
    pub fn bind_mode(&self) -> BindMode {
        self.xsk.mode
    }

    /// The addresses written into every frame.
    pub fn endpoints(&self) -> UdpEndpoints {
        self.endpoints
    }

    /// The local address of the kernel request socket.
    pub fn request_addr(&self) -> io::Result<SocketAddr> {
        self.requests.local_addr()
    }

    /// AF_XDP-specific counters (reads the socket's kernel statistics too).
    pub fn xdp_stats(&self) -> XdpPubStats {
        let mut s = self.xstats.clone();
        if let Ok(k) = self.xsk.tx.fd().xdp_statistics() {
            s.tx_invalid_descs = k.tx_invalid_descs();
        }
        s
    }

    fn check_frames(&self) {
        debug_assert_eq!(
            self.free.len() + self.pending.len() + self.in_kernel,
            self.frame_count,
            "a UMEM frame was lost or duplicated"
        );
    }

    /// Take back every frame the kernel has finished sending.
    fn reclaim(&mut self) {
        loop {
            // SAFETY: the completion ring only returns descriptors of frames this
            // socket put on its TX ring, which came from this UMEM; each is
            // handed back once and goes to the free list, its only owner now.
            let n = unsafe { self.xsk.cq.consume(&mut self.completed) };
            if n == 0 {
                break;
            }
            self.free.extend_from_slice(&self.completed[..n]);
            self.in_kernel -= n;
            self.xstats.tx_completed += n as u64;
            if n < self.completed.len() {
                break;
            }
        }
        self.check_frames();
    }

    /// Put pending frames on the TX ring (as many as it has room for, in
    /// order) and kick the kernel.
    fn submit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            // A kick that met a busy device left descriptors on the ring: in
            // copy mode nothing else will send them.
            return self.kick_if_ring_not_empty();
        }
        let mut room = self.xsk.tx.nb_free(self.pending.len() as u32) as usize;
        if room == 0 {
            // The kernel has not consumed the ring yet: make it, then look again.
            self.kick()?;
            self.reclaim();
            room = self.xsk.tx.nb_free(self.pending.len() as u32) as usize;
        }
        let n = room.min(self.pending.len());
        if n < self.pending.len() {
            self.xstats.tx_ring_full += 1;
        }
        if n > 0 {
            // SAFETY: the pending frames belong to this UMEM and to no ring;
            // `n` is at most the free room just read, so the all-or-nothing
            // produce takes all of them (this thread is the ring's only producer).
            let produced = unsafe { self.xsk.tx.produce(&self.pending[..n]) };
            debug_assert_eq!(produced, n, "TX produce refused frames it had room for");
            self.pending.drain(..produced);
            self.in_kernel += produced;
            self.xstats.tx_submitted += produced as u64;
        }
        self.check_frames();
        self.kick()
    }

    /// Kick if the kernel has not consumed everything on the TX ring.
    fn kick_if_ring_not_empty(&mut self) -> io::Result<()> {
        if (self.xsk.tx.nb_free_exact() as usize) < self.tx_ring_size {
            self.kick()
        } else {
            Ok(())
        }
    }

    /// Kick transmission if the kernel asks for it (need_wakeup), repeating
    /// while it reports a spent per-call budget with descriptors left.
    fn kick(&mut self) -> io::Result<()> {
        for _ in 0..MAX_KICKS_PER_SUBMIT {
            if !self.xsk.tx.needs_wakeup() {
                break;
            }
            self.stats.syscalls += 1;
            self.xstats.kicks += 1;
            match sys::kick_tx(self.xsk.fd)? {
                Kick::More => continue,
                Kick::Done => break,
                Kick::Busy => {
                    self.xstats.kicks_busy += 1;
                    break;
                }
            }
        }
        Ok(())
    }

    /// A free frame, waiting (bounded) for completions if all are in flight.
    fn take_frame(&mut self) -> io::Result<FrameDesc> {
        if let Some(d) = self.free.pop() {
            return Ok(d);
        }
        self.reclaim();
        if let Some(d) = self.free.pop() {
            return Ok(d);
        }
        self.xstats.frame_waits += 1;
        let start = Instant::now();
        loop {
            self.submit()?;
            self.reclaim();
            if let Some(d) = self.free.pop() {
                return Ok(d);
            }
            if start.elapsed() >= FRAME_WAIT {
                self.stats.send_errors += 1;
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "all {} UMEM frames are in flight and none completed within {} ms",
                        self.frame_count,
                        FRAME_WAIT.as_millis()
                    ),
                ));
            }
            std::thread::yield_now();
        }
    }

    fn read_requests(&mut self, on_event: OnPubEvent<'_>) -> io::Result<bool> {
        let mut any = false;
        for _ in 0..MAX_REQUESTS_PER_POLL {
            let (n, from) = match self.requests.recv_from(&mut self.request_buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable from an earlier answer: not our problem.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            self.stats.syscalls += 1;
            any = true;
            let SocketAddr::V4(from) = from else {
                self.stats.malformed += 1;
                continue;
            };
            match Packet::new_checked(&self.request_buf[..n]) {
                Ok(p) => {
                    self.stats.requests += 1;
                    on_event(PubEvent::Request { peer: peer_id(from), packet: p.as_bytes() });
                }
                Err(_) => self.stats.malformed += 1,
            }
        }
        Ok(any)
    }
}

impl Publisher for XdpPublisher {
    fn local_addr(&self) -> Option<SocketAddr> {
        self.request_addr().ok()
    }

    fn max_packet_len(&self) -> usize {
        self.max_packet
    }

    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        let mut desc = self.take_frame()?;
        // The frame stays on the free list until it is complete, so a `fill`
        // that panics leaves every frame accounted for.
        self.free.push(desc);
        let max = self.max_packet;
        let len = {
            // SAFETY: `desc` came from this UMEM's free list (the copy pushed
            // back is a record, not a reference): no ring holds its frame and
            // nothing else reads or writes it until it is put on the TX ring.
            let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
            let mut cursor = data.cursor();
            let room = cursor.buf_len();
            cursor.set_pos(room);
            let buf = data.contents_mut();
            let n = fill(&mut buf[HEADERS_LEN..HEADERS_LEN + max]);
            if n > max { None } else { Some(frame::emit_udp_frame(&self.endpoints, buf, n)) }
        };
        let Some(len) = len else {
            self.stats.send_errors += 1;
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fill returned more than max_packet_len ({max}) bytes"),
            ));
        };
        {
            // SAFETY: as above; this sets the descriptor's length to the frame's.
            let mut data = unsafe { self.xsk.umem.data_mut(&mut desc) };
            data.cursor().set_pos(len);
        }
        self.free.pop();
        self.pending.push(desc);
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += (len - HEADERS_LEN) as u64;
        if self.pending.len() >= self.batch {
            self.submit()?;
            self.reclaim();
        }
        Ok(())
    }

    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        self.stats.syscalls += 1;
        match self.requests.send_to(packet, peer_addr(peer)) {
            Ok(_) => {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += packet.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.stats.send_errors += 1;
                Err(e)
            }
        }
    }

    /// A frame to the feed's destination (its group), from the feed's
    /// source, like a live packet: the AF_XDP feed has one line, so that is
    /// line A. Queued behind what is batched, then submitted at once.
    fn send_to_group(&mut self, packet: &[u8]) -> io::Result<()> {
        self.publish(packet)?;
        self.flush()
    }

    fn sends_to_group(&self) -> bool {
        true
    }

    fn set_live(&mut self, _peer: PeerId, _live: bool) {}

    fn disconnect(&mut self, _peer: PeerId, _reason: DisconnectReason) {}

    fn flush(&mut self) -> io::Result<()> {
        self.submit()?;
        self.reclaim();
        Ok(())
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        self.submit()?;
        self.reclaim();
        if self.read_requests(on_event)? {
            return Ok(());
        }
        // Frames still waiting for the TX ring: do not sleep long on them.
        let timeout = if self.pending.is_empty() {
            timeout
        } else {
            Some(timeout.map_or(Duration::ZERO, |t| t.min(Duration::from_micros(100))))
        };
        if timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let mut fds = [sys::pollfd(self.requests.as_raw_fd(), libc::POLLIN)];
        self.stats.syscalls += 1;
        if sys::poll(&mut fds, timeout)? > 0 {
            self.read_requests(on_event)?;
        }
        self.submit()?;
        self.reclaim();
        Ok(())
    }

    fn stats(&self) -> PubStats {
        self.stats.clone()
    }
}

impl Drop for XdpPublisher {
    fn drop(&mut self) {
        // Best effort: put out what is pending so a clean shutdown loses nothing.
        let _ = self.submit();
    }
}
