"""Every conformance case (tests/netpol_cases.py) against the evaluation model.

Each case's manifests go through what `ctl apply -f` does with them (Kubernetes
objects converted by policy.k8s, every document validated by datastore.resources),
the model's nine pods are WorkloadEndpoints as the CNI plugin writes them, and
policy.evaluate decides every ordered pair on every port and protocol the case checks
(SCTP, protocol 132, in the SCTP cases). A mismatch
prints upstream's truth tables. The same cases run with real traffic in the lab
(tests/e2e/test_netpol_cases.py); here the expectations and the model check each other.
"""

from __future__ import annotations

from typing import Any

import pytest

from datastore.resources import Resource, parse_document
from policy.evaluate import Flow, evaluate
from policy.k8s import kubernetes_object_to_calico
from policy.model import compile_state
from tests.netpol_cases import (
    CASES,
    KEYS,
    WITH_SCTP,
    Case,
    Context,
    compare,
    named_ports,
    namespaces,
)

POOL = "10.247.0.0/16"
IPS = {key: f"10.247.{i // 3}.{10 + i % 3}" for i, key in enumerate(KEYS)}
CONTEXT = Context(IPS, POOL)

Key = tuple[str, str | None, str]


def endpoint(key: str, labels: dict[str, str]) -> dict[str, Any]:
    ns, pod = key.split("/")
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
            "metadata": {"name": f"node1-k8s-{pod}-eth0", "namespace": ns, "labels": labels},
            "spec": {"orchestrator": "k8s", "node": "node1", "pod": pod, "endpoint": "eth0",
                     "interfaceName": f"cali{ns}{pod}0000000000"[:15],
                     "profiles": [f"kns.{ns}"], "ipNetworks": [f"{IPS[key]}/32"],
                     "ports": named_ports()}}


def validated(doc: dict[str, Any]) -> Resource:
    """What `ctl apply -f` stores for one manifest document."""
    return parse_document(kubernetes_object_to_calico(doc) or doc)


def ident(res: Resource) -> Key:
    return (res.kind_name, res.namespace, res.name)


def run_case(case: Case) -> list[str]:
    store: dict[Key, Resource] = {}
    for doc in namespaces():
        res = validated(doc)
        store[ident(res)] = res
    pod_labels = {key: {"pod": key.split("/")[1]} for key in KEYS}
    failures = []
    for number, step in enumerate(case.steps, start=1):
        for doc in step.apply(CONTEXT):
            res = validated(doc)
            store[ident(res)] = res
        for doc in step.delete(CONTEXT):
            store.pop(ident(validated(doc)), None)
        pod_labels.update({key: dict(labels) for key, labels in step.relabel.items()})
        endpoints = [parse_document(endpoint(key, pod_labels[key])) for key in KEYS]
        state = compile_state([*store.values(), *endpoints])
        for port, proto in case.combos:
            observed = {(a, b): evaluate(state, Flow.of(IPS[a], IPS[b], proto, port)).allowed
                        for a in KEYS for b in KEYS if a != b}
            wrong, tables = compare(KEYS, step.expect(port, proto), observed)
            if wrong:
                failures.append(f"step {number}, {proto}/{port}:\n{tables}")
    return failures


def test_there_are_at_least_forty_cases_with_both_origins() -> None:
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)
    assert sum(c.origin == "calico" for c in CASES) >= 10
    assert sum(c.origin != "calico" for c in CASES) >= 25


def test_the_sctp_cases_check_sctp_and_only_they_do() -> None:
    with_sctp = {c.name for c in CASES if c.protocols == WITH_SCTP}
    assert with_sctp == {"default-deny-ingress", "sctp-does-not-allow-tcp", "sctp-allows-sctp"}
    assert all(c.protocols == ("TCP", "UDP") for c in CASES if c.name not in with_sctp)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_the_model_agrees_with_the_expectation(case: Case) -> None:
    failures = run_case(case)
    assert not failures, f"{case.name} ({case.origin}):\n\n" + "\n\n".join(failures)
