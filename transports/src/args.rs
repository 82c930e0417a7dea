//! The transport flags both binaries take, as one clap struct
//! ([`TransportArgs`]) that `server` and `client` flatten into their own
//! arguments with `#[command(flatten)]`: the flag names, defaults, help and
//! checks live here once.
//!
//! Flags whose meaning differs between the sides stay in each binary: the
//! address (`--listen` on the server, `--connect` on the client), the
//! `--max-packet` bounds, the direction of `--drop-rate`, and `--ttl`, which
//! only a publisher has.
//!
//! ```
//! use clap::Parser;
//! use tickwire_transports::args::TransportArgs;
//!
//! #[derive(Parser)]
//! struct Args {
//!     #[command(flatten)]
//!     transport: TransportArgs,
//! }
//!
//! let a = Args::parse_from(["server", "--transport", "multicast", "--ifname", "eth0"]);
//! assert_eq!(a.transport.group.to_string(), "239.255.0.1:30001");
//! // With --ifname and no --interface, the interface's own address is used.
//! assert!(a.transport.interface_addr().is_unspecified());
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::lossy::LossConfig;
use crate::select::{TransportKind, TransportOptions, parse_ifname};

/// `--interface` when neither it nor `--ifname` is given: loopback.
pub const DEFAULT_INTERFACE: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// The transport flags shared by `server` and `client`.
#[derive(Clone, Debug, clap::Args)]
pub struct TransportArgs {
    /// Transport: tcp, multicast or xdp.
    #[arg(long, default_value = "tcp")]
    pub transport: TransportKind,
    /// Multicast group of feed line A.
    #[arg(long, default_value = "239.255.0.1:30001")]
    pub group: SocketAddrV4,
    /// Multicast group of feed line B: A/B feeds, the same stream on a second
    /// group (the server publishes both, the client arbitrates).
    #[arg(long)]
    pub group_b: Option<SocketAddrV4>,
    /// Interface address for multicast: the feed's source address, and the
    /// interface sends and joins use unless --ifname names one
    /// [default: 127.0.0.1; with --ifname, that interface's own address].
    #[arg(long)]
    pub interface: Option<Ipv4Addr>,
    /// Network interface name: the device xdp binds; for multicast, the
    /// interface joins and sends use (by index, whatever --interface is).
    #[arg(long, value_parser = parse_ifname)]
    pub ifname: Option<String>,
    /// Authenticate every packet with this key (32 raw bytes or 64 hex
    /// digits), the same on the server and its clients: each packet sent
    /// carries a MAC, and packets or requests without a valid one are
    /// dropped and counted (auth_rejected).
    #[arg(long, value_parser = crate::select::load_key_file)]
    pub key_file: Option<tickwire_core::wire::auth::AuthKey>,
    /// Multicast: no UDP segmentation offload (server: GSO sends; client:
    /// GRO receives); one datagram per packet through the kernel, as
    /// before them.
    #[arg(long)]
    pub no_udp_offload: bool,
}

impl TransportArgs {
    /// The interface address the transport gets: `--interface` if given;
    /// else `0.0.0.0` for multicast with `--ifname` (the kernel takes that
    /// interface's address); else [`DEFAULT_INTERFACE`].
    pub fn interface_addr(&self) -> Ipv4Addr {
        match (self.interface, &self.ifname) {
            (Some(a), _) => a,
            (None, Some(_)) if self.transport == TransportKind::Multicast => Ipv4Addr::UNSPECIFIED,
            (None, _) => DEFAULT_INTERFACE,
        }
    }

    /// The checks both binaries make before starting: a usage error message
    /// naming the flag, or `Ok`. `addr_flag` is the binary's name for `addr`
    /// (`--listen`, `--connect`).
    pub fn check(&self, addr_flag: &str, addr: SocketAddr) -> Result<(), String> {
        if self.transport != TransportKind::Tcp {
            for (flag, g) in [("--group", Some(self.group)), ("--group-b", self.group_b)] {
                let Some(g) = g else { continue };
                if !g.ip().is_multicast() || g.port() == 0 {
                    return Err(format!(
                        "{flag} {g} is not a multicast group: use an address in 224.0.0.0/4 with a nonzero port (e.g. 239.255.0.1:30001)"
                    ));
                }
            }
            if !addr.is_ipv4() {
                return Err(format!(
                    "{addr_flag} {addr}: the {} transport needs an IPv4 recovery address",
                    self.transport
                ));
            }
            if let Some(i) = self.interface
                && (i.is_multicast() || i.is_broadcast())
            {
                return Err(format!(
                    "--interface {i} is not an interface address (e.g. 127.0.0.1)"
                ));
            }
        }
        if self.transport == TransportKind::Xdp && self.ifname.is_none() {
            return Err("--transport xdp needs --ifname (e.g. eth0)".into());
        }
        Ok(())
    }

    /// The options to build the transport with.
    pub fn options(
        &self,
        addr: SocketAddr,
        max_packet_len: usize,
        ttl: u32,
        loss: LossConfig,
    ) -> TransportOptions {
        TransportOptions {
            kind: self.transport,
            addr,
            group_a: self.group,
            group_b: self.group_b,
            interface: self.interface_addr(),
            ifname: self.ifname.clone(),
            ttl,
            max_packet_len,
            loss,
            source: None,
            auth_key: self.key_file.clone(),
            udp_offload: !self.no_udp_offload,
        }
    }
}

/// A `--max-packet` parser accepting `min..=max` bytes (the bounds differ
/// between a publisher and a receiver), for clap's `value_parser`.
pub fn packet_size(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s| match s.trim().parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: use a packet size from {min} to {max} bytes")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Args {
        #[command(flatten)]
        t: TransportArgs,
    }

    fn parse(a: &[&str]) -> TransportArgs {
        Args::try_parse_from(std::iter::once("x").chain(a.iter().copied())).unwrap().t
    }

    #[test]
    fn defaults_are_the_binaries_old_ones() {
        let t = parse(&[]);
        assert_eq!(t.transport, TransportKind::Tcp);
        assert_eq!(t.group, "239.255.0.1:30001".parse().unwrap());
        assert_eq!(t.group_b, None);
        assert_eq!(t.interface_addr(), Ipv4Addr::LOCALHOST);
        assert_eq!(t.ifname, None);
    }

    #[test]
    fn ifname_without_interface_takes_the_interface_s_address_for_multicast_only() {
        let t = parse(&["--transport", "multicast", "--ifname", "eth0"]);
        assert!(t.interface_addr().is_unspecified());
        let both =
            parse(&["--transport", "multicast", "--ifname", "eth0", "--interface", "10.1.2.3"]);
        assert_eq!(both.interface_addr(), Ipv4Addr::new(10, 1, 2, 3));
        let xdp = parse(&["--transport", "xdp", "--ifname", "eth0"]);
        assert_eq!(xdp.interface_addr(), Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn checks_name_the_flag() {
        let a: SocketAddr = "127.0.0.1:9100".parse().unwrap();
        let bad_group = parse(&["--transport", "multicast", "--group", "10.0.0.1:5"]);
        assert!(bad_group.check("--listen", a).unwrap_err().starts_with("--group "));
        let v6 = parse(&["--transport", "multicast"]);
        let e = v6.check("--connect", "[::1]:9100".parse().unwrap()).unwrap_err();
        assert!(e.starts_with("--connect"), "{e}");
        let bcast = parse(&["--transport", "multicast", "--interface", "255.255.255.255"]);
        assert!(bcast.check("--listen", a).unwrap_err().starts_with("--interface"));
        assert!(
            parse(&["--transport", "xdp"]).check("--listen", a).unwrap_err().contains("--ifname")
        );
        // TCP ignores the multicast flags.
        assert!(parse(&["--group", "10.0.0.1:5"]).check("--listen", a).is_ok());
        let o = parse(&["--transport", "multicast", "--ifname", "lo"]).options(
            a,
            1400,
            2,
            LossConfig { tx_drop: 0.0, rx_drop: 0.0, seed: 1 },
        );
        assert_eq!((o.ttl, o.ifname.as_deref(), o.max_packet_len), (2, Some("lo"), 1400));
    }
}
