//! The report's plots (plotters), each as SVG and PNG: the HDR percentile
//! distribution per transport, delivered vs offered rate, server CPU per
//! message vs subscribers, recovery time and unrecovered gaps vs loss, and
//! tick-to-cache p50 and p99 vs loss in strict and per-symbol order.
//!
//! Text is drawn with plotters' own `ab_glyph` rasteriser from a TrueType
//! file (no fontconfig or freetype): the first of [`FONTS`] that exists.

use std::path::Path;
use std::sync::OnceLock;

use crate::cell::{CellRun, CellSpec, Mode, Order};
use crate::report::Results;
use plotters::coord::Shift;
use plotters::prelude::*;

/// TrueType fonts tried in order (Debian's fonts-dejavu-core first, which
/// `xdp-setup/install-deps.sh` installs).
pub const FONTS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Series colours (matplotlib's tab10: distinct on white, no yellow).
const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Pixel size of every plot.
const SIZE: (u32, u32) = (960, 600);

/// Register the font with plotters, once.
fn font() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let path = FONTS.iter().find(|p| Path::new(p).exists()).ok_or_else(|| {
            format!(
                "no TrueType font found (tried {}; apt-get install fonts-dejavu-core)",
                FONTS.join(", ")
            )
        })?;
        let bytes: &'static [u8] =
            Box::leak(std::fs::read(path).map_err(|e| format!("{path}: {e}"))?.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path}: not a usable TrueType font"))
    })
    .clone()
}

/// A line chart: named series of (x, y) points.
#[derive(Debug)]
struct Chart {
    title: String,
    x_label: &'static str,
    y_label: &'static str,
    series: Vec<(String, Vec<(f64, f64)>)>,
    /// Tick labels (the data may be transformed, e.g. log10).
    x_fmt: fn(&f64) -> String,
    y_fmt: fn(&f64) -> String,
    /// Integer x ticks from 0 (the percentile axis), instead of automatic ones.
    integer_x: bool,
}

fn plain(v: &f64) -> String {
    crate::stats::num(Some(*v))
}

/// `x` is log10(1 / (1 − p)): label it as the percentile.
fn percentile_label(v: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-*v));
    if p < 99.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.5}").trim_end_matches('0').to_string() + "%"
    }
}

/// `y` is log10(µs).
fn pow10_label(v: &f64) -> String {
    crate::stats::num(Some(10f64.powf(*v)))
}

fn bounds(series: &[(String, Vec<(f64, f64)>)]) -> ((f64, f64), (f64, f64)) {
    let pts = series.iter().flat_map(|s| s.1.iter()).filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = |a: f64, b: f64| {
        let d = if b > a { (b - a) * 0.05 } else { a.abs().max(1.0) * 0.1 };
        (a - d, b + d)
    };
    let (ya, yb) = pad(y0, y1);
    (pad(x0, x1), (if y0 >= 0.0 { ya.max(0.0).min(y0) } else { ya }, yb))
}

fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &Chart) -> Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    let ((mut x0, mut x1), (y0, y1)) = bounds(&c.series);
    let mut x_labels = 10;
    if c.integer_x {
        x0 = 0.0;
        x1 = x1.ceil().max(1.0);
        x_labels = x1 as usize + 1;
    }
    let mut chart = ChartBuilder::on(area)
        .caption(&c.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(c.x_label)
        .y_desc(c.y_label)
        .x_labels(x_labels)
        .x_label_formatter(&c.x_fmt)
        .y_label_formatter(&c.y_fmt)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, (name, pts)) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()].to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(e)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    Ok(())
}

/// Draw `charts` side by side into `dir/name.svg` and `dir/name.png`.
fn save(dir: &Path, name: &str, charts: &[Chart], out: &mut Vec<String>) -> Result<(), String> {
    fn all<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        charts: &[Chart],
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| format!("{e:?}"))?;
        let parts = root.split_evenly((1, charts.len().max(1)));
        for (a, c) in parts.iter().zip(charts) {
            draw(a, c)?;
        }
        root.present().map_err(|e| format!("{e:?}"))
    }
    let w = SIZE.0 * charts.len().max(1) as u32;
    let svg = dir.join(format!("{name}.svg"));
    all(SVGBackend::new(&svg, (w, SIZE.1)).into_drawing_area(), charts)?;
    let png = dir.join(format!("{name}.png"));
    all(BitMapBackend::new(&png, (w, SIZE.1)).into_drawing_area(), charts)?;
    out.push(format!("{name}.svg"));
    out.push(format!("{name}.png"));
    Ok(())
}

/// Read a `.hgrm` file: (value µs, percentile 0..1) rows.
pub fn read_hgrm(path: &Path) -> Vec<(f64, f64)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let v: f64 = f.next()?.parse().ok()?;
            let p: f64 = f.next()?.parse().ok()?;
            Some((v, p))
        })
        .collect()
}

/// A clean baseline cell: no loss, no A/B, default idle.
fn clean(s: &CellSpec) -> bool {
    s.drop_rate == 0.0
        && s.upstream_drop == 0.0
        && s.kernel_loss == 0.0
        && !s.ab
        && s.mode == Mode::Default
        && !s.pipeline
        && s.max_packet.is_none()
        && s.order == Order::Strict
}

fn med(r: &Results, i: usize, f: fn(&CellRun) -> Option<f64>) -> Option<f64> {
    r.cells[i].agg(f).median
}

/// Series keyed by a name, points sorted by x.
fn group(items: impl Iterator<Item = (String, f64, f64)>) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for (k, x, y) in items {
        match out.iter_mut().find(|s| s.0 == k) {
            Some(s) => s.1.push((x, y)),
            None => out.push((k, vec![(x, y)])),
        }
    }
    for s in &mut out {
        s.1.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Draw every plot into `dir`; the files written (relative names).
pub fn draw_all(r: &Results, dir: &Path, base_rate: u64) -> Result<Vec<String>, String> {
    font()?;
    let mut out = Vec::new();
    let name = |s: &CellSpec| format!("{} ({})", s.label(), s.net.name());

    // 1. HDR percentile distribution of the 1-client baseline per transport and path.
    let mut series = Vec::new();
    for c in &r.cells {
        let s = &c.spec;
        if !(clean(s) && s.clients == 1 && s.rate == base_rate) {
            continue;
        }
        let Some(h) = &c.hgrm else { continue };
        let pts: Vec<(f64, f64)> = read_hgrm(&dir.join(h))
            .into_iter()
            .filter(|&(v, p)| p < 1.0 && v > 0.0)
            .map(|(v, p)| ((1.0 / (1.0 - p)).log10().min(6.0), v.log10()))
            .collect();
        series.push((name(s), pts));
    }
    let hdr = Chart {
        title: format!("Tick-to-cache latency by percentile ({base_rate} msg/s, 1 client)"),
        x_label: "percentile",
        y_label: "latency µs (log)",
        series,
        x_fmt: percentile_label,
        y_fmt: pow10_label,
        integer_x: true,
    };
    save(dir, "latency_percentiles", &[hdr], &mut out)?;

    // 2. Delivered vs offered rate (rate 0 is placed at what the server reached).
    let pts = r
        .plan
        .cells
        .iter()
        .enumerate()
        .filter(|(_, s)| clean(s) && s.clients == 1)
        .filter_map(|(i, s)| {
            let offered =
                if s.rate == 0 { med(r, i, |x| x.published_msgs_per_s)? } else { s.rate as f64 };
            Some((name(s), offered, med(r, i, |x| x.delivered_msgs_per_s)?))
        });
    let rate = Chart {
        title: "Delivered vs offered rate (1 client; --rate 0 at the rate reached)".into(),
        x_label: "offered msgs/s",
        y_label: "delivered msgs/s",
        series: group(pts),
        x_fmt: plain,
        y_fmt: plain,
        integer_x: false,
    };
    save(dir, "delivered_vs_offered", &[rate], &mut out)?;

    // 3. Server CPU per message vs subscribers.
    let pts = r
        .plan
        .cells
        .iter()
        .enumerate()
        .filter(|(_, s)| clean(s) && s.rate == base_rate)
        .filter_map(|(i, s)| {
            let u = med(r, i, |x| x.server_user_ns_per_msg)?;
            let y = med(r, i, |x| x.server_sys_ns_per_msg)?;
            Some((name(s), s.clients as f64, u + y))
        });
    let cpu = Chart {
        title: format!("Server CPU per message vs subscribers ({base_rate} msg/s)"),
        x_label: "clients",
        y_label: "server CPU ns/msg (user + sys)",
        series: group(pts),
        x_fmt: plain,
        y_fmt: plain,
        integer_x: false,
    };
    save(dir, "server_cpu_vs_clients", &[cpu], &mut out)?;

    // 4. Recovery time p99 and unrecovered gaps vs loss (log scale), per transport and mechanism.
    let lossy = |f: fn(&CellRun) -> Option<f64>, with_tcp: bool| {
        let cells = r.plan.cells.iter().enumerate();
        group(
            cells
                .filter(|(_, s)| {
                    !s.ab
                        && !s.pipeline
                        && s.max_packet.is_none()
                        && s.clients == 1
                        && s.mode == Mode::Default
                        && s.order == Order::Strict
                })
                .filter_map(move |(i, s)| {
                    if s.transport == tickwire_transports::select::TransportKind::Tcp && !with_tcp {
                        return None;
                    }
                    let (label, x) = if s.kernel_loss > 0.0 {
                        (format!("{} (bridge)", s.label()), s.kernel_loss)
                    } else if s.drop_rate > 0.0 {
                        (format!("{} (in-process)", s.label()), s.drop_rate * 100.0)
                    } else {
                        return None;
                    };
                    Some((label, x.log10(), med(r, i, f)?))
                }),
        )
    };
    let rec = Chart {
        title: "Recovery time p99 vs loss (NACK/snapshot; tcp recovers in the kernel)".into(),
        x_label: "loss % (log)",
        y_label: "recovery p99 µs",
        series: lossy(|x| x.recovery_p99_us, false),
        x_fmt: pow10_label,
        y_fmt: plain,
        integer_x: false,
    };
    let unrec = Chart {
        title: "Unrecovered gaps vs loss".into(),
        x_label: "loss % (log)",
        y_label: "unrecovered gaps (median)",
        series: lossy(|x| x.unrecovered, true),
        x_fmt: pow10_label,
        y_fmt: plain,
        integer_x: false,
    };
    save(dir, "recovery_vs_loss", &[rec, unrec], &mut out)?;

    // 5. Tick-to-cache p50 and p99 vs loss, per transport, path and delivery order.
    let by_order =
        |f: fn(&CellRun) -> Option<f64>| group(latency_vs_loss(r, base_rate, f).into_iter());
    let chart = |what: &str, f: fn(&CellRun) -> Option<f64>| Chart {
        title: format!(
            "Tick-to-cache {what} vs loss, strict and per-symbol order ({base_rate} msg/s)"
        ),
        x_label: "loss % (0: the lossless cell)",
        y_label: "tick-to-cache µs (log)",
        series: by_order(f),
        x_fmt: plain,
        y_fmt: pow10_label,
        integer_x: false,
    };
    let charts = [chart("p50", |x| x.t2c_p50_us), chart("p99", |x| x.t2c_p99_us)];
    save(dir, "latency_vs_loss_by_order", &charts, &mut out)?;
    Ok(out)
}

/// The points of the latency-vs-loss plot: (series, loss %, log10 µs) of
/// the 1-client cells at `base_rate` with in-process or bridge loss, one
/// series per transport, path and order. Each series starts at 0 % with the
/// lossless cell of its order, or the strict one where its order did not run
/// lossless (without holes the two orders deliver alike).
fn latency_vs_loss(
    r: &Results,
    base_rate: u64,
    f: fn(&CellRun) -> Option<f64>,
) -> Vec<(String, f64, f64)> {
    let plain_job = |s: &CellSpec| {
        !s.peer.is_aeron()
            && s.clients == 1
            && s.rate == base_rate
            && s.upstream_drop == 0.0
            && !s.ab
            && !s.pipeline
            && s.max_packet.is_none()
            && s.mode == Mode::Default
    };
    let label = |s: &CellSpec| {
        let how = if s.net == crate::floor::Net::Netns { "bridge" } else { "in-process" };
        format!("{} {} ({how}), {}", s.label(), s.net.name(), s.order.name())
    };
    let mut pts = Vec::new();
    for (i, s) in r.plan.cells.iter().enumerate() {
        if !(plain_job(s) && s.lossy()) {
            continue;
        }
        let Some(y) = med(r, i, f).filter(|&y| y > 0.0) else { continue };
        pts.push((label(s), s.loss_percent(), y.log10()));
    }
    // The lossless start of each series that has loss points.
    let mut names: Vec<String> = pts.iter().map(|p| p.0.clone()).collect();
    names.dedup();
    for (i, s) in r.plan.cells.iter().enumerate() {
        if !(plain_job(s) && !s.lossy() && s.order == Order::Strict) {
            continue;
        }
        for order in [Order::Strict, Order::PerSymbol] {
            let spec = CellSpec { order, ..s.clone() };
            if !names.contains(&label(&spec)) {
                continue;
            }
            let own = r.plan.cells.iter().position(|c| *c == spec);
            let y = own.and_then(|j| med(r, j, f)).or_else(|| med(r, i, f));
            if let Some(y) = y.filter(|&y| y > 0.0) {
                pts.push((label(&spec), 0.0, y.log10()));
            }
        }
    }
    pts
}
