//! Child processes with their output in files, and the waits the harness needs.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

/// The directory holding the `server` and `client` binaries: `dir` (made
/// absolute, so that it holds inside `ip netns exec` and from any
/// directory), else the running binary's own; an error says how to build
/// them when either is missing.
pub fn bin_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let bins = match dir {
        Some(d) => {
            std::fs::canonicalize(d).with_context(|| format!("--bin-dir {}", d.display()))?
        }
        None => std::env::current_exe()?.parent().context("no binary directory")?.to_path_buf(),
    };
    for b in ["server", "client"] {
        if !bins.join(b).exists() {
            bail!(
                "{} not found: build with `cargo build --release --bins` or pass --bin-dir",
                bins.join(b).display()
            );
        }
    }
    Ok(bins)
}

/// A command line as it would be typed (arguments with spaces quoted).
pub fn shown(argv: &[String]) -> String {
    argv.iter()
        .map(|a| if a.contains(' ') || a.is_empty() { format!("'{a}'") } else { a.clone() })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prefix `argv` with `ip netns exec NS` and/or `taskset -c CPU`.
pub fn wrap(ns: Option<&str>, cpu: Option<usize>, argv: Vec<String>) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(ns) = ns {
        v.extend(["ip", "netns", "exec", ns].map(String::from));
    }
    if let Some(cpu) = cpu {
        v.extend(["taskset".to_string(), "-c".to_string(), cpu.to_string()]);
    }
    v.extend(argv);
    v
}

/// Owned copies of string literals.
pub fn strs(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// A child process with its output in files; killed if still running when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Name for messages.
    pub name: String,
    /// File holding its stdout.
    pub out: PathBuf,
    /// File holding its stderr.
    pub err: PathBuf,
}

impl Proc {
    /// Start `argv` with stdout and stderr in `dir/tag.out` and `dir/tag.err`.
    pub fn spawn(name: &str, argv: &[String], dir: &Path, tag: &str) -> anyhow::Result<Proc> {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .with_context(|| format!("starting {name}: {}", shown(argv)))?;
        Ok(Proc { child, name: name.into(), out, err })
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Everything it printed on stdout so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Everything it printed on stdout and stderr so far.
    pub fn all_output(&self) -> String {
        self.stdout() + &std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// The last `n` lines of stderr, indented, for error messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.err).unwrap_or_default();
        // An anyhow error with RUST_BACKTRACE set: the error, not the backtrace.
        let text = text.split("Stack backtrace:").next().unwrap_or("");
        let lines: Vec<&str> = text.trim_end().lines().collect();
        let mut s = String::new();
        for l in &lines[lines.len().saturating_sub(n)..] {
            let _ = writeln!(s, "    {l}");
        }
        let _ = write!(s, "    (full stderr: {})", self.err.display());
        s
    }

    /// The last line of stdout that is a JSON object.
    pub fn json(&self) -> anyhow::Result<Value> {
        let out = self.stdout();
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("{} printed no JSON summary", self.name))?;
        serde_json::from_str(line).with_context(|| format!("{}'s JSON summary", self.name))
    }

    /// Send SIGINT (the binaries' Ctrl-C: a clean exit with a summary).
    pub fn interrupt(&self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of a child we own and have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGINT);
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Wait until every process has exited successfully; the first failure,
/// Ctrl-C or the deadline is an error (the processes are killed on drop).
pub fn wait_all(procs: &mut [&mut Proc], limit: Duration, stop: &AtomicBool) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let mut running = Vec::new();
        for p in procs.iter_mut() {
            match p.exited()? {
                Some(st) if !st.success() => {
                    bail!("{} exited with {st}:\n{}", p.name, p.stderr_tail(6))
                }
                Some(_) => {}
                None => running.push(p.name.clone()),
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if start.elapsed() > limit {
            bail!("{} still running after {limit:?}", running.join(", "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until `ready()` holds while `proc` keeps running.
pub fn wait_ready(
    proc: &mut Proc,
    what: &str,
    limit: Duration,
    stop: &AtomicBool,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let start = Instant::now();
    while !ready() {
        if let Some(st) = proc.exited()? {
            bail!("{} exited ({st}) before {what}:\n{}", proc.name, proc.stderr_tail(6));
        }
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if start.elapsed() > limit {
            bail!("{} not {what} after {limit:?}:\n{}", proc.name, proc.stderr_tail(6));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// True when process `pid`'s network namespace has a `tcp` (listening) or
/// udp socket bound to `port`; reads `/proc/PID/net/{udp,tcp}`, so it works
/// for a process inside another namespace too.
pub fn port_bound(pid: u32, tcp: bool, port: u16) -> bool {
    let file = if tcp { "tcp" } else { "udp" };
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
        return false;
    };
    let want = format!(":{port:04X}");
    table.lines().skip(1).any(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1).unwrap_or("");
        let state = f.nth(1).unwrap_or("");
        local.ends_with(&want) && (!tcp || state == "0A")
    })
}

/// True when `prog` can be started from `PATH`.
pub fn available(prog: &str, arg: &str) -> bool {
    Command::new(prog).arg(arg).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
}

/// Run a command to completion; its stdout, or an error with its stderr.
pub fn run(argv: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
