//! Sessions: epochs (learning, switching, retired ones), the start of a
//! session, heartbeats and end of session, and the stream login.

use super::*;

impl Receiver {
    pub(super) fn is_retired(&self, epoch: u64) -> bool {
        self.retired.contains(&Some(epoch))
    }

    /// A live packet (data, heartbeat, end of session) of `epoch` in datagram
    /// mode: learn or switch the epoch if needed. False: drop the packet.
    pub(super) fn live_epoch(&mut self, now: Instant, epoch: u64, first: u64) -> bool {
        if self.epoch == Some(epoch) {
            return true;
        }
        if self.is_retired(epoch) {
            self.stats.wrong_epoch += 1;
            return false;
        }
        if self.epoch.is_some() && self.confirms() {
            self.claim_epoch(now, epoch, first);
            return false;
        }
        self.switch_epoch(now, epoch);
        self.begin_session(now, first);
        true
    }

    /// Packets other than live ones (and, on a stream, every packet after the
    /// LoginAck) must belong to the running session.
    pub(super) fn session_packet(&mut self, epoch: u64) -> bool {
        if self.epoch != Some(epoch) {
            self.stats.wrong_epoch += 1;
            return false;
        }
        let ok = self.started && (self.cfg.mode == Mode::Datagram || self.logged_in);
        if !ok {
            self.stats.unexpected += 1;
        }
        ok
    }

    pub(super) fn switch_epoch(&mut self, now: Instant, new: u64) {
        let old = self.epoch;
        if let Some(o) = old {
            self.retired[self.retired_next] = Some(o);
            self.retired_next = (self.retired_next + 1) % RETIRED_EPOCHS;
            self.stats.epoch_changes += 1;
            self.reset_session(now);
        }
        self.epoch = Some(new);
        self.events.push_back(Event::EpochChanged { old, new });
    }

    /// Forget the sequence state of the session that ended.
    pub(super) fn reset_session(&mut self, now: Instant) {
        self.stats.gaps_abandoned_epoch += self.gaps.len() as u64;
        let (_, ns) = self.syms.close_all(now);
        self.stats.stale_ns_total += ns;
        self.syms.reset(false);
        self.gaps.gaps.clear();
        self.buf.reset(1);
        self.started = false;
        self.synced = false;
        self.next = 1;
        self.high = 1;
        self.snap.active = false;
        self.asm.clear();
        self.outstanding.clear();
        self.announced.clear();
        self.tx.retain(|t| *t == Tx::Login);
        self.end_of_session = None;
        self.eos_emitted = false;
        self.cookie = None;
        self.line_high = [0; 2];
    }

    /// Start the sequence at `first`, delivering at once (`synced`) or after a snapshot.
    pub(super) fn start_at(&mut self, now: Instant, first: u64, synced: bool) {
        let (_, ns) = self.syms.close_all(now);
        self.stats.stale_ns_total += ns;
        // Followed from its first message: every symbol is at update 1.
        self.syms.reset(first == 1 && synced);
        self.started = true;
        self.synced = synced;
        self.next = first;
        self.high = first;
        self.buf.reset(first);
        self.gaps.gaps.clear();
    }

    /// Datagram: the first live packet of a session shows sequence `first`.
    /// A first packet within [`EARLY_JOIN_SLACK`] of the session's start
    /// means the start was lost on the way, not missed by joining late: the
    /// session is taken from sequence 1 and the hole NACKed like any other,
    /// so every message is delivered (a snapshot would give only the state).
    pub(super) fn begin_session(&mut self, now: Instant, first: u64) {
        let early = first > 1 && first - 1 <= EARLY_JOIN_SLACK;
        if early && self.cfg.late_join == LateJoin::Snapshot {
            self.start_at(now, 1, true);
            return;
        }
        let from_start = first == 1 || self.cfg.late_join == LateJoin::FromFirstSeen;
        self.start_at(now, first, from_start);
        if !from_start {
            self.start_snapshot(now);
        }
    }

    /// A late joiner waiting for a snapshot sees the session's first packet
    /// after all (it was reordered behind later ones): start from 1 instead.
    pub(super) fn rebase_to_session_start(&mut self, now: Instant) {
        if self.next <= 1 || self.high - 1 > self.buf.cap() {
            return;
        }
        let old_next = self.next;
        self.syms.reset(true);
        self.buf.rebase(1);
        self.next = 1;
        self.synced = true;
        self.snap.active = false;
        self.asm.clear();
        self.tx.retain(|t| *t != Tx::SnapshotRequest);
        self.stats.gaps_detected += 1;
        self.stats.messages_missed += old_next - 1;
        let due = self.first_nack_due(now);
        self.gaps.push_front(Gap::new(1, old_next, now, due));
    }

    /// Heartbeat or EndOfSession: `first_seq` is the next sequence the server
    /// will send (one past the last, for EndOfSession).
    pub(super) fn on_marker(&mut self, now: Instant, line: Line, repr: &PacketRepr) {
        let n = repr.first_seq.0;
        if repr.kind == PacketKind::Heartbeat {
            self.stats.heartbeats += 1;
        }
        let accepted = if self.cfg.mode == Mode::Stream {
            self.session_packet(repr.epoch)
        } else {
            self.live_epoch(now, repr.epoch, n)
        };
        if !accepted {
            return;
        }
        if self.confirms() {
            let plausible = if repr.kind == PacketKind::EndOfSession {
                self.check_end_claim(now, n)
            } else {
                self.check_live_range(now, line, n, n)
            };
            if !plausible {
                return;
            }
        } else if repr.kind == PacketKind::EndOfSession && self.end_of_session.is_none() {
            self.end_of_session = Some(n);
        }
        self.reveal(now, n);
    }

    pub(super) fn check_end_of_session(&mut self) {
        if let Some(e) = self.end_of_session
            && !self.eos_emitted
            && self.synced
            && self.next >= e
        {
            self.eos_emitted = true;
            self.events.push_back(Event::EndOfSession { next: SeqNo(e) });
        }
    }

    pub(super) fn on_login_ack(&mut self, now: Instant, repr: &PacketRepr, ack: &LoginAckRepr) {
        if self.cfg.mode != Mode::Stream || !self.connected {
            self.stats.unexpected += 1;
            return;
        }
        let e = repr.epoch;
        if self.epoch != Some(e) {
            if self.is_retired(e) {
                self.stats.wrong_epoch += 1;
                return;
            }
            self.switch_epoch(now, e);
            // The Status after the LoginAck names this session's instance.
            self.instance = None;
        }
        let s = repr.first_seq.0;
        match ack.mode {
            LoginMode::Resume => {
                if !(self.started && self.synced) {
                    self.start_at(now, s, true);
                }
                // What was missing will come with the resume; give it time first.
                let due = now + self.cfg.nack_retry_initial;
                for g in self.gaps.gaps.iter_mut() {
                    g.due = due;
                    g.retries = 0;
                    g.cursor = None;
                }
            }
            LoginMode::Snapshot => {
                if !(self.started && self.synced && s <= self.next) {
                    if !(self.started && self.synced) {
                        self.start_at(now, s, false);
                    }
                    self.snap = SnapState {
                        active: true,
                        deadline: now + self.cfg.snapshot_timeout,
                        retries: 0,
                        min_seq: s,
                    };
                    self.asm.clear();
                }
            }
            LoginMode::Unknown(_) => {
                self.stats.malformed += 1;
                return;
            }
        }
        self.logged_in = true;
        self.reconnect_delay = self.cfg.reconnect_min;
        self.reconnect_at = None;
    }
}
