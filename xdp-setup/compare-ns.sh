#!/usr/bin/env bash
# compare-ns.sh — kept as a thin wrapper: the comparison across the namespace
# topology (tcp, multicast and xdp, a fixed rate and --rate 0, real kernel
# loss on the bridge) is now part of `compare`, which makes and removes its
# own namespaces, measures the sockperf floor beside the cells and writes a
# report with plots (docs/BENCHMARKS.md).
#
#   compare-ns.sh [RUNS] [MESSAGES] [FIXED_RATE] [compare flags...]     defaults: 3 100000 100000
#
# Runs: compare --nets netns --runs RUNS --messages MESSAGES --rate FIXED_RATE
# with the binaries in $BIN (default target/fast-test, built with
#   cargo build --profile fast-test --workspace --all-features --bins)
# and the report in $OUT (default: compare's results/<timestamp>/). Needs root.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${BIN:-$HERE/../target/fast-test}"
args=(--nets netns --runs "${1:-3}" --messages "${2:-100000}" --rate "${3:-100000}" --bin-dir "$BIN")
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
exec "$BIN/compare" "${args[@]}" "${@:4}"
