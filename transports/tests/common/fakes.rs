//! Fake transports for the wrappers' tests (`Authenticated`, `Lossy`): they
//! report scripted packets or requests and record what is sent through them.

use std::io;
use std::time::Duration;

use tickwire_transports::{
    DisconnectReason, Line, OnPubEvent, OnSubEvent, PeerId, PubEvent, PubStats, Publisher,
    SubEvent, SubStats, Subscriber,
};

/// A publisher that records what reaches it and reports scripted requests.
#[derive(Default)]
pub struct FakePub {
    pub published: Vec<Vec<u8>>,
    pub sent_to: Vec<(PeerId, Vec<u8>)>,
    /// Requests to report from the next poll, between a Connected and a Disconnected.
    pub script: Vec<Vec<u8>>,
}

impl Publisher for FakePub {
    fn max_packet_len(&self) -> usize {
        256
    }
    fn publish_with(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> io::Result<()> {
        let mut buf = vec![0u8; 256];
        let n = fill(&mut buf);
        buf.truncate(n);
        self.published.push(buf);
        Ok(())
    }
    fn send_to(&mut self, peer: PeerId, packet: &[u8]) -> io::Result<()> {
        self.sent_to.push((peer, packet.to_vec()));
        Ok(())
    }
    fn set_live(&mut self, _: PeerId, _: bool) {}
    fn disconnect(&mut self, _: PeerId, _: DisconnectReason) {}
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn poll(&mut self, _: Option<Duration>, on_event: OnPubEvent<'_>) -> io::Result<()> {
        on_event(PubEvent::Connected(7));
        for r in self.script.drain(..) {
            on_event(PubEvent::Request { peer: 7, packet: &r });
        }
        on_event(PubEvent::Disconnected { peer: 7, reason: DisconnectReason::Closed });
        Ok(())
    }
    fn stats(&self) -> PubStats {
        PubStats { packets_sent: self.published.len() as u64, ..PubStats::default() }
    }
}

/// A subscriber that reports scripted packets (with a kernel receive time of
/// 1 ns) from the next poll, between a Connected and a Disconnected, and
/// records the requests sent through it.
#[derive(Default)]
pub struct FakeSub {
    pub script: Vec<Vec<u8>>,
    pub requests: Vec<Vec<u8>>,
    /// What `stats` reports, but for `requests_sent`: the requests recorded.
    pub stats: SubStats,
}

impl FakeSub {
    /// A subscriber that will report `script`.
    pub fn new(script: Vec<Vec<u8>>) -> FakeSub {
        FakeSub { script, ..FakeSub::default() }
    }
}

impl Subscriber for FakeSub {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        self.requests.push(packet.to_vec());
        Ok(())
    }
    fn poll(&mut self, _: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        on_event(SubEvent::Connected);
        for p in self.script.drain(..) {
            on_event(SubEvent::Packet { line: Line::A, packet: &p, kernel_rx_ns: Some(1) });
        }
        on_event(SubEvent::Disconnected(DisconnectReason::Closed));
        Ok(())
    }
    fn reconnect(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn stats(&self) -> SubStats {
        SubStats { requests_sent: self.requests.len() as u64, ..self.stats }
    }
}
