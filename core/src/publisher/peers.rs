//! Per-peer state of the request service: token buckets, linger, and the
//! bounded LRU table that holds it (one for peers, one for hosts).

use std::collections::HashMap;

use super::RequestLimits;
use crate::time::Instant;
use crate::wire::PacketRepr;

/// Served requests remembered per peer, for linger and to tell a retry
/// from a first request (multicast repair): 16, one per NACK a receiver
/// keeps in flight (`recovery::DEFAULT_MAX_OUTSTANDING_NACKS`), so a
/// receiver's retries are recognised however many holes it recovers at
/// once; ~40 bytes each.
const LINGER_SLOTS: usize = 16;

/// Token-bucket amounts are kept in byte·nanoseconds (bytes × 10^9), so a
/// refill of `rate × elapsed_ns` is exact however often it runs.
const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A served request, for linger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Recent {
    pub(super) kind: u8,
    pub(super) epoch: u64,
    pub(super) first_seq: u64,
    pub(super) count: u16,
    pub(super) at: Instant,
}

impl Recent {
    /// The request `repr`, received at `now`.
    pub(super) fn of(repr: &PacketRepr, now: Instant) -> Recent {
        Recent {
            kind: repr.kind.to_byte(),
            epoch: repr.epoch,
            first_seq: repr.first_seq.0,
            count: repr.count,
            at: now,
        }
    }
}

/// A token bucket of reply bytes, in byte·ns; negative after a snapshot
/// larger than the burst (later requests wait the debt out).
#[derive(Clone, Copy, Debug)]
pub(super) struct TokenBucket {
    tokens: i128,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A bucket holding its whole `burst`.
    pub(super) fn full(burst: u64, now: Instant) -> TokenBucket {
        TokenBucket { tokens: i128::from(burst) * NANOS_PER_SEC, refilled_at: now }
    }

    /// Refill at `rate` bytes/s up to `now`, capped at `burst`; returns whole
    /// bytes available (0 in debt).
    pub(super) fn available(&mut self, now: Instant, rate: u64, burst: u64) -> u64 {
        let elapsed = i128::from(now.0.saturating_sub(self.refilled_at.0));
        let cap = i128::from(burst) * NANOS_PER_SEC;
        self.tokens = (self.tokens + elapsed * i128::from(rate)).min(cap);
        if now > self.refilled_at {
            self.refilled_at = now;
        }
        u64::try_from(self.tokens.max(0) / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }

    pub(super) fn charge(&mut self, bytes: usize) {
        self.tokens -= bytes as i128 * NANOS_PER_SEC;
    }
}

/// What the service remembers about one peer (or one host: then only the
/// bucket is used).
#[derive(Clone, Debug)]
pub(super) struct PeerState {
    id: u64,
    pub(super) bucket: TokenBucket,
    pub(super) last_snapshot: Option<Instant>,
    recent: [Option<Recent>; LINGER_SLOTS],
    recent_next: usize,
}

impl PeerState {
    pub(super) fn new(id: u64, now: Instant, burst: u64) -> PeerState {
        PeerState {
            id,
            bucket: TokenBucket::full(burst, now),
            last_snapshot: None,
            recent: [None; LINGER_SLOTS],
            recent_next: 0,
        }
    }

    /// The peer's own bucket at the per-peer rate of `limits`.
    pub(super) fn available(&mut self, now: Instant, limits: &RequestLimits) -> u64 {
        self.bucket.available(now, limits.rate_bytes_per_sec, limits.burst_bytes)
    }

    pub(super) fn is_duplicate(&self, r: &Recent, linger: std::time::Duration) -> bool {
        self.recent.iter().flatten().any(|x| {
            x.kind == r.kind
                && x.epoch == r.epoch
                && x.first_seq == r.first_seq
                && x.count == r.count
                && r.at < x.at + linger
        })
    }

    /// True if this peer was served a NACK of `r`'s epoch overlapping `r`'s
    /// range at least `linger` before `r`: `r` is a retry (its answer did
    /// not come), not a copy of the same request.
    pub(super) fn retries(&self, r: &Recent, linger: std::time::Duration) -> bool {
        let end = r.first_seq.saturating_add(u64::from(r.count));
        self.recent.iter().flatten().any(|x| {
            x.kind == r.kind
                && x.epoch == r.epoch
                && x.first_seq < end
                && r.first_seq < x.first_seq.saturating_add(u64::from(x.count))
                && x.at + linger <= r.at
        })
    }

    pub(super) fn remember(&mut self, r: Recent) {
        self.recent[self.recent_next] = Some(r);
        self.recent_next = (self.recent_next + 1) % LINGER_SLOTS;
    }
}

/// "No slot" in the LRU links.
const NIL: usize = usize::MAX;

/// One slot of the peer table: the state and its links in the LRU list.
#[derive(Clone, Debug)]
struct Entry {
    state: PeerState,
    prev: usize,
    next: usize,
}

/// Per-peer state, bounded: when full, the least recently seen peer is
/// evicted. An intrusive doubly linked LRU list over a slab makes lookup,
/// touch, eviction and removal O(1), so a flood of requests from ever new
/// peer ids costs no more per request than one from a known peer.
#[derive(Debug)]
pub(super) struct PeerTable {
    slots: Vec<Entry>,
    free: Vec<usize>,
    index: HashMap<u64, usize>,
    /// Most recently seen.
    head: usize,
    /// Least recently seen: the next to evict.
    tail: usize,
    max: usize,
}

impl PeerTable {
    pub(super) fn new(max: usize) -> PeerTable {
        PeerTable {
            slots: Vec::with_capacity(max),
            free: Vec::with_capacity(max),
            // Twice the entries: hashbrown then always rehashes in place when
            // eviction tombstones use up its growth room, so churn never allocates.
            index: HashMap::with_capacity(max.saturating_mul(2)),
            head: NIL,
            tail: NIL,
            max,
        }
    }

    pub(super) fn unlink(&mut self, i: usize) {
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next].prev = prev;
        }
        self.slots[i].prev = NIL;
        self.slots[i].next = NIL;
    }

    pub(super) fn push_front(&mut self, i: usize) {
        self.slots[i].prev = NIL;
        self.slots[i].next = self.head;
        if self.head == NIL {
            self.tail = i;
        } else {
            self.slots[self.head].prev = i;
        }
        self.head = i;
    }

    /// The slot of `peer`, created with a full bucket of `burst` bytes
    /// (evicting the least recently seen peer if the table is full) if
    /// needed. Returns the slot and whether a peer was evicted.
    pub(super) fn touch(&mut self, peer: u64, now: Instant, burst: u64) -> (usize, bool) {
        if let Some(&i) = self.index.get(&peer) {
            self.unlink(i);
            self.push_front(i);
            return (i, false);
        }
        let state = PeerState::new(peer, now, burst);
        let (i, evicted) = if let Some(i) = self.free.pop() {
            self.slots[i].state = state;
            (i, false)
        } else if self.slots.len() < self.max {
            self.slots.push(Entry { state, prev: NIL, next: NIL });
            (self.slots.len() - 1, false)
        } else {
            let victim = self.tail;
            self.unlink(victim);
            self.index.remove(&self.slots[victim].state.id);
            self.slots[victim].state = state;
            (victim, true)
        };
        self.index.insert(peer, i);
        self.push_front(i);
        (i, evicted)
    }

    pub(super) fn forget(&mut self, peer: u64) {
        if let Some(i) = self.index.remove(&peer) {
            self.unlink(i);
            self.free.push(i);
        }
    }

    pub(super) fn get_mut(&mut self, i: usize) -> &mut PeerState {
        &mut self.slots[i].state
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn limits() -> RequestLimits {
        RequestLimits { rate_bytes_per_sec: 1000, burst_bytes: 2000, ..RequestLimits::default() }
    }

    #[test]
    fn bucket_refills_exactly_and_caps_at_burst() {
        let l = limits();
        let mut p = PeerState::new(1, Instant(0), l.burst_bytes);
        assert_eq!(p.available(Instant(0), &l), 2000);
        p.bucket.charge(1500);
        assert_eq!(p.available(Instant(0), &l), 500);
        // 1 ns at a time for 1 ms: 1000 B/s × 1 ms = 1 byte, not lost to rounding.
        for t in 1..=1_000_000u64 {
            p.available(Instant(t), &l);
        }
        assert_eq!(p.available(Instant(1_000_000), &l), 501);
        assert_eq!(p.available(Instant(10_000_000_000), &l), 2000, "capped at the burst");
        p.bucket.charge(5000);
        assert_eq!(p.available(Instant(10_000_000_000), &l), 0, "in debt");
        assert_eq!(p.available(Instant(13_000_000_000), &l), 0, "debt of 3000 repaid");
        assert_eq!(p.available(Instant(13_500_000_000), &l), 500);
    }

    #[test]
    fn linger_matches_only_identical_requests_inside_the_window() {
        let l = RequestLimits { linger: Duration::from_millis(10), ..limits() };
        let mut p = PeerState::new(1, Instant(0), l.burst_bytes);
        let r = Recent { kind: 16, epoch: 1, first_seq: 5, count: 3, at: Instant(0) };
        p.remember(r);
        assert!(p.is_duplicate(&Recent { at: Instant(9_999_999), ..r }, l.linger));
        assert!(!p.is_duplicate(&Recent { at: Instant(10_000_000), ..r }, l.linger));
        assert!(!p.is_duplicate(&Recent { count: 4, ..r }, l.linger));
        assert!(!p.is_duplicate(&Recent { kind: 17, ..r }, l.linger));
    }

    #[test]
    fn a_retry_overlaps_a_request_served_before_the_linger() {
        let linger = Duration::from_micros(100);
        let mut p = PeerState::new(1, Instant(0), 1 << 20);
        let r = Recent { kind: 16, epoch: 1, first_seq: 10, count: 10, at: Instant(0) };
        p.remember(r);
        let at = Instant(200_000);
        assert!(p.retries(&Recent { at, ..r }, linger), "the same range again");
        assert!(p.retries(&Recent { first_seq: 15, count: 2, at, ..r }, linger), "what is left");
        assert!(p.retries(&Recent { first_seq: 19, count: 5, at, ..r }, linger), "overlapping");
        assert!(!p.retries(&Recent { first_seq: 20, count: 5, at, ..r }, linger), "disjoint");
        assert!(!p.retries(&Recent { epoch: 2, at, ..r }, linger), "another session");
        assert!(!p.retries(&Recent { at: Instant(50_000), ..r }, linger), "a copy, in the linger");
    }

    #[test]
    fn peer_table_evicts_least_recently_seen_and_forgets() {
        let l = limits();
        let mut t = PeerTable::new(2);
        assert_eq!(t.touch(10, Instant(1), l.burst_bytes), (0, false));
        assert_eq!(t.touch(20, Instant(2), l.burst_bytes), (1, false));
        assert_eq!(t.touch(10, Instant(3), l.burst_bytes), (0, false));
        // 20 was seen least recently.
        assert_eq!(t.touch(30, Instant(4), l.burst_bytes), (1, true));
        assert!(t.index.contains_key(&10) && t.index.contains_key(&30));
        assert!(!t.index.contains_key(&20));
        // Now 10 is the least recently seen.
        assert_eq!(t.touch(40, Instant(5), l.burst_bytes), (0, true));
        assert!(!t.index.contains_key(&10));
        t.forget(30);
        assert_eq!(t.len(), 1);
        t.forget(99);
        assert_eq!(t.len(), 1);
        // The freed slot is reused without evicting anyone.
        assert_eq!(t.touch(50, Instant(6), l.burst_bytes), (1, false));
        assert_eq!(t.len(), 2);
        assert_eq!(t.touch(60, Instant(7), l.burst_bytes), (0, true), "40 was least recent");
        assert_eq!(t.get_mut(0).id, 60);
    }

    #[test]
    fn peer_table_lru_order_survives_churn() {
        // Against a naive model: a Vec ordered from least to most recent.
        let l = limits();
        let mut t = PeerTable::new(5);
        let mut model: Vec<u64> = Vec::new();
        let mut x = 7u64;
        for step in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let peer = (x >> 33) % 9;
            if (x >> 20) % 5 == 0 {
                t.forget(peer);
                model.retain(|&p| p != peer);
            } else {
                let (_, evicted) = t.touch(peer, Instant(step), l.burst_bytes);
                let known = model.contains(&peer);
                model.retain(|&p| p != peer);
                let model_evicts = !known && model.len() == 5;
                if model_evicts {
                    model.remove(0);
                }
                model.push(peer);
                assert_eq!(evicted, model_evicts, "step {step}");
            }
            assert_eq!(t.len(), model.len());
            let mut order = Vec::new();
            let mut i = t.tail;
            while i != NIL {
                order.push(t.slots[i].state.id);
                i = t.slots[i].prev;
            }
            assert_eq!(order, model, "step {step}");
        }
    }
}
