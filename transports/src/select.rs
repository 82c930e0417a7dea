//! Choosing and building a transport from command-line style options: the one
//! place that knows every transport, so the binaries stay thin.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::str::FromStr;

pub use crate::affinity::allowed_cpus;
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
    /// Multicast: the interface address to send and join on (`0.0.0.0` with
    /// `ifname`: that interface's own address).
    pub interface: Ipv4Addr,
    /// Xdp: the network interface to bind. Multicast: when set, the
    /// interface joins and sends use (by index), whatever `interface` is.
    pub ifname: Option<String>,
    /// Multicast and xdp publishers: IP TTL of the feed's datagrams (1 =
    /// this subnet only; each router on the way takes 1).
    pub ttl: u32,
    /// Largest packet.
    pub max_packet_len: usize,
    /// Seeded in-process loss (a [`Lossy`] wrapper) when either rate is nonzero.
    pub loss: LossConfig,
    /// Multicast subscribers: the feed's source (source-specific joins and a
    /// check of every datagram); `None`: the recovery service's address.
    pub source: Option<crate::multicast::FeedSource>,
    /// Seal every packet sent and accept only packets that verify under this
    /// key (an [`Authenticated`](crate::auth::Authenticated) wrapper).
    pub auth_key: Option<tickwire_core::wire::auth::AuthKey>,
    /// Multicast: UDP GSO on the publisher, UDP GRO on the subscriber
    /// ([`MulticastConfig::gso`](crate::multicast::MulticastConfig::gso)).
    pub udp_offload: bool,
}

impl TransportOptions {
    /// What a subscriber that hears nothing should check, beyond "is the
    /// server up": for datagram feeds, the TTL and the interface (a feed
    /// sent with TTL 1 dies at the first router; a join on the wrong
    /// interface hears nothing). Empty for TCP.
    pub fn silence_hint(&self) -> &'static str {
        match self.kind {
            TransportKind::Tcp => "",
            TransportKind::Multicast | TransportKind::Xdp => {
                " If a router lies between them: the feed crosses N routers only with the server's --ttl above N \
                 (the default 1 stops at the first), and the router must forward the group; \
                 check too that --interface/--ifname name the interface facing the server."
            }
        }
    }
}

/// Read a key file (`--key-file`): 32 raw bytes or 64 hex digits. The error
/// names the file and says what is wrong with it.
pub fn load_key_file(path: &str) -> Result<tickwire_core::wire::auth::AuthKey, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read key file {path:?}: {}", io_text(&e)))?;
    tickwire_core::wire::auth::AuthKey::from_file_bytes(&bytes)
        .map_err(|e| format!("key file {path:?}: {e}"))
}

/// Connection limits of the TCP publisher (other transports ignore them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpLimits {
    /// See [`crate::tcp::TcpPublisherConfig::max_clients`].
    pub max_clients: usize,
    /// See [`crate::tcp::TcpPublisherConfig::max_per_host`].
    pub max_per_host: usize,
    /// See [`crate::tcp::TcpPublisherConfig::login_timeout`].
    pub login_timeout: std::time::Duration,
    /// See [`crate::tcp::TcpPublisherConfig::idle_timeout`].
    pub idle_timeout: std::time::Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        let d = crate::tcp::TcpPublisherConfig::default();
        TcpLimits {
            max_clients: d.max_clients,
            max_per_host: d.max_per_host,
            login_timeout: d.login_timeout,
            idle_timeout: d.idle_timeout,
        }
    }
}

/// Build the server side.
pub fn build_publisher(opts: &TransportOptions) -> io::Result<Box<dyn Publisher>> {
    build_publisher_with_limits(opts, &TcpLimits::default())
}

/// Build the server side, with these TCP connection limits.
pub fn build_publisher_with_limits(
    opts: &TransportOptions,
    limits: &TcpLimits,
) -> io::Result<Box<dyn Publisher>> {
    let inner: Box<dyn Publisher> = match opts.kind {
        TransportKind::Tcp => Box::new(crate::tcp::TcpPublisher::bind(
            opts.addr,
            crate::tcp::TcpPublisherConfig {
                max_packet_len: opts.max_packet_len,
                max_clients: limits.max_clients,
                max_per_host: limits.max_per_host,
                login_timeout: limits.login_timeout,
                idle_timeout: limits.idle_timeout,
                ..Default::default()
            },
        )?),
        TransportKind::Multicast => {
            Box::new(crate::multicast::MulticastPublisher::new(multicast_config(opts)?)?)
        }
        TransportKind::Xdp => xdp_publisher(opts)?,
    };
    let inner: Box<dyn Publisher> = match &opts.auth_key {
        Some(key) => Box::new(crate::auth::Authenticated::new(inner, key.clone())),
        None => inner,
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
        TransportKind::Multicast => {
            Box::new(crate::multicast::MulticastSubscriber::new(multicast_config(opts)?)?)
        }
        TransportKind::Xdp => xdp_subscriber(opts)?,
    };
    let inner: Box<dyn Subscriber> = match &opts.auth_key {
        Some(key) => Box::new(crate::auth::Authenticated::new(inner, key.clone())),
        None => inner,
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
        ifname: opts.ifname.clone(),
        ttl: opts.ttl,
        request_addr,
        max_packet_len: opts.max_packet_len,
        source: opts.source,
        gso: opts.udp_offload,
        gro: opts.udp_offload,
        ..Default::default()
    })
}

/// The AF_XDP configuration: the feed goes to (or is read from) `group_a` on
/// interface `ifname`; the recovery plane is a kernel UDP socket on `addr`
/// (the server binds it, the client sends its requests there).
#[cfg(feature = "xdp")]
fn xdp_config(
    opts: &TransportOptions,
    side: fn(&str, SocketAddrV4, SocketAddrV4) -> crate::xdp::XdpConfig,
) -> io::Result<crate::xdp::XdpConfig> {
    let Some(ifname) = opts.ifname.as_deref() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the xdp transport needs an interface name (--ifname, e.g. eth0)",
        ));
    };
    let SocketAddr::V4(request) = opts.addr else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the xdp transport needs an IPv4 request (recovery) address",
        ));
    };
    if !opts.group_a.ip().is_multicast() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the xdp feed address {} is not a multicast group (use --group 239.x.x.x:PORT)",
                opts.group_a
            ),
        ));
    }
    if opts.group_b.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the xdp transport carries one feed line: drop --group-b",
        ));
    }
    let ttl = u8::try_from(opts.ttl).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("ttl {} outside 0..=255", opts.ttl))
    })?;
    Ok(crate::xdp::XdpConfig { ttl, ..side(ifname, opts.group_a, request) })
}

#[cfg(feature = "xdp")]
fn xdp_publisher(opts: &TransportOptions) -> io::Result<Box<dyn Publisher>> {
    let cfg = xdp_config(opts, crate::xdp::XdpConfig::publisher)?;
    let p = crate::xdp::XdpPublisher::new(&cfg)?;
    // Publishing more than the interface's MTU carries would fail per packet.
    if opts.max_packet_len > p.max_packet_len() {
        eprintln!(
            "xdp: packets capped at {} bytes (the UMEM frame / {} MTU), not {}",
            p.max_packet_len(),
            cfg.ifname,
            opts.max_packet_len
        );
    }
    Ok(Box::new(ReportPub(p)))
}

#[cfg(feature = "xdp")]
fn xdp_subscriber(opts: &TransportOptions) -> io::Result<Box<dyn Subscriber>> {
    let cfg = xdp_config(opts, crate::xdp::XdpConfig::subscriber)?;
    Ok(Box::new(ReportSub(crate::xdp::XdpSubscriber::new(&cfg)?)))
}

/// An AF_XDP publisher that prints its AF_XDP counters (ring full, fill ring
/// empty, kicks...) to stderr when it is dropped: the binaries' summaries only
/// carry the generic counters, and these say where frames were lost.
#[cfg(feature = "xdp")]
struct ReportPub(crate::xdp::XdpPublisher);

/// See [`ReportPub`].
#[cfg(feature = "xdp")]
struct ReportSub(crate::xdp::XdpSubscriber);

#[cfg(feature = "xdp")]
impl Drop for ReportPub {
    fn drop(&mut self) {
        eprintln!("tickwire-xdp: publisher counters: {:?}", self.0.xdp_stats());
    }
}

#[cfg(feature = "xdp")]
impl Drop for ReportSub {
    fn drop(&mut self) {
        eprintln!("tickwire-xdp: subscriber counters: {:?}", self.0.xdp_stats());
    }
}

#[cfg(feature = "xdp")]
impl Publisher for ReportPub {
    fn max_packet_len(&self) -> usize {
        self.0.max_packet_len()
    }
    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        self.0.publish_with(fill)
    }
    fn send_to(&mut self, peer: crate::PeerId, packet: &[u8]) -> io::Result<()> {
        self.0.send_to(peer, packet)
    }
    fn send_to_group(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.send_to_group(packet)
    }
    fn sends_to_group(&self) -> bool {
        self.0.sends_to_group()
    }
    fn set_live(&mut self, peer: crate::PeerId, live: bool) {
        self.0.set_live(peer, live)
    }
    fn disconnect(&mut self, peer: crate::PeerId, reason: crate::DisconnectReason) {
        self.0.disconnect(peer, reason)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
    fn poll(
        &mut self,
        timeout: Option<std::time::Duration>,
        on_event: &mut dyn FnMut(crate::PubEvent<'_>),
    ) -> io::Result<()> {
        self.0.poll(timeout, on_event)
    }
    fn stats(&self) -> crate::PubStats {
        self.0.stats()
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local_addr()
    }
}

#[cfg(feature = "xdp")]
impl Subscriber for ReportSub {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        self.0.send_request(packet)
    }
    fn poll(
        &mut self,
        timeout: Option<std::time::Duration>,
        on_event: &mut dyn FnMut(crate::SubEvent<'_>),
    ) -> io::Result<()> {
        self.0.poll(timeout, on_event)
    }
    fn reconnect(&mut self) -> io::Result<()> {
        self.0.reconnect()
    }
    fn stats(&self) -> crate::SubStats {
        self.0.stats()
    }
}

#[cfg(not(feature = "xdp"))]
fn xdp_publisher(_opts: &TransportOptions) -> io::Result<Box<dyn Publisher>> {
    Err(xdp_unavailable())
}

#[cfg(not(feature = "xdp"))]
fn xdp_subscriber(_opts: &TransportOptions) -> io::Result<Box<dyn Subscriber>> {
    Err(xdp_unavailable())
}

#[cfg(not(feature = "xdp"))]
fn xdp_unavailable() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "the xdp transport is not built into this binary (build with --features xdp)",
    )
}

/// Longest duration a flag accepts: 100 years, far beyond any run, and far
/// below what would overflow an `Instant` or a nanosecond count.
pub const MAX_FLAG_DURATION: std::time::Duration =
    std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Parse a duration flag with humantime (`10s`, `500ms`, `250us`, `1m 30s`),
/// or a bare number of seconds (`2`, `0.5`). Values above
/// [`MAX_FLAG_DURATION`] are refused with an error, never a panic.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let d = if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let secs: f64 =
            s.parse().map_err(|_| format!("bad duration {s:?}: use e.g. 10s, 500ms"))?;
        std::time::Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("duration {s:?} out of range"))?
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("bad duration {s:?}: {e} (use e.g. 10s, 500ms, 250us)"))?
    };
    if d > MAX_FLAG_DURATION {
        return Err(format!("duration {s:?} too long: at most 100 years"));
    }
    Ok(d)
}

/// Parse a loss fraction flag (`--drop-rate`): a number from 0 to 1 (NaN, inf refused).
pub fn parse_drop_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        _ => Err(format!("{s:?} is not a fraction: use a number from 0 to 1 (e.g. 0.01)")),
    }
}

/// Parse a network interface name flag (`--ifname`).
pub fn parse_ifname(s: &str) -> Result<String, String> {
    // IFNAMSIZ is 16 with the terminating NUL.
    if s.is_empty()
        || s.len() > 15
        || s.chars().any(|c| c == '/' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("{s:?} is not a network interface name (1-15 characters, e.g. eth0)"));
    }
    Ok(s.to_owned())
}

/// Parse `--cpu`: a CPU this process may run on.
pub fn parse_cpu(s: &str) -> Result<usize, String> {
    let cpu: usize = s.trim().parse().map_err(|_| format!("{s:?} is not a CPU number (e.g. 2)"))?;
    match allowed_cpus() {
        Some(cpus) if !cpus.contains(&cpu) => {
            Err(format!("CPU {cpu} is not available to this process: use one of {cpus:?}"))
        }
        _ => Ok(cpu),
    }
}

/// An I/O error as a phrase: "no such file or directory", not
/// "No such file or directory (os error 2)".
pub fn io_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.rfind(" (os error ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    };
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
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
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        // Absurd values are errors, not panics.
        assert!(parse_duration("99999999999999999999999s").is_err());
        assert!(parse_duration("99999999999999999999999").is_err());
        assert!(parse_duration("200years").unwrap_err().contains("too long"));
    }

    #[test]
    fn kinds() {
        assert_eq!("tcp".parse(), Ok(TransportKind::Tcp));
        assert_eq!("multicast".parse(), Ok(TransportKind::Multicast));
        assert_eq!("xdp".parse(), Ok(TransportKind::Xdp));
        assert!("carrier-pigeon".parse::<TransportKind>().is_err());
    }

    fn xdp_opts() -> TransportOptions {
        TransportOptions {
            kind: TransportKind::Xdp,
            addr: "10.77.0.1:9100".parse().unwrap(),
            group_a: "239.255.0.1:30001".parse().unwrap(),
            group_b: None,
            interface: Ipv4Addr::UNSPECIFIED,
            ifname: Some("eth0".into()),
            ttl: 1,
            max_packet_len: 1400,
            loss: LossConfig { tx_drop: 0.0, rx_drop: 0.0, seed: 1 },
            source: None,
            auth_key: None,
            udp_offload: true,
        }
    }

    fn err_of<T>(r: io::Result<T>) -> io::Error {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[cfg(feature = "xdp")]
    #[test]
    fn xdp_options_are_checked_before_any_socket() {
        let no_if = TransportOptions { ifname: None, ..xdp_opts() };
        let e = err_of(build_subscriber(&no_if));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("--ifname"), "{e}");
        let unicast =
            TransportOptions { group_a: "10.77.0.11:30001".parse().unwrap(), ..xdp_opts() };
        let e = err_of(build_publisher(&unicast));
        assert!(e.to_string().contains("not a multicast group"), "{e}");
        let ab =
            TransportOptions { group_b: Some("239.255.0.2:30002".parse().unwrap()), ..xdp_opts() };
        assert_eq!(err_of(build_publisher(&ab)).kind(), io::ErrorKind::InvalidInput);
        let v6 = TransportOptions { addr: "[::1]:9100".parse().unwrap(), ..xdp_opts() };
        assert!(err_of(build_subscriber(&v6)).to_string().contains("IPv4"));
        let cfg = xdp_config(&xdp_opts(), crate::xdp::XdpConfig::publisher).unwrap();
        assert_eq!(cfg.ifname, "eth0");
        assert_eq!(cfg.dst, xdp_opts().group_a);
        assert_eq!(cfg.listen_port, 30001);
        assert_eq!(SocketAddr::V4(cfg.request), xdp_opts().addr);
        assert_eq!(cfg.ring_size, crate::xdp::DEFAULT_RING_SIZE);
        assert_eq!(cfg.ttl, 1, "--ttl reaches the frames");
        let ttl = TransportOptions { ttl: 256, ..xdp_opts() };
        assert!(err_of(build_publisher(&ttl)).to_string().contains("ttl 256"));
        let sub = xdp_config(&xdp_opts(), crate::xdp::XdpConfig::subscriber).unwrap();
        assert_eq!(
            sub.ring_size,
            crate::xdp::DEFAULT_SUB_RING_SIZE,
            "subscribers ride out a stall"
        );
        assert_eq!(sub.frame_count, crate::xdp::DEFAULT_SUB_FRAME_COUNT);
    }

    #[cfg(not(feature = "xdp"))]
    #[test]
    fn xdp_without_the_feature_says_how_to_get_it() {
        let e = err_of(build_publisher(&xdp_opts()));
        assert_eq!(e.kind(), io::ErrorKind::Unsupported);
        assert!(e.to_string().contains("--features xdp"), "{e}");
        assert!(err_of(build_subscriber(&xdp_opts())).to_string().contains("--features xdp"));
    }
}
