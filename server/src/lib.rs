//! # tickwire-server
//!
//! The exchange simulator and publisher: a [`MessageSource`] (the GBM
//! generator, or a program's own messages) feeds the sans-IO
//! [`tickwire_core::publisher::Sequencer`] (sequencer, framer, flush policy,
//! retransmit store, snapshot state, request service, end-of-session
//! repetition), paced by [`tickwire_core::pacing::Pacer`]; packets go out over
//! any [`tickwire_transports::Publisher`]. [`publish`] is a thin driver: it reads
//! the clocks, hands the state machines their inputs and waits until the
//! earliest deadline they name. Each iteration:
//!
//! 1. take every message due by now from the pacer (each with its own due
//!    instant), take it from the source and push it; tell the publisher the source has
//!    caught up (natural batching seals the packet now, `--max-delay` only
//!    once its oldest message waited that long);
//! 2. fire the publisher's timers (coalescing bound, heartbeat, end-of-session repetition);
//! 3. encode every sealed packet straight into the transport's send buffer
//!    (`poll_transmit` inside `publish_with`: one copy), stamped with its send time;
//! 4. wait for I/O until the earliest deadline (next message due, publisher
//!    timer, end of the run), by the idle strategy; answer requests.
//!
//! ```no_run
//! use std::sync::{Arc, atomic::AtomicBool};
//! let cfg = tickwire_server::ServerConfig::default();
//! let summary = tickwire_server::run(&cfg, Arc::new(AtomicBool::new(false))).unwrap();
//! println!("{} messages", summary.messages);
//! ```
//!
//! [`run`] is the `server` binary: [`publish`] with the GBM [`Generator`] of
//! `cfg.gbm`. A program with messages of its own passes its source to
//! [`publish`] (see [`MessageSource`] and [`FromIter`]);
//! `examples/publish.rs` at the workspace root is a complete program.

#![warn(missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tickwire_core::Instant;
use tickwire_core::gbm::Generator;
use tickwire_core::pacing::Pacer;
use tickwire_core::publisher::{
    RepairConfig, RepairMode, RequestLimits, Sequencer as Core, SequencerConfig,
};
use tickwire_transports::affinity::{cpu_times, pin_to_cpu};
use tickwire_transports::idle::Idler;
use tickwire_transports::metrics::{self, Metrics};
use tickwire_transports::select::{TransportKind, build_publisher_with_limits};
use tickwire_transports::tcp::{LogLimiter, log_limited};
use tickwire_transports::wait::set_min_timer_slack;
use tickwire_transports::{DisconnectReason, PubEvent, Publisher};

use crate::report::{METRICS_EVERY, Progress, SERVER_METRICS, publish_metrics};
use crate::requests::{CatchUps, Inbox, serve_requests};

mod config;
pub mod replay;
mod report;
mod requests;
pub mod source;

pub use config::{ServerConfig, Summary};
pub use source::{FromIter, MessageSource};

/// Largest number of messages generated per loop iteration, so requests and
/// socket writes are served between bursts even at `--rate 0`.
const MAX_BATCH: u64 = 512;
/// 32 bytes from the OS, the key of the request service's cookies.
fn random_secret() -> io::Result<[u8; 32]> {
    use std::io::Read;
    let mut secret = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    Ok(secret)
}

/// Monotonic and wall clocks for the core.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: std::time::Instant,
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        Clock { start: std::time::Instant::now() }
    }
    /// Monotonic time since the origin.
    pub fn now(&self) -> Instant {
        Instant(self.start.elapsed().as_nanos() as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Wall-clock ns since the Unix epoch (packet send timestamps).
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The pacing of a session starting at `start`: its pacer, tied to the wall
/// clock there (S: every due time is S + (s − 1)/R), and its end (`--duration`).
fn pace_from(cfg: &ServerConfig, clock: &Clock, start: Instant) -> (Pacer, Option<Instant>) {
    let mut pacer = Pacer::new(cfg.rate, start, cfg.max_messages);
    pacer.set_wall_start(wall_at(clock, start));
    (pacer, cfg.duration.map(|d| start + d))
}

/// The wall clock (ns since the Unix epoch) at the monotonic instant `at`
/// of `clock`: the session start S of PROTOCOL.md § 4.3, from which every
/// due time is derived. The two clocks cannot be read at once; a read of
/// the wall clock between two monotonic reads is placed at their midpoint,
/// and the tightest of a few tries is kept, so that S is not shifted by a
/// preemption between the reads (which would move every due time of the
/// session by as much, and make messages sent on time look sent early).
fn wall_at(clock: &Clock, at: Instant) -> u64 {
    let mut best = (u64::MAX, 0u64);
    for _ in 0..16 {
        let before = clock.now();
        let wall = wall_ns();
        let after = clock.now();
        let width = after.0.saturating_sub(before.0);
        if width < best.0 {
            let mid = before.0 + width / 2;
            best = (width, wall.saturating_sub(mid.saturating_sub(at.0)));
        }
        if width < 200 {
            break;
        }
    }
    best.1
}

/// Run the server until the duration or message limit is reached or `stop`
/// is set, publishing the GBM stream of `cfg.gbm`: the `server` binary.
pub fn run(cfg: &ServerConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let mut generator = Generator::new(cfg.gbm.clone()).context("invalid generator settings")?;
    publish(cfg, &mut generator, stop)
}

/// Publish the messages of `source` (instead of the GBM stream; `cfg.gbm`
/// is not used) with everything the server does around them: pacing at
/// `cfg.rate`, batching, the retransmit store, the recovery service
/// (NACKs, snapshots, TCP resume), heartbeats, the end of session and the
/// linger after it. Returns when the session has ended (the source is
/// exhausted, the duration or message limit is reached, or `stop` is set)
/// and the linger has passed.
///
/// ```no_run
/// use std::sync::{Arc, atomic::AtomicBool};
/// use tickwire_core::{Message, Side, Trade};
/// use tickwire_server::{FromIter, ServerConfig, publish};
///
/// let trades = (0..1000u32).map(|i| {
///     Message::Trade(Trade { symbol: i % 4, side: Side::Buy, price: 1_000_000, qty: 1, exch_ts: 0, symbol_seq: 0 })
/// });
/// let cfg = ServerConfig { rate: 10_000, ..ServerConfig::default() };
/// let summary = publish(&cfg, &mut FromIter::new(4, trades), Arc::new(AtomicBool::new(false)))?;
/// assert_eq!(summary.messages, 1000);
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn publish<S: MessageSource + ?Sized>(
    cfg: &ServerConfig,
    source: &mut S,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Summary> {
    publish_and_tell(cfg, source, stop, |_| ())
}

/// A server running on a thread of its own, started by [`spawn`].
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    thread: std::thread::JoinHandle<anyhow::Result<Summary>>,
}

impl Running {
    /// The address the transport bound (the port the kernel chose for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the session has ended and the thread returned.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Wait for the session to end; its summary, or the error that ended it.
    pub fn join(self) -> anyhow::Result<Summary> {
        self.thread.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the server thread panicked")))
    }
}

/// [`run`] on a thread of its own, for a program (or a test) that embeds the
/// server: returns once the transport is bound, with the address it bound,
/// or with the error that stopped it before.
///
/// ```
/// use std::sync::{Arc, atomic::AtomicBool};
/// use tickwire_server::ServerConfig;
///
/// let mut cfg = ServerConfig { max_messages: Some(1000), rate: 0, ..ServerConfig::default() };
/// cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
/// cfg.linger = std::time::Duration::ZERO;
/// cfg.stats_interval = None;
/// let server = tickwire_server::spawn(cfg, Arc::new(AtomicBool::new(false)))?;
/// assert_ne!(server.local_addr().port(), 0);
/// assert_eq!(server.join()?.messages, 1000);
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn spawn(cfg: ServerConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Running> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let thread = std::thread::Builder::new()
        .name("tickwire-server".into())
        .spawn(move || {
            let mut generator =
                Generator::new(cfg.gbm.clone()).context("invalid generator settings")?;
            publish_and_tell(&cfg, &mut generator, stop, |addr| {
                let _ = tx.send(addr);
            })
        })
        .context("starting the server thread")?;
    match rx.recv() {
        Ok(addr) => Ok(Running { addr, thread }),
        // The thread ended before it bound: return its error.
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(anyhow::anyhow!("the server ended before it listened")),
            Err(_) => Err(anyhow::anyhow!("the server thread panicked")),
        },
    }
}

/// [`publish`], calling `bound` with the transport's address once it is
/// bound (after the ready file, if any, is written).
fn publish_and_tell<S: MessageSource + ?Sized>(
    cfg: &ServerConfig,
    source: &mut S,
    stop: Arc<AtomicBool>,
    bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<Summary> {
    if let Some(cpu) = cfg.cpu {
        pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    if let Err(e) = set_min_timer_slack() {
        eprintln!("server: cannot lower the timer slack ({e}): timed waits may end 50 µs late");
    }
    let symbols = source.symbols();

    let mut transport =
        build_publisher_with_limits(&cfg.transport, &cfg.tcp_limits).with_context(|| {
            format!("starting the {} transport on {}", cfg.transport.kind, cfg.transport.addr)
        })?;
    let addr = transport.local_addr().unwrap_or(cfg.transport.addr);
    if let Some(path) = &cfg.ready_file {
        // Write then rename, so a reader never sees a half-written address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, addr.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    bound(addr);
    let epoch = cfg.epoch.unwrap_or_else(|| wall_ns().max(1));
    let core_cfg = SequencerConfig {
        max_packet_len: transport.max_packet_len(),
        retransmit_window: cfg.retransmit_window,
        // Logins are a TCP affair; over UDP a spoofed 40-byte Login could ask
        // for the whole window, so datagram transports refuse them.
        serve_logins: cfg.transport.kind == TransportKind::Tcp,
        // Datagram requests can carry a forged source address: serve only
        // hosts that echo their cookie. TCP peers completed a handshake.
        limits: RequestLimits {
            validate_addresses: cfg.transport.kind != TransportKind::Tcp,
            ..RequestLimits::default()
        },
        max_delay: cfg.max_delay,
        // Cookies and the instance id must be unguessable.
        secret: random_secret().context("reading /dev/urandom for the cookie secret")?,
        repair: RepairConfig {
            mode: repair_mode(cfg.repair, transport.as_ref()),
            group_rate_bytes_per_sec: cfg.repair_budget,
            ..RepairConfig::default()
        },
        ..SequencerConfig::new(epoch, symbols)
    };
    core_cfg.validate().context("invalid publisher settings")?;
    let mut core = Core::new(core_cfg);
    core.prefault();
    eprintln!(
        "server: {} transport on {}, epoch {epoch}, {}, rate {}, idle {}, {}",
        cfg.transport.kind,
        addr,
        source.describe(),
        if cfg.rate == 0 { "max".to_string() } else { format!("{}/s", cfg.rate) },
        cfg.idle,
        match cfg.max_delay {
            None => "natural batching".to_string(),
            Some(d) => format!("coalescing up to {d:?}"),
        }
    );
    if cfg.transport.kind == TransportKind::Multicast {
        eprintln!(
            "server: UDP GSO {}",
            if transport.stats().gso {
                "on: runs of full packets ready together leave in one sendmsg (the kernel cuts the datagrams)"
            } else {
                "off: one datagram per packet (sendmmsg)"
            }
        );
    }

    let metrics = match cfg.metrics {
        Some(addr) => {
            let m = Arc::new(Metrics::new("tickwire_server", SERVER_METRICS));
            let bound = metrics::serve(addr, m.clone())
                .with_context(|| format!("serving metrics on {addr}"))?;
            eprintln!("server: metrics on http://{bound}/metrics");
            Some(m)
        }
        None => None,
    };
    let clock = Clock::new();
    let cpu_start = cpu_times();
    let mut metrics_due = Instant::ZERO;
    let mut idler = Idler::new(cfg.idle);
    let mut inbox = Inbox::default();
    let mut catchups = CatchUps::default();
    let stream_logins = cfg.transport.kind == TransportKind::Tcp;
    let mut drop_log = LogLimiter::default();
    let mut start = clock.now();
    let (mut pacer, mut end_at) = pace_from(cfg, &clock, start);
    let mut waiting = cfg.wait_clients > 0;
    if waiting {
        eprintln!("server: waiting for {} client(s) to log in", cfg.wait_clients);
    }
    let mut stats = Progress { every: cfg.stats_interval, last: start, last_msgs: 0 };
    let mut gen_elapsed = Duration::ZERO;
    let mut linger_until: Option<Instant> = None;
    let mut stop_seen_after_end = false;
    let mut exhausted = false;

    loop {
        let now = clock.now();
        let mut did_work = false;

        let logins = core.stats().logins + catchups.logins;
        if waiting && (logins >= cfg.wait_clients || stop.load(Ordering::Relaxed)) {
            // The session (and its pacing) starts now.
            waiting = false;
            start = now;
            (pacer, end_at) = pace_from(cfg, &clock, start);
        }

        // 1. Generate what is due, each message stamped with its own due time.
        if !core.is_ended() && !waiting {
            let wall = wall_ns();
            let n = if source.next_due().is_some() {
                push_self_paced(&mut core, source, &mut pacer, start, now, wall, &mut exhausted)
            } else {
                let first = pacer.produced();
                let n = pacer.take_due(now, MAX_BATCH);
                for i in first..first + n {
                    let due = if cfg.rate == 0 { now } else { pacer.due_at(i) };
                    let Some(msg) = source.next_message() else {
                        exhausted = true;
                        break;
                    };
                    core.push(due, pacer.due_wall(i, now, wall), &msg);
                }
                n
            };
            did_work |= n > 0;
            if n < MAX_BATCH {
                core.caught_up(now, wall);
            }
            let out_of_time = end_at.is_some_and(|e| now >= e);
            if pacer.is_done() || exhausted || out_of_time || stop.load(Ordering::Relaxed) {
                if stop.swap(false, Ordering::Relaxed) {
                    eprintln!(
                        "server: interrupted; press Ctrl-C again to skip the recovery linger"
                    );
                }
                pacer.stop();
                gen_elapsed = now.saturating_duration_since(start);
                core.end_session(now, wall_ns());
                linger_until = Some(now + cfg.linger);
                eprintln!(
                    "server: session ended after {} messages; serving recovery for {:?}",
                    core.stats().messages,
                    cfg.linger
                );
            }
        }

        // 2. Timers, 3. everything sealed to the network.
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, wall_ns());
        }
        did_work |= transmit(&mut core, transport.as_mut())?;
        did_work |= transmit_group(&mut core, transport.as_mut());

        // 4. Wait for I/O until the earliest deadline; serve requests.
        // Under a coalescing bound the next message would wait for it anyway:
        // wake when it expires for the next message (or, while a packet is
        // open, when the publisher's bound for it does), then generate what
        // fell due meanwhile. One wake-up per packet, not per message.
        let next_due = match source.next_due() {
            Some(d) if !pacer.is_done() => Some(start + d),
            _ => pacer.poll_timeout(),
        }
        .filter(|_| !waiting);
        let next_due = match cfg.max_delay {
            None => next_due,
            Some(_) if core.pending_messages() > 0 => None,
            Some(d) => next_due.map(|t| t + d),
        };
        let deadline = [
            next_due,
            core.poll_timeout(),
            end_at.filter(|_| !core.is_ended() && !waiting),
            linger_until,
            stats.deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let now = clock.now();
        let timeout = idler.timeout(deadline.map(|d| d.saturating_duration_since(now)));
        let mut events = 0usize;
        transport.poll(timeout, &mut |ev| {
            events += 1;
            match ev {
                PubEvent::Connected(_) => {}
                PubEvent::Request { peer, packet } => inbox.push(peer, packet),
                PubEvent::Disconnected { peer, reason } => {
                    // The transport logs (rate-limited) what it decided itself.
                    let logged = matches!(
                        reason,
                        DisconnectReason::Closed
                            | DisconnectReason::LoginTimeout
                            | DisconnectReason::Idle
                            | DisconnectReason::SlowConsumer { .. }
                    );
                    if !logged {
                        log_limited(
                            &mut drop_log,
                            std::time::Instant::now(),
                            "server",
                            format_args!("server: dropped peer {peer}: {reason}"),
                        );
                    }
                    inbox.disconnected.push(peer);
                }
            }
        })?;
        did_work |= events > 0;
        for peer in inbox.disconnected.drain(..) {
            core.forget_peer(peer);
            catchups.forget(peer);
        }
        if inbox.used > 0 {
            // Publish everything sealed first, so a TCP catch-up ends exactly where
            // the live stream continues.
            transmit(&mut core, transport.as_mut())?;
            let streams = stream_logins.then_some(&mut catchups);
            serve_requests(&mut core, transport.as_mut(), &mut inbox, streams, clock.now());
            transmit_group(&mut core, transport.as_mut());
        }
        if !catchups.active.is_empty() {
            transmit(&mut core, transport.as_mut())?;
            catchups.pump(&core, transport.as_mut(), wall_ns());
        }
        idler.record(did_work);

        let now = clock.now();
        stats.maybe_print(now, &core, transport.as_ref());
        if let Some(m) = &metrics
            && now >= metrics_due
        {
            publish_metrics(m, &core, transport.as_ref(), cpu_times().since(cpu_start), &idler);
            metrics_due = now + METRICS_EVERY;
        }
        if let Some(until) = linger_until {
            // A second Ctrl-C (stop set again after the session ended) cuts the linger short.
            if now >= until || stop_twice(&stop, &mut stop_seen_after_end) {
                break;
            }
        }
    }
    transport.flush()?;
    let suppressed = drop_log.take_suppressed() + catchups.log.take_suppressed();
    if suppressed > 0 {
        eprintln!("server: {suppressed} similar connection log lines suppressed");
    }
    if let Some(path) = &cfg.book_out {
        let mut text = String::new();
        core.book().write_text(&mut text).expect("formatting into a String");
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let run = Run { epoch, gen_elapsed, cpu: cpu_times().since(cpu_start) };
    Ok(summarize(cfg, &run, &core, &transport.stats(), &idler, &catchups))
}

/// What a run measured besides the counters: its epoch, how long it
/// generated, and the CPU it used.
struct Run {
    epoch: u64,
    gen_elapsed: Duration,
    cpu: tickwire_transports::affinity::CpuTimes,
}

/// The run's [`Summary`] from the core's and the transport's counters.
fn summarize(
    cfg: &ServerConfig,
    run: &Run,
    core: &Core,
    ts: &tickwire_transports::PubStats,
    idler: &Idler,
    catchups: &CatchUps,
) -> Summary {
    let (st, cpu, epoch) = (core.stats(), run.cpu, run.epoch);
    let secs = run.gen_elapsed.as_secs_f64().max(1e-9);
    let per_msg = |d: Duration| d.as_nanos() as f64 / st.messages.max(1) as f64;
    Summary {
        replay: None,
        transport: cfg.transport.kind.to_string(),
        epoch,
        messages: st.messages,
        packets: st.packets,
        heartbeats: st.heartbeats,
        elapsed_s: secs,
        rate: st.messages as f64 / secs,
        clients: ts.connections,
        slow_disconnects: ts.slow_disconnects,
        requests: st.requests + catchups.logins + catchups.repeated,
        nacks: st.nacks,
        nack_rejects: st.nack_rejects,
        retransmitted_messages: st.retransmitted_messages + catchups.messages,
        snapshots: st.snapshots_served,
        malformed: st.malformed + ts.malformed,
        ignored_requests: st.wrong_epoch + st.out_of_range + st.rate_limited + st.duplicates,
        transport_packets: ts.packets_sent,
        syscalls: ts.syscalls,
        gso: ts.gso,
        gso_sends: ts.gso_sends,
        cpu_s: cpu.total().as_secs_f64(),
        cpu_ns_per_message: per_msg(cpu.total()),
        cpu_user_s: cpu.user.as_secs_f64(),
        cpu_sys_s: cpu.sys.as_secs_f64(),
        cpu_user_ns_per_message: per_msg(cpu.user),
        cpu_sys_ns_per_message: per_msg(cpu.sys),
        idle: cfg.idle.to_string(),
        idle_spins: idler.stats().spins,
        idle_blocks: idler.stats().blocks,
        max_delay_us: cfg.max_delay.map(|d| d.as_secs_f64() * 1e6),
        eos_repeats: st.eos_repeats,
        probes: st.probes,
        unvalidated_requests: st.unvalidated,
        bad_cookies: st.bad_cookies,
        rate_limited: st.rate_limited,
        host_limited: st.host_limited,
        global_limited: st.global_limited,
        catchup_logins: catchups.logins,
        catchup_overruns: catchups.overruns,
        repeated_logins: catchups.repeated,
        login_timeouts: ts.login_timeouts,
        idle_timeouts: ts.idle_timeouts,
        refused_per_host: ts.refused_per_host,
        refused_full: ts.refused_full,
        peak_queued_bytes: ts.peak_queued_bytes,
        auth_rejected: ts.auth_rejected,
        repair: match core.config().repair.mode {
            RepairMode::Multicast => "multicast",
            RepairMode::Unicast => "unicast",
        }
        .to_string(),
        multicast_repairs: st.multicast_repairs,
        multicast_repairs_joined: st.multicast_repairs_joined,
        repair_coalesced: st.repair_coalesced,
        repair_messages_multicast: st.repair_messages_multicast,
        repair_bytes_multicast: st.repair_bytes_multicast,
        ncf_sent: st.ncf_sent,
        repair_budget_refused: st.repair_budget_refused,
        multicast_snapshots: st.multicast_snapshots,
        snapshot_requests_joined: st.snapshot_requests_joined,
    }
}

/// The repair mode the core runs with: multicast only where the transport
/// can send to its group (multicast, AF_XDP; tcp has none), else unicast,
/// said once.
fn repair_mode(wanted: RepairMode, transport: &dyn Publisher) -> RepairMode {
    match wanted {
        RepairMode::Multicast if !transport.sends_to_group() => {
            eprintln!(
                "server: this transport cannot send repairs to its group: repairs go by unicast"
            );
            RepairMode::Unicast
        }
        m => m,
    }
}

/// Send the core's multicast repairs (RepairNotice, Retransmission, Snapshot)
/// to the feed's group. A failed send is said and dropped: subscribers NACK
/// again. True if anything went out.
fn transmit_group(core: &mut Core, transport: &mut dyn Publisher) -> bool {
    let mut sent = false;
    while let Some(p) = core.poll_group_packet() {
        if let Err(e) = transport.send_to_group(p) {
            eprintln!("server: a multicast repair failed: {e}");
        }
        sent = true;
    }
    sent
}

/// Encode every sealed packet straight into the transport's send buffer,
/// stamped with the moment it is handed over, then push the batch out.
/// Returns whether anything was sent.
fn transmit(core: &mut Core, transport: &mut dyn Publisher) -> io::Result<bool> {
    if core.queued_packets() == 0 {
        return Ok(false);
    }
    // One stamp for the batch: its packets reach the kernel together (one
    // sendmmsg, one writev per client), and a clock read per packet costs
    // more than the packets' spread.
    let wall = wall_ns();
    let mut sent = false;
    while core.queued_packets() > 0 {
        transport.publish_with(&mut |buf| core.poll_transmit(wall, buf).unwrap_or(0))?;
        sent = true;
    }
    if sent {
        transport.flush()?;
    }
    Ok(sent)
}

/// Push what a self-paced source ([`MessageSource::next_due`]) has due by
/// `now`, at most [`MAX_BATCH`], each stamped with its own due instant; the
/// pacer counts them (for the message limit). Returns how many.
fn push_self_paced<S: MessageSource + ?Sized>(
    core: &mut Core,
    source: &mut S,
    pacer: &mut Pacer,
    start: Instant,
    now: Instant,
    wall: u64,
    exhausted: &mut bool,
) -> u64 {
    let mut n = 0;
    while n < MAX_BATCH {
        let Some(offset) = source.next_due() else { break };
        let due = start + offset;
        if due > now || pacer.take_due(now, 1) == 0 {
            break;
        }
        let Some(msg) = source.next_message() else {
            *exhausted = true;
            break;
        };
        core.push(due, wall.saturating_sub(now.0.saturating_sub(due.0)), &msg);
        n += 1;
    }
    n
}

/// True once `stop` is set after the session ended (a second Ctrl-C).
fn stop_twice(stop: &AtomicBool, seen: &mut bool) -> bool {
    *seen |= stop.load(Ordering::Relaxed);
    *seen
}
