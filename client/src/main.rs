//! `client`: receive a Tickwire feed, recover what is lost, keep a per-symbol
//! cache and measure latency.
//!
//! ```text
//! client --transport tcp --connect 127.0.0.1:9000 --duration 10s --json
//! client --transport multicast --connect 127.0.0.1:9100 --group 239.255.0.1:30001
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tickwire_client::{ClientConfig, Summary, parse_filter, run};
use tickwire_transports::args::{TransportArgs, packet_size};
use tickwire_transports::idle::IdleStrategy;
use tickwire_transports::lossy::LossConfig;
use tickwire_transports::select::{io_text, parse_cpu, parse_drop_rate, parse_duration};

/// Receive a Tickwire market-data feed with gap recovery, a lock-free cache and latency stats.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Args {
    #[command(flatten)]
    net: TransportArgs,
    /// TCP: server address. Multicast/xdp: the server's recovery (NACK/snapshot) address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    connect: SocketAddr,
    /// Subscription filter, e.g. 0-9,42 (default: every symbol).
    #[arg(long, value_parser = parse_symbols)]
    symbols: Option<SymbolList>,
    /// Size of the server's symbol universe.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SYMBOLS)))]
    universe: u32,
    /// Stop after this long (0 = until the session ends or Ctrl-C).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    duration: Duration,
    /// Keep running after the server's end of session.
    #[arg(long)]
    stay: bool,
    /// Multicast: take the feed only from this address (IP or IP:PORT): the
    /// groups are joined source-specifically (IP_ADD_SOURCE_MEMBERSHIP) and
    /// every datagram from another sender is counted and dropped. A port left
    /// out is --connect's (the server sends its feed from its recovery port).
    /// Default: the recovery service's address and port (--connect), checked
    /// on every datagram.
    #[arg(long, value_name = "ADDR")]
    source: Option<tickwire_transports::multicast::FeedSource>,
    /// Check every message against the stream regenerated from this seed (the server's --seed).
    #[arg(long)]
    verify: Option<u64>,
    /// Seed of the recovery RNG (NACK jitter, Probe nonces). Default: drawn
    /// from the OS, so the nonces cannot be guessed; give one to make a run
    /// reproducible.
    #[arg(long)]
    seed: Option<u64>,
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
    /// Pin the polling thread (the only one with --threads single) to this CPU.
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<usize>,
    /// single: one thread reads and processes. pipeline: a receive thread
    /// per feed line reads into pooled buffers and hands them over a
    /// lock-free queue to the processing thread.
    #[arg(long, default_value = "single")]
    threads: tickwire_client::Threading,
    /// With --threads pipeline: pin the receive threads to these CPUs
    /// (e.g. 1 or 1,2: line A's, then line B's).
    #[arg(long, value_delimiter = ',', value_parser = parse_cpu)]
    rx_cpu: Vec<usize>,
    /// Idle strategy: auto (block until the next timer, spinning when it is
    /// within 100 µs), block, spin (give it a CPU with --cpu), spin-block or spin-block:BUDGET
    /// (spin BUDGET after each packet, then block).
    #[arg(long, default_value = "auto")]
    idle: IdleStrategy,
    /// Largest packet in bytes.
    #[arg(long, default_value_t = tickwire_core::wire::DEFAULT_MAX_PACKET, value_parser = packet_size(MIN_PACKET, MAX_PACKET))]
    max_packet: usize,
    /// Record every packet received, as received (before --drop-rate drops
    /// any), with its kernel receive stamp, in this pcapng file
    /// (Ethernet/IPv4/UDP frames Wireshark opens; tools/wireshark/tickwire.lua
    /// decodes them).
    #[arg(long, value_name = "FILE.pcapng")]
    record: Option<PathBuf>,
    /// With --record: start a new file (FILE.1.pcapng, ...) when one reaches
    /// this many bytes.
    #[arg(long, value_name = "BYTES", requires = "record")]
    record_rotate: Option<u64>,
    /// Delivery order. strict: feed order, a lost packet holds back every
    /// message behind it until it is recovered. per-symbol: a message whose
    /// symbol's update number follows the last one applied is applied at
    /// once; only the lost packet's symbols wait (shown stale).
    #[arg(long, default_value = "strict", value_parser = parse_order)]
    order: OrderArg,
    /// Drop this fraction of received packets (seeded, in-process loss injection).
    #[arg(long, default_value_t = 0.0, value_parser = parse_drop_rate)]
    drop_rate: f64,
    /// Seed of the loss injection.
    #[arg(long, default_value_t = 2)]
    drop_seed: u64,
}

/// `--order`'s value.
#[derive(Clone, Copy, Debug)]
struct OrderArg(tickwire_core::recovery::Order);

fn parse_order(s: &str) -> Result<OrderArg, String> {
    use tickwire_core::recovery::Order;
    match s {
        "strict" => Ok(OrderArg(Order::Strict)),
        "per-symbol" => Ok(OrderArg(Order::PerSymbol)),
        _ => Err(format!("expected strict or per-symbol, got {s:?}")),
    }
}

/// Largest `--universe` (and symbol in `--symbols`): the server's bound, the
/// generator's [`tickwire_core::gbm::MAX_SYMBOLS`] (2^20; the cache takes ~64
/// bytes per symbol). No server publishes more, and `--verify` regenerates the
/// stream with the same generator, which refuses more.
const MAX_SYMBOLS: u32 = tickwire_core::gbm::MAX_SYMBOLS;
/// A receiver must take the largest packet a server may send: at least a
/// full datagram. A smaller limit would drop every full packet as malformed.
const MIN_PACKET: usize = tickwire_core::wire::DEFAULT_MAX_PACKET;
/// Largest `--max-packet`: what a receiver accepts.
const MAX_PACKET: usize = tickwire_core::wire::MAX_PACKET_LEN;

/// A parsed `--symbols` list: one flag value (an alias, so clap does not
/// take `Vec` for "the flag repeated").
type SymbolList = Vec<u32>;

/// `--symbols`: [`parse_filter`]'s syntax, but every symbol below
/// [`MAX_SYMBOLS`] and at most that many in all, checked before the list is
/// expanded (`0-4294967295` would otherwise allocate 16 GiB and abort).
fn parse_symbols(s: &str) -> Result<Vec<u32>, String> {
    let mut total = 0u64;
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let bad = || format!("bad symbol filter {part:?}: use e.g. 0-9,42");
        let a: u64 = a.trim().parse().map_err(|_| bad())?;
        let b: u64 = b.trim().parse().map_err(|_| bad())?;
        if a.max(b) >= u64::from(MAX_SYMBOLS) {
            return Err(format!(
                "symbol {} in {part:?} is beyond the largest universe: symbols are 0..{MAX_SYMBOLS}",
                a.max(b)
            ));
        }
        total += b.saturating_sub(a) + 1;
        if total > u64::from(MAX_SYMBOLS) {
            return Err(format!("{s:?} lists more than {MAX_SYMBOLS} symbols"));
        }
    }
    parse_filter(s)
}

/// Report a usage error (exit code 2).
fn usage_error(msg: String) -> ! {
    Args::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit()
}

fn check(args: &Args) {
    if let Some(bad) = args.symbols.as_ref().and_then(|s| s.iter().find(|&&x| x >= args.universe)) {
        usage_error(format!(
            "--symbols names symbol {bad}, outside --universe {} (symbols 0..{})",
            args.universe, args.universe
        ));
    }
    if args.connect.port() == 0 {
        usage_error(format!("--connect {}: port 0 cannot be connected to", args.connect));
    }
    if let Err(msg) = args.net.check("--connect", args.connect) {
        usage_error(msg);
    }
}

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
    if s.delivery.order == "per-symbol" {
        let d = &s.delivery;
        eprintln!(
            "client: per-symbol order: {} messages applied ahead of a hole, {} held ({:.2}% of delivered), \
             {} stale periods, {:.1} µs stale on average, {} stale at exit",
            d.messages_ahead,
            d.messages_held,
            d.held_share * 100.0,
            d.stale_periods,
            d.stale_mean_us,
            d.stale_now
        );
    }
    if let Some(r) = &s.record {
        eprintln!(
            "client: recorded {} packets ({} bytes, {} file(s)) in {}{}",
            r.packets,
            r.bytes,
            r.files,
            r.file,
            if r.dropped > 0 {
                format!(", {} DROPPED from the capture (the disk could not keep up)", r.dropped)
            } else {
                String::new()
            }
        );
    }
    eprint!("client latency breakdown:\n{}", s.breakdown_table);
}

/// 8 bytes from the OS.
fn random_seed() -> anyhow::Result<u64> {
    use std::io::Read;
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).map_err(|e| {
        anyhow::anyhow!("reading /dev/urandom for the recovery seed: {}", io_text(&e))
    })?;
    Ok(u64::from_le_bytes(b))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    check(&args);
    // Fail now, not after the whole run, if an output file cannot be written.
    for path in [&args.hdr_log, &args.book_out].into_iter().flatten() {
        if let Err(e) = std::fs::write(path, b"") {
            anyhow::bail!("cannot write {}: {}", path.display(), io_text(&e));
        }
    }
    let mut transport = args.net.options(
        args.connect,
        args.max_packet,
        1, // TTL: a subscriber sends no multicast.
        LossConfig { tx_drop: 0.0, rx_drop: args.drop_rate, seed: args.drop_seed },
    );
    transport.source = args.source;
    let cfg = ClientConfig {
        transport,
        universe: args.universe,
        filter: args.symbols,
        duration: (!args.duration.is_zero()).then_some(args.duration),
        exit_on_end: !args.stay,
        verify_seed: args.verify,
        seed: match args.seed {
            Some(s) => s,
            None => random_seed()?,
        },
        live_view: !args.quiet,
        idle: args.idle,
        cpu: args.cpu,
        threading: args.threads,
        rx_cpus: args.rx_cpu,
        hdr_log: args.hdr_log,
        book_out: args.book_out,
        ready_file: args.ready_file,
        metrics: args.metrics,
        record: args.record,
        record_rotate: args.record_rotate,
        order: args.order.0,
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
