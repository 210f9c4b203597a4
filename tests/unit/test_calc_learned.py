"""BGP-learned routes: inside IPIP / no-encap pools they take the pool's form with the next
hop as the node; inside VXLAN pools the datastore rules; outside every pool the kernel
resolves the next hop. For one destination a datastore route always beats a learned one."""

from __future__ import annotations

import pytest

from .test_calc_state import Cluster, node, owned, pool

LEARNED_EXTERNAL = "192.168.50.0/24"


def cluster(*pools) -> Cluster:
    return Cluster(*pools, node("node1", "10.0.0.5/24", vxlan_tunnel="10.65.0.0"),
                   node("node2", "10.0.0.6/24", vxlan_tunnel="10.65.1.0"),
                   *owned("node1", "10.65.0.0/26"), *owned("node2", "10.65.1.0/26"))


@pytest.mark.parametrize("pools, prefix, next_hop, expected", [
    # Outside every pool: no device, the kernel resolves the gateway.
    ((pool("p", "10.65.0.0/16", ipip="Always"),), LEARNED_EXTERNAL, "10.0.0.254",
     "192.168.50.0/24 via 10.0.0.254 proto 80"),
    ((), "0.0.0.0/0", "10.0.0.254", "0.0.0.0/0 via 10.0.0.254 proto 80"),
    # IPIP pool, next hop in another subnet: tunnel to it.
    ((pool("p", "10.65.0.0/16", ipip="Always"),), "10.65.7.0/26", "10.0.1.9",
     "10.65.7.0/26 via 10.0.1.9 dev tunl0 proto 80 onlink mtu 1480"),
    # IPIP CrossSubnet, next hop in our subnet: direct.
    ((pool("p", "10.65.0.0/16", ipip="CrossSubnet"),), "10.65.7.0/26", "10.0.0.9",
     "10.65.7.0/26 via 10.0.0.9 dev eth0 proto 80 onlink"),
    ((pool("p", "10.65.0.0/16", ipip="CrossSubnet"),), "10.65.7.0/26", "10.0.1.9",
     "10.65.7.0/26 via 10.0.1.9 dev tunl0 proto 80 onlink mtu 1480"),
    # No-encap pool.
    ((pool("p", "10.65.0.0/16"),), "10.65.7.0/26", "10.0.1.9",
     "10.65.7.0/26 via 10.0.1.9 dev eth0 proto 80 onlink"),
    # A borrowed /32 inside our own block advertised by the node that uses it.
    ((pool("p", "10.65.0.0/16", ipip="Always"),), "10.65.0.9/32", "10.0.0.6",
     "10.65.0.9 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480"),
])
def test_learned_route_forms(pools, prefix, next_hop, expected):
    c = cluster(*pools)
    c.learn((prefix, next_hop))
    assert expected in c.routes()


@pytest.mark.parametrize("pools, prefix, next_hop", [
    # VXLAN pools are routed from the datastore only.
    ((pool("p", "10.65.0.0/16", vxlan="Always"),), "10.65.7.0/26", "10.0.0.9"),
    # Our own route reflected back to us.
    ((pool("p", "10.65.0.0/16", ipip="Always"),), "10.65.9.0/26", "10.0.0.5"),
    # Our own block, learned from someone else: the blackhole stays.
    ((pool("p", "10.65.0.0/16", ipip="Always"),), "10.65.0.0/26", "10.0.0.6"),
])
def test_learned_routes_that_are_ignored(pools, prefix, next_hop):
    c = cluster(*pools)
    before = c.routes()
    c.learn((prefix, next_hop))
    assert c.routes() == before


def test_datastore_route_beats_learned_route_for_the_same_block():
    c = cluster(pool("p", "10.65.0.0/16", ipip="Always"))
    c.learn(("10.65.1.0/26", "10.0.0.77"))
    assert "10.65.1.0/26 via 10.0.0.6 dev tunl0 proto 80 onlink mtu 1480" in c.routes()
    assert not any("10.0.0.77" in r for r in c.routes())
    assert not any("conflicting" in p for p in c.calc().problems)


def test_datastore_route_beats_learned_route_even_of_a_lower_class():
    # CrossSubnet: the datastore tunnels to node3 in another subnet; a router in our
    # subnet advertising the same block would be a "same subnet" (lower class) route.
    c = Cluster(pool("p", "10.65.0.0/16", ipip="CrossSubnet"), node("node1", "10.0.0.5/24"),
                node("node3", "10.0.1.7/24"), *owned("node3", "10.65.2.0/26"))
    c.learn(("10.65.2.0/26", "10.0.0.1"))
    assert c.routes() == ["10.65.2.0/26 via 10.0.1.7 dev tunl0 proto 80 onlink mtu 1480"]


def test_learned_routes_can_be_withdrawn():
    c = cluster(pool("p", "10.65.0.0/16", ipip="Always"))
    before = c.routes()
    c.learn((LEARNED_EXTERNAL, "10.0.0.254"))
    assert len(c.routes()) == len(before) + 1
    c.learn()
    assert c.routes() == before


def test_several_paths_for_one_prefix_resolve_deterministically():
    c = cluster()
    c.learn((LEARNED_EXTERNAL, "10.0.0.254"), (LEARNED_EXTERNAL, "10.0.0.253"))
    first = c.routes()
    c.learn((LEARNED_EXTERNAL, "10.0.0.253"), (LEARNED_EXTERNAL, "10.0.0.254"))
    assert c.routes() == first
    assert "192.168.50.0/24 via 10.0.0.253 proto 80" in first


def test_with_bgp_ipip_and_no_encap_blocks_are_routed_from_learned_routes_only():
    from dataclasses import replace

    from .test_calc_state import CONFIG

    bgp = replace(CONFIG, datastore_cluster_routes=False)
    for p in (pool("p", "10.65.0.0/16", ipip="Always"), pool("p", "10.65.0.0/16")):
        c = cluster(p)
        assert not any(r.startswith("10.65.1.0/26") for r in c.routes(config=bgp))
        assert "blackhole 10.65.0.0/26 proto 80" in c.routes(config=bgp)  # local: unchanged
        c.learn(("10.65.1.0/26", "10.0.0.6"))
        assert any(r.startswith("10.65.1.0/26 via 10.0.0.6") for r in c.routes(config=bgp))
    # VXLAN pools stay the datastore's, BGP or not.
    c = cluster(pool("p", "10.65.0.0/16", vxlan="Always"))
    assert c.routes(config=bgp) == c.routes()
