#!/bin/bash
# The capture issue's measurements (not a test: the figures depend on the machine and its load).
#   scripts/capture-measure.sh cpu     # client CPU per message and tick-to-cache p50 at 100k msg/s, with and without --record (ABBA, 6 pairs)
#   scripts/capture-measure.sh tput    # server --replay --speed max vs GBM --rate 0 over tcp, 1M messages, 3 pairs
#   scripts/capture-measure.sh pace    # a 20k msg/s session recorded, replayed at 1x and recorded again: Data inter-arrival
# Build first: cargo build --profile fast-test -p tickwire-server -p tickwire-client --bins
# (or B=target/release after cargo build --release --bins: the figures in docs/BENCHMARKS.md)
set -u
B=${B:-$(dirname "$0")/../target/fast-test}
W=$(mktemp -d /tmp/tickwire-capture-measure.XXXXXX)
udp_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
tcp_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
mc() { # $1 name, $2 capture or "", rest: server source flags; prints the client's JSON path
  local name=$1 cap=$2; shift 2
  local P; P=$(udp_port); rm -f "$W/ready"
  local rec=(); [ -n "$cap" ] && rec=(--record "$cap")
  "$B/client" --transport multicast --connect 127.0.0.1:$P --group 239.255.9.1:32001 --quiet --json \
      --ready-file "$W/ready" "${rec[@]}" > "$W/$name.c.json" 2>/dev/null &
  while [ ! -f "$W/ready" ]; do sleep 0.05; done
  "$B/server" --transport multicast --listen 127.0.0.1:$P --group 239.255.9.1:32001 --interface 127.0.0.1 \
      "$@" --linger 0.5s --stats-interval 0 --json > "$W/$name.s.json" 2>/dev/null
  wait
}
case "${1:-}" in
cpu)
  for i in 1 2 3 4 5 6; do
    if [ $((i % 2)) = 1 ]; then order="plain record"; else order="record plain"; fi
    for mode in $order; do
      cap=""; [ $mode = record ] && cap="$W/r.pcapng"
      mc "$mode$i" "$cap" --rate 100000 --seed 3 --duration 5s
      python3 -c "import json;d=json.load(open('$W/$mode$i.c.json'));n=d['messages_delivered'];print('$mode',n,round((d['cpu_user_s']+d['cpu_sys_s'])*1e9/n,1),'ns/msg, tick-to-cache p50',round(d['tick_to_cache_ns']['p50']/1e3,1),'us')"
    done
  done ;;
tput)
  P=$(tcp_port)
  "$B/server" --transport tcp --listen 127.0.0.1:$P --rate 0 --messages 1000000 --seed 9 --wait-clients 1 --linger 3s --stats-interval 0 > /dev/null 2>&1 &
  sleep 1.5
  "$B/client" --transport tcp --connect 127.0.0.1:$P --quiet --record "$W/tcp.pcapng" > /dev/null 2>&1; wait
  for i in 1 2 3; do
    for mode in gbm replay; do
      if [ $mode = gbm ]; then src=(--rate 0 --messages 1000000 --seed 9); else src=(--replay "$W/tcp.pcapng" --speed max); fi
      P=$(tcp_port)
      "$B/server" --transport tcp --listen 127.0.0.1:$P "${src[@]}" --wait-clients 1 --linger 3s --stats-interval 0 --json > "$W/t.json" 2>/dev/null &
      sleep 1.5
      timeout 60 "$B/client" --transport tcp --connect 127.0.0.1:$P --quiet --json --verify 9 > "$W/tc.json" 2>/dev/null; wait
      python3 -c "import json;d=json.load(open('$W/t.json'));c=json.load(open('$W/tc.json'));print('$mode',d['messages'],round(d['rate']),'msg/s, verified',c['verify']['checked'])"
    done
  done ;;
pace)
  mc orig "$W/orig.pcapng" --rate 20000 --seed 11 --duration 5s
  mc replay1x "$W/replay1x.pcapng" --replay "$W/orig.pcapng" --speed 1x
  for f in orig replay1x; do
    "$B/tickwire-pcap" "$W/$f.pcapng" --json | python3 -c "import json,sys;d=json.load(sys.stdin);h=d['inter_arrival_ns'];print('$f','Data packets',d['data_packets'],'inter-arrival ns p50',h['p50'],'p99',h['p99'])"
  done ;;
*) sed -n 2,6p "$0"; exit 2 ;;
esac
rm -rf "$W"
