//! Multicast across a real bridged network with kernel packet drops (root):
//! the server in `<p>srv`, two subscribers in `<p>cli1` / `<p>cli2`, loss
//! applied on the bridge in `<p>mid` by `xdp-setup/netem.sh` (netem, or the
//! nftables/iptables fallback on kernels without `sch_netem`). The drops hit
//! the feed, the NACKs and the unicast answers alike. Prints `SKIPPED:` when
//! not root.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use support::netns::{SERVER_IP, Topology, client_ip};
use support::*;

/// Recovery port of the server (inside private namespaces: no clash with other tests).
const RECOVERY_PORT: u16 = 9100;
/// Feed group (namespaces are private, so a fixed group is fine).
const GROUP: &str = "239.255.0.1:30001";
/// Seconds of generation per loss level (two levels keep the test under a minute).
const SECS: u64 = 3;
/// Feed rate.
const RATE: u64 = 200_000;

/// Start the server inside the server namespace; wait for its ready file.
fn start_server(topo: &Topology, seed: u64, book: &Path, ready: &Path) -> Child {
    let _ = std::fs::remove_file(ready);
    let listen = format!("{SERVER_IP}:{RECOVERY_PORT}");
    let mut child = topo
        .command_in(&topo.server_ns(), &server_bin())
        .args(multicast_server_args(&listen, GROUP, SERVER_IP, RATE, seed, SECS, "3s"))
        .args(["--book-out", book.to_str().unwrap(), "--ready-file", ready.to_str().unwrap()])
        .spawn()
        .expect("starting the server in its namespace");
    wait_ready(&mut child, ready);
    child
}

/// One session at `pct`% bridge loss with two subscribers; returns (dropped, NACKs).
fn session(topo: &Topology, pct: f64, seed: u64) -> (u64, u64) {
    let dir = scratch(&format!("netns-mc-{pct}"));
    let line = topo.set_loss(pct);
    assert!(line.contains("mechanism="), "netem.sh did not say how it made the loss: {line}");
    let dropped_before = topo.dropped().unwrap_or(0);
    let recovery = format!("{SERVER_IP}:{RECOVERY_PORT}");
    let clients: Vec<_> = (1..=2)
        .map(|n| {
            let book = dir.join(format!("cli{n}.book"));
            let child = topo
                .command_in(&topo.client_ns(n), &client_bin())
                .args(multicast_client_args(&recovery, GROUP, Some(&client_ip(n)), seed))
                .args(["--seed", &n.to_string(), "--book-out", book.to_str().unwrap()])
                .spawn()
                .expect("starting a client in its namespace");
            (child, book)
        })
        .collect();
    // Let the subscribers join before the first packet.
    std::thread::sleep(Duration::from_millis(300));
    let server_book = dir.join("server.book");
    let server = start_server(topo, seed, &server_book, &dir.join("ready"));
    let s = finish(server, "server", Duration::from_secs(60));
    assert!(u(&s, "messages") >= RATE * SECS * 9 / 10, "the server published too little: {s}");
    let mut nacks = 0;
    for (n, (child, book)) in clients.into_iter().enumerate() {
        let what = format!("client {} at {pct}% bridge loss", n + 1);
        let c = finish(child, &what, Duration::from_secs(60));
        eprintln!("{what}: {c}");
        assert_clean(&c, &what);
        assert_eq!(c["verify"]["ok"].as_bool(), Some(true), "{what}: {c}");
        assert_eq!(u(&c, "last_seq"), u(&s, "messages"), "{what}: {c}");
        // Every message delivered, unless a snapshot covered some (legitimate:
        // its state includes them; verify's skipped == 0 proves no silent hole).
        if u(&c, "snapshots") == 0 {
            assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "{what}: {c}");
        }
        assert_same_book(&server_book, &book);
        nacks += u(&c, "nacks_sent");
    }
    let dropped = topo.dropped().unwrap_or(0).saturating_sub(dropped_before);
    eprintln!(
        "{pct}% bridge loss: the bridge dropped {dropped} packets; the clients sent {nacks} NACKs; server: {s}"
    );
    (dropped, nacks)
}

/// Must-show (issue 3, real network): two subscribers behind a lossy bridge
/// (1%, then 5%) recover every kernel drop and end with the server's book.
#[test]
fn two_subscribers_recover_kernel_drops_on_the_bridge() {
    let Some(topo) = Topology::up("two_subscribers_recover_kernel_drops_on_the_bridge", "m", 2)
    else {
        return;
    };
    if !topo.loss_or_skip("two_subscribers_recover_kernel_drops_on_the_bridge") {
        return;
    }
    for (pct, seed) in [(1.0, 41), (5.0, 42)] {
        let (dropped, nacks) = session(&topo, pct, seed);
        assert!(dropped > 0, "the bridge dropped nothing at {pct}%: the test proved nothing");
        assert!(nacks > 0, "no NACKs at {pct}%: the drops were not on the feed");
    }
}
