//! Process-level helpers the binaries share: CPU pinning and CPU-time accounting.

#![allow(unsafe_code)] // sched_{get,set}affinity and getrusage: libc calls on owned plain data

use std::io;
use std::time::Duration;

/// The CPUs this process may run on, from `sched_getaffinity`.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data (zero is the empty set); sched_getaffinity
    // writes at most size_of::<cpu_set_t>() bytes into the set we own, and
    // CPU_ISSET reads a bit inside it (i < CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let n = 8 * std::mem::size_of::<libc::cpu_set_t>();
        Some((0..n).filter(|&i| libc::CPU_ISSET(i, &set)).collect())
    }
}

/// Pin the calling thread to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "cpu index too large"));
    }
    // SAFETY: cpu_set_t is plain data, zero is a valid empty set; CPU_SET writes
    // bit `cpu`, which is inside the set (checked above); sched_setaffinity only
    // reads the set we own, for the calling thread (pid 0).
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CPU time this process has used, user and system apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time in user space.
    pub user: Duration,
    /// Time in the kernel (system calls, and the softirq work charged to us).
    pub sys: Duration,
}

impl CpuTimes {
    /// User plus system.
    pub fn total(&self) -> Duration {
        self.user + self.sys
    }

    /// The time spent since `earlier`.
    pub fn since(&self, earlier: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

/// CPU time this process has used so far (`getrusage(RUSAGE_SELF)`).
pub fn cpu_times() -> CpuTimes {
    // SAFETY: rusage is plain data; getrusage fills the struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    CpuTimes { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    cpu_times().total()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_advances_with_work() {
        let before = cpu_time();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time() > before);
    }

    #[test]
    fn pin_rejects_absurd_cpu() {
        assert!(pin_to_cpu(1 << 20).is_err());
        pin_to_cpu(0).expect("CPU 0 exists");
    }
}
