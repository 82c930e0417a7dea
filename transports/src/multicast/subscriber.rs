//! [`MulticastSubscriber`]: the client side of the multicast transport.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;

use socket2::{InterfaceIndexOrAddress, SockAddr, Socket};

use super::{
    BufferSizes, FeedSource, MulticastConfig, drain, send_one, set_buffer, sys, timeout_is_zero,
    udp_socket, v4, warn_if_small,
};
use crate::{Line, OnSubEvent, SubEvent, SubStats, Subscriber};

/// The client side: receives line A (and B) and exchanges requests/replies
/// with the publisher's request port. See the module docs.
#[derive(Debug)]
pub struct MulticastSubscriber {
    /// One socket per feed line, bound to its group.
    lines: Vec<(Line, Socket)>,
    unicast: Socket,
    unicast_local: SocketAddrV4,
    request_addr: SockAddr,
    rx: sys::Slots,
    /// Largest packet taken (`max_packet_len`; receive slots are larger with GRO).
    max_len: usize,
    /// Lines first, unicast last (same order as `lines`).
    pollfds: Vec<libc::pollfd>,
    buffers: BufferSizes,
    stats: SubStats,
    /// Where feed datagrams must come from.
    source: FeedSource,
    /// Quick passes since the request socket was last read (see
    /// [`UNICAST_EVERY`]).
    since_unicast: u32,
}

/// A quick pass (one that does not follow a wait) reads the request socket
/// only every this many passes; the feed lines are read on every pass. A
/// spinning subscriber's pass was two `recvmmsg` calls, one of them on a
/// socket that carries a packet per NACK: an arriving feed packet waited
/// for half a pass more than it needed. A reply waits at most 8 passes
/// (a few µs) more, against a round trip of 50 µs or more; a pass after a
/// wait reads every socket, so a blocked subscriber loses nothing.
const UNICAST_EVERY: u32 = 8;

impl MulticastSubscriber {
    /// Join group A (and B) on `cfg.ifname` if set, else on the interface
    /// holding `cfg.interface`, and open the unicast request socket
    /// (ephemeral port on `cfg.interface`). Errors name the interface.
    pub fn new(cfg: MulticastConfig) -> io::Result<Self> {
        cfg.validate()?;
        let source = cfg.source.unwrap_or(FeedSource { addr: *cfg.request_addr.ip(), port: None });
        let iface = cfg.interface_text();
        let named = |what: String, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} on {iface}: {}", crate::select::io_text(&e)))
        };
        let join_on = match cfg.ifindex()? {
            Some(index) => InterfaceIndexOrAddress::Index(index),
            None => InterfaceIndexOrAddress::Address(cfg.interface),
        };
        let mut recv_granted = usize::MAX;
        let mut lines = Vec::new();
        for (line, group) in
            std::iter::once((Line::A, cfg.group_a)).chain(cfg.group_b.map(|g| (Line::B, g)))
        {
            let s = udp_socket()?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            // Only the groups this socket joined, not every group any socket
            // on the host joined (Linux's default for sockets on the port).
            s.set_multicast_all_v4(false)?;
            recv_granted = recv_granted.min(set_buffer(
                s.as_raw_fd(),
                libc::SO_RCVBUFFORCE,
                libc::SO_RCVBUF,
                cfg.recv_buffer,
            )?);
            s.bind(&group.into())?;
            match cfg.source {
                // Source-specific: the kernel (and IGMPv3 snooping switches)
                // deliver only that sender's datagrams for the group.
                Some(src) => s.join_ssm_v4(&src.addr, group.ip(), &cfg.interface).map_err(|e| {
                    named(format!("joining {} for source {}", group.ip(), src.addr), e)
                })?,
                None => s
                    .join_multicast_v4_n(group.ip(), &join_on)
                    .map_err(|e| named(format!("joining {}", group.ip()), e))?,
            }
            crate::wait::enable_rx_timestamps(s.as_raw_fd())?;
            lines.push((line, s));
        }
        // UDP GRO on the feed sockets (the kernel merges a flow's datagrams;
        // `drain` splits each merged receive into its packets). A kernel
        // without it (before 5.0) refuses the option: said, and off.
        let gro = cfg.gro
            && lines.iter().all(|(_, s)| {
                sys::set_int_opt(s.as_raw_fd(), libc::SOL_UDP, sys::UDP_GRO, 1)
                .map_err(|e| {
                    eprintln!(
                        "multicast subscriber: UDP GRO unavailable ({e}): one receive per datagram"
                    );
                })
                .is_ok()
            });
        if cfg.gro && !gro {
            for (_, s) in &lines {
                let _ = sys::set_int_opt(s.as_raw_fd(), libc::SOL_UDP, sys::UDP_GRO, 0);
            }
        }
        let unicast = udp_socket()?;
        unicast.bind(&SocketAddrV4::new(cfg.interface, 0).into()).map_err(|e| {
            named(format!("binding the request socket's address {}", cfg.interface), e)
        })?;
        // Connected to the recovery service: the kernel then delivers on this
        // socket only datagrams from that address and port, so nobody else on
        // the network can inject "replies" (forged Retransmissions, snapshots).
        unicast.connect(&cfg.request_addr.into()).map_err(|e| {
            named(
                format!(
                    "reaching the recovery service {} from the request socket",
                    cfg.request_addr
                ),
                e,
            )
        })?;
        recv_granted = recv_granted.min(set_buffer(
            unicast.as_raw_fd(),
            libc::SO_RCVBUFFORCE,
            libc::SO_RCVBUF,
            cfg.recv_buffer,
        )?);
        let unicast_local = v4(unicast.local_addr()?)?;

        let buffers = BufferSizes {
            send_requested: 0,
            send_granted: 0,
            recv_requested: cfg.recv_buffer,
            recv_granted,
        };
        warn_if_small("receive", buffers.recv_requested, buffers.recv_granted);

        let pollfds = lines
            .iter()
            .map(|(_, s)| s.as_raw_fd())
            .chain(std::iter::once(unicast.as_raw_fd()))
            .map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 })
            .collect();
        Ok(MulticastSubscriber {
            lines,
            unicast,
            unicast_local,
            request_addr: cfg.request_addr.into(),
            // A merged receive is up to one IPv4 datagram's payload.
            rx: sys::Slots::new(
                cfg.batch,
                if gro { sys::GRO_SLOT_LEN } else { cfg.max_packet_len },
            ),
            max_len: cfg.max_packet_len,
            pollfds,
            buffers,
            stats: SubStats { gro, ..SubStats::default() },
            since_unicast: 0,
            // The publisher sends the feed from its recovery service's port
            // (whatever its address), so the port is checked in any case.
            source: FeedSource {
                port: Some(source.port.unwrap_or(cfg.request_addr.port())),
                ..source
            },
        })
    }

    /// The address this subscriber's requests come from (the publisher's
    /// replies go back there).
    pub fn unicast_addr(&self) -> SocketAddr {
        SocketAddr::V4(self.unicast_local)
    }

    /// Socket buffer sizes requested and granted.
    pub fn buffer_sizes(&self) -> BufferSizes {
        self.buffers
    }

    /// One receive pass over the feed lines, and the request socket when
    /// `all` or its turn came ([`UNICAST_EVERY`]); returns the datagrams read.
    fn pass(&mut self, all: bool, on_event: OnSubEvent<'_>) -> io::Result<usize> {
        let mut total = 0;
        self.since_unicast += 1;
        let unicast = all || self.since_unicast >= UNICAST_EVERY;
        if unicast {
            self.since_unicast = 0;
        }
        let sockets = self.lines.len() + usize::from(unicast);
        for k in 0..sockets {
            let (line, fd) = match self.lines.get(k) {
                Some((line, s)) => (*line, s.as_raw_fd()),
                None => (Line::Unicast, self.unicast.as_raw_fd()),
            };
            let packets = &mut self.stats.packets_received;
            let bytes = &mut self.stats.bytes_received;
            let wrong = &mut self.stats.wrong_source;
            let source = self.source;
            // The request socket is connected: the kernel already admits
            // only the recovery service there.
            let check = line != Line::Unicast;
            let mut deliver = |src: Option<SocketAddrV4>, packet: &[u8], rx: Option<u64>| {
                if check && !source.admits(src) {
                    if *wrong == 0 {
                        let from = src.map_or("an unknown address".into(), |a| a.to_string());
                        eprintln!(
                            "multicast subscriber: dropping feed packets from {from}: the feed is taken only from {} \
                             (pass --source with the publisher's address if that is it)",
                            source.text()
                        );
                    }
                    *wrong += 1;
                    return;
                }
                *packets += 1;
                *bytes += packet.len() as u64;
                on_event(SubEvent::Packet { line, packet, kernel_rx_ns: rx });
            };
            let d = drain(
                fd,
                &mut self.rx,
                self.max_len,
                &mut self.stats.syscalls,
                &mut self.stats.malformed,
                &mut deliver,
            )?;
            total += d.datagrams;
            self.stats.gro_merged += d.merged as u64;
        }
        Ok(total)
    }
}

impl Subscriber for MulticastSubscriber {
    fn send_request(&mut self, packet: &[u8]) -> io::Result<()> {
        let sent = send_one(&self.unicast, packet, &self.request_addr, &mut self.stats.syscalls)
            .map_err(|e| {
                let to = self.request_addr.as_socket().map_or("?".into(), |a| a.to_string());
                let text = format!(
                    "sending a request to {to} from {}: {}",
                    self.unicast_local,
                    crate::select::io_text(&e)
                );
                io::Error::new(e.kind(), text)
            })?;
        if sent {
            self.stats.requests_sent += 1;
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "request dropped: send buffer full after retries",
            ))
        }
    }

    fn poll(&mut self, timeout: Option<Duration>, on_event: OnSubEvent<'_>) -> io::Result<()> {
        if self.pass(false, on_event)? > 0 || timeout_is_zero(timeout) {
            return Ok(());
        }
        for p in &mut self.pollfds {
            p.revents = 0;
        }
        // The wait covers every socket, the request socket too.
        if sys::wait(&mut self.pollfds, timeout)? > 0 {
            self.pass(true, on_event)?;
        }
        Ok(())
    }

    fn reconnect(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn stats(&self) -> SubStats {
        self.stats.clone()
    }
}
