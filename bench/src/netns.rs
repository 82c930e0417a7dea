//! The namespace topology the netns cells run on, and real kernel loss on
//! its bridge (what `xdp-setup/topology.sh` and `xdp-setup/netem.sh` do, by
//! `ip`, `ethtool`, `tc` and `nft`).
//!
//! ```text
//! netns <p>srv              netns <p>mid                        netns <p>cliN
//! eth0 10.77.0.1/24 ══ veth ══ vsrv ─┐                   ┌─ vcliN ══ veth ══ eth0 10.77.0.(10+N)/24
//!                                    └──── br0 (bridge) ─┘
//!                              loss: netem on each port, or nftables on the bridge's forward hook
//! ```
//!
//! The prefix holds the harness's pid, so two runs never share names; the
//! addresses exist only inside the namespaces. Everything is removed when the
//! [`Topology`] is dropped (at the end of the run, on an error and after
//! Ctrl-C, which the harness turns into a clean stop).

use anyhow::{Context, bail};

use crate::proc::run;

/// First three octets of the topology's subnet.
const SUBNET: &str = "10.77.0";

/// nftables table of the bridge loss (inside `<p>mid` only).
const NFT_TABLE: &str = "tickwire_compare_loss";

/// How kernel loss was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossMechanism {
    /// `tc qdisc ... netem loss P%` on each bridge port.
    Netem,
    /// nftables `numgen random` drop on the bridge's forward hook, per output port
    /// (kernels without `sch_netem`).
    Nftables,
}

impl LossMechanism {
    /// `netem` or `nftables`.
    pub fn name(self) -> &'static str {
        match self {
            LossMechanism::Netem => "netem",
            LossMechanism::Nftables => "nftables",
        }
    }
}

/// A server namespace, a bridge namespace and `clients` client namespaces.
#[derive(Debug)]
pub struct Topology {
    /// Name prefix of every namespace.
    prefix: String,
    /// Client namespaces.
    clients: usize,
    /// Loss currently applied, if any.
    loss: std::cell::Cell<Option<LossMechanism>>,
}

/// `ip netns list` has `name`.
fn ns_exists(name: &str) -> bool {
    run(&["ip", "netns", "list"])
        .map(|l| l.lines().any(|x| x.split_whitespace().next() == Some(name)))
        .unwrap_or(false)
}

impl Topology {
    /// Make the topology under `prefix` (removing what a dead process with the same prefix left).
    pub fn up(prefix: &str, clients: usize) -> anyhow::Result<Topology> {
        let mut t =
            Topology { prefix: prefix.to_string(), clients, loss: std::cell::Cell::new(None) };
        t.remove();
        t.make().with_context(|| format!("making the namespace topology {prefix}"))?;
        Ok(t)
    }

    fn make(&mut self) -> anyhow::Result<()> {
        if run(&["mountpoint", "-q", "/sys/fs/bpf"]).is_err() {
            // libxdp keeps its dispatcher on bpffs; shared by the host, left
            // mounted. Without it libxdp loads its program without the
            // dispatcher, which the cells do not need: say so and go on.
            if let Err(e) = run(&["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"]) {
                eprintln!(
                    "compare: bpffs could not be mounted ({e:#}): libxdp loads without its dispatcher"
                );
            }
        }
        let mid = self.mid_ns();
        let mut hosts = vec![(self.server_ns(), "vsrv".to_string(), self.server_ip())];
        for i in 0..self.clients {
            hosts.push((self.client_ns(i), format!("vcli{}", i + 1), self.client_ip(i)));
        }
        for ns in std::iter::once(&mid).chain(hosts.iter().map(|h| &h.0)) {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        run(&["ip", "-n", &mid, "link", "add", "br0", "type", "bridge"])?;
        run(&["ip", "-n", &mid, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        run(&["ip", "-n", &mid, "link", "set", "br0", "up"])?;
        for (host, port, addr) in &hosts {
            run(&[
                "ip", "-n", &mid, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", host,
            ])?;
            run(&["ip", "-n", &mid, "link", "set", port, "master", "br0"])?;
            run(&["ip", "-n", &mid, "link", "set", port, "up"])?;
            run(&["ip", "-n", host, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            run(&["ip", "-n", host, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", host, "route", "replace", "239.0.0.0/8", "dev", "eth0"])?;
            // UDP over veth may carry a partial checksum, which AF_XDP receivers see unfinished.
            run(&["ip", "netns", "exec", host, "ethtool", "-K", "eth0", "tx", "off"])?;
            run(&["ip", "netns", "exec", &mid, "ethtool", "-K", port, "tx", "off"])?;
        }
        Ok(())
    }

    /// Delete every namespace of the prefix (deleting a namespace deletes its veths and bridge).
    fn remove(&mut self) {
        let mut names = vec![self.mid_ns(), self.server_ns()];
        names.extend((0..self.clients).map(|i| self.client_ns(i)));
        for ns in names {
            if ns_exists(&ns) {
                let _ = run(&["ip", "netns", "del", &ns]);
            }
        }
    }

    /// The server's namespace.
    pub fn server_ns(&self) -> String {
        format!("{}srv", self.prefix)
    }

    /// The bridge's namespace.
    pub fn mid_ns(&self) -> String {
        format!("{}mid", self.prefix)
    }

    /// Client `i`'s namespace (0-based).
    pub fn client_ns(&self, i: usize) -> String {
        format!("{}cli{}", self.prefix, i + 1)
    }

    /// The server's address.
    pub fn server_ip(&self) -> String {
        format!("{SUBNET}.1")
    }

    /// Client `i`'s address (0-based).
    pub fn client_ip(&self, i: usize) -> String {
        format!("{SUBNET}.{}", 11 + i)
    }

    /// Client namespaces made.
    pub fn clients(&self) -> usize {
        self.clients
    }

    /// The bridge ports (one per host).
    fn ports(&self) -> Vec<String> {
        std::iter::once("vsrv".to_string())
            .chain((1..=self.clients).map(|i| format!("vcli{i}")))
            .collect()
    }

    /// Drop `percent` % of the frames leaving each bridge port: netem where
    /// the kernel has it, else nftables.
    pub fn set_loss(&self, percent: f64) -> anyhow::Result<LossMechanism> {
        self.clear_loss();
        let mid = self.mid_ns();
        let loss = format!("{percent}%");
        let mut netem = true;
        for port in self.ports() {
            if run(&[
                "ip", "netns", "exec", &mid, "tc", "qdisc", "replace", "dev", &port, "root",
                "netem", "loss", &loss,
            ])
            .is_err()
            {
                netem = false;
                break;
            }
        }
        if netem {
            self.loss.set(Some(LossMechanism::Netem));
            return Ok(LossMechanism::Netem);
        }
        self.clear_loss();
        let set = self.ports().iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
        let n = (percent * 100.0).round() as u64;
        let rules = format!(
            "table bridge {NFT_TABLE} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n  \
             oifname {{ {set} }} numgen random mod 10000 < {n} counter drop\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{}-loss.nft", self.prefix));
        std::fs::write(&file, rules)?;
        let r = run(&["ip", "netns", "exec", &mid, "nft", "-f", &file.display().to_string()]);
        let _ = std::fs::remove_file(&file);
        if let Err(e) = r {
            bail!("neither netem nor nftables could apply loss on the bridge: {e:#}");
        }
        self.loss.set(Some(LossMechanism::Nftables));
        Ok(LossMechanism::Nftables)
    }

    /// Frames the loss rule dropped so far (nftables: its counter; netem: the qdiscs' drops).
    pub fn dropped(&self) -> Option<u64> {
        let mid = self.mid_ns();
        let sum = |text: &str, key: &str| -> u64 {
            text.split(key)
                .skip(1)
                .filter_map(|s| {
                    s.split_whitespace().next()?.trim_end_matches(',').parse::<u64>().ok()
                })
                .sum()
        };
        match self.loss.get()? {
            LossMechanism::Nftables => {
                let t = run(&[
                    "ip", "netns", "exec", &mid, "nft", "list", "table", "bridge", NFT_TABLE,
                ])
                .ok()?;
                Some(sum(&t, "counter packets"))
            }
            LossMechanism::Netem => {
                let t = run(&["ip", "netns", "exec", &mid, "tc", "-s", "qdisc", "show"]).ok()?;
                Some(sum(&t, "dropped"))
            }
        }
    }

    /// Remove the loss this topology applied.
    pub fn clear_loss(&self) {
        let mid = self.mid_ns();
        for port in self.ports() {
            let _ = run(&["ip", "netns", "exec", &mid, "tc", "qdisc", "del", "dev", &port, "root"]);
        }
        let _ = run(&["ip", "netns", "exec", &mid, "nft", "delete", "table", "bridge", NFT_TABLE]);
        self.loss.set(None);
    }

    /// Bytes and packets sent by the server namespace's eth0 so far.
    pub fn server_tx(&self) -> Option<(u64, u64)> {
        let ns = self.server_ns();
        let read = |f: &str| -> Option<u64> {
            run(&[
                "ip",
                "netns",
                "exec",
                &ns,
                "cat",
                &format!("/sys/class/net/eth0/statistics/{f}"),
            ])
            .ok()?
            .trim()
            .parse()
            .ok()
        };
        Some((read("tx_bytes")?, read("tx_packets")?))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.clear_loss();
        self.remove();
        eprintln!("compare: namespaces {}* removed", self.prefix);
    }
}
