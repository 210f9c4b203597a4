"""ClusterState: folding syncer updates into the calculation's index; shared builders.

The builders at the top write the datastore's real JSON (resource models for
v3 kinds, Calico's block and affinity documents), so the calculation tests
exercise the same parsing the agent does. Other test_calc_* modules import them.
"""

from __future__ import annotations

import json

from agent.calc import CalcConfig, Calculation, ClusterState, Facet, LearnedRoutes, calculate
from datastore.keys import affinity_key, block_key
from datastore.resources import IPPool, Node, WorkloadEndpoint
from datastore.syncer import Update

LOCAL = "node1"
CONFIG = CalcConfig(host_mtu=1500, parent_interface="eth0")


# -- builders ---------------------------------------------------------------------------


def put(key: str, doc: object, revision: int = 1) -> Update:
    return Update("put", key, json.dumps(doc).encode(), revision)


def delete(key: str, revision: int = 2) -> Update:
    return Update("delete", key, b"", revision)


def pool(name: str, cidr: str, *, vxlan: str = "Never", ipip: str = "Never", nat: bool = False,
         disabled: bool = False, block_size: int | None = None,
         allowed_uses: list[str] | None = None) -> Update:
    spec: dict = {"cidr": cidr, "vxlanMode": vxlan, "ipipMode": ipip, "natOutgoing": nat,
                  "disabled": disabled}
    if block_size is not None:
        spec["blockSize"] = block_size
    if allowed_uses is not None:
        spec["allowedUses"] = allowed_uses
    res = IPPool.model_validate({"metadata": {"name": name}, "spec": spec})
    return Update("put", res.key(), res.to_stored(), 1)


def node(name: str, ip: str | None = "10.0.0.5/24", *, vxlan_tunnel: str | None = None,
         ipip_tunnel: str | None = None, mac: str | None = None) -> Update:
    spec: dict = {}
    if ip is not None or ipip_tunnel is not None:
        spec["bgp"] = {k: v for k, v in (("ipv4Address", ip), ("ipv4IPIPTunnelAddr", ipip_tunnel))
                       if v is not None}
    if vxlan_tunnel is not None:
        spec["ipv4VXLANTunnelAddr"] = vxlan_tunnel
    if mac is not None:
        spec["vxlanTunnelMACAddr"] = mac
    res = Node.model_validate({"metadata": {"name": name}, "spec": spec})
    return Update("put", res.key(), res.to_stored(), 1)


def block(cidr: str, affinity: str | None = None,
          allocations: dict[int, str | None] | None = None, **extra: object) -> Update:
    """A block document; `allocations` maps ordinals to the node named in their attributes."""
    size = 2 ** (32 - int(cidr.split("/")[1]))
    allocs: list[int | None] = [None] * size
    attributes = []
    for ordinal, holder in sorted((allocations or {}).items()):
        secondary = {"node": holder, "namespace": "default", "pod": f"p{ordinal}"} if holder else {}
        attributes.append({"handle_id": f"k8s-pod-network.{ordinal}", "secondary": secondary})
        allocs[ordinal] = len(attributes) - 1
    doc = {"cidr": cidr, "affinity": f"host:{affinity}" if affinity else None,
           "allocations": allocs, "unallocated": [], "attributes": attributes,
           "sequenceNumber": 0, "deleted": False, **extra}
    return put(block_key(cidr), doc)


def affinity(node_name: str, cidr: str, state: str = "confirmed", deleted: bool = False) -> Update:
    return put(affinity_key(node_name, cidr), {"state": state, "deleted": deleted})


def owned(node_name: str, cidr: str, allocations: dict[int, str | None] | None = None,
          state: str = "confirmed") -> list[Update]:
    """A block affine to `node_name` (document and affinity key agree)."""
    return [block(cidr, node_name, allocations), affinity(node_name, cidr, state)]


def wep(node_name: str, pod: str, ips: list[str], iface: str | None = None,
        namespace: str = "default") -> Update:
    name = f"{node_name}-k8s-{pod.replace('-', '--')}-eth0"
    spec: dict = {"orchestrator": "k8s", "node": node_name, "pod": pod, "endpoint": "eth0",
                  "ipNetworks": ips}
    if iface is not None:
        spec["interfaceName"] = iface
    res = WorkloadEndpoint.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": spec})
    return Update("put", res.key(), res.to_stored(), 1)


def wep_key(node_name: str, pod: str, namespace: str = "default") -> str:
    name = f"{node_name}-k8s-{pod.replace('-', '--')}-eth0"
    return f"/calico/resources/v3/projectcalico.org/workloadendpoints/{namespace}/{name}"


def flatten(items: tuple) -> list[Update]:
    out: list[Update] = []
    for item in items:
        out.extend(item if isinstance(item, list) else [item])
    return out


class Cluster:
    """A ClusterState built from builder updates, with shortcuts to compute and inspect."""

    def __init__(self, *updates: Update | list[Update]) -> None:
        self.state = ClusterState()
        self.state.apply(flatten(updates))
        self.learned = LearnedRoutes()

    def apply(self, *updates: Update | list[Update]) -> set[Facet]:
        return self.state.apply(flatten(updates))

    def learn(self, *routes: tuple[str, str]) -> None:
        """Make these (prefix, next hop) the whole set of BGP best paths."""
        self.learned.update({p: (nh, "10.0.0.254") for p, nh in routes}, reset=True)

    def calc(self, local: str = LOCAL, config: CalcConfig = CONFIG) -> Calculation:
        return calculate(self.state, local, config)

    def effective(self, local: str = LOCAL, config: CalcConfig = CONFIG) -> list:
        """The routes the RouteTable would program: the datastore's, else the learned one."""
        calc = self.calc(local, config)
        self.learned.set_context(calc.learned_context)
        self.learned.changes()
        by_dst = dict(self.learned.routes) | {r.dst: r for r in calc.dataplane.routes}
        return list(by_dst.values())

    def routes(self, local: str = LOCAL, config: CalcConfig = CONFIG) -> list[str]:
        return sorted(r.describe() for r in self.effective(local, config))

    def classes(self, local: str = LOCAL, config: CalcConfig = CONFIG) -> dict[str, str]:
        return {r.dst: r.route_class.name for r in self.effective(local, config)}


# -- ClusterState tests -------------------------------------------------------------------


def test_apply_reports_changed_facets_and_ignores_equal_reputs():
    s = ClusterState()
    first = [pool("p", "10.65.0.0/16"), node("node1"), *owned("node1", "10.65.0.0/26"),
             wep("node1", "a", ["10.65.0.2/32"], "cali1")]
    assert s.apply(first) == {Facet.POOLS, Facet.NODES, Facet.BLOCKS, Facet.AFFINITIES,
                              Facet.WORKLOADS}
    assert s.apply(first) == set()
    assert s.apply([node("node1", "10.0.0.9/24")]) == {Facet.NODES}
    assert s.apply([put("/calico/resources/v3/projectcalico.org/bgppeers/x", {})]) == set()
    assert s.apply([put("/calico/ipam/v2/handle/h1", {"block": {}})]) == set()


def test_unreadable_value_acts_as_delete_and_is_reported_until_fixed():
    s = ClusterState()
    good = node("node2", "10.0.0.6/24")
    s.apply([good])
    key = good.key
    assert s.apply([Update("put", key, b"{not json", 2)]) == {Facet.NODES}
    assert "node2" not in s.nodes
    assert len(s.problems) == 1 and s.problems[0].startswith(f"{key}: ignored:")
    s.apply([good])
    assert "node2" in s.nodes and s.problems == []
    s.apply([Update("put", key, b'{"kind":"Node","spec":{"bgp":{"ipv4Address":"x"}}}', 3)])
    assert "node2" not in s.nodes and "ipv4Address" in s.problems[0]
    s.apply([delete(key)])
    assert s.problems == []


def test_invalid_pool_is_ignored_with_its_reason():
    s = ClusterState()
    bad = {"kind": "IPPool", "apiVersion": "projectcalico.org/v3", "metadata": {"name": "p"},
           "spec": {"cidr": "10.65.0.0/16", "vxlanMode": "Always", "ipipMode": "Always"}}
    s.apply([put("/calico/resources/v3/projectcalico.org/ippools/p", bad)])
    assert s.pools == {}
    assert "ipipMode and vxlanMode cannot both be enabled" in s.problems[0]


def test_affinities_track_state_and_deletion():
    s = ClusterState()
    s.apply([affinity("node2", "10.65.1.0/26", "pending")])
    assert s.confirmed_holders("10.65.1.0/26") == ()
    s.apply([affinity("node2", "10.65.1.0/26", "confirmed")])
    assert s.confirmed_holders("10.65.1.0/26") == ("node2",)
    s.apply([affinity("node2", "10.65.1.0/26", "confirmed", deleted=True)])
    assert s.confirmed_holders("10.65.1.0/26") == () and s.affinities == {}
    # An affinity from before states existed ({}) counts as confirmed, as confd treats it.
    s.apply([put(affinity_key("node3", "10.65.2.0/26"), {})])
    assert s.confirmed_holders("10.65.2.0/26") == ("node3",)
    s.apply([put(affinity_key("node3", "10.65.2.0/26"), {"state": "sideways"})])
    assert s.confirmed_holders("10.65.2.0/26") == ()
    assert "unknown affinity state 'sideways'" in s.problems[0]
    s.apply([delete(affinity_key("node3", "10.65.2.0/26"))])
    assert s.problems == [] and s.confirmed_cidrs() == []


def test_virtual_affinities_are_not_node_affinities():
    s = ClusterState()
    changed = s.apply([put("/calico/ipam/v2/virtual/lb/ipv4/block/10.96.0.0-26",
                           {"state": "confirmed"})])
    assert changed == set() and s.affinities == {}


def test_block_fields_parsed():
    s = ClusterState()
    s.apply([block("10.65.0.0/26", "node1", {0: "node1", 5: "node2", 6: "node2", 7: None})])
    info = s.blocks["10.65.0.0/26"]
    assert info.affinity_node == "node1"
    base = (10 << 24) | (65 << 16)
    assert info.allocations_by_node == (("node1", (base,)), ("node2", (base + 5, base + 6)))


def test_deleted_or_inconsistent_blocks_are_not_kept():
    s = ClusterState()
    s.apply([block("10.65.0.0/26", "node1", deleted=True)])
    assert s.blocks == {}
    s.apply([put(block_key("10.65.0.0/26"), {"cidr": "10.99.0.0/26", "affinity": "host:node1"})])
    assert s.blocks == {} and "its key says 10.65.0.0/26" in s.problems[0]
    s.apply([put(block_key("10.65.0.0/26"), {"cidr": "10.65.0.0/26", "allocations": [4],
                                             "attributes": []})])
    assert s.blocks == {} and "allocation 0 points at no attribute" in s.problems[0]
    s.apply([put(block_key("10.65.0.0/26"), {"cidr": "10.65.0.0/26", "affinity": 7})])
    assert "affinity must be a string" in s.problems[0]
    s.apply([put("/calico/ipam/v2/assignment/ipv4/block/10.65.0.1-26", {})])
    assert any("does not name a valid CIDR" in p for p in s.problems)


def test_workloads_are_indexed_by_node_and_move_with_it():
    s = ClusterState()
    s.apply([wep("node1", "a", ["10.65.0.2/32", "fd00::2/128"], "cali1")])
    ident = ("default", "node1-k8s-a-eth0")
    assert s.workloads[ident].ipv4 == ((10 << 24) | (65 << 16) | 2,)
    assert [r.describe() for r in s.workloads[ident].local_routes] == [
        "10.65.0.2 dev cali1 scope link"]
    assert list(s.workloads_by_node) == ["node1"]
    moved = wep("node1", "a", ["10.65.0.2/32"], "cali1")
    doc = json.loads(moved.value)
    doc["spec"]["node"] = "node2"
    s.apply([put(moved.key, doc)])
    assert list(s.workloads_by_node) == ["node2"]
    s.apply([delete(moved.key)])
    assert s.workloads == {} and s.workloads_by_node == {}
