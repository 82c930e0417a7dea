//! Packet authentication as a wrapper: [`Authenticated`] seals every packet
//! a transport sends with a keyed MAC and lets through only received packets
//! whose MAC verifies, tag stripped (docs/PROTOCOL.md § 12,
//! [`tickwire_core::wire::auth`]). Everything above it (the core's publisher
//! and receiver) sees exactly the packets it would see without a key; what
//! fails is counted (`auth_rejected` in [`PubStats`] / [`SubStats`]) and
//! dropped, never ends a session.
//!
//! The wrapper's [`Publisher::max_packet_len`] is the inner one's minus
//! [`TAG_LEN`], so the sealed packet still fits the transport.

use std::io;
use std::time::Duration;

use tickwire_core::wire::MAX_PACKET_LEN;
use tickwire_core::wire::auth::{AuthKey, TAG_LEN, open, seal};

use crate::{
    OnPubEvent, OnSubEvent, PeerId, PubEvent, PubStats, Publisher, SubEvent, SubStats, Subscriber,
};

/// A transport whose packets carry a MAC. See the [module docs](self).
#[derive(Debug)]
pub struct Authenticated<T> {
    inner: T,
    key: AuthKey,
    /// Where outgoing replies are sealed and incoming packets opened.
    scratch: Vec<u8>,
    rejected: u64,
}

impl<T> Authenticated<T> {
    /// Wrap `inner`, sealing and verifying with `key`.
    pub fn new(inner: T, key: AuthKey) -> Authenticated<T> {
        Authenticated { inner, key, scratch: vec![0; MAX_PACKET_LEN], rejected: 0 }
    }

    /// Received packets refused (no MAC, wrong MAC, not a packet).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Seal `packet` into the scratch buffer; its length.
    fn seal_copy(&mut self, packet: &[u8]) -> io::Result<usize> {
        let dst = self.scratch.get_mut(..packet.len()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "packet too long to seal")
        })?;
        dst.copy_from_slice(packet);
        seal(&self.key, &mut self.scratch, packet.len())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
    }
}

impl<P: Publisher> Publisher for Authenticated<P> {
    fn max_packet_len(&self) -> usize {
        self.inner.max_packet_len() - TAG_LEN
    }

    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        let key = &self.key;
        self.inner.publish_with(&mut |buf| {
            let room = buf.len().saturating_sub(TAG_LEN);
            let n = fill(&mut buf[..room]);
            if n == 0 {
                return 0;
            }
            if n > room {
                return usize::MAX; // a broken fill: let the inner transport refuse it
            }
            seal(key, buf, n).unwrap_or(0)
        })
    }

    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        let n = self.seal_copy(packet)?;
        self.inner.send_to(peer, &self.scratch[..n])
    }

    fn send_to_group(&mut self, packet: &[u8]) -> io::Result<()> {
        let n = self.seal_copy(packet)?;
        self.inner.send_to_group(&self.scratch[..n])
    }

    forward_peer_controls!();

    /// Requests whose MAC does not verify are counted and not reported.
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        let (key, scratch, rejected) = (&self.key, &mut self.scratch, &mut self.rejected);
        self.inner.poll(timeout, &mut |ev| match ev {
            PubEvent::Request { peer, packet } => match open(key, packet, scratch) {
                Ok(n) => on_event(PubEvent::Request { peer, packet: &scratch[..n] }),
                Err(_) => *rejected += 1,
            },
            ev => on_event(ev),
        })
    }

    fn stats(&self) -> PubStats {
        PubStats { auth_rejected: self.rejected, ..self.inner.stats() }
    }

    fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

impl<S: Subscriber> Subscriber for Authenticated<S> {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        let n = self.seal_copy(packet)?;
        self.inner.send_request(&self.scratch[..n])
    }

    /// Packets whose MAC does not verify are counted and not reported.
    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        let (key, scratch, rejected) = (&self.key, &mut self.scratch, &mut self.rejected);
        self.inner.poll(timeout, &mut |ev| match ev {
            SubEvent::Packet { line, packet, kernel_rx_ns } => match open(key, packet, scratch) {
                Ok(n) => on_event(SubEvent::Packet { line, packet: &scratch[..n], kernel_rx_ns }),
                Err(_) => *rejected += 1,
            },
            ev => on_event(ev),
        })
    }

    fn reconnect(&mut self) -> io::Result<()> {
        self.inner.reconnect()
    }

    fn stats(&self) -> SubStats {
        SubStats { auth_rejected: self.rejected, ..self.inner.stats() }
    }
}
