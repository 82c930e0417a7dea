#!/usr/bin/env bash
# routed.sh — a ROUTED multicast topology: the server in subnet A, a router
# namespace running a real multicast router (smcroute, static (S,G) routes),
# and two or more clients in subnet B behind a switch.
#
#   routed.sh up     PREFIX [CLIENTS] [GROUP...]   make it (fails if PREFIX's pieces exist)
#   routed.sh down   PREFIX [CLIENTS]              remove everything `up` made
#   routed.sh status PREFIX                        the router's multicast routes and counters
#
# PREFIX (1-8 letters/digits) starts every namespace name, so parallel tests
# with distinct prefixes never collide. CLIENTS defaults to 2 (1..50). GROUPs
# are the feed groups smcroute routes (default 239.255.0.1 239.255.0.2).
# Addresses exist ONLY inside these namespaces; nothing touches the host's
# own network:
#
#   netns PREFIXsrv           netns PREFIXrtr (smcrouted)           netns PREFIXswb        netns PREFIXcliN
#   eth0 10.78.1.1/24 ═ veth ═ a0 10.78.1.254/24                    br0 (switch, IGMP      eth0 10.78.2.(10+N)/24
#   default via .254            b0 10.78.2.254/24 ═══ veth ═══ vrtr ┤  snooping + querier) ├ vcliN ═ veth ═ eth0
#                               ip_forward=1, mroute a0 → b0                                   default via .254
#
#   loss on the router's interfaces: netem.sh -n PREFIXrtr a0 5; netem.sh -n PREFIXrtr b0 5
#   (with netem: each interface's egress; with the nftables fallback: its ingress. On
#   both interfaces every path crosses one lossy hop: feed, NACKs and answers.)
#
# The router forwards a group's datagrams only while their TTL is above the
# interface's threshold (1): a feed sent with TTL 1 stops at the router, with
# TTL 2 it reaches subnet B with TTL 1. Unicast (NACKs, snapshot requests and
# their answers) is routed by plain IP forwarding, so the recovery service in
# subnet A is reachable from subnet B.
#
# Needs root, iproute2, smcroute (xdp-setup/install-deps.sh installs it) and a
# kernel with multicast routing (CONFIG_IP_MROUTE: /proc/net/ip_mr_vif exists),
# both checked before anything is made. Without IGMP snooping in the kernel's
# bridge (CONFIG_BRIDGE_IGMP_SNOOPING) the switch floods, and says so.
# Exit codes: 0 done, 1 failure, 2 usage, 3 smcroute missing, 4 the kernel has
# no multicast routing (tests skip on 3 and 4).
set -euo pipefail

CMD="${1:-}"
P="${2:-}"
CLIENTS="${3:-2}"
shift $(($# < 3 ? $# : 3))
GROUPS_ROUTED="${*:-239.255.0.1 239.255.0.2}"

USAGE=2,13
A="10.78.1"
B="10.78.2"
RUN="/run/tickwire-routed"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ "$P" =~ ^[A-Za-z0-9]{1,8}$ ]] || usage
check_clients 50

SRV="${P}srv"
RTR="${P}rtr"
SWB="${P}swb"
PIDFILE="$RUN/$P.pid"
CONF="$RUN/$P.conf"
SOCK="$RUN/$P.sock"
LOG="$RUN/$P.log"

mk_ns() {
    ip netns add "$1"
    ip -n "$1" link set lo up
    say "netns $1: created"
}

# veth NS1 DEV1 NS2 DEV2: a veth pair between two namespaces, both ends up,
# transmit checksum offload off (UDP over veth otherwise carries a partial checksum).
veth() {
    ip -n "$1" link add "$2" type veth peer name "$4" netns "$3"
    ip -n "$1" link set "$2" up
    ip -n "$3" link set "$4" up
    ip netns exec "$1" ethtool -K "$2" tx off >/dev/null
    ip netns exec "$3" ethtool -K "$4" tx off >/dev/null
    say "veth $1/$2 <-> $3/$4"
}

# host NS ADDR GATEWAY: eth0 gets ADDR/24, a default route via GATEWAY and
# the multicast route (sends without an explicit interface leave on eth0).
host() {
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" route add default via "$3"
    ip -n "$1" route add 239.0.0.0/8 dev eth0
    say "$1: eth0 $2/24, default via $3, 239.0.0.0/8 dev eth0"
}

up() {
    if [ ! -e /proc/net/ip_mr_vif ]; then
        say "this kernel has no multicast routing (CONFIG_IP_MROUTE; /proc/net/ip_mr_vif is absent): a multicast router and the routed tests need it" >&2
        exit 4
    fi
    command -v smcrouted >/dev/null && command -v smcroutectl >/dev/null || {
        say "smcroute is not installed (apt-get install smcroute, or xdp-setup/install-deps.sh)" >&2
        exit 3
    }
    local ns
    for ns in "$SRV" "$RTR" "$SWB" $(clis); do
        if ns_exists "$ns"; then
            say "netns $ns exists: run 'routed.sh down $P $CLIENTS' first, or pick another prefix" >&2
            exit 1
        fi
    done
    mkdir -p "$RUN"
    # From here on everything is ours: a failure removes what was made.
    trap 'say "up failed: removing what it made"; down >&2' ERR
    for ns in "$SRV" "$RTR" "$SWB" $(clis); do mk_ns "$ns"; done

    # Subnet B's switch: a bridge with IGMP snooping and its own querier, so
    # the clients' joins decide which ports get the feed, as on a managed switch.
    # A kernel without CONFIG_BRIDGE_IGMP_SNOOPING ignores both options: the
    # bridge then has no multicast_snooping attribute and floods every group.
    ip -n "$SWB" link add br0 type bridge mcast_snooping 1 mcast_querier 1
    ip -n "$SWB" link set br0 up
    if ip netns exec "$SWB" test -e /sys/class/net/br0/bridge/multicast_snooping; then
        say "$SWB/br0: bridge, IGMP snooping on, querier on"
    else
        say "$SWB/br0: bridge WITHOUT IGMP snooping (this kernel has no CONFIG_BRIDGE_IGMP_SNOOPING): it floods every group to every port"
    fi

    veth "$SRV" eth0 "$RTR" a0
    veth "$RTR" b0 "$SWB" vrtr
    ip -n "$SWB" link set vrtr master br0
    local i
    for ((i = 1; i <= CLIENTS; i++)); do
        veth "${P}cli$i" eth0 "$SWB" "vcli$i"
        ip -n "$SWB" link set "vcli$i" master br0
        host "${P}cli$i" "$B.$((10 + i))" "$B.254"
    done
    host "$SRV" "$A.1" "$A.254"

    ip -n "$RTR" addr add "$A.254/24" dev a0
    ip -n "$RTR" addr add "$B.254/24" dev b0
    ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=1
    say "$RTR: a0 $A.254/24, b0 $B.254/24, ip_forward=1, rp_filter all=$(ip netns exec "$RTR" sysctl -n net.ipv4.conf.all.rp_filter) a0=$(ip netns exec "$RTR" sysctl -n net.ipv4.conf.a0.rp_filter)"

    # smcroute: one static (S,G) route per group, from the server's address on a0 to b0.
    {
        echo "# made by routed.sh up $P: feed groups from the server ($A.1) on a0 to subnet B on b0"
        echo "phyint a0 enable"
        echo "phyint b0 enable"
        local g
        for g in $GROUPS_ROUTED; do
            echo "mroute from a0 source $A.1 group $g to b0"
        done
    } >"$CONF"
    # -N: no VIF for any interface the conf does not enable (lo, ...).
    ip netns exec "$RTR" setsid smcrouted -n -N -f "$CONF" -u "$SOCK" -P "$PIDFILE" -l info \
        </dev/null >"$LOG" 2>&1 &
    echo $! >"$PIDFILE.launch"
    say "$RTR: smcrouted started (conf $CONF, log $LOG)"

    # Wait until the kernel holds every route (smcrouted installs them at start).
    local t want have
    want=$(echo $GROUPS_ROUTED | wc -w)
    for ((t = 0; t < 100; t++)); do
        have=$(ip -n "$RTR" mroute show 2>/dev/null | grep -c "^($A.1," || true)
        [ "$have" -ge "$want" ] && break
        sleep 0.05
    done
    if [ "$have" -lt "$want" ]; then
        say "smcrouted did not install its routes ($have of $want); its log:" >&2
        cat "$LOG" >&2 || true
        down >&2
        exit 1
    fi
    ip -n "$RTR" mroute show | sed 's/^/routed.sh: mroute: /'
    say "up: server $SRV ($A.1), router $RTR, switch $SWB, clients $(clis | tr '\n' ' ')"
}

down() {
    local pid t
    # Only the smcrouted this prefix started, by the pid `up` recorded (and
    # only if that pid is still an smcrouted), never by name.
    if [ -f "$PIDFILE.launch" ]; then
        pid=$(cat "$PIDFILE.launch")
        if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = smcrouted ]; then
            kill "$pid" 2>/dev/null || true
            local state
            for ((t = 0; t < 40; t++)); do
                state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
                if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
                sleep 0.05
            done
            say "smcrouted $pid: stopped"
        fi
    fi
    del_ns $(clis) "$SWB" "$SRV" "$RTR"
    rm -f "$PIDFILE" "$PIDFILE.launch" "$CONF" "$SOCK" "$LOG"
    rm -f /run/tickwire-netem/"$RTR"-* 2>/dev/null || true
    say "down: $P removed"
}

status() {
    ip -n "$RTR" mroute show
    ip netns exec "$RTR" cat /proc/net/ip_mr_vif
    smcroutectl -u "$SOCK" show routes 2>/dev/null || true
}

case "$CMD" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) usage ;;
esac
