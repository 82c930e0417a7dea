//! A TCP server under connection pressure, on loopback: Logins from sequence 1
//! that never read cost the server a bounded amount of queue memory (the
//! catch-up is streamed as the socket drains, never queued whole), and a
//! client that does read gets every message from 1 to the end, in order.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tickwire_core::SeqNo;
use tickwire_core::wire::{HEADER_LEN, Packet, PacketKind, PacketRepr, frame_len};
use tickwire_server::{ServerConfig, run};
use tickwire_transports::tcp::{CATCHUP_BUDGET, DEFAULT_MAX_QUEUE};

fn login_from_1() -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN];
    PacketRepr {
        kind: PacketKind::Login,
        flags: 0,
        epoch: 0,
        first_seq: SeqNo(1),
        count: 0,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b
}

/// A socket with a small receive buffer, so a non-reader's window closes fast.
fn connect_small(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    s.into()
}

/// Read the feed from a Login at sequence 1 to the EndOfSession; returns the
/// last sequence, having checked that every message came once, in order.
fn read_all(addr: SocketAddr) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&login_from_1()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let (mut have, mut expect) = (0usize, 1u64);
    loop {
        let n = s.read(&mut buf[have..]).expect("the feed stalled");
        assert!(n > 0, "closed before the end of session (at sequence {expect})");
        have += n;
        let mut at = 0;
        while let Ok(Some(len)) = frame_len(&buf[at..have]) {
            if have - at < len {
                break;
            }
            let p = Packet::new_checked(&buf[at..at + len]).unwrap();
            let r = PacketRepr::parse(&p).expect("a valid packet");
            match r.kind {
                PacketKind::Data | PacketKind::Retransmission => {
                    assert_eq!(r.first_seq, SeqNo(expect), "{:?} out of order", r.kind);
                    expect += u64::from(r.count);
                }
                PacketKind::EndOfSession => {
                    assert_eq!(r.first_seq, SeqNo(expect), "end of session where expected");
                    return expect - 1;
                }
                _ => {}
            }
            at += len;
        }
        buf.copy_within(at..have, 0);
        have -= at;
    }
}

#[test]
fn logins_from_sequence_1_that_never_read_keep_memory_bounded() {
    let dir = std::env::temp_dir().join(format!("tw-pressure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ready = dir.join("addr");
    let mut cfg = ServerConfig {
        rate: 300_000,
        duration: Some(Duration::from_secs(3)),
        retransmit_window: 1 << 19,
        linger: Duration::from_millis(200),
        stats_interval: None,
        ready_file: Some(ready.clone()),
        ..ServerConfig::default()
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    let server = std::thread::spawn(move || run(&cfg, Arc::new(AtomicBool::new(false))).unwrap());
    let start = Instant::now();
    let addr: SocketAddr = loop {
        if let Ok(s) = std::fs::read_to_string(&ready) {
            break s.parse().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "server did not start");
        std::thread::sleep(Duration::from_millis(5));
    };
    // Let the store fill (≈ 150K messages, 7 MB), then 8 Logins that ask for all of it.
    std::thread::sleep(Duration::from_millis(500));
    let hogs: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect_small(addr);
            s.write_all(&login_from_1()).unwrap();
            s
        })
        .collect();
    // A reader beside them gets everything from 1 to the end.
    let last = read_all(addr);
    let summary = server.join().unwrap();
    drop(hogs);
    std::fs::remove_dir_all(&dir).ok();

    assert_eq!(last, summary.messages, "the reader got the whole session");
    assert_eq!(summary.catchup_logins, 9);
    // Before: each Login queued its whole catch-up (≈ 61 MB with the default window).
    // Now: at most the catch-up budget (plus one packet) per non-reader, and a
    // live reader's queue.
    let bound = 8 * (CATCHUP_BUDGET + 1472) + DEFAULT_MAX_QUEUE;
    eprintln!("peak queued bytes {} (bound {bound})", summary.peak_queued_bytes);
    assert!(
        summary.peak_queued_bytes <= bound as u64,
        "peak queued bytes {} above {bound}",
        summary.peak_queued_bytes
    );
    // The feed overtook the non-readers' catch-ups: closed, counted.
    assert_eq!(summary.catchup_overruns, 8, "{summary:?}");
    assert!(summary.slow_disconnects >= 8, "{summary:?}");
}
