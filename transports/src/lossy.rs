//! Seeded loss injection around any transport, as smoltcp's `FaultInjector`.
//!
//! [`Lossy<T>`] wraps a [`Publisher`] or a [`Subscriber`] and drops packets
//! with a fixed probability in each direction. "tx" is what the wrapped side
//! sends (a publisher's packets and replies, a subscriber's requests), "rx"
//! what it receives (requests at a publisher, packets at a subscriber).
//! Connection events always pass.
//!
//! Each direction draws from its own Xoshiro256++ stream seeded from
//! [`LossConfig::seed`], so the drop pattern of one direction is a pure
//! function of the seed and the number of packets that went that way: the same
//! seed drops the same packets, whatever the timing.
//!
//! ```
//! use tickwire_transports::lossy::{LossConfig, Lossy};
//! # fn wrap<P: tickwire_transports::Publisher>(p: P) -> Lossy<P> {
//! Lossy::new(p, LossConfig { tx_drop: 0.01, rx_drop: 0.0, seed: 42 })
//! # }
//! ```

use std::io;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::{
    OnPubEvent, OnSubEvent, PeerId, PubEvent, PubStats, Publisher, SubEvent, SubStats, Subscriber,
};

/// Drop probabilities and the seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossConfig {
    /// Probability of dropping each packet the wrapped side sends. Values at
    /// or below 0 never drop, at or above 1 always drop.
    pub tx_drop: f64,
    /// Probability of dropping each packet the wrapped side receives.
    pub rx_drop: f64,
    /// Seed of the drop pattern.
    pub seed: u64,
}

/// What the wrapper dropped and let through.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossStats {
    /// Outgoing packets dropped.
    pub tx_dropped: u64,
    /// Outgoing packets passed to the transport.
    pub tx_passed: u64,
    /// Incoming packets dropped.
    pub rx_dropped: u64,
    /// Incoming packets passed up.
    pub rx_passed: u64,
}

/// One direction's drop decision.
#[derive(Clone, Debug)]
struct Dropper {
    p: f64,
    rng: Xoshiro256PlusPlus,
}

impl Dropper {
    /// One draw per packet, whatever `p` is, so the pattern depends only on
    /// the seed and the packet's position.
    fn drop_next(&mut self) -> bool {
        let x: f64 = self.rng.random();
        x < self.p
    }
}

/// A transport with seeded packet loss. See the [module docs](self).
#[derive(Debug)]
pub struct Lossy<T> {
    inner: T,
    tx: Dropper,
    rx: Dropper,
    stats: LossStats,
    /// Where a dropped publish is encoded (the fill is called exactly once,
    /// as the trait promises, even when its packet is dropped).
    discard: Vec<u8>,
}

impl<T> Lossy<T> {
    /// Wrap `inner`.
    pub fn new(inner: T, cfg: LossConfig) -> Lossy<T> {
        let tx_rng = Xoshiro256PlusPlus::seed_from_u64(cfg.seed);
        // The rx stream starts 2^128 draws later: it never overlaps the tx one.
        let mut rx_rng = tx_rng.clone();
        rx_rng.jump();
        Lossy {
            inner,
            tx: Dropper { p: cfg.tx_drop, rng: tx_rng },
            rx: Dropper { p: cfg.rx_drop, rng: rx_rng },
            stats: LossStats::default(),
            discard: Vec::new(),
        }
    }

    /// What was dropped so far.
    pub fn dropped(&self) -> LossStats {
        self.stats
    }

    /// The wrapped transport.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The wrapped transport, mutably.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// Unwrap.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Decide the fate of one outgoing packet, counting it.
    fn tx_drop(&mut self) -> bool {
        let d = self.tx.drop_next();
        if d {
            self.stats.tx_dropped += 1;
        } else {
            self.stats.tx_passed += 1;
        }
        d
    }
}

/// Decide the fate of one incoming packet, counting it.
fn rx_drop(rx: &mut Dropper, stats: &mut LossStats) -> bool {
    let d = rx.drop_next();
    if d {
        stats.rx_dropped += 1;
    } else {
        stats.rx_passed += 1;
    }
    d
}

impl<P: Publisher> Publisher for Lossy<P> {
    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_packet_len(&self) -> usize {
        self.inner.max_packet_len()
    }

    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        if self.tx_drop() {
            let len = self.inner.max_packet_len();
            self.discard.resize(len, 0);
            fill(&mut self.discard);
            Ok(())
        } else {
            self.inner.publish_with(fill)
        }
    }

    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        if self.tx_drop() { Ok(()) } else { self.inner.send_to(peer, packet) }
    }

    /// A repair on the group crosses the same lossy path as the feed.
    fn send_to_group(&mut self, packet: &[u8]) -> io::Result<()> {
        if self.tx_drop() { Ok(()) } else { self.inner.send_to_group(packet) }
    }

    forward_peer_controls!();

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        let (rx, stats) = (&mut self.rx, &mut self.stats);
        self.inner.poll(timeout, &mut |ev| match ev {
            PubEvent::Request { .. } if rx_drop(rx, stats) => {}
            ev => on_event(ev),
        })
    }

    fn stats(&self) -> PubStats {
        self.inner.stats()
    }
}

impl<S: Subscriber> Subscriber for Lossy<S> {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        if self.tx_drop() { Ok(()) } else { self.inner.send_request(packet) }
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        let (rx, stats) = (&mut self.rx, &mut self.stats);
        self.inner.poll(timeout, &mut |ev| match ev {
            SubEvent::Packet { .. } if rx_drop(rx, stats) => {}
            ev => on_event(ev),
        })
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.inner.reconnect()
    }

    fn stats(&self) -> SubStats {
        self.inner.stats()
    }
}
