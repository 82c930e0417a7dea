//! Multicast through a real multicast router (root): `xdp-setup/routed.sh`
//! puts the server in subnet A (`<p>srv`, 10.78.1.1), smcrouted with static
//! (S,G) routes in `<p>rtr`, and the clients in subnet B (`<p>cliN`,
//! 10.78.2.(10+N)) behind a snooping switch. Every client checks each
//! message against the stream regenerated from the seed (`--verify`).
//!
//! * TTL 2 crosses the router; TTL 1 does not, and the client's liveness
//!   warning says why (the router's own counters show the feed arrived on
//!   its subnet-A side and left nothing on the subnet-B side).
//! * Loss on the router's interfaces (netem.sh, both sides): NACKs and
//!   answers cross the router, so the recovery service in subnet A is
//!   reachable from subnet B, and nothing is left unrecovered.
//! * A late joiner in subnet B comes up through a snapshot from subnet A.
//!
//! Each test makes its own topology (prefix from a per-test tag and the pid)
//! and removes it on drop. Without root or smcroute each prints
//! `SKIPPED: <test>: <reason>` and returns.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::*;
use tickwire_transports::kernel::{self, Kernel};

/// The server's address (subnet A) and its recovery service.
const SERVER_IP: &str = "10.78.1.1";
const RECOVERY: &str = "10.78.1.1:9100";
/// Feed group (the namespaces are private: a fixed group is fine; routed.sh
/// routes it by default).
const GROUP: &str = "239.255.0.1:30001";
/// Feed rate: enough packets for loss to matter, gentle on 2 shared cores.
const RATE: u64 = 100_000;

/// Client `n`'s address in subnet B (1-based).
fn client_ip(n: usize) -> String {
    format!("10.78.2.{}", 10 + n)
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xdp-setup").join(name)
}

/// Why the routed tests cannot run on `k` (and this machine), or `None`:
/// root and namespaces, multicast routing in the kernel, smcroute.
fn routed_unavailable(k: &Kernel) -> Option<String> {
    let need = [
        kernel::netns(),
        k.multicast_routing(),
        kernel::command("smcrouted", "-v", "smcroute (smcrouted)"),
        kernel::command("smcroutectl", "-v", "smcroute (smcroutectl)"),
    ];
    need.into_iter().find_map(|r| r.err()).map(|m| m.to_string())
}

/// The skip decision follows what the kernel offers: with and without
/// `/proc/net/ip_mr_vif` (a fake `/proc`), the same machine otherwise.
#[test]
fn the_routed_skip_follows_the_kernels_multicast_routing() {
    if kernel::netns().is_err() || kernel::command("smcrouted", "-v", "smcroute").is_err() {
        kernel::skip(
            "the_routed_skip_follows_the_kernels_multicast_routing",
            "needs root and smcroute, so that only the kernel's answer changes",
        );
        return;
    }
    let dir = scratch("routed-skip");
    let without = Kernel::at(dir.join("proc"));
    std::fs::create_dir_all(dir.join("proc/net")).unwrap();
    let why = routed_unavailable(&without).expect("no ip_mr_vif: the routed tests must skip");
    assert!(
        why.starts_with("this kernel has no multicast routing (CONFIG_IP_MROUTE"),
        "the reason names the kernel option: {why}"
    );
    std::fs::write(
        dir.join("proc/net/ip_mr_vif"),
        "Interface BytesIn PktsIn BytesOut PktsOut Flags Local Remote\n",
    )
    .unwrap();
    let with = Kernel::at(dir.join("proc"));
    assert_eq!(routed_unavailable(&with), None, "with ip_mr_vif nothing else is missing here");
}

/// On a kernel without multicast routing, `routed.sh up` says so with its
/// own exit code (4) before it makes anything.
#[test]
fn routed_sh_says_why_before_it_builds_anything() {
    const TEST: &str = "routed_sh_says_why_before_it_builds_anything";
    if let Err(m) = kernel::netns() {
        kernel::skip(TEST, m);
        return;
    }
    if Kernel::host().multicast_routing().is_ok() {
        kernel::skip(
            TEST,
            "this kernel has multicast routing, so routed.sh goes on to build \
             (the routed tests run instead)",
        );
        return;
    }
    let prefix = format!("rq{}", std::process::id() % 100_000);
    let out = Command::new(script("routed.sh")).args(["up", &prefix, "1"]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "routed.sh up: {said}");
    assert!(said.contains("this kernel has no multicast routing (CONFIG_IP_MROUTE"), "{said}");
    let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains(&prefix), "routed.sh made namespaces before it checked: {list}");
}

/// One test's routed topology, removed on drop.
struct Routed {
    prefix: String,
    clients: usize,
}

impl Routed {
    /// `routed.sh up`, or `None` after a `SKIPPED:` line when this machine
    /// cannot: no root, no multicast routing in the kernel, no smcroute.
    fn up(test: &str, tag: &str, clients: usize) -> Option<Routed> {
        if let Some(why) = routed_unavailable(&Kernel::host()) {
            kernel::skip(test, why);
            return None;
        }
        let prefix = format!("r{tag}{}", std::process::id() % 100_000);
        let r = Routed { prefix, clients };
        // The prefix carries this process's pid: anything already there under
        // it is left over from a dead process that had the same pid.
        let _ = Command::new(script("routed.sh"))
            .args(["down", &r.prefix, &clients.to_string()])
            .output();
        let out = Command::new(script("routed.sh"))
            .args(["up", &r.prefix, &clients.to_string()])
            .output()
            .expect("running routed.sh");
        // 3: smcroute missing, 4: no multicast routing (checked above too;
        // the script checks again, before it makes anything).
        if matches!(out.status.code(), Some(3) | Some(4)) {
            let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
            kernel::skip(test, why.trim_start_matches("routed.sh: "));
            return None;
        }
        assert!(
            out.status.success(),
            "routed.sh up {} failed: {}{}",
            r.prefix,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(r)
    }

    fn ns(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// A command running `program` in namespace `<p><what>`, stdout piped.
    fn command(&self, what: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(what)]).arg(program);
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        c
    }

    /// True when loss can be applied on the router here (else `SKIPPED:`).
    fn loss_or_skip(&self, test: &str) -> bool {
        ["a0", "b0"].iter().all(|dev| support::netns::loss_or_skip(test, &self.ns("rtr"), dev))
    }

    /// `percent`% loss on both of the router's interfaces; the mechanisms netem.sh used.
    fn set_loss(&self, percent: f64) -> String {
        let mut said = String::new();
        for dev in ["a0", "b0"] {
            let out = Command::new(script("netem.sh"))
                .args(["-n", &self.ns("rtr"), dev, &percent.to_string()])
                .output()
                .expect("running netem.sh");
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(out.status.success(), "netem.sh {dev}: {text}");
            eprint!("{text}");
            said += &text;
        }
        said
    }

    /// Packets the router's loss rules dropped so far, both interfaces.
    fn dropped(&self) -> u64 {
        ["a0", "b0"]
            .iter()
            .filter_map(|dev| {
                let out = Command::new(script("netem.sh"))
                    .args(["-n", &self.ns("rtr"), dev, "status"])
                    .output()
                    .ok()?;
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("dropped="))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }

    /// The kernel's multicast-forwarding counters of a router interface
    /// (`/proc/net/ip_mr_vif` in the router namespace): (packets in, packets out).
    fn vif_packets(&self, dev: &str) -> (u64, u64) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns("rtr"), "cat", "/proc/net/ip_mr_vif"])
            .output()
            .expect("reading ip_mr_vif");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.get(1) == Some(&dev))
            .map(|f| (f[3].parse().unwrap(), f[5].parse().unwrap()))
            .unwrap_or_else(|| panic!("no vif {dev} in the router: {text}"))
    }
}

impl Drop for Routed {
    fn drop(&mut self) {
        for dev in ["a0", "b0"] {
            let _ = Command::new(script("netem.sh"))
                .args(["-n", &self.ns("rtr"), dev, "clear"])
                .output();
        }
        let _ = Command::new(script("routed.sh"))
            .args(["down", &self.prefix, &self.clients.to_string()])
            .output();
    }
}

/// A client in subnet B: `how` selects its interface (`--interface IP` or `--ifname eth0`).
fn client(r: &Routed, n: usize, seed: u64, dir: &Path, how: &[&str], extra: &[&str]) -> Child {
    let book = dir.join(format!("cli{n}.book"));
    let mut a = multicast_client_args(RECOVERY, GROUP, None, seed);
    a.extend(args(&["--seed", &n.to_string(), "--book-out", book.to_str().unwrap()]));
    a.extend(args(how));
    a.extend(args(extra));
    r.command(&format!("cli{n}"), &client_bin()).args(a).spawn().expect("starting a client")
}

/// The server in subnet A with `ttl`, for `secs` seconds at [`RATE`]
/// (multicast unless `how` names a transport); waits until it listens.
fn server(r: &Routed, seed: u64, ttl: u32, secs: f64, dir: &Path, how: &[&str]) -> Child {
    let ready = dir.join("ready");
    let _ = std::fs::remove_file(&ready);
    let mut a =
        if how.contains(&"--transport") { vec![] } else { args(&["--transport", "multicast"]) };
    a.extend(args(&[
        "--listen",
        RECOVERY,
        "--group",
        GROUP,
        "--ttl",
        &ttl.to_string(),
        "--rate",
        &RATE.to_string(),
        "--seed",
        &seed.to_string(),
        "--duration",
        &format!("{secs}s"),
        "--linger",
        "2s",
        "--stats-interval",
        "0",
        "--json",
        "--book-out",
        dir.join("server.book").to_str().unwrap(),
        "--ready-file",
        ready.to_str().unwrap(),
    ]));
    a.extend(args(how));
    let mut child = r.command("srv", &server_bin()).args(a).spawn().expect("starting the server");
    wait_ready(&mut child, &ready);
    child
}

/// Deadline for one process: a hang detector, not a speed check.
const DEADLINE: Duration = Duration::from_secs(60);

/// A client delivered the whole verified session and ended with the server's book.
fn assert_complete(c: &Value, s: &Value, what: &str, dir: &Path, n: usize) {
    assert_clean(c, what);
    assert_eq!(c["verify"]["ok"].as_bool(), Some(true), "{what}: {c}");
    assert_eq!(u(c, "last_seq"), u(s, "messages"), "{what} did not reach the end: {c}");
    assert_eq!(c["end_of_session"].as_bool(), Some(true), "{what}: {c}");
    assert_same_book(&dir.join("server.book"), &dir.join(format!("cli{n}.book")));
}

/// Must-show: with TTL 2 the feed crosses the router and both clients in
/// subnet B deliver exactly the seed's stream, every message of it. The
/// server picks its interface by name only (`--ifname eth0`, the kernel
/// takes its address), client 1 by address, client 2 by name.
#[test]
fn ttl_2_crosses_the_router_and_both_clients_deliver_the_seeds_stream() {
    const TEST: &str = "ttl_2_crosses_the_router_and_both_clients_deliver_the_seeds_stream";
    let Some(r) = Routed::up(TEST, "t", 2) else { return };
    let dir = scratch("routed-ttl2");
    let seed = 51;
    let ip1 = client_ip(1);
    let clients = [
        client(&r, 1, seed, &dir, &["--interface", &ip1], &[]),
        client(&r, 2, seed, &dir, &["--ifname", "eth0"], &[]),
    ];
    std::thread::sleep(Duration::from_millis(300));
    let (_, out_before) = r.vif_packets("b0");
    let s = finish(server(&r, seed, 2, 2.0, &dir, &["--ifname", "eth0"]), "server", DEADLINE);
    assert!(u(&s, "messages") >= RATE * 2 * 9 / 10, "the server published too little: {s}");
    for (i, child) in clients.into_iter().enumerate() {
        let what = format!("client {} in subnet B", i + 1);
        let c = finish(child, &what, DEADLINE);
        eprintln!("{what}: {c}");
        assert_complete(&c, &s, &what, &dir, i + 1);
        assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "{what}: {c}");
        assert_eq!(c["verify"]["checked"].as_u64(), Some(u(&s, "messages")), "{what}: {c}");
    }
    let (_, out_after) = r.vif_packets("b0");
    assert!(
        out_after > out_before,
        "the router forwarded nothing to subnet B: the feed went around it?"
    );
    eprintln!("router b0 forwarded {} multicast packets", out_after - out_before);
}

/// Must-show: with TTL 1 the feed reaches the router (its subnet-A interface
/// counts it) and goes no further (nothing leaves on b0); the clients
/// deliver nothing and their liveness warning says so, and why.
#[test]
fn ttl_1_stops_at_the_router_and_the_client_says_why() {
    const TEST: &str = "ttl_1_stops_at_the_router_and_the_client_says_why";
    let Some(r) = Routed::up(TEST, "o", 2) else { return };
    let dir = scratch("routed-ttl1");
    let seed = 52;
    let mut clients: Vec<Child> = (1..=2)
        .map(|n| {
            let ip = client_ip(n);
            let mut cmd = r.command(&format!("cli{n}"), &client_bin());
            cmd.stderr(Stdio::piped())
                .args(multicast_client_args(RECOVERY, GROUP, Some(&ip), seed))
                .args(["--duration", "3s"]);
            cmd.spawn().expect("starting a client")
        })
        .collect();
    let readers: Vec<_> = clients
        .iter_mut()
        .map(|c| {
            let mut err = c.stderr.take().unwrap();
            std::thread::spawn(move || {
                let mut s = String::new();
                err.read_to_string(&mut s).ok();
                s
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (in_before, _) = r.vif_packets("a0");
    let (_, b_out_before) = r.vif_packets("b0");
    let ip = SERVER_IP;
    let s = finish(server(&r, seed, 1, 1.0, &dir, &["--interface", ip]), "server", DEADLINE);
    assert!(u(&s, "messages") > 0, "{s}");
    for (i, (child, reader)) in clients.into_iter().zip(readers).enumerate() {
        let what = format!("client {} behind the router, TTL 1", i + 1);
        let c = finish(child, &what, DEADLINE);
        let err = reader.join().unwrap();
        eprintln!("{what}: {c}\n{what} stderr: {err}");
        assert_eq!(u(&c, "messages_delivered"), 0, "{what}: the TTL 1 feed crossed: {c}");
        assert_eq!(u(&c, "last_seq"), 0, "{what}: {c}");
        assert!(err.contains("no packet from the feed for"), "{what}: no liveness warning: {err}");
        assert!(
            err.contains("is the server at 10.78.1.1:9100 up"),
            "{what}: the warning names the server: {err}"
        );
        assert!(
            err.contains("--ttl above N") && err.contains("the default 1 stops at the first"),
            "{what}: the warning says the TTL is the likely cause: {err}"
        );
        assert!(!err.contains("the feed is back"), "{what}: {err}");
    }
    let (in_after, _) = r.vif_packets("a0");
    let (_, b_out_after) = r.vif_packets("b0");
    assert!(in_after > in_before, "the feed never reached the router ({in_before} -> {in_after})");
    assert_eq!(b_out_after, b_out_before, "the router forwarded TTL 1 datagrams to subnet B");
    eprintln!(
        "TTL 1: the router took in {} feed packets on a0 and forwarded none to b0",
        in_after - in_before
    );
}

/// Must-show: at 1% and then 5% loss on both of the router's interfaces,
/// both clients recover everything by NACK (and snapshot if needed) across
/// the router: 0 unrecovered, the seed's stream exactly, the server's book.
#[test]
fn loss_on_the_router_is_recovered_across_it_at_1_and_5_percent() {
    const TEST: &str = "loss_on_the_router_is_recovered_across_it_at_1_and_5_percent";
    let Some(r) = Routed::up(TEST, "l", 2) else { return };
    for (pct, seed) in [(1.0, 53), (5.0, 54)] {
        let dir = scratch(&format!("routed-loss-{pct}"));
        if !r.loss_or_skip(TEST) {
            return;
        }
        let said = r.set_loss(pct);
        assert!(said.contains("mechanism="), "netem.sh did not say how: {said}");
        let dropped_before = r.dropped();
        let clients: Vec<_> = (1..=2)
            .map(|n| {
                let ip = client_ip(n);
                client(&r, n, seed, &dir, &["--interface", &ip], &[])
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let s =
            finish(server(&r, seed, 2, 2.0, &dir, &["--interface", SERVER_IP]), "server", DEADLINE);
        let mut nacks = 0;
        for (i, child) in clients.into_iter().enumerate() {
            let what = format!("client {} at {pct}% router loss", i + 1);
            let c = finish(child, &what, DEADLINE);
            eprintln!("{what}: {c}");
            assert_complete(&c, &s, &what, &dir, i + 1);
            assert_eq!(u(&c, "unrecovered"), 0, "{what}: {c}");
            assert!(u(&c, "gaps_detected") > 0, "{what}: no loss reached the client: {c}");
            assert!(
                u(&c, "gaps_filled_retransmit") + u(&c, "gaps_filled_snapshot") > 0,
                "{what}: nothing came back from the recovery service across the router: {c}"
            );
            if u(&c, "snapshots") == 0 {
                assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "{what}: {c}");
            }
            nacks += u(&c, "nacks_sent");
        }
        let dropped = r.dropped().saturating_sub(dropped_before);
        eprintln!(
            "{pct}% on the router: it dropped {dropped} packets; the clients sent {nacks} NACKs"
        );
        assert!(dropped > 0, "the router dropped nothing at {pct}%: the test proved nothing");
        assert!(nacks > 0 && u(&s, "nacks") > 0, "no NACK crossed the router: {s}");
    }
}

/// Must-show: a client that joins in subnet B a second into the session
/// comes up through a snapshot served from subnet A and continues from it
/// without a gap; the client there from the start gets every message.
#[test]
fn a_late_joiner_in_subnet_b_catches_up_through_a_snapshot() {
    const TEST: &str = "a_late_joiner_in_subnet_b_catches_up_through_a_snapshot";
    let Some(r) = Routed::up(TEST, "j", 2) else { return };
    let dir = scratch("routed-late");
    let seed = 55;
    let ip1 = client_ip(1);
    let early = client(&r, 1, seed, &dir, &["--interface", &ip1], &[]);
    std::thread::sleep(Duration::from_millis(300));
    let srv = server(&r, seed, 2, 2.5, &dir, &["--interface", SERVER_IP]);
    std::thread::sleep(Duration::from_secs(1));
    let ip2 = client_ip(2);
    let late = client(&r, 2, seed, &dir, &["--interface", &ip2], &[]);
    let s = finish(srv, "server", DEADLINE);
    let c = finish(early, "early client", DEADLINE);
    assert_complete(&c, &s, "early client", &dir, 1);
    assert_eq!(u(&c, "messages_delivered"), u(&s, "messages"), "early client: {c}");
    let l = finish(late, "late joiner", DEADLINE);
    eprintln!("late joiner: {l}");
    assert_complete(&l, &s, "late joiner", &dir, 2);
    assert!(u(&l, "snapshots") >= 1, "the late joiner must come up through a snapshot: {l}");
    assert!(l["verify"]["snapshot_records"].as_u64().unwrap() > 0, "{l}");
    assert!(u(&l, "messages_delivered") < u(&s, "messages"), "the late joiner saw it all: {l}");
    assert!(u(&s, "snapshots") >= 1, "the server served no snapshot: {s}");
}

/// `--ttl` reaches AF_XDP frames too (they are built by the transport, not
/// the kernel): an xdp server's feed with TTL 2 crosses the router and a
/// kernel multicast client in subnet B delivers the seed's stream; with
/// TTL 1 it stops at the router.
#[test]
fn xdp_feed_obeys_the_ttl_across_the_router() {
    const TEST: &str = "xdp_feed_obeys_the_ttl_across_the_router";
    if !cfg!(feature = "xdp") {
        kernel::skip(TEST, "built without the xdp feature (--features xdp)");
        return;
    }
    let Some(r) = Routed::up(TEST, "x", 1) else { return };
    let seed = 56;
    for ttl in [2, 1] {
        let dir = scratch(&format!("routed-xdp-{ttl}"));
        let ip = client_ip(1);
        let limit = ["--duration", "4s"];
        let c =
            client(&r, 1, seed, &dir, &["--interface", &ip], if ttl == 1 { &limit } else { &[] });
        std::thread::sleep(Duration::from_millis(300));
        let (_, out_before) = r.vif_packets("b0");
        let how = ["--transport", "xdp", "--ifname", "eth0", "--interface", SERVER_IP];
        let s = finish(server(&r, seed, ttl, 1.0, &dir, &how), "xdp server", DEADLINE);
        let what = format!("client behind the router, xdp feed with TTL {ttl}");
        let c = finish(c, &what, DEADLINE);
        eprintln!("{what}: {c}");
        let (_, out_after) = r.vif_packets("b0");
        if ttl == 2 {
            assert_complete(&c, &s, &what, &dir, 1);
            assert!(out_after > out_before, "{what}: the router forwarded nothing");
        } else {
            assert_eq!(u(&c, "messages_delivered"), 0, "{what}: the TTL 1 feed crossed: {c}");
            assert_eq!(out_after, out_before, "{what}: the router forwarded TTL 1 frames");
        }
    }
}
