#!/usr/bin/env bash
# loss-sweep.sh — measure multicast recovery under loss and print the
# docs/LOSS.md table (markdown) from the clients' --json summaries.
#
#   scripts/loss-sweep.sh [inproc|netem|both]      (default: both; netem needs root)
#
# Environment: SECS (generation seconds per run, default 3), RATE (msg/s,
# default 200000), LOSSES (percent, default "0.1 1 5 10 20"), BIN (directory of
# the server/client binaries, default target/fast-test).
#
# inproc: server and one client on loopback; the client drops LOSS% of every
#         datagram it receives (feed lines and recovery replies), seeded
#         (--drop-rate, --drop-seed 7).
# netem:  server in <p>srv, one client in <p>cli1, xdp-setup/netem.sh LOSS% on
#         the bridge in <p>mid (kernel drops; NACKs and answers cross it too).
# Each loss rate runs without and with A/B (--group-b: the same stream twice).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-both}
SECS=${SECS:-3}
RATE=${RATE:-200000}
LOSSES=${LOSSES:-"0.1 1 5 10 20"}
BIN=${BIN:-target/fast-test}
OUT=$(mktemp -d /tmp/tickwire-sweep.XXXXXX)
[ -x "$BIN/server" ] && [ -x "$BIN/client" ] || {
    echo "loss-sweep.sh: $BIN/server or $BIN/client missing: cargo build --profile fast-test --workspace --bins" >&2
    exit 1
}

header() {
    echo
    echo "| mechanism | loss | A/B | messages | gaps | messages missed | NACKs sent | retransmitted msgs | snapshots | unrecovered | verified | recovery p50 (µs) | recovery p99 (µs) | bridge drops |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
}

row() { # mechanism loss ab client.json server.json drops
    jq -r --arg m "$1" --arg l "$2" --arg ab "$3" --arg d "$6" --slurpfile s "$5" \
        '"| \($m) | \($l)% | \($ab) | \($s[0].messages) | \(.gaps_detected) | \(.messages_missed) | \(.nacks_sent) | \(.messages_retransmitted) | \(.snapshots) | \(.unrecovered) | \(if .verify.ok and .last_seq == $s[0].messages then "yes" else "NO" end) | \(.recovery_time.p50_us) | \(.recovery_time.p99_us) | \($d) |"' "$4"
}

# run_one PREFIX_SERVER PREFIX_CLIENT SRV_IF CLI_IF LOSS AB DROP_RATE TAG
run_one() {
    local srv_exec=$1 cli_exec=$2 srv_if=$3 cli_if=$4 ab=$5 drop=$6 tag=$7 port=$8
    local ga="239.255.77.1:$((port + 1))" gb="239.255.77.2:$((port + 2))"
    local abs=() abc=()
    if [ "$ab" = yes ]; then abs=(--group-b "$gb"); abc=(--group-b "$gb"); fi
    $cli_exec "$BIN/client" --transport multicast --interface "$cli_if" --connect "$srv_if:$port" \
        --group "$ga" "${abc[@]}" --verify 7 --quiet --json --drop-rate "$drop" --drop-seed 7 \
        > "$OUT/$tag.client.json" 2> "$OUT/$tag.client.err" &
    local cpid=$!
    sleep 0.3
    $srv_exec "$BIN/server" --transport multicast --interface "$srv_if" --listen "$srv_if:$port" \
        --group "$ga" "${abs[@]}" --rate "$RATE" --seed 7 --duration "${SECS}s" --linger 3s \
        --stats-interval 0 --json > "$OUT/$tag.server.json" 2> "$OUT/$tag.server.err"
    wait "$cpid" || echo "loss-sweep.sh: client of $tag exited non-zero (see $OUT/$tag.client.err)" >&2
}

if [ "$MODE" = inproc ] || [ "$MODE" = both ]; then
    echo "## in-process seeded drop (client --drop-rate, loopback), ${SECS}s at ${RATE} msg/s"
    header
    port=19100
    for loss in $LOSSES; do
        for ab in no yes; do
            tag="inproc-$loss-$ab"
            drop=$(awk "BEGIN{print $loss/100}")
            run_one "" "" 127.0.0.1 127.0.0.1 "$ab" "$drop" "$tag" "$port"
            port=$((port + 4))
            row inproc "$loss" "$ab" "$OUT/$tag.client.json" "$OUT/$tag.server.json" "-"
        done
    done
fi

if [ "$MODE" = netem ] || [ "$MODE" = both ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "SKIPPED: netem sweep needs root (network namespaces)" >&2
        exit 0
    fi
    P=tws$$
    trap 'xdp-setup/netem.sh -n ${P}mid br0 clear >/dev/null 2>&1 || true; xdp-setup/topology.sh down $P 1 >/dev/null 2>&1 || true' EXIT
    xdp-setup/topology.sh up "$P" 1 > "$OUT/topology.log"
    echo
    echo "## kernel drops on the bridge (xdp-setup/netem.sh), ${SECS}s at ${RATE} msg/s"
    mech=""
    header
    for loss in $LOSSES; do
        for ab in no yes; do
            tag="netem-$loss-$ab"
            mech=$(xdp-setup/netem.sh -n "${P}mid" br0 "$loss" | grep -o 'mechanism=[a-z]*' | cut -d= -f2)
            before=$(xdp-setup/netem.sh -n "${P}mid" br0 status | grep -o 'dropped=[0-9]*' | cut -d= -f2 | head -1)
            run_one "ip netns exec ${P}srv" "ip netns exec ${P}cli1" 10.77.0.1 10.77.0.11 "$ab" 0 "$tag" 9100
            after=$(xdp-setup/netem.sh -n "${P}mid" br0 status | grep -o 'dropped=[0-9]*' | cut -d= -f2 | head -1)
            row "$mech" "$loss" "$ab" "$OUT/$tag.client.json" "$OUT/$tag.server.json" "$(( ${after:-0} - ${before:-0} ))"
        done
    done
fi
echo
echo "(raw summaries in $OUT)"
