//! The Subscriber library API against in-process servers on loopback: what
//! its callbacks receive is the seed's stream (recovered across loss,
//! filtered by symbol), and its cache ends as the oracle's book.

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tickwire_client::{Event, Subscriber};
use tickwire_core::gbm::{self, GbmConfig};
use tickwire_core::{Message, SymbolState};
use tickwire_server::ServerConfig;
use tickwire_transports::select::TransportKind;

/// Longest a session may take here.
const DEADLINE: Duration = Duration::from_secs(60);

/// Start `cfg` on a thread of its own (no progress lines).
fn start_server(mut cfg: ServerConfig) -> tickwire_server::Running {
    cfg.stats_interval = None;
    tickwire_server::spawn(cfg, Arc::new(AtomicBool::new(false))).expect("starting the server")
}

/// Everything the callback saw.
#[derive(Default)]
struct Seen {
    messages: Vec<(u64, Message)>,
    snapshot_ends: Vec<u64>,
    snapshot_records: u64,
}

impl Seen {
    fn record(&mut self, ev: &Event) {
        match ev {
            Event::Message { seq, msg, .. } => self.messages.push((seq.0, *msg)),
            Event::SymbolState(_) => self.snapshot_records += 1,
            Event::SnapshotEnd { seq } => self.snapshot_ends.push(seq.0),
            Event::Reconnect => panic!("the Subscriber handed out a Reconnect"),
            _ => {}
        }
    }
}

/// Multicast with 5% of the feed's packets dropped at the server: the
/// callback receives every message from where it joined to the end, in
/// order and equal to the seed's stream (a late start is covered by a
/// snapshot at exactly the first sequence delivered), NACKs did the
/// recovering, and the cache ends as the oracle's book.
#[test]
fn multicast_callbacks_get_the_seeds_stream_recovered_across_loss() {
    let (seed, symbols, messages) = (21, 100, 30_000);
    let gbm = GbmConfig { seed, symbols, ..GbmConfig::default() };
    let pid = std::process::id();
    let group = SocketAddrV4::new(
        [239, 255, (10 + pid % 200) as u8, 251].into(),
        (40_000 + pid % 10_000) as u16,
    );
    // The recovery service's port, picked by the kernel (the server binds it
    // again; its ready file confirms it did).
    let recovery: SocketAddr = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();

    // Subscribe first: the group is joined before the first packet is sent.
    let mut sub = Subscriber::builder()
        .multicast(recovery, group)
        .universe(symbols)
        .seed(3)
        .verify(Some(seed))
        .duration(Some(DEADLINE))
        .build()
        .expect("subscribing");
    let mut cfg = ServerConfig {
        gbm: gbm.clone(),
        rate: 50_000,
        duration: None,
        max_messages: Some(messages),
        ..ServerConfig::default()
    };
    cfg.transport.kind = TransportKind::Multicast;
    cfg.transport.addr = recovery;
    cfg.transport.group_a = group;
    cfg.transport.loss.tx_drop = 0.05;
    cfg.transport.loss.seed = 9;
    let server = start_server(cfg);

    let mut seen = Seen::default();
    sub.run(&AtomicBool::new(false), |ev| seen.record(ev)).expect("receiving");
    let summary = sub.summary();
    let server = server.join().unwrap();
    assert_eq!(server.messages, messages);
    assert!(summary.end_of_session, "the session did not end within {DEADLINE:?}: {summary:?}");

    let first = seen.messages.first().map(|m| m.0).expect("no message delivered");
    if first > 1 {
        assert_eq!(seen.snapshot_ends, [first], "joined at {first} without a snapshot there");
        assert_eq!(seen.snapshot_records, u64::from(symbols));
    }
    let expected: Vec<(u64, Message)> = gbm::expected_stream(&gbm, messages)
        .skip(first as usize - 1)
        .map(|(s, m)| (s.0, m))
        .collect();
    if let Some(i) = (0..expected.len().max(seen.messages.len()))
        .find(|&i| seen.messages.get(i) != expected.get(i))
    {
        panic!(
            "delivered {} messages from {first}, expected {}; first difference at {i}: got {:?}, expected {:?}",
            seen.messages.len(),
            expected.len(),
            seen.messages.get(i),
            expected.get(i)
        );
    }
    assert!(summary.gaps_detected > 0, "5% loss made no gap: {summary:?}");
    assert!(summary.messages_retransmitted > 0, "nothing was retransmitted: {summary:?}");
    assert_eq!(summary.unrecovered, 0, "{summary:?}");
    let verify = summary.verify.expect("verification was asked for");
    assert!(verify.ok, "the verifier disagrees: {verify:?}");

    let book = gbm::expected_book(&gbm, messages);
    let cache = sub.cache();
    for s in 0..symbols {
        assert_eq!(cache.read(s).as_ref(), book.states().get(s as usize), "symbol {s}");
    }
}

/// TCP with a filter of two symbols: the callback sees exactly those
/// symbols' messages of the seed's stream, the cache holds exactly their
/// state and nothing for the others, and the whole stream was still
/// recovered and verified underneath.
#[test]
fn symbol_filter_limits_callbacks_and_cache_to_the_subscribed_symbols() {
    let (seed, symbols, messages) = (22, 50, 20_000);
    let subscribed = [1u32, 2];
    let gbm = GbmConfig { seed, symbols, ..GbmConfig::default() };
    let mut cfg = ServerConfig {
        gbm: gbm.clone(),
        rate: 50_000,
        duration: None,
        max_messages: Some(messages),
        wait_clients: 1,
        ..ServerConfig::default()
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    let server = start_server(cfg);
    let addr = server.local_addr();
    let mut sub = Subscriber::builder()
        .tcp(addr)
        .universe(symbols)
        .symbols(subscribed)
        .verify(Some(seed))
        .duration(Some(DEADLINE))
        .build()
        .expect("subscribing");
    let mut seen = Seen::default();
    sub.run(&AtomicBool::new(false), |ev| seen.record(ev)).expect("receiving");
    server.join().unwrap();
    let summary = sub.summary();
    assert!(summary.end_of_session, "{summary:?}");
    assert_eq!(summary.messages_delivered, messages, "the receiver delivers the whole stream");
    let verify = summary.verify.expect("verification was asked for");
    assert!(verify.ok && verify.checked == messages, "{verify:?}");

    let expected: Vec<(u64, Message)> = gbm::expected_stream(&gbm, messages)
        .filter(|(_, m)| m.symbol().is_some_and(|s| subscribed.contains(&s)))
        .map(|(s, m)| (s.0, m))
        .collect();
    assert!(expected.len() > 100, "too few messages of the subscribed symbols to show anything");
    assert!(seen.messages == expected, "the callback's messages differ from the filtered stream");

    let book = gbm::expected_book(&gbm, messages);
    let cache = sub.cache();
    for s in 0..symbols {
        let want = if subscribed.contains(&s) {
            book.states()[s as usize]
        } else {
            SymbolState { symbol: s, ..SymbolState::default() }
        };
        assert_eq!(cache.read(s), Some(want), "symbol {s}");
    }
    assert_eq!(sub.activity().iter().sum::<u64>(), expected.len() as u64);
}
