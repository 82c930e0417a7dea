//! Choosing and building a transport from command-line style options: the one
//! place that knows every transport, so the binaries stay thin.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

use crate::lossy::{LossConfig, Lossy};
use crate::{Publisher, Subscriber};

/// Which transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransportKind {
    /// Kernel TCP, edge-triggered epoll (mio); O(N) fan-out; in-band resume.
    Tcp,
    /// Kernel UDP multicast; O(1) fan-out; unicast NACK + snapshot service.
    Multicast,
    /// AF_XDP sockets; O(1) fan-out; same recovery service as multicast.
    Xdp,
}

impl FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp" => Ok(TransportKind::Tcp),
            "multicast" | "mcast" | "udp" => Ok(TransportKind::Multicast),
            "xdp" | "af_xdp" => Ok(TransportKind::Xdp),
            other => Err(format!("unknown transport {other:?}: use tcp, multicast or xdp")),
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Multicast => "multicast",
            TransportKind::Xdp => "xdp",
        })
    }
}

/// Everything needed to build either side of any transport.
#[derive(Clone, Debug)]
pub struct TransportOptions {
    /// Which transport.
    pub kind: TransportKind,
    /// TCP: the address the server listens on / the client connects to.
    /// Multicast and xdp: the server's unicast request (recovery) address.
    pub addr: SocketAddr,
    /// Multicast / xdp: feed line A's group.
    pub group_a: SocketAddrV4,
    /// Multicast: optional line B group (A/B feeds).
    pub group_b: Option<SocketAddrV4>,
    /// Multicast: the interface address to send and join on.
    pub interface: Ipv4Addr,
    /// Xdp: the network interface name.
    pub ifname: Option<String>,
    /// Largest packet.
    pub max_packet_len: usize,
    /// Seeded in-process loss (a [`Lossy`] wrapper) when either rate is nonzero.
    pub loss: LossConfig,
}

/// Build the server side.
pub fn build_publisher(opts: &TransportOptions) -> io::Result<Box<dyn Publisher>> {
    let inner: Box<dyn Publisher> = match opts.kind {
        TransportKind::Tcp => Box::new(crate::tcp::TcpPublisher::bind(
            opts.addr,
            crate::tcp::TcpPublisherConfig {
                max_packet_len: opts.max_packet_len,
                ..Default::default()
            },
        )?),
        TransportKind::Multicast => Box::new(crate::multicast::MulticastPublisher::new(
            multicast_config(opts)?,
        )?),
        TransportKind::Xdp => return Err(xdp_unavailable()),
    };
    Ok(wrap_pub(inner, &opts.loss))
}

/// Build the client side.
pub fn build_subscriber(opts: &TransportOptions) -> io::Result<Box<dyn Subscriber>> {
    let inner: Box<dyn Subscriber> = match opts.kind {
        TransportKind::Tcp => Box::new(crate::tcp::TcpSubscriber::connect(
            opts.addr,
            crate::tcp::TcpSubscriberConfig {
                max_packet_len: opts.max_packet_len,
                ..Default::default()
            },
        )?),
        TransportKind::Multicast => Box::new(crate::multicast::MulticastSubscriber::new(
            multicast_config(opts)?,
        )?),
        TransportKind::Xdp => return Err(xdp_unavailable()),
    };
    Ok(wrap_sub(inner, &opts.loss))
}

fn wrap_pub(inner: Box<dyn Publisher>, loss: &LossConfig) -> Box<dyn Publisher> {
    if loss.tx_drop > 0.0 || loss.rx_drop > 0.0 {
        Box::new(Lossy::new(inner, *loss))
    } else {
        inner
    }
}

fn wrap_sub(inner: Box<dyn Subscriber>, loss: &LossConfig) -> Box<dyn Subscriber> {
    if loss.tx_drop > 0.0 || loss.rx_drop > 0.0 {
        Box::new(Lossy::new(inner, *loss))
    } else {
        inner
    }
}

fn multicast_config(opts: &TransportOptions) -> io::Result<crate::multicast::MulticastConfig> {
    let SocketAddr::V4(request_addr) = opts.addr else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "multicast needs an IPv4 request address",
        ));
    };
    Ok(crate::multicast::MulticastConfig {
        group_a: opts.group_a,
        group_b: opts.group_b,
        interface: opts.interface,
        request_addr,
        max_packet_len: opts.max_packet_len,
        ..Default::default()
    })
}

fn xdp_unavailable() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the xdp transport is not built into this binary (build with --features xdp)",
    )
}

/// Parse a duration flag: `10s`, `500ms`, `250us`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("bad duration {s:?}: use e.g. 10s, 500ms"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "ns" => value / 1e9,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ns, us, ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!("tcp".parse(), Ok(TransportKind::Tcp));
        assert_eq!("multicast".parse(), Ok(TransportKind::Multicast));
        assert_eq!("xdp".parse(), Ok(TransportKind::Xdp));
        assert!("carrier-pigeon".parse::<TransportKind>().is_err());
    }
}
