#!/usr/bin/env bash
# The main job: build, run a server and a client over loopback with the
# client's live view (10 s of TCP by default; TRANSPORT=multicast, DURATION=30s,
# RATE=500000 change it), then a short comparison run of tcp and multicast on
# loopback, one repetition of each cell, with its report, plots and JSON in
# target/demo-compare/ (COMPARE=0 skips it; target/release/compare alone runs
# the default profile).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -eq 0 ]; then
    xdp-setup/install-deps.sh
fi
cargo build --release --bins
TRANSPORT=${TRANSPORT:-tcp}
DURATION=${DURATION:-10s}
RATE=${RATE:-200000}
READY=$(mktemp -u /tmp/tickwire-demo.XXXXXX)
GROUP=239.255.0.1:30001

echo "== $TRANSPORT feed on loopback: $RATE msg/s for $DURATION, verified against seed 7"
if [ "$TRANSPORT" != tcp ]; then
    # Datagram subscribers join first, so they see the session from message 1.
    ./target/release/client --transport "$TRANSPORT" --connect 127.0.0.1:9000 --group "$GROUP" \
        --verify 7 --hdr-log target/demo-latency.hgrm &
    CLIENT=$!
    sleep 0.5
fi
./target/release/server --transport "$TRANSPORT" --listen 127.0.0.1:9000 --group "$GROUP" --rate "$RATE" \
    --seed 7 --duration "$DURATION" --linger 2s --stats-interval 0 --ready-file "$READY" &
SERVER=$!
trap 'kill $SERVER ${CLIENT:-} 2>/dev/null || true; rm -f "$READY"' EXIT
for _ in $(seq 100); do [ -s "$READY" ] && break; sleep 0.1; done
if [ "$TRANSPORT" = tcp ]; then
    ./target/release/client --transport tcp --connect "$(cat "$READY")" --verify 7 \
        --hdr-log target/demo-latency.hgrm
else
    wait "$CLIENT"
fi
wait $SERVER
echo "latency histogram: target/demo-latency.hgrm"

if [ "${COMPARE:-1}" != 0 ]; then
    echo
    echo "== side by side: tcp vs multicast on loopback (docs/BENCHMARKS.md has the default profile)"
    ./target/release/compare --transports tcp,multicast --nets loopback --clients 1,4 --rate 100000 \
        --runs 1 --out target/demo-compare
fi
