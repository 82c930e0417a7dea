//! [`MulticastConfig`]: the values both sides of the multicast transport
//! share, their defaults and bounds, and how a requester's address is its
//! [`PeerId`].

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use tickwire_core::wire::{DEFAULT_MAX_PACKET, HEADER_LEN};

use crate::PeerId;

#[allow(unused_imports)] // for doc links
use super::MulticastPublisher;

/// Default `sendmmsg`/`recvmmsg` batch: 32 packets amortise the system call
/// (about 1 µs) to a few tens of ns per packet while keeping a batch of
/// 1472-byte packets (47 KiB) well inside the L2 cache.
pub const DEFAULT_BATCH: usize = 32;

/// A packet at most this many bytes shorter than `max_packet_len` is padded
/// to it so that it can be a segment of a GSO send (every segment but the
/// last must have the segment size): at most 64 bytes, 4.3 % of a 1472-byte
/// datagram, and more than one Quote (48 B), so a packet that the sequencer
/// closed because the next message did not fit always qualifies.
pub const GSO_PAD_MAX: usize = 64;

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

/// Configuration of a multicast publisher or subscriber (both sides use the
/// same values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MulticastConfig {
    /// Feed line A: a multicast group and port, e.g. `239.255.0.1:30001`.
    pub group_a: SocketAddrV4,
    /// Feed line B (A/B feeds): the same packets are published on both.
    pub group_b: Option<SocketAddrV4>,
    /// The local interface address: the source address of the feed, and
    /// (unless [`Self::ifname`] names the interface) `IP_MULTICAST_IF` for
    /// sending and the join interface for receiving; `127.0.0.1` for
    /// loopback. May be `0.0.0.0` when `ifname` is set: the kernel then
    /// takes that interface's own address.
    pub interface: Ipv4Addr,
    /// The network interface by name (`eth0`): when set, sends
    /// (`IP_MULTICAST_IF`) and joins (`IP_ADD_MEMBERSHIP`) use its index, so
    /// the choice does not depend on which interface holds `interface` or on
    /// the routing table.
    pub ifname: Option<String>,
    /// Multicast TTL, 0..=[`MAX_TTL`]: each router on the way takes 1, so 1
    /// keeps the feed on this subnet and crossing N routers takes N + 1.
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
    /// Publishers: send runs of full packets ready together with UDP GSO
    /// (one `sendmsg` per run, the kernel cuts the datagrams). Packets within
    /// [`GSO_PAD_MAX`] bytes of `max_packet_len` are padded to it (padding
    /// after the payload is allowed: docs/PROTOCOL.md § 10). A kernel or
    /// interface that refuses it is detected (at start: the socket option;
    /// at the first send: the error) and the batch goes out by `sendmmsg`,
    /// said once on stderr and counted.
    pub gso: bool,
    /// Subscribers: let the kernel merge received feed datagrams (UDP GRO);
    /// each merged receive is split into its packets in place. Off where
    /// the kernel refuses the option (said once).
    pub gro: bool,
    /// Subscribers: where the feed must come from. Given, the groups are
    /// joined source-specifically (`IP_ADD_SOURCE_MEMBERSHIP`, so the network
    /// does not even deliver other senders' traffic for them); in any case a
    /// datagram on a feed line from any other address or port is counted in
    /// [`crate::SubStats::wrong_source`] and dropped. The port, when not
    /// given, is `request_addr`'s: the publisher sends its feed from the
    /// recovery service's port. `None`: the feed must come from
    /// `request_addr` itself.
    pub source: Option<FeedSource>,
}

/// The address (and, optionally, the port) a subscriber takes the feed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedSource {
    /// The publisher's address: its `--interface`.
    pub addr: Ipv4Addr,
    /// Its port; `None`: the recovery service's port, which the publisher
    /// sends its feed from.
    pub port: Option<u16>,
}

impl FeedSource {
    /// `addr` or `addr:port`.
    pub fn text(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.addr),
            None => self.addr.to_string(),
        }
    }

    /// Whether a datagram from `from` is from this source.
    pub fn admits(&self, from: Option<SocketAddrV4>) -> bool {
        from.is_some_and(|f| *f.ip() == self.addr && self.port.is_none_or(|p| p == f.port()))
    }
}

impl std::str::FromStr for FeedSource {
    type Err = String;
    /// `IP` or `IP:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddrV4>() {
            return Ok(FeedSource { addr: *a.ip(), port: Some(a.port()) });
        }
        s.parse::<Ipv4Addr>()
            .map(|addr| FeedSource { addr, port: None })
            .map_err(|_| format!("{s:?} is not an IPv4 address or IPv4 address:port"))
    }
}

/// Largest multicast TTL: the IPv4 header's TTL is one byte.
pub const MAX_TTL: u32 = 255;

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
            ifname: None,
            source: None,
            ttl: 1,
            loopback: true,
            request_addr,
            send_buffer: DEFAULT_SOCKET_BUFFER,
            recv_buffer: DEFAULT_SOCKET_BUFFER,
            max_packet_len: DEFAULT_MAX_PACKET,
            batch: DEFAULT_BATCH,
            gso: true,
            gro: true,
        }
    }

    /// [`Self::new`] on the loopback interface (127.0.0.1).
    pub fn loopback(group_a: SocketAddrV4, request_addr: SocketAddrV4) -> Self {
        MulticastConfig::new(group_a, Ipv4Addr::LOCALHOST, request_addr)
    }

    pub(super) fn validate(&self) -> io::Result<()> {
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
        if self.ttl > MAX_TTL {
            return bad(format!("ttl {} outside 0..={MAX_TTL}", self.ttl));
        }
        if let Some(name) = &self.ifname
            && (name.is_empty() || name.len() > 15)
        {
            return bad(format!("{name:?} is not a network interface name (1 to 15 bytes)"));
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(format!("batch {} outside 1..={MAX_BATCH}", self.batch));
        }
        Ok(())
    }

    /// The interface as error messages name it: `interface eth0`,
    /// `interface eth0 (10.77.0.1)` or `interface 10.77.0.1`.
    pub(super) fn interface_text(&self) -> String {
        match &self.ifname {
            Some(n) if self.interface.is_unspecified() => format!("interface {n}"),
            Some(n) => format!("interface {n} ({})", self.interface),
            None => format!("interface {}", self.interface),
        }
    }

    /// The index of [`Self::ifname`], if set (an error naming it if there is
    /// no such interface).
    pub(super) fn ifindex(&self) -> io::Result<Option<u32>> {
        self.ifname.as_deref().map(super::sys::ifindex).transpose()
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
        let ttl = MulticastConfig { ttl: MAX_TTL + 1, ..MulticastConfig::loopback(g, r) };
        assert!(ttl.validate().unwrap_err().to_string().contains("ttl 256"));
        let long = "x".repeat(16);
        let name = MulticastConfig { ifname: Some(long), ..MulticastConfig::loopback(g, r) };
        assert!(name.validate().is_err());
    }

    #[test]
    fn the_interface_is_named_as_given() {
        let g = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 30001);
        let r = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);
        let by_addr = MulticastConfig::loopback(g, r);
        assert_eq!(by_addr.interface_text(), "interface 127.0.0.1");
        assert_eq!(by_addr.ifindex().unwrap(), None);
        let both = MulticastConfig { ifname: Some("lo".into()), ..by_addr.clone() };
        assert_eq!(both.interface_text(), "interface lo (127.0.0.1)");
        assert!(both.ifindex().unwrap().is_some());
        let name = MulticastConfig { interface: Ipv4Addr::UNSPECIFIED, ..both };
        assert_eq!(name.interface_text(), "interface lo");
        let missing = MulticastConfig { ifname: Some("tw-nope9".into()), ..name };
        assert!(missing.ifindex().unwrap_err().to_string().contains("tw-nope9"));
    }
}
