//! Latency recording: an HdrHistogram of nanosecond samples, summaries for the
//! live view and the standard `.hgrm` percentile distribution text.
//!
//! ```text
//!   packet send timestamp ─┐
//!                          ├─▶ Latency::record_between ─▶ summary() ─▶ live view
//!   receive time (passed) ─┘                            └▶ write_hgrm ─▶ binary writes a file
//! ```
//!
//! Core reads no clock and does no I/O: both timestamps are inputs, and
//! [`Latency::write_hgrm`] writes into any [`fmt::Write`] (the binary puts the
//! string in a file).

use std::fmt;

use hdrhistogram::Histogram;

/// Lowest discernible value: 1 ns, the unit of the timestamps.
pub const LOWEST_NS: u64 = 1;
/// Highest trackable value: 60 s. A feed sample older than a minute is a stall,
/// not a latency; larger samples are clamped here and counted.
pub const HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept: 3 (0.1% relative error), HdrHistogram's
/// usual choice for latency; it keeps the histogram at ~0.4 MiB.
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Percentile ticks per half distance to 100% in `.hgrm` output: 5, the
/// default of HdrHistogram's `outputPercentileDistribution` and
/// HistogramLogProcessor, so files compare line by line with other tools'.
pub const HGRM_TICKS_PER_HALF_DISTANCE: u32 = 5;
/// `.hgrm` values are printed in microseconds: the output value unit ratio
/// (ns per printed unit), as `outputPercentileDistribution(out, 5, 1000.0)`.
pub const HGRM_UNIT_RATIO: f64 = 1000.0;

/// A latency distribution, in nanoseconds, from [`LOWEST_NS`] to
/// [`HIGHEST_NS`] with [`SIGNIFICANT_DIGITS`] significant digits.
///
/// Out-of-range samples are never lost silently: values above
/// [`HIGHEST_NS`] are recorded as `HIGHEST_NS` and counted in
/// [`clamped`](Latency::clamped); negative intervals (receive before send,
/// from clock skew between machines) are counted in
/// [`skewed`](Latency::skewed) and *not* recorded, because any value we
/// invented for them (such as 0) would pull the low percentiles down.
#[derive(Clone)]
pub struct Latency {
    hist: Histogram<u64>,
    clamped: u64,
    skewed: u64,
}

/// A summary of a [`Latency`], in nanoseconds. All zero when empty.
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples recorded (including clamped ones).
    pub count: u64,
    /// Smallest sample (lowest equivalent value of its bucket).
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample (highest equivalent value of its bucket).
    pub max: u64,
    /// Mean, rounded to the nanosecond.
    pub mean: u64,
    /// Samples above [`HIGHEST_NS`], recorded as `HIGHEST_NS`.
    pub clamped: u64,
    /// Negative intervals (receive before send), not recorded.
    pub skewed: u64,
}

impl fmt::Display for LatencySummary {
    /// One line, in microseconds: `n=... min=... p50=... ... max=... mean=...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = |ns: u64| ns as f64 / 1000.0;
        write!(
            f,
            "n={} min={:.3}us p50={:.3}us p90={:.3}us p99={:.3}us p99.9={:.3}us p99.99={:.3}us \
             max={:.3}us mean={:.3}us",
            self.count,
            us(self.min),
            us(self.p50),
            us(self.p90),
            us(self.p99),
            us(self.p999),
            us(self.p9999),
            us(self.max),
            us(self.mean)
        )?;
        if self.clamped != 0 || self.skewed != 0 {
            write!(f, " clamped={} skewed={}", self.clamped, self.skewed)?;
        }
        Ok(())
    }
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

impl Latency {
    /// An empty recorder (allocates its ~0.4 MiB of buckets now; recording
    /// never allocates).
    pub fn new() -> Latency {
        let hist = Histogram::new_with_bounds(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid (checked by a unit test)");
        Latency { hist, clamped: 0, skewed: 0 }
    }

    /// Record one sample of `ns` nanoseconds; values above [`HIGHEST_NS`] are
    /// recorded as `HIGHEST_NS` and counted in [`clamped`](Latency::clamped).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        let v = if ns > HIGHEST_NS {
            self.clamped += 1;
            HIGHEST_NS
        } else {
            ns
        };
        // In range by construction; saturating only guards the u64 counter.
        self.hist.saturating_record(v);
    }

    /// Record the interval from `send_ns` to `recv_ns`. If `recv_ns < send_ns`
    /// (clocks skewed between machines) nothing is recorded and the sample is
    /// counted in [`skewed`](Latency::skewed).
    #[inline]
    pub fn record_between(&mut self, send_ns: u64, recv_ns: u64) {
        match recv_ns.checked_sub(send_ns) {
            Some(ns) => self.record(ns),
            None => self.skewed += 1,
        }
    }

    /// Record `n` samples of the same interval from `send_ns` to `recv_ns`
    /// (the messages of one packet share its receive stamps); as
    /// [`Self::record_between`] otherwise.
    #[inline]
    pub fn record_between_n(&mut self, send_ns: u64, recv_ns: u64, n: u64) {
        match recv_ns.checked_sub(send_ns) {
            Some(ns) if ns > HIGHEST_NS => {
                self.clamped += n;
                self.hist.saturating_record_n(HIGHEST_NS, n);
            }
            Some(ns) => self.hist.saturating_record_n(ns, n),
            None => self.skewed += n,
        }
    }

    /// Record the interval from `send_ns` to `recv_ns` through `run`: a run
    /// of samples that fall in one histogram bucket is recorded by one call
    /// when the run ends ([`Self::end_run`]). The messages of a packet have
    /// nearly equal latencies, so this records a packet's worth of samples
    /// at the cost of one or two; the histogram is the same as with
    /// [`Self::record_between`] per sample.
    #[inline]
    pub fn record_between_in(&mut self, run: &mut Run, send_ns: u64, recv_ns: u64) {
        let Some(ns) = recv_ns.checked_sub(send_ns) else {
            self.skewed += 1;
            return;
        };
        if run.n > 0 && (run.lo..=run.hi).contains(&ns) {
            run.n += 1;
            return;
        }
        self.end_run(run);
        let v = ns.min(HIGHEST_NS);
        *run = Run {
            value: ns,
            lo: self.hist.lowest_equivalent(v),
            hi: if ns > HIGHEST_NS { u64::MAX } else { self.hist.highest_equivalent(v) },
            n: 1,
        };
    }

    /// Record the samples `run` holds (see [`Self::record_between_in`]).
    #[inline]
    pub fn end_run(&mut self, run: &mut Run) {
        if run.n == 0 {
            return;
        }
        if run.value > HIGHEST_NS {
            self.clamped += run.n;
        }
        self.hist.saturating_record_n(run.value.min(HIGHEST_NS), run.n);
        run.n = 0;
    }

    /// Samples recorded (including clamped ones, excluding skewed ones).
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Samples that were above [`HIGHEST_NS`] and recorded as `HIGHEST_NS`.
    pub fn clamped(&self) -> u64 {
        self.clamped
    }

    /// Intervals that were negative and not recorded.
    pub fn skewed(&self) -> u64 {
        self.skewed
    }

    /// The value at percentile `p` (0.0 ..= 100.0; 99.9 means p99.9), in ns:
    /// the highest value equivalent to the sample at that rank. 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.hist.is_empty() { 0 } else { self.hist.value_at_percentile(p) }
    }

    /// Count, min, percentiles, max and mean.
    pub fn summary(&self) -> LatencySummary {
        if self.hist.is_empty() {
            return LatencySummary {
                clamped: self.clamped,
                skewed: self.skewed,
                ..Default::default()
            };
        }
        LatencySummary {
            count: self.hist.len(),
            min: self.hist.min(),
            p50: self.percentile(50.0),
            p90: self.percentile(90.0),
            p99: self.percentile(99.0),
            p999: self.percentile(99.9),
            p9999: self.percentile(99.99),
            max: self.hist.max(),
            mean: self.hist.mean().round() as u64,
            clamped: self.clamped,
            skewed: self.skewed,
        }
    }

    /// Add `other`'s samples and counters to this one (e.g. per-thread
    /// recorders merged for the final summary).
    pub fn merge(&mut self, other: &Latency) {
        if self.hist.add(&other.hist).is_err() {
            // Unreachable with equal bounds; degrade to per-value saturating
            // adds rather than lose the samples.
            for v in other.hist.iter_recorded() {
                self.hist
                    .saturating_record_n(v.value_iterated_to().min(HIGHEST_NS), v.count_at_value());
            }
        }
        self.clamped += other.clamped;
        self.skewed += other.skewed;
    }

    /// Forget every sample and counter.
    pub fn reset(&mut self) {
        self.hist.reset();
        self.clamped = 0;
        self.skewed = 0;
    }

    /// Write the percentile distribution in HdrHistogram's classic text format
    /// (`.hgrm`, as Java's `outputPercentileDistribution(out, 5, 1000.0)` and
    /// HistogramLogProcessor write it): values in microseconds,
    /// [`HGRM_TICKS_PER_HALF_DISTANCE`] percentile ticks per half distance,
    /// then the mean / max / buckets footer. Plotters such as HdrHistogram's
    /// `plotFiles.html` read it.
    pub fn write_hgrm(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let digits = usize::from(SIGNIFICANT_DIGITS);
        writeln!(
            out,
            "{:>12} {:>14} {:>10} {:>14}\n",
            "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
        )?;
        let mut total = 0u64;
        for v in self.hist.iter_quantiles(HGRM_TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / HGRM_UNIT_RATIO;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                writeln!(out, "{value:12.digits$} {q:2.12} {total:10} {:14.2}", 1.0 / (1.0 - q))?;
            } else {
                writeln!(out, "{value:12.digits$} {q:2.12} {total:10}")?;
            }
        }
        let mean = self.hist.mean() / HGRM_UNIT_RATIO;
        let stdev = self.hist.stdev() / HGRM_UNIT_RATIO;
        let max = if self.hist.is_empty() { 0.0 } else { self.hist.max() as f64 / HGRM_UNIT_RATIO };
        writeln!(out, "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]")?;
        writeln!(out, "#[Max     = {max:12.digits$}, Total count    = {:12}]", self.hist.len())?;
        writeln!(
            out,
            "#[Buckets = {:12}, SubBuckets     = {:12}]",
            self.hist.buckets(),
            sub_bucket_count()
        )
    }
}

/// HdrHistogram's sub-bucket count for [`SIGNIFICANT_DIGITS`]: the smallest
/// power of two at or above `2 × 10^digits` (2048 for 3 digits). The crate
/// keeps it private; the `.hgrm` footer prints it.
fn sub_bucket_count() -> u64 {
    (2 * 10u64.pow(u32::from(SIGNIFICANT_DIGITS))).next_power_of_two()
}

impl fmt::Debug for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latency").field("summary", &self.summary()).finish()
    }
}

/// Samples waiting to be recorded together: they fall in one histogram
/// bucket (`lo..=hi`). See [`Latency::record_between_in`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Run {
    value: u64,
    lo: u64,
    hi: u64,
    n: u64,
}

/// Tick-to-cache latency and its parts, each a [`Latency`]. The instants,
/// all wall-clock ns since the Unix epoch:
///
/// ```text
/// T0 due        the exchange event (the Data packet's timing block)
/// T1 sent       the packet handed to the transport (its send_time)
/// T2 kernel rx  the receiving kernel took it in (SO_TIMESTAMPNS; not on AF_XDP)
/// T3 app rx     the client's loop had it in hand
/// T4 applied    its messages were in the cache
/// ```
///
/// `tick_to_cache` is T0 → T4 for every message that arrived in a live Data
/// packet (including those that waited behind a gap); the parts are
/// recorded for the messages applied from the packet that brought them.
#[derive(Clone, Debug, Default)]
pub struct TickToCache {
    /// T0 → T4.
    pub tick_to_cache: Latency,
    /// T0 → T1: queueing and batching in the server.
    pub due_to_sent: Latency,
    /// T1 → T2: the network path, up to the receiving kernel.
    pub sent_to_kernel: Latency,
    /// T2 → T3: the client's wake-up and read.
    pub kernel_to_app: Latency,
    /// T3 → T4: recovery, decoding and the cache update.
    pub received_to_applied: Latency,
}

/// Summaries of a [`TickToCache`]'s parts (the JSON `breakdown_ns` object).
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BreakdownSummary {
    /// T0 → T1.
    pub due_to_sent: LatencySummary,
    /// T1 → T2 (count 0 where the kernel gives no receive stamp).
    pub sent_to_kernel: LatencySummary,
    /// T2 → T3 (count 0 likewise).
    pub kernel_to_app: LatencySummary,
    /// T3 → T4.
    pub received_to_applied: LatencySummary,
}

impl TickToCache {
    /// Summaries of the parts.
    pub fn breakdown(&self) -> BreakdownSummary {
        BreakdownSummary {
            due_to_sent: self.due_to_sent.summary(),
            sent_to_kernel: self.sent_to_kernel.summary(),
            kernel_to_app: self.kernel_to_app.summary(),
            received_to_applied: self.received_to_applied.summary(),
        }
    }

    /// The breakdown as a table (µs), one row per stage, then the total.
    pub fn write_table(&self, out: &mut impl fmt::Write) -> fmt::Result {
        writeln!(
            out,
            "{:<34} {:>9} {:>9} {:>9} {:>9} {:>10}",
            "stage (µs)", "p50", "p99", "p99.9", "max", "n"
        )?;
        let rows: [(&str, &Latency); 5] = [
            ("T0 due -> T1 sent", &self.due_to_sent),
            ("T1 sent -> T2 kernel rx", &self.sent_to_kernel),
            ("T2 kernel rx -> T3 app rx", &self.kernel_to_app),
            ("T3 app rx -> T4 applied", &self.received_to_applied),
            ("T0 due -> T4 applied (tick-to-cache)", &self.tick_to_cache),
        ];
        for (name, l) in rows {
            let s = l.summary();
            if s.count == 0 {
                writeln!(out, "{name:<34} {:>9} {:>9} {:>9} {:>9} {:>10}", "n/a", "", "", "", 0)?;
                continue;
            }
            let us = |ns: u64| ns as f64 / 1e3;
            writeln!(
                out,
                "{name:<34} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10}",
                us(s.p50),
                us(s.p99),
                us(s.p999),
                us(s.max),
                s.count
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_records_count_every_message() {
        let mut l = Latency::new();
        l.record_between_n(1_000, 4_000, 7);
        l.record_between_n(5_000, 4_000, 3);
        l.record_between_n(0, HIGHEST_NS + 5, 2);
        assert_eq!((l.count(), l.skewed(), l.clamped()), (9, 3, 2));
        assert_eq!(l.percentile(50.0) / 10, 300, "3 µs, to the histogram's precision");
    }

    #[test]
    fn runs_record_the_same_histogram_as_single_samples() {
        let samples: Vec<(u64, u64)> = (0..5_000u64)
            .map(|i| (1_000 + i * 7, 50_000 + (i % 97) * 13 + (i / 1000) * 40_000))
            .chain([(10, 5), (0, HIGHEST_NS + 1), (0, HIGHEST_NS + 2)])
            .collect();
        let (mut one, mut batched) = (Latency::new(), Latency::new());
        let mut run = Run::default();
        for &(a, b) in &samples {
            one.record_between(a, b);
            batched.record_between_in(&mut run, a, b);
        }
        batched.end_run(&mut run);
        assert_eq!(one.summary(), batched.summary());
        let (mut x, mut y) = (String::new(), String::new());
        one.write_hgrm(&mut x).unwrap();
        batched.write_hgrm(&mut y).unwrap();
        assert_eq!(x, y);
    }

    #[test]
    fn breakdown_table_names_every_stage() {
        let mut t = TickToCache::default();
        t.tick_to_cache.record(42_000);
        t.due_to_sent.record(1_000);
        let mut out = String::new();
        t.write_table(&mut out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 6);
        assert!(lines[1].starts_with("T0 due -> T1 sent") && lines[1].contains("1.0"));
        assert!(lines[2].contains("n/a"), "no kernel stamp recorded: {}", lines[2]);
        assert!(lines[5].contains("tick-to-cache") && lines[5].contains("42.0"));
        assert_eq!(t.breakdown().due_to_sent.count, 1);
    }

    /// One parsed `.hgrm` row.
    #[derive(Debug)]
    struct Row {
        value_us: f64,
        quantile: f64,
        total: u64,
    }

    /// Parse `.hgrm` text: rows, then the footer's (max µs, total count).
    fn parse_hgrm(text: &str) -> (Vec<Row>, f64, u64) {
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("       Value     Percentile TotalCount 1/(1-Percentile)"));
        assert_eq!(lines.next(), Some(""));
        let mut rows = Vec::new();
        let mut footer_max = f64::NAN;
        let mut footer_count = u64::MAX;
        for line in lines {
            if let Some(rest) = line.strip_prefix("#[Max     = ") {
                let (max, count) = rest.split_once(", Total count    = ").unwrap();
                footer_max = max.trim().parse().unwrap();
                footer_count = count.trim_end_matches(']').trim().parse().unwrap();
            } else if line.starts_with("#[") {
                continue;
            } else {
                let f: Vec<&str> = line.split_whitespace().collect();
                assert!(f.len() == 3 || f.len() == 4, "row {line:?}");
                let row = Row {
                    value_us: f[0].parse().unwrap(),
                    quantile: f[1].parse().unwrap(),
                    total: f[2].parse().unwrap(),
                };
                if f.len() == 4 {
                    let inv: f64 = f[3].parse().unwrap();
                    assert!(
                        (inv - 1.0 / (1.0 - row.quantile)).abs() <= 0.006 * inv.max(1.0),
                        "{line:?}"
                    );
                } else {
                    assert_eq!(row.quantile, 1.0, "only the last row omits 1/(1-p): {line:?}");
                }
                rows.push(row);
            }
        }
        (rows, footer_max, footer_count)
    }

    fn within(actual: u64, expect: u64, rel: f64) -> bool {
        (actual as f64 - expect as f64).abs() <= rel * expect as f64
    }

    #[test]
    fn bounds_are_valid() {
        let l = Latency::new();
        assert_eq!(l.count(), 0);
        assert_eq!(l.summary(), LatencySummary::default());
        assert_eq!(l.percentile(99.0), 0);
        assert_eq!(sub_bucket_count(), 2048);
    }

    #[test]
    fn uniform_distribution_percentiles() {
        let mut l = Latency::new();
        for ns in 1..=100_000u64 {
            l.record(ns);
        }
        let s = l.summary();
        assert_eq!(s.count, 100_000);
        assert_eq!(s.min, 1);
        // 3 significant digits: every value within 0.1% of the exact rank.
        for (got, exact) in [
            (s.p50, 50_000),
            (s.p90, 90_000),
            (s.p99, 99_000),
            (s.p999, 99_900),
            (s.p9999, 99_990),
            (s.max, 100_000),
            (s.mean, 50_000),
        ] {
            assert!(within(got, exact, 0.001), "got {got}, expected {exact}: {s:?}");
        }
        assert_eq!(l.percentile(100.0), s.max);
    }

    #[test]
    fn clamps_and_counts_out_of_range() {
        let mut l = Latency::new();
        l.record(HIGHEST_NS + 1);
        l.record(u64::MAX);
        l.record(0);
        l.record_between(100, 50);
        l.record_between(100, 350);
        let s = l.summary();
        assert_eq!((s.count, s.clamped, s.skewed), (4, 2, 1));
        assert_eq!(s.min, 0);
        assert!(within(s.max, HIGHEST_NS, 0.001), "{s:?}");
        assert_eq!(l.percentile(50.0), 250);
        assert!(s.to_string().contains("clamped=2 skewed=1"));
    }

    #[test]
    fn merge_and_reset() {
        let mut a = Latency::new();
        let mut b = Latency::new();
        let mut both = Latency::new();
        for i in 0..1_000u64 {
            a.record(i * 7);
            both.record(i * 7);
            b.record(10_000 + i * 13);
            both.record(10_000 + i * 13);
        }
        b.record_between(5, 1);
        a.merge(&b);
        assert_eq!(a.count(), 2_000);
        assert_eq!(a.skewed(), 1);
        let (sa, sb) = (a.summary(), both.summary());
        assert_eq!(LatencySummary { skewed: 0, ..sa }, sb);
        a.reset();
        assert_eq!(a.summary(), LatencySummary::default());
    }

    #[test]
    fn hgrm_single_value_exact_text() {
        let mut l = Latency::new();
        l.record(1_000);
        let mut s = String::new();
        l.write_hgrm(&mut s).unwrap();
        let expect = concat!(
            "       Value     Percentile TotalCount 1/(1-Percentile)\n",
            "\n",
            "       1.000 0.000000000000          1           1.00\n",
            "       1.000 1.000000000000          1\n",
            "#[Mean    =        1.000, StdDeviation   =        0.000]\n",
            "#[Max     =        1.000, Total count    =            1]\n",
            "#[Buckets =           26, SubBuckets     =         2048]\n",
        );
        assert_eq!(s, expect);
    }

    #[test]
    fn hgrm_empty() {
        let mut s = String::new();
        Latency::new().write_hgrm(&mut s).unwrap();
        let (rows, max, count) = parse_hgrm(&s);
        assert!(rows.is_empty());
        assert_eq!((max, count), (0.0, 0));
    }

    #[test]
    fn hgrm_parses_back_and_matches_percentiles() {
        let mut l = Latency::new();
        // 1 ns ..= 198 µs uniformly (99%), plus a 1% tail at 5 ms.
        for ns in 1..=198_000u64 {
            l.record(ns);
        }
        for _ in 0..2_000 {
            l.record(5_000_000);
        }
        let mut s = String::new();
        l.write_hgrm(&mut s).unwrap();
        let (rows, max_us, count) = parse_hgrm(&s);
        assert_eq!(count, l.count());
        assert_eq!(count, 200_000);
        assert!(rows.len() >= 30, "{} rows", rows.len());
        for w in rows.windows(2) {
            assert!(w[1].value_us >= w[0].value_us, "{w:?}");
            assert!(w[1].quantile > w[0].quantile, "{w:?}");
            assert!(w[1].total >= w[0].total, "{w:?}");
        }
        let last = rows.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total, count);
        assert_eq!(rows[0].quantile, 0.0);
        assert!((max_us - 5_000.0).abs() <= 5.0, "max {max_us}");
        // Rows at exact ticks agree with percentile() and with the distribution.
        for (q, expect_ns) in [(0.5, 100_000u64), (0.9, 180_000), (0.95, 190_000), (0.975, 195_000)]
        {
            let row = rows.iter().find(|r| (r.quantile - q).abs() < 1e-9).expect("tick present");
            let ns = (row.value_us * 1000.0).round() as u64;
            assert_eq!(ns, l.percentile(q * 100.0), "q {q}");
            assert!(within(ns, expect_ns, 0.002), "q {q}: {ns} vs {expect_ns}");
        }
        assert!(within(l.percentile(99.9), 5_000_000, 0.001));
    }
}
