//! What a comparison run produced, and how it is written: `report.md` (a
//! table per scenario, the floor, the skipped parts, every command line) and
//! `results.json` (every figure, every run, the raw summaries).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};
use tickwire_transports::select::TransportKind;

use crate::cell::{CellRun, CellSpec, Mode, Order, SYMBOLS};
use crate::floor::{FloorKey, FloorRun, Test};
use crate::profile::Plan;
use crate::stats::{Agg, agg, med_range, num, ratio};

/// One successful run of a cell.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Its figures.
    pub figures: CellRun,
    /// The server's `--json` summary.
    pub server: Value,
    /// Each client's `--json` summary.
    pub clients: Vec<Value>,
}

/// A cell and its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    /// The configuration.
    pub spec: CellSpec,
    /// One per repetition (`Err`: why it failed).
    pub runs: Vec<Result<RunRecord, String>>,
    /// The command lines of the last repetition, in start order.
    pub commands: Vec<String>,
    /// The `.hgrm` of the cell (client 1 of the last successful repetition), relative to the report.
    pub hgrm: Option<String>,
    /// Kernel loss mechanism used (netem or nftables), for loss cells.
    pub loss_mechanism: Option<&'static str>,
}

impl CellResult {
    /// The successful runs' figures.
    pub fn ok(&self) -> impl Iterator<Item = &CellRun> {
        self.runs.iter().filter_map(|r| r.as_ref().ok().map(|r| &r.figures))
    }

    /// One figure over the successful runs.
    pub fn agg(&self, f: fn(&CellRun) -> Option<f64>) -> Agg {
        agg(self.ok().map(f))
    }

    /// Every run succeeded and was complete.
    pub fn complete(&self) -> bool {
        !self.runs.is_empty()
            && self.runs.iter().all(|r| r.as_ref().is_ok_and(|r| r.figures.complete))
    }
}

/// A floor configuration and its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct FloorResult {
    /// The configuration.
    pub key: FloorKey,
    /// One per repetition.
    pub runs: Vec<Result<FloorRun, String>>,
    /// The sockperf command lines (server, client).
    pub commands: Vec<String>,
}

impl FloorResult {
    /// One figure over the successful runs.
    pub fn agg(&self, f: fn(&FloorRun) -> Option<f64>) -> Agg {
        agg(self.runs.iter().filter_map(|r| r.as_ref().ok()).map(f))
    }
}

/// Reads one figure of a cell run.
pub type Figure = fn(&CellRun) -> Option<f64>;

/// The named figures of a cell run, for the JSON summary.
pub const FIELDS: [(&str, Figure); 30] = [
    ("delivered_msgs_per_s", |r| r.delivered_msgs_per_s),
    ("published_msgs_per_s", |r| r.published_msgs_per_s),
    ("tick_to_cache_p50_us", |r| r.t2c_p50_us),
    ("tick_to_cache_p99_us", |r| r.t2c_p99_us),
    ("tick_to_cache_p999_us", |r| r.t2c_p999_us),
    ("tick_to_cache_max_us", |r| r.t2c_max_us),
    ("server_cpu_user_ns_per_msg", |r| r.server_user_ns_per_msg),
    ("server_cpu_sys_ns_per_msg", |r| r.server_sys_ns_per_msg),
    ("client_cpu_user_ns_per_msg", |r| r.client_user_ns_per_msg),
    ("client_cpu_sys_ns_per_msg", |r| r.client_sys_ns_per_msg),
    ("packets_per_msg", |r| r.packets_per_msg),
    ("wire_bytes_per_msg", |r| r.wire_bytes_per_msg),
    ("wire_packets_per_msg", |r| r.wire_packets_per_msg),
    ("gaps", |r| r.gaps),
    ("nacks", |r| r.nacks),
    ("snapshots", |r| r.snapshots),
    ("unrecovered", |r| r.unrecovered),
    ("recovery_p50_us", |r| r.recovery_p50_us),
    ("recovery_p99_us", |r| r.recovery_p99_us),
    ("bridge_drops", |r| r.bridge_drops),
    ("held_share", |r| r.held_share),
    ("messages_held", |r| r.messages_held),
    ("messages_ahead", |r| r.messages_ahead),
    ("stale_periods", |r| r.stale_periods),
    ("stale_ms_total", |r| r.stale_ms_total),
    ("stale_ms_per_symbol", |r| r.stale_ms_per_symbol),
    ("stale_mean_us", |r| r.stale_mean_us),
    ("stale_now", |r| r.stale_now),
    ("messages_delivered_min", |r| r.delivered_min),
    ("messages_published", |r| r.published),
];

/// Everything a run produced.
#[derive(Debug)]
pub struct Results {
    /// The plan that was run.
    pub plan: Plan,
    /// One per plan cell.
    pub cells: Vec<CellResult>,
    /// The floors.
    pub floors: Vec<FloorResult>,
    /// Configuration and environment, for the JSON and the report's head.
    pub config: Value,
    /// Plot files written, relative to the report.
    pub plots: Vec<String>,
    /// Why plots are missing, if they are.
    pub plot_error: Option<String>,
    /// Wall time of the run.
    pub wall_s: f64,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
}

impl Results {
    /// The ping-pong floor a cell is compared with: the same path (tcp for tcp, udp otherwise).
    pub fn floor_for(&self, spec: &CellSpec) -> Option<&FloorResult> {
        let tcp = spec.transport == TransportKind::Tcp;
        self.floors
            .iter()
            .find(|f| f.key.net == spec.net && f.key.tcp == tcp && f.key.test == Test::PingPong)
    }
}

fn loss_label(c: &CellResult) -> String {
    let s = &c.spec;
    if s.kernel_loss > 0.0 {
        format!("bridge {}% ({})", s.kernel_loss, c.loss_mechanism.unwrap_or("?"))
    } else if s.upstream_drop > 0.0 {
        format!("upstream {}%", s.upstream_drop * 100.0)
    } else if s.drop_rate > 0.0 {
        format!("in-process {}%", s.drop_rate * 100.0)
    } else {
        "none".into()
    }
}

/// The delivery order as tables show it (Aeron has its stream's order only).
fn order_label(s: &CellSpec) -> &'static str {
    if s.peer.is_aeron() { "—" } else { s.order.name() }
}

/// The scenarios whose lossy cells run in both delivery orders.
pub const LOSS_TABLES: [&str; 2] = ["inproc-loss", "kernel-loss"];

/// A ratio as `1.23×`.
fn times(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.2}×"))
}

/// The loss tables' delivery figures: each row's order, tick-to-cache,
/// recovery, what waited behind holes and how long symbols were stale.
/// The first loss table explains the columns; `explained` says it has been.
fn delivery_table(
    s: &mut String,
    r: &Results,
    sc: &crate::profile::Scenario,
    explained: &mut bool,
) {
    if std::mem::replace(explained, true) {
        let _ = writeln!(
            s,
            "Delivery order under loss (columns and formulas as under the first loss table).\n"
        );
    } else {
        let _ = writeln!(
            s,
            "Delivery order under loss (medians of the repetitions, min–max in brackets; a \
         repetition's figure is the median over its clients). **held**: messages that waited in \
         the reorder buffer behind a hole, as a share of the messages delivered \
         (`delivery.held_share`). **Stale** (per-symbol order only: strict order counts no \
         stale time, because a hole holds back every symbol): **stale mean** is the mean length \
         of one stale period (`delivery.stale_mean_us`: from the moment a message of the symbol \
         has to wait for a hole until the symbol is up to date again); **stale ms / symbol** = `delivery.stale_ms_total` / \
         {SYMBOLS} (the universe, `server --symbols`): the time an average symbol spent stale \
         over the run. Lossless cells run in strict order only: with no hole nothing waits and \
         per-symbol order applies every message as strict order does, so its row would repeat \
         the strict one (`compare --lossless-orders strict,per-symbol` runs both, to measure \
         what it costs); tcp rows are strict only (TCP delivers a stream without holes).\n"
        );
    }
    let _ = writeln!(
        s,
        "| loss | transport | net | order | tick-to-cache p50 µs | p99 µs | recovery p99 µs | held % | stale periods | stale mean µs | stale ms / symbol | unrecovered | complete |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for &i in &sc.cells {
        let c = &r.cells[i];
        let strict = c.spec.order == Order::Strict;
        let stale = |f: Figure| if strict { "—".into() } else { med_range(c.agg(f)) };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            loss_label(c),
            c.spec.label(),
            c.spec.net.name(),
            order_label(&c.spec),
            med_range(c.agg(|x| x.t2c_p50_us)),
            med_range(c.agg(|x| x.t2c_p99_us)),
            med_range(c.agg(|x| x.recovery_p99_us)),
            med_range(c.agg(|x| x.held_share.map(|h| h * 100.0))),
            stale(|x| x.stale_periods),
            stale(|x| x.stale_mean_us),
            stale(|x| x.stale_ms_per_symbol),
            num(c.agg(|x| x.unrecovered).max),
            if c.complete() { "yes" } else { "NO" },
        );
    }
    let _ = writeln!(s);
}

/// Issue 23's bounds on per-symbol order at a loss rate: tick-to-cache p50
/// at most this many times the lossless p50, and p99 at most this many µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// Largest per-symbol p50 / lossless p50, where the issue bounds it.
    pub p50_vs_lossless: Option<f64>,
    /// Largest per-symbol p99, µs.
    pub p99_us: f64,
}

impl Target {
    /// The bounds at `loss_percent`: 5 %: p50 ≤ 1.5× lossless, p99 ≤ 2 ms;
    /// 1 %: p99 ≤ 1 ms; other rates: none.
    pub fn at(loss_percent: f64) -> Option<Target> {
        let near = |x: f64| (loss_percent - x).abs() < 1e-9;
        if near(5.0) {
            Some(Target { p50_vs_lossless: Some(1.5), p99_us: 2000.0 })
        } else if near(1.0) {
            Some(Target { p50_vs_lossless: None, p99_us: 1000.0 })
        } else {
            None
        }
    }

    /// As the table states it.
    pub fn text(self) -> String {
        let p99 = format!("p99 ≤ {} ms", self.p99_us / 1000.0);
        match self.p50_vs_lossless {
            Some(x) => format!("p50 ≤ {x}× lossless, {p99}"),
            None => p99,
        }
    }

    /// Whether `pair` meets it (`None`: a figure is missing).
    pub fn met(self, pair: &OrderPair) -> Option<bool> {
        let p99 = pair.per_symbol.agg(|x| x.t2c_p99_us).median?;
        let p50_ok = match self.p50_vs_lossless {
            Some(max) => pair.p50_vs_lossless()? <= max,
            None => true,
        };
        Some(p50_ok && p99 <= self.p99_us)
    }
}

/// A per-symbol cell, its strict twin and the lossless strict cell of the same job.
#[derive(Debug, Clone, Copy)]
pub struct OrderPair<'a> {
    /// The per-symbol cell.
    pub per_symbol: &'a CellResult,
    /// The same cell in strict order.
    pub strict: Option<&'a CellResult>,
    /// The same job without loss, in strict order (the profile's message count).
    pub lossless: Option<&'a CellResult>,
}

impl OrderPair<'_> {
    /// Per-symbol / strict of a figure's medians.
    pub fn vs_strict(&self, f: Figure) -> Option<f64> {
        ratio(self.per_symbol.agg(f).median, self.strict.and_then(|c| c.agg(f).median))
    }

    /// Per-symbol p50 / lossless p50.
    pub fn p50_vs_lossless(&self) -> Option<f64> {
        let f: Figure = |x| x.t2c_p50_us;
        ratio(self.per_symbol.agg(f).median, self.lossless.and_then(|c| c.agg(f).median))
    }

    /// Per-symbol p99 / lossless p99.
    pub fn p99_vs_lossless(&self) -> Option<f64> {
        let f: Figure = |x| x.t2c_p99_us;
        ratio(self.per_symbol.agg(f).median, self.lossless.and_then(|c| c.agg(f).median))
    }

    /// Issue 23's bounds at this loss rate (lossy cells only).
    pub fn target(&self) -> Option<Target> {
        let s = &self.per_symbol.spec;
        if s.lossy() { Target::at(s.loss_percent()) } else { None }
    }
}

/// Every per-symbol cell with its strict twin and lossless reference, in plan order.
pub fn order_pairs(r: &Results) -> Vec<OrderPair<'_>> {
    let messages = r.config["messages"].as_u64().unwrap_or_default();
    let find = |spec: &CellSpec| r.cells.iter().find(|c| c.spec == *spec);
    r.cells
        .iter()
        .filter(|c| c.spec.order == Order::PerSymbol)
        .map(|c| OrderPair {
            per_symbol: c,
            strict: find(&CellSpec { order: Order::Strict, ..c.spec.clone() }),
            lossless: find(&c.spec.lossless(messages)),
        })
        .collect()
}

/// Per-symbol against strict, cell by cell, with the lossless reference
/// and issue 23's bounds.
fn order_table(s: &mut String, r: &Results) {
    let pairs = order_pairs(r);
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Per-symbol vs strict order
"
    );
    let _ = writeln!(
        s,
        "Each per-symbol cell beside the same cell in strict order, and the lossless cell of the \
         same transport, path and rate (strict order; medians of the repetitions). Ratios: \
         per-symbol / strict (below 1: per-symbol is faster), per-symbol / lossless (1: loss \
         costs nothing). Issue 23's bounds on per-symbol order: at 5 % loss p50 ≤ 1.5× the \
         lossless p50 and p99 ≤ 2 ms; at 1 % loss p99 ≤ 1 ms.\n"
    );
    let _ = writeln!(
        s,
        "| loss | transport | net | p50 µs strict → per-symbol | p50 per-symbol / strict | p99 µs strict → per-symbol | p99 per-symbol / strict | lossless p50 / p99 µs | p50 per-symbol / lossless | p99 per-symbol / lossless | issue 23 bound | met |"
    );
    let _ = writeln!(s, "|---|---|---|---|---:|---|---:|---|---:|---:|---|---|");
    for p in &pairs {
        let c = p.per_symbol;
        let med = |c: Option<&CellResult>, f: Figure| num(c.and_then(|c| c.agg(f).median));
        let (p50, p99): (Figure, Figure) = (|x| x.t2c_p50_us, |x| x.t2c_p99_us);
        let target = p.target();
        let met = match target.map(|t| t.met(p)) {
            None => "—",
            Some(Some(true)) => "yes",
            Some(Some(false)) => "NO",
            Some(None) => "n/a",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} → {} | {} | {} → {} | {} | {} / {} | {} | {} | {} | {} |",
            loss_label(c),
            c.spec.label(),
            c.spec.net.name(),
            med(p.strict, p50),
            med(Some(c), p50),
            times(p.vs_strict(p50)),
            med(p.strict, p99),
            med(Some(c), p99),
            times(p.vs_strict(p99)),
            med(p.lossless, p50),
            med(p.lossless, p99),
            times(p.p50_vs_lossless()),
            times(p.p99_vs_lossless()),
            target.map_or("—".into(), Target::text),
            met,
        );
    }
    let _ = writeln!(s);
}

/// Sum-free "a + b" of two medians.
fn plus(a: Agg, b: Agg) -> String {
    format!("{} + {}", num(a.median), num(b.median))
}

/// Tickwire against Aeron, cell by cell: each Aeron cell beside the Tickwire
/// multicast cell of the same job (path, rate, clients, loss). Throughput:
/// Tickwire / Aeron (above 1: Tickwire delivers more); latency: Tickwire /
/// Aeron (below 1: Tickwire is faster).
fn aeron_ratios(r: &Results, s: &mut String) {
    let same_job = |a: &CellSpec, t: &CellSpec, mode: Mode| {
        !t.peer.is_aeron()
            && t.transport == TransportKind::Multicast
            && (t.net, t.rate, t.clients, t.messages) == (a.net, a.rate, a.clients, a.messages)
            && t.drop_rate == a.drop_rate
            && t.kernel_loss == a.kernel_loss
            && t.upstream_drop == a.upstream_drop
            && !t.ab
            && !t.pipeline
            && t.mode == mode
            && t.max_packet.is_none()
            && t.order == Order::Strict
    };
    let pairs: Vec<(&CellResult, &CellResult)> = r
        .cells
        .iter()
        .filter(|a| a.spec.peer.is_aeron())
        .flat_map(|a| {
            // Beside Tickwire's default idle mode always, and beside its
            // spinning cell where the run has one: the inline layout
            // busy-spins, so that pair is like for like.
            [Mode::Default, Mode::Spin].into_iter().filter_map(move |mode| {
                r.cells.iter().find(|t| same_job(&a.spec, &t.spec, mode)).map(|t| (t, a))
            })
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "## Tickwire / Aeron, the same job in the same run
"
    );
    let _ = writeln!(
        s,
        "Throughput ratio above 1: Tickwire delivers more; latency ratio below 1: Tickwire is \
         faster. Medians of the repetitions; Aeron's latency is due → delivered to the \
         application (it has no cache), Tickwire's due → applied to the cache.\n"
    );
    let _ = writeln!(
        s,
        "| Aeron layout | net | rate | clients | loss | Tickwire idle | delivered msgs/s Tickwire / Aeron | p50 µs Tickwire / Aeron | p99 µs Tickwire / Aeron | complete T / A |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---|---|---|---|---|---|");
    for (t, a) in pairs {
        let both = |f: fn(&CellRun) -> Option<f64>| {
            let (x, y) = (t.agg(f).median, a.agg(f).median);
            format!(
                "{} / {} = {}",
                num(x),
                num(y),
                ratio(x, y).map_or("n/a".into(), |v| format!("{v:.2}×"))
            )
        };
        let yes = |c: &CellResult| if c.complete() { "yes" } else { "NO" };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            a.spec.label(),
            a.spec.net.name(),
            a.spec.rate_label(),
            a.spec.clients,
            loss_label(a),
            t.spec.mode.name(),
            both(|x| x.delivered_msgs_per_s),
            both(|x| x.t2c_p50_us),
            both(|x| x.t2c_p99_us),
            yes(t),
            yes(a),
        );
    }
    let _ = writeln!(s);
}

/// The recovery table's server side: what the service did for N clients.
fn recovery_table(s: &mut String, r: &Results, sc: &crate::profile::Scenario) {
    let _ = writeln!(
        s,
        "Recovery at the server (medians): NACKs received, messages retransmitted (unicast and on \
         the group), bytes repaired on the group, duplicates per client (what the others pay \
         for one client's repairs).\n"
    );
    let _ = writeln!(
        s,
        "| loss | clients | server NACKs | messages retransmitted | group repair bytes | duplicates / client | recovery p50 / p99 µs | complete |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---|---|");
    for &i in &sc.cells {
        let c = &r.cells[i];
        let per_client = c.agg(|x| x.duplicates).median.map(|d| d / c.spec.clients.max(1) as f64);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            loss_label(c),
            c.spec.clients,
            med_range(c.agg(|x| x.server_nacks)),
            med_range(c.agg(|x| x.server_retransmitted)),
            num(c.agg(|x| x.server_group_repair_bytes).median),
            num(per_client),
            num(c.agg(|x| x.recovery_p50_us).median),
            num(c.agg(|x| x.recovery_p99_us).median),
            if c.complete() { "yes" } else { "NO" },
        );
    }
    let _ = writeln!(s);
}

/// The report's Markdown.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Tickwire comparison report\n");
    let c = &r.config;
    let _ = writeln!(
        s,
        "Profile `{}`; {} repetitions{}; medians, min–max in brackets. Wall time {:.0} s.{}\n",
        c["profile"].as_str().unwrap_or("?"),
        c["repetitions"],
        if c["warmup"] == true { " after a warm-up run per transport and path" } else { "" },
        r.wall_s,
        if r.interrupted { " **Interrupted (Ctrl-C): partial.**" } else { "" }
    );
    let _ = writeln!(s, "Machine: {}\n", c["machine"].as_str().unwrap_or("?"));
    let _ = writeln!(
        s,
        "Latency is tick-to-cache (due time of each message at the simulated exchange → applied \
         to the client's cache), in µs; ratios divide it by the sockperf ping-pong floor (half \
         round trip, 48 B, blocking sockets) of the same path measured in this run. CPU is user + \
         system ns per message (server: per published message; client: per delivered message, \
         median over the clients). Packets/msg: packets the server's transport sent per message; \
         wire B/msg and frames/msg: the server namespace's eth0 counters (netns only: loopback is \
         shared with the rest of the machine). Gaps, NACKs, snapshots, unrecovered: summed over \
         the clients; recovery p50/p99: the slowest client's.\n"
    );
    if !r.plan.skipped.is_empty() {
        let _ = writeln!(s, "## Skipped\n");
        for k in &r.plan.skipped {
            let _ = writeln!(s, "- {k}");
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "## Kernel floor (sockperf, same run)\n");
    let _ = writeln!(s, "| path | p50 µs | p99 µs | p99.9 µs | max µs | msgs/s | runs ok |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
    if r.floors.is_empty() {
        let _ = writeln!(s, "| (sockperf not installed: floor not measured) | | | | | | |");
    }
    for f in &r.floors {
        let ok = f.runs.iter().filter(|x| x.is_ok()).count();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {ok}/{} |",
            f.key.label(),
            med_range(f.agg(|x| x.p50_us)),
            med_range(f.agg(|x| x.p99_us)),
            med_range(f.agg(|x| x.p999_us)),
            med_range(f.agg(|x| x.max_us)),
            med_range(f.agg(|x| x.msgs_per_s)),
            f.runs.len()
        );
    }
    let _ = writeln!(s);
    let mut explained = false;
    for sc in &r.plan.scenarios {
        let _ = writeln!(s, "## {}\n", sc.title);
        let _ = writeln!(
            s,
            "| transport | net | rate | clients | loss | order | A/B | idle | client threads | max packet B | delivered msgs/s | p50 µs | p99 µs | p99.9 µs | max µs | p50 / floor | p99 / floor | server CPU ns/msg | client CPU ns/msg | packets/msg | wire B/msg | frames/msg | gaps | NACKs | snapshots | unrecovered | recovery p50 / p99 µs | runs ok | complete |"
        );
        let _ = writeln!(
            s,
            "|---|---|---:|---:|---|---|---|---|---|---:|{}---:|---|",
            "---:|".repeat(17)
        );
        for &i in &sc.cells {
            let c = &r.cells[i];
            let sp = &c.spec;
            let floor = r.floor_for(sp);
            let x = |cell: Option<f64>, fl: Option<f64>| {
                ratio(cell, fl).map_or("n/a".into(), |v| format!("{v:.2}×"))
            };
            let fl = |f: fn(&FloorRun) -> Option<f64>| floor.and_then(|fr| fr.agg(f).median);
            let ok = c.runs.iter().filter(|x| x.is_ok()).count();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {ok}/{} | {} |",
                sp.label(),
                sp.net.name(),
                sp.rate_label(),
                sp.clients,
                loss_label(c),
                order_label(sp),
                if sp.ab { "on" } else { "off" },
                sp.mode.name(),
                if sp.pipeline { "pipeline" } else { "single" },
                sp.max_packet_label(),
                med_range(c.agg(|x| x.delivered_msgs_per_s)),
                med_range(c.agg(|x| x.t2c_p50_us)),
                med_range(c.agg(|x| x.t2c_p99_us)),
                med_range(c.agg(|x| x.t2c_p999_us)),
                med_range(c.agg(|x| x.t2c_max_us)),
                x(c.agg(|x| x.t2c_p50_us).median, fl(|f| f.p50_us)),
                x(c.agg(|x| x.t2c_p99_us).median, fl(|f| f.p99_us)),
                plus(c.agg(|x| x.server_user_ns_per_msg), c.agg(|x| x.server_sys_ns_per_msg)),
                plus(c.agg(|x| x.client_user_ns_per_msg), c.agg(|x| x.client_sys_ns_per_msg)),
                num(c.agg(|x| x.packets_per_msg).median),
                num(c.agg(|x| x.wire_bytes_per_msg).median),
                num(c.agg(|x| x.wire_packets_per_msg).median),
                num(c.agg(|x| x.gaps).median),
                num(c.agg(|x| x.nacks).median),
                num(c.agg(|x| x.snapshots).median),
                num(c.agg(|x| x.unrecovered).max),
                num(c.agg(|x| x.recovery_p50_us).median),
                num(c.agg(|x| x.recovery_p99_us).median),
                c.runs.len(),
                if c.complete() { "yes" } else { "NO" },
            );
        }
        let _ = writeln!(s);
        if sc.key == "recovery" {
            recovery_table(&mut s, r, sc);
        }
        if LOSS_TABLES.contains(&sc.key) {
            delivery_table(&mut s, r, sc, &mut explained);
        }
    }
    let _ = writeln!(
        s,
        "(unrecovered: the largest over the repetitions; complete: every client of every repetition delivered up to the last sequence, 0 unrecovered)\n"
    );
    order_table(&mut s, r);
    aeron_ratios(r, &mut s);
    if !r.plots.is_empty() || r.plot_error.is_some() {
        let _ = writeln!(s, "## Plots\n");
        for p in r.plots.iter().filter(|p| p.ends_with(".svg")) {
            let _ = writeln!(s, "![{p}]({p})\n");
        }
        if let Some(e) = &r.plot_error {
            let _ = writeln!(s, "Plots not drawn: {e}\n");
        }
    }
    let failures: Vec<String> = r
        .cells
        .iter()
        .flat_map(|c| {
            c.runs.iter().enumerate().filter_map(move |(i, x)| {
                x.as_ref().err().map(|e| {
                    format!(
                        "- `{}` repetition {}: {}",
                        c.spec.id(),
                        i + 1,
                        e.lines().next().unwrap_or("")
                    )
                })
            })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(s, "## Failed runs\n\n{}\n", failures.join("\n"));
    }
    let _ = writeln!(s, "## Command lines (rerun any cell by hand)\n");
    if let Some(prefix) = r.config["netns_prefix"].as_str().filter(|_| r.config["netns"] == true) {
        let n = r
            .plan
            .cells
            .iter()
            .filter(|c| c.net == crate::floor::Net::Netns)
            .map(|c| c.clients)
            .max();
        let _ = writeln!(
            s,
            "The namespace cells ran in namespaces removed at the end of the run; \
             `xdp-setup/topology.sh up {prefix} {}` makes the same ones (names, addresses) to rerun them, \
             `xdp-setup/topology.sh down {prefix} {0}` removes them. Datagram clients start before their server, \
             the tcp server before its clients, in the order shown.\n",
            n.unwrap_or(1)
        );
    }
    for f in &r.floors {
        let _ = writeln!(s, "{}:\n\n```sh\n{}\n```\n", f.key.label(), f.commands.join("\n"));
    }
    for c in &r.cells {
        let hg = c.hgrm.as_deref().map_or(String::new(), |h| format!(" (histogram: `{h}`)"));
        let _ = writeln!(s, "`{}`{hg}:\n\n```sh\n{}\n```\n", c.spec.id(), c.commands.join("\n"));
    }
    s
}

/// Every figure, as one JSON document.
pub fn json(r: &Results) -> Value {
    let floors: Vec<Value> = r
        .floors
        .iter()
        .map(|f| {
            json!({
                "label": f.key.label(), "key": f.key,
                "summary": {
                    "p50_us": f.agg(|x| x.p50_us).to_json(),
                    "p99_us": f.agg(|x| x.p99_us).to_json(),
                    "p999_us": f.agg(|x| x.p999_us).to_json(),
                    "max_us": f.agg(|x| x.max_us).to_json(),
                    "msgs_per_s": f.agg(|x| x.msgs_per_s).to_json(),
                },
                "runs": f.runs.iter().map(|x| match x {
                    Ok(v) => json!(v), Err(e) => json!({ "error": e }) }).collect::<Vec<_>>(),
                "commands": f.commands,
            })
        })
        .collect();
    let cells: Vec<Value> = r
        .cells
        .iter()
        .map(|c| {
            let mut summary = serde_json::Map::new();
            for (name, get) in FIELDS {
                summary.insert(name.into(), c.agg(get).to_json());
            }
            let floor = r.floor_for(&c.spec);
            let fl = |f: fn(&FloorRun) -> Option<f64>| floor.and_then(|fr| fr.agg(f).median);
            summary.insert(
                "ratio_p50_to_floor".into(),
                json!(ratio(c.agg(|x| x.t2c_p50_us).median, fl(|f| f.p50_us))),
            );
            summary.insert(
                "ratio_p99_to_floor".into(),
                json!(ratio(c.agg(|x| x.t2c_p99_us).median, fl(|f| f.p99_us))),
            );
            json!({
                "id": c.spec.id(), "spec": c.spec, "complete": c.complete(),
                "floor": floor.map(|f| f.key.label()),
                "loss_mechanism": c.loss_mechanism, "hgrm": c.hgrm,
                "summary": summary,
                "runs": c.runs.iter().map(|x| match x {
                    Ok(v) => json!(v), Err(e) => json!({ "error": e }) }).collect::<Vec<_>>(),
                "commands": c.commands,
            })
        })
        .collect();
    json!({
        "config": r.config,
        "wall_time_s": r.wall_s,
        "interrupted": r.interrupted,
        "skipped": r.plan.skipped,
        "scenarios": r.plan.scenarios.iter().map(|s| json!({
            "key": s.key, "title": s.title,
            "cells": s.cells.iter().map(|&i| r.cells[i].spec.id()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "floor": floors,
        "cells": cells,
        "per_symbol_vs_strict": order_pairs(r).iter().map(|p| {
            let (p50, p99): (Figure, Figure) = (|x| x.t2c_p50_us, |x| x.t2c_p99_us);
            let target = p.target();
            json!({
                "per_symbol": p.per_symbol.spec.id(),
                "strict": p.strict.map(|c| c.spec.id()),
                "lossless": p.lossless.map(|c| c.spec.id()),
                "loss_percent": p.per_symbol.spec.loss_percent(),
                "p50_per_symbol_to_strict": p.vs_strict(p50),
                "p99_per_symbol_to_strict": p.vs_strict(p99),
                "lossless_p50_us": p.lossless.and_then(|c| c.agg(p50).median),
                "lossless_p99_us": p.lossless.and_then(|c| c.agg(p99).median),
                "p50_per_symbol_to_lossless": p.p50_vs_lossless(),
                "p99_per_symbol_to_lossless": p.p99_vs_lossless(),
                "target": target.map(|t| json!({
                    "p50_to_lossless_max": t.p50_vs_lossless, "p99_us_max": t.p99_us,
                    "met": t.met(p),
                })),
            })
        }).collect::<Vec<_>>(),
        "plots": r.plots,
    })
}

/// Write `report.md` and `results.json` into `dir`.
pub fn write(r: &Results, dir: &Path) -> anyhow::Result<()> {
    std::fs::write(dir.join("report.md"), markdown(r))?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(&json(r))? + "\n")?;
    Ok(())
}
