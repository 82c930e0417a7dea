//! `tickwire-pcap`: what a capture holds, per second and overall.
//!
//! ```text
//! tickwire-pcap capture.pcapng            # a table
//! tickwire-pcap capture.pcapng --json     # one JSON object
//! ```
//!
//! Reads every Tickwire packet of a pcapng capture (`client --record`, or
//! tcpdump on the feed's interface) and reports, for the first session that
//! carried messages: messages per second (first copies), sequence gaps of
//! the live stream (both lines merged) and the messages missing in them,
//! retransmissions, duplicates, A/B wins (which line brought each sequence
//! first), and the inter-arrival histogram of the live `Data` packets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use tickwire_core::wire::{Packet, PacketKind};
use tickwire_transports::pcap::CaptureReader;

/// Summarise a Tickwire capture (pcapng).
#[derive(Debug, Parser)]
#[command(name = "tickwire-pcap", version)]
struct Args {
    /// The capture file.
    capture: PathBuf,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Default, serde::Serialize)]
struct Report {
    datagrams: u64,
    foreign: u64,
    bad_crc: u64,
    packets: u64,
    epoch: u64,
    other_epochs: u64,
    data_packets: u64,
    heartbeats: u64,
    snapshot_parts: u64,
    retransmission_packets: u64,
    messages: u64,
    retransmitted_messages: u64,
    duplicate_messages: u64,
    gaps: u64,
    messages_missing_in_gaps: u64,
    line_a_won: u64,
    line_b_won: u64,
    end_of_session: bool,
    /// Messages (first copies) per second from the first packet.
    per_second: Vec<u64>,
    /// Inter-arrival of live Data packets, ns.
    inter_arrival_ns: Percentiles,
    damaged: Option<String>,
}

#[derive(Debug, Default, serde::Serialize)]
struct Percentiles {
    count: u64,
    p50: u64,
    p90: u64,
    p99: u64,
    p999: u64,
    max: u64,
    mean: f64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut reader = CaptureReader::open(&args.capture)?;
    let mut r = Report::default();
    let mut seen: BTreeMap<u64, ()> = BTreeMap::new();
    let mut epoch = None;
    let mut next_live: Option<u64> = None;
    let mut t0 = None;
    let mut last_data_ts: Option<u64> = None;
    let mut hist = Histogram::<u64>::new(3).context("histogram")?;
    for dg in reader.by_ref() {
        r.datagrams += 1;
        let Ok(p) = Packet::new_checked(dg.payload.as_slice()) else {
            r.foreign += 1;
            continue;
        };
        if p.verify_crc().is_err() {
            r.bad_crc += 1;
            continue;
        }
        r.packets += 1;
        let kind = p.kind();
        if kind.to_byte() >= 16 {
            continue; // requests (a capture taken at the server)
        }
        if *epoch.get_or_insert(p.epoch()) != p.epoch() {
            r.other_epochs += 1;
            continue;
        }
        let t = *t0.get_or_insert(dg.ts_ns);
        let first = p.first_seq().0;
        let count = u64::from(p.count());
        let line_b = p.flags() & 1 == 1;
        match kind {
            PacketKind::Data | PacketKind::Heartbeat => {
                if kind == PacketKind::Data {
                    r.data_packets += 1;
                    if let Some(prev) = last_data_ts {
                        let _ = hist.record(dg.ts_ns.saturating_sub(prev));
                    }
                    last_data_ts = Some(dg.ts_ns);
                } else {
                    r.heartbeats += 1;
                }
                let end = first + if kind == PacketKind::Data { count } else { 0 };
                if let Some(e) = next_live
                    && first > e
                {
                    r.gaps += 1;
                    r.messages_missing_in_gaps += first - e;
                }
                next_live = Some(next_live.map_or(end, |e| e.max(end)));
            }
            PacketKind::Retransmission => {
                r.retransmission_packets += 1;
                r.retransmitted_messages += count;
            }
            PacketKind::Snapshot => r.snapshot_parts += 1,
            PacketKind::EndOfSession => r.end_of_session = true,
            _ => {}
        }
        if matches!(kind, PacketKind::Data | PacketKind::Retransmission) {
            for s in first..first + count {
                if seen.insert(s, ()).is_some() {
                    r.duplicate_messages += 1;
                    continue;
                }
                r.messages += 1;
                if kind == PacketKind::Data {
                    if line_b {
                        r.line_b_won += 1;
                    } else {
                        r.line_a_won += 1;
                    }
                }
                let sec = (dg.ts_ns.saturating_sub(t) / 1_000_000_000) as usize;
                if r.per_second.len() <= sec {
                    r.per_second.resize(sec + 1, 0);
                }
                r.per_second[sec] += 1;
            }
        }
    }
    r.foreign += reader.stats().foreign;
    r.damaged = reader.stats().damaged.clone();
    r.epoch = epoch.unwrap_or(0);
    r.inter_arrival_ns = Percentiles {
        count: hist.len(),
        p50: hist.value_at_quantile(0.5),
        p90: hist.value_at_quantile(0.9),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
        mean: hist.mean(),
    };
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!("capture           {}", args.capture.display());
    println!(
        "datagrams         {} ({} not Tickwire, {} bad CRC{})",
        r.datagrams,
        r.foreign,
        r.bad_crc,
        r.damaged.as_ref().map(|d| format!(", ends damaged: {d}")).unwrap_or_default()
    );
    println!("session           epoch {} ({} packets of other sessions)", r.epoch, r.other_epochs);
    println!(
        "packets           {} Data, {} Heartbeat, {} Retransmission, {} Snapshot parts, end of session {}",
        r.data_packets,
        r.heartbeats,
        r.retransmission_packets,
        r.snapshot_parts,
        if r.end_of_session { "seen" } else { "not seen" }
    );
    println!(
        "messages          {} distinct, {} retransmitted, {} duplicate copies",
        r.messages, r.retransmitted_messages, r.duplicate_messages
    );
    println!(
        "gaps (live)       {} gaps, {} messages missing in them",
        r.gaps, r.messages_missing_in_gaps
    );
    println!("A/B wins          A {} B {}", r.line_a_won, r.line_b_won);
    let h = &r.inter_arrival_ns;
    println!(
        "inter-arrival     Data packets, us: p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} mean {:.1} ({} samples)",
        h.p50 as f64 / 1e3,
        h.p90 as f64 / 1e3,
        h.p99 as f64 / 1e3,
        h.p999 as f64 / 1e3,
        h.max as f64 / 1e3,
        h.mean / 1e3,
        h.count
    );
    println!("messages/s        {:?}", r.per_second);
    Ok(())
}
