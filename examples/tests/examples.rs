//! Runs each example program over loopback and checks what it did against
//! an expectation computed here, independently of the program:
//!
//! * `subscribe` against an in-process GBM server: the quotes it prints are
//!   exactly the chosen symbol's quotes of the stream regenerated from the
//!   server's seed, in order, and its final cache state is the oracle's book;
//! * `publish` with an in-process [`Subscriber`]: every message arrives, in
//!   sequence, equal to the message the example's documented formula gives,
//!   and the cache ends as those messages leave it;
//! * `custom_transport`: the conformance suite passes, and the same
//!   transport with a deliberate loss fails it, naming the missing packet.
//!
//! `cargo test` builds the examples before running this (target/<profile>/examples/).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tickwire_client::{Event, Subscriber};
use tickwire_core::gbm::{self, GbmConfig};
use tickwire_core::{Book, Message, Side};
use tickwire_server::ServerConfig;

/// Longest any example may run here before the test fails (each needs
/// about a second).
const DEADLINE: Duration = Duration::from_secs(60);

/// An example program cargo built beside this test (target/<profile>/examples/NAME).
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path: PathBuf = profile_dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (run it without --test filters, \
         or `cargo build --examples` with the same profile first)",
        path.display()
    );
    Command::new(path)
}

/// Wait for `child` with [`DEADLINE`], killing it if it runs over.
fn wait(mut child: Child, what: &str) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{what} did not finish within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A GBM server in this process on a free loopback port (it waits for one
/// client, publishes `messages`, lingers 1 s).
fn gbm_server(gbm: GbmConfig, messages: u64) -> tickwire_server::Running {
    let mut cfg = ServerConfig {
        gbm,
        rate: 50_000,
        duration: None,
        max_messages: Some(messages),
        wait_clients: 1,
        stats_interval: None,
        ..ServerConfig::default()
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    tickwire_server::spawn(cfg, Arc::new(AtomicBool::new(false))).expect("starting the server")
}

/// Assert two line lists are equal, naming the first difference.
fn assert_same_lines(got: &[String], want: &[String], what: &str) {
    if let Some(i) = (0..got.len().max(want.len())).find(|&i| got.get(i) != want.get(i)) {
        panic!(
            "{what}: {} lines printed, {} expected; first difference at line {i}: got {:?}, expected {:?}",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i)
        );
    }
}

#[test]
fn subscribe_prints_exactly_the_seeds_quotes_of_its_symbol() {
    let (seed, symbols, messages, symbol) = (11, 50, 20_000, 3);
    let gbm = GbmConfig { seed, symbols, ..GbmConfig::default() };
    let server = gbm_server(gbm.clone(), messages);
    let addr = server.local_addr();
    let child = example("subscribe")
        .args([addr.to_string(), symbol.to_string(), symbols.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the subscribe example");
    let out = wait(child, "the subscribe example");
    assert!(out.status.success(), "the subscribe example failed: {}", out.status);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let summary = server.join().unwrap();
    assert_eq!(summary.messages, messages, "the server published {} messages", summary.messages);

    let printed: Vec<String> =
        stdout.lines().filter(|l| l.starts_with("quote ")).map(str::to_owned).collect();
    let expected: Vec<String> = gbm::expected_stream(&gbm, messages)
        .filter_map(|(seq, m)| match m {
            Message::Quote(q) if q.symbol == symbol => Some(format!(
                "quote seq={seq} bid_px={} ask_px={} bid_qty={} ask_qty={}",
                q.bid_px, q.ask_px, q.bid_qty, q.ask_qty
            )),
            _ => None,
        })
        .collect();
    assert!(
        expected.len() > 50,
        "the test stream has only {} quotes of symbol {symbol}: too few to show anything",
        expected.len()
    );
    assert_same_lines(&printed, &expected, "subscribe's quotes against the seed's stream");

    let s = gbm::expected_book(&gbm, messages).states()[symbol as usize];
    let want = format!(
        "final bid_px={} ask_px={} last_px={} updates={}",
        s.bid_px, s.ask_px, s.last_px, s.updates
    );
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(last, want, "the cache's final state of symbol {symbol} differs from the oracle's");
}

/// Check message `n` (from 1) against the formula the publish example's
/// documentation gives (checked here field by field, not shared with the
/// example's code).
fn check_ramp(n: u64, msg: &Message) {
    let (symbol, px) = ((n % 4) as u32, 10_000_000_000 + n as i64);
    match msg {
        Message::Quote(q) if n % 2 == 1 => assert_eq!(
            (q.symbol, q.bid_px, q.ask_px, q.bid_qty, q.ask_qty, q.exch_ts, q.symbol_seq),
            (symbol, px, px + 1_000_000, (n % 100 + 1) as u32, (n % 50 + 1) as u32, n, 0),
            "quote {n} differs from what the example publishes"
        ),
        Message::Trade(t) if n % 2 == 0 => assert_eq!(
            (t.symbol, t.side, t.price, t.qty, t.exch_ts),
            (symbol, Side::Buy, px, (n % 10 + 1) as u32, n),
            "trade {n} differs from what the example publishes"
        ),
        other => {
            panic!("message {n} should be a {}: {other:?}", ["trade", "quote"][n as usize % 2])
        }
    }
}

#[test]
fn publish_delivers_exactly_the_messages_it_publishes() {
    let count = 3000u64;
    let mut child = example("publish")
        .args(["127.0.0.1:0", &count.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the publish example");
    // The server loop names its bound address on stderr; pass the rest through.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[publish] {line}");
            if let Some(rest) = line.split_once("transport on ").map(|(_, r)| r) {
                let addr = rest.split(',').next().unwrap_or_default().to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(DEADLINE)
        .expect("the publish example never said where it listens")
        .parse()
        .unwrap();

    let mut sub = Subscriber::builder()
        .tcp(addr)
        .universe(4)
        .duration(Some(DEADLINE))
        .build()
        .expect("subscribing");
    let mut got = Vec::new();
    sub.run(&AtomicBool::new(false), |ev| {
        if let Event::Message { seq, msg, .. } = ev {
            got.push((seq.0, *msg));
        }
    })
    .expect("receiving");
    let summary = sub.summary();
    assert!(summary.end_of_session, "the session did not end within {DEADLINE:?}: {summary:?}");
    assert_eq!(got.len() as u64, count, "messages received");
    let mut book = Book::new(4);
    for (i, &(seq, msg)) in got.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(seq, n, "message {i} carries sequence {seq}");
        check_ramp(n, &msg);
        book.apply(n, &msg);
    }
    let cache = sub.cache();
    for symbol in 0..4 {
        assert_eq!(
            cache.read(symbol).as_ref(),
            book.states().get(symbol as usize),
            "symbol {symbol}"
        );
    }

    let out = wait(child, "the publish example");
    relay.join().unwrap();
    assert!(out.status.success(), "the publish example failed: {}", out.status);
    let mut stdout = String::new();
    out.stdout.as_slice().read_to_string(&mut stdout).unwrap();
    assert!(
        stdout.starts_with(&format!("published {count} messages")),
        "the publish example's report: {stdout:?}"
    );
}

#[test]
fn custom_transport_passes_the_conformance_suite_and_a_lossy_one_fails_it() {
    let out = wait(
        example("custom_transport").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(),
        "the custom_transport example",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the conformance suite failed the example's transport: {stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "conformance: the in-process hub transport passed every check"
    );

    // The same transport losing every 500th published packet must fail, on
    // the first packet lost (index 499), in the first check.
    let out = wait(
        example("custom_transport")
            .args(["--drop-every", "500"])
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        "the custom_transport example with losses",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(101), "a lossy transport passed the suite: {stderr}");
    assert!(
        stderr.contains(
            "[in-process hub] delivery: subscriber 0: on line A expected packet 499, got 500"
        ),
        "the suite's failure does not name the lost packet: {stderr}"
    );
    assert!(out.stdout.is_empty(), "the lossy run claimed success");
}
