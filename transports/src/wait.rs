//! Precise waiting and kernel receive timestamps, shared by every transport.
//!
//! **No wait is rounded to milliseconds.** mio's `Poll::poll` and `poll(2)`
//! take whole milliseconds (mio rounds a 50 µs timeout up to 1 ms), so every
//! transport waits through [`wait_fds`], which calls `ppoll(2)` with a
//! `timespec`: the kernel arms a high-resolution timer for the exact
//! duration. A mio-based transport waits for its epoll descriptor to become
//! readable this way, then collects the events with a zero timeout.
//! `ppoll` has been in Linux since 2.6.16, so there is nothing to fall back
//! from (`epoll_pwait2` would save the second call, but only from 5.11).
//!
//! The kernel still adds the thread's *timer slack* (50 µs by default) to every
//! such timer; [`set_min_timer_slack`] lowers it to 1 ns for the calling
//! thread. Even then a 50 µs sleep lasts 75–90 µs on these VMs (the wake-up
//! itself costs), which is why the idle strategies spin close to a deadline
//! (see [`crate::idle`]).
//!
//! Receive timestamps: [`enable_rx_timestamps`] sets `SO_TIMESTAMPNS`, after
//! which every `recvmsg` carries an `SCM_TIMESTAMPNS` control message: the
//! wall-clock instant the kernel took the packet in (for TCP: of the last
//! segment the read returned). [`parse_rx_timestamp`] reads it.

#![allow(unsafe_code)] // poll(2), recvmsg control messages and socket options

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Set the calling thread's timer slack to 1 ns, the minimum (`prctl(2)`
/// `PR_SET_TIMERSLACK`; 0 would mean "back to the default"), so timed waits
/// end when asked rather than up to 50 µs later.
pub fn set_min_timer_slack() -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The calling thread's timer slack, in ns.
pub fn timer_slack_ns() -> io::Result<u64> {
    // SAFETY: PR_GET_TIMERSLACK takes no argument and returns the value.
    let rc = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) };
    if rc >= 0 { Ok(rc as u64) } else { Err(io::Error::last_os_error()) }
}

/// The `timespec` a timeout reaches the kernel as: exact to the nanosecond
/// (`None`: wait forever).
pub fn timespec(timeout: Option<Duration>) -> Option<libc::timespec> {
    timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    })
}

/// Wait until one of `fds` is ready or `timeout` passes (`None`: forever),
/// with nanosecond resolution. Returns how many descriptors are ready; an
/// interrupted wait returns 0 (a spurious wake-up, which the polling contract
/// allows).
pub fn wait_fds(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    for p in fds.iter_mut() {
        p.revents = 0;
    }
    let ts = timespec(timeout);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `fds` is a valid, exclusively borrowed slice of `pollfd` whose
    // length we pass; `ts_ptr` is null or points to a timespec that outlives the
    // call; a null signal mask leaves the mask unchanged.
    let rc = unsafe {
        libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, std::ptr::null())
    };
    if rc >= 0 {
        return Ok(rc as usize);
    }
    let err = io::Error::last_os_error();
    if err.kind() == io::ErrorKind::Interrupted { Ok(0) } else { Err(err) }
}

/// Wait precisely until `fd` is readable or `timeout` passes; see [`wait_fds`].
pub fn wait_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let mut pfd = [libc::pollfd { fd, events: libc::POLLIN, revents: 0 }];
    Ok(wait_fds(&mut pfd, timeout)? > 0)
}

/// `mio::Poll::poll` without its millisecond rounding: a nonzero timeout is
/// waited out precisely on the epoll descriptor itself (readable when events
/// are ready; waiting does not consume them), then the events are collected
/// with a zero timeout. An interrupted wait is a spurious wake-up.
pub fn poll_mio(
    poll: &mut mio::Poll,
    events: &mut mio::Events,
    timeout: Option<Duration>,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let collect = match timeout {
        Some(d) if !d.is_zero() => {
            wait_readable(poll.as_raw_fd(), Some(d))?;
            Some(Duration::ZERO)
        }
        other => other,
    };
    match poll.poll(events, collect) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

/// A `Read` over a socket that remembers the kernel's receive stamp of the
/// last read (see [`recv_stamped`]).
#[derive(Debug)]
pub struct StampedReader {
    fd: RawFd,
    /// The stamp of the last successful read (`None`: the kernel gave none).
    pub stamp: Option<u64>,
}

impl StampedReader {
    /// A reader over `fd` (borrowed: the caller keeps it open).
    pub fn new(fd: RawFd) -> StampedReader {
        StampedReader { fd, stamp: None }
    }
}

impl io::Read for StampedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (n, stamp) = recv_stamped(self.fd, buf)?;
        self.stamp = stamp;
        Ok(n)
    }
}

/// Ask the kernel to stamp every packet `fd` receives (`SO_TIMESTAMPNS`).
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: SO_TIMESTAMPNS takes an int; we pass a pointer to one and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Bytes of control buffer a receive needs for one `SCM_TIMESTAMPNS`, in
/// `u64` words (so the buffer is aligned for `cmsghdr`): `CMSG_SPACE` of a
/// `timespec` is 32 bytes on 64-bit Linux; 64 leave room for one more message.
pub const CONTROL_WORDS: usize = 8;

/// The `SCM_TIMESTAMPNS` a `recvmsg` filled into `hdr`'s control buffer, in
/// ns since the Unix epoch (`None` if the kernel gave none).
///
/// # Safety
/// `hdr.msg_control` must be null or point to `hdr.msg_controllen` readable
/// bytes, as left by a successful `recvmsg`/`recvmmsg` on that header.
pub unsafe fn parse_rx_timestamp(hdr: &libc::msghdr) -> Option<u64> {
    if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
        return None;
    }
    // SAFETY: the caller guarantees the control buffer; the CMSG_* macros only
    // walk inside `msg_controllen` bytes of it and return null past the end.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(hdr);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(hdr, c);
        }
    }
    None
}

/// One `recvmsg` into `buf` that also returns the kernel's receive stamp.
/// Never blocks (`MSG_DONTWAIT`); `WouldBlock` when nothing is queued.
pub fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut control = [0u64; CONTROL_WORDS];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
    hdr.msg_iov = &mut iov;
    hdr.msg_iovlen = 1;
    hdr.msg_control = control.as_mut_ptr().cast();
    hdr.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `hdr` points at one iovec over `buf` and at `control`, both
    // exclusively borrowed and alive for the call.
    let rc = unsafe { libc::recvmsg(fd, &mut hdr, libc::MSG_DONTWAIT) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: recvmsg succeeded on `hdr`: its control fields describe `control`.
    let stamp = unsafe { parse_rx_timestamp(&hdr) };
    Ok((rc as usize, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_50us_timeout_reaches_the_kernel_as_50us() {
        let ts = timespec(Some(Duration::from_micros(50))).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (0, 50_000), "not rounded to a millisecond");
        let ts = timespec(Some(Duration::new(3, 7))).unwrap();
        assert_eq!((ts.tv_sec, ts.tv_nsec), (3, 7));
        assert!(timespec(None).is_none());
    }

    #[test]
    fn a_50us_wait_ends_well_before_a_millisecond() {
        // Behaviour, not speed: a millisecond-rounding waiter never returns
        // before 1 ms; the best of 20 precise 50 µs waits does, by far, even
        // on a loaded machine (the kernel may only ever wake us late).
        set_min_timer_slack().unwrap();
        assert_eq!(timer_slack_ns().unwrap(), 1);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let best = (0..20)
            .map(|_| {
                let t = std::time::Instant::now();
                assert!(!wait_readable(s.as_raw_fd(), Some(Duration::from_micros(50))).unwrap());
                t.elapsed()
            })
            .min()
            .unwrap();
        assert!(best >= Duration::from_micros(50), "waited the full timeout: {best:?}");
        assert!(best < Duration::from_micros(900), "best 50 µs wait took {best:?}");
    }

    #[test]
    fn udp_receive_carries_the_kernel_stamp() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_rx_timestamps(b.as_raw_fd()).unwrap();
        let before =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64;
        a.send_to(b"tick", b.local_addr().unwrap()).unwrap();
        assert!(wait_readable(b.as_raw_fd(), Some(Duration::from_secs(2))).unwrap());
        let mut buf = [0u8; 16];
        let (n, stamp) = recv_stamped(b.as_raw_fd(), &mut buf).unwrap();
        let after =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64;
        assert_eq!(&buf[..n], b"tick");
        let stamp = stamp.expect("SO_TIMESTAMPNS gives a stamp");
        assert!((before..=after).contains(&stamp), "{before} <= {stamp} <= {after}");
        // Without the option, no stamp.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(b"x", c.local_addr().unwrap()).unwrap();
        assert!(wait_readable(c.as_raw_fd(), Some(Duration::from_secs(2))).unwrap());
        assert_eq!(recv_stamped(c.as_raw_fd(), &mut buf).unwrap(), (1, None));
    }
}
