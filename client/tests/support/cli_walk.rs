//! The flag walk shared by `server/tests/cli.rs` and `client/tests/cli.rs`:
//! every flag a binary's `--help` lists, run with absurd values. Never a
//! panic or an abort, and an invalid value is a usage error (exit code 2)
//! naming the flag.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What differs between the binaries.
pub struct Spec {
    /// The binary.
    pub bin: &'static str,
    /// Base arguments so that a value that is accepted makes a short run.
    pub base: &'static [(&'static str, &'static str)],
    /// Flags taking free text (paths, names): only "" must be refused.
    pub free_text: &'static [&'static str],
    /// Flags where 0 is out of range.
    pub zero_refused: &'static [&'static str],
    /// Flags where 4294967295 (u32::MAX) is out of range.
    pub u32_max_refused: &'static [&'static str],
    /// Flags `--help` must list.
    pub known: &'static [&'static str],
}

/// Values every flag except the free-text ones must refuse.
pub const ALWAYS_REFUSED: &[&str] = &[
    "99999999999999999999999",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "-1",
    "NaN",
    "inf",
    "-inf",
    "1e400",
    "x!@#",
    "",
];
pub const ODD: &[&str] =
    &["0", "4294967295", "1", "0.5", "127.0.0.1:1", "239.255.0.1:0", "[::1]:9"];

fn flags(bin: &str) -> Vec<String> {
    let out = Command::new(bin).arg("--help").output().expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut set = BTreeSet::new();
    for word in help.split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[') {
        if let Some(name) = word.strip_prefix("--")
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && name != "help"
            && name != "version"
        {
            set.insert(format!("--{name}"));
        }
    }
    set.into_iter().collect()
}

struct Run {
    code: Option<i32>,
    signal: Option<i32>,
    killed: bool,
    stderr: String,
}

fn run(bin: &str, dir: &Path, base: &[(&str, &str)], flag: &str, value: &str) -> Run {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for (f, v) in base.iter().filter(|(f, _)| *f != flag) {
        cmd.arg(f);
        if !v.is_empty() {
            cmd.arg(v);
        }
    }
    cmd.arg(format!("{flag}={value}"));
    let mut child = cmd.spawn().expect("spawn");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(3) {
            killed = true;
            child.kill().ok();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run { code: status.code(), signal: status.signal(), killed, stderr: reader.join().unwrap() }
}

pub fn walk(spec: &Spec) {
    let (bin, base) = (spec.bin, spec.base);
    let flags = flags(bin);
    assert!(!flags.is_empty());
    for k in spec.known {
        assert!(flags.iter().any(|f| f == k), "--help lacks {k}: {flags:?}");
    }
    let dir: PathBuf = std::env::temp_dir().join(format!("tickwire-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut jobs = Vec::new();
    for f in &flags {
        for v in ALWAYS_REFUSED.iter().chain(ODD) {
            jobs.push((f.clone(), *v));
        }
    }
    let total = jobs.len();
    let jobs = Mutex::new(jobs);
    let failures = Mutex::new(Vec::new());
    let killed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| {
                loop {
                    let job = jobs.lock().unwrap().pop();
                    let Some((flag, value)) = job else { break };
                    let r = run(bin, &dir, base, &flag, value);
                    let what = format!("{flag}={value:?}");
                    let fail = |m: String| failures.lock().unwrap().push(format!("{what}: {m}"));
                    if r.killed {
                        killed.lock().unwrap().push(what.clone());
                    } else if let Some(sig) = r.signal {
                        fail(format!("killed by signal {sig}; stderr: {}", r.stderr));
                    }
                    if r.code == Some(101) || r.stderr.contains("panicked") {
                        fail(format!("panicked: {}", r.stderr));
                    }
                    let free = spec.free_text.contains(&flag.as_str());
                    let must_refuse = (ALWAYS_REFUSED.contains(&value)
                        && (!free || value.is_empty()))
                        || (value == "0" && spec.zero_refused.contains(&flag.as_str()))
                        || (value == "4294967295" && spec.u32_max_refused.contains(&flag.as_str()));
                    if must_refuse && (r.code != Some(2) || !r.stderr.contains(flag.as_str())) {
                        fail(format!(
                            "expected a usage error naming {flag}, got {:?}: {}",
                            r.code, r.stderr
                        ));
                    }
                    if r.code == Some(2)
                        && !r.stderr.contains("Usage")
                        && !r.stderr.contains("--help")
                    {
                        fail(format!("exit code 2 without usage: {}", r.stderr));
                    }
                }
            });
        }
    });
    std::fs::remove_dir_all(&dir).ok();
    let failures = failures.into_inner().unwrap();
    let killed = killed.into_inner().unwrap();
    eprintln!(
        "{bin}: {} flags x {} values = {total} runs; {} ran into the 3 s limit: {killed:?}",
        flags.len(),
        ALWAYS_REFUSED.len() + ODD.len(),
        killed.len(),
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}
