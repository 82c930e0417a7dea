//! What this kernel and this machine offer, asked before something needs it.
//!
//! Machines of one image do not all run the same kernel: one has multicast
//! routing, the next was built without it (`# CONFIG_IP_MROUTE is not set`).
//! Whatever depends on such a feature — a router host, the routed tests,
//! busy polling, AF_XDP, network namespaces — asks here first and, when the
//! answer is no, says so in words a user can act on ([`Missing`]) instead of
//! failing half-way through its set-up.
//!
//! The checks that read a file take their roots from [`Kernel`], so the
//! decision is a function of what the kernel exposes and is tested both ways
//! on a fake `/proc` ([`Kernel::at`]).
//!
//! ```
//! use tickwire_transports::kernel::Kernel;
//!
//! match Kernel::host().multicast_routing() {
//!     Ok(()) => println!("this host can route multicast"),
//!     Err(missing) => println!("skipped: {missing}"),
//! }
//! ```

#![allow(unsafe_code)] // geteuid(2) and socket(2)/setsockopt(2)/close(2) probes: libc calls on plain integers

use std::fmt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// A feature this machine lacks, and why that matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// The feature, short (`multicast routing`, `AF_XDP`, ...).
    pub feature: &'static str,
    /// The sentence to print: what is missing, the kernel option or package
    /// that provides it, and what needs it.
    pub reason: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Missing {}

/// The kernel's view of itself: the `/proc` tree the checks read.
#[derive(Clone, Debug)]
pub struct Kernel {
    proc_root: PathBuf,
}

impl Kernel {
    /// The running kernel (`/proc`).
    pub fn host() -> Kernel {
        Kernel::at("/proc")
    }

    /// A kernel whose `/proc` is the given directory (tests).
    pub fn at(proc_root: impl Into<PathBuf>) -> Kernel {
        Kernel { proc_root: proc_root.into() }
    }

    fn proc(&self, rel: &str) -> PathBuf {
        self.proc_root.join(rel)
    }

    /// IPv4 multicast forwarding (`CONFIG_IP_MROUTE`): a multicast router
    /// (smcroute, `xdp-setup/routed.sh`) needs it. The kernel has it exactly
    /// when `/proc/net/ip_mr_vif` exists.
    pub fn multicast_routing(&self) -> Result<(), Missing> {
        if self.proc("net/ip_mr_vif").exists() {
            return Ok(());
        }
        Err(Missing {
            feature: "multicast routing",
            reason: "this kernel has no multicast routing (CONFIG_IP_MROUTE; \
                     /proc/net/ip_mr_vif is absent): a multicast router (smcroute, \
                     xdp-setup/routed.sh) and the routed tests need it"
                .into(),
        })
    }
}

/// Root, with network namespaces: `ip netns` and veth pairs need
/// CAP_NET_ADMIN, and the `ip` command (iproute2).
pub fn netns() -> Result<(), Missing> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Missing {
            feature: "network namespaces",
            reason: "needs root and network namespaces (CAP_NET_ADMIN)".into(),
        });
    }
    command("ip", "-V", "the `ip` command (iproute2)")
}

/// Socket busy polling (`CONFIG_NET_RX_BUSY_POLL`): `SO_BUSY_POLL` and
/// `SO_PREFER_BUSY_POLL` need it. Asked of a UDP socket (setting 0 µs, which
/// needs no privilege): a kernel without it refuses the option
/// (`ENOPROTOOPT`). Not a file: `net.core.busy_poll` exists only in the
/// initial network namespace's `/proc/sys`.
pub fn busy_poll() -> Result<(), Missing> {
    /// `SO_BUSY_POLL` from `asm-generic/socket.h`.
    const SO_BUSY_POLL: libc::c_int = 46;
    // SAFETY: plain socket(2); the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(Missing { feature: "busy polling", reason: format!("no UDP socket: {e}") });
    }
    let zero: libc::c_int = 0;
    // SAFETY: `zero` is a live c_int and the length passed is its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_BUSY_POLL,
            (&zero as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let e = std::io::Error::last_os_error();
    // SAFETY: fd was opened above and is closed once.
    unsafe { libc::close(fd) };
    if r == 0 {
        return Ok(());
    }
    let reason = if e.raw_os_error() == Some(libc::ENOPROTOOPT) {
        "this kernel has no socket busy polling (CONFIG_NET_RX_BUSY_POLL): SO_BUSY_POLL needs it"
            .to_string()
    } else {
        format!("SO_BUSY_POLL refused: {e}")
    };
    Err(Missing { feature: "busy polling", reason })
}

/// AF_XDP sockets (`CONFIG_XDP_SOCKETS`): asked by opening one.
pub fn af_xdp() -> Result<(), Missing> {
    // SAFETY: plain socket(2); the descriptor is closed at once.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let reason = match e.raw_os_error() {
            Some(libc::EAFNOSUPPORT) => {
                "this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)".to_string()
            }
            Some(libc::EPERM) | Some(libc::EACCES) => {
                format!("AF_XDP sockets need root (CAP_NET_RAW and CAP_BPF): {e}")
            }
            _ => format!("AF_XDP sockets unavailable: {e}"),
        };
        return Err(Missing { feature: "AF_XDP", reason });
    }
    // SAFETY: fd was just opened by this function and is closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `program` can be started from `PATH` (`program arg` exits 0); `what`
/// names it for the user, with the package that brings it.
pub fn command(program: &str, arg: &str, what: &str) -> Result<(), Missing> {
    let ran = Command::new(program)
        .arg(arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(s) if s.success() => Ok(()),
        _ => Err(Missing {
            feature: "a program",
            reason: format!("{what} is not installed (xdp-setup/install-deps.sh installs it)"),
        }),
    }
}

/// The file that [`skip`] appends to, when set (`scripts/test.sh` sets it):
/// cargo shows a passing test's stderr only with `--nocapture`, so the
/// suite's summary lists and counts skips from this file.
pub const SKIP_LOG_ENV: &str = "TICKWIRE_SKIP_LOG";

/// Say loudly that `test` did not run, and why: `SKIPPED: <test>: <why>` on
/// stderr and, when [`SKIP_LOG_ENV`] names a file, the same line appended to
/// it. Call it, then return from the test.
pub fn skip(test: &str, why: impl fmt::Display) {
    log_skip(&format!("SKIPPED: {test}: {why}"));
}

/// Say that one part of `test` did not run, and why (the rest of the test
/// ran): `SKIPPED (part): <test>: <why>`, listed but not counted as a skipped test.
pub fn skip_part(test: &str, why: impl fmt::Display) {
    log_skip(&format!("SKIPPED (part): {test}: {why}"));
}

fn log_skip(line: &str) {
    eprintln!("{line}");
    append_line(std::env::var_os(SKIP_LOG_ENV).as_deref(), line);
}

fn append_line(path: Option<&std::ffi::OsStr>, line: &str) {
    if let Some(path) = path {
        use std::io::Write;
        // One write of one line with O_APPEND: lines of parallel tests do not interleave.
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()));
        if let Err(e) = written {
            eprintln!("warning: could not append to {}: {e}", PathBuf::from(path).display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake kernel tree under the target directory, removed on drop.
    struct FakeTree(PathBuf);

    impl FakeTree {
        fn new(tag: &str) -> FakeTree {
            let dir =
                std::env::temp_dir().join(format!("tickwire-kernel-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("proc/net")).unwrap();
            FakeTree(dir)
        }
        fn kernel(&self) -> Kernel {
            Kernel::at(self.0.join("proc"))
        }
        fn touch(&self, rel: &str) {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        }
    }

    impl Drop for FakeTree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn multicast_routing_follows_ip_mr_vif_both_ways() {
        let t = FakeTree::new("mroute");
        let e = t.kernel().multicast_routing().unwrap_err();
        assert_eq!(e.feature, "multicast routing");
        assert!(e.reason.starts_with("this kernel has no multicast routing (CONFIG_IP_MROUTE"));
        assert!(e.reason.contains("the routed tests need it"), "{e}");
        t.touch("proc/net/ip_mr_vif");
        assert_eq!(t.kernel().multicast_routing(), Ok(()));
    }

    #[test]
    fn skips_are_appended_to_the_log_one_line_each() {
        let log = std::env::temp_dir().join(format!("tickwire-skiplog-{}", std::process::id()));
        let _ = std::fs::remove_file(&log);
        append_line(Some(log.as_os_str()), "SKIPPED: a: why");
        append_line(Some(log.as_os_str()), "SKIPPED (part): b: why not");
        append_line(None, "SKIPPED: c: nowhere");
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "SKIPPED: a: why\nSKIPPED (part): b: why not\n");
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn a_missing_command_names_the_install_script() {
        let e = command("tickwire-no-such-program", "--version", "the frobnicator").unwrap_err();
        assert_eq!(
            e.reason,
            "the frobnicator is not installed (xdp-setup/install-deps.sh installs it)"
        );
    }
}
