#!/usr/bin/env bash
# netem.sh — apply or clear random packet loss on a device, with whatever
# mechanism this kernel has, and say which one was used.
#
#   netem.sh [-n NETNS] [-m netem|nftables|iptables] DEV LOSS%   apply (replaces an earlier apply)
#   netem.sh [-n NETNS] DEV clear                                remove exactly what apply added
#   netem.sh [-n NETNS] DEV status                               show our rules and their drop counters
#
# LOSS% is a percentage with up to two decimals (5, 0.5, 12.25).
#
# Mechanisms, tried in this order (or forced with -m):
#   1. netem:    tc qdisc replace dev X root netem loss LOSS%
#                (fails on kernels without sch_netem: "Specified qdisc kind is unknown")
#   2. nftables: a table of our own, tickwire_loss_<DEV>:
#                  DEV is a bridge -> `table bridge`, forward chain,
#                                     oifname { ports } numgen random mod 10000 < N counter drop
#                  otherwise       -> `table netdev`, ingress hook on DEV,
#                                     numgen random mod 10000 < N counter drop
#                with N = LOSS% * 100.
#   3. iptables: -m statistic --mode random --probability LOSS/100 -j DROP, tagged with
#                the comment tickwire_loss:<DEV> (bridge: mangle FORWARD with
#                -m physdev --physdev-out PORT, needs bridge-nf-call-iptables=1;
#                otherwise: raw PREROUTING -i DEV).
#
# When DEV is a Linux bridge the loss is applied per output port (the egress of
# each port for netem, the bridge's forward hook per outgoing copy for
# nftables/iptables): every receiver behind the bridge sees independent loss,
# as it would behind a real lossy switch. Ports are read when loss is applied;
# re-apply after adding ports.
#
# WHERE THE LOSS MUST SIT: in the MIDDLE of the topology (the bridge namespace
# made by topology.sh, device br0 in <prefix>mid), never on the receiving
# host's interface. AF_XDP receives in the XDP hook, which runs before tc
# ingress and netfilter, and AF_XDP transmit bypasses qdiscs and netfilter:
# a drop rule on the receiver's or sender's own veth never touches AF_XDP
# traffic, so the kernel transports would be measured under loss and AF_XDP
# without it. On the bridge, every transport crosses the same rule.
#
#   ./netem.sh -n twmid br0 5        # 5% loss on every frame the bridge forwards
#   ./netem.sh -n twmid br0 clear
#
# Output: one line per step, and a final line
#   netem.sh: mechanism=<netem|nftables|iptables|none> dev=DEV netns=NS loss=LOSS%
# that scripts and tests can parse.
#
# Exit codes: 0 done, 1 failure (no such device...), 2 usage, 4 no mechanism
# works here (a kernel without sch_netem, nf_tables and the iptables statistic
# match, or none of the tools installed): tests skip on 4.
set -euo pipefail

NS=""
FORCE=""
usage() {
    sed -n '2,12p' "$0" >&2
    exit 2
}
while getopts "n:m:h" opt; do
    case "$opt" in
        n) NS="$OPTARG" ;;
        m) FORCE="$OPTARG" ;;
        *) usage ;;
    esac
done
shift $((OPTIND - 1))
[ $# -eq 2 ] || usage
DEV="$1"
ARG="$2"

say() { echo "netem.sh: $*"; }
# Run a command inside the namespace (if any).
inns() {
    if [ -n "$NS" ]; then ip netns exec "$NS" "$@"; else "$@"; fi
}

inns test -e "/sys/class/net/$DEV" || { say "no device $DEV${NS:+ in netns $NS}" >&2; exit 1; }

TABLE="tickwire_loss_$(echo "$DEV" | tr -c 'A-Za-z0-9_\n' '_')"
TAG="tickwire_loss:$DEV"
STATE_DIR="/run/tickwire-netem"
STATE="$STATE_DIR/${NS:-root}-$DEV"

is_bridge() { inns test -d "/sys/class/net/$DEV/bridge"; }
ports() { inns ls "/sys/class/net/$DEV/brif" 2>/dev/null || true; }
# Devices netem acts on: the bridge's ports, or DEV itself.
netem_devs() { if is_bridge; then ports; else echo "$DEV"; fi; }

# --- removal (each part removes only what this script adds) -------------------------
clear_netem() {
    local d
    for d in $(netem_devs); do
        if inns tc qdisc show dev "$d" root 2>/dev/null | grep -q '^qdisc netem'; then
            inns tc qdisc del dev "$d" root
            say "removed netem qdisc from $d"
        fi
    done
}
clear_nft() {
    command -v nft >/dev/null || return 0
    local fam
    for fam in bridge netdev; do
        if inns nft list table "$fam" "$TABLE" >/dev/null 2>&1; then
            inns nft delete table "$fam" "$TABLE"
            say "removed nftables table $fam $TABLE"
        fi
    done
}
clear_iptables() {
    command -v iptables >/dev/null || return 0
    local t chain rule
    for t in mangle raw; do
        # Delete every rule carrying our comment (iptables -S prints them re-playable).
        while rule=$(inns iptables -t "$t" -S 2>/dev/null | grep -F -- "--comment \"$TAG\"" | head -n 1) && [ -n "$rule" ]; do
            chain=$(echo "$rule" | awk '{print $2}')
            eval "inns iptables -t $t -D $chain ${rule#-A "$chain" }"
            say "removed iptables rule from $t $chain"
        done
    done
    if [ -f "$STATE" ]; then
        local old
        old=$(cat "$STATE")
        inns sysctl -qw "net.bridge.bridge-nf-call-iptables=$old"
        rm -f "$STATE"
        say "restored net.bridge.bridge-nf-call-iptables=$old"
    fi
}
clear_all() {
    clear_netem
    clear_nft
    clear_iptables
}

# --- application -------------------------------------------------------------------
apply_netem() {
    local d out
    for d in $(netem_devs); do
        if ! out=$(inns tc qdisc replace dev "$d" root netem loss "${LOSS}%" 2>&1); then
            say "tc netem unavailable on $d: ${out//$'\n'/ }"
            clear_netem
            return 1
        fi
        say "netem qdisc on $d: loss ${LOSS}%"
    done
}
apply_nft() {
    command -v nft >/dev/null || { say "nft not installed"; return 1; }
    local rules out set
    if is_bridge; then
        set=$(ports | sed 's/.*/"&"/' | paste -sd, -)
        [ -n "$set" ] || { say "bridge $DEV has no ports"; return 1; }
        rules="table bridge $TABLE {
  chain forward {
    type filter hook forward priority 0; policy accept;
    oifname { $set } numgen random mod 10000 < $N counter drop comment \"$TAG $LOSS%\"
  }
}"
    else
        rules="table netdev $TABLE {
  chain ingress {
    type filter hook ingress device \"$DEV\" priority 0; policy accept;
    numgen random mod 10000 < $N counter drop comment \"$TAG $LOSS%\"
  }
}"
    fi
    if ! out=$(printf '%s\n' "$rules" | inns nft -f - 2>&1); then
        say "nftables failed: ${out//$'\n'/ }"
        return 1
    fi
    if is_bridge; then
        say "nftables table bridge $TABLE: forward, oifname { $set }, numgen random mod 10000 < $N drop"
    else
        say "nftables table netdev $TABLE: ingress on $DEV, numgen random mod 10000 < $N drop"
    fi
}
apply_iptables() {
    command -v iptables >/dev/null || { say "iptables not installed"; return 1; }
    local p d
    p=$(awk -v l="$LOSS" 'BEGIN { printf "%.6f", l / 100 }')
    if is_bridge; then
        local cur
        cur=$(inns sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null) || { say "no bridge-nf-call-iptables (br_netfilter)"; return 1; }
        if [ "$cur" != 1 ]; then
            mkdir -p "$STATE_DIR"
            echo "$cur" >"$STATE"
            inns sysctl -qw net.bridge.bridge-nf-call-iptables=1
            say "set net.bridge.bridge-nf-call-iptables=1 (was $cur)"
        fi
        for d in $(ports); do
            inns iptables -t mangle -A FORWARD -m physdev --physdev-out "$d" \
                -m statistic --mode random --probability "$p" -m comment --comment "$TAG" -j DROP ||
                { clear_iptables; return 1; }
            say "iptables mangle FORWARD physdev-out $d: statistic random p=$p DROP"
        done
    else
        inns iptables -t raw -A PREROUTING -i "$DEV" \
            -m statistic --mode random --probability "$p" -m comment --comment "$TAG" -j DROP ||
            { clear_iptables; return 1; }
        say "iptables raw PREROUTING -i $DEV: statistic random p=$p DROP"
    fi
}

status() {
    local d found=none
    for d in $(netem_devs); do
        if inns tc qdisc show dev "$d" root 2>/dev/null | grep -q '^qdisc netem'; then
            say "netem on $d: $(inns tc -s qdisc show dev "$d" root | tr '\n' ' ')"
            found=netem
        fi
    done
    local fam
    for fam in bridge netdev; do
        if inns nft list table "$fam" "$TABLE" >/dev/null 2>&1; then
            local pk
            pk=$(inns nft list table "$fam" "$TABLE" | grep -o 'counter packets [0-9]*' | awk '{s += $3} END {print s + 0}')
            say "nftables table $fam $TABLE: dropped=$pk"
            found=nftables
        fi
    done
    local t
    for t in mangle raw; do
        if inns iptables -t "$t" -S 2>/dev/null | grep -qF -- "--comment \"$TAG\""; then
            local pk
            pk=$(inns iptables -t "$t" -v -x -n -L 2>/dev/null | grep -F "$TAG" | awk '{s += $1} END {print s + 0}')
            say "iptables $t: dropped=$pk"
            found=iptables
        fi
    done
    say "mechanism=$found dev=$DEV netns=${NS:-none}"
}

case "$ARG" in
    clear)
        clear_all
        say "mechanism=none dev=$DEV netns=${NS:-none} loss=0%"
        exit 0
        ;;
    status)
        status
        exit 0
        ;;
esac

LOSS="${ARG%\%}"
if ! [[ "$LOSS" =~ ^[0-9]+(\.[0-9]{1,2})?$ ]] || awk -v l="$LOSS" 'BEGIN { exit !(l > 100) }'; then
    say "loss must be a percentage 0..100 with at most two decimals, got '$ARG'" >&2
    exit 2
fi
N=$(awk -v l="$LOSS" 'BEGIN { printf "%d", l * 100 + 0.5 }')

# Idempotent: whatever an earlier apply left is removed first, so re-applying replaces.
clear_all >/dev/null

case "$FORCE" in
    "") order="netem nftables iptables" ;;
    netem | nftables | iptables) order="$FORCE" ;;
    *) say "unknown mechanism '$FORCE' (netem, nftables, iptables)" >&2; exit 2 ;;
esac
for m in $order; do
    case "$m" in
        netem) apply_netem && used=netem ;;
        nftables) apply_nft && used=nftables ;;
        iptables) apply_iptables && used=iptables ;;
    esac
    if [ -n "${used:-}" ]; then
        say "mechanism=$used dev=$DEV netns=${NS:-none} loss=${LOSS}%"
        exit 0
    fi
done
say "no loss mechanism worked on $DEV (tried: $order): this kernel or image lacks sch_netem (CONFIG_NET_SCH_NETEM), nf_tables (CONFIG_NF_TABLES, with numgen) and the iptables statistic match (CONFIG_NETFILTER_XT_MATCH_STATISTIC), or their tools" >&2
exit 4
