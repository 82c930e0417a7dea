//! Snapshots: requesting, assembling, applying one (and rebuilding the holes
//! it leaves), and giving up when none can be had.

use super::*;

impl Receiver {
    pub(super) fn start_snapshot(&mut self, now: Instant) {
        if self.snap.active {
            return;
        }
        self.snap = SnapState {
            active: true,
            deadline: now + self.cfg.snapshot_timeout,
            retries: 0,
            min_seq: 0,
        };
        self.outstanding.clear();
        self.tx.retain(|t| !matches!(t, Tx::Nack { .. }));
        self.queue_snapshot_request();
    }

    pub(super) fn queue_snapshot_request(&mut self) {
        if self.cfg.mode == Mode::Stream && !self.logged_in {
            return;
        }
        if !self.tx.contains(&Tx::SnapshotRequest) {
            self.tx.push_back(Tx::SnapshotRequest);
        }
    }

    pub(super) fn snapshot_timed_out(&mut self, now: Instant) {
        self.snap.retries += 1;
        if self.snap.retries > self.cfg.max_snapshot_retries {
            self.give_up(now);
        } else {
            self.snap.deadline = now + self.cfg.snapshot_timeout;
            self.queue_snapshot_request();
        }
    }

    pub(super) fn on_snapshot_part(
        &mut self,
        now: Instant,
        repr: &PacketRepr,
        part: &SnapshotRepr<'_>,
    ) {
        if !self.session_packet(repr.epoch) {
            return;
        }
        let s = repr.first_seq.0;
        if !self.snap.active || s < self.snap.min_seq || (self.synced && s <= self.next) {
            self.stats.snapshot_parts_ignored += 1;
            return;
        }
        match self.asm.add(s, part, self.cfg.max_snapshot_symbols) {
            PartOutcome::Stored => self.stats.snapshot_parts += 1,
            PartOutcome::Complete => {
                self.stats.snapshot_parts += 1;
                self.apply_snapshot(now);
            }
            PartOutcome::Duplicate
            | PartOutcome::Older
            | PartOutcome::Inconsistent
            | PartOutcome::TooLarge => self.stats.snapshot_parts_ignored += 1,
        }
    }

    /// A complete snapshot consistent at `S` is assembled: deliver it, count the
    /// holes it covers, drop what it supersedes, go on from `S`.
    pub(super) fn apply_snapshot(&mut self, now: Instant) {
        let s = self.asm.seq;
        let per_symbol = self.cfg.order == Order::PerSymbol;
        self.events.push_back(Event::SnapshotStart { seq: SeqNo(s), symbols: self.asm.symbols });
        for st in self.asm.states() {
            // Per-symbol order: a symbol delivered ahead of the hole past
            // `S` is newer in the cache than in the snapshot; keep it.
            if per_symbol && !self.syms.snapshot_record(st.symbol, st.updates) {
                self.stats.snapshot_records_behind += 1;
                continue;
            }
            self.events.push_back(Event::SymbolState(st));
        }
        self.events.push_back(Event::SnapshotEnd { seq: SeqNo(s) });
        self.stats.snapshots_applied += 1;
        if per_symbol {
            let (_, ns) = self.syms.after_snapshot(now, s, &mut self.events);
            self.stats.stale_ns_total += ns;
        }

        // Holes below S are covered; the snapshot's effect includes them.
        for g in self.gaps.gaps.iter() {
            let covered_end = g.end.min(s);
            if covered_end <= g.start {
                break;
            }
            let window = self.buf.lo().max(g.start)..covered_end.min(self.buf.hi());
            let held = window.filter(|q| self.buf.present(*q)).count() as u64;
            let missing_below = (covered_end - g.start).saturating_sub(held);
            self.stats.messages_covered_snapshot += missing_below.min(g.missing);
            if g.end <= s {
                self.stats.gaps_covered_snapshot += 1;
                self.stats.record_recovery((now - g.detected).as_nanos() as u64);
            }
        }
        self.rebuild_gaps(now, s);
        self.snap.active = false;
        self.asm.clear();
        self.tx.retain(|t| *t != Tx::SnapshotRequest);
        self.synced = true;
        self.drain(now);
    }

    /// Restart the sequence at `s` keeping what is held at or above it, and
    /// recompute the holes in `[s, high)`; holes that overlap old ones keep
    /// their detection time.
    pub(super) fn rebuild_gaps(&mut self, now: Instant, s: u64) {
        std::mem::swap(&mut self.gaps, &mut self.scratch);
        self.gaps.gaps.clear();
        self.buf.rebase(s);
        self.next = s;
        self.high = self.high.max(s);
        let (hi, high) = (self.buf.hi(), self.high);
        let mut j = 0;
        let mut a = s;
        while a < high {
            if a < hi && self.buf.present(a) {
                a += 1;
                continue;
            }
            let mut b = a + 1;
            while b < high {
                if b >= hi {
                    b = high;
                    break;
                }
                if self.buf.present(b) {
                    break;
                }
                b += 1;
            }
            self.push_rebuilt(now, a, b, &mut j);
            a = b;
        }
        self.scratch.gaps.clear();
    }

    pub(super) fn push_rebuilt(&mut self, now: Instant, a: u64, b: u64, j: &mut usize) {
        let old = &self.scratch.gaps;
        while *j < old.len() && old[*j].end <= a {
            *j += 1;
        }
        let mut detected = now;
        let mut nacked = false;
        let mut found = false;
        let mut k = *j;
        while k < old.len() && old[k].start < b {
            found = true;
            detected = detected.min(old[k].detected);
            nacked |= old[k].nacked;
            k += 1;
        }
        if !found {
            self.stats.gaps_detected += 1;
            self.stats.messages_missed += b - a;
        }
        let due = self.first_nack_due(now);
        let mut g = Gap::new(a, b, detected, due);
        g.nacked = nacked;
        self.gaps.push_back(g);
    }

    /// The snapshot could not be had: give up on every hole (and, for a late
    /// joiner, on the state before its first message), deliver what is held.
    pub(super) fn give_up(&mut self, now: Instant) {
        self.snap.active = false;
        self.asm.clear();
        self.tx.retain(|t| *t != Tx::SnapshotRequest);
        if !self.synced {
            self.synced = true;
            if self.next > 1 {
                self.unrecoverable(1, self.next, self.next - 1);
            }
        }
        while let Some(g) = self.gaps.gaps.pop_front() {
            self.stats.unrecovered += 1;
            self.stats.messages_unrecovered += g.missing;
            self.skip_to(now, g.end);
        }
        if self.cfg.order == Order::PerSymbol {
            self.syms.after_give_up(self.next, &mut self.events);
        }
        self.drain(now);
    }

    pub(super) fn unrecoverable(&mut self, a: u64, b: u64, missing: u64) {
        self.stats.unrecovered += 1;
        self.stats.messages_unrecovered += missing;
        self.report_missing(a, b);
    }

    pub(super) fn report_missing(&mut self, a: u64, b: u64) {
        self.events.push_back(Event::Unrecoverable { range: SeqRange::new(SeqNo(a), SeqNo(b)) });
    }

    /// Deliver what is held in `[next, end)` and skip what is missing, each
    /// run of missing sequences reported as `Unrecoverable` in stream order
    /// (a gap given up on may hold messages that did arrive: they are
    /// delivered between the runs, so no event names a delivered message).
    pub(super) fn skip_to(&mut self, now: Instant, end: u64) {
        let mut missing_from: Option<u64> = None;
        while self.next < end {
            let s = self.next;
            let held = if s < self.buf.lo() || s >= self.buf.hi() { None } else { self.buf.get(s) };
            match held {
                Some(h) => {
                    if let Some(a) = missing_from.take() {
                        self.report_missing(a, s);
                    }
                    if h.delivered {
                        self.next = s + 1;
                    } else {
                        self.stats.messages_held += 1;
                        self.deliver(now, s, h.msg, h.send_time, h.due_time, true);
                    }
                }
                None => {
                    missing_from.get_or_insert(s);
                    self.next = if s < self.buf.lo() {
                        self.buf.lo().min(end)
                    } else if s >= self.buf.hi() {
                        end
                    } else {
                        s + 1
                    };
                }
            }
        }
        if let Some(a) = missing_from {
            self.report_missing(a, self.next);
        }
        self.high = self.high.max(self.next);
        self.buf.advance(self.next);
    }
}
