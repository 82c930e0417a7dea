#!/usr/bin/env bash
# loss-sweep.sh — kept as a thin wrapper: the loss sweep is now part of
# `compare` (its "Seeded in-process loss", "A/B feeds" and "Real kernel loss
# on the bridge" tables, with recovery time and unrecovered gaps plotted
# against the loss rate; docs/BENCHMARKS.md, docs/LOSS.md).
#
#   scripts/loss-sweep.sh [inproc|netem|both] [compare flags...]   (default: both; netem needs root)
#
# Environment: LOSSES (percent, default "0.1 1 5 20"), RATE (msg/s, default
# 100000), BIN (directory of the binaries, default target/fast-test), OUT (the
# report directory, default compare's results/<timestamp>/).
#
# inproc: multicast on loopback, the client drops LOSS% of what it receives
#         (--drop-rate, seeded), with and without A/B at the largest rate.
# netem:  tcp, multicast and xdp across the namespace topology, LOSS% dropped
#         on the bridge (netem where the kernel has it, else nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-both}
LOSSES=${LOSSES:-"0.1 1 5 20"}
BIN=${BIN:-target/fast-test}
pct=$(echo "$LOSSES" | tr ' ' ',')
frac=$(for l in $LOSSES; do awk "BEGIN{print $l/100}"; done | paste -sd, -)
case "$MODE" in
    inproc) nets=loopback; transports=multicast ;;
    netem) nets=netns; transports=tcp,multicast,xdp ;;
    both) nets=loopback,netns; transports=tcp,multicast,xdp ;;
    *) sed -n '7,8p' "$0" >&2; exit 2 ;;
esac
args=(--nets "$nets" --transports "$transports" --rate "${RATE:-100000}" --clients 1
      --drop-rates "$frac" --kernel-losses "$pct" --bin-dir "$BIN")
[ -n "${OUT:-}" ] && args+=(--out "$OUT")
exec "$BIN/compare" "${args[@]}" "${@:2}"
