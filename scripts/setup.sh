#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root): system packages and the
# project virtualenv. Fast when nothing changed: apt runs only for missing packages and
# pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(etcd-server etcd-client iproute2 iptables ipset iputils-ping tcpdump bird2 frr
          openssl curl procps python3-venv kmod user-mode-linux
          containernetworking-plugins podman runc busybox-static)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Nothing we installed may run as a system service behind our back (frr/bird ship
# units; machines without systemd don't start them, but be explicit on those that do).
for svc in etcd frr bird; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.tortie-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "setup: installing tortie into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" > "$stamp"
fi
