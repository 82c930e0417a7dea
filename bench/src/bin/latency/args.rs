//! The command line: the flags and the idle modes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tickwire_transports::select::{TransportKind, parse_duration};

use crate::floor::Poll;

/// Tick-to-cache latency of the transports and idle modes, against the sockperf floor.
#[derive(Debug, Parser)]
#[command(name = "latency")]
pub(crate) struct Args {
    /// Transports to measure (xdp needs root and binaries built with --features xdp).
    #[arg(long, value_delimiter = ',', default_value = "tcp,multicast")]
    pub(crate) transports: Vec<TransportKind>,
    /// Idle modes: default (no idle flags), spin (both sides spin on their
    /// own CPU), coalesce (server --max-delay 100us --idle block).
    #[arg(long, value_delimiter = ',', default_value = "default,spin")]
    pub(crate) modes: Vec<Mode>,
    /// Messages per second the server publishes.
    #[arg(long, default_value_t = 100_000)]
    pub(crate) rate: u64,
    /// Messages per cell run.
    #[arg(long, default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) messages: u64,
    /// Repetitions (floor and every cell each time; medians are reported).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) runs: u32,
    /// Seconds of each sockperf ping-pong run (sockperf -t).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=600))]
    pub(crate) floor_secs: u32,
    /// sockperf message size in bytes (sockperf -m; a Tickwire packet of one message is about this).
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(14..=65000))]
    pub(crate) floor_msg_size: u32,
    /// CPU of the server side in busy-poll floor runs and spin cells.
    #[arg(long, default_value_t = 0)]
    pub(crate) server_cpu: usize,
    /// CPU of the client side in busy-poll floor runs and spin cells.
    #[arg(long, default_value_t = 1)]
    pub(crate) client_cpu: usize,
    /// Server --linger after the session (recovery requests after the last message).
    #[arg(long, default_value = "300ms", value_parser = parse_duration)]
    pub(crate) linger: Duration,
    /// Verify every message against the seed in the client (costs client CPU).
    #[arg(long)]
    pub(crate) verify: bool,
    /// Directory holding the `server` and `client` binaries (default: next to this one).
    #[arg(long)]
    pub(crate) bin_dir: Option<PathBuf>,
    /// Directory holding topology.sh (xdp only; default: the source tree's xdp-setup).
    #[arg(long)]
    pub(crate) xdp_setup: Option<PathBuf>,
    /// First port; every floor run and cell run gets its own two ports above it.
    #[arg(long, default_value_t = 19_500, value_parser = clap::value_parser!(u16).range(1024..))]
    pub(crate) base_port: u16,
    /// Where the processes' stdout/stderr and ready files go (default: a new directory in /tmp).
    #[arg(long)]
    pub(crate) out_dir: Option<PathBuf>,
    /// Write every figure (and each run's raw JSON summaries) to this file.
    #[arg(long)]
    pub(crate) json_out: Option<PathBuf>,
}

/// How the server and client wait for work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    /// No idle flags: each binary's default strategy.
    Default,
    /// Server `--idle spin --cpu S`, client `--idle spin --cpu C`.
    Spin,
    /// Server `--max-delay 100us --idle block`, client default.
    Coalesce,
}

impl Mode {
    /// The flag value, for tables and logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Default => "default",
            Mode::Spin => "spin",
            Mode::Coalesce => "coalesce",
        }
    }

    /// The floor poll mode this idle mode is compared with.
    pub(crate) fn poll(self) -> Poll {
        match self {
            Mode::Spin => Poll::Busy,
            Mode::Default | Mode::Coalesce => Poll::Blocking,
        }
    }
}
