//! Claims no single packet may make alone, checked with the recovery service.
//!
//! On a datagram feed anyone on the path can send a packet with a valid CRC
//! and the live epoch. A packet that would end the session, switch it to
//! another epoch, move the stream far ahead (skipping what lies between) or
//! show the server far behind (a restart with the same epoch) is therefore
//! not acted on at once: the receiver asks the recovery service with a Probe
//! (a fresh random nonce) and acts on its Status, which echoes the nonce and
//! states the server's epoch, next sequence, instance and whether the
//! session ended. A forged packet then costs one Probe and is counted; the
//! Status also gives the cookie that NACKs and snapshot requests carry
//! (address validation, `docs/PROTOCOL.md` § 6).
//!
//! Claims made while a Probe is on the wire wait for the next round: the
//! answer in flight may predate them. When no Status comes after
//! `max_probe_retries` Probes, the receiver accepts the claims as a receiver
//! without a recovery service would, and counts them as unconfirmed.

use super::*;
use crate::wire::StatusRepr;

/// How far (in sequences) a live packet may go back on its own line before
/// the receiver asks the service whether the server restarted: well beyond
/// any reordering within one line on a LAN, far below any session's length.
pub const LINE_REGRESSION_SLACK: u64 = 4096;

/// What the live feed claimed, waiting for the service's word.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Claims {
    /// An EndOfSession: one past the last message.
    eos: Option<u64>,
    /// A live packet of another epoch, and its first sequence.
    epoch: Option<(u64, u64)>,
    /// The highest sequence a live packet beyond the reorder window showed.
    ahead: Option<u64>,
    /// A live packet far behind what was delivered.
    behind: bool,
}

impl Claims {
    fn is_empty(&self) -> bool {
        self.eos.is_none() && self.epoch.is_none() && self.ahead.is_none() && !self.behind
    }
}

/// The Probe round in progress.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct ProbeState {
    active: bool,
    /// At least one Probe of this round was handed out by `poll_transmit`.
    sent: bool,
    nonce: u64,
    deadline: Instant,
    retries: u32,
    /// Claims of this round (made before its first Probe went out).
    claims: Claims,
    /// Claims made since: they need an answer to a later Probe.
    pending: Claims,
}

impl ProbeState {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.active.then_some(self.deadline)
    }

    pub(super) fn nonce(&self) -> u64 {
        self.nonce
    }

    pub(super) fn mark_sent(&mut self) {
        self.sent = true;
    }

    /// Probes of this round re-sent so far.
    pub(super) fn retries(&self) -> u32 {
        self.retries
    }
}

impl Receiver {
    /// Claims are checked (datagram mode, unless configured off).
    pub(super) fn confirms(&self) -> bool {
        self.cfg.confirm_claims && self.cfg.mode == Mode::Datagram
    }

    /// How far beyond the highest sequence seen a live packet may start
    /// before it is a claim: the reorder window.
    fn window(&self) -> u64 {
        self.buf.cap()
    }

    fn claim(&mut self, now: Instant, f: impl FnOnce(&mut Claims)) {
        if !self.probe.active {
            f(&mut self.probe.claims);
            self.start_probe_round(now);
        } else if !self.probe.sent {
            f(&mut self.probe.claims);
        } else {
            f(&mut self.probe.pending);
        }
    }

    fn start_probe_round(&mut self, now: Instant) {
        self.probe.active = true;
        self.probe.sent = false;
        self.probe.nonce = self.rng.next_u64().max(1);
        self.probe.retries = 0;
        self.probe.deadline = now + self.cfg.probe_timeout;
        self.queue_probe();
    }

    fn queue_probe(&mut self) {
        if !self.tx.contains(&Tx::Probe) {
            self.tx.push_back(Tx::Probe);
        }
    }

    /// A live packet of `epoch`, which is not the session's nor a retired
    /// one: held until the service confirms the change. False: drop it.
    pub(super) fn claim_epoch(&mut self, now: Instant, epoch: u64, first: u64) {
        self.stats.validation.epoch_held += 1;
        self.claim(now, |c| {
            if c.epoch.is_none() {
                c.epoch = Some((epoch, first));
            }
        });
    }

    /// An EndOfSession at `n` in datagram mode. True: take it (it repeats
    /// the end already accepted).
    pub(super) fn check_end_claim(&mut self, now: Instant, n: u64) -> bool {
        if let Some(e) = self.end_of_session {
            if e != n {
                self.stats.validation.eos_rejected += 1;
            }
            return e == n;
        }
        if n < self.high {
            // Messages beyond it were seen: the session did not end there.
            self.stats.validation.eos_rejected += 1;
            return false;
        }
        self.claim(now, |c| c.eos = Some(c.eos.map_or(n, |e| e.min(n))));
        false
    }

    /// A live packet on `line` covering `[first, end)` (a heartbeat: `first
    /// == end`, its next sequence). False: it lies beyond the reorder window
    /// of the highest sequence seen, and is dropped until the service
    /// confirms the stream reached it. One that takes its own line back by
    /// more than [`LINE_REGRESSION_SLACK`] asks whether the server restarted
    /// with the same epoch (each line carries increasing ranges).
    pub(super) fn check_live_range(
        &mut self,
        now: Instant,
        line: Line,
        first: u64,
        end: u64,
    ) -> bool {
        if !self.started {
            return true;
        }
        if first > self.high.saturating_add(self.window()) {
            self.stats.validation.far_ahead_held += 1;
            self.claim(now, |c| c.ahead = Some(c.ahead.map_or(end, |a| a.max(end))));
            return false;
        }
        let l = usize::from(line == Line::B);
        if line != Line::Unicast {
            if end.saturating_add(LINE_REGRESSION_SLACK) < self.line_high[l] {
                self.claim(now, |c| c.behind = true);
            }
            self.line_high[l] = self.line_high[l].max(end);
        }
        true
    }

    /// The service's cookie for this host: requests carry it from now on,
    /// and those it challenged go out again at once.
    fn learn_cookie(&mut self, now: Instant, cookie: u64) {
        if self.cookie == Some(cookie) {
            return;
        }
        self.cookie = Some(cookie);
        self.stats.validation.cookies_learnt += 1;
        self.outstanding.clear();
        for g in self.gaps.gaps.iter_mut() {
            if g.nacked {
                g.due = g.due.min(now);
                g.cursor = None;
            }
        }
        if self.snap.active {
            self.queue_snapshot_request();
        }
    }

    /// A Status from the recovery service.
    pub(super) fn on_status(&mut self, now: Instant, repr: &PacketRepr, st: &StatusRepr) {
        if self.cfg.mode == Mode::Stream {
            self.on_stream_status(now, repr, st);
            return;
        }
        let answers = self.probe.active && st.echo != 0 && st.echo == self.probe.nonce;
        if !answers {
            // A challenge (echo 0) or a late answer: only its cookie is of use.
            if st.echo != 0 {
                self.stats.validation.statuses_stale += 1;
            }
            if self.epoch == Some(repr.epoch) {
                self.stats.validation.statuses += 1;
                if st.echo == 0 && self.cookie != Some(st.cookie) {
                    self.rtt_challenge(now);
                }
                self.learn_cookie(now, st.cookie);
            } else if st.echo == 0 {
                self.stats.validation.statuses_stale += 1;
            }
            return;
        }
        if self.is_retired(repr.epoch) {
            self.stats.validation.statuses_stale += 1;
            return;
        }
        self.stats.validation.statuses += 1;
        self.rtt_probe_answered(now);
        let claims = self.probe.claims;
        self.resolve(now, repr.epoch, repr.first_seq.0, st, claims);
        self.end_probe_round(now);
    }

    /// Stream: the Status that follows the LoginAck names the server
    /// instance. Another instance with the epoch the client knew is a server
    /// restarted with the same `--epoch`: its sequences start again at 1, so
    /// what the client holds is of another session. Reset as for a new epoch
    /// and log in again from 1 on a new connection (the catch-up that
    /// follows on this one was planned for the old session's position).
    fn on_stream_status(&mut self, now: Instant, repr: &PacketRepr, st: &StatusRepr) {
        if !self.connected || self.epoch != Some(repr.epoch) {
            self.stats.validation.statuses_stale += 1;
            return;
        }
        self.stats.validation.statuses += 1;
        let restarted = self.instance.is_some_and(|i| i != st.instance);
        self.instance = Some(st.instance);
        if !restarted {
            return;
        }
        self.stats.validation.restarts_detected += 1;
        self.stats.epoch_changes += 1;
        self.reset_session(now);
        self.events.push_back(Event::EpochChanged { old: Some(repr.epoch), new: repr.epoch });
        self.logged_in = false;
        self.tx.clear();
        self.stats.reconnects += 1;
        self.events.push_back(Event::Reconnect);
    }

    /// Act on the service's word: session `epoch`, next sequence `next`.
    fn resolve(&mut self, now: Instant, epoch: u64, next: u64, st: &StatusRepr, c: Claims) {
        // Same epoch, yet another server process, or one far behind what was
        // delivered: the server restarted with the epoch it had.
        let restarted = self.epoch == Some(epoch)
            && (self.instance.is_some_and(|i| i != st.instance)
                || next.saturating_add(LINE_REGRESSION_SLACK) < self.next);
        self.instance = Some(st.instance);
        let switched = self.epoch != Some(epoch) || restarted;
        if switched {
            if c.epoch.is_some_and(|(e, _)| e != epoch) {
                self.stats.validation.epoch_rejected += 1;
            }
            if restarted {
                self.stats.validation.restarts_detected += 1;
                self.stats.epoch_changes += 1;
                self.reset_session(now);
                self.events.push_back(Event::EpochChanged { old: Some(epoch), new: epoch });
            } else {
                self.switch_epoch(now, epoch);
            }
            // A restarted server's stream starts at 1; a session seen
            // under way is joined where its held packet showed it (or at the
            // service's next sequence), as any late joiner.
            let first = match c.epoch {
                _ if restarted => 1,
                Some((e, f)) if e == epoch => f,
                _ => next,
            };
            self.begin_session(now, first);
            self.learn_cookie(now, st.cookie);
        } else {
            if c.epoch.is_some() {
                self.stats.validation.epoch_rejected += 1;
            }
            if let Some(a) = c.ahead {
                if a > next {
                    self.stats.validation.far_ahead_rejected += 1;
                }
            }
            if c.eos.is_some_and(|n| !st.ended || n != next) {
                self.stats.validation.eos_rejected += 1;
            }
            if c.behind {
                // Not a restart (a line lagging far, or a replay): measure
                // regressions from here on, so they do not ask again and again.
                self.line_high = [0; 2];
            }
            self.learn_cookie(now, st.cookie);
        }
        // What the service says exists exists; claims beyond it do not.
        if switched || st.ended || c.ahead.is_some() || c.eos.is_some() {
            self.reveal(now, next);
        }
        if st.ended {
            self.end_of_session = Some(next);
        }
    }

    /// No Status came: retry, or decide without one.
    pub(super) fn probe_timed_out(&mut self, now: Instant) {
        if self.probe.retries < self.cfg.max_probe_retries {
            self.probe.retries += 1;
            self.probe.deadline = now + self.cfg.probe_timeout;
            self.queue_probe();
            return;
        }
        let mut c = self.probe.claims;
        c.ahead = c.ahead.max(self.probe.pending.ahead);
        c.eos = c.eos.or(self.probe.pending.eos);
        c.epoch = c.epoch.or(self.probe.pending.epoch);
        self.probe.pending = Claims::default();
        if let Some((e, first)) = c.epoch
            && self.epoch != Some(e)
            && !self.is_retired(e)
        {
            self.stats.validation.epoch_unconfirmed += 1;
            self.switch_epoch(now, e);
            self.begin_session(now, first);
        } else {
            if let Some(a) = c.ahead {
                self.stats.validation.far_ahead_unconfirmed += 1;
                self.reveal(now, a);
            }
            if let Some(n) = c.eos
                && self.end_of_session.is_none()
                && n >= self.high
            {
                self.stats.validation.eos_unconfirmed += 1;
                self.end_of_session = Some(n);
                // What it claims up to its end exists: recover the tail (or
                // give it up, counted) instead of waiting for it forever.
                self.reveal(now, n);
            }
        }
        self.end_probe_round(now);
        self.check_end_of_session();
    }

    fn end_probe_round(&mut self, now: Instant) {
        self.probe.active = false;
        self.probe.claims = Claims::default();
        let pending = std::mem::take(&mut self.probe.pending);
        if !pending.is_empty() {
            self.probe.claims = pending;
            self.start_probe_round(now);
        }
    }
}
