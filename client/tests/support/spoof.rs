//! Datagrams with a forged source port: what an attacker on the path (or
//! any host that does not filter its egress) can send, and an ordinary
//! socket cannot, since the publisher holds its port. A raw socket
//! (`CAP_NET_RAW`) writes the UDP header itself; the kernel adds the IP
//! header with the address the socket is bound to.

use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};

/// Sends UDP datagrams from `from` to multicast groups over loopback.
#[derive(Debug)]
pub struct Spoofer {
    sock: Socket,
    from: SocketAddrV4,
}

impl Spoofer {
    /// A spoofer sending as `from`, or the reason it cannot be made here
    /// (raw sockets need `CAP_NET_RAW`).
    pub fn new(from: SocketAddrV4) -> Result<Spoofer, String> {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))
            .map_err(|e| format!("a raw socket (needs CAP_NET_RAW, i.e. root): {e}"))?;
        sock.bind(&SocketAddrV4::new(*from.ip(), 0).into()).map_err(|e| e.to_string())?;
        sock.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).map_err(|e| e.to_string())?;
        sock.set_multicast_loop_v4(true).map_err(|e| e.to_string())?;
        sock.set_multicast_ttl_v4(0).map_err(|e| e.to_string())?;
        Ok(Spoofer { sock, from })
    }

    /// Send `payload` to `to` as a UDP datagram from `from` (no checksum,
    /// which IPv4 allows).
    pub fn send(&self, payload: &[u8], to: SocketAddrV4) -> std::io::Result<()> {
        let len = u16::try_from(8 + payload.len()).expect("a datagram");
        let mut d = Vec::with_capacity(len as usize);
        d.extend_from_slice(&self.from.port().to_be_bytes());
        d.extend_from_slice(&to.port().to_be_bytes());
        d.extend_from_slice(&len.to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(payload);
        // The port of a raw socket's destination is ignored (the protocol
        // is the socket's); the UDP header above carries it.
        self.sock.send_to(&d, &SocketAddrV4::new(*to.ip(), 0).into()).map(|_| ())
    }
}
