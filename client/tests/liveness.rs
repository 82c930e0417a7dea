//! A stalled feed is reported: a client that hears nothing from the server
//! for a second says so on stderr, and says so again when the feed returns.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

#[test]
fn a_silent_feed_is_reported_and_its_return_too() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let group = format!("239.255.{}.{}:{}", (port >> 8) & 0xff, port & 0xff, port);
    let recovery = format!("127.0.0.1:{port}");
    let mut client = Command::new(client_bin())
        .args(multicast_client_args(&recovery, &group, None, 5))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nothing for 1.5 s, then the server starts (the client joined first, so
    // the whole session is delivered).
    std::thread::sleep(Duration::from_millis(1500));
    let server = Command::new(server_bin())
        .args(args(&[
            "--transport",
            "multicast",
            "--listen",
            &recovery,
            "--group",
            &group,
            "--rate",
            "20000",
            "--messages",
            "10000",
            "--seed",
            "5",
            "--stats-interval",
            "0",
            "--linger",
            "300ms",
        ]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut err = String::new();
    client.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let c = finish(client, "client", Duration::from_secs(20));
    let mut server = server;
    server.wait().unwrap();
    let warned = err.find("no packet from the feed for").unwrap_or_else(|| panic!("{err}"));
    let back = err.find("the feed is back").unwrap_or_else(|| panic!("{err}"));
    assert!(warned < back, "warned, then resumed: {err}");
    assert_eq!(err.matches("no packet from the feed").count(), 1, "warned once: {err}");
    assert_clean(&c, "client");
    assert_eq!(u(&c, "messages_delivered"), 10_000);
}
