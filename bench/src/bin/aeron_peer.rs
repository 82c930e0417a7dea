//! `aeron-peer`: the same job as a Tickwire server and client, done by Aeron,
//! so `compare` can put a real peer system in the same tables.
//!
//! ```sh
//! cargo build --release -p tickwire-bench --features aeron --bin aeron-peer
//! target/release/aeron-peer sub --channel 'aeron:udp?endpoint=239.255.9.9:40457|interface=127.0.0.1' --messages 100000 --json &
//! target/release/aeron-peer pub --channel 'aeron:udp?endpoint=239.255.9.9:40457|interface=127.0.0.1' --messages 100000 --rate 100000 --json
//! ```
//!
//! The job: `--messages` messages of 48 bytes (its sequence number, its due
//! time, 32 bytes derived from the sequence), published at `--rate` with
//! Tickwire's pacing rule (message `s` is due at `S + (s − 1)/R`, and is
//! offered as soon as it is due; at `--rate 0` as fast as the publication
//! takes them, each due when its offer starts), over one Aeron stream. The
//! subscriber checks every message in order (sequence and bytes), records
//! due → delivered (wall clock, as Tickwire's tick-to-cache) in the same
//! recorder as Tickwire's client (`tickwire_core::latency::Latency`: the same
//! HdrHistogram bounds and `.hgrm` format), and prints a `--json` summary whose keys are those of
//! Tickwire's client (`messages_delivered`, `last_seq`, `unrecovered`,
//! `rate`, `tick_to_cache_ns`, `cpu_user_s`...), so `compare` reads both alike.
//!
//! Each process embeds its own media driver (its own directory, so the
//! processes may sit in different network namespaces). `--driver` chooses
//! how it runs, since on 2 cores the choice decides Aeron's figures:
//! * `inline`: the driver's whole duty cycle (conductor, sender, receiver:
//!   `AERON_THREADING_MODE_SHARED`, manual main loop) runs on the
//!   publishing or subscribing thread, which busy-spins: Aeron's best
//!   latency here.
//! * `threads`: the default layout, a conductor, a sender and a receiver
//!   thread each with Aeron's default back-off idle strategy: its best
//!   throughput here.
//!
//! Loss: `--loss RATE` in the subscriber turns on the driver's own loss
//! interceptor for incoming data frames (`AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS=loss`),
//! seeded by `--loss-seed`, so Aeron's NAKs and retransmissions recover it.

use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use rusteron_client::{
    Aeron, AeronContext, AeronExclusivePublication, AeronSubscription, Handlers,
};
use rusteron_media_driver::bindings::aeron_threading_mode_enum;
use rusteron_media_driver::{AeronDriver, AeronDriverContext};
use tickwire_core::latency::Latency;

/// Bytes per message, as Tickwire's Quote.
const MESSAGE_LEN: usize = 48;
/// Aeron stream id of the job.
const STREAM_ID: i32 = 1001;
/// Fragments per subscription poll (Aeron's samples use 10; more per poll
/// lets a busy subscriber catch up after a stall).
const FRAGMENT_LIMIT: usize = 256;

#[derive(Parser, Debug)]
#[command(name = "aeron-peer", about = "Tickwire's comparison job, done by Aeron")]
struct Args {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// Publish the job's messages.
    Pub(Common),
    /// Receive them, check them, measure them.
    Sub(Common),
}

#[derive(clap::Args, Debug)]
struct Common {
    /// Aeron channel URI (e.g. `aeron:udp?endpoint=239.255.9.9:40457|interface=127.0.0.1`).
    #[arg(long)]
    channel: String,
    /// Messages in the session.
    #[arg(long)]
    messages: u64,
    /// Messages per second (0 = as fast as the publication takes them). Publisher only.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How the embedded media driver runs.
    #[arg(long, value_enum, default_value_t = DriverMode::Inline)]
    driver: DriverMode,
    /// Subscriber: random loss of incoming data frames in the driver (0..1).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Seed of the loss.
    #[arg(long, default_value_t = 1)]
    loss_seed: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
    /// Written once the stream is set up (subscriber: subscribed; publisher: connected).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Subscriber: write the tick-to-delivery histogram here (HdrHistogram V2 log).
    #[arg(long)]
    hdr_log: Option<PathBuf>,
    /// Publisher: keep the driver running after the last message (for the
    /// subscribers' NAKs and catch-up) until every `--done-file` exists, at
    /// most this long.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    linger: Duration,
    /// Publisher: the subscribers' `--done-file`s (comma-separated); the
    /// linger ends once they all exist. Subscriber: written when it stops.
    #[arg(long, value_delimiter = ',')]
    done_file: Vec<PathBuf>,
    /// Give up after this long without a message (subscriber) or a connection (publisher).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    idle_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DriverMode {
    /// The driver's duty cycle on the application thread, busy-spinning.
    Inline,
    /// The driver's default threads and idle strategies. (One shared
    /// driver thread, `AERON_THREADING_MODE_SHARED` with its own thread,
    /// measured 181k msgs/s at `--rate 0` against 396k for this layout.)
    Threads,
}

fn main() {
    let args = Args::parse();
    let r = match args.role {
        Role::Pub(c) => publish(&c),
        Role::Sub(c) => subscribe(&c),
    };
    if let Err(e) = r {
        eprintln!("aeron-peer: {e:#}");
        std::process::exit(1);
    }
}

fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The 32 bytes after the header of message `seq` (a cheap function of it,
/// so the subscriber checks every byte).
fn body_word(seq: u64, i: u64) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(i as u32 * 16) ^ i
}

fn encode(seq: u64, due_wall_ns: u64, buf: &mut [u8; MESSAGE_LEN]) {
    buf[0..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&due_wall_ns.to_le_bytes());
    for i in 0..4 {
        let at = 16 + 8 * i as usize;
        buf[at..at + 8].copy_from_slice(&body_word(seq, i).to_le_bytes());
    }
}

/// `(seq, due_wall_ns)` of a message whose bytes are what `encode` wrote.
fn decode(buf: &[u8]) -> Option<(u64, u64)> {
    if buf.len() != MESSAGE_LEN {
        return None;
    }
    let word = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
    let seq = word(0);
    (0..4).all(|i| word(16 + 8 * i as usize) == body_word(seq, i)).then(|| (seq, word(8)))
}

/// The due time of message `seq` (1-based) at `rate`, from the session start: Tickwire's rule.
fn due_offset(seq: u64, rate: u64) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(((seq - 1) as u128 * 1_000_000_000 / rate as u128) as u64)
}

/// User and system CPU seconds of this process (every thread: the embedded driver's too).
fn cpu_seconds() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct it is given and reads nothing else.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer to a live rusage.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

/// This process's embedded media driver.
struct Driver {
    driver: AeronDriver,
    inline: bool,
    dir: String,
}

impl Driver {
    fn start(mode: DriverMode, loss: Option<(f64, u64)>) -> anyhow::Result<Driver> {
        if let Some((rate, seed)) = loss {
            // Read by the driver when its first receive channel opens.
            // SAFETY: set before any other thread exists (the driver and the
            // client start below), so nothing reads the environment concurrently.
            unsafe {
                std::env::set_var("AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS", "loss");
                // Mask bit 1 << 1: data frames (HDR_TYPE_DATA = 1) only.
                std::env::set_var(
                    "AERON_UDP_CHANNEL_TRANSPORT_BINDINGS_LOSS_ARGS",
                    format!("rate={rate}|seed={seed}|recv-msg-mask=0x2"),
                );
            }
        }
        let ctx = AeronDriverContext::new().map_err(|e| anyhow!("driver context: {e:?}"))?;
        let dir = format!("/dev/shm/tickwire-aeron-{}-{}", std::process::id(), wall_ns());
        let c = |e| anyhow!("driver setting: {e:?}");
        ctx.set_dir(&CString::new(dir.clone())?).map_err(c)?;
        ctx.set_dir_delete_on_start(true).map_err(c)?;
        ctx.set_dir_delete_on_shutdown(true).map_err(c)?;
        // Latency-sensitive streams: non-sparse, pre-touched term buffers (Aeron's advice).
        ctx.set_term_buffer_sparse_file(false).map_err(c)?;
        let inline = mode == DriverMode::Inline;
        if inline {
            ctx.set_threading_mode(aeron_threading_mode_enum::AERON_THREADING_MODE_SHARED)
                .map_err(c)?;
        }
        let driver = AeronDriver::new(&ctx).map_err(|e| anyhow!("starting the driver: {e:?}"))?;
        driver.start(inline).map_err(|e| anyhow!("starting the driver: {e:?}"))?;
        Ok(Driver { driver, inline, dir })
    }

    /// One round of the driver's duty cycle when it runs inline; nothing otherwise.
    fn work(&self) {
        if self.inline {
            let _ = self.driver.main_do_work();
        }
    }

    /// A client of this driver (its conductor on a thread of its own).
    fn client(&self) -> anyhow::Result<Aeron> {
        let ctx = AeronContext::new().map_err(|e| anyhow!("client context: {e:?}"))?;
        ctx.set_dir(&CString::new(self.dir.clone())?).map_err(|e| anyhow!("{e:?}"))?;
        ctx.set_pre_touch_mapped_memory(true).map_err(|e| anyhow!("{e:?}"))?;
        ctx.set_error_handler(Some(|code: i32, msg: &str| eprintln!("aeron error {code}: {msg}")))
            .map_err(|e| anyhow!("{e:?}"))?;
        let aeron = Aeron::new(&ctx).map_err(|e| anyhow!("client: {e:?}"))?;
        aeron.start().map_err(|e| anyhow!("client start: {e:?}"))?;
        Ok(aeron)
    }

    /// Run the driver (inline: on this thread) until `done` or `limit`.
    fn wait_for(&self, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
        let t = Instant::now();
        while t.elapsed() < limit {
            if done() {
                return true;
            }
            self.work();
            if !self.inline {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        done()
    }
}

fn ready(path: &Option<PathBuf>) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, b"ready\n").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn publication(
    d: &Driver,
    aeron: &Aeron,
    channel: &str,
) -> anyhow::Result<AeronExclusivePublication> {
    let uri = CString::new(channel)?;
    let pending = aeron
        .async_add_exclusive_publication(&uri, STREAM_ID)
        .map_err(|e| anyhow!("adding the publication {channel}: {e:?}"))?;
    let mut found = None;
    d.wait_for(Duration::from_secs(5), || {
        if let Ok(Some(p)) = pending.poll() {
            found = Some(p);
        }
        found.is_some()
    });
    found.ok_or_else(|| anyhow!("the driver did not add the publication {channel} in 5 s"))
}

fn subscription(d: &Driver, aeron: &Aeron, channel: &str) -> anyhow::Result<AeronSubscription> {
    let uri = CString::new(channel)?;
    let pending = aeron
        .async_add_subscription(&uri, STREAM_ID, Handlers::NONE, Handlers::NONE)
        .map_err(|e| anyhow!("adding the subscription {channel}: {e:?}"))?;
    let mut found = None;
    d.wait_for(Duration::from_secs(5), || {
        if let Ok(Some(s)) = pending.poll() {
            found = Some(s);
        }
        found.is_some()
    });
    found.ok_or_else(|| anyhow!("the driver did not add the subscription {channel} in 5 s"))
}

fn publish(a: &Common) -> anyhow::Result<()> {
    let d = Driver::start(a.driver, None)?;
    let aeron = d.client()?;
    let publication = publication(&d, &aeron, &a.channel)?;
    if !d.wait_for(a.idle_timeout, || publication.is_connected()) {
        bail!("no subscriber connected to {} within {:?}", a.channel, a.idle_timeout);
    }
    // Multicast receivers that joined before the first message all see it:
    // give the other subscribers' images time to link (setup frames, status
    // messages) before message 1.
    d.wait_for(Duration::from_millis(300), || false);
    ready(&a.ready_file)?;
    let start = Instant::now();
    let start_wall = wall_ns();
    let mut buf = [0u8; MESSAGE_LEN];
    let mut back_pressured = 0u64;
    for seq in 1..=a.messages {
        let due = due_offset(seq, a.rate);
        if a.rate > 0 {
            while start.elapsed() < due {
                d.work();
                std::hint::spin_loop();
            }
        }
        let due_wall = if a.rate > 0 { start_wall + due.as_nanos() as u64 } else { wall_ns() };
        encode(seq, due_wall, &mut buf);
        loop {
            match publication.offer(&buf) {
                Ok(_) => break,
                Err(e) if e.is_retryable() => {
                    back_pressured += 1;
                    d.work();
                }
                Err(e) => bail!("offer of message {seq} failed: {e:?}"),
            }
        }
        d.work();
    }
    let secs = start.elapsed().as_secs_f64();
    d.wait_for(a.linger, || !a.done_file.is_empty() && a.done_file.iter().all(|f| f.exists()));
    let (user, sys) = cpu_seconds();
    let rate = a.messages as f64 / secs.max(1e-9);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "peer": "aeron", "role": "pub", "driver": format!("{:?}", a.driver).to_lowercase(),
                "messages": a.messages, "rate": rate, "back_pressured": back_pressured,
                "cpu_user_s": user, "cpu_sys_s": sys, "channel": a.channel,
            })
        );
    } else {
        println!(
            "aeron-peer pub: {} messages in {secs:.3} s ({rate:.0}/s), {back_pressured} back-pressured offers",
            a.messages
        );
    }
    Ok(())
}

/// What the subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    delivered: u64,
    last_seq: u64,
    out_of_order: u64,
    corrupt: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Seen {
    /// One message: checked in order, its latency recorded.
    fn on_message(&mut self, bytes: &[u8], hist: &mut Latency, now: Instant) {
        let Some((seq, due)) = decode(bytes) else {
            self.corrupt += 1;
            return;
        };
        if seq != self.last_seq + 1 {
            self.out_of_order += 1;
        }
        self.last_seq = seq;
        self.delivered += 1;
        self.first.get_or_insert(now);
        self.last = Some(now);
        hist.record_between(due, wall_ns());
    }
}

fn subscribe(a: &Common) -> anyhow::Result<()> {
    let loss = (a.loss > 0.0).then_some((a.loss, a.loss_seed));
    let d = Driver::start(a.driver, loss)?;
    let aeron = d.client()?;
    let sub = subscription(&d, &aeron, &a.channel)?;
    ready(&a.ready_file)?;
    let mut hist = Latency::new();
    let mut seen = Seen::default();
    let mut last_progress = Instant::now();
    let mut started = false;
    while seen.delivered < a.messages && !(seen.corrupt > 0 && seen.out_of_order > 0) {
        d.work();
        let n = sub
            .poll_fn(|buf, _h| seen.on_message(buf, &mut hist, Instant::now()), FRAGMENT_LIMIT)
            .map_err(|e| anyhow!("poll: {e:?}"))?;
        if n > 0 {
            last_progress = Instant::now();
            started = true;
        } else if last_progress.elapsed() > a.idle_timeout {
            eprintln!(
                "aeron-peer sub: nothing for {:?} {}: stopping at {} of {}",
                a.idle_timeout,
                if started { "after the last message" } else { "since start" },
                seen.delivered,
                a.messages
            );
            break;
        } else if !d.inline {
            std::hint::spin_loop();
        }
    }
    for f in &a.done_file {
        std::fs::write(f, b"done\n").with_context(|| format!("writing {}", f.display()))?;
    }
    let (user, sys) = cpu_seconds();
    let flowed = match (seen.first, seen.last) {
        (Some(f), Some(l)) if l > f => (l - f).as_secs_f64(),
        _ => 0.0,
    };
    let rate = if flowed > 0.0 { seen.delivered.saturating_sub(1) as f64 / flowed } else { 0.0 };
    if let Some(p) = &a.hdr_log {
        let mut text = String::new();
        hist.write_hgrm(&mut text).map_err(|e| anyhow!("{e}"))?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    let l = hist.summary();
    let missing = a.messages.saturating_sub(seen.delivered);
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "peer": "aeron", "role": "sub", "driver": format!("{:?}", a.driver).to_lowercase(),
                "messages_delivered": seen.delivered, "last_seq": seen.last_seq,
                "unrecovered": missing, "out_of_order": seen.out_of_order, "corrupt": seen.corrupt,
                "rate": rate, "cpu_user_s": user, "cpu_sys_s": sys, "loss": a.loss,
                "tick_to_cache_ns": {
                    "count": l.count, "p50": l.p50, "p99": l.p99, "p999": l.p999,
                    "max": l.max, "skewed": l.skewed,
                },
            })
        );
    } else {
        println!(
            "aeron-peer sub: {} of {} messages in order ({} out of order, {} corrupt), {rate:.0}/s, due→delivered p50 {} ns p99 {} ns",
            seen.delivered, a.messages, seen.out_of_order, seen.corrupt, l.p50, l.p99
        );
    }
    if seen.corrupt > 0 || seen.out_of_order > 0 {
        bail!("{} corrupt and {} out-of-order messages", seen.corrupt, seen.out_of_order);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips_and_a_flipped_byte_is_caught() {
        let mut buf = [0u8; MESSAGE_LEN];
        encode(42, 1_000_000_123, &mut buf);
        assert_eq!(decode(&buf), Some((42, 1_000_000_123)));
        buf[40] ^= 1;
        assert_eq!(decode(&buf), None);
        assert_eq!(decode(&buf[..47]), None);
    }

    #[test]
    fn due_times_follow_tickwires_rule() {
        assert_eq!(due_offset(1, 100_000), Duration::ZERO);
        assert_eq!(due_offset(2, 100_000), Duration::from_micros(10));
        assert_eq!(due_offset(100_001, 100_000), Duration::from_secs(1));
        assert_eq!(due_offset(7, 0), Duration::ZERO);
    }

    #[test]
    fn the_subscriber_counts_order_and_corruption() {
        let mut h = Latency::new();
        let mut s = Seen::default();
        let mut buf = [0u8; MESSAGE_LEN];
        let now = Instant::now();
        for seq in [1, 2, 4] {
            encode(seq, wall_ns(), &mut buf);
            s.on_message(&buf, &mut h, now);
        }
        s.on_message(&[0u8; 10], &mut h, now);
        assert_eq!((s.delivered, s.last_seq, s.out_of_order, s.corrupt), (3, 4, 1, 1));
        assert_eq!(h.count(), 3);
    }
}
