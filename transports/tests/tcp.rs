//! The TCP transport on real loopback sockets (127.0.0.1, port 0).
//!
//! Every test drives both ends from one thread with short polls; a generous
//! deadline turns a hang into a failure. Nothing asserts on speed.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tickwire_core::SeqNo;
use tickwire_core::wire::{DecodeError, HEADER_LEN, PacketKind, PacketRepr};
use tickwire_transports::conformance::{self, Params, Profile, test_stream};
use tickwire_transports::tcp::{
    TcpPublisher, TcpPublisherConfig, TcpSubscriber, TcpSubscriberConfig,
};
use tickwire_transports::{
    DisconnectReason, Line, PeerId, PubEvent, Publisher, SubEvent, Subscriber,
};

/// A test that has not finished by then is stuck: fail it.
const DEADLINE: Duration = Duration::from_secs(60);
/// Poll timeout while waiting.
const POLL: Duration = Duration::from_millis(1);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn bare(kind: PacketKind, first_seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    PacketRepr {
        kind,
        flags: 0,
        epoch: 1,
        first_seq: SeqNo(first_seq),
        count: 0,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b
}

fn login() -> Vec<u8> {
    bare(PacketKind::Login, 1)
}

#[test]
fn conformance_suite() {
    conformance::run_all(
        &Profile::STREAM,
        &Params::default(),
        || TcpPublisher::bind(any_port(), TcpPublisherConfig::default()).unwrap(),
        |p| TcpSubscriber::connect(p.local_addr(), TcpSubscriberConfig::default()).unwrap(),
    );
}

#[test]
fn conformance_suite_small_socket_buffers() {
    // Tiny kernel buffers: every packet crosses several partial writes and reads.
    let cfg = TcpPublisherConfig { send_buffer: 4096, recv_buffer: 4096, ..Default::default() };
    conformance::run_all(
        &Profile::STREAM,
        &Params { packets: 1500, window: 256, ..Params::default() },
        || TcpPublisher::bind(any_port(), cfg.clone()).unwrap(),
        |p| {
            let cfg = TcpSubscriberConfig { recv_buffer: 4096, ..Default::default() };
            TcpSubscriber::connect(p.local_addr(), cfg).unwrap()
        },
    );
}

/// A publisher that marks every peer live when it logs in, and records events.
struct Server {
    p: TcpPublisher,
    logins: Vec<PeerId>,
    requests: Vec<(PeerId, Vec<u8>)>,
    connected: Vec<PeerId>,
    disconnected: Vec<(PeerId, DisconnectReason)>,
}

impl Server {
    fn new(cfg: TcpPublisherConfig) -> Server {
        Server {
            p: TcpPublisher::bind(any_port(), cfg).unwrap(),
            logins: Vec::new(),
            requests: Vec::new(),
            connected: Vec::new(),
            disconnected: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.p.local_addr()
    }

    fn poll(&mut self, timeout: Duration) {
        let mut evs = Vec::new();
        self.p
            .poll(Some(timeout), &mut |ev| match ev {
                PubEvent::Connected(peer) => evs.push((peer, None, None)),
                PubEvent::Request { peer, packet } => evs.push((peer, Some(packet.to_vec()), None)),
                PubEvent::Disconnected { peer, reason } => evs.push((peer, None, Some(reason))),
            })
            .unwrap();
        for ev in evs {
            match ev {
                (peer, None, None) => self.connected.push(peer),
                (peer, Some(packet), _) => {
                    if packet == login() {
                        self.p.set_live(peer, true);
                        self.logins.push(peer);
                    }
                    self.requests.push((peer, packet));
                }
                (peer, None, Some(reason)) => self.disconnected.push((peer, reason)),
            }
        }
    }

    fn reason(&self, peer: PeerId) -> Option<&DisconnectReason> {
        self.disconnected.iter().find(|(p, _)| *p == peer).map(|(_, r)| r)
    }
}

/// A subscriber that logs in when connected and checks the stream it gets.
struct Client {
    s: TcpSubscriber,
    /// Packets received, in order.
    got: Vec<Vec<u8>>,
    connects: u32,
    disconnects: Vec<DisconnectReason>,
}

impl Client {
    fn new(addr: SocketAddr) -> Client {
        Client {
            s: TcpSubscriber::connect(addr, TcpSubscriberConfig::default()).unwrap(),
            got: Vec::new(),
            connects: 0,
            disconnects: Vec::new(),
        }
    }

    fn poll(&mut self, timeout: Duration) {
        let mut connected = false;
        let got = &mut self.got;
        let disconnects = &mut self.disconnects;
        self.s
            .poll(Some(timeout), &mut |ev| match ev {
                SubEvent::Connected => connected = true,
                SubEvent::Packet { line, packet, .. } => {
                    assert_eq!(line, Line::A, "TCP has one line");
                    got.push(packet.to_vec());
                }
                SubEvent::Disconnected(r) => disconnects.push(r),
            })
            .unwrap();
        if connected {
            self.connects += 1;
            self.s.send_request(&login()).unwrap();
        }
    }
}

/// Poll everything until `done` or the deadline (which fails the test).
fn drive(
    server: &mut Server,
    clients: &mut [&mut Client],
    deadline: Instant,
    what: &str,
    mut done: impl FnMut(&Server, &[&mut Client]) -> bool,
) {
    while !done(server, clients) {
        assert!(Instant::now() < deadline, "deadline passed waiting for {what}");
        server.poll(Duration::ZERO);
        for c in clients.iter_mut() {
            c.poll(POLL);
        }
    }
}

/// A raw client that connects and logs in, then does whatever the test says.
fn raw_login(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&login()).unwrap();
    s
}

/// Publish `stream` in windows, waiting for the clients to catch up after
/// each; keeps polling until `extra_done` too.
fn publish_all(
    server: &mut Server,
    clients: &mut [&mut Client],
    stream: &[Vec<u8>],
    deadline: Instant,
    mut extra_done: impl FnMut(&Server) -> bool,
) {
    const WINDOW: usize = 64;
    let base: Vec<usize> = clients.iter().map(|c| c.got.len()).collect();
    for start in (0..stream.len()).step_by(WINDOW) {
        let end = (start + WINDOW).min(stream.len());
        for p in &stream[start..end] {
            server.p.publish(p).unwrap();
        }
        server.p.flush().unwrap();
        drive(server, clients, deadline, "clients to catch up", |_, cs| {
            cs.iter().zip(&base).all(|(c, b)| c.got.len() >= b + end)
        });
    }
    drive(server, clients, deadline, "the extra condition", |s, _| extra_done(s));
}

fn assert_got_stream(c: &Client, skip: usize, stream: &[Vec<u8>], who: &str) {
    let got = &c.got[skip..];
    assert_eq!(got.len(), stream.len(), "{who}: packet count");
    for (i, (g, w)) in got.iter().zip(stream).enumerate() {
        assert!(g == w, "{who}: packet {i} differs from what was published");
    }
}

/// Set up a server and `n` logged-in clients.
fn server_and_clients(cfg: TcpPublisherConfig, n: usize) -> (Server, Vec<Client>) {
    let mut server = Server::new(cfg);
    let mut clients: Vec<Client> = (0..n).map(|_| Client::new(server.addr())).collect();
    let deadline = Instant::now() + DEADLINE;
    let mut refs: Vec<&mut Client> = clients.iter_mut().collect();
    drive(&mut server, &mut refs, deadline, "logins", |s, _| s.logins.len() == n);
    (server, clients)
}

#[test]
fn slow_client_is_dropped_and_others_get_everything() {
    let high_water = 64 << 10;
    let cfg = TcpPublisherConfig {
        high_water,
        slow_timeout: Duration::from_millis(100),
        send_buffer: 16 << 10,
        ..Default::default()
    };
    let (mut server, mut clients) = server_and_clients(cfg, 2);
    let mut slow = raw_login(server.addr());
    let deadline = Instant::now() + DEADLINE;
    drive(&mut server, &mut [], deadline, "the slow client's login", |s, _| s.logins.len() == 3);
    let slow_peer = server.logins[2];

    // 20 000 packets, about 10 MB: far more than the slow client's socket
    // buffers and the high-water mark.
    let stream = test_stream(7, 20_000, 1472);
    let [a, b] = &mut clients[..] else { unreachable!() };
    publish_all(&mut server, &mut [a, b], &stream, deadline, |s| s.reason(slow_peer).is_some());

    match server.reason(slow_peer) {
        Some(DisconnectReason::SlowConsumer { queued }) => {
            assert!(*queued > high_water, "dropped with {queued} bytes queued, under high water")
        }
        other => panic!("slow client: expected SlowConsumer, got {other:?}"),
    }
    assert_eq!(server.disconnected.len(), 1, "only the slow client is dropped");
    let st = server.p.stats();
    assert_eq!(st.slow_disconnects, 1);
    assert_eq!(st.connected, 2);
    assert_eq!(st.malformed, 0);
    assert_got_stream(&clients[0], 0, &stream, "client 0");
    assert_got_stream(&clients[1], 0, &stream, "client 1");

    // What the slow client did get is an intact prefix of the stream, then EOF.
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = Vec::new();
    let _ = slow.read_to_end(&mut bytes); // ends with EOF (or a reset)
    let all: Vec<u8> = stream.concat();
    assert!(!bytes.is_empty() && bytes.len() < all.len(), "slow client got {} bytes", bytes.len());
    assert!(all.starts_with(&bytes), "the slow client's bytes are not a prefix of the stream");
}

#[test]
fn queue_above_max_queue_disconnects_at_once() {
    let max_queue = 256 << 10;
    let cfg = TcpPublisherConfig {
        high_water: 64 << 10,
        slow_timeout: Duration::from_secs(3600), // only the hard cap can act
        max_queue,
        send_buffer: 16 << 10,
        ..Default::default()
    };
    let (mut server, mut clients) = server_and_clients(cfg, 1);
    let _slow = raw_login(server.addr());
    let deadline = Instant::now() + DEADLINE;
    drive(&mut server, &mut [], deadline, "the slow client's login", |s, _| s.logins.len() == 2);
    let slow_peer = server.logins[1];
    let stream = test_stream(8, 10_000, 1472);
    let [a] = &mut clients[..] else { unreachable!() };
    publish_all(&mut server, &mut [a], &stream, deadline, |s| s.reason(slow_peer).is_some());
    match server.reason(slow_peer) {
        Some(DisconnectReason::SlowConsumer { queued }) => {
            assert!(*queued <= max_queue, "queue {queued} grew past max_queue {max_queue}")
        }
        other => panic!("expected SlowConsumer, got {other:?}"),
    }
    let st = server.p.stats();
    assert_eq!(st.slow_disconnects, 1);
    assert!(st.send_errors >= 1, "the packet that did not fit is counted");
    assert_got_stream(&clients[0], 0, &stream, "client 0");
}

/// Send `bytes` on a fresh raw connection (optionally half-closing after) and
/// return the stream.
fn raw_send(addr: SocketAddr, bytes: &[u8], close: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    if close {
        s.shutdown(Shutdown::Write).unwrap();
    }
    s
}

#[test]
fn malformed_input_closes_only_the_offender() {
    let (mut server, mut clients) = server_and_clients(TcpPublisherConfig::default(), 1);
    let addr = server.addr();
    let deadline = Instant::now() + DEADLINE;

    let mut absurd = login();
    absurd[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_magic = login();
    bad_magic[0..2].copy_from_slice(&0xdeadu16.to_le_bytes());
    let mut bad_version = login();
    bad_version[2] = 99;
    let mut too_long = login(); // a valid length, but above max_packet_len (1472)
    too_long[32..36].copy_from_slice(&4000u32.to_le_bytes());
    let mut login_then_garbage = login();
    login_then_garbage.extend_from_slice(&[0xff; 64]);
    type Check = fn(&DecodeError) -> bool;
    let cases: Vec<(&str, Vec<u8>, bool, Check)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, |e| {
            matches!(e, DecodeError::BadMagic(_))
        }),
        ("truncated frame then close", login()[..25].to_vec(), true, |e| {
            matches!(e, DecodeError::Truncated { need: 40, have: 25 })
        }),
        ("truncated payload then close", too_long_prefix(), true, |e| {
            matches!(e, DecodeError::Truncated { need: 140, have: 60 })
        }),
        ("absurd payload_len", absurd, false, |e| matches!(e, DecodeError::Malformed(_))),
        ("bad magic", bad_magic, false, |e| matches!(e, DecodeError::BadMagic(0xdead))),
        ("bad version", bad_version, false, |e| matches!(e, DecodeError::BadVersion(99))),
        ("longer than max_packet_len", too_long, false, |e| matches!(e, DecodeError::Malformed(_))),
        ("login then garbage", login_then_garbage, false, |e| {
            matches!(e, DecodeError::BadMagic(0xffff))
        }),
    ];

    let stream = test_stream(9, 4000, 1472);
    let per_case = stream.len() / cases.len();
    let mut sockets = Vec::new();
    for (k, (name, bytes, close, check)) in cases.iter().enumerate() {
        let before = server.connected.len();
        sockets.push(raw_send(addr, bytes, *close));
        drive(&mut server, &mut [], deadline, "the raw connection", |s, _| {
            s.connected.len() > before
        });
        let peer = *server.connected.last().unwrap();
        // Keep the feed going while the offender is handled.
        let [a] = &mut clients[..] else { unreachable!() };
        let chunk = &stream[k * per_case..(k + 1) * per_case];
        publish_all(&mut server, &mut [a], chunk, deadline, |s| s.reason(peer).is_some());
        match server.reason(peer) {
            Some(DisconnectReason::Malformed(e)) => assert!(check(e), "{name}: wrong error {e:?}"),
            other => panic!("{name}: expected Malformed, got {other:?}"),
        }
        assert_eq!(server.p.stats().malformed, k as u64 + 1, "{name}: counted");
        assert_eq!(server.p.stats().connected, 1, "{name}: only the normal client is left");
    }
    // The one valid Login before the garbage was delivered as a request.
    assert_eq!(server.logins.len(), 2);
    // Every offender sees its connection closed.
    for (mut s, (name, ..)) in sockets.into_iter().zip(&cases) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut sink = Vec::new();
        match s.read_to_end(&mut sink) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{name}: {e}"),
        }
    }
    let done = per_case * cases.len();
    assert_got_stream(&clients[0], 0, &stream[..done], "normal client");
    assert_eq!(clients[0].disconnects, vec![]);
}

/// A header announcing 100 bytes of payload, followed by only 20 of them.
fn too_long_prefix() -> Vec<u8> {
    let mut b = login();
    b[32..36].copy_from_slice(&100u32.to_le_bytes());
    b.extend_from_slice(&[0u8; 20]);
    b
}

#[test]
fn requests_dripped_byte_by_byte_are_framed() {
    let mut server = Server::new(TcpPublisherConfig::default());
    let mut raw = TcpStream::connect(server.addr()).unwrap();
    raw.set_nodelay(true).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut want = Vec::new();
    for k in 0..3 {
        let req = bare(PacketKind::Nack, 100 + k);
        for byte in &req {
            raw.write_all(std::slice::from_ref(byte)).unwrap();
            server.poll(Duration::ZERO);
        }
        want.push(req);
    }
    drive(&mut server, &mut [], deadline, "three requests", |s, _| s.requests.len() == 3);
    let got: Vec<Vec<u8>> = server.requests.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(server.p.stats().requests, 3);
}

#[test]
fn reconnect_after_the_publisher_drops_the_client() {
    let (mut server, mut clients) = server_and_clients(TcpPublisherConfig::default(), 1);
    let deadline = Instant::now() + DEADLINE;
    let first = server.logins[0];
    let stream = test_stream(10, 200, 1472);
    let [c] = &mut clients[..] else { unreachable!() };
    publish_all(&mut server, &mut [&mut *c], &stream[..100], deadline, |_| true);

    let reason = DisconnectReason::Malformed(DecodeError::BadCrc { expected: 1, actual: 2 });
    server.p.disconnect(first, reason.clone());
    assert_eq!(server.p.stats().connected, 0);
    drive(&mut server, &mut [&mut *c], deadline, "both sides to see the drop", |s, cs| {
        s.reason(first).is_some() && !cs[0].disconnects.is_empty()
    });
    assert_eq!(server.reason(first), Some(&reason), "reported with the server's reason");
    assert_eq!(c.disconnects, vec![DisconnectReason::Closed]);
    assert!(!c.s.is_connected());
    assert!(c.s.send_request(&login()).is_err(), "no connection to send on");

    c.s.reconnect().unwrap();
    drive(&mut server, &mut [&mut *c], deadline, "the second login", |s, _| s.logins.len() == 2);
    let second = server.logins[1];
    assert!(second > first, "peer ids are never reused");
    publish_all(&mut server, &mut [&mut *c], &stream[100..], deadline, |_| true);
    assert_got_stream(c, 0, &stream, "reconnected client");
    assert_eq!(c.connects, 2);
    assert_eq!(c.s.stats().connects, 2);
    assert_eq!(c.s.stats().packets_received, 200);
}

#[test]
fn connection_refused_is_reported_then_reconnect_succeeds() {
    // A port with nothing listening: bind, note it, close.
    let addr = TcpListener::bind(any_port()).unwrap().local_addr().unwrap();
    let mut s = TcpSubscriber::connect(addr, TcpSubscriberConfig::default()).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut events = Vec::new();
    while events.is_empty() {
        assert!(Instant::now() < deadline, "no outcome for a refused connect");
        s.poll(Some(POLL), &mut |ev| events.push(format!("{ev:?}"))).unwrap();
    }
    assert_eq!(events.len(), 1);
    assert!(events[0].starts_with("Disconnected(Io("), "got {events:?}");
    assert_eq!(s.stats().connects, 0);

    // Now something listens there.
    let listener = TcpListener::bind(addr).unwrap();
    s.reconnect().unwrap();
    let mut connected = false;
    while !connected {
        assert!(Instant::now() < deadline, "no Connected after reconnect");
        s.poll(Some(POLL), &mut |ev| connected |= matches!(ev, SubEvent::Connected)).unwrap();
    }
    assert!(listener.accept().is_ok());
    assert_eq!(s.stats().connects, 1);
}

#[test]
fn clients_beyond_max_clients_are_closed() {
    let cfg = TcpPublisherConfig { max_clients: 1, ..Default::default() };
    let (mut server, mut clients) = server_and_clients(cfg, 1);
    let mut extra = TcpStream::connect(server.addr()).unwrap();
    extra.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 16];
    loop {
        assert!(Instant::now() < deadline, "the extra client was never closed");
        server.poll(POLL);
        match extra.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Ok(n) => panic!("the refused client got {n} bytes"),
            Err(_) => {} // timeout: not closed yet
        }
    }
    assert_eq!(server.p.stats().connections, 1);
    assert_eq!(server.p.stats().connected, 1);
    let stream = test_stream(11, 50, 1472);
    let [c] = &mut clients[..] else { unreachable!() };
    publish_all(&mut server, &mut [&mut *c], &stream, deadline, |_| true);
    assert_got_stream(c, 0, &stream, "the admitted client");
}

/// A raw server that feeds a TcpSubscriber `bytes` then closes; returns what
/// the subscriber reported.
fn feed_subscriber(
    bytes: &[u8],
    cfg: TcpSubscriberConfig,
) -> (Vec<Vec<u8>>, Vec<DisconnectReason>, u64) {
    let listener = TcpListener::bind(any_port()).unwrap();
    let mut s = TcpSubscriber::connect(listener.local_addr().unwrap(), cfg).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    conn.write_all(bytes).unwrap();
    drop(conn);
    let deadline = Instant::now() + DEADLINE;
    let mut packets = Vec::new();
    let mut gone = Vec::new();
    while gone.is_empty() {
        assert!(Instant::now() < deadline, "the subscriber never saw the close");
        s.poll(Some(POLL), &mut |ev| match ev {
            SubEvent::Connected => {}
            SubEvent::Packet { packet, .. } => packets.push(packet.to_vec()),
            SubEvent::Disconnected(r) => gone.push(r),
        })
        .unwrap();
    }
    assert!(!s.is_connected());
    (packets, gone, s.stats().malformed)
}

#[test]
fn subscriber_drops_malformed_streams() {
    let good = test_stream(12, 3, 1472);
    let mut bytes = good.concat();
    bytes.extend_from_slice(b"garbage after three packets");
    let (packets, gone, malformed) = feed_subscriber(&bytes, TcpSubscriberConfig::default());
    assert_eq!(packets, good, "the packets before the garbage are delivered intact");
    assert!(
        matches!(gone[..], [DisconnectReason::Malformed(DecodeError::BadMagic(_))]),
        "{gone:?}"
    );
    assert_eq!(malformed, 1);

    // A packet longer than the subscriber accepts.
    let big = conformance::data_packet(0, 3000);
    let cfg = TcpSubscriberConfig { max_packet_len: 1472, ..Default::default() };
    let (packets, gone, malformed) = feed_subscriber(&big, cfg);
    assert!(packets.is_empty());
    assert!(
        matches!(gone[..], [DisconnectReason::Malformed(DecodeError::Malformed(_))]),
        "{gone:?}"
    );
    assert_eq!(malformed, 1);

    // A packet cut short by the close.
    let (packets, gone, malformed) =
        feed_subscriber(&good[1][..50], TcpSubscriberConfig::default());
    assert!(packets.is_empty());
    assert!(
        matches!(gone[..], [DisconnectReason::Malformed(DecodeError::Truncated { have: 50, .. })]),
        "{gone:?}"
    );
    assert_eq!(malformed, 1);

    // A clean close after whole packets is just Closed.
    let (packets, gone, malformed) =
        feed_subscriber(&bytes[..good.concat().len()], TcpSubscriberConfig::default());
    assert_eq!(packets, good);
    assert_eq!(gone, vec![DisconnectReason::Closed]);
    assert_eq!(malformed, 0);
}

#[test]
fn requests_queued_while_connecting_go_out_once_connected() {
    let mut server = Server::new(TcpPublisherConfig::default());
    let mut s = TcpSubscriber::connect(server.addr(), TcpSubscriberConfig::default()).unwrap();
    // Not connected yet (the connect completes in a poll): queue two requests.
    let reqs = [bare(PacketKind::Nack, 5), bare(PacketKind::SnapshotRequest, 6)];
    for r in &reqs {
        s.send_request(r).unwrap();
    }
    let deadline = Instant::now() + DEADLINE;
    while server.requests.len() < 2 {
        assert!(Instant::now() < deadline, "queued requests never arrived");
        s.poll(Some(Duration::ZERO), &mut |_| {}).unwrap();
        server.poll(POLL);
    }
    let got: Vec<Vec<u8>> = server.requests.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got, reqs.to_vec());
    assert_eq!(s.stats().requests_sent, 2);
}

#[test]
fn publish_with_rejects_a_length_beyond_the_buffer() {
    let mut p = TcpPublisher::bind(any_port(), TcpPublisherConfig::default()).unwrap();
    let max = p.max_packet_len();
    let err = p.publish_with(&mut |buf| buf.len() + 1).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(p.send_to(12345, &login()).is_err(), "unknown peer");
    assert!(p.publish(&vec![0u8; max]).is_ok());
    assert_eq!(p.stats().packets_sent, 0, "no clients: nothing queued");
}

/// Fan-out cost of TCP: one publisher thread, subscribers in another thread,
/// loopback. A measurement, not a test: it asserts only that every byte arrived.
///
/// `cargo test --release -p tickwire-transports --test tcp fanout_throughput -- --ignored --nocapture`
#[test]
#[ignore = "measurement; run with --release --ignored --nocapture"]
fn fanout_throughput() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const PACKETS: u64 = 200_000;
    /// Packets the publisher may run ahead of the slowest subscriber.
    const AHEAD: u64 = 4096;
    let packet = conformance::data_packet(1, HEADER_LEN + 4 * 48); // 4 quotes, 232 bytes
    for clients in [1usize, 4, 16] {
        let mut server = Server::new(TcpPublisherConfig::default());
        let addr = server.addr();
        let received: Arc<Vec<AtomicU64>> =
            Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
        let rx = Arc::clone(&received);
        let reader = std::thread::spawn(move || {
            let mut subs: Vec<TcpSubscriber> = (0..clients)
                .map(|_| TcpSubscriber::connect(addr, TcpSubscriberConfig::default()).unwrap())
                .collect();
            let mut counts = vec![0u64; clients];
            let mut bytes = 0u64;
            while counts.iter().any(|&c| c < PACKETS) {
                for (i, s) in subs.iter_mut().enumerate() {
                    let mut login_now = false;
                    s.poll(Some(Duration::ZERO), &mut |ev| match ev {
                        SubEvent::Connected => login_now = true,
                        SubEvent::Packet { packet, .. } => {
                            counts[i] += 1;
                            bytes += packet.len() as u64;
                        }
                        SubEvent::Disconnected(r) => panic!("subscriber {i} dropped: {r:?}"),
                    })
                    .unwrap();
                    if login_now {
                        s.send_request(&login()).unwrap();
                    }
                    rx[i].store(counts[i], Ordering::Relaxed);
                }
            }
            let syscalls: u64 = subs.iter().map(|s| s.stats().syscalls).sum();
            (bytes, syscalls)
        });
        let deadline = Instant::now() + DEADLINE;
        while server.logins.len() < clients {
            assert!(Instant::now() < deadline);
            server.poll(POLL);
        }
        let start = Instant::now();
        let base = server.p.stats();
        let mut published = 0u64;
        while published < PACKETS {
            let slowest = received.iter().map(|c| c.load(Ordering::Relaxed)).min().unwrap();
            if published - slowest < AHEAD {
                for _ in 0..64.min(PACKETS - published) {
                    server.p.publish(&packet).unwrap();
                    published += 1;
                }
                server.p.flush().unwrap();
            }
            server.poll(Duration::ZERO);
        }
        while received.iter().any(|c| c.load(Ordering::Relaxed) < PACKETS) {
            assert!(Instant::now() < deadline, "fan-out did not finish");
            server.poll(Duration::from_micros(100));
        }
        let elapsed = start.elapsed();
        let (bytes, sub_syscalls) = reader.join().unwrap();
        assert_eq!(bytes, PACKETS * clients as u64 * packet.len() as u64);
        let st = server.p.stats();
        let secs = elapsed.as_secs_f64();
        println!(
            "tcp fan-out: {clients:>2} clients, {PACKETS} packets of {} B: {:>9.0} packets/s published, \
             {:>9.0} copies/s, {:>7.1} MB/s out; publisher writes per packet {:.3}, subscriber reads per packet {:.3}",
            packet.len(),
            PACKETS as f64 / secs,
            (PACKETS * clients as u64) as f64 / secs,
            (st.bytes_sent - base.bytes_sent) as f64 / secs / 1e6,
            (st.syscalls - base.syscalls) as f64 / PACKETS as f64,
            sub_syscalls as f64 / (PACKETS * clients as u64) as f64,
        );
    }
}

/// The waiter: mio rounds any sub-millisecond timeout up to 1 ms; the TCP
/// transports wait on their epoll descriptor with ppoll instead, so a 50 µs
/// poll with nothing to do ends long before a millisecond. (The best of 20
/// tries: a loaded machine may wake us late, never early.)
#[test]
fn a_50us_poll_is_not_rounded_to_a_millisecond() {
    tickwire_transports::wait::set_min_timer_slack().unwrap();
    let mut p = TcpPublisher::bind(any_port(), TcpPublisherConfig::default()).unwrap();
    let mut s = TcpSubscriber::connect(p.local_addr(), TcpSubscriberConfig::default()).unwrap();
    // Let the connection settle, then time empty polls on both sides.
    for _ in 0..50 {
        p.poll(Some(Duration::from_millis(1)), &mut |_| {}).unwrap();
        s.poll(Some(Duration::from_millis(1)), &mut |_| {}).unwrap();
    }
    let best = |f: &mut dyn FnMut()| {
        (0..20)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed()
            })
            .min()
            .unwrap()
    };
    let pub_best = best(&mut || p.poll(Some(Duration::from_micros(50)), &mut |_| {}).unwrap());
    let sub_best = best(&mut || s.poll(Some(Duration::from_micros(50)), &mut |_| {}).unwrap());
    for (who, b) in [("publisher", pub_best), ("subscriber", sub_best)] {
        assert!(b >= Duration::from_micros(50), "{who} waited its timeout: {b:?}");
        assert!(b < Duration::from_micros(900), "{who}: best 50 µs poll took {b:?}");
    }
}

/// Poll `server` until `s` is closed by it (EOF or reset), failing after `within`.
fn wait_closed(server: &mut Server, s: &mut TcpStream, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
    let mut buf = [0u8; 64];
    loop {
        assert!(start.elapsed() < within, "{what}: not closed within {within:?}");
        server.poll(POLL);
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return start.elapsed(),
            Ok(_) | Err(_) => {} // bytes (a live feed) or the read timeout: not closed yet
        }
    }
}

#[test]
fn a_partial_header_is_closed_after_the_login_timeout() {
    let login_timeout = Duration::from_millis(300);
    let mut server = Server::new(TcpPublisherConfig { login_timeout, ..Default::default() });
    // Half a header, then silence: without a timeout this would hold a slot forever.
    let mut partial = raw_send(server.addr(), &login()[..17], false);
    // A silent connection, and one that sent a complete packet that is not a
    // Login (a NACK): the test's server marks only Logins logged in.
    let mut silent = TcpStream::connect(server.addr()).unwrap();
    let mut nack_only = raw_send(server.addr(), &bare(PacketKind::Nack, 5), false);
    // A client that logs in stays.
    let mut good = Client::new(server.addr());
    let deadline = Instant::now() + DEADLINE;
    drive(&mut server, &mut [&mut good], deadline, "the login", |s, _| s.logins.len() == 1);
    let took = wait_closed(&mut server, &mut partial, Duration::from_secs(5), "partial header");
    assert!(took + Duration::from_millis(100) >= login_timeout, "closed too early: {took:?}");
    wait_closed(&mut server, &mut silent, Duration::from_secs(5), "silent connection");
    wait_closed(&mut server, &mut nack_only, Duration::from_secs(5), "NACK without a Login");
    drive(&mut server, &mut [&mut good], deadline, "the reports", |s, _| s.disconnected.len() == 3);
    assert!(s_all(&server, |r| *r == DisconnectReason::LoginTimeout), "{:?}", server.disconnected);
    let st = server.p.stats();
    assert_eq!((st.login_timeouts, st.connected), (3, 1), "{st:?}");
    // The logged-in client still gets the feed.
    let stream = test_stream(3, 20, 1472);
    publish_all(&mut server, &mut [&mut good], &stream, deadline, |_| true);
    assert_got_stream(&good, 0, &stream, "the logged-in client");
    assert!(good.disconnects.is_empty());
}

fn s_all(server: &Server, f: impl Fn(&DisconnectReason) -> bool) -> bool {
    server.disconnected.iter().all(|(_, r)| f(r))
}

#[test]
fn an_idle_connection_is_closed() {
    let idle_timeout = Duration::from_millis(300);
    let mut server = Server::new(TcpPublisherConfig { idle_timeout, ..Default::default() });
    let mut idle = raw_login(server.addr());
    let deadline = Instant::now() + DEADLINE;
    drive(&mut server, &mut [], deadline, "the login", |s, _| s.logins.len() == 1);
    // Logged in and live, but nothing published: no byte moves either way.
    let took = wait_closed(&mut server, &mut idle, Duration::from_secs(5), "idle connection");
    assert!(took + Duration::from_millis(100) >= idle_timeout, "closed too early: {took:?}");
    drive(&mut server, &mut [], deadline, "the report", |s, _| !s.disconnected.is_empty());
    assert_eq!(server.disconnected[0].1, DisconnectReason::Idle);
    assert_eq!(server.p.stats().idle_timeouts, 1);
}

/// A TCP connection from `local` (an address of the loopback interface) to `to`.
fn connect_from(local: &str, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&format!("{local}:0").parse::<SocketAddr>().unwrap().into()).unwrap();
    s.connect(&to.into()).unwrap();
    s.into()
}

#[test]
fn one_host_cannot_take_every_slot() {
    let cfg = TcpPublisherConfig { max_per_host: 4, max_clients: 6, ..Default::default() };
    let mut server = Server::new(cfg);
    let to = server.addr();
    let deadline = Instant::now() + DEADLINE;
    let login_from = |server: &mut Server, ip: &str| {
        let mut s = connect_from(ip, to);
        s.write_all(&login()).unwrap();
        let n = server.logins.len();
        drive(server, &mut [], deadline, "a login", |s, _| s.logins.len() == n + 1);
        s
    };
    // 127.0.0.1 takes its four slots (from four ports) and tries for more.
    let _held: Vec<TcpStream> = (0..4).map(|_| login_from(&mut server, "127.0.0.1")).collect();
    for i in 0..3 {
        let mut s = connect_from("127.0.0.1", to);
        wait_closed(
            &mut server,
            &mut s,
            Duration::from_secs(5),
            &format!("refused connection {i}"),
        );
    }
    let st = server.p.stats();
    assert_eq!((st.refused_per_host, st.refused_full, st.connected), (3, 0, 4), "{st:?}");
    // Another host still gets in and receives the feed.
    let mut other = login_from(&mut server, "127.0.0.2");
    let peer = *server.logins.last().unwrap();
    assert_eq!(server.p.peer_addr(peer).unwrap().ip().to_string(), "127.0.0.2");
    let packet = &test_stream(1, 1, 200)[0];
    server.p.publish(packet).unwrap();
    server.p.flush().unwrap();
    other.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; packet.len()];
    other.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, packet, "the other host got the feed");
    // The overall cap holds too: the sixth connection fills the server, the
    // seventh (from yet another address) is refused as full.
    let _sixth = login_from(&mut server, "127.0.0.3");
    let mut full = connect_from("127.0.0.4", to);
    wait_closed(&mut server, &mut full, Duration::from_secs(5), "connection beyond max_clients");
    let st = server.p.stats();
    assert_eq!((st.refused_per_host, st.refused_full, st.connected), (3, 1, 6), "{st:?}");
}
