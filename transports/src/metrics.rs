//! Counters readable while running: the Prometheus text exposition format
//! (version 0.0.4) served over HTTP from a thread of its own.
//!
//! The polling loop owns its counters as plain integers; every so often
//! (the binaries do it every 100 ms) it copies them into a [`Metrics`]
//! registry of atomics with [`Metrics::set`]. The serving thread only loads
//! those atomics: it takes no lock the loop could wait on and never touches
//! the loop's state.
//!
//! ```
//! use tickwire_transports::metrics::{Kind, Metrics};
//! let m = Metrics::new("tickwire_demo", &[
//!     ("messages_total", "Messages published.", Kind::Counter),
//!     ("latency_ns{quantile=\"0.99\"}", "Latency, ns.", Kind::Gauge),
//! ]);
//! m.set(0, 42);
//! m.set(1, 1_500);
//! let text = m.render();
//! assert!(text.contains("# TYPE tickwire_demo_messages_total counter\ntickwire_demo_messages_total 42\n"));
//! assert!(text.contains("tickwire_demo_latency_ns{quantile=\"0.99\"} 1500\n"));
//! ```

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A metric's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Any value (connected peers, percentiles).
    Gauge,
}

#[derive(Debug)]
struct Entry {
    /// Full series name, labels included (`name{label="v"}`).
    series: String,
    /// Name without labels: one HELP/TYPE block per base.
    base: String,
    help: &'static str,
    kind: Kind,
    value: AtomicU64,
}

/// A fixed set of named values, written by the loop and read by the server.
#[derive(Debug)]
pub struct Metrics {
    entries: Vec<Entry>,
}

impl Metrics {
    /// A registry of `defs` (name with optional labels, help, kind), each name
    /// prefixed with `prefix_`. Index `i` of [`Self::set`] is `defs[i]`.
    pub fn new(prefix: &str, defs: &[(&str, &'static str, Kind)]) -> Metrics {
        let entries = defs
            .iter()
            .map(|&(name, help, kind)| {
                let series = format!("{prefix}_{name}");
                let base = series.split('{').next().unwrap_or(&series).to_string();
                Entry { series, base, help, kind, value: AtomicU64::new(0) }
            })
            .collect();
        Metrics { entries }
    }

    /// Set value `i` (an index into the definitions; out of range is ignored).
    #[inline]
    pub fn set(&self, i: usize, v: u64) {
        if let Some(e) = self.entries.get(i) {
            e.value.store(v, Ordering::Relaxed);
        }
    }

    /// Set every metric at once: `values[i]` is `defs[i]`'s value (extra
    /// values are ignored).
    pub fn set_all(&self, values: &[u64]) {
        for (e, &v) in self.entries.iter().zip(values) {
            e.value.store(v, Ordering::Relaxed);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * self.entries.len());
        let mut last_base: Option<&str> = None;
        for e in &self.entries {
            if last_base != Some(e.base.as_str()) {
                let kind = match e.kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                };
                out.push_str(&format!("# HELP {} {}\n# TYPE {} {kind}\n", e.base, e.help, e.base));
                last_base = Some(e.base.as_str());
            }
            out.push_str(&format!("{} {}\n", e.series, e.value.load(Ordering::Relaxed)));
        }
        out
    }
}

/// Serve `metrics` at `addr` (any path) from a new thread; returns the bound
/// address (for port 0). The thread lives as long as the process.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    std::thread::Builder::new().name("metrics".into()).spawn(move || {
        // A failed accept or a scraper that misbehaves costs that scrape its
        // answer, nothing else.
        for stream in listener.incoming().flatten() {
            let _ = answer(stream, &metrics);
        }
    })?;
    Ok(bound)
}

/// Read the request head (bounded) and write the exposition.
fn answer(mut stream: TcpStream, metrics: &Metrics) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    let mut head = [0u8; 2048];
    let mut got = 0;
    while got < head.len() {
        let n = stream.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
        if head[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let body = metrics.render();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_what_the_loop_set_while_it_runs() {
        let m = Arc::new(Metrics::new(
            "t",
            &[
                ("a_total", "A.", Kind::Counter),
                ("q{quantile=\"0.5\"}", "Q.", Kind::Gauge),
                ("q{quantile=\"0.99\"}", "Q.", Kind::Gauge),
            ],
        ));
        let addr = serve("127.0.0.1:0".parse().unwrap(), m.clone()).unwrap();
        let scrape = || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut r = String::new();
            s.read_to_string(&mut r).unwrap();
            r
        };
        m.set(0, 7);
        let first = scrape();
        assert!(first.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(first.contains("\nt_a_total 7\n"));
        m.set(0, 8);
        m.set(2, 99);
        let second = scrape();
        assert!(second.contains("\nt_a_total 8\n"), "{second}");
        assert!(second.contains("t_q{quantile=\"0.99\"} 99\n"));
        assert_eq!(second.matches("# TYPE t_q gauge").count(), 1, "one block per base name");
        m.set(99, 1); // out of range: ignored
        m.set_all(&[1, 2, 3, 4]); // the fourth value has no metric: ignored
        let third = scrape();
        assert!(third.contains("\nt_a_total 1\n"), "{third}");
        assert!(third.contains("t_q{quantile=\"0.5\"} 2\n"), "{third}");
        assert!(third.contains("t_q{quantile=\"0.99\"} 3\n"), "{third}");
    }
}
