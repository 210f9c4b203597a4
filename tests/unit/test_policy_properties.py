"""Properties of evaluate over random labels, tiers and policies (hypothesis).

  * the verdict (with its whole path) is deterministic and does not depend on the order
    in which endpoints, policies, tiers and profiles arrive;
  * a policy that selects nothing changes no verdict, whatever its rules;
  * a flow is allowed exactly when both of its directions are.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastore.selector import parse
from policy.evaluate import Flow, evaluate
from policy.model import PolicyState

from .policy_cluster import Cluster, gnp, np, tier

NAMESPACES = ("x", "y", "z")
POD_KEYS = ("x/a", "x/b", "y/a", "z/c")
SELECTORS = ("", "app == 'web'", "app == 'db'", "has(app)", "!has(role)", "role in {'fe', 'be'}")
PORTS = st.sampled_from([[80], [81], ["80:81"], ["http"], [80, "http"]])

labels = st.fixed_dictionaries({}, optional={"app": st.sampled_from(["web", "db"]),
                                             "role": st.sampled_from(["fe", "be"])})

side = st.fixed_dictionaries({}, optional={
    "selector": st.sampled_from(SELECTORS[1:]),
    "notSelector": st.sampled_from(SELECTORS[1:]),
    "namespaceSelector": st.sampled_from(["all()", "ns == 'y'", "ns != 'x'"]),
    "nets": st.sampled_from([["10.65.0.0/24"], ["10.65.1.0/24", "192.0.2.0/24"]]),
    "notNets": st.sampled_from([["10.65.0.2/32"], ["10.65.2.0/24"]]),
})


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"])),
                            "source": draw(side)}
    destination = draw(side)
    if draw(st.booleans()):
        rule["protocol"] = draw(st.sampled_from(["TCP", "UDP"]))
        destination["ports"] = draw(PORTS)
    rule["destination"] = destination
    return rule


@st.composite
def policies(draw: st.DrawFn, index: int) -> Any:
    spec: dict[str, Any] = {
        "selector": draw(st.sampled_from(SELECTORS)),
        "tier": draw(st.sampled_from(["default", "security", "late"])),
        "types": draw(st.sampled_from([["Ingress"], ["Egress"], ["Ingress", "Egress"]])),
        "ingress": draw(st.lists(rules(), max_size=3)),
        "egress": draw(st.lists(rules(), max_size=3)),
    }
    order = draw(st.sampled_from([None, 1, 5, 5, 10]))
    if order is not None:
        spec["order"] = order
    namespace = draw(st.sampled_from((None, *NAMESPACES)))
    name = f"p{index}"
    return gnp(name, **spec) if namespace is None else np(name, namespace, **spec)


@st.composite
def states(draw: st.DrawFn) -> tuple[Cluster, PolicyState]:
    cluster = Cluster()
    for ns in NAMESPACES:
        cluster.namespace(ns, ns=ns)
    for i, key in enumerate(POD_KEYS):
        cluster.pod(key, f"10.65.{i % 3}.{i + 1}", draw(labels), node=f"node{i % 2}",
                    ports=[{"name": "http", "protocol": "TCP", "port": 81}])
    count = draw(st.integers(0, 5))
    pols = [draw(policies(i)) for i in range(count)]
    tiers = [tier("security", draw(st.sampled_from([None, 10, 2_000_000])),
                  draw(st.sampled_from(["Deny", "Pass"])))]
    return cluster, cluster.state(pols, tiers)


def flows(cluster: Cluster) -> list[Flow]:
    addresses = [cluster.ip(k) for k in POD_KEYS] + ["192.0.2.9"]
    return [Flow.of(src, dst, "TCP", port) for src in addresses for dst in addresses
            if src != dst for port in (80, 81)]


def shuffled(state: PolicyState, seed: int) -> PolicyState:
    rng = random.Random(seed)

    def mix(items: tuple[Any, ...]) -> tuple[Any, ...]:
        out = list(items)
        rng.shuffle(out)
        return tuple(out)

    return PolicyState(mix(state.endpoints), mix(state.network_sets), mix(state.policies),
                       mix(state.tiers), mix(state.profiles), state.hosts,
                       state.endpoint_to_host_action)


FAST = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(states(), st.integers(0, 2**32))
def test_deterministic_and_order_independent(cluster_state: tuple[Cluster, PolicyState],
                                             seed: int) -> None:
    cluster, state = cluster_state
    other = shuffled(state, seed)
    for packet in flows(cluster):
        verdict = evaluate(state, packet)
        assert verdict == evaluate(state, packet)
        assert verdict == evaluate(other, packet)
        assert verdict.allowed == (verdict.egress.allowed and verdict.ingress.allowed)


@FAST
@given(states(), policies(99))
def test_a_policy_that_selects_nothing_changes_nothing(
        cluster_state: tuple[Cluster, PolicyState], extra: Any) -> None:
    cluster, state = cluster_state
    nothing = dataclasses.replace(extra, selector=parse("app == 'none'"))
    more = PolicyState(state.endpoints, state.network_sets, (*state.policies, nothing),
                       state.tiers, state.profiles, state.hosts)
    for packet in flows(cluster):
        assert evaluate(more, packet) == evaluate(state, packet)
