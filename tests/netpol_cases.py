"""The network-policy conformance cases, once: the upstream Kubernetes netpol model and Calico's.

The model is kubernetes/kubernetes test/e2e/network/netpol (model.go, reachability.go,
truthtable.go): namespaces x, y, z labelled `ns: <name>`; pods a, b, c in each labelled
`pod: <name>`, each serving TCP and UDP on 80 and 81 with the named ports
`serve-<port>-<proto>`; every ordered pair of pods probed, loopback ignored. A case is a
sequence of steps (manifests applied or deleted as `ctl apply -f` takes them, pod labels
changed) each with the Reachability expected after it, per port and protocol.

A case is checked on TCP and UDP; the cases about SCTP (`protocols=WITH_SCTP`) on SCTP
too. SCTP is probed in the lab with raw INIT packets (lab/probe.py: this kernel has no
SCTP sockets), so only where it is the point, to keep the lab's run short.

The same cases run twice: against `policy.evaluate` (tests/unit/test_netpol_cases.py: the
expectations and the evaluation model check each other, in milliseconds) and in the lab
with real traffic (tests/e2e). Manifests are functions of a `Context` because some cases
name pod addresses (ipBlock, notNets, network sets), which the lab only knows once its
pods exist.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
KEYS = tuple(f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES)
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
WITH_SCTP = ("TCP", "UDP", "SCTP")
COMBOS = tuple((port, proto) for proto in PROTOCOLS for port in PORTS)
CALICO = "projectcalico.org/v3"

Document = dict[str, Any]


def in_namespace(ns: str) -> list[str]:
    return [k for k in KEYS if k.startswith(f"{ns}/")]


def named_ports() -> list[dict[str, Any]]:
    """The named ports every model pod serves (upstream's `serve-<port>-<proto>`)."""
    return [{"name": f"serve-{port}-{proto.lower()}", "protocol": proto, "port": port}
            for proto in PROTOCOLS for port in PORTS]


def namespace(ns: str, labels: Mapping[str, str] | None = None) -> Document:
    """The model's v1 Namespace (its labels become Profile kns.<ns>'s labelsToApply)."""
    return {"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": dict(labels or {"ns": ns})}}


def namespaces() -> list[Document]:
    return [namespace(ns) for ns in NAMESPACES]


# -- expectations ------------------------------------------------------------------------


class Reachability:
    """The expected verdict of every ordered pair of pods, all `allowed` to start with;
    later calls win (upstream's Reachability)."""

    def __init__(self, keys: Sequence[str] = KEYS, allowed: bool = True) -> None:
        self.keys = list(keys)
        self.cells = {(a, b): allowed for a in self.keys for b in self.keys}

    def expect(self, src: str, dst: str, allowed: bool) -> Reachability:
        self.cells[(src, dst)] = allowed
        return self

    def expect_all_ingress(self, dst: str, allowed: bool) -> Reachability:
        for src in self.keys:
            self.cells[(src, dst)] = allowed
        return self

    def expect_all_egress(self, src: str, allowed: bool) -> Reachability:
        for dst in self.keys:
            self.cells[(src, dst)] = allowed
        return self

    def only_ingress(self, dst: str, sources: Iterable[str]) -> Reachability:
        """Into `dst`, exactly `sources` are allowed."""
        allowed = set(sources)
        for src in self.keys:
            self.cells[(src, dst)] = src in allowed
        return self

    def only_egress(self, src: str, destinations: Iterable[str]) -> Reachability:
        allowed = set(destinations)
        for dst in self.keys:
            self.cells[(src, dst)] = dst in allowed
        return self

    def __getitem__(self, pair: tuple[str, str]) -> bool:
        return self.cells[pair]


def truth_table(keys: Sequence[str], mark: Mapping[tuple[str, str], str], title: str) -> str:
    """Rows from, columns to; `mark` gives each cell's character ('-' on the diagonal)."""
    width = max(len(k) for k in keys)
    lines = [title, " ".join(["-".ljust(width), *(k.ljust(width) for k in keys)]).rstrip()]
    for src in keys:
        cells = ["-" if src == dst else mark[(src, dst)] for dst in keys]
        lines.append(" ".join([src.ljust(width), *(c.ljust(width) for c in cells)]).rstrip())
    return "\n".join(lines)


def compare(keys: Sequence[str], expected: Reachability,
            observed: Mapping[tuple[str, str], bool]) -> tuple[int, str]:
    """(number of wrong cells, the expected/observed/comparison tables); loopback ignored."""
    def verdict(allowed: bool) -> str:
        return "." if allowed else "X"

    pairs = [(a, b) for a in keys for b in keys if a != b]
    wrong = {p for p in pairs if observed[p] != expected[p]}
    tables = [
        truth_table(keys, {p: verdict(expected[p]) for p in pairs}, "expected:"),
        truth_table(keys, {p: verdict(observed[p]) for p in pairs}, "observed:"),
        truth_table(keys, {p: "X" if p in wrong else "." for p in pairs},
                    f"comparison ({len(wrong)} wrong of {len(pairs)}):"),
    ]
    return len(wrong), "\n\n".join(tables)


# -- cases -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What manifests may depend on: the pods' addresses and the pool they come from."""

    ips: Mapping[str, str]
    pool: str

    def host(self, key: str) -> str:
        return f"{self.ips[key]}/32"


Manifests = Callable[[Context], list[Document]]
Expectation = Callable[[int, str], Reachability]


def _none(_: Context) -> list[Document]:
    return []


@dataclass(frozen=True)
class Step:
    expect: Expectation
    apply: Manifests = _none
    delete: Manifests = _none
    # Pod key -> the pod's labels from now on (replacing the model's `pod: <name>`).
    relabel: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str
    origin: str  # the upstream test it mirrors, or "calico"
    steps: tuple[Step, ...]
    protocols: tuple[str, ...] = PROTOCOLS  # what is checked, on every port

    @property
    def combos(self) -> tuple[tuple[int, str], ...]:
        """Every (port, protocol) this case checks."""
        return tuple((port, proto) for proto in self.protocols for port in PORTS)


def every(reach: Callable[[], Reachability]) -> Expectation:
    """The same expectation for every port and protocol."""
    return lambda _port, _proto: reach()


def only_on(combos: Iterable[tuple[int, str]], when: Callable[[], Reachability],
            otherwise: Callable[[], Reachability]) -> Expectation:
    chosen = set(combos)
    return lambda port, proto: when() if (port, proto) in chosen else otherwise()


def all_allowed() -> Reachability:
    return Reachability()


def knp(name: str, ns: str, pod: Mapping[str, Any] | None = None, *,
        ingress: list[Any] | None = None, egress: list[Any] | None = None,
        types: Sequence[str] | None = None) -> Document:
    """A Kubernetes NetworkPolicy; `pod` is its podSelector ({} selects every pod)."""
    spec: dict[str, Any] = {"podSelector": dict(pod or {})}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = list(types)
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def labels(**kv: str) -> dict[str, Any]:
    return {"matchLabels": kv}


def expressions(key: str, operator: str, *values: str) -> dict[str, Any]:
    expr: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        expr["values"] = list(values)
    return {"matchExpressions": [expr]}


POD_A = labels(pod="a")


def calico(kind: str, name: str, spec: dict[str, Any], ns: str | None = None,
           meta_labels: Mapping[str, str] | None = None) -> Document:
    metadata: dict[str, Any] = {"name": name}
    if ns is not None:
        metadata["namespace"] = ns
    if meta_labels:
        metadata["labels"] = dict(meta_labels)
    return {"apiVersion": CALICO, "kind": kind, "metadata": metadata, "spec": spec}


X_A = "projectcalico.org/namespace == 'x' && pod == 'a'"


def docs(*items: Document) -> Manifests:
    return lambda _ctx: list(items)


def _deny_ingress_into(*namespaces_: str) -> Reachability:
    r = Reachability()
    for ns in namespaces_:
        for key in in_namespace(ns):
            r.expect_all_ingress(key, False)
    return r


def _only_into_x_a(*sources: str) -> Reachability:
    return Reachability().only_ingress("x/a", sources)


def _cases() -> list[Case]:
    deny_x = knp("deny-all", "x", {}, types=["Ingress"])
    c: list[Case] = []

    def add(name: str, origin: str, *steps: Step,
            protocols: tuple[str, ...] = PROTOCOLS) -> None:
        c.append(Case(name, origin, steps, protocols))

    # -- the upstream Kubernetes e2e list ----------------------------------------------------
    add("default-deny-ingress", "should support a 'default-deny-ingress' policy",
        Step(every(lambda: _deny_ingress_into("x")), docs(deny_x)), protocols=WITH_SCTP)
    add("default-deny-egress", "should support a 'default-deny-all' policy (egress)",
        Step(every(lambda: _egress_denied_from("x")),
             docs(knp("deny-egress", "x", {}, types=["Egress"]))))
    add("default-deny-all", "should support a 'default-deny-all' policy",
        Step(every(lambda: _egress_denied_from("x", _deny_ingress_into("x"))),
             docs(knp("deny-all", "x", {}, types=["Ingress", "Egress"]))))
    add("allow-all-stacked-on-deny", "should support allow-all policy",
        Step(every(all_allowed), docs(deny_x, knp("allow-all", "x", {}, ingress=[{}]))))
    add("pod-selector", "should enforce policy to allow traffic from pods within server "
        "namespace based on PodSelector",
        Step(every(lambda: _only_into_x_a("x/b")),
             docs(knp("allow-b", "x", POD_A, ingress=[{"from": [{"podSelector": labels(
                 pod="b")}]}]))))
    add("namespace-selector", "should enforce policy based on NamespaceSelector with "
        "MatchLabels",
        Step(every(lambda: _only_into_x_a(*in_namespace("y"))),
             docs(knp("allow-y", "x", POD_A, ingress=[{"from": [{"namespaceSelector": labels(
                 ns="y")}]}]))))
    add("pod-and-namespace-in-one-peer", "should enforce policy based on PodSelector and "
        "NamespaceSelector",
        Step(every(lambda: _only_into_x_a("y/b")),
             docs(knp("allow-y-b", "x", POD_A, ingress=[{"from": [{
                 "namespaceSelector": labels(ns="y"), "podSelector": labels(pod="b")}]}]))))
    add("pod-or-namespace-in-two-peers", "should enforce policy based on PodSelector or "
        "NamespaceSelector",
        Step(every(lambda: _only_into_x_a("x/b", *in_namespace("y"))),
             docs(knp("allow-y-or-b", "x", POD_A, ingress=[{"from": [
                 {"namespaceSelector": labels(ns="y")}, {"podSelector": labels(pod="b")}]}]))))
    add("namespace-match-expressions-in", "should enforce policy based on NamespaceSelector "
        "with MatchExpressions",
        Step(every(lambda: _only_into_x_a(*in_namespace("y"), *in_namespace("z"))),
             docs(knp("allow-y-z", "x", POD_A, ingress=[{"from": [{
                 "namespaceSelector": expressions("ns", "In", "y", "z")}]}]))))
    add("pod-match-expressions-not-in", "should enforce policy based on PodSelector with "
        "MatchExpressions",
        Step(every(lambda: _only_into_x_a("x/c")),
             docs(knp("allow-not-b", "x", POD_A, ingress=[{"from": [{
                 "podSelector": expressions("pod", "NotIn", "b")}]}]))))
    add("namespace-match-expressions-not-in", "should enforce policy based on "
        "NamespaceSelector with MatchExpressions (NotIn)",
        Step(every(lambda: _only_into_x_a(*in_namespace("x"), *in_namespace("z"))),
             docs(knp("allow-not-y", "x", POD_A, ingress=[{"from": [{
                 "namespaceSelector": expressions("ns", "NotIn", "y")}]}]))))
    add("pod-match-expressions-does-not-exist", "should enforce policy based on "
        "PodSelector with MatchExpressions (DoesNotExist)",
        Step(every(lambda: _only_into_x_a()),
             docs(knp("allow-unlabelled", "x", POD_A, ingress=[{"from": [{
                 "namespaceSelector": {}, "podSelector": expressions("pod",
                                                                    "DoesNotExist")}]}]))))
    add("stacked-policies", "should allow ingress access from updated pod / multiple "
        "policies",
        Step(every(lambda: _only_into_x_a("x/b", *in_namespace("y"))),
             docs(knp("allow-b", "x", POD_A, ingress=[{"from": [{"podSelector": labels(
                 pod="b")}]}]),
                  knp("allow-y", "x", POD_A, ingress=[{"from": [{"namespaceSelector": labels(
                      ns="y")}]}]))))
    add("named-port-ingress", "should allow ingress access on one named port",
        Step(only_on([(80, "TCP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-serve-80", "x", POD_A, ingress=[{"ports": [
                 {"port": "serve-80-tcp"}]}]))))
    add("named-port-ingress-udp", "should allow ingress access on one named port (UDP)",
        Step(only_on([(81, "UDP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-serve-81-udp", "x", POD_A, ingress=[{"ports": [
                 {"port": "serve-81-udp", "protocol": "UDP"}]}]))))
    add("named-port-egress", "should allow egress access on one named port",
        Step(only_on([(81, "TCP")], all_allowed,
                     lambda: Reachability().only_egress("x/a", [])),
             docs(knp("egress-serve-81", "x", POD_A, types=["Egress"], egress=[{"ports": [
                 {"port": "serve-81-tcp"}]}]))))
    add("numbered-port", "should enforce policy based on Ports",
        Step(only_on([(81, "TCP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-81", "x", POD_A, ingress=[{"ports": [{"port": 81}]}]))))
    add("protocol-only", "should enforce policy to allow traffic only from a protocol",
        Step(only_on([(80, "UDP"), (81, "UDP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-udp", "x", POD_A, ingress=[{"ports": [{"protocol": "UDP"}]}]))))
    add("end-port", "should support allow traffic on a port range (endPort)",
        Step(only_on([(80, "TCP"), (81, "TCP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-80-81", "x", POD_A, ingress=[{"ports": [
                 {"port": 80, "endPort": 81, "protocol": "TCP"}]}]))))
    add("udp-does-not-allow-tcp", "should not allow access by TCP when a policy specifies "
        "only UDP",
        Step(only_on([(80, "UDP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-udp-80", "x", POD_A, ingress=[{"ports": [
                 {"port": 80, "protocol": "UDP"}]}]))))
    add("sctp-does-not-allow-tcp", "should not allow access by TCP when a policy specifies "
        "only SCTP",
        Step(only_on([(80, "SCTP")], all_allowed, lambda: _only_into_x_a()),
             docs(knp("allow-sctp-80", "x", POD_A, ingress=[{"ports": [
                 {"port": 80, "protocol": "SCTP"}]}]))), protocols=WITH_SCTP)
    add("ip-block", "should allow ingress from an ipBlock",
        Step(every(lambda: _only_into_x_a("y/b")),
             lambda ctx: [knp("allow-y-b-ip", "x", POD_A, ingress=[{"from": [
                 {"ipBlock": {"cidr": ctx.host("y/b")}}]}])]))
    add("ip-block-except", "should enforce except clause while ingress access "
        "(ipBlock with except)",
        Step(every(lambda: _only_into_x_a(*(k for k in KEYS if k != "y/b"))),
             lambda ctx: [knp("allow-pool-but-y-b", "x", POD_A, ingress=[{"from": [
                 {"ipBlock": {"cidr": ctx.pool, "except": [ctx.host("y/b")]}}]}])]))
    add("egress-to-namespace", "should enforce egress policy allowing traffic to a server "
        "in a different namespace based on PodSelector and NamespaceSelector",
        Step(every(lambda: Reachability().only_egress("x/a", in_namespace("z"))),
             docs(knp("egress-z", "x", POD_A, types=["Egress"], egress=[{"to": [
                 {"namespaceSelector": labels(ns="z")}]}]))))
    add("egress-to-ip-block", "should allow egress access to server in CIDR block",
        Step(every(lambda: Reachability().only_egress("x/a", ["z/c"])),
             lambda ctx: [knp("egress-z-c", "x", POD_A, types=["Egress"], egress=[{"to": [
                 {"ipBlock": {"cidr": ctx.host("z/c")}}]}])]))
    add("ingress-from-all-namespaces", "should allow ingress from all namespaces "
        "(empty namespaceSelector) on top of default deny",
        Step(every(lambda: _deny_ingress_into("x").expect_all_ingress("x/a", True)),
             docs(deny_x, knp("allow-all-ns", "x", POD_A, ingress=[{"from": [
                 {"namespaceSelector": {}}]}]))))
    add("empty-ingress-rules", "should deny ingress to a pod selected by a policy with no "
        "ingress rules",
        Step(every(lambda: _only_into_x_a()),
             docs(knp("isolate-a", "x", POD_A, types=["Ingress"]))))
    add("default-deny-everywhere", "should deny ingress in every namespace",
        Step(every(lambda: _deny_ingress_into(*NAMESPACES)),
             docs(*(knp("deny-all", ns, {}, types=["Ingress"]) for ns in NAMESPACES))))
    add("policy-update", "should allow ingress access from updated pod / policy update",
        Step(every(lambda: _only_into_x_a("x/b")),
             docs(knp("allow-peer", "x", POD_A, ingress=[{"from": [{"podSelector": labels(
                 pod="b")}]}]))),
        Step(every(lambda: _only_into_x_a("x/c")),
             docs(knp("allow-peer", "x", POD_A, ingress=[{"from": [{"podSelector": labels(
                 pod="c")}]}]))))
    add("pod-label-update", "should allow ingress access from updated pod",
        Step(every(lambda: _only_into_x_a("x/b")),
             docs(knp("allow-b", "x", POD_A, ingress=[{"from": [{"podSelector": labels(
                 pod="b")}]}]))),
        Step(every(lambda: _only_into_x_a("x/b", "x/c")), relabel={"x/c": {"pod": "b"}}),
        Step(every(lambda: _only_into_x_a("x/b")), relabel={"x/c": {"pod": "c"}}))
    add("namespace-label-update", "should allow ingress access from namespace on which "
        "the labels were updated",
        Step(every(lambda: _only_into_x_a(*in_namespace("y"))),
             docs(knp("allow-y", "x", POD_A, ingress=[{"from": [{"namespaceSelector": labels(
                 ns="y")}]}]))),
        Step(every(lambda: _only_into_x_a(*in_namespace("y"), *in_namespace("z"))),
             docs(namespace("z", {"ns": "y"}))),
        Step(every(lambda: _only_into_x_a(*in_namespace("y"))), docs(namespace("z"))))
    add("policy-deletion", "should not deny traffic once the policy is deleted",
        Step(every(lambda: _deny_ingress_into("x")), docs(deny_x)),
        Step(every(all_allowed), delete=docs(deny_x)))

    # -- Calico's own model --------------------------------------------------------------------
    add("deny-before-allow-by-order", "calico",
        Step(every(lambda: Reachability().expect("x/b", "x/a", False)),
             docs(calico("NetworkPolicy", "deny-b", {
                 "order": 100, "selector": "pod == 'a'",
                 "ingress": [{"action": "Deny", "source": {"selector": "pod == 'b'"}}]}, "x"),
                 calico("NetworkPolicy", "allow-all", {
                     "order": 200, "selector": "pod == 'a'",
                     "ingress": [{"action": "Allow"}]}, "x"))))
    add("equal-order-broken-by-name", "calico",
        Step(every(lambda: _only_into_x_a()),
             docs(calico("NetworkPolicy", "a-deny", {
                 "order": 100, "selector": "pod == 'a'", "ingress": [{"action": "Deny"}]}, "x"),
                 calico("NetworkPolicy", "b-allow", {
                     "order": 100, "selector": "pod == 'a'",
                     "ingress": [{"action": "Allow"}]}, "x"))))
    add("pass-to-the-next-tier", "calico",
        Step(every(lambda: _only_into_x_a(*in_namespace("y"))),
             docs(calico("Tier", "security", {"order": 100}),
                  calico("GlobalNetworkPolicy", "pass-y-deny-z", {
                      "tier": "security", "selector": X_A, "ingress": [
                          {"action": "Pass", "source": {"namespaceSelector": "ns == 'y'"}},
                          {"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}}]}))))
    add("tier-default-action-pass", "calico",
        Step(every(lambda: _only_into_x_a(*in_namespace("x"), *in_namespace("y"))),
             docs(calico("Tier", "audit", {"order": 100, "defaultAction": "Pass"}),
                  calico("GlobalNetworkPolicy", "deny-z", {
                      "tier": "audit", "selector": X_A, "ingress": [
                          {"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}}]}))))
    add("tiers-in-order", "calico",
        Step(every(lambda: _only_into_x_a(*(k for k in KEYS if not k.startswith("y/")))),
             docs(calico("Tier", "first", {"order": 100}),
                  calico("Tier", "second", {"order": 200}),
                  calico("GlobalNetworkPolicy", "first-deny-y", {
                      "tier": "first", "selector": X_A, "ingress": [
                          {"action": "Deny", "source": {"namespaceSelector": "ns == 'y'"}},
                          {"action": "Pass"}]}),
                  calico("GlobalNetworkPolicy", "second-allow-y", {
                      "tier": "second", "selector": X_A, "ingress": [
                          {"action": "Allow", "source": {"namespaceSelector": "ns == 'y'"}},
                          {"action": "Pass"}]}))))
    add("global-network-policy", "calico",
        Step(every(lambda: _deny_from_namespace_into("z", ["x/b", "y/b", "z/b"])),
             docs(calico("GlobalNetworkPolicy", "b-not-from-z", {
                 "selector": "pod == 'b'", "ingress": [
                     {"action": "Deny", "source": {"namespaceSelector": "ns == 'z'"}},
                     {"action": "Allow"}]}))))
    add("not-selector", "calico",
        Step(every(lambda: _only_into_x_a(*(k for k in KEYS if not k.endswith("/b")))),
             docs(calico("NetworkPolicy", "not-b", {
                 "selector": "pod == 'a'", "ingress": [{"action": "Allow", "source": {
                     "namespaceSelector": "all()", "notSelector": "pod == 'b'"}}]}, "x"))))
    add("not-nets", "calico",
        Step(every(lambda: _only_into_x_a(*(k for k in KEYS if k != "y/b"))),
             lambda ctx: [calico("NetworkPolicy", "not-y-b", {
                 "selector": "pod == 'a'", "ingress": [{"action": "Allow", "source": {
                     "notNets": [ctx.host("y/b")]}}]}, "x")]))
    add("port-range", "calico",
        Step(only_on([(80, "TCP"), (81, "TCP")], all_allowed, lambda: _only_into_x_a()),
             docs(calico("NetworkPolicy", "tcp-80-81", {
                 "selector": "pod == 'a'", "ingress": [{"action": "Allow", "protocol": "TCP",
                                                        "destination": {"ports": ["80:81"]}}]},
                 "x"))))
    add("sctp-allows-sctp", "calico",
        Step(only_on([(80, "SCTP")], lambda: _only_into_x_a("x/b", "y/b", "z/b"),
                     lambda: _only_into_x_a()),
             docs(calico("NetworkPolicy", "sctp-80-from-b", {
                 "selector": "pod == 'a'", "ingress": [{
                     "action": "Allow", "protocol": "SCTP",
                     "source": {"namespaceSelector": "all()", "selector": "pod == 'b'"},
                     "destination": {"ports": [80]}}]}, "x"))), protocols=WITH_SCTP)
    add("icmp-only", "calico",
        Step(every(lambda: _only_into_x_a()),
             docs(calico("NetworkPolicy", "icmp-only", {
                 "selector": "pod == 'a'", "ingress": [{"action": "Allow", "protocol": "ICMP",
                                                        "icmp": {"type": 8}}]}, "x"))))
    add("network-set", "calico",
        Step(every(lambda: _only_into_x_a("z/c")),
             lambda ctx: [
                 calico("NetworkSet", "trusted", {"nets": [ctx.host("z/c")]}, "x",
                        meta_labels={"role": "trusted"}),
                 calico("NetworkPolicy", "from-trusted", {
                     "selector": "pod == 'a'", "ingress": [{"action": "Allow", "source": {
                         "selector": "role == 'trusted'"}}]}, "x")]))
    add("global-network-set", "calico",
        Step(every(lambda: _only_into_x_a("y/a")),
             lambda ctx: [
                 calico("GlobalNetworkSet", "trusted", {"nets": [ctx.host("y/a")]},
                        meta_labels={"role": "trusted"}),
                 calico("GlobalNetworkPolicy", "from-trusted", {
                     "selector": X_A, "ingress": [{"action": "Allow", "source": {
                         "selector": "role == 'trusted'"}}]})]))
    add("profile-rules", "calico",
        Step(every(lambda: _deny_ingress_into("y")),
             docs(calico("Profile", "kns.y", {
                 "ingress": [{"action": "Deny"}], "egress": [{"action": "Allow"}],
                 "labelsToApply": {"pcns.ns": "y", "pcns.kubernetes.io/metadata.name": "y",
                                   "pcns.projectcalico.org/name": "y"}}))),
        Step(every(all_allowed), docs(namespace("y"))))
    add("log-does-not-decide", "calico",
        Step(every(lambda: _only_into_x_a("x/b")),
             docs(calico("NetworkPolicy", "log-then-allow-b", {
                 "selector": "pod == 'a'", "ingress": [
                     {"action": "Log"},
                     {"action": "Allow", "source": {"selector": "pod == 'b'"}}]}, "x"))))
    add("egress-deny-by-namespace", "calico",
        Step(every(lambda: Reachability().only_egress(
            "x/a", [k for k in KEYS if not k.startswith("y/")])),
             docs(calico("NetworkPolicy", "a-not-to-y", {
                 "selector": "pod == 'a'", "types": ["Egress"], "egress": [
                     {"action": "Deny", "destination": {"namespaceSelector": "ns == 'y'"}},
                     {"action": "Allow"}]}, "x"))))
    return c


def _egress_denied_from(ns: str, base: Reachability | None = None) -> Reachability:
    r = base or Reachability()
    for key in in_namespace(ns):
        r.expect_all_egress(key, False)
    return r


def _deny_from_namespace_into(ns: str, destinations: Iterable[str]) -> Reachability:
    r = Reachability()
    for dst in destinations:
        for src in in_namespace(ns):
            r.expect(src, dst, False)
    return r


CASES: tuple[Case, ...] = tuple(_cases())
