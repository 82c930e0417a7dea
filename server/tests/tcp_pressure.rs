//! A TCP server under connection pressure, on loopback: Logins from sequence 1
//! that never read cost the server a bounded amount of queue memory (the
//! catch-up is streamed as the socket drains, never queued whole), and a
//! client that does read gets every message from 1 to the end, in order and
//! equal to the stream regenerated from the seed.
//! A thousand connections, half asking for the whole window and never reading,
//! half never finishing a header, keep the server's memory under a stated bound.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tickwire_core::SeqNo;
use tickwire_core::gbm::{GbmConfig, Generator};
use tickwire_core::wire::{HEADER_LEN, MessageIter, Packet, PacketKind, PacketRepr, frame_len};
use tickwire_server::{Running, ServerConfig};
use tickwire_transports::tcp::{CATCHUP_BUDGET, DEFAULT_LOGIN_TIMEOUT, DEFAULT_MAX_QUEUE};

/// The tests of this file measure the process's memory: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

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

/// A connection with a small receive buffer, so a non-reader's window closes
/// fast; from the loopback address `127.0.0.{host}` if given.
fn connect_small(addr: SocketAddr, host: Option<u8>) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    if let Some(host) = host {
        let from: SocketAddr = (std::net::Ipv4Addr::new(127, 0, 0, host), 0).into();
        s.bind(&from.into()).unwrap();
    }
    s.connect(&addr.into()).unwrap();
    s.into()
}

/// The server at 300,000 messages/s for `duration` (with `cfg`'s other
/// settings, a short linger and no stats lines) on a loopback port, on a
/// thread of its own; and its feed's generator, to regenerate the stream.
fn serve(duration: Duration, cfg: ServerConfig) -> (Running, GbmConfig) {
    let mut cfg = ServerConfig {
        rate: 300_000,
        duration: Some(duration),
        linger: Duration::from_millis(200),
        stats_interval: None,
        ..cfg
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    let gbm = cfg.gbm.clone();
    (tickwire_server::spawn(cfg, Arc::new(AtomicBool::new(false))).unwrap(), gbm)
}

/// Read the feed from a Login at sequence 1 to the EndOfSession; returns the
/// last sequence, having checked that every message came once, in order, and
/// equal to the stream regenerated from the server's seed (`gbm`).
fn read_all(addr: SocketAddr, gbm: &GbmConfig) -> u64 {
    let mut expected = Generator::new(gbm.clone()).unwrap();
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
                    for m in MessageIter::new(p.messages(), r.count) {
                        let m = m.expect("a message");
                        assert_eq!(
                            m,
                            expected.next_message(),
                            "message {expect} is not the seed's"
                        );
                        expect += 1;
                    }
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
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = ServerConfig { retransmit_window: 1 << 19, ..ServerConfig::default() };
    let (server, gbm) = serve(Duration::from_secs(3), cfg);
    let addr = server.local_addr();
    // Let the store fill (≈ 150K messages, 7 MB), then 8 Logins that ask for all of it.
    std::thread::sleep(Duration::from_millis(500));
    let hogs: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect_small(addr, None);
            s.write_all(&login_from_1()).unwrap();
            s
        })
        .collect();
    // A reader beside them gets everything from 1 to the end.
    let last = read_all(addr, &gbm);
    let summary = server.join().unwrap();
    drop(hogs);

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

/// Resident set size of this process, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// Raise the soft open-file limit to `want` (within the hard limit); false if
/// the hard limit is lower.
fn raise_nofile(want: u64) -> bool {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return false;
    }
    if r.rlim_cur >= want {
        return true;
    }
    if r.rlim_max < want {
        return false;
    }
    r.rlim_cur = want;
    // SAFETY: setrlimit reads one initialised rlimit through a valid pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) == 0 }
}

/// The server's whole memory, measured as this process's resident set while
/// it runs, stays under this bound with 1,000 hostile connections.
const RSS_BOUND: u64 = 256 << 20;

#[test]
fn a_thousand_hostile_connections_keep_memory_bounded_and_a_reader_gets_everything() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // 1,000 client sockets and 1,000 accepted ones live in this process.
    if !raise_nofile(4096) {
        tickwire_transports::kernel::skip(
            "a_thousand_hostile_connections_keep_memory_bounded_and_a_reader_gets_everything",
            "RLIMIT_NOFILE hard limit below 4096",
        );
        return;
    }
    let (server, gbm) = serve(Duration::from_secs(7), ServerConfig::default());
    let addr = server.local_addr();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        std::thread::spawn(move || {
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Let the store fill, then the flood: 500 Logins from sequence 1 that never
    // read, 500 connections that send half a header and stop, from 8 hosts
    // (127.0.0.2 to .9), so that each host stays under the per-host cap.
    std::thread::sleep(Duration::from_millis(500));
    let reader = std::thread::spawn(move || read_all(addr, &gbm));
    let mut hogs = Vec::new();
    let mut partial = Vec::new();
    for i in 0..1000u32 {
        let mut s = connect_small(addr, Some(2 + (i % 8) as u8));
        if i % 2 == 0 {
            s.write_all(&login_from_1()).unwrap();
            hogs.push(s);
        } else {
            s.write_all(&login_from_1()[..HEADER_LEN / 2]).unwrap();
            partial.push(s);
        }
    }
    let flooded = Instant::now();
    // Every half-header connection is closed by the server after the login
    // timeout, counted from its accept: under the flood the server accepts
    // 64 a poll while it serves 500 catch-ups, so the last accepts can come
    // a second or two after the connects. The summary's count below proves
    // that the timeout, not the end of the session, closed them.
    let slack = Duration::from_secs(4);
    for (i, s) in partial.iter_mut().enumerate() {
        let left = (DEFAULT_LOGIN_TIMEOUT + slack).saturating_sub(flooded.elapsed());
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "half-header connection {i} still open {:?} after the flood: {other:?}",
                flooded.elapsed()
            ),
        }
    }
    let last = reader.join().unwrap();
    let summary = server.join().unwrap();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    drop((hogs, partial));

    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "peak RSS {} MiB (bound {} MiB), peak queued {} bytes, {summary:?}",
        peak >> 20,
        RSS_BOUND >> 20,
        summary.peak_queued_bytes
    );
    assert_eq!(last, summary.messages, "the reader got the whole session");
    assert!(peak <= RSS_BOUND, "peak RSS {peak} above {RSS_BOUND}");
    assert_eq!(summary.login_timeouts, 500, "every half header timed out: {summary:?}");
    assert_eq!(summary.refused_per_host, 0, "8 hosts of 125 stay under the cap: {summary:?}");
    assert_eq!(summary.catchup_logins, 501, "{summary:?}");
}
