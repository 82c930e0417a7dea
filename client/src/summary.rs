//! What a subscription saw: [`Summary`], printed by the `client` binary at
//! exit (`--json`: on stdout) and returned by [`Subscriber::summary`](crate::Subscriber::summary).

use serde::Serialize;
use tickwire_core::latency::{BreakdownSummary, LatencySummary};

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
    /// Multicast: UDP GRO on for the feed sockets (the kernel merges datagrams;
    /// each merged receive is split into its packets in place).
    pub gro: bool,
    /// Multicast: datagrams that arrived merged into an earlier one's receive.
    pub gro_merged: u64,
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
    /// The request round trip the receiver measured (SRTT, RTTVAR, the RTO
    /// its NACK retries start from, samples), ns.
    pub rtt: tickwire_core::recovery::RttStats,
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
    /// With `--record`: what the capture holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSummary>,
    /// Pipelined mode only: the pipeline's counters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<crate::subscriber::PipelineStats>,
    /// Gap seen → filled.
    pub recovery_time: RecoveryTimes,
    /// The delivery order, and what waited behind holes.
    pub delivery: DeliverySummary,
    /// Verification against the regenerated stream, when asked.
    pub verify: Option<VerifySummary>,
    /// True when the server's end of session was reached.
    pub end_of_session: bool,
    /// Wall time, seconds.
    pub elapsed_s: f64,
    /// Messages per second delivered while the feed flowed: from the poll
    /// that delivered the first message to the one that delivered the last
    /// (the wait for the server before, and the linger after, left out).
    pub rate: f64,
}

/// The delivery order and what it held back (`delivery` in `--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliverySummary {
    /// `strict` (feed order) or `per-symbol`.
    pub order: String,
    /// Messages delivered after waiting in the reorder buffer for a hole in front of them.
    pub messages_held: u64,
    /// Held messages as a share of the messages delivered (0..1).
    pub held_share: f64,
    /// Per-symbol order: messages applied ahead of a hole.
    pub messages_ahead: u64,
    /// Per-symbol order: times a symbol became stale.
    pub stale_periods: u64,
    /// Per-symbol order: total time symbols spent stale, ms (periods that ended).
    pub stale_ms_total: f64,
    /// Per-symbol order: mean length of a stale period, µs.
    pub stale_mean_us: f64,
    /// Per-symbol order: symbols stale at exit.
    pub stale_now: u64,
}

/// What `--record` wrote (`record` in `--json`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RecordSummary {
    /// The first capture file.
    pub file: String,
    /// Packets written to the capture.
    pub packets: u64,
    /// Packets the capture lost because the disk could not keep up (the
    /// feed lost none of them).
    pub dropped: u64,
    /// Bytes written, over all files.
    pub bytes: u64,
    /// Files written (more than 1 after rotation).
    pub files: u64,
}
