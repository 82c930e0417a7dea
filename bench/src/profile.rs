//! The profiles: which cells run, grouped into the scenarios of the report.
//!
//! A cell that belongs to several scenarios (the 1-client, fixed-rate
//! baseline is in the rate, subscriber and loss tables) runs once.

use serde::Serialize;
use tickwire_transports::select::TransportKind;

use crate::cell::{CellSpec, Mode, Order, Peer};
use crate::floor::Net;

/// What the profile is built from (the command line's choices).
#[derive(Debug, Clone)]
pub struct ProfileArgs {
    /// `--full`: wider sweeps.
    pub full: bool,
    /// Transports to include.
    pub transports: Vec<TransportKind>,
    /// The fixed offered rate of most cells.
    pub rate: u64,
    /// Further offered rates (0 = max).
    pub rates: Vec<u64>,
    /// Subscriber counts.
    pub clients: Vec<usize>,
    /// In-process drop rates (fractions).
    pub drop_rates: Vec<f64>,
    /// Kernel loss on the bridge, percent.
    pub kernel_losses: Vec<f64>,
    /// Messages per run.
    pub messages: u64,
    /// Idle modes besides `default`.
    pub modes: Vec<Mode>,
    /// Delivery orders of the loss tables' lossy cells (datagram transports;
    /// tcp has no holes and runs strict).
    pub orders: Vec<Order>,
    /// Delivery orders of the loss tables' lossless reference cells (strict
    /// always runs; per-symbol beside it is an A/B of the lossless cost).
    pub lossless_orders: Vec<Order>,
    /// Whether to run the client's pipeline beside its single thread.
    pub pipeline: bool,
    /// Whether to run the recovery-vs-subscribers table.
    pub recovery: bool,
    /// Whether to run the loopback cells.
    pub loopback: bool,
    /// Whether the namespace cells can run (root, `ip` present).
    pub netns: bool,
    /// Why they cannot, when they cannot.
    pub netns_skip_reason: String,
    /// Whether the xdp cells can run (netns, AF_XDP in the kernel, binaries
    /// built with xdp).
    pub xdp: bool,
    /// Why they cannot, when the namespace cells can.
    pub xdp_skip_reason: String,
    /// Whether the Aeron peer's cells run (`aeron-peer` built, multicast asked for).
    pub aeron: bool,
    /// Why they do not, when they do not.
    pub aeron_skip_reason: String,
}

/// A table of the report: a title, a note on what varies, and its cells.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Short key (`rate`, `clients`, ...).
    pub key: &'static str,
    /// Table heading.
    pub title: String,
    /// Indices into [`Plan::cells`].
    pub cells: Vec<usize>,
}

/// The cells to run and how the report groups them.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Every distinct cell.
    pub cells: Vec<CellSpec>,
    /// The report's tables.
    pub scenarios: Vec<Scenario>,
    /// What was left out, and why.
    pub skipped: Vec<String>,
}

impl Plan {
    /// Add `spec` to scenario `s` (running it once however many scenarios hold it).
    fn add(&mut self, s: usize, spec: CellSpec) {
        let i = match self.cells.iter().position(|c| *c == spec) {
            Some(i) => i,
            None => {
                self.cells.push(spec);
                self.cells.len() - 1
            }
        };
        if !self.scenarios[s].cells.contains(&i) {
            self.scenarios[s].cells.push(i);
        }
    }

    fn scenario(&mut self, key: &'static str, title: String) -> usize {
        self.scenarios.push(Scenario { key, title, cells: Vec::new() });
        self.scenarios.len() - 1
    }
}

/// `--max-packet` of the large-packet rows: 16 KiB datagrams, which loopback
/// (MTU 65536) carries unfragmented. Of 1472, 8972, 16384, 32768 and 60000
/// bytes, 16384 delivered the most (7.7M msgs/s against 3.5M at 1472).
pub const LARGE_PACKET: usize = 16384;

/// Subscriber counts of the recovery table (the 1, 4 and 16).
pub const RECOVERY_CLIENTS: [usize; 3] = [1, 4, 16];
/// Loss rates of the recovery table, upstream and at each client: 1 % and 5 %.
pub const RECOVERY_LOSSES: [f64; 2] = [0.01, 0.05];
/// Offered rate of the recovery table: 20k msgs/s, the measurement.
/// Sixteen verifying clients and the server share two cores: at 100k msgs/s
/// and more they drop datagrams in their own socket buffers, and the table
/// would measure that, not the loss it injects.
pub const RECOVERY_RATE: u64 = 20_000;

/// The cells of a profile.
pub fn plan(a: &ProfileArgs) -> Plan {
    let mut p = Plan { cells: Vec::new(), scenarios: Vec::new(), skipped: Vec::new() };
    let has = |k: TransportKind| a.transports.contains(&k);
    let base = |transport, net| CellSpec {
        transport,
        net,
        rate: a.rate,
        messages: a.messages,
        clients: 1,
        drop_rate: 0.0,
        upstream_drop: 0.0,
        kernel_loss: 0.0,
        ab: false,
        mode: Mode::Default,
        pipeline: false,
        max_packet: None,
        peer: Peer::Tickwire,
        order: Order::Strict,
    };
    // The orders of a lossy cell of the loss tables: tcp delivers a stream
    // without holes, so per-symbol order would change nothing there.
    let lossy_orders = |k: TransportKind| -> Vec<Order> {
        if k == TransportKind::Tcp { vec![Order::Strict] } else { a.orders.clone() }
    };
    // Lossless cells beside strict (which always runs: the reference).
    let lossless_extra = |k: TransportKind| -> Vec<Order> {
        if k == TransportKind::Tcp {
            return Vec::new();
        }
        a.lossless_orders.iter().copied().filter(|&o| o != Order::Strict).collect()
    };
    let kernel: Vec<TransportKind> =
        [TransportKind::Tcp, TransportKind::Multicast].into_iter().filter(|&k| has(k)).collect();

    if a.loopback {
        let s = p.scenario("rate", "Offered rate (loopback, 1 client)".into());
        for &k in &kernel {
            for &r in std::iter::once(&a.rate).chain(&a.rates) {
                p.add(s, CellSpec { rate: r, ..base(k, Net::Loopback) });
            }
        }
        let s = p.scenario("clients", format!("Subscribers (loopback, {} msg/s)", a.rate));
        for &k in &kernel {
            for &n in &a.clients {
                p.add(s, CellSpec { clients: n, ..base(k, Net::Loopback) });
            }
        }
        if has(TransportKind::Multicast) {
            let s = p.scenario(
                "inproc-loss",
                "Seeded in-process loss at each client (loopback, multicast, --drop-rate)".into(),
            );
            let mc = TransportKind::Multicast;
            p.add(s, base(mc, Net::Loopback));
            for order in lossless_extra(mc) {
                p.add(s, CellSpec { order, ..base(mc, Net::Loopback) });
            }
            for &d in &a.drop_rates {
                for order in lossy_orders(mc) {
                    p.add(s, CellSpec { drop_rate: d, order, ..base(mc, Net::Loopback) });
                }
            }
            if a.recovery {
                let s = p.scenario(
                    "recovery",
                    format!(
                        "Recovery vs subscribers (loopback, multicast, {} msg/s): loss upstream of \
                     the fan-out (server --drop-rate, shared) and at each client (--drop-rate)",
                        RECOVERY_RATE
                    ),
                );
                for loss in RECOVERY_LOSSES {
                    for n in RECOVERY_CLIENTS {
                        let b = CellSpec {
                            clients: n,
                            rate: RECOVERY_RATE,
                            ..base(TransportKind::Multicast, Net::Loopback)
                        };
                        p.add(s, CellSpec { upstream_drop: loss, ..b.clone() });
                        p.add(s, CellSpec { drop_rate: loss, ..b });
                    }
                }
            }
            let s = p.scenario(
                "ab",
                "A/B feeds (loopback, multicast, --group-b, in-process loss)".into(),
            );
            let d = a.drop_rates.iter().copied().fold(0.0, f64::max);
            for ab in [false, true] {
                p.add(
                    s,
                    CellSpec { drop_rate: d, ab, ..base(TransportKind::Multicast, Net::Loopback) },
                );
            }
        } else {
            p.skipped.push("in-process loss and A/B rows: multicast not among --transports".into());
        }
        if a.pipeline {
            let s = p.scenario(
                "threads",
                "Client threads: single against the pipeline (loopback, 1 client)".into(),
            );
            for &k in &kernel {
                for r in [a.rate, 0] {
                    for pipeline in [false, true] {
                        p.add(s, CellSpec { rate: r, pipeline, ..base(k, Net::Loopback) });
                    }
                }
            }
            // Multicast at full rate is bounded by the kernel's cost per
            // datagram; loopback allows larger ones (what they buy).
            if has(TransportKind::Multicast) {
                for pipeline in [false, true] {
                    let spec = CellSpec {
                        rate: 0,
                        pipeline,
                        max_packet: Some(LARGE_PACKET),
                        ..base(TransportKind::Multicast, Net::Loopback)
                    };
                    p.add(s, spec);
                }
            }
        }
        if !a.modes.is_empty() {
            let s = p.scenario("idle", "Idle mode (loopback, 1 client)".into());
            for &k in &kernel {
                p.add(s, base(k, Net::Loopback));
                for &m in &a.modes {
                    p.add(s, CellSpec { mode: m, ..base(k, Net::Loopback) });
                }
            }
        }
    }
    let aeron = a.aeron && has(TransportKind::Multicast);
    if !aeron {
        p.skipped.push(format!("the Aeron peer: {}", a.aeron_skip_reason));
    }
    // Aeron beside Tickwire multicast, the same job in the same run: latency
    // at the fixed rate (1 and the largest client count), throughput at
    // --rate 0, and each in-process loss rate (Aeron's own loss interceptor
    // at the same rate). Each Aeron layout where it is at its best, the other
    // beside it: inline + spin for latency, the default threads for throughput.
    if aeron && a.loopback {
        let s = p.scenario(
            "aeron",
            "Aeron beside Tickwire multicast (loopback; 48-byte messages, same pacing rule)".into(),
        );
        let mc = base(TransportKind::Multicast, Net::Loopback);
        let who = [Peer::Tickwire, Peer::AeronInline, Peer::AeronThreads];
        let most = a.clients.iter().copied().max().unwrap_or(1);
        for n in [1, most] {
            for peer in who {
                p.add(s, CellSpec { clients: n, peer, ..mc.clone() });
            }
        }
        for peer in who {
            p.add(s, CellSpec { rate: 0, peer, ..mc.clone() });
        }
        for &d in &a.drop_rates {
            for peer in [Peer::Tickwire, Peer::AeronInline] {
                p.add(s, CellSpec { drop_rate: d, peer, ..mc.clone() });
            }
        }
    }
    let mut netns: Vec<TransportKind> = kernel.clone();
    if has(TransportKind::Xdp) {
        if a.xdp {
            netns.push(TransportKind::Xdp);
        } else if a.netns {
            p.skipped.push(format!("xdp: {}", a.xdp_skip_reason));
        }
    }
    if !a.netns {
        p.skipped.push(format!(
            "namespace topology (tcp, multicast, xdp across a bridge) and real kernel loss on the \
             bridge: {}",
            a.netns_skip_reason
        ));
        return p;
    }
    let s = p.scenario("netns", format!("Across the namespace topology ({} msg/s)", a.rate));
    for &k in &netns {
        for &r in std::iter::once(&a.rate).chain(&a.rates) {
            p.add(s, CellSpec { rate: r, ..base(k, Net::Netns) });
        }
    }
    let s = p.scenario("kernel-loss", "Real kernel loss on the bridge (namespaces)".into());
    for &k in &netns {
        let extra = lossless_extra(k);
        if !extra.is_empty() {
            // The lossless reference beside its per-symbol twin (the strict
            // one is the namespace table's cell: it runs once).
            p.add(s, base(k, Net::Netns));
        }
        for order in extra {
            p.add(s, CellSpec { order, ..base(k, Net::Netns) });
        }
        for &l in &a.kernel_losses {
            for order in lossy_orders(k) {
                p.add(
                    s,
                    CellSpec {
                        kernel_loss: l,
                        messages: lossy_messages(a.messages, l),
                        order,
                        ..base(k, Net::Netns)
                    },
                );
            }
        }
    }
    if aeron {
        let s = p.scenario(
            "aeron-netns",
            "Aeron beside Tickwire multicast across the namespaces (bridge loss as above)".into(),
        );
        let mc = base(TransportKind::Multicast, Net::Netns);
        for peer in [Peer::Tickwire, Peer::AeronInline] {
            p.add(s, CellSpec { peer, ..mc.clone() });
            for &l in a.kernel_losses.iter().filter(|&&l| (1.0..=5.0).contains(&l)) {
                let messages = lossy_messages(a.messages, l);
                p.add(s, CellSpec { kernel_loss: l, messages, peer, ..mc.clone() });
            }
        }
    }
    p
}

/// Messages of a kernel-loss cell: half the profile's, and a twentieth from
/// 10 % loss on (tcp under 20 % loss delivered about 1 000 msgs/s here, its
/// retransmission timer backing off; a full-size cell would take minutes).
pub fn lossy_messages(messages: u64, loss_percent: f64) -> u64 {
    let div = if loss_percent >= 10.0 { 20 } else { 2 };
    (messages / div).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(netns: bool) -> ProfileArgs {
        ProfileArgs {
            full: false,
            transports: vec![TransportKind::Tcp, TransportKind::Multicast, TransportKind::Xdp],
            rate: 100_000,
            rates: vec![0],
            clients: vec![1, 4],
            drop_rates: vec![0.01, 0.05],
            kernel_losses: vec![0.1, 1.0, 5.0, 20.0],
            messages: 1000,
            modes: vec![],
            orders: vec![Order::Strict, Order::PerSymbol],
            lossless_orders: vec![Order::Strict],
            pipeline: true,
            recovery: false,
            loopback: true,
            netns,
            netns_skip_reason: "not root".into(),
            xdp: netns,
            xdp_skip_reason: "built without the xdp feature".into(),
            aeron: false,
            aeron_skip_reason: "built without the aeron feature".into(),
        }
    }

    #[test]
    fn shared_cells_run_once_and_skips_are_named() {
        let p = plan(&args(false));
        // rate: 2x2; clients: +2 (c4); inproc: +2 drop rates x 2 orders;
        // ab: +0 (its lossy cell is the strict 5 % one), +1 with A/B;
        // threads: +4 (its single-thread cells are the rate table's), +2
        // large-packet.
        assert_eq!(p.cells.len(), 17);
        assert_eq!(p.scenarios.len(), 5);
        // With the recovery table: +12 (2 losses x 3 client counts x
        // upstream or at the client).
        let r = plan(&ProfileArgs { recovery: true, ..args(false) });
        assert_eq!(r.cells.len(), 17 + 12);
        let recovery = &r.scenarios[3];
        assert_eq!(recovery.key, "recovery");
        assert_eq!(recovery.cells.len(), 12);
        assert_eq!(recovery.cells.iter().filter(|&&i| r.cells[i].upstream_drop > 0.0).count(), 6);
        assert!(recovery.cells.iter().all(|&i| r.cells[i].rate == RECOVERY_RATE));
        let threads = &p.scenarios[4];
        assert_eq!(threads.key, "threads");
        assert_eq!(threads.cells.len(), 10);
        assert_eq!(threads.cells.iter().filter(|&&i| p.cells[i].pipeline).count(), 5);
        assert_eq!(threads.cells.iter().filter(|&&i| p.cells[i].max_packet.is_some()).count(), 2);
        // The netns topology and the Aeron peer, each named.
        assert_eq!(p.skipped.len(), 2);
        assert!(p.skipped.iter().any(|s| s.starts_with("the Aeron peer: built without")));
        let p = plan(&args(true));
        // netns: 3 transports x 2 rates; bridge loss: 4 rates x (tcp strict,
        // multicast and xdp in both orders).
        assert_eq!(p.cells.len(), 17 + 6 + 20);
        assert_eq!(p.skipped.len(), 1);
    }

    #[test]
    fn aeron_cells_stand_beside_the_same_tickwire_jobs() {
        let mut a = args(true);
        a.aeron = true;
        let p = plan(&a);
        // Loopback: 1 and 4 clients × 2 layouts, rate 0 × 2, each drop rate
        // inline; netns: the base and 1 %, 5 % bridge loss inline. Their
        // Tickwire counterparts are cells of the other tables already.
        assert_eq!(p.cells.len(), 17 + 6 + 20 + 8 + 3);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        for key in ["aeron", "aeron-netns"] {
            let s = p.scenarios.iter().find(|s| s.key == key).unwrap();
            for &i in &s.cells {
                let c = &p.cells[i];
                assert_eq!(c.transport, TransportKind::Multicast, "{}", c.id());
                if c.peer.is_aeron() {
                    let twin = CellSpec { peer: Peer::Tickwire, ..c.clone() };
                    assert!(p.cells.contains(&twin), "no Tickwire twin of {}", c.id());
                }
            }
        }
    }

    #[test]
    fn per_symbol_order_runs_on_the_lossy_datagram_cells_only() {
        let p = plan(&args(true));
        let per_symbol: Vec<&CellSpec> =
            p.cells.iter().filter(|c| c.order == Order::PerSymbol).collect();
        assert_eq!(per_symbol.len(), 2 + 8);
        for c in &per_symbol {
            assert!(c.lossy(), "{}", c.id());
            assert_ne!(c.transport, TransportKind::Tcp, "{}", c.id());
            assert!(c.id().ends_with("-per-symbol"), "{}", c.id());
            let strict = CellSpec { order: Order::Strict, ..(*c).clone() };
            assert!(p.cells.contains(&strict), "no strict twin of {}", c.id());
        }
        // Only the loss tables hold them.
        for s in &p.scenarios {
            let n = s.cells.iter().filter(|&&i| p.cells[i].order == Order::PerSymbol).count();
            let want = match s.key {
                "inproc-loss" => 2,
                "kernel-loss" => 8,
                _ => 0,
            };
            assert_eq!(n, want, "{}", s.key);
        }
        // --orders strict: the profile as before the orders.
        let strict = plan(&ProfileArgs { orders: vec![Order::Strict], ..args(true) });
        assert_eq!(strict.cells.len(), 15 + 6 + 12);
        assert!(strict.cells.iter().all(|c| c.order == Order::Strict));
        // --lossless-orders strict,per-symbol: the lossless A/B beside them,
        // in the loss tables (loopback multicast; netns multicast and xdp).
        let ab = plan(&ProfileArgs {
            lossless_orders: vec![Order::Strict, Order::PerSymbol],
            ..args(true)
        });
        let lossless: Vec<String> = ab
            .cells
            .iter()
            .filter(|c| c.order == Order::PerSymbol && !c.lossy())
            .map(CellSpec::id)
            .collect();
        assert_eq!(
            lossless,
            [
                "multicast-loopback-r100000-c1-per-symbol",
                "multicast-netns-r100000-c1-per-symbol",
                "xdp-netns-r100000-c1-per-symbol"
            ]
        );
        let kl = ab.scenarios.iter().find(|s| s.key == "kernel-loss").unwrap();
        assert_eq!(kl.cells.iter().filter(|&&i| !ab.cells[i].lossy()).count(), 4);
    }
}
