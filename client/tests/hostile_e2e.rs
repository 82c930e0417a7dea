//! A feed under attack, with the real binaries on loopback: an attacker on
//! the same network, who knows the session's epoch and spoofs the
//! publisher's address and port (a raw socket: root, or the test says
//! SKIPPED), sends single forged packets with valid CRCs to the multicast
//! group (an end of session, one
//! far below what was seen, a heartbeat of another epoch, data ten million
//! sequences ahead, a heartbeat far ahead) and asks the recovery service for
//! data from an address that never proved it receives there. The subscriber
//! must deliver exactly the stream regenerated from the seed, to its real
//! end, count every forgery, and send no NACK storm; the service must answer
//! the unvalidated requests with at most 3× the bytes they carried. The same
//! packets sent from an ordinary socket (another port) are dropped by the
//! source check and counted in `wrong_source`.

mod support;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use support::spoof::Spoofer;
use support::*;
use tickwire_core::wire::{HEADER_LEN, PacketKind, PacketRepr, emit_message};
use tickwire_core::{Message, SeqNo, Side, Trade};

const EPOCH: u64 = 0x0bad_f00d;
const RATE: u64 = 200_000;
const SECS: u64 = 3;

/// A group and recovery port unique to this process and test.
fn endpoints_for(test: u32) -> (String, String) {
    let pid = std::process::id();
    let group =
        format!("239.255.{}.{}:{}", 10 + pid % 200, 200 + test, 24_000 + (pid % 4_000) * 4 + test);
    (group, format!("127.0.0.1:{}", free_udp_port()))
}

/// A packet of `kind` with a valid CRC, as anyone who read the header format
/// and the epoch off the group can make it.
fn forge(kind: PacketKind, epoch: u64, first: u64, payload: &[u8], count: u16) -> Vec<u8> {
    let repr = PacketRepr {
        kind,
        flags: 0,
        epoch,
        first_seq: SeqNo(first),
        count,
        send_time: 1,
        payload_len: payload.len(),
    };
    let mut b = vec![0u8; repr.buffer_len()];
    b[HEADER_LEN..].copy_from_slice(payload);
    repr.seal(&mut b);
    b
}

/// The flags of these tests' server: [`RATE`], and the fixed [`EPOCH`] the
/// forger knows.
fn server_args(recovery: &str, group: &str, seed: u64, secs: u64, linger: &str) -> Vec<String> {
    let mut a = multicast_server_args(recovery, group, "127.0.0.1", RATE, seed, secs, linger);
    a.extend(args(&["--epoch", &EPOCH.to_string()]));
    a
}

/// A socket that sends to the group over loopback only, from a port of its
/// own: what anyone on the host can do without privileges.
fn group_sender() -> UdpSocket {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    s.set_multicast_ttl_v4(0).unwrap();
    s.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
    s.into()
}

#[test]
fn single_forged_packets_neither_end_switch_nor_skip_the_session() {
    const TEST: &str = "single_forged_packets_neither_end_switch_nor_skip_the_session";
    let (group, recovery) = endpoints_for(0);
    // The forger spoofs the publisher's address and port (the source check
    // would drop anything else before the consistency checks saw it).
    let spoofer = match Spoofer::new(recovery.parse().unwrap()) {
        Ok(s) => s,
        Err(why) => {
            tickwire_transports::kernel::skip(
                TEST,
                format!("forging the feed's source needs {why}"),
            );
            return;
        }
    };
    let dir = scratch("hostile");
    let (server_book, book) = (dir.join("server.book"), dir.join("client.book"));
    let seed = 41u64;
    let client = spawn_client(&{
        let mut a = multicast_client_args(&recovery, &group, Some("127.0.0.1"), seed);
        a.extend(args(&["--book-out", book.to_str().unwrap()]));
        a
    });
    std::thread::sleep(Duration::from_millis(300));
    let (server, _) = spawn_server(&{
        let mut a = server_args(&recovery, &group, seed, SECS, "2s");
        a.extend(args(&["--book-out", server_book.to_str().unwrap()]));
        a
    });
    let start = Instant::now();
    let at = |ms: u64| {
        let t = Duration::from_millis(ms);
        if let Some(d) = t.checked_sub(start.elapsed()) {
            std::thread::sleep(d);
        }
    };
    let g = group_sender();
    let to: SocketAddrV4 = group.parse().unwrap();
    let mut trade = vec![0u8; 64];
    let n = emit_message(
        &Message::Trade(Trade {
            symbol: 1,
            side: Side::Buy,
            price: 1,
            qty: 1,
            exch_ts: 1,
            symbol_seq: 0,
        }),
        &mut trade,
    )
    .unwrap();
    trade.truncate(n);
    let attacks: [(u64, Vec<u8>); 5] = [
        (600, forge(PacketKind::EndOfSession, EPOCH, 50_000_000, &[], 0)),
        (800, forge(PacketKind::EndOfSession, EPOCH, 5, &[], 0)),
        (1_000, forge(PacketKind::Heartbeat, EPOCH + 1, 1, &[], 0)),
        (1_200, forge(PacketKind::Data, EPOCH, 10_000_000, &trade, 1)),
        (1_400, forge(PacketKind::Heartbeat, EPOCH, 60_000_000, &[], 0)),
    ];
    for (ms, pkt) in &attacks {
        at(*ms);
        spoofer.send(pkt, to).unwrap();
        // The same packet from an ordinary socket: the wrong port.
        g.send_to(pkt, &group).unwrap();
    }

    // An address that never saw a Status asks for 1,000 messages and a
    // snapshot: it draws its cookie and nothing else.
    let asker = UdpSocket::bind("127.0.0.1:0").unwrap();
    asker.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let nack = forge(PacketKind::Nack, EPOCH, 1, &[], 1_000);
    let snap = forge(PacketKind::SnapshotRequest, EPOCH, 0, &[], 0);
    asker.send_to(&nack, &recovery).unwrap();
    asker.send_to(&snap, &recovery).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65_536];
    while let Ok(n) = asker.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }

    let deadline = Duration::from_secs(SECS + 30);
    let s = finish(server, "server", deadline);
    let c = finish(client, "client", deadline);
    eprintln!("server: {s}\nclient: {c}");

    let sent = nack.len() + snap.len();
    let drawn: usize = got.iter().map(Vec::len).sum();
    assert!(!got.is_empty(), "the unvalidated requests drew no Status");
    assert!(drawn <= 3 * sent, "{drawn} bytes drawn by {sent} bytes of requests");
    for r in &got {
        assert_eq!(r[3], PacketKind::Status.to_byte(), "an unvalidated host got data");
    }
    assert_eq!(u(&s, "unvalidated_requests"), 2, "{s}");

    // The subscriber went to the real end and delivered exactly the stream.
    assert_clean(&c, "attacked subscriber");
    assert_eq!(c["end_of_session"], true, "{c}");
    assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "messages lost: {c}");
    assert_eq!(u(&c, "epoch"), EPOCH);
    assert_eq!(u(&c, "epoch_changes"), 0);
    assert_same_book(&server_book, &book);
    assert_eq!(u(&c, "wrong_source"), attacks.len() as u64, "unspoofed forgeries: {c}");
    let v = &c["validation"];
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"));
    assert_eq!(n("eos_rejected"), 2, "{v}");
    assert_eq!((n("epoch_held"), n("epoch_rejected")), (1, 1), "{v}");
    assert_eq!((n("far_ahead_held"), n("far_ahead_rejected")), (2, 2), "{v}");
    assert_eq!(n("eos_unconfirmed") + n("epoch_unconfirmed") + n("far_ahead_unconfirmed"), 0);
    // No NACK storm for sequences that do not exist (no loss on loopback).
    assert!(u(&c, "nacks_sent") < 50, "NACKs for forged sequences: {c}");
}

/// A server killed and started again with the same `--epoch` (so its
/// sequences restart at 1 under the old epoch): the subscriber sees its line
/// go back, asks the service, learns a new server instance from the Status,
/// and takes the new session from its start — verified against the seed.
#[test]
fn a_server_restarted_with_the_same_epoch_is_detected() {
    let (group, recovery) = endpoints_for(1);
    let seed = 43u64;
    let client = spawn_client(&multicast_client_args(&recovery, &group, Some("127.0.0.1"), seed));
    std::thread::sleep(Duration::from_millis(300));
    let server = |secs: u64| spawn_server(&server_args(&recovery, &group, seed, secs, "1s")).0;
    let mut first = server(30);
    std::thread::sleep(Duration::from_millis(1_500));
    first.kill().unwrap();
    first.wait().unwrap();
    let second = server(1);
    let deadline = Duration::from_secs(30);
    let s = finish(second, "restarted server", deadline);
    let c = finish(client, "client", deadline);
    eprintln!("server: {s}\nclient: {c}");
    let v = &c["validation"];
    assert_eq!(v["restarts_detected"].as_u64(), Some(1), "{v}");
    assert_eq!(u(&c, "epoch_changes"), 1, "{c}");
    assert_eq!(c["end_of_session"], true, "{c}");
    assert_eq!(u(&c, "last_seq"), u(&s, "messages"), "the new session is incomplete: {c}");
    assert_clean(&c, "subscriber across the restart");
}
