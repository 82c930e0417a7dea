#!/usr/bin/env bash
# Seed every fuzz corpus with real packets: the hex test vectors of
# docs/PROTOCOL.md § 11 (one file per vector), plus, for the stream framer,
# all vectors concatenated (a TCP stream of back-to-back packets).
# Idempotent; corpus files are named by vector. Usage: fuzz/seeds.sh
set -euo pipefail
cd "$(dirname "$0")"
doc=../docs/PROTOCOL.md
targets="packet_views tcp_framer request_service receiver receiver_per_symbol snapshot_assembler"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A "#### Vector: `name`" heading, then a ```hex block (anything after # is a comment).
awk -v dir="$tmp" '
    /^#### Vector: / { name = $3; gsub(/`/, "", name); next }
    /^```hex/ { if (name != "") { out = dir "/" name ".hex"; inblk = 1 }; next }
    /^```/ { inblk = 0; next }
    inblk { sub(/#.*/, ""); gsub(/[^0-9a-fA-F]/, ""); print >> out }
' "$doc"
n=0
for f in "$tmp"/*.hex; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .hex)
    xxd -r -p "$f" > "$tmp/$name.bin"
    for t in $targets; do
        mkdir -p "corpus/$t"
        cp "$tmp/$name.bin" "corpus/$t/vector-$name"
    done
    n=$((n + 1))
done
# tcp_framer input: one byte of split count (0: no splits), then the stream.
{ printf '\0'; cat "$tmp"/*.bin; } > corpus/tcp_framer/vector-stream
# Same stream split into 7-byte chunks (three splits of 7 bytes: 6+1).
{ printf '\3\6\6\6'; cat "$tmp"/*.bin; } > corpus/tcp_framer/vector-stream-split
echo "seeded $n protocol vectors into: $targets"
