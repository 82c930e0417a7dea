//! The [`Subscriber`]: a transport, the recovering [`Receiver`], the
//! lock-free cache and the latency histograms, driven by one loop that a
//! program runs on its own thread.
//!
//! Each [`Subscriber::poll`]:
//!
//! 1. polls the transport; every packet goes to the receiver, whose events are
//!    applied at once (cache update, verification, then the caller's
//!    callback), then each message's latency is recorded from its due time
//!    (the packet's timing block) to the moment it is in the cache, with the
//!    parts in between (send time, the kernel's receive stamp, the loop's
//!    receive time);
//! 2. fires the receiver's timers (NACK delays, retries, snapshot timeouts, reconnects);
//! 3. sends the requests the receiver wants sent;
//! 4. reconnects a stream transport after its back-off, and warns on stderr
//!    when the feed has been silent for [`LIVENESS_TIMEOUT`].
//!
//! The transport is polled on the same thread ([`Threading::Single`]) or on
//! receive threads that hand batches over a lock-free queue
//! ([`Threading::Pipeline`], see [`pipeline`]); the loop is the same.
//!
//! The steady state allocates nothing: the buffers of the loop are allocated
//! by [`SubscriberBuilder::build`] and reused.

mod builder;
pub mod pipeline;
mod state;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickwire_core::Instant;
use tickwire_core::cache::CacheReader;
use tickwire_core::latency::TickToCache;
use tickwire_core::recovery::{Event, Order, Receiver, RecoveryStats};
use tickwire_core::wire::Packet;
use tickwire_transports::affinity::{CpuTimes, cpu_times};
use tickwire_transports::backoff::Backoff;
use tickwire_transports::idle::{IdleStrategy, Idler};
use tickwire_transports::{SubEvent, SubStats};

pub use builder::{BuildError, SubscriberBuilder};
pub use pipeline::PipelineStats;
use state::{PacketStamps, State};

use crate::summary::{DeliverySummary, RecordSummary, RecoveryTimes, Summary, VerifySummary};

/// Silence after which the client warns that the feed stalled: ten of the
/// server's idle heartbeat intervals (100 ms), so a few lost heartbeats never
/// trigger it and a dead server is reported within a second.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest single wait of [`Subscriber::poll`] on the transport, so the loop
/// checks its stop conditions (duration, a stop flag) at least this often
/// even when the feed and every timer are quiet.
pub const MAX_POLL_WAIT: Duration = Duration::from_millis(50);

/// Messages applied in one drain whose latencies are kept without growing:
/// more than a full packet of the smallest messages (a 64 KiB TCP packet of
/// 32-byte trades is about 2 000).
const APPLIED_CAPACITY: usize = 4096;

/// Events a [`Subscriber::events`] iterator holds without growing (a poll
/// that brings more, e.g. a large snapshot, grows it once).
const EVENT_QUEUE_CAPACITY: usize = 4096;

/// Wall-clock ns since the Unix epoch.
fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// How a [`Subscriber`] spreads its work over threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Threading {
    /// One thread: the polling thread reads the transport and processes
    /// each packet at once. The fewest hand-offs, so the lowest latency,
    /// and the mode measured best on 2 CPUs (docs/BENCHMARKS.md).
    #[default]
    Single,
    /// Receive threads (one per feed line; two for an A/B multicast feed)
    /// own the transport and hand batches of packets, in buffers from their
    /// own pools, over a lock-free queue to the polling thread, which
    /// recovers, fills the cache and measures ([`pipeline`]). Reading
    /// overlaps processing, at the cost of a hand-off and a CPU per line.
    Pipeline,
}

impl std::str::FromStr for Threading {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "single" => Ok(Threading::Single),
            "pipeline" => Ok(Threading::Pipeline),
            _ => Err(format!("{s:?}: use single or pipeline")),
        }
    }
}

impl std::fmt::Display for Threading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Threading::Single => "single",
            Threading::Pipeline => "pipeline",
        })
    }
}

/// Names for the diagnostics.
#[derive(Clone, Debug)]
pub(crate) struct Peer {
    pub(crate) kind: String,
    pub(crate) addr: String,
    pub(crate) hint: &'static str,
}

/// A subscription to a Tickwire feed: in-order, recovered messages, a
/// lock-free per-symbol cache that other threads read, and latency figures.
///
/// Build one with [`Subscriber::builder`] on the thread that will drive it
/// (the transport is not `Send`), then drive it from that thread:
/// with a callback ([`Self::run`], or [`Self::poll`] in a loop of your own),
/// or as an iterator ([`Self::events`]). Events are the receiver's
/// [`Event`]s, in sequence order, with gaps already recovered; `Message` and
/// `SymbolState` events only for subscribed symbols; `Reconnect` never (the
/// subscriber reconnects itself).
///
/// ```no_run
/// use tickwire_client::{Event, Subscriber};
/// use tickwire_core::Message;
///
/// let mut sub = Subscriber::builder()
///     .tcp("127.0.0.1:9000".parse().unwrap())
///     .symbols([3])
///     .build()?;
/// let cache = sub.cache();
/// std::thread::spawn(move || loop {
///     if let Some(state) = cache.read(3) {
///         println!("symbol 3 bid {} ask {}", state.bid_px, state.ask_px);
///     }
///     std::thread::sleep(std::time::Duration::from_millis(100));
/// });
/// for ev in sub.events() {
///     if let Event::Message { seq, msg: Message::Quote(q), .. } = ev? {
///         println!("{seq}: {} x {}", q.bid_px, q.ask_px);
///     }
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// The latency a message's callback sees stamped as "applied" (T4) is taken
/// once the callbacks of its packet have returned: keep them short, or read
/// the cache from another thread. Diagnostics (a lost connection, a silent
/// feed, a server restart, a range given up on) are written to stderr,
/// prefixed `client:`; every one is also counted in [`Self::summary`].
pub struct Subscriber {
    transport: Box<dyn tickwire_transports::Subscriber>,
    st: State,
    reader: CacheReader,
    peer: Peer,
    idle: IdleStrategy,
    idler: Idler,
    backoff: Backoff,
    req: Vec<u8>,
    start: std::time::Instant,
    cpu_start: CpuTimes,
    last_packet: Instant,
    stalled: bool,
    slack_set: bool,
    duration: Option<Duration>,
    exit_on_end: bool,
    queue: VecDeque<Event>,
    pipeline: Option<pipeline::PipelineProbe>,
    /// With [`SubscriberBuilder::record`]: the capture's writer.
    recorder: Option<std::rc::Rc<std::cell::RefCell<tickwire_transports::pcap::Recorder>>>,
    record_path: Option<std::path::PathBuf>,
    /// Delivery so far: messages, and when the first and last polls that
    /// delivered any ended (for [`Summary::rate`]).
    flow: Flow,
}

/// When messages were delivered, for the delivery rate.
#[derive(Clone, Copy, Debug, Default)]
struct Flow {
    delivered: u64,
    /// (time, messages delivered by then) at the end of the first poll that
    /// delivered any.
    first: Option<(Instant, u64)>,
    last: Instant,
}

impl Flow {
    fn update(&mut self, t: Instant, delivered: u64) {
        if delivered != self.delivered {
            self.first.get_or_insert((t, delivered));
            self.last = t;
            self.delivered = delivered;
        }
    }

    /// Messages per second between the first and last delivering polls (0
    /// before two of them).
    fn rate(&self) -> f64 {
        match self.first {
            Some((t0, n0)) if self.last > t0 => {
                (self.delivered - n0) as f64 / self.last.saturating_duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("transport", &self.peer.kind)
            .field("peer", &self.peer.addr)
            .field("next_expected", &self.st.receiver.next_expected())
            .field("idle", &self.idle)
            .finish_non_exhaustive()
    }
}

impl Subscriber {
    /// A builder with the defaults of [`SubscriberBuilder`].
    pub fn builder() -> SubscriberBuilder {
        SubscriberBuilder::default()
    }

    /// A reader of the cache: `Clone` and `Send`, wait-free for the writer,
    /// never a torn state for the reader. Give one to each thread that wants
    /// the latest state of a symbol.
    pub fn cache(&self) -> CacheReader {
        self.reader.clone()
    }

    /// One turn of the loop (see the module docs): wait for the transport at
    /// most until the next timer (and at most [`MAX_POLL_WAIT`]), as the idle
    /// strategy says, and hand every event to `on_event`.
    ///
    /// Events an [`Events`] iterator had received but not yet yielded when
    /// it was dropped are handed to `on_event` first, so switching from the
    /// iterator to callbacks loses nothing.
    pub fn poll<F: FnMut(&Event)>(&mut self, on_event: &mut F) -> io::Result<()> {
        while let Some(ev) = self.queue.pop_front() {
            on_event(&ev);
        }
        if !self.slack_set {
            // The thread that polls is the one whose waits must be precise.
            self.slack_set = true;
            if let Err(e) = tickwire_transports::wait::set_min_timer_slack() {
                eprintln!(
                    "client: cannot lower the timer slack ({e}): timed waits may end 50 µs late"
                );
            }
        }
        let start = self.start;
        let now = || Instant(start.elapsed().as_nanos() as u64);
        let t = now();
        let st = &mut self.st;
        let backoff = &mut self.backoff;
        let gate = backoff.poll_timeout().filter(|_| st.reconnect_due);
        let timer = st.receiver.poll_timeout().into_iter().chain(gate).min();
        let timer = timer.map(|d| d.saturating_duration_since(t));
        let timeout = self.idler.timeout(Some(timer.unwrap_or(MAX_POLL_WAIT).min(MAX_POLL_WAIT)));
        let mut work = 0usize;
        let last_packet = &mut self.last_packet;
        let peer = &self.peer;
        self.transport.poll(timeout, &mut |ev| {
            work += 1;
            let t = now();
            match ev {
                SubEvent::Connected => {
                    backoff.handle_connected(t);
                    st.receiver.handle_connected(t);
                }
                SubEvent::Packet { line, packet, kernel_rx_ns } => {
                    *last_packet = t;
                    let stamps = PacketStamps {
                        send_time: Packet::new_checked(packet).map_or(0, |p| p.send_time()),
                        kernel_rx: kernel_rx_ns,
                        app_rx: wall_ns(),
                    };
                    st.receiver.handle_packet(t, line, packet);
                    st.drain_events(Some(stamps), on_event);
                    return;
                }
                SubEvent::Disconnected(reason) => {
                    eprintln!(
                        "client: connection to {} lost: {reason}; reconnecting with back-off",
                        peer.addr
                    );
                    backoff.handle_disconnected(t);
                    st.receiver.handle_disconnected(t);
                }
            }
            st.drain_events(None, on_event);
        })?;
        let t = now();
        if st.receiver.poll_timeout().is_some_and(|d| d <= t) {
            st.receiver.handle_timeout(t);
        }
        st.drain_events(None, on_event);
        while let Some(n) = st.receiver.poll_transmit(t, wall_ns(), &mut self.req) {
            if let Err(e) = self.transport.send_request(&self.req[..n]) {
                eprintln!(
                    "client: cannot send a request to {}: {e}; it will be retried",
                    self.peer.addr
                );
            }
            work += 1;
        }
        if st.reconnect_due && backoff.may_reconnect(t) {
            st.reconnect_due = false;
            if let Err(e) = self.transport.reconnect() {
                backoff.handle_disconnected(t);
                eprintln!(
                    "client: cannot connect to {}: {e}; retrying with back-off",
                    self.peer.addr
                );
                st.receiver.handle_disconnected(t);
            }
        }
        self.idler.record(work > 0);
        self.flow.update(t, st.receiver.stats().messages_delivered);
        self.check_liveness(t);
        Ok(())
    }

    /// The server heartbeats every 100 ms when idle, so a silent feed for
    /// [`LIVENESS_TIMEOUT`] means it (or the path to it) is gone.
    fn check_liveness(&mut self, t: Instant) {
        let silent = t.saturating_duration_since(self.last_packet);
        let next = self.st.receiver.next_expected();
        if silent >= LIVENESS_TIMEOUT && !self.stalled && self.st.end.is_none() {
            self.stalled = true;
            eprintln!(
                "client: no packet from the feed for {:.1} s (next sequence {next}): is the server at {} up, and does its traffic reach this host?{}",
                silent.as_secs_f64(),
                self.peer.addr,
                self.peer.hint
            );
        } else if self.stalled && silent < LIVENESS_TIMEOUT {
            self.stalled = false;
            eprintln!("client: the feed is back (next sequence {next})");
        }
    }

    /// Poll until [`Self::is_done`] or `stop` is set, handing every event to
    /// `on_event`.
    pub fn run(&mut self, stop: &AtomicBool, mut on_event: impl FnMut(&Event)) -> io::Result<()> {
        while !self.is_done() && !stop.load(Ordering::Relaxed) {
            self.poll(&mut on_event)?;
        }
        // What an earlier iterator left behind, had no poll run since.
        while let Some(ev) = self.queue.pop_front() {
            on_event(&ev);
        }
        Ok(())
    }

    /// The events as an iterator: it polls as needed and ends when
    /// [`Self::is_done`] (after the events already received). An I/O error
    /// of the transport is yielded once, and the iterator may be resumed.
    pub fn events(&mut self) -> Events<'_> {
        Events { sub: self }
    }

    /// True once the subscription is over: the server's session ended and
    /// everything before its end was delivered (unless
    /// [`SubscriberBuilder::exit_on_end`] is false), or the duration passed.
    pub fn is_done(&self) -> bool {
        self.end_reached() && self.exit_on_end
            || self.duration.is_some_and(|d| self.start.elapsed() >= d)
    }

    /// True when the server's end of session was seen and everything before
    /// it delivered.
    pub fn end_reached(&self) -> bool {
        self.st.end.is_some_and(|e| self.st.receiver.next_expected() >= e)
    }

    /// The time since the subscriber was built, on its loop's clock.
    pub fn now(&self) -> Instant {
        Instant(self.start.elapsed().as_nanos() as u64)
    }

    /// The recovering receiver (next expected sequence, epoch, open gaps).
    pub fn receiver(&self) -> &Receiver {
        &self.st.receiver
    }

    /// Recovery counters: gaps, retransmissions, snapshots, duplicates...
    pub fn stats(&self) -> &RecoveryStats {
        self.st.receiver.stats()
    }

    /// The transport's counters.
    pub fn transport_stats(&self) -> SubStats {
        self.transport.stats()
    }

    /// The pipeline's counters ([`Threading::Pipeline`] only).
    pub fn pipeline_stats(&self) -> Option<PipelineStats> {
        self.pipeline.as_ref().map(|p| p.stats())
    }

    /// Tick-to-cache latency and its parts, so far.
    pub fn timing(&self) -> &TickToCache {
        &self.st.timing
    }

    /// Messages applied to the cache so far, per symbol.
    pub fn activity(&self) -> &[u64] {
        &self.st.activity
    }

    /// Everything counted so far, as the `client` binary prints it at exit.
    pub fn summary(&self) -> Summary {
        let rs = self.st.receiver.stats();
        let ts = self.transport.stats();
        let elapsed = self.start.elapsed().as_secs_f64();
        let cpu = cpu_times().since(self.cpu_start);
        let mut table = String::new();
        self.st.timing.write_table(&mut table).expect("formatting into a String");
        Summary {
            transport: self.peer.kind.clone(),
            messages_delivered: rs.messages_delivered,
            last_seq: self.st.receiver.next_expected().0.saturating_sub(1),
            epoch: self.st.receiver.epoch(),
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
            malformed: rs.malformed + ts.malformed,
            wrong_source: ts.wrong_source,
            gro: ts.gro,
            gro_merged: ts.gro_merged,
            auth_rejected: ts.auth_rejected,
            nacks_sent: rs.nacks_sent,
            nack_rejects: rs.nack_rejects,
            snapshots: rs.snapshots_applied,
            reconnects: rs.reconnects,
            epoch_changes: rs.epoch_changes,
            validation: rs.validation,
            rtt: rs.rtt,
            line_a_won: rs.line_a_won,
            line_b_won: rs.line_b_won,
            latency_ns: self.st.latency.summary(),
            tick_to_cache_ns: self.st.timing.tick_to_cache.summary(),
            breakdown_ns: self.st.timing.breakdown(),
            cpu_user_s: cpu.user.as_secs_f64(),
            cpu_sys_s: cpu.sys.as_secs_f64(),
            idle: self.idle.to_string(),
            recovery_time: RecoveryTimes {
                p50_us: rs.recovery_percentile(50.0) as f64 / 1e3,
                p99_us: rs.recovery_percentile(99.0) as f64 / 1e3,
                max_us: rs.recovery_percentile(100.0) as f64 / 1e3,
            },
            delivery: DeliverySummary {
                order: match self.st.receiver.config().order {
                    Order::Strict => "strict",
                    Order::PerSymbol => "per-symbol",
                }
                .to_string(),
                messages_held: rs.messages_held,
                held_share: rs.messages_held as f64 / rs.messages_delivered.max(1) as f64,
                messages_ahead: rs.messages_ahead,
                stale_periods: rs.stale_periods,
                stale_ms_total: rs.stale_ns_total as f64 / 1e6,
                stale_mean_us: rs.stale_ns_total as f64 / 1e3 / rs.stale_periods.max(1) as f64,
                stale_now: self.st.receiver.stale_symbols(),
            },
            verify: self.st.verifier.as_ref().map(|v| VerifySummary {
                checked: v.checked,
                mismatches: v.mismatches,
                skipped: v.skipped,
                snapshot_records: v.snapshot_records,
                snapshot_mismatches: v.snapshot_mismatches,
                ok: v.ok(),
            }),
            end_of_session: self.end_reached(),
            elapsed_s: elapsed,
            rate: self.flow.rate(),
            breakdown_table: table,
            pipeline: self.pipeline_stats(),
            record: self.recorder.as_ref().map(|r| {
                let st = r.borrow().stats();
                RecordSummary {
                    file: self
                        .record_path
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    packets: st.recorded,
                    dropped: st.dropped,
                    bytes: st.bytes,
                    files: st.files,
                }
            }),
        }
    }

    /// With [`SubscriberBuilder::record`]: write out what the capture still
    /// holds and close its file (later packets are not recorded). The
    /// counters of [`Self::summary`] are final after it. Dropping the
    /// subscriber does the same, but cannot report an error.
    pub fn finish_recording(&mut self) -> io::Result<()> {
        match &self.recorder {
            Some(r) => r.borrow_mut().finish().map(|_| ()),
            None => Ok(()),
        }
    }
}

/// The iterator of [`Subscriber::events`].
#[derive(Debug)]
pub struct Events<'a> {
    sub: &'a mut Subscriber,
}

impl Iterator for Events<'_> {
    type Item = io::Result<Event>;

    fn next(&mut self) -> Option<io::Result<Event>> {
        loop {
            if let Some(ev) = self.sub.queue.pop_front() {
                return Some(Ok(ev));
            }
            if self.sub.is_done() {
                return None;
            }
            // The queue keeps its capacity across polls.
            let mut queue = std::mem::take(&mut self.sub.queue);
            let polled = self.sub.poll(&mut |ev| queue.push_back(*ev));
            self.sub.queue = queue;
            if let Err(e) = polled {
                return Some(Err(e));
            }
        }
    }
}
