//! `latency`: tick-to-cache latency of the transports against the kernel floor.
//!
//! In one run, repeated `--runs` times and interleaved (the floor, then every
//! cell, per repetition, so slow drift of the machine hits both alike):
//!
//! 1. **The kernel floor**: `sockperf ping-pong` over loopback, UDP and TCP,
//!    blocking and busy-poll (`--nonblocked`, server and client pinned to
//!    different CPUs). sockperf reports half the round trip, in µs. With xdp,
//!    also UDP across the namespace topology the xdp cells run on.
//! 2. **The cells**: for each transport × idle mode, the real `server` at a
//!    fixed `--rate` for `--messages`, with one `client --json`; the client's
//!    tick-to-cache percentiles (due time → applied to the cache) and their
//!    breakdown, delivered rate, CPU per message of both sides, unrecovered gaps.
//!
//! Prints two Markdown tables (medians over the runs, min–max in brackets):
//! the floor, and the cells with their ratio to the floor of the same mode
//! (`default`/`coalesce` → blocking, `spin` → busy-poll; UDP for multicast and
//! xdp, TCP for tcp). Every command line goes to stderr as it runs;
//! `--json-out FILE` writes every figure, and every run's raw summaries.
//!
//! ```text
//! cargo build --release --bins && target/release/latency
//! target/release/latency --transports tcp,multicast,xdp --modes default,spin,coalesce --runs 5
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, ValueEnum};
use serde_json::{Value, json};
use tickwire_bench::floor::{FloorRun, parse_sockperf, sockperf_available};
use tickwire_bench::proc::{Proc, shown, strs, wait_all, wait_ready, wrap};
use tickwire_bench::stats::{Agg, agg, med_range, num, ratio};
use tickwire_transports::select::{TransportKind, parse_duration};

/// Namespace prefix of the xdp topology (`xdp-setup/topology.sh up twlat 1`).
const NS_PREFIX: &str = "twlat";
/// Server address inside `<prefix>srv` (see topology.sh).
const NS_SERVER_IP: &str = "10.77.0.1";
/// Client address inside `<prefix>cli1`.
const NS_CLIENT_IP: &str = "10.77.0.11";
/// Generator seed of every server (and `--verify` seed of every client).
const SEED: u64 = 7;

/// Tick-to-cache latency of the transports and idle modes, against the sockperf floor.
#[derive(Debug, Parser)]
#[command(name = "latency")]
struct Args {
    /// Transports to measure (xdp needs root and binaries built with --features xdp).
    #[arg(long, value_delimiter = ',', default_value = "tcp,multicast")]
    transports: Vec<TransportKind>,
    /// Idle modes: default (no idle flags), spin (both sides spin on their
    /// own CPU), coalesce (server --max-delay 100us --idle block).
    #[arg(long, value_delimiter = ',', default_value = "default,spin")]
    modes: Vec<Mode>,
    /// Messages per second the server publishes.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Messages per cell run.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    messages: u64,
    /// Repetitions (floor and every cell each time; medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Seconds of each sockperf ping-pong run (sockperf -t).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=600))]
    floor_secs: u32,
    /// sockperf message size in bytes (sockperf -m; a Tickwire packet of one message is about this).
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(14..=65000))]
    floor_msg_size: u32,
    /// CPU of the server side in busy-poll floor runs and spin cells.
    #[arg(long, default_value_t = 0)]
    server_cpu: usize,
    /// CPU of the client side in busy-poll floor runs and spin cells.
    #[arg(long, default_value_t = 1)]
    client_cpu: usize,
    /// Server --linger after the session (recovery requests after the last message).
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    linger: Duration,
    /// Verify every message against the seed in the client (costs client CPU).
    #[arg(long)]
    verify: bool,
    /// Directory holding the `server` and `client` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Directory holding topology.sh (xdp only; default: the source tree's xdp-setup).
    #[arg(long)]
    xdp_setup: Option<PathBuf>,
    /// First port; every floor run and cell run gets its own two ports above it.
    #[arg(long, default_value_t = 19_500, value_parser = clap::value_parser!(u16).range(1024..))]
    base_port: u16,
    /// Where the processes' stdout/stderr and ready files go (default: a new directory in /tmp).
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Write every figure (and each run's raw JSON summaries) to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// How the server and client wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// No idle flags: each binary's default strategy.
    Default,
    /// Server `--idle spin --cpu S`, client `--idle spin --cpu C`.
    Spin,
    /// Server `--max-delay 100us --idle block`, client default.
    Coalesce,
}

impl Mode {
    /// The flag value, for tables and logs.
    fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Spin => "spin",
            Mode::Coalesce => "coalesce",
        }
    }

    /// The floor poll mode this idle mode is compared with.
    fn poll(self) -> Poll {
        match self {
            Mode::Spin => Poll::Busy,
            Mode::Default | Mode::Coalesce => Poll::Blocking,
        }
    }
}

/// sockperf protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    /// UDP (sockperf default).
    Udp,
    /// TCP (`--tcp`).
    Tcp,
}

/// sockperf receive mode: blocking sockets, or `--nonblocked` busy polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Poll {
    /// Blocking sockets, not pinned.
    Blocking,
    /// `--nonblocked` on both sides, pinned to different CPUs.
    Busy,
}

/// Where sockperf runs: host loopback, or across the xdp namespace topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    /// 127.0.0.1.
    Loopback,
    /// Server in `twlatsrv`, client in `twlatcli1`, over the bridge.
    Netns,
}

/// One floor configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FloorKey {
    /// Where.
    net: Net,
    /// Which protocol.
    proto: Proto,
    /// How the sockets wait.
    poll: Poll,
}

impl FloorKey {
    /// Short label, e.g. `udp busy` or `udp blocking (netns)`.
    fn label(self) -> String {
        let proto = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        let poll = match self.poll {
            Poll::Blocking => "blocking",
            Poll::Busy => "busy",
        };
        match self.net {
            Net::Loopback => format!("{proto} {poll}"),
            Net::Netns => format!("{proto} {poll} (netns)"),
        }
    }

    /// The floor a transport in a mode is compared with.
    fn for_cell(kind: TransportKind, mode: Mode) -> FloorKey {
        let (net, proto) = match kind {
            TransportKind::Tcp => (Net::Loopback, Proto::Tcp),
            TransportKind::Multicast => (Net::Loopback, Proto::Udp),
            TransportKind::Xdp => (Net::Netns, Proto::Udp),
        };
        FloorKey { net, proto, poll: mode.poll() }
    }
}

/// One cell run: the client's and server's summaries, reduced.
#[derive(Debug, Clone, Default)]
struct CellRun {
    /// Tick-to-cache p50, p99, p99.9, µs.
    t2c: [Option<f64>; 3],
    /// Breakdown parts (see [`PARTS`]): (p50, p99) µs each.
    parts: [(Option<f64>, Option<f64>); 4],
    /// Client's delivered messages per second.
    delivered_rate: Option<f64>,
    /// Server user CPU ns per published message.
    server_user_ns: Option<f64>,
    /// Server system CPU ns per published message.
    server_sys_ns: Option<f64>,
    /// Client user CPU ns per delivered message.
    client_user_ns: Option<f64>,
    /// Client system CPU ns per delivered message.
    client_sys_ns: Option<f64>,
    /// Gaps the client gave up on.
    unrecovered: Option<f64>,
    /// Messages the client delivered.
    delivered: Option<f64>,
    /// Messages the server published.
    published: Option<f64>,
    /// The client's raw JSON summary.
    client: Value,
    /// The server's raw JSON summary.
    server: Value,
}

/// The keys of the client's `breakdown_ns`, and their column labels.
const PARTS: [(&str, &str); 4] = [
    ("due_to_sent", "due→sent"),
    ("sent_to_kernel", "sent→kernel"),
    ("kernel_to_app", "kernel→app"),
    ("received_to_applied", "received→applied"),
];

/// A latency field of a `LatencySummary` JSON object, ns → µs; absent, or
/// `count` 0 (not measured on this path), is `None`.
fn lat_us(summary: &Value, field: &str) -> Option<f64> {
    if summary.get("count").and_then(Value::as_u64) == Some(0) {
        return None;
    }
    summary.get(field)?.as_f64().map(|ns| ns / 1e3)
}

/// Everything one repetition needs to know about the environment.
#[derive(Debug)]
struct Env {
    /// Directory of the `server` and `client` binaries.
    bins: PathBuf,
    /// Where outputs and ready files go.
    dir: PathBuf,
    /// Whether sockperf is installed.
    sockperf: bool,
    /// Set by Ctrl-C.
    stop: Arc<AtomicBool>,
}

/// Append `flag value` pairs to a command line.
fn pairs(argv: &mut Vec<String>, flags: &[(&str, &str)]) {
    for (flag, value) in flags {
        argv.push(flag.to_string());
        argv.push(value.to_string());
    }
}

/// One sockperf ping-pong run of `key` on `port`; the command lines are pushed to `cmds`.
fn floor_run(
    args: &Args,
    env: &Env,
    key: FloorKey,
    port: u16,
    tag: &str,
    cmds: &mut Vec<String>,
) -> anyhow::Result<FloorRun> {
    let (ip, srv_ns, cli_ns) = match key.net {
        Net::Loopback => ("127.0.0.1", None, None),
        Net::Netns => {
            (NS_SERVER_IP, Some(format!("{NS_PREFIX}srv")), Some(format!("{NS_PREFIX}cli1")))
        }
    };
    let (srv_cpu, cli_cpu) = match key.poll {
        Poll::Busy => (Some(args.server_cpu), Some(args.client_cpu)),
        Poll::Blocking => (None, None),
    };
    let mut extra = Vec::new();
    if key.proto == Proto::Tcp {
        extra.push("--tcp".to_string());
    }
    if key.poll == Poll::Busy {
        extra.push("--nonblocked".to_string());
    }
    let port_s = port.to_string();
    let mut srv = strs(&["sockperf", "server", "-i", ip, "-p", &port_s]);
    srv.extend(extra.iter().cloned());
    let srv = wrap(srv_ns.as_deref(), srv_cpu, srv);
    let secs = args.floor_secs.to_string();
    let size = args.floor_msg_size.to_string();
    let mut cli =
        strs(&["sockperf", "ping-pong", "-i", ip, "-p", &port_s, "-m", &size, "-t", &secs]);
    cli.extend(extra);
    let cli = wrap(cli_ns.as_deref(), cli_cpu, cli);
    eprintln!("latency:   {}", shown(&srv));
    eprintln!("latency:   {}", shown(&cli));
    cmds.push(shown(&srv));
    cmds.push(shown(&cli));

    let mut server = Proc::spawn("sockperf server", &srv, &env.dir, &format!("{tag}.srv"))?;
    let pid = server.child.id();
    wait_ready(&mut server, "listening", Duration::from_secs(10), &env.stop, || {
        tickwire_bench::proc::port_bound(pid, key.proto == Proto::Tcp, port)
    })?;
    let mut client = Proc::spawn("sockperf ping-pong", &cli, &env.dir, &format!("{tag}.cli"))?;
    wait_all(&mut [&mut client], Duration::from_secs(u64::from(args.floor_secs) + 30), &env.stop)?;
    drop(server);
    let r = parse_sockperf(&client.all_output());
    if r.p50_us.is_none() {
        bail!("no percentiles in sockperf's output:\n{}", client.stderr_tail(8));
    }
    Ok(r)
}

/// The server and client command lines of one cell run.
fn cell_commands(
    args: &Args,
    env: &Env,
    kind: TransportKind,
    mode: Mode,
    port: u16,
    tag: &str,
) -> (Vec<String>, Vec<String>) {
    let (ip, srv_ns, cli_ns) = match kind {
        TransportKind::Xdp => {
            (NS_SERVER_IP, Some(format!("{NS_PREFIX}srv")), Some(format!("{NS_PREFIX}cli1")))
        }
        _ => ("127.0.0.1", None, None),
    };
    let addr = format!("{ip}:{port}");
    let group = format!("239.255.{}.{}:{}", (port >> 8) & 0xff, port & 0xff, port + 1);
    let bin = |b: &str| env.bins.join(b).display().to_string();
    let t = kind.to_string();
    let rate = args.rate.to_string();
    let msgs = args.messages.to_string();
    let seed = SEED.to_string();
    let us = args.linger.as_micros();
    let linger = if us % 1000 == 0 { format!("{}ms", us / 1000) } else { format!("{us}us") };
    let srv_ready = env.dir.join(format!("{tag}.srv.ready")).display().to_string();
    let cli_ready = env.dir.join(format!("{tag}.cli.ready")).display().to_string();
    let mut srv = vec![bin("server")];
    pairs(
        &mut srv,
        &[
            ("--transport", &t),
            ("--listen", &addr),
            ("--group", &group),
            ("--rate", &rate),
            ("--messages", &msgs),
            ("--duration", "0"),
            ("--linger", &linger),
            ("--stats-interval", "0"),
            ("--seed", &seed),
            ("--ready-file", &srv_ready),
        ],
    );
    srv.push("--json".into());
    let mut cli = vec![bin("client")];
    pairs(
        &mut cli,
        &[
            ("--transport", &t),
            ("--connect", &addr),
            ("--group", &group),
            ("--ready-file", &cli_ready),
        ],
    );
    cli.extend(strs(&["--quiet", "--json"]));
    if args.verify {
        cli.extend(strs(&["--verify", &seed]));
    }
    if kind == TransportKind::Tcp {
        // The session (and its clock) starts once the client has logged in.
        srv.extend(strs(&["--wait-clients", "1"]));
    }
    if kind == TransportKind::Xdp {
        srv.extend(strs(&["--interface", NS_SERVER_IP, "--ifname", "eth0"]));
        cli.extend(strs(&["--interface", NS_CLIENT_IP, "--ifname", "eth0"]));
    }
    match mode {
        Mode::Default => {}
        Mode::Spin => {
            srv.extend(strs(&["--idle", "spin", "--cpu", &args.server_cpu.to_string()]));
            cli.extend(strs(&["--idle", "spin", "--cpu", &args.client_cpu.to_string()]));
        }
        Mode::Coalesce => srv.extend(strs(&["--max-delay", "100us", "--idle", "block"])),
    }
    (wrap(srv_ns.as_deref(), None, srv), wrap(cli_ns.as_deref(), None, cli))
}

/// One cell run: the server and one client, sequenced as in
/// xdp-setup/compare-ns.sh: tcp starts the server and waits for its ready
/// file (the bound address) before the client; datagram transports start the
/// client and wait until it is subscribed before the server, so it sees the
/// session from its first message.
fn cell_run(
    args: &Args,
    env: &Env,
    kind: TransportKind,
    srv: &[String],
    cli: &[String],
    tag: &str,
) -> anyhow::Result<CellRun> {
    let srv_ready = env.dir.join(format!("{tag}.srv.ready"));
    let cli_ready = env.dir.join(format!("{tag}.cli.ready"));
    let limit = Duration::from_secs(10);
    let (mut server, mut client) = if kind == TransportKind::Tcp {
        let mut server = Proc::spawn("server", srv, &env.dir, &format!("{tag}.srv"))?;
        wait_ready(&mut server, "ready", limit, &env.stop, || srv_ready.exists())?;
        let bound = std::fs::read_to_string(&srv_ready).unwrap_or_default();
        let mut cli = cli.to_vec();
        // The ready file holds the address the server actually bound.
        if let Ok(a) = bound.trim().parse::<SocketAddr>()
            && let Some(i) = cli.iter().position(|a| a == "--connect")
        {
            cli[i + 1] = a.to_string();
        }
        let client = Proc::spawn("client", &cli, &env.dir, &format!("{tag}.cli"))?;
        (server, client)
    } else {
        let mut client = Proc::spawn("client", cli, &env.dir, &format!("{tag}.cli"))?;
        wait_ready(&mut client, "subscribed", limit, &env.stop, || cli_ready.exists())?;
        let server = Proc::spawn("server", srv, &env.dir, &format!("{tag}.srv"))?;
        (server, client)
    };
    let limit = Duration::from_secs(30 + 2 * args.messages / args.rate.max(1));
    wait_all(&mut [&mut server, &mut client], limit, &env.stop)?;
    let s = server.json()?;
    let c = client.json()?;
    Ok(reduce(s, c))
}

/// The figures of one cell run from the two JSON summaries (absent fields stay `None`).
fn reduce(s: Value, c: Value) -> CellRun {
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let t2c = &c["tick_to_cache_ns"];
    let delivered = f(&c, "messages_delivered");
    let published = f(&s, "messages");
    let per_msg = |secs: Option<f64>, n: Option<f64>| match (secs, n) {
        (Some(secs), Some(n)) if n > 0.0 => Some(secs * 1e9 / n),
        _ => None,
    };
    let mut parts = [(None, None); 4];
    for (p, (key, _)) in parts.iter_mut().zip(PARTS) {
        let b = &c["breakdown_ns"][key];
        *p = (lat_us(b, "p50"), lat_us(b, "p99"));
    }
    CellRun {
        t2c: [lat_us(t2c, "p50"), lat_us(t2c, "p99"), lat_us(t2c, "p999")],
        parts,
        delivered_rate: f(&c, "rate"),
        server_user_ns: per_msg(f(&s, "cpu_user_s"), published)
            .or_else(|| f(&s, "cpu_user_ns_per_message")),
        server_sys_ns: per_msg(f(&s, "cpu_sys_s"), published)
            .or_else(|| f(&s, "cpu_sys_ns_per_message")),
        client_user_ns: per_msg(f(&c, "cpu_user_s"), delivered),
        client_sys_ns: per_msg(f(&c, "cpu_sys_s"), delivered),
        unrecovered: f(&c, "unrecovered"),
        delivered,
        published,
        client: c,
        server: s,
    }
}

/// A floor configuration and its runs (one per repetition; `Err` = that run failed).
#[derive(Debug)]
struct Floor {
    /// The configuration.
    key: FloorKey,
    /// One per repetition, in order.
    runs: Vec<Result<FloorRun, String>>,
    /// The sockperf command lines run (server, client per repetition).
    commands: Vec<String>,
}

impl Floor {
    /// The runs that succeeded.
    fn ok(&self) -> impl Iterator<Item = &FloorRun> {
        self.runs.iter().filter_map(|r| r.as_ref().ok())
    }

    /// One figure over the successful runs.
    fn agg(&self, f: fn(&FloorRun) -> Option<f64>) -> Agg {
        agg(self.ok().map(f))
    }

    /// The run of repetition `rep`, if it succeeded.
    fn rep(&self, rep: usize) -> Option<&FloorRun> {
        self.runs.get(rep).and_then(|r| r.as_ref().ok())
    }
}

/// A transport × mode and its runs.
#[derive(Debug)]
struct Cell {
    /// The transport.
    kind: TransportKind,
    /// The idle mode.
    mode: Mode,
    /// One per repetition, in order.
    runs: Vec<Result<CellRun, String>>,
    /// Server and client command lines, one pair per repetition.
    commands: Vec<[String; 2]>,
}

impl Cell {
    /// One figure over the successful runs.
    fn agg(&self, f: impl Fn(&CellRun) -> Option<f64>) -> Agg {
        agg(self.runs.iter().filter_map(|r| r.as_ref().ok()).map(f))
    }

    /// Median over the repetitions of (this run's figure / the same repetition's floor figure).
    fn ratio(
        &self,
        floor: Option<&Floor>,
        mine: impl Fn(&CellRun) -> Option<f64>,
        theirs: fn(&FloorRun) -> Option<f64>,
    ) -> Agg {
        let Some(floor) = floor else { return Agg::default() };
        agg(self.runs.iter().enumerate().map(|(i, r)| {
            let r = r.as_ref().ok()?;
            ratio(mine(r), floor.rep(i).and_then(theirs))
        }))
    }
}

/// Euid 0, from /proc/self/status (`Uid: real effective saved fs`).
fn is_root() -> bool {
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
struct Topology {
    /// Path of topology.sh.
    script: PathBuf,
}

impl Topology {
    /// `topology.sh up twlat 1`: server namespace, bridge, one client namespace.
    fn up(script: PathBuf) -> anyhow::Result<Topology> {
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

/// Print `msg` framed so that it is not missed in the progress output.
fn loud(msg: &str) {
    let bar = "!".repeat(78);
    eprintln!("{bar}\nlatency: {msg}\n{bar}");
}

/// Parse the flags, run the repetitions, print the tables and write the JSON.
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;

    let bins = match &args.bin_dir {
        // Absolute, so that it holds inside `ip netns exec` and from any directory.
        Some(d) => {
            std::fs::canonicalize(d).with_context(|| format!("--bin-dir {}", d.display()))?
        }
        None => std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf(),
    };
    for b in ["server", "client"] {
        if !bins.join(b).exists() {
            bail!(
                "{} not found: build with `cargo build --release --bins` or pass --bin-dir",
                bins.join(b).display()
            );
        }
    }
    let dir = match &args.out_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tickwire-latency.{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    let sockperf = sockperf_available();
    if !sockperf {
        loud(
            "sockperf NOT FOUND: the kernel floor is not measured (columns n/a).\n\
             latency: install it with `sudo apt-get install -y sockperf` (Debian/Ubuntu) or build it from\n\
             latency: https://github.com/Mellanox/sockperf, then run again.",
        );
    }

    // Transports: dedup, and xdp only as root, on the namespace topology.
    let mut transports: Vec<TransportKind> = Vec::new();
    for &k in &args.transports {
        if !transports.contains(&k) {
            transports.push(k);
        }
    }
    let mut modes: Vec<Mode> = Vec::new();
    for &m in &args.modes {
        if !modes.contains(&m) {
            modes.push(m);
        }
    }
    let mut topology = None;
    if transports.contains(&TransportKind::Xdp) {
        if !is_root() {
            loud(
                "xdp SKIPPED: it needs root (network namespaces and AF_XDP sockets); \
                 run this as root to measure it.",
            );
            transports.retain(|&k| k != TransportKind::Xdp);
        } else {
            let script = args
                .xdp_setup
                .clone()
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../xdp-setup"))
                .join("topology.sh");
            match Topology::up(script) {
                Ok(t) => topology = Some(t),
                Err(e) => {
                    loud(&format!("xdp SKIPPED: could not set up the namespaces: {e:#}"));
                    transports.retain(|&k| k != TransportKind::Xdp);
                }
            }
        }
    }

    let mut floor_keys = Vec::new();
    for proto in [Proto::Udp, Proto::Tcp] {
        for poll in [Poll::Blocking, Poll::Busy] {
            floor_keys.push(FloorKey { net: Net::Loopback, proto, poll });
        }
    }
    if topology.is_some() {
        for poll in [Poll::Blocking, Poll::Busy] {
            floor_keys.push(FloorKey { net: Net::Netns, proto: Proto::Udp, poll });
        }
    }
    let runs = args.runs as usize;
    let n_cells = runs * transports.len() * modes.len();
    let n_floors = if sockperf { runs * floor_keys.len() } else { 0 };
    let ports_needed = 2 * (n_cells + n_floors) + 2;
    if usize::from(args.base_port) + ports_needed > usize::from(u16::MAX) {
        Args::command()
            .error(
                clap::error::ErrorKind::ValueValidation,
                format!("--base-port {} leaves no room for {ports_needed} ports", args.base_port),
            )
            .exit();
    }

    let env = Env { bins, dir, sockperf, stop: stop.clone() };
    let mut floors: Vec<Floor> = floor_keys
        .iter()
        .map(|&key| Floor { key, runs: Vec::new(), commands: Vec::new() })
        .collect();
    let mut cells: Vec<Cell> = transports
        .iter()
        .flat_map(|&kind| modes.iter().map(move |&mode| (kind, mode)))
        .map(|(kind, mode)| Cell { kind, mode, runs: Vec::new(), commands: Vec::new() })
        .collect();
    eprintln!(
        "latency: {} repetitions × ({} floor configurations, {} s each, then {} cells of {} messages \
         at {} msg/s); output in {}",
        runs,
        if sockperf { floor_keys.len() } else { 0 },
        args.floor_secs,
        cells.len(),
        args.messages,
        args.rate,
        env.dir.display()
    );

    let started = Instant::now();
    let mut port = args.base_port;
    let (mut floor_no, mut cell_no) = (0, 0);
    'reps: for rep in 0..runs {
        if env.sockperf {
            for fl in &mut floors {
                if stop.load(Ordering::Relaxed) {
                    break 'reps;
                }
                floor_no += 1;
                port += 2;
                eprintln!(
                    "latency: floor {floor_no}/{n_floors} (repetition {}/{runs}): {}",
                    rep + 1,
                    fl.key.label()
                );
                let tag = format!("floor{floor_no}");
                let r = floor_run(&args, &env, fl.key, port, &tag, &mut fl.commands);
                if let Err(e) = &r {
                    eprintln!("latency: floor {}: FAILED: {e:#}", fl.key.label());
                }
                fl.runs.push(r.map_err(|e| format!("{e:#}")));
            }
        }
        for cell in &mut cells {
            if stop.load(Ordering::Relaxed) {
                break 'reps;
            }
            cell_no += 1;
            port += 2;
            let tag = format!("cell{cell_no}");
            let (srv, cli) = cell_commands(&args, &env, cell.kind, cell.mode, port, &tag);
            eprintln!(
                "latency: cell {cell_no}/{n_cells} (repetition {}/{runs}): {} {}",
                rep + 1,
                cell.kind,
                cell.mode.name()
            );
            let (first, second) = if cell.kind == TransportKind::Tcp {
                ((&srv, "server"), (&cli, "client"))
            } else {
                ((&cli, "client"), (&srv, "server"))
            };
            eprintln!("latency:   {}: {}", first.1, shown(first.0));
            eprintln!("latency:   {}: {}", second.1, shown(second.0));
            let r = cell_run(&args, &env, cell.kind, &srv, &cli, &tag);
            match &r {
                Ok(run) => eprintln!(
                    "latency:   tick-to-cache p50 {} µs, p99 {} µs, p99.9 {} µs, {} of {} delivered",
                    num(run.t2c[0]),
                    num(run.t2c[1]),
                    num(run.t2c[2]),
                    num(run.delivered),
                    num(run.published)
                ),
                Err(e) => {
                    eprintln!("latency: cell {} {}: FAILED: {e:#}", cell.kind, cell.mode.name())
                }
            }
            cell.commands.push([shown(&srv), shown(&cli)]);
            cell.runs.push(r.map_err(|e| format!("{e:#}")));
        }
    }
    drop(topology);
    let interrupted = stop.load(Ordering::Relaxed);
    if interrupted {
        eprintln!("latency: interrupted: reporting what was measured");
    }
    eprintln!(
        "latency: done in {:.0} s; raw output in {}",
        started.elapsed().as_secs_f64(),
        env.dir.display()
    );

    print_tables(&args, &floors, &cells, sockperf);
    if let Some(path) = &args.json_out {
        let v = to_json(&args, &floors, &cells, sockperf, interrupted);
        std::fs::write(path, serde_json::to_string_pretty(&v)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("latency: JSON written to {}", path.display());
    }
    if interrupted {
        std::process::exit(130);
    }
    Ok(())
}

/// The floor run of `key`, if it is in the list.
fn floor_of(floors: &[Floor], key: FloorKey) -> Option<&Floor> {
    floors.iter().find(|f| f.key == key)
}

/// A named figure of a floor run.
type FloorField = (&'static str, fn(&FloorRun) -> Option<f64>);
/// A named figure of a cell run.
type CellField = (&'static str, fn(&CellRun) -> Option<f64>);

/// The floor figures, by their JSON names.
const FLOOR_FIELDS: [FloorField; 7] = [
    ("p50_us", |r| r.p50_us),
    ("p99_us", |r| r.p99_us),
    ("p999_us", |r| r.p999_us),
    ("avg_us", |r| r.avg_us),
    ("max_us", |r| r.max_us),
    ("observations", |r| r.observations),
    ("dropped", |r| r.dropped),
];

/// The cell figures (except the breakdown), by their JSON names.
const CELL_FIELDS: [CellField; 11] = [
    ("tick_to_cache_p50_us", |r| r.t2c[0]),
    ("tick_to_cache_p99_us", |r| r.t2c[1]),
    ("tick_to_cache_p999_us", |r| r.t2c[2]),
    ("delivered_msgs_per_s", |r| r.delivered_rate),
    ("server_cpu_user_ns_per_msg", |r| r.server_user_ns),
    ("server_cpu_sys_ns_per_msg", |r| r.server_sys_ns),
    ("client_cpu_user_ns_per_msg", |r| r.client_user_ns),
    ("client_cpu_sys_ns_per_msg", |r| r.client_sys_ns),
    ("unrecovered", |r| r.unrecovered),
    ("messages_delivered", |r| r.delivered),
    ("messages_published", |r| r.published),
];

/// The two Markdown tables on stdout: the floor, then the cells.
fn print_tables(args: &Args, floors: &[Floor], cells: &[Cell], sockperf: bool) {
    println!(
        "rate {} msg/s, {} messages per cell run, {} repetitions (median, min–max in brackets); \
         floor: sockperf ping-pong -m {} -t {}, half round trip",
        args.rate, args.messages, args.runs, args.floor_msg_size, args.floor_secs
    );
    println!();
    println!("Kernel floor (sockperf, µs):");
    println!();
    println!("| path | p50 µs | p99 µs | p99.9 µs | runs ok |");
    println!("|---|---:|---:|---:|---:|");
    if !sockperf {
        println!("| (sockperf not installed) | n/a | n/a | n/a | 0 |");
    }
    for f in floors {
        if !sockperf {
            break;
        }
        println!(
            "| {} | {} | {} | {} | {}/{} |",
            f.key.label(),
            med_range(f.agg(|r| r.p50_us)),
            med_range(f.agg(|r| r.p99_us)),
            med_range(f.agg(|r| r.p999_us)),
            f.ok().count(),
            f.runs.len()
        );
    }
    println!();
    println!(
        "Tick-to-cache (µs; ratios: median over repetitions of run / floor run of the same repetition; \
         breakdown p50 / p99 µs; CPU ns per message):"
    );
    println!();
    let mut head = String::from(
        "| transport | mode | floor | p50 µs | p99 µs | p99.9 µs | p50 / floor p50 | p99 / floor p99 |",
    );
    for (_, label) in PARTS {
        let _ = write!(head, " {label} |");
    }
    head.push_str(
        " delivered msg/s | server user ns/msg | server sys ns/msg | client user ns/msg | client sys ns/msg | unrecovered | runs ok |",
    );
    println!("{head}");
    println!("|---|---|---|{}", "---:|".repeat(5 + PARTS.len() + 7));
    let x = |a: Agg| a.median.map_or("n/a".into(), |v| format!("{v:.2}×"));
    for c in cells {
        let key = FloorKey::for_cell(c.kind, c.mode);
        let floor = floor_of(floors, key);
        let mut row = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.kind,
            c.mode.name(),
            key.label(),
            med_range(c.agg(|r| r.t2c[0])),
            med_range(c.agg(|r| r.t2c[1])),
            med_range(c.agg(|r| r.t2c[2])),
            x(c.ratio(floor, |r| r.t2c[0], |f| f.p50_us)),
            x(c.ratio(floor, |r| r.t2c[1], |f| f.p99_us)),
        );
        for i in 0..PARTS.len() {
            let p50 = c.agg(|r| r.parts[i].0).median;
            let p99 = c.agg(|r| r.parts[i].1).median;
            let _ = write!(row, " {} / {} |", num(p50), num(p99));
        }
        let unrecovered: f64 =
            c.runs.iter().filter_map(|r| r.as_ref().ok()?.unrecovered).sum::<f64>();
        let any_unrec = c.runs.iter().any(|r| r.as_ref().is_ok_and(|r| r.unrecovered.is_some()));
        let _ = write!(
            row,
            " {} | {} | {} | {} | {} | {} | {}/{} |",
            num(c.agg(|r| r.delivered_rate).median),
            num(c.agg(|r| r.server_user_ns).median),
            num(c.agg(|r| r.server_sys_ns).median),
            num(c.agg(|r| r.client_user_ns).median),
            num(c.agg(|r| r.client_sys_ns).median),
            if any_unrec { format!("{unrecovered:.0}") } else { "n/a".into() },
            c.runs.iter().filter(|r| r.is_ok()).count(),
            c.runs.len()
        );
        println!("{row}");
    }
    println!();
    println!(
        "(unrecovered: sum over the runs; n/a = not in the binaries' JSON, or not measured on that path)"
    );
}

/// Every figure: the configuration, each floor and cell with its summary
/// (median/min/max) and its runs (with the raw summaries and command lines).
fn to_json(
    args: &Args,
    floors: &[Floor],
    cells: &[Cell],
    sockperf: bool,
    interrupted: bool,
) -> Value {
    let floor_json: Vec<Value> = floors
        .iter()
        .map(|f| {
            let mut summary = serde_json::Map::new();
            for (name, get) in FLOOR_FIELDS {
                summary.insert(name.into(), f.agg(get).to_json());
            }
            let runs: Vec<Value> = f
                .runs
                .iter()
                .map(|r| match r {
                    Ok(r) => {
                        let mut m = serde_json::Map::new();
                        for (name, get) in FLOOR_FIELDS {
                            m.insert(name.into(), json!(get(r)));
                        }
                        Value::Object(m)
                    }
                    Err(e) => json!({ "error": e }),
                })
                .collect();
            json!({
                "label": f.key.label(),
                "net": match f.key.net { Net::Loopback => "loopback", Net::Netns => "netns" },
                "proto": match f.key.proto { Proto::Udp => "udp", Proto::Tcp => "tcp" },
                "poll": match f.key.poll { Poll::Blocking => "blocking", Poll::Busy => "busy" },
                "summary": summary,
                "runs": runs,
                "commands": f.commands,
            })
        })
        .collect();
    let cell_json: Vec<Value> = cells
        .iter()
        .map(|c| {
            let key = FloorKey::for_cell(c.kind, c.mode);
            let floor = floor_of(floors, key);
            let mut summary = serde_json::Map::new();
            for (name, get) in CELL_FIELDS {
                summary.insert(name.into(), c.agg(get).to_json());
            }
            for (i, (part, _)) in PARTS.iter().enumerate() {
                summary.insert(format!("{part}_p50_us"), c.agg(|r| r.parts[i].0).to_json());
                summary.insert(format!("{part}_p99_us"), c.agg(|r| r.parts[i].1).to_json());
            }
            summary.insert(
                "ratio_p50_to_floor_p50".into(),
                c.ratio(floor, |r| r.t2c[0], |f| f.p50_us).to_json(),
            );
            summary.insert(
                "ratio_p99_to_floor_p99".into(),
                c.ratio(floor, |r| r.t2c[1], |f| f.p99_us).to_json(),
            );
            summary.insert(
                "ratio_p999_to_floor_p999".into(),
                c.ratio(floor, |r| r.t2c[2], |f| f.p999_us).to_json(),
            );
            let runs: Vec<Value> = c
                .runs
                .iter()
                .zip(&c.commands)
                .map(|(r, cmd)| match r {
                    Ok(r) => {
                        let mut m = serde_json::Map::new();
                        for (name, get) in CELL_FIELDS {
                            m.insert(name.into(), json!(get(r)));
                        }
                        for (i, (part, _)) in PARTS.iter().enumerate() {
                            m.insert(format!("{part}_p50_us"), json!(r.parts[i].0));
                            m.insert(format!("{part}_p99_us"), json!(r.parts[i].1));
                        }
                        m.insert("server_command".into(), json!(cmd[0]));
                        m.insert("client_command".into(), json!(cmd[1]));
                        m.insert("server_summary".into(), r.server.clone());
                        m.insert("client_summary".into(), r.client.clone());
                        Value::Object(m)
                    }
                    Err(e) => json!({
                        "error": e, "server_command": cmd[0], "client_command": cmd[1],
                    }),
                })
                .collect();
            json!({
                "transport": c.kind.to_string(),
                "mode": c.mode.name(),
                "floor": key.label(),
                "summary": summary,
                "runs": runs,
            })
        })
        .collect();
    json!({
        "config": {
            "rate": args.rate,
            "messages": args.messages,
            "runs": args.runs,
            "floor_secs": args.floor_secs,
            "floor_msg_size": args.floor_msg_size,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "linger_s": args.linger.as_secs_f64(),
            "verify": args.verify,
            "sockperf": sockperf,
            "interrupted": interrupted,
        },
        "floor": floor_json,
        "cells": cell_json,
    })
}
