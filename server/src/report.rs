//! What the server reports while it runs: the Prometheus metrics and the
//! progress line.

use std::time::Duration;

use tickwire_core::Instant;
use tickwire_core::publisher::Sequencer as Core;
use tickwire_transports::Publisher;
use tickwire_transports::idle::Idler;
use tickwire_transports::metrics::{Kind, Metrics};

/// How often the loop copies its counters into the metrics registry.
pub(crate) const METRICS_EVERY: Duration = Duration::from_millis(100);

/// The server's metrics, in the order [`publish_metrics`] sets them.
pub(crate) const SERVER_METRICS: &[(&str, &str, Kind)] = &[
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

pub(crate) fn publish_metrics(
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
    m.set_all(&values);
}

/// The progress line, every `every`.
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) every: Option<Duration>,
    pub(crate) last: Instant,
    pub(crate) last_msgs: u64,
}

impl Progress {
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.every.map(|e| self.last + e)
    }

    pub(crate) fn maybe_print(&mut self, now: Instant, core: &Core, transport: &dyn Publisher) {
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
