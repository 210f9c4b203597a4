"""Service ranges and communities: what bgp.advertise derives from BGPConfigurations, and
the attributes bgp.export then sends.

Community cases follow Calico's confd/pkg/backends/calico/bgp_processor_test.go
(TestProcessCommunityRules_*); service cases follow confd/pkg/backends/calico/client.go
(onExternalIPsUpdate, onLoadBalancerIPsUpdate, ExcludeServiceAdvertisement).
"""

from __future__ import annotations

from bgp.advertise import EXCLUDE_LABEL, Advertising, advertising
from bgp.export import routes_out
from bgp.messages import format_attributes
from bgp.types import MESH, NodePlan, OutRoute, PathAttributes, PeerPlan
from datastore.resources import parse_document

API = "projectcalico.org/v3"
NODE_IP = "10.0.0.1"


def node(name: str, labels: dict[str, str] | None = None):
    return parse_document({"apiVersion": API, "kind": "Node",
                           "metadata": {"name": name, "labels": labels or {}},
                           "spec": {"bgp": {"ipv4Address": f"{NODE_IP}/24"}}})


def config(name: str = "default", **spec):
    return parse_document({"apiVersion": API, "kind": "BGPConfiguration",
                           "metadata": {"name": name}, "spec": spec})


def adv(*configs, labels=None) -> Advertising:
    return advertising("n1", {"n1": node("n1", labels)}, {c.name: c for c in configs})


def advertisements(*pairs):
    return [{"cidr": cidr, "communities": list(cs)} for cidr, cs in pairs]


# -- communities (bgp_processor_test.go TestProcessCommunityRules_*) ------------------------

def test_standard_community():  # TestProcessCommunityRules_StandardCommunity
    a = adv(config(prefixAdvertisements=advertisements(("10.0.0.0/8", ["65000:100"]))))
    assert a.communities("10.1.2.0/26") == (("65000:100",), ())


def test_large_community():  # TestProcessCommunityRules_LargeCommunity
    a = adv(config(prefixAdvertisements=advertisements(("172.16.0.0/12", ["65000:100:200"]))))
    assert a.communities("172.16.5.0/26") == ((), ("65000:100:200",))


def test_multiple_communities():  # TestProcessCommunityRules_MultipleCommunities
    a = adv(config(prefixAdvertisements=advertisements(
        ("10.0.0.0/8", ["65000:200", "65000:100", "65001:50:100"]))))
    assert a.communities("10.0.0.0/8") == (("65000:100", "65000:200"), ("65001:50:100",))


def test_multiple_cidrs_each_to_its_own_prefixes():  # TestProcessCommunityRules_MultipleCIDRs
    a = adv(config(prefixAdvertisements=advertisements(
        ("10.0.0.0/8", ["65000:100"]), ("192.168.0.0/16", ["65000:200"]))))
    assert a.communities("10.9.0.0/26") == (("65000:100",), ())
    assert a.communities("192.168.3.0/26") == (("65000:200",), ())
    assert a.communities("172.16.0.0/26") == ((), ())
    assert a.communities("10.0.0.0/7") == ((), ())  # wider than the cidr: not inside it


def test_nested_cidrs_add_up_sorted_numerically():
    a = adv(config(prefixAdvertisements=advertisements(
        ("10.0.0.0/8", ["65000:100"]), ("10.65.0.0/16", ["9:1", "65000:100"]))))
    assert a.communities("10.65.1.0/26") == (("9:1", "65000:100"), ())


def test_named_communities_come_from_the_same_configuration():
    # client.go getPrefixAdvertisementsKVPair: a name is looked up in spec.communities.
    a = adv(config(communities=[{"name": "gold", "value": "65001:300"},
                                {"name": "big", "value": "1:2:3"}],
                   prefixAdvertisements=advertisements(("10.65.0.0/16", ["gold", "big", "7:7"]))))
    assert a.communities("10.65.0.0/26") == (("7:7", "65001:300"), ("1:2:3",))


def test_ipv6_advertisement_is_left_out():  # TestProcessCommunityRules_IPv6 (v4 side)
    a = adv(config(prefixAdvertisements=advertisements(("fd00::/8", ["65000:100"]))))
    assert a.rules == ()


def test_node_configuration_with_advertisements_wins_over_the_global_one():
    # bgp_processor.go processCommunityRules: the node key first, then the global one.
    glob = config(prefixAdvertisements=advertisements(("10.0.0.0/8", ["1:1"])))
    own = config("node.n1", prefixAdvertisements=advertisements(("10.0.0.0/8", ["2:2"])))
    other = config("node.n2", prefixAdvertisements=advertisements(("10.0.0.0/8", ["3:3"])))
    assert adv(glob, own, other).communities("10.1.0.0/26") == (("2:2",), ())
    assert adv(glob, other).communities("10.1.0.0/26") == (("1:1",), ())
    assert adv(glob, config("node.n1", listenPort=1790)).communities("10.1.0.0/26") == (
        ("1:1",), ())


# -- service ranges (client.go) -----------------------------------------------------------

def test_service_ranges_from_the_global_configuration():
    glob = config(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}],
                  serviceExternalIPs=[{"cidr": "192.0.2.0/24"}, {"cidr": "198.51.100.7/32"}],
                  serviceLoadBalancerIPs=[{"cidr": "203.0.113.0/24"},
                                          {"cidr": "203.0.114.9/32"},
                                          {"cidr": "fd00:96::/112"}])
    # single external / load-balancer addresses are announced per service by Calico
    assert adv(glob).services == {"10.96.0.0/12", "192.0.2.0/24", "203.0.113.0/24"}


def test_load_balancer_ranges_only_with_aggregation():
    glob = config(serviceLoadBalancerIPs=[{"cidr": "203.0.113.0/24"}],
                  serviceLoadBalancerAggregation="Disabled")
    assert adv(glob).services == frozenset()


def test_excluded_node_and_node_configurations_announce_no_services():
    glob = config(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}])
    assert adv(glob, labels={EXCLUDE_LABEL: "true"}).services == frozenset()
    assert adv(config("node.n1", serviceClusterIPs=[{"cidr": "10.96.0.0/12"}])).services == (
        frozenset())


# -- what bgp.export sends -------------------------------------------------------------------

def test_routes_out_carry_communities_and_service_ranges():
    glob = config(serviceClusterIPs=[{"cidr": "10.96.0.0/12"}],
                  prefixAdvertisements=advertisements(("10.65.0.0/16", ["65001:100"]),
                                                      ("10.96.0.0/12", ["65001:1:2"])))
    a = adv(glob)
    tor = PeerPlan(name="Global_10_0_0_9", peer_type="global", peer_ip="10.0.0.9",
                   peer_as=65001, local_as=64512)
    mesh = PeerPlan(name="Mesh_10_0_0_2", peer_type=MESH, peer_ip="10.0.0.2", peer_as=64512,
                    local_as=64512)
    plan = NodePlan(node="n1", node_ip=NODE_IP, router_id=NODE_IP, local_as=64512,
                    listen_address=None, peers=(tor, mesh))

    def in_pool(prefix: str) -> bool:
        return prefix.startswith("10.65.")

    out = routes_out(plan, ["10.65.0.0/26", "10.66.0.0/26", *a.services], {}, in_pool,
                     advertising=a)
    assert out["10.0.0.9"] == {
        "10.65.0.0/26": OutRoute("10.65.0.0/26", PathAttributes(
            next_hop=NODE_IP, as_path=(64512,), communities=("65001:100",))),
        "10.96.0.0/12": OutRoute("10.96.0.0/12", PathAttributes(
            next_hop=NODE_IP, as_path=(64512,), large_communities=("65001:1:2",))),
    }
    assert out["10.0.0.2"]["10.65.0.0/26"].attrs == PathAttributes(
        next_hop=NODE_IP, local_pref=100, communities=("65001:100",))


def test_exabgp_syntax_of_both_kinds():
    attrs = PathAttributes(next_hop=NODE_IP, communities=("65001:100",),
                           large_communities=("65001:1:2", "7:8:9"))
    assert format_attributes(attrs) == ("next-hop 10.0.0.1 origin igp community [ 65001:100 ] "
                                        "large-community [ 65001:1:2 7:8:9 ]")
