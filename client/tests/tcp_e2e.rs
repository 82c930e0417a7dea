//! End-to-end tests over TCP with the real binaries on loopback: the stream a
//! client delivers equals the stream regenerated from the seed, message by
//! message (`client --verify`), and its final cache equals the server's book.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

/// A TCP server on a free loopback port (unless `extra` has `--listen`):
/// `--rate rate --seed seed`, its JSON summary on stdout, its final book in
/// `book`, plus `extra` flags (stop condition, linger, window...).
fn tcp_server(seed: u64, rate: u64, book: &Path, extra: &[&str]) -> (Child, SocketAddr) {
    let mut a =
        args(&["--transport", "tcp", "--rate", &rate.to_string(), "--seed", &seed.to_string()]);
    a.extend(args(&["--stats-interval", "0", "--json", "--book-out", book.to_str().unwrap()]));
    if !extra.contains(&"--listen") {
        a.extend(args(&["--listen", "127.0.0.1:0"]));
    }
    a.extend(args(extra));
    spawn_server(&a)
}

/// A TCP client that checks every message against the stream of `seed` and
/// writes its final cache to `book`.
fn verified_client(addr: &str, seed: u64, book: &Path) -> Child {
    verified_client_with(addr, seed, book, &[])
}

/// [`verified_client`] with more flags.
fn verified_client_with(addr: &str, seed: u64, book: &Path, extra: &[&str]) -> Child {
    let seed = seed.to_string();
    let book = book.to_str().unwrap();
    let mut a = args(&[
        "--transport",
        "tcp",
        "--connect",
        addr,
        "--verify",
        &seed,
        "--quiet",
        "--json",
        "--book-out",
        book,
    ]);
    a.extend(args(extra));
    spawn_client(&a)
}

/// A valid Login packet: no epoch known, from sequence 1.
fn login_packet() -> [u8; 40] {
    let mut login = [0u8; 40];
    tickwire_core::wire::PacketRepr {
        kind: tickwire_core::wire::PacketKind::Login,
        flags: 0,
        epoch: 0,
        first_seq: tickwire_core::SeqNo(1),
        count: 0,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut login);
    login
}

/// Must-show: `server --transport tcp --rate 200000 --seed 7` with two clients
/// for 10 s: each delivers >= 1.9M messages, all verified against the seed,
/// 0 unrecovered, 0 CRC errors, and ends with the server's book.
#[test]
fn two_clients_200k_for_10s_deliver_the_seeded_stream() {
    let dir = scratch("two-clients");
    let server_book = dir.join("server.book");
    let (server, addr) =
        tcp_server(7, 200000, &server_book, &["--duration", "10s", "--linger", "1s"]);
    let addr = addr.to_string();
    let clients: Vec<_> = (0..2)
        .map(|i| {
            let book = dir.join(format!("client{i}.book"));
            let child = verified_client(&addr, 7, &book);
            (child, book)
        })
        .collect();
    let s = finish(server, "server", Duration::from_secs(60));
    assert!(u(&s, "messages") >= 1_900_000, "server published too little: {s}");
    for (i, (child, book)) in clients.into_iter().enumerate() {
        let c = finish(child, "client", Duration::from_secs(60));
        assert_clean(&c, "client");
        assert_eq!(
            u(&c, "messages_delivered"),
            u(&s, "messages"),
            "client {i} missed messages: {c}"
        );
        assert!(u(&c, "messages_delivered") >= 1_900_000, "client {i}: {c}");
        assert_eq!(c["verify"]["checked"].as_u64(), Some(u(&s, "messages")), "client {i}: {c}");
        assert_eq!(c["end_of_session"].as_bool(), Some(true), "client {i}: {c}");
        assert_same_book(&server_book, &book);
    }
}

/// A TCP proxy that can cut every connection through it on demand: the client
/// process survives, its connection dies, and it must resume from its sequence.
struct Cutter {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Cutter {
    fn start(upstream: SocketAddr) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let cut2 = cut.clone();
        std::thread::spawn(move || {
            for down in listener.incoming() {
                let Ok(down) = down else { continue };
                let Ok(up) = TcpStream::connect(upstream) else { continue };
                cut2.store(false, Ordering::SeqCst);
                for (mut from, mut to) in [
                    (down.try_clone().unwrap(), up.try_clone().unwrap()),
                    (up.try_clone().unwrap(), down.try_clone().unwrap()),
                ] {
                    let cut = cut2.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            if cut.load(Ordering::SeqCst) {
                                let _ = from.shutdown(std::net::Shutdown::Both);
                                let _ = to.shutdown(std::net::Shutdown::Both);
                                return;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => {
                                    let _ = to.shutdown(std::net::Shutdown::Both);
                                    return;
                                }
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
            }
        });
        Cutter { addr, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

/// A client whose connection is cut mid-run reconnects and resumes from its
/// sequence (same epoch): no snapshot needed, nothing lost, nothing repeated.
#[test]
fn cut_connection_resumes_from_sequence() {
    cut_connection_resumes("resume", 11, "single");
}

/// The same through the pipeline: the connection events travel in order
/// with the packets, and the Login of each reconnection goes out through
/// the receive thread.
#[test]
fn cut_connection_resumes_from_sequence_through_the_pipeline() {
    cut_connection_resumes("resume-pipe", 13, "pipeline");
}

fn cut_connection_resumes(name: &str, seed: u64, threads: &str) {
    let dir = scratch(name);
    let server_book = dir.join("server.book");
    let (server, addr) = tcp_server(
        seed,
        100000,
        &server_book,
        &["--messages", "400000", "--duration", "0", "--linger", "2s"],
    );
    let proxy = Cutter::start(addr);
    let book = dir.join("client.book");
    let client =
        verified_client_with(&proxy.addr.to_string(), seed, &book, &["--threads", threads]);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_millis(1200));
        proxy.cut();
    }
    let s = finish(server, "server", Duration::from_secs(60));
    let c = finish(client, "client", Duration::from_secs(60));
    assert_clean(&c, "client");
    assert!(u(&c, "reconnects") >= 2, "the client never reconnected: {c}");
    assert_eq!(u(&c, "messages_delivered"), 400_000, "{c}");
    if threads == "pipeline" {
        assert_eq!(c["pipeline"]["threads"], 1, "{c}");
        assert!(u(&c["pipeline"], "batches") > 0, "nothing went through the pipeline: {c}");
    }
    assert_eq!(u(&c, "snapshots"), 0, "a resume within the window must not need a snapshot: {c}");
    assert_eq!(u(&s, "snapshots"), 0, "{s}");
    assert_same_book(&server_book, &book);
}

/// A client process killed with SIGKILL and started again catches up (it knows
/// nothing, so the server brings it up to date) and ends with the server's book.
#[test]
fn killed_client_restarts_and_converges() {
    let dir = scratch("client-kill");
    let server_book = dir.join("server.book");
    // A small window so the restarted client is too far behind to replay: snapshot.
    let (server, addr) = tcp_server(
        12,
        100000,
        &server_book,
        &[
            "--messages",
            "400000",
            "--duration",
            "0",
            "--retransmit-window",
            "50000",
            "--linger",
            "2s",
        ],
    );
    let addr = addr.to_string();
    let mut first =
        spawn_client(&args(&["--transport", "tcp", "--connect", &addr, "--quiet", "--json"]));
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().unwrap(); // SIGKILL
    let _ = first.wait();
    let book = dir.join("client.book");
    let second = verified_client(&addr, 12, &book);
    let s = finish(server, "server", Duration::from_secs(60));
    let c = finish(second, "restarted client", Duration::from_secs(60));
    assert_clean(&c, "restarted client");
    assert_eq!(u(&c, "snapshots"), 1, "the restarted client must come up through a snapshot: {c}");
    assert!(c["verify"]["snapshot_records"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(u(&c, "last_seq"), 400_000, "{c}");
    assert!(u(&s, "snapshots") >= 1, "{s}");
    assert_same_book(&server_book, &book);
}

/// The server killed with SIGKILL and restarted (new epoch): the client sees
/// the epoch change, comes up through a snapshot of the new session, and ends
/// with the new server's book.
#[test]
fn killed_server_restarts_with_new_epoch_and_client_converges() {
    let dir = scratch("server-kill");
    let server = |listen: &str, book: &Path, epoch: &str, messages: &str| {
        tcp_server(
            13,
            100_000,
            book,
            &[
                "--listen",
                listen,
                "--epoch",
                epoch,
                "--messages",
                messages,
                "--duration",
                "0",
                "--linger",
                "2s",
            ],
        )
    };
    let first_book = dir.join("first.book");
    let (mut first, addr) = server("127.0.0.1:0", &first_book, "1001", "10000000");
    let addr = addr.to_string();
    let book = dir.join("client.book");
    let client = verified_client(&addr, 13, &book);
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().unwrap();
    let _ = first.wait();
    std::thread::sleep(Duration::from_millis(300));
    let second_book = dir.join("second.book");
    // The restarted server listens on the same port, as a restarted exchange would.
    let (second, _) = server(&addr, &second_book, "1002", "300000");
    let s = finish(second, "restarted server", Duration::from_secs(60));
    let c = finish(client, "client", Duration::from_secs(60));
    assert_clean(&c, "client");
    assert!(u(&c, "epoch_changes") >= 1, "{c}");
    assert_eq!(c["epoch"].as_u64(), Some(1002), "{c}");
    assert!(u(&c, "snapshots") >= 1, "{c}");
    assert_eq!(u(&c, "last_seq"), u(&s, "messages"), "{c}");
    assert_same_book(&second_book, &book);
}

/// The book of the first `messages` messages of the stream of `seed` (the
/// server's default 1000 symbols), in `--book-out`'s text form.
fn regenerated_book(seed: u64, messages: u64) -> String {
    use tickwire_core::gbm::{GbmConfig, Generator};
    let cfg = GbmConfig { seed, ..GbmConfig::default() };
    let mut g = Generator::new(cfg.clone()).unwrap();
    let mut book = tickwire_core::Book::new(cfg.symbols);
    for seq in 1..=messages {
        book.apply(seq, &g.next_message());
    }
    let mut text = String::new();
    book.write_text(&mut text).unwrap();
    text
}

/// Issue 21 item 5: the server killed mid-session and restarted with the
/// same `--epoch` but another seed. Nothing in the epoch tells the sessions
/// apart; the Status after the LoginAck names the new server instance, so
/// the client sees the restart, drops what it held and takes the new session
/// from its start: its final book is the stream of the second seed's,
/// regenerated here, and nothing of the new session is taken for a duplicate.
#[test]
fn killed_server_restarted_with_the_same_epoch_is_seen_by_its_instance() {
    same_epoch_restart("server-kill-same-epoch", "single");
}

/// The same through the receive pipeline (the reconnect is asked of the
/// receive thread).
#[test]
fn killed_server_restarted_with_the_same_epoch_is_seen_through_the_pipeline() {
    same_epoch_restart("server-kill-same-epoch-pipeline", "pipeline");
}

fn same_epoch_restart(name: &str, threads: &str) {
    let dir = scratch(name);
    let server = |seed: u64, listen: &str, book: &Path, messages: &str| {
        tcp_server(
            seed,
            100_000,
            book,
            &[
                "--listen",
                listen,
                "--epoch",
                "4242",
                "--messages",
                messages,
                "--duration",
                "0",
                "--linger",
                "2s",
            ],
        )
    };
    let (seed_a, seed_b) = (21, 22);
    let first_book = dir.join("first.book");
    let (mut first, addr) = server(seed_a, "127.0.0.1:0", &first_book, "10000000");
    let addr = addr.to_string();
    let book = dir.join("client.book");
    let client = spawn_client(&args(&[
        "--transport",
        "tcp",
        "--connect",
        &addr,
        "--quiet",
        "--json",
        "--book-out",
        book.to_str().unwrap(),
        "--threads",
        threads,
    ]));
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().unwrap(); // SIGKILL, mid-session: ~150k messages published
    let _ = first.wait();
    std::thread::sleep(Duration::from_millis(300));
    let second_book = dir.join("second.book");
    let (second, _) = server(seed_b, &addr, &second_book, "300000");
    let s = finish(second, "restarted server", Duration::from_secs(60));
    let c = finish(client, "client", Duration::from_secs(60));
    assert_eq!(u(&c, "unrecovered"), 0, "{c}");
    assert_eq!(c["epoch"].as_u64(), Some(4242), "{c}");
    assert_eq!(u(&c, "epoch_changes"), 1, "the restart is seen once: {c}");
    assert_eq!(c["validation"]["restarts_detected"].as_u64(), Some(1), "{c}");
    assert_eq!(u(&s, "messages"), 300_000, "{s}");
    assert_eq!(u(&c, "last_seq"), 300_000, "{c}");
    assert_eq!(u(&c, "duplicates"), 0, "nothing of the new session is an old duplicate: {c}");
    // One host, one clock: no message is sent before it is due (§ 4.3: the
    // due times are the schedule from S, and S is read precisely).
    assert_eq!(c["breakdown_ns"]["due_to_sent"]["skewed"].as_u64(), Some(0), "{c}");
    let got = std::fs::read_to_string(&book).unwrap();
    let want = regenerated_book(seed_b, 300_000);
    std::fs::write(dir.join("regenerated.book"), &want).unwrap();
    assert!(got == want, "the client's book is not the second session's (seed {seed_b}) stream");
    assert_same_book(&second_book, &book);
}

/// A slow client (logs in, never reads) is disconnected; a normal client keeps
/// full rate and loses nothing.
#[test]
fn slow_client_is_dropped_and_others_lose_nothing() {
    let dir = scratch("slow");
    let server_book = dir.join("server.book");
    let (server, addr) = tcp_server(
        14,
        300000,
        &server_book,
        &["--messages", "2400000", "--duration", "0", "--linger", "1s"],
    );
    // The slow one: a raw socket that logs in and then never reads.
    let mut slow = TcpStream::connect(addr).unwrap();
    let login = login_packet();
    slow.write_all(&login).unwrap();
    let book = dir.join("client.book");
    let client = verified_client(&addr.to_string(), 14, &book);
    let s = finish(server, "server", Duration::from_secs(90));
    let c = finish(client, "client", Duration::from_secs(60));
    drop(slow);
    assert!(u(&s, "slow_disconnects") >= 1, "the slow client was not dropped: {s}");
    assert_clean(&c, "client");
    assert_eq!(u(&c, "messages_delivered"), 2_400_000, "{c}");
    assert_eq!(u(&c, "reconnects"), 0, "the normal client was affected: {c}");
    assert_same_book(&server_book, &book);
}

/// Malformed bytes on the TCP port are counted, the offending connections
/// closed, everyone else served, and nothing panics (the server exits 0).
#[test]
fn malformed_input_is_counted_and_others_are_served() {
    let dir = scratch("malformed");
    let server_book = dir.join("server.book");
    let (server, addr) = tcp_server(
        15,
        100000,
        &server_book,
        &["--messages", "300000", "--duration", "0", "--linger", "1s"],
    );
    let book = dir.join("client.book");
    let client = verified_client(&addr.to_string(), 15, &book);
    let valid = login_packet();
    let mut bad_crc = valid;
    bad_crc[20] ^= 0xff;
    let mut absurd = valid;
    absurd[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let attacks: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", garbage),
        ("truncated", valid[..25].to_vec()),
        ("bad crc", bad_crc.to_vec()),
        ("absurd length", absurd.to_vec()),
    ];
    for (name, bytes) in &attacks {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(bytes).unwrap();
        if *name == "truncated" {
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        // The server closes the connection on us (or we give up after a while for the truncated one).
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = [0u8; 4096];
        let closed = loop {
            match s.read(&mut sink) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        assert!(closed || *name == "truncated", "{name}: the server kept the connection open");
    }
    let s = finish(server, "server", Duration::from_secs(60));
    let c = finish(client, "client", Duration::from_secs(60));
    assert!(u(&s, "malformed") >= 4, "each of the 4 attacks must be counted: {s}");
    assert_clean(&c, "client");
    assert_eq!(u(&c, "messages_delivered"), 300_000, "{c}");
    assert_same_book(&server_book, &book);
}
