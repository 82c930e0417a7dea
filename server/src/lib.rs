//! # tickwire-server
//!
//! The exchange simulator and publisher: a GBM generator feeds the sans-IO
//! [`tickwire_core::publisher::Publisher`] (sequencer, framer, flush policy,
//! retransmit store, snapshot state, request service, end-of-session
//! repetition), paced by [`tickwire_core::pacing::Pacer`]; packets go out over
//! any [`tickwire_transports::Publisher`]. [`run`] is a thin driver: it reads
//! the clocks, hands the state machines their inputs and waits until the
//! earliest deadline they name. Each iteration:
//!
//! 1. take every message due by now from the pacer (each with its own due
//!    instant), generate and push it; tell the publisher the generator has
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

#![warn(missing_docs)]

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Serialize;
use tickwire_core::catchup::{self, CatchUp, LoginPlan};
use tickwire_core::gbm::{GbmConfig, Generator};
use tickwire_core::pacing::Pacer;
use tickwire_core::publisher::{Publisher as Core, PublisherConfig, RequestLimits, RequestOutcome};
use tickwire_core::{Instant, Message};
use tickwire_transports::affinity::{cpu_times, pin_to_cpu};
use tickwire_transports::idle::{IdleStrategy, Idler};
use tickwire_transports::metrics::{self, Kind, Metrics};
use tickwire_transports::select::{
    TcpLimits, TransportKind, TransportOptions, build_publisher_with_limits,
};
use tickwire_transports::tcp::{CATCHUP_BUDGET, LogLimiter, log_limited};
use tickwire_transports::wait::set_min_timer_slack;
use tickwire_transports::{DisconnectReason, PeerId, PubEvent, Publisher};

/// Largest number of messages generated per loop iteration, so requests and
/// socket writes are served between bursts even at `--rate 0`.
const MAX_BATCH: u64 = 512;

/// Server configuration (the binary maps its flags onto this).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Transport and addresses.
    pub transport: TransportOptions,
    /// Generator settings (seed, symbols...).
    pub gbm: GbmConfig,
    /// Messages per second; 0 = as fast as possible.
    pub rate: u64,
    /// Stop generating after this long (None = until stopped).
    pub duration: Option<Duration>,
    /// Stop generating after this many messages (None = no limit).
    pub max_messages: Option<u64>,
    /// Messages kept for retransmission.
    pub retransmit_window: u64,
    /// Session epoch (None = derived from the wall clock: changes on restart).
    pub epoch: Option<u64>,
    /// After the session ends, keep serving recovery requests this long.
    pub linger: Duration,
    /// Print a progress line this often (None = never).
    pub stats_interval: Option<Duration>,
    /// How the loop waits when idle.
    pub idle: IdleStrategy,
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
    /// Bounded coalescing: a packet waits until its oldest message has been
    /// due this long (None: natural batching, sent as soon as nothing more is due).
    pub max_delay: Option<Duration>,
    /// Start the session only once this many clients have logged in (tcp:
    /// benchmarks measure the feed, not a late client's catch-up). 0: at once.
    pub wait_clients: u64,
    /// Serve every counter of the summary in the Prometheus text format here
    /// while running (`--metrics 127.0.0.1:9464`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Write the final book (the state every client must converge to) here.
    pub book_out: Option<std::path::PathBuf>,
    /// Once listening, write the bound address here (for `--listen 127.0.0.1:0`).
    pub ready_file: Option<std::path::PathBuf>,
    /// TCP connection limits (per host, total, login and idle timeouts).
    pub tcp_limits: TcpLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            transport: TransportOptions {
                kind: TransportKind::Tcp,
                addr: "127.0.0.1:9000".parse().expect("valid address"),
                group_a: "239.255.0.1:30001".parse().expect("valid group"),
                group_b: None,
                interface: std::net::Ipv4Addr::LOCALHOST,
                ifname: None,
                ttl: 1,
                max_packet_len: tickwire_core::wire::DEFAULT_MAX_PACKET,
                loss: tickwire_transports::lossy::LossConfig {
                    tx_drop: 0.0,
                    rx_drop: 0.0,
                    seed: 0,
                },
                source: None,
                auth_key: None,
            },
            gbm: GbmConfig::default(),
            rate: 200_000,
            duration: Some(Duration::from_secs(10)),
            max_messages: None,
            retransmit_window: 1 << 20,
            epoch: None,
            linger: Duration::from_secs(1),
            stats_interval: Some(Duration::from_secs(1)),
            idle: IdleStrategy::default(),
            cpu: None,
            max_delay: None,
            wait_clients: 0,
            metrics: None,
            book_out: None,
            ready_file: None,
            tcp_limits: TcpLimits::default(),
        }
    }
}

/// What the server did, printed at exit (and as JSON with `--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// Transport used.
    pub transport: String,
    /// Session epoch.
    pub epoch: u64,
    /// Messages published.
    pub messages: u64,
    /// Live data packets published.
    pub packets: u64,
    /// Heartbeats published.
    pub heartbeats: u64,
    /// Wall time of the generating phase, seconds.
    pub elapsed_s: f64,
    /// Messages per second achieved.
    pub rate: f64,
    /// Connections accepted (tcp).
    pub clients: u64,
    /// Clients dropped for being slow (tcp).
    pub slow_disconnects: u64,
    /// Requests received (logins, NACKs, snapshot requests).
    pub requests: u64,
    /// NACKs served with retransmissions.
    pub nacks: u64,
    /// NACKs answered with a reject (outside the window).
    pub nack_rejects: u64,
    /// Messages retransmitted.
    pub retransmitted_messages: u64,
    /// Snapshots served.
    pub snapshots: u64,
    /// Bad input: malformed requests and framing errors.
    pub malformed: u64,
    /// Requests ignored for rate limits, linger duplicates, wrong epoch or range.
    pub ignored_requests: u64,
    /// Packets handed to the network by the transport (tcp counts each client).
    pub transport_packets: u64,
    /// Send system calls.
    pub syscalls: u64,
    /// Process CPU time (user + system), seconds.
    pub cpu_s: f64,
    /// CPU nanoseconds per published message.
    pub cpu_ns_per_message: f64,
    /// User CPU time, seconds.
    pub cpu_user_s: f64,
    /// System CPU time, seconds.
    pub cpu_sys_s: f64,
    /// User CPU nanoseconds per published message.
    pub cpu_user_ns_per_message: f64,
    /// System CPU nanoseconds per published message.
    pub cpu_sys_ns_per_message: f64,
    /// The idle strategy used.
    pub idle: String,
    /// Loop polls that spun (zero timeout).
    pub idle_spins: u64,
    /// Loop polls allowed to block.
    pub idle_blocks: u64,
    /// The coalescing bound, microseconds (null: natural batching).
    pub max_delay_us: Option<f64>,
    /// EndOfSession packets repeated after the first.
    pub eos_repeats: u64,
    /// Probes answered with the session's Status.
    pub probes: u64,
    /// NACKs and snapshot requests from hosts that had not proved their
    /// address (answered with a cookie alone, never with data).
    pub unvalidated_requests: u64,
    /// Of those, requests whose cookie was wrong.
    pub bad_cookies: u64,
    /// Requests refused by the rate limits (per peer, per host or global).
    pub rate_limited: u64,
    /// Of those, refused by a host's bucket (all its ports together).
    pub host_limited: u64,
    /// Of those, refused by the service's global reply budget.
    pub global_limited: u64,
    /// Logins answered with a catch-up streamed from the retransmit store (tcp).
    pub catchup_logins: u64,
    /// Catch-ups the feed overtook (messages left the window before the
    /// connection drained them): connection closed, counted (tcp).
    pub catchup_overruns: u64,
    /// Second Logins on a connection already logged in, ignored (tcp).
    pub repeated_logins: u64,
    /// Connections closed for not logging in within the login timeout (tcp).
    pub login_timeouts: u64,
    /// Connections closed for moving no byte for the idle timeout (tcp).
    pub idle_timeouts: u64,
    /// Connections refused: their host held `--max-per-host` connections (tcp).
    pub refused_per_host: u64,
    /// Connections refused: the server held its maximum (tcp).
    pub refused_full: u64,
    /// The most bytes ever queued over all connections at once (tcp): the
    /// server's send-queue memory, bounded per connection whatever a client asks.
    pub peak_queued_bytes: u64,
    /// Requests dropped for a missing or wrong MAC (`--key-file`).
    pub auth_rejected: u64,
}

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

/// Requests copied out of the transport's poll callback, served after it returns.
/// Buffers are reused: the steady state allocates nothing.
#[derive(Debug, Default)]
struct Inbox {
    requests: Vec<(PeerId, Vec<u8>)>,
    used: usize,
    disconnected: Vec<PeerId>,
}

impl Inbox {
    fn push(&mut self, peer: PeerId, bytes: &[u8]) {
        if self.used == self.requests.len() {
            self.requests.push((peer, Vec::with_capacity(bytes.len())));
        }
        let slot = &mut self.requests[self.used];
        slot.0 = peer;
        slot.1.clear();
        slot.1.extend_from_slice(bytes);
        self.used += 1;
    }
}

/// Resume Logins served by streaming (TCP): each connection's catch-up is
/// framed from the retransmit store as its socket drains, at most
/// [`CATCHUP_BUDGET`] bytes queued at a time, so a Login from sequence 1 costs
/// O(budget) memory instead of the whole window. The connection turns live
/// once its cursor reaches the live stream.
#[derive(Debug, Default)]
struct CatchUps {
    active: Vec<(PeerId, CatchUp)>,
    /// Peers that logged in through this path (a second Login is ignored).
    logged: std::collections::HashSet<PeerId>,
    buf: Vec<u8>,
    logins: u64,
    overruns: u64,
    repeated: u64,
    /// Messages replayed.
    messages: u64,
    /// Per-connection log lines.
    log: LogLimiter,
}

impl CatchUps {
    /// If `bytes` is a valid Login that resumes inside the window, answer it
    /// here (LoginAck now, the replay by [`Self::pump`]) and return true; the
    /// rest (snapshot Logins, other requests, malformed input) goes to the core.
    fn try_serve(
        &mut self,
        core: &Core,
        transport: &mut dyn Publisher,
        peer: PeerId,
        bytes: &[u8],
        wall: u64,
    ) -> bool {
        let Ok(packet) = tickwire_core::wire::Packet::new_checked(bytes) else {
            return false;
        };
        let Ok(repr) = tickwire_core::wire::PacketRepr::parse(&packet) else {
            return false;
        };
        if repr.kind != tickwire_core::wire::PacketKind::Login || repr.payload_len != 0 {
            return false;
        }
        if self.logged.contains(&peer) {
            self.repeated += 1;
            return true;
        }
        let LoginPlan::Resume { from } = catchup::plan_login(core.epoch(), core.store(), &repr)
        else {
            return false;
        };
        self.buf.resize(core.config().max_packet_len, 0);
        let n =
            catchup::emit_login_ack(&mut self.buf, core.epoch(), wall, from, core.store().oldest());
        if let Err(e) = transport.send_to(peer, &self.buf[..n]) {
            eprintln!("server: reply to peer {peer} failed: {e}");
            return true;
        }
        transport.logged_in(peer);
        transport.watch_drain(peer, Some(CATCHUP_BUDGET / 2));
        self.logged.insert(peer);
        self.active.push((peer, CatchUp::new(from)));
        self.logins += 1;
        true
    }

    /// Top up every catch-up's queue to [`CATCHUP_BUDGET`]; turn live those
    /// that reached the live stream. Call only after every sealed packet was
    /// handed to the transport (the live stream continues at `store.next()`).
    fn pump(&mut self, core: &Core, transport: &mut dyn Publisher, wall: u64) {
        let mut k = 0;
        while k < self.active.len() {
            let (peer, cursor) = &mut self.active[k];
            let peer = *peer;
            let done = loop {
                let Some(queued) = transport.queued(peer) else { break true };
                if let Some(overrun) = cursor.overrun(core.store()) {
                    self.overruns += 1;
                    log_limited(
                        &mut self.log,
                        std::time::Instant::now(),
                        "server",
                        format_args!("server: closing peer {peer}: {overrun}"),
                    );
                    transport.disconnect(peer, DisconnectReason::SlowConsumer { queued });
                    break true;
                }
                if queued >= CATCHUP_BUDGET {
                    break false;
                }
                self.buf.resize(core.config().max_packet_len, 0);
                let at = cursor.next();
                match cursor.poll_transmit(core.store(), core.epoch(), wall, &mut self.buf) {
                    Ok(Some(n)) => {
                        self.messages += cursor.next().0 - at.0;
                        if transport.send_to(peer, &self.buf[..n]).is_err() {
                            break true;
                        }
                    }
                    Ok(None) => {
                        transport.watch_drain(peer, None);
                        transport.set_live(peer, true);
                        break true;
                    }
                    Err(overrun) => {
                        self.overruns += 1;
                        log_limited(
                            &mut self.log,
                            std::time::Instant::now(),
                            "server",
                            format_args!("server: closing peer {peer}: {overrun}"),
                        );
                        transport.disconnect(peer, DisconnectReason::SlowConsumer { queued });
                        break true;
                    }
                }
            };
            if done {
                self.active.swap_remove(k);
            } else {
                k += 1;
            }
        }
    }

    fn forget(&mut self, peer: PeerId) {
        self.logged.remove(&peer);
        self.active.retain(|(p, _)| *p != peer);
    }
}

/// Run the server until the duration or message limit is reached or `stop` is set.
pub fn run(cfg: &ServerConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    if let Some(cpu) = cfg.cpu {
        pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    if let Err(e) = set_min_timer_slack() {
        eprintln!("server: cannot lower the timer slack ({e}): timed waits may end 50 µs late");
    }
    let mut generator = Generator::new(cfg.gbm.clone()).context("invalid generator settings")?;
    let mut transport =
        build_publisher_with_limits(&cfg.transport, &cfg.tcp_limits).with_context(|| {
            format!("starting the {} transport on {}", cfg.transport.kind, cfg.transport.addr)
        })?;
    let bound = transport.local_addr().unwrap_or(cfg.transport.addr);
    if let Some(path) = &cfg.ready_file {
        // Write then rename, so a reader never sees a half-written address.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    }
    let epoch = cfg.epoch.unwrap_or_else(|| wall_ns().max(1));
    let core_cfg = PublisherConfig {
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
        ..PublisherConfig::new(epoch, cfg.gbm.symbols)
    };
    core_cfg.validate().context("invalid publisher settings")?;
    let mut core = Core::new(core_cfg);
    eprintln!(
        "server: {} transport on {}, epoch {epoch}, {} symbols, seed {}, rate {}, idle {}, {}",
        cfg.transport.kind,
        bound,
        cfg.gbm.symbols,
        cfg.gbm.seed,
        if cfg.rate == 0 { "max".to_string() } else { format!("{}/s", cfg.rate) },
        cfg.idle,
        match cfg.max_delay {
            None => "natural batching".to_string(),
            Some(d) => format!("coalescing up to {d:?}"),
        }
    );

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
    let mut pacer = Pacer::new(cfg.rate, start, cfg.max_messages);
    let mut end_at = cfg.duration.map(|d| start + d);
    let mut waiting = cfg.wait_clients > 0;
    if waiting {
        eprintln!("server: waiting for {} client(s) to log in", cfg.wait_clients);
    }
    let mut stats = Progress { every: cfg.stats_interval, last: start, last_msgs: 0 };
    let mut gen_elapsed = Duration::ZERO;
    let mut linger_until: Option<Instant> = None;
    let mut stop_seen_after_end = false;

    loop {
        let now = clock.now();
        let mut did_work = false;

        let logins = core.stats().logins + catchups.logins;
        if waiting && (logins >= cfg.wait_clients || stop.load(Ordering::Relaxed)) {
            // The session (and its pacing) starts now.
            waiting = false;
            start = now;
            pacer = Pacer::new(cfg.rate, start, cfg.max_messages);
            end_at = cfg.duration.map(|d| start + d);
        }

        // 1. Generate what is due, each message stamped with its own due time.
        if !core.is_ended() && !waiting {
            let wall = wall_ns();
            let first = pacer.produced();
            let n = pacer.take_due(now, MAX_BATCH);
            for i in first..first + n {
                let due = if cfg.rate == 0 { now } else { pacer.due_at(i) };
                let msg: Message = generator.next_message();
                core.push(due, wall.saturating_sub(now.0.saturating_sub(due.0)), &msg);
            }
            did_work |= n > 0;
            if n < MAX_BATCH {
                core.caught_up(now, wall);
            }
            let out_of_time = end_at.is_some_and(|e| now >= e);
            if pacer.is_done() || out_of_time || stop.load(Ordering::Relaxed) {
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
                    pacer.produced(),
                    cfg.linger
                );
            }
        }

        // 2. Timers, 3. everything sealed to the network.
        if core.poll_timeout().is_some_and(|t| t <= now) {
            core.handle_timeout(now, wall_ns());
        }
        did_work |= transmit(&mut core, transport.as_mut())?;

        // 4. Wait for I/O until the earliest deadline; serve requests.
        // Under a coalescing bound the next message would wait for it anyway:
        // wake when it expires for the next message (or, while a packet is
        // open, when the publisher's bound for it does), then generate what
        // fell due meanwhile. One wake-up per packet, not per message.
        let next_due = pacer.poll_timeout().filter(|_| !waiting);
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

    let st = core.stats();
    let ts = transport.stats();
    let cpu = cpu_times().since(cpu_start);
    let secs = gen_elapsed.as_secs_f64().max(1e-9);
    let per_msg = |d: Duration| d.as_nanos() as f64 / st.messages.max(1) as f64;
    Ok(Summary {
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
    })
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

/// Answer the requests copied into `inbox` (the core replies through the transport).
fn serve_requests(
    core: &mut Core,
    transport: &mut dyn Publisher,
    inbox: &mut Inbox,
    mut streams: Option<&mut CatchUps>,
    now: Instant,
) {
    let wall = wall_ns();
    for (peer, bytes) in &inbox.requests[..inbox.used] {
        let peer = *peer;
        if let Some(c) = streams.as_deref_mut()
            && c.try_serve(core, transport, peer, bytes, wall)
        {
            continue;
        }
        let mut send_err: Option<io::Error> = None;
        let outcome = core.handle_request(now, wall, peer, bytes, &mut |reply| {
            if let Err(e) = transport.send_to(peer, reply) {
                send_err.get_or_insert(e);
            }
        });
        match outcome {
            RequestOutcome::LoginAccepted { .. } => transport.set_live(peer, true),
            RequestOutcome::Ignored(tickwire_core::publisher::IgnoreReason::Malformed(e)) => {
                transport.disconnect(peer, DisconnectReason::Malformed(e));
            }
            _ => {}
        }
        if let Some(e) = send_err {
            eprintln!("server: reply to peer {peer} failed: {e}");
        }
    }
    inbox.used = 0;
}

/// How often the loop copies its counters into the metrics registry.
const METRICS_EVERY: Duration = Duration::from_millis(100);

/// The server's metrics, in the order [`publish_metrics`] sets them.
const SERVER_METRICS: &[(&str, &str, Kind)] = &[
    ("messages_total", "Messages published.", Kind::Counter),
    ("packets_total", "Live packets published (data, heartbeat, end of session).", Kind::Counter),
    ("heartbeats_total", "Heartbeats published.", Kind::Counter),
    ("requests_total", "Requests received (logins, NACKs, snapshot requests).", Kind::Counter),
    ("nacks_total", "NACKs of this session received.", Kind::Counter),
    ("nack_rejects_total", "NACKs answered with a reject (outside the window).", Kind::Counter),
    ("retransmitted_messages_total", "Messages retransmitted.", Kind::Counter),
    ("snapshots_total", "Snapshots served.", Kind::Counter),
    ("malformed_total", "Malformed requests and framing errors.", Kind::Counter),
    (
        "ignored_requests_total",
        "Requests ignored (rate limit, duplicate, epoch, range).",
        Kind::Counter,
    ),
    ("clients", "Peers connected now (tcp).", Kind::Gauge),
    ("connections_total", "Connections accepted (tcp).", Kind::Counter),
    ("slow_disconnects_total", "Clients dropped for being slow (tcp).", Kind::Counter),
    (
        "transport_packets_total",
        "Packets handed to the network (tcp counts each client).",
        Kind::Counter,
    ),
    ("send_syscalls_total", "Send system calls.", Kind::Counter),
    ("cpu_user_ns_total", "User CPU time, ns.", Kind::Counter),
    ("cpu_sys_ns_total", "System CPU time, ns.", Kind::Counter),
    ("idle_spins_total", "Loop polls that spun (zero timeout).", Kind::Counter),
    ("idle_blocks_total", "Loop polls allowed to block.", Kind::Counter),
    ("login_timeouts_total", "Connections closed for not logging in in time (tcp).", Kind::Counter),
    ("idle_timeouts_total", "Connections closed for being idle (tcp).", Kind::Counter),
    ("refused_per_host_total", "Connections refused: per-host limit (tcp).", Kind::Counter),
    ("refused_full_total", "Connections refused: server full (tcp).", Kind::Counter),
    ("queued_bytes", "Bytes queued over all connections now (tcp).", Kind::Gauge),
    ("peak_queued_bytes", "Most bytes ever queued over all connections (tcp).", Kind::Gauge),
];

fn publish_metrics(
    m: &Metrics,
    core: &Core,
    transport: &dyn Publisher,
    cpu: tickwire_transports::affinity::CpuTimes,
    idler: &Idler,
) {
    let st = core.stats();
    let ts = transport.stats();
    let values: [u64; SERVER_METRICS.len()] = [
        st.messages,
        st.packets,
        st.heartbeats,
        st.requests,
        st.nacks,
        st.nack_rejects,
        st.retransmitted_messages,
        st.snapshots_served,
        st.malformed + ts.malformed,
        st.wrong_epoch + st.out_of_range + st.rate_limited + st.duplicates,
        ts.connected,
        ts.connections,
        ts.slow_disconnects,
        ts.packets_sent,
        ts.syscalls,
        cpu.user.as_nanos() as u64,
        cpu.sys.as_nanos() as u64,
        idler.stats().spins,
        idler.stats().blocks,
        ts.login_timeouts,
        ts.idle_timeouts,
        ts.refused_per_host,
        ts.refused_full,
        ts.queued_bytes,
        ts.peak_queued_bytes,
    ];
    for (i, v) in values.into_iter().enumerate() {
        m.set(i, v);
    }
}

/// The progress line, every `every`.
#[derive(Debug)]
struct Progress {
    every: Option<Duration>,
    last: Instant,
    last_msgs: u64,
}

impl Progress {
    fn deadline(&self) -> Option<Instant> {
        self.every.map(|e| self.last + e)
    }

    fn maybe_print(&mut self, now: Instant, core: &Core, transport: &dyn Publisher) {
        if self.deadline().is_none_or(|d| now < d) {
            return;
        }
        let st = core.stats();
        let ts = transport.stats();
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        eprintln!(
            "server: {:>10} msgs {:>9.0} msg/s | {} pkts | clients {} | requests {} retransmitted {} snapshots {} | malformed {}",
            st.messages,
            (st.messages - self.last_msgs) as f64 / secs,
            st.packets,
            ts.connected,
            st.requests,
            st.retransmitted_messages,
            st.snapshots_served,
            st.malformed + ts.malformed,
        );
        self.last = now;
        self.last_msgs = st.messages;
    }
}

/// True once `stop` is set after the session ended (a second Ctrl-C).
fn stop_twice(stop: &AtomicBool, seen: &mut bool) -> bool {
    *seen |= stop.load(Ordering::Relaxed);
    *seen
}
