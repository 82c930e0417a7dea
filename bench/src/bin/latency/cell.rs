//! The cells: a transport in an idle mode, the command lines of one run,
//! running it, and its figures from the server's and client's JSON summaries.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tickwire_bench::floor::FloorRun;
use tickwire_bench::proc::{Proc, strs, wait_all, wait_ready, wrap};
use tickwire_bench::stats::{Agg, agg, ratio};
use tickwire_transports::select::TransportKind;

use crate::args::{Args, Mode};
use crate::floor::Floor;
use crate::{Env, NS_CLIENT_IP, NS_PREFIX, NS_SERVER_IP, SEED};

/// One cell run: the client's and server's summaries, reduced.
#[derive(Debug, Clone, Default)]
pub(crate) struct CellRun {
    /// Tick-to-cache p50, p99, p99.9, µs.
    pub(crate) t2c: [Option<f64>; 3],
    /// Breakdown parts (see [`PARTS`]): (p50, p99) µs each.
    pub(crate) parts: [(Option<f64>, Option<f64>); 4],
    /// Client's delivered messages per second.
    pub(crate) delivered_rate: Option<f64>,
    /// Server user CPU ns per published message.
    pub(crate) server_user_ns: Option<f64>,
    /// Server system CPU ns per published message.
    pub(crate) server_sys_ns: Option<f64>,
    /// Client user CPU ns per delivered message.
    pub(crate) client_user_ns: Option<f64>,
    /// Client system CPU ns per delivered message.
    pub(crate) client_sys_ns: Option<f64>,
    /// Gaps the client gave up on.
    pub(crate) unrecovered: Option<f64>,
    /// Messages the client delivered.
    pub(crate) delivered: Option<f64>,
    /// Messages the server published.
    pub(crate) published: Option<f64>,
    /// The client's raw JSON summary.
    pub(crate) client: Value,
    /// The server's raw JSON summary.
    pub(crate) server: Value,
}

/// The keys of the client's `breakdown_ns`, and their column labels.
pub(crate) const PARTS: [(&str, &str); 4] = [
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

/// Append `flag value` pairs to a command line.
fn pairs(argv: &mut Vec<String>, flags: &[(&str, &str)]) {
    for (flag, value) in flags {
        argv.push(flag.to_string());
        argv.push(value.to_string());
    }
}

/// The server and client command lines of one cell run.
pub(crate) fn cell_commands(
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
pub(crate) fn cell_run(
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

/// A transport × mode and its runs.
#[derive(Debug)]
pub(crate) struct Cell {
    /// The transport.
    pub(crate) kind: TransportKind,
    /// The idle mode.
    pub(crate) mode: Mode,
    /// One per repetition, in order.
    pub(crate) runs: Vec<Result<CellRun, String>>,
    /// Server and client command lines, one pair per repetition.
    pub(crate) commands: Vec<[String; 2]>,
}

impl Cell {
    /// One figure over the successful runs.
    pub(crate) fn agg(&self, f: impl Fn(&CellRun) -> Option<f64>) -> Agg {
        agg(self.runs.iter().filter_map(|r| r.as_ref().ok()).map(f))
    }

    /// Median over the repetitions of (this run's figure / the same repetition's floor figure).
    pub(crate) fn ratio(
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
