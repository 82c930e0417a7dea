//! Counters of everything the receiver does. Every outcome is counted.

use hdrhistogram::Histogram;

/// Longest recovery time the histogram resolves: 10 minutes in ns. Longer
/// recoveries are clamped to it (they mean the server was gone, and the
/// counters say so better than a percentile).
pub const RECOVERY_HISTOGRAM_MAX_NS: u64 = 600_000_000_000;

/// Significant decimal digits of the recovery-time histogram: 3 gives 0.1 %
/// resolution in about 200 KB, allocated once.
pub const RECOVERY_HISTOGRAM_SIGFIG: u8 = 3;

/// Counters of a [`super::Receiver`]. Read them while it runs.
#[derive(Clone, Debug)]
pub struct RecoveryStats {
    /// Packets handed to `handle_packet`, good or bad.
    pub packets: u64,
    /// Heartbeats received (any line, duplicates included).
    pub heartbeats: u64,
    /// Messages delivered in order (`Event::Message`).
    pub messages_delivered: u64,
    /// Holes seen in the sequence.
    pub gaps_detected: u64,
    /// Sum of the sizes of those holes, in messages.
    pub messages_missed: u64,
    /// Holes closed after at least one NACK for them was sent.
    pub gaps_filled_retransmit: u64,
    /// Holes closed before any NACK: the other line or a late (reordered) packet filled them.
    pub gaps_filled_reorder: u64,
    /// Holes a snapshot covered entirely.
    pub gaps_covered_snapshot: u64,
    /// Messages that were still missing when a snapshot covered them.
    pub messages_covered_snapshot: u64,
    /// Ranges given up (`Event::Unrecoverable`).
    pub unrecovered: u64,
    /// Messages given up.
    pub messages_unrecovered: u64,
    /// Holes dropped because the server restarted (a new epoch) before they were filled.
    pub gaps_abandoned_epoch: u64,
    /// Copies of messages already delivered or held (A/B copies, repeated retransmissions).
    pub duplicates: u64,
    /// Packets whose CRC did not match.
    pub bad_crc: u64,
    /// Packets that are not well-formed Tickwire packets (lengths, magic,
    /// version, payload disagreeing with its count, impossible sequences).
    pub malformed: u64,
    /// Well-formed packets a client never expects (requests, unknown kinds, a
    /// LoginAck on a datagram feed).
    pub unexpected: u64,
    /// Packets of another epoch that cannot start a session (retransmissions,
    /// snapshots, rejects of an old or unknown session; live packets of a retired one).
    pub wrong_epoch: u64,
    /// NACK packets sent.
    pub nacks_sent: u64,
    /// RepairNotices of the session received (the service announced a
    /// multicast repair).
    pub repair_notices: u64,
    /// Missing ranges not NACKed (or a queued NACK narrowed or dropped)
    /// because a RepairNotice announced their repair.
    pub nacks_suppressed: u64,
    /// Messages those NACKs asked for.
    pub nack_messages_requested: u64,
    /// NackRejects received for a range still missing.
    pub nack_rejects: u64,
    /// Times a hole's NACK retries ran out (each leads to a snapshot request).
    pub nack_retries_exhausted: u64,
    /// Messages accepted from Retransmission packets (not duplicates).
    pub messages_retransmitted: u64,
    /// SnapshotRequest packets sent.
    pub snapshot_requests: u64,
    /// Snapshot parts received and stored.
    pub snapshot_parts: u64,
    /// Snapshot parts ignored: none wanted, duplicate, older, stale (not past
    /// what was already delivered), inconsistent or too large.
    pub snapshot_parts_ignored: u64,
    /// Snapshots applied (`Event::SnapshotEnd`).
    pub snapshots_applied: u64,
    /// Logins sent (stream).
    pub logins: u64,
    /// Reconnects asked for (`Event::Reconnect`, stream).
    pub reconnects: u64,
    /// Server restarts seen (epoch changes, not counting the first epoch learnt).
    pub epoch_changes: u64,
    /// Messages whose first copy came on line A.
    pub line_a_won: u64,
    /// Messages whose first copy came on line B.
    pub line_b_won: u64,
    /// Times a message arrived too far ahead for the reorder buffer (each
    /// outside a snapshot wait leads to a snapshot request).
    pub buffer_overflows: u64,
    /// Held messages dropped to make room (they are requested again or covered by the snapshot).
    pub buffer_dropped: u64,
    /// Messages delivered after waiting in the reorder buffer for a hole in
    /// front of them (each counted once, when delivered; those a snapshot
    /// superseded are not).
    pub messages_held: u64,
    /// Per-symbol order: messages delivered ahead of a hole (their symbol's
    /// update number proved nothing of it was missing).
    pub messages_ahead: u64,
    /// Per-symbol order: times a symbol became stale (a message of it had
    /// to wait for a hole).
    pub stale_periods: u64,
    /// Per-symbol order: total time symbols spent stale, ns (periods that
    /// ended; see [`super::Receiver::stale_symbols`] for those under way).
    pub stale_ns_total: u64,
    /// Per-symbol order: messages dropped because a later message of their
    /// symbol was delivered already (an inconsistent feed: update numbers
    /// that disagree with the sequence; never on an honest one).
    pub symbol_order_dropped: u64,
    /// Per-symbol order: snapshot records not applied because the symbol was
    /// delivered past the snapshot's sequence already.
    pub snapshot_records_behind: u64,
    /// Claims checked with the recovery service, and what came of them.
    pub validation: ValidationStats,
    /// The request round trip as measured, and the retry timeout it gives.
    pub rtt: RttStats,
    /// Time from a hole being seen to it being filled or covered by a snapshot, ns.
    recovery: Histogram<u64>,
}

/// What the receiver did with claims no single packet may make alone, and
/// with the recovery service's Status answers. Every rejection is counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ValidationStats {
    /// Probes sent (retries included).
    pub probes_sent: u64,
    /// Status packets received and taken (well-formed, of a known session).
    pub statuses: u64,
    /// Status packets answering no Probe in flight (late, or forged).
    pub statuses_stale: u64,
    /// Cookies learnt from the recovery service (first, and after a change).
    pub cookies_learnt: u64,
    /// EndOfSession packets refused: below the highest sequence seen, or the
    /// service said the session is live.
    pub eos_rejected: u64,
    /// EndOfSession accepted without an answer from the service.
    pub eos_unconfirmed: u64,
    /// Live packets of another epoch dropped while that epoch was unconfirmed.
    pub epoch_held: u64,
    /// Epoch changes refused (the service is still in the current session).
    pub epoch_rejected: u64,
    /// Epoch changes accepted without an answer from the service.
    pub epoch_unconfirmed: u64,
    /// Live packets dropped for lying beyond the reorder window of the
    /// highest sequence seen, until the service confirmed the stream is there.
    pub far_ahead_held: u64,
    /// Far-ahead claims the service contradicted (its next sequence is lower).
    pub far_ahead_rejected: u64,
    /// Far-ahead claims accepted without an answer from the service.
    pub far_ahead_unconfirmed: u64,
    /// Server restarts with the same epoch, told by a new instance id.
    pub restarts_detected: u64,
}

/// The receiver's round-trip estimator (`recovery::rtt`), in ns: what NACK
/// retries, RepairNotice suppression and the multicast NACK spread are timed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RttStats {
    /// Smoothed round trip (SRTT), ns; 0 before any sample.
    pub srtt_ns: u64,
    /// Round-trip variation (RTTVAR), ns; 0 before any sample.
    pub rttvar_ns: u64,
    /// Retry timeout of a NACK's first retry (RTO, floor and ceiling
    /// applied; the initial RTO before any sample), ns.
    pub rto_ns: u64,
    /// Smallest sample, ns; 0 before any.
    pub min_ns: u64,
    /// Last sample, ns; 0 before any.
    pub latest_ns: u64,
    /// Samples taken (answered NACK ranges asked for once, answered Probes,
    /// the cookie challenge of a NACK).
    pub samples: u64,
}

impl RttStats {
    /// A snapshot of `e`.
    pub fn of(e: &super::RttEstimator) -> RttStats {
        let ns = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        RttStats {
            srtt_ns: e.srtt().map_or(0, ns),
            rttvar_ns: ns(e.rttvar()),
            rto_ns: ns(e.rto()),
            min_ns: ns(e.min()),
            latest_ns: ns(e.latest()),
            samples: e.samples(),
        }
    }
}

impl Default for RecoveryStats {
    fn default() -> Self {
        RecoveryStats::new()
    }
}

impl RecoveryStats {
    /// Zeroed counters and an empty histogram.
    pub fn new() -> RecoveryStats {
        RecoveryStats {
            packets: 0,
            heartbeats: 0,
            messages_delivered: 0,
            gaps_detected: 0,
            messages_missed: 0,
            gaps_filled_retransmit: 0,
            gaps_filled_reorder: 0,
            gaps_covered_snapshot: 0,
            messages_covered_snapshot: 0,
            unrecovered: 0,
            messages_unrecovered: 0,
            gaps_abandoned_epoch: 0,
            duplicates: 0,
            bad_crc: 0,
            malformed: 0,
            unexpected: 0,
            wrong_epoch: 0,
            nacks_sent: 0,
            repair_notices: 0,
            nacks_suppressed: 0,
            nack_messages_requested: 0,
            nack_rejects: 0,
            nack_retries_exhausted: 0,
            messages_retransmitted: 0,
            snapshot_requests: 0,
            snapshot_parts: 0,
            snapshot_parts_ignored: 0,
            snapshots_applied: 0,
            logins: 0,
            reconnects: 0,
            epoch_changes: 0,
            line_a_won: 0,
            line_b_won: 0,
            buffer_overflows: 0,
            buffer_dropped: 0,
            messages_held: 0,
            messages_ahead: 0,
            stale_periods: 0,
            stale_ns_total: 0,
            snapshot_records_behind: 0,
            symbol_order_dropped: 0,
            validation: ValidationStats::default(),
            rtt: RttStats::default(),
            recovery: Histogram::new_with_bounds(
                1,
                RECOVERY_HISTOGRAM_MAX_NS,
                RECOVERY_HISTOGRAM_SIGFIG,
            )
            .expect("constant histogram bounds are valid"),
        }
    }

    /// Record one recovery time (ns); clamped to the histogram's range.
    pub(super) fn record_recovery(&mut self, ns: u64) {
        self.recovery.saturating_record(ns.max(1));
    }

    /// Recovery time (gap seen → filled or covered) at percentile `p` (0..=100), ns;
    /// 0 when nothing was recovered yet.
    pub fn recovery_percentile(&self, p: f64) -> u64 {
        if self.recovery.is_empty() {
            0
        } else {
            self.recovery.value_at_percentile(p.clamp(0.0, 100.0))
        }
    }

    /// Same as [`Self::recovery_percentile`].
    pub fn percentile(&self, p: f64) -> u64 {
        self.recovery_percentile(p)
    }

    /// Number of recoveries timed.
    pub fn recoveries(&self) -> u64 {
        self.recovery.len()
    }

    /// The recovery-time histogram (ns), for a full `.hgrm` dump.
    pub fn recovery_histogram(&self) -> &Histogram<u64> {
        &self.recovery
    }
}
