//! Shared helpers for the end-to-end tests: run the real `server` and `client`
//! binaries, parse their `--json` summaries, compare their final books.

#![allow(dead_code)]

pub mod netns;
pub mod spoof;

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `client` binary cargo built for this test run.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_client"))
}

/// The `server` binary, built into the same target directory.
pub fn server_bin() -> PathBuf {
    let p = client_bin().with_file_name("server");
    assert!(
        p.exists(),
        "{} is missing: build it first (scripts/test.sh runs `cargo build --profile fast-test --workspace --bins`)",
        p.display()
    );
    p
}

/// A scratch directory unique to this test.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tickwire-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Start the server with `args` (stdout piped for `--json`); it writes its
/// bound address to a ready file, which this waits for and returns. Pass
/// `--listen 127.0.0.1:0` to let the kernel pick a free port (no races).
pub fn spawn_server(args: &[String]) -> (Child, SocketAddr) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let ready = std::env::temp_dir().join(format!(
        "tickwire-ready-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&ready);
    let mut child = Command::new(server_bin())
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting the server");
    let addr = wait_ready(&mut child, &ready).parse().expect("ready file holds an address");
    let _ = std::fs::remove_file(&ready);
    (child, addr)
}

/// Wait (at most 20 s) until the server `child` has written its `--ready-file`
/// at `ready`, and return the address it wrote there. Fails the test if the
/// server exits first.
pub fn wait_ready(child: &mut Child, ready: &Path) -> String {
    let start = Instant::now();
    loop {
        // The server writes a temporary file and renames it: never half-written.
        if let Ok(text) = std::fs::read_to_string(ready) {
            return text.trim().to_string();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the server exited before listening: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the server never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Start a client with `args`.
pub fn spawn_client(args: &[String]) -> Child {
    Command::new(client_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting a client")
}

/// Wait for a child with a deadline (killing it and failing if it is exceeded),
/// check it exited 0 and parse the JSON summary it printed.
pub fn finish(mut child: Child, what: &str, deadline: Duration) -> Value {
    let start = Instant::now();
    loop {
        match child.try_wait().unwrap() {
            Some(status) => {
                let mut out = String::new();
                child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
                assert!(status.success(), "{what} exited with {status}; stdout: {out}");
                let line = out
                    .lines()
                    .rev()
                    .find(|l| l.starts_with('{'))
                    .unwrap_or_else(|| panic!("{what} printed no JSON summary; stdout: {out}"));
                return serde_json::from_str(line).unwrap();
            }
            None if start.elapsed() > deadline => {
                let _ = child.kill();
                panic!("{what} did not finish within {deadline:?}");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Read a u64 field of a summary.
pub fn u(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("summary has no integer {key}: {v}"))
}

/// Assert a client summary shows a complete, verified, loss-free stream.
pub fn assert_clean(v: &Value, what: &str) {
    assert_eq!(u(v, "unrecovered"), 0, "{what}: unrecovered gaps: {v}");
    assert_eq!(u(v, "crc_errors"), 0, "{what}: CRC errors: {v}");
    let verify = &v["verify"];
    assert_eq!(
        verify["mismatches"].as_u64(),
        Some(0),
        "{what}: messages differ from the seed's stream: {v}"
    );
    assert_eq!(verify["skipped"].as_u64(), Some(0), "{what}: sequences silently skipped: {v}");
    assert_eq!(verify["snapshot_mismatches"].as_u64(), Some(0), "{what}: wrong snapshot: {v}");
}

/// Assert two book files (server's and a client's `--book-out`) are identical.
pub fn assert_same_book(server: &Path, client: &Path) {
    let a = std::fs::read_to_string(server).unwrap();
    let b = std::fs::read_to_string(client).unwrap();
    assert!(!a.is_empty(), "server book {} is empty", server.display());
    if a != b {
        let diff = a.lines().zip(b.lines()).find(|(x, y)| x != y);
        panic!(
            "client book {} differs from the server's {} ({} vs {} lines); first difference: {diff:?}",
            client.display(),
            server.display(),
            b.lines().count(),
            a.lines().count()
        );
    }
}

/// Convert `&str` arguments.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A free UDP port on loopback (for a server's recovery service), so clients
/// can be started, and join the group, before the server publishes its first
/// message. The kernel picks it; the socket is closed just before the server
/// binds it again (the ready file then confirms the server got it).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The flags of a multicast server: the recovery service at `recovery`, the
/// feed on `group` through `interface`, `rate` msgs/s of the stream of `seed`
/// for `secs` seconds, then `linger`; its JSON summary on stdout. Add what a
/// test needs after them (`--epoch`, `--book-out`...).
pub fn multicast_server_args(
    recovery: &str,
    group: &str,
    interface: &str,
    rate: u64,
    seed: u64,
    secs: u64,
    linger: &str,
) -> Vec<String> {
    args(&[
        "--transport",
        "multicast",
        "--listen",
        recovery,
        "--group",
        group,
        "--interface",
        interface,
        "--rate",
        &rate.to_string(),
        "--seed",
        &seed.to_string(),
        "--duration",
        &format!("{secs}s"),
        "--linger",
        linger,
        "--stats-interval",
        "0",
        "--json",
    ])
}

/// The flags of a multicast client that checks what it delivers against the
/// stream of `seed`: recovery requests to `recovery`, the feed on `group`
/// (joined through `interface`, or where the route says when `None`); only
/// its JSON summary on stdout. Add what a test needs after them.
pub fn multicast_client_args(
    recovery: &str,
    group: &str,
    interface: Option<&str>,
    seed: u64,
) -> Vec<String> {
    let mut a = args(&["--transport", "multicast", "--connect", recovery, "--group", group]);
    if let Some(i) = interface {
        a.extend(args(&["--interface", i]));
    }
    a.extend(args(&["--verify", &seed.to_string(), "--quiet", "--json"]));
    a
}
