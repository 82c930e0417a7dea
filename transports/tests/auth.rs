//! The `Authenticated` wrapper: every packet sealed on the way out, only
//! packets whose MAC verifies let through on the way in, tag stripped, the
//! rest counted. Real loopback TCP (the conformance suite through the
//! wrapper on both ends) and a scripted inner transport for forgeries.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::fakes::FakeSub;
use common::{any_port, make_kind};
use tickwire_core::wire::auth::{AuthKey, seal};
use tickwire_core::wire::{HEADER_LEN, Packet, PacketKind};
use tickwire_transports::auth::Authenticated;
use tickwire_transports::conformance::{self, Params, Profile, test_stream};
use tickwire_transports::tcp::{
    TcpPublisher, TcpPublisherConfig, TcpSubscriber, TcpSubscriberConfig,
};
use tickwire_transports::{PubEvent, Publisher, SubEvent, SubStats, Subscriber};

fn key() -> AuthKey {
    AuthKey::new([0x5a; 32])
}

#[test]
fn conformance_suite_through_the_wrapper() {
    // The wire carries 16 more bytes per packet than the suite handed over,
    // so the byte counters cannot match exactly; delivery is checked byte for byte.
    let profile = Profile { name: "tcp + auth", exact_stats: false, ..Profile::STREAM };
    conformance::run_all(
        &profile,
        &Params::default(),
        || {
            Authenticated::new(
                TcpPublisher::bind(any_port(), TcpPublisherConfig::default()).unwrap(),
                key(),
            )
        },
        |p| {
            let addr = p.local_addr().unwrap();
            Authenticated::new(
                TcpSubscriber::connect(addr, TcpSubscriberConfig::default()).unwrap(),
                key(),
            )
        },
    );
}

/// A request (a header-only Login): the wrapper seals and opens it without
/// looking inside.
fn login() -> Vec<u8> {
    make_kind(PacketKind::Login, 1, 0)
}

fn sealed_with(k: &AuthKey, plain: &[u8]) -> Vec<u8> {
    let mut b = plain.to_vec();
    b.resize(plain.len() + 16, 0);
    let n = seal(k, &mut b, plain.len()).unwrap();
    b.truncate(n);
    b
}

#[test]
fn unauthenticated_requests_are_dropped_and_counted_not_disconnected() {
    let mut p = Authenticated::new(
        TcpPublisher::bind(any_port(), TcpPublisherConfig::default()).unwrap(),
        key(),
    );
    let addr = p.local_addr().unwrap();
    // A plain Login, a Login sealed with another key, then a good one.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&login()).unwrap();
    s.write_all(&sealed_with(&AuthKey::new([1; 32]), &login())).unwrap();
    s.write_all(&sealed_with(&key(), &login())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut requests = Vec::new();
    let mut gone = Vec::new();
    while requests.is_empty() {
        assert!(Instant::now() < deadline, "the good Login never came through");
        p.poll(Some(Duration::from_millis(1)), &mut |ev| match ev {
            PubEvent::Request { packet, .. } => requests.push(packet.to_vec()),
            PubEvent::Disconnected { reason, .. } => gone.push(reason),
            PubEvent::Connected(_) => {}
        })
        .unwrap();
    }
    assert_eq!(requests, vec![login()], "only the sealed Login, opened to the plain bytes");
    assert!(gone.is_empty(), "forged requests do not end the connection: {gone:?}");
    let st = p.stats();
    assert_eq!((st.auth_rejected, st.requests), (2, 3), "{st:?}");
}

#[test]
fn forged_packets_are_dropped_and_counted() {
    let real = test_stream(1, 3, 200);
    let mut script = Vec::new();
    let mut forged = 0;
    for p in &real {
        script.push(sealed_with(&key(), p));
        // Forged in-sequence data with a valid CRC but no MAC.
        script.push(p.clone());
        // Sealed with another key.
        script.push(sealed_with(&AuthKey::new([3; 32]), p));
        // The real packet with one payload byte changed and the CRC refilled.
        let mut bad = sealed_with(&key(), p);
        bad[HEADER_LEN + 5] ^= 0x80;
        Packet::new_unchecked(&mut bad[..]).fill_crc();
        script.push(bad);
        // Garbage and a truncated sealed packet.
        script.push(vec![0xff; 7]);
        script.push(sealed_with(&key(), p)[..HEADER_LEN + 10].to_vec());
        forged += 5;
    }
    // An inner subscriber that reports the script; its stats are its own.
    let inner_stats = SubStats { packets_received: 9, ..SubStats::default() };
    let mut s = Authenticated::new(FakeSub { stats: inner_stats, ..FakeSub::new(script) }, key());
    let mut got = Vec::new();
    let mut ended = false;
    s.poll(None, &mut |ev| match ev {
        SubEvent::Packet { packet, kernel_rx_ns, .. } => {
            assert_eq!(kernel_rx_ns, Some(1));
            got.push(packet.to_vec())
        }
        SubEvent::Disconnected(_) => ended = true,
        SubEvent::Connected => {}
    })
    .unwrap();
    assert_eq!(got, real, "exactly the real packets, as they were before sealing");
    assert!(ended, "other events pass through");
    let st = s.stats();
    assert_eq!((st.auth_rejected, st.packets_received), (forged, 9));
    assert_eq!(s.rejected(), forged);
    // Requests go out sealed.
    s.send_request(&login()).unwrap();
    assert_eq!(s.stats().auth_rejected, forged);
}
