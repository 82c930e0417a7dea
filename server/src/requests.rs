//! Requests: copied out of the transport's poll callback ([`Inbox`]), then
//! answered by the core, or (TCP resume Logins) by a catch-up streamed from
//! the retransmit store as the connection drains ([`CatchUps`]).

use std::io;

use tickwire_core::Instant;
use tickwire_core::catchup::{self, CatchUp, LoginPlan, Overrun};
use tickwire_core::publisher::{RequestOutcome, Sequencer as Core};
use tickwire_transports::tcp::{CATCHUP_BUDGET, LogLimiter, log_limited};
use tickwire_transports::{DisconnectReason, PeerId, Publisher};

use crate::wall_ns;

/// Requests copied out of the transport's poll callback, served after it returns.
/// Buffers are reused: the steady state allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub(crate) requests: Vec<(PeerId, Vec<u8>)>,
    pub(crate) used: usize,
    pub(crate) disconnected: Vec<PeerId>,
}

impl Inbox {
    pub(crate) fn push(&mut self, peer: PeerId, bytes: &[u8]) {
        if self.used == self.requests.len() {
            self.requests.push((peer, Vec::with_capacity(bytes.len())));
        }
        let slot = &mut self.requests[self.used];
        slot.0 = peer;
        slot.1.clear();
        slot.1.extend_from_slice(bytes);
        self.used += 1;
    }
}

/// Resume Logins served by streaming (TCP): each connection's catch-up is
/// framed from the retransmit store as its socket drains, at most
/// [`CATCHUP_BUDGET`] bytes queued at a time, so a Login from sequence 1 costs
/// O(budget) memory instead of the whole window. The connection turns live
/// once its cursor reaches the live stream.
#[derive(Debug, Default)]
pub(crate) struct CatchUps {
    pub(crate) active: Vec<(PeerId, CatchUp)>,
    /// Peers that logged in through this path (a second Login is ignored).
    pub(crate) logged: std::collections::HashSet<PeerId>,
    pub(crate) buf: Vec<u8>,
    pub(crate) logins: u64,
    pub(crate) overruns: u64,
    pub(crate) repeated: u64,
    /// Messages replayed.
    pub(crate) messages: u64,
    /// Per-connection log lines.
    pub(crate) log: LogLimiter,
}

impl CatchUps {
    /// If `bytes` is a valid Login that resumes inside the window, answer it
    /// here (LoginAck now, the replay by [`Self::pump`]) and return true; the
    /// rest (snapshot Logins, other requests, malformed input) goes to the core.
    pub(crate) fn try_serve(
        &mut self,
        core: &Core,
        transport: &mut dyn Publisher,
        peer: PeerId,
        bytes: &[u8],
        wall: u64,
    ) -> bool {
        let Ok(packet) = tickwire_core::wire::Packet::new_checked(bytes) else {
            return false;
        };
        let Ok(repr) = tickwire_core::wire::PacketRepr::parse(&packet) else {
            return false;
        };
        if repr.kind != tickwire_core::wire::PacketKind::Login || repr.payload_len != 0 {
            return false;
        }
        if self.logged.contains(&peer) {
            self.repeated += 1;
            return true;
        }
        let LoginPlan::Resume { from } = catchup::plan_login(core.epoch(), core.store(), &repr)
        else {
            return false;
        };
        self.buf.resize(core.config().max_packet_len, 0);
        let n =
            catchup::emit_login_ack(&mut self.buf, core.epoch(), wall, from, core.store().oldest());
        if let Err(e) = transport.send_to(peer, &self.buf[..n]) {
            eprintln!("server: reply to peer {peer} failed: {e}");
            return true;
        }
        // The server instance, as after every LoginAck (PROTOCOL.md § 9).
        let n = core.login_status(&mut self.buf, wall);
        if let Err(e) = transport.send_to(peer, &self.buf[..n]) {
            eprintln!("server: reply to peer {peer} failed: {e}");
            return true;
        }
        transport.logged_in(peer);
        transport.watch_drain(peer, Some(CATCHUP_BUDGET / 2));
        self.logged.insert(peer);
        self.active.push((peer, CatchUp::new(from)));
        self.logins += 1;
        true
    }

    /// Top up every catch-up's queue to [`CATCHUP_BUDGET`]; turn live those
    /// that reached the live stream. Call only after every sealed packet was
    /// handed to the transport (the live stream continues at `store.next()`).
    pub(crate) fn pump(&mut self, core: &Core, transport: &mut dyn Publisher, wall: u64) {
        let mut k = 0;
        while k < self.active.len() {
            let (peer, cursor) = &mut self.active[k];
            let peer = *peer;
            let done = loop {
                let Some(queued) = transport.queued(peer) else { break true };
                let at = cursor.next();
                let sent = match cursor.overrun(core.store()) {
                    Some(overrun) => Err(overrun),
                    None if queued >= CATCHUP_BUDGET => break false,
                    None => {
                        self.buf.resize(core.config().max_packet_len, 0);
                        cursor.poll_transmit(core.store(), core.epoch(), wall, &mut self.buf)
                    }
                };
                match sent {
                    Ok(Some(n)) => {
                        self.messages += cursor.next().0 - at.0;
                        if transport.send_to(peer, &self.buf[..n]).is_err() {
                            break true;
                        }
                    }
                    Ok(None) => {
                        transport.watch_drain(peer, None);
                        transport.set_live(peer, true);
                        break true;
                    }
                    Err(overrun) => {
                        close_overrun(
                            &mut self.log,
                            &mut self.overruns,
                            transport,
                            peer,
                            overrun,
                            queued,
                        );
                        break true;
                    }
                }
            };
            if done {
                self.active.swap_remove(k);
            } else {
                k += 1;
            }
        }
    }

    pub(crate) fn forget(&mut self, peer: PeerId) {
        self.logged.remove(&peer);
        self.active.retain(|(p, _)| *p != peer);
    }
}

/// Answer the requests copied into `inbox` (the core replies through the transport).
pub(crate) fn serve_requests(
    core: &mut Core,
    transport: &mut dyn Publisher,
    inbox: &mut Inbox,
    mut streams: Option<&mut CatchUps>,
    now: Instant,
) {
    let wall = wall_ns();
    for (peer, bytes) in &inbox.requests[..inbox.used] {
        let peer = *peer;
        if let Some(c) = streams.as_deref_mut()
            && c.try_serve(core, transport, peer, bytes, wall)
        {
            continue;
        }
        let mut send_err: Option<io::Error> = None;
        let outcome = core.handle_request(now, wall, peer, bytes, &mut |reply| {
            if let Err(e) = transport.send_to(peer, reply) {
                send_err.get_or_insert(e);
            }
        });
        match outcome {
            RequestOutcome::LoginAccepted { .. } => transport.set_live(peer, true),
            RequestOutcome::Ignored(tickwire_core::publisher::IgnoreReason::Malformed(e)) => {
                transport.disconnect(peer, DisconnectReason::Malformed(e));
            }
            _ => {}
        }
        if let Some(e) = send_err {
            eprintln!("server: reply to peer {peer} failed: {e}");
        }
    }
    inbox.used = 0;
}

/// A catch-up overtaken by the retransmit store's eviction: count it, say so
/// (rate-limited) and close the connection as a slow consumer.
fn close_overrun(
    log: &mut LogLimiter,
    overruns: &mut u64,
    transport: &mut dyn Publisher,
    peer: PeerId,
    overrun: Overrun,
    queued: usize,
) {
    *overruns += 1;
    log_limited(
        log,
        std::time::Instant::now(),
        "server",
        format_args!("server: closing peer {peer}: {overrun}"),
    );
    transport.disconnect(peer, DisconnectReason::SlowConsumer { queued });
}
