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
echo "== skipped tests"
grep -h "SKIPPED:" target/test-output.txt || echo "(none)"
