//! Per-symbol delivery order ([`Order::PerSymbol`]): what the receiver knows
//! of each symbol's update number, which symbols wait behind a hole (stale),
//! and since when.
//!
//! A message carries its symbol's update number (a Quote's `symbol_seq`, a
//! Trade's low 32 bits of it; PROTOCOL.md § 4). The receiver has applied
//! updates `1..next` of a symbol exactly when every message of that symbol
//! below the feed's first hole, and every one it delivered ahead of a hole,
//! is applied; so a message whose update number is `next` proves that
//! nothing of its symbol is missing before it, and is applied at once, gap
//! or no gap (CME MDP 3.0's `RptSeq`). Any other message of a symbol waits in
//! the reorder buffer and is delivered in feed order when the hole in front
//! of it fills, so every symbol sees exactly the messages, in exactly the
//! order, that the strict order gives it.
//!
//! A symbol is stale from the moment one of its messages has to wait (a
//! hole not yet filled, [`StaleReason::Gap`]) until the last such message is
//! applied; or from the moment the receiver knows one of its updates will
//! never come ([`StaleReason::GivenUp`]: a hole given up on) until a snapshot
//! restores it.

use super::*;

/// Symbols tracked per symbol id (ids at or above are delivered in feed
/// order only): the snapshot's bound, [`DEFAULT_MAX_SNAPSHOT_SYMBOLS`]. The
/// table grows to the highest id seen (40 bytes per symbol), so a forged id
/// costs at most 40 MB once.
pub const MAX_TRACKED_SYMBOLS: usize = DEFAULT_MAX_SNAPSHOT_SYMBOLS as usize;

const _: () = assert!(std::mem::size_of::<Track>() == 40);

/// Why a symbol is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StaleReason {
    /// One of its messages waits for a hole in front of it to be filled.
    Gap,
    /// An update of it was given up on (`Event::Unrecoverable`): its state is
    /// wrong until a snapshot restores it.
    GivenUp,
}

/// What is known of one symbol.
#[derive(Clone, Copy, Debug, Default)]
struct Track {
    /// The update number its next message must carry to be applied at once;
    /// 0: not known (a late joiner without a snapshot, an old publisher).
    next: u64,
    /// Highest sequence of a message of it that waits in the buffer (0: none).
    held_max: u64,
    /// Sequence of the last message of it delivered (0: none).
    last_seq: u64,
    /// Since when it is stale (`Instant` ns + 1; 0: fresh).
    stale_since: u64,
    /// Why, while stale.
    reason: Option<StaleReason>,
}

/// The per-symbol state of a [`Receiver`] in [`Order::PerSymbol`].
#[derive(Debug, Default)]
pub(super) struct Symbols {
    tracks: Vec<Track>,
    /// Symbols the table has not seen yet start at update 1 (the session is
    /// followed from its first message, or from a snapshot that names every
    /// symbol with updates).
    base_known: bool,
    /// Symbols stale now.
    pub(super) stale: u64,
    /// Stale periods begun (this session and before: never reset).
    pub(super) periods: u64,
    /// Sequences delivered ahead of a hole whose mark left the reorder
    /// buffer's window when it slid forward (an overflow), ascending; at most
    /// one buffer's worth (the oldest go first).
    slid_out: VecDeque<u64>,
}

/// The update number `msg` carries, in full: a Quote's as it is, a Trade's
/// low 32 bits widened to the number nearest `near` (the symbol's expected
/// next, or 0 when unknown). `None`: an unknown type, or a message that
/// carries none (0).
fn update_number(msg: &Message, near: u64) -> Option<u64> {
    match msg {
        // 0: a publisher that does not number its symbols' updates.
        Message::Quote(q) if q.symbol_seq != 0 => Some(q.symbol_seq),
        Message::Trade(t) if t.symbol_seq != 0 => Some(widen(near, t.symbol_seq)),
        _ => None,
    }
}

/// The full update number nearest `near` whose low 32 bits are `low`.
fn widen(near: u64, low: u32) -> u64 {
    let base = near & !0xffff_ffff;
    let c = base | u64::from(low);
    let half = 1u64 << 31;
    if c + half < near {
        c + (1 << 32)
    } else if c > near + half && c >= 1 << 32 {
        c - (1 << 32)
    } else {
        c
    }
}

impl Symbols {
    /// Forget everything; `base_known`: every symbol is at its first update.
    pub(super) fn reset(&mut self, base_known: bool) {
        self.tracks.clear();
        self.slid_out.clear();
        self.base_known = base_known;
        self.stale = 0;
    }

    fn track(&mut self, symbol: SymbolId) -> Option<&mut Track> {
        let i = symbol as usize;
        if i >= MAX_TRACKED_SYMBOLS {
            return None;
        }
        if i >= self.tracks.len() {
            let next = u64::from(self.base_known);
            self.tracks.resize(i + 1, Track { next, ..Track::default() });
        }
        Some(&mut self.tracks[i])
    }

    /// True when `msg` is its symbol's next update: it may be applied now.
    /// (Another message of the symbol may still wait behind a hole: it has a
    /// later update number, and stays where it is.)
    pub(super) fn follows(&mut self, msg: &Message) -> bool {
        let Some(sym) = msg.symbol() else { return false };
        match self.track(sym) {
            Some(t) => t.next != 0 && update_number(msg, t.next) == Some(t.next),
            None => false,
        }
    }

    /// True when `msg` was applied already: its symbol is past its update
    /// number (it went ahead of a hole, and its mark in the reorder buffer
    /// may have left the window since).
    pub(super) fn applied_already(&mut self, msg: &Message) -> bool {
        let Some(sym) = msg.symbol() else { return false };
        match self.track(sym) {
            Some(t) => t.next != 0 && update_number(msg, t.next).is_some_and(|u| u < t.next),
            None => false,
        }
    }

    /// `msg` is applied (in feed order, or ahead of a hole). Returns the
    /// event this causes, if any: the end of its symbol's stale period, or
    /// the news that an update of it was skipped.
    pub(super) fn applied(&mut self, now: Instant, seq: u64, msg: &Message) -> Option<Event> {
        let sym = msg.symbol()?;
        let t = self.track(sym)?;
        t.last_seq = seq;
        let (mut newly_stale, mut given_up) = (false, false);
        match update_number(msg, t.next) {
            Some(u) if t.next == 0 => t.next = u + 1,
            Some(u) if u != t.next => {
                // An update of the symbol was skipped: given up on (or the
                // publisher's numbering is not continuous).
                t.next = u + 1;
                if t.reason != Some(StaleReason::GivenUp) {
                    if t.stale_since == 0 {
                        t.stale_since = now.0 + 1;
                        newly_stale = true;
                    }
                    t.reason = Some(StaleReason::GivenUp);
                    given_up = true;
                }
            }
            // The next update, or a trade that carries no number.
            _ if t.next != 0 => t.next += 1,
            _ => {}
        }
        let ends_wait = t.held_max != 0 && seq >= t.held_max;
        if ends_wait {
            t.held_max = 0;
        }
        if given_up {
            let since = Instant(t.stale_since - 1);
            if newly_stale {
                self.stale += 1;
                self.periods += 1;
            }
            return Some(Event::SymbolStale { symbol: sym, since, reason: StaleReason::GivenUp });
        }
        if ends_wait && t.reason == Some(StaleReason::Gap) {
            return self
                .freshen(sym, now)
                .map(|(symbol, stale_for)| Event::SymbolFresh { symbol, stale_for });
        }
        None
    }

    /// True when a message of `msg`'s symbol at or after `seq` was delivered
    /// already: delivering `msg` now would break its symbol's order. Only an
    /// inconsistent feed (update numbers that disagree with the sequence)
    /// gets here; the message is dropped and counted.
    pub(super) fn behind(&self, msg: &Message, seq: u64) -> bool {
        msg.symbol().and_then(|s| self.tracks.get(s as usize)).is_some_and(|t| seq <= t.last_seq)
    }

    /// Sequence `q`, delivered ahead of a hole, leaves the buffer's window
    /// (of `cap` slots).
    pub(super) fn slid_out(&mut self, q: u64, cap: u64) {
        if self.slid_out.len() as u64 >= cap {
            self.slid_out.pop_front();
        }
        self.slid_out.push_back(q);
    }

    /// True when `q` was delivered ahead and slid out of the window; forgets
    /// those below `next` (they can no longer come up).
    pub(super) fn slid_out_contains(&mut self, q: u64, next: u64) -> bool {
        while self.slid_out.front().is_some_and(|&f| f < next) {
            self.slid_out.pop_front();
        }
        self.slid_out.binary_search(&q).is_ok()
    }

    /// Highest sequence of a message of `symbol` that waits (0: none).
    pub(super) fn held_max(&self, symbol: SymbolId) -> u64 {
        self.tracks.get(symbol as usize).map_or(0, |t| t.held_max)
    }

    /// A message of `msg`'s symbol at `seq` has to wait. Returns the symbol
    /// if it just became stale.
    pub(super) fn held(&mut self, now: Instant, seq: u64, msg: &Message) -> Option<SymbolId> {
        let sym = msg.symbol()?;
        let t = self.track(sym)?;
        t.held_max = t.held_max.max(seq);
        if t.stale_since != 0 {
            return None;
        }
        t.stale_since = now.0 + 1;
        t.reason = Some(StaleReason::Gap);
        self.stale += 1;
        self.periods += 1;
        Some(sym)
    }

    fn freshen(&mut self, sym: SymbolId, now: Instant) -> Option<(SymbolId, Duration)> {
        let t = self.tracks.get_mut(sym as usize)?;
        if t.stale_since == 0 {
            return None;
        }
        let since = Instant(t.stale_since - 1);
        t.stale_since = 0;
        t.reason = None;
        self.stale -= 1;
        Some((sym, now.saturating_duration_since(since)))
    }

    /// A snapshot's record for a symbol: its state after `updates` updates.
    /// False when the receiver has already applied updates of the symbol
    /// past the snapshot's (delivered ahead of a hole): the record is older
    /// than the cache and must not be applied.
    pub(super) fn snapshot_record(&mut self, symbol: SymbolId, updates: u64) -> bool {
        let Some(t) = self.track(symbol) else { return true };
        if t.next > updates + 1 {
            return false;
        }
        t.next = updates + 1;
        true
    }

    /// A snapshot consistent at `s` was applied: the messages it superseded
    /// are gone, so symbols that waited only for them, or were given up on,
    /// are fresh. Pushes a `SymbolFresh` event for each.
    pub(super) fn after_snapshot(
        &mut self,
        now: Instant,
        s: u64,
        events: &mut VecDeque<Event>,
    ) -> (u64, u64) {
        self.base_known = true;
        let (mut n, mut ns) = (0u64, 0u64);
        for i in 0..self.tracks.len() {
            let t = &mut self.tracks[i];
            if t.held_max != 0 && t.held_max < s {
                t.held_max = 0;
            }
            if t.stale_since != 0 && t.held_max == 0 {
                if let Some((symbol, d)) = self.freshen(i as SymbolId, now) {
                    events.push_back(Event::SymbolFresh { symbol, stale_for: d });
                    n += 1;
                    ns += d.as_nanos() as u64;
                }
            }
        }
        (n, ns)
    }

    /// Holes were given up on and the feed moved on to `next`: a symbol that
    /// waited for them and has nothing held any more missed an update. Pushes
    /// a `SymbolStale { reason: GivenUp }` for each.
    pub(super) fn after_give_up(&mut self, next: u64, events: &mut VecDeque<Event>) {
        for (i, t) in self.tracks.iter_mut().enumerate() {
            if t.held_max != 0 && t.held_max < next {
                t.held_max = 0;
            }
            if t.reason == Some(StaleReason::Gap) && t.held_max == 0 {
                t.reason = Some(StaleReason::GivenUp);
                events.push_back(Event::SymbolStale {
                    symbol: i as SymbolId,
                    since: Instant(t.stale_since - 1),
                    reason: StaleReason::GivenUp,
                });
            }
        }
    }

    /// The session ended or restarted: every stale period ends now. Returns
    /// how many and their total length (ns).
    pub(super) fn close_all(&mut self, now: Instant) -> (u64, u64) {
        let (mut n, mut ns) = (0u64, 0u64);
        for t in self.tracks.iter_mut().filter(|t| t.stale_since != 0) {
            n += 1;
            ns += now.saturating_duration_since(Instant(t.stale_since - 1)).as_nanos() as u64;
            t.stale_since = 0;
            t.reason = None;
        }
        self.stale = 0;
        (n, ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_picks_the_nearest_full_number() {
        assert_eq!(widen(5, 6), 6);
        assert_eq!(widen((1 << 32) + 3, 4), (1 << 32) + 4);
        // just below a wrap, the low word restarting is the next one up
        assert_eq!(widen((1 << 32) - 2, 1), (1 << 32) + 1);
        // just above a wrap, a high low word is the one below
        assert_eq!(widen((1 << 32) + 1, u32::MAX), (1 << 32) - 1);
        assert_eq!(widen(0, 7), 7);
    }
}
