"""`ctl explain` without a datastore (ctl/explain.py): option parsing, FROM/TO resolution,
the flow, and both output forms over resources parsed from manifests."""

from __future__ import annotations

import ipaddress
import json

import pytest

from ctl.common import CtlFailure
from ctl.explain import (
    EXPLAIN_KINDS,
    Explainer,
    FlowSpec,
    Party,
    build_flow,
    flow_spec,
    format_json,
    format_verdict,
    host_addresses,
    parse_port,
    read_cluster,
)
from ctl.main import main
from datastore.resources import Node, Resource
from policy.evaluate import Flow, evaluate
from policy.model import EndpointToHostAction, compile_state

from .explain_cluster import (
    ALLOW_FROM_Y,
    CLUSTER,
    DENY_ICMP_GLOBAL,
    DENY_INGRESS_X,
    IP,
    NODE1,
    NODE2,
    OUTSIDE,
    SECURITY_TIER,
    resources,
)

BASE = resources(CLUSTER)
EXPLAINER = Explainer(BASE)
HOSTS = host_addresses(r for r in BASE if isinstance(r, Node))
TCP, UDP, ICMP, ICMPV6 = 6, 17, 1, 58
HTTP = FlowSpec(TCP, 80)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# --- options --------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("80", (80, None)), ("80/TCP", (80, TCP)), ("53/udp", (53, UDP)), ("9/sctp", (9, 132)),
    ("65535/17", (65535, UDP)),
])
def test_parse_port(text: str, expected: tuple[int, int | None]) -> None:
    assert parse_port(text) == expected


@pytest.mark.parametrize("text, message", [
    ("http", "invalid port 'http': want PORT or PORT/PROTOCOL, PORT 1-65535"),
    ("0", "invalid port '0'"), ("65536/TCP", "invalid port '65536/TCP'"),
    ("80/", "invalid port '80/': no protocol after '/'"),
    ("80/tcpx", "invalid port '80/tcpx': protocol 'tcpx': unknown protocol 'tcpx'"),
])
def test_bad_ports(text: str, message: str) -> None:
    with pytest.raises(CtlFailure, match="^" + message.replace("(", r"\(")):
        parse_port(text)


def test_flow_spec_defaults_and_protocols() -> None:
    assert flow_spec() == FlowSpec(TCP)  # TCP, no port: rules naming ports do not match
    assert flow_spec(port="80") == FlowSpec(TCP, 80)
    assert flow_spec(port="53/udp") == FlowSpec(UDP, 53)
    assert flow_spec(port="53/UDP", protocol="udp") == FlowSpec(UDP, 53)
    assert flow_spec(protocol="udp") == FlowSpec(UDP)
    assert flow_spec(protocol="132", port="9", source_port=5000) == FlowSpec(132, 9, 5000)
    assert flow_spec(protocol="ICMP", icmp_type=8, icmp_code=0) == FlowSpec(ICMP, None, None, 8, 0)
    assert flow_spec(protocol="icmpv6", icmp_type=128).ip_version == 6
    assert flow_spec(protocol="47").protocol == 47


@pytest.mark.parametrize("kwargs, message", [
    ({"port": "80/UDP", "protocol": "TCP"},
     "--port 80/UDP and --protocol TCP name different protocols"),
    ({"protocol": "ICMP", "port": "80"}, "ICMP has no ports"),
    ({"protocol": "47", "source_port": 9}, "protocol 47 has no ports"),
    ({"protocol": "ICMP", "icmp_code": 0}, "--icmp-code needs --icmp-type"),
    ({"protocol": "UDP", "icmp_type": 8}, "--icmp-type is for --protocol ICMP or ICMPv6, not UDP"),
    ({"icmp_type": 8}, "--icmp-type is for --protocol ICMP or ICMPv6, not TCP"),
    ({"protocol": "banana"}, "invalid protocol 'banana': unknown protocol 'banana'"),
    ({"protocol": "256"}, "invalid protocol '256': protocol number 256 is not between 1 and 255"),
])
def test_bad_flow_options(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CtlFailure) as err:
        flow_spec(**kwargs)  # type: ignore[arg-type]
    assert str(err.value).startswith(message)


# --- FROM and TO -----------------------------------------------------------------------


def test_host_addresses_come_from_the_nodes() -> None:
    assert HOSTS == {"node1": frozenset({ip(NODE1), ip("10.65.0.1")}),
                     "node2": frozenset({ip(NODE2)})}


@pytest.mark.parametrize("text, namespace, name, endpoint", [
    ("x/a", None, "x/a", "x/node1-k8s-a-eth0"),                 # namespace/pod
    ("y/a", None, "y/a", "y/node2-k8s-a-eth0"),
    ("a", "y", "y/a", "y/node2-k8s-a-eth0"),                    # pod with -n
    ("x/node1-k8s-multi-eth1", None, "x/multi", "x/node1-k8s-multi-eth1"),  # endpoint name
    ("node1-k8s-multi-eth0", "x", "x/multi", "x/node1-k8s-multi-eth0"),
    (IP["x/b"], None, "x/b", "x/node1-k8s-b-eth0"),              # an endpoint's address
    (IP["x/multi-eth1"], None, "x/multi", "x/node1-k8s-multi-eth1"),
])
def test_resolve_endpoints(text: str, namespace: str | None, name: str, endpoint: str) -> None:
    party = EXPLAINER.resolve(text, namespace)
    assert (party.name, party.endpoint) == (name, endpoint)
    assert party.node in ("node1", "node2")


def test_resolve_addresses() -> None:
    assert EXPLAINER.resolve(IP["x/dual"]).addresses == (ip(IP["x/dual"]),)
    assert EXPLAINER.resolve("x/dual").addresses == (
        ip(IP["x/dual"]), ip(IP["x/dual6"]))
    assert EXPLAINER.resolve(NODE2) == Party(NODE2, (ip(NODE2),), node="node2")
    outside = EXPLAINER.resolve(OUTSIDE)
    assert outside == Party(OUTSIDE, (ip(OUTSIDE),))
    assert outside.what == "not a workload endpoint"


@pytest.mark.parametrize("text, namespace, message", [
    ("x/multi", None, "x/multi is ambiguous: pod multi has WorkloadEndpoints "
     "x/node1-k8s-multi-eth0, x/node1-k8s-multi-eth1; name one of them"),
    ("x/nope", None, "no workload endpoint or pod named nope in namespace x"),
    ("a", None, "no workload endpoint or pod named a in namespace default"),
    ("z/a", None, "no workload endpoint or pod named a in namespace z"),
    ("x/a/b", None, "invalid endpoint 'x/a/b'"),
    ("/a", None, "invalid endpoint '/a'"),
    ("10.65.0.0/24", None, "10.65.0.0/24 is a network: FROM and TO are single addresses"),
])
def test_resolve_errors(text: str, namespace: str | None, message: str) -> None:
    with pytest.raises(CtlFailure) as err:
        EXPLAINER.resolve(text, namespace)
    assert str(err.value).startswith(message)


def test_an_address_two_endpoints_hold_is_ambiguous() -> None:
    clone = Explainer(resources(CLUSTER.replace("10.65.0.3", "10.65.0.2")))
    with pytest.raises(CtlFailure, match="^address 10.65.0.2 is ambiguous: held by "
                                         "WorkloadEndpoints x/node1-k8s-a-eth0, "
                                         "x/node1-k8s-b-eth0$"):
        clone.resolve("10.65.0.2")


def test_an_endpoint_without_addresses_is_an_error() -> None:
    bare = Explainer(resources(CLUSTER.replace(f"ipNetworks: ['{IP['x/b']}']",
                                               "ipNetworks: []")))
    with pytest.raises(CtlFailure, match="^WorkloadEndpoint x/node1-k8s-b-eth0 has no IP"):
        bare.resolve("x/b")


def test_build_flow_picks_one_ip_version() -> None:
    dual = EXPLAINER.resolve("x/dual")
    six = Party("fd00::1", (ip("fd00::1"),))
    a = EXPLAINER.resolve("x/a")
    assert build_flow(FlowSpec(TCP, 80), a, dual) == Flow(ip(IP["x/a"]), ip(IP["x/dual"]), TCP, 80)
    assert build_flow(FlowSpec(TCP), six, dual).dst == ip(IP["x/dual6"])
    assert build_flow(FlowSpec(TCP), dual, dual, ip_version=6).src == ip(IP["x/dual6"])
    assert build_flow(FlowSpec(ICMPV6, icmp_type=128), dual, dual).src == ip(IP["x/dual6"])
    with pytest.raises(CtlFailure, match=r"^x/a \(10.65.0.2\) and fd00::1 \(fd00::1\) have no "
                                         "addresses of one IP version in common$"):
        build_flow(FlowSpec(TCP), a, six)
    with pytest.raises(CtlFailure, match="have no addresses of IPv6 in common"):
        build_flow(FlowSpec(ICMPV6), a, dual)
    with pytest.raises(CtlFailure, match="^ICMP is for IPv4, not IPv6$"):
        build_flow(FlowSpec(ICMP), dual, dual, ip_version=6)


# --- the verdict and its forms --------------------------------------------------------


def text(*manifests: str, src: str, dst: str, spec: FlowSpec = HTTP,
         endpoint_to_host_action: EndpointToHostAction = "Accept") -> str:
    explainer = Explainer(resources(CLUSTER, *manifests), endpoint_to_host_action)
    return format_verdict(*explainer.explain(src, dst, spec))


def test_no_policy_the_namespace_profile_allows() -> None:
    assert text(src="x/a", dst="y/a").split("\n") == [
        "ALLOWED: TCP port 80 from x/a (10.65.0.2) to y/a (10.65.1.2)",
        "",
        "egress of x/a (WorkloadEndpoint x/node1-k8s-a-eth0 on node node1): allowed",
        "  no policy selects it for egress",
        "  profile kns.x: allow by rule 0: Allow",
        "  => Allow by profile kns.x rule 0 (Allow)",
        "",
        "ingress of y/a (WorkloadEndpoint y/node2-k8s-a-eth0 on node node2): allowed",
        "  no policy selects it for ingress",
        "  profile kns.y: allow by rule 0: Allow",
        "  => Allow by profile kns.y rule 0 (Allow)",
    ]


def test_default_deny_ends_the_default_tier() -> None:
    lines = text(DENY_INGRESS_X, src="y/a", dst="x/b").split("\n")
    assert lines[0] == "DENIED: TCP port 80 from y/a (10.65.1.2) to x/b (10.65.0.3)"
    assert lines[7:] == [
        "ingress of x/b (WorkloadEndpoint x/node1-k8s-b-eth0 on node node1): denied",
        "  tier default: end of tier default (defaultAction Deny)",
        "    NetworkPolicy x/knp.default.default-deny-ingress (order 1000): no rule matched",
        "  => end of tier default: no policy allowed or passed it (defaultAction Deny)",
    ]


def test_the_deciding_rule_with_its_index_and_text() -> None:
    out = text(DENY_INGRESS_X, ALLOW_FROM_Y, src="y/a", dst="x/a", spec=FlowSpec(UDP, 53))
    assert out.startswith("ALLOWED: UDP port 53 from y/a")
    assert ("    NetworkPolicy x/knp.default.allow-from-y (order 1000): allow by rule 1: "
            "Allow protocol=UDP source.selector=\"projectcalico.org/orchestrator == 'k8s'\" "
            "source.namespaceSelector=\"ns == 'y'\" destination.ports=[53]") in out
    # The policies of a tier by order, then name: allow-from-y comes before default-deny.
    denied = text(DENY_INGRESS_X, ALLOW_FROM_Y, src="x/b", dst="x/a")
    assert denied.startswith("DENIED")
    assert ("    NetworkPolicy x/knp.default.allow-from-y (order 1000): no rule matched\n"
            "    NetworkPolicy x/knp.default.default-deny-ingress (order 1000): no rule matched"
            ) in denied


def test_pass_log_and_tiers() -> None:
    out = text(SECURITY_TIER, DENY_INGRESS_X, src="x/b", dst="x/a").split("\n")
    assert out[7:] == [
        "ingress of x/a (WorkloadEndpoint x/node1-k8s-a-eth0 on node node1): denied",
        "  tier security: passed to the next tier",
        "    GlobalNetworkPolicy pass-x (order 10): pass by rule 1: Pass "
        "source.selector=\"pod == 'b'\"",
        "      logged by rule 0: Log protocol=TCP",
        "  tier default: end of tier default (defaultAction Deny)",
        "    NetworkPolicy x/knp.default.default-deny-ingress (order 1000): no rule matched",
        "  => end of tier default: no policy allowed or passed it (defaultAction Deny)",
    ]
    ssh = text(SECURITY_TIER, src="y/a", dst="x/a", spec=FlowSpec(TCP, 22))
    assert "  tier security: denied\n" in ssh
    assert "  => Deny by GlobalNetworkPolicy pass-x rule 2 (Deny protocol=TCP " \
           "destination.ports=[22]) in tier security" in ssh


def test_a_tier_that_passes_by_default() -> None:
    passing = SECURITY_TIER.replace("spec: {order: 100}", "spec: {order: 100, defaultAction: Pass}")
    out = text(passing, src="y/a", dst="x/a", spec=FlowSpec(UDP, 53))
    assert "  tier security: end of tier security (defaultAction Pass): on to the next tier\n" \
        in out
    assert out.startswith("ALLOWED") and "profile kns.x: allow" in out


def test_icmp_and_global_policy() -> None:
    ping = FlowSpec(ICMP, icmp_type=8)
    out = text(DENY_ICMP_GLOBAL, src="x/a", dst="y/a", spec=ping)
    assert out.startswith("DENIED: ICMP type 8 from x/a (10.65.0.2) to y/a (10.65.1.2)\n")
    assert ("    GlobalNetworkPolicy deny-ping (order 5): deny by rule 0: "
            "Deny protocol=ICMP icmp={type:8}") in out
    assert text(DENY_ICMP_GLOBAL, src="x/a", dst="y/a",
                spec=FlowSpec(ICMP, icmp_type=0)).startswith("ALLOWED")


def test_addresses_outside_and_hosts() -> None:
    outside = text(DENY_INGRESS_X, src=OUTSIDE, dst="x/a").split("\n")
    assert outside[0] == "DENIED: TCP port 80 from 198.51.100.7 to x/a (10.65.0.2)"
    assert outside[2:4] == [
        "egress of 198.51.100.7 (not a workload endpoint): allowed, not policed",
        "  => source 198.51.100.7 is not a workload endpoint: no egress policy"]
    local = text(DENY_INGRESS_X, src=NODE1, dst="x/a")
    assert local.startswith("ALLOWED") and "  => from its own host (node1): not policed" in local
    assert text(DENY_INGRESS_X, src=NODE2, dst="x/a").startswith("DENIED")
    to_host = text(src="x/a", dst=NODE1, endpoint_to_host_action="Drop").split("\n")
    assert to_host[0] == "DENIED: TCP port 80 from x/a (10.65.0.2) to 10.0.0.1"
    assert to_host[-2:] == [
        "ingress of 10.0.0.1 (an address of node node1): denied",
        "  => destination 10.0.0.1 is the endpoint's own host: DefaultEndpointToHostAction Drop"]
    to_other = text(src="x/a", dst=OUTSIDE, endpoint_to_host_action="Drop")
    assert "ingress of 198.51.100.7 (not a workload endpoint): allowed, not policed" in to_other


def test_missing_profile_and_itself() -> None:
    orphan = resources(CLUSTER.replace("profiles: [kns.y]", "profiles: [kns.gone]"))
    verdict, src, dst = Explainer(orphan).explain("x/a", "y/a", HTTP)
    out = format_verdict(verdict, src, dst)
    assert "  profile kns.gone: not in the datastore (contributes nothing)\n" in out
    assert out.endswith("  => no profile allowed it: denied (Drop if no profiles matched)")
    itself = text(DENY_INGRESS_X, src="x/a", dst=IP["x/a"])
    assert itself.startswith("ALLOWED") and "to itself: the packet never leaves" in itself


def test_the_cluster_is_read_at_one_revision() -> None:
    class Store:
        def __init__(self) -> None:
            self.asked: list[tuple[str, int | None]] = []

        def list_with_revision(self, kind: type[Resource], namespace: str | None,
                               revision: int | None) -> tuple[list[Resource], int]:
            self.asked.append((kind.kind_name, revision))
            return [r for r in BASE if type(r) is kind], 40 + len(self.asked)

    store = Store()
    found = read_cluster(store)  # type: ignore[arg-type]
    assert sorted(map(id, found)) == sorted(map(id, BASE))
    assert store.asked == [(kind.kind_name, None if i == 0 else 41)
                           for i, kind in enumerate(EXPLAIN_KINDS)]


def test_json_is_the_verdicts_own() -> None:
    manifests = resources(CLUSTER, DENY_INGRESS_X, ALLOW_FROM_Y, SECURITY_TIER)
    verdict, _, _ = Explainer(manifests).explain("y/a", "x/a", HTTP)
    state = compile_state(manifests, HOSTS)
    direct = evaluate(state, Flow.of(IP["y/a"], IP["x/a"], "TCP", 80))
    assert json.loads(format_json(verdict)) == direct.as_dict() == verdict.as_dict()
    assert list(json.loads(format_json(verdict))) == ["flow", "allowed", "egress", "ingress"]


def test_bad_options_fail_before_the_datastore_is_asked(capsys: pytest.CaptureFixture[str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens here: reaching etcd would be a different error.
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://127.0.0.1:9")
    assert main(["explain", "x/a", "y/a", "--port", "80/UDP", "--protocol", "TCP"]) == 1
    assert capsys.readouterr().err == \
        "--port 80/UDP and --protocol TCP name different protocols\n"
    assert main(["explain", "x/a"]) == 1
    assert "Missing argument 'TO'" in capsys.readouterr().err
    assert main(["explain", "x/a", "y/a", "-o", "yaml"]) == 1
    assert "'yaml' is not one of 'text', 'json'" in capsys.readouterr().err
