//! The xdp namespace topology, and whether this process may make it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::bail;

use crate::NS_PREFIX;

/// Euid 0, from /proc/self/status (`Uid: real effective saved fs`).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// The xdp namespace topology; removed on drop.
#[derive(Debug)]
pub(crate) struct Topology {
    /// Path of topology.sh.
    script: PathBuf,
}

impl Topology {
    /// `topology.sh up twlat 1`: server namespace, bridge, one client namespace.
    pub(crate) fn up(script: PathBuf) -> anyhow::Result<Topology> {
        eprintln!("latency: {} up {NS_PREFIX} 1", script.display());
        let out = Command::new(&script).args(["up", NS_PREFIX, "1"]).output()?;
        let topo = Topology { script };
        if !out.status.success() {
            bail!(
                "topology.sh up failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(topo)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        eprintln!("latency: {} down {NS_PREFIX} 1", self.script.display());
        let _ = Command::new(&self.script)
            .args(["down", NS_PREFIX, "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
