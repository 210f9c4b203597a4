"""The VXLAN dataplane against a real kernel (root, a throwaway netns): vxlan.calico,
its neighbour and FDB entries and the routes through it, via the writers and via
KernelDataplane (the apply order)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.dataplane.facade import KernelDataplane
from agent.dataplane.neighbors import NeighborTable
from agent.dataplane.tunnels import IPIPManager, VXLANManager
from agent.types import (
    PROTO_BOOT,
    DesiredDataplane,
    FdbEntry,
    IPIPDevice,
    Neighbor,
    Route,
    RouteClass,
    VXLANDevice,
)
from tests.dataplane.helpers import routes, sh
from tests.support import add_veth

pytestmark = pytest.mark.root

VX = "vxlan.calico"
DEV = VXLANDevice(name=VX, vni=4096, port=4789, local_ip="192.168.0.1", parent="eth0",
                  mac="66:aa:bb:cc:dd:ee", address="10.65.0.0", mtu=1450)
VTEP = Neighbor("10.65.1.0", "66:bb:bb:bb:bb:02", VX)
FDB = FdbEntry("66:bb:bb:bb:bb:02", VX, "192.168.0.2")
TUNNEL = Route("10.65.1.0/26", RouteClass.VXLAN_TUNNEL, dev=VX, gateway="10.65.1.0", onlink=True,
               mtu=1450)
VTEP32 = Route("10.65.4.0/32", RouteClass.VXLAN_TUNNEL, dev=VX, scope="link", mtu=1450)
BH = Route("10.65.0.0/26", RouteClass.IPAM_BLOCK_BLACKHOLE, type="blackhole")
WL = Route("10.65.0.2/32", RouteClass.LOCAL_WORKLOAD, dev="cali1234567890a", scope="link",
           proto=PROTO_BOOT)

DESIRED = DesiredDataplane(
    routes=frozenset({TUNNEL, VTEP32, BH, WL}),
    neighbors=frozenset({VTEP}),
    fdb=frozenset({FDB}),
    vxlan=DEV,
    workload_interfaces=frozenset({"cali1234567890a"}),
)


def link_details(ns: str) -> str:
    return " ".join(sh(ns, "-d", "link", "show", VX).split())


def test_vxlan_device_is_created_as_desired(netns: str, uplink: str) -> None:
    mgr = VXLANManager(netns)
    try:
        mgr.set_desired(DEV)
        res = mgr.apply()
        assert res.ok and res.changed_links == (VX,), res
        d = link_details(netns)
        for part in ("mtu 1450", "link/ether 66:aa:bb:cc:dd:ee", "vxlan id 4096",
                     "local 192.168.0.1 dev eth0", "dstport 4789", "nolearning"):
            assert part in d, (part, d)
        assert "UP" in d.split(">")[0]
        assert "inet 10.65.0.0/32" in sh(netns, "-4", "addr", "show", "dev", VX)
        # A fresh manager finds it right and writes nothing.
        again = VXLANManager(netns)
        again.set_desired(DEV)
        assert again.apply().mutations == 0
        again.close()
    finally:
        mgr.close()


def test_incompatible_vxlan_device_is_recreated(netns: str, uplink: str) -> None:
    sh(netns, "link", "add", VX, "type", "vxlan", "id", "7", "dstport", "8472", "local",
       "192.168.0.1", "dev", "eth0")
    sh(netns, "addr", "add", "10.9.9.9/24", "dev", VX)
    mgr = VXLANManager(netns)
    try:
        mgr.set_desired(DEV)
        res = mgr.apply()
        assert res.ok, res.errors
        d = link_details(netns)
        assert "vxlan id 4096" in d and "dstport 4789" in d and "nolearning" in d
        addrs = sh(netns, "-4", "addr", "show", "dev", VX)
        assert "10.65.0.0/32" in addrs and "10.9.9.9" not in addrs
    finally:
        mgr.close()


def test_wrong_mtu_and_address_are_fixed_in_place(netns: str, uplink: str) -> None:
    mgr = VXLANManager(netns)
    try:
        mgr.set_desired(DEV)
        mgr.apply()
        idx = sh(netns, "link", "show", VX).split(":")[0]
        sh(netns, "link", "set", VX, "mtu", "1400")
        sh(netns, "addr", "add", "10.8.8.8/32", "dev", VX)
        mgr.resync()
        res = mgr.apply()
        assert res.ok and res.mutations == 2
        assert sh(netns, "link", "show", VX).split(":")[0] == idx  # same device
        assert "mtu 1450" in link_details(netns)
        assert "10.8.8.8" not in sh(netns, "-4", "addr", "show", "dev", VX)
    finally:
        mgr.close()


def test_vxlan_device_removed_when_not_desired(netns: str, uplink: str) -> None:
    mgr = VXLANManager(netns)
    try:
        mgr.set_desired(DEV)
        mgr.apply()
        mgr.set_desired(None)
        res = mgr.apply()
        assert res.ok and res.deletes == 1
        assert sh(netns, "link", "show", VX, check=False) == ""
        assert mgr.apply().mutations == 0
    finally:
        mgr.close()


def test_neighbour_and_fdb_entries(netns: str, uplink: str) -> None:
    sh(netns, "link", "add", VX, "address", DEV.mac, "type", "vxlan", "id", "4096", "dstport",
       "4789", "local", "192.168.0.1", "dev", "eth0", "nolearning")
    sh(netns, "link", "set", VX, "up")
    # Entries that are not ours: a stale VTEP on our device, anything on another device.
    sh(netns, "neigh", "add", "10.65.9.0", "lladdr", "66:bb:bb:bb:bb:09", "dev", VX,
       "nud", "permanent")
    sh(netns, "neigh", "add", "192.168.0.77", "lladdr", "02:00:00:00:00:77", "dev", "eth0",
       "nud", "permanent")
    sh(netns, "bridge", "fdb", "add", "66:bb:bb:bb:bb:09", "dev", VX, "dst", "192.168.0.9",
       "self", "permanent")
    nt = NeighborTable(netns)
    try:
        nt.set_desired([VTEP], [FDB])
        res = nt.apply()
        assert res.ok and (res.writes, res.deletes) == (2, 2), res
        neigh = [" ".join(x.split()) for x in sh(netns, "neigh", "show", "dev", VX).splitlines()]
        assert neigh == ["10.65.1.0 lladdr 66:bb:bb:bb:bb:02 PERMANENT"]
        fdb = [" ".join(x.split()) for x in sh(netns, "bridge", "fdb", "show", "dev", VX).splitlines()]
        assert "66:bb:bb:bb:bb:02 dst 192.168.0.2 self permanent" in fdb
        assert not [e for e in fdb if "66:bb:bb:bb:bb:09" in e], fdb
        assert "192.168.0.77 lladdr 02:00:00:00:00:77 PERMANENT" in " ".join(
            sh(netns, "neigh", "show", "dev", "eth0").split())
        fresh = NeighborTable(netns)
        fresh.set_desired([VTEP], [FDB])
        assert fresh.apply().mutations == 0
        fresh.close()
    finally:
        nt.close()


def test_full_vxlan_dataplane_in_order_restart_and_removal(netns: str, uplink: str) -> None:
    add_veth(netns, "cali1234567890a")
    dp = KernelDataplane(netns)
    try:
        dp.set_desired(DESIRED)
        res = dp.apply()
        assert res.ok, res.errors
        table = routes(netns)
        for r in (TUNNEL, VTEP32, BH, WL):
            assert r.describe() in table, (r.describe(), table)
        assert "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450" in table
        assert " ".join(sh(netns, "neigh", "show", "dev", VX).split()) == \
            "10.65.1.0 lladdr 66:bb:bb:bb:bb:02 PERMANENT"
        assert "66:bb:bb:bb:bb:02 dst 192.168.0.2 self permanent" in " ".join(
            sh(netns, "bridge", "fdb", "show", "dev", VX).split())
        assert dp.apply().mutations == 0
    finally:
        dp.close()

    restarted = KernelDataplane(netns)
    try:
        restarted.set_desired(DESIRED)
        res = restarted.apply()
        assert res.ok and res.mutations == 0, res.results

        # The VXLAN pool goes away: routes, then entries, then the device.
        restarted.set_desired(replace(DESIRED, vxlan=None, neighbors=frozenset(), fdb=frozenset(),
                                      routes=frozenset({BH, WL})))
        res = restarted.apply()
        assert res.ok, res.errors
        assert list(res.results) == ["ipsets", "sysctls", "neighbors", "routes", "vxlan", "ipip",
                                     "iptables-nat", "iptables-filter", "ipset-deletions"]
        assert sh(netns, "link", "show", VX, check=False) == ""
        assert not [line for line in routes(netns) if VX in line]
        assert restarted.apply().mutations == 0
    finally:
        restarted.close()


def test_recreated_device_gets_its_routes_and_entries_back(netns: str, uplink: str) -> None:
    dp = KernelDataplane(netns)
    try:
        d = replace(DESIRED, routes=frozenset({TUNNEL, BH}), workload_interfaces=frozenset())
        dp.set_desired(d)
        assert dp.apply().ok
        dp.set_desired(replace(d, vxlan=replace(DEV, mac="66:aa:bb:cc:dd:01")))
        res = dp.apply()
        assert res.ok, res.errors
        assert "link/ether 66:aa:bb:cc:dd:01" in link_details(netns)
        assert TUNNEL.describe() in routes(netns)
        assert "10.65.1.0 lladdr 66:bb:bb:bb:bb:02 PERMANENT" in " ".join(
            sh(netns, "neigh", "show", "dev", VX).split())
    finally:
        dp.close()


def test_ipip_on_this_kernel(netns: str) -> None:
    """tunl0 needs the ipip module. Without it (this VM's kernel) the manager reports a
    clear error; with it (the User-Mode Linux lane) tunl0 is set up: `ip link add`
    loads the module, which creates tunl0 itself, so the add answers EEXIST."""
    mgr = IPIPManager(netns)
    try:
        mgr.set_desired(IPIPDevice(name="tunl0", address="10.65.0.1", mtu=1480))
        res = mgr.apply()
        if res.errors and "Unknown device type" in str(res.errors[0]):
            assert "ipip module" in str(res.errors[0])
            assert mgr.dirty  # retried on the next apply
            return
        assert res.ok, res.errors
        d = " ".join(sh(netns, "-d", "link", "show", "tunl0").split())
        assert "mtu 1480" in d and ",UP" in d
        assert "10.65.0.1/32" in sh(netns, "-4", "addr", "show", "dev", "tunl0")
        fresh = IPIPManager(netns)
        fresh.set_desired(IPIPDevice(name="tunl0", address="10.65.0.1", mtu=1480))
        assert fresh.apply().mutations == 0
        fresh.close()
        mgr.set_desired(None)
        assert mgr.apply().ok
        assert "10.65.0.1" not in sh(netns, "-4", "addr", "show", "dev", "tunl0")
        assert sh(netns, "link", "show", "tunl0") != ""  # the fallback device stays
    finally:
        mgr.close()
