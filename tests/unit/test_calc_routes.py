"""Route rules of the calculation: every mode x subnet x encapsulation, affinities,
/32 blocks, borrowed addresses, tunnel addresses, devices, VTEPs, conflicts.

Topology used throughout (this node is node1):
    node1  10.0.0.5/24   block 10.65.0.0/26   VXLAN tunnel 10.65.0.0, IPIP tunnel 10.65.0.1
    node2  10.0.0.6/24   block 10.65.1.0/26   (same subnet as node1)
    node3  10.0.1.7/24   block 10.65.2.0/26   (another subnet)
"""

from __future__ import annotations

import hashlib

import pytest

from agent.calc import CalcConfig, derived_vtep_mac
from agent.types import FdbEntry, IPIPDevice, Neighbor, VXLANDevice

from .test_calc_state import (
    CONFIG,
    Cluster,
    affinity,
    block,
    delete,
    node,
    owned,
    pool,
    wep,
)

NODES = {
    "node1": ("10.0.0.5/24", "10.65.0.0/26"),
    "node2": ("10.0.0.6/24", "10.65.1.0/26"),
    "node3": ("10.0.1.7/24", "10.65.2.0/26"),
}


def cluster(vxlan: str = "Never", ipip: str = "Never", nat: bool = False, *extra) -> Cluster:
    updates: list = [pool("pool1", "10.65.0.0/16", vxlan=vxlan, ipip=ipip, nat=nat)]
    for name, (ip, cidr) in NODES.items():
        first = cidr.split("/")[0]
        second = first[:-1] + "1"
        updates.append(node(name, ip, vxlan_tunnel=first, ipip_tunnel=second))
        updates += owned(name, cidr, {0: name, 1: name})
    return Cluster(*updates, *extra)


# -- the mode table ---------------------------------------------------------------------

SAME, OTHER = "10.65.1.0/26", "10.65.2.0/26"


@pytest.mark.parametrize("vxlan, ipip, dst, form, route_class", [
    ("Always", "Never", SAME,
     "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450", "VXLAN_TUNNEL"),
    ("Always", "Never", OTHER,
     "10.65.2.0/26 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450", "VXLAN_TUNNEL"),
    ("CrossSubnet", "Never", SAME,
     "10.65.1.0/26 via 10.0.0.6 dev eth0 proto 80 onlink", "VXLAN_SAME_SUBNET"),
    ("CrossSubnet", "Never", OTHER,
     "10.65.2.0/26 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450", "VXLAN_TUNNEL"),
    ("Never", "Always", SAME,
     "10.65.1.0/26 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480", "IPIP_TUNNEL"),
    ("Never", "Always", OTHER,
     "10.65.2.0/26 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1480", "IPIP_TUNNEL"),
    ("Never", "CrossSubnet", SAME,
     "10.65.1.0/26 via 10.0.0.6 dev eth0 proto 80 onlink", "IPIP_SAME_SUBNET"),
    ("Never", "CrossSubnet", OTHER,
     "10.65.2.0/26 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1480", "IPIP_TUNNEL"),
    ("Never", "Never", SAME, "10.65.1.0/26 via 10.0.0.6 dev eth0 proto 80 onlink", "NO_ENCAP"),
    ("Never", "Never", OTHER, "10.65.2.0/26 via 10.0.1.7 dev eth0 proto 80 onlink", "NO_ENCAP"),
])
def test_remote_block_route_per_mode_and_subnet(vxlan, ipip, dst, form, route_class):
    c = cluster(vxlan, ipip)
    routes = {r.dst: r for r in c.calc().dataplane.routes}
    assert routes[dst].describe() == form
    assert routes[dst].route_class.name == route_class
    # The local block is blackholed in every mode, and nothing else is routed.
    assert c.routes() == sorted([
        "blackhole 10.65.0.0/26 proto 80",
        *(r.describe() for d, r in routes.items() if d in (SAME, OTHER)),
    ])


def test_local_workload_routes_and_interfaces():
    c = cluster("Always", "Never", False,
                wep("node1", "nginx", ["10.65.0.2/32", "fd00::2/128"], "cali29f56ea1abf"),
                wep("node1", "pending-pod", [], "cali0000000000a"),
                wep("node2", "remote", ["10.65.1.2/32"], "cali1111111111b"))
    dp = c.calc().dataplane
    assert "10.65.0.2 dev cali29f56ea1abf scope link" in c.routes()
    assert "blackhole 10.65.0.0/26 proto 80" in c.routes()
    assert dp.workload_interfaces == {"cali29f56ea1abf", "cali0000000000a"}
    # The remote pod is inside node2's block: its block route covers it, no /32.
    assert not any(r.startswith("10.65.1.2 ") for r in c.routes())


def test_local_workload_without_interface_is_reported_not_routed():
    c = cluster("Always", "Never", False, wep("node1", "odd", ["10.65.0.9/32"]))
    assert not any(r.startswith("10.65.0.9") for r in c.routes())
    # Calico requires interfaceName, so the endpoint is refused as a whole, by name.
    assert any("ignored" in p and "WorkloadEndpoint.Spec.InterfaceName = ''" in p
               for p in c.calc().problems), c.calc().problems


# -- affinities -----------------------------------------------------------------------------


@pytest.mark.parametrize("state, local_blackhole, remote_route", [
    ("confirmed", True, True),
    ("pending", False, False),
    ("pendingDeletion", False, False),
])
def test_only_confirmed_affinities_make_blocks_local_or_remote(state, local_blackhole,
                                                               remote_route):
    c = cluster("Always", "Never", False,
                *owned("node1", "10.65.0.64/26", state=state),
                *owned("node2", "10.65.1.64/26", state=state))
    routes = c.routes()
    assert ("blackhole 10.65.0.64/26 proto 80" in routes) is local_blackhole
    assert any(r.startswith("10.65.1.64/26 via") for r in routes) is remote_route


def test_block_naming_a_node_without_confirmed_affinity_is_nobodys():
    c = cluster("Always", "Never", False,
                block("10.65.0.64/26", "node1"),  # document says node1, no affinity key
                block("10.65.1.64/26", "node2"), affinity("node3", "10.65.1.64/26"))
    routes = c.routes()
    assert not any(r.startswith(("blackhole 10.65.0.64", "10.65.1.64/26")) for r in routes)
    assert any("block 10.65.1.64/26: confirmed affinity of node3 but the block names node2"
               in p for p in c.calc().problems)


def test_confirmed_affinity_without_block_is_ignored_and_reported():
    c = cluster("Always", "Never", False, affinity("node1", "10.65.0.128/26"))
    assert "blackhole 10.65.0.128/26 proto 80" not in c.routes()
    assert any("10.65.0.128/26: confirmed affinity of node1 but no block" in p
               for p in c.calc().problems)


def test_slash_32_blocks_get_no_blackhole_but_remote_ones_are_routed():
    c = Cluster(pool("p32", "10.70.0.0/24", vxlan="Always", block_size=32),
                node("node1", "10.0.0.5/24", vxlan_tunnel="10.70.0.1"),
                node("node2", "10.0.0.6/24", vxlan_tunnel="10.70.0.2"),
                *owned("node1", "10.70.0.1/32", {0: "node1"}),
                *owned("node2", "10.70.0.2/32", {0: "node2"}),
                *owned("node2", "10.70.0.3/32", {0: "node2"}),
                wep("node1", "a", ["10.70.0.9/32"], "calia"))
    routes = c.routes()
    assert not any(r.startswith("blackhole") for r in routes)
    # node2's VTEP lives in a /32 block: Felix uses the remote-tunnel form for it.
    assert "10.70.0.2 dev vxlan.calico proto 80 scope link mtu 1450" in routes
    assert "10.70.0.3 via 10.70.0.2 dev vxlan.calico proto 80 onlink mtu 1450" in routes
    assert c.calc().problems == ()


# -- borrowed addresses ----------------------------------------------------------------------


def test_local_pod_with_an_address_of_a_remote_block():
    c = cluster("Always", "Never", False, wep("node1", "borrower", ["10.65.1.9/32"], "calib"))
    routes = c.routes()
    assert "10.65.1.9 dev calib scope link" in routes
    assert "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450" in routes


@pytest.mark.parametrize("vxlan, ipip, form", [
    ("Always", "Never", "10.65.0.7 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450"),
    ("Never", "CrossSubnet", "10.65.0.7 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1480"),
    ("Never", "Never", "10.65.0.7 via 10.0.1.7 dev eth0 proto 80 onlink"),
])
def test_address_of_our_block_allocated_to_a_remote_node(vxlan, ipip, form):
    # IPAM recorded ordinal 7 of our block for a pod on node3 (attributes.secondary.node).
    c = cluster(vxlan, ipip, False, block("10.65.0.0/26", "node1", {0: "node1", 7: "node3"}))
    routes = c.routes()
    assert form in routes
    assert "blackhole 10.65.0.0/26 proto 80" in routes  # the /32 is more specific


def test_remote_endpoint_outside_its_nodes_blocks_gets_a_host_route():
    c = cluster("CrossSubnet", "Never", False,
                wep("node3", "roamer", ["10.65.1.20/32"], "calir"),  # in node2's block
                wep("node2", "home", ["10.65.1.21/32"], "calih"),  # in its own block
                wep("node2", "outside", ["192.168.9.9/32"], "calio"))  # in no pool
    routes = c.routes()
    assert "10.65.1.20 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450" in routes
    assert not any(r.startswith(("10.65.1.21 ", "192.168.9.9")) for r in routes)


def test_pod_of_a_node_whose_affinity_is_pending_is_routed_by_host_route():
    c = cluster("Never", "Never", False,
                *owned("node2", "10.65.1.64/26", {3: "node2"}, state="pending"),
                wep("node2", "p", ["10.65.1.67/32"], "calip"))
    assert "10.65.1.67 via 10.0.0.6 dev eth0 proto 80 onlink" in c.routes()


def test_borrowed_ipip_tunnel_address_gets_a_host_route():
    c = cluster("Never", "Always", False,
                node("node3", "10.0.1.7/24", ipip_tunnel="10.65.1.30"))  # inside node2's block
    assert "10.65.1.30 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1480" in c.routes()


def test_borrowed_vxlan_tunnel_address_gets_a_remote_tunnel_route():
    c = cluster("Always", "Never", False,
                node("node3", "10.0.1.7/24", vxlan_tunnel="10.65.1.30"))  # inside node2's block
    routes = c.routes()
    assert "10.65.1.30 dev vxlan.calico proto 80 scope link mtu 1450" in routes
    assert "10.65.2.0/26 via 10.65.1.30 dev vxlan.calico proto 80 onlink mtu 1450" in routes


# -- missing data ----------------------------------------------------------------------------


def test_remote_node_without_vxlan_tunnel_address():
    c = cluster("CrossSubnet", "Never", False,
                node("node2", "10.0.0.6/24"), node("node3", "10.0.1.7/24"))
    routes = c.routes()
    # Same subnet needs no tunnel; the other subnet cannot be reached without a VTEP.
    assert "10.65.1.0/26 via 10.0.0.6 dev eth0 proto 80 onlink" in routes
    assert not any(r.startswith("10.65.2.0/26") for r in routes)
    assert "node node3 has no VXLAN tunnel address: no VXLAN route to 10.65.2.0/26" in \
        c.calc().problems
    dp = c.calc().dataplane
    assert {n.ip for n in dp.neighbors} == set()


def test_local_node_without_vxlan_tunnel_address_has_no_device_and_no_tunnel_routes():
    c = cluster("CrossSubnet", "Never", False, node("node1", "10.0.0.5/24"))
    calc = c.calc()
    assert calc.dataplane.vxlan is None and calc.dataplane.neighbors == frozenset()
    assert c.routes() == ["10.65.1.0/26 via 10.0.0.6 dev eth0 proto 80 onlink",
                          "blackhole 10.65.0.0/26 proto 80"]
    assert any("lacks a VXLAN tunnel address" in p for p in calc.problems)


def test_remote_node_without_address_or_node_resource():
    c = cluster("Never", "Never", False, node("node2", None),
                delete("/calico/resources/v3/projectcalico.org/nodes/node3"))
    assert c.routes() == ["blackhole 10.65.0.0/26 proto 80"]
    problems = c.calc().problems
    assert "node node2 has no IPv4 address: its blocks and addresses are not routed" in problems
    assert "node node3 is not in the datastore: its blocks and addresses are not routed" in problems


def test_unknown_parent_interface_withholds_direct_routes_only():
    c = cluster("CrossSubnet", "Never")
    calc = c.calc(config=CalcConfig(host_mtu=1500))
    assert calc.dataplane.vxlan is None  # vxlan.calico needs its parent too
    assert [r.describe() for r in calc.dataplane.routes] == ["blackhole 10.65.0.0/26 proto 80"]
    calc = Cluster(pool("p", "10.65.0.0/16", ipip="Always"), node("node1"),
                   node("node2", "10.0.0.6/24"), *owned("node2", SAME)).calc(
                       config=CalcConfig(host_mtu=1500))
    assert [r.describe() for r in calc.dataplane.routes] == [
        "10.65.1.0/26 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480"]


def test_local_node_missing_from_datastore():
    c = cluster("Never", "Always", False, delete("/calico/resources/v3/projectcalico.org/nodes/node1"))
    calc = c.calc()
    assert "local node node1 is not in the datastore" in calc.problems
    assert calc.dataplane.ipip == IPIPDevice(name="tunl0", address=None, mtu=1480)
    # Nothing is same-subnet without our own prefix: everything tunnels.
    assert "10.65.1.0/26 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480" in c.routes()


def test_local_slash_32_prefix_means_no_node_is_in_our_subnet():
    c = cluster("CrossSubnet", "Never", False,
                node("node1", "10.0.0.5/32", vxlan_tunnel="10.65.0.0"))
    assert "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450" in c.routes()


def test_remote_block_outside_every_pool():
    c = cluster("Always", "Never", False, *owned("node2", "10.90.0.0/26"),
                *owned("node1", "10.90.1.0/26"))
    routes = c.routes()
    assert not any(r.startswith("10.90.0.0/26") for r in routes)
    assert "blackhole 10.90.1.0/26 proto 80" in routes
    assert "block 10.90.0.0/26 of node node2 lies in no IPv4 pool: not routed" in c.calc().problems


def test_disabled_pools_are_still_routed_and_keep_their_tunnel():
    c = Cluster(pool("old", "10.65.0.0/16", ipip="Always", disabled=True),
                node("node1"), node("node2", "10.0.0.6/24"), *owned("node2", SAME))
    dp = c.calc().dataplane
    assert dp.ipip is not None
    assert [r.describe() for r in dp.routes] == [
        "10.65.1.0/26 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480"]


# -- devices, VTEPs ----------------------------------------------------------------------------


def test_vtep_mac_is_derived_from_the_node_name_like_felix():
    digest = hashlib.sha1(b"node1").digest()
    expected = ":".join(f"{b:02x}" for b in bytes([0x66]) + digest[:5])
    assert derived_vtep_mac("node1") == expected
    assert derived_vtep_mac("node1").startswith("66:")


def test_vxlan_device_neighbours_and_fdb():
    c = cluster("Always", "Never", False,
                node("node3", "10.0.1.7/24", vxlan_tunnel="10.65.2.0", mac="EE:00:00:00:00:03"))
    dp = c.calc(config=CalcConfig(host_mtu=9000, parent_interface="ens5")).dataplane
    assert dp.vxlan == VXLANDevice(name="vxlan.calico", vni=4096, port=4789, local_ip="10.0.0.5",
                                   parent="ens5", mac=derived_vtep_mac("node1"),
                                   address="10.65.0.0", mtu=8950)
    assert dp.ipip is None
    assert dp.neighbors == {
        Neighbor("10.65.1.0", derived_vtep_mac("node2"), "vxlan.calico"),
        Neighbor("10.65.2.0", "ee:00:00:00:00:03", "vxlan.calico"),
    }
    assert dp.fdb == {
        FdbEntry(derived_vtep_mac("node2"), "vxlan.calico", "10.0.0.6"),
        FdbEntry("ee:00:00:00:00:03", "vxlan.calico", "10.0.1.7"),
    }


def test_clashing_vteps_keep_the_first_node_by_name():
    c = cluster("Always", "Never", False, node("node3", "10.0.1.7/24", vxlan_tunnel="10.65.1.0"))
    dp = c.calc().dataplane
    assert {n.ip for n in dp.neighbors} == {"10.65.1.0"}
    assert {f.dst for f in dp.fdb} == {"10.0.0.6"}
    assert any("node node3's VTEP" in p and "clashes with node node2's" in p
               for p in c.calc().problems)


def test_ipip_device_and_mtu_overrides():
    c = cluster("Never", "CrossSubnet")
    dp = c.calc(config=CalcConfig(host_mtu=1500, ipip_mtu=1400, parent_interface="eth0")).dataplane
    assert dp.ipip == IPIPDevice(name="tunl0", address="10.65.0.1", mtu=1400)
    assert dp.vxlan is None
    routes = {r.dst: r.describe() for r in c.calc(config=CalcConfig(
        host_mtu=1500, ipip_mtu=1400, parent_interface="eth0")).dataplane.routes}
    assert routes[OTHER] == "10.65.2.0/26 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1400"


def test_no_tunnel_devices_without_pools_that_need_them():
    dp = cluster("Never", "Never").calc().dataplane
    assert dp.vxlan is None and dp.ipip is None and dp.neighbors == frozenset()


@pytest.mark.parametrize("kwargs", [
    {"host_mtu": 60}, {"host_mtu": 100}, {"vxlan_mtu": 70000}, {"vxlan_vni": 0},
    {"vxlan_port": 0},
])
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        CalcConfig(**kwargs)


# -- conflicts --------------------------------------------------------------------------------


def test_same_destination_keeps_the_lowest_class():
    # A remote /32 block that is also a local pod's address: the local workload route wins.
    c = Cluster(pool("p", "10.70.0.0/24", ipip="Always", block_size=32),
                node("node1"), node("node2", "10.0.0.6/24"),
                *owned("node2", "10.70.0.9/32", {0: "node2"}),
                wep("node1", "a", ["10.70.0.9/32"], "calia"))
    assert c.routes() == ["10.70.0.9 dev calia scope link"]


def test_two_nodes_claiming_one_address_is_resolved_deterministically_and_reported():
    updates = [wep("node2", "x", ["10.65.2.40/32"], "calix"),
               wep("node3", "y", ["10.65.2.40/32"], "caliy")]
    c1 = cluster("Never", "Never", False, *updates)
    c2 = cluster("Never", "Never", False, *reversed(updates))
    assert c1.routes() == c2.routes()
    # node3 owns the block, so only node2's claim is "borrowed": no conflict here.
    assert "10.65.2.40 via 10.0.0.6 dev eth0 proto 80 onlink" in c1.routes()
    updates = [wep("node2", "x", ["10.65.5.40/32"], "calix"),
               wep("node3", "y", ["10.65.5.40/32"], "caliy")]
    c1 = cluster("Never", "Never", False, *updates)
    c2 = cluster("Never", "Never", False, *reversed(updates))
    assert c1.routes() == c2.routes()
    assert "10.65.5.40 via 10.0.0.6 dev eth0 proto 80 onlink" in c1.routes()
    assert any(p.startswith("conflicting routes for 10.65.5.40/32") for p in c1.calc().problems)


def test_default_config_is_usable():
    assert CONFIG.effective_vxlan_mtu == 1450 and CONFIG.effective_ipip_mtu == 1480
    assert CalcConfig().host_mtu == 1460
