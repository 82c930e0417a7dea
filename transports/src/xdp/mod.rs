//! # AF_XDP transport (feature `xdp`)
//!
//! Data packets travel as raw Ethernet/IPv4/UDP frames through AF_XDP sockets
//! ([xsk-rs](https://docs.rs/xsk-rs)); the headers are written and checked with
//! `smoltcp::wire` ([`frame`]). The recovery plane is the multicast
//! transport's: a kernel UDP socket on the server (the request port) and one on
//! each client, so the same recovery service answers NACKs whichever data plane
//! the client uses.
//!
//! ```text
//!   server                                               client
//!   XdpPublisher ── UMEM frame ─▶ TX ring ═══ frames ═══▶ XDP prog ─▶ RX ring ─▶ XdpSubscriber (Line::A)
//!        │  (fill writes the packet straight into the frame)      fill ring ◀─ every frame given back
//!        └─ kernel UDP socket (request port) ◀══ NACK / snapshot request ══ kernel UDP socket (Line::Unicast)
//! ```
//!
//! ## Frames
//! Each socket owns its UMEM. A frame is in exactly one place at a time: the
//! transport's free list, its pending TX batch, or the kernel (TX/completion
//! ring for the publisher, fill/RX ring for the subscriber); the counts are
//! checked on every move in debug builds. xsk-rs's `produce` is all-or-nothing,
//! so the transport never asks a ring to take more than it has room for.
//!
//! ## Which frames reach the socket
//! The subscriber attaches a small XDP program of its own ([`RxSteering::FeedPort`],
//! the default, see `prog.rs`): it redirects IPv4/UDP frames whose destination
//! port is the feed's and passes everything else (ARP, the recovery replies,
//! ssh...) to the kernel, so no static neighbour entries are needed.
//! [`RxSteering::LibxdpDefault`] uses libxdp's stock program instead, which
//! redirects *every* frame of the queue: ARP then never reaches the kernel, so
//! both ends need static neighbours (`ip neigh replace IP lladdr MAC dev IF nud
//! permanent`), and the subscriber demultiplexes recovery replies out of the
//! AF_XDP socket itself (frames to its request socket's port become
//! [`Line::Unicast`](crate::Line::Unicast)). The publisher attaches no program
//! at all: AF_XDP transmission needs none, so its interface's kernel stack is
//! untouched.
//!
//! ## Bind mode
//! [`ZeroCopy::Auto`] tries zero-copy (driver-mode XDP) and falls back to copy
//! mode with generic (SKB) XDP, which is what a veth gives; the mode is
//! printed once to stderr and returned by `bind_mode()`. In copy mode nothing
//! drives transmission but a `sendto` kick, made after every TX batch (and
//! repeated while the kernel reports that its per-call budget ran out).
//!
//! ## Privileges
//! Root (CAP_NET_RAW + CAP_NET_ADMIN + CAP_BPF). Every failure to set up says
//! what is missing: privileges, AF_XDP in the kernel, the interface, a free queue.
//!
//! ## Limits
//! One [`RxSteering::FeedPort`] subscriber per interface: the kernel takes
//! one XDP program per interface, and each subscriber attaches its own (a
//! second one on another queue of the same NIC fails with "another XDP
//! program is attached"). Frames to the feed port for another group are
//! steered to the socket too and counted as `not_ours`.
//!
//! ## Run loop
//! ```no_run
//! use std::net::{Ipv4Addr, SocketAddrV4};
//! use std::time::Duration;
//! use tickwire_transports::xdp::{XdpConfig, XdpPublisher, XdpSubscriber};
//! use tickwire_transports::{Publisher, SubEvent, Subscriber};
//!
//! let feed = SocketAddrV4::new(Ipv4Addr::new(239, 1, 1, 1), 17001);
//! let requests = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 17002);
//! // Server side (in the namespace that owns `veth0`):
//! let mut publisher = XdpPublisher::new(&XdpConfig::publisher("veth0", feed, requests))?;
//! let packet = [0u8; 40]; // an encoded Tickwire packet
//! publisher.publish(&packet)?; // batched: goes out with the batch or on flush/poll
//! publisher.flush()?;
//! publisher.poll(Some(Duration::from_millis(1)), &mut |request| {
//!     // PubEvent::Request { peer, packet }: answer with publisher.send_to(peer, ..)
//!     let _ = request;
//! })?;
//! // Client side (in the namespace that owns `veth1`):
//! let mut subscriber = XdpSubscriber::new(&XdpConfig::subscriber("veth1", feed, requests))?;
//! subscriber.poll(Some(Duration::from_millis(1)), &mut |event| {
//!     if let SubEvent::Packet { line, packet, .. } = event {
//!         let _ = (line, packet); // Line::A: the feed; Line::Unicast: recovery replies
//!     }
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

#![allow(unsafe_code)]

pub mod frame;
mod prog;
mod publisher;
mod subscriber;
mod sys;
mod xsk;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

pub use publisher::{XdpPubStats, XdpPublisher, peer_addr, peer_id};
pub use subscriber::{XdpSubStats, XdpSubscriber};
pub use xsk::{BIND_RETRY_ATTEMPTS, BIND_RETRY_FIRST_DELAY};

/// Whether to bind in zero-copy mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ZeroCopy {
    /// Try zero-copy, fall back to copy mode (and generic XDP) if the driver refuses.
    #[default]
    Auto,
    /// Zero-copy or an error.
    Always,
    /// Copy mode with generic (SKB) XDP.
    Never,
}

/// How the XDP program (if any) is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpAttach {
    /// No program (a transmit-only socket).
    None,
    /// Native, in the driver.
    Driver,
    /// Generic, on the socket buffer path (works on any device).
    Skb,
}

/// The mode a socket was bound in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BindMode {
    /// Zero-copy (the NIC DMAs into the UMEM) or copy.
    pub zero_copy: bool,
    /// How the steering program is attached.
    pub attach: XdpAttach,
}

impl fmt::Display for BindMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let copy = if self.zero_copy { "zero-copy mode" } else { "copy mode" };
        match self.attach {
            XdpAttach::None => write!(f, "{copy}, no XDP program (transmit only)"),
            XdpAttach::Driver => write!(f, "{copy}, native (driver) XDP"),
            XdpAttach::Skb => write!(f, "{copy}, generic (SKB) XDP"),
        }
    }
}

/// Which received frames the subscriber's XDP program sends to its socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RxSteering {
    /// The transport's own program: IPv4/UDP to the feed port goes to the
    /// socket, everything else to the kernel.
    #[default]
    FeedPort,
    /// libxdp's default program: every frame of the queue goes to the socket
    /// (neighbours must be static; see the module doc).
    LibxdpDefault,
}

/// Frames in a UMEM by default: twice [`DEFAULT_RING_SIZE`], so the fill ring
/// can be kept full while a full RX ring's worth of frames is being read.
pub const DEFAULT_FRAME_COUNT: u32 = 4096;
/// UMEM frame size: the smallest the kernel accepts (2048), which holds a
/// 1500-byte MTU frame after the 256 bytes of XDP headroom.
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Entries in each of the four rings: libxdp's default.
pub const DEFAULT_RING_SIZE: u32 = 2048;
/// RX (and fill) ring entries of a subscriber: four times [`DEFAULT_RING_SIZE`].
/// A descheduled client must not lose the feed: at 500k msgs/s (about 20k
/// frames/s) 8192 frames ride out some 400 ms, more than the multicast
/// transport's 8 MiB socket buffer (about 3,500 datagrams). With 2048 the RX
/// ring overflowed (`rx_ring_full`) on the loaded 2-vCPU test machine while a
/// kernel multicast socket beside it lost nothing.
pub const DEFAULT_SUB_RING_SIZE: u32 = 8192;
/// UMEM frames of a subscriber: twice [`DEFAULT_SUB_RING_SIZE`] (as
/// [`DEFAULT_FRAME_COUNT`] is twice [`DEFAULT_RING_SIZE`]), 32 MiB of 2 KiB frames.
pub const DEFAULT_SUB_FRAME_COUNT: u32 = 2 * DEFAULT_SUB_RING_SIZE;
/// Frames per TX submission and RX read. 32 is the kernel's per-`sendto`
/// budget in copy mode (`TX_BATCH_SIZE`), so one kick sends one batch.
pub const DEFAULT_BATCH: usize = 32;
/// IPv4 TTL of emitted frames: Linux's default for unicast. A multicast feed
/// that must not cross a router sets 1.
pub const DEFAULT_TTL: u8 = 64;
/// `SO_BUSY_POLL` microseconds when busy polling is on (the value the kernel's
/// AF_XDP sample uses).
pub const DEFAULT_BUSY_POLL_USECS: u32 = 20;
/// `SO_BUSY_POLL_BUDGET` when busy polling is on: one RX batch per round
/// would be too few for NAPI; 64 is NAPI's own weight.
pub const DEFAULT_BUSY_POLL_BUDGET: u32 = 64;

/// Configuration of an AF_XDP publisher or subscriber.
///
/// Publisher: sends feed frames from `src_ip:src_port` (the request port
/// unless set) to `dst` (a unicast peer or a multicast group) and answers
/// requests on a kernel UDP socket bound to `request`.
///
/// Subscriber: accepts feed frames to `listen_port` addressed to `dst`'s IP
/// when it is a multicast group (the subscriber joins it), or else to its own
/// IP; sends requests to `request` from a kernel UDP socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpConfig {
    /// Interface to bind (in the calling thread's network namespace).
    pub ifname: String,
    /// Queue of the interface (a veth has only queue 0).
    pub queue: u32,
    /// Source IPv4 address; `None`: the interface's first address.
    pub src_ip: Option<Ipv4Addr>,
    /// Source MAC; `None`: the interface's.
    pub src_mac: Option<[u8; 6]>,
    /// Publisher: where feed frames go. Subscriber: the feed address (group or own).
    pub dst: SocketAddrV4,
    /// Publisher: the next hop's MAC. `None`: derived for a multicast group
    /// (01:00:5e:..), looked up in the kernel's neighbour table for unicast.
    pub dst_mac: Option<[u8; 6]>,
    /// UDP source port of feed frames; 0 (the default): the port the
    /// recovery service's socket is bound to, which subscribers expect the
    /// feed from (docs/PROTOCOL.md § 10).
    pub src_port: u16,
    /// Subscriber: UDP port feed frames are accepted on (and steered by the program).
    pub listen_port: u16,
    /// The recovery service's kernel UDP address: the publisher binds it, the
    /// subscriber sends requests to it.
    pub request: SocketAddrV4,
    /// Frames in the UMEM.
    pub frame_count: u32,
    /// Bytes per UMEM frame (a power of two, at least 2048).
    pub frame_size: u32,
    /// Entries in each ring (a power of two).
    pub ring_size: u32,
    /// Frames per TX submission / RX read.
    pub batch: usize,
    /// IPv4 TTL of emitted frames.
    pub ttl: u8,
    /// Set SO_PREFER_BUSY_POLL / SO_BUSY_POLL / SO_BUSY_POLL_BUDGET on the socket.
    pub busy_poll: bool,
    /// SO_BUSY_POLL microseconds.
    pub busy_poll_usecs: u32,
    /// SO_BUSY_POLL_BUDGET packets.
    pub busy_poll_budget: u32,
    /// Zero-copy policy.
    pub zero_copy: ZeroCopy,
    /// Subscriber: which frames the XDP program steers to the socket.
    pub steering: RxSteering,
}

impl XdpConfig {
    /// A publisher sending to `dst` and serving requests on `request`; defaults elsewhere.
    pub fn publisher(ifname: &str, dst: SocketAddrV4, request: SocketAddrV4) -> XdpConfig {
        XdpConfig::with_defaults(ifname, dst, request)
    }

    /// A subscriber to the feed at `feed` (a group, or its own IP) sending
    /// requests to `request`; defaults elsewhere.
    /// Its rings are deeper than a publisher's ([`DEFAULT_SUB_RING_SIZE`]).
    pub fn subscriber(ifname: &str, feed: SocketAddrV4, request: SocketAddrV4) -> XdpConfig {
        XdpConfig {
            ring_size: DEFAULT_SUB_RING_SIZE,
            frame_count: DEFAULT_SUB_FRAME_COUNT,
            ..XdpConfig::with_defaults(ifname, feed, request)
        }
    }

    fn with_defaults(ifname: &str, dst: SocketAddrV4, request: SocketAddrV4) -> XdpConfig {
        XdpConfig {
            ifname: ifname.to_string(),
            queue: 0,
            src_ip: None,
            src_mac: None,
            dst,
            dst_mac: None,
            src_port: 0,
            listen_port: dst.port(),
            request,
            frame_count: DEFAULT_FRAME_COUNT,
            frame_size: DEFAULT_FRAME_SIZE,
            ring_size: DEFAULT_RING_SIZE,
            batch: DEFAULT_BATCH,
            ttl: DEFAULT_TTL,
            busy_poll: false,
            busy_poll_usecs: DEFAULT_BUSY_POLL_USECS,
            busy_poll_budget: DEFAULT_BUSY_POLL_BUDGET,
            zero_copy: ZeroCopy::Auto,
            steering: RxSteering::FeedPort,
        }
    }
}
