//! Every flag of the binary with absurd values: never a panic or an abort,
//! and an invalid value is a usage error (exit code 2) naming the flag.

#[path = "support/cli_walk.rs"]
mod cli_walk;

#[test]
fn every_flag_with_absurd_values() {
    cli_walk::walk(&cli_walk::Spec {
        bin: env!("CARGO_BIN_EXE_client"),
        base: &[("--connect", "127.0.0.1:1"), ("--duration", "100ms"), ("--quiet", "")],
        free_text: &["--book-out", "--ready-file", "--hdr-log", "--ifname", "--record"],
        zero_refused: &["--universe", "--max-packet"],
        u32_max_refused: &["--universe", "--symbols", "--max-packet"],
        known: &[
            "--transport",
            "--connect",
            "--universe",
            "--symbols",
            "--drop-rate",
            "--max-packet",
            "--cpu",
            "--interface",
            "--ifname",
        ],
    });
}
