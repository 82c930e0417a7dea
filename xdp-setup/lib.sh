# lib.sh — what the namespace scripts (topology.sh, routed.sh) share. Not run
# on its own: each sources it by its own path, so it runs from any directory:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# The script sets, before sourcing: P (its namespace prefix), CLIENTS, and
# USAGE (the sed range of its header comment that `usage` prints, e.g. 2,8).
# Messages start with the script's name.

SCRIPT="$(basename "$0")"

say() { echo "$SCRIPT: $*"; }

usage() {
    sed -n "${USAGE}p" "$0" >&2
    exit 2
}

# check_clients MAX: CLIENTS is a number from 1 to MAX, or print the usage.
check_clients() {
    [[ "$CLIENTS" =~ ^[0-9]+$ ]] && [ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le "$1" ] || usage
}

# The client namespaces: PREFIXcli1 .. PREFIXcliCLIENTS, one a line.
clis() { local i; for ((i = 1; i <= CLIENTS; i++)); do echo "${P}cli$i"; done; }

ns_exists() { ip netns list | awk '{print $1}' | grep -qx -- "$1"; }

# del_ns NS...: delete each namespace that exists (and so the veths and
# bridges inside it), saying which were deleted and which were absent.
del_ns() {
    local ns
    for ns in "$@"; do
        if ns_exists "$ns"; then
            ip netns del "$ns"
            say "netns $ns: deleted"
        else
            say "netns $ns: absent"
        fi
    done
}
