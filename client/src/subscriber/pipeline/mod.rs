//! The pipelined mode of a [`Subscriber`](super::Subscriber): receive threads
//! that own the transport and hand batches of packets, in buffers from their
//! own pools, over a lock-free queue to the thread that polls the subscriber.
//!
//! ```text
//!  receive thread, line A           receive thread, line B (A/B multicast)
//!  ┌──────────────────────────┐     ┌──────────────────────────┐
//!  │ transport.poll ──copy──▶ │     │ transport.poll ──copy──▶ │
//!  │ batch (PoolBuf from the  │     │ batch (PoolBuf from the  │
//!  │ thread's own Pool)       │     │ thread's own Pool)       │
//!  │        ▲  send_request   │     │        ▲                 │
//!  └────────┼──────┬──────────┘     └────────┼─────┬───────────┘
//!     cmds  │      │ items: ArrayQueue<Item> │     │
//!  (requests│      ▼                         │     ▼
//!  reconnect)  ┌───────────────────────────────────────────┐
//!           └──│ processing thread: Subscriber::poll:      │
//!              │ recovery, cache, latency, callbacks;      │
//!              │ dropping a batch returns it to its pool   │
//!              └───────────────────────────────────────────┘
//! ```
//!
//! [`Pipelined`] is a [`tickwire_transports::Subscriber`] like any other: the
//! subscriber's loop is the same in both modes. Each receive thread builds its
//! transport itself (transports are not `Send`), polls it, and appends every
//! packet to the batch it is filling: a record of [`RECORD_HEADER`] bytes
//! (line, length, kernel receive stamp) then the packet. A batch is handed
//! over when the transport's poll returns, or earlier when it is full, so a
//! packet never waits for the next one. Connections won and lost travel in
//! the same queue, in order with the packets.
//!
//! Requests (NACKs, snapshot requests, Logins) go the other way, in buffers
//! from the processing thread's pool, to the thread of line A, which owns the
//! request socket. While the feed is silent that thread waits on the
//! transport at most [`REQUEST_WAIT`], which bounds how long a request waits
//! to be sent; while packets arrive it is sent at the next packet.
//!
//! Back-pressure: a receive thread with no free buffer stops reading until
//! the processing thread returns one (counted in
//! [`PipelineStats::buffer_waits`]); TCP then pushes back on the server, and
//! a datagram feed's socket buffer absorbs the burst or drops, and the loss
//! is recovered like any other.
//!
//! Latency: a packet's "app rx" stamp (T3) is taken when the processing
//! thread takes it, so the hand-over is counted in "kernel rx → app rx", and
//! tick-to-cache includes it.
//!
//! Every buffer and both queues are allocated when the pipeline starts; the
//! steady state allocates nothing (`tests/subscriber_alloc.rs` counts it on
//! every thread).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use tickwire_core::Line;
use tickwire_core::pool::{Pool, PoolBuf};
use tickwire_core::wire::MAX_PACKET_LEN;
use tickwire_transports::idle::{IdleStrategy, Idler};
use tickwire_transports::select::{TransportKind, TransportOptions, build_subscriber};
use tickwire_transports::{DisconnectReason, OnSubEvent, SubEvent, SubStats};

mod receive;

use receive::{Batcher, ReceiveThread, Records};

/// Bytes before each packet in a batch: line (1), padding (3), length (4),
/// kernel receive stamp (8, `u64::MAX` for none).
pub const RECORD_HEADER: usize = 16;

/// Size of a batch buffer: a full read of the TCP transport fits in a few,
/// and the largest packet always fits in one.
pub const BATCH_LEN: usize = RECORD_HEADER + MAX_PACKET_LEN;

/// Batch buffers in each receive thread's pool (4 MiB of 64 KiB buffers at
/// the default size): enough to ride out a stall of the processing thread
/// of several milliseconds at full rate.
pub const BATCHES_PER_THREAD: usize = 64;

/// Request buffers in the processing thread's pool: one NACK burst's worth.
const REQUEST_BUFFERS: usize = 256;

/// Longest wait of a receive thread on its transport: the most a request
/// waits to be sent while the feed is silent.
pub const REQUEST_WAIT: Duration = Duration::from_micros(250);

/// Batches one [`Pipelined::poll`] hands over at most, so the subscriber's
/// timers run between them.
const MAX_BATCHES_PER_POLL: usize = 64;

/// Hook run first on every receive thread the pipeline starts (pinning,
/// priorities, thread-local instrumentation).
pub type ThreadHook = Arc<dyn Fn(Line) + Send + Sync>;

/// Counters of the pipeline, summed over its receive threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PipelineStats {
    /// Receive threads (one per feed line).
    pub threads: u64,
    /// Batches handed to the processing thread.
    pub batches: u64,
    /// Packets handed over in them.
    pub packets: u64,
    /// Times a receive thread found its pool empty and had to wait for the
    /// processing thread to return a buffer (once per wait, however long).
    pub buffer_waits: u64,
    /// Times a receive thread woke the parked processing thread.
    pub wakeups: u64,
    /// Requests the receive thread failed to send (each is retried by the
    /// receiver's timers).
    pub request_errors: u64,
}

/// What a receive thread hands over.
enum Item {
    Batch(PoolBuf),
    Connected,
    Disconnected(DisconnectReason),
    Error(io::Error),
}

/// What the processing thread asks of the thread of line A.
enum Cmd {
    Request(PoolBuf),
    Reconnect,
}

/// Counters one receive thread keeps, read by the processing thread.
#[derive(Default)]
struct ThreadCounters {
    batches: AtomicU64,
    packets: AtomicU64,
    buffer_waits: AtomicU64,
    wakeups: AtomicU64,
    request_errors: AtomicU64,
}

/// What the processing thread and the receive threads share.
struct Shared {
    items: ArrayQueue<Item>,
    cmds: ArrayQueue<Cmd>,
    stop: AtomicBool,
    /// The processing thread is parked (or about to be) waiting for items.
    sleeping: AtomicBool,
    consumer: Thread,
    /// Each receive thread's transport counters, as of its last poll.
    stats: Vec<Mutex<SubStats>>,
    counters: Vec<ThreadCounters>,
}

impl Shared {
    /// Hand `item` over (waiting while the queue is full, which only a burst
    /// of connection events can cause) and wake the processing thread if it
    /// is parked. False if the pipeline is stopping.
    fn hand_over(&self, mut item: Item, counters: &ThreadCounters) -> bool {
        loop {
            match self.items.push(item) {
                Ok(()) => break,
                Err(back) if !self.stop.load(Ordering::Relaxed) => {
                    item = back;
                    thread::yield_now();
                }
                Err(_) => return false,
            }
        }
        // Pairs with the processing thread's store of `sleeping` then check of
        // the queue (both SeqCst): either it sees the item, or this sees it
        // asleep and unparks it (an unpark before its park is not lost).
        if self.sleeping.load(Ordering::SeqCst) && self.sleeping.swap(false, Ordering::SeqCst) {
            counters.wakeups.fetch_add(1, Ordering::Relaxed);
            self.consumer.unpark();
        }
        true
    }
}

/// The transports of the receive threads: one per feed line. An A/B
/// multicast feed gets one per group (line B's packets relabelled); line A's
/// also owns the request socket.
fn line_transports(opts: &TransportOptions) -> Vec<(Line, TransportOptions)> {
    match (opts.kind, opts.group_b) {
        (TransportKind::Multicast, Some(group_b)) => {
            let a = TransportOptions { group_b: None, ..opts.clone() };
            let mut b = TransportOptions { group_a: group_b, group_b: None, ..opts.clone() };
            // Each line's injected loss draws from its own sequence, as two
            // real networks would lose different packets.
            b.loss.seed = b.loss.seed.wrapping_add(1);
            vec![(Line::A, a), (Line::B, b)]
        }
        _ => vec![(Line::A, opts.clone())],
    }
}

/// The pipelined transport: see the module docs.
pub struct Pipelined {
    shared: Arc<Shared>,
    requests: Pool,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Pipelined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelined")
            .field("threads", &self.threads.len())
            .field("stats", &self.pipeline_stats())
            .finish_non_exhaustive()
    }
}

impl Pipelined {
    /// Start one receive thread per feed line, each building its transport
    /// from `opts`; returns once every transport is up, or with the first
    /// error (after stopping the threads already started). The calling
    /// thread is the processing thread: it is the one woken when batches
    /// arrive.
    pub fn start(
        opts: &TransportOptions,
        idle: IdleStrategy,
        hook: Option<ThreadHook>,
    ) -> io::Result<Pipelined> {
        let lines = line_transports(opts);
        let n = lines.len();
        let shared = Arc::new(Shared {
            // Every batch buffer can be queued at once, plus connection events.
            items: ArrayQueue::new(n * BATCHES_PER_THREAD + 64),
            cmds: ArrayQueue::new(REQUEST_BUFFERS + 16),
            stop: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            consumer: thread::current(),
            stats: (0..n).map(|_| Mutex::new(SubStats::default())).collect(),
            counters: (0..n).map(|_| ThreadCounters::default()).collect(),
        });
        let mut pipelined = Pipelined {
            shared: Arc::clone(&shared),
            requests: Pool::new(MAX_PACKET_LEN, REQUEST_BUFFERS),
            threads: Vec::with_capacity(n),
        };
        let (up_tx, up_rx) = mpsc::channel::<io::Result<()>>();
        for (k, (line, opts)) in lines.into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let up = up_tx.clone();
            let hook = hook.clone();
            let name = format!("tickwire-rx-{}", if line == Line::B { 'b' } else { 'a' });
            let handle = thread::Builder::new().name(name).spawn(move || {
                if let Some(h) = hook {
                    h(line);
                }
                if let Err(e) = tickwire_transports::wait::set_min_timer_slack() {
                    eprintln!(
                        "client: cannot lower the receive thread's timer slack ({e}): requests may wait 50 µs longer"
                    );
                }
                let transport = match build_subscriber(&opts) {
                    Ok(t) => {
                        let _ = up.send(Ok(()));
                        t
                    }
                    Err(e) => {
                        let _ = up.send(Err(e));
                        return;
                    }
                };
                ReceiveThread {
                    transport,
                    owns_requests: k == 0,
                    idler: Idler::new(idle),
                    batcher: Batcher {
                        relabel: line,
                        pool: Pool::new(BATCH_LEN, BATCHES_PER_THREAD),
                        shared,
                        index: k,
                        batch: None,
                        misses: 0,
                    },
                }
                .run();
            })?;
            pipelined.threads.push(handle);
        }
        drop(up_tx);
        for _ in 0..n {
            match up_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping `pipelined` stops and joins the threads started.
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(io::Error::other("a receive thread died while starting")),
            }
        }
        Ok(pipelined)
    }

    /// A handle that reads the pipeline's counters.
    pub fn probe(&self) -> PipelineProbe {
        PipelineProbe(Arc::clone(&self.shared))
    }

    /// The pipeline's counters, summed over its receive threads.
    pub fn pipeline_stats(&self) -> PipelineStats {
        self.probe().stats()
    }

    /// Hand one item's events to `on_event`; the batch's buffer goes home
    /// when it is dropped here.
    fn deliver(item: Item, on_event: OnSubEvent<'_>) -> io::Result<()> {
        match item {
            Item::Batch(buf) => {
                for (line, packet, kernel_rx_ns) in Records(&buf) {
                    on_event(SubEvent::Packet { line, packet, kernel_rx_ns });
                }
            }
            Item::Connected => on_event(SubEvent::Connected),
            Item::Disconnected(reason) => on_event(SubEvent::Disconnected(reason)),
            Item::Error(e) => return Err(e),
        }
        Ok(())
    }
}

/// Reads a [`Pipelined`]'s counters from the subscriber that owns it boxed.
#[derive(Clone)]
pub struct PipelineProbe(Arc<Shared>);

impl std::fmt::Debug for PipelineProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.stats().fmt(f)
    }
}

impl PipelineProbe {
    /// The pipeline's counters, summed over its receive threads.
    pub fn stats(&self) -> PipelineStats {
        let mut s = PipelineStats { threads: self.0.counters.len() as u64, ..Default::default() };
        for c in &self.0.counters {
            s.batches += c.batches.load(Ordering::Relaxed);
            s.packets += c.packets.load(Ordering::Relaxed);
            s.buffer_waits += c.buffer_waits.load(Ordering::Relaxed);
            s.wakeups += c.wakeups.load(Ordering::Relaxed);
            s.request_errors += c.request_errors.load(Ordering::Relaxed);
        }
        s
    }
}

impl Drop for Pipelined {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl tickwire_transports::Subscriber for Pipelined {
    /// Queue the request for the thread of line A, which sends it at its
    /// next turn (within [`REQUEST_WAIT`]). Its own send errors are printed
    /// and counted there.
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        let mut buf = self.requests.get().ok_or_else(|| {
            io::Error::new(io::ErrorKind::WouldBlock, "request dropped: request queue full")
        })?;
        let Some(dst) = buf.as_mut_full().get_mut(..packet.len()) else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "request too large"));
        };
        dst.copy_from_slice(packet);
        buf.set_len(packet.len());
        self.shared.cmds.push(Cmd::Request(buf)).map_err(|_| {
            io::Error::new(io::ErrorKind::WouldBlock, "request dropped: request queue full")
        })
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        let shared = &*self.shared;
        let mut handed = 0;
        let mut deadline = None;
        loop {
            while handed < MAX_BATCHES_PER_POLL {
                let Some(item) = shared.items.pop() else { break };
                handed += 1;
                Self::deliver(item, on_event)?;
            }
            if handed > 0 || timeout == Some(Duration::ZERO) {
                return Ok(());
            }
            let now = std::time::Instant::now();
            let until = *deadline.get_or_insert_with(|| timeout.map(|t| now + t));
            let left = match until {
                Some(u) if u <= now => return Ok(()),
                Some(u) => Some(u - now),
                None => None,
            };
            shared.sleeping.store(true, Ordering::SeqCst);
            if shared.items.is_empty() {
                match left {
                    Some(d) => thread::park_timeout(d),
                    None => thread::park(),
                }
            }
            shared.sleeping.store(false, Ordering::SeqCst);
        }
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.shared
            .cmds
            .push(Cmd::Reconnect)
            .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "reconnect not queued"))
    }

    fn stats(&self) -> SubStats {
        let mut total = SubStats::default();
        for s in &self.shared.stats {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            total.packets_received += s.packets_received;
            total.bytes_received += s.bytes_received;
            total.syscalls += s.syscalls;
            total.requests_sent += s.requests_sent;
            total.malformed += s.malformed;
            total.connects += s.connects;
            total.wrong_source += s.wrong_source;
            total.auth_rejected += s.auth_rejected;
            total.gro |= s.gro;
            total.gro_merged += s.gro_merged;
        }
        total
    }
}
