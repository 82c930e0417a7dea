//! [`ServerConfig`] (what the binary's flags map onto) and [`Summary`] (what
//! the server did).

use std::time::Duration;

use serde::Serialize;
use tickwire_core::gbm::GbmConfig;
use tickwire_core::publisher::{DEFAULT_GROUP_RATE_BYTES_PER_SEC, RepairMode};
use tickwire_transports::idle::IdleStrategy;
use tickwire_transports::select::{TcpLimits, TransportKind, TransportOptions};

/// Server configuration (the binary maps its flags onto this).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Transport and addresses.
    pub transport: TransportOptions,
    /// Generator settings (seed, symbols...) of [`run`](crate::run); not used by
    /// [`publish`](crate::publish), whose source names its own universe.
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
    /// How validated NACKs and snapshot requests are answered: once on the
    /// feed's group (multicast, the default; only where the transport can
    /// send to its group, else unicast) or per requester (unicast).
    pub repair: RepairMode,
    /// Bytes per second multicast repairs may take, for the whole group
    /// (`--repair-budget`).
    pub repair_budget: u64,
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
                udp_offload: true,
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
            repair: RepairMode::Multicast,
            repair_budget: DEFAULT_GROUP_RATE_BYTES_PER_SEC,
        }
    }
}

/// What the server did, printed at exit (and as JSON with `--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// With `--replay`: what the capture held and what was replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay: Option<crate::replay::ReplayReport>,
    /// Transport used.
    pub transport: String,
    /// Session epoch.
    pub epoch: u64,
    /// Messages published.
    pub messages: u64,
    /// Live packets published: Data, Heartbeat and EndOfSession (repeats included).
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
    /// Multicast: UDP GSO in use at the end of the run (runs of full packets
    /// leave in one `sendmsg`; false where the kernel or interface refused it).
    pub gso: bool,
    /// Multicast: GSO sends (each carried 2 or more datagrams).
    pub gso_sends: u64,
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
    /// How requests were answered: `multicast` (repairs once on the group)
    /// or `unicast`.
    pub repair: String,
    /// NACKs answered by a multicast repair (of some of their range).
    pub multicast_repairs: u64,
    /// NACKs whose range had just been repaired on the group (nothing sent).
    pub multicast_repairs_joined: u64,
    /// NACKs trimmed, in part or whole, against recent multicast repairs.
    pub repair_coalesced: u64,
    /// Messages sent on the group as repairs (also in `retransmitted_messages`).
    pub repair_messages_multicast: u64,
    /// Bytes sent on the group by the repair service (notices, retransmissions, snapshots).
    pub repair_bytes_multicast: u64,
    /// RepairNotice packets sent on the group.
    pub ncf_sent: u64,
    /// Multicast repairs the group budget refused (served by unicast instead).
    pub repair_budget_refused: u64,
    /// Snapshots sent on the group (also in `snapshots`).
    pub multicast_snapshots: u64,
    /// Snapshot requests that joined a multicast snapshot already waiting.
    pub snapshot_requests_joined: u64,
}
