"""Tunnel device planning and the managers' control flow, without a kernel."""

from __future__ import annotations

from dataclasses import replace

from agent.dataplane.errors import DeviceError
from agent.dataplane.tunnels import (
    IPIPManager,
    LinkState,
    VxlanInfo,
    VXLANManager,
    plan_ipip,
    plan_vxlan,
    vxlan_incompat,
)
from agent.types import IPIPDevice, VXLANDevice
from tests.unit.fakes import FakeLinkKernel

WANT = VXLANDevice(name="vxlan.calico", vni=4096, port=4789, local_ip="192.168.0.1",
                   parent="eth0", mac="66:AA:BB:CC:DD:EE", address="10.65.0.0", mtu=1450)
GOOD = LinkState(
    name="vxlan.calico", kind="vxlan", mtu=1450, up=True, mac="66:aa:bb:cc:dd:ee",
    addresses=frozenset({"10.65.0.0/32"}),
    vxlan=VxlanInfo(vni=4096, port=4789, local="192.168.0.1", parent="eth0", learning=False),
)
CREATE = [
    "link add vxlan.calico address 66:aa:bb:cc:dd:ee mtu 1450 type vxlan id 4096 dstport 4789 "
    "local 192.168.0.1 dev eth0 nolearning",
    "addr add 10.65.0.0/32 dev vxlan.calico",
    "link set dev vxlan.calico up",
]
TUNL = LinkState(name="tunl0", kind="ipip", mtu=1480, up=True, mac=None,
                 addresses=frozenset({"10.65.0.1/32"}))


def test_plan_vxlan_create_keep_delete() -> None:
    assert plan_vxlan(WANT, None) == CREATE
    assert plan_vxlan(WANT, GOOD) == []
    assert plan_vxlan(None, GOOD) == ["link del vxlan.calico"]
    assert plan_vxlan(None, None) == []


def test_plan_vxlan_fixes_mtu_address_and_state_in_place() -> None:
    have = replace(GOOD, mtu=1500, up=False, addresses=frozenset({"10.1.1.1/24"}))
    assert plan_vxlan(WANT, have) == [
        "link set dev vxlan.calico mtu 1450",
        "addr del 10.1.1.1/24 dev vxlan.calico",
        "addr add 10.65.0.0/32 dev vxlan.calico",
        "link set dev vxlan.calico up",
    ]
    no_addr = replace(WANT, address=None)
    assert plan_vxlan(no_addr, GOOD) == ["addr del 10.65.0.0/32 dev vxlan.calico"]


def test_vxlan_incompatibilities_recreate() -> None:
    assert vxlan_incompat(WANT, GOOD) == []
    cases = {
        "vni": replace(GOOD, vxlan=replace(GOOD.vxlan, vni=1)),
        "port": replace(GOOD, vxlan=replace(GOOD.vxlan, port=8472)),
        "local": replace(GOOD, vxlan=replace(GOOD.vxlan, local="192.168.0.9")),
        "parent": replace(GOOD, vxlan=replace(GOOD.vxlan, parent="eth1")),
        "mac": replace(GOOD, mac="66:00:00:00:00:01"),
        "learning": replace(GOOD, vxlan=replace(GOOD.vxlan, learning=True)),
        "kind": replace(GOOD, kind="veth", vxlan=None),
    }
    for what, have in cases.items():
        reasons = vxlan_incompat(WANT, have)
        assert reasons and what in reasons[0], (what, reasons)
        assert plan_vxlan(WANT, have) == ["link del vxlan.calico", *CREATE]


def test_plan_ipip() -> None:
    want = IPIPDevice(name="tunl0", address="10.65.0.1", mtu=1480)
    assert plan_ipip(want, TUNL) == []
    fallback = replace(TUNL, up=False, mtu=1480, addresses=frozenset())
    assert plan_ipip(want, fallback) == ["addr add 10.65.0.1/32 dev tunl0", "link set dev tunl0 up"]
    assert plan_ipip(None, TUNL) == ["addr del 10.65.0.1/32 dev tunl0", "link set dev tunl0 down"]
    assert plan_ipip(None, replace(TUNL, up=False, addresses=frozenset())) == []
    assert plan_ipip(want, None) == []  # creating it is the manager's step


def test_vxlan_manager_reports_the_changed_link_and_then_idles() -> None:
    fake = FakeLinkKernel()
    fake.on_run["link add vxlan.calico"] = GOOD
    mgr = VXLANManager(kernel=fake)
    mgr.set_desired(WANT)
    res = mgr.apply()
    assert res.ok and res.writes == 3 and res.changed_links == ("vxlan.calico",)
    assert fake.ran == [CREATE]
    assert mgr.apply().mutations == 0  # not dirty: does not even read
    mgr.resync()
    assert mgr.apply().mutations == 0
    assert len(fake.ran) == 1


def test_vxlan_manager_error_is_returned_and_retried() -> None:
    fake = FakeLinkKernel()
    fake.fail["link add"] = 'Cannot find device "eth0"'
    mgr = VXLANManager(kernel=fake)
    mgr.set_desired(WANT)
    res = mgr.apply()
    assert len(res.errors) == 1 and isinstance(res.errors[0], DeviceError)
    assert mgr.dirty
    del fake.fail["link add"]
    fake.on_run["link add"] = GOOD
    assert mgr.apply().ok


def test_ipip_manager_treats_eexist_as_the_fallback_device() -> None:
    fake = FakeLinkKernel()
    # Loading the module creates tunl0, then the add itself fails with EEXIST.
    fake.on_run["link add name tunl0"] = replace(TUNL, up=False, addresses=frozenset())
    fake.fail["link add name tunl0"] = "RTNETLINK answers: File exists"
    mgr = IPIPManager(kernel=fake)
    mgr.set_desired(IPIPDevice(name="tunl0", address="10.65.0.1", mtu=1480))
    res = mgr.apply()
    assert res.ok, res.errors
    assert fake.ran[-1] == ["addr add 10.65.0.1/32 dev tunl0", "link set dev tunl0 up"]
    assert res.changed_links == ("tunl0",)


def test_ipip_manager_without_ipip_support_says_so() -> None:
    fake = FakeLinkKernel()
    fake.fail["link add name tunl0"] = "Error: Unknown device type."
    mgr = IPIPManager(kernel=fake)
    mgr.set_desired(IPIPDevice(name="tunl0", address="10.65.0.1", mtu=1480))
    res = mgr.apply()
    assert len(res.errors) == 1
    assert "ipip module" in str(res.errors[0]) and "Unknown device type" in str(res.errors[0])


def test_ipip_manager_removal_keeps_the_device() -> None:
    fake = FakeLinkKernel([TUNL])
    mgr = IPIPManager(kernel=fake)
    mgr.set_desired(None)
    res = mgr.apply()
    assert res.deletes == 2 and fake.ran == [
        ["addr del 10.65.0.1/32 dev tunl0", "link set dev tunl0 down"]]
    assert not any("link del" in line for batch in fake.ran for line in batch)
