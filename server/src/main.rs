//! `server`: simulate an exchange and publish its feed.
//!
//! ```text
//! server --transport tcp --rate 200000 --seed 7 --duration 10s
//! server --transport multicast --listen 127.0.0.1:9100 --group 239.255.0.1:30001
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use tickwire_core::gbm::GbmConfig;
use tickwire_core::publisher::{ConfigError, MAX_RETRANSMIT_WINDOW, SequencerConfig};
use tickwire_server::replay::Replay;
use tickwire_server::{ServerConfig, publish, run};
use tickwire_transports::args::{TransportArgs, packet_size};
use tickwire_transports::idle::IdleStrategy;
use tickwire_transports::lossy::LossConfig;
use tickwire_transports::select::{
    TransportKind, io_text, parse_cpu, parse_drop_rate, parse_duration,
};

/// Simulate an exchange (GBM prices) and publish a sequenced market-data feed.
#[derive(Debug, Parser)]
#[command(name = "server", version)]
struct Args {
    #[command(flatten)]
    net: TransportArgs,
    /// TCP: address to listen on. Multicast/xdp: unicast recovery (NACK/snapshot) address.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Multicast and xdp: IP TTL of the feed's datagrams. Each router on the
    /// way takes 1: the default 1 keeps the feed on this subnet, crossing N
    /// routers needs N + 1 (keep groups in 239.0.0.0/8 inside your site).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: u32,
    /// Number of symbols in the universe.
    #[arg(long, default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SYMBOLS)))]
    symbols: u32,
    /// Messages per second (0 = as fast as possible).
    #[arg(long, default_value_t = 200_000,
          value_parser = clap::value_parser!(u64).range(0..=MAX_RATE))]
    rate: u64,
    /// Generator seed: the whole stream is a function of it.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How long to generate (e.g. 10s, 500ms; 0 = until Ctrl-C).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    messages: Option<u64>,
    /// Messages kept for retransmission (NACK / resume window).
    #[arg(long, default_value_t = 1 << 20,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RETRANSMIT_WINDOW))]
    retransmit_window: u64,
    /// Session epoch (default: from the wall clock, so it changes on restart).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    epoch: Option<u64>,
    /// After the session ends, keep serving recovery requests this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    linger: Duration,
    /// Pin the publishing thread to this CPU.
    #[arg(long, value_parser = parse_cpu)]
    cpu: Option<usize>,
    /// Progress line interval (0 = none).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    stats_interval: Duration,
    /// Bounded coalescing (e.g. 20us, 100us): a packet waits until its oldest
    /// message has been due this long, trading that much latency for fewer,
    /// fuller packets and less CPU. Default: natural batching, whatever is due
    /// goes out at once (small packets at low rates, full ones at high rates).
    #[arg(long, value_parser = parse_duration)]
    max_delay: Option<Duration>,
    /// Idle strategy: auto (spin when the next message is due within 100 µs,
    /// else block until 50 µs before it), block, spin (give it a CPU with
    /// --cpu), spin-block or spin-block:BUDGET (spin BUDGET after work, then block).
    #[arg(long, default_value = "auto")]
    idle: IdleStrategy,
    /// Largest packet in bytes.
    #[arg(long, default_value_t = tickwire_core::wire::DEFAULT_MAX_PACKET, value_parser = packet_size(MIN_PACKET, MAX_PACKET))]
    max_packet: usize,
    /// How validated NACKs and snapshot requests are answered: multicast
    /// (once, on the feed's group line A, for every subscriber that lost the
    /// same packets; needs a transport with a group) or unicast (a copy per
    /// requester). docs/PROTOCOL.md § 10.2.
    #[arg(long, value_enum, default_value_t = RepairArg::Multicast)]
    repair: RepairArg,
    /// Bytes per second multicast repairs may take for the whole group
    /// (token bucket); beyond it requests are served by unicast.
    #[arg(long, default_value_t = tickwire_core::publisher::DEFAULT_GROUP_RATE_BYTES_PER_SEC,
          value_parser = clap::value_parser!(u64).range(1..))]
    repair_budget: u64,
    /// Drop this fraction of outgoing packets (seeded, in-process loss injection).
    #[arg(long, default_value_t = 0.0, value_parser = parse_drop_rate)]
    drop_rate: f64,
    /// Seed of the loss injection.
    #[arg(long, default_value_t = 1)]
    drop_seed: u64,
    /// tcp: start the session (and its clock) only once this many clients
    /// have logged in, so every client sees the feed from its first message.
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_WAIT_CLIENTS))]
    wait_clients: u64,
    /// Serve every counter in the Prometheus text format at this address
    /// while running (e.g. 127.0.0.1:9464; scrape http://ADDR/metrics).
    #[arg(long)]
    metrics: Option<SocketAddr>,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Write the final book (per-symbol state) to this file.
    #[arg(long)]
    book_out: Option<PathBuf>,
    /// Once listening, write the bound address to this file (for --listen 127.0.0.1:0).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// tcp: connections accepted from one source address (any port); more are
    /// refused at once and counted (refused_per_host).
    #[arg(long, default_value_t = tickwire_transports::tcp::DEFAULT_MAX_PER_HOST as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_PER_HOST))]
    max_per_host: u64,
    /// Publish a recorded session (a pcapng capture, e.g. from `client
    /// --record`) instead of the GBM stream: its messages in sequence order,
    /// duplicates and retransmissions removed, as a new session (new epoch,
    /// sequences from 1). --rate is ignored; --duration applies only if given.
    #[arg(long, value_name = "FILE.pcapng")]
    replay: Option<PathBuf>,
    /// With --replay: 1x (the recorded pace), 2x, 0.5x..., or max (as fast
    /// as the transport takes them).
    #[arg(long, default_value = "1x", requires = "replay")]
    speed: tickwire_server::replay::Speed,
    /// With --replay: start over at the end (the session goes on, its
    /// sequences continue) until --duration, --messages or Ctrl-C.
    #[arg(long = "loop", requires = "replay")]
    looping: bool,
}

/// Largest `--max-per-host`: no server holds more connections than this.
const MAX_PER_HOST: u64 = 65_536;

/// Largest `--symbols`: the generator's own bound ([`GbmConfig`] refuses
/// more), so the flag says so instead of failing at start-up.
const MAX_SYMBOLS: u32 = tickwire_core::gbm::MAX_SYMBOLS;
/// Largest `--rate`: one message per nanosecond, the clock's resolution.
const MAX_RATE: u64 = 1_000_000_000;
/// Largest `--wait-clients`: far beyond what one TCP listener serves.
const MAX_WAIT_CLIENTS: u64 = 1 << 20;
/// Smallest `--max-packet`: one snapshot record must fit a packet.
const MIN_PACKET: usize = tickwire_core::publisher::MIN_PACKET_LEN;
/// Largest `--max-packet`: what a receiver accepts.
const MAX_PACKET: usize = tickwire_core::wire::MAX_PACKET_LEN;

/// Report a usage error naming the flags (exit code 2).
fn usage_error(msg: String) -> ! {
    Args::command().error(clap::error::ErrorKind::ArgumentConflict, msg).exit()
}

fn check(args: &Args) {
    if args.wait_clients > 0 && args.net.transport != TransportKind::Tcp {
        usage_error(format!(
            "--wait-clients needs --transport tcp (got {}): datagram subscribers join the group without logging in",
            args.net.transport
        ));
    }
    if let Err(msg) = args.net.check("--listen", args.listen) {
        usage_error(msg);
    }
    // The snapshot of the universe must be numberable at this packet size.
    let core_cfg = SequencerConfig {
        max_packet_len: args.max_packet,
        retransmit_window: args.retransmit_window,
        ..SequencerConfig::new(args.epoch.unwrap_or(1), args.symbols)
    };
    if let Err(e @ ConfigError::TooManySymbols { .. }) = core_cfg.validate() {
        usage_error(format!(
            "--symbols {} with --max-packet {}: {e}; use fewer symbols or larger packets",
            args.symbols, args.max_packet
        ));
    }
}

/// `--repair`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum RepairArg {
    /// A copy per requester.
    Unicast,
    /// Once on the feed's group.
    Multicast,
}

fn main() -> anyhow::Result<()> {
    let matches = Args::command().get_matches();
    let args = match <Args as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    check(&args);
    let duration_given =
        matches.value_source("duration") == Some(clap::parser::ValueSource::CommandLine);
    if let Some(path) = &args.book_out {
        // Fail now, not after the whole run, if the book cannot be written.
        if let Err(e) = std::fs::write(path, b"") {
            anyhow::bail!("cannot write {}: {}", path.display(), io_text(&e));
        }
    }
    let cfg = ServerConfig {
        transport: args.net.options(
            args.listen,
            args.max_packet,
            args.ttl,
            LossConfig { tx_drop: args.drop_rate, rx_drop: 0.0, seed: args.drop_seed },
        ),
        gbm: GbmConfig { seed: args.seed, symbols: args.symbols, ..GbmConfig::default() },
        // A replay keeps its own pace (or none, at --speed max).
        rate: if args.replay.is_some() { 0 } else { args.rate },
        duration: (!args.duration.is_zero() && (args.replay.is_none() || duration_given))
            .then_some(args.duration),
        max_messages: args.messages,
        retransmit_window: args.retransmit_window,
        epoch: args.epoch,
        linger: args.linger,
        stats_interval: (!args.stats_interval.is_zero()).then_some(args.stats_interval),
        idle: args.idle,
        cpu: args.cpu,
        max_delay: args.max_delay,
        wait_clients: args.wait_clients,
        metrics: args.metrics,
        book_out: args.book_out,
        ready_file: args.ready_file,
        tcp_limits: tickwire_transports::select::TcpLimits {
            max_per_host: args.max_per_host as usize,
            ..Default::default()
        },
        repair: match args.repair {
            RepairArg::Unicast => tickwire_core::publisher::RepairMode::Unicast,
            RepairArg::Multicast => tickwire_core::publisher::RepairMode::Multicast,
        },
        repair_budget: args.repair_budget,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    let summary = match &args.replay {
        None => run(&cfg, stop)?,
        Some(path) => {
            let mut replay = Replay::open(path, args.speed, args.looping, args.symbols)
                .with_context(|| format!("reading the capture {}", path.display()))?;
            let r = replay.report().clone();
            eprintln!(
                "server: replaying {}: {} messages of session {} (seq {}..={}), {} missing ({} holes{}), \
                 {} duplicates dropped, {} foreign datagrams, {} bad packets, {} packets of other sessions; \
                 one pass lasts {:?} at 1x",
                path.display(),
                r.messages,
                r.epoch,
                r.first_seq,
                r.last_seq,
                r.missing,
                r.holes,
                if r.first_seq > 1 { ", the head before the first sequence" } else { "" },
                r.duplicates,
                r.foreign,
                r.bad,
                r.other_epochs,
                replay.span(),
            );
            if let Some(d) = &r.damaged {
                eprintln!(
                    "server: WARNING: the capture ends in a damaged block ({d}); replaying what came before it"
                );
            }
            if r.missing > 0 {
                eprintln!(
                    "server: WARNING: the capture lacks {} messages: the replay is not the recorded stream from message 1",
                    r.missing
                );
            }
            let mut summary = publish(&cfg, &mut replay, stop)?;
            summary.replay = Some(r);
            summary
        }
    };
    eprintln!(
        "server summary: {} messages in {:.2}s ({:.0} msg/s), {} packets, {} heartbeats, {} clients, \
         {} slow-client disconnects, {} requests ({} NACKs, {} rejected, {} messages retransmitted, {} snapshots), \
         {} malformed, {} ignored, CPU user {:.3}s + sys {:.3}s ({:.0} + {:.0} ns/msg; idle {}: {} spins, {} blocks)",
        summary.messages,
        summary.elapsed_s,
        summary.rate,
        summary.packets,
        summary.heartbeats,
        summary.clients,
        summary.slow_disconnects,
        summary.requests,
        summary.nacks,
        summary.nack_rejects,
        summary.retransmitted_messages,
        summary.snapshots,
        summary.malformed,
        summary.ignored_requests,
        summary.cpu_user_s,
        summary.cpu_sys_s,
        summary.cpu_user_ns_per_message,
        summary.cpu_sys_ns_per_message,
        summary.idle,
        summary.idle_spins,
        summary.idle_blocks,
    );
    if summary.repair == "multicast" {
        eprintln!(
            "server repairs on the group: {} NACKs repaired, {} joined a repair already sent, {} messages \
             ({} bytes with notices and snapshots), {} notices, {} refused by the budget (unicast), {} snapshots",
            summary.multicast_repairs,
            summary.multicast_repairs_joined,
            summary.repair_messages_multicast,
            summary.repair_bytes_multicast,
            summary.ncf_sent,
            summary.repair_budget_refused,
            summary.multicast_snapshots,
        );
    }
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}
