"""Export policy: who gets which route with which attributes, pool filtering, and diffs.

The property: patching the adj-RIBs-out prefix by prefix gives what building them whole
gives, and reports exactly what `diff` reports.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.export import ExportPolicy, diff, pool_exporter, routes_out
from bgp.rib import Path, Rib
from bgp.types import GLOBAL, MESH, NODE_SPECIFIC, NodePlan, OutRoute, PathAttributes, PeerPlan

AS, TOR_AS = 64512, 65001
NODE = "10.0.0.1"
CLUSTER = "10.0.0.100"
POOL = "10.65.0.0/16"
OWN, OTHER = "10.65.0.0/26", "10.65.1.0/26"


def everything(_prefix: str) -> bool:
    return True


def peer(ip: str, *, peer_as: int = AS, local_as: int = AS, rr_client: bool = False,
         next_hop_mode: str = "Auto", peer_type: str = MESH) -> PeerPlan:
    return PeerPlan(name=f"Node_{ip.replace('.', '_')}", peer_type=peer_type, peer_ip=ip,
                    peer_as=peer_as, local_as=local_as, rr_client=rr_client,
                    next_hop_mode=next_hop_mode)


def plan(*peers: PeerPlan, cluster_id: str | None = None) -> NodePlan:
    return NodePlan(node="node1", node_ip=NODE, router_id=NODE, local_as=AS, listen_address=None,
                    cluster_id=cluster_id, peers=tuple(sorted(peers, key=lambda p: p.name)))


def learned(prefix: str, source: str, *, ebgp: bool = False, stale: bool = False,
            **kw) -> Path:
    a = PathAttributes(next_hop=kw.pop("next_hop", source), local_pref=kw.pop("local_pref", 100),
                       **kw)
    return Path(prefix, a, source, source, ebgp, stale)


def local_ibgp(prefix: str) -> OutRoute:
    return OutRoute(prefix, PathAttributes(next_hop=NODE, origin="igp", as_path=(), local_pref=100))


def local_ebgp(prefix: str, asn: int = AS) -> OutRoute:
    return OutRoute(prefix, PathAttributes(next_hop=NODE, origin="igp", as_path=(asn,)))


# -- full mesh and top-of-rack ----------------------------------------------------------

def test_full_mesh_node_sends_its_own_routes_only():
    p = plan(peer("10.0.0.2"), peer("10.0.0.3"))
    best = {OTHER: learned(OTHER, "10.0.0.2"), OWN: learned(OWN, "10.0.0.3")}
    assert routes_out(p, [OWN, "10.65.9.7/32"], best, everything) == {
        ip: {OWN: local_ibgp(OWN), "10.65.9.7/32": local_ibgp("10.65.9.7/32")}
        for ip in ("10.0.0.2", "10.0.0.3")}


def test_tor_gets_own_routes_with_the_sessions_local_as():
    p = plan(peer("10.0.0.2"),
             peer("10.0.0.254", peer_as=TOR_AS, peer_type=GLOBAL),
             peer("10.0.1.254", peer_as=TOR_AS, local_as=65000, peer_type=NODE_SPECIFIC))
    best = {"0.0.0.0/0": learned("0.0.0.0/0", "10.0.0.254", ebgp=True, as_path=(TOR_AS,)),
            OTHER: learned(OTHER, "10.0.0.2")}
    assert routes_out(p, [OWN], best, everything) == {
        "10.0.0.2": {OWN: local_ibgp(OWN)},
        "10.0.0.254": {OWN: local_ebgp(OWN)},
        "10.0.1.254": {OWN: local_ebgp(OWN, 65000)},
    }
    # Even a reflector keeps learned paths from the ToR, and from its clients, to itself.
    rr = plan(peer("10.0.0.2", rr_client=True), peer("10.0.0.254", peer_as=TOR_AS),
              cluster_id=CLUSTER)
    out = routes_out(rr, [], best, everything)
    assert out["10.0.0.254"] == {} and "0.0.0.0/0" not in out["10.0.0.2"]


# -- route reflection -------------------------------------------------------------------

C1, C2, N1, RR2, TOR = "10.0.0.11", "10.0.0.12", "10.0.0.21", "10.0.0.31", "10.0.0.254"


def rr_plan(**kw) -> NodePlan:
    return plan(peer(C1, rr_client=True), peer(C2, rr_client=True, **kw), peer(N1), peer(RR2),
                peer(TOR, peer_as=TOR_AS), cluster_id=CLUSTER)


def reflected(prefix: str, source: str, originator: str, cluster_list=(CLUSTER,),
              next_hop: str | None = None) -> OutRoute:
    return OutRoute(prefix, PathAttributes(next_hop=next_hop or source, local_pref=100,
                                           originator_id=originator, cluster_list=cluster_list))


def test_reflector_reflects_client_routes_to_every_other_ibgp_peer():
    out = routes_out(rr_plan(), [OWN], {OTHER: learned(OTHER, C1)}, everything)
    route = reflected(OTHER, C1, C1)
    assert out == {
        C1: {OWN: local_ibgp(OWN)},  # not back to its source
        C2: {OWN: local_ibgp(OWN), OTHER: route},
        N1: {OWN: local_ibgp(OWN), OTHER: route},
        RR2: {OWN: local_ibgp(OWN), OTHER: route},
        TOR: {OWN: local_ebgp(OWN)},
    }
    assert out[C2][OTHER] is out[N1][OTHER]  # one object per distinct route


def test_reflector_reflects_non_client_routes_to_clients_only():
    out = routes_out(rr_plan(), [], {OTHER: learned(OTHER, N1)}, everything)
    assert {ip for ip, routes in out.items() if routes} == {C1, C2}
    assert out[C1][OTHER] == reflected(OTHER, N1, N1)


def test_reflection_keeps_attributes_and_extends_the_cluster_list():
    path = learned(OTHER, N1, next_hop="10.0.0.50", originator_id="10.0.0.50",
                   cluster_list=("10.0.0.200",), as_path=(65100,), origin="egp", med=7,
                   communities=("64512:100",), local_pref=120)
    out = routes_out(rr_plan(), [], {OTHER: path}, everything)
    assert out[C1][OTHER].attrs == PathAttributes(
        next_hop="10.0.0.50", origin="egp", as_path=(65100,), med=7, local_pref=120,
        communities=("64512:100",), originator_id="10.0.0.50",
        cluster_list=(CLUSTER, "10.0.0.200"))


def test_no_reflection_to_the_originator():
    path = learned(OTHER, N1, originator_id=C2, cluster_list=("10.0.0.200",))
    out = routes_out(rr_plan(), [], {OTHER: path}, everything)
    assert OTHER in out[C1] and OTHER not in out[C2]
    # A peer whose router id is not its address: the caller passes the router ids.
    path = learned(OTHER, N1, originator_id="192.168.0.12", cluster_list=("10.0.0.200",))
    out = routes_out(rr_plan(), [], {OTHER: path}, everything, {C2: "192.168.0.12"})
    assert OTHER in out[C1] and OTHER not in out[C2]


def test_next_hop_self_towards_a_peer_that_asks_for_it():
    out = routes_out(rr_plan(next_hop_mode="Self"), [], {OTHER: learned(OTHER, C1)}, everything)
    assert out[C2][OTHER] == reflected(OTHER, C1, C1, next_hop=NODE)
    assert out[N1][OTHER] == reflected(OTHER, C1, C1)


def test_source_outside_the_plan_is_not_reflected():
    assert routes_out(rr_plan(), [], {OTHER: learned(OTHER, "10.0.0.99")}, everything) == {
        ip: {} for ip in (C1, C2, N1, RR2, TOR)}


def test_local_route_wins_over_a_learned_one():
    out = routes_out(rr_plan(), [OWN], {OWN: learned(OWN, C1)}, everything)
    assert all(routes[OWN].attrs.next_hop == NODE for routes in out.values())


def test_two_reflectors_of_one_cluster_do_not_re_reflect():
    """RR1 reflects C1's route to RR2 (a non-client in the same cluster): RR2 drops it."""
    rr1 = plan(peer(C1, rr_client=True), peer(RR2), cluster_id=CLUSTER)
    rib1 = Rib(NODE, CLUSTER, AS)
    rib1.peer_up(C1, router_id=C1, peer_as=AS, local_as=AS, restart_time=120)
    rib1.update(C1, {OTHER: PathAttributes(next_hop=C1, local_pref=100)})
    sent = routes_out(rr1, [], rib1.best_paths(), everything, rib1.router_ids())[RR2]
    assert sent[OTHER].attrs.cluster_list == (CLUSTER,)

    rib2 = Rib(RR2, CLUSTER, AS)
    rib2.peer_up(NODE, router_id=NODE, peer_as=AS, local_as=AS, restart_time=120)
    assert rib2.update(NODE, {r.prefix: r.attrs for r in sent.values()}) == set()
    assert rib2.best_paths() == {} and rib2.received_count(NODE) == 0


# -- pools ------------------------------------------------------------------------------

def test_disabled_pool_and_prefixes_outside_every_pool_are_not_sent():
    exportable = pool_exporter([(POOL, False), ("10.66.0.0/16", True)])
    best = {"10.66.1.0/26": learned("10.66.1.0/26", C1), OTHER: learned(OTHER, C1),
            "192.168.5.0/24": learned("192.168.5.0/24", C1)}
    out = routes_out(rr_plan(), [OWN, "10.66.0.0/26", "10.99.0.0/26"], best, exportable)
    assert out[C2] == {OWN: local_ibgp(OWN), OTHER: reflected(OTHER, C1, C1)}
    assert out[TOR] == {OWN: local_ebgp(OWN)}


@pytest.mark.parametrize("prefix, expected", [
    ("10.65.0.0/26", True),
    ("10.65.0.0/16", True),  # the pool itself
    ("10.65.255.7/32", True),
    ("10.65.255.7", True),  # a bare address is a /32
    ("10.64.0.0/14", False),  # wider than the pool
    ("10.66.3.0/26", False),  # disableBGPExport
    ("10.66.9.0/24", True),  # in an exported pool nested in the disabled one
    ("10.67.0.0/26", False),  # outside every pool
    ("fd00::/64", False),
    ("10.65.0.0/33", False),
    ("nonsense", False),
])
def test_pool_exporter(prefix, expected):
    exportable = pool_exporter([(POOL, False), ("10.66.0.0/16", True), ("10.66.9.0/24", False),
                                ("fd00::/48", False)])
    assert exportable(prefix) is expected


# -- diffs ------------------------------------------------------------------------------

def test_diff():
    a, b, c = local_ibgp("10.65.0.0/26"), local_ibgp("10.65.1.0/26"), local_ibgp("10.65.2.0/26")
    b2 = OutRoute(b.prefix, PathAttributes(next_hop="10.0.0.9"))
    old = {"10.0.0.2": {a.prefix: a, b.prefix: b}, "10.0.0.3": {a.prefix: a}, "10.0.0.4": {}}
    new = {"10.0.0.2": {c.prefix: c, b.prefix: b2, a.prefix: a}, "10.0.0.4": {},
           "10.0.0.5": {a.prefix: a}}
    assert diff(old, new) == (
        {"10.0.0.2": [b2, c], "10.0.0.5": [a]},
        {"10.0.0.3": [a.prefix]},
    )
    assert diff(new, new) == ({}, {})


PREFIXES = ["10.65.0.0/26", "10.65.0.64/26", "10.66.0.0/26", "10.65.3.3/32", "10.99.0.0/26"]
SOURCES = [C1, C2, N1, RR2, TOR, "10.0.0.99"]



def random_path(prefix: str, source: str, originator: str | None) -> Path:
    return learned(prefix, source, ebgp=source == TOR, originator_id=originator,
                   cluster_list=("9.9.9.9",) if originator else ())


ribs = st.fixed_dictionaries({}, optional={
    prefix: st.builds(random_path, st.just(prefix), st.sampled_from(SOURCES),
                      st.sampled_from([None, C1, C2, "10.0.0.50"]))
    for prefix in PREFIXES})
states = st.tuples(st.sets(st.sampled_from(PREFIXES)), ribs)


@given(st.booleans(), states, states)
@settings(max_examples=200)
def test_patch_matches_a_full_rebuild_and_diff(reflector, before, after):
    p = rr_plan() if reflector else plan(peer(C1), peer(N1), peer(TOR, peer_as=TOR_AS))
    policy = ExportPolicy(p, pool_exporter([(POOL, False), ("10.66.0.0/16", True)]))
    old = policy.routes_out(*before)
    out = policy.routes_out(*before)
    changed = before[0] ^ after[0] | {
        q for q in before[1].keys() | after[1].keys() if before[1].get(q) != after[1].get(q)}
    announce, withdraw = policy.patch(out, changed, after[0], after[1])
    assert out == policy.routes_out(*after)
    assert ({ip: sorted(rs, key=lambda r: r.prefix) for ip, rs in announce.items()},
            {ip: sorted(ps) for ip, ps in withdraw.items()}) == diff(old, out)
