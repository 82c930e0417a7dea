//! The `client` binary's driver: [`run`] builds a [`Subscriber`] from a
//! [`ClientConfig`] and polls it, drawing the live view, serving metrics and
//! writing the histogram and the book at exit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tickwire_core::cache::CacheReader;
use tickwire_core::{Instant, Line, SymbolId};
use tickwire_transports::affinity::cpu_times;
use tickwire_transports::idle::IdleStrategy;
use tickwire_transports::metrics::{Kind, Metrics};
use tickwire_transports::select::TransportOptions;

use crate::Summary;
use crate::subscriber::{Subscriber, SubscriberBuilder, Threading};
use crate::view::LiveView;

/// Client configuration (the binary maps its flags onto this).
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Transport and addresses.
    pub transport: TransportOptions,
    /// Size of the symbol universe (the cache has one slot per symbol).
    pub universe: u32,
    /// Subscription filter: only these symbols are applied to the cache (None = all).
    pub filter: Option<Vec<SymbolId>>,
    /// Stop after this long (None = until the session ends or Ctrl-C).
    pub duration: Option<Duration>,
    /// Exit when the server's end of session is seen and everything before it delivered.
    pub exit_on_end: bool,
    /// Verify every delivery against the stream regenerated from this seed.
    pub verify_seed: Option<u64>,
    /// Seed of the receiver's jitter RNG.
    pub seed: u64,
    /// Live view on stderr every 500 ms.
    pub live_view: bool,
    /// How the loop waits when idle.
    pub idle: IdleStrategy,
    /// Pin the polling (processing) thread to this CPU.
    pub cpu: Option<usize>,
    /// One thread, or receive threads feeding the polling thread.
    pub threading: Threading,
    /// Pipeline: pin the receive threads to these CPUs (line A's first, then
    /// line B's; a single CPU takes both).
    pub rx_cpus: Vec<usize>,
    /// Write the latency histogram (`.hgrm`) here at exit.
    pub hdr_log: Option<std::path::PathBuf>,
    /// Write the final cache (book) here at exit.
    pub book_out: Option<std::path::PathBuf>,
    /// Once the transport is up (socket bound, group joined), create this
    /// file, so a test or script can start the server knowing that no
    /// message will be missed.
    pub ready_file: Option<std::path::PathBuf>,
    /// Serve every counter of the summary and the tick-to-cache percentiles
    /// in the Prometheus text format here while running.
    pub metrics: Option<std::net::SocketAddr>,
    /// Record every received packet in this pcapng file.
    pub record: Option<std::path::PathBuf>,
    /// Start a new capture file when one reaches this many bytes.
    pub record_rotate: Option<u64>,
    /// Delivery order: feed order, or per symbol.
    pub order: tickwire_core::recovery::Order,
}

impl ClientConfig {
    /// The [`Subscriber`] this configuration describes (the transport is
    /// brought up by [`SubscriberBuilder::build`]).
    pub fn builder(&self) -> SubscriberBuilder {
        let mut b = Subscriber::builder()
            .transport(self.transport.clone())
            .universe(self.universe)
            .seed(self.seed)
            .idle(self.idle)
            .verify(self.verify_seed)
            .duration(self.duration)
            .exit_on_end(self.exit_on_end)
            .threading(self.threading)
            .order(self.order);
        if let Some(path) = &self.record {
            b = b.record(path.clone(), self.record_rotate);
        }
        if let Some(f) = &self.filter {
            b = b.symbols(f.iter().copied());
        }
        if !self.rx_cpus.is_empty() {
            let cpus = self.rx_cpus.clone();
            b = b.on_receive_thread_start(move |line| {
                let cpu = cpus[usize::from(line == Line::B).min(cpus.len() - 1)];
                if let Err(e) = tickwire_transports::affinity::pin_to_cpu(cpu) {
                    eprintln!(
                        "client: cannot pin the receive thread of line {line:?} to CPU {cpu}: {e}"
                    );
                }
            });
        }
        b
    }
}

/// Run the client until the session ends (with `exit_on_end`), the duration
/// passes or `stop` is set: the `client` binary, through [`Subscriber`].
pub fn run(cfg: &ClientConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    if let Some(cpu) = cfg.cpu {
        tickwire_transports::affinity::pin_to_cpu(cpu)
            .with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    let mut sub = cfg.builder().build()?;
    if let Some(path) = &cfg.ready_file {
        // Write then rename, so a reader never sees a half-written file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, cfg.transport.kind.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let reader = sub.cache();
    let mut view = LiveView::new(cfg.live_view);
    let metrics = match cfg.metrics {
        Some(addr) => {
            let m = Arc::new(Metrics::new("tickwire_client", CLIENT_METRICS));
            let bound = tickwire_transports::metrics::serve(addr, m.clone())
                .with_context(|| format!("serving metrics on {addr}"))?;
            eprintln!("client: metrics on http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    let cpu_start = cpu_times();
    let mut metrics_due = Instant::ZERO;
    while !sub.is_done() && !stop.load(Ordering::Relaxed) {
        sub.poll(&mut |_| {})?;
        let t = sub.now();
        view.maybe_draw(t, sub.receiver(), sub.timing(), &reader, sub.activity());
        if let Some(m) = &metrics
            && t >= metrics_due
        {
            publish_metrics(m, &sub, cpu_times().since(cpu_start));
            metrics_due = t + METRICS_EVERY;
        }
    }
    view.finish();
    sub.finish_recording().context("recording the capture")?;

    if let Some(path) = &cfg.hdr_log {
        let mut text = String::new();
        sub.timing().tick_to_cache.write_hgrm(&mut text).expect("formatting into a String");
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cfg.book_out {
        write_book(&reader, path)?;
    }
    Ok(sub.summary())
}

/// How often the loop copies its counters (and percentiles: a few µs of
/// histogram walk) into the metrics registry.
const METRICS_EVERY: Duration = Duration::from_millis(250);

/// The client's metrics, in the order [`publish_metrics`] sets them.
const CLIENT_METRICS: &[(&str, &str, Kind)] = &[
    ("messages_delivered_total", "Messages delivered in order.", Kind::Counter),
    ("gaps_detected_total", "Sequence gaps detected.", Kind::Counter),
    ("messages_missed_total", "Messages missing in those gaps.", Kind::Counter),
    ("gaps_filled_retransmit_total", "Gaps filled by retransmission.", Kind::Counter),
    ("gaps_filled_reorder_total", "Gaps closed before any NACK.", Kind::Counter),
    ("gaps_filled_snapshot_total", "Gaps covered by a snapshot.", Kind::Counter),
    ("unrecovered_total", "Gaps given up on.", Kind::Counter),
    ("duplicates_total", "Duplicate messages dropped.", Kind::Counter),
    ("crc_errors_total", "Packets with a bad CRC.", Kind::Counter),
    ("malformed_total", "Malformed packets.", Kind::Counter),
    ("nacks_sent_total", "NACKs sent.", Kind::Counter),
    ("nack_rejects_total", "NACKs rejected by the server.", Kind::Counter),
    ("snapshots_total", "Snapshots applied.", Kind::Counter),
    ("reconnects_total", "Reconnections (tcp).", Kind::Counter),
    ("epoch_changes_total", "Session epoch changes seen.", Kind::Counter),
    ("line_a_won_total", "A/B arbitration: messages first seen on line A.", Kind::Counter),
    ("line_b_won_total", "A/B arbitration: messages first seen on line B.", Kind::Counter),
    ("next_seq", "Next sequence expected.", Kind::Gauge),
    ("tick_to_cache_ns{quantile=\"0.5\"}", "Tick-to-cache latency, ns.", Kind::Gauge),
    ("tick_to_cache_ns{quantile=\"0.99\"}", "Tick-to-cache latency, ns.", Kind::Gauge),
    ("tick_to_cache_ns{quantile=\"0.999\"}", "Tick-to-cache latency, ns.", Kind::Gauge),
    ("tick_to_cache_ns{quantile=\"1\"}", "Tick-to-cache latency, ns.", Kind::Gauge),
    ("tick_to_cache_samples_total", "Tick-to-cache samples recorded.", Kind::Counter),
    ("cpu_user_ns_total", "User CPU time, ns.", Kind::Counter),
    ("cpu_sys_ns_total", "System CPU time, ns.", Kind::Counter),
];

fn publish_metrics(m: &Metrics, sub: &Subscriber, cpu: tickwire_transports::affinity::CpuTimes) {
    let rs = sub.stats();
    let t = sub.timing().tick_to_cache.summary();
    let transport_malformed = sub.transport_stats().malformed;
    let values: [u64; CLIENT_METRICS.len()] = [
        rs.messages_delivered,
        rs.gaps_detected,
        rs.messages_missed,
        rs.gaps_filled_retransmit,
        rs.gaps_filled_reorder,
        rs.gaps_covered_snapshot,
        rs.unrecovered,
        rs.duplicates,
        rs.bad_crc,
        rs.malformed + transport_malformed,
        rs.nacks_sent,
        rs.nack_rejects,
        rs.snapshots_applied,
        rs.reconnects,
        rs.epoch_changes,
        rs.line_a_won,
        rs.line_b_won,
        sub.receiver().next_expected().0,
        t.p50,
        t.p99,
        t.p999,
        t.max,
        t.count,
        cpu.user.as_nanos() as u64,
        cpu.sys.as_nanos() as u64,
    ];
    m.set_all(&values);
}

fn write_book(reader: &CacheReader, path: &std::path::Path) -> anyhow::Result<()> {
    let mut text = String::new();
    reader.to_book().write_text(&mut text).expect("formatting into a String");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
