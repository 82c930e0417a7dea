//! [`MulticastPublisher`]: the server side of the multicast transport.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::Socket;
use tickwire_core::wire::Packet;

use super::{
    BufferSizes, GSO_PAD_MAX, MAX_SEND_RETRIES, MulticastConfig, SEND_RETRY_WAIT, drain, peer_addr,
    peer_id, send_one, set_buffer, sys, timeout_is_zero, transient, udp_socket, v4, warn_if_small,
};
use crate::{DisconnectReason, OnPubEvent, PeerId, PubEvent, PubStats, Publisher};

/// Fewest full packets worth a GSO send of their own: shorter runs stay in
/// the surrounding `sendmmsg` (one system call for the whole batch), so a
/// batch of mixed sizes never costs more calls than without GSO would, plus
/// one per run.
const GSO_MIN_RUN: usize = 4;

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

/// The server side: publishes to group A (and B) and answers requests by
/// unicast. See the module docs.
#[derive(Debug)]
pub struct MulticastPublisher {
    /// The feed's own socket when the interface address differs from the
    /// recovery service's (bound to it and the service's port); `None`: the
    /// feed leaves from `request`.
    data: Option<Socket>,
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
    /// The interface as errors name it ([`MulticastConfig::interface_text`]).
    iface: String,
    /// UDP GSO in use (asked for, and neither the kernel nor the interface refused it).
    gso: bool,
}

impl MulticastPublisher {
    /// Open the data socket (multicast out on `cfg.interface`) and bind the
    /// request socket to `cfg.request_addr`.
    pub fn new(cfg: MulticastConfig) -> io::Result<Self> {
        cfg.validate()?;
        let iface = cfg.interface_text();
        let named = |what: String, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} on {iface}: {}", crate::select::io_text(&e)))
        };
        let request = udp_socket()?;
        request.bind(&cfg.request_addr.into()).map_err(|e| {
            named(format!("binding the recovery service's address {}", cfg.request_addr), e)
        })?;
        let recv_granted = set_buffer(
            request.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            cfg.recv_buffer,
        )?;
        let request_local = v4(request.local_addr()?)?;

        // The feed leaves from the recovery service's address and port, so a
        // subscriber can check both on every datagram without being told
        // anything (docs/PROTOCOL.md § 2.1). With the interface's address
        // the same as the service's (or either unspecified) that is the
        // service's own socket; with another interface address, a socket
        // bound to that address and the service's port, which never reads.
        let source =
            if cfg.interface.is_unspecified() { *request_local.ip() } else { cfg.interface };
        let data = if source == *request_local.ip() || request_local.ip().is_unspecified() {
            None
        } else {
            let s = udp_socket()?;
            let at = SocketAddrV4::new(source, request_local.port());
            s.bind(&at.into()).map_err(|e| named(format!("binding the feed's source {at}"), e))?;
            Some(s)
        };
        let feed = data.as_ref().unwrap_or(&request);
        match cfg.ifindex()? {
            Some(index) => sys::set_multicast_if_index(feed.as_raw_fd(), index),
            None => feed.set_multicast_if_v4(&cfg.interface),
        }
        .map_err(|e| named("sending multicast".into(), e))?;
        feed.set_multicast_ttl_v4(cfg.ttl)?;
        feed.set_multicast_loop_v4(cfg.loopback)?;
        // Size the feed's send side, and the replies' when they leave from
        // another socket.
        let send_granted =
            set_buffer(feed.as_raw_fd(), libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, cfg.send_buffer)?;
        if data.is_some() {
            set_buffer(
                request.as_raw_fd(),
                libc::SO_SNDBUFFORCE,
                libc::SO_SNDBUF,
                cfg.send_buffer,
            )?;
        }

        let buffers = BufferSizes {
            send_requested: cfg.send_buffer,
            send_granted,
            recv_requested: cfg.recv_buffer,
            recv_granted,
        };
        warn_if_small("send", buffers.send_requested, buffers.send_granted);
        warn_if_small("receive", buffers.recv_requested, buffers.recv_granted);

        // UDP GSO: a kernel without it refuses the socket option (before
        // 4.18: ENOPROTOOPT); an interface that cannot segment refuses the
        // first GSO send (EIO), which then falls back (send_runs).
        let gso = cfg.gso
            && match sys::set_int_opt(feed.as_raw_fd(), libc::SOL_UDP, sys::UDP_SEGMENT, 0) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!(
                        "multicast publisher: UDP GSO unavailable ({e}): one datagram per packet (sendmmsg)"
                    );
                    false
                }
            };

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
            iface,
            gso,
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

    /// Pad every queued packet that is within [`GSO_PAD_MAX`] bytes of the
    /// slot size to it, so runs of them can be GSO segments. Padding after
    /// the payload is allowed (docs/PROTOCOL.md § 10) and covered by neither
    /// the CRC nor the MAC.
    fn pad_for_gso(&mut self) {
        let full = self.tx.slot_len();
        for i in 0..self.queued {
            let len = self.tx.packet(i).len();
            if len < full && full - len <= GSO_PAD_MAX {
                self.tx.slot_mut(i)[len..].fill(0);
                self.tx.set_len(i, full);
            }
        }
    }

    /// Send slots `0..queued` to `dest` in order: each run of at least
    /// [`GSO_MIN_RUN`] full slots (and the one after it, the run's shorter
    /// last segment) in one GSO send, what is left by `sendmmsg`. A GSO send the kernel refuses for
    /// good (the interface cannot segment: EIO; EINVAL) turns GSO off for
    /// this publisher, said once, and that run goes by `sendmmsg`.
    fn send_runs(&mut self, dest: SocketAddrV4) -> io::Result<()> {
        let fd = self.data.as_ref().unwrap_or(&self.request).as_raw_fd();
        let full = self.tx.slot_len();
        let most = sys::GSO_MAX_SEGMENTS.min(sys::GSO_MAX_BYTES / full);
        let mut result = Ok(());
        // Slots `single..i` have not been sent and go by sendmmsg.
        let mut single = 0;
        let mut i = 0;
        while i < self.queued && self.gso {
            // A run: full slots, then the slot that ends it (any length).
            let mut end = i;
            while end < self.queued && end - i < most && self.tx.packet(end).len() == full {
                end += 1;
            }
            if end - i < GSO_MIN_RUN {
                i = end.max(i + 1);
                continue;
            }
            if end < self.queued && end - i < most {
                end += 1;
            }
            if single < i {
                result = result.and(self.send_batch(dest, single, i));
            }
            let mut retries = 0;
            loop {
                self.stats.syscalls += 1;
                match self.tx.send_gso(fd, i, end, dest) {
                    Ok(()) => {
                        self.stats.gso_sends += 1;
                        for k in i..end {
                            self.stats.packets_sent += 1;
                            self.stats.bytes_sent += self.tx.packet(k).len() as u64;
                        }
                        break;
                    }
                    Err(e) if transient(&e) && retries < MAX_SEND_RETRIES => {
                        retries += 1;
                        sys::wait_writable(fd, SEND_RETRY_WAIT)?;
                    }
                    Err(e) if transient(&e) => {
                        self.stats.send_errors += (end - i) as u64;
                        break;
                    }
                    Err(e) => {
                        eprintln!(
                            "multicast publisher: UDP GSO refused on {} ({e}): falling back to one datagram per packet (sendmmsg)",
                            self.iface
                        );
                        self.gso = false;
                        // This run goes by sendmmsg with the rest.
                        end = i;
                        break;
                    }
                }
            }
            i = end;
            single = end;
        }
        if single < self.queued {
            result = result.and(self.send_batch(dest, single, self.queued));
        }
        result
    }

    /// Count the outcome of one single-packet send of `len` bytes: sent, or
    /// refused after retries (counted, not an error), or failed.
    fn count_one(&mut self, sent: io::Result<bool>, len: usize) -> io::Result<()> {
        match sent {
            Ok(true) => {
                self.stats.packets_sent += 1;
                self.stats.bytes_sent += len as u64;
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

    /// Send slots `from..to` to `dest`, resuming after partial sends and
    /// retrying transient errors a bounded number of times. Returns the first
    /// hard error, after trying every packet.
    fn send_batch(&mut self, dest: SocketAddrV4, from: usize, to: usize) -> io::Result<()> {
        let fd = self.data.as_ref().unwrap_or(&self.request).as_raw_fd();
        let mut next = from;
        let mut retries = 0;
        let mut first_err = None;
        while next < to {
            self.stats.syscalls += 1;
            match self.tx.sendmmsg(fd, next, to, dest) {
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
                    self.stats.send_errors += (to - next) as u64;
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
        let sent = send_one(&self.request, packet, &addr.into(), &mut self.stats.syscalls);
        self.count_one(sent, packet.len())
    }

    /// To line A's group from the feed's socket (the recovery service's
    /// address and port, or the interface's address and that port), as the
    /// feed goes: subscribers' source checks accept it unchanged.
    fn send_to_group(&mut self, packet: &[u8]) -> io::Result<()> {
        self.flush()?;
        let feed = self.data.as_ref().unwrap_or(&self.request);
        let dest: SocketAddr = self.groups[0].into();
        let sent = send_one(feed, packet, &dest.into(), &mut self.stats.syscalls);
        self.count_one(sent, packet.len())
    }

    fn sends_to_group(&self) -> bool {
        true
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
        if self.gso {
            self.pad_for_gso();
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
            if let Err(e) = self.send_runs(dest) {
                let text = format!(
                    "sending the feed to {dest} on {}: {}",
                    self.iface,
                    crate::select::io_text(&e)
                );
                result = result.and(Err(io::Error::new(e.kind(), text)));
            }
        }
        self.queued = 0;
        result
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        let fd = self.request.as_raw_fd();
        let mut pass = |this: &mut Self| {
            let requests = &mut this.stats.requests;
            let mut deliver = |src: Option<SocketAddrV4>, packet: &[u8], _rx: Option<u64>| {
                if let Some(src) = src {
                    *requests += 1;
                    on_event(PubEvent::Request { peer: peer_id(src), packet });
                }
            };
            let max_len = this.rx.slot_len();
            drain(
                fd,
                &mut this.rx,
                max_len,
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
        PubStats { gso: self.gso, ..self.stats.clone() }
    }
}
