//! `compare`: side-by-side comparison runs of the transports.
//!
//! For each transport and each subscriber count, runs the real `server` and N
//! `client` processes on loopback for a fixed number of messages, several
//! times, and prints the medians as a Markdown table: server CPU time per
//! published message, user and system (the fan-out cost: flat for
//! multicast, O(N) for tcp), delivered rate, and tick-to-cache latency
//! percentiles (from each message's due time to the client's cache).
//!
//! ```text
//! cargo build --release --bins && target/release/compare --transports tcp,multicast --clients 1,4,16,32
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::Value;
use tickwire_transports::select::TransportKind;

/// Compare transports side by side.
#[derive(Debug, Parser)]
#[command(name = "compare")]
struct Args {
    /// Transports to compare.
    #[arg(long, value_delimiter = ',', default_value = "tcp,multicast")]
    transports: Vec<TransportKind>,
    /// Subscriber counts to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    clients: Vec<usize>,
    /// Messages per second.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Messages per run.
    #[arg(long, default_value_t = 300_000)]
    messages: u64,
    /// Runs per configuration (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seeded in-process loss at each client (fraction).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Directory holding the `server` and `client` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// First TCP / request port to use.
    #[arg(long, default_value_t = 19_000)]
    base_port: u16,
}

#[derive(Debug, Default, Clone)]
struct Run {
    server_cpu_ns_per_msg: f64,
    server_user_ns_per_msg: f64,
    server_sys_ns_per_msg: f64,
    server_syscalls_per_msg: f64,
    server_packets_per_msg: f64,
    client_rate: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    unrecovered: u64,
    delivered_all: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

fn wait_json(mut child: Child, what: &str, deadline: Duration) -> anyhow::Result<Value> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let mut out = String::new();
            child.stdout.take().context("no stdout")?.read_to_string(&mut out)?;
            if !status.success() {
                bail!("{what} exited with {status}");
            }
            let line = out.lines().rev().find(|l| l.starts_with('{')).context("no JSON summary")?;
            return Ok(serde_json::from_str(line)?);
        }
        if start.elapsed() > deadline {
            let _ = child.kill();
            bail!("{what} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one_run(
    args: &Args,
    bins: &std::path::Path,
    kind: TransportKind,
    n: usize,
    port: u16,
) -> anyhow::Result<Run> {
    let addr = format!("127.0.0.1:{port}");
    let group = format!("239.255.{}.{}:{}", (port >> 8) & 0xff, port & 0xff, port + 1);
    let server = Command::new(bins.join("server"))
        .args([
            "--transport",
            &kind.to_string(),
            "--listen",
            &addr,
            "--group",
            &group,
            "--rate",
            &args.rate.to_string(),
            "--messages",
            &args.messages.to_string(),
            "--duration",
            "0",
            "--linger",
            "1s",
            "--stats-interval",
            "0",
            "--json",
            "--seed",
            "7",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server")?;
    // Clients must be subscribed before the first message for a fair comparison:
    // tcp waits for the listener; multicast joins the group before the server
    // starts generating (its first messages would otherwise need a snapshot).
    let start = Instant::now();
    if kind == TransportKind::Tcp {
        while std::net::TcpStream::connect(&addr).is_err() {
            if start.elapsed() > Duration::from_secs(10) {
                bail!("server never listened on {addr}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let clients: Vec<Child> = (0..n)
        .map(|i| {
            Command::new(bins.join("client"))
                .args([
                    "--transport",
                    &kind.to_string(),
                    "--connect",
                    &addr,
                    "--group",
                    &group,
                    "--quiet",
                    "--json",
                    "--seed",
                    &i.to_string(),
                    "--drop-rate",
                    &args.drop_rate.to_string(),
                    "--drop-seed",
                    &(100 + i).to_string(),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting a client")
        })
        .collect::<anyhow::Result<_>>()?;
    let deadline = Duration::from_secs(30 + 2 * args.messages / args.rate.max(1));
    let s = wait_json(server, "server", deadline)?;
    let mut run = Run {
        server_cpu_ns_per_msg: s["cpu_ns_per_message"].as_f64().unwrap_or(f64::NAN),
        server_user_ns_per_msg: s["cpu_user_ns_per_message"].as_f64().unwrap_or(f64::NAN),
        server_sys_ns_per_msg: s["cpu_sys_ns_per_message"].as_f64().unwrap_or(f64::NAN),
        server_syscalls_per_msg: s["syscalls"].as_f64().unwrap_or(0.0)
            / s["messages"].as_f64().unwrap_or(1.0),
        server_packets_per_msg: s["transport_packets"].as_f64().unwrap_or(0.0)
            / s["messages"].as_f64().unwrap_or(1.0),
        delivered_all: true,
        ..Run::default()
    };
    let (mut rates, mut p50, mut p99, mut p999) = (vec![], vec![], vec![], vec![]);
    for c in clients {
        let v = wait_json(c, "client", deadline)?;
        rates.push(v["rate"].as_f64().unwrap_or(0.0));
        // Tick-to-cache: from each message's due time to the cache.
        let t = &v["tick_to_cache_ns"];
        p50.push(t["p50"].as_f64().unwrap_or(f64::NAN) / 1e3);
        p99.push(t["p99"].as_f64().unwrap_or(f64::NAN) / 1e3);
        p999.push(t["p999"].as_f64().unwrap_or(f64::NAN) / 1e3);
        run.unrecovered += v["unrecovered"].as_u64().unwrap_or(0);
        run.delivered_all &= v["last_seq"].as_u64() == s["messages"].as_u64();
    }
    run.client_rate = median(rates);
    run.p50_us = median(p50);
    run.p99_us = median(p99);
    run.p999_us = median(p999);
    Ok(run)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bins = match &args.bin_dir {
        Some(d) => d.clone(),
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
    println!(
        "rate {} msg/s, {} messages per run, {} runs per row (medians), drop rate {}",
        args.rate, args.messages, args.runs, args.drop_rate
    );
    println!();
    println!(
        "| transport | clients | server CPU ns/msg (user + sys) | server packets sent/msg | server send syscalls/msg | client msg/s | tick-to-cache p50 µs | p99 µs | p99.9 µs | complete |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let mut port = args.base_port;
    for &kind in &args.transports {
        for &n in &args.clients {
            let mut runs = Vec::new();
            for _ in 0..args.runs {
                port += 2;
                match one_run(&args, &bins, kind, n, port) {
                    Ok(r) => runs.push(r),
                    Err(e) => eprintln!("compare: {kind} x{n}: {e:#}"),
                }
            }
            if runs.is_empty() {
                println!("| {kind} | {n} | failed | | | | | | | |");
                continue;
            }
            let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
            let complete = runs.iter().all(|r| r.delivered_all && r.unrecovered == 0);
            println!(
                "| {kind} | {n} | {:.0} ({:.0} + {:.0}) | {:.3} | {:.3} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
                m(|r| r.server_cpu_ns_per_msg),
                m(|r| r.server_user_ns_per_msg),
                m(|r| r.server_sys_ns_per_msg),
                m(|r| r.server_packets_per_msg),
                m(|r| r.server_syscalls_per_msg),
                m(|r| r.client_rate),
                m(|r| r.p50_us),
                m(|r| r.p99_us),
                m(|r| r.p999_us),
                if complete { "yes" } else { "NO" }
            );
        }
    }
    Ok(())
}
