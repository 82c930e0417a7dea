//! End-to-end: `compare` with a tiny profile (seconds) into a scratch
//! directory; the report has the expected tables and rows, the JSON parses
//! with the figures, the plots and a `.hgrm` per cell exist, and every cell
//! delivered every message (0 unrecovered). The namespace tests need root:
//! without it they print `SKIPPED: ...` and return. Traffic goes only to
//! loopback and to the namespaces the harness makes (named after its pid).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tickwire_bench::floor::sockperf_available;

fn compare_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_compare"))
}

/// The `server` and `client` binaries are built into the same directory.
fn bin_dir() -> PathBuf {
    let d = compare_bin().parent().unwrap().to_path_buf();
    for b in ["server", "client"] {
        assert!(
            d.join(b).exists(),
            "{} is missing: build it first (scripts/test.sh runs `cargo build --profile fast-test --workspace --all-features --bins`)",
            d.join(b).display()
        );
    }
    d
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tickwire-compare-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The tiny profile's flags (plus `extra`), reporting into `out`.
fn tiny(out: &Path, base_port: u16, extra: &[&str]) -> Vec<String> {
    let messages = if extra.contains(&"--messages") { None } else { Some("3000") };
    let mut v: Vec<String> = [
        "--out",
        &out.display().to_string(),
        "--bin-dir",
        &bin_dir().display().to_string(),
        "--base-port",
        &base_port.to_string(),
        "--rate",
        "20000",
        "--rates",
        "0",
        "--runs",
        "1",
        "--floor-secs",
        "1",
        "--drop-rates",
        "0.02",
        "--linger-ms",
        "300",
        // The Aeron peer's cells have a test of their own (below).
        "--no-aeron",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(m) = messages {
        v.extend(["--messages".to_string(), m.to_string()]);
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_compare(args: &[String]) -> (String, String) {
    let out = Command::new(compare_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("starting compare");
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "compare failed ({}):\n{se}", out.status);
    (so, se)
}

/// Every cell of the JSON: complete, no failed run, 0 unrecovered, delivered = published.
fn check_cells(json: &Value) -> Vec<String> {
    let cells = json["cells"].as_array().expect("cells");
    assert!(!cells.is_empty());
    let mut ids = Vec::new();
    for c in cells {
        let id = c["id"].as_str().unwrap().to_string();
        for r in c["runs"].as_array().unwrap() {
            assert!(r.get("error").is_none(), "{id}: a run failed: {r}");
        }
        assert_eq!(c["complete"], true, "{id}: incomplete");
        let s = &c["summary"];
        assert_eq!(s["unrecovered"]["max"].as_f64(), Some(0.0), "{id}");
        let published = s["messages_published"]["median"].as_f64().unwrap();
        assert!(published > 0.0, "{id}");
        assert_eq!(
            s["messages_delivered_min"]["min"].as_f64(),
            Some(published),
            "{id}: delivered all"
        );
        assert!(s["tick_to_cache_p50_us"]["median"].as_f64().unwrap() > 0.0, "{id}");
        assert!(s["server_cpu_user_ns_per_msg"]["median"].as_f64().is_some(), "{id}");
        assert!(s["packets_per_msg"]["median"].as_f64().unwrap() > 0.0, "{id}");
        ids.push(id);
    }
    ids
}

/// The report's files: report.md, results.json, 5 plots in SVG and PNG, a .hgrm per cell.
fn check_files(out: &Path) -> (String, Value) {
    let report = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    let json: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("results.json")).expect("results.json"),
    )
    .expect("JSON");
    for p in [
        "latency_percentiles",
        "delivered_vs_offered",
        "server_cpu_vs_clients",
        "recovery_vs_loss",
        "latency_vs_loss_by_order",
    ] {
        let svg = std::fs::read_to_string(out.join(format!("{p}.svg"))).expect("svg");
        assert!(svg.contains("<svg"), "{p}.svg");
        let png = std::fs::read(out.join(format!("{p}.png"))).expect("png");
        assert!(png.starts_with(b"\x89PNG"), "{p}.png");
        assert!(report.contains(&format!("({p}.svg)")), "report embeds {p}");
    }
    for c in json["cells"].as_array().unwrap() {
        let h = c["hgrm"].as_str().unwrap_or_else(|| panic!("{}: no .hgrm", c["id"]));
        let text = std::fs::read_to_string(out.join(h)).expect("hgrm");
        assert!(text.contains("Percentile") && text.contains("#[Max"), "{h}");
    }
    (report, json)
}

/// A loss cell in both delivery orders (`strict` is `id`, `per-symbol` is
/// `id-per-symbol`): the delivery table has a row of each, the per-symbol
/// vs strict table a row, and the JSON the delivery figures, with what
/// per-symbol order changes: fewer messages held behind the same seeded
/// losses, messages applied ahead of holes, stale periods only there.
fn check_orders(report: &str, json: &Value, id: &str, loss: &str) {
    let (t, net) = {
        let mut f = id.split('-');
        (f.next().unwrap(), f.next().unwrap())
    };
    let rows = |head: &str| report.lines().filter(|l| l.starts_with(head)).count();
    for order in ["strict", "per-symbol"] {
        let row = format!("| {loss} | {t} | {net} | {order} |");
        assert_eq!(rows(&row), 1, "no delivery row {row}\n{report}");
    }
    assert!(report.contains("## Per-symbol vs strict order"), "{report}");
    // The delivery table's two rows and the per-symbol vs strict row.
    assert_eq!(rows(&format!("| {loss} | {t} | {net} |")), 3, "{id}\n{report}");
    let cells = json["cells"].as_array().unwrap();
    let cell = |id: &str| {
        let c = cells.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no cell {id}"));
        (c["spec"]["order"].as_str().unwrap().to_string(), c["summary"].clone())
    };
    let ps_id = format!("{id}-per-symbol");
    let ((so, strict), (po, ps)) = (cell(id), cell(&ps_id));
    assert_eq!((so.as_str(), po.as_str()), ("strict", "per-symbol"));
    let m = |s: &Value, k: &str| {
        s[k]["median"].as_f64().unwrap_or_else(|| panic!("{k} missing in {s}"))
    };
    let (held_s, held_p) = (m(&strict, "held_share"), m(&ps, "held_share"));
    assert!(held_s > 0.0 && held_s <= 1.0, "{id}: strict held {held_s}");
    assert!(held_p < held_s, "{id}: per-symbol held {held_p} >= strict {held_s}");
    assert_eq!(m(&strict, "messages_ahead"), 0.0, "{id}");
    assert_eq!(m(&strict, "stale_periods"), 0.0, "{id}");
    assert!(m(&ps, "messages_ahead") > 0.0, "{id}: nothing applied ahead of a hole");
    // A symbol goes stale only when one of its own updates arrives while an
    // earlier one is missing. With 1,000 symbols and recovery in a round
    // trip, a lost packet's symbols rarely get another update before the
    // repair: a tiny cell may see none (CI saw 0 in one of its runs). So the
    // figures must agree with each other, not be non-zero: a period begins
    // when a message has to wait, so a message delivered after waiting means
    // a stale period, and a period has a duration.
    let (periods, mean, total, per) = (
        m(&ps, "stale_periods"),
        m(&ps, "stale_mean_us"),
        m(&ps, "stale_ms_total"),
        m(&ps, "stale_ms_per_symbol"),
    );
    assert!(held_p == 0.0 || periods > 0.0, "{id}: held {held_p} with no stale period");
    assert_eq!(
        periods > 0.0,
        mean > 0.0 && total > 0.0,
        "{id}: {periods} periods, {mean} µs mean, {total} ms total"
    );
    if periods == 0.0 {
        eprintln!(
            "{id}: per-symbol order saw no stale period (no lost symbol updated before its repair)"
        );
    }
    let symbols = json["config"]["symbols"].as_f64().unwrap();
    assert!((per - total / symbols).abs() <= 1e-9 * total.max(1.0), "{per} != {total} / {symbols}");
    let pair = json["per_symbol_vs_strict"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["per_symbol"] == ps_id.as_str())
        .unwrap_or_else(|| panic!("{ps_id} not in per_symbol_vs_strict"));
    assert_eq!(pair["strict"], id);
    assert!(pair["lossless"].as_str().is_some_and(|l| !l.contains("drop") && !l.contains("loss")));
    for k in ["p50_per_symbol_to_strict", "p99_per_symbol_to_strict", "p50_per_symbol_to_lossless"]
    {
        assert!(pair[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {pair}");
    }
    let (p50_p, p50_l) =
        (m(&ps, "tick_to_cache_p50_us"), pair["lossless_p50_us"].as_f64().unwrap());
    let r = pair["p50_per_symbol_to_lossless"].as_f64().unwrap();
    assert!((r - p50_p / p50_l).abs() < 1e-9 * r, "ratio {r} != {p50_p} / {p50_l}");
}

#[test]
fn tiny_profile_on_loopback_writes_the_full_report() {
    let out = scratch("loopback");
    let (stdout, stderr) = run_compare(&tiny(
        &out,
        42_000,
        &["--no-netns", "--transports", "tcp,multicast", "--clients", "1,2"],
    ));
    let (report, json) = check_files(&out);
    assert!(stdout.contains("| transport |"), "the tables are printed too");
    assert!(
        stderr.contains("compare: cell 1 of ") && stderr.contains("remaining"),
        "progress lines"
    );
    assert!(stderr.contains("server: ") && stderr.contains("client: "), "command lines printed");
    for t in [
        "## Offered rate (loopback, 1 client)",
        "## Subscribers (loopback, 20000 msg/s)",
        "## Seeded in-process loss",
        "## A/B feeds",
        "## Client threads: single against the pipeline",
        "## Kernel floor",
        "## Skipped",
        "## Command lines",
    ] {
        assert!(report.contains(t), "report.md lacks {t:?}");
    }
    let rows = |needle: &str| report.lines().filter(|l| l.starts_with(needle)).count();
    // rate table: 2 each; subscribers: 2 each; loss: mc 3 (lossless, 2 %
    // strict and per-symbol); A/B: mc 2; client threads: 4 each (2 rates,
    // single and pipeline), and 2 more multicast rows with large packets.
    assert_eq!(rows("| tcp | loopback |"), 8, "{report}");
    assert_eq!(rows("| multicast | loopback |"), 15, "{report}");
    for t in ["tcp", "multicast"] {
        let piped: Vec<&str> = report
            .lines()
            .filter(|l| l.starts_with(&format!("| {t} | loopback |")) && l.contains("| pipeline |"))
            .collect();
        let want = if t == "multicast" { 3 } else { 2 };
        assert_eq!(piped.len(), want, "{t}: a pipeline row per rate (and packet size): {report}");
        assert!(
            piped.iter().all(|l| l.ends_with("| yes |")),
            "{t}: pipeline incomplete: {piped:?}"
        );
    }
    assert!(
        report.lines().any(|l| l.starts_with("| multicast | loopback |") && l.contains("| on |")),
        "an A/B row"
    );
    assert!(report.lines().any(|l| l.contains("in-process 2%")), "a loss row");
    let ids = check_cells(&json);
    assert_eq!(ids.len(), 15, "{ids:?}");
    assert!(ids.iter().any(|i| i == "tcp-loopback-r0-c1-pipeline"), "{ids:?}");
    let large = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "multicast-loopback-r0-c1-mp16384")
        .expect("the large-packet cell");
    // 16 KiB packets carry ten times the messages of 1472-byte ones.
    let ppm = large["summary"]["packets_per_msg"]["median"].as_f64().unwrap();
    assert!(ppm < 0.01, "{ppm} packets per message with 16 KiB packets");
    // In-process loss was injected and recovered.
    let lossy = json["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "multicast-loopback-r20000-c1-drop0.02")
        .unwrap();
    assert!(lossy["summary"]["gaps"]["median"].as_f64().unwrap() > 0.0);
    check_orders(&report, &json, "multicast-loopback-r20000-c1-drop0.02", "in-process 2%");
    if sockperf_available() {
        for f in
            ["udp ping-pong (loopback)", "tcp ping-pong (loopback)", "udp throughput (loopback)"]
        {
            assert!(report.contains(&format!("| {f} |")), "floor row {f}");
        }
        let floor = json["floor"].as_array().unwrap();
        assert!(
            floor.iter().any(|f| f["summary"]["p50_us"]["median"].as_f64().is_some()),
            "floor figures"
        );
        let tcp = json["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "tcp-loopback-r20000-c1")
            .unwrap();
        assert!(tcp["summary"]["ratio_p50_to_floor"].as_f64().is_some(), "ratio to the floor");
    } else {
        tickwire_transports::kernel::skip_part(
            "tiny_profile_on_loopback_writes_the_full_report",
            "floor rows (sockperf not installed)",
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn tiny_profile_across_namespaces_with_kernel_loss() {
    if !is_root() {
        tickwire_transports::kernel::skip(
            "tiny_profile_across_namespaces_with_kernel_loss",
            "needs root (network namespaces)",
        );
        return;
    }
    let out = scratch("netns");
    let (_, stderr) = run_compare(&tiny(
        &out,
        43_000,
        &["--transports", "tcp,multicast,xdp", "--clients", "1", "--kernel-losses", "1"],
    ));
    let (report, json) = check_files(&out);
    let xdp = json["config"]["xdp_in_binaries"] == true;
    // A kernel with neither netem nor nftables: compare skips the loss cells and says so.
    let lossy = !stderr.contains("SKIPPED: the kernel-loss cells");
    if !lossy {
        tickwire_transports::kernel::skip_part(
            "tiny_profile_across_namespaces_with_kernel_loss",
            "the kernel-loss cells (this kernel cannot drop on the bridge; compare said so)",
        );
    }
    for t in [
        "## Across the namespace topology",
        "## Real kernel loss on the bridge",
        "udp ping-pong (netns)",
    ] {
        assert!(
            report.contains(t)
                || (!sockperf_available() && t.contains("ping"))
                || (!lossy && t.contains("loss")),
            "report.md lacks {t:?}"
        );
    }
    let mut want = vec!["tcp", "multicast"];
    if xdp {
        want.push("xdp");
    } else {
        assert!(
            report.contains("xdp: the server/client binaries were built without"),
            "xdp skip named"
        );
    }
    for t in &want {
        let n = report.lines().filter(|l| l.starts_with(&format!("| {t} | netns |"))).count();
        // Two rates and a lossy row; datagram transports' lossy row in both orders.
        let lossy_rows = if *t == "tcp" { 1 } else { 2 };
        assert_eq!(n, if lossy { 2 + lossy_rows } else { 2 }, "{t}: rates, lossy rows\n{report}");
        assert!(
            !lossy
                || report
                    .lines()
                    .any(|l| l.starts_with(&format!("| {t} | netns |")) && l.contains("bridge 1%"))
        );
    }
    let ids = check_cells(&json);
    for t in &want {
        let c = json["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == format!("{t}-netns-r20000-c1"))
            .unwrap();
        assert!(
            c["summary"]["wire_bytes_per_msg"]["median"].as_f64().unwrap() > 0.0,
            "{t}: bytes on the wire"
        );
    }
    if lossy {
        assert!(ids.iter().any(|i| i.ends_with("-loss1")));
        assert!(stderr.contains("bridge loss 1% by "), "{stderr}");
        let mechanism = json["cells"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "multicast-netns-r20000-c1-loss1")
            .and_then(|c| c["loss_mechanism"].as_str())
            .unwrap()
            .to_string();
        for t in want.iter().filter(|&&t| t != "tcp") {
            let id = format!("{t}-netns-r20000-c1-loss1");
            check_orders(&report, &json, &id, &format!("bridge 1% ({mechanism})"));
        }
        // Issue 23's bound at 1 % loss is stated beside the rows.
        assert!(
            report.lines().any(|l| l.starts_with("| bridge 1% (")
                && l.contains("| multicast | netns |")
                && l.contains("| p99 ≤ 1 ms |")),
            "{report}"
        );
    }
    let prefix = json["config"]["netns_prefix"].as_str().unwrap();
    assert!(
        report.contains(&format!("xdp-setup/topology.sh up {prefix} 1")),
        "how to rerun a netns cell"
    );
    let list = String::from_utf8_lossy(
        &Command::new("ip").args(["netns", "list"]).output().unwrap().stdout,
    )
    .into_owned();
    assert!(!list.contains(prefix), "namespaces {prefix}* left behind:\n{list}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn ctrl_c_removes_the_namespaces_and_writes_a_partial_report() {
    if !is_root() {
        tickwire_transports::kernel::skip(
            "ctrl_c_removes_the_namespaces_and_writes_a_partial_report",
            "needs root (network namespaces)",
        );
        return;
    }
    let out = scratch("ctrlc");
    let mut child = Command::new(compare_bin())
        .args(tiny(
            &out,
            44_000,
            &["--transports", "tcp,multicast", "--clients", "1", "--messages", "200000"],
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting compare");
    let prefix = format!("twc{}", child.id());
    let listed = || {
        let o = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).contains(&format!("{prefix}mid"))
    };
    let start = Instant::now();
    while !listed() {
        assert!(child.try_wait().unwrap().is_none(), "compare exited before making its namespaces");
        assert!(start.elapsed() < Duration::from_secs(60), "no namespaces {prefix}* after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted exit status");
    assert!(!listed(), "namespaces {prefix}* left behind after Ctrl-C");
    let report = std::fs::read_to_string(out.join("report.md")).expect("a partial report.md");
    assert!(report.contains("Interrupted"));
    let _ = std::fs::remove_dir_all(&out);
}

/// Aeron in the same run as Tickwire multicast (a fresh clone's
/// scripts/test.sh builds `aeron-peer` with --all-features): the Aeron
/// table and the Tickwire / Aeron ratios are in the report, and every Aeron
/// cell delivered every message, checked in order by the peer, with and
/// without Aeron's own loss.
#[test]
fn tiny_aeron_cells_beside_multicast_in_the_same_run() {
    const TEST: &str = "tiny_aeron_cells_beside_multicast_in_the_same_run";
    if !bin_dir().join("aeron-peer").exists() {
        tickwire_transports::kernel::skip(TEST, "aeron-peer not built (--features aeron)");
        return;
    }
    let out = scratch("aeron");
    let mut args = tiny(
        &out,
        45_000,
        &["--no-netns", "--transports", "multicast", "--clients", "1", "--modes", "spin"],
    );
    args.retain(|a| a != "--no-aeron");
    let (_, stderr) = run_compare(&args);
    let (report, json) = check_files(&out);
    for t in
        ["## Aeron beside Tickwire multicast", "## Tickwire / Aeron, the same job in the same run"]
    {
        assert!(report.contains(t), "report.md lacks {t:?}\n{stderr}");
    }
    let cells = json["cells"].as_array().unwrap();
    for id in [
        "aeron-inline-loopback-r20000-c1",
        "aeron-threads-loopback-r20000-c1",
        "aeron-threads-loopback-r0-c1",
        "aeron-inline-loopback-r20000-c1-drop0.02",
    ] {
        let c = cells.iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no cell {id}"));
        for r in c["runs"].as_array().unwrap() {
            assert!(r.get("error").is_none(), "{id}: a run failed: {r}");
        }
        assert_eq!(c["complete"], true, "{id}: incomplete: {c}");
        let s = &c["summary"];
        let published = s["messages_published"]["median"].as_f64().unwrap();
        assert_eq!(published, 3000.0, "{id}");
        assert_eq!(s["messages_delivered_min"]["min"].as_f64(), Some(published), "{id}");
        assert!(s["tick_to_cache_p50_us"]["median"].as_f64().unwrap() > 0.0, "{id}");
    }
    assert!(
        report.lines().any(|l| l.starts_with("| aeron (inline) | loopback | 20000 | 1 | none |")),
        "{report}"
    );
    // The ratios pair Aeron with Tickwire's default idle mode, and with its
    // spinning cell (like for like with the busy-spinning inline layout).
    for mode in ["default", "spin"] {
        let row = format!("| aeron (inline) | loopback | 20000 | 1 | none | {mode} |");
        assert!(report.lines().any(|l| l.starts_with(&row)), "no ratio row {row}\n{report}");
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// A report directory used before: its old ready files (the tcp server's
/// names the port it bound) must not be taken for the new run's. Before the
/// fix, the second run's clients connected to the first run's port and
/// every tcp cell failed at its time limit.
#[test]
fn a_second_run_into_the_same_directory_is_not_misled_by_the_first() {
    let out = scratch("reused");
    let flags = ["--no-netns", "--transports", "tcp", "--clients", "1", "--no-pipeline"];
    run_compare(&tiny(&out, 46_000, &flags));
    let first = std::fs::read_dir(out.join("raw"))
        .expect("raw/")
        .filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready")))
        .count();
    assert!(first > 0, "the first run leaves its ready files");
    run_compare(&tiny(&out, 47_000, &flags));
    let (_, json) = check_files(&out);
    let ids = check_cells(&json);
    assert!(ids.iter().any(|i| i.starts_with("tcp-loopback")), "{ids:?}");
}
