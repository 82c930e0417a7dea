//! The output: the Markdown tables on stdout and the `--json-out` document.

use std::fmt::Write as _;

use serde_json::{Value, json};
use tickwire_bench::floor::FloorRun;
use tickwire_bench::stats::{Agg, med_range, num};

use crate::args::Args;
use crate::cell::{Cell, CellRun, PARTS};
use crate::floor::{Floor, FloorKey, Net, Poll, Proto};

/// The floor run of `key`, if it is in the list.
fn floor_of(floors: &[Floor], key: FloorKey) -> Option<&Floor> {
    floors.iter().find(|f| f.key == key)
}

/// A named figure of a floor run.
type FloorField = (&'static str, fn(&FloorRun) -> Option<f64>);
/// A named figure of a cell run.
type CellField = (&'static str, fn(&CellRun) -> Option<f64>);

/// The floor figures, by their JSON names.
const FLOOR_FIELDS: [FloorField; 7] = [
    ("p50_us", |r| r.p50_us),
    ("p99_us", |r| r.p99_us),
    ("p999_us", |r| r.p999_us),
    ("avg_us", |r| r.avg_us),
    ("max_us", |r| r.max_us),
    ("observations", |r| r.observations),
    ("dropped", |r| r.dropped),
];

/// The cell figures (except the breakdown), by their JSON names.
const CELL_FIELDS: [CellField; 11] = [
    ("tick_to_cache_p50_us", |r| r.t2c[0]),
    ("tick_to_cache_p99_us", |r| r.t2c[1]),
    ("tick_to_cache_p999_us", |r| r.t2c[2]),
    ("delivered_msgs_per_s", |r| r.delivered_rate),
    ("server_cpu_user_ns_per_msg", |r| r.server_user_ns),
    ("server_cpu_sys_ns_per_msg", |r| r.server_sys_ns),
    ("client_cpu_user_ns_per_msg", |r| r.client_user_ns),
    ("client_cpu_sys_ns_per_msg", |r| r.client_sys_ns),
    ("unrecovered", |r| r.unrecovered),
    ("messages_delivered", |r| r.delivered),
    ("messages_published", |r| r.published),
];

/// The two Markdown tables on stdout: the floor, then the cells.
pub(crate) fn print_tables(args: &Args, floors: &[Floor], cells: &[Cell], sockperf: bool) {
    println!(
        "rate {} msg/s, {} messages per cell run, {} repetitions (median, min–max in brackets); \
         floor: sockperf ping-pong -m {} -t {}, half round trip",
        args.rate, args.messages, args.runs, args.floor_msg_size, args.floor_secs
    );
    println!();
    println!("Kernel floor (sockperf, µs):");
    println!();
    println!("| path | p50 µs | p99 µs | p99.9 µs | runs ok |");
    println!("|---|---:|---:|---:|---:|");
    if !sockperf {
        println!("| (sockperf not installed) | n/a | n/a | n/a | 0 |");
    }
    for f in floors {
        if !sockperf {
            break;
        }
        println!(
            "| {} | {} | {} | {} | {}/{} |",
            f.key.label(),
            med_range(f.agg(|r| r.p50_us)),
            med_range(f.agg(|r| r.p99_us)),
            med_range(f.agg(|r| r.p999_us)),
            f.ok().count(),
            f.runs.len()
        );
    }
    println!();
    println!(
        "Tick-to-cache (µs; ratios: median over repetitions of run / floor run of the same repetition; \
         breakdown p50 / p99 µs; CPU ns per message):"
    );
    println!();
    let mut head = String::from(
        "| transport | mode | floor | p50 µs | p99 µs | p99.9 µs | p50 / floor p50 | p99 / floor p99 |",
    );
    for (_, label) in PARTS {
        let _ = write!(head, " {label} |");
    }
    head.push_str(
        " delivered msg/s | server user ns/msg | server sys ns/msg | client user ns/msg | client sys ns/msg | unrecovered | runs ok |",
    );
    println!("{head}");
    println!("|---|---|---|{}", "---:|".repeat(5 + PARTS.len() + 7));
    let x = |a: Agg| a.median.map_or("n/a".into(), |v| format!("{v:.2}×"));
    for c in cells {
        let key = FloorKey::for_cell(c.kind, c.mode);
        let floor = floor_of(floors, key);
        let mut row = format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.kind,
            c.mode.name(),
            key.label(),
            med_range(c.agg(|r| r.t2c[0])),
            med_range(c.agg(|r| r.t2c[1])),
            med_range(c.agg(|r| r.t2c[2])),
            x(c.ratio(floor, |r| r.t2c[0], |f| f.p50_us)),
            x(c.ratio(floor, |r| r.t2c[1], |f| f.p99_us)),
        );
        for i in 0..PARTS.len() {
            let p50 = c.agg(|r| r.parts[i].0).median;
            let p99 = c.agg(|r| r.parts[i].1).median;
            let _ = write!(row, " {} / {} |", num(p50), num(p99));
        }
        let unrecovered: f64 =
            c.runs.iter().filter_map(|r| r.as_ref().ok()?.unrecovered).sum::<f64>();
        let any_unrec = c.runs.iter().any(|r| r.as_ref().is_ok_and(|r| r.unrecovered.is_some()));
        let _ = write!(
            row,
            " {} | {} | {} | {} | {} | {} | {}/{} |",
            num(c.agg(|r| r.delivered_rate).median),
            num(c.agg(|r| r.server_user_ns).median),
            num(c.agg(|r| r.server_sys_ns).median),
            num(c.agg(|r| r.client_user_ns).median),
            num(c.agg(|r| r.client_sys_ns).median),
            if any_unrec { format!("{unrecovered:.0}") } else { "n/a".into() },
            c.runs.iter().filter(|r| r.is_ok()).count(),
            c.runs.len()
        );
        println!("{row}");
    }
    println!();
    println!(
        "(unrecovered: sum over the runs; n/a = not in the binaries' JSON, or not measured on that path)"
    );
}

/// Every figure: the configuration, each floor and cell with its summary
/// (median/min/max) and its runs (with the raw summaries and command lines).
pub(crate) fn to_json(
    args: &Args,
    floors: &[Floor],
    cells: &[Cell],
    sockperf: bool,
    interrupted: bool,
) -> Value {
    let floor_json: Vec<Value> = floors
        .iter()
        .map(|f| {
            let mut summary = serde_json::Map::new();
            for (name, get) in FLOOR_FIELDS {
                summary.insert(name.into(), f.agg(get).to_json());
            }
            let runs: Vec<Value> = f
                .runs
                .iter()
                .map(|r| match r {
                    Ok(r) => {
                        let mut m = serde_json::Map::new();
                        for (name, get) in FLOOR_FIELDS {
                            m.insert(name.into(), json!(get(r)));
                        }
                        Value::Object(m)
                    }
                    Err(e) => json!({ "error": e }),
                })
                .collect();
            json!({
                "label": f.key.label(),
                "net": match f.key.net { Net::Loopback => "loopback", Net::Netns => "netns" },
                "proto": match f.key.proto { Proto::Udp => "udp", Proto::Tcp => "tcp" },
                "poll": match f.key.poll { Poll::Blocking => "blocking", Poll::Busy => "busy" },
                "summary": summary,
                "runs": runs,
                "commands": f.commands,
            })
        })
        .collect();
    let cell_json: Vec<Value> = cells
        .iter()
        .map(|c| {
            let key = FloorKey::for_cell(c.kind, c.mode);
            let floor = floor_of(floors, key);
            let mut summary = serde_json::Map::new();
            for (name, get) in CELL_FIELDS {
                summary.insert(name.into(), c.agg(get).to_json());
            }
            for (i, (part, _)) in PARTS.iter().enumerate() {
                summary.insert(format!("{part}_p50_us"), c.agg(|r| r.parts[i].0).to_json());
                summary.insert(format!("{part}_p99_us"), c.agg(|r| r.parts[i].1).to_json());
            }
            summary.insert(
                "ratio_p50_to_floor_p50".into(),
                c.ratio(floor, |r| r.t2c[0], |f| f.p50_us).to_json(),
            );
            summary.insert(
                "ratio_p99_to_floor_p99".into(),
                c.ratio(floor, |r| r.t2c[1], |f| f.p99_us).to_json(),
            );
            summary.insert(
                "ratio_p999_to_floor_p999".into(),
                c.ratio(floor, |r| r.t2c[2], |f| f.p999_us).to_json(),
            );
            let runs: Vec<Value> = c
                .runs
                .iter()
                .zip(&c.commands)
                .map(|(r, cmd)| match r {
                    Ok(r) => {
                        let mut m = serde_json::Map::new();
                        for (name, get) in CELL_FIELDS {
                            m.insert(name.into(), json!(get(r)));
                        }
                        for (i, (part, _)) in PARTS.iter().enumerate() {
                            m.insert(format!("{part}_p50_us"), json!(r.parts[i].0));
                            m.insert(format!("{part}_p99_us"), json!(r.parts[i].1));
                        }
                        m.insert("server_command".into(), json!(cmd[0]));
                        m.insert("client_command".into(), json!(cmd[1]));
                        m.insert("server_summary".into(), r.server.clone());
                        m.insert("client_summary".into(), r.client.clone());
                        Value::Object(m)
                    }
                    Err(e) => json!({
                        "error": e, "server_command": cmd[0], "client_command": cmd[1],
                    }),
                })
                .collect();
            json!({
                "transport": c.kind.to_string(),
                "mode": c.mode.name(),
                "floor": key.label(),
                "summary": summary,
                "runs": runs,
            })
        })
        .collect();
    json!({
        "config": {
            "rate": args.rate,
            "messages": args.messages,
            "runs": args.runs,
            "floor_secs": args.floor_secs,
            "floor_msg_size": args.floor_msg_size,
            "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu,
            "linger_s": args.linger.as_secs_f64(),
            "verify": args.verify,
            "sockperf": sockperf,
            "interrupted": interrupted,
        },
        "floor": floor_json,
        "cells": cell_json,
    })
}
