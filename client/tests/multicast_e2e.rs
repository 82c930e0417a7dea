//! End-to-end tests over UDP multicast with the real binaries on loopback:
//! subscribers lose packets (seeded, in-process drop on receive, which hits
//! the feed lines *and* the unicast recovery replies), recover everything by
//! NACK or snapshot, deliver exactly the stream regenerated from the seed
//! (`client --verify`) and end with the server's book.
//!
//! Each test uses its own multicast groups (derived from the pid and a
//! per-test number) and its own recovery port, so tests run in parallel.
//! `TICKWIRE_LONG=1` runs the 20 s form of the loss tests (default 3 s).

mod support;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tickwire_core::SeqNo;
use tickwire_core::publisher::RequestLimits;
use tickwire_core::wire::{HEADER_LEN, PacketKind, PacketRepr, SnapshotHeader, SnapshotRecord};

/// Feed rate of every test: the 200k msg/s.
const RATE: u64 = 200_000;

/// Seconds of generation: 3 by default, 20 with `TICKWIRE_LONG=1`.
fn session_secs() -> u64 {
    if std::env::var("TICKWIRE_LONG").is_ok_and(|v| v == "1") { 20 } else { 3 }
}

/// A multicast group unique to this process and test: `239.255.X.Y:PORT`.
/// The port differs per test too (subscribers bind the group address, but a
/// distinct port keeps even a misconfigured socket from seeing another test).
fn group(test: u32, line: u32) -> String {
    let pid = std::process::id();
    let x = 10 + pid % 200;
    let y = 1 + (test * 2 + line) % 250;
    let port = 20_000 + (pid % 2_000) * 16 + test * 2 + line;
    format!("239.255.{x}.{y}:{port}")
}

/// One multicast session: the server's flags and where its outputs go.
struct Session {
    dir: PathBuf,
    seed: u64,
    recovery: String,
    group_a: String,
    group_b: Option<String>,
    server_book: PathBuf,
    /// The subscribers' `--threads`.
    threads: &'static str,
}

impl Session {
    fn new(name: &str, test: u32, seed: u64, ab: bool) -> Session {
        let dir = scratch(name);
        Session {
            server_book: dir.join("server.book"),
            dir,
            seed,
            recovery: format!("127.0.0.1:{}", free_udp_port()),
            group_a: group(test, 0),
            group_b: ab.then(|| group(test, 1)),
            threads: "single",
        }
    }

    /// Start a subscriber dropping `drop_rate` of what it receives (seed `drop_seed`).
    fn client(&self, name: &str, drop_rate: f64, drop_seed: u64) -> (std::process::Child, PathBuf) {
        self.client_with(name, drop_rate, drop_seed, &[])
    }

    /// [`Self::client`] with more flags.
    fn client_with(
        &self,
        name: &str,
        drop_rate: f64,
        drop_seed: u64,
        extra: &[&str],
    ) -> (std::process::Child, PathBuf) {
        let book = self.dir.join(format!("{name}.book"));
        let mut a =
            multicast_client_args(&self.recovery, &self.group_a, Some("127.0.0.1"), self.seed);
        a.extend(args(&[
            "--book-out",
            book.to_str().unwrap(),
            "--drop-rate",
            &drop_rate.to_string(),
            "--drop-seed",
            &drop_seed.to_string(),
            "--seed",
            &drop_seed.to_string(),
        ]));
        if !extra.contains(&"--threads") {
            a.extend(args(&["--threads", self.threads]));
        }
        if let Some(b) = &self.group_b {
            a.extend(args(&["--group-b", b]));
        }
        a.extend(args(extra));
        (spawn_client(&a), book)
    }

    /// Start the server for `secs` seconds of generation at [`RATE`].
    fn server(&self, secs: u64, extra: &[&str]) -> std::process::Child {
        self.server_at(secs, RATE, extra)
    }

    /// Start the server for `secs` seconds of generation at `rate` msgs/s.
    fn server_at(&self, secs: u64, rate: u64, extra: &[&str]) -> std::process::Child {
        let mut a = multicast_server_args(
            &self.recovery,
            &self.group_a,
            "127.0.0.1",
            rate,
            self.seed,
            secs,
            "3s",
        );
        a.extend(args(&["--book-out", self.server_book.to_str().unwrap()]));
        if let Some(b) = &self.group_b {
            a.extend(args(&["--group-b", b]));
        }
        a.extend(args(extra));
        let (child, addr) = spawn_server(&a);
        assert_eq!(addr.to_string(), self.recovery, "the server bound another recovery address");
        child
    }
}

/// Deadline for any process of a session of `secs` seconds: generous, since
/// the machines are small and shared (a deadline is a hang detector, not a
/// speed assertion).
fn deadline(secs: u64) -> Duration {
    Duration::from_secs(secs * 3 + 60)
}

/// Assert a subscriber delivered the complete, verified session and ended with the server's book.
fn assert_complete(c: &Value, s: &Value, what: &str, server_book: &Path, book: &Path) {
    assert_clean(c, what);
    assert_eq!(c["verify"]["ok"].as_bool(), Some(true), "{what}: {c}");
    assert_eq!(
        u(c, "last_seq"),
        u(s, "messages"),
        "{what} did not reach the end of the session: {c}"
    );
    assert_eq!(c["end_of_session"].as_bool(), Some(true), "{what}: {c}");
    assert_same_book(server_book, book);
}

/// Must-show (issue 3): three subscribers, each dropping `pct`% of what it
/// receives with its own seed, all recover every message. With `late_joiner`,
/// a fourth subscriber starts one second into the session and must come up
/// through a snapshot and continue from it without a gap.
fn three_subscribers_recover(test: u32, pct: f64, seed: u64, late_joiner: bool) {
    let secs = session_secs();
    let sess = Session::new(&format!("mc-loss-{pct}"), test, seed, false);
    // Subscribers first: they join the group and wait for the session's first packet.
    let clients: Vec<_> =
        (0..3u64).map(|i| sess.client(&format!("c{i}"), pct / 100.0, 100 * seed + i + 1)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let server = sess.server(secs, &[]);
    let late = late_joiner.then(|| {
        std::thread::sleep(Duration::from_secs(1));
        sess.client("late", pct / 100.0, 100 * seed + 99)
    });
    let s = finish(server, "server", deadline(secs));
    assert!(u(&s, "messages") >= RATE * secs * 9 / 10, "the server published too little: {s}");
    let mut missed = Vec::new();
    for (i, (child, book)) in clients.into_iter().enumerate() {
        let what = format!("subscriber {i} at {pct}% drop");
        let c = finish(child, &what, deadline(secs));
        eprintln!("{what}: {c}");
        assert_complete(&c, &s, &what, &sess.server_book, &book);
        // Every message is delivered unless a snapshot covered some (legitimately:
        // its state includes them); verify's `skipped == 0` proves no silent hole.
        if u(&c, "snapshots") == 0 {
            assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "{what}: {c}");
            assert_eq!(c["verify"]["checked"].as_u64(), Some(u(&s, "messages")), "{what}: {c}");
        }
        assert!(
            u(&c, "gaps_detected") > 0 && u(&c, "nacks_sent") > 0,
            "{what}: no loss was injected: {c}"
        );
        missed.push(u(&c, "messages_missed"));
    }
    if let Some((child, book)) = late {
        let c = finish(child, "late joiner", deadline(secs));
        eprintln!("late joiner: {c}");
        assert_complete(&c, &s, "late joiner", &sess.server_book, &book);
        assert!(u(&c, "snapshots") >= 1, "the late joiner must come up through a snapshot: {c}");
        assert!(c["verify"]["snapshot_records"].as_u64().unwrap() > 0, "{c}");
        assert!(
            u(&c, "messages_delivered") < u(&s, "messages"),
            "the late joiner saw the whole session: {c}"
        );
    }
    // Distinct seeds drop distinct packets.
    assert!(
        missed.windows(2).any(|w| w[0] != w[1]),
        "the subscribers lost the same packets: {missed:?}"
    );
}

/// Issue 23: per-symbol order over a real multicast session at 5% drop.
/// Two subscribers drop the same packets (same drop seed), one in feed
/// order, one per symbol; a third per-symbol one drops others and goes
/// through the pipeline. Every one delivers the whole session, verified
/// message by message against the seed (per-symbol: each symbol in order),
/// and ends with the server's book; per-symbol order applies messages ahead
/// of the holes, holds fewer than feed order on the same losses, and ends
/// with no stale symbol.
#[test]
fn per_symbol_order_at_5_percent_drop_verifies_everything_and_holds_less() {
    let secs = session_secs();
    let sess = Session::new("mc-per-symbol", 8, 38, false);
    let strict = sess.client_with("strict", 0.05, 801, &["--order", "strict"]);
    let per = sess.client_with("per", 0.05, 801, &["--order", "per-symbol"]);
    let piped = sess.client_with(
        "per-pipe",
        0.05,
        802,
        &["--order", "per-symbol", "--threads", "pipeline"],
    );
    std::thread::sleep(Duration::from_millis(300));
    let server = sess.server(secs, &[]);
    let s = finish(server, "server", deadline(secs));
    let (mut held, mut snapshots) = (Vec::new(), Vec::new());
    for (what, (child, book), order) in [
        ("strict", strict, "strict"),
        ("per-symbol", per, "per-symbol"),
        ("per-symbol pipeline", piped, "per-symbol"),
    ] {
        let c = finish(child, what, deadline(secs));
        eprintln!(
            "{what}: {} recovery {} snapshots {} gaps {} nacks {} rtt {}",
            c["delivery"],
            c["recovery_time"],
            c["snapshots"],
            c["gaps_detected"],
            c["nacks_sent"],
            c["rtt"]
        );
        assert_complete(&c, &s, what, &sess.server_book, &book);
        let d = &c["delivery"];
        assert_eq!(d["order"].as_str(), Some(order), "{what}: {c}");
        assert!(u(&c, "gaps_detected") > 0, "{what}: no loss was injected: {c}");
        if order == "per-symbol" {
            assert!(u(d, "messages_ahead") > 0, "{what}: nothing went ahead of a hole: {c}");
            assert!(u(d, "stale_periods") > 0, "{what}: {c}");
            assert_eq!(u(d, "stale_now"), 0, "{what}: stale symbols at the end: {c}");
        } else {
            assert_eq!(u(d, "messages_ahead"), 0, "{what}: {c}");
        }
        held.push(d["held_share"].as_f64().unwrap());
        if snapshots.len() < 2 {
            snapshots.push(u(&c, "snapshots"));
        }
    }
    // On the same seeded drops per-symbol order holds less. Only then: a
    // client the loaded machine overran lost more in its socket buffer (and
    // may have needed a snapshot), and the two no longer saw the same losses.
    if snapshots == [0, 0] {
        assert!(
            held[1] < held[0],
            "per-symbol held {} of the messages, strict {}",
            held[1],
            held[0]
        );
    } else {
        eprintln!("held shares not compared: snapshots {snapshots:?} (a client was overrun)");
    }
}

#[test]
fn three_subscribers_recover_everything_at_1_percent_drop() {
    three_subscribers_recover(1, 1.0, 31, false);
}

#[test]
fn three_subscribers_and_a_late_joiner_recover_everything_at_5_percent_drop() {
    three_subscribers_recover(2, 5.0, 32, true);
}

/// 20% of feed *and* answers lost. The 3 s form is reliable; the 20 s form
/// (`TICKWIRE_LONG=1`) failed two of three runs (a subscriber fell into the
/// snapshot regime, see docs/LOSS.md "Known open problem").
#[test]
fn three_subscribers_recover_everything_at_20_percent_drop() {
    three_subscribers_recover(3, 20.0, 33, false);
}

/// A/B feeds: the same stream on two groups, 5% independent drop on each.
/// A message needs a NACK only when both copies are lost: 0.05² = 0.25%.
#[test]
fn ab_feeds_at_5_percent_drop_need_nacks_for_about_a_quarter_percent() {
    ab_feeds_at_5_percent_drop(Session::new("mc-ab", 4, 34, true));
}

/// The same with `--threads pipeline`: a receive thread per line, each
/// dropping from its own loss sequence, feeding one processing thread.
#[test]
fn ab_feeds_through_the_pipeline_at_5_percent_drop_need_nacks_for_about_a_quarter_percent() {
    let sess = Session { threads: "pipeline", ..Session::new("mc-ab-pipe", 6, 36, true) };
    ab_feeds_at_5_percent_drop(sess);
}

fn ab_feeds_at_5_percent_drop(sess: Session) {
    let secs = session_secs();
    let (client, book) = sess.client("ab", 0.05, 3401);
    std::thread::sleep(Duration::from_millis(300));
    let server = sess.server(secs, &[]);
    let s = finish(server, "server", deadline(secs));
    let c = finish(client, "A/B subscriber", deadline(secs));
    eprintln!("A/B subscriber ({} threads): {c}", sess.threads);
    if sess.threads == "pipeline" {
        assert_eq!(c["pipeline"]["threads"], 2, "one receive thread per line: {c}");
        let (batches, packets) = (u(&c["pipeline"], "batches"), u(&c["pipeline"], "packets"));
        assert!(batches > 0 && packets >= batches, "nothing went through the pipeline: {c}");
    }
    assert_complete(&c, &s, "A/B subscriber", &sess.server_book, &book);
    assert!(u(&c, "line_a_won") > 0 && u(&c, "line_b_won") > 0, "both lines must contribute: {c}");
    let total = u(&s, "messages") as f64;
    let needed = u(&c, "messages_retransmitted") as f64 / total;
    eprintln!(
        "A/B at 5% drop per line: {:.3}% of messages needed a NACK (expected ~0.25%), {} NACKs, line A won {}, line B won {}",
        needed * 100.0,
        u(&c, "nacks_sent"),
        u(&c, "line_a_won"),
        u(&c, "line_b_won")
    );
    assert!(needed > 0.0, "with both lines lossy some messages must need a NACK: {c}");
    assert!(
        needed < 0.01,
        "A/B arbitration did not cover single-line loss ({:.3}%): {c}",
        needed * 100.0
    );
}

/// Session epoch of the flood test's server (fixed so the flooder's NACKs are well-formed).
const FLOOD_EPOCH: u64 = 0x7157_3a11;

fn request(kind: PacketKind, first: u64, count: u16) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    let n = PacketRepr {
        kind,
        flags: 0,
        epoch: FLOOD_EPOCH,
        first_seq: SeqNo(first),
        count,
        send_time: 0,
        payload_len: 0,
    }
    .emit_bare(&mut b);
    b.truncate(n);
    b
}

/// Bytes of a full snapshot of `symbols` symbols, as the publisher frames it:
/// parts of at most `max_packet` bytes, each a packet header, a snapshot part
/// header and as many whole records as fit.
fn snapshot_bytes(symbols: u64, max_packet: u64) -> u64 {
    let (header, part, record) = (
        HEADER_LEN as u64,
        SnapshotHeader::<&[u8]>::LEN as u64,
        SnapshotRecord::<&[u8]>::LEN as u64,
    );
    let per_part = (max_packet - header - part) / record;
    symbols.div_ceil(per_part).max(1) * (header + part) + symbols * record
}

/// A flooder hammers the recovery port (garbage, oversized NACK ranges, one
/// NACK repeated thousands of times, snapshot requests) while a verified
/// subscriber recovers 5% loss: the flooder gets no more than its token bucket
/// allows, the server counts what it refused and exits 0, and the subscriber
/// is unaffected.
#[test]
fn recovery_port_flood_is_capped_and_a_subscriber_stays_clean() {
    let secs = session_secs();
    let sess = Session::new("mc-flood", 5, 35, false);
    let (client, book) = sess.client("victim", 0.05, 3501);
    std::thread::sleep(Duration::from_millis(300));
    let server = sess.server(secs, &["--epoch", &FLOOD_EPOCH.to_string()]);

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(&sess.recovery).unwrap();
    let rx = sock.try_clone().unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let last_rx_ns = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let reader = {
        let (received, last_rx_ns, stop) = (received.clone(), last_rx_ns.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut buf) {
                    received.fetch_add(n as u64, Ordering::Relaxed);
                    last_rx_ns.store(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
            }
        })
    };
    // Let the session publish some messages so the NACKs name existing ones.
    std::thread::sleep(Duration::from_millis(500));
    let oversized = request(PacketKind::Nack, 1, u16::MAX);
    let repeated = request(PacketKind::Nack, 1000, 500);
    let snapshot = request(PacketKind::SnapshotRequest, 0, 0);
    let mut bad_crc = repeated.clone();
    bad_crc[20] ^= 0xff;
    let mut sent = [0u64; 5];
    let flood_for = Duration::from_secs(secs.min(3))
        .saturating_sub(Duration::from_millis(800))
        .max(Duration::from_millis(1500));
    let flood_start = Instant::now();
    let mut i: u64 = 0;
    while flood_start.elapsed() < flood_for {
        // Garbage of varying length (some shorter than a header, some longer).
        let len = 1 + (i.wrapping_mul(2_654_435_761) % 1_400) as usize;
        let garbage: Vec<u8> =
            (0..len).map(|k| ((k as u64 + i).wrapping_mul(0x9E37_79B9) >> 7) as u8).collect();
        let _ = sock.send(&garbage);
        let _ = sock.send(&bad_crc);
        let _ = sock.send(&oversized);
        for _ in 0..4 {
            let _ = sock.send(&repeated);
        }
        if i % 64 == 0 {
            let _ = sock.send(&snapshot);
            sent[4] += 1;
        }
        sent[0] += 1;
        sent[1] += 1;
        sent[2] += 1;
        sent[3] += 4;
        i += 1;
        if i % 16 == 0 {
            // ~25k datagrams/s: a flood, without starving the 2-core machine's publisher.
            std::thread::sleep(Duration::from_millis(4));
        }
    }
    // Replies still in flight arrive well within this.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    let got = received.load(Ordering::Relaxed);
    // From before the first request to the last reply: the server's clock saw
    // a shorter span, so this over-estimates what the bucket could refill.
    let elapsed = Duration::from_nanos(last_rx_ns.load(Ordering::Relaxed))
        .saturating_sub(Duration::from_millis(500))
        .max(flood_start.duration_since(t0).saturating_sub(Duration::from_millis(500)));
    let span = (flood_start.elapsed() + Duration::from_millis(300)).max(elapsed);
    let limits = RequestLimits::default();
    let max_packet = tickwire_core::wire::DEFAULT_MAX_PACKET as u64;
    // Token bucket: a full burst at the start, `rate` bytes per second after.
    // Slack: a snapshot is served whole once the bucket holds min(snapshot,
    // burst), so it can overdraw by at most one snapshot; a NACK answer never
    // exceeds the bucket, but count one more packet for rounding.
    let slack = snapshot_bytes(1000, max_packet) + max_packet;
    let bound =
        (limits.rate_bytes_per_sec as f64 * span.as_secs_f64()) as u64 + limits.burst_bytes + slack;
    eprintln!(
        "flooder: sent {} garbage, {} bad-CRC, {} oversized NACKs, {} repeated NACKs, {} snapshot requests in {:?}; \
         received {got} bytes of replies (bound {bound} = {} B/s x {:.2}s + burst {} + slack {slack})",
        sent[0],
        sent[1],
        sent[2],
        sent[3],
        sent[4],
        flood_for,
        limits.rate_bytes_per_sec,
        span.as_secs_f64(),
        limits.burst_bytes
    );

    let s = finish(server, "server", deadline(secs));
    let c = finish(client, "subscriber under flood", deadline(secs));
    eprintln!("server: {s}\nsubscriber: {c}");
    assert!(got > 0, "the flooder's valid NACKs were never answered");
    assert!(got <= bound, "the flooder got {got} bytes, more than the caps allow ({bound})");
    assert!(u(&s, "malformed") > 0, "garbage was not counted as malformed: {s}");
    assert!(u(&s, "ignored_requests") > 0, "repeated/over-limit requests were not ignored: {s}");
    assert_complete(&c, &s, "subscriber under flood", &sess.server_book, &book);
}

/// Feed rate of the upstream-loss test: the measurement's.
const UPSTREAM_RATE: u64 = 20_000;

/// Issue 22: loss upstream of the fan-out (the server's `--drop-rate` drops
/// a packet before any subscriber sees it) is repaired once on the group for
/// every subscriber: four verified subscribers, and the server retransmits
/// no more than 1.5× what one of them needed.
#[test]
fn upstream_loss_is_repaired_once_on_the_group_for_four_subscribers() {
    let secs = session_secs();
    let sess = Session::new("mc-upstream", 7, 37, false);
    let clients: Vec<_> = (0..4u64).map(|i| sess.client(&format!("c{i}"), 0.0, 3700 + i)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // The measurement: 20k msgs/s (four verifying subscribers and
    // the server share two cores; at 200k/s they drop datagrams in their
    // own socket buffers, independent loss that is not what this measures).
    let server =
        sess.server_at(secs, UPSTREAM_RATE, &["--drop-rate", "0.01", "--repair", "multicast"]);
    let s = finish(server, "server", deadline(secs));
    assert!(
        u(&s, "messages") >= UPSTREAM_RATE * secs * 9 / 10,
        "the server published too little: {s}"
    );
    assert_eq!(s["repair"].as_str(), Some("multicast"), "{s}");
    let mut needed = 0;
    for (i, (child, book)) in clients.into_iter().enumerate() {
        let what = format!("subscriber {i} behind 1% upstream loss");
        let c = finish(child, &what, deadline(secs));
        eprintln!("{what}: {c}");
        assert_complete(&c, &s, &what, &sess.server_book, &book);
        assert!(u(&c, "gaps_detected") > 0, "{what}: no loss reached it: {c}");
        needed = needed.max(u(&c, "messages_missed"));
    }
    let retransmitted = u(&s, "retransmitted_messages");
    eprintln!(
        "upstream 1%, 4 subscribers: server retransmitted {retransmitted} messages ({} on the group, {} NACKs, \
         {} joined a repair, {} notices, {} refused by the budget); one subscriber missed at most {needed}",
        u(&s, "repair_messages_multicast"),
        u(&s, "nacks"),
        u(&s, "multicast_repairs_joined"),
        u(&s, "ncf_sent"),
        u(&s, "repair_budget_refused"),
    );
    assert!(u(&s, "multicast_repairs") > 0 && u(&s, "ncf_sent") > 0, "{s}");
    assert!(
        retransmitted * 2 <= needed * 3,
        "the server retransmitted {retransmitted} messages for subscribers that each missed at most {needed}"
    );
}
