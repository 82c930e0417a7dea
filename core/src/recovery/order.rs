//! In-order delivery: the fast path, the reorder buffer, holes as they
//! appear and fill, overflow of the window.

use super::*;

impl Receiver {
    /// Data or Retransmission.
    pub(super) fn on_messages(
        &mut self,
        now: Instant,
        line: Line,
        repr: &PacketRepr,
        timing: Timing,
        payload: &[u8],
    ) {
        let retrans = repr.kind == PacketKind::Retransmission;
        let first = repr.first_seq.0;
        let count = u64::from(repr.count);
        let accepted = if self.cfg.mode == Mode::Stream || retrans {
            self.session_packet(repr.epoch)
        } else {
            self.live_epoch(now, repr.epoch, first)
        };
        if !accepted {
            return;
        }
        if !retrans && self.confirms() && !self.check_live_range(now, line, first, first + count) {
            return;
        }
        if count == 0 {
            self.reveal(now, first);
            return;
        }
        if !self.synced && first == 1 && self.cfg.mode == Mode::Datagram {
            self.rebase_to_session_start(now);
        }
        if first + count <= self.next {
            self.stats.duplicates += count;
            return;
        }
        if self.synced
            && first == self.next
            && self.high == self.next
            && self.gaps.is_empty()
            && self.buf.lo() == first
            && first + count <= self.buf.hi()
        {
            self.deliver_in_order(now, line, repr, timing, payload);
            return;
        }
        for ((i, m), due) in
            MessageIter::new(payload, repr.count).enumerate().zip(timing.dues(count))
        {
            let Ok(msg) = m else { break };
            let times = Times { sent: repr.send_time, due };
            self.on_message(now, line, first + i as u64, msg, times, retrans);
        }
    }

    /// The fast path of [`Self::on_messages`]: the packet continues the
    /// stream exactly (`first == next`), nothing is held beyond it and no gap
    /// is open, so every message is delivered as it comes. The outcome is the
    /// per-message path's (same events, counters and state), without its
    /// per-message reorder-buffer bookkeeping.
    pub(super) fn deliver_in_order(
        &mut self,
        now: Instant,
        line: Line,
        repr: &PacketRepr,
        timing: Timing,
        payload: &[u8],
    ) {
        let retrans = repr.kind == PacketKind::Retransmission;
        let first = repr.first_seq.0;
        let count = u64::from(repr.count);
        let per_symbol = self.cfg.order == Order::PerSymbol;
        let mut n = 0u64;
        for (m, due) in MessageIter::new(payload, repr.count).zip(timing.dues(count)) {
            let Ok(msg) = m else { break };
            self.events.push_back(Event::Message {
                seq: SeqNo(first + n),
                msg,
                send_time: repr.send_time,
                due_time: due,
                recovered: retrans,
            });
            if per_symbol {
                // Nothing is held (no hole is open), so no wait ends here;
                // an update number that jumps still reports its symbol.
                self.end_stale(now, first + n, &msg);
            }
            n += 1;
        }
        match (retrans, line) {
            (true, _) => self.stats.messages_retransmitted += n,
            (false, Line::A) => self.stats.line_a_won += n,
            (false, Line::B) => self.stats.line_b_won += n,
            (false, Line::Unicast) => {}
        }
        self.stats.messages_delivered += n;
        self.next = first + n;
        self.high = self.next;
        // Nothing at or above the old `next` was held (`high == next`), so
        // the window moves without anything to empty.
        self.buf.advance_past_empty(self.next);
    }

    pub(super) fn on_message(
        &mut self,
        now: Instant,
        line: Line,
        s: u64,
        msg: Message,
        times: Times,
        retrans: bool,
    ) {
        let Times { sent: send_time, due: due_time } = times;
        if s < self.next || self.buf.present(s) {
            self.stats.duplicates += 1;
            return;
        }
        if self.cfg.order == Order::PerSymbol
            && self.synced
            && (self.syms.applied_already(&msg)
                || (s < self.buf.lo() && self.syms.slid_out_contains(s, self.next)))
        {
            self.passed_ahead(now, s, msg);
            return;
        }
        if s >= self.buf.hi() {
            self.overflow(now, s);
        }
        let deliverable = self.synced && s == self.next;
        if s < self.buf.lo() && !deliverable {
            // Below a window that slid forward while a snapshot is awaited: it
            // stays missing (the snapshot or a NACK will cover it).
            self.stats.buffer_dropped += 1;
            return;
        }
        if s >= self.high {
            if s > self.high {
                self.add_gap(now, self.high, s);
            }
            self.high = s + 1;
        } else {
            self.fill(now, s);
        }
        match (retrans, line) {
            (true, _) => self.stats.messages_retransmitted += 1,
            (false, Line::A) => self.stats.line_a_won += 1,
            (false, Line::B) => self.stats.line_b_won += 1,
            (false, Line::Unicast) => {}
        }
        if deliverable {
            self.deliver(now, s, msg, send_time, due_time, retrans);
            self.drain(now);
        } else if self.cfg.order == Order::PerSymbol
            && self.synced
            && self.syms.follows(&msg)
            && !self.syms.behind(&msg, s)
        {
            self.deliver_ahead(now, s, msg, times, retrans);
        } else {
            self.buf.store(s, msg, send_time, due_time);
            if self.cfg.order == Order::PerSymbol
                && self.synced
                && let Some(symbol) = self.syms.held(now, s, &msg)
            {
                self.stats.stale_periods = self.syms.periods;
                self.events.push_back(Event::SymbolStale {
                    symbol,
                    since: now,
                    reason: StaleReason::Gap,
                });
            }
        }
    }

    /// Per-symbol order: another copy of `s`, which went ahead of a hole
    /// before and whose mark left the buffer's window when it slid (an
    /// overflow). It is received again, not delivered again.
    fn passed_ahead(&mut self, now: Instant, s: u64, msg: Message) {
        self.stats.duplicates += 1;
        self.fill(now, s);
        if s == self.next {
            self.next += 1;
            self.buf.advance(self.next);
            self.drain(now);
        } else {
            self.buf.store_delivered(s, msg);
        }
    }

    /// Per-symbol order: `s` lies beyond a hole but is its symbol's next
    /// update. Deliver it now and mark it received, so the hole logic counts
    /// it and the in-order drain passes over it.
    fn deliver_ahead(&mut self, now: Instant, s: u64, msg: Message, times: Times, retrans: bool) {
        self.emit_ahead(s, msg, times, retrans);
        self.buf.store_delivered(s, msg);
        self.end_stale(now, s, &msg);
    }

    /// The event and counters of a message delivered ahead of a hole.
    fn emit_ahead(&mut self, s: u64, msg: Message, times: Times, recovered: bool) {
        self.events.push_back(Event::Message {
            seq: SeqNo(s),
            msg,
            send_time: times.sent,
            due_time: times.due,
            recovered,
        });
        self.stats.messages_delivered += 1;
        self.stats.messages_ahead += 1;
    }

    /// Track `msg`'s symbol after it was applied (per-symbol order), report
    /// what that changes of its staleness, and let the symbol's messages
    /// that waited for it go ahead.
    fn end_stale(&mut self, now: Instant, s: u64, msg: &Message) {
        self.track_applied(now, s, msg);
        if let Some(sym) = msg.symbol()
            && self.syms.held_max(sym) > s
        {
            self.release_waiting(now, sym, s + 1);
        }
    }

    /// Deliver ahead of the holes the messages of `sym` held from `from` on
    /// that now follow its last update, in order, until one does not (its
    /// predecessor is still missing) or none is left. A scan of the buffer
    /// up to the symbol's last held message.
    fn release_waiting(&mut self, now: Instant, sym: SymbolId, from: u64) {
        let mut q = from.max(self.buf.lo());
        loop {
            let last = self.syms.held_max(sym);
            if last == 0 {
                return;
            }
            let held = loop {
                if q > last {
                    return;
                }
                match self.buf.get(q) {
                    Some(h) if !h.delivered && h.msg.symbol() == Some(sym) => break h,
                    _ => q += 1,
                }
            };
            if !self.syms.follows(&held.msg) {
                return;
            }
            self.buf.mark_delivered(q);
            let times = Times { sent: held.send_time, due: held.due_time };
            self.emit_ahead(q, held.msg, times, true);
            self.stats.messages_held += 1;
            self.track_applied(now, q, &held.msg);
            q += 1;
        }
    }

    /// Per-symbol bookkeeping of one applied message, and its events.
    fn track_applied(&mut self, now: Instant, s: u64, msg: &Message) {
        match self.syms.applied(now, s, msg) {
            Some(ev @ Event::SymbolFresh { stale_for, .. }) => {
                self.stats.stale_ns_total += stale_for.as_nanos() as u64;
                self.events.push_back(ev);
            }
            Some(ev) => {
                self.stats.stale_periods = self.syms.periods;
                self.events.push_back(ev);
            }
            None => {}
        }
    }

    /// Sequences below `n` exist: anything in `[high, n)` is missing.
    pub(super) fn reveal(&mut self, now: Instant, n: u64) {
        if n > self.high {
            self.add_gap(now, self.high, n);
            self.high = n;
        }
    }

    pub(super) fn add_gap(&mut self, now: Instant, a: u64, b: u64) {
        self.stats.gaps_detected += 1;
        self.stats.messages_missed += b - a;
        let due = self.first_nack_due(now);
        self.gaps.push_back(Gap::new(a, b, now, due));
    }

    /// Message `s`, inside a hole, arrived.
    pub(super) fn fill(&mut self, now: Instant, s: u64) {
        let Some(i) = self.gaps.find(s) else { return };
        let buf = &self.buf;
        let g = &mut self.gaps.gaps[i];
        g.missing = g.missing.saturating_sub(1);
        if s == g.start {
            g.start += 1;
            while g.start < g.end && buf.present(g.start) {
                g.start += 1;
            }
        } else if s + 1 == g.end {
            g.end = s;
            while g.end > g.start && buf.present(g.end - 1) {
                g.end -= 1;
            }
        }
        if g.start >= g.end {
            let g = *g;
            self.gaps.gaps.remove(i);
            if g.nacked {
                self.stats.gaps_filled_retransmit += 1;
            } else {
                self.stats.gaps_filled_reorder += 1;
            }
            self.stats.record_recovery((now - g.detected).as_nanos() as u64);
        }
    }

    /// `s` is too far ahead for the buffer: a snapshot is needed (unless one is
    /// already awaited), and the window slides so `s` fits. Everything below the
    /// new window becomes one hole.
    pub(super) fn overflow(&mut self, now: Instant, s: u64) {
        if !self.snap.active {
            self.stats.buffer_overflows += 1;
            self.start_snapshot(now);
        }
        let new_lo = s + 1 - self.buf.cap();
        let old_lo = self.buf.lo().max(self.next);
        for q in old_lo..new_lo.min(self.buf.hi()) {
            match self.buf.get(q) {
                // Delivered ahead of the hole: remember it below the window,
                // so another copy is not delivered again.
                Some(h) if h.delivered => self.syms.slid_out(q, self.buf.cap()),
                Some(_) => self.stats.buffer_dropped += 1,
                None => {}
            }
        }
        self.buf.advance(new_lo);
        let mut merged = Gap::new(self.next, new_lo, now, now);
        merged.due = self.first_nack_due(now);
        let mut absorbed = false;
        while let Some(g) = self.gaps.gaps.front().copied() {
            if g.start >= new_lo {
                break;
            }
            self.gaps.gaps.pop_front();
            absorbed = true;
            merged.detected = merged.detected.min(g.detected);
            merged.nacked |= g.nacked;
            if g.end > new_lo {
                merged.end = g.end;
                let still =
                    (new_lo..g.end.min(self.buf.hi())).filter(|q| !self.buf.present(*q)).count();
                merged.missing =
                    (new_lo - self.next) + still as u64 + g.end.saturating_sub(self.buf.hi());
            }
        }
        if new_lo > self.high {
            self.stats.messages_missed += new_lo - self.high;
            self.high = new_lo;
        }
        if !absorbed {
            self.stats.gaps_detected += 1;
        }
        self.gaps.push_front(merged);
    }

    pub(super) fn deliver(
        &mut self,
        now: Instant,
        s: u64,
        msg: Message,
        send_time: u64,
        due_time: u64,
        recovered: bool,
    ) {
        if self.cfg.order == Order::PerSymbol && self.syms.behind(&msg, s) {
            self.stats.symbol_order_dropped += 1;
            self.next = s + 1;
            self.buf.advance(self.next);
            return;
        }
        self.events.push_back(Event::Message {
            seq: SeqNo(s),
            msg,
            send_time,
            due_time,
            recovered,
        });
        if self.cfg.order == Order::PerSymbol {
            self.end_stale(now, s, &msg);
        }
        self.stats.messages_delivered += 1;
        self.next = s + 1;
        self.buf.advance(self.next);
    }

    /// Deliver what the buffer holds from `next` on (passing over what was
    /// delivered ahead of the hole already).
    pub(super) fn drain(&mut self, now: Instant) {
        if !self.synced {
            return;
        }
        while let Some(h) = self.buf.get(self.next) {
            if h.delivered {
                self.next += 1;
                self.buf.advance(self.next);
            } else {
                self.stats.messages_held += 1;
                self.deliver(now, self.next, h.msg, h.send_time, h.due_time, true);
            }
        }
        self.check_end_of_session();
    }
}
