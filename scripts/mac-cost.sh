#!/usr/bin/env bash
# End-to-end cost of packet authentication (--key-file, docs/PROTOCOL.md § 12):
# multicast on loopback, the release server and client, without and with a key,
# interleaved run by run so both see the same machine. Prints one JSON line per
# run: delivered messages, tick-to-cache percentiles, CPU ns per message.
#   RATE=100000 (latency at a fixed rate) or RATE=0 (throughput); MSGS; RUNS.
# Build first: cargo build --release -p tickwire-server -p tickwire-client
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release}
RATE=${RATE:-100000}; MSGS=${MSGS:-500000}; RUNS=${RUNS:-3}; PORT=${PORT:-21000}
dir=$(mktemp -d /tmp/tickwire-mac-cost.XXXXXX)
trap 'rm -rf "$dir"' EXIT
key=$dir/feed.key
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$key"
port=$PORT
for r in $(seq "$RUNS"); do
    for mode in plain mac; do
        port=$((port + 2))
        extra=()
        [ "$mode" = mac ] && extra=(--key-file "$key")
        group=239.255.77.$((r % 200 + 1)):$((port + 1))
        timeout 120 "$BIN/client" --transport multicast --connect "127.0.0.1:$port" --group "$group" \
            --quiet --json "${extra[@]}" >"$dir/c.json" 2>"$dir/c.err" &
        client=$!
        sleep 0.3
        "$BIN/server" --transport multicast --listen "127.0.0.1:$port" --group "$group" --rate "$RATE" \
            --messages "$MSGS" --linger 1s --stats-interval 0 --json "${extra[@]}" >"$dir/s.json" 2>"$dir/s.err"
        wait "$client" || { echo "client failed:"; tail "$dir/c.err"; exit 1; }
        python3 - "$mode" "$r" "$dir" <<'PY'
import json, sys
mode, run, d = sys.argv[1], int(sys.argv[2]), sys.argv[3]
c = json.load(open(f"{d}/c.json")); s = json.load(open(f"{d}/s.json"))
t = c["tick_to_cache_ns"]; n = max(c["messages_delivered"], 1)
print(json.dumps(dict(mode=mode, run=run, delivered=c["messages_delivered"], sent=s["messages"],
    unrecovered=c["unrecovered"], rate=round(c["rate"]), p50_us=t["p50"] / 1e3, p99_us=t["p99"] / 1e3,
    p999_us=t["p999"] / 1e3, server_cpu_ns_per_msg=round(s["cpu_ns_per_message"]),
    client_cpu_ns_per_msg=round((c["cpu_user_s"] + c["cpu_sys_s"]) * 1e9 / n))))
PY
    done
done
