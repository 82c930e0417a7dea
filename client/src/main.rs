//! `client`: receive a Tickwire feed, recover what is lost, keep a per-symbol
//! cache and measure latency.
//!
//! ```text
//! client --transport tcp --connect 127.0.0.1:9000 --duration 10s --json
//! client --transport multicast --connect 127.0.0.1:9100 --group 239.255.0.1:30001
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tickwire_client::{ClientConfig, Summary, parse_filter, run};
use tickwire_transports::idle::IdleStrategy;
use tickwire_transports::lossy::LossConfig;
use tickwire_transports::select::{TransportKind, TransportOptions, parse_duration};

/// Receive a Tickwire market-data feed with gap recovery, a lock-free cache and latency stats.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Args {
    /// Transport: tcp, multicast or xdp.
    #[arg(long, default_value = "tcp")]
    transport: TransportKind,
    /// TCP: server address. Multicast/xdp: the server's recovery (NACK/snapshot) address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    connect: SocketAddr,
    /// Multicast group of feed line A.
    #[arg(long, default_value = "239.255.0.1:30001")]
    group: SocketAddrV4,
    /// Multicast group of feed line B (A/B arbitration).
    #[arg(long)]
    group_b: Option<SocketAddrV4>,
    /// Interface address for multicast (127.0.0.1 = loopback).
    #[arg(long, default_value = "127.0.0.1")]
    interface: Ipv4Addr,
    /// Network interface name (xdp).
    #[arg(long)]
    ifname: Option<String>,
    /// Subscription filter, e.g. 0-9,42 (default: every symbol).
    #[arg(long, value_parser = parse_filter)]
    symbols: Option<Vec<u32>>,
    /// Size of the server's symbol universe.
    #[arg(long, default_value_t = 1000)]
    universe: u32,
    /// Stop after this long (0 = until the session ends or Ctrl-C).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    duration: Duration,
    /// Keep running after the server's end of session.
    #[arg(long)]
    stay: bool,
    /// Check every message against the stream regenerated from this seed (the server's --seed).
    #[arg(long)]
    verify: Option<u64>,
    /// Seed of the NACK jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// No live view.
    #[arg(long)]
    quiet: bool,
    /// Print a machine-readable summary on stdout at exit.
    #[arg(long)]
    json: bool,
    /// Write the full tick-to-cache histogram (.hgrm) to this file.
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Write the final cache (per-symbol state) to this file.
    #[arg(long)]
    book_out: Option<PathBuf>,
    /// Once subscribed (transport up), create this file (tests start the server after it).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Serve every counter and the tick-to-cache percentiles in the Prometheus
    /// text format at this address while running (scrape http://ADDR/metrics).
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Pin the receive thread to this CPU.
    #[arg(long)]
    cpu: Option<usize>,
    /// Idle strategy: auto (block until the next timer, spinning when it is
    /// within 100 µs), block, spin (give it a CPU with --cpu), spin-block or spin-block:BUDGET
    /// (spin BUDGET after each packet, then block).
    #[arg(long, default_value = "auto")]
    idle: IdleStrategy,
    /// Largest packet in bytes.
    #[arg(long, default_value_t = tickwire_core::wire::DEFAULT_MAX_PACKET)]
    max_packet: usize,
    /// Drop this fraction of received packets (seeded, in-process loss injection).
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Seed of the loss injection.
    #[arg(long, default_value_t = 2)]
    drop_seed: u64,
}

/// Largest `--universe`: 2^24 symbols (a cache of ~1 GiB). Beyond that the
/// allocation would fail, which aborts the process instead of saying why.
const MAX_UNIVERSE: u32 = 1 << 24;

fn print_summary(s: &Summary) {
    eprintln!(
        "client summary: {} messages delivered ({:.0} msg/s), last seq {}, gaps {} (filled {} by retransmit, {} by snapshot, {} unrecovered), \
         {} duplicates, {} CRC errors, {} malformed, {} NACKs, {} reconnects, tick-to-cache p50 {:.1}us p99 {:.1}us p99.9 {:.1}us, \
         CPU user {:.3}s sys {:.3}s (idle {}){}",
        s.messages_delivered,
        s.rate,
        s.last_seq,
        s.gaps_detected,
        s.gaps_filled_retransmit,
        s.gaps_filled_snapshot,
        s.unrecovered,
        s.duplicates,
        s.crc_errors,
        s.malformed,
        s.nacks_sent,
        s.reconnects,
        s.tick_to_cache_ns.p50 as f64 / 1e3,
        s.tick_to_cache_ns.p99 as f64 / 1e3,
        s.tick_to_cache_ns.p999 as f64 / 1e3,
        s.cpu_user_s,
        s.cpu_sys_s,
        s.idle,
        match &s.verify {
            Some(v) if v.ok => format!(", verified {} messages against the seed", v.checked),
            Some(v) => format!(
                ", VERIFY FAILED: {} mismatches, {} skipped, {} bad snapshot records",
                v.mismatches, v.skipped, v.snapshot_mismatches
            ),
            None => String::new(),
        }
    );
    eprint!("client latency breakdown:\n{}", s.breakdown_table);
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.drop_rate) {
        anyhow::bail!("--drop-rate must be between 0 and 1, got {}", args.drop_rate);
    }
    if !(1..=MAX_UNIVERSE).contains(&args.universe) {
        anyhow::bail!(
            "--universe must be between 1 and {MAX_UNIVERSE} (the cache takes ~64 bytes per symbol), got {}",
            args.universe
        );
    }
    if let Some(bad) = args.symbols.as_ref().and_then(|s| s.iter().find(|&&x| x >= args.universe)) {
        anyhow::bail!("--symbols names symbol {bad}, outside the universe 0..{}", args.universe);
    }
    // A receiver must take the largest packet a server may send: at least a
    // full datagram. A smaller limit would drop every full packet as malformed.
    let min_packet = tickwire_core::wire::DEFAULT_MAX_PACKET;
    if !(min_packet..=tickwire_core::wire::MAX_PACKET_LEN).contains(&args.max_packet) {
        anyhow::bail!(
            "--max-packet must be between {min_packet} and {}, got {}",
            tickwire_core::wire::MAX_PACKET_LEN,
            args.max_packet
        );
    }
    // Fail now, not after the whole run, if an output file cannot be written.
    for path in [&args.hdr_log, &args.book_out].into_iter().flatten() {
        std::fs::write(path, b"").with_context(|| format!("cannot write {}", path.display()))?;
    }
    let cfg = ClientConfig {
        transport: TransportOptions {
            kind: args.transport,
            addr: args.connect,
            group_a: args.group,
            group_b: args.group_b,
            interface: args.interface,
            ifname: args.ifname,
            max_packet_len: args.max_packet,
            loss: LossConfig { tx_drop: 0.0, rx_drop: args.drop_rate, seed: args.drop_seed },
        },
        universe: args.universe,
        filter: args.symbols,
        duration: (!args.duration.is_zero()).then_some(args.duration),
        exit_on_end: !args.stay,
        verify_seed: args.verify,
        seed: args.seed,
        live_view: !args.quiet,
        idle: args.idle,
        cpu: args.cpu,
        hdr_log: args.hdr_log,
        book_out: args.book_out,
        ready_file: args.ready_file,
        metrics: args.metrics,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let summary = run(&cfg, stop)?;
    print_summary(&summary);
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
