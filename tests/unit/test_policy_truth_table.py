"""The upstream Kubernetes netpol model, evaluated: namespaces x, y, z, pods a, b, c.

As in `test/e2e/network/netpol/model.go`: namespace labels `ns=<name>` (and
`kubernetes.io/metadata.name`), pod labels `pod=<name>`, reachability all-allowed
until a case overrides it, loopback ignored. The Kubernetes policies are written as
the Calico documents Calico's conversion makes of them (`knp.default.<name>`, order
1000, orchestrator selector, types as the API server defaults them), since the
conversion itself is tested elsewhere. Every document goes through
datastore.resources and policy.model.compile_state, as the agent's will.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from datastore.resources import parse_document
from datastore.resources.base import Resource
from policy.evaluate import Flow, evaluate
from policy.model import PolicyState, compile_state

NAMESPACES = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{ns}/{pod}" for ns in NAMESPACES for pod in PODS]
K8S = "projectcalico.org/orchestrator == 'k8s'"
API = "projectcalico.org/v3"


def address(key: str) -> str:
    ns, pod = key.split("/")
    return f"10.65.{NAMESPACES.index(ns)}.{PODS.index(pod) + 10}"


def cluster_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for ns in NAMESPACES:
        docs.append({"apiVersion": API, "kind": "Profile", "metadata": {"name": f"kns.{ns}"},
                     "spec": {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
                              "labelsToApply": {"pcns.ns": ns,
                                                "pcns.kubernetes.io/metadata.name": ns,
                                                "pcns.projectcalico.org/name": ns}}})
        for pod in PODS:
            docs.append({
                "apiVersion": API, "kind": "WorkloadEndpoint",
                "metadata": {"name": f"node1-k8s-{pod}-eth0", "namespace": ns,
                             "labels": {"pod": pod}},
                "spec": {"orchestrator": "k8s", "node": "node1", "pod": pod, "endpoint": "eth0",
                         "interfaceName": f"cali{ns}{pod}", "profiles": [f"kns.{ns}"],
                         "ipNetworks": [address(f"{ns}/{pod}")],
                         "ports": [{"name": "serve-80-tcp", "protocol": "TCP", "port": 80},
                                   {"name": "serve-81-tcp", "protocol": "TCP", "port": 81},
                                   {"name": "serve-80-udp", "protocol": "UDP", "port": 80}]},
            })
    return docs


def knp(name: str, ns: str, pod_selector: str = "", types: tuple[str, ...] = ("Ingress",),
        ingress: list[dict[str, Any]] | None = None,
        egress: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Kubernetes NetworkPolicy as Calico stores it in etcd mode."""
    selector = f"{K8S} && {pod_selector}" if pod_selector else K8S
    spec: dict[str, Any] = {"order": 1000, "selector": selector, "types": list(types)}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {"apiVersion": API, "kind": "NetworkPolicy",
            "metadata": {"name": f"knp.default.{name}", "namespace": ns}, "spec": spec}


def peer(pod: str | None = None, ns: str | None = None, all_namespaces: bool = False) -> dict[str, Any]:
    """A Kubernetes peer (podSelector / namespaceSelector) converted as Calico does."""
    side: dict[str, Any] = {"selector": f"{K8S} && {pod}" if pod else K8S}
    if ns:
        side["namespaceSelector"] = ns
    elif all_namespaces:
        side["namespaceSelector"] = "all()"
    return side


def allow_from(*sources: dict[str, Any], ports: list[Any] | None = None,
               protocol: str = "TCP") -> list[dict[str, Any]]:
    rules = []
    for source in sources or ({},):
        rule: dict[str, Any] = {"action": "Allow", "source": source}
        if ports:
            rule["protocol"] = protocol
            rule["destination"] = {"ports": ports}
        rules.append(rule)
    return rules


class Reachability:
    """All allowed, then overrides, later ones winning (the upstream model)."""

    def __init__(self) -> None:
        self.expected = {(a, b): True for a in ALL for b in ALL}

    def expect(self, src: str, dst: str, allowed: bool) -> Reachability:
        self.expected[(src, dst)] = allowed
        return self

    def all_ingress(self, dst: str, allowed: bool) -> Reachability:
        for src in ALL:
            self.expected[(src, dst)] = allowed
        return self

    def all_egress(self, src: str, allowed: bool) -> Reachability:
        for dst in ALL:
            self.expected[(src, dst)] = allowed
        return self


def in_ns(ns: str) -> list[str]:
    return [k for k in ALL if k.startswith(f"{ns}/")]


def case_default_deny_ingress() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability()
    for dst in in_ns("x"):
        r.all_ingress(dst, False)
    return [knp("deny-ingress", "x")], r


def case_default_deny_all() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability()
    for key in in_ns("x"):
        r.all_ingress(key, False).all_egress(key, False)
    return [knp("deny-all", "x", types=("Ingress", "Egress"))], r


def case_allow_from_pod_in_namespace() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False).expect("x/b", "x/a", True)
    return [knp("x-a-from-b", "x", "pod == 'a'", ingress=allow_from(peer("pod == 'b'")))], r


def case_allow_from_other_namespace() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False)
    for src in in_ns("y"):
        r.expect(src, "x/a", True)
    return [knp("x-a-from-y", "x", "pod == 'a'",
                ingress=allow_from(peer(ns="ns == 'y'")))], r


def case_allow_from_all_namespaces() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability()
    return [knp("allow-all-ns", "x", ingress=allow_from(peer(all_namespaces=True)))], r


def case_pod_and_namespace_selector() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False)
    r.expect("y/b", "x/a", True).expect("z/b", "x/a", True)
    return [knp("and", "x", "pod == 'a'", ingress=allow_from(
        peer("pod == 'b'", ns="ns in {'y', 'z'}")))], r


def case_pod_or_namespace_selector() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False).expect("x/b", "x/a", True)
    for src in in_ns("y"):
        r.expect(src, "x/a", True)
    return [knp("or", "x", "pod == 'a'", ingress=allow_from(
        peer("pod == 'b'"), peer(ns="ns == 'y'")))], r


def case_not_in_namespace_match_expression() -> tuple[list[dict[str, Any]], Reachability]:
    # namespaceSelector matchExpressions {ns NotIn [x]} -> `ns not in {'x'}`.
    r = Reachability().all_ingress("x/a", False)
    for src in in_ns("y") + in_ns("z"):
        r.expect(src, "x/a", True)
    return [knp("not-x", "x", "pod == 'a'", ingress=allow_from(
        peer(ns="ns not in {'x'}")))], r


def case_stacked_policies() -> tuple[list[dict[str, Any]], Reachability]:
    # Two policies select x/a; their allows add up. The second also isolates x/b.
    r = Reachability().all_ingress("x/a", False).all_ingress("x/b", False)
    r.expect("x/b", "x/a", True).expect("x/c", "x/a", True).expect("x/c", "x/b", True)
    return [knp("from-b", "x", "pod == 'a'", ingress=allow_from(peer("pod == 'b'"))),
            knp("from-c", "x", "pod in {'a', 'b'}", ingress=allow_from(peer("pod == 'c'")))], r


def case_deny_egress_to_other_namespaces() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability()
    for src in in_ns("x"):
        for dst in ALL:
            r.expect(src, dst, dst.startswith("x/"))
    return [knp("egress-in-ns", "x", types=("Egress",), egress=[
        {"action": "Allow", "destination": peer()}])], r


def case_ip_block_with_except() -> tuple[list[dict[str, Any]], Reachability]:
    # x/a may reach 10.65.0.0/16 except y's /24: y is cut off.
    r = Reachability()
    for dst in in_ns("y"):
        r.expect("x/a", dst, False)
    return [knp("cidr", "x", "pod == 'a'", types=("Egress",), egress=[
        {"action": "Allow", "destination": {"nets": ["10.65.0.0/16"],
                                            "notNets": ["10.65.1.0/24"]}}])], r


def case_port_81_only() -> tuple[list[dict[str, Any]], Reachability]:
    # The probe is TCP/80: a policy opening only 81 isolates x/a.
    r = Reachability().all_ingress("x/a", False)
    return [knp("port-81", "x", "pod == 'a'", ingress=allow_from(ports=[81]))], r


def case_named_port() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability()
    return [knp("named", "x", "pod == 'a'", ingress=allow_from(ports=["serve-80-tcp"]))], r


def case_named_port_not_probed() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False)
    return [knp("named-81", "x", "pod == 'a'", ingress=allow_from(ports=["serve-81-tcp"]))], r


def case_named_port_of_other_protocol() -> tuple[list[dict[str, Any]], Reachability]:
    # serve-80-udp names port 80 for UDP only: a TCP rule naming it matches nothing.
    r = Reachability().all_ingress("x/a", False)
    return [knp("named-udp", "x", "pod == 'a'", ingress=allow_from(ports=["serve-80-udp"]))], r


def case_udp_does_not_allow_tcp() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False)
    return [knp("udp-80", "x", "pod == 'a'",
                ingress=allow_from(ports=[80], protocol="UDP"))], r


def case_sctp_does_not_allow_tcp() -> tuple[list[dict[str, Any]], Reachability]:
    r = Reachability().all_ingress("x/a", False)
    return [knp("sctp-80", "x", "pod == 'a'",
                ingress=allow_from(ports=[80], protocol="SCTP"))], r


def case_ingress_and_egress_together() -> tuple[list[dict[str, Any]], Reachability]:
    # x/a: ingress only from x/b, egress only to y.
    r = Reachability().all_ingress("x/a", False).expect("x/b", "x/a", True)
    for dst in ALL:
        r.expect("x/a", dst, dst.startswith("y/"))
    return [knp("both", "x", "pod == 'a'", types=("Ingress", "Egress"),
                ingress=allow_from(peer("pod == 'b'")),
                egress=[{"action": "Allow", "destination": peer(ns="ns == 'y'")}])], r


def case_calico_deny_before_allow() -> tuple[list[dict[str, Any]], Reachability]:
    # Calico-native: an ordered Deny of y in front of an allow-all, on x.
    r = Reachability()
    for dst in in_ns("x"):
        for src in in_ns("y"):
            r.expect(src, dst, False)
    deny = {"apiVersion": API, "kind": "GlobalNetworkPolicy", "metadata": {"name": "deny-y"},
            "spec": {"order": 10, "namespaceSelector": "ns == 'x'",
                     "ingress": [{"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}},
                                 {"action": "Pass"}]}}
    return [deny], r


def case_calico_tier_pass_and_default_deny() -> tuple[list[dict[str, Any]], Reachability]:
    # A security tier passes z to the default tier and denies the rest into z; the default
    # tier then allows only from z itself.
    r = Reachability()
    for dst in in_ns("z"):
        r.all_ingress(dst, False)
        for src in in_ns("z"):
            r.expect(src, dst, True)
    tier = {"apiVersion": API, "kind": "Tier", "metadata": {"name": "security"},
            "spec": {"order": 100}}
    gate = {"apiVersion": API, "kind": "GlobalNetworkPolicy",
            "metadata": {"name": "z-gate"},
            "spec": {"tier": "security", "namespaceSelector": "ns == 'z'",
                     "ingress": [{"action": "Pass", "source": {"namespaceSelector": "ns == 'z'"}}]}}
    local = knp("from-z", "z", ingress=allow_from(peer()))
    return [tier, gate, local], r


CASES: dict[str, Callable[[], tuple[list[dict[str, Any]], Reachability]]] = {
    name.removeprefix("case_"): fn for name, fn in globals().items() if name.startswith("case_")
}


def state_for(policy_docs: list[dict[str, Any]]) -> PolicyState:
    resources: list[Resource] = [parse_document(d) for d in cluster_documents() + policy_docs]
    return compile_state(resources)


@pytest.mark.parametrize("case", sorted(CASES))
def test_truth_table(case: str) -> None:
    docs, reachability = CASES[case]()
    state = state_for(docs)
    wrong = []
    for (src, dst), expected in reachability.expected.items():
        if src == dst:
            continue  # loopback is ignored, as upstream does
        verdict = evaluate(state, Flow.of(address(src), address(dst), "TCP", 80))
        if verdict.allowed is not expected:
            side = verdict.egress if not verdict.egress.allowed else verdict.ingress
            wrong.append(f"{src} -> {dst}: expected {expected}, got {verdict.allowed} "
                         f"({side.reason})")
    assert not wrong, "\n".join(wrong)


def test_no_policies_everything_allowed() -> None:
    state = state_for([])
    assert all(evaluate(state, Flow.of(address(s), address(d), "TCP", 80)).allowed
               for s in ALL for d in ALL)
