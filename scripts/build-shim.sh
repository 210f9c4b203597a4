#!/usr/bin/env bash
# Build the host-side CNI plugin, shim/tortie-cni-shim.c, into build/tortie-cni-shim:
# static against musl (it must run on hosts with no libc of ours: Flatcar, Talos), -Os,
# stripped. Rebuilt only when the source or this script changed (a sha256 stamp beside
# the binary). Needs musl-tools (scripts/setup.sh installs it). Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."

src=shim/tortie-cni-shim.c
out=${SHIM_OUT:-build/tortie-cni-shim}
stamp=$out.sha256
want=$(cat "$src" "$0" | sha256sum | cut -d' ' -f1)
if [[ -x $out && -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "$out"
    exit 0
fi
command -v musl-gcc >/dev/null || { echo "build-shim: musl-gcc not installed (apt package musl-tools)" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
musl-gcc -std=c99 -static -Os -s -Wall -Wextra -Werror -o "$tmp" "$src"
# Refuse anything that would need the host's loader.
if file "$tmp" | grep -q "dynamically linked"; then
    echo "build-shim: $tmp is dynamically linked: $(file -b "$tmp")" >&2
    exit 1
fi
chmod 755 "$tmp"
mv "$tmp" "$out"
echo "$want" > "$stamp"
echo "$out"
