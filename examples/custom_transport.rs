// Run: cargo run --release -p tickwire-examples --example custom_transport
// (add `-- --drop-every 500` to break it on purpose and watch the suite catch it)
//
//! A transport of your own, checked with the conformance suite every
//! built-in transport passes (`tickwire_transports::conformance`).
//!
//! The transport here is in-process: a publisher and its subscribers share
//! a hub of queues on one thread (for tests, or a strategy co-located with
//! its feed). It is a stream transport in the suite's sense: subscribers
//! report `Connected`, log in, and receive published packets once the
//! publisher marks them live; replies (`send_to`) reach one subscriber.
//! It implements the two traits, [`Publisher`] and [`Subscriber`], and keeps
//! the counters the suite checks against what it saw.
//!
//! `--drop-every N` makes the publisher silently lose every Nth packet it
//! publishes: the suite must then fail (the process panics, exit code 101),
//! naming the check and the first packet missing.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use tickwire_transports::conformance::{self, Delivery, Params, Profile};
use tickwire_transports::{
    DisconnectReason, Line, OnPubEvent, OnSubEvent, PeerId, PubEvent, PubStats, Publisher,
    SubEvent, SubStats, Subscriber,
};

/// Largest packet: a jumbo datagram's worth (any size works in memory).
const MAX_PACKET: usize = 9000;

/// One subscriber's end of the hub.
#[derive(Debug, Default)]
struct Slot {
    live: bool,
    closed: Option<DisconnectReason>,
    inbox: VecDeque<Vec<u8>>,
}

/// What the publisher and its subscribers share.
#[derive(Debug, Default)]
struct Hub {
    slots: Vec<Slot>,
    requests: VecDeque<(PeerId, Vec<u8>)>,
    disconnected: VecDeque<(PeerId, DisconnectReason)>,
}

/// The publishing side.
#[derive(Debug)]
struct HubPublisher {
    hub: Rc<RefCell<Hub>>,
    buf: Vec<u8>,
    stats: PubStats,
    drop_every: Option<u64>,
    published: u64,
    /// Subscribers reported `Connected` (the first `accepted` slots).
    accepted: usize,
}

impl HubPublisher {
    fn new(drop_every: Option<u64>) -> HubPublisher {
        HubPublisher {
            hub: Rc::default(),
            buf: vec![0; MAX_PACKET],
            stats: PubStats::default(),
            drop_every,
            published: 0,
            accepted: 0,
        }
    }

    /// A new subscriber: a connection, in TCP's terms.
    fn connect(&self) -> HubSubscriber {
        let mut hub = self.hub.borrow_mut();
        hub.slots.push(Slot::default());
        HubSubscriber {
            hub: self.hub.clone(),
            peer: (hub.slots.len() - 1) as PeerId,
            reported_connected: false,
            reported_closed: false,
            stats: SubStats::default(),
        }
    }
}

impl Publisher for HubPublisher {
    fn max_packet_len(&self) -> usize {
        MAX_PACKET
    }

    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        let n = fill(&mut self.buf);
        self.published += 1;
        if self.drop_every.is_some_and(|k| self.published % k == 0) {
            return Ok(()); // the deliberate bug
        }
        let mut hub = self.hub.borrow_mut();
        for slot in hub.slots.iter_mut().filter(|s| s.live && s.closed.is_none()) {
            slot.inbox.push_back(self.buf[..n].to_vec());
            self.stats.packets_sent += 1;
            self.stats.bytes_sent += n as u64;
        }
        // One hand-off per publish: the in-process counterpart of a send call.
        self.stats.syscalls += 1;
        Ok(())
    }

    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        let mut hub = self.hub.borrow_mut();
        let slot = hub
            .slots
            .get_mut(peer as usize)
            .filter(|s| s.closed.is_none())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no such peer"))?;
        slot.inbox.push_back(packet.to_vec());
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += packet.len() as u64;
        self.stats.syscalls += 1;
        Ok(())
    }

    fn set_live(&mut self, peer: PeerId, live: bool) {
        if let Some(slot) = self.hub.borrow_mut().slots.get_mut(peer as usize) {
            slot.live = live;
        }
    }

    fn disconnect(&mut self, peer: PeerId, reason: DisconnectReason) {
        let mut hub = self.hub.borrow_mut();
        if let Some(slot) = hub.slots.get_mut(peer as usize)
            && slot.closed.is_none()
        {
            slot.closed = Some(reason.clone());
            hub.disconnected.push_back((peer, reason));
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(()) // nothing is batched
    }

    fn poll(&mut self, _timeout: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        // Nothing to wait for on one thread: returning at once is a spurious
        // wake-up, which the polling contract allows. New subscribers are
        // accepted here, as a TCP listener's connections are.
        let slots = self.hub.borrow().slots.len();
        while self.accepted < slots {
            let peer = self.accepted as PeerId;
            self.accepted += 1;
            self.stats.connections += 1;
            on_event(PubEvent::Connected(peer));
        }
        loop {
            // Release the hub before each callback: it may publish or reply.
            let next = self.hub.borrow_mut().requests.pop_front();
            let Some((peer, packet)) = next else { break };
            self.stats.requests += 1;
            on_event(PubEvent::Request { peer, packet: &packet });
        }
        loop {
            let next = self.hub.borrow_mut().disconnected.pop_front();
            let Some((peer, reason)) = next else { break };
            on_event(PubEvent::Disconnected { peer, reason });
        }
        Ok(())
    }

    fn stats(&self) -> PubStats {
        let hub = self.hub.borrow();
        let accepted = &hub.slots[..self.accepted];
        PubStats {
            connected: accepted.iter().filter(|s| s.closed.is_none()).count() as u64,
            ..self.stats.clone()
        }
    }
}

/// The subscribing side.
#[derive(Debug)]
struct HubSubscriber {
    hub: Rc<RefCell<Hub>>,
    peer: PeerId,
    reported_connected: bool,
    reported_closed: bool,
    stats: SubStats,
}

impl Subscriber for HubSubscriber {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        let mut hub = self.hub.borrow_mut();
        if hub.slots[self.peer as usize].closed.is_some() {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "disconnected"));
        }
        hub.requests.push_back((self.peer, packet.to_vec()));
        self.stats.requests_sent += 1;
        Ok(())
    }

    fn poll(&mut self, _timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        if !self.reported_connected {
            self.reported_connected = true;
            self.stats.connects += 1;
            on_event(SubEvent::Connected);
        }
        let mut delivered = false;
        loop {
            let next = self.hub.borrow_mut().slots[self.peer as usize].inbox.pop_front();
            let Some(packet) = next else { break };
            delivered = true;
            self.stats.packets_received += 1;
            self.stats.bytes_received += packet.len() as u64;
            on_event(SubEvent::Packet { line: Line::A, packet: &packet, kernel_rx_ns: None });
        }
        if delivered {
            self.stats.syscalls += 1;
        }
        let closed = self.hub.borrow().slots[self.peer as usize].closed.clone();
        if let Some(reason) = closed.filter(|_| !self.reported_closed) {
            // Once: the publisher dropped this connection for good.
            self.reported_closed = true;
            on_event(SubEvent::Disconnected(reason));
        }
        Ok(())
    }

    fn reconnect(&mut self) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an in-process hub connection cannot be remade",
        ))
    }

    fn stats(&self) -> SubStats {
        self.stats.clone()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let drop_every = match (args.next().as_deref(), args.next()) {
        (None, _) => None,
        (Some("--drop-every"), Some(n)) => Some(n.parse().expect("--drop-every takes a number")),
        _ => panic!("usage: custom_transport [--drop-every N]"),
    };
    let profile = Profile {
        name: "in-process hub",
        stream: true,
        delivery: Delivery::Reliable,
        exact_stats: true,
    };
    conformance::run_all(
        &profile,
        &Params::default(),
        || HubPublisher::new(drop_every),
        |p| p.connect(),
    );
    println!("conformance: the in-process hub transport passed every check");
}
