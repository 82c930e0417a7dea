//! The kernel floor: the sockperf ping-pong configurations, one run of one,
//! and each configuration's runs.

use std::time::Duration;

use anyhow::bail;
use tickwire_bench::floor::{FloorRun, parse_sockperf};
use tickwire_bench::proc::{Proc, shown, strs, wait_all, wait_ready, wrap};
use tickwire_bench::stats::{Agg, agg};
use tickwire_transports::select::TransportKind;

use crate::args::{Args, Mode};
use crate::{Env, NS_PREFIX, NS_SERVER_IP};

/// sockperf protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    /// UDP (sockperf default).
    Udp,
    /// TCP (`--tcp`).
    Tcp,
}

/// sockperf receive mode: blocking sockets, or `--nonblocked` busy polling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poll {
    /// Blocking sockets, not pinned.
    Blocking,
    /// `--nonblocked` on both sides, pinned to different CPUs.
    Busy,
}

/// Where sockperf runs: host loopback, or across the xdp namespace topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Net {
    /// 127.0.0.1.
    Loopback,
    /// Server in `twlatsrv`, client in `twlatcli1`, over the bridge.
    Netns,
}

/// One floor configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FloorKey {
    /// Where.
    pub(crate) net: Net,
    /// Which protocol.
    pub(crate) proto: Proto,
    /// How the sockets wait.
    pub(crate) poll: Poll,
}

impl FloorKey {
    /// Short label, e.g. `udp busy` or `udp blocking (netns)`.
    pub(crate) fn label(self) -> String {
        let proto = match self.proto {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        };
        let poll = match self.poll {
            Poll::Blocking => "blocking",
            Poll::Busy => "busy",
        };
        match self.net {
            Net::Loopback => format!("{proto} {poll}"),
            Net::Netns => format!("{proto} {poll} (netns)"),
        }
    }

    /// The floor a transport in a mode is compared with.
    pub(crate) fn for_cell(kind: TransportKind, mode: Mode) -> FloorKey {
        let (net, proto) = match kind {
            TransportKind::Tcp => (Net::Loopback, Proto::Tcp),
            TransportKind::Multicast => (Net::Loopback, Proto::Udp),
            TransportKind::Xdp => (Net::Netns, Proto::Udp),
        };
        FloorKey { net, proto, poll: mode.poll() }
    }
}

/// One sockperf ping-pong run of `key` on `port`; the command lines are pushed to `cmds`.
pub(crate) fn floor_run(
    args: &Args,
    env: &Env,
    key: FloorKey,
    port: u16,
    tag: &str,
    cmds: &mut Vec<String>,
) -> anyhow::Result<FloorRun> {
    let (ip, srv_ns, cli_ns) = match key.net {
        Net::Loopback => ("127.0.0.1", None, None),
        Net::Netns => {
            (NS_SERVER_IP, Some(format!("{NS_PREFIX}srv")), Some(format!("{NS_PREFIX}cli1")))
        }
    };
    let (srv_cpu, cli_cpu) = match key.poll {
        Poll::Busy => (Some(args.server_cpu), Some(args.client_cpu)),
        Poll::Blocking => (None, None),
    };
    let mut extra = Vec::new();
    if key.proto == Proto::Tcp {
        extra.push("--tcp".to_string());
    }
    if key.poll == Poll::Busy {
        extra.push("--nonblocked".to_string());
    }
    let port_s = port.to_string();
    let mut srv = strs(&["sockperf", "server", "-i", ip, "-p", &port_s]);
    srv.extend(extra.iter().cloned());
    let srv = wrap(srv_ns.as_deref(), srv_cpu, srv);
    let secs = args.floor_secs.to_string();
    let size = args.floor_msg_size.to_string();
    let mut cli =
        strs(&["sockperf", "ping-pong", "-i", ip, "-p", &port_s, "-m", &size, "-t", &secs]);
    cli.extend(extra);
    let cli = wrap(cli_ns.as_deref(), cli_cpu, cli);
    eprintln!("latency:   {}", shown(&srv));
    eprintln!("latency:   {}", shown(&cli));
    cmds.push(shown(&srv));
    cmds.push(shown(&cli));

    let mut server = Proc::spawn("sockperf server", &srv, &env.dir, &format!("{tag}.srv"))?;
    let pid = server.child.id();
    wait_ready(&mut server, "listening", Duration::from_secs(10), &env.stop, || {
        tickwire_bench::proc::port_bound(pid, key.proto == Proto::Tcp, port)
    })?;
    let mut client = Proc::spawn("sockperf ping-pong", &cli, &env.dir, &format!("{tag}.cli"))?;
    wait_all(&mut [&mut client], Duration::from_secs(u64::from(args.floor_secs) + 30), &env.stop)?;
    drop(server);
    let r = parse_sockperf(&client.all_output());
    if r.p50_us.is_none() {
        bail!("no percentiles in sockperf's output:\n{}", client.stderr_tail(8));
    }
    Ok(r)
}

/// A floor configuration and its runs (one per repetition; `Err` = that run failed).
#[derive(Debug)]
pub(crate) struct Floor {
    /// The configuration.
    pub(crate) key: FloorKey,
    /// One per repetition, in order.
    pub(crate) runs: Vec<Result<FloorRun, String>>,
    /// The sockperf command lines run (server, client per repetition).
    pub(crate) commands: Vec<String>,
}

impl Floor {
    /// The runs that succeeded.
    pub(crate) fn ok(&self) -> impl Iterator<Item = &FloorRun> {
        self.runs.iter().filter_map(|r| r.as_ref().ok())
    }

    /// One figure over the successful runs.
    pub(crate) fn agg(&self, f: fn(&FloorRun) -> Option<f64>) -> Agg {
        agg(self.ok().map(f))
    }

    /// The run of repetition `rep`, if it succeeded.
    pub(crate) fn rep(&self, rep: usize) -> Option<&FloorRun> {
        self.runs.get(rep).and_then(|r| r.as_ref().ok())
    }
}
