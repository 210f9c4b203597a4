"""A change recomputes exactly what depends on it.

The calculation is a pure function of the state, so each test computes the
dataplane before and after one change and asserts the exact difference.
Topology: node1 (local) and node2 in 10.0.0.0/24, node3 in 10.0.1.0/24; pool A
10.65.0.0/16 and pool B 10.66.0.0/16, each node with one block in each.
"""

from __future__ import annotations

from agent.calc import CalcConfig, unchanged_by
from agent.types import DesiredDataplane

from .test_calc_properties import SELECTING_POLICY
from .test_calc_state import (
    CONFIG,
    Cluster,
    affinity,
    delete,
    node,
    owned,
    pool,
    wep,
    wep_key,
)

NODE_IPS = {"node1": "10.0.0.5/24", "node2": "10.0.0.6/24", "node3": "10.0.1.7/24"}
INDEX = {"node1": 0, "node2": 1, "node3": 2}


def cluster(mode_a: str = "Always", mode_b: str = "Always") -> Cluster:
    updates: list = [pool("a", "10.65.0.0/16", vxlan=mode_a), pool("b", "10.66.0.0/16",
                                                                  vxlan=mode_b)]
    for name, ip in NODE_IPS.items():
        i = INDEX[name]
        updates.append(node(name, ip, vxlan_tunnel=f"10.65.{i}.0"))
        updates += owned(name, f"10.65.{i}.0/26", {0: name})
        updates += owned(name, f"10.66.{i}.0/26")
    updates.append(wep("node1", "web", ["10.65.0.2/32"], "caliweb"))
    return Cluster(*updates)


def diff(before: DesiredDataplane, after: DesiredDataplane) -> dict[str, tuple[set, set]]:
    """Per field: (removed, added). Only fields that changed appear."""
    out = {}
    for name in before.__dataclass_fields__:
        old, new = getattr(before, name), getattr(after, name)
        if old == new:
            continue
        if isinstance(old, frozenset):
            out[name] = (set(old - new), set(new - old))
        else:
            out[name] = ({old}, {new})
    return out


def routes(items: set) -> set[str]:
    return {r.describe() for r in items}


def change(c: Cluster, *updates, config: CalcConfig = CONFIG) -> dict[str, tuple[set, set]]:
    before = c.calc(config=config).dataplane
    c.apply(*updates)
    return diff(before, c.calc(config=config).dataplane)


def test_flipping_one_pool_to_crosssubnet_changes_only_its_same_subnet_routes():
    c = cluster()
    d = change(c, pool("b", "10.66.0.0/16", vxlan="CrossSubnet"))
    assert set(d) == {"routes"}
    removed, added = d["routes"]
    assert routes(removed) == {
        "10.66.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450"}
    assert routes(added) == {"10.66.1.0/26 via 10.0.0.6 dev eth0 proto 80 onlink"}


def test_flipping_a_pool_back_restores_the_exact_previous_dataplane():
    c = cluster()
    original = c.calc().dataplane
    c.apply(pool("b", "10.66.0.0/16", vxlan="CrossSubnet"))
    c.apply(pool("b", "10.66.0.0/16", vxlan="Always"))
    assert c.calc().dataplane == original


def test_switching_a_pool_from_vxlan_to_ipip():
    c = cluster()
    d = change(c, pool("a", "10.65.0.0/16", ipip="Always"))
    removed, added = d["routes"]
    assert routes(removed) == {
        "10.65.1.0/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450",
        "10.65.2.0/26 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450"}
    assert routes(added) == {
        "10.65.1.0/26 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480",
        "10.65.2.0/26 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1480"}
    assert d["ipip"][1] != {None}  # tunl0 appears; pool b keeps vxlan.calico
    assert "vxlan" not in d
    # The IPIP INPUT rules and their ipset appear next to the VXLAN ones.
    assert {s.name for s in d["ipsets"][1]} == {"cali40all-hosts-net"}


def test_moving_a_remote_node_into_our_subnet():
    c = cluster("CrossSubnet", "Always")
    d = change(c, node("node3", "10.0.0.7/24", vxlan_tunnel="10.65.2.0"))
    removed, added = d["routes"]
    # Only node3's CrossSubnet block changes form; its Always block keeps the tunnel.
    assert routes(removed) == {
        "10.65.2.0/26 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450"}
    assert routes(added) == {"10.65.2.0/26 via 10.0.0.7 dev eth0 proto 80 onlink"}
    # The underlay address of node3's VTEP moved: its FDB entry and the allowed sources.
    assert {f.dst for f in d["fdb"][1]} == {"10.0.0.7"}
    assert {m for s in d["ipsets"][1] for m in s.members} >= {"10.0.0.7/32"}
    assert set(d) == {"routes", "fdb", "ipsets"}


def test_changing_our_own_prefix_recomputes_every_crosssubnet_route():
    c = cluster("CrossSubnet", "CrossSubnet")
    d = change(c, node("node1", "10.0.0.5/16", vxlan_tunnel="10.65.0.0"))
    removed, added = d["routes"]
    assert routes(removed) == {
        "10.65.2.0/26 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450",
        "10.66.2.0/26 via 10.65.2.0 dev vxlan.calico proto 80 onlink mtu 1450"}
    assert routes(added) == {"10.65.2.0/26 via 10.0.1.7 dev eth0 proto 80 onlink",
                             "10.66.2.0/26 via 10.0.1.7 dev eth0 proto 80 onlink"}
    assert set(d) == {"routes"}


def test_affinity_confirmed_then_released():
    c = cluster()
    d = change(c, *owned("node2", "10.65.1.64/26", state="pending"))
    assert d == {}
    d = change(c, affinity("node2", "10.65.1.64/26", "confirmed"))
    assert routes(d["routes"][1]) == {
        "10.65.1.64/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450"}
    assert d["routes"][0] == set() and set(d) == {"routes"}
    d = change(c, affinity("node2", "10.65.1.64/26", "pendingDeletion"))
    assert routes(d["routes"][0]) == {
        "10.65.1.64/26 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450"}
    assert d["routes"][1] == set()


def test_local_block_confirmed_adds_only_its_blackhole():
    c = cluster()
    d = change(c, *owned("node1", "10.65.0.64/26"))
    assert d == {"routes": (set(), d["routes"][1])}
    assert routes(d["routes"][1]) == {"blackhole 10.65.0.64/26 proto 80"}


def test_pod_added_and_removed():
    c = cluster()
    d = change(c, wep("node1", "db", ["10.65.0.3/32"], "calidb"))
    assert routes(d["routes"][1]) == {"10.65.0.3 dev calidb scope link"}
    assert d["workload_interfaces"] == (set(), {"calidb"})
    # Its policy chains, and the dispatch chains that now know its interface.
    assert {ch.name for ch in d["chains"][1]} == {
        "cali-tw-calidb", "cali-fw-calidb", "cali-from-wl-dispatch", "cali-to-wl-dispatch"}
    assert {ch.name for ch in d["chains"][0]} == {"cali-from-wl-dispatch", "cali-to-wl-dispatch"}
    assert set(d) == {"routes", "workload_interfaces", "chains"}
    d = change(c, delete(wep_key("node1", "db")))
    assert routes(d["routes"][0]) == {"10.65.0.3 dev calidb scope link"}
    assert set(d) == {"routes", "workload_interfaces", "chains"}


def test_remote_pod_changes_nothing_unless_borrowed():
    c = cluster()
    assert change(c, wep("node2", "x", ["10.65.1.5/32"], "calix")) == {}
    d = change(c, wep("node2", "y", ["10.65.2.5/32"], "caliy"))
    assert routes(d["routes"][1]) == {
        "10.65.2.5 via 10.65.1.0 dev vxlan.calico proto 80 onlink mtu 1450"}


def test_nat_outgoing_toggled_on_one_pool():
    c = cluster()
    d = change(c, pool("a", "10.65.0.0/16", vxlan="Always", nat=True))
    # cali-POSTROUTING and its hook already exist for the vxlan.calico source masquerade:
    # the chain gains the jump, the hook stays.
    assert set(d) == {"ipsets", "chains"}
    assert {s.name for s in d["ipsets"][1]} == {"cali40masq-ipam-pools", "cali40all-ipam-pools"}
    assert {ch.name for ch in d["chains"][0]} == {"cali-POSTROUTING"}
    assert {ch.name for ch in d["chains"][1]} == {"cali-nat-outgoing", "cali-POSTROUTING"}


# -- when no calculation is needed (agent.calc.unchanged_by) ----------------------------------


def skipped(c: Cluster, *updates, config: CalcConfig = CONFIG,
            config_before: CalcConfig | None = None) -> bool:
    """Whether the agent would skip the calculation after `updates`; checked against
    calculating anyway when it would."""
    previous = c.calc(config=config_before or config)
    c.state.take_changes()
    c.apply(*updates)
    skip = unchanged_by(previous, c.state.take_changes(), c.state, "node1", config)
    if skip:
        assert c.calc(config=config) == previous
    return skip


def test_a_remote_pod_inside_its_nodes_block_needs_no_calculation():
    c = cluster()
    # node2's pod, in node2's block, and node2's block gaining its allocation.
    assert skipped(c, wep("node2", "api", ["10.65.1.7/32"], "caliapi"),
                   owned("node2", "10.65.1.0/26", {0: "node2", 7: "node2"})[0])
    assert skipped(c, delete(wep_key("node2", "api")),
                   owned("node2", "10.65.1.0/26", {0: "node2"})[0])


def test_what_a_calculation_must_see_is_not_skipped():
    c = cluster()
    # A borrowed address in a VXLAN pool: node3's pod in node2's block gets a /32 here.
    assert not skipped(c, wep("node3", "borrower", ["10.65.1.9/32"], "calib"))
    # Node2's block allocating to node3: the same /32, from the block.
    assert not skipped(c, owned("node2", "10.65.1.0/26", {0: "node2", 9: "node3"})[0])
    # This node's pod: its route and chains.
    assert not skipped(c, wep("node1", "local", ["10.65.0.9/32"], "calilocal"))
    # A block changing hands, a node, a pool: other facets.
    assert not skipped(c, owned("node3", "10.65.1.0/26")[0])
    assert not skipped(c, node("node2", "10.0.0.16/24", vxlan_tunnel="10.65.1.0"))
    # Another configuration (the parent interface's MTU changed).
    assert not skipped(c, config=CalcConfig(host_mtu=9000, parent_interface="eth0"),
                       config_before=CONFIG)
    assert skipped(c)  # nothing at all


def test_with_bgp_routing_a_no_encap_pool_a_borrowed_remote_address_needs_no_calculation():
    """BGP carries other nodes' /32s in pools without VXLAN (routes.py, Who routes what)."""
    c = cluster("Never", "Never")
    bgp = CalcConfig(host_mtu=1500, parent_interface="eth0", datastore_cluster_routes=False)
    assert skipped(c, wep("node3", "borrower", ["10.65.1.9/32"], "calib"), config=bgp)
    assert not skipped(c, wep("node3", "borrower2", ["10.65.1.10/32"], "calic"))


def test_endpoints_are_not_skipped_while_a_policy_builds_ip_sets_from_them():
    c = cluster()
    c.apply(SELECTING_POLICY)
    assert c.calc().endpoint_sets
    assert not skipped(c, wep("node2", "api", ["10.65.1.7/32"], "caliapi"))
