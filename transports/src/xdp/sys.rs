//! Thin libc wrappers for the AF_XDP transport: capability probe, interface
//! facts (index, MAC, IPv4, MTU), neighbour lookup, busy-poll options, kicks
//! and `poll(2)`. Every `unsafe` block says why it is sound.

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `SO_BUSY_POLL` from `asm-generic/socket.h` (the libc crate does not export
/// it for every Linux target): microseconds to busy-poll the device queue.
const SO_BUSY_POLL: libc::c_int = 46;
/// `SO_PREFER_BUSY_POLL`: keep interrupts off while the application busy-polls.
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
/// `SO_BUSY_POLL_BUDGET`: packets per busy-poll round.
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// The message for "not privileged enough", shared by every path that can hit it.
pub(crate) const NEED_PRIVILEGES: &str = "AF_XDP needs CAP_NET_RAW to open the socket and \
     CAP_NET_ADMIN + CAP_BPF to attach the XDP program: run as root, or \
     `setcap cap_net_raw,cap_net_admin,cap_bpf+ep <binary>`";

/// Check that this kernel has AF_XDP sockets and that we may open one, by
/// opening (and closing) one. Errors say what to do.
pub(crate) fn probe_af_xdp() -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; the returned fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel has no AF_XDP sockets: socket(AF_XDP) failed with EAFNOSUPPORT; \
                 a kernel built with CONFIG_XDP_SOCKETS=y (Linux 4.18 or later) is needed",
            ),
            Some(libc::EPERM) | Some(libc::EACCES) => {
                io::Error::new(io::ErrorKind::PermissionDenied, NEED_PRIVILEGES)
            }
            _ => io::Error::new(e.kind(), format!("socket(AF_XDP) failed: {e}")),
        });
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    unsafe { libc::close(fd) };
    Ok(())
}

/// What the transport needs to know about an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IfInfo {
    /// Interface index.
    pub index: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// First IPv4 address, if it has one.
    pub ipv4: Option<Ipv4Addr>,
    /// MTU in bytes.
    pub mtu: u32,
}

/// Look an interface up in the calling thread's network namespace.
pub(crate) fn if_info(name: &str) -> io::Result<IfInfo> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} must be 1 to {} bytes", libc::IFNAMSIZ - 1),
        ));
    }
    let cname = CString::new(name).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "interface name contains a NUL byte")
    })?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no interface named {name:?} in this network namespace \
                 (check `ip link show`; run inside the namespace that owns it)"
            ),
        ));
    }
    let sock = inet_dgram()?;
    let mac = {
        let req = ifreq_ioctl(&sock, name, libc::SIOCGIFHWADDR)?;
        // SAFETY: SIOCGIFHWADDR succeeded, so the kernel wrote `ifru_hwaddr`.
        let sa = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *m = *b as u8;
        }
        mac
    };
    let ipv4 = match ifreq_ioctl(&sock, name, libc::SIOCGIFADDR) {
        Ok(req) => {
            // SAFETY: SIOCGIFADDR succeeded, so the kernel wrote an AF_INET
            // `sockaddr_in` into `ifru_addr` (same size as `sockaddr`).
            let sa = unsafe { req.ifr_ifru.ifru_addr };
            // sockaddr_in: family (2), port (2), address (4) = sa_data[2..6].
            let d = sa.sa_data;
            Some(Ipv4Addr::new(d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8))
        }
        Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => None,
        Err(e) => return Err(e),
    };
    let mtu = {
        let req = ifreq_ioctl(&sock, name, libc::SIOCGIFMTU)?;
        // SAFETY: SIOCGIFMTU succeeded, so the kernel wrote `ifru_mtu`.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        mtu.max(0) as u32
    };
    Ok(IfInfo { index, mac, ipv4, mtu })
}

/// The MAC of `ip` in the kernel's neighbour table for `ifname` (the calling
/// thread's namespace), if the entry is complete.
pub(crate) fn neighbour_mac(ifname: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    // `thread-self`, not `self`: `/proc/self/net` shows the namespace of the
    // process's main thread, and transports are often built in a thread that
    // entered another namespace with setns(2).
    let table = std::fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    parse_arp_table(&table, ifname, ip)
}

/// Parse `/proc/net/arp`: `IP address  HW type  Flags  HW address  Mask  Device`.
fn parse_arp_table(table: &str, ifname: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    /// `ATF_COM`: the entry is complete (has a hardware address).
    const ATF_COM: u32 = 0x02;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[5] != ifname || f[0].parse::<Ipv4Addr>().ok() != Some(ip) {
            continue;
        }
        let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
        if flags & ATF_COM == 0 {
            return None;
        }
        return parse_mac(f[3]);
    }
    None
}

/// Parse `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for m in mac.iter_mut() {
        *m = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}

/// Turn on busy polling on `fd`: prefer busy polling over interrupts, poll for
/// `usecs` microseconds, `budget` packets per round.
pub(crate) fn set_busy_poll(fd: RawFd, usecs: u32, budget: u32) -> io::Result<()> {
    setsockopt_int(fd, SO_PREFER_BUSY_POLL, 1, "SO_PREFER_BUSY_POLL")?;
    setsockopt_int(fd, SO_BUSY_POLL, usecs as libc::c_int, "SO_BUSY_POLL")?;
    setsockopt_int(fd, SO_BUSY_POLL_BUDGET, budget as libc::c_int, "SO_BUSY_POLL_BUDGET")
}

fn setsockopt_int(fd: RawFd, opt: libc::c_int, value: libc::c_int, name: &str) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        let hint = if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
            " (this kernel has no socket busy polling: CONFIG_NET_RX_BUSY_POLL)"
        } else {
            ""
        };
        return Err(io::Error::new(
            e.kind(),
            format!("setsockopt({name}) on the AF_XDP socket: {e}{hint}"),
        ));
    }
    Ok(())
}

/// What a TX kick did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The kernel took what it could; nothing more to do now.
    Done,
    /// The kernel stopped at its per-call budget with descriptors left: kick again.
    More,
    /// The device is busy or out of buffers: retry on a later call.
    Busy,
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: makes the kernel process the TX ring.
/// In copy (SKB) mode nothing else drives transmission.
pub(crate) fn kick_tx(fd: RawFd) -> io::Result<Kick> {
    // SAFETY: a zero-length send with null buffer and address is the documented
    // AF_XDP wake-up; the kernel reads no user memory.
    let r =
        unsafe { libc::sendto(fd, std::ptr::null(), 0, libc::MSG_DONTWAIT, std::ptr::null(), 0) };
    if r >= 0 {
        return Ok(Kick::Done);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(Kick::More),
        Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR) => Ok(Kick::Busy),
        Some(libc::ENETDOWN) => Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "the XDP interface is down: `ip link set DEV up`",
        )),
        _ => Err(io::Error::new(e.kind(), format!("AF_XDP TX kick (sendto) failed: {e}"))),
    }
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: wakes the driver to refill from the
/// fill ring (need_wakeup) and runs a busy-poll round when busy polling is on.
pub(crate) fn kick_rx(fd: RawFd) -> io::Result<()> {
    // SAFETY: a zero-length receive with null buffer and address is the
    // documented AF_XDP wake-up; the kernel writes no user memory.
    let r = unsafe {
        libc::recvfrom(
            fd,
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR) | Some(libc::ENOBUFS) => {}
            _ => {
                return Err(io::Error::new(e.kind(), format!("AF_XDP RX kick failed: {e}")));
            }
        }
    }
    Ok(())
}

/// `poll(2)` on `fds` for at most `timeout` (`None`: forever). Returns how many
/// are ready; EINTR counts as a spurious wake-up (0).
pub(crate) use crate::wait::wait_fds as poll;

/// A pollfd for `fd` waiting for `events`.
pub(crate) fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// A short-lived socket for the SIOCGIF* ioctls (std's `OwnedFd` closes it).
fn inet_dgram() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the fd it returns is owned by no
    // one else, so the `OwnedFd` made from it closes it exactly once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above: `fd` is open and ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One SIOCGIF* request about interface `name` on `sock`.
fn ifreq_ioctl(sock: &OwnedFd, name: &str, request: libc::c_ulong) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The caller checked name.len() < IFNAMSIZ, so the name stays NUL-terminated.
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq for these SIOCGIF* requests, which only
    // write inside it; the fd is open for the call (borrowed from `sock`).
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, &mut req as *mut libc::ifreq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
10.9.0.2         0x1         0x2         aa:bb:cc:00:11:22     *        veth1
10.9.0.3         0x1         0x0         00:00:00:00:00:00     *        veth1
10.9.0.2         0x1         0x6         02:00:00:00:00:09     *        eth0
";

    #[test]
    fn arp_table_lookup() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            parse_arp_table(ARP, "veth1", ip("10.9.0.2")),
            Some([0xaa, 0xbb, 0xcc, 0, 0x11, 0x22])
        );
        assert_eq!(parse_arp_table(ARP, "eth0", ip("10.9.0.2")), Some([2, 0, 0, 0, 0, 9]));
        // Incomplete entry.
        assert_eq!(parse_arp_table(ARP, "veth1", ip("10.9.0.3")), None);
        assert_eq!(parse_arp_table(ARP, "veth1", ip("10.9.0.4")), None);
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:0a:ff:00:01:10"), Some([2, 10, 255, 0, 1, 16]));
        assert_eq!(parse_mac("02:0a:ff:00:01"), None);
        assert_eq!(parse_mac("02:0a:ff:00:01:10:11"), None);
        assert_eq!(parse_mac("zz:0a:ff:00:01:10"), None);
    }

    #[test]
    fn loopback_facts() {
        // `lo` exists in every namespace; its MTU is positive and it has 127.0.0.1
        // when up (it may be down in a fresh namespace, so only the index is certain).
        let info = if_info("lo").unwrap();
        assert!(info.index > 0);
        assert_eq!(info.mac, [0; 6]);
        let missing = if_info("tw-no-such-if").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert!(missing.to_string().contains("tw-no-such-if"));
    }
}
