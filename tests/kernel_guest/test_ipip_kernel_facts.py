"""Kernel behaviour the IPIP manager relies on (measured on 6.1; docs/architecture.md)."""

from __future__ import annotations

import subprocess

from pyroute2 import NetlinkError, NetNS


def ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True)


def test_tunl0_add_gives_eexist_after_autoload(guest_netns):
    ns = guest_netns()
    with NetNS(ns, flags=0) as ipr:
        try:
            ipr.link("add", ifname="tunl0", kind="ipip")
            created = True
        except NetlinkError as exc:
            assert exc.code == 17  # EEXIST: autoloading ipip made the fallback tunl0
            created = False
        assert not created
        assert ipr.link_lookup(ifname="tunl0")


def test_route_via_tunl0_needs_onlink(guest_netns):
    ns = guest_netns()
    subprocess.run(["modprobe", "ipip"], check=True)
    assert ip("-n", ns, "link", "set", "tunl0", "up").returncode == 0
    plain = ip("-n", ns, "route", "add", "10.65.1.0/26", "via", "192.168.100.2", "dev", "tunl0")
    # iproute2 says "Nexthop has invalid gateway"; netlink callers get ENETUNREACH.
    assert plain.returncode != 0 and ("gateway" in plain.stderr.lower()
                                      or "unreachable" in plain.stderr.lower())
    onlink = ip("-n", ns, "route", "add", "10.65.1.0/26", "via", "192.168.100.2", "dev", "tunl0",
                "onlink")
    assert onlink.returncode == 0, onlink.stderr
    assert "10.65.1.0/26 via 192.168.100.2 dev tunl0 onlink" in ip("-n", ns, "route").stdout
