#!/usr/bin/env bash
# The whole test suite: unit, property, simulation, loom and integration tests
# (release-optimised "fast-test" profile: optimised, with debug assertions).
# Tests that need root or AF_XDP print "SKIPPED: ..." and are counted as skipped
# when they cannot run. Long sweeps and soaks take TICKWIRE_LONG=1.
set -euo pipefail
cd "$(dirname "$0")/.."
xdp-setup/install-deps.sh
echo "== build (profile fast-test)"
cargo build --profile fast-test --workspace --all-features --bins
echo "== tests"
cargo test --profile fast-test --workspace --all-features --no-fail-fast 2>&1 | tee target/test-output.txt
echo "== loom model checking of the seqlock cache"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test --profile fast-test -p tickwire-core --test loom_cache 2>&1 | tee -a target/test-output.txt
echo "== fuzz (cargo-fuzz, bounded runs per target; details in fuzz/target/<target>.log)"
if RUSTC_BOOTSTRAP=1 cargo fuzz --version >/dev/null 2>&1; then
    fuzz/seeds.sh
    # RUSTC_BOOTSTRAP=1: cargo fuzz needs nightly flags (-Zsanitizer); stable accepts them so.
    export RUSTC_BOOTSTRAP=1
    # No sanitizer: core forbids unsafe code, so the targets look for panics
    # and broken invariants, which ASan would only slow down 20x.
    fz=(--fuzz-dir fuzz -s none -O)
    CARGO_TARGET_DIR=fuzz/target cargo fuzz build "${fz[@]}"
    # Every crash found so far replays first (fuzz/regressions/<target>/).
    for d in fuzz/regressions/*/; do
        t=$(basename "$d")
        if ! CARGO_TARGET_DIR=fuzz/target cargo fuzz run "${fz[@]}" "$t" "$d"* >"fuzz/target/$t.regressions.log" 2>&1; then
            tail -n 40 "fuzz/target/$t.regressions.log"
            echo "fuzz: $t: a recorded crash input fails again"
            exit 1
        fi
        echo "fuzz: $t: $(ls "$d" | wc -l) recorded crash inputs pass"
    done
    for t in packet_views tcp_framer request_service receiver snapshot_assembler; do
        runs=1000000
        log=fuzz/target/$t.log
        start=$(date +%s)
        if ! CARGO_TARGET_DIR=fuzz/target cargo fuzz run "${fz[@]}" "$t" "fuzz/corpus/$t" -- \
            -runs="$runs" -max_len=2048 -print_final_stats=0 >"$log" 2>&1; then
            tail -n 60 "$log"
            echo "fuzz: $t FAILED (crash input in fuzz/artifacts/$t/; see $log)"
            exit 1
        fi
        done_line=$(grep -E "^Done [0-9]+ runs" "$log" | tail -n 1)
        echo "fuzz: $t: ${done_line:-no Done line}, 0 crashes ($(($(date +%s) - start)) s)"
    done
    unset RUSTC_BOOTSTRAP
else
    echo "SKIPPED: fuzz: cargo-fuzz not installed (xdp-setup/install-deps.sh installs it)" | tee -a target/test-output.txt
fi
echo "== skipped tests"
grep -h "SKIPPED:" target/test-output.txt || echo "(none)"
