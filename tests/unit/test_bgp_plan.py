"""bgp.plan: Calico's peering rules on real resource models; bgp.secrets: mounted secrets."""

from __future__ import annotations

import random

import pytest

from bgp.plan import clamp_hold_time, duration_seconds, hashed_router_id, plan_node
from bgp.secrets import DEFAULT_DIR, ENV_VAR, SecretsDir
from bgp.types import GLOBAL, MESH, NODE_SPECIFIC, NodePlan
from datastore.resources import parse_document
from datastore.resources.bgp import SecretKeyRef

API = "projectcalico.org/v3"


def node(name, ip=None, labels=None, **bgp):
    spec = {"bgp": {"ipv4Address": ip, **bgp}} if ip or bgp else {}
    return parse_document({"apiVersion": API, "kind": "Node",
                           "metadata": {"name": name, "labels": labels or {}}, "spec": spec})


def peer(name, **spec):
    return parse_document({"apiVersion": API, "kind": "BGPPeer", "metadata": {"name": name},
                           "spec": spec})


def config(name="default", **spec):
    return parse_document({"apiVersion": API, "kind": "BGPConfiguration",
                           "metadata": {"name": name}, "spec": spec})


def secret(name="bgp", key="pw"):
    return {"secretKeyRef": {"name": name, "key": key}}


def nodes_of(*nodes):
    return {n.name: n for n in nodes}


def configs_of(*configs):
    return {c.name: c for c in configs}


def plan(nodename, nodes, peers=(), configs=(), secrets=None, **kw):
    known = secrets or {}
    return plan_node(nodename, nodes_of(*nodes), list(peers), configs_of(*configs),
                     password_for=lambda ref: known.get((ref.name, ref.key)), **kw)


def by_name(p: NodePlan):
    return {pp.name: pp for pp in p.peers}


FOUR = (node("n1", "10.0.0.9/24"), node("n2", "10.0.0.10/24"), node("n3", "10.0.0.2/24"),
        node("n4", "10.0.0.30/24"))


# -- identity and the mesh --------------------------------------------------------------


def test_identity_defaults():
    p = plan("n1", FOUR)
    assert (p.node, p.node_ip, p.router_id) == ("n1", "10.0.0.9", "10.0.0.9")
    assert p.listen_address is None  # bindMode None, Calico's default: every address
    assert (p.local_as, p.listen_port, p.cluster_id, p.problems) == (64512, 179, None, ())


# confd/pkg/backends/calico/bgp_processor.go getBindMode and its tests
# (bgp_processor_test.go TestPopulateNodeConfig_BindModeNodeIP_IPv4, _NoBindMode): the
# listen address is the node IP only for the global configuration's bindMode NodeIP.
@pytest.mark.parametrize("configs,listen_address", [
    ((), None),
    ((config(),), None),
    ((config(bindMode="None"),), None),
    ((config(bindMode="NodeIP"),), "10.0.0.9"),
    ((config(bindMode="NodeIP", listenPort=1790),), "10.0.0.9"),
    # confd reads bindMode from the global configuration only
    ((config("node.n1", bindMode="NodeIP"),), None),
    ((config(bindMode="NodeIP"), config("node.n1", bindMode="None")), "10.0.0.9"),
])
def test_bind_mode_sets_the_listen_address(configs, listen_address):
    p = plan("n1", FOUR, configs=configs)
    assert p.listen_address == listen_address
    assert p.listen_port == (1790 if any(c.spec.listenPort for c in configs) else 179)


@pytest.mark.parametrize("name,expected", [
    ("Testrobin123", "207.94.5.27"),  # 239.94.5.27 moved out of multicast
    ("nodeTest", "109.174.215.226"),
])
def test_hashed_router_id_matches_confd(name, expected):
    # confd's own vectors (confd/pkg/resource/template/template_funcs_test.go)
    assert hashed_router_id(name) == expected


def test_router_id_from_calico_router_id():
    assert plan("n1", FOUR, router_id="10.9.9.9").router_id == "10.9.9.9"
    hashed = plan("n1", FOUR, router_id="hash")
    assert hashed.router_id == hashed_router_id("n1") and hashed.node_ip == "10.0.0.9"


def test_mesh_of_four_peers_with_everyone_else_passive_by_string_compare():
    p = plan("n1", FOUR)
    assert list(by_name(p)) == ["Mesh_10_0_0_10", "Mesh_10_0_0_2", "Mesh_10_0_0_30"]
    # "10.0.0.10" < "10.0.0.9" as strings, although 10 > 9: n1 connects to n2.
    assert {pp.peer_ip: pp.passive for pp in p.peers} == {
        "10.0.0.10": False, "10.0.0.2": False, "10.0.0.30": False}
    m = by_name(p)["Mesh_10_0_0_10"]
    assert (m.peer_type, m.peer_as, m.local_as, m.peer_port, m.local_address, m.peer_node,
            m.hold_time, m.restart_time, m.password, m.rr_client) == (
        MESH, 64512, 64512, 179, "10.0.0.9", "n2", 240, None, None, False)
    # n1 has the greatest string, so it is never passive; the others wait for it.
    assert {pp.peer_ip: pp.passive for pp in plan("n4", FOUR).peers} == {
        "10.0.0.9": True, "10.0.0.10": False, "10.0.0.2": False}


def test_every_node_to_node_session_has_exactly_one_active_side():
    plans = {n.name: plan(n.name, FOUR) for n in FOUR}
    for a, pa in plans.items():
        for pp in pa.peers:
            back = next(q for q in plans[pp.peer_node].peers if q.peer_ip == pa.node_ip)
            assert pp.passive != back.passive, (a, pp.peer_node)


@pytest.mark.parametrize("spec, expected", [
    ({"nodeToNodeMeshEnabled": False}, []),
    ({"nodeToNodeMeshEnabled": True}, ["Mesh_10_0_0_10", "Mesh_10_0_0_2", "Mesh_10_0_0_30"]),
    ({}, ["Mesh_10_0_0_10", "Mesh_10_0_0_2", "Mesh_10_0_0_30"]),
])
def test_mesh_switch(spec, expected):
    assert list(by_name(plan("n1", FOUR, configs=[config(**spec)]))) == expected


def test_mesh_skips_nodes_without_ipv4_and_plans_nothing_for_a_node_without_one():
    nodes = (*FOUR, node("bare"))
    assert "bare" not in {pp.peer_node for pp in plan("n1", nodes).peers}
    assert plan("bare", nodes) is None
    assert plan("ghost", nodes) is None


def test_per_node_as_and_listen_ports():
    nodes = (node("n1", "10.0.0.9/24", asNumber=65001), node("n2", "10.0.0.10/24"),
             node("n3", "10.0.0.2/24", asNumber=65003))
    cfgs = [config(asNumber=64600, listenPort=1790), config("node.n3", listenPort=1793),
            config("node.n1", listenPort=1791)]
    p = plan("n1", nodes, configs=cfgs)
    assert (p.local_as, p.listen_port) == (65001, 1791)
    ps = by_name(p)
    assert (ps["Mesh_10_0_0_10"].peer_as, ps["Mesh_10_0_0_10"].peer_port) == (64600, 1790)
    assert (ps["Mesh_10_0_0_2"].peer_as, ps["Mesh_10_0_0_2"].peer_port) == (65003, 1793)
    assert all(pp.local_as == 65001 for pp in p.peers)
    assert plan("n2", nodes, configs=cfgs).local_as == 64600  # global AS


def test_mesh_password_and_restart_time():
    cfg = config(nodeMeshPassword=secret("mesh", "pw"), nodeMeshMaxRestartTime="1m30s")
    p = plan("n1", FOUR, configs=[cfg], secrets={("mesh", "pw"): "s3cret"})
    assert {(pp.password, pp.restart_time) for pp in p.peers} == {("s3cret", 90)}
    missing = plan("n1", FOUR, configs=[cfg])
    assert missing.peers == ()
    assert missing.problems == ("BGPConfiguration default nodeMeshPassword: secret mesh/pw "
                                "not found; node-to-node mesh peers left out (never connect "
                                "without the password)",)


# -- route reflectors ---------------------------------------------------------------------

RR_NODES = (
    node("rr1", "10.0.0.1/24", {"route-reflector": "true"}, routeReflectorClusterID="224.0.0.1"),
    node("rr2", "10.0.0.3/24", {"route-reflector": "true"}, routeReflectorClusterID="224.0.0.1"),
    node("c1", "10.0.0.11/24"), node("c2", "10.0.0.12/24"),
)
RR_PEER = peer("peer-with-route-reflectors", nodeSelector="all()",
               peerSelector="route-reflector == 'true'")
NO_MESH = config(nodeToNodeMeshEnabled=False)


def test_rr_clients_peer_with_both_reflectors():
    p = plan("c1", RR_NODES, [RR_PEER], [NO_MESH])
    assert p.cluster_id is None
    assert [(pp.name, pp.peer_type, pp.peer_node, pp.peer_cluster_id, pp.rr_client)
            for pp in p.peers] == [
        ("Node_10_0_0_1", NODE_SPECIFIC, "rr1", "224.0.0.1", False),
        ("Node_10_0_0_3", NODE_SPECIFIC, "rr2", "224.0.0.1", False)]


def test_reflectors_peer_back_with_clients_as_rr_clients_and_with_each_other_as_plain_ibgp():
    p = plan("rr1", RR_NODES, [RR_PEER], [NO_MESH])
    assert p.cluster_id == "224.0.0.1"
    assert {pp.name: (pp.peer_node, pp.rr_client) for pp in p.peers} == {
        "Node_10_0_0_11": ("c1", True), "Node_10_0_0_12": ("c2", True),
        "Node_10_0_0_3": ("rr2", False)}


def test_rr_sessions_are_symmetric_with_one_active_side():
    plans = {n.name: plan(n.name, RR_NODES, [RR_PEER], [NO_MESH]) for n in RR_NODES}
    pairs = {(a, pp.peer_node) for a, p in plans.items() for pp in p.peers}
    assert pairs == {(b, a) for a, b in pairs}
    for a, p in plans.items():
        for pp in p.peers:
            back = next(q for q in plans[pp.peer_node].peers if q.peer_node == a)
            assert pp.passive != back.passive


def test_reflectors_stay_in_the_mesh_while_it_is_on():
    # A tortie deviation from confd (make-before-break, F15): a cluster id alone
    # changes no session; the mesh goes only when it is turned off.
    assert {(pp.peer_node, pp.peer_type, pp.rr_client) for pp in plan("rr1", RR_NODES).peers} \
        == {("rr2", MESH, False), ("c1", MESH, False), ("c2", MESH, False)}
    assert {pp.peer_node for pp in plan("c1", RR_NODES).peers} == {"rr1", "rr2", "c2"}


def test_moving_to_reflectors_keeps_every_session_address_and_its_settings():
    # Mesh on with the BGPPeer: each mesh session to a reflector becomes the BGPPeer's
    # session to the same address with the same ExaBGP settings (so it is not reset);
    # turning the mesh off then only removes client-to-client sessions.
    def sessions(p):
        return {pp.peer_ip: (pp.peer_as, pp.passive, pp.hold_time, pp.restart_time)
                for pp in p.peers}
    for name in ("rr1", "c1"):
        meshed = plan(name, RR_NODES)
        both = plan(name, RR_NODES, [RR_PEER])
        after = plan(name, RR_NODES, [RR_PEER], [NO_MESH])
        assert sessions(both) == sessions(meshed)
        assert sessions(after).items() <= sessions(both).items()


def test_reverse_peering_manual_leaves_the_far_side_alone():
    manual = peer("to-rr", nodeSelector="all()", peerSelector="route-reflector == 'true'",
                  reversePeering="Manual")
    assert {pp.peer_node for pp in plan("rr1", RR_NODES, [manual], [NO_MESH]).peers} == {"rr2"}


def test_a_different_cluster_id_makes_a_reflector_a_client():
    nodes = (RR_NODES[0], node("rr9", "10.0.0.3/24", {"route-reflector": "true"},
                               routeReflectorClusterID="224.0.0.9"))
    [pp] = plan("rr1", nodes, [RR_PEER], [NO_MESH]).peers
    assert (pp.peer_node, pp.rr_client) == ("rr9", True)


# -- BGPPeers -----------------------------------------------------------------------------

TOR = peer("tor", peerIP="10.0.0.254:1179", asNumber=65000)


def test_global_peer_with_port():
    p = plan("n1", FOUR, [TOR], [NO_MESH])
    [pp] = p.peers
    assert (pp.name, pp.peer_type, pp.peer_ip, pp.peer_port, pp.peer_as, pp.local_as, pp.passive,
            pp.peer_node, pp.local_address, pp.ebgp) == (
        "Global_10_0_0_254_port_1179", GLOBAL, "10.0.0.254", 1179, 65000, 64512, False, None,
        "10.0.0.9", True)
    assert [q.name for q in plan("n3", FOUR, [TOR], [NO_MESH]).peers] == [pp.name]


@pytest.mark.parametrize("spec", [
    {"node": "n1"},
    {"nodeSelector": "rack == 'a'"},
    {"nodeSelector": "has(rack) && rack in {'a', 'b'}"},
])
def test_node_specific_peer(spec):
    nodes = (node("n1", "10.0.0.9/24", {"rack": "a"}), node("n2", "10.0.0.10/24", {"rack": "c"}))
    tor = peer("rack-a", peerIP="10.0.0.1", asNumber=65001, **spec)
    [pp] = plan("n1", nodes, [tor], [NO_MESH]).peers
    assert (pp.name, pp.peer_type, pp.peer_port) == ("Node_10_0_0_1", NODE_SPECIFIC, 179)
    assert plan("n2", nodes, [tor], [NO_MESH]).peers == ()


def test_node_specific_duplicate_of_a_global_peering_is_skipped():
    dup = peer("a-tor", node="n1", peerIP="10.0.0.254:1179", asNumber=65000, ttlSecurity=2)
    p = plan("n1", FOUR, [dup, TOR], [NO_MESH])
    assert [(pp.name, pp.ttl_security) for pp in p.peers] == [
        ("Global_10_0_0_254_port_1179", None)]
    assert p.problems == ()


def test_second_session_to_one_ip_on_another_port_is_a_problem():
    other = peer("b-tor", node="n1", peerIP="10.0.0.254", asNumber=65000)
    p = plan("n1", FOUR, [TOR, other], [NO_MESH])
    assert [pp.name for pp in p.peers] == ["Global_10_0_0_254_port_1179"]
    assert p.problems == ("BGPPeer b-tor: peering Node_10_0_0_254 left out: 10.0.0.254 already "
                          "has session Global_10_0_0_254_port_1179",)


def test_explicit_peering_wins_over_the_mesh():
    to_n2 = peer("to-n2", node="n1", peerIP="10.0.0.10", asNumber=64512, ttlSecurity=1)
    p = plan("n1", FOUR, [to_n2])
    ps = by_name(p)
    assert "Mesh_10_0_0_10" not in ps and p.problems == ()
    n2 = ps["Node_10_0_0_10"]
    # another node: passive by the string rule, identified as that node
    assert (n2.peer_node, n2.passive, n2.ttl_security) == ("n2", False, 1)


def test_peer_ip_of_a_node_creates_the_reverse_peering_there():
    to_n2 = peer("to-n2", node="n1", peerIP="10.0.0.10", asNumber=64512, keepaliveTime="20s")
    p = plan("n2", FOUR, [to_n2], [NO_MESH])
    [pp] = p.peers
    assert (pp.name, pp.peer_node, pp.peer_as, pp.hold_time, pp.passive) == (
        "Node_10_0_0_9", "n1", 64512, 60, True)
    wrong_as = peer("to-n2", node="n1", peerIP="10.0.0.10", asNumber=65000)
    assert plan("n2", FOUR, [wrong_as], [NO_MESH]).peers == ()


def test_global_peer_selector_and_its_reverse():
    nodes = (*FOUR[:3], node("edge", "10.0.0.30/24", {"edge": "yes"}, asNumber=65030))
    to_edge = peer("to-edge", peerSelector="has(edge)")
    ps = by_name(plan("n1", nodes, [to_edge], [NO_MESH]))
    assert list(ps) == ["Global_10_0_0_30"]
    assert (ps["Global_10_0_0_30"].peer_as, ps["Global_10_0_0_30"].ebgp) == (65030, True)
    back = plan("edge", nodes, [to_edge], [NO_MESH])
    assert [(pp.name, pp.peer_as, pp.local_as) for pp in back.peers] == [
        ("Node_10_0_0_10", 64512, 65030), ("Node_10_0_0_2", 64512, 65030),
        ("Node_10_0_0_9", 64512, 65030)]


def test_selected_peer_listen_port_is_explicit_in_the_name():
    to_edge = peer("to-edge", peerSelector="has(edge)")
    nodes = (FOUR[0], node("edge", "10.0.0.30/24", {"edge": "yes"}))
    [pp] = plan("n1", nodes, [to_edge], [NO_MESH, config("node.edge", listenPort=1179)]).peers
    assert (pp.name, pp.peer_port) == ("Global_10_0_0_30_port_1179", 1179)


def test_local_as_number_overrides_for_that_peer_and_is_the_reverse_sides_peer_as():
    to_n2 = peer("to-n2", node="n1", peerIP="10.0.0.10", asNumber=64512, localASNumber=65099)
    [pp] = plan("n1", FOUR, [to_n2], [NO_MESH]).peers
    assert (pp.local_as, pp.peer_as, pp.ebgp) == (65099, 64512, True)
    sel = peer("sel", node="n1", peerSelector="all()", localASNumber=65099)
    back = by_name(plan("n2", FOUR, [sel], [NO_MESH]))["Node_10_0_0_9"]
    assert (back.local_as, back.peer_as) == (64512, 65099)


def test_never_peer_with_yourself():
    me = peer("me", peerIP="10.0.0.9", asNumber=64512)
    assert "10.0.0.9" not in {pp.peer_ip for pp in plan("n1", FOUR, [me]).peers}
    assert plan("n1", FOUR, [peer("all", peerSelector="all()")], [NO_MESH]).problems == ()


# -- session settings ------------------------------------------------------------------------


def test_passwords_resolved_or_peer_left_out_with_a_problem():
    tor = peer("tor", peerIP="10.0.0.254", asNumber=65000, password=secret("tor-secret", "pw"))
    p = plan("n1", FOUR, [tor], [NO_MESH], secrets={("tor-secret", "pw"): "s3cret"})
    assert [pp.password for pp in p.peers] == ["s3cret"]
    missing = plan("n1", FOUR, [tor], [NO_MESH])
    assert missing.peers == ()
    assert missing.problems == ("BGPPeer tor: secret tor-secret/pw not found; peer "
                                "Global_10_0_0_254 left out (never connect without the password)",)
    empty = plan("n1", FOUR, [tor], [NO_MESH], secrets={("tor-secret", "pw"): ""})
    assert empty.peers == () and "is empty" in empty.problems[0]
    long = plan("n1", FOUR, [tor], [NO_MESH], secrets={("tor-secret", "pw"): "x" * 81})
    assert long.peers == () and "longer than 80 bytes" in long.problems[0]


def test_missing_password_on_an_explicit_node_peering_does_not_fall_back_to_the_mesh():
    to_n2 = peer("to-n2", node="n1", peerIP="10.0.0.10", asNumber=64512,
                 password=secret("n2", "pw"))
    p = plan("n1", FOUR, [to_n2])
    assert "10.0.0.10" not in {pp.peer_ip for pp in p.peers}
    assert len(p.problems) == 1


@pytest.mark.parametrize("spec, field, expected", [
    ({"ttlSecurity": 1}, "ttl_security", 1),
    ({"ttlSecurity": 0}, "ttl_security", None),
    ({"keepaliveTime": "10s"}, "hold_time", 30),
    ({"keepaliveTime": "1m"}, "hold_time", 180),
    ({"keepaliveTime": "500ms"}, "hold_time", 3),
    ({"keepaliveTime": "100ms"}, "hold_time", 3),
    ({"keepaliveTime": "1m0.5s"}, "hold_time", 182),
    ({"keepaliveTime": "0s"}, "hold_time", 0),
    ({}, "hold_time", 240),
    ({"maxRestartTime": "2m"}, "restart_time", 120),
    ({"maxRestartTime": "1h30m"}, "restart_time", 4095),
    ({"maxRestartTime": "0s"}, "restart_time", 1),
    ({"sourceAddress": "None"}, "local_address", None),
    ({"sourceAddress": "UseNodeIP"}, "local_address", "10.0.0.9"),
    ({"nextHopMode": "Self"}, "next_hop_mode", "Self"),
    ({"keepOriginalNextHop": True}, "next_hop_mode", "Keep"),
    ({"keepOriginalNextHop": True, "asNumber": 64512}, "next_hop_mode", "Auto"),  # iBGP
])
def test_session_settings(spec, field, expected):
    tor = peer("tor", **{"peerIP": "10.0.0.254", "asNumber": 65000, **spec})
    [pp] = plan("n1", FOUR, [tor], [NO_MESH]).peers
    assert getattr(pp, field) == expected


def test_hold_time_argument_is_clamped():
    assert {pp.hold_time for pp in plan("n1", FOUR, hold_time=1).peers} == {3}
    assert {pp.hold_time for pp in plan("n1", FOUR, hold_time=90).peers} == {90}
    assert [clamp_hold_time(n) for n in (-1, 0, 2, 3, 70000)] == [0, 0, 3, 3, 65535]
    assert [duration_seconds(t) for t in ("120s", "2m", "1h30m", "1.5s", "250ms")] == [
        120, 120, 5400, 2, 0]


def test_ipv6_peer_is_a_problem():
    v6 = peer("v6", peerIP="[fd00::1]:179", asNumber=65000)
    p = plan("n1", FOUR, [v6], [NO_MESH])
    assert p.peers == ()
    assert p.problems == ("BGPPeer v6: peer [fd00::1]:179: IPv6 peering is not supported yet",)


def test_equal_inputs_give_equal_plans_whatever_their_order():
    peers = [RR_PEER, TOR, peer("x", node="c1", peerIP="10.0.0.77", asNumber=65077)]
    first = plan("c1", RR_NODES, peers, [NO_MESH])
    rng = random.Random(7)
    for _ in range(5):
        nodes, ps = list(RR_NODES), list(peers)
        rng.shuffle(nodes)
        rng.shuffle(ps)
        assert plan("c1", nodes, ps, [NO_MESH]) == first
    assert [pp.name for pp in first.peers] == sorted(pp.name for pp in first.peers)


# -- secrets ---------------------------------------------------------------------------------


def test_secrets_dir_reads_mounted_keys(tmp_path):
    (tmp_path / "tor").mkdir()
    (tmp_path / "tor" / "pw").write_text("s3cret\n\n")
    (tmp_path / "tor" / "plain").write_text("abc")
    secrets = SecretsDir(tmp_path)
    assert secrets(SecretKeyRef(name="tor", key="pw")) == "s3cret\n"  # one newline only
    assert secrets.password_for(SecretKeyRef(name="tor", key="plain")) == "abc"
    assert secrets(SecretKeyRef(name="tor", key="nope")) is None
    assert secrets(SecretKeyRef(name="gone", key="pw")) is None
    assert secrets(SecretKeyRef(name="..", key="pw")) is None
    assert secrets(SecretKeyRef(name="tor", key="../tor/pw")) is None


def test_secrets_dir_from_env(tmp_path):
    assert SecretsDir.from_env({}).path.as_posix() == DEFAULT_DIR
    assert SecretsDir.from_env({ENV_VAR: str(tmp_path)}).path == tmp_path


def test_secrets_feed_the_plan(tmp_path):
    (tmp_path / "bgp").mkdir()
    (tmp_path / "bgp" / "pw").write_text("s3cret\n")
    tor = peer("tor", peerIP="10.0.0.254", asNumber=65000, password=secret())
    p = plan_node("n1", nodes_of(*FOUR), [tor], configs_of(NO_MESH),
                  password_for=SecretsDir(tmp_path))
    assert [pp.password for pp in p.peers] == ["s3cret"]


def test_peer_ip_of_a_node_dials_its_configured_listen_port():
    to_n2 = peer("to-n2", node="n1", peerIP="10.0.0.10", asNumber=64512)
    cfgs = [NO_MESH, config("node.n2", listenPort=1790)]
    [pp] = plan("n1", FOUR, [to_n2], cfgs).peers
    assert (pp.name, pp.peer_port, pp.peer_node) == ("Node_10_0_0_10_port_1790", 1790, "n2")
    # on n2 the reverse matches, because the peerIP has no port to disagree with 1790
    assert [q.name for q in plan("n2", FOUR, [to_n2], cfgs).peers] == ["Node_10_0_0_9"]
    wrong_port = peer("to-n2", node="n1", peerIP="10.0.0.10:1791", asNumber=64512)
    assert plan("n2", FOUR, [wrong_port], cfgs).peers == ()
