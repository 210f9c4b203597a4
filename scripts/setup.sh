#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine (run as root): system packages and the
# project virtualenv. Fast when nothing changed: apt runs only for missing packages and
# pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(etcd-server etcd-client iproute2 iptables ipset iputils-ping tcpdump bird2 frr
          openssl curl procps python3-venv kmod user-mode-linux
          containernetworking-plugins podman runc busybox-static musl-tools file
          catatonit mmdebstrap git conntrack gobgpd)


missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# Services of packages this run installs must not start behind the user's back, and a
# service the machine already had (its own etcd, FRR, BIRD) must never be touched. So
# apt runs under Debian's policy-rc.d "exit 101" (invoke-rc.d and deb-systemd-invoke
# then start nothing), put in place only when the machine has no policy of its own
# and removed straight after. Paths are overridable for tests/unit/test_setup_sh.py.
POLICY_RC_D=${SETUP_POLICY_RC_D:-/usr/sbin/policy-rc.d}
SYSTEMD_RUN_DIR=${SETUP_SYSTEMD_RUN_DIR:-/run/systemd/system}  # exists iff systemd is init

placed_policy=""
remove_policy() {
    if [[ -n $placed_policy ]]; then
        rm -f "$placed_policy"
        placed_policy=""
    fi
}
trap remove_policy EXIT
trap 'exit 130' INT TERM

# The units systemd runs now, one per line; nothing without systemd as init.
active_units() {
    [[ -d $SYSTEMD_RUN_DIR ]] || return 0
    systemctl list-units --state=active --no-legend --plain 2>/dev/null | awk '{print $1}' || true
}

# The service and socket units the given packages ship, by unit name (no templates).
shipped_units() {
    dpkg-query -L "$@" 2>/dev/null | grep -E '/systemd/system/[^/@]+\.(service|socket)$' \
        | xargs -r -n1 basename | sort -u || true
}

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: missing packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    active_before=$(active_units)
    if [[ ! -e $POLICY_RC_D ]]; then
        placed_policy=$POLICY_RC_D
        printf '#!/bin/sh\n# scripts/setup.sh (tortie): start no service during its apt-get install.\nexit 101\n' \
            > "$placed_policy"
        chmod 755 "$placed_policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    remove_policy

    mapfile -t units < <(shipped_units "${missing[@]}")
    if ((${#units[@]})); then
        if [[ -e $POLICY_RC_D ]]; then
            echo "setup: the machine's own $POLICY_RC_D decided whether these services of" \
                 "packages this run installed start: ${units[*]}"
        else
            echo "setup: kept these services of packages this run installed from starting:" \
                 "${units[*]}"
        fi
        # A policy of the machine's own may have let them start: stop exactly those
        # that run now and did not before this run, never one that was running.
        active_after=$(active_units)
        for unit in "${units[@]}"; do
            if grep -qxF "$unit" <<<"$active_after" && ! grep -qxF "$unit" <<<"$active_before"; then
                echo "setup: stopping $unit (installed and started by this run)"
                systemctl stop "$unit" || true
            fi
        done
    fi
fi

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

# The pinned Helm 3 and Helm 4 for the chart's offline checks (tests/chart), into
# .cache/tools/; nothing is fetched when they are there.
.venv/bin/python scripts/fetch_helm.py >/dev/null

# The host-side CNI plugin (shim/tortie-cni-shim.c), static: tests, the lab and the image
# use build/tortie-cni-shim. Rebuilt only when its source changed.
scripts/build-shim.sh >/dev/null
