#!/usr/bin/env bash
# Install what Tickwire needs on a fresh Debian/Ubuntu machine: the C toolchain
# and libraries xsk-rs builds libbpf/libxdp from (libelf-dev zlib1g-dev
# pkg-config clang llvm m4), and the network tools the tests and loss
# experiments use (iproute2 ethtool nftables iptables). Idempotent: installs
# only what is missing, and says what it did.
set -euo pipefail

PKGS=(libelf-dev zlib1g-dev pkg-config clang llvm m4 iproute2 ethtool nftables iptables)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present (${PKGS[*]})"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (or: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
