//! Network-namespace topologies for end-to-end tests that must cross a real
//! (bridged) network: `xdp-setup/topology.sh` with a prefix unique to the test,
//! torn down on drop. Root only: [`Topology::up`] returns `None` (after printing
//! a loud `SKIPPED:` line) when the test cannot make namespaces.
//!
//! Layout (see topology.sh): `<p>srv` (eth0 10.77.0.1) ── `<p>mid` (br0, the
//! loss point) ── `<p>cliN` (eth0 10.77.0.(10+N)). Addresses exist only inside
//! the namespaces.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

/// Address of the server namespace's interface.
pub const SERVER_IP: &str = "10.77.0.1";

/// Address of client namespace `n` (1-based).
pub fn client_ip(n: usize) -> String {
    format!("10.77.0.{}", 10 + n)
}

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xdp-setup")
}

/// True when running as root (namespaces need CAP_NET_ADMIN).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// One test's topology.
#[derive(Debug)]
pub struct Topology {
    /// Namespace-name prefix (short: interface-name limits).
    pub prefix: String,
    /// Number of client namespaces.
    pub clients: usize,
}

impl Topology {
    /// Make a topology with `clients` client namespaces, or print
    /// `SKIPPED: <test>: <reason>` and return `None` when it cannot be made.
    pub fn up(test: &str, tag: &str, clients: usize) -> Option<Topology> {
        if let Err(m) = tickwire_transports::kernel::netns() {
            tickwire_transports::kernel::skip(test, m);
            return None;
        }
        // Unique per process and test: the pid keeps parallel test runs apart.
        let prefix = format!("t{}{}", tag, std::process::id() % 100_000);
        let t = Topology { prefix, clients };
        let out = Command::new(scripts().join("topology.sh"))
            .args(["up", &t.prefix, &clients.to_string()])
            .output()
            .expect("running topology.sh");
        // A failure here is a failure: topology.sh needs nothing this check
        // has not seen (root, iproute2, veth and bridges, which every kernel
        // of the image has); what a kernel may lack is checked where used.
        assert!(
            out.status.success(),
            "topology.sh up {} failed: {}{}",
            t.prefix,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(t)
    }

    /// True when random loss can be applied on the bridge here; otherwise
    /// prints `SKIPPED: <test>: <reason>` (netem.sh found no mechanism: exit 4).
    pub fn loss_or_skip(&self, test: &str) -> bool {
        loss_or_skip(test, &self.mid_ns(), "br0")
    }

    /// Server namespace.
    pub fn server_ns(&self) -> String {
        format!("{}srv", self.prefix)
    }

    /// Bridge (loss point) namespace.
    pub fn mid_ns(&self) -> String {
        format!("{}mid", self.prefix)
    }

    /// Client namespace `n` (1-based).
    pub fn client_ns(&self, n: usize) -> String {
        format!("{}cli{n}", self.prefix)
    }

    /// A command that runs `program` inside namespace `ns`.
    pub fn command_in(&self, ns: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c.stdout(Stdio::piped()).stderr(Stdio::inherit());
        c
    }

    /// Apply `percent`% random loss on the bridge with netem.sh; returns what it printed.
    pub fn set_loss(&self, percent: f64) -> String {
        let out = Command::new(scripts().join("netem.sh"))
            .args(["-n", &self.mid_ns(), "br0", &percent.to_string()])
            .output()
            .expect("running netem.sh");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "netem.sh failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{text}");
        text
    }

    /// Packets the bridge's loss rule dropped so far (`netem.sh status`).
    pub fn dropped(&self) -> Option<u64> {
        let out = Command::new(scripts().join("netem.sh"))
            .args(["-n", &self.mid_ns(), "br0", "status"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("dropped="))
            .and_then(|n| n.parse().ok())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(scripts().join("netem.sh"))
            .args(["-n", &self.mid_ns(), "br0", "clear"])
            .output();
        let _ = Command::new(scripts().join("topology.sh"))
            .args(["down", &self.prefix, &self.clients.to_string()])
            .output();
    }
}

/// True when `netem.sh` can apply loss on `dev` in `ns` (it tries 1% and
/// clears it); otherwise prints `SKIPPED: <test>: <what netem.sh said>` when
/// no mechanism exists here (its exit code 4), and fails on any other error.
pub fn loss_or_skip(test: &str, ns: &str, dev: &str) -> bool {
    let out = Command::new(scripts().join("netem.sh"))
        .args(["-n", ns, dev, "1"])
        .output()
        .expect("running netem.sh");
    let _ = Command::new(scripts().join("netem.sh")).args(["-n", ns, dev, "clear"]).output();
    match out.status.code() {
        Some(0) => true,
        Some(4) => {
            let why = String::from_utf8_lossy(&out.stderr);
            tickwire_transports::kernel::skip(test, why.trim().trim_start_matches("netem.sh: "));
            false
        }
        _ => panic!(
            "netem.sh -n {ns} {dev} 1 failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
