//! # tickwire-server
//!
//! The exchange simulator and publisher: a GBM generator feeds the sans-IO
//! [`tickwire_core::publisher::Publisher`] (sequencer, framer, retransmit
//! store, snapshot state, request service), whose packets go out over any
//! [`tickwire_transports::Publisher`]. The run loop, in order, each iteration:
//!
//! 1. generate the messages due by the rate and push them; publish every sealed packet;
//! 2. seal the open packet when the generator has caught up (low latency when idle);
//! 3. poll the transport (accept, read requests, write queues) and answer requests;
//! 4. fire the publisher's timers (heartbeats) and publish what they produced;
//! 5. wait according to the idle strategy, at most until the next message is due.
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
use tickwire_core::gbm::{GbmConfig, Generator};
use tickwire_core::publisher::{Publisher as Core, PublisherConfig, RequestOutcome};
use tickwire_core::{Instant, Message};
use tickwire_transports::affinity::{cpu_time, pin_to_cpu};
use tickwire_transports::idle::{IdleStrategy, Idler};
use tickwire_transports::select::{TransportKind, TransportOptions, build_publisher};
use tickwire_transports::{DisconnectReason, PeerId, PubEvent, Publisher};

/// Largest number of messages generated per loop iteration, so requests and
/// socket writes are served between bursts even at `--rate 0`.
const MAX_BATCH: u64 = 512;

/// Default pacing window: at a fixed `--rate` the loop sleeps at least this
/// long between bursts and generates every message due in one go. Without it
/// the loop would wake for every single message (5 µs apart at 200k/s) and send
/// one-message packets, paying a syscall per message; with 100 µs a packet
/// holds ~20 messages at 200k/s, and the added delay stays far below a
/// network round trip. `--batch-window 0` wakes per message.
pub const DEFAULT_BATCH_WINDOW: Duration = Duration::from_micros(100);

/// How often the end-of-session packet is repeated while lingering, so a
/// client that lost it over a datagram transport still learns the final sequence.
const EOS_REPEAT: Duration = Duration::from_millis(100);

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
    /// At a fixed rate, the least time between two generated bursts.
    pub batch_window: Duration,
    /// Write the final book (the state every client must converge to) here.
    pub book_out: Option<std::path::PathBuf>,
    /// Once listening, write the bound address here (for `--listen 127.0.0.1:0`).
    pub ready_file: Option<std::path::PathBuf>,
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
                max_packet_len: tickwire_core::wire::DEFAULT_MAX_PACKET,
                loss: tickwire_transports::lossy::LossConfig {
                    tx_drop: 0.0,
                    rx_drop: 0.0,
                    seed: 0,
                },
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
            batch_window: DEFAULT_BATCH_WINDOW,
            book_out: None,
            ready_file: None,
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

/// Run the server until the duration or message limit is reached or `stop` is set.
pub fn run(cfg: &ServerConfig, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    if let Some(cpu) = cfg.cpu {
        pin_to_cpu(cpu).with_context(|| format!("pinning to CPU {cpu}"))?;
    }
    let mut generator = Generator::new(cfg.gbm.clone()).context("invalid generator settings")?;
    let mut transport = build_publisher(&cfg.transport).with_context(|| {
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
        ..PublisherConfig::new(epoch, cfg.gbm.symbols)
    };
    core_cfg.validate().context("invalid publisher settings")?;
    let mut core = Core::new(core_cfg);
    eprintln!(
        "server: {} transport on {}, epoch {epoch}, {} symbols, seed {}, rate {}",
        cfg.transport.kind,
        bound,
        cfg.gbm.symbols,
        cfg.gbm.seed,
        if cfg.rate == 0 { "max".to_string() } else { format!("{}/s", cfg.rate) }
    );

    let clock = Clock::new();
    let cpu_start = cpu_time();
    let mut idler = Idler::new(cfg.idle);
    let mut inbox = Inbox::default();
    let mut last_stats = clock.now();
    let mut last_stats_msgs = 0u64;
    let mut generating = true;
    let mut gen_elapsed = Duration::ZERO;
    let mut linger_until: Option<Instant> = None;
    let mut last_eos = Instant::ZERO;
    let mut eos_packet: Vec<u8> = Vec::new();
    let mut stop_seen_after_end = false;
    let mut last_burst = Instant::ZERO;

    loop {
        let now = clock.now();
        let mut did_work = false;

        // 1. Generate what is due.
        if generating {
            let elapsed = now.as_nanos();
            let due = if cfg.rate == 0 {
                generator.produced() + MAX_BATCH
            } else {
                (elapsed as u128 * cfg.rate as u128 / 1_000_000_000) as u64
            };
            let limit = cfg.max_messages.unwrap_or(u64::MAX);
            let target = due.min(limit).min(generator.produced() + MAX_BATCH);
            // At a fixed rate, generate in bursts at most once per batch window
            // (a burst that hit MAX_BATCH continues at once).
            let window_open = cfg.rate == 0
                || now.saturating_duration_since(last_burst) >= cfg.batch_window
                || due.min(limit) >= generator.produced() + MAX_BATCH;
            if target > generator.produced() && window_open {
                let wall = wall_ns();
                while generator.produced() < target {
                    let msg: Message = generator.next_message();
                    core.push(now, wall, &msg);
                }
                did_work = true;
                last_burst = now;
            }
            let caught_up = generator.produced() >= due.min(limit);
            if caught_up {
                core.flush(now, wall_ns());
            }
            let out_of_time = cfg.duration.is_some_and(|d| now.as_nanos() >= d.as_nanos() as u64);
            if generator.produced() >= limit || out_of_time || stop.load(Ordering::Relaxed) {
                generating = false;
                if stop.swap(false, Ordering::Relaxed) {
                    eprintln!(
                        "server: interrupted; press Ctrl-C again to skip the recovery linger"
                    );
                }
                gen_elapsed = Duration::from_nanos(now.as_nanos());
                core.end_session(now, wall_ns());
                linger_until = Some(now + cfg.linger);
                eprintln!(
                    "server: session ended after {} messages; serving recovery for {:?}",
                    generator.produced(),
                    cfg.linger
                );
            }
        }
        drain_packets(&mut core, transport.as_mut(), &mut eos_packet)?;
        // Hand the burst to the network before waiting in poll.
        transport.flush()?;

        // 3. Transport I/O and requests.
        let next_due = if generating && cfg.rate > 0 {
            let next_ns = (generator.produced() + 1) as u128 * 1_000_000_000 / cfg.rate as u128;
            let until_next = Duration::from_nanos((next_ns as u64).saturating_sub(now.as_nanos()));
            Some(until_next.max(cfg.batch_window.saturating_sub(now - last_burst)))
        } else if generating {
            Some(Duration::ZERO)
        } else {
            Some(Duration::from_millis(5))
        };
        let timer = core.poll_timeout().map(|t| t.saturating_duration_since(now));
        let wait = [next_due, timer].into_iter().flatten().min();
        let timeout = idler.timeout(wait);
        let mut events = 0usize;
        transport.poll(timeout, &mut |ev| {
            events += 1;
            match ev {
                PubEvent::Connected(_) => {}
                PubEvent::Request { peer, packet } => inbox.push(peer, packet),
                PubEvent::Disconnected { peer, reason } => {
                    if !matches!(reason, DisconnectReason::Closed) {
                        eprintln!("server: dropped peer {peer}: {reason:?}");
                    }
                    inbox.disconnected.push(peer);
                }
            }
        })?;
        did_work |= events > 0;
        for peer in inbox.disconnected.drain(..) {
            core.forget_peer(peer);
        }
        if inbox.used > 0 {
            // Publish everything sealed first, so a TCP catch-up ends exactly where
            // the live stream continues.
            drain_packets(&mut core, transport.as_mut(), &mut eos_packet)?;
            let (now, wall) = (clock.now(), wall_ns());
            for (peer, bytes) in &inbox.requests[..inbox.used] {
                let peer = *peer;
                let mut send_err: Option<io::Error> = None;
                let outcome = core.handle_request(now, wall, peer, bytes, &mut |reply| {
                    if let Err(e) = transport.send_to(peer, reply) {
                        send_err.get_or_insert(e);
                    }
                });
                match outcome {
                    RequestOutcome::LoginAccepted { .. } => transport.set_live(peer, true),
                    RequestOutcome::Ignored(tickwire_core::publisher::IgnoreReason::Malformed(
                        e,
                    )) => {
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

        // 4. Timers.
        let now = clock.now();
        core.handle_timeout(now, wall_ns());
        drain_packets(&mut core, transport.as_mut(), &mut eos_packet)?;
        if !generating
            && now.saturating_duration_since(last_eos) >= EOS_REPEAT
            && !eos_packet.is_empty()
        {
            transport.publish(&eos_packet)?;
            last_eos = now;
        }
        transport.flush()?;
        idler.record(did_work);

        if let Some(every) = cfg.stats_interval
            && now.saturating_duration_since(last_stats) >= every
        {
            let st = core.stats();
            let ts = transport.stats();
            let secs = now.saturating_duration_since(last_stats).as_secs_f64();
            eprintln!(
                "server: {:>10} msgs {:>9.0} msg/s | {} pkts | clients {} | requests {} retransmitted {} snapshots {} | malformed {}",
                st.messages,
                (st.messages - last_stats_msgs) as f64 / secs,
                st.packets,
                ts.connected,
                st.requests,
                st.retransmitted_messages,
                st.snapshots_served,
                st.malformed + ts.malformed,
            );
            last_stats = now;
            last_stats_msgs = st.messages;
        }

        if let Some(until) = linger_until {
            // A second Ctrl-C (stop set again after the session ended) cuts the linger short.
            if now >= until || stop_twice(&stop, &mut stop_seen_after_end) {
                break;
            }
        }
    }
    transport.flush()?;
    if let Some(path) = &cfg.book_out {
        let mut text = String::new();
        core.book().write_text(&mut text).expect("formatting into a String");
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }

    let st = core.stats();
    let ts = transport.stats();
    let cpu = cpu_time().saturating_sub(cpu_start);
    let secs = gen_elapsed.as_secs_f64().max(1e-9);
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
        requests: st.requests,
        nacks: st.nacks,
        nack_rejects: st.nack_rejects,
        retransmitted_messages: st.retransmitted_messages,
        snapshots: st.snapshots_served,
        malformed: st.malformed + ts.malformed,
        ignored_requests: st.wrong_epoch + st.out_of_range + st.rate_limited + st.duplicates,
        transport_packets: ts.packets_sent,
        syscalls: ts.syscalls,
        cpu_s: cpu.as_secs_f64(),
        cpu_ns_per_message: cpu.as_nanos() as f64 / st.messages.max(1) as f64,
    })
}

/// True once `stop` is set after the session ended (a second Ctrl-C).
fn stop_twice(stop: &AtomicBool, seen: &mut bool) -> bool {
    *seen |= stop.load(Ordering::Relaxed);
    *seen
}

/// Hand every packet the core has ready to the transport. Remembers the last
/// end-of-session packet so it can be repeated while lingering.
fn drain_packets(
    core: &mut Core,
    transport: &mut dyn Publisher,
    eos: &mut Vec<u8>,
) -> io::Result<()> {
    // Only after end_session can a packet be the end of session: live packets
    // go out unparsed.
    let ended = core.is_ended();
    while let Some(packet) = core.poll_packet() {
        if ended
            && let Ok(p) = tickwire_core::wire::Packet::new_checked(packet)
            && p.kind() == tickwire_core::wire::PacketKind::EndOfSession
        {
            eos.clear();
            eos.extend_from_slice(packet);
        }
        transport.publish(packet)?;
    }
    Ok(())
}
