//! Capture, dissect, replay (the binaries on loopback, tshark with
//! tools/wireshark/tickwire.lua):
//!
//! * every § 11 and § 12.1 vector of docs/PROTOCOL.md, recorded into a
//!   pcapng by the recorder, is decoded by the dissector with every field at
//!   its documented value;
//! * the Subscriber API records a TCP feed, rotating, and the first file
//!   replays a prefix of the seed's stream;
//! * a 5% lossy multicast session (`server --drop-rate 0.05`, so the
//!   capture itself holds the gaps and the retransmissions) recorded with
//!   `client --record`: the dissector flags its gaps and retransmissions,
//!   and `server --replay --speed max` of it to a fresh `client --verify`
//!   delivers exactly the seed's stream, every message.
//!
//! The tshark parts skip (loudly) where tshark is not installed
//! (xdp-setup/install-deps.sh installs it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use tickwire_transports::Line;
use tickwire_transports::pcap::{RecordConfig, Recorder};

fn dissector() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/wireshark/tickwire.lua")
}

/// Whether tshark runs here; says why not through the skip log.
fn have_tshark(test: &str) -> bool {
    match Command::new("tshark").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            tickwire_transports::kernel::skip(
                test,
                "tshark is not installed (apt-get install tshark; xdp-setup/install-deps.sh does)",
            );
            false
        }
    }
}

/// `tshark -V` of a capture with the dissector, split into frames.
fn tshark_frames(cap: &Path, extra: &[&str]) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-X")
        .arg(format!("lua_script:{}", dissector().display()))
        .arg("-r")
        .arg(cap)
        .args(extra)
        .output()
        .expect("running tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    assert!(!stderr.contains("Lua: Error"), "the dissector failed to load: {stderr}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut frames = Vec::new();
    for line in text.lines() {
        if line.starts_with("Frame ") {
            frames.push(String::new());
        }
        if let Some(f) = frames.last_mut() {
            f.push_str(line.trim());
            f.push('\n');
        }
    }
    frames
}

/// `tshark -T fields -e field` of a capture with the dissector: one line per
/// frame, the field's values in the frame joined by `,` (empty if none).
fn tshark_field(cap: &Path, field: &str) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-X")
        .arg(format!("lua_script:{}", dissector().display()))
        .arg("-r")
        .arg(cap)
        .args(["-T", "fields", "-E", "occurrence=a", "-E", "aggregator=,", "-e", field])
        .output()
        .expect("running tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    assert!(!stderr.contains("Lua: Error"), "the dissector failed to load: {stderr}");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// The `symbol_seq` of every Trade a vector's `fields` block lists, in
/// order (§ 4.2: bytes 20..24, 0 = not carried); every Trade must list it.
fn documented_trade_symbol_seqs(v: &Vector) -> Vec<String> {
    v.fields
        .iter()
        .filter(|(k, val)| k == "message" && val.starts_with("Trade "))
        .map(|(_, val)| {
            val.split_whitespace()
                .find_map(|w| w.strip_prefix("symbol_seq="))
                .unwrap_or_else(|| panic!("{}: a Trade without symbol_seq: {val}", v.name))
                .to_string()
        })
        .collect()
}

/// One vector of docs/PROTOCOL.md: its name, `fields` lines and bytes.
struct Vector {
    name: String,
    fields: Vec<(String, String)>,
    bytes: Vec<u8>,
}

fn hex_bytes(block: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for line in block.lines() {
        let data = line.split('#').next().unwrap_or("");
        for h in data.split_whitespace() {
            out.push(u8::from_str_radix(h, 16).expect("hex byte"));
        }
    }
    out
}

/// The text of the fenced block of `tag` after `from` in `doc`, and where it ends.
fn block_after(doc: &str, from: usize, tag: &str) -> Option<(String, usize)> {
    let open = format!("```{tag}\n");
    let start = doc[from..].find(&open)? + from + open.len();
    let end = doc[start..].find("```")? + start;
    Some((doc[start..end].to_string(), end))
}

fn vectors() -> Vec<Vector> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/PROTOCOL.md"))
            .unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = doc[at..].find("#### Vector: `") {
        let name_at = at + i + "#### Vector: `".len();
        let name = doc[name_at..].split('`').next().unwrap().to_string();
        let (fields, end) = block_after(&doc, name_at, "fields").expect("fields block");
        let (hex, end) = block_after(&doc, end, "hex").expect("hex block");
        let fields = fields
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        out.push(Vector { name, fields, bytes: hex_bytes(&hex) });
        at = end;
    }
    // § 12.1: the sealed packets (their fields are those of the § 11 vector).
    while let Some(i) = doc[at..].find("#### MAC vector: `") {
        let name_at = at + i + "#### MAC vector: `".len();
        let name = doc[name_at..].split('`').next().unwrap().to_string();
        let (hex, end) = block_after(&doc, name_at, "mac-hex").expect("mac-hex block");
        out.push(Vector { name, fields: Vec::new(), bytes: hex_bytes(&hex) });
        at = end;
    }
    out
}

/// What the dissector's tree shows for `key = value` of a fields block: the
/// `name: value` lines it must hold.
fn expected_lines(key: &str, value: &str) -> Vec<String> {
    let line = |k: &str, v: &str| {
        let v = match v {
            "true" => "True",
            "false" => "False",
            v => v,
        };
        format!("{k}: {v}")
    };
    match key {
        "message" => {
            let mut words = value.split_whitespace();
            let ty = words.next().unwrap();
            let mut out = Vec::new();
            if ty != "Unknown" {
                out.push(format!("type: {ty}"));
            }
            for w in words {
                let (k, v) = w.split_once('=').unwrap();
                if ty == "Unknown" && k == "type" {
                    out.push(format!("type: Unknown ({v})"));
                } else {
                    out.push(line(k, v));
                }
            }
            out
        }
        "timing" | "snapshot" | "record" | "login_ack" | "nack_reject" | "status" => value
            .split_whitespace()
            .map(|w| {
                let (k, v) = w.split_once('=').unwrap();
                line(k, v)
            })
            .collect(),
        "padding" => vec![line("[padding", &format!("{value}]"))],
        _ => vec![line(key, value)],
    }
}

/// Whether `frame` has a line that starts with `want` (whole value: the
/// next character ends it).
fn shows(frame: &str, want: &str) -> bool {
    let want = want.to_lowercase();
    frame.lines().any(|l| {
        let l = l.to_lowercase();
        l.strip_prefix(&want)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(' ') || rest.starts_with(']'))
    })
}

fn record(path: &Path, packets: &[&[u8]]) {
    let mut rec = Recorder::start(RecordConfig {
        path: path.to_path_buf(),
        rotate_bytes: None,
        source: "127.0.0.1:9100".parse().unwrap(),
        dest_a: "239.255.0.1:30001".parse().unwrap(),
        dest_b: "239.255.0.1:30001".parse().unwrap(),
    })
    .unwrap();
    for (i, p) in packets.iter().enumerate() {
        rec.record(Line::A, 1_764_000_000_000_000_000 + i as u64 * 1000, p);
    }
    let st = rec.finish().unwrap();
    assert_eq!((st.recorded, st.dropped), (packets.len() as u64, 0));
}

#[test]
fn the_dissector_decodes_every_field_of_every_protocol_vector() {
    let test = "the_dissector_decodes_every_field_of_every_protocol_vector";
    if !have_tshark(test) {
        return;
    }
    let dir = scratch("capture-vectors");
    let vs = vectors();
    assert!(vs.len() >= 20, "only {} vectors found in PROTOCOL.md", vs.len());
    let mut packets: Vec<Vec<u8>> = vs.iter().map(|v| v.bytes.clone()).collect();
    // A packet with a broken CRC, and one of a kind this version does not know.
    let mut bad = vs[0].bytes.clone();
    bad[36] ^= 0xff;
    packets.push(bad);
    let mut unknown = vs.iter().find(|v| v.name == "heartbeat").unwrap().bytes.clone();
    unknown[3] = 15;
    packets.push(unknown);
    let cap = dir.join("vectors.pcapng");
    record(&cap, &packets.iter().map(Vec::as_slice).collect::<Vec<_>>());
    let frames = tshark_frames(&cap, &["-V"]);
    assert_eq!(frames.len(), packets.len());
    let mut checked = 0;
    for (v, frame) in vs.iter().zip(&frames) {
        assert!(frame.contains("Tickwire market data"), "{}: not decoded:\n{frame}", v.name);
        assert!(shows(frame, "[crc_status: good]"), "{}: CRC not good:\n{frame}", v.name);
        for (k, val) in &v.fields {
            for want in expected_lines(k, val) {
                assert!(shows(frame, &want), "{}: no `{want}` in:\n{frame}", v.name);
                checked += 1;
            }
        }
        if v.name.ends_with("_mac") {
            assert!(
                shows(frame, "MAC: True") || frame.contains("= MAC: True"),
                "{}:\n{frame}",
                v.name
            );
            assert!(shows(frame, "mac:"), "{}: no MAC tag:\n{frame}", v.name);
        }
    }
    // Each Trade's bytes 20..24 as tickwire.trade.symbol_seq, in every frame
    // (a § 12.1 vector has the Trades of the § 11 vector it seals), with its
    // documented value; 0 is shown as "not carried".
    let trade_seqs = tshark_field(&cap, "tickwire.trade.symbol_seq");
    assert_eq!(trade_seqs.len(), packets.len(), "one line per frame");
    let mut carried = 0;
    let mut not_carried = 0;
    for (v, (got, frame)) in vs.iter().zip(trade_seqs.iter().zip(&frames)) {
        let doc = match v.name.strip_suffix("_mac") {
            Some(plain) => vs.iter().find(|p| p.name == plain).expect("the sealed vector"),
            None => v,
        };
        let want = documented_trade_symbol_seqs(doc);
        assert_eq!(got, &want.join(","), "{}: tickwire.trade.symbol_seq", v.name);
        for w in &want {
            if w == "0" {
                assert!(shows(frame, "symbol_seq: 0 (not carried)"), "{}:\n{frame}", v.name);
                not_carried += 1;
            } else {
                carried += 1;
            }
        }
    }
    assert!(carried >= 4 && not_carried >= 1, "{carried} carried, {not_carried} not carried");
    let bad_frame = &frames[vs.len()];
    assert!(shows(bad_frame, "[crc_status: bad]"), "{bad_frame}");
    assert!(bad_frame.contains("Bad CRC32C"), "no expert info for the bad CRC:\n{bad_frame}");
    let unknown_frame = &frames[vs.len() + 1];
    assert!(shows(unknown_frame, "kind: Unknown (15)"), "{unknown_frame}");
    assert!(unknown_frame.contains("Unknown packet kind 15"), "{unknown_frame}");
    eprintln!(
        "{checked} field values of {} vectors checked, {} trade symbol_seq values",
        vs.len(),
        carried + not_carried
    );
}

/// A free multicast group for this process.
fn group(n: u32) -> String {
    let pid = std::process::id();
    format!("239.255.{}.{}:{}", 10 + pid % 200, 200 + n, 40_000 + (pid % 1000) * 8 + n)
}

fn wait_file(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run a verifying multicast client (recording to `record` if given)
/// against a server started with `server_args`; their JSON summaries.
fn session(
    dir: &Path,
    name: &str,
    seed: u64,
    record: Option<&Path>,
    server_args: &[String],
    group: &str,
) -> (serde_json::Value, serde_json::Value) {
    let recovery = format!("127.0.0.1:{}", free_udp_port());
    let ready = dir.join(format!("{name}.ready"));
    let mut a = multicast_client_args(&recovery, group, Some("127.0.0.1"), seed);
    a.extend(args(&["--ready-file", ready.to_str().unwrap()]));
    if let Some(r) = record {
        a.extend(args(&["--record", r.to_str().unwrap()]));
    }
    let client = spawn_client(&a);
    wait_file(&ready);
    let mut s = args(&[
        "--transport",
        "multicast",
        "--listen",
        &recovery,
        "--group",
        group,
        "--interface",
        "127.0.0.1",
        "--linger",
        "2s",
        "--stats-interval",
        "0",
        "--json",
    ]);
    s.extend(server_args.iter().cloned());
    let (server, _) = spawn_server(&s);
    let sv = finish(server, &format!("{name} server"), Duration::from_secs(90));
    let cv = finish(client, &format!("{name} client"), Duration::from_secs(90));
    (sv, cv)
}

#[test]
fn a_lossy_recorded_session_is_dissected_and_replays_verified() {
    let test = "a_lossy_recorded_session_is_dissected_and_replays_verified";
    let dir = scratch("capture-lossy");
    let seed = 4242;
    let cap = dir.join("lossy.pcapng");
    // 1. Record: the server drops 5% before sending, so the capture (what the
    //    socket received) holds gaps, NACK answers and the end of session.
    let (s1, c1) = session(
        &dir,
        "recorded",
        seed,
        Some(&cap),
        &args(&[
            "--rate",
            "20000",
            "--seed",
            &seed.to_string(),
            "--duration",
            "2s",
            "--drop-rate",
            "0.05",
        ]),
        &group(0),
    );
    assert_clean(&c1, "recording client");
    assert_eq!(c1["verify"]["ok"].as_bool(), Some(true), "{c1}");
    let sent = u(&s1, "messages");
    assert_eq!(u(&c1, "last_seq"), sent, "{c1}");
    assert!(u(&c1, "gaps_detected") > 0 && u(&c1, "nacks_sent") > 0, "no loss to record: {c1}");
    let rec = &c1["record"];
    assert_eq!(rec["dropped"].as_u64(), Some(0), "{c1}");
    assert!(rec["packets"].as_u64().unwrap() > 0, "{c1}");

    // 2. Look inside: the gaps and the retransmissions are flagged.
    if have_tshark(test) {
        let frames = tshark_frames(&cap, &["-V"]);
        assert_eq!(frames.len() as u64, rec["packets"].as_u64().unwrap());
        let gaps = frames.iter().filter(|f| f.contains("Sequence gap:")).count();
        let retrans = frames.iter().filter(|f| f.contains("Retransmission of")).count();
        let bad = frames.iter().filter(|f| f.contains("[crc_status: bad]")).count();
        let decoded = frames.iter().filter(|f| f.contains("Tickwire market data")).count();
        eprintln!("dissector: {decoded} packets, {gaps} gaps flagged, {retrans} retransmissions");
        assert_eq!(decoded, frames.len(), "every recorded packet is Tickwire");
        assert!(gaps > 0 && retrans > 0, "gaps {gaps}, retransmissions {retrans}");
        assert_eq!(bad, 0);
        assert!(frames.iter().any(|f| shows(f, "kind: EndOfSession (5)")));
    }

    // 3. Replay it flat out to a fresh verifying client: the seed's stream.
    let (s2, c2) = session(
        &dir,
        "replayed",
        seed,
        None,
        &args(&["--replay", cap.to_str().unwrap(), "--speed", "max"]),
        &group(1),
    );
    let r = &s2["replay"];
    assert_eq!(r["missing"].as_u64(), Some(0), "{s2}");
    assert_eq!(r["messages"].as_u64(), Some(sent), "{s2}");
    assert!(r["duplicates"].as_u64().unwrap() > 0, "the NACK answers' copies are dropped: {s2}");
    assert_ne!(s2["epoch"], s1["epoch"], "a replay is a new session");
    assert_eq!(u(&s2, "messages"), sent);
    assert_clean(&c2, "replay client");
    assert_eq!(c2["verify"]["ok"].as_bool(), Some(true), "{c2}");
    assert_eq!(c2["verify"]["checked"].as_u64(), Some(sent), "{c2}");
    assert_eq!(u(&c2, "last_seq"), sent, "{c2}");
    assert_eq!(c2["end_of_session"].as_bool(), Some(true), "{c2}");
}

#[test]
fn replay_refuses_what_is_not_a_capture_and_counts_foreign_packets() {
    let dir = scratch("capture-bad");
    let junk = dir.join("junk.pcapng");
    std::fs::write(&junk, b"this is no pcapng").unwrap();
    let out = Command::new(server_bin())
        .args(["--transport", "tcp", "--listen", "127.0.0.1:0", "--replay"])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a pcapng capture"), "{err}");
    // A capture of datagrams that are not Tickwire packets.
    let foreign = dir.join("foreign.pcapng");
    record(&foreign, &[b"hello world, not tickwire at all, but quite long enough".as_slice()]);
    let out = Command::new(server_bin())
        .args(["--transport", "tcp", "--listen", "127.0.0.1:0", "--replay"])
        .arg(&foreign)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no Tickwire messages") && err.contains("1 not Tickwire"), "{err}");
}

/// The Subscriber API records too (here a TCP feed: each packet one frame),
/// and the capture replays to exactly the seed's stream.
#[test]
fn the_subscriber_api_records_a_tcp_feed_that_replays_the_seed_stream() {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use tickwire_core::gbm::{GbmConfig, Generator};
    use tickwire_server::MessageSource;
    use tickwire_server::replay::{Replay, Speed};

    let dir = scratch("capture-api");
    let path = dir.join("tcp.pcapng");
    let gbm = GbmConfig { seed: 77, symbols: 50, ..GbmConfig::default() };
    let messages = 20_000;
    let mut cfg = tickwire_server::ServerConfig {
        gbm: gbm.clone(),
        rate: 0,
        duration: None,
        max_messages: Some(messages),
        wait_clients: 1,
        stats_interval: None,
        ..tickwire_server::ServerConfig::default()
    };
    cfg.transport.addr = "127.0.0.1:0".parse().unwrap();
    let server = tickwire_server::spawn(cfg, Arc::new(AtomicBool::new(false))).unwrap();
    let mut sub = tickwire_client::Subscriber::builder()
        .tcp(server.local_addr())
        .universe(50)
        .verify(Some(77))
        .record(&path, Some(256 * 1024))
        .build()
        .unwrap();
    sub.run(&AtomicBool::new(false), |_| {}).unwrap();
    sub.finish_recording().unwrap();
    let s = sub.summary();
    server.join().unwrap();
    assert!(s.verify.as_ref().is_some_and(|v| v.ok), "{s:?}");
    let rec = s.record.as_ref().unwrap();
    assert_eq!(rec.dropped, 0);
    assert!(rec.files > 1, "rotation at 256 KiB: {rec:?}");
    // Every packet is in one of the rotated files.
    let mut total = 0;
    for i in 0..rec.files {
        let p = tickwire_transports::pcap::rotated_path(&path, i);
        total += tickwire_transports::pcap::CaptureReader::open(&p).unwrap().count() as u64;
    }
    assert_eq!(total, rec.packets);
    // The first file alone: a prefix of the seed's stream, in order.
    let mut replay = Replay::open(&path, Speed::Max, false, 50).unwrap();
    let held = replay.report().messages;
    assert_eq!(replay.report().first_seq, 1);
    assert_eq!(replay.report().missing, 0);
    assert!(held > 0 && held < messages);
    let mut generator = Generator::new(gbm).unwrap();
    for _ in 0..held {
        assert_eq!(replay.next_message(), Some(generator.next_message()));
    }
    assert_eq!(replay.next_message(), None);
}
