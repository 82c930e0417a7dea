//! The publisher's connections: the per-client state, accepting and
//! admitting new ones, the login and idle timers, and closing.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Token};
use socket2::SockRef;

use super::config::{MAX_ACCEPTS_PER_POLL, REQUEST_BUF_PACKETS, TIMER_GRANULARITY};
use super::framer::FrameBuf;
use super::guard::{ConnTimers, Refusal, log_limited};
use super::publisher::TcpPublisher;
use crate::{DisconnectReason, OnPubEvent, PeerId, PubEvent};

/// One connected client.
#[derive(Debug)]
pub(super) struct Client {
    pub(super) peer: PeerId,
    pub(super) stream: TcpStream,
    pub(super) addr: SocketAddr,
    /// Receives published packets.
    pub(super) live: bool,
    /// Bytes waiting to be written. Grows to the client's high-water mark once
    /// and is reused: no allocation per packet in steady state.
    pub(super) out: VecDeque<u8>,
    /// Requests being framed.
    pub(super) rx: FrameBuf,
    /// Edge-triggered readiness, cleared only by `WouldBlock`.
    pub(super) readable: bool,
    pub(super) writable: bool,
    /// Queued in `TcpPublisher::ready` (deduplicates readiness events).
    pub(super) in_ready: bool,
    /// When the queue went above the high-water mark (None: it is below).
    pub(super) over_since: Option<Instant>,
    /// Login and idle timers.
    pub(super) timers: ConnTimers,
    /// [`Publisher::watch_drain`](crate::Publisher::watch_drain): poll returns
    /// at once while the queue is at or below this many bytes.
    pub(super) low_water: Option<usize>,
}

impl TcpPublisher {
    /// Close a client now; its `Disconnected` is reported by the next poll.
    pub(super) fn close(&mut self, peer: PeerId, reason: DisconnectReason) {
        let Some(i) = self.index.remove(&peer) else {
            return;
        };
        let mut c = self.clients.swap_remove(i);
        if let Some(moved) = self.clients.get(i) {
            self.index.insert(moved.peer, i);
        }
        // Deregistering can only fail if the socket is already gone from epoll;
        // dropping the stream closes it either way.
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.hosts.release(c.addr.ip());
        self.queued_total -= c.out.len();
        self.stats.queued_bytes = self.queued_total as u64;
        match &reason {
            DisconnectReason::SlowConsumer { queued } => {
                self.stats.slow_disconnects += 1;
                log_limited(
                    &mut self.log,
                    Instant::now(),
                    "tcp publisher",
                    format_args!(
                        "tcp publisher: disconnecting slow consumer {peer} ({}): {queued} bytes queued",
                        c.addr
                    ),
                );
            }
            DisconnectReason::Malformed(_) => self.stats.malformed += 1,
            DisconnectReason::LoginTimeout => self.stats.login_timeouts += 1,
            DisconnectReason::Idle => self.stats.idle_timeouts += 1,
            _ => {}
        }
        self.stats.connected = self.clients.len() as u64;
        self.pending.push_back((peer, reason));
    }

    /// Close every client in `doomed`.
    pub(super) fn close_doomed(&mut self) {
        while let Some((peer, reason)) = self.doomed.pop() {
            self.close(peer, reason);
        }
    }

    /// Accept waiting connections (at most [`MAX_ACCEPTS_PER_POLL`]).
    pub(super) fn accept(&mut self, on_event: OnPubEvent<'_>) {
        for _ in 0..MAX_ACCEPTS_PER_POLL {
            let (mut stream, addr) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_ready = false;
                    return;
                }
                // The connection went away before we took it: take the next.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE, ENOBUFS...: retrying at once would spin. Wait for
                    // the listener's next readiness edge (the next connection).
                    eprintln!("tcp publisher {}: accept failed: {e}", self.local_addr);
                    self.accept_ready = false;
                    return;
                }
            };
            let now = Instant::now();
            match self.hosts.admit(addr.ip(), self.cfg.max_per_host, self.cfg.max_clients) {
                Ok(()) => {}
                Err(refusal) => {
                    let why = match refusal {
                        Refusal::ServerFull => {
                            self.stats.refused_full += 1;
                            "max_clients connections"
                        }
                        Refusal::HostFull => {
                            self.stats.refused_per_host += 1;
                            "max_per_host connections from its host"
                        }
                    };
                    log_limited(
                        &mut self.log,
                        now,
                        "tcp publisher",
                        format_args!(
                            "tcp publisher {}: refusing {addr}: {why} already connected",
                            self.local_addr
                        ),
                    );
                    continue; // dropping `stream` closes it
                }
            }
            // Nagle would hold small packets back for up to 40 ms.
            if let Err(e) = SockRef::from(&stream).set_tcp_nodelay(true) {
                eprintln!("tcp publisher: TCP_NODELAY on {addr} failed: {e}");
            }
            // The kernel drops a peer that leaves our data unacknowledged
            // (or its window shut) for the idle timeout.
            if let Err(e) = SockRef::from(&stream).set_tcp_user_timeout(Some(self.cfg.idle_timeout))
            {
                eprintln!("tcp publisher: TCP_USER_TIMEOUT on {addr} failed: {e}");
            }
            let peer = self.next_peer;
            self.next_peer += 1;
            if let Err(e) = self.poll.registry().register(
                &mut stream,
                Token(peer as usize),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                eprintln!("tcp publisher: cannot register {addr}: {e}");
                self.hosts.release(addr.ip());
                continue;
            }
            let buf_len = self.cfg.max_packet_len.saturating_mul(REQUEST_BUF_PACKETS);
            self.index.insert(peer, self.clients.len());
            self.clients.push(Client {
                peer,
                stream,
                addr,
                live: false,
                out: VecDeque::new(),
                rx: FrameBuf::new(buf_len, self.cfg.max_packet_len),
                // Anything that arrived before registration raises no edge:
                // try reading once.
                readable: true,
                writable: true,
                in_ready: true,
                over_since: None,
                timers: ConnTimers::new(now),
                low_water: None,
            });
            self.ready.push(peer);
            self.next_timer_check = self.next_timer_check.min(now + self.cfg.login_timeout);
            self.stats.connections += 1;
            self.stats.connected = self.clients.len() as u64;
            on_event(PubEvent::Connected(peer));
        }
    }

    /// Close connections whose login or idle timer expired, at most every
    /// [`TIMER_GRANULARITY`]. Returns how long until the next check.
    pub(super) fn check_timers(&mut self) -> Duration {
        let now = Instant::now();
        if now < self.next_timer_check {
            return self.next_timer_check - now;
        }
        let (login, idle) = (self.cfg.login_timeout, self.cfg.idle_timeout);
        // Deadlines only move later (progress, a login), so the earliest one
        // seen now is a safe time for the next check.
        let mut earliest = now + idle;
        for c in &self.clients {
            if let Some(reason) = c.timers.expired(now, login, idle) {
                self.doomed.push((c.peer, reason));
            } else {
                earliest = earliest.min(c.timers.deadline(login, idle));
            }
        }
        if !self.doomed.is_empty() {
            for (peer, reason) in &self.doomed {
                if let Some(&i) = self.index.get(peer) {
                    let addr = self.clients[i].addr;
                    log_limited(
                        &mut self.log,
                        now,
                        "tcp publisher",
                        format_args!("tcp publisher: closing {peer} ({addr}): {reason}"),
                    );
                }
            }
            self.close_doomed();
        }
        self.next_timer_check = earliest.max(now + TIMER_GRANULARITY);
        self.next_timer_check - now
    }
}
