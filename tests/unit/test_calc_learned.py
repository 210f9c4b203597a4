"""BGP-learned routes (agent/calc/learned.py): inside IPIP / no-encap pools they take the
pool's form with the next hop as the node; inside VXLAN pools the datastore rules; outside
every pool the kernel resolves the next hop. For one destination a datastore route always
beats a learned one (Cluster.routes merges as the RouteTable does). LearnedRoutes is fed
deltas and hands out deltas; whatever the order and grouping of the deltas, and whatever
contexts came between, its routes equal resolving every path from scratch."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.calc import CalcConfig, LearnedContext, LearnedRoutes
from agent.calc.learned import LearnedPath, learned_route, parse_path
from agent.types import Route, RouteClass

from .test_calc_state import CONFIG, Cluster, node, owned, pool

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


def test_the_fast_built_path_and_route_are_what_their_constructors_build():
    """parse_path and learned_route build their NamedTuples with tuple.__new__ (speed):
    every field, route_class included, is what the keyword constructor gives."""
    path = parse_path("172.16.1.64/26", "10.0.0.254", "10.0.0.9")
    assert type(path) is LearnedPath
    assert path._asdict() == LearnedPath(cidr="172.16.1.64/26", base=0xAC100140, prefixlen=26,
                                         next_hop="10.0.0.254", next_hop_int=0x0A0000FE,
                                         peer="10.0.0.9")._asdict()
    route, why = learned_route(LearnedContext(), path)
    assert why is None and type(route) is Route
    assert route._asdict() == Route("172.16.1.64/26", RouteClass.BGP_LEARNED,
                                    gateway="10.0.0.254")._asdict()


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


def test_a_new_best_path_for_a_prefix_replaces_its_route():
    c = cluster()
    c.learn((LEARNED_EXTERNAL, "10.0.0.254"))
    assert "192.168.50.0/24 via 10.0.0.254 proto 80" in c.routes()
    c.learned.update({LEARNED_EXTERNAL: ("10.0.0.253", "10.0.0.253")})
    assert "192.168.50.0/24 via 10.0.0.253 proto 80" in c.routes()
    assert not any("10.0.0.254" in r for r in c.routes())


def test_with_bgp_ipip_and_no_encap_blocks_are_routed_from_learned_routes_only():
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


# -- LearnedRoutes: parsing, deltas, problems ---------------------------------------------


def test_paths_are_parsed_and_unreadable_ones_reported_until_replaced():
    lr = LearnedRoutes()
    lr.update({
        "192.168.50.7/24": ("10.0.0.254", "10.0.0.254"),  # not canonical: masked
        "fd00:50::/64": ("fd00::1", "fd00::1"),  # IPv6: not routed yet, not a problem
        "nonsense": ("10.0.0.254", "10.0.0.254"),
        "10.9.0.0/16": ("not-an-ip", "10.0.0.254"),
    })
    lr.set_context(LearnedContext())
    changes = lr.changes()
    assert {dst: r.describe() for dst, r in changes.items()} == {
        "192.168.50.0/24": "192.168.50.0/24 via 10.0.0.254 proto 80"}
    assert len(lr) == 1
    assert [p.split(":")[0] for p in lr.problems] == ["learned route 10.9.0.0/16",
                                                      "learned route nonsense"]
    lr.update({"nonsense": None, "10.9.0.0/16": ("10.0.0.9", "10.0.0.9")})
    assert lr.problems == []
    assert set(lr.changes()) == {"10.9.0.0/16"}


def test_changes_are_deltas_and_a_withdrawal_is_none():
    lr = LearnedRoutes()
    lr.set_context(LearnedContext())
    lr.update({"192.168.50.0/24": ("10.0.0.254", "p"), "192.168.51.0/24": ("10.0.0.254", "p")})
    assert set(lr.changes()) == {"192.168.50.0/24", "192.168.51.0/24"}
    assert lr.changes() == {}  # nothing new
    lr.update({"192.168.50.0/24": ("10.0.0.254", "p")})  # the same path again
    assert lr.changes() == {}
    lr.update({"192.168.51.0/24": None, "192.168.52.0/24": None})  # one unknown
    assert lr.changes() == {"192.168.51.0/24": None}
    assert list(lr.routes) == ["192.168.50.0/24"]


def test_a_reset_forgets_every_path_it_does_not_name():
    lr = LearnedRoutes()
    lr.set_context(LearnedContext())
    lr.update({"192.168.50.0/24": ("10.0.0.254", "p"), "192.168.51.0/24": ("10.0.0.254", "p")})
    lr.changes()
    lr.update({"192.168.51.0/24": ("10.0.0.254", "p")}, reset=True)
    assert lr.changes() == {"192.168.50.0/24": None}


def test_nothing_is_resolved_before_the_first_context():
    lr = LearnedRoutes()
    lr.update({"192.168.50.0/24": ("10.0.0.254", "p")})
    assert lr.changes() == {}
    lr.set_context(LearnedContext())
    assert set(lr.changes()) == {"192.168.50.0/24"}


def test_a_withheld_route_is_reported_once_and_comes_when_the_parent_is_known():
    no_parent = replace(CONFIG, parent_interface=None)
    c = Cluster(pool("p", "10.65.0.0/16"), node("node1", "10.0.0.5/24"))
    c.learned.update({f"10.65.{i}.0/26": ("10.0.0.6", "10.0.0.6") for i in range(1, 4)})
    assert c.routes(config=no_parent) == []
    assert c.learned.problems == [
        "the parent interface is not known: same-subnet and no-encap routes are withheld"]
    assert len(c.routes()) == 3
    assert c.learned.problems == []


def test_only_a_context_change_recomputes_every_path():
    c = Cluster(pool("p", "10.65.0.0/16", ipip="Always"), node("node1", "10.0.0.5/24"))
    c.learned.update({f"10.65.{i}.0/26": ("10.0.1.6", "10.0.1.6") for i in range(1, 4)})
    c.routes()
    calc = c.calc()
    c.learned.set_context(calc.learned_context)  # equal: nothing to do
    assert c.learned.changes() == {}
    c.learned.set_context(LearnedContext.of(c.state.nodes["node1"], frozenset(),
                                            calc.learned_context.pools,
                                            replace(CONFIG, ipip_mtu=1400)))
    changes = c.learned.changes()
    assert len(changes) == 3 and all(r.mtu == 1400 for r in changes.values())


# -- the invariant: incremental == from scratch -------------------------------------------

PREFIXES = ["10.65.0.0/26", "10.65.1.0/26", "10.65.1.7/32", "10.66.0.0/26", "192.168.50.0/24",
            "10.65.0.0/16", "fd00::/64", "bad"]
HOPS = ["10.0.0.5", "10.0.0.6", "10.0.1.9", "fd00::1"]
POOLS = [(), (pool("p", "10.65.0.0/16", ipip="Always"),),
         (pool("p", "10.65.0.0/16", ipip="CrossSubnet"), pool("q", "10.66.0.0/16")),
         (pool("p", "10.65.0.0/16", vxlan="Always"),)]

def context(pools, blocks: frozenset[str], parent: str | None) -> LearnedContext:
    c = Cluster(*pools, node("node1", "10.0.0.5/24"))
    return LearnedContext.of(c.state.nodes["node1"], blocks, c.calc().learned_context.pools,
                             CalcConfig(host_mtu=1500, parent_interface=parent))


def scratch(paths: dict[str, tuple[str, str]], ctx: LearnedContext) -> dict:
    out = {}
    for prefix, (hop, peer) in paths.items():
        parsed = parse_path(prefix, hop, peer)
        if not isinstance(parsed, str):
            route, _ = learned_route(ctx, parsed)
            if route is not None:
                out[parsed.cidr] = route
    return out


step = st.one_of(
    st.tuples(st.just("update"),
              st.dictionaries(st.sampled_from(PREFIXES),
                              st.none() | st.tuples(st.sampled_from(HOPS), st.just("peer")),
                              max_size=4),
              st.booleans()),
    st.tuples(st.just("context"), st.integers(0, len(POOLS) - 1),
              st.sampled_from([frozenset(), frozenset({"10.65.0.0/26"})]),
              st.sampled_from([None, "eth0"])),
    st.tuples(st.just("changes")),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(step, max_size=12))
def test_incremental_routes_equal_resolving_from_scratch(steps):
    lr = LearnedRoutes()
    applied: dict = {}  # what a receiver of changes() has
    paths: dict[str, tuple[str, str]] = {}  # the model: the best paths as sent
    ctx = None
    for s in steps + [("changes",)]:
        if s[0] == "update":
            _, delta, reset = s
            lr.update(delta, reset=reset)
            if reset:
                paths = {}
            for prefix, value in delta.items():
                if value is None:
                    paths.pop(prefix, None)
                else:
                    paths[prefix] = value
        elif s[0] == "context":
            ctx = context(POOLS[s[1]], s[2], s[3])
            lr.set_context(ctx)
        else:
            for dst, route in lr.changes().items():
                if route is None:
                    del applied[dst]
                else:
                    applied[dst] = route
    # Prefixes that name one network in two spellings do not occur in PREFIXES.
    expected = scratch(paths, ctx) if ctx is not None else {}
    assert applied == expected == dict(lr.routes)
