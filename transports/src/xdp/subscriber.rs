//! The AF_XDP subscriber: feed frames in through the RX ring (Line::A);
//! requests out and answers in on a kernel UDP socket (Line::Unicast).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tickwire_core::wire::Packet;
use xsk_rs::FrameDesc;

use super::frame::{self, FrameDrop, UdpChecksum};
use super::prog::FeedFilter;
use super::sys;
use super::xsk::{self, Steering, Xsk};
use super::{BindMode, RxSteering, XdpConfig};
use crate::{Line, OnSubEvent, SubEvent, SubStats, Subscriber};

/// RX batches read per `poll` at most, so one call returns to the caller (and
/// its timers) after 16 × batch frames even under a flood.
const MAX_RX_BATCHES_PER_POLL: usize = 16;
/// Unicast datagrams read per `poll` at most (recovery replies); bounded for
/// the same reason.
const MAX_UNICAST_PER_POLL: usize = 64;
/// Receive buffer for unicast replies: a reply is at most one datagram.
const UNICAST_BUF_LEN: usize = 65_536;

/// Counters specific to the AF_XDP subscriber. Every frame that reaches the
/// socket lands in exactly one of the first ten.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdpSubStats {
    /// Feed frames delivered (Line::A).
    pub feed_frames: u64,
    /// Recovery replies that arrived through the AF_XDP socket (libxdp's
    /// default program) rather than the kernel socket, delivered as Line::Unicast.
    pub unicast_frames: u64,
    /// Frames that were not IPv4 (ARP...): swallowed only under
    /// `RxSteering::LibxdpDefault`.
    pub not_ipv4: u64,
    /// IPv4 frames that were not UDP.
    pub not_udp: u64,
    /// UDP datagrams for another address or port.
    pub not_ours: u64,
    /// Frames with an impossible length.
    pub malformed: u64,
    /// Frames whose IPv4 header checksum was wrong.
    pub bad_ip_checksum: u64,
    /// Frames whose UDP checksum was wrong.
    pub bad_udp_checksum: u64,
    /// IPv4 fragments.
    pub fragments: u64,
    /// Datagrams to our port whose payload is not a Tickwire packet (bad
    /// magic, version or length).
    pub not_tickwire: u64,
    /// Accepted datagrams that carried no UDP checksum (zero).
    pub udp_checksum_absent: u64,
    /// Accepted datagrams with a partial (offload) UDP checksum.
    pub udp_checksum_partial: u64,
    /// `recvfrom` wake-ups (need_wakeup on the fill ring, busy polling).
    pub rx_kicks: u64,
    /// Kernel: frames dropped because the fill ring was empty (`XDP_STATISTICS`).
    pub rx_fill_ring_empty: u64,
    /// Kernel: frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Kernel: frames dropped for other reasons.
    pub rx_dropped: u64,
    /// Kernel: invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
}

/// Where a datagram goes.
#[derive(Clone, Copy, Debug)]
struct Classifier {
    /// Destination IP of feed frames (the group, or our own address).
    feed_ip: Ipv4Addr,
    feed_port: u16,
    /// Our request socket's local port (replies to it are Line::Unicast).
    unicast_port: u16,
    /// The recovery service: feed frames and replies alike must come from
    /// its address and port (frames bypass the kernel socket's connect).
    server: SocketAddrV4,
}

/// AF_XDP subscriber. See the [module doc](super).
pub struct XdpSubscriber {
    // The program goes first (detached before the socket closes).
    _filter: Option<FeedFilter>,
    xsk: Xsk,
    /// Frames owned by the transport (waiting for room on the fill ring).
    free: Vec<FrameDesc>,
    /// Scratch for RX-ring reads.
    rx_descs: Vec<FrameDesc>,
    /// Frames on the fill ring or the RX ring.
    in_kernel: usize,
    frame_count: usize,
    classifier: Classifier,
    busy_poll: bool,
    requests: UdpSocket,
    unicast_buf: Vec<u8>,
    stats: SubStats,
    xstats: XdpSubStats,
}

impl std::fmt::Debug for XdpSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpSubscriber")
            .field("xsk", &self.xsk)
            .field("classifier", &self.classifier)
            .field("free", &self.free.len())
            .field("in_kernel", &self.in_kernel)
            .finish()
    }
}

impl XdpSubscriber {
    /// Bind an AF_XDP socket on `cfg.ifname` (in the calling thread's network
    /// namespace), attach the steering program, fill the fill ring, and open
    /// the kernel request socket (joined to the group for a multicast feed).
    pub fn new(cfg: &XdpConfig) -> io::Result<XdpSubscriber> {
        if cfg.batch == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "batch must be positive"));
        }
        let info = sys::if_info(&cfg.ifname)?;
        let own_ip = cfg.src_ip.or(info.ipv4);
        let group = cfg.dst.ip().is_multicast().then_some(*cfg.dst.ip());
        let feed_ip = match (group, own_ip) {
            (Some(g), _) => g,
            (None, Some(ip)) => ip,
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!(
                        "{} has no IPv4 address and the feed is not multicast: set XdpConfig::src_ip",
                        cfg.ifname
                    ),
                ));
            }
        };

        let requests = request_socket(cfg, own_ip, group, info.index)?;
        let unicast_port = requests.local_addr()?.port();

        let steering = match cfg.steering {
            RxSteering::FeedPort => Steering::Own,
            RxSteering::LibxdpDefault => Steering::LibxdpDefault,
        };
        let mut xsk = xsk::open(cfg, steering, "subscriber")?;
        let filter = match cfg.steering {
            RxSteering::FeedPort => Some(FeedFilter::attach(
                &cfg.ifname,
                info.index,
                cfg.queue,
                cfg.listen_port,
                xsk.fd,
                xsk.mode.attach,
            )?),
            RxSteering::LibxdpDefault => None,
        };
        let free = std::mem::take(&mut xsk.frames);
        let frame_count = free.len();
        let mut sub = XdpSubscriber {
            _filter: filter,
            xsk,
            free,
            rx_descs: vec![FrameDesc::default(); cfg.batch],
            in_kernel: 0,
            frame_count,
            classifier: Classifier {
                feed_ip,
                feed_port: cfg.listen_port,
                unicast_port,
                server: cfg.request,
            },
            busy_poll: cfg.busy_poll,
            requests,
            unicast_buf: vec![0; UNICAST_BUF_LEN],
            stats: SubStats::default(),
            xstats: XdpSubStats::default(),
        };
        sub.refill()?;
        Ok(sub)
    }

    /// The mode the socket was bound in.
    pub fn bind_mode(&self) -> BindMode {
        self.xsk.mode
    }

    /// The kernel request socket's local address (where replies come to).
    pub fn request_addr(&self) -> io::Result<SocketAddr> {
        self.requests.local_addr()
    }

    /// AF_XDP-specific counters (reads the socket's kernel statistics too).
    pub fn xdp_stats(&self) -> XdpSubStats {
        let mut s = self.xstats.clone();
        if let Ok(k) = self.xsk.rx.fd().xdp_statistics() {
            s.rx_fill_ring_empty = k.rx_fill_ring_empty_descs();
            s.rx_ring_full = k.rx_ring_full();
            s.rx_dropped = k.rx_dropped();
            s.rx_invalid_descs = k.rx_invalid_descs();
        }
        s
    }

    fn check_frames(&self) {
        debug_assert_eq!(
            self.free.len() + self.in_kernel,
            self.frame_count,
            "a UMEM frame was lost or duplicated"
        );
    }

    /// Give free frames to the fill ring: as many as it has room for.
    fn refill(&mut self) -> io::Result<()> {
        if self.free.is_empty() {
            return Ok(());
        }
        let room = self.xsk.fq.nb_free(self.free.len() as u32) as usize;
        let n = room.min(self.free.len());
        if n > 0 {
            let from = self.free.len() - n;
            // SAFETY: the free frames belong to this UMEM and to no ring; `n` is
            // at most the room just read, so the all-or-nothing produce takes
            // them all (this thread is the fill ring's only producer).
            let produced = unsafe { self.xsk.fq.produce(&self.free[from..]) };
            debug_assert_eq!(produced, n, "fill produce refused frames it had room for");
            self.free.truncate(self.free.len() - produced);
            self.in_kernel += produced;
        }
        self.check_frames();
        if self.xsk.fq.needs_wakeup() {
            self.kick_rx()?;
        }
        Ok(())
    }

    fn kick_rx(&mut self) -> io::Result<()> {
        self.stats.syscalls += 1;
        self.xstats.rx_kicks += 1;
        sys::kick_rx(self.xsk.fd)
    }

    /// Read the RX ring (bounded), deliver feed frames, give every frame back.
    fn read_ring(&mut self, on_event: OnSubEvent<'_>) -> io::Result<usize> {
        if self.busy_poll {
            self.kick_rx()?;
        }
        let mut total = 0;
        for _ in 0..MAX_RX_BATCHES_PER_POLL {
            // SAFETY: the RX ring returns descriptors of frames this socket put
            // on its fill ring, from this UMEM; each is read below and then
            // handed to the free list, its only owner.
            let n = unsafe { self.xsk.rx.consume(&mut self.rx_descs) };
            if n == 0 {
                break;
            }
            self.in_kernel -= n;
            for desc in &self.rx_descs[..n] {
                // SAFETY: the frame came off the RX ring, so the kernel no longer
                // writes it, and nothing else references it until it goes back
                // to the fill ring after this loop.
                let data = unsafe { self.xsk.umem.data(desc) };
                handle_frame(
                    data.contents(),
                    &self.classifier,
                    &mut self.stats,
                    &mut self.xstats,
                    on_event,
                );
            }
            self.free.extend_from_slice(&self.rx_descs[..n]);
            self.refill()?;
            total += n;
            if n < self.rx_descs.len() {
                break;
            }
        }
        Ok(total)
    }

    fn read_unicast(&mut self, on_event: OnSubEvent<'_>) -> io::Result<usize> {
        let mut got = 0;
        for _ in 0..MAX_UNICAST_PER_POLL {
            let n = match self.requests.recv(&mut self.unicast_buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ICMP port unreachable for an earlier request: the server is not up yet.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Err(e),
            };
            self.stats.syscalls += 1;
            got += 1;
            match Packet::new_checked(&self.unicast_buf[..n]) {
                Ok(p) => {
                    self.stats.packets_received += 1;
                    self.stats.bytes_received += p.total_len() as u64;
                    on_event(SubEvent::Packet {
                        line: Line::Unicast,
                        packet: p.as_bytes(),
                        kernel_rx_ns: None,
                    });
                }
                Err(_) => self.stats.malformed += 1,
            }
        }
        Ok(got)
    }

    fn drain(&mut self, on_event: OnSubEvent<'_>) -> io::Result<usize> {
        Ok(self.read_ring(on_event)? + self.read_unicast(on_event)?)
    }
}

/// Classify one received frame and deliver it if it is ours.
fn handle_frame(
    bytes: &[u8],
    c: &Classifier,
    stats: &mut SubStats,
    x: &mut XdpSubStats,
    on_event: OnSubEvent<'_>,
) {
    let d = match frame::parse_udp_frame(bytes) {
        Ok(d) => d,
        Err(drop) => {
            let counter = match drop {
                FrameDrop::NotIpv4 => &mut x.not_ipv4,
                FrameDrop::NotUdp => &mut x.not_udp,
                FrameDrop::Malformed => &mut x.malformed,
                FrameDrop::BadIpChecksum => &mut x.bad_ip_checksum,
                FrameDrop::BadUdpChecksum => &mut x.bad_udp_checksum,
                FrameDrop::Fragment => &mut x.fragments,
            };
            *counter += 1;
            if matches!(
                drop,
                FrameDrop::Malformed | FrameDrop::BadIpChecksum | FrameDrop::BadUdpChecksum
            ) {
                stats.malformed += 1;
            }
            return;
        }
    };
    let line = if d.dst.port() == c.feed_port && *d.dst.ip() == c.feed_ip {
        Line::A
    } else if d.dst.port() == c.unicast_port {
        Line::Unicast
    } else {
        x.not_ours += 1;
        return;
    };
    // Feed and replies alike come from the recovery service's address and
    // port (docs/PROTOCOL.md § 10).
    if d.src != c.server {
        stats.wrong_source += 1;
        return;
    }
    let Ok(p) = Packet::new_checked(d.payload) else {
        x.not_tickwire += 1;
        stats.malformed += 1;
        return;
    };
    match d.checksum {
        UdpChecksum::Valid => {}
        UdpChecksum::Absent => x.udp_checksum_absent += 1,
        UdpChecksum::Partial => x.udp_checksum_partial += 1,
    }
    match line {
        Line::Unicast => x.unicast_frames += 1,
        _ => x.feed_frames += 1,
    }
    stats.packets_received += 1;
    stats.bytes_received += p.total_len() as u64;
    on_event(SubEvent::Packet { line, packet: p.as_bytes(), kernel_rx_ns: None });
}

/// The kernel UDP socket for requests and their answers, connected to the
/// recovery service; joined to the feed's group on the interface, so the NIC
/// accepts the group's MAC and switches (IGMP snooping) forward the feed.
fn request_socket(
    cfg: &XdpConfig,
    own_ip: Option<Ipv4Addr>,
    group: Option<Ipv4Addr>,
    ifindex: u32,
) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let local = SocketAddrV4::new(own_ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    s.bind(&local.into()).map_err(|e| {
        io::Error::new(e.kind(), format!("binding the request socket to {local}: {e}"))
    })?;
    if let Some(g) = group {
        s.join_multicast_v4_n(&g, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(|e| io::Error::new(e.kind(), format!("joining {g} on {}: {e}", cfg.ifname)))?;
    }
    s.connect(&SocketAddr::V4(cfg.request).into()).map_err(|e| {
        io::Error::new(e.kind(), format!("connecting the request socket to {}: {e}", cfg.request))
    })?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

impl Subscriber for XdpSubscriber {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        self.stats.syscalls += 1;
        self.requests.send(packet)?;
        self.stats.requests_sent += 1;
        Ok(())
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        if self.drain(on_event)? > 0 || timeout == Some(Duration::ZERO) {
            return Ok(());
        }
        let mut fds = [
            sys::pollfd(self.xsk.fd, libc::POLLIN),
            sys::pollfd(self.requests.as_raw_fd(), libc::POLLIN),
        ];
        self.stats.syscalls += 1;
        if sys::poll(&mut fds, timeout)? > 0 {
            self.drain(on_event)?;
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
