//! One cell of the comparison: its configuration, the exact server and
//! client command lines, one run of the real binaries, and the figures of
//! that run read from their `--json` summaries.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tickwire_transports::select::TransportKind;

use crate::floor::Net;
use crate::netns::Topology;
use crate::proc::{Proc, shown, strs, wait_all, wait_ready, wrap};

/// Generator seed of every server (and `--verify` seed of the clients).
pub const SEED: u64 = 7;

/// How the server and client wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// No idle flags: each binary's default strategy (`auto`).
    Default,
    /// Server `--idle spin --cpu 0`, clients `--idle spin --cpu 1`.
    Spin,
    /// Server `--max-delay 100us --idle block`.
    Coalesce,
}

impl Mode {
    /// The flag value, for tables.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Spin => "spin",
            Mode::Coalesce => "coalesce",
        }
    }
}

/// The client's delivery order (`client --order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// Feed order: a lost packet holds back every message behind it.
    #[default]
    Strict,
    /// Per-symbol order: only the lost packet's symbols wait (stale); the
    /// others' messages are applied at once, hole or no hole.
    PerSymbol,
}

impl Order {
    /// The flag value, for tables and ids.
    pub fn name(self) -> &'static str {
        match self {
            Order::Strict => "strict",
            Order::PerSymbol => "per-symbol",
        }
    }
}

/// Symbols in every server's universe (`server --symbols`, passed
/// explicitly): the divisor of the stale time per symbol.
pub const SYMBOLS: u32 = 1000;

/// Who runs the cell's job: Tickwire's own binaries, or the Aeron peer
/// (`aeron-peer`, built with the bench crate's `aeron` feature) over UDP
/// multicast with its media driver laid out one way or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Peer {
    /// Tickwire's `server` and `client`.
    #[default]
    Tickwire,
    /// Aeron, the driver's duty cycle inline on the application thread, busy-spinning.
    AeronInline,
    /// Aeron, the driver's default threads (conductor, sender, receiver).
    AeronThreads,
}

impl Peer {
    /// Aeron in either layout.
    pub fn is_aeron(self) -> bool {
        self != Peer::Tickwire
    }

    /// `aeron-peer --driver` value.
    fn driver(self) -> &'static str {
        if self == Peer::AeronThreads { "threads" } else { "inline" }
    }
}

/// Everything that makes one cell.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellSpec {
    /// Transport.
    #[serde(serialize_with = "ser_kind")]
    pub transport: TransportKind,
    /// Loopback or the namespace topology.
    pub net: Net,
    /// Offered rate, messages per second (0 = as fast as the server can).
    pub rate: u64,
    /// Messages per run.
    pub messages: u64,
    /// Client processes.
    pub clients: usize,
    /// Seeded in-process drop rate at each client (`--drop-rate`).
    pub drop_rate: f64,
    /// Seeded drop rate at the server (its `--drop-rate`): loss upstream of
    /// the fan-out, shared by every client.
    pub upstream_drop: f64,
    /// Kernel loss on the bridge, percent (netns only).
    pub kernel_loss: f64,
    /// A/B feeds (`--group-b`).
    pub ab: bool,
    /// Idle mode.
    pub mode: Mode,
    /// The client runs its pipeline (`--threads pipeline`).
    pub pipeline: bool,
    /// Largest packet, bytes, for server and clients (`--max-packet`); `None`
    /// is the binaries' default (a 1500-byte MTU's datagram).
    pub max_packet: Option<usize>,
    /// Tickwire, or the Aeron peer (then `transport` is multicast: its path).
    pub peer: Peer,
    /// The clients' delivery order (Tickwire only; Aeron delivers in stream order).
    pub order: Order,
}

fn ser_kind<S: serde::Serializer>(k: &TransportKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&k.to_string())
}

impl CellSpec {
    /// A short unique name, also the file name of its `.hgrm`.
    pub fn id(&self) -> String {
        let who = match self.peer {
            Peer::Tickwire => self.transport.to_string(),
            Peer::AeronInline => "aeron-inline".into(),
            Peer::AeronThreads => "aeron-threads".into(),
        };
        let mut s = format!("{who}-{}-r{}-c{}", self.net.name(), self.rate, self.clients);
        if self.drop_rate > 0.0 {
            s += &format!("-drop{}", self.drop_rate);
        }
        if self.upstream_drop > 0.0 {
            s += &format!("-up{}", self.upstream_drop);
        }
        if self.kernel_loss > 0.0 {
            s += &format!("-loss{}", self.kernel_loss);
        }
        if self.ab {
            s += "-ab";
        }
        if self.mode != Mode::Default {
            s += &format!("-{}", self.mode.name());
        }
        if self.pipeline {
            s += "-pipeline";
        }
        if let Some(m) = self.max_packet {
            s += &format!("-mp{m}");
        }
        if self.order != Order::Strict {
            s += &format!("-{}", self.order.name());
        }
        s
    }

    /// Loss of any kind is injected: at the client, upstream, or on the bridge.
    pub fn lossy(&self) -> bool {
        self.drop_rate > 0.0 || self.upstream_drop > 0.0 || self.kernel_loss > 0.0
    }

    /// The injected loss in percent: on the bridge, else at the client, else upstream.
    pub fn loss_percent(&self) -> f64 {
        if self.kernel_loss > 0.0 {
            self.kernel_loss
        } else if self.drop_rate > 0.0 {
            self.drop_rate * 100.0
        } else {
            self.upstream_drop * 100.0
        }
    }

    /// The lossless cell of the same job: this one without its loss, in
    /// strict order, with the profile's message count (`messages`).
    pub fn lossless(&self, messages: u64) -> CellSpec {
        CellSpec {
            drop_rate: 0.0,
            upstream_drop: 0.0,
            kernel_loss: 0.0,
            order: Order::Strict,
            messages,
            ..self.clone()
        }
    }

    /// Who ran it, as tables show it: the transport, or `aeron (inline)`.
    pub fn label(&self) -> String {
        match self.peer {
            Peer::Tickwire => self.transport.to_string(),
            Peer::AeronInline => "aeron (inline)".into(),
            Peer::AeronThreads => "aeron (threads)".into(),
        }
    }

    /// The largest packet as shown in tables.
    pub fn max_packet_label(&self) -> String {
        self.max_packet.map_or("default".into(), |m| m.to_string())
    }

    /// The offered rate as shown in tables.
    pub fn rate_label(&self) -> String {
        if self.rate == 0 { "max (--rate 0)".into() } else { self.rate.to_string() }
    }

    /// Generous bound on one run's wall time.
    pub fn limit(&self) -> Duration {
        let gen_secs = self.messages.checked_div(self.rate).unwrap_or(self.messages / 500_000);
        Duration::from_secs(30 + 4 * gen_secs)
    }
}

/// Where the binaries are and where one run's files go.
#[derive(Debug)]
pub struct RunEnv<'a> {
    /// Directory of `server` and `client`.
    pub bins: &'a Path,
    /// Raw output directory.
    pub dir: &'a Path,
    /// The namespace topology, for netns cells.
    pub topo: Option<&'a Topology>,
    /// `--verify` in the clients.
    pub verify: bool,
    /// Server linger after the session.
    pub linger_ms: u64,
    /// Set by Ctrl-C.
    pub stop: &'a AtomicBool,
}

/// The command lines of one run: the server's, then one per client.
#[derive(Debug, Clone, Serialize)]
pub struct Commands {
    /// The server.
    pub server: Vec<String>,
    /// Each client.
    pub clients: Vec<Vec<String>>,
}

impl Commands {
    /// As they would be typed, in the order the harness starts them.
    pub fn shown(&self, kind: TransportKind) -> Vec<String> {
        let srv = format!("server: {}", shown(&self.server));
        let clis = self.clients.iter().map(|c| format!("client: {}", shown(c)));
        if kind == TransportKind::Tcp {
            std::iter::once(srv).chain(clis).collect()
        } else {
            clis.chain(std::iter::once(srv)).collect()
        }
    }
}

/// The command lines of `spec`'s run on `port` (`port + 1` is the group's port).
pub fn commands(spec: &CellSpec, env: &RunEnv, port: u16, tag: &str) -> anyhow::Result<Commands> {
    let topo = match spec.net {
        Net::Netns => Some(env.topo.ok_or_else(|| anyhow::anyhow!("no namespace topology"))?),
        Net::Loopback => None,
    };
    if spec.peer.is_aeron() {
        return Ok(aeron_commands(spec, env, topo, port, tag));
    }
    let ip = topo.map_or("127.0.0.1".to_string(), |t| t.server_ip());
    let addr = format!("{ip}:{port}");
    let group = format!("239.255.{}.{}:{}", (port >> 8) & 0xff, port & 0xff, port + 1);
    let group_b = format!("239.254.{}.{}:{}", (port >> 8) & 0xff, port & 0xff, port + 2);
    let bin = |b: &str| env.bins.join(b).display().to_string();
    let t = spec.transport.to_string();
    let mut srv = vec![bin("server")];
    srv.extend(strs(&["--transport", &t, "--listen", &addr, "--group", &group]));
    srv.extend(strs(&["--rate", &spec.rate.to_string(), "--messages", &spec.messages.to_string()]));
    srv.extend(strs(&["--duration", "0", "--linger", &format!("{}ms", env.linger_ms)]));
    srv.extend(strs(&["--stats-interval", "0", "--seed", &SEED.to_string(), "--json"]));
    srv.extend(strs(&["--symbols", &SYMBOLS.to_string()]));
    srv.extend(strs(&[
        "--ready-file",
        &env.dir.join(format!("{tag}.srv.ready")).display().to_string(),
    ]));
    if spec.transport == TransportKind::Tcp {
        // The session (and its clock) starts once every client has logged in.
        srv.extend(strs(&["--wait-clients", &spec.clients.to_string()]));
    }
    if spec.ab {
        srv.extend(strs(&["--group-b", &group_b]));
    }
    if spec.upstream_drop > 0.0 {
        srv.extend(strs(&["--drop-rate", &spec.upstream_drop.to_string(), "--drop-seed", "7"]));
    }
    if let Some(t) = topo {
        srv.extend(strs(&["--interface", &t.server_ip(), "--ifname", "eth0"]));
    }
    let max_packet = spec.max_packet.map(|m| m.to_string());
    if let Some(m) = &max_packet {
        srv.extend(strs(&["--max-packet", m]));
    }
    match spec.mode {
        Mode::Default => {}
        Mode::Spin => srv.extend(strs(&["--idle", "spin", "--cpu", "0"])),
        Mode::Coalesce => srv.extend(strs(&["--max-delay", "100us", "--idle", "block"])),
    }
    let srv = wrap(topo.map(|t| t.server_ns()).as_deref(), None, srv);
    let mut clients = Vec::new();
    for i in 0..spec.clients {
        let mut cli = vec![bin("client")];
        cli.extend(strs(&["--transport", &t, "--connect", &addr, "--group", &group]));
        cli.extend(strs(&["--quiet", "--json", "--seed", &(100 + i).to_string()]));
        cli.extend(strs(&["--order", spec.order.name()]));
        cli.extend(strs(&[
            "--hdr-log",
            &env.dir.join(format!("{tag}.cli{i}.hgrm")).display().to_string(),
        ]));
        cli.extend(strs(&[
            "--ready-file",
            &env.dir.join(format!("{tag}.cli{i}.ready")).display().to_string(),
        ]));
        if spec.drop_rate > 0.0 {
            cli.extend(strs(&[
                "--drop-rate",
                &spec.drop_rate.to_string(),
                "--drop-seed",
                &(200 + i).to_string(),
            ]));
        }
        if spec.ab {
            cli.extend(strs(&["--group-b", &group_b]));
        }
        if env.verify {
            cli.extend(strs(&["--verify", &SEED.to_string()]));
        }
        if let Some(t) = topo {
            let ci = i % t.clients().max(1);
            cli.extend(strs(&["--interface", &t.client_ip(ci), "--ifname", "eth0"]));
        }
        if spec.mode == Mode::Spin {
            cli.extend(strs(&["--idle", "spin", "--cpu", "1"]));
        }
        if spec.pipeline {
            cli.extend(strs(&["--threads", "pipeline"]));
        }
        if let Some(m) = &max_packet {
            cli.extend(strs(&["--max-packet", m]));
        }
        let ns = topo.map(|t| t.client_ns(i % t.clients().max(1)));
        clients.push(wrap(ns.as_deref(), None, cli));
    }
    Ok(Commands { server: srv, clients })
}

/// The Aeron peer's command lines: one publisher (the "server"), one
/// subscriber per client, on an Aeron multicast channel of this run's own
/// (Aeron takes the data group's address + 1 as its control group and
/// requires the data address to be odd). The publisher lingers until every
/// subscriber has written its done file.
fn aeron_commands(
    spec: &CellSpec,
    env: &RunEnv,
    topo: Option<&Topology>,
    port: u16,
    tag: &str,
) -> Commands {
    let bin = env.bins.join("aeron-peer").display().to_string();
    let group = format!("239.253.{}.{}:{}", (port >> 8) & 0xff, (port & 0xfe) | 1, port + 1);
    let channel = |ip: &str| format!("aeron:udp?endpoint={group}|interface={ip}|fc=min");
    let file = |what: String| env.dir.join(format!("{tag}.{what}")).display().to_string();
    let n = spec.messages.to_string();
    let done: Vec<String> = (0..spec.clients).map(|i| file(format!("cli{i}.done"))).collect();
    let srv_ip = topo.map_or("127.0.0.1".to_string(), |t| t.server_ip());
    let mut srv = vec![bin.clone(), "pub".into()];
    srv.extend(strs(&["--channel", &channel(&srv_ip), "--messages", &n]));
    srv.extend(strs(&["--rate", &spec.rate.to_string(), "--driver", spec.peer.driver()]));
    srv.extend(strs(&["--json", "--linger", "30s", "--done-file", &done.join(",")]));
    srv.extend(strs(&["--ready-file", &file("srv.ready".into())]));
    let srv = wrap(topo.map(|t| t.server_ns()).as_deref(), None, srv);
    let mut clients = Vec::new();
    for (i, done_file) in done.iter().enumerate() {
        let ci = topo.map(|t| i % t.clients().max(1));
        let ip = match (topo, ci) {
            (Some(t), Some(ci)) => t.client_ip(ci),
            _ => "127.0.0.1".into(),
        };
        let mut cli = vec![bin.clone(), "sub".into()];
        cli.extend(strs(&["--channel", &channel(&ip), "--messages", &n, "--json"]));
        cli.extend(strs(&["--driver", spec.peer.driver(), "--done-file", done_file]));
        cli.extend(strs(&["--hdr-log", &file(format!("cli{i}.hgrm"))]));
        cli.extend(strs(&["--ready-file", &file(format!("cli{i}.ready"))]));
        if spec.drop_rate > 0.0 {
            cli.extend(strs(&["--loss", &spec.drop_rate.to_string()]));
            cli.extend(strs(&["--loss-seed", &(200 + i).to_string()]));
        }
        let ns = match (topo, ci) {
            (Some(t), Some(ci)) => Some(t.client_ns(ci)),
            _ => None,
        };
        clients.push(wrap(ns.as_deref(), None, cli));
    }
    Commands { server: srv, clients }
}

/// One run's figures (absent in the JSON: `None`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CellRun {
    /// Median over the clients of messages delivered per second.
    pub delivered_msgs_per_s: Option<f64>,
    /// Messages the server published per second.
    pub published_msgs_per_s: Option<f64>,
    /// Tick-to-cache p50, µs (median over the clients; likewise below).
    pub t2c_p50_us: Option<f64>,
    /// Tick-to-cache p99, µs.
    pub t2c_p99_us: Option<f64>,
    /// Tick-to-cache p99.9, µs.
    pub t2c_p999_us: Option<f64>,
    /// Tick-to-cache max, µs (largest over the clients).
    pub t2c_max_us: Option<f64>,
    /// Server user CPU per published message, ns.
    pub server_user_ns_per_msg: Option<f64>,
    /// Server system CPU per published message, ns.
    pub server_sys_ns_per_msg: Option<f64>,
    /// Client user CPU per delivered message, ns (mean over the clients).
    pub client_user_ns_per_msg: Option<f64>,
    /// Client system CPU per delivered message, ns.
    pub client_sys_ns_per_msg: Option<f64>,
    /// Packets the server's transport handed to the network per message.
    pub packets_per_msg: Option<f64>,
    /// Bytes the server namespace's eth0 sent per message (netns only; loopback is shared).
    pub wire_bytes_per_msg: Option<f64>,
    /// Frames the server namespace's eth0 sent per message (netns only).
    pub wire_packets_per_msg: Option<f64>,
    /// Gaps detected, summed over the clients.
    pub gaps: Option<f64>,
    /// NACKs sent, summed over the clients.
    pub nacks: Option<f64>,
    /// Snapshots applied, summed over the clients.
    pub snapshots: Option<f64>,
    /// Gaps given up on, summed over the clients.
    pub unrecovered: Option<f64>,
    /// Recovery time p50, µs (largest over the clients).
    pub recovery_p50_us: Option<f64>,
    /// Recovery time p99, µs (largest over the clients).
    pub recovery_p99_us: Option<f64>,
    /// Frames dropped by the bridge's loss rule during the run.
    pub bridge_drops: Option<f64>,
    /// NACKs the server received (of this session).
    pub server_nacks: Option<f64>,
    /// Messages the server retransmitted (unicast and on the group).
    pub server_retransmitted: Option<f64>,
    /// Bytes the server's repair service sent on the group.
    pub server_group_repair_bytes: Option<f64>,
    /// Duplicates received, summed over the clients.
    pub duplicates: Option<f64>,
    /// Share of the delivered messages that waited in the reorder buffer
    /// behind a hole (`delivery.held_share`, 0..1; median over the clients).
    pub held_share: Option<f64>,
    /// Messages that waited behind a hole, summed over the clients.
    pub messages_held: Option<f64>,
    /// Per-symbol: messages applied ahead of an open hole, summed over the clients.
    pub messages_ahead: Option<f64>,
    /// Per-symbol: times a symbol became stale, summed over the clients.
    pub stale_periods: Option<f64>,
    /// Per-symbol: total time symbols spent stale, ms (median over the clients).
    pub stale_ms_total: Option<f64>,
    /// Per-symbol: `stale_ms_total` / [`SYMBOLS`], ms: the time an average
    /// symbol of the universe spent stale during the run (median over the clients).
    pub stale_ms_per_symbol: Option<f64>,
    /// Per-symbol: mean length of a stale period, µs (median over the clients).
    pub stale_mean_us: Option<f64>,
    /// Per-symbol: symbols still stale at exit, summed over the clients.
    pub stale_now: Option<f64>,
    /// Fewest messages any client delivered.
    pub delivered_min: Option<f64>,
    /// Messages published.
    pub published: Option<f64>,
    /// Every client delivered every message (last sequence = published) and nothing was unrecovered.
    pub complete: bool,
}

/// Run `cmds`: tcp starts the server first (the clients connect to the address in its
/// ready file); datagram transports start the clients and wait until each has
/// subscribed, so they see the session from its first message.
pub fn run(
    spec: &CellSpec,
    cmds: &Commands,
    env: &RunEnv,
    tag: &str,
) -> anyhow::Result<(CellRun, Value, Vec<Value>)> {
    let ready = |name: String| env.dir.join(name);
    // A report directory used before holds the ready files of its runs: a
    // stale one would be taken for this run's (tcp: a client sent to the old
    // run's port, and the cell failing after its time limit).
    for name in std::iter::once(format!("{tag}.srv.ready"))
        .chain((0..cmds.clients.len()).map(|i| format!("{tag}.cli{i}.ready")))
    {
        match std::fs::remove_file(ready(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                anyhow::bail!("cannot remove the old ready file in {}: {e}", env.dir.display())
            }
            _ => {}
        }
    }
    let limit = Duration::from_secs(15);
    let tx_before = match spec.net {
        Net::Netns => env.topo.and_then(Topology::server_tx),
        Net::Loopback => None,
    };
    let drops_before = env.topo.and_then(Topology::dropped);
    let mut clients = Vec::new();
    let mut server;
    if spec.transport == TransportKind::Tcp {
        server = Proc::spawn("server", &cmds.server, env.dir, &format!("{tag}.srv"))?;
        let srv_ready = ready(format!("{tag}.srv.ready"));
        wait_ready(&mut server, "ready", limit, env.stop, || srv_ready.exists())?;
        let bound = std::fs::read_to_string(&srv_ready).unwrap_or_default();
        for (i, c) in cmds.clients.iter().enumerate() {
            let mut c = c.clone();
            if let Ok(a) = bound.trim().parse::<SocketAddr>()
                && let Some(j) = c.iter().position(|a| a == "--connect")
            {
                c[j + 1] = a.to_string();
            }
            clients.push(Proc::spawn("client", &c, env.dir, &format!("{tag}.cli{i}"))?);
        }
    } else {
        for (i, c) in cmds.clients.iter().enumerate() {
            let mut p = Proc::spawn("client", c, env.dir, &format!("{tag}.cli{i}"))?;
            let r = ready(format!("{tag}.cli{i}.ready"));
            wait_ready(&mut p, "subscribed", limit, env.stop, || r.exists())?;
            clients.push(p);
        }
        server = Proc::spawn("server", &cmds.server, env.dir, &format!("{tag}.srv"))?;
    }
    {
        let mut all: Vec<&mut Proc> =
            std::iter::once(&mut server).chain(clients.iter_mut()).collect();
        wait_all(&mut all, spec.limit(), env.stop)?;
    }
    let s = server.json()?;
    let cs: Vec<Value> = clients.iter().map(Proc::json).collect::<anyhow::Result<_>>()?;
    if !spec.peer.is_aeron() {
        for (i, c) in cs.iter().enumerate() {
            let seen = c["delivery"]["order"].as_str().unwrap_or("(none)");
            anyhow::ensure!(
                seen == spec.order.name(),
                "client {i} ran in {seen} order, the cell asked for --order {}",
                spec.order.name()
            );
        }
    }
    let mut r = reduce(&s, &cs);
    if let (Some((b0, p0)), Some((b1, p1))) = (tx_before, env.topo.and_then(Topology::server_tx))
        && let Some(n) = r.published.filter(|&n| n > 0.0)
    {
        r.wire_bytes_per_msg = Some((b1 - b0) as f64 / n);
        r.wire_packets_per_msg = Some((p1 - p0) as f64 / n);
    }
    if let (Some(a), Some(b)) = (drops_before, env.topo.and_then(Topology::dropped)) {
        r.bridge_drops = Some(b.saturating_sub(a) as f64);
    }
    Ok((r, s, cs))
}

/// The figures of one run from the server's and the clients' JSON summaries.
pub fn reduce(s: &Value, cs: &[Value]) -> CellRun {
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let lat = |v: &Value, k: &str| {
        let t = &v["tick_to_cache_ns"];
        if t.get("count").and_then(Value::as_u64) == Some(0) {
            return None;
        }
        t.get(k)?.as_f64().map(|ns| ns / 1e3)
    };
    let med = |k: &dyn Fn(&Value) -> Option<f64>| crate::stats::agg(cs.iter().map(k)).median;
    let sum = |k: &str| cs.iter().map(|c| f(c, k)).sum::<Option<f64>>();
    let maxv = |k: &dyn Fn(&Value) -> Option<f64>| crate::stats::agg(cs.iter().map(k)).max;
    let d = |v: &Value, k: &str| v["delivery"].get(k).and_then(Value::as_f64);
    let dsum = |k: &str| cs.iter().map(|c| d(c, k)).sum::<Option<f64>>();
    let published = f(s, "messages");
    let per_msg = |secs: Option<f64>, n: Option<f64>| match (secs, n) {
        (Some(secs), Some(n)) if n > 0.0 => Some(secs * 1e9 / n),
        _ => None,
    };
    let client_cpu = |k: &str| {
        crate::stats::agg(cs.iter().map(|c| per_msg(f(c, k), f(c, "messages_delivered")))).median
    };
    let complete = !cs.is_empty()
        && cs.iter().all(|c| {
            c["last_seq"].as_u64() == s["messages"].as_u64() && c["unrecovered"].as_u64() == Some(0)
        });
    CellRun {
        delivered_msgs_per_s: med(&|c| f(c, "rate")),
        published_msgs_per_s: f(s, "rate"),
        t2c_p50_us: med(&|c| lat(c, "p50")),
        t2c_p99_us: med(&|c| lat(c, "p99")),
        t2c_p999_us: med(&|c| lat(c, "p999")),
        t2c_max_us: maxv(&|c| lat(c, "max")),
        server_user_ns_per_msg: per_msg(f(s, "cpu_user_s"), published),
        server_sys_ns_per_msg: per_msg(f(s, "cpu_sys_s"), published),
        client_user_ns_per_msg: client_cpu("cpu_user_s"),
        client_sys_ns_per_msg: client_cpu("cpu_sys_s"),
        packets_per_msg: match (f(s, "transport_packets"), published) {
            (Some(p), Some(n)) if n > 0.0 => Some(p / n),
            _ => None,
        },
        wire_bytes_per_msg: None,
        wire_packets_per_msg: None,
        gaps: sum("gaps_detected"),
        nacks: sum("nacks_sent"),
        snapshots: sum("snapshots"),
        unrecovered: sum("unrecovered"),
        recovery_p50_us: maxv(&|c| c["recovery_time"]["p50_us"].as_f64()),
        recovery_p99_us: maxv(&|c| c["recovery_time"]["p99_us"].as_f64()),
        bridge_drops: None,
        server_nacks: f(s, "nacks"),
        server_retransmitted: f(s, "retransmitted_messages"),
        server_group_repair_bytes: f(s, "repair_bytes_multicast"),
        duplicates: sum("duplicates"),
        held_share: med(&|c| d(c, "held_share")),
        messages_held: dsum("messages_held"),
        messages_ahead: dsum("messages_ahead"),
        stale_periods: dsum("stale_periods"),
        stale_ms_total: med(&|c| d(c, "stale_ms_total")),
        stale_ms_per_symbol: med(&|c| d(c, "stale_ms_total").map(|ms| ms / f64::from(SYMBOLS))),
        stale_mean_us: med(&|c| d(c, "stale_mean_us")),
        stale_now: dsum("stale_now"),
        delivered_min: crate::stats::agg(cs.iter().map(|c| f(c, "messages_delivered"))).min,
        published,
        complete,
    }
}

/// Where a run's client-0 histogram was written.
pub fn hgrm_path(dir: &Path, tag: &str) -> PathBuf {
    dir.join(format!("{tag}.cli0.hgrm"))
}
