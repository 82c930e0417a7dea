//! Helpers shared by the transport integration tests: unique groups and ports
//! (so tests run in parallel, also against other test binaries on the same
//! host), packet fixtures, root checks, throw-away network-namespace
//! topologies, the conformance profile of a lossless datagram transport, and
//! fake transports ([`fakes`]).
//!
//! ```text
//!   ns <p>srv            ns <p>mid (Linux bridge br0)          ns <p>cli1, <p>cli2 ...
//!   eth0 10.77.0.1 ══ vsrv ─┐                     ┌─ vcli1 ══ eth0 10.77.0.11
//!                           └──────── br0 ────────┼─ vcli2 ══ eth0 10.77.0.12
//! ```
//! Addresses exist only inside the namespaces, so every topology can reuse
//! them; only namespace names must be unique (prefix + pid + counter).

#![allow(dead_code)] // each test binary uses a different subset

pub mod fakes;

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use tickwire_core::SeqNo;
use tickwire_core::wire::{HEADER_LEN, Packet, PacketKind, PacketRepr};
use tickwire_transports::conformance::{Delivery, Profile};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A number unique to this process and call.
pub fn unique() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// Loopback with a port the kernel picks, to bind a listener to.
pub fn any_port() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A UDP port that was free a moment ago on `ip` (the kernel picked it).
pub fn free_udp_port(ip: Ipv4Addr) -> u16 {
    let s = UdpSocket::bind(SocketAddrV4::new(ip, 0)).expect("bind an ephemeral port");
    s.local_addr().expect("local addr").port()
}

/// A multicast group unique to this process and call, on a free port:
/// `239.<100 + n>.<pid hi>.<pid lo>`. Subscribers bind to the group address,
/// so two tests sharing a port still never see each other's datagrams.
pub fn unique_group() -> SocketAddrV4 {
    let pid = std::process::id();
    let n = unique();
    let ip = Ipv4Addr::new(239, 100 + (n % 100) as u8, (pid >> 8) as u8, pid as u8);
    SocketAddrV4::new(ip, free_udp_port(Ipv4Addr::LOCALHOST))
}

/// A valid Data packet: header for `seq` plus `payload_len` bytes derived
/// from `seq` (so every packet differs), CRC filled.
pub fn make_packet(seq: u64, payload_len: usize) -> Vec<u8> {
    make_kind(PacketKind::Data, seq, payload_len)
}

/// A valid packet of `kind` (see [`make_packet`]).
pub fn make_kind(kind: PacketKind, seq: u64, payload_len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER_LEN + payload_len];
    let repr = PacketRepr {
        kind,
        flags: 0,
        epoch: 7,
        first_seq: SeqNo(seq),
        count: 1,
        send_time: seq.wrapping_mul(1_000_003),
        payload_len,
    };
    let mut p = Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p);
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in p.payload_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    p.fill_crc();
    buf
}

/// A datagram transport as the conformance suite sees it when the suite's
/// pacing leaves nothing to lose (loopback, a veth or a bridge): best effort,
/// but every packet must arrive (`min_fraction` 1.0), as on a reliable one.
/// Each transport's tests give it their own name.
pub const LOSSLESS_DATAGRAM: Profile = Profile {
    name: "datagram",
    stream: false,
    delivery: Delivery::BestEffort { min_fraction: 1.0 },
    exact_stats: true,
};

/// True when running as root (network namespaces, `SO_RCVBUFFORCE`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Print the loud skip line every root-only test prints when it cannot run.
pub fn skip(test: &str, why: &str) {
    tickwire_transports::kernel::skip(
        test,
        format!("needs root and network namespaces (CAP_NET_ADMIN): {why}"),
    );
}

/// Run `cmd args...`, failing with its stderr if it exits non-zero.
pub fn run(cmd: &str, args: &[&str]) -> io::Result<String> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{cmd} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `f` on a new thread that has entered network namespace `ns`; sockets
/// it creates stay in that namespace wherever they are used afterwards.
pub fn in_netns<T, F>(ns: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let file = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    std::thread::spawn(move || {
        // SAFETY: `file` is an open namespace file for the whole call;
        // setns changes only this (new, unshared-by-nobody) thread's network
        // namespace, which ends with the thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| io::Error::other("closure in namespace panicked"))?
}

/// A server namespace, a bridge namespace and `n` client namespaces, deleted
/// on drop (deleting a namespace deletes its veths).
#[derive(Debug)]
pub struct Topology {
    /// The server's namespace.
    pub srv: String,
    /// The bridge's namespace ("mid"), where loss is applied.
    pub mid: String,
    /// The clients' namespaces.
    pub clients: Vec<String>,
    /// The bridge device inside `mid`.
    pub bridge: &'static str,
    made: Vec<String>,
}

/// The subnet every topology uses (inside its own namespaces only).
pub const SUBNET: [u8; 3] = [10, 77, 0];

impl Topology {
    /// Build a topology with `clients` client namespaces, named from `prefix`
    /// (≤ 4 chars) + pid + a counter.
    pub fn new(prefix: &str, clients: usize) -> io::Result<Topology> {
        let base = format!("{prefix}{}x{}", std::process::id(), unique());
        let mut t = Topology {
            srv: format!("{base}srv"),
            mid: format!("{base}mid"),
            clients: (1..=clients).map(|i| format!("{base}cli{i}")).collect(),
            bridge: "br0",
            made: Vec::new(),
        };
        t.build()?;
        Ok(t)
    }

    /// The server's address.
    pub fn srv_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 1)
    }

    /// Client `i`'s address (0-based).
    pub fn cli_addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], 11 + i as u8)
    }

    fn ns(&mut self, name: &str) -> io::Result<()> {
        run("ip", &["netns", "add", name])?;
        self.made.push(name.to_string());
        run("ip", &["-n", name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Attach host namespace `host` to the bridge by a veth pair: `port` in
    /// mid, `eth0` with `addr` in `host`.
    fn attach(&self, host: &str, port: &str, addr: Ipv4Addr) -> io::Result<()> {
        let mid = self.mid.as_str();
        run(
            "ip",
            &[
                "-n", mid, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
                host,
            ],
        )?;
        run("ip", &["-n", mid, "link", "set", port, "master", self.bridge])?;
        run("ip", &["-n", mid, "link", "set", port, "up"])?;
        let cidr = format!("{addr}/24");
        run("ip", &["-n", host, "addr", "add", &cidr, "dev", "eth0"])?;
        run("ip", &["-n", host, "link", "set", "eth0", "up"])?;
        run("ip", &["-n", host, "route", "add", "239.0.0.0/8", "dev", "eth0"])?;
        // Partial (offloaded) checksums on veth: compute them in software.
        run("ip", &["netns", "exec", host, "ethtool", "-K", "eth0", "tx", "off"])?;
        run("ip", &["netns", "exec", mid, "ethtool", "-K", port, "tx", "off"])?;
        Ok(())
    }

    fn build(&mut self) -> io::Result<()> {
        let (srv, mid) = (self.srv.clone(), self.mid.clone());
        self.ns(&mid)?;
        self.ns(&srv)?;
        for c in self.clients.clone() {
            self.ns(&c)?;
        }
        run(
            "ip",
            &["-n", &mid, "link", "add", self.bridge, "type", "bridge", "mcast_snooping", "0"],
        )?;
        run("ip", &["-n", &mid, "link", "set", self.bridge, "up"])?;
        self.attach(&srv, "vsrv", self.srv_addr())?;
        for (i, c) in self.clients.clone().iter().enumerate() {
            self.attach(c, &format!("vcli{}", i + 1), self.cli_addr(i))?;
        }
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("warning: could not delete namespace {ns}: {e}");
            }
        }
    }
}

/// Build a topology if this process may; otherwise print the SKIPPED line for
/// `test` and return `None`.
pub fn topology_or_skip(test: &str, prefix: &str, clients: usize) -> Option<Topology> {
    if !is_root() {
        skip(test, "not root");
        return None;
    }
    match Topology::new(prefix, clients) {
        Ok(t) => Some(t),
        Err(e) => {
            skip(test, &e.to_string());
            None
        }
    }
}
