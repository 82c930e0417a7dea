//! End to end with a key (`--key-file`, docs/PROTOCOL.md § 12), real binaries
//! on loopback multicast: a subscriber losing 5% of what it receives recovers
//! everything through sealed NACKs and retransmissions and delivers exactly the
//! seed's stream, while a forger without the key sends in-sequence Data (valid
//! CRC, the session's epoch, the publisher's own address and port) to the
//! group and NACKs to the recovery port: the
//! server counts every forged request it refused, and nothing forged is
//! delivered (the verified stream would show it).

mod support;

use std::net::{SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::spoof::Spoofer;
use support::*;
use tickwire_core::wire::{HEADER_LEN, PacketKind, PacketRepr};
use tickwire_core::{Message, Quote, SeqNo};

const RATE: u64 = 100_000;
const EPOCH: u64 = 4242;

/// A forged Data packet: one Quote at `seq` that the seed never produced.
fn forged_data(seq: u64) -> Vec<u8> {
    let q = Message::Quote(Quote {
        symbol: (seq % 100) as u32,
        bid_px: 1,
        ask_px: 2,
        bid_qty: 3,
        ask_qty: 4,
        exch_ts: seq,
        symbol_seq: seq,
    });
    let len = tickwire_core::wire::message_len(&q);
    let mut b = vec![0u8; HEADER_LEN + len];
    tickwire_core::wire::emit_message(&q, &mut b[HEADER_LEN..]);
    PacketRepr {
        kind: PacketKind::Data,
        flags: 0,
        epoch: EPOCH,
        first_seq: SeqNo(seq),
        count: 1,
        send_time: 0,
        payload_len: len,
    }
    .seal(&mut b);
    b
}

fn forged_nack(seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    PacketRepr {
        kind: PacketKind::Nack,
        flags: 0,
        epoch: EPOCH,
        first_seq: SeqNo(seq),
        count: 100,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b
}

#[test]
fn with_a_key_forged_packets_are_refused_and_the_stream_is_complete() {
    const TEST: &str = "with_a_key_forged_packets_are_refused_and_the_stream_is_complete";
    let dir = scratch("auth-e2e");
    let key = dir.join("feed.key");
    std::fs::write(&key, format!("{}\n", "3c".repeat(32))).unwrap();
    let key = key.to_str().unwrap().to_string();
    let pid = std::process::id();
    let group = format!("239.255.{}.77:{}", 10 + pid % 200, 40_000 + pid % 10_000);
    let recovery = format!("127.0.0.1:{}", free_udp_port());
    let (seed, secs) = (5u64, 3u64);
    let book = dir.join("c.book");
    let server_book = dir.join("server.book");
    let client = spawn_client(&{
        let mut a = multicast_client_args(&recovery, &group, Some("127.0.0.1"), seed);
        a.extend(args(&["--book-out", book.to_str().unwrap()]));
        a.extend(args(&["--drop-rate", "0.05", "--drop-seed", "9", "--key-file", &key]));
        a
    });
    std::thread::sleep(Duration::from_millis(300));
    let (server, _) = spawn_server(&{
        let mut a = multicast_server_args(&recovery, &group, "127.0.0.1", RATE, seed, secs, "2s");
        a.extend(args(&["--epoch", &EPOCH.to_string(), "--key-file", &key]));
        a.extend(args(&["--book-out", server_book.to_str().unwrap()]));
        a
    });
    // The forger: in-sequence Data to the group, NACKs to the recovery port.
    // Without spoofing the publisher's source, the Data would stop at the
    // source check and never reach the MAC.
    let spoofer = match Spoofer::new(recovery.parse().unwrap()) {
        Ok(sp) => Some(sp),
        Err(why) => {
            tickwire_transports::kernel::skip_part(
                TEST,
                format!(
                    "forged Data from the publisher's own address and port needs {why}; \
                     sent from another port instead, where the source check stops it"
                ),
            );
            None
        }
    };
    let spoofed = spoofer.is_some();
    let stop = Arc::new(AtomicBool::new(false));
    let (nacks, forged) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let forger = {
        let (stop, nacks, forged, group, recovery) =
            (stop.clone(), nacks.clone(), forged.clone(), group.clone(), recovery.clone());
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_multicast_loop_v4(true).unwrap();
            let to: SocketAddrV4 = group.parse().unwrap();
            let mut seq = 1u64;
            while !stop.load(Ordering::Relaxed) {
                // Ahead of the real feed and at its current position alike,
                // from the publisher's own address and port when it can.
                for d in [0u64, 1, 50, 1000] {
                    let _ = match &spoofer {
                        Some(sp) => sp.send(&forged_data(seq + d), to),
                        None => s.send_to(&forged_data(seq + d), &group).map(|_| ()),
                    };
                    forged.fetch_add(1, Ordering::Relaxed);
                }
                if s.send_to(&forged_nack(seq), &recovery).is_ok() {
                    nacks.fetch_add(1, Ordering::Relaxed);
                }
                seq += RATE / 1000;
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let deadline = Duration::from_secs(secs * 3 + 60);
    let s = finish(server, "server", deadline);
    stop.store(true, Ordering::Relaxed);
    forger.join().unwrap();
    let c = finish(client, "keyed subscriber", deadline);
    eprintln!("server: {s}\nsubscriber: {c}");
    assert_clean(&c, "keyed subscriber");
    assert_eq!(c["verify"]["ok"].as_bool(), Some(true), "{c}");
    assert_eq!(u(&c, "last_seq"), u(&s, "messages"), "{c}");
    assert_eq!(c["end_of_session"].as_bool(), Some(true), "{c}");
    assert!(u(&c, "nacks_sent") > 0, "no loss was recovered: {c}");
    assert_eq!(u(&c, "malformed"), 0, "nothing forged got as far as parsing: {c}");
    // Forged Data was refused: by the MAC when it came from the publisher's
    // own address and port, by the source check otherwise. (The subscriber
    // loses 5% of what it receives first, and some arrive after it ended.)
    let forged = forged.load(Ordering::Relaxed);
    let refused = if spoofed { u(&c, "auth_rejected") } else { u(&c, "wrong_source") };
    assert!(refused > forged / 2, "{forged} forged Data sent, {refused} refused: {c}");
    assert_same_book(&server_book, &book);
    // Every forged NACK that reached the server was refused and counted; the
    // real subscriber's sealed NACKs were served.
    let sent = nacks.load(Ordering::Relaxed);
    assert!(u(&s, "auth_rejected") > sent / 2, "{sent} forged NACKs sent: {s}");
    assert!(u(&s, "nacks") > 0, "{s}");
    std::fs::remove_dir_all(&dir).ok();
}
