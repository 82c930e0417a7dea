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

mod args;
mod cell;
mod floor;
mod report;
mod topology;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tickwire_bench::floor::sockperf_available;
use tickwire_bench::proc::shown;
use tickwire_bench::stats::num;
use tickwire_transports::select::TransportKind;

use crate::args::{Args, Mode};
use crate::cell::{Cell, cell_commands, cell_run};
use crate::floor::{Floor, FloorKey, Net, Poll, Proto, floor_run};
use crate::report::{print_tables, to_json};
use crate::topology::{Topology, is_root};

/// Namespace prefix of the xdp topology (`xdp-setup/topology.sh up twlat 1`).
const NS_PREFIX: &str = "twlat";
/// Server address inside `<prefix>srv` (see topology.sh).
const NS_SERVER_IP: &str = "10.77.0.1";
/// Client address inside `<prefix>cli1`.
const NS_CLIENT_IP: &str = "10.77.0.11";
/// Generator seed of every server (and `--verify` seed of every client).
const SEED: u64 = 7;

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

    let bins = tickwire_bench::proc::bin_dir(args.bin_dir.as_deref())?;
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
