//! `compare`: the comparison harness. With no flags it runs the default
//! profile: tcp and multicast on loopback (offered rates, 1 and 4
//! subscribers, seeded in-process loss, A/B feeds), the sockperf floor of
//! each path in the same run, and, as root, tcp, multicast and xdp across a
//! namespace topology with real kernel loss on its bridge. The loss tables'
//! lossy datagram cells run in both delivery orders (`--orders`). Each cell runs
//! after a warm-up, `--runs` times; `--out DIR` (default
//! `results/<timestamp>/`) receives report.md, results.json, the plots (SVG
//! and PNG) and a `.hgrm` per cell. Every command line is printed as it runs.
//!
//! ```text
//! cargo build --release --bins --all-features && target/release/compare
//! target/release/compare --full --out /tmp/full
//! target/release/compare --transports tcp,multicast --clients 1,4,16,32 --rate 50000
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use tickwire_bench::cell::{self, Mode, Order, RunEnv};
use tickwire_bench::floor::{self, FloorKey, Net, Test};
use tickwire_bench::netns::Topology;
use tickwire_bench::proc::{run, shown};
use tickwire_bench::profile::{ProfileArgs, plan};
use tickwire_bench::report::{self, CellResult, FloorResult, Results, RunRecord};
use tickwire_bench::stats::num;
use tickwire_transports::select::TransportKind;

/// Compare Tickwire's transports side by side, with the kernel floor, loss, plots and a report.
#[derive(Debug, Parser)]
#[command(name = "compare")]
struct Args {
    /// Report directory (default: `results/<UTC timestamp>/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Wider sweeps: more rates, up to 32 clients, more loss rates, idle modes, more repetitions.
    #[arg(long)]
    full: bool,
    /// Transports (xdp runs across the namespaces: root, binaries built with --all-features).
    #[arg(long, value_delimiter = ',', default_value = "tcp,multicast,xdp")]
    transports: Vec<TransportKind>,
    /// The fixed offered rate of most cells, msgs/s.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Further offered rates of the rate table (0 = as fast as the server can)
    /// [default: 0; --full: 20000,50000,200000,0].
    #[arg(long, value_delimiter = ',')]
    rates: Option<Vec<u64>>,
    /// Subscriber counts [default: 1,4; --full: 1,4,16,32].
    #[arg(long, value_delimiter = ',')]
    clients: Option<Vec<usize>>,
    /// Seeded in-process drop rates at each client, fractions [default: 0.01,0.05; --full: 0.001,0.01,0.05,0.2].
    #[arg(long, value_delimiter = ',')]
    drop_rates: Option<Vec<f64>>,
    /// Kernel loss on the bridge, percent (root) [default: 0.1,1,5,20].
    #[arg(long, value_delimiter = ',')]
    kernel_losses: Option<Vec<f64>>,
    /// Delivery orders (`client --order`) of the lossy cells of the loss
    /// tables (in-process and bridge loss; tcp, which has no holes, runs
    /// strict): `strict`, `per-symbol`.
    #[arg(long, value_delimiter = ',', default_value = "strict,per-symbol")]
    orders: Vec<Order>,
    /// Delivery orders of the loss tables' lossless reference cells: strict
    /// always runs; `strict,per-symbol` adds per-symbol beside it (an A/B of
    /// what per-symbol order costs where there are no holes).
    #[arg(long, value_delimiter = ',', default_value = "strict")]
    lossless_orders: Vec<Order>,
    /// Idle modes besides the default [default: none; --full: spin,coalesce].
    #[arg(long, value_delimiter = ',')]
    modes: Option<Vec<Mode>>,
    /// Run the client's pipeline (`--threads pipeline`) beside the
    /// single-thread default, in a table of its own (tcp and multicast on
    /// loopback, at --rate and at --rate 0). `--no-pipeline` leaves it out.
    #[arg(long)]
    no_pipeline: bool,
    /// Add the "recovery vs subscribers" table (multicast on loopback, 1, 4
    /// and 16 clients, 1 % and 5 % loss upstream of the fan-out and at each
    /// client, at 20k msgs/s; on with --full): 12 cells, 42 client processes.
    #[arg(long)]
    recovery: bool,
    /// Messages per run [default: 100000; --full: 300000] (kernel-loss cells: half).
    #[arg(long)]
    messages: Option<u64>,
    /// Repetitions per cell and floor (medians, min, max) [default: 3; --full: 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Seconds of each sockperf run [default: 2; --full: 5].
    #[arg(long)]
    floor_secs: Option<u32>,
    /// No warm-up run before the repetitions.
    #[arg(long)]
    no_warmup: bool,
    /// Leave out the namespace topology even as root (same as --nets loopback).
    #[arg(long)]
    no_netns: bool,
    /// Paths to run cells on: loopback, netns (namespaces: root).
    #[arg(long, value_delimiter = ',', default_value = "loopback,netns")]
    nets: Vec<Net>,
    /// Check every delivered message against the seed in the clients (costs client CPU).
    #[arg(long)]
    verify: bool,
    /// Server --linger, ms (recovery after the last message).
    #[arg(long, default_value_t = 500)]
    linger_ms: u64,
    /// Leave out the Aeron peer's cells (run where `aeron-peer` was built:
    /// `cargo build --release --bins --all-features`).
    #[arg(long)]
    no_aeron: bool,
    /// Directory holding the `server` and `client` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// First of the 1000 ports the run uses (default: 20000 + 1000 × (pid mod 40), so that
    /// concurrent runs differ).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1024..=64_000))]
    base_port: Option<u16>,
}

/// Hands out two-port blocks (`p`, `p + 1`, `p + 2`) in a window above the base.
#[derive(Debug)]
struct Ports {
    base: u16,
    next: u32,
}

impl Ports {
    fn take(&mut self) -> u16 {
        // 250 runs of 4 ports before a port is used again (long closed by then).
        let p = self.base + (self.next % 250 * 4) as u16;
        self.next += 1;
        p
    }
}

fn utc_stamp() -> String {
    run(&["date", "-u", "+%Y%m%d-%H%M%S"]).map(|s| s.trim().to_string()).unwrap_or_else(|_| {
        format!(
            "{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        )
    })
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = run(&["uname", "-r"]).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!("{cpus} CPUs, Linux {}, load average at start {}", kernel.trim(), load.join(" "))
}

/// The binary was built with the xdp feature (it lacks the "not built in" message).
fn has_xdp(bin: &Path) -> bool {
    let needle = b"the xdp transport is not built into this binary";
    std::fs::read(bin).is_ok_and(|b| !b.windows(needle.len()).any(|w| w == needle))
}

/// Namespace names start with this: `twc` and the harness's pid.
fn netns_prefix() -> String {
    format!("twc{}", std::process::id())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Progress: units done of total, elapsed, an estimate of what is left.
#[derive(Debug)]
struct Progress {
    start: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    fn line(&mut self, what: &str) {
        self.done += 1;
        let el = self.start.elapsed().as_secs_f64();
        let left = if self.done > 1 {
            el / (self.done - 1) as f64 * (self.total + 1 - self.done) as f64
        } else {
            f64::NAN
        };
        let left =
            if left.is_finite() { format!("~{left:.0} s remaining") } else { "estimating".into() };
        eprintln!(
            "compare: cell {} of {}, elapsed {el:.0} s, {left}: {what}",
            self.done, self.total
        );
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || {
        eprintln!("compare: interrupted: stopping, cleaning up, writing what was measured");
        flag.store(true, Ordering::Relaxed)
    })
    .context("installing the Ctrl-C handler")?;

    let bins = tickwire_bench::proc::bin_dir(a.bin_dir.as_deref())?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("results").join(utc_stamp()));
    let raw = out.join("raw");
    let hgrm_dir = out.join("hgrm");
    for d in [&raw, &hgrm_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let out = std::fs::canonicalize(&out)?;
    let raw = out.join("raw");

    let full = a.full;
    let root = is_root();
    let netns_missing = tickwire_transports::kernel::netns().err();
    let want_netns = !a.no_netns && a.nets.contains(&Net::Netns);
    let netns_ok = want_netns && netns_missing.is_none();
    let af_xdp = tickwire_transports::kernel::af_xdp();
    let aeron_bin = bins.join("aeron-peer").is_file();
    let xdp_bins = has_xdp(&bins.join("server")) && has_xdp(&bins.join("client"));
    let sockperf = floor::sockperf_available();
    let pa = ProfileArgs {
        full,
        transports: a.transports.clone(),
        rate: a.rate,
        rates: a.rates.clone().unwrap_or(if full {
            vec![20_000, 50_000, 200_000, 0]
        } else {
            vec![0]
        }),
        clients: a.clients.clone().unwrap_or(if full { vec![1, 4, 16, 32] } else { vec![1, 4] }),
        drop_rates: a.drop_rates.clone().unwrap_or(if full {
            vec![0.001, 0.01, 0.05, 0.2]
        } else {
            vec![0.01, 0.05]
        }),
        kernel_losses: a.kernel_losses.clone().unwrap_or(vec![0.1, 1.0, 5.0, 20.0]),
        messages: a.messages.unwrap_or(if full { 300_000 } else { 100_000 }).max(1),
        modes: a.modes.clone().unwrap_or(if full {
            vec![Mode::Spin, Mode::Coalesce]
        } else {
            vec![]
        }),
        orders: a.orders.clone(),
        lossless_orders: a.lossless_orders.clone(),
        pipeline: !a.no_pipeline,
        recovery: a.recovery || full,
        netns: netns_ok,
        loopback: a.nets.contains(&Net::Loopback),
        netns_skip_reason: match &netns_missing {
            _ if !want_netns => "not asked for (--no-netns or --nets)".into(),
            Some(m) => m.to_string(),
            None => String::new(),
        },
        aeron: !a.no_aeron && aeron_bin,
        aeron_skip_reason: if a.no_aeron {
            "--no-aeron".into()
        } else if !aeron_bin {
            format!(
                "{} is not built (cargo build --release --bins --all-features, or --features aeron)",
                bins.join("aeron-peer").display()
            )
        } else {
            "multicast not among --transports".into()
        },
        xdp: netns_ok && xdp_bins && af_xdp.is_ok(),
        xdp_skip_reason: match &af_xdp {
            _ if !xdp_bins => "the server/client binaries were built without the xdp feature \
                               (cargo build --release --bins --all-features)"
                .into(),
            Err(m) => m.to_string(),
            Ok(()) => String::new(),
        },
    };
    let mut plan = plan(&pa);
    if want_netns && !root {
        eprintln!(
            "compare: not root: SKIPPING the namespace topology, xdp and kernel loss (see the report)"
        );
    }
    if !sockperf {
        plan.skipped
            .push("the sockperf floor: sockperf not installed (apt-get install sockperf)".into());
    }
    for s in &plan.skipped {
        eprintln!("compare: SKIPPED: {s}");
    }
    let reps = a.runs.unwrap_or(if full { 5 } else { 3 }).max(1);
    let floor_secs = a.floor_secs.unwrap_or(if full { 5 } else { 2 }).max(1);

    let need_netns = plan.cells.iter().any(|c| c.net == Net::Netns);
    let mut topo = None;
    if need_netns {
        let max_clients =
            plan.cells.iter().filter(|c| c.net == Net::Netns).map(|c| c.clients).max().unwrap_or(1);
        let prefix = netns_prefix();
        eprintln!(
            "compare: making namespaces {prefix}srv, {prefix}mid (bridge br0), {prefix}cli1..{max_clients}"
        );
        match Topology::up(&prefix, max_clients) {
            Ok(t) => {
                // Kernel loss needs netem or nftables: ask once, before the
                // cells, so a kernel without both skips those cells, said.
                let lossy = plan.cells.iter().any(|c| c.net == Net::Netns && c.kernel_loss > 0.0);
                if lossy && let Err(e) = t.set_loss(1.0) {
                    let why = format!(
                        "the kernel-loss cells: this kernel cannot drop on the bridge: {e:#}"
                    );
                    eprintln!("compare: SKIPPED: {why}");
                    plan.skipped.push(why);
                    let keep: Vec<bool> = plan
                        .cells
                        .iter()
                        .map(|c| !(c.net == Net::Netns && c.kernel_loss > 0.0))
                        .collect();
                    plan.scenarios.iter_mut().for_each(|s| s.cells.retain(|&i| keep[i]));
                }
                t.clear_loss();
                topo = Some(t);
            }
            Err(e) => {
                eprintln!("compare: SKIPPED: the namespace cells: {e:#}");
                plan.skipped
                    .push(format!("the namespace cells: could not make the topology: {e:#}"));
                let keep: Vec<bool> = plan.cells.iter().map(|c| c.net != Net::Netns).collect();
                plan.scenarios.iter_mut().for_each(|s| s.cells.retain(|&i| keep[i]));
            }
        }
    }
    // The floor of every path that has cells.
    let nets: Vec<Net> = [Net::Loopback, Net::Netns]
        .into_iter()
        .filter(|&n| {
            plan.cells.iter().any(|c| c.net == n) && (n == Net::Loopback || topo.is_some())
        })
        .collect();
    let mut floors: Vec<FloorResult> = Vec::new();
    if sockperf {
        for &net in &nets {
            for (tcp, test) in
                [(false, Test::PingPong), (true, Test::PingPong), (false, Test::Throughput)]
            {
                floors.push(FloorResult {
                    key: FloorKey { net, tcp, test },
                    runs: Vec::new(),
                    commands: Vec::new(),
                });
            }
        }
    }
    let active: Vec<usize> = (0..plan.cells.len())
        .filter(|&i| plan.cells[i].net == Net::Loopback || topo.is_some())
        .collect();
    let mut cells: Vec<CellResult> = plan
        .cells
        .iter()
        .map(|s| CellResult {
            spec: s.clone(),
            runs: Vec::new(),
            commands: Vec::new(),
            hgrm: None,
            loss_mechanism: None,
        })
        .collect();
    // One warm-up per transport (or peer) and path, before the repetitions (not reported).
    let mut warmups: Vec<usize> = Vec::new();
    if !a.no_warmup {
        for &i in &active {
            let s = &plan.cells[i];
            if !warmups
                .iter()
                .any(|&w| plan.cells[w].label() == s.label() && plan.cells[w].net == s.net)
            {
                warmups.push(i);
            }
        }
    }
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: warmups.len() + reps * (active.len() + floors.len()),
    };
    eprintln!(
        "compare: {} cells × {reps} repetitions, {} floor runs, {} warm-ups; {} messages per run; report in {}",
        active.len(),
        reps * floors.len(),
        warmups.len(),
        pa.messages,
        out.display()
    );
    let base_port = a.base_port.unwrap_or(20_000 + (std::process::id() % 40) as u16 * 1_000);
    let env = RunEnv {
        bins: &bins,
        dir: &raw,
        topo: topo.as_ref(),
        verify: a.verify,
        linger_ms: a.linger_ms,
        stop: &stop,
    };
    let mut runner =
        Runner { env: &env, out: &out, ports: Ports { base: base_port, next: 0 }, run_no: 0 };
    let started = Instant::now();
    'all: {
        for &w in &warmups {
            if stop.load(Ordering::Relaxed) {
                break 'all;
            }
            progress.line(&format!("warm-up {}", plan.cells[w].id()));
            runner.cell(&mut cells[w], false);
        }
        for rep in 0..reps {
            for f in &mut floors {
                if stop.load(Ordering::Relaxed) {
                    break 'all;
                }
                progress.line(&format!("floor {} (repetition {}/{reps})", f.key.label(), rep + 1));
                runner.floor(f, rep, floor_secs);
            }
            for &i in &active {
                if stop.load(Ordering::Relaxed) {
                    break 'all;
                }
                progress.line(&format!("{} (repetition {}/{reps})", plan.cells[i].id(), rep + 1));
                runner.cell(&mut cells[i], true);
            }
        }
    }
    if let Some(t) = &topo {
        t.clear_loss();
    }
    let interrupted = stop.load(Ordering::Relaxed);
    let config = json!({
        "profile": if full { "full" } else { "default" },
        "repetitions": reps,
        "warmup": !a.no_warmup,
        "rate": pa.rate, "rates": pa.rates, "clients": pa.clients, "drop_rates": pa.drop_rates,
        "kernel_losses_percent": pa.kernel_losses, "modes": pa.modes, "orders": pa.orders, "lossless_orders": pa.lossless_orders, "symbols": cell::SYMBOLS, "pipeline": pa.pipeline, "messages": pa.messages,
        "floor_secs": floor_secs, "linger_ms": a.linger_ms, "verify": a.verify,
        "transports": a.transports.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "root": root, "sockperf": sockperf, "xdp_in_binaries": xdp_bins, "aeron_peer": aeron_bin, "netns": topo.is_some(), "netns_prefix": netns_prefix(),
        "bins": bins.display().to_string(), "machine": machine(),
    });
    drop(topo);
    let mut results = Results {
        plan,
        cells,
        floors,
        config,
        plots: Vec::new(),
        plot_error: None,
        wall_s: started.elapsed().as_secs_f64(),
        interrupted,
    };
    match tickwire_bench::plots::draw_all(&results, &out, pa.rate) {
        Ok(p) => results.plots = p,
        Err(e) => {
            eprintln!("compare: plots not drawn: {e}");
            results.plot_error = Some(e);
        }
    }
    report::write(&results, &out)?;
    print!(
        "{}",
        std::fs::read_to_string(out.join("report.md"))?.split("## Plots").next().unwrap_or("")
    );
    eprintln!(
        "compare: done in {:.0} s; report: {}",
        results.wall_s,
        out.join("report.md").display()
    );
    if interrupted {
        std::process::exit(130);
    }
    Ok(())
}

/// Runs cells and floors, numbering their files and handing out ports.
#[derive(Debug)]
struct Runner<'a> {
    env: &'a RunEnv<'a>,
    out: &'a Path,
    ports: Ports,
    run_no: usize,
}

impl Runner<'_> {
    /// One run of a cell (recorded, or a warm-up), with its kernel loss applied around it.
    fn cell(&mut self, c: &mut CellResult, record: bool) {
        self.run_no += 1;
        let spec = c.spec.clone();
        let port = self.ports.take();
        let tag = format!("run{}-{}", self.run_no, spec.id());
        if let Some(t) = self.env.topo {
            t.clear_loss();
            if spec.net == Net::Netns && spec.kernel_loss > 0.0 {
                match t.set_loss(spec.kernel_loss) {
                    Ok(m) => {
                        eprintln!("compare:   bridge loss {}% by {}", spec.kernel_loss, m.name());
                        c.loss_mechanism = Some(m.name());
                    }
                    Err(e) => {
                        eprintln!("compare:   FAILED: could not apply bridge loss: {e:#}");
                        c.runs.push(Err(format!("could not apply bridge loss: {e:#}")));
                        return;
                    }
                }
            }
        }
        let cmds = match cell::commands(&spec, self.env, port, &tag) {
            Ok(x) => x,
            Err(e) => {
                c.runs.push(Err(format!("{e:#}")));
                return;
            }
        };
        let shown_cmds = cmds.shown(spec.transport);
        for l in &shown_cmds {
            eprintln!("compare:   {l}");
        }
        let r = cell::run(&spec, &cmds, self.env, &tag);
        if let Some(t) = self.env.topo {
            t.clear_loss();
        }
        if !record {
            if let Err(e) = r {
                eprintln!("compare:   warm-up failed: {e:#}");
            }
            return;
        }
        c.commands = shown_cmds;
        match r {
            Ok((fig, server, clients)) => {
                eprintln!(
                    "compare:   delivered {} msgs/s, tick-to-cache p50 {} µs p99 {} µs, unrecovered {}, held {}%, {}",
                    num(fig.delivered_msgs_per_s),
                    num(fig.t2c_p50_us),
                    num(fig.t2c_p99_us),
                    num(fig.unrecovered),
                    num(fig.held_share.map(|h| h * 100.0)),
                    if fig.complete { "complete" } else { "INCOMPLETE" }
                );
                let dst = format!("hgrm/{}.hgrm", spec.id());
                if std::fs::copy(cell::hgrm_path(self.env.dir, &tag), self.out.join(&dst)).is_ok() {
                    c.hgrm = Some(dst);
                }
                c.runs.push(Ok(RunRecord { figures: fig, server, clients }));
            }
            Err(e) => {
                eprintln!("compare:   FAILED: {e:#}");
                c.runs.push(Err(format!("{e:#}")));
            }
        }
    }

    /// One sockperf run of a floor.
    fn floor(&mut self, f: &mut FloorResult, rep: usize, secs: u32) {
        let port = self.ports.take();
        let r = floor::commands(f.key, port, secs, self.env.topo).and_then(|(srv, cli)| {
            eprintln!("compare:   {}\ncompare:   {}", shown(&srv), shown(&cli));
            f.commands = vec![shown(&srv), shown(&cli)];
            let tag = format!("floor{}-{}", rep + 1, f.key.label().replace([' ', '(', ')'], ""));
            floor::run(f.key, &srv, &cli, port, secs, self.env.dir, &tag, self.env.stop)
        });
        match &r {
            Ok(x) => eprintln!(
                "compare:   p50 {} µs, p99 {} µs, {} msgs/s",
                num(x.p50_us),
                num(x.p99_us),
                num(x.msgs_per_s)
            ),
            Err(e) => eprintln!("compare:   floor FAILED: {e:#}"),
        }
        f.runs.push(r.map_err(|e| format!("{e:#}")));
    }
}
