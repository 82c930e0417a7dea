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
        free_text: &["--book-out", "--ready-file", "--ifname"],
        zero_refused: &[
            "--symbols",
            "--messages",
            "--retransmit-window",
            "--epoch",
            "--max-packet",
        ],
        u32_max_refused: &["--symbols", "--max-packet", "--rate", "--retransmit-window"],
        known: &["--transport", "--symbols", "--drop-rate", "--max-packet", "--cpu", "--group"],
    });
}
