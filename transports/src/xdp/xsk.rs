//! Opening an AF_XDP socket with xsk-rs: UMEM, the four rings, the bind-mode
//! fallback (zero-copy, then copy/SKB), the bounded EBUSY retry, clear errors.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use xsk_rs::config::{
    BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig, XdpFlags,
};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use super::sys;
use super::{BindMode, XdpAttach, XdpConfig, ZeroCopy};

/// Attempts at binding while the queue reports EBUSY. Teardown of a previous
/// socket on the same queue is asynchronous (FACTS pitfall 6): a few hundred
/// milliseconds is what it takes on a loaded 2-core VM; 8 attempts with a
/// doubling back-off from [`BIND_RETRY_FIRST_DELAY`] wait 1.3 s in total.
pub const BIND_RETRY_ATTEMPTS: u32 = 8;
/// First back-off after EBUSY; doubles on each further attempt.
pub const BIND_RETRY_FIRST_DELAY: Duration = Duration::from_millis(5);

/// Who installs the XDP program that steers received frames into the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Steering {
    /// None: the socket only transmits (publisher). No program is attached, so
    /// the interface's kernel stack is untouched (ARP, requests still work).
    TxOnly,
    /// libxdp's default program: every frame of the queue goes to the socket.
    LibxdpDefault,
    /// The caller attaches its own program and inserts the socket in its map.
    Own,
}

/// An open AF_XDP socket. Field order is drop order: the four rings (each
/// holding the socket) go before the UMEM, as libxdp requires.
pub(crate) struct Xsk {
    pub tx: TxQueue,
    pub rx: RxQueue,
    pub fq: FillQueue,
    pub cq: CompQueue,
    pub umem: Umem,
    /// Every frame of the UMEM, as handed out by [`Umem::new`].
    pub frames: Vec<FrameDesc>,
    pub mode: BindMode,
    pub fd: RawFd,
    /// Bytes a frame holds after the kernel's XDP headroom.
    pub frame_room: usize,
    /// Why zero-copy was not used, when it was tried and refused.
    pub zero_copy_refused: Option<String>,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk").field("fd", &self.fd).field("mode", &self.mode).finish()
    }
}

/// The bind attempts to make, in order, for a zero-copy policy and steering.
fn attempts(zc: ZeroCopy, steering: Steering) -> Vec<BindMode> {
    let attach_zc = match steering {
        Steering::TxOnly => XdpAttach::None,
        _ => XdpAttach::Driver,
    };
    let attach_copy = match steering {
        Steering::TxOnly => XdpAttach::None,
        _ => XdpAttach::Skb,
    };
    let zc_mode = BindMode { zero_copy: true, attach: attach_zc };
    let copy_mode = BindMode { zero_copy: false, attach: attach_copy };
    match zc {
        ZeroCopy::Auto => vec![zc_mode, copy_mode],
        ZeroCopy::Always => vec![zc_mode],
        ZeroCopy::Never => vec![copy_mode],
    }
}

/// Open and bind a socket on `cfg.ifname` / `cfg.queue`, trying the bind modes
/// `cfg.zero_copy` allows. `role` names the caller in errors and the log line.
pub(crate) fn open(cfg: &XdpConfig, steering: Steering, role: &str) -> io::Result<Xsk> {
    sys::probe_af_xdp()?;
    sys::if_info(&cfg.ifname)?;
    let frame_count =
        NonZeroU32::new(cfg.frame_count).ok_or_else(|| invalid("frame_count must be positive"))?;
    let frame_size = FrameSize::new(cfg.frame_size)
        .map_err(|e| invalid(&format!("frame_size {}: {e}", cfg.frame_size)))?;
    let ring = QueueSize::new(cfg.ring_size)
        .map_err(|e| invalid(&format!("ring_size {}: {e}", cfg.ring_size)))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(frame_size)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .frame_headroom(0)
        .build()
        .map_err(|e| invalid(&format!("UMEM config: {e}")))?;
    let ifname: Interface =
        cfg.ifname.parse().map_err(|_| invalid("interface name contains a NUL byte"))?;

    let mut refused: Option<String> = None;
    let modes = attempts(cfg.zero_copy, steering);
    let mut last_err = None;
    for (i, mode) in modes.iter().enumerate() {
        let last = i + 1 == modes.len();
        match bind_with_retry(cfg, &ifname, umem_cfg, frame_count, ring, steering, *mode) {
            Ok(mut xsk) => {
                xsk.zero_copy_refused = refused;
                if cfg.busy_poll {
                    sys::set_busy_poll(xsk.fd, cfg.busy_poll_usecs, cfg.busy_poll_budget)?;
                }
                eprintln!(
                    "tickwire-xdp: {role} bound {} queue {} in {}{}{}",
                    cfg.ifname,
                    cfg.queue,
                    xsk.mode,
                    match &xsk.zero_copy_refused {
                        Some(r) => format!(" (zero-copy refused: {r})"),
                        None => String::new(),
                    },
                    if cfg.busy_poll { ", busy polling on" } else { "" },
                );
                return Ok(xsk);
            }
            Err((errno, waited)) => {
                let fatal = matches!(errno, Some(libc::EPERM | libc::EACCES | libc::EBUSY));
                if mode.zero_copy && !last && !fatal {
                    refused = Some(match errno {
                        Some(n) => io::Error::from_raw_os_error(n).to_string(),
                        None => "no error code".to_string(),
                    });
                    continue;
                }
                let e = bind_error(cfg, *mode, errno, waited);
                last_err = Some(match (&refused, mode.zero_copy) {
                    (Some(r), false) => io::Error::new(
                        e.kind(),
                        format!("{e} (zero-copy was tried first and refused: {r})"),
                    ),
                    _ => e,
                });
                break;
            }
        }
    }
    Err(last_err.unwrap_or_else(|| invalid("no bind mode to try")))
}

fn bind_with_retry(
    cfg: &XdpConfig,
    ifname: &Interface,
    umem_cfg: UmemConfig,
    frame_count: NonZeroU32,
    ring: QueueSize,
    steering: Steering,
    mode: BindMode,
) -> Result<Xsk, (Option<i32>, Duration)> {
    let mut delay = BIND_RETRY_FIRST_DELAY;
    let mut waited = Duration::ZERO;
    for attempt in 1..=BIND_RETRY_ATTEMPTS {
        match bind_once(ifname, cfg.queue, umem_cfg, frame_count, ring, steering, mode) {
            Ok(x) => return Ok(x),
            Err(errno) if errno == Some(libc::EBUSY) && attempt < BIND_RETRY_ATTEMPTS => {
                std::thread::sleep(delay);
                waited += delay;
                delay *= 2;
            }
            Err(errno) => return Err((errno, waited)),
        }
    }
    Err((Some(libc::EBUSY), waited))
}

/// One attempt; on failure, the errno (if the error carried one). A fresh
/// UMEM per attempt: a failed bind may leave the old one's rings configured.
fn bind_once(
    ifname: &Interface,
    queue: u32,
    umem_cfg: UmemConfig,
    frame_count: NonZeroU32,
    ring: QueueSize,
    steering: Steering,
    mode: BindMode,
) -> Result<Xsk, Option<i32>> {
    let (umem, frames) = Umem::new(umem_cfg, frame_count, false).map_err(|e| errno_of(&e))?;
    let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
    bind |= if mode.zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
    let xdp = match mode.attach {
        XdpAttach::Driver => XdpFlags::XDP_FLAGS_DRV_MODE,
        XdpAttach::Skb => XdpFlags::XDP_FLAGS_SKB_MODE,
        XdpAttach::None => XdpFlags::empty(),
    };
    let libxdp = match steering {
        Steering::LibxdpDefault => LibxdpFlags::empty(),
        Steering::TxOnly | Steering::Own => LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD,
    };
    let sock_cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .bind_flags(bind)
        .xdp_flags(xdp)
        .libxdp_flags(libxdp)
        .build();
    // SAFETY: the UMEM was created just above and is used by this socket only,
    // so the (interface, queue) pair is not bound from it already — the
    // condition under which xsk-rs requires INHIBIT_PROG_LOAD does not arise.
    let (tx, rx, fq_cq) =
        unsafe { Socket::new(sock_cfg, &umem, ifname, queue) }.map_err(|e| errno_of(&e))?;
    // A UMEM not shared with another socket always yields its fill and
    // completion rings; their absence would be an xsk-rs bug, reported as EINVAL.
    let (fq, cq) = fq_cq.ok_or(Some(libc::EINVAL))?;
    let fd = tx.fd().as_raw_fd();
    let frame_room = umem_cfg.mtu() as usize;
    Ok(Xsk { tx, rx, fq, cq, umem, frames, mode, fd, frame_room, zero_copy_refused: None })
}

fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        cur = err.source();
    }
    None
}

fn bind_error(cfg: &XdpConfig, mode: BindMode, errno: Option<i32>, waited: Duration) -> io::Error {
    let (ifn, q) = (&cfg.ifname, cfg.queue);
    let os = errno.map(io::Error::from_raw_os_error);
    let os_txt = os.as_ref().map(|e| e.to_string()).unwrap_or_else(|| "no error code".into());
    match errno {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            io::Error::new(io::ErrorKind::PermissionDenied, sys::NEED_PRIVILEGES)
        }
        Some(libc::EBUSY) => io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "queue {q} of {ifn} is busy after {BIND_RETRY_ATTEMPTS} attempts over {} ms: \
                 another AF_XDP socket or XDP program holds it, or a previous socket's \
                 teardown has not finished (`ip link show {ifn}` shows an attached program)",
                waited.as_millis()
            ),
        ),
        Some(libc::ENOMEM) | Some(libc::ENOBUFS) => io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!(
                "could not register {} UMEM frames of {} bytes ({os_txt}): lower frame_count \
                 or raise the locked-memory limit (`ulimit -l`)",
                cfg.frame_count, cfg.frame_size
            ),
        ),
        Some(libc::EINVAL) | Some(libc::ENODEV) | Some(libc::ENXIO) => io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "binding {ifn} queue {q} in {mode} failed ({os_txt}): check that the queue \
                 exists (`ethtool -l {ifn}`; a veth has queue 0 only) and the interface is up"
            ),
        ),
        Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT) => io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{ifn} does not support {mode} ({os_txt}): use ZeroCopy::Auto or Never"),
        ),
        _ => io::Error::other(format!(
            "binding an AF_XDP socket to {ifn} queue {q} in {mode} failed: {os_txt}"
        )),
    }
}

fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}
