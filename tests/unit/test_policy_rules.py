"""Per-rule matching, field by field, positive and negated (felix/rules/policy.go)."""

from __future__ import annotations

from typing import Any

import pytest

from policy.evaluate import Flow, PolicyState, members, named_port_members, rule_matches
from policy.model import compile_rule, protocol_number

from .policy_cluster import Cluster

SERVER_PORTS = [{"name": "http", "protocol": "TCP", "port": 8080},
                {"name": "dns", "protocol": "UDP", "port": 53},
                {"name": "web", "protocol": "TCP", "port": 81}]


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    c = Cluster()
    c.namespace("x", team="red")
    c.namespace("y", team="blue")
    c.pod("x/client", "10.65.0.1", {"role": "client"})
    c.pod("x/server", "10.65.0.2", {"role": "server"}, ports=SERVER_PORTS)
    c.pod("y/server", "10.65.1.2", {"role": "server"},
          ports=[{"name": "http", "protocol": "TCP", "port": 9090}])
    c.pod("y/db", "fd00::5", {"role": "db"})
    return c


@pytest.fixture(scope="module")
def state(cluster: Cluster) -> PolicyState:
    web = cluster.network_set("web", ["192.0.2.0/24"], {"kind": "internet"})
    local = cluster.network_set("local", ["172.16.0.0/12"], {"kind": "corp"}, namespace="y")
    return cluster.state(network_sets=[web, local])


def flow(src: str, dst: str, protocol: str | int = "TCP", port: int | None = 80,
         **kwargs: int | None) -> Flow:
    return Flow.of(src, dst, protocol, port, **kwargs)


TCP_80 = flow("10.65.0.1", "10.65.0.2")
UDP_53 = flow("10.65.0.1", "10.65.0.2", "UDP", 53)

# (rule document, flow, matches). Rules are compiled as a NetworkPolicy's in namespace x.
CASES: list[tuple[dict[str, Any], Flow, bool]] = [
    ({"action": "Allow"}, TCP_80, True),
    # protocol / notProtocol, by name (any case) and number
    ({"action": "Allow", "protocol": "TCP"}, TCP_80, True),
    ({"action": "Allow", "protocol": "tcp"}, TCP_80, True),
    ({"action": "Allow", "protocol": 6}, TCP_80, True),
    ({"action": "Allow", "protocol": "UDP"}, TCP_80, False),
    ({"action": "Allow", "protocol": "SCTP"}, flow("10.65.0.1", "10.65.0.2", 132, 80), True),
    ({"action": "Allow", "protocol": "SCTP"}, TCP_80, False),  # SCTP must not allow TCP
    ({"action": "Allow", "protocol": 132}, flow("10.65.0.1", "10.65.0.2", "sctp", 80), True),
    ({"action": "Allow", "notProtocol": "TCP"}, TCP_80, False),
    ({"action": "Allow", "notProtocol": "UDP"}, TCP_80, True),
    ({"action": "Allow", "protocol": "UDPLite"}, flow("10.65.0.1", "10.65.0.2", 136, 5), True),
    # destination ports: single, list, range (both ends), string numbers
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}, TCP_80, True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": [81]}}, TCP_80, False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": [22, "80"]}}, TCP_80, True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["80:81"]}}, TCP_80, True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["70:80"]}}, TCP_80, True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["81:90"]}}, TCP_80, False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"notPorts": [80]}}, TCP_80, False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"notPorts": ["81:90"]}}, TCP_80, True),
    ({"action": "Allow", "protocol": "UDP", "destination": {"ports": [80]}}, TCP_80, False),
    # ports on a flow without ports (ICMP) never match
    ({"action": "Allow", "destination": {"ports": [80]}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=8), False),
    # source ports
    ({"action": "Allow", "protocol": "TCP", "source": {"ports": ["1024:65535"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 80, src_port=40000), True),
    ({"action": "Allow", "protocol": "TCP", "source": {"ports": ["1024:65535"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 80, src_port=80), False),
    ({"action": "Allow", "protocol": "TCP", "source": {"notPorts": [80]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 80, src_port=80), False),
    # named ports resolve on the destination endpoint, by name and protocol
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 8080), True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 80), False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}},
     flow("10.65.0.1", "10.65.1.2", "TCP", 9090), True),  # each endpoint its own number
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http"]}},
     flow("10.65.0.1", "10.65.1.2", "TCP", 8080), False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["dns"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 53), False),  # declared UDP: TCP rule matches nothing
    ({"action": "Allow", "protocol": "UDP", "destination": {"ports": ["dns"]}}, UDP_53, True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["http", 80]}}, TCP_80, True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"ports": ["nosuch"]}}, TCP_80, False),
    # a named port filtered by the rule's selector (the namespace scope included)
    ({"action": "Allow", "protocol": "TCP",
      "destination": {"selector": "role == 'server'", "ports": ["http"]}},
     flow("10.65.0.1", "10.65.1.2", "TCP", 9090), False),  # y/server is outside namespace x
    ({"action": "Allow", "protocol": "TCP",
      "destination": {"namespaceSelector": "all()", "ports": ["http"]}},
     flow("10.65.0.1", "10.65.1.2", "TCP", 9090), True),
    ({"action": "Allow", "protocol": "TCP", "destination": {"notPorts": ["http"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 8080), False),
    ({"action": "Allow", "protocol": "TCP", "destination": {"notPorts": ["http"]}},
     flow("10.65.0.1", "10.65.0.2", "TCP", 81), True),
    # nets / notNets, masked, per family
    ({"action": "Allow", "destination": {"nets": ["10.65.0.0/24"]}}, TCP_80, True),
    ({"action": "Allow", "destination": {"nets": ["10.65.0.77/24"]}}, TCP_80, True),  # masked
    ({"action": "Allow", "destination": {"nets": ["10.66.0.0/16", "10.65.0.2/32"]}}, TCP_80, True),
    ({"action": "Allow", "destination": {"nets": ["10.66.0.0/16"]}}, TCP_80, False),
    ({"action": "Allow", "destination": {"notNets": ["10.65.0.0/24"]}}, TCP_80, False),
    ({"action": "Allow", "destination": {"nets": ["10.65.0.0/16"],
                                         "notNets": ["10.65.0.2/32"]}}, TCP_80, False),
    ({"action": "Allow", "destination": {"nets": ["10.65.0.0/16"],
                                         "notNets": ["10.65.1.0/24"]}}, TCP_80, True),
    ({"action": "Allow", "source": {"nets": ["10.65.0.1"]}}, TCP_80, True),  # bare IP
    # only nets of the other family: the rule is not rendered for IPv4
    ({"action": "Allow", "destination": {"nets": ["fd00::/8"]}}, TCP_80, False),
    ({"action": "Allow", "destination": {"nets": ["fd00::/8", "10.0.0.0/8"]}}, TCP_80, True),
    # a negated catch-all drops the whole rule; a negated v6 net on a v4 flow is ignored
    ({"action": "Allow", "destination": {"notNets": ["0.0.0.0/0"]}}, TCP_80, False),
    ({"action": "Allow", "destination": {"notNets": ["fd00::/8"]}}, TCP_80, True),
    # selectors (scoped to namespace x), notSelector (unscoped), namespaceSelector
    ({"action": "Allow", "destination": {"selector": "role == 'server'"}}, TCP_80, True),
    ({"action": "Allow", "destination": {"selector": "role == 'server'"}},
     flow("10.65.0.1", "10.65.1.2"), False),  # y/server: other namespace
    ({"action": "Allow", "destination": {"selector": "role == 'db'"}}, TCP_80, False),
    ({"action": "Allow", "destination": {"selector": "all()"}}, TCP_80, True),
    ({"action": "Allow", "destination": {"notSelector": "role == 'server'"}}, TCP_80, False),
    ({"action": "Allow", "destination": {"notSelector": "role == 'client'"}}, TCP_80, True),
    # notSelector alone still limits to the namespace
    ({"action": "Allow", "destination": {"notSelector": "role == 'client'"}},
     flow("10.65.0.1", "10.65.1.2"), False),
    ({"action": "Allow", "destination": {"namespaceSelector": "team == 'blue'"}},
     flow("10.65.0.1", "10.65.1.2"), True),
    ({"action": "Allow", "destination": {"namespaceSelector": "team == 'blue'"}}, TCP_80, False),
    ({"action": "Allow", "destination": {"namespaceSelector": "global()"}}, TCP_80, False),
    # selectors never match an address that is not an endpoint or in a network set...
    ({"action": "Allow", "destination": {"namespaceSelector": "all()"}},
     flow("10.65.0.1", "198.51.100.1"), False),
    # (in a namespaced policy even notSelector alone limits the rule to endpoints of x)
    ({"action": "Allow", "destination": {"notSelector": "has(role)"}},
     flow("10.65.0.1", "198.51.100.1"), False),
    ({"action": "Allow", "destination": {"selector": "all()", "namespaceSelector": "all()"}},
     flow("10.65.0.1", "198.51.100.1"), False),
    # ...unless a network set holds it: a GlobalNetworkSet by a global() namespace selector
    ({"action": "Allow", "destination": {"namespaceSelector": "global()",
                                         "selector": "kind == 'internet'"}},
     flow("10.65.0.1", "192.0.2.9"), True),
    ({"action": "Allow", "destination": {"selector": "kind == 'internet'"}},
     flow("10.65.0.1", "192.0.2.9"), False),  # namespaced rule: x only
    ({"action": "Allow", "destination": {"namespaceSelector": "team == 'blue'",
                                         "selector": "kind == 'corp'"}},
     flow("10.65.0.1", "172.16.5.5"), True),  # a NetworkSet inherits its namespace's labels
    # a services match (Kubernetes Services are not modelled) matches nothing
    ({"action": "Allow", "destination": {"services": {"name": "dns", "namespace": "x"}}},
     TCP_80, False),
    # serviceAccounts
    ({"action": "Allow", "source": {"serviceAccounts": {"names": ["robot"]}}}, TCP_80, False),
    # ICMP type / code, notICMP, ipVersion
    ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=8, icmp_code=0), True),
    ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=8, icmp_code=0), True),
    ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 8, "code": 1}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=8, icmp_code=0), False),
    ({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 0}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=8, icmp_code=0), False),
    ({"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=8, icmp_code=0), False),
    ({"action": "Allow", "protocol": "ICMP", "notICMP": {"type": 8}},
     flow("10.65.0.1", "10.65.0.2", "ICMP", None, icmp_type=3, icmp_code=1), True),
    ({"action": "Allow", "protocol": "ICMP"}, TCP_80, False),
    ({"action": "Allow", "protocol": "ICMPv6", "icmp": {"type": 128}},
     flow("fd00::1", "fd00::5", "ICMPv6", None, icmp_type=128, icmp_code=0), True),
    ({"action": "Allow", "ipVersion": 4}, TCP_80, True),
    ({"action": "Allow", "ipVersion": 6}, TCP_80, False),
    ({"action": "Allow", "ipVersion": 6, "destination": {"nets": ["fd00::/8"]}},
     flow("fd00::1", "fd00::5"), True),
]


@pytest.mark.parametrize(("doc", "packet", "expected"), CASES,
                         ids=[f"{i}:{doc}" for i, (doc, _, _) in enumerate(CASES)])
def test_rule_matches(state: PolicyState, doc: dict[str, Any], packet: Flow,
                      expected: bool) -> None:
    assert rule_matches(compile_rule(0, doc, "x"), packet, state) is expected


def test_not_selector_matches_non_endpoints_in_a_global_policy(state: PolicyState) -> None:
    # The API's own example: notSelector "has(my_label)" accepts packets from non-Calico
    # sources, where selector "!has(my_label)" is limited to Calico endpoints.
    not_selector = compile_rule(0, {"action": "Allow", "source": {"notSelector": "has(role)"}},
                                None)
    negated = compile_rule(0, {"action": "Allow", "source": {"selector": "!has(role)"}}, None)
    outside = flow("198.51.100.1", "10.65.0.2")
    assert rule_matches(not_selector, outside, state)
    assert not rule_matches(negated, outside, state)
    assert not rule_matches(not_selector, TCP_80, state)


def test_service_account_match(cluster: Cluster) -> None:
    robot = cluster.pod("x/robot", "10.65.0.9", service_account="robot")
    state = cluster.state()
    rule = compile_rule(0, {"action": "Allow",
                            "source": {"serviceAccounts": {"names": ["robot", "other"]}}}, "x")
    assert rule_matches(rule, flow(str(robot.ips[0]), "10.65.0.2"), state)
    assert not rule_matches(rule, TCP_80, state)
    del cluster.pods["x/robot"]


def test_protocol_numbers() -> None:
    assert [protocol_number(p) for p in ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")] == [
        6, 17, 1, 58, 132, 136]
    assert protocol_number("17") == 17
    for bad in ("bogus", 0, 256):
        with pytest.raises(ValueError):
            protocol_number(bad)


def test_members_and_named_port_members(cluster: Cluster, state: PolicyState) -> None:
    rule = compile_rule(0, {"action": "Allow", "destination": {"selector": "role == 'server'"}},
                        "x")
    selector = rule.destination.selector
    assert selector is not None
    assert members(selector, state.endpoints, state.network_sets) == {"10.65.0.2"}
    every = compile_rule(0, {"action": "Allow", "destination": {"namespaceSelector": "all()"}},
                         None).destination.selector
    assert every is not None
    assert members(every, state.endpoints, state.network_sets) == {
        "10.65.0.1", "10.65.0.2", "10.65.1.2", "fd00::5", "172.16.0.0/12"}
    assert named_port_members(None, "http", 6, state.endpoints) == {
        (cluster.pods["x/server"].ips[0], 6, 8080), (cluster.pods["y/server"].ips[0], 6, 9090)}
    assert named_port_members(selector, "http", 6, state.endpoints) == {
        (cluster.pods["x/server"].ips[0], 6, 8080)}
    assert named_port_members(None, "dns", 6, state.endpoints) == set()
    assert len(named_port_members(None, "dns", None, state.endpoints)) == 1


def test_members_drop_what_a_wider_member_covers(cluster: Cluster) -> None:
    inside = cluster.network_set("inside", ["10.65.0.0/16", "10.65.3.0/24", "fd00::/64",
                                            "192.0.2.7/32", "0.0.0.0/1"], {"kind": "corp"})
    state = cluster.state(network_sets=[inside])
    every = compile_rule(0, {"action": "Allow", "destination": {"selector": "all()"}},
                         None).destination.selector
    assert every is not None
    assert members(every, state.endpoints, state.network_sets) == {
        "0.0.0.0/1", "fd00::/64", "192.0.2.7"}


def test_endpoint_labels_as_felix_sees_them() -> None:
    c = Cluster()
    c.namespace("x", team="red")
    ep = c.pod("x/sneaky", "10.65.0.50",
               {"pcns.team": "blue", "pcsa.role": "admin", "projectcalico.org/namespace": "y",
                "app": "web", "pcns.projectcalico.org/name": "y"}, service_account="robot")
    assert dict(ep.labels) == {
        "app": "web", "projectcalico.org/namespace": "x",
        "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "robot",
        "pcns.team": "red", "pcns.projectcalico.org/name": "x"}
    assert hash(ep) == hash(c.pod("x/sneaky", "10.65.0.50", {"app": "web"},
                                  service_account="robot"))
    with pytest.raises(TypeError):
        ep.labels["app"] = "db"
