#!/usr/bin/env bash
# topology.sh — the network-namespace topology Tickwire's multicast and AF_XDP
# experiments run on, with the loss point in the middle.
#
#   topology.sh up   [PREFIX] [CLIENTS]   make it (idempotent: existing pieces are kept)
#   topology.sh down [PREFIX] [CLIENTS]   remove everything `up` made
#
# PREFIX defaults to "tw", CLIENTS to 2. Layout (addresses exist ONLY inside
# these namespaces; nothing is added to the host's own network):
#
#   netns PREFIXsrv            netns PREFIXmid                      netns PREFIXcliN
#   eth0 10.77.0.1/24 ══ veth ══ vsrv ─┐                   ┌─ vcliN ══ veth ══ eth0 10.77.0.(10+N)/24
#                                      └──── br0 (bridge) ─┘
#                                 apply loss here: netem.sh -n PREFIXmid br0 5
#
# Each host namespace gets a multicast route (239.0.0.0/8 dev eth0), loopback up,
# and transmit checksum offload off on every veth (UDP from the kernel over veth
# otherwise carries a partial checksum, which AF_XDP receivers see unfinished).
# IGMP snooping is off on br0 so multicast floods to every port, as on a
# simple switch. bpffs is mounted on /sys/fs/bpf if it is not (libxdp keeps its
# dispatcher there); `down` leaves it mounted (it is shared by the host).
#
# Why loss goes in the middle: AF_XDP bypasses tc and netfilter at the
# receiving and sending interfaces (see netem.sh); only the bridge in between
# sees every transport's packets.
set -euo pipefail

CMD="${1:-}"
P="${2:-tw}"
CLIENTS="${3:-2}"
USAGE=2,8
SUBNET="10.77.0"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
check_clients 200

SRV="${P}srv"
MID="${P}mid"

link_exists() { ip -n "$1" link show "$2" >/dev/null 2>&1; }

mk_ns() {
    if ns_exists "$1"; then
        say "netns $1: exists"
    else
        ip netns add "$1"
        say "netns $1: created"
    fi
    ip -n "$1" link set lo up
}

# attach HOSTNS PORT ADDR: veth PORT (in mid, on br0) <-> eth0 (in HOSTNS) with ADDR/24.
attach() {
    local host="$1" port="$2" addr="$3"
    if link_exists "$MID" "$port"; then
        say "veth $MID/$port <-> $host/eth0: exists"
    else
        ip -n "$MID" link add "$port" type veth peer name eth0 netns "$host"
        say "veth $MID/$port <-> $host/eth0: created"
    fi
    ip -n "$MID" link set "$port" master br0
    ip -n "$MID" link set "$port" up
    if ip -n "$host" -4 addr show dev eth0 | grep -q "inet $addr/"; then
        say "$host/eth0 $addr/24: exists"
    else
        ip -n "$host" addr add "$addr/24" dev eth0
        say "$host/eth0 $addr/24: added"
    fi
    ip -n "$host" link set eth0 up
    ip -n "$host" route replace 239.0.0.0/8 dev eth0
    say "$host: route 239.0.0.0/8 dev eth0"
    ip netns exec "$host" ethtool -K eth0 tx off >/dev/null
    ip netns exec "$MID" ethtool -K "$port" tx off >/dev/null
    say "$host/eth0, $MID/$port: tx checksum offload off"
}

up() {
    if mountpoint -q /sys/fs/bpf; then
        say "bpffs: mounted on /sys/fs/bpf"
    elif mount -t bpf bpf /sys/fs/bpf 2>/dev/null; then
        say "bpffs: mounted on /sys/fs/bpf (was not)"
    else
        say "bpffs: could not be mounted on /sys/fs/bpf: libxdp's default program loads without its dispatcher (Tickwire's own XDP program does not need bpffs)"
    fi
    mk_ns "$MID"
    mk_ns "$SRV"
    local c
    for c in $(clis); do mk_ns "$c"; done
    if link_exists "$MID" br0; then
        say "bridge $MID/br0: exists"
    else
        ip -n "$MID" link add br0 type bridge
        say "bridge $MID/br0: created"
    fi
    ip -n "$MID" link set br0 type bridge mcast_snooping 0
    ip -n "$MID" link set br0 up
    attach "$SRV" vsrv "$SUBNET.1"
    local i
    for ((i = 1; i <= CLIENTS; i++)); do
        attach "${P}cli$i" "vcli$i" "$SUBNET.$((10 + i))"
    done
    say "up: server $SRV ($SUBNET.1), bridge $MID/br0, clients $(clis | tr '\n' ' ')"
}

down() {
    # Deleting a namespace deletes the veths and the bridge inside it.
    del_ns $(clis) "$SRV" "$MID"
    rm -f /run/tickwire-netem/"$MID"-* 2>/dev/null || true
    say "down: $P removed"
}

case "$CMD" in
    up) up ;;
    down) down ;;
    *) usage ;;
esac
