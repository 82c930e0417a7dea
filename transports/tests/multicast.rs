//! The multicast transport on real sockets: loopback tests (any user), then
//! network-namespace tests across a Linux bridge and the loss scripts (root;
//! they print `SKIPPED: ...` and return otherwise).

mod common;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use tickwire_core::wire::{DEFAULT_MAX_PACKET, FLAG_LINE_B, HEADER_LEN, Packet, PacketKind};
use tickwire_transports::conformance::{self, Params, Profile};
use tickwire_transports::multicast::{
    FeedSource, GSO_PAD_MAX, MulticastConfig, MulticastPublisher, MulticastSubscriber, peer_addr,
    peer_id,
};
use tickwire_transports::{Line, PubEvent, Publisher, SubEvent, Subscriber};

/// How long a test waits for datagrams that should arrive before declaring
/// them lost. A liveness bound (a hang becomes a failure), not a speed check:
/// on loopback they arrive within microseconds.
const LIVENESS: Duration = Duration::from_secs(10);

/// Poll timeout inside wait loops: short enough to re-check the deadline.
const POLL_SLICE: Duration = Duration::from_millis(20);

/// Packets per lockstep round: publish this many, then let every subscriber
/// catch up, so socket buffers never overflow and delivery must be exact.
const ROUND: usize = 256;

fn loopback_cfg() -> MulticastConfig {
    MulticastConfig::loopback(unique_group(), SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
}

/// The subscriber-side config for a publisher made from `cfg`.
fn sub_cfg(cfg: &MulticastConfig, publisher: &MulticastPublisher) -> MulticastConfig {
    assert_eq!(publisher.config().group_a, cfg.group_a);
    publisher.config().clone()
}

/// Multicast as the conformance suite sees it: a datagram transport. On
/// loopback with the suite's pacing nothing is lost, so it must deliver
/// every packet (`min_fraction` 1.0), like a reliable transport would.
const MULTICAST: Profile = Profile { name: "multicast", ..LOSSLESS_DATAGRAM };

#[test]
fn conformance_suite() {
    conformance::run_all(
        &MULTICAST,
        &Params::default(),
        || MulticastPublisher::new(loopback_cfg()).unwrap(),
        |p| MulticastSubscriber::new(p.config().clone()).unwrap(),
    );
}

#[test]
fn conformance_suite_ab_feeds() {
    let ab = Profile { name: "multicast A/B", ..MULTICAST };
    conformance::run_all(
        &ab,
        &Params::default(),
        || {
            MulticastPublisher::new(MulticastConfig {
                group_b: Some(unique_group()),
                ..loopback_cfg()
            })
            .unwrap()
        },
        |p| MulticastSubscriber::new(p.config().clone()).unwrap(),
    );
}

type Received = Vec<(Line, Vec<u8>)>;

/// Poll `sub` once, adding the packets it reports to `got`.
fn poll_into(sub: &mut MulticastSubscriber, timeout: Duration, got: &mut Received) {
    sub.poll(Some(timeout), &mut |ev| {
        if let SubEvent::Packet { line, packet, .. } = ev {
            got.push((line, packet.to_vec()));
        }
    })
    .unwrap();
}

/// Poll `sub` until `got` holds `want` packets (panics after [`LIVENESS`]).
fn recv_until(sub: &mut MulticastSubscriber, got: &mut Received, want: usize) {
    let deadline = Instant::now() + LIVENESS;
    while got.len() < want {
        assert!(Instant::now() < deadline, "only {} of {want} packets arrived", got.len());
        poll_into(sub, POLL_SLICE, got);
    }
}

/// The first `want` packets `sub` receives (panics after [`LIVENESS`]).
fn recv(sub: &mut MulticastSubscriber, want: usize) -> Received {
    let mut got = Vec::new();
    recv_until(sub, &mut got, want);
    got
}

/// [`recv`], then `settle` for anything that should not come, and whatever
/// has arrived by then too: for checking that only the wanted packets did.
fn recv_and_drain(sub: &mut MulticastSubscriber, want: usize, settle: Duration) -> Received {
    let mut got = recv(sub, want);
    std::thread::sleep(settle);
    poll_into(sub, Duration::ZERO, &mut got);
    got
}

/// Poll the publisher until it reported `want` requests.
fn requests_until(publisher: &mut MulticastPublisher, want: usize) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + LIVENESS;
    let mut got = Vec::new();
    while got.len() < want {
        assert!(Instant::now() < deadline, "only {} of {want} requests arrived", got.len());
        publisher
            .poll(Some(POLL_SLICE), &mut |ev| match ev {
                PubEvent::Request { peer, packet } => got.push((peer, packet.to_vec())),
                other => panic!("unexpected event {other:?}"),
            })
            .unwrap();
    }
    got
}

/// Payload length for packet `i`: every size from 0 to the largest that fits.
fn payload_len(i: usize) -> usize {
    (i * 37) % (DEFAULT_MAX_PACKET - HEADER_LEN + 1)
}

/// Publish `n` packets in lockstep rounds to `subs`; return what each got.
/// Half the packets go through `publish_with` (encoding into the slot).
fn publish_lockstep(
    publisher: &mut MulticastPublisher,
    subs: &mut [MulticastSubscriber],
    n: usize,
    per_packet: usize,
) -> (Vec<Vec<u8>>, Vec<Received>) {
    let mut sent = Vec::with_capacity(n);
    let mut got: Vec<Received> = subs.iter().map(|_| Vec::new()).collect();
    for start in (0..n).step_by(ROUND) {
        for i in start..(start + ROUND).min(n) {
            let p = make_packet(i as u64, payload_len(i));
            if i % 2 == 0 {
                publisher.publish(&p).unwrap();
            } else {
                publisher
                    .publish_with(&mut |buf| {
                        buf[..p.len()].copy_from_slice(&p);
                        p.len()
                    })
                    .unwrap();
            }
            sent.push(p);
        }
        publisher.flush().unwrap();
        for (sub, got) in subs.iter_mut().zip(got.iter_mut()) {
            recv_until(sub, got, sent.len() * per_packet);
        }
    }
    (sent, got)
}

#[test]
fn three_subscribers_receive_every_packet_byte_identical() {
    const N: usize = 5_000;
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let scfg = sub_cfg(&cfg, &publisher);
    let mut subs: Vec<_> =
        (0..3).map(|_| MulticastSubscriber::new(scfg.clone()).unwrap()).collect();

    let (sent, got) = publish_lockstep(&mut publisher, &mut subs, N, 1);

    for (k, got) in got.iter().enumerate() {
        assert_eq!(got.len(), N, "subscriber {k}");
        for (i, (line, bytes)) in got.iter().enumerate() {
            assert_eq!(*line, Line::A, "subscriber {k} packet {i}");
            assert_eq!(bytes, &sent[i], "subscriber {k} packet {i}");
        }
        let st = subs[k].stats();
        assert_eq!(st.packets_received, N as u64);
        assert_eq!(st.bytes_received, sent.iter().map(|p| p.len() as u64).sum::<u64>());
        assert_eq!(st.malformed, 0);
    }
    if is_root() {
        // SO_RCVBUFFORCE / SO_SNDBUFFORCE pass the sysctl caps; Linux reports
        // twice the request.
        let want = 2 * cfg.recv_buffer;
        assert_eq!(publisher.buffer_sizes().recv_granted, want);
        assert_eq!(publisher.buffer_sizes().send_granted, 2 * cfg.send_buffer);
        assert_eq!(subs[0].buffer_sizes().recv_granted, want);
    }
    let ps = publisher.stats();
    assert_eq!(ps.packets_sent, N as u64);
    assert_eq!(ps.send_errors, 0);
    // Batching: one sendmmsg carries up to `batch` packets.
    assert!(ps.syscalls <= N.div_ceil(cfg.batch) as u64 + 8, "syscalls {}", ps.syscalls);
}

/// `ifname` picks the interface of sends and joins by index: on `lo`, with
/// the address given or left to the kernel (`0.0.0.0`), every packet arrives.
#[test]
fn the_interface_chosen_by_name_carries_the_feed() {
    for interface in [Ipv4Addr::LOCALHOST, Ipv4Addr::UNSPECIFIED] {
        let cfg = MulticastConfig { ifname: Some("lo".into()), interface, ..loopback_cfg() };
        let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
        let mut subs = vec![MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap()];
        let (sent, got) = publish_lockstep(&mut publisher, &mut subs, 300, 1);
        assert_eq!(got[0].len(), sent.len(), "interface lo ({interface})");
        assert!(got[0].iter().zip(&sent).all(|((_, g), s)| g == s));
    }
}

/// A join or a send that cannot use the interface fails at start-up with an
/// error naming the interface (no packet leaves: these fail in setsockopt/bind).
#[test]
fn errors_name_the_interface() {
    let text = |r: std::io::Result<()>| r.unwrap_err().to_string();
    let missing = MulticastConfig { ifname: Some("tw-nosuch0".into()), ..loopback_cfg() };
    let e = text(MulticastPublisher::new(missing.clone()).map(drop));
    assert!(e.contains("tw-nosuch0"), "{e}");
    let e = text(MulticastSubscriber::new(missing).map(drop));
    assert!(e.contains("tw-nosuch0"), "{e}");
    // An address no interface of this host has (TEST-NET-3, never routed).
    let foreign = MulticastConfig { interface: Ipv4Addr::new(203, 0, 113, 7), ..loopback_cfg() };
    let e = text(MulticastPublisher::new(foreign.clone()).map(drop));
    assert!(e.contains("interface 203.0.113.7"), "{e}");
    let e = text(MulticastSubscriber::new(foreign.clone()).map(drop));
    assert!(e.contains("joining") && e.contains("interface 203.0.113.7"), "{e}");
    let ttl = MulticastConfig { ttl: 300, ..loopback_cfg() };
    assert!(text(MulticastPublisher::new(ttl).map(drop)).contains("ttl 300"));
}

#[test]
fn ab_feeds_deliver_every_packet_on_both_lines() {
    const N: usize = 2_000;
    let cfg = MulticastConfig { group_b: Some(unique_group()), ..loopback_cfg() };
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut subs = vec![MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap()];

    let (sent, got) = publish_lockstep(&mut publisher, &mut subs, N, 2);

    for line in [Line::A, Line::B] {
        let on_line: Vec<&Vec<u8>> =
            got[0].iter().filter(|(l, _)| *l == line).map(|(_, b)| b).collect();
        assert_eq!(on_line.len(), N, "line {line:?}");
        for (i, bytes) in on_line.iter().enumerate() {
            let p = Packet::new_checked(&bytes[..]).unwrap();
            p.verify_crc().expect("valid CRC on both lines");
            match line {
                Line::A => assert_eq!(*bytes, &sent[i], "line A packet {i} as published"),
                _ => {
                    // Line B: the same packet with flags bit 0 set and its CRC redone.
                    assert_eq!(p.flags(), FLAG_LINE_B, "line B packet {i}");
                    let mut back = bytes.to_vec();
                    let mut v = Packet::new_unchecked(&mut back[..]);
                    v.set_flags(0);
                    v.fill_crc();
                    assert_eq!(back, sent[i], "line B packet {i} is line A's, flagged");
                }
            }
        }
    }
    assert_eq!(publisher.stats().packets_sent, 2 * N as u64);
    assert_eq!(subs[0].stats().packets_received, 2 * N as u64);
}

/// A multicast repair goes to line A only, from the feed's source (the
/// subscriber's source check takes it like the feed), after what was batched.
#[test]
fn group_repairs_reach_every_subscriber_on_line_a_after_the_batch() {
    let cfg = MulticastConfig { group_b: Some(unique_group()), ..loopback_cfg() };
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    assert!(publisher.sends_to_group());
    let mut subs: Vec<_> =
        (0..2).map(|_| MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap()).collect();
    let live = make_kind(PacketKind::Data, 5, 60);
    publisher.publish(&live).unwrap();
    let notice = make_kind(PacketKind::RepairNotice, 3, 0);
    let repair = make_kind(PacketKind::Retransmission, 3, 100);
    publisher.send_to_group(&notice).unwrap();
    publisher.send_to_group(&repair).unwrap();
    for sub in &mut subs {
        let got = recv_and_drain(sub, 4, Duration::from_millis(50));
        let on_a: Vec<_> = got.iter().filter(|(l, _)| *l == Line::A).map(|(_, b)| b).collect();
        assert_eq!(on_a, vec![&live, &notice, &repair], "line A: the batch, then the repairs");
        assert_eq!(
            got.iter().filter(|(l, _)| *l == Line::B).count(),
            1,
            "line B: the live packet only"
        );
        assert_eq!(sub.stats().wrong_source, 0);
    }
}

#[test]
fn unicast_replies_are_taken_only_from_the_recovery_service() {
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap();
    let SocketAddr::V4(me) = sub.unicast_addr() else { panic!("v4") };
    // A stranger on the same host sends a well-formed Retransmission to the
    // subscriber's reply port: it must not be delivered.
    let forged = make_kind(PacketKind::Retransmission, 7, 100);
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&forged, me).unwrap();
    // The real service's reply, sent after it, is.
    let genuine = make_kind(PacketKind::Retransmission, 8, 100);
    publisher.send_to(peer_id(me), &genuine).unwrap();
    let got = recv_and_drain(&mut sub, 1, Duration::from_millis(50));
    assert_eq!(got, vec![(Line::Unicast, genuine)], "only the recovery service's reply");
}

/// A spinning subscriber (polls with a zero timeout) reads the feed on every
/// poll and its request socket on every 8th: a reply waiting there is taken
/// within 8 polls, never lost; a poll that has to wait reads it at once.
#[test]
fn a_spinning_subscriber_reads_replies_within_eight_polls_and_the_feed_on_every_poll() {
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap();
    let SocketAddr::V4(me) = sub.unicast_addr() else { panic!("v4") };
    for round in 0..3u64 {
        let reply = make_kind(PacketKind::Retransmission, 10 + round, 100);
        publisher.send_to(peer_id(me), &reply).unwrap();
        std::thread::sleep(Duration::from_millis(20)); // it lies in the socket
        let mut got = Vec::new();
        let mut polls = 0;
        while got.is_empty() {
            polls += 1;
            assert!(polls <= 8, "round {round}: no reply after 8 quick polls");
            poll_into(&mut sub, Duration::ZERO, &mut got);
        }
        assert_eq!(got, vec![(Line::Unicast, reply)], "round {round}");
        // The feed: each packet is read by the next quick poll.
        for k in 0..10 {
            let p = make_packet(100 * round + k, 50);
            publisher.publish(&p).unwrap();
            publisher.flush().unwrap();
            std::thread::sleep(Duration::from_millis(2));
            let mut got = Vec::new();
            poll_into(&mut sub, Duration::ZERO, &mut got);
            assert_eq!(got, vec![(Line::A, p)], "round {round}, feed packet {k}");
        }
    }
    // A poll that waits: the reply is read by that poll.
    let reply = make_kind(PacketKind::Retransmission, 99, 100);
    let mut got = Vec::new();
    poll_into(&mut sub, Duration::ZERO, &mut got); // a quick pass; nothing yet
    publisher.send_to(peer_id(me), &reply).unwrap();
    poll_into(&mut sub, LIVENESS, &mut got);
    assert_eq!(got, vec![(Line::Unicast, reply)]);
}

#[test]
fn requests_and_replies_reach_only_the_requester() {
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let scfg = sub_cfg(&cfg, &publisher);
    let mut subs: Vec<_> =
        (0..2).map(|_| MulticastSubscriber::new(scfg.clone()).unwrap()).collect();

    let requests: Vec<Vec<u8>> = (0..2).map(|k| make_kind(PacketKind::Nack, 100 + k, 0)).collect();
    for (sub, req) in subs.iter_mut().zip(&requests) {
        sub.send_request(req).unwrap();
        assert_eq!(sub.stats().requests_sent, 1);
    }

    let got = requests_until(&mut publisher, 2);
    let by_peer: HashMap<u64, Vec<u8>> = got.into_iter().collect();
    assert_eq!(by_peer.len(), 2, "two distinct peers");
    for (sub, req) in subs.iter().zip(&requests) {
        let SocketAddr::V4(addr) = sub.unicast_addr() else { panic!("v4") };
        assert_eq!(by_peer.get(&peer_id(addr)), Some(req), "request of {addr}");
        assert_eq!(peer_addr(peer_id(addr)), Some(addr));
    }
    assert_eq!(publisher.stats().requests, 2);

    // Reply to each with its own packet, then publish a multicast marker.
    let replies: Vec<Vec<u8>> =
        (0..2).map(|k| make_kind(PacketKind::Retransmission, 100 + k, 200 + k as usize)).collect();
    for (sub, reply) in subs.iter().zip(&replies) {
        let SocketAddr::V4(addr) = sub.unicast_addr() else { panic!("v4") };
        publisher.send_to(peer_id(addr), reply).unwrap();
    }
    let marker = make_packet(999, 10);
    publisher.publish(&marker).unwrap();
    publisher.flush().unwrap();

    for (k, sub) in subs.iter_mut().enumerate() {
        // With anything else that might have arrived.
        let got = recv_and_drain(sub, 2, Duration::ZERO);
        let unicast: Vec<_> = got.iter().filter(|(l, _)| *l == Line::Unicast).collect();
        assert_eq!(unicast.len(), 1, "subscriber {k}: exactly its own reply");
        assert_eq!(unicast[0].1, replies[k], "subscriber {k}");
        let multicast: Vec<_> = got.iter().filter(|(l, _)| *l == Line::A).collect();
        assert_eq!(multicast.len(), 1);
        assert_eq!(multicast[0].1, marker);
    }
    assert!(publisher.send_to(1 << 50, &marker).is_err(), "a PeerId that is no address");
}

#[test]
fn garbage_datagrams_are_counted_malformed_and_dropped() {
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let scfg = sub_cfg(&cfg, &publisher);
    let mut sub = MulticastSubscriber::new(scfg).unwrap();

    let mut bad_magic = make_packet(1, 0);
    bad_magic[0] ^= 0xFF;
    let mut bad_version = make_packet(1, 0);
    bad_version[2] = 99;
    let truncated = make_packet(1, 100)[..HEADER_LEN + 50].to_vec();
    let oversized = make_packet(1, DEFAULT_MAX_PACKET); // longer than a slot
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![1, 2, 3],
        vec![0; HEADER_LEN],
        bad_magic,
        bad_version,
        truncated,
        oversized,
    ];

    // At the request port.
    let raw = UdpSocket::bind("127.0.0.1:0").unwrap();
    for g in &garbage {
        raw.send_to(g, publisher.request_addr()).unwrap();
    }
    let valid = make_kind(PacketKind::SnapshotRequest, 5, 0);
    raw.send_to(&valid, publisher.request_addr()).unwrap();
    let got = requests_until(&mut publisher, 1);
    let SocketAddr::V4(raw_addr) = raw.local_addr().unwrap() else { panic!("v4") };
    assert_eq!(got, vec![(peer_id(raw_addr), valid.clone())]);
    assert_eq!(publisher.stats().malformed, garbage.len() as u64);
    assert_eq!(publisher.stats().requests, 1);

    // At the multicast group.
    let mc = sender_from(Ipv4Addr::LOCALHOST);
    for g in &garbage {
        mc.send_to(g, &cfg.group_a.into()).unwrap();
    }
    // Garbage is counted malformed whoever sends it; a packet counts only
    // from the publisher (its own socket, the source subscribers check).
    let good = make_packet(2, 64);
    publisher.publish(&good).unwrap();
    publisher.flush().unwrap();
    let rx = recv(&mut sub, 1);
    assert_eq!(rx, vec![(Line::A, good)]);
    assert_eq!(sub.stats().malformed, garbage.len() as u64);
    assert_eq!(sub.stats().packets_received, 1);
}

#[test]
fn zero_timeout_poll_reports_nothing_when_idle() {
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap();
    let mut events = 0;
    for _ in 0..100 {
        publisher.poll(Some(Duration::ZERO), &mut |_| events += 1).unwrap();
        sub.poll(Some(Duration::ZERO), &mut |_| events += 1).unwrap();
    }
    // A short blocking poll also returns when nothing comes.
    sub.poll(Some(Duration::from_millis(5)), &mut |_| events += 1).unwrap();
    publisher.poll(Some(Duration::from_millis(5)), &mut |_| events += 1).unwrap();
    assert_eq!(events, 0);
    assert_eq!(sub.stats().packets_received, 0);
    sub.reconnect().unwrap();
}

#[test]
fn full_batch_flushes_itself_and_oversized_fill_is_refused() {
    let cfg = MulticastConfig { batch: 4, ..loopback_cfg() };
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap();
    assert_eq!(publisher.max_packet_len(), DEFAULT_MAX_PACKET);

    let packets: Vec<Vec<u8>> = (0..4).map(|i| make_packet(i, 8)).collect();
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(publisher.queued(), i);
        publisher.publish(p).unwrap();
    }
    assert_eq!(publisher.queued(), 0, "the 4th packet filled the batch and flushed it");
    assert_eq!(publisher.stats().syscalls, 1, "one sendmmsg for the batch");
    assert_eq!(publisher.stats().packets_sent, 4);

    let too_long = DEFAULT_MAX_PACKET + 1;
    let err = publisher.publish_with(&mut |_| too_long).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(publisher.queued(), 0);
    publisher.flush().unwrap();
    assert_eq!(publisher.stats().syscalls, 1, "flushing an empty batch makes no call");

    let got = recv(&mut sub, 4);
    let bytes: Vec<Vec<u8>> = got.into_iter().map(|(_, b)| b).collect();
    assert_eq!(bytes, packets);
}

#[test]
fn other_groups_on_the_same_port_are_not_received() {
    let cfg = loopback_cfg();
    let port = cfg.group_a.port();
    let other_group = SocketAddrV4::new(unique_group().ip().to_owned(), port);
    let other = MulticastConfig { group_a: other_group, ..cfg.clone() };
    let mut ours = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut theirs = MulticastPublisher::new(other.clone()).unwrap();
    let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &ours)).unwrap();
    // A subscriber of the other group on the same port also exists, so the
    // host has joined both groups.
    let mut their_sub = MulticastSubscriber::new(sub_cfg(&other, &theirs)).unwrap();

    let foreign = make_packet(1, 30);
    theirs.publish(&foreign).unwrap();
    theirs.flush().unwrap();
    let their_got = recv(&mut their_sub, 1);

    let mine = make_packet(2, 30);
    ours.publish(&mine).unwrap();
    ours.flush().unwrap();
    let got = recv_and_drain(&mut sub, 1, Duration::ZERO);
    assert_eq!(got, vec![(Line::A, mine)]);
    assert_eq!(their_got, vec![(Line::A, foreign)]);
}

// ---------------------------------------------------------------------------
// Root only: network namespaces across a Linux bridge.

#[test]
fn multicast_crosses_a_bridge_to_two_client_namespaces() {
    const TEST: &str = "multicast_crosses_a_bridge_to_two_client_namespaces";
    const N: usize = 2_000;
    let Some(topo) = topology_or_skip(TEST, "twm", 2) else {
        return;
    };

    let group = SocketAddrV4::new(Ipv4Addr::new(239, 77, 0, 1), 30001);
    let request = SocketAddrV4::new(topo.srv_addr(), 30000);
    // Across hosts no local copy is needed: loopback off.
    let cfg = MulticastConfig {
        loopback: false,
        ..MulticastConfig::new(group, topo.srv_addr(), request)
    };
    let pcfg = cfg.clone();
    let mut publisher =
        in_netns(&topo.srv, move || MulticastPublisher::new(pcfg)).unwrap().unwrap();
    let mut subs = Vec::new();
    for (i, ns) in topo.clients.iter().enumerate() {
        let scfg = MulticastConfig { interface: topo.cli_addr(i), ..cfg.clone() };
        subs.push(in_netns(ns, move || MulticastSubscriber::new(scfg)).unwrap().unwrap());
    }

    let (sent, got) = publish_lockstep(&mut publisher, &mut subs, N, 1);
    for (k, got) in got.iter().enumerate() {
        assert_eq!(got.len(), N);
        for (i, (line, bytes)) in got.iter().enumerate() {
            assert_eq!(*line, Line::A);
            assert_eq!(bytes, &sent[i], "client {k} packet {i}");
        }
    }

    // A request from client 1 across the bridge, answered by unicast.
    let nack = make_kind(PacketKind::Nack, 17, 0);
    subs[0].send_request(&nack).unwrap();
    let reqs = requests_until(&mut publisher, 1);
    let SocketAddr::V4(cli_addr) = subs[0].unicast_addr() else { panic!("v4") };
    assert_eq!(reqs, vec![(peer_id(cli_addr), nack)]);
    assert_eq!(cli_addr.ip(), &topo.cli_addr(0));
    let reply = make_kind(PacketKind::Retransmission, 17, 96);
    publisher.send_to(reqs[0].0, &reply).unwrap();
    let got = recv(&mut subs[0], 1);
    assert_eq!(got, vec![(Line::Unicast, reply)]);
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xdp-setup").join(name)
}

/// Standard deviations of binomial noise the measured loss may stray from
/// the target: 6σ makes a false failure a one-in-a-billion event while still
/// catching a mechanism that drops nothing or everything.
const LOSS_SIGMAS: f64 = 6.0;

/// Datagrams sent through the lossy bridge: enough that 5% loss has a
/// standard deviation of 0.15 percentage points.
const LOSS_SAMPLES: u32 = 20_000;

/// Send `n` sequenced datagrams from `tx` to `to`, then `END` markers until
/// the receiver thread says it saw one; returns how many distinct sequence
/// numbers it received.
fn count_through(tx: &UdpSocket, rx: UdpSocket, to: SocketAddr, tag: u8, n: u32) -> u32 {
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        let mut seen = vec![false; n as usize];
        let mut buf = [0u8; 16];
        rx.set_read_timeout(Some(POLL_SLICE)).unwrap();
        let deadline = Instant::now() + LIVENESS * 3;
        while Instant::now() < deadline {
            let Ok(len) = rx.recv(&mut buf) else { continue };
            if len != 6 || buf[0] != tag {
                continue;
            }
            if buf[1] == b'E' {
                done_tx.send(()).unwrap();
                break;
            }
            let seq = u32::from_le_bytes(buf[2..6].try_into().unwrap());
            if let Some(s) = seen.get_mut(seq as usize) {
                *s = true;
            }
        }
        seen.iter().filter(|s| **s).count() as u32
    });
    for seq in 0..n {
        let mut d = [tag, b'D', 0, 0, 0, 0];
        d[2..].copy_from_slice(&seq.to_le_bytes());
        tx.send_to(&d, to).unwrap();
        if seq % 256 == 255 {
            // Let the receiver drain: the test measures the bridge's drops,
            // not receive-buffer overflow.
            std::thread::yield_now();
        }
    }
    let deadline = Instant::now() + LIVENESS;
    while done_rx.recv_timeout(POLL_SLICE).is_err() {
        assert!(Instant::now() < deadline, "END marker never crossed the bridge");
        tx.send_to(&[tag, b'E', 0, 0, 0, 0], to).unwrap();
    }
    receiver.join().unwrap()
}

/// Receive-buffer drops counted by UDP in namespace `ns` (must stay 0 for the
/// loss measurement to be the bridge's alone).
fn rcvbuf_errors(ns: &str) -> u64 {
    let snmp = run("ip", &["netns", "exec", ns, "cat", "/proc/net/snmp"]).unwrap();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors").unwrap();
    values[i].parse().unwrap()
}

/// Apply 5% loss with netem.sh on the bridge of a fresh topology (with the
/// mechanism `force`d, or the script's own choice), send [`LOSS_SAMPLES`]
/// datagrams across it and check the fraction lost, the script's drop
/// counter, and that `clear` restores zero loss.
fn loss_through_bridge(test: &str, prefix: &str, force: Option<&str>, expect_mechanisms: &[&str]) {
    const LOSS_PERCENT: f64 = 5.0;
    let Some(topo) = topology_or_skip(test, prefix, 1) else {
        return;
    };
    let to = SocketAddr::V4(SocketAddrV4::new(topo.cli_addr(0), 40000));
    let srv = topo.srv_addr();
    let tx =
        in_netns(&topo.srv, move || UdpSocket::bind(SocketAddrV4::new(srv, 0))).unwrap().unwrap();
    let open_rx = || {
        in_netns(&topo.clients[0], move || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
            s.set_recv_buffer_size(32 << 20)?;
            s.bind(&to.into())?;
            Ok::<UdpSocket, std::io::Error>(s.into())
        })
        .unwrap()
        .unwrap()
    };
    let netem = script("netem.sh");
    let netem = netem.to_str().unwrap();
    let mut apply = vec!["-n", topo.mid.as_str()];
    if let Some(m) = force {
        apply.extend(["-m", m]);
    }
    apply.extend([topo.bridge, "5"]);

    // No loss before the script runs (this also resolves ARP).
    let base = count_through(&tx, open_rx(), to, 1, 2_000);
    assert_eq!(base, 2_000);

    let out = run(netem, &apply).unwrap();
    eprintln!("{out}");
    assert!(
        expect_mechanisms.iter().any(|m| out.contains(&format!("mechanism={m} "))),
        "netem.sh says which mechanism it used: {out}"
    );
    // Applying twice replaces, it does not stack to ~10%.
    run(netem, &apply).unwrap();

    let got = count_through(&tx, open_rx(), to, 2, LOSS_SAMPLES);
    let n = LOSS_SAMPLES as f64;
    let p = LOSS_PERCENT / 100.0;
    let lost = (n - got as f64) / n;
    let tolerance = LOSS_SIGMAS * (p * (1.0 - p) / n).sqrt();
    eprintln!(
        "{test}: lost {:.3}% of {LOSS_SAMPLES} (target {LOSS_PERCENT}%, ±{:.3}%)",
        lost * 100.0,
        tolerance * 100.0
    );
    assert!((lost - p).abs() <= tolerance, "lost {lost}, target {p} ± {tolerance}");

    // The rule's own counter saw at least every datagram we lost (it also
    // counts END markers and any ARP it dropped).
    let status = run(netem, &["-n", &topo.mid, topo.bridge, "status"]).unwrap();
    eprintln!("{status}");
    let dropped: u64 = status
        .split("dropped=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no dropped= in status: {status}"));
    assert!(
        dropped >= (LOSS_SAMPLES - got) as u64,
        "dropped {dropped}, lost {}",
        LOSS_SAMPLES - got
    );

    let out = run(netem, &["-n", &topo.mid, topo.bridge, "clear"]).unwrap();
    eprintln!("{out}");
    assert!(out.contains("mechanism=none"), "{out}");
    let status = run(netem, &["-n", &topo.mid, topo.bridge, "status"]).unwrap();
    assert!(status.contains("mechanism=none"), "clear removed every rule: {status}");
    let after = count_through(&tx, open_rx(), to, 3, 5_000);
    assert_eq!(after, 5_000, "clear restores zero loss");
    assert_eq!(rcvbuf_errors(&topo.clients[0]), 0, "the receiver's buffer never overflowed");
}

#[test]
fn netem_script_drops_the_requested_fraction_on_the_bridge() {
    // netem where the kernel has sch_netem; the development machines do not,
    // and the script falls back to nftables there.
    loss_through_bridge(
        "netem_script_drops_the_requested_fraction_on_the_bridge",
        "twl",
        None,
        &["netem", "nftables"],
    );
}

#[test]
fn netem_script_iptables_fallback_drops_the_requested_fraction() {
    loss_through_bridge(
        "netem_script_iptables_fallback_drops_the_requested_fraction",
        "twi",
        Some("iptables"),
        &["iptables"],
    );
}

#[test]
fn topology_script_up_makes_and_down_removes_the_namespaces() {
    const TEST: &str = "topology_script_up_makes_and_down_removes_the_namespaces";
    if !is_root() {
        skip(TEST, "not root");
        return;
    }
    let prefix = format!("tt{}x{}", std::process::id() % 10_000, unique());
    let topology = script("topology.sh");
    let topology = topology.to_str().unwrap();
    let up = run(topology, &["up", &prefix]);
    let listed = run("ip", &["netns", "list"]).unwrap_or_default();
    let down = run(topology, &["down", &prefix]);
    let up = up.unwrap();
    down.unwrap();
    for role in ["srv", "mid", "cli1", "cli2"] {
        let ns = format!("{prefix}{role}");
        assert!(
            listed.lines().any(|l| l.split_whitespace().next() == Some(ns.as_str())),
            "{ns} after up:\n{up}"
        );
    }
    let after = run("ip", &["netns", "list"]).unwrap();
    assert!(!after.contains(prefix.as_str()), "down removed every namespace: {after}");
}

/// A socket sending to the loopback groups from address `from`.
fn sender_from(from: Ipv4Addr) -> socket2::Socket {
    sender_at(SocketAddrV4::new(from, 0))
}

/// A socket sending to the loopback groups from `from` (address and port).
fn sender_at(from: SocketAddrV4) -> socket2::Socket {
    let mc = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    mc.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    mc.set_multicast_loop_v4(true).unwrap();
    mc.bind(&from.into()).unwrap();
    mc
}

#[test]
fn feed_datagrams_from_another_sender_are_counted_and_dropped() {
    let cfg = loopback_cfg();
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap();
    // Another host on the segment (127.0.0.2) sends well-formed packets to
    // the group, and so does another socket on the publisher's own address
    // (127.0.0.1, another port); the publisher sends from the recovery
    // service's address and port.
    let forged = make_packet(1, 64);
    sender_from(Ipv4Addr::new(127, 0, 0, 2)).send_to(&forged, &cfg.group_a.into()).unwrap();
    sender_from(Ipv4Addr::LOCALHOST).send_to(&forged, &cfg.group_a.into()).unwrap();
    let genuine = make_packet(2, 64);
    publisher.publish(&genuine).unwrap();
    publisher.flush().unwrap();
    let got = recv(&mut sub, 1);
    assert_eq!(got, vec![(Line::A, genuine)]);
    assert_eq!(sub.stats().wrong_source, 2);
}

/// The feed leaves from the recovery service's address and port even when
/// it has a socket of its own (the interface address is another): a
/// subscriber told only that address (`--source IP`) checks the port too.
#[test]
fn the_feed_leaves_from_the_recovery_port_whatever_the_interface() {
    let group = unique_group();
    let cfg = MulticastConfig {
        interface: Ipv4Addr::new(127, 0, 0, 4),
        ..MulticastConfig::loopback(group, SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
    };
    let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let port = publisher.request_addr().port();
    let scfg = MulticastConfig {
        interface: Ipv4Addr::LOCALHOST,
        source: Some(FeedSource { addr: Ipv4Addr::new(127, 0, 0, 4), port: None }),
        ..publisher.config().clone()
    };
    let mut sub = MulticastSubscriber::new(scfg).unwrap();
    let forged = make_packet(1, 64);
    sender_from(Ipv4Addr::new(127, 0, 0, 4)).send_to(&forged, &group.into()).unwrap();
    let genuine = make_packet(2, 64);
    publisher.publish(&genuine).unwrap();
    publisher.flush().unwrap();
    let got = recv(&mut sub, 1);
    assert_eq!(got, vec![(Line::A, genuine)], "the feed from 127.0.0.4:{port}");
    assert!(sub.stats().wrong_source <= 1, "the other port was not delivered");
}

#[test]
fn a_source_specific_join_takes_only_that_sender() {
    let cfg = loopback_cfg();
    let publisher = MulticastPublisher::new(cfg.clone()).unwrap();
    let from =
        SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 3), 5000 + std::process::id() as u16 % 20_000);
    let scfg = MulticastConfig {
        source: Some(FeedSource { addr: *from.ip(), port: Some(from.port()) }),
        ..sub_cfg(&cfg, &publisher)
    };
    let mut sub = MulticastSubscriber::new(scfg).unwrap();
    let other = make_packet(1, 64);
    sender_from(Ipv4Addr::LOCALHOST).send_to(&other, &cfg.group_a.into()).unwrap();
    let wanted = make_packet(2, 64);
    sender_at(from).send_to(&wanted, &cfg.group_a.into()).unwrap();
    let got = recv_and_drain(&mut sub, 1, Duration::from_millis(50));
    assert_eq!(got, vec![(Line::A, wanted)], "only the named source's packets");
    // The kernel filtered the other sender (IP_ADD_SOURCE_MEMBERSHIP), or
    // the check did: either way it was not delivered.
    assert!(sub.stats().wrong_source <= 1);
    assert_eq!("127.0.0.3:5000".parse::<FeedSource>().unwrap().port, Some(5000));
    assert!("nonsense".parse::<FeedSource>().is_err());
}

/// UDP GSO and GRO: a batch of packets within `GSO_PAD_MAX` of the slot size
/// leaves in GSO sends (padded to the slot size), the kernel merges them on
/// the way in (GRO) and the subscriber splits every merged receive in place:
/// each packet arrives once, in order, byte-identical (the padding is not
/// handed up). With both off, the same packets arrive the same way, one
/// datagram per system call and receive.
#[test]
fn gso_sends_and_gro_receives_carry_every_packet_byte_identical() {
    const ROUNDS: usize = 20;
    for offload in [true, false] {
        let cfg = MulticastConfig { gso: offload, gro: offload, ..loopback_cfg() };
        let mut publisher = MulticastPublisher::new(cfg.clone()).unwrap();
        let mut sub = MulticastSubscriber::new(sub_cfg(&cfg, &publisher)).unwrap();
        let full = cfg.max_packet_len - HEADER_LEN;
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for r in 0..ROUNDS {
            for i in 0..cfg.batch {
                let seq = (r * cfg.batch + i + 1) as u64;
                // Full, short by less than GSO_PAD_MAX, and one short packet to end each batch.
                let payload = match i % 3 {
                    _ if i + 1 == cfg.batch => 100,
                    0 => full,
                    1 => full - (GSO_PAD_MAX - 1),
                    _ => full - 10,
                };
                let p = make_packet(seq, payload);
                publisher.publish(&p).unwrap();
                sent.push(p);
            }
            publisher.flush().unwrap();
            recv_until(&mut sub, &mut got, sent.len());
        }
        assert_eq!(got.len(), sent.len(), "offload {offload}");
        for (i, (line, bytes)) in got.iter().enumerate() {
            assert_eq!(*line, Line::A);
            assert_eq!(bytes, &sent[i], "offload {offload}: packet {i}");
        }
        let (ps, ss) = (publisher.stats(), sub.stats());
        assert_eq!(ps.packets_sent, sent.len() as u64);
        assert_eq!(ss.packets_received, sent.len() as u64);
        assert_eq!(ss.malformed, 0);
        assert_eq!((ps.gso, ss.gro), (offload, offload));
        if offload {
            // One GSO send per batch (31 full or padded packets, then the short one).
            assert_eq!(ps.gso_sends, ROUNDS as u64, "{ps:?}");
            assert!(ps.syscalls <= 2 * ROUNDS as u64, "{ps:?}");
            assert!(ss.gro_merged > 0, "loopback merges GSO trains: {ss:?}");
        } else {
            assert_eq!((ps.gso_sends, ss.gro_merged), (0, 0));
        }
    }
}
