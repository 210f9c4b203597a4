"""The conformance model in the lab (tests/e2e/netpol.py): without policy, everything is allowed.

The groundwork of issue 15's conformance cases: 9 pods in namespaces x, y, z on 3 nodes
across 2 subnets, each serving TCP and UDP on 80 and 81, every ordered pair probed.
Without policy every pair is allowed (the namespaces' profiles allow all); the first
enforced case is upstream's default deny ingress.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from .netpol import NetpolLab, Reachability, netpol_lab
from .pods import ctl

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def world(lab_env: None) -> Iterator[NetpolLab]:
    with netpol_lab() as built:
        yield built


def test_the_endpoints_carry_the_models_labels_and_named_ports(world: NetpolLab) -> None:
    weps = json.loads(ctl(world.lab, ["get", "workloadendpoints", "-A", "-o", "json"]))["items"]
    by_key = {f"{w['metadata']['namespace']}/{w['spec']['pod']}": w for w in weps}
    assert sorted(by_key) == sorted(world.model.keys)
    for pod in world.model.pods:
        wep = by_key[pod.key]
        assert wep["metadata"]["labels"] == {
            "pod": pod.name, "projectcalico.org/namespace": pod.namespace,
            "projectcalico.org/orchestrator": "k8s"}
        assert wep["spec"]["profiles"] == [f"kns.{pod.namespace}"]
        assert wep["spec"]["node"] == pod.node
        assert {(p["name"], p["protocol"], p["port"]) for p in wep["spec"]["ports"]} == {
            ("serve-80-tcp", "tcp", 80), ("serve-80-udp", "udp", 80),
            ("serve-81-tcp", "tcp", 81), ("serve-81-udp", "udp", 81)}
    assert len({p.node for p in world.model.pods}) == 3  # both subnets hold pods


def test_without_policy_every_pair_is_allowed_tcp_and_udp_on_both_ports(
        world: NetpolLab) -> None:
    world.check(Reachability(world.model.keys))


def test_a_pod_label_change_reaches_its_endpoint(world: NetpolLab) -> None:
    world.label_pod("x/a", {"pod": "a2", "tier": "web"})
    try:
        out = ctl(world.lab, ["get", "workloadendpoints", "-n", "x", "-o", "json"])
        labels = {w["spec"]["pod"]: w["metadata"]["labels"] for w in json.loads(out)["items"]}
        assert labels["a"]["pod"] == "a2" and labels["a"]["tier"] == "web"
    finally:
        world.label_pod("x/a", {"pod": "a"}, remove=["tier"])


def test_the_harness_reports_a_wrong_expectation_with_the_tables(world: NetpolLab) -> None:
    """The check itself: expecting x/a isolated (nothing enforces that yet) must fail, naming
    the cells, so a later case that passes has really been compared."""
    expected = Reachability(world.model.keys).expect_all_ingress("x/a", False)
    with pytest.raises(AssertionError) as err:
        world.check(expected, ports=[80], protocols=["TCP"], timeout=0)
    text = str(err.value)
    assert "TCP/80:" in text and "comparison (8 wrong of 72):" in text
    assert "x/b -> x/a: x/a" in text  # the probe's answer: it reached x/a


DEFAULT_DENY_INGRESS_X = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: x}
spec:
  podSelector: {}
  policyTypes: [Ingress]
"""


def test_default_deny_ingress_isolates_namespace_x_until_deleted(world: NetpolLab) -> None:
    # Upstream's "should support a 'default-deny-ingress' policy": nothing reaches x's
    # pods, from any namespace (x itself included); everything else is untouched.
    ctl(world.lab, ["apply", "-f", "-"], stdin=DEFAULT_DENY_INGRESS_X)
    try:
        denied = Reachability(world.model.keys)
        for key in world.model.keys:
            if key.startswith("x/"):
                denied.expect_all_ingress(key, False)
        world.check(denied, ports=[80], protocols=["TCP"])
    finally:
        ctl(world.lab, ["delete", "-f", "-"], stdin=DEFAULT_DENY_INGRESS_X)
    world.check(Reachability(world.model.keys), ports=[80], protocols=["TCP"])
