//! Every flag of the binary with absurd values: never a panic or an abort,
//! and an invalid value is a usage error (exit code 2) naming the flag.

#[path = "../../client/tests/support/cli_walk.rs"]
mod cli_walk;

#[test]
fn every_flag_with_absurd_values() {
    cli_walk::walk(&cli_walk::Spec {
        bin: env!("CARGO_BIN_EXE_server"),
        base: &[
            ("--listen", "127.0.0.1:0"),
            ("--duration", "100ms"),
            ("--linger", "0"),
            ("--stats-interval", "0"),
        ],
        free_text: &["--book-out", "--ready-file", "--ifname", "--replay"],
        zero_refused: &[
            "--symbols",
            "--messages",
            "--retransmit-window",
            "--epoch",
            "--max-packet",
            "--max-per-host",
        ],
        u32_max_refused: &[
            "--symbols",
            "--max-packet",
            "--rate",
            "--retransmit-window",
            "--max-per-host",
            "--ttl",
        ],
        known: &[
            "--transport",
            "--symbols",
            "--drop-rate",
            "--max-packet",
            "--cpu",
            "--group",
            "--ttl",
            "--interface",
            "--ifname",
        ],
    });
}

/// `--ttl` is in 0..=255, says its default in `--help`, and is refused
/// with a usage error naming it above 255.
#[test]
fn ttl_flag_is_documented_and_bounded() {
    let bin = env!("CARGO_BIN_EXE_server");
    let help = std::process::Command::new(bin).arg("--help").output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let ttl = help.split("--ttl").nth(1).expect("--help lists --ttl");
    let ttl = &ttl[..ttl.find("\n      --").unwrap_or(ttl.len())];
    assert!(ttl.contains("[default: 1]"), "--ttl help: {ttl}");
    assert!(ttl.contains("router"), "--ttl help says what it is for: {ttl}");
    let out = std::process::Command::new(bin).args(["--ttl", "256"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}
