//! The kernel floor: `sockperf ping-pong` (half round trip latency) and
//! `sockperf throughput` (datagrams per second) over the same path a cell
//! uses, measured in the same run as the cells.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;

use crate::netns::Topology;
use crate::proc::{Proc, port_bound, shown, strs, wrap};

/// Where a floor (or a cell) runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Net {
    /// Host loopback, 127.0.0.1.
    Loopback,
    /// The namespace topology: server and clients behind a bridge.
    Netns,
}

impl Net {
    /// `loopback` or `netns`.
    pub fn name(self) -> &'static str {
        match self {
            Net::Loopback => "loopback",
            Net::Netns => "netns",
        }
    }
}

/// What sockperf measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Test {
    /// `ping-pong`, 48-byte messages, blocking sockets.
    PingPong,
    /// `throughput`, 1472-byte datagrams (UDP) or messages (TCP).
    Throughput,
}

/// One floor configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FloorKey {
    /// Where.
    pub net: Net,
    /// TCP (`--tcp`) or UDP.
    pub tcp: bool,
    /// Which test.
    pub test: Test,
}

impl FloorKey {
    /// Short label, e.g. `udp ping-pong (loopback)`.
    pub fn label(self) -> String {
        let proto = if self.tcp { "tcp" } else { "udp" };
        let test = match self.test {
            Test::PingPong => "ping-pong",
            Test::Throughput => "throughput",
        };
        format!("{proto} {test} ({})", self.net.name())
    }
}

/// One sockperf run's figures (µs for latency, half round trip).
#[derive(Debug, Clone, Default, Serialize)]
pub struct FloorRun {
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile, µs.
    pub p99_us: Option<f64>,
    /// 99.9th percentile, µs.
    pub p999_us: Option<f64>,
    /// Largest observation, µs.
    pub max_us: Option<f64>,
    /// Mean latency (`avg-latency`), µs.
    pub avg_us: Option<f64>,
    /// Observations in the valid duration (ping-pong; a count, not µs).
    pub observations: Option<f64>,
    /// Dropped messages (ping-pong; a count, not µs).
    pub dropped: Option<f64>,
    /// Messages per second sent (throughput test).
    pub msgs_per_s: Option<f64>,
}

/// Remove ANSI colour sequences (sockperf colours some lines).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The first number in `s` (after skipping spaces and `=`).
pub fn lead_num(s: &str) -> Option<f64> {
    let s = s.trim_start_matches([' ', '=']);
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).unwrap_or(s.len());
    s[..end].parse().ok()
}

/// Parse sockperf's output: `---> percentile 50.000 =   38.712`,
/// `====> avg-latency=37.319 (std-dev=...)`, `---> <MAX> observation = ...`,
/// `Total N observations`, `# dropped messages = N; ...` (ping-pong, µs, half
/// round trip), `Summary: Message Rate is 103947 [msg/sec]` (throughput).
pub fn parse_sockperf(text: &str) -> FloorRun {
    let text = strip_ansi(text);
    let mut r = FloorRun::default();
    for line in text.lines() {
        let after = |key: &str| line.find(key).and_then(|i| lead_num(&line[i + key.len()..]));
        if let Some(v) = after("percentile 50.000") {
            r.p50_us = Some(v);
        } else if let Some(v) = after("percentile 99.000") {
            r.p99_us = Some(v);
        } else if let Some(v) = after("percentile 99.900") {
            r.p999_us = Some(v);
        } else if let Some(v) = after("<MAX> observation") {
            r.max_us = Some(v);
        } else if let Some(v) = after("avg-latency=") {
            r.avg_us = Some(v);
        } else if let Some(v) = after("Total ") {
            r.observations = Some(v);
        } else if let Some(v) = after("Message Rate is") {
            r.msgs_per_s = Some(v);
        }
        if let Some(v) = after("# dropped messages") {
            r.dropped = Some(v);
        }
    }
    r
}

/// True when `sockperf` can be started from `PATH`.
pub fn sockperf_available() -> bool {
    crate::proc::available("sockperf", "--version")
}

/// The sockperf server and client command lines of `key` on `port`.
pub fn commands(
    key: FloorKey,
    port: u16,
    secs: u32,
    topo: Option<&Topology>,
) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let (ip, srv_ns, cli_ns) = match key.net {
        Net::Loopback => ("127.0.0.1".to_string(), None, None),
        Net::Netns => {
            let Some(t) = topo else { bail!("no namespace topology") };
            (t.server_ip(), Some(t.server_ns()), Some(t.client_ns(0)))
        }
    };
    let port_s = port.to_string();
    let mut srv = strs(&["sockperf", "server", "-i", &ip, "-p", &port_s]);
    let (test, size) = match key.test {
        Test::PingPong => ("ping-pong", "48"),
        Test::Throughput => ("throughput", "1472"),
    };
    let secs = secs.to_string();
    let mut cli = strs(&["sockperf", test, "-i", &ip, "-p", &port_s, "-m", size, "-t", &secs]);
    if key.tcp {
        srv.push("--tcp".into());
        cli.push("--tcp".into());
    }
    Ok((wrap(srv_ns.as_deref(), None, srv), wrap(cli_ns.as_deref(), None, cli)))
}

/// Run one sockperf server + client pair; `tag` names the output files in `dir`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    key: FloorKey,
    srv: &[String],
    cli: &[String],
    port: u16,
    secs: u32,
    dir: &std::path::Path,
    tag: &str,
    stop: &AtomicBool,
) -> anyhow::Result<FloorRun> {
    let mut server = Proc::spawn("sockperf server", srv, dir, &format!("{tag}.srv"))?;
    let pid = server.child.id();
    crate::proc::wait_ready(&mut server, "listening", Duration::from_secs(10), stop, || {
        port_bound(pid, key.tcp, port)
    })?;
    let mut client = Proc::spawn("sockperf client", cli, dir, &format!("{tag}.cli"))?;
    crate::proc::wait_all(&mut [&mut client], Duration::from_secs(u64::from(secs) + 30), stop)?;
    drop(server);
    let r = parse_sockperf(&client.all_output());
    if r.p50_us.is_none() && r.msgs_per_s.is_none() {
        bail!("no figures in sockperf's output ({}):\n{}", shown(cli), client.stderr_tail(8));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_pong_and_throughput() {
        let pp = "sockperf: [Total Run] RunTime=3.100 sec; Warm up time=400 msec; SentMessages=1\n\
                  sockperf: ====> avg-latency=37.319 (std-dev=1.245, mean-ad=0.541)\n\
                  sockperf: # dropped messages = 2; # duplicated messages = 0\n\
                  sockperf: Total 30726 observations; each percentile contains 307.26 observations\n\
                  sockperf: ---> <MAX> observation =  120.5\n\
                  sockperf: ---> percentile 99.900 =   53.1\n\
                  sockperf: ---> percentile 99.000 =   33.0\n\
                  sockperf: ---> percentile 50.000 =    1.8\n";
        let r = parse_sockperf(pp);
        assert_eq!(
            (r.p50_us, r.p99_us, r.p999_us, r.max_us),
            (Some(1.8), Some(33.0), Some(53.1), Some(120.5))
        );
        assert_eq!((r.avg_us, r.observations, r.dropped), (Some(37.319), Some(30726.0), Some(2.0)));
        assert_eq!(r.msgs_per_s, None);
        let tp = "sockperf: Total of 936457 messages sent in 1.100 sec\n\
                  sockperf: Summary: Message Rate is 103947 [msg/sec]\n";
        let r = parse_sockperf(tp);
        assert_eq!(r.msgs_per_s, Some(103947.0));
        assert_eq!((r.p50_us, r.avg_us, r.observations, r.dropped), (None, None, None, None));
    }

    #[test]
    fn strips_colours_before_parsing() {
        let pp = "sockperf: \u{1b}[2;35m---> percentile 50.000 =    4.25\u{1b}[0m\n";
        assert_eq!(parse_sockperf(pp).p50_us, Some(4.25));
    }
}
