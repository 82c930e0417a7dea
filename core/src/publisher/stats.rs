//! What the publisher counts, and what a request came to.

use crate::seq::SeqNo;
use crate::wire::{DecodeError, LoginMode, PacketKind};

/// Why a request was ignored. Every reason has a counter in [`SequencerStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The bytes are not a valid request packet (truncated, bad CRC, a NACK of
    /// zero messages or from sequence 0, a request with a payload...).
    Malformed(DecodeError),
    /// The request names another session.
    WrongEpoch,
    /// A NACK for messages not published yet.
    OutOfRange,
    /// The peer's, its host's or the service's token bucket (or the
    /// snapshot interval) does not allow an answer now.
    RateLimited,
    /// The same request was served within the linger window.
    Duplicate,
    /// A packet kind clients do not send.
    NotARequest(PacketKind),
    /// A NACK or snapshot request without a valid cookie while
    /// [`crate::publisher::RequestLimits::validate_addresses`] is on: it was
    /// answered with a Status (the cookie) alone, or with nothing when the
    /// host's bucket was empty.
    Unvalidated,
}

/// What [`super::Sequencer::handle_request`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Replies were emitted (retransmissions, a NackReject or a snapshot).
    Served,
    /// A Login was answered: LoginAck, then the catch-up (retransmissions or a
    /// snapshot), which ends exactly at `published_next`. The server must now
    /// mark the peer live (`transport.set_live(peer, true)`): the next
    /// published packet continues the stream without a gap or an overlap.
    LoginAccepted {
        /// How the client is brought up to date.
        mode: LoginMode,
        /// The first sequence of the catch-up (Resume) or the sequence the
        /// snapshot is consistent at (Snapshot).
        resume_from: SeqNo,
    },
    /// Nothing was sent.
    Ignored(IgnoreReason),
}

/// Counters; every mechanism has one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SequencerStats {
    /// Messages sequenced and sealed into live packets.
    pub messages: u64,
    /// Live packets queued (Data, Heartbeat, EndOfSession).
    pub packets: u64,
    /// Bytes of live packets.
    pub bytes: u64,
    /// Heartbeats queued.
    pub heartbeats: u64,
    /// Messages `push` refused (unknown type, or after `end_session`).
    pub rejected_messages: u64,
    /// Requests received (every call to `handle_request`).
    pub requests: u64,
    /// Well-formed NACKs of this session.
    pub nacks: u64,
    /// NackRejects sent (range older than the window).
    pub nack_rejects: u64,
    /// Messages re-sent (NACK answers and Login resumes).
    pub retransmitted_messages: u64,
    /// Retransmission packets sent.
    pub retransmit_packets: u64,
    /// NACKs served only in part (message cap, byte cap or token bucket).
    pub clipped_requests: u64,
    /// Snapshots served (snapshot requests and Logins in snapshot mode).
    pub snapshots_served: u64,
    /// Snapshots served again from a kept image because the request named its `S`.
    pub snapshot_images_reused: u64,
    /// Snapshot packets sent.
    pub snapshot_packets: u64,
    /// Logins answered.
    pub logins: u64,
    /// Logins answered with a resume.
    pub login_resumes: u64,
    /// Logins answered with a snapshot.
    pub login_snapshots: u64,
    /// Reply packets of any kind.
    pub reply_packets: u64,
    /// Reply bytes of any kind.
    pub reply_bytes: u64,
    /// Requests ignored as malformed.
    pub malformed: u64,
    /// Requests ignored for naming another epoch.
    pub wrong_epoch: u64,
    /// NACKs ignored for asking unpublished messages.
    pub out_of_range: u64,
    /// Requests ignored by the rate limits (any of them).
    pub rate_limited: u64,
    /// Of those, refused because the host's bucket (all its ports) was empty.
    pub host_limited: u64,
    /// Of those, refused because the service's global bucket was empty.
    pub global_limited: u64,
    /// Requests ignored as duplicates within the linger window.
    pub duplicates: u64,
    /// Packets of a kind clients do not send.
    pub not_a_request: u64,
    /// Peers evicted from the bounded per-peer table.
    pub peers_evicted: u64,
    /// EndOfSession packets queued again after the first ([`super::SequencerConfig::eos_repeat`]).
    pub eos_repeats: u64,
    /// Probes answered with a Status.
    pub probes: u64,
    /// Status packets sent (answers to Probes, and challenges).
    pub statuses: u64,
    /// NACKs and snapshot requests from hosts without a valid cookie
    /// (answered with a Status alone, never with data).
    pub unvalidated: u64,
    /// Of those, requests whose cookie was wrong (forged, or from an earlier
    /// server instance).
    pub bad_cookies: u64,
    /// NACKs answered by a multicast repair of (part of) their range.
    pub multicast_repairs: u64,
    /// NACKs whose whole range was already repaired on multicast within the
    /// linger, or pending: served by that repair, nothing sent.
    pub multicast_repairs_joined: u64,
    /// NACKs trimmed (in part or whole) against multicast repairs.
    pub repair_coalesced: u64,
    /// Messages those trims saved.
    pub repair_messages_coalesced: u64,
    /// Pending ranges merged into a neighbour in the coalescing window.
    pub repair_ranges_merged: u64,
    /// Messages re-sent on the group (also counted in `retransmitted_messages`).
    pub repair_messages_multicast: u64,
    /// Retransmission packets sent on the group (also in `retransmit_packets`).
    pub repair_packets_multicast: u64,
    /// Bytes sent on the group by the repair service (RepairNotices,
    /// Retransmissions, Snapshots); not in `reply_bytes`.
    pub repair_bytes_multicast: u64,
    /// RepairNotice packets sent on the group.
    pub ncf_sent: u64,
    /// Multicast repairs (NACK or snapshot) the group budget refused: the
    /// requester was served by unicast instead, within its own buckets.
    pub repair_budget_refused: u64,
    /// Snapshots sent on the group (also in `snapshots_served`).
    pub multicast_snapshots: u64,
    /// Snapshot requests that joined a multicast snapshot already waiting.
    pub snapshot_requests_joined: u64,
    /// Multicast snapshots dropped because their image was evicted before
    /// their window ended (the requesters ask again).
    pub multicast_snapshots_lost: u64,
    /// Bytes of snapshots sent on the group.
    pub snapshot_bytes_multicast: u64,
    /// Bytes of snapshots sent by unicast (requests and Logins).
    pub snapshot_bytes_unicast: u64,
}
