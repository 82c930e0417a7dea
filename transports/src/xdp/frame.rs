//! Ethernet / IPv4 / UDP framing for AF_XDP, with `smoltcp::wire`.
//!
//! AF_XDP moves raw Ethernet frames, so the transport writes and checks the
//! headers the kernel would otherwise handle. Emit writes the headers in front
//! of a payload that is already in place (the publisher's `fill` writes the
//! Tickwire packet straight into the UMEM frame at [`HEADERS_LEN`]); parse
//! checks every layer and says why a frame is not a UDP datagram for us.
//!
//! Checksums: the IPv4 and UDP checksums are always filled on send and verified
//! on receive. A UDP datagram that the kernel sent over a veth with checksum
//! offload on carries a *partial* checksum (the pseudo-header sum only, the
//! device was meant to finish it): it is accepted when the IPv4 header checksum
//! is valid, and reported as [`UdpChecksum::Partial`] so the caller counts it.
//! A zero UDP checksum (none computed, legal over IPv4) is accepted the same way
//! and reported as [`UdpChecksum::Absent`]. The Tickwire CRC32C still covers the
//! payload end to end in both cases.

use std::net::{Ipv4Addr, SocketAddrV4};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr,
};

/// Ethernet header without VLAN tag.
pub const ETH_HEADER_LEN: usize = 14;
/// IPv4 header without options (the transport never emits options).
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Bytes in front of the payload in every frame the transport emits.
pub const HEADERS_LEN: usize = ETH_HEADER_LEN + IPV4_HEADER_LEN + UDP_HEADER_LEN;

/// Addresses written into every emitted frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpEndpoints {
    /// Source MAC (the interface's).
    pub src_mac: [u8; 6],
    /// Destination MAC (the peer's, or the group's 01:00:5e:.. address).
    pub dst_mac: [u8; 6],
    /// Source IPv4 address and UDP port.
    pub src: SocketAddrV4,
    /// Destination IPv4 address (unicast or group) and UDP port.
    pub dst: SocketAddrV4,
    /// IPv4 time to live.
    pub ttl: u8,
}

/// The Ethernet address an IPv4 multicast group maps to (RFC 1112 §6.4):
/// 01:00:5e followed by the low 23 bits of the group.
pub fn multicast_mac(group: Ipv4Addr) -> [u8; 6] {
    let o = group.octets();
    [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
}

/// Write the Ethernet, IPv4 and UDP headers into `buf[..HEADERS_LEN]` for a
/// payload of `payload_len` bytes already at `buf[HEADERS_LEN..]`, with both
/// checksums filled. Returns the frame's length.
///
/// `buf` must hold `HEADERS_LEN + payload_len` bytes and `HEADERS_LEN +
/// payload_len` must fit an IPv4 datagram; the caller (which sized its frames)
/// guarantees both.
pub fn emit_udp_frame(ep: &UdpEndpoints, buf: &mut [u8], payload_len: usize) -> usize {
    let total = HEADERS_LEN + payload_len;
    let caps = ChecksumCapabilities::default();
    let frame_buf = &mut buf[..total];

    let mut eth = EthernetFrame::new_unchecked(&mut frame_buf[..]);
    EthernetRepr {
        src_addr: EthernetAddress(ep.src_mac),
        dst_addr: EthernetAddress(ep.dst_mac),
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);

    let ip_repr = Ipv4Repr {
        src_addr: *ep.src.ip(),
        dst_addr: *ep.dst.ip(),
        next_header: IpProtocol::Udp,
        payload_len: UDP_HEADER_LEN + payload_len,
        hop_limit: ep.ttl,
    };
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    ip_repr.emit(&mut ip, &caps);

    let mut udp = UdpPacket::new_unchecked(ip.payload_mut());
    UdpRepr { src_port: ep.src.port(), dst_port: ep.dst.port() }.emit(
        &mut udp,
        &IpAddress::Ipv4(*ep.src.ip()),
        &IpAddress::Ipv4(*ep.dst.ip()),
        payload_len,
        // The payload is already in place: nothing to copy.
        |_| {},
        &caps,
    );
    total
}

/// How a received datagram's UDP checksum was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpChecksum {
    /// A complete checksum that verifies.
    Valid,
    /// Zero: the sender computed none (allowed over IPv4).
    Absent,
    /// The pseudo-header sum only: sent by a kernel that left the checksum to an
    /// offload that a veth never performs.
    Partial,
}

/// A UDP datagram found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The UDP payload (exactly the UDP length field's worth).
    pub payload: &'a [u8],
    /// How its checksum was found.
    pub checksum: UdpChecksum,
}

/// Why a frame is not a UDP datagram. Every case is counted by the subscriber.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameDrop {
    /// Not IPv4 (ARP, IPv6, LLDP...).
    NotIpv4,
    /// IPv4 but not UDP (ICMP, IGMP, TCP...).
    NotUdp,
    /// A length field disagrees with the frame, or a header is cut short.
    Malformed,
    /// The IPv4 header checksum is wrong.
    BadIpChecksum,
    /// A fragment (the transport never fragments: its packets fit the MTU).
    Fragment,
    /// The UDP checksum is wrong (and is neither absent nor partial).
    BadUdpChecksum,
}

/// Parse a received Ethernet frame down to its UDP payload, verifying both
/// checksums (see the module doc for the partial-checksum rule). Never panics.
pub fn parse_udp_frame(frame: &[u8]) -> Result<UdpDatagram<'_>, FrameDrop> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| FrameDrop::Malformed)?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Err(FrameDrop::NotIpv4);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| FrameDrop::Malformed)?;
    if ip.version() != 4 {
        return Err(FrameDrop::Malformed);
    }
    if !ip.verify_checksum() {
        return Err(FrameDrop::BadIpChecksum);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(FrameDrop::Fragment);
    }
    // Checksum verified above; fragments rejected above.
    let ip_repr =
        Ipv4Repr::parse(&ip, &ChecksumCapabilities::ignored()).map_err(|_| FrameDrop::Malformed)?;
    if ip_repr.next_header != IpProtocol::Udp {
        return Err(FrameDrop::NotUdp);
    }
    let src_ip = ip_repr.src_addr;
    let dst_ip = ip_repr.dst_addr;
    let udp = UdpPacket::new_checked(ip.payload()).map_err(|_| FrameDrop::Malformed)?;
    let (src, dst) = (IpAddress::Ipv4(src_ip), IpAddress::Ipv4(dst_ip));
    let checksum = if udp.checksum() == 0 {
        UdpChecksum::Absent
    } else if udp.verify_checksum(&src, &dst) {
        UdpChecksum::Valid
    } else if udp.verify_partial_checksum(&src, &dst) {
        UdpChecksum::Partial
    } else {
        return Err(FrameDrop::BadUdpChecksum);
    };
    let repr = UdpRepr::parse(&udp, &src, &dst, &ChecksumCapabilities::ignored())
        .map_err(|_| FrameDrop::Malformed)?;
    Ok(UdpDatagram {
        src: SocketAddrV4::new(src_ip, repr.src_port),
        dst: SocketAddrV4::new(dst_ip, repr.dst_port),
        payload: udp.payload(),
        checksum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints() -> UdpEndpoints {
        UdpEndpoints {
            src_mac: [0x02, 0, 0, 0, 0, 1],
            dst_mac: [0x02, 0, 0, 0, 0, 2],
            src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 4000),
            dst: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 5000),
            ttl: 64,
        }
    }

    /// The frame `emit_udp_frame` writes for `endpoints()` and payload "tick".
    /// Checksums computed by hand: IPv4 0x26cb, UDP 0xf0d6 (see `fixture_checksums`).
    static FRAME_BYTES: [u8; 46] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst mac
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src mac
        0x08, 0x00, // IPv4
        0x45, 0x00, 0x00, 0x20, // v4, ihl 5, tos 0, total length 32
        0x00, 0x00, 0x40, 0x00, // id 0, DF
        0x40, 0x11, 0x26, 0xcb, // ttl 64, UDP, header checksum
        0x0a, 0x00, 0x00, 0x01, // src 10.0.0.1
        0x0a, 0x00, 0x00, 0x02, // dst 10.0.0.2
        0x0f, 0xa0, 0x13, 0x88, // ports 4000 -> 5000
        0x00, 0x0c, 0xf0, 0xd6, // length 12, checksum
        b't', b'i', b'c', b'k',
    ];

    fn emitted() -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        buf[HEADERS_LEN..HEADERS_LEN + 4].copy_from_slice(b"tick");
        let n = emit_udp_frame(&endpoints(), &mut buf, 4);
        buf.truncate(n);
        buf
    }

    /// Independent RFC 1071 sum, to check the fixture's checksums by another route.
    fn ones_complement_sum(chunks: &[&[u8]]) -> u16 {
        let mut sum: u32 = 0;
        for c in chunks {
            for pair in c.chunks(2) {
                let w = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                sum += u32::from(w);
            }
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn fixture_checksums() {
        let mut ip = FRAME_BYTES[14..34].to_vec();
        ip[10] = 0;
        ip[11] = 0;
        assert_eq!(ones_complement_sum(&[&ip]), 0x26cb);
        let pseudo = [10, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12];
        let mut udp = FRAME_BYTES[34..].to_vec();
        udp[6] = 0;
        udp[7] = 0;
        assert_eq!(ones_complement_sum(&[&pseudo, &udp]), 0xf0d6);
    }

    #[test]
    fn emit_matches_fixture() {
        assert_eq!(emitted(), FRAME_BYTES);
    }

    #[test]
    fn parse_fixture() {
        let d = parse_udp_frame(&FRAME_BYTES).unwrap();
        assert_eq!(d.src, endpoints().src);
        assert_eq!(d.dst, endpoints().dst);
        assert_eq!(d.payload, b"tick");
        assert_eq!(d.checksum, UdpChecksum::Valid);
    }

    #[test]
    fn parse_ignores_ethernet_padding() {
        // Frames shorter than 60 bytes are padded on the wire; the IPv4 length rules.
        let mut f = FRAME_BYTES.to_vec();
        f.resize(60, 0xee);
        assert_eq!(parse_udp_frame(&f).unwrap().payload, b"tick");
    }

    #[test]
    fn every_truncation_is_malformed_not_a_panic() {
        for n in 0..FRAME_BYTES.len() {
            let r = parse_udp_frame(&FRAME_BYTES[..n]);
            assert_eq!(r, Err(FrameDrop::Malformed), "length {n}");
        }
    }

    #[test]
    fn corrupt_payload_fails_udp_checksum() {
        let mut f = FRAME_BYTES;
        f[43] ^= 0x01;
        assert_eq!(parse_udp_frame(&f), Err(FrameDrop::BadUdpChecksum));
    }

    #[test]
    fn corrupt_ip_header_fails_ip_checksum() {
        let mut f = FRAME_BYTES;
        f[22] = 63; // ttl
        assert_eq!(parse_udp_frame(&f), Err(FrameDrop::BadIpChecksum));
    }

    #[test]
    fn absent_and_partial_udp_checksums_are_accepted_and_reported() {
        let mut f = FRAME_BYTES;
        f[40] = 0;
        f[41] = 0;
        assert_eq!(parse_udp_frame(&f).unwrap().checksum, UdpChecksum::Absent);
        // The kernel's CHECKSUM_PARTIAL leaves the folded pseudo-header sum
        // (not complemented) in the field.
        let pseudo = [10u8, 0, 0, 1, 10, 0, 0, 2, 0, 17, 0, 12];
        let partial = !ones_complement_sum(&[&pseudo]);
        f[40..42].copy_from_slice(&partial.to_be_bytes());
        let d = parse_udp_frame(&f).unwrap();
        assert_eq!(d.checksum, UdpChecksum::Partial);
        assert_eq!(d.payload, b"tick");
    }

    #[test]
    fn non_udp_and_non_ipv4_are_named() {
        let mut arp = FRAME_BYTES;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(parse_udp_frame(&arp), Err(FrameDrop::NotIpv4));

        let mut icmp = FRAME_BYTES;
        icmp[23] = 1;
        // Fix the IPv4 checksum so only the protocol differs.
        icmp[24] = 0;
        icmp[25] = 0;
        let c = ones_complement_sum(&[&icmp[14..34]]);
        icmp[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_udp_frame(&icmp), Err(FrameDrop::NotUdp));
    }

    #[test]
    fn fragments_are_rejected() {
        let mut f = FRAME_BYTES;
        f[20] = 0x20; // MF, DF cleared
        f[24] = 0;
        f[25] = 0;
        let c = ones_complement_sum(&[&f[14..34]]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(parse_udp_frame(&f), Err(FrameDrop::Fragment));
    }

    #[test]
    fn udp_length_past_the_ip_payload_is_malformed() {
        let mut f = FRAME_BYTES;
        f[38..40].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(parse_udp_frame(&f), Err(FrameDrop::Malformed));
    }

    #[test]
    fn multicast_mac_keeps_low_23_bits() {
        assert_eq!(multicast_mac(Ipv4Addr::new(239, 1, 2, 3)), [1, 0, 0x5e, 1, 2, 3]);
        assert_eq!(multicast_mac(Ipv4Addr::new(224, 129, 2, 3)), [1, 0, 0x5e, 1, 2, 3]);
    }
}
