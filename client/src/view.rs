//! The live terminal view: every 500 ms, rate, sequence, gaps and recoveries,
//! latency percentiles and the most active symbols. On a terminal it redraws in
//! place; otherwise (a log file, CI) it prints one line per refresh.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use tickwire_core::cache::{CacheReader, Freshness};
use tickwire_core::latency::TickToCache;
use tickwire_core::recovery::{Order, Receiver};
use tickwire_core::{Instant, PRICE_SCALE};

/// Refresh period of the live view.
pub const REFRESH: Duration = Duration::from_millis(500);
/// Symbols listed in the "most active" table.
const TOP_SYMBOLS: usize = 8;

/// Draws the live view on stderr.
#[derive(Debug)]
pub struct LiveView {
    enabled: bool,
    tty: bool,
    last: Option<Instant>,
    last_delivered: u64,
    out: String,
}

fn px(units: i64) -> String {
    format!("{:.2}", units as f64 / PRICE_SCALE as f64)
}

fn us(ns: u64) -> String {
    if ns >= 1_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.1}µs", ns as f64 / 1e3)
    }
}

impl LiveView {
    /// A view; `enabled = false` draws nothing.
    pub fn new(enabled: bool) -> LiveView {
        LiveView {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last: None,
            last_delivered: 0,
            out: String::new(),
        }
    }

    /// Redraw if [`REFRESH`] has passed since the last draw.
    pub fn maybe_draw(
        &mut self,
        now: Instant,
        rx: &Receiver,
        lat: &TickToCache,
        cache: &CacheReader,
        activity: &[u64],
    ) {
        if !self.enabled {
            return;
        }
        let Some(last) = self.last else {
            self.last = Some(now);
            return;
        };
        let dt = now.saturating_duration_since(last);
        if dt < REFRESH {
            return;
        }
        self.last = Some(now);
        let st = rx.stats();
        let rate = (st.messages_delivered - self.last_delivered) as f64 / dt.as_secs_f64();
        self.last_delivered = st.messages_delivered;
        let s = lat.tick_to_cache.summary();
        let sent = lat.due_to_sent.summary();
        let kernel = lat.sent_to_kernel.summary();
        let wake = lat.kernel_to_app.summary();
        self.out.clear();
        let o = &mut self.out;
        if self.tty {
            o.push_str("\x1b[H\x1b[2J");
            let _ = writeln!(
                o,
                "tickwire client   epoch {}   t={:.1}s",
                rx.epoch().map_or_else(|| "-".to_string(), |e| e.to_string()),
                now.as_nanos() as f64 / 1e9
            );
            let _ = writeln!(
                o,
                "rate {rate:>12.0} msg/s   delivered {:>12}   next seq {}",
                st.messages_delivered,
                rx.next_expected()
            );
            let _ = writeln!(
                o,
                "gaps {} (missed {})   filled: retransmit {} snapshot {}   unrecovered {}   dup {}   crc {}   malformed {}   nacks {}",
                st.gaps_detected,
                st.messages_missed,
                st.gaps_filled_retransmit,
                st.gaps_covered_snapshot,
                st.unrecovered,
                st.duplicates,
                st.bad_crc,
                st.malformed,
                st.nacks_sent
            );
            if rx.config().order == Order::PerSymbol {
                let _ = writeln!(
                    o,
                    "per-symbol order: stale now {}   stale periods {}   applied ahead of a hole {}   held {}",
                    rx.stale_symbols(),
                    st.stale_periods,
                    st.messages_ahead,
                    st.messages_held
                );
            }
            let r = st.rtt;
            let _ = writeln!(
                o,
                "recovery p50 {}   p99 {}   rtt: srtt {}   rttvar {}   rto {}   ({} samples)",
                us(st.recovery_percentile(50.0)),
                us(st.recovery_percentile(99.0)),
                us(r.srtt_ns),
                us(r.rttvar_ns),
                us(r.rto_ns),
                r.samples
            );
            let _ = writeln!(
                o,
                "tick-to-cache p50 {}   p99 {}   p99.9 {}   max {}   (n={})",
                us(s.p50),
                us(s.p99),
                us(s.p999),
                us(s.max),
                s.count
            );
            let _ = writeln!(
                o,
                "  p50 parts: due->sent {}   sent->kernel {}   kernel->app {}",
                us(sent.p50),
                if kernel.count == 0 { "n/a".into() } else { us(kernel.p50) },
                if wake.count == 0 { "n/a".into() } else { us(wake.p50) },
            );
            let _ = writeln!(
                o,
                "\n{:>8} {:>10} {:>12} {:>12} {:>12}  state",
                "symbol", "updates", "bid", "ask", "last"
            );
            let wall_now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let mut top: Vec<(usize, u64)> =
                activity.iter().copied().enumerate().filter(|(_, n)| *n > 0).collect();
            top.sort_unstable_by_key(|e| std::cmp::Reverse(e.1));
            for (sym, _) in top.into_iter().take(TOP_SYMBOLS) {
                if let Some(q) = cache.read(sym as u32) {
                    let state = match cache.freshness(sym as u32) {
                        Some(Freshness::Stale { since_ns, reason }) => {
                            let age = wall_now.saturating_sub(since_ns);
                            format!("stale {} ({reason:?})", us(age))
                        }
                        _ => "fresh".to_string(),
                    };
                    let _ = writeln!(
                        o,
                        "{:>8} {:>10} {:>12} {:>12} {:>12}  {state}",
                        sym,
                        q.updates,
                        px(q.bid_px),
                        px(q.ask_px),
                        px(q.last_px)
                    );
                }
            }
        } else {
            let _ = writeln!(
                o,
                "client: {:>10} msgs {rate:>9.0} msg/s | next {} | gaps {} filled {}+{} unrecovered {} | stale {} | tick-to-cache p50 {} p99 {} p99.9 {}",
                st.messages_delivered,
                rx.next_expected(),
                st.gaps_detected,
                st.gaps_filled_retransmit,
                st.gaps_covered_snapshot,
                st.unrecovered,
                rx.stale_symbols(),
                us(s.p50),
                us(s.p99),
                us(s.p999)
            );
        }
        let _ = std::io::stderr().write_all(self.out.as_bytes());
    }

    /// Leave the terminal tidy.
    pub fn finish(&mut self) {
        if self.enabled && self.tty {
            let _ = std::io::stderr().write_all(b"\n");
        }
    }
}
