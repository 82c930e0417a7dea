//! The few system calls the multicast transport needs that socket2 does not
//! wrap: `sendmmsg`, `recvmmsg`, `ppoll`, integer `setsockopt`s such as
//! `SO_RCVBUFFORCE`, and choosing an interface by name. Every `unsafe` block of the transport lives here, each in
//! a small function with its `SAFETY` argument, and each is unit tested below.

#![allow(unsafe_code)] // sendmmsg/recvmmsg over preallocated slots, socket options

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::time::Duration;

/// `UDP_SEGMENT` (`linux/udp.h`): the segment size of a GSO send, as a
/// `SOL_UDP` control message (or socket option).
pub(crate) const UDP_SEGMENT: i32 = 103;
/// `UDP_GRO` (`linux/udp.h`): the socket option that lets the kernel merge
/// received datagrams of one flow, and the control message that gives the
/// segment size of a merged receive.
pub(crate) const UDP_GRO: i32 = 104;
/// Most segments one GSO send may carry (`UDP_MAX_SEGMENTS` in the kernel).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO send: the whole must fit one IPv4 datagram
/// (65,535 − 20 − 8).
pub(crate) const GSO_MAX_BYTES: usize = 65_507;
/// Receive slot of a socket with `UDP_GRO` on: a merged receive is at most
/// one IPv4 datagram's payload.
pub(crate) const GRO_SLOT_LEN: usize = 65_535;

/// An IPv4 socket address as the kernel takes it.
pub(crate) fn to_sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

/// The address in a kernel `sockaddr_in`, or `None` if it is not IPv4.
pub(crate) fn from_sockaddr(sa: &libc::sockaddr_in) -> Option<SocketAddrV4> {
    if sa.sin_family != libc::AF_INET as libc::sa_family_t {
        return None;
    }
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)),
        u16::from_be(sa.sin_port),
    ))
}

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub(crate) fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: `value` is a live c_int on our stack and we pass its exact size;
    // the kernel only reads `optlen` bytes from it. A bad fd is reported as EBADF.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// `getsockopt(fd, level, name)` for an integer option.
pub(crate) fn get_int_opt(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` tells the kernel how many
    // bytes it may write into `value`, which is exactly its size.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 { Ok(value) } else { Err(io::Error::last_os_error()) }
}

/// The index of network interface `name` in this network namespace
/// (`if_nametoindex`); the error names the interface.
pub(crate) fn ifindex(name: &str) -> io::Result<u32> {
    let missing = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named {name:?} in this network namespace"),
        )
    };
    let c = std::ffi::CString::new(name).map_err(|_| missing())?;
    // SAFETY: `c` is a NUL-terminated string that outlives the call; the
    // function only reads it and returns 0 when there is no such interface.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 { Err(missing()) } else { Ok(index) }
}

/// `IP_MULTICAST_IF` by interface index (`struct ip_mreqn`): multicast sent
/// on `fd` leaves through that interface, whatever its addresses.
pub(crate) fn set_multicast_if_index(fd: RawFd, index: u32) -> io::Result<()> {
    let req = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index as libc::c_int,
    };
    // SAFETY: `req` is a live ip_mreqn on our stack and we pass its exact
    // size; the kernel reads at most that many bytes (it accepts in_addr,
    // ip_mreq or ip_mreqn for this option, told apart by the length).
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&req as *const libc::ip_mreqn).cast(),
            mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Wait until one of `fds` is ready or `timeout` passes, to the nanosecond.
pub(crate) use crate::wait::wait_fds as wait;

/// Wait up to `timeout` for `fd` to become writable (after `EAGAIN`).
pub(crate) fn wait_writable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = [libc::pollfd { fd, events: libc::POLLOUT, revents: 0 }];
    Ok(wait(&mut pfd, Some(timeout))? > 0)
}

/// A fixed set of packet slots with the `mmsghdr`/`iovec` arrays that describe
/// them to `sendmmsg` and `recvmmsg`. Allocated once; no allocation per packet.
///
/// Invariant: every pointer stored in `hdrs` and `iov` is rewritten from the
/// owning boxes right before each system call, so the headers never point
/// anywhere but into this struct's own heap storage while the kernel reads them.
pub(crate) struct Slots {
    data: Box<[u8]>,
    slot_len: usize,
    lens: Box<[usize]>,
    iov: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
    /// Source addresses of received datagrams, one per slot.
    names: Box<[libc::sockaddr_in]>,
    /// Control buffers of received datagrams (the kernel's receive stamp), one per slot.
    control: Box<[[u64; crate::wait::CONTROL_WORDS]]>,
    /// Kernel receive stamps of received datagrams (ns since the Unix epoch).
    stamps: Box<[Option<u64>]>,
    /// Segment size of each received datagram that the kernel merged (GRO):
    /// the datagram holds several of that size (the last may be shorter).
    segments: Box<[Option<usize>]>,
    /// Destination of the datagrams being sent.
    dest: Box<libc::sockaddr_in>,
}

// SAFETY: the raw pointers inside `iov` and `hdrs` point only into this
// struct's own boxes (see the invariant), so moving the struct to another
// thread moves what they point to along with it; nothing is shared.
unsafe impl Send for Slots {}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots")
            .field("count", &self.lens.len())
            .field("slot_len", &self.slot_len)
            .finish()
    }
}

fn zeroed_sockaddr() -> libc::sockaddr_in {
    to_sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))
}

fn zeroed_mmsghdr() -> libc::mmsghdr {
    // SAFETY: `mmsghdr` is a plain C struct of integers and raw pointers (and,
    // on some targets, private padding); all-zero bytes are a valid value for
    // each of them (null pointers, zero lengths).
    unsafe { mem::zeroed() }
}

impl Slots {
    /// `count` slots of `slot_len` bytes each.
    pub(crate) fn new(count: usize, slot_len: usize) -> Slots {
        assert!(count > 0 && slot_len > 0, "Slots::new({count}, {slot_len})");
        Slots {
            data: vec![0u8; count * slot_len].into_boxed_slice(),
            slot_len,
            lens: vec![0usize; count].into_boxed_slice(),
            iov: vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; count]
                .into_boxed_slice(),
            hdrs: (0..count).map(|_| zeroed_mmsghdr()).collect(),
            names: vec![zeroed_sockaddr(); count].into_boxed_slice(),
            control: vec![[0u64; crate::wait::CONTROL_WORDS]; count].into_boxed_slice(),
            stamps: vec![None; count].into_boxed_slice(),
            segments: vec![None; count].into_boxed_slice(),
            dest: Box::new(zeroed_sockaddr()),
        }
    }

    /// Number of slots.
    pub(crate) fn count(&self) -> usize {
        self.lens.len()
    }

    /// Bytes per slot.
    pub(crate) fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// The whole of slot `i`, to write a packet into.
    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * self.slot_len..(i + 1) * self.slot_len]
    }

    /// Set the length of the packet in slot `i` (bytes to send).
    pub(crate) fn set_len(&mut self, i: usize, len: usize) {
        assert!(len <= self.slot_len);
        self.lens[i] = len;
    }

    /// The packet in slot `i`, mutably (its first `len` bytes as last set).
    pub(crate) fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let start = i * self.slot_len;
        &mut self.data[start..start + self.lens[i]]
    }

    /// The packet in slot `i`: its first `len` bytes as last set or received.
    pub(crate) fn packet(&self, i: usize) -> &[u8] {
        &self.data[i * self.slot_len..i * self.slot_len + self.lens[i]]
    }

    /// Source of the datagram received into slot `i`.
    pub(crate) fn source(&self, i: usize) -> Option<SocketAddrV4> {
        from_sockaddr(&self.names[i])
    }

    /// When the kernel received the datagram in slot `i` (ns since the Unix
    /// epoch), if the socket has receive stamps on.
    pub(crate) fn rx_stamp(&self, i: usize) -> Option<u64> {
        self.stamps[i]
    }

    /// The segment size of the datagram received into slot `i` when the
    /// kernel merged several into it (`UDP_GRO`); `None` for one datagram.
    pub(crate) fn gro_segment(&self, i: usize) -> Option<usize> {
        self.segments[i]
    }

    /// True if the datagram received into slot `i` was larger than the slot.
    pub(crate) fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }

    /// Point the headers `range` at their slots (lengths from `lens` when
    /// sending, the full slot when receiving) and at `name` addresses.
    fn arm(&mut self, range: std::ops::Range<usize>, receive: bool) {
        let base = self.data.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let control = self.control.as_mut_ptr();
        let dest: *mut libc::sockaddr_in = &mut *self.dest;
        for i in range {
            let len = if receive { self.slot_len } else { self.lens[i] };
            // SAFETY: `i < count`, so `i * slot_len` is inside `data` (its
            // length is `count * slot_len`); `add` stays in the allocation.
            let slot = unsafe { base.add(i * self.slot_len) };
            self.iov[i] = libc::iovec { iov_base: slot.cast(), iov_len: len };
            let iov: *mut libc::iovec = &mut self.iov[i];
            let h = &mut self.hdrs[i];
            h.msg_len = 0;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            if receive {
                // SAFETY: `i < count` = `control.len()`.
                h.msg_hdr.msg_control = unsafe { control.add(i) }.cast();
                h.msg_hdr.msg_controllen = mem::size_of::<[u64; crate::wait::CONTROL_WORDS]>() as _;
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
            h.msg_hdr.msg_flags = 0;
            // SAFETY: `i < count` = `names.len()`.
            h.msg_hdr.msg_name = if receive { unsafe { names.add(i) } } else { dest }.cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
    }

    /// Send slots `from..to` (their set lengths) to `dest` with one
    /// `sendmmsg`; returns how many datagrams the kernel took (possibly fewer
    /// than asked: the caller resumes from there). Never blocks.
    pub(crate) fn sendmmsg(
        &mut self,
        fd: RawFd,
        from: usize,
        to: usize,
        dest: SocketAddrV4,
    ) -> io::Result<usize> {
        assert!(from < to && to <= self.count());
        *self.dest = to_sockaddr(dest);
        self.arm(from..to, false);
        // SAFETY: headers `from..to` were just armed: each points at one iovec
        // describing bytes inside `data` and at `dest`, all owned by `self`,
        // which is exclusively borrowed for the call. `vlen` = `to - from`
        // stays within `hdrs`.
        let rc = unsafe {
            libc::sendmmsg(
                fd,
                self.hdrs.as_mut_ptr().add(from),
                (to - from) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc as usize) }
    }

    /// Receive up to `count()` datagrams with one `recvmmsg`, never blocking.
    /// Datagram `i < n` is then `packet(i)` from `source(i)`. `WouldBlock`
    /// means nothing was queued.
    pub(crate) fn recvmmsg(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.count();
        self.arm(0..n, true);
        // SAFETY: all `n` headers were just armed: each points at one iovec of
        // `slot_len` bytes inside `data` and at its own `names[i]` with its
        // size, all owned by the exclusively borrowed `self`. A null timeout
        // is allowed (MSG_DONTWAIT makes the call non-blocking).
        let rc = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = rc as usize;
        for i in 0..got {
            self.lens[i] = (self.hdrs[i].msg_len as usize).min(self.slot_len);
            // SAFETY: recvmmsg filled header `i`, whose control fields describe
            // `control[i]` (armed above, owned by `self`).
            self.stamps[i] = unsafe { crate::wait::parse_rx_timestamp(&self.hdrs[i].msg_hdr) };
            // SAFETY: as above.
            self.segments[i] = unsafe { parse_gro_segment(&self.hdrs[i].msg_hdr) }
                .filter(|&seg| seg > 0 && seg < self.lens[i]);
        }
        Ok(got)
    }

    /// Send slots `from..to` as ONE GSO send (`sendmsg` with a
    /// `UDP_SEGMENT` control message of `slot_len`): the kernel cuts the
    /// bytes into datagrams of `slot_len`, the last one `lens[to - 1]`. The
    /// slots are contiguous in `data`, so one iovec covers them all.
    /// All or nothing: `Ok` means every datagram was taken.
    ///
    /// Callers guarantee what the kernel requires: every slot but the last
    /// is exactly `slot_len` long (padded), `2 <= to - from <=`
    /// [`GSO_MAX_SEGMENTS`], and the total is at most [`GSO_MAX_BYTES`].
    pub(crate) fn send_gso(
        &mut self,
        fd: RawFd,
        from: usize,
        to: usize,
        dest: SocketAddrV4,
    ) -> io::Result<()> {
        assert!(from + 1 < to && to <= self.count() && to - from <= GSO_MAX_SEGMENTS);
        assert!(self.lens[from..to - 1].iter().all(|&l| l == self.slot_len));
        let total = (to - 1 - from) * self.slot_len + self.lens[to - 1];
        assert!(total <= GSO_MAX_BYTES && self.slot_len <= u16::MAX as usize);
        *self.dest = to_sockaddr(dest);
        let start = from * self.slot_len;
        let mut iov = libc::iovec {
            iov_base: self.data[start..start + total].as_mut_ptr().cast(),
            iov_len: total,
        };
        // One cmsg of a u16: CMSG_SPACE(2) is 24 bytes on 64-bit Linux; 4 words hold it aligned.
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data; all-zero is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_name = (&mut *self.dest as *mut libc::sockaddr_in).cast();
        hdr.msg_namelen = mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE is a pure size computation.
        hdr.msg_controllen = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as _;
        // SAFETY: `hdr` describes `control` (32 bytes >= CMSG_SPACE(2) = 24),
        // so CMSG_FIRSTHDR returns a pointer into it, and CMSG_DATA points at
        // its 2 data bytes, inside the same buffer; written unaligned.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&hdr);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), self.slot_len as u16);
        }
        // SAFETY: `hdr` points at one iovec over `total` bytes of `data`, at
        // `dest` and at `control`, all alive and exclusively borrowed for the call.
        let rc = unsafe { libc::sendmsg(fd, &hdr, libc::MSG_DONTWAIT) };
        if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }
}

/// The segment size in a `UDP_GRO` control message of `hdr`, if any.
///
/// # Safety
/// `hdr.msg_control` must be null or point to `hdr.msg_controllen` readable
/// bytes, as left by a successful `recvmsg`/`recvmmsg` on that header.
unsafe fn parse_gro_segment(hdr: &libc::msghdr) -> Option<usize> {
    if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
        return None;
    }
    // SAFETY: the caller guarantees the control buffer; the CMSG_* macros walk
    // only inside `msg_controllen` bytes of it and return null past the end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                let seg: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return usize::try_from(seg).ok();
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    fn v4(s: &UdpSocket) -> SocketAddrV4 {
        match s.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("not v4: {other}"),
        }
    }

    #[test]
    fn sockaddr_round_trip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(239, 1, 2, 3), 30001);
        let sa = to_sockaddr(a);
        assert_eq!(u16::from_be(sa.sin_port), 30001);
        assert_eq!(from_sockaddr(&sa), Some(a));
        let mut bad = sa;
        bad.sin_family = libc::AF_INET6 as libc::sa_family_t;
        assert_eq!(from_sockaddr(&bad), None);
    }

    #[test]
    fn int_options_set_and_read_back() {
        let (a, _) = pair();
        let fd = a.as_raw_fd();
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap();
        assert_eq!(get_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap(), 1);
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 0).unwrap();
        assert_eq!(get_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR).unwrap(), 0);
        // Linux doubles the requested buffer size for bookkeeping.
        set_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, 65_536).unwrap();
        assert_eq!(get_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF).unwrap(), 131_072);
        let err = set_int_opt(-1, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn interfaces_by_name() {
        let lo = ifindex("lo").unwrap();
        assert!(lo > 0);
        let e = ifindex("tw-no-such0").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(e.to_string().contains("tw-no-such0"), "{e}");
        assert!(ifindex("bad\0name").is_err());
        let (a, _) = pair();
        set_multicast_if_index(a.as_raw_fd(), lo).unwrap();
        let e = set_multicast_if_index(a.as_raw_fd(), u32::MAX >> 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
    }

    #[test]
    fn sendmmsg_then_recvmmsg_moves_every_slot_byte_identical() {
        let (a, b) = pair();
        let mut tx = Slots::new(8, 64);
        for i in 0..8 {
            let len = 10 + i * 7;
            tx.slot_mut(i)[..len].iter_mut().enumerate().for_each(|(j, x)| *x = (i * 31 + j) as u8);
            tx.set_len(i, len);
        }
        // Send in two calls to exercise a resume from the middle of the batch.
        assert_eq!(tx.sendmmsg(a.as_raw_fd(), 0, 3, v4(&b)).unwrap(), 3);
        assert_eq!(tx.sendmmsg(a.as_raw_fd(), 3, 8, v4(&b)).unwrap(), 5);

        let mut rx = Slots::new(16, 64);
        let n = rx.recvmmsg(b.as_raw_fd()).unwrap();
        assert_eq!(n, 8);
        for i in 0..8 {
            assert_eq!(rx.packet(i), tx.packet(i), "slot {i}");
            assert_eq!(rx.source(i), Some(v4(&a)));
            assert!(!rx.truncated(i));
        }
        let again = rx.recvmmsg(b.as_raw_fd()).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn oversized_datagram_is_flagged_truncated() {
        let (a, b) = pair();
        a.send_to(&[7u8; 100], b.local_addr().unwrap()).unwrap();
        let mut rx = Slots::new(2, 40);
        assert_eq!(rx.recvmmsg(b.as_raw_fd()).unwrap(), 1);
        assert!(rx.truncated(0));
        assert_eq!(rx.packet(0), &[7u8; 40][..]);
    }

    #[test]
    fn wait_reports_readiness_and_times_out() {
        let (a, b) = pair();
        let mut fds = [libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        assert_eq!(wait(&mut fds, Some(Duration::ZERO)).unwrap(), 0);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert_eq!(wait(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert_ne!(fds[0].revents & libc::POLLIN, 0);
        assert!(wait_writable(a.as_raw_fd(), Duration::ZERO).unwrap());
    }

    #[test]
    fn slots_move_to_another_thread() {
        let (a, b) = pair();
        let mut tx = Slots::new(2, 16);
        tx.slot_mut(0)[..3].copy_from_slice(b"abc");
        tx.set_len(0, 3);
        let dest = v4(&b);
        let sent = std::thread::spawn(move || tx.sendmmsg(a.as_raw_fd(), 0, 1, dest).unwrap())
            .join()
            .unwrap();
        assert_eq!(sent, 1);
        let mut buf = [0u8; 8];
        let mut fds = [libc::pollfd { fd: b.as_raw_fd(), events: libc::POLLIN, revents: 0 }];
        wait(&mut fds, Some(Duration::from_secs(5))).unwrap();
        let (n, _) = b.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"abc");
    }
}
