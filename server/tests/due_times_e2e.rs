//! The real server's timing blocks (PROTOCOL.md § 4.3, issue 26): at a fixed
//! rate R, the message with sequence s is due at exactly S + (s − 1)/R for
//! every message of the session, due times never decrease, no packet is sent
//! before its last message is due, and S (sequence 1's due time) is at or
//! after the epoch the server chose (its start time), not the epoch itself.
//! Over TCP, the LoginAck is followed by the Status naming the instance.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tickwire_core::SeqNo;
use tickwire_core::wire::{HEADER_LEN, Packet, PacketKind, PacketRepr, frame_len};
use tickwire_server::ServerConfig;

const RATE: u64 = 100_000;
const MESSAGES: u64 = 100_000;

#[test]
fn a_paced_sessions_due_times_are_the_schedule_for_every_message() {
    let mut cfg = ServerConfig {
        rate: RATE,
        max_messages: Some(MESSAGES),
        duration: None,
        wait_clients: 1,
        linger: Duration::from_millis(200),
        stats_interval: None,
        ..ServerConfig::default()
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    let server = tickwire_server::spawn(cfg, Arc::new(AtomicBool::new(false))).unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    let mut login = [0u8; HEADER_LEN];
    PacketRepr {
        kind: PacketKind::Login,
        flags: 0,
        epoch: 0,
        first_seq: SeqNo(1),
        count: 0,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut login);
    s.write_all(&login).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();

    let mut kinds = Vec::new();
    let mut epoch = 0;
    // (sequence, due time) of every message, and (send_time, last due) per packet.
    let mut due = Vec::new();
    let mut sent_before_due = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut have = 0usize;
    'read: loop {
        let n = s.read(&mut buf[have..]).expect("the feed stalled");
        assert!(n > 0, "closed before the end of session");
        have += n;
        let mut at = 0;
        while let Ok(Some(len)) = frame_len(&buf[at..have]) {
            if have - at < len {
                break;
            }
            let p = Packet::new_checked(&buf[at..at + len]).unwrap();
            let r = PacketRepr::parse(&p).unwrap();
            if kinds.len() < 2 {
                kinds.push(r.kind);
                epoch = r.epoch;
            }
            match r.kind {
                PacketKind::Data => {
                    let t = p.timing().expect("a timing block");
                    let n = u64::from(r.count);
                    for i in 0..n {
                        let d = if n <= 1 || t.last_due <= t.first_due {
                            t.first_due
                        } else {
                            let span = u128::from(t.last_due - t.first_due);
                            t.first_due + (span * u128::from(i) / u128::from(n - 1)) as u64
                        };
                        due.push((r.first_seq.0 + i, d));
                    }
                    if r.send_time < t.last_due {
                        sent_before_due.push((r.first_seq.0, t.last_due - r.send_time));
                    }
                }
                PacketKind::EndOfSession => break 'read,
                _ => {}
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
    let summary = server.join().unwrap();
    assert_eq!(summary.messages, MESSAGES);
    assert_eq!(due.len() as u64, MESSAGES, "every message live, with its due time");
    let s0 = due[0].1;
    assert_eq!(due[0].0, 1);
    assert!(s0 >= epoch, "S ({s0}) is at or after the epoch chosen at start ({epoch})");
    let off: Vec<(u64, i128)> = due
        .iter()
        .filter_map(|&(seq, d)| {
            let want = s0 + (seq - 1) * 1_000_000_000 / RATE;
            (d != want).then_some((seq, d as i128 - want as i128))
        })
        .collect();
    assert!(
        off.is_empty(),
        "{} messages off the schedule S + (s-1)/R (sequence, ns off), first: {:?}",
        off.len(),
        &off[..off.len().min(8)]
    );
    assert!(due.windows(2).all(|w| w[0].1 <= w[1].1), "a due time decreased");
    assert!(
        sent_before_due.is_empty(),
        "packets sent before their last message was due (first seq, ns early): {:?}",
        &sent_before_due[..sent_before_due.len().min(8)]
    );
    assert_eq!(kinds, [PacketKind::LoginAck, PacketKind::Status], "the instance follows the ack");
}
