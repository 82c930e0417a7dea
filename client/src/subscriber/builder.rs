//! [`SubscriberBuilder`]: how a [`Subscriber`] is set up.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::rc::Rc;
use std::time::Duration;

use tickwire_core::cache;
use tickwire_core::gbm::{GbmConfig, GbmError};
use tickwire_core::latency::{Latency, TickToCache};
use tickwire_core::recovery::{Mode, Order, Receiver, ReceiverConfig};
use tickwire_core::{Instant, Line, SymbolId};
use tickwire_transports::affinity::cpu_times;
use tickwire_transports::backoff::Backoff;
use tickwire_transports::idle::{IdleStrategy, Idler};
use tickwire_transports::lossy::{LossConfig, Lossy};
use tickwire_transports::pcap::{Pcap, RecordConfig, Recorder};
use tickwire_transports::select::{TransportKind, TransportOptions, build_subscriber};

use super::pipeline::{PipelineProbe, Pipelined, ThreadHook};
use super::state::State;
use super::{APPLIED_CAPACITY, EVENT_QUEUE_CAPACITY, Peer, Subscriber, Threading};
use crate::verify::Verifier;

/// The capture writer, shared by the [`Pcap`] wrapper and the [`Subscriber`]
/// that finishes it.
type SharedRecorder = Rc<RefCell<Recorder>>;

/// Why [`SubscriberBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The transport could not be set up (socket, bind, group join, connect).
    #[error("starting the {kind} transport towards {addr}")]
    Transport {
        /// Which transport.
        kind: TransportKind,
        /// The address it was set up towards.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The verification stream cannot be generated for this universe.
    #[error("cannot regenerate the seed's stream to verify against")]
    Verify(#[from] GbmError),
}

/// How a [`Subscriber`] is set up; start from [`Subscriber::builder`].
///
/// Defaults: TCP to `127.0.0.1:9000`, a universe of 1000 symbols, every
/// symbol, the core's default recovery settings, the `auto` idle strategy,
/// no time limit, and the subscription ends with the server's session.
///
/// ```no_run
/// use tickwire_client::Subscriber;
/// let mut sub = Subscriber::builder()
///     .tcp("127.0.0.1:9000".parse().unwrap())
///     .universe(1000)
///     .symbols([3, 4])
///     .build()
///     .unwrap();
/// let cache = sub.cache(); // read it from any thread
/// # let _ = cache;
/// ```
#[derive(Clone)]
pub struct SubscriberBuilder {
    transport: TransportOptions,
    universe: u32,
    filter: Option<Vec<SymbolId>>,
    recovery: ReceiverConfig,
    idle: IdleStrategy,
    verify_seed: Option<u64>,
    duration: Option<Duration>,
    exit_on_end: bool,
    threading: Threading,
    hook: Option<ThreadHook>,
    record: Option<(std::path::PathBuf, Option<u64>)>,
}

impl std::fmt::Debug for SubscriberBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubscriberBuilder")
            .field("transport", &self.transport)
            .field("universe", &self.universe)
            .field("filter", &self.filter)
            .field("recovery", &self.recovery)
            .field("idle", &self.idle)
            .field("verify_seed", &self.verify_seed)
            .field("duration", &self.duration)
            .field("exit_on_end", &self.exit_on_end)
            .field("threading", &self.threading)
            .field("receive_thread_hook", &self.hook.is_some())
            .field("record", &self.record)
            .finish()
    }
}

impl Default for SubscriberBuilder {
    fn default() -> Self {
        SubscriberBuilder {
            transport: TransportOptions {
                kind: TransportKind::Tcp,
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 9000)),
                group_a: SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 30001),
                group_b: None,
                interface: Ipv4Addr::LOCALHOST,
                ifname: None,
                ttl: 1,
                max_packet_len: tickwire_core::wire::DEFAULT_MAX_PACKET,
                loss: LossConfig { tx_drop: 0.0, rx_drop: 0.0, seed: 0 },
                source: None,
                auth_key: None,
                udp_offload: true,
            },
            universe: 1000,
            filter: None,
            recovery: ReceiverConfig::default(),
            idle: IdleStrategy::default(),
            verify_seed: None,
            duration: None,
            exit_on_end: true,
            threading: Threading::default(),
            hook: None,
            record: None,
        }
    }
}

impl SubscriberBuilder {
    /// Every transport option at once (the `client` binary maps its flags
    /// onto them): kind, addresses, groups, interface, packet size, loss
    /// injection, MAC key.
    pub fn transport(mut self, opts: TransportOptions) -> Self {
        self.transport = opts;
        self
    }

    /// TCP to the server at `addr` (resume from the next sequence on reconnect).
    pub fn tcp(mut self, addr: SocketAddr) -> Self {
        self.transport.kind = TransportKind::Tcp;
        self.transport.addr = addr;
        self
    }

    /// UDP multicast: the feed on `group`, recovery (NACK, snapshot) from the
    /// server's unicast service at `recovery`. The interface is loopback
    /// unless [`Self::transport`] says otherwise.
    pub fn multicast(mut self, recovery: SocketAddr, group: SocketAddrV4) -> Self {
        self.transport.kind = TransportKind::Multicast;
        self.transport.addr = recovery;
        self.transport.group_a = group;
        self
    }

    /// Size of the server's symbol universe: the cache has one slot per symbol.
    pub fn universe(mut self, symbols: u32) -> Self {
        self.universe = symbols;
        self
    }

    /// Subscribe to these symbols only: only they reach the cache and the
    /// callbacks (the receiver still recovers the whole sequenced stream).
    /// Symbols outside the universe are ignored. Default: every symbol.
    pub fn symbols(mut self, symbols: impl IntoIterator<Item = SymbolId>) -> Self {
        self.filter = Some(symbols.into_iter().collect());
        self
    }

    /// Recovery settings (NACK delays and retries, buffer bounds, snapshot
    /// timeouts...). Its `mode` is replaced by the transport's (stream for
    /// TCP, datagram otherwise).
    pub fn recovery(mut self, cfg: ReceiverConfig) -> Self {
        self.recovery = cfg;
        self
    }

    /// Delivery order: feed order ([`Order::Strict`], the default) or
    /// per-symbol order ([`Order::PerSymbol`]: a lost packet holds back only
    /// its own symbols; the cache marks them stale meanwhile, see
    /// [`CacheReader::freshness`](tickwire_core::cache::CacheReader::freshness)).
    pub fn order(mut self, order: Order) -> Self {
        self.recovery.order = order;
        self
    }

    /// Seed of the recovery RNG (NACK jitter, Probe nonces): draw it from the
    /// OS on a real feed, so the nonces cannot be guessed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.recovery.seed = seed;
        self
    }

    /// How [`Subscriber::poll`] waits when there is nothing to do.
    pub fn idle(mut self, idle: IdleStrategy) -> Self {
        self.idle = idle;
        self
    }

    /// Check every delivered message and snapshot record against the stream
    /// the server generates from `seed` (its `--seed`; GBM servers only).
    /// The outcome is in [`Subscriber::summary`].
    pub fn verify(mut self, seed: Option<u64>) -> Self {
        self.verify_seed = seed;
        self
    }

    /// End the subscription ([`Subscriber::is_done`]) after this long.
    pub fn duration(mut self, limit: Option<Duration>) -> Self {
        self.duration = limit;
        self
    }

    /// End the subscription once the server's end of session is seen and
    /// everything before it delivered (default true; false keeps listening,
    /// e.g. for the next session of a restarted server).
    pub fn exit_on_end(mut self, exit: bool) -> Self {
        self.exit_on_end = exit;
        self
    }

    /// One thread, or receive threads handing packets to the polling thread
    /// (see [`Threading`]). Default: [`Threading::Single`].
    pub fn threading(mut self, threading: Threading) -> Self {
        self.threading = threading;
        self
    }

    /// Run `hook` first on every receive thread of a [`Threading::Pipeline`]
    /// subscriber, with the feed line it serves: to pin it to a CPU, raise
    /// its priority, or instrument it.
    pub fn on_receive_thread_start(mut self, hook: impl Fn(Line) + Send + Sync + 'static) -> Self {
        self.hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Record every packet the transport receives, as received, with its
    /// kernel receive stamp, in the pcapng file `path` (Ethernet/IPv4/UDP
    /// frames: see [`tickwire_transports::pcap`]), starting a new file
    /// (`cap.1.pcapng`, ...) whenever one reaches `rotate_bytes`. The copy is
    /// handed to a writer thread without blocking; packets the disk cannot
    /// take are dropped from the capture only, and counted
    /// ([`crate::Summary::record`]).
    pub fn record(
        mut self,
        path: impl Into<std::path::PathBuf>,
        rotate_bytes: Option<u64>,
    ) -> Self {
        self.record = Some((path.into(), rotate_bytes));
        self
    }

    /// The transport options as set so far.
    pub fn transport_options(&self) -> &TransportOptions {
        &self.transport
    }

    /// Bring the transport up (socket bound, group joined, connection
    /// started; with [`Threading::Pipeline`], on its receive threads) and
    /// allocate everything the loop needs.
    pub fn build(self) -> Result<Subscriber, BuildError> {
        let opts = &self.transport;
        let error = |source| BuildError::Transport { kind: opts.kind, addr: opts.addr, source };
        // A capture holds what the socket received: the injected loss goes
        // around the recorder, not under it.
        let mut inner_opts = opts.clone();
        if self.record.is_some() {
            inner_opts.loss = LossConfig { tx_drop: 0.0, rx_drop: 0.0, seed: opts.loss.seed };
        }
        let (transport, probe): (Box<dyn tickwire_transports::Subscriber>, _) = match self.threading
        {
            Threading::Single => (build_subscriber(&inner_opts).map_err(error)?, None),
            Threading::Pipeline => {
                let p =
                    Pipelined::start(&inner_opts, self.idle, self.hook.clone()).map_err(error)?;
                let probe = p.probe();
                (Box::new(p), Some(probe))
            }
        };
        let (mut transport, recorder) = self.wrap_recording(transport).map_err(error)?;
        if recorder.is_some() && (opts.loss.tx_drop > 0.0 || opts.loss.rx_drop > 0.0) {
            transport = Box::new(Lossy::new(transport, opts.loss));
        }
        let mode = match opts.kind {
            TransportKind::Tcp => Mode::Stream,
            TransportKind::Multicast | TransportKind::Xdp => Mode::Datagram,
        };
        let peer = Peer {
            kind: opts.kind.to_string(),
            addr: opts.addr.to_string(),
            hint: opts.silence_hint(),
        };
        self.finish(transport, mode, peer, probe, recorder)
    }

    /// With [`Self::record`]: start the recorder and wrap `transport` in it.
    fn wrap_recording(
        &self,
        transport: Box<dyn tickwire_transports::Subscriber>,
    ) -> io::Result<(Box<dyn tickwire_transports::Subscriber>, Option<SharedRecorder>)> {
        let Some((path, rotate_bytes)) = &self.record else {
            return Ok((transport, None));
        };
        let opts = &self.transport;
        let v4 = |a: SocketAddr| match a {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, a.port()),
        };
        let server = v4(opts.addr);
        let (dest_a, dest_b) = match opts.kind {
            // A stream's packets are framed as datagrams to the client's side.
            TransportKind::Tcp => {
                let me = SocketAddrV4::new(opts.interface, server.port());
                (me, me)
            }
            TransportKind::Multicast | TransportKind::Xdp => {
                (opts.group_a, opts.group_b.unwrap_or(opts.group_a))
            }
        };
        let recorder = Recorder::start(RecordConfig {
            path: path.clone(),
            rotate_bytes: *rotate_bytes,
            source: server,
            dest_a,
            dest_b,
        })?;
        let shared = Rc::new(RefCell::new(recorder));
        Ok((Box::new(Pcap::new(transport, shared.clone())), Some(shared)))
    }

    /// Use `transport`, any [`tickwire_transports::Subscriber`] (a custom
    /// one, or a wrapper around a built-in one), instead of building one from
    /// the transport options. It runs on the polling thread whatever
    /// [`Self::threading`] says (a transport need not be `Send`). `mode` says whether it is a stream (resume by
    /// Login on each connection) or a datagram feed (NACKs and snapshots to a
    /// recovery service).
    pub fn build_with(
        self,
        transport: Box<dyn tickwire_transports::Subscriber>,
        mode: Mode,
    ) -> Result<Subscriber, BuildError> {
        let peer = Peer { kind: "custom".into(), addr: "the server".into(), hint: "" };
        let error = |source| BuildError::Transport {
            kind: self.transport.kind,
            addr: self.transport.addr,
            source,
        };
        let (transport, recorder) = self.wrap_recording(transport).map_err(error)?;
        self.finish(transport, mode, peer, None, recorder)
    }

    fn finish(
        self,
        transport: Box<dyn tickwire_transports::Subscriber>,
        mode: Mode,
        peer: Peer,
        pipeline: Option<PipelineProbe>,
        recorder: Option<SharedRecorder>,
    ) -> Result<Subscriber, BuildError> {
        let verifier = match self.verify_seed {
            Some(seed) => Some(Verifier::with_order(
                GbmConfig { seed, symbols: self.universe, ..GbmConfig::default() },
                self.recovery.order,
            )?),
            None => None,
        };
        let filter = self.filter.as_ref().map(|syms| {
            let mut f = vec![false; self.universe as usize];
            for &s in syms {
                if let Some(x) = f.get_mut(s as usize) {
                    *x = true;
                }
            }
            f
        });
        let (writer, reader) = cache::new(self.universe);
        let start = std::time::Instant::now();
        let st = State {
            receiver: Receiver::new(ReceiverConfig { mode, ..self.recovery }),
            writer,
            latency: Latency::new(),
            timing: TickToCache::default(),
            applied: Vec::with_capacity(APPLIED_CAPACITY),
            verifier,
            filter,
            activity: vec![0; self.universe as usize],
            end: None,
            reconnect_due: false,
            wall_at_start: super::wall_ns(),
        };
        Ok(Subscriber {
            transport,
            st,
            reader,
            peer,
            idle: self.idle,
            idler: Idler::new(self.idle),
            // Reconnects wait for the receiver's timer and for this gate, which
            // only a session that lasted resets (a Login alone does not: see backoff).
            backoff: Backoff::new(u64::from(std::process::id())),
            req: vec![0u8; tickwire_core::wire::MAX_PACKET_LEN],
            start,
            cpu_start: cpu_times(),
            last_packet: Instant::ZERO,
            stalled: false,
            slack_set: false,
            duration: self.duration,
            exit_on_end: self.exit_on_end,
            queue: VecDeque::with_capacity(EVENT_QUEUE_CAPACITY),
            pipeline,
            recorder,
            record_path: self.record.map(|(p, _)| p),
            flow: Default::default(),
        })
    }
}
