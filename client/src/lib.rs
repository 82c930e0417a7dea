//! # tickwire-client
//!
//! The feed handler: transport → [`tickwire_core::recovery::Receiver`] (gap
//! detection, NACK, snapshot, resume) → [`tickwire_core::cache`] (seqlock per
//! symbol) → [`tickwire_core::latency::TickToCache`] (HdrHistogram). The run
//! loop, each iteration:
//!
//! 1. poll the transport; every packet goes to the receiver, whose events are
//!    applied at once (cache update, verification), then each message's
//!    latency is recorded from its due time (the packet's timing block) to the
//!    moment it is in the cache, with the parts in between (send time, the
//!    kernel's receive stamp, the loop's receive time);
//! 2. fire the receiver's timers (NACK delays, retries, snapshot timeouts, reconnects);
//! 3. send the requests the receiver wants sent;
//! 4. redraw the live view every 500 ms.

#![warn(missing_docs)]

pub mod verify;
pub mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tickwire_core::cache::{self, CacheReader, CacheWriter};
use tickwire_core::gbm::GbmConfig;
use tickwire_core::latency::{BreakdownSummary, Latency, LatencySummary, Run, TickToCache};
use tickwire_core::recovery::{Event, Mode, Receiver, ReceiverConfig};
use tickwire_core::wire::Packet;
use tickwire_core::{Instant, SeqNo, SymbolId};
use tickwire_transports::affinity::cpu_times;
use tickwire_transports::idle::{IdleStrategy, Idler};
use tickwire_transports::metrics::{Kind, Metrics};
use tickwire_transports::select::{TransportKind, TransportOptions, build_subscriber};
use tickwire_transports::{SubEvent, Subscriber};

use crate::verify::Verifier;
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
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
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
}

/// Recovery-time percentiles (gap seen → filled), microseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecoveryTimes {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Worst.
    pub max_us: f64,
}

/// Verification outcome (with `--verify`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifySummary {
    /// Messages equal to the regenerated stream.
    pub checked: u64,
    /// Messages that differed.
    pub mismatches: u64,
    /// Sequences silently skipped.
    pub skipped: u64,
    /// Snapshot records compared.
    pub snapshot_records: u64,
    /// Snapshot records that differed.
    pub snapshot_mismatches: u64,
    /// True when nothing was wrong.
    pub ok: bool,
}

/// What the client saw, printed at exit (`--json`: on stdout).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Transport used.
    pub transport: String,
    /// Messages delivered in order.
    pub messages_delivered: u64,
    /// Last sequence delivered.
    pub last_seq: u64,
    /// Session epoch last seen.
    pub epoch: Option<u64>,
    /// Sequence gaps detected.
    pub gaps_detected: u64,
    /// Messages missing in those gaps.
    pub messages_missed: u64,
    /// Gaps filled by retransmission.
    pub gaps_filled_retransmit: u64,
    /// Gaps closed before any NACK (the other A/B line or a reordered packet).
    pub gaps_filled_reorder: u64,
    /// Messages recovered from Retransmission packets (the messages that needed a NACK).
    pub messages_retransmitted: u64,
    /// Messages the NACKs asked for (retries included).
    pub nack_messages_requested: u64,
    /// Gaps covered by a snapshot.
    pub gaps_filled_snapshot: u64,
    /// Gaps given up on.
    pub unrecovered: u64,
    /// Duplicate messages dropped.
    pub duplicates: u64,
    /// Packets with a bad CRC.
    pub crc_errors: u64,
    /// Malformed packets.
    pub malformed: u64,
    /// Datagram feeds: packets from a sender other than the publisher, dropped.
    pub wrong_source: u64,
    /// Packets dropped for a missing or wrong MAC (`--key-file`).
    pub auth_rejected: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// NACKs rejected by the server (outside its window).
    pub nack_rejects: u64,
    /// Snapshots applied.
    pub snapshots: u64,
    /// Reconnections (tcp).
    pub reconnects: u64,
    /// Session epoch changes seen (server restarts).
    pub epoch_changes: u64,
    /// Claims of the live feed checked with the recovery service (end of
    /// session, epoch, far ahead or behind), cookies learnt, and every
    /// rejection.
    pub validation: tickwire_core::recovery::ValidationStats,
    /// A/B arbitration: messages first seen on line A.
    pub line_a_won: u64,
    /// A/B arbitration: messages first seen on line B.
    pub line_b_won: u64,
    /// Send time to the loop's receive time (T1 → T3) of the messages applied
    /// from the packet that brought them, ns. `tick_to_cache_ns` is the
    /// figure from the due time.
    pub latency_ns: LatencySummary,
    /// Tick-to-cache: from each message's due time (the exchange event) to
    /// the moment it was applied to the cache, ns. Every message that arrived
    /// in a live Data packet counts, including those held behind a gap.
    pub tick_to_cache_ns: LatencySummary,
    /// The parts of tick-to-cache, ns: due → sent, sent → kernel receive,
    /// kernel receive → application, application receive → applied.
    pub breakdown_ns: BreakdownSummary,
    /// User CPU time of the client, seconds.
    pub cpu_user_s: f64,
    /// System CPU time of the client, seconds.
    pub cpu_sys_s: f64,
    /// The idle strategy used.
    pub idle: String,
    /// The tick-to-cache breakdown as a text table (T0 due … T4 applied), for
    /// the text summary.
    #[serde(skip)]
    pub breakdown_table: String,
    /// Gap seen → filled.
    pub recovery_time: RecoveryTimes,
    /// Verification against the regenerated stream, when asked.
    pub verify: Option<VerifySummary>,
    /// True when the server's end of session was reached.
    pub end_of_session: bool,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Messages per second delivered.
    pub rate: f64,
}

/// Wall-clock ns since the Unix epoch.
fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Everything the event handler touches; separate from the transport so the
/// transport's poll callback can borrow it.
struct State {
    receiver: Receiver,
    writer: CacheWriter,
    latency: Latency,
    timing: TickToCache,
    /// (due, send time) of the messages applied in the current drain (reused).
    applied: Vec<(u64, u64)>,
    verifier: Option<Verifier>,
    filter: Option<Vec<bool>>,
    activity: Vec<u64>,
    end: Option<SeqNo>,
    reconnect_due: bool,
}

/// The stamps of the packet being handled (T1 sent, T2 kernel rx, T3 app rx).
#[derive(Clone, Copy, Debug)]
struct PacketStamps {
    send_time: u64,
    kernel_rx: Option<u64>,
    app_rx: u64,
}

impl State {
    /// Apply every event the receiver has; `packet` names the packet just
    /// handed to it (None: events after a timer). Latencies are recorded once
    /// the messages are in the cache: one clock read per drain, not per message.
    fn drain_events(&mut self, packet: Option<PacketStamps>) {
        self.applied.clear();
        while let Some(ev) = self.receiver.poll_event() {
            match ev {
                Event::Message { seq, msg, send_time, due_time, .. } => {
                    if due_time != 0 {
                        self.applied.push((due_time, send_time));
                    }
                    if let Some(v) = &mut self.verifier {
                        v.message(seq, &msg);
                    }
                    let Some(sym) = msg.symbol() else { continue };
                    if self
                        .filter
                        .as_ref()
                        .is_some_and(|f| !f.get(sym as usize).copied().unwrap_or(false))
                    {
                        continue;
                    }
                    self.writer.apply(seq.0, &msg);
                    if let Some(a) = self.activity.get_mut(sym as usize) {
                        *a += 1;
                    }
                }
                Event::SnapshotStart { seq, .. } => {
                    if let Some(v) = &mut self.verifier {
                        v.snapshot_start(seq);
                    }
                }
                Event::SymbolState(s) => {
                    if let Some(v) = &mut self.verifier {
                        v.snapshot_record(&s);
                    }
                    self.writer.set(&s);
                }
                Event::SnapshotEnd { .. } => {}
                Event::EpochChanged { old: None, .. } => {}
                Event::EpochChanged { old: Some(old), new } => {
                    eprintln!("client: session epoch changed {old} -> {new}: the server restarted");
                    if let Some(v) = &mut self.verifier
                        && let Err(e) = v.restart()
                    {
                        eprintln!("client: verifier: {e}");
                    }
                    self.end = None;
                }
                Event::Reconnect => self.reconnect_due = true,
                Event::EndOfSession { next } => self.end = Some(next),
                Event::Unrecoverable { range } => {
                    eprintln!("client: gave up on {range}");
                }
            }
        }
        if !self.applied.is_empty() {
            self.record_latencies(packet, wall_ns());
        }
    }

    /// Record the latencies of the messages applied by this drain, all in the
    /// cache at `applied` (T4).
    fn record_latencies(&mut self, packet: Option<PacketStamps>, applied: u64) {
        let t = &mut self.timing;
        let mut from_packet = 0u64;
        let (mut total, mut queued) = (Run::default(), Run::default());
        for &(due, sent) in &self.applied {
            t.tick_to_cache.record_between_in(&mut total, due, applied);
            t.due_to_sent.record_between_in(&mut queued, due, sent);
            from_packet += u64::from(packet.is_some_and(|p| p.send_time == sent));
        }
        t.tick_to_cache.end_run(&mut total);
        t.due_to_sent.end_run(&mut queued);
        // The messages of the packet just handled share its stamps.
        if let Some(p) = packet.filter(|_| from_packet > 0) {
            self.latency.record_between_n(p.send_time, p.app_rx, from_packet);
            if let Some(k) = p.kernel_rx {
                t.sent_to_kernel.record_between_n(p.send_time, k, from_packet);
                t.kernel_to_app.record_between_n(k, p.app_rx, from_packet);
            }
            t.received_to_applied.record_between_n(p.app_rx, applied, from_packet);
        }
    }
}

/// Run the client until the session ends (with `exit_on_end`), the duration
/// passes or `stop` is set.
pub fn run(cfg: &ClientConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    if let Some(cpu) = cfg.cpu {
        tickwire_transports::affinity::pin_to_cpu(cpu)
            .with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    if let Err(e) = tickwire_transports::wait::set_min_timer_slack() {
        eprintln!("client: cannot lower the timer slack ({e}): timed waits may end 50 µs late");
    }
    let mut transport = build_subscriber(&cfg.transport).with_context(|| {
        format!("starting the {} transport towards {}", cfg.transport.kind, cfg.transport.addr)
    })?;
    if let Some(path) = &cfg.ready_file {
        // Write then rename, so a reader never sees a half-written file.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, cfg.transport.kind.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let mode = match cfg.transport.kind {
        TransportKind::Tcp => Mode::Stream,
        TransportKind::Multicast | TransportKind::Xdp => Mode::Datagram,
    };
    let receiver =
        Receiver::new(ReceiverConfig { mode, seed: cfg.seed, ..ReceiverConfig::default() });
    let (writer, reader) = cache::new(cfg.universe);
    let verifier = match cfg.verify_seed {
        Some(seed) => {
            Some(Verifier::new(GbmConfig { seed, symbols: cfg.universe, ..GbmConfig::default() })?)
        }
        None => None,
    };
    let filter = cfg.filter.as_ref().map(|syms| {
        let mut f = vec![false; cfg.universe as usize];
        for &s in syms {
            if let Some(x) = f.get_mut(s as usize) {
                *x = true;
            }
        }
        f
    });
    let mut st = State {
        receiver,
        writer,
        latency: Latency::new(),
        timing: TickToCache::default(),
        applied: Vec::with_capacity(4096),
        verifier,
        filter,
        activity: vec![0; cfg.universe as usize],
        end: None,
        reconnect_due: false,
    };

    let start = std::time::Instant::now();
    let cpu_start = cpu_times();
    let now = || Instant(start.elapsed().as_nanos() as u64);
    let mut idler = Idler::new(cfg.idle);
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
    let mut metrics_due = Instant::ZERO;
    let mut last_packet = Instant::ZERO;
    let mut stalled = false;
    let mut req = vec![0u8; tickwire_core::wire::MAX_PACKET_LEN];
    // Reconnects wait for the receiver's timer and for this gate, which only a
    // session that lasted resets (a Login alone does not: see backoff).
    let mut backoff = tickwire_transports::backoff::Backoff::new(u64::from(std::process::id()));

    loop {
        let t = now();
        let gate = backoff.poll_timeout().filter(|_| st.reconnect_due);
        let timer = st.receiver.poll_timeout().into_iter().chain(gate).min();
        let timer = timer.map(|d| d.saturating_duration_since(t));
        let timeout = idler.timeout(Some(
            timer.unwrap_or(Duration::from_millis(50)).min(Duration::from_millis(50)),
        ));
        let mut work = 0usize;
        transport.poll(timeout, &mut |ev| {
            work += 1;
            let t = now();
            match ev {
                SubEvent::Connected => {
                    backoff.handle_connected(t);
                    st.receiver.handle_connected(t);
                }
                SubEvent::Packet { line, packet, kernel_rx_ns } => {
                    last_packet = t;
                    let stamps = PacketStamps {
                        send_time: Packet::new_checked(packet).map_or(0, |p| p.send_time()),
                        kernel_rx: kernel_rx_ns,
                        app_rx: wall_ns(),
                    };
                    st.receiver.handle_packet(t, line, packet);
                    st.drain_events(Some(stamps));
                    return;
                }
                SubEvent::Disconnected(reason) => {
                    eprintln!(
                        "client: connection to {} lost: {reason}; reconnecting with back-off",
                        cfg.transport.addr
                    );
                    backoff.handle_disconnected(t);
                    st.receiver.handle_disconnected(t);
                }
            }
            st.drain_events(None);
        })?;
        let t = now();
        if st.receiver.poll_timeout().is_some_and(|d| d <= t) {
            st.receiver.handle_timeout(t);
        }
        st.drain_events(None);
        while let Some(n) = st.receiver.poll_transmit(t, wall_ns(), &mut req) {
            if let Err(e) = transport.send_request(&req[..n]) {
                eprintln!(
                    "client: cannot send a request to {}: {e}; it will be retried",
                    cfg.transport.addr
                );
            }
            work += 1;
        }
        if st.reconnect_due && backoff.may_reconnect(t) {
            st.reconnect_due = false;
            if let Err(e) = transport.reconnect() {
                backoff.handle_disconnected(t);
                eprintln!(
                    "client: cannot connect to {}: {e}; retrying with back-off",
                    cfg.transport.addr
                );
                st.receiver.handle_disconnected(t);
            }
        }
        idler.record(work > 0);
        view.maybe_draw(t, &st.receiver, &st.timing, &reader, &st.activity);
        if let Some(m) = &metrics
            && t >= metrics_due
        {
            publish_metrics(m, &st, transport.stats().malformed, cpu_times().since(cpu_start));
            metrics_due = t + METRICS_EVERY;
        }

        // Liveness: the server heartbeats every 100 ms when idle, so a silent
        // feed for LIVENESS_TIMEOUT means it (or the path to it) is gone.
        let silent = t.saturating_duration_since(last_packet);
        if silent >= LIVENESS_TIMEOUT && !stalled && st.end.is_none() {
            stalled = true;
            eprintln!(
                "client: no packet from the feed for {:.1} s (next sequence {}): is the server at {} up, and does its traffic reach this host?{}",
                silent.as_secs_f64(),
                st.receiver.next_expected(),
                cfg.transport.addr,
                cfg.transport.silence_hint()
            );
        } else if stalled && silent < LIVENESS_TIMEOUT {
            stalled = false;
            eprintln!("client: the feed is back (next sequence {})", st.receiver.next_expected());
        }
        let done_session =
            cfg.exit_on_end && st.end.is_some_and(|e| st.receiver.next_expected() >= e);
        let out_of_time = cfg.duration.is_some_and(|d| start.elapsed() >= d);
        if done_session || out_of_time || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    view.finish();

    if let Some(path) = &cfg.hdr_log {
        let mut text = String::new();
        st.timing.tick_to_cache.write_hgrm(&mut text).expect("formatting into a String");
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &cfg.book_out {
        write_book(&reader, path)?;
    }
    let rs = st.receiver.stats();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_times().since(cpu_start);
    let mut table = String::new();
    st.timing.write_table(&mut table).expect("formatting into a String");
    Ok(Summary {
        transport: cfg.transport.kind.to_string(),
        messages_delivered: rs.messages_delivered,
        last_seq: st.receiver.next_expected().0.saturating_sub(1),
        epoch: st.receiver.epoch(),
        gaps_detected: rs.gaps_detected,
        messages_missed: rs.messages_missed,
        gaps_filled_retransmit: rs.gaps_filled_retransmit,
        gaps_filled_reorder: rs.gaps_filled_reorder,
        messages_retransmitted: rs.messages_retransmitted,
        nack_messages_requested: rs.nack_messages_requested,
        gaps_filled_snapshot: rs.gaps_covered_snapshot,
        unrecovered: rs.unrecovered,
        duplicates: rs.duplicates,
        crc_errors: rs.bad_crc,
        malformed: rs.malformed + transport.stats().malformed,
        wrong_source: transport.stats().wrong_source,
        auth_rejected: transport.stats().auth_rejected,
        nacks_sent: rs.nacks_sent,
        nack_rejects: rs.nack_rejects,
        snapshots: rs.snapshots_applied,
        reconnects: rs.reconnects,
        epoch_changes: rs.epoch_changes,
        validation: rs.validation,
        line_a_won: rs.line_a_won,
        line_b_won: rs.line_b_won,
        latency_ns: st.latency.summary(),
        tick_to_cache_ns: st.timing.tick_to_cache.summary(),
        breakdown_ns: st.timing.breakdown(),
        cpu_user_s: cpu.user.as_secs_f64(),
        cpu_sys_s: cpu.sys.as_secs_f64(),
        idle: cfg.idle.to_string(),
        recovery_time: RecoveryTimes {
            p50_us: st.receiver.stats().recovery_percentile(50.0) as f64 / 1e3,
            p99_us: st.receiver.stats().recovery_percentile(99.0) as f64 / 1e3,
            max_us: st.receiver.stats().recovery_percentile(100.0) as f64 / 1e3,
        },
        verify: st.verifier.as_ref().map(|v| VerifySummary {
            checked: v.checked,
            mismatches: v.mismatches,
            skipped: v.skipped,
            snapshot_records: v.snapshot_records,
            snapshot_mismatches: v.snapshot_mismatches,
            ok: v.ok(),
        }),
        end_of_session: st.end.is_some_and(|e| st.receiver.next_expected() >= e),
        elapsed_s: elapsed,
        rate: rs.messages_delivered as f64 / elapsed.max(1e-9),
        breakdown_table: table,
    })
}

/// Silence after which the client warns that the feed stalled: ten of the
/// server's idle heartbeat intervals (100 ms), so a few lost heartbeats never
/// trigger it and a dead server is reported within a second.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

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

fn publish_metrics(
    m: &Metrics,
    st: &State,
    transport_malformed: u64,
    cpu: tickwire_transports::affinity::CpuTimes,
) {
    let rs = st.receiver.stats();
    let t = st.timing.tick_to_cache.summary();
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
        st.receiver.next_expected().0,
        t.p50,
        t.p99,
        t.p999,
        t.max,
        t.count,
        cpu.user.as_nanos() as u64,
        cpu.sys.as_nanos() as u64,
    ];
    for (i, v) in values.into_iter().enumerate() {
        m.set(i, v);
    }
}

fn write_book(reader: &CacheReader, path: &std::path::Path) -> anyhow::Result<()> {
    let mut text = String::new();
    reader.to_book().write_text(&mut text).expect("formatting into a String");
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Parse a subscription filter: `0-9,42,100-199`.
pub fn parse_filter(s: &str) -> Result<Vec<SymbolId>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad symbol filter {part:?}: use e.g. 0-9,42");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (SymbolId, SymbolId) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                out.extend(a..=b);
            }
            None => out.push(part.parse().map_err(|_| bad())?),
        }
    }
    if out.is_empty() {
        return Err("empty symbol filter".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert_eq!(parse_filter("0-2,7"), Ok(vec![0, 1, 2, 7]));
        assert!(parse_filter("3-1").is_err());
        assert!(parse_filter("x").is_err());
        assert!(parse_filter("").is_err());
    }
}
