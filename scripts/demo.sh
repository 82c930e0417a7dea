#!/usr/bin/env bash
# The main job: build, then run a server and a client over loopback TCP with
# the client's live view, for 10 seconds (override with DURATION=30s,
# TRANSPORT=multicast, RATE=500000).
set -euo pipefail
cd "$(dirname "$0")/.."
xdp-setup/install-deps.sh
cargo build --release --bins
TRANSPORT=${TRANSPORT:-tcp}
DURATION=${DURATION:-10s}
RATE=${RATE:-200000}
PORT=${PORT:-9000}
case "$TRANSPORT" in
    tcp) ADDR=127.0.0.1:$PORT ;;
    *) ADDR=127.0.0.1:$PORT ;;
esac
./target/release/server --transport "$TRANSPORT" --listen "$ADDR" --rate "$RATE" --seed 7 \
    --duration "$DURATION" --linger 2s --stats-interval 0 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
sleep 0.3
./target/release/client --transport "$TRANSPORT" --connect "$ADDR" --verify 7 --hdr-log target/demo-latency.hgrm
wait $SERVER
echo "latency histogram: target/demo-latency.hgrm"
