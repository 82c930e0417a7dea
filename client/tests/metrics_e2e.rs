//! `--metrics`: both binaries serve their counters in the Prometheus text
//! format while they run. A scrape in mid-run shows the feed progressing,
//! and the client's counters agree with the stream it verified.

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::*;

/// A loopback address with a port that was free a moment ago.
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Scrape `addr` (retrying while the process starts), parse `name value` lines.
fn scrape(addr: SocketAddr) -> HashMap<String, u64> {
    let start = Instant::now();
    let text = loop {
        match TcpStream::connect(addr) {
            Ok(mut s) => {
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
                let mut r = String::new();
                s.read_to_string(&mut r).unwrap();
                break r;
            }
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("no metrics at {addr}: {e}"),
        }
    };
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap_or_else(|| panic!("bad line {l:?}"));
            (k.to_string(), v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")))
        })
        .collect()
}

#[test]
fn counters_are_readable_while_running() {
    let (s_metrics, c_metrics) = (free_addr(), free_addr());
    let (server, addr) = spawn_server(&args(&[
        "--transport",
        "tcp",
        "--listen",
        "127.0.0.1:0",
        "--rate",
        "50000",
        "--duration",
        "3s",
        "--seed",
        "11",
        "--stats-interval",
        "0",
        "--json",
        "--metrics",
        &s_metrics.to_string(),
    ]));
    let client = spawn_client(&args(&[
        "--transport",
        "tcp",
        "--connect",
        &addr.to_string(),
        "--verify",
        "11",
        "--quiet",
        "--json",
        "--metrics",
        &c_metrics.to_string(),
    ]));
    std::thread::sleep(Duration::from_millis(800));
    let (s1, c1) = (scrape(s_metrics), scrape(c_metrics));
    std::thread::sleep(Duration::from_millis(700));
    let (s2, c2) = (scrape(s_metrics), scrape(c_metrics));

    let sm = |m: &HashMap<String, u64>, k: &str| {
        *m.get(&format!("tickwire_server_{k}")).unwrap_or_else(|| panic!("no {k}: {m:?}"))
    };
    let cm = |m: &HashMap<String, u64>, k: &str| {
        *m.get(&format!("tickwire_client_{k}")).unwrap_or_else(|| panic!("no {k}: {m:?}"))
    };
    // Mid-run, and moving: 0.7 s at 50k msgs/s is ~35k messages.
    assert!(sm(&s1, "messages_total") > 0);
    assert!(sm(&s2, "messages_total") > sm(&s1, "messages_total") + 10_000, "{s1:?} {s2:?}");
    assert_eq!(sm(&s2, "clients"), 1, "one tcp client connected");
    assert!(cm(&c2, "messages_delivered_total") > cm(&c1, "messages_delivered_total") + 10_000);
    // The client cannot have more than the server published (scraped later).
    assert!(cm(&c1, "messages_delivered_total") <= sm(&s2, "messages_total"));
    assert_eq!(cm(&c2, "next_seq"), cm(&c2, "messages_delivered_total") + 1);
    assert_eq!(cm(&c2, "unrecovered_total"), 0);
    let p50 = cm(&c2, "tick_to_cache_ns{quantile=\"0.5\"}");
    let p99 = cm(&c2, "tick_to_cache_ns{quantile=\"0.99\"}");
    assert!(p50 > 0 && p50 <= p99, "percentiles in order: {p50} {p99}");
    assert!(cm(&c2, "tick_to_cache_samples_total") > 0);
    assert!(sm(&s2, "cpu_user_ns_total") + sm(&s2, "cpu_sys_ns_total") > 0);

    let s = finish(server, "server", Duration::from_secs(20));
    let c = finish(client, "client", Duration::from_secs(20));
    assert_clean(&c, "client");
    assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "the whole stream, verified");
}
