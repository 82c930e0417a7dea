#!/usr/bin/env bash
# compare-ns.sh — throughput and latency of tcp vs multicast vs xdp across the
# namespace topology (topology.sh): server in <p>srv, one client in <p>cli1,
# the bridge <p>mid between them (no loss).
#
#   compare-ns.sh [RUNS] [MESSAGES] [FIXED_RATE]     defaults: 3 1000000 200000
#
# For each transport, RUNS runs at --rate 0 (as fast as the server can
# publish) and RUNS at --rate FIXED_RATE (for latency), MESSAGES each. Prints
# one markdown row per transport and rate with the medians over the runs:
# server msg/s, client delivered msg/s, client latency p50/p99/p99.9 (from the
# client's --json; one-way, server send stamp to client receive, same host
# clock), gaps, and for xdp the bind mode the transport printed.
#
# Idle strategy of both processes: $IDLE (default auto; block, spin, spin-block[:BUDGET]).
# Binaries: $BIN (default target/fast-test), built with
#   cargo build --profile fast-test --workspace --all-features --bins
# Raw JSON and stderr of every run stay in $OUT (printed at the end).
# The namespaces are removed on exit, also on error or Ctrl-C.
set -euo pipefail

RUNS="${1:-3}"
MSGS="${2:-1000000}"
FIXED="${3:-200000}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${BIN:-$HERE/../target/fast-test}"
P="cmp$$"
SRV_IP=10.77.0.1
CLI_IP=10.77.0.11
GROUP=239.255.0.1:30001
OUT="${OUT:-$(mktemp -d /tmp/tickwire-compare.XXXXXX)}"
# How long to wait for a process's ready file before giving up (binding an
# AF_XDP socket takes milliseconds; retries after a teardown up to ~1 s).
READY_TRIES=2000 # x 10 ms
IDLE="${IDLE:-auto}"

for b in server client; do
    [ -x "$BIN/$b" ] || { echo "compare-ns.sh: $BIN/$b missing: build with --all-features first" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "compare-ns.sh: needs root (network namespaces, AF_XDP)" >&2; exit 1; }

cleanup() { "$HERE/topology.sh" down "$P" 1 >/dev/null 2>&1 || true; }
trap cleanup EXIT INT TERM
"$HERE/topology.sh" up "$P" 1 >/dev/null

wait_ready() { # FILE PID
    local i
    for ((i = 0; i < READY_TRIES; i++)); do
        [ -e "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || { echo "compare-ns.sh: process $2 exited before it was ready" >&2; return 1; }
        sleep 0.01
    done
    echo "compare-ns.sh: $1 never appeared" >&2
    return 1
}

run_one() { # TRANSPORT RATE RUN
    local t="$1" rate="$2" n="$3" port=$((9100 + RANDOM % 800))
    local tag="$t-r$rate-$n"
    local common=(--transport "$t" --group "$GROUP" --ifname eth0 --idle "$IDLE")
    local srv=(ip netns exec "${P}srv" "$BIN/server" "${common[@]}" --listen "$SRV_IP:$port"
        --interface "$SRV_IP" --rate "$rate" --messages "$MSGS" --duration 0 --seed 7
        --linger 1s --stats-interval 0 --json --ready-file "$OUT/$tag.srv.ready")
    local cli=(ip netns exec "${P}cli1" "$BIN/client" "${common[@]}" --connect "$SRV_IP:$port"
        --interface "$CLI_IP" --quiet --json --ready-file "$OUT/$tag.cli.ready")
    local sp cp
    if [ "$t" = tcp ]; then
        # A TCP client needs the listener; it logs in from sequence 1 and is
        # replayed what it missed while connecting.
        "${srv[@]}" >"$OUT/$tag.srv.json" 2>"$OUT/$tag.srv.err" & sp=$!
        wait_ready "$OUT/$tag.srv.ready" $sp
        "${cli[@]}" >"$OUT/$tag.cli.json" 2>"$OUT/$tag.cli.err" & cp=$!
    else
        # Datagram clients subscribe first, so they see the session from its start.
        "${cli[@]}" >"$OUT/$tag.cli.json" 2>"$OUT/$tag.cli.err" & cp=$!
        wait_ready "$OUT/$tag.cli.ready" $cp
        "${srv[@]}" >"$OUT/$tag.srv.json" 2>"$OUT/$tag.srv.err" & sp=$!
    fi
    wait $sp || echo "compare-ns.sh: server $tag failed (see $OUT/$tag.srv.err)" >&2
    wait $cp || echo "compare-ns.sh: client $tag failed (see $OUT/$tag.cli.err)" >&2
}

for rate in 0 "$FIXED"; do
    for t in tcp multicast xdp; do
        for ((n = 1; n <= RUNS; n++)); do
            run_one "$t" "$rate" "$n"
            echo "compare-ns.sh: $t rate=$rate run $n done" >&2
        done
    done
done

python3 - "$OUT" "$RUNS" "$MSGS" <<'EOF'
import json, statistics, sys, glob, os, re
out, runs, msgs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def last_json(path):
    try:
        lines = [l for l in open(path) if l.startswith("{")]
        return json.loads(lines[-1]) if lines else None
    except OSError:
        return None
print(f"| transport | --rate | runs ok | server msg/s | client msg/s | p50 µs | p99 µs | p99.9 µs | gaps | bind mode |")
print(f"|---|---|---|---|---|---|---|---|---|---|")
rates = sorted({int(re.search(r"-r(\d+)-", f).group(1)) for f in glob.glob(f"{out}/*.srv.json")})
for rate in rates:
    for t in ["tcp", "multicast", "xdp"]:
        rows = []
        modes = {}
        for n in range(1, runs + 1):
            tag = f"{t}-r{rate}-{n}"
            s, c = last_json(f"{out}/{tag}.srv.json"), last_json(f"{out}/{tag}.cli.json")
            if s is None or c is None:
                continue
            rows.append((s["rate"], c["rate"], c["latency_ns"]["p50"], c["latency_ns"]["p99"],
                         c["latency_ns"]["p999"], c["gaps_detected"], c["messages_delivered"]))
            for f in (f"{out}/{tag}.srv.err", f"{out}/{tag}.cli.err"):
                if os.path.exists(f):
                    for l in open(f):
                        m = re.search(r"tickwire-xdp: (publisher|subscriber) bound \S+ queue \d+ in (.*?)(?: \(zero-copy.*)?$", l.rstrip())
                        if m:
                            modes[m.group(1)] = m.group(2)
        if not rows:
            print(f"| {t} | {rate or 'max'} | 0/{runs} | | | | | | | |")
            continue
        mode = "; ".join(f"{k}: {v}" for k, v in sorted(modes.items()))
        med = lambda i: statistics.median(r[i] for r in rows)
        print(f"| {t} | {rate or 'max'} | {len(rows)}/{runs} | {med(0):,.0f} | {med(1):,.0f} | "
              f"{med(2)/1e3:,.1f} | {med(3)/1e3:,.1f} | {med(4)/1e3:,.1f} | "
              f"{'/'.join(str(r[5]) for r in rows)} | {mode} |")
EOF
echo "compare-ns.sh: raw results in $OUT" >&2
