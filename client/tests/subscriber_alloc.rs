//! The Subscriber's steady state allocates nothing: over loopback TCP from
//! an in-process server at 100k msgs/s, once warmed up (histograms, buffers
//! and the transport's queues at their working size), 150 000 messages are
//! received, recovered, applied to the cache, timed and handed to a callback,
//! then 50 000 more through the iterator, with no allocation on the polling thread (counted per thread by a
//! counting global allocator).

#[path = "../../core/tests/support/alloc_count.rs"]
mod alloc_count;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tickwire_client::{Event, Subscriber};
use tickwire_core::gbm::GbmConfig;
use tickwire_server::ServerConfig;

const WARM_UP: u64 = 50_000;
const MEASURED: u64 = 150_000;
const ITERATED: u64 = 50_000;
const TOTAL: u64 = 350_000;

#[test]
fn steady_state_polls_allocate_nothing() {
    let ready = std::env::temp_dir().join(format!("tickwire-alloc-{}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let mut cfg = ServerConfig {
        gbm: GbmConfig { seed: 5, symbols: 1000, ..GbmConfig::default() },
        rate: 100_000,
        duration: None,
        max_messages: Some(TOTAL),
        wait_clients: 1,
        stats_interval: None,
        ready_file: Some(ready.clone()),
        ..ServerConfig::default()
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    let server = std::thread::spawn(move || {
        tickwire_server::run(&cfg, Arc::new(AtomicBool::new(false))).expect("the server failed")
    });
    let start = Instant::now();
    let addr = loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let _ = std::fs::remove_file(&ready);
            break text.trim().parse().unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the server never became ready");
        std::thread::sleep(Duration::from_millis(10));
    };

    let mut sub = Subscriber::builder()
        .tcp(addr)
        .universe(1000)
        .verify(Some(5))
        .duration(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let messages = std::cell::Cell::new(0u64);
    let mut on_event =
        |ev: &Event| messages.set(messages.get() + u64::from(matches!(ev, Event::Message { .. })));
    while sub.stats().messages_delivered < WARM_UP && !sub.is_done() {
        sub.poll(&mut on_event).unwrap();
    }
    let before = alloc_count::count();
    let from = sub.stats().messages_delivered;
    while sub.stats().messages_delivered < from + MEASURED && !sub.is_done() {
        sub.poll(&mut on_event).unwrap();
    }
    let allocations = alloc_count::count() - before;
    let measured = sub.stats().messages_delivered - from;
    // The iterator, too: its queue keeps its capacity across polls. What it
    // has received past the break goes to the callback of the next poll.
    let before = alloc_count::count();
    let mut iterated = 0u64;
    for ev in sub.events() {
        iterated += u64::from(matches!(ev.unwrap(), Event::Message { .. }));
        if iterated == ITERATED {
            break;
        }
    }
    let iterator_allocations = alloc_count::count() - before;
    messages.set(messages.get() + iterated);
    while !sub.is_done() {
        sub.poll(&mut on_event).unwrap();
    }
    let summary = sub.summary();
    server.join().unwrap();

    assert!(measured >= MEASURED, "only {measured} messages in the measured window: {summary:?}");
    assert_eq!(allocations, 0, "{allocations} allocations while {measured} messages were polled");
    assert_eq!(iterated, ITERATED, "the iterator ended early: {summary:?}");
    assert_eq!(
        iterator_allocations, 0,
        "{iterator_allocations} allocations in {ITERATED} iterated"
    );
    // The counter counts: an allocation on this thread moves it.
    let c = alloc_count::count();
    drop(std::hint::black_box(vec![1u8; 16]));
    assert!(alloc_count::count() > c, "the counting allocator is not installed");
    assert_eq!(summary.messages_delivered, TOTAL);
    assert_eq!(messages.get(), TOTAL, "callback and iterator saw {} messages", messages.get());
    let v = summary.verify.expect("verified");
    assert!(v.ok && v.checked == TOTAL, "verification: {v:?}");
}
