#!/bin/sh
# Install what the `xdp` feature of tickwire-transports needs to build and run.
#
#   build:  xsk-rs compiles libbpf and libxdp from source (libbpf-sys, libxdp-sys):
#           libelf-dev zlib1g-dev pkg-config m4, clang + llvm for libxdp's BPF
#           objects, and libpcap-dev (libxdp's configure refuses to run without it,
#           although Tickwire does not use pcap).
#   fuzz:   cargo-fuzz (cargo install), for the fuzz step of scripts/test.sh.
#   run:    iproute2 (ip netns / veth), ethtool (checksum offload off on veths),
#           nftables and iptables (loss injection: xdp-setup/netem.sh), smcroute
#           (the multicast router of xdp-setup/routed.sh and client/tests/routed_e2e.rs).
#   bench:  sockperf (the kernel floor that `compare` and `latency` measure beside
#           the transports), fonts-dejavu-core (the TrueType font compare's plots
#           are drawn with; plotters rasterises it itself, no fontconfig).
#   aeron:  the bench crate's `aeron` feature (the Aeron peer in `compare`) builds
#           Aeron's C sources bundled in the rusteron crates: libbsd-dev (it links
#           -lbsd), python3-venv, and CMake >= 3.30 from PyPI in a venv under
#           target/aeron-venv (Debian's cmake is 3.25; .cargo/config.toml points
#           the build at the venv's).
#   capture: tshark (client/tests/capture_e2e.rs opens captures with the Lua
#           dissector tools/wireshark/tickwire.lua; its debconf question about
#           non-root capture is answered by DEBIAN_FRONTEND=noninteractive).
#
# Idempotent: packages already installed are reported and skipped.
# Usage: sudo xdp-setup/install-deps.sh
set -eu

PACKAGES="libelf-dev zlib1g-dev pkg-config clang llvm m4 libpcap-dev iproute2 ethtool nftables iptables smcroute sockperf fonts-dejavu-core libbsd-dev python3-venv tshark"

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps.sh: must run as root (apt-get install)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps.sh: apt-get not found; install these with your package manager:" >&2
    echo "  $PACKAGES" >&2
    exit 1
fi

missing=""
for p in $PACKAGES; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        echo "already installed: $p"
    else
        missing="$missing $p"
    fi
done

if [ -z "$missing" ]; then
    echo "nothing to do: all $(echo $PACKAGES | wc -w) packages are installed"
else
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086 # word splitting of the package list is intended
    apt-get install -y -q --no-install-recommends $missing
    echo "installed:$missing"
    # Debian's smcroute package enables a service that would run a multicast
    # router in the host's own network namespace; the tests start their own
    # smcrouted inside their router namespace. Turn off only what we installed.
    case " $missing " in
        *" smcroute "*)
            if command -v systemctl >/dev/null 2>&1 && systemctl disable --now smcroute.service >/dev/null 2>&1; then
                echo "smcroute.service disabled (xdp-setup/routed.sh runs smcrouted in its own namespace)"
            fi
            ;;
    esac
fi

# cargo-fuzz, for the fuzz step of scripts/test.sh (targets in fuzz/; on the
# stable toolchain they run with RUSTC_BOOTSTRAP=1). Not an apt package.
if ! command -v cargo >/dev/null 2>&1; then
    echo "note: cargo not in PATH; cargo-fuzz not installed (scripts/test.sh skips its fuzz step)"
elif RUSTC_BOOTSTRAP=1 cargo fuzz --version >/dev/null 2>&1; then
    echo "already installed: cargo-fuzz"
else
    echo "installing: cargo-fuzz"
    cargo install cargo-fuzz --locked
    echo "installed: cargo-fuzz"
fi

# CMake >= 3.30 for the Aeron peer's build, from PyPI into a venv of the project's.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/target/aeron-venv"
if "$VENV/bin/cmake" --version >/dev/null 2>&1; then
    echo "already installed: $("$VENV/bin/cmake" --version | head -n 1) in $VENV"
else
    echo "installing: cmake (PyPI) into $VENV"
    mkdir -p "$ROOT/target"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "cmake>=3.30"
    echo "installed: $("$VENV/bin/cmake" --version | head -n 1)"
fi

# Report what the kernel offers (informational: nothing is changed).
if [ -r /proc/config.gz ] && command -v zgrep >/dev/null 2>&1; then
    zgrep -E '^CONFIG_XDP_SOCKETS=' /proc/config.gz || echo "warning: CONFIG_XDP_SOCKETS not set in this kernel"
elif [ -r "/boot/config-$(uname -r)" ]; then
    grep -E '^CONFIG_XDP_SOCKETS=' "/boot/config-$(uname -r)" || echo "warning: CONFIG_XDP_SOCKETS not set in this kernel"
else
    echo "kernel config not readable: the transport probes socket(AF_XDP) at start-up and says if it is missing"
fi
if ! mount | grep -q ' type bpf '; then
    echo "note: bpffs is not mounted; only libxdp's default program (RxSteering::LibxdpDefault) cares:"
    echo "      it then warns and loads without its dispatcher. To mount: mount -t bpf bpf /sys/fs/bpf"
fi
