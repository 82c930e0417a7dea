//! The Subscriber's steady state allocates nothing: over loopback from an
//! in-process server at 100k msgs/s, once warmed up (histograms, buffers and
//! the transport's queues at their working size), 150 000 messages are
//! received, recovered, applied to the cache, timed and handed to a callback,
//! then 50 000 more through the iterator, with no allocation (counted per
//! thread by a counting global allocator): on the polling thread in the
//! single-thread mode, on it and on every receive thread in the pipeline
//! (TCP, and A/B multicast with a thread per line).

#[path = "../../core/tests/support/alloc_count.rs"]
mod alloc_count;

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tickwire_client::{Event, Subscriber, SubscriberBuilder, Threading};
use tickwire_core::gbm::GbmConfig;
use tickwire_server::ServerConfig;
use tickwire_transports::select::TransportKind;

const WARM_UP: u64 = 50_000;
const MEASURED: u64 = 150_000;
const ITERATED: u64 = 50_000;
const TOTAL: u64 = 350_000;

#[test]
fn steady_state_polls_allocate_nothing() {
    steady_state_allocates_nothing(Threading::Single, TransportKind::Tcp, 0);
}

#[test]
fn steady_state_of_the_tcp_pipeline_allocates_nothing_on_any_thread() {
    steady_state_allocates_nothing(Threading::Pipeline, TransportKind::Tcp, 1);
}

#[test]
fn steady_state_of_the_ab_multicast_pipeline_allocates_nothing_on_any_thread() {
    steady_state_allocates_nothing(Threading::Pipeline, TransportKind::Multicast, 2);
}

/// Start the server of `cfg` in a thread; returns it and its address once ready.
fn start_server(
    mut cfg: ServerConfig,
    tag: usize,
) -> (std::thread::JoinHandle<tickwire_server::Summary>, SocketAddr) {
    let ready =
        std::env::temp_dir().join(format!("tickwire-alloc-{}-{tag}.ready", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    cfg.ready_file = Some(ready.clone());
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
    (server, addr)
}

/// Allocations so far on this thread and on the receive threads of `group`.
fn allocations(group: usize) -> u64 {
    alloc_count::count() + alloc_count::group_count(group)
}

fn steady_state_allocates_nothing(threading: Threading, kind: TransportKind, group: usize) {
    let mut cfg = ServerConfig {
        gbm: GbmConfig { seed: 5, symbols: 1000, ..GbmConfig::default() },
        rate: 100_000,
        duration: None,
        max_messages: Some(TOTAL),
        wait_clients: 1,
        stats_interval: None,
        ..ServerConfig::default()
    };
    let builder = |b: SubscriberBuilder| {
        b.universe(1000)
            .verify(Some(5))
            .duration(Some(Duration::from_secs(60)))
            .threading(threading)
            .on_receive_thread_start(move |_| alloc_count::count_into(group))
    };
    let (mut sub, server) = match kind {
        TransportKind::Multicast => {
            let pid = std::process::id();
            let g = |line: u32| {
                SocketAddrV4::new(
                    [239, 255, (30 + pid % 200) as u8, (240 + line) as u8].into(),
                    (30_000 + pid % 10_000 + line) as u16,
                )
            };
            let recovery: SocketAddr =
                UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let mut b = builder(Subscriber::builder().multicast(recovery, g(0)));
            let mut opts = b.transport_options().clone();
            opts.group_b = Some(g(1));
            b = b.transport(opts);
            // Subscribed first: the groups are joined before the first packet.
            let sub = b.build().unwrap();
            cfg.wait_clients = 0;
            cfg.transport.kind = TransportKind::Multicast;
            cfg.transport.addr = recovery;
            cfg.transport.group_a = g(0);
            cfg.transport.group_b = Some(g(1));
            (sub, start_server(cfg, group).0)
        }
        _ => {
            cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
            let (server, addr) = start_server(cfg, group);
            (builder(Subscriber::builder().tcp(addr)).build().unwrap(), server)
        }
    };
    let messages = std::cell::Cell::new(0u64);
    let mut on_event =
        |ev: &Event| messages.set(messages.get() + u64::from(matches!(ev, Event::Message { .. })));
    while sub.stats().messages_delivered < WARM_UP && !sub.is_done() {
        sub.poll(&mut on_event).unwrap();
    }
    let before = allocations(group);
    let from = sub.stats().messages_delivered;
    while sub.stats().messages_delivered < from + MEASURED && !sub.is_done() {
        sub.poll(&mut on_event).unwrap();
    }
    let polled = allocations(group) - before;
    let measured = sub.stats().messages_delivered - from;
    // The iterator, too: its queue keeps its capacity across polls. What it
    // has received past the break goes to the callback of the next poll.
    let before = allocations(group);
    let mut iterated = 0u64;
    for ev in sub.events() {
        iterated += u64::from(matches!(ev.unwrap(), Event::Message { .. }));
        if iterated == ITERATED {
            break;
        }
    }
    let iterator_allocations = allocations(group) - before;
    messages.set(messages.get() + iterated);
    while !sub.is_done() {
        sub.poll(&mut on_event).unwrap();
    }
    let summary = sub.summary();
    server.join().unwrap();

    assert!(measured >= MEASURED, "only {measured} messages in the measured window: {summary:?}");
    assert_eq!(polled, 0, "{polled} allocations while {measured} messages were polled");
    assert_eq!(iterated, ITERATED, "the iterator ended early: {summary:?}");
    assert_eq!(
        iterator_allocations, 0,
        "{iterator_allocations} allocations in {ITERATED} iterated"
    );
    // The counter counts: an allocation on this thread moves it.
    let c = alloc_count::count();
    drop(std::hint::black_box(vec![1u8; 16]));
    assert!(alloc_count::count() > c, "the counting allocator is not installed");
    if threading == Threading::Pipeline {
        let lines = if kind == TransportKind::Multicast { 2 } else { 1 };
        let p = summary.pipeline.expect("a pipeline subscriber reports its pipeline");
        assert_eq!(p.threads, lines, "{p:?}");
        assert!(p.batches > 0, "{p:?}");
        // The receive threads count into the group: an allocation there moves it.
        assert!(alloc_count::group_count(group) > 0, "the receive threads were not counted");
    }
    assert_eq!(summary.messages_delivered, TOTAL);
    assert_eq!(messages.get(), TOTAL, "callback and iterator saw {} messages", messages.get());
    let v = summary.verify.expect("verified");
    assert!(v.ok && v.checked == TOTAL, "verification: {v:?}");
}
