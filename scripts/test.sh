#!/usr/bin/env bash
# The whole test suite: unit, property, simulation, loom and integration tests
# (release-optimised "fast-test" profile: optimised, with debug assertions),
# then bounded fuzz runs. Tests that need root, AF_XDP or a kernel feature
# (multicast routing, busy polling, a loss mechanism...) check for it first,
# print "SKIPPED: <test>: <reason>" and are listed under "skipped tests".
# Long sweeps and soaks take TICKWIRE_LONG=1.
#
# Every stage runs even when an earlier one failed; the script exits non-zero
# at the end with the list of the stages that failed (and the failed tests).
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p target
OUT=target/test-output.txt
: >"$OUT"
# Tests append their SKIPPED lines here (tickwire_transports::kernel::skip):
# cargo shows a passing test's stderr only with --nocapture.
export TICKWIRE_SKIP_LOG="$PWD/target/skipped.txt"
: >"$TICKWIRE_SKIP_LOG"
FAILED=()

# stage NAME CMD...: run one stage, its output also into $OUT; remember a failure.
stage() {
    local name="$1"
    shift
    echo "== $name"
    if ! "$@" 2>&1 | tee -a "$OUT"; then
        echo "== $name: FAILED"
        FAILED+=("$name")
    fi
}

if ! xdp-setup/install-deps.sh; then
    echo "install-deps.sh failed: the stages below may lack what they need"
    FAILED+=("install-deps")
fi

stage "build (profile fast-test)" cargo build --profile fast-test --workspace --all-features --bins
stage "tests" cargo test --profile fast-test --workspace --all-features --no-fail-fast
stage "loom model checking of the seqlock cache" \
    env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
    cargo test --profile fast-test -p tickwire-core --test loom_cache

# One fuzz target: replay its recorded crashes, then a bounded run.
fuzz_target() {
    local t="$1" d="fuzz/regressions/$1/" log="fuzz/target/$1.log" start
    # No sanitizer: core forbids unsafe code, so the targets look for panics
    # and broken invariants, which ASan would only slow down 20x.
    local fz=(--fuzz-dir fuzz -s none -O)
    if [ -d "$d" ]; then
        if ! cargo fuzz run "${fz[@]}" "$t" "$d"* >"fuzz/target/$t.regressions.log" 2>&1; then
            tail -n 40 "fuzz/target/$t.regressions.log"
            echo "fuzz: $t: a recorded crash input fails again"
            return 1
        fi
        echo "fuzz: $t: $(ls "$d" | wc -l) recorded crash inputs pass"
    fi
    start=$(date +%s)
    if ! cargo fuzz run "${fz[@]}" "$t" "fuzz/corpus/$t" -- \
        -runs=1000000 -max_len=2048 -print_final_stats=0 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $t FAILED (crash input in fuzz/artifacts/$t/; see $log)"
        return 1
    fi
    local done_line
    done_line=$(grep -E "^Done [0-9]+ runs" "$log" | tail -n 1)
    echo "fuzz: $t: ${done_line:-no Done line}, 0 crashes ($(($(date +%s) - start)) s)"
}

echo "== fuzz (cargo-fuzz, bounded runs per target; details in fuzz/target/<target>.log)"
if RUSTC_BOOTSTRAP=1 cargo fuzz --version >/dev/null 2>&1; then
    # RUSTC_BOOTSTRAP=1: cargo fuzz needs nightly flags (-Zsanitizer); stable accepts them so.
    export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=fuzz/target
    stage "fuzz: seeds" fuzz/seeds.sh
    stage "fuzz: build" cargo fuzz build --fuzz-dir fuzz -s none -O
    for t in packet_views tcp_framer request_service receiver receiver_per_symbol snapshot_assembler; do
        stage "fuzz: $t" fuzz_target "$t"
    done
    unset RUSTC_BOOTSTRAP CARGO_TARGET_DIR
else
    echo "SKIPPED: fuzz: cargo-fuzz not installed (xdp-setup/install-deps.sh installs it)" | tee -a "$TICKWIRE_SKIP_LOG"
fi

echo "== skipped tests (and parts of tests), with the reason"
sort -u "$TICKWIRE_SKIP_LOG" | grep . || echo "(none)"
# Cargo counts a test that returned after its SKIPPED line as passed: count it skipped.
sum() { grep -E "^test result: " "$OUT" | grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
skipped=$(grep -c "^SKIPPED: " "$TICKWIRE_SKIP_LOG" || true)
fuzz_skipped=$(grep -c "^SKIPPED: fuzz:" "$TICKWIRE_SKIP_LOG" || true)
echo "== counts (cargo's passed less the tests that skipped; ignored: $(sum ignored), not run by default)"
echo "tests: $(($(sum passed) - skipped + fuzz_skipped)) passed, $(sum failed) failed, $skipped skipped"
if [ ${#FAILED[@]} -gt 0 ]; then
    echo "== FAILED stages (${#FAILED[@]}):"
    printf '  %s\n' "${FAILED[@]}"
    failed_tests=$(grep -E "^test .* \.\.\. FAILED$|^error: .* target failed|^error: test failed" "$OUT" | sort -u)
    [ -n "$failed_tests" ] && { echo "== failed tests:"; echo "$failed_tests"; }
    exit 1
fi
echo "== all stages passed"
