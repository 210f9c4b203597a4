"""kube_controllers' pure parts: settings, the per-controller plans, endpoints, node grace."""

from __future__ import annotations

import pytest

from datastore.resources import Node, WorkloadEndpoint, parse_document
from kube_controllers import reconcile
from kube_controllers.config import CONTROLLERS, SETTINGS, ConfigError, load

NS = {"metadata": {"name": "blue", "labels": {"team": "a"}}}
SA = {"metadata": {"name": "web", "namespace": "blue", "labels": {"tier": "fe"}}}
NP = {"metadata": {"name": "deny", "namespace": "blue"}, "spec": {"podSelector": {}}}


def test_defaults_are_calicos() -> None:
    config = load({})
    assert config.enabled_controllers == CONTROLLERS
    assert config.reconciler_period == 300 and config.leak_grace_period == 900
    assert load({"ENABLED_CONTROLLERS": "profile,node"}).enabled_controllers == (
        "namespace", "node")
    assert {s.name for s in SETTINGS} >= {"ENABLED_CONTROLLERS", "RECONCILER_PERIOD",
                                          "COMPACTION_PERIOD", "HEALTH_ENABLED", "LOG_LEVEL",
                                          "DATASTORE_TYPE", "KUBECONFIG"}


@pytest.mark.parametrize(("name", "value"), [
    ("ENABLED_CONTROLLERS", "policy,ipam-gc"), ("RECONCILER_PERIOD", "5 minutes"),
    ("RECONCILER_PERIOD", "0s"), ("HEALTH_ENABLED", "maybe"), ("DATASTORE_TYPE", "kubernetes"),
    ("LOG_LEVEL", "loud"), ("TORTIE_HEALTH_PORT", "70000"),
])
def test_bad_settings_name_variable_and_value(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load({name: value})
    assert name in str(err.value) and repr(value) in str(err.value)


@pytest.mark.parametrize(("controller", "obj", "ref"), [
    ("policy", NP, ("NetworkPolicy", "blue", "knp.default.deny")),
    ("namespace", NS, ("Profile", None, "kns.blue")),
    ("serviceaccount", SA, ("Profile", None, "ksa.blue.web")),
])
def test_each_conversion_and_its_deletion(controller: str, obj: dict, ref: tuple) -> None:
    desired, refused = reconcile.desired_documents(controller, [obj])
    assert refused == [] and list(desired) == [ref]
    changes = reconcile.plan(controller, desired, {})
    assert [(c.ref, c.revision) for c in changes] == [(ref, None)]
    stored = {ref: (desired[ref], 7)}
    assert reconcile.plan(controller, desired, stored) == []  # unchanged: nothing to write
    gone = reconcile.plan(controller, {}, stored)
    assert [(c.ref, c.doc, c.revision) for c in gone] == [(ref, None, 7)]


def test_a_change_is_written_against_the_revision_read() -> None:
    desired, _ = reconcile.desired_documents("namespace", [NS])
    old, _ = reconcile.desired_documents("namespace", [{"metadata": {"name": "blue"}}])
    ref = ("Profile", None, "kns.blue")
    [change] = reconcile.plan("namespace", desired, {ref: (old[ref], 42)})
    assert change.revision == 42
    assert change.doc["spec"]["labelsToApply"]["pcns.team"] == "a"


def test_only_owned_resources_are_deleted() -> None:
    stored = {("Profile", None, "ops-profile"): ({}, 3), ("Profile", None, "ksa.blue.web"): ({}, 4),
              ("NetworkPolicy", "blue", "native"): ({}, 5)}
    assert reconcile.plan("namespace", {}, stored) == []
    assert reconcile.plan("policy", {}, stored) == []
    assert [c.ref for c in reconcile.plan("serviceaccount", {}, stored)] == [
        ("Profile", None, "ksa.blue.web")]


def test_an_invalid_object_is_refused_and_named() -> None:
    bad = {"metadata": {"name": "x", "namespace": "blue"}, "spec": {"podSelectr": {}}}
    desired, refused = reconcile.desired_documents("policy", [bad, NP])
    assert len(desired) == 1
    assert refused[0].key == ("blue", "x") and "podSelectr" in refused[0].error


def _wep(labels: dict[str, str], account: str | None = None) -> WorkloadEndpoint:
    spec: dict = {"orchestrator": "k8s", "pod": "p1", "node": "n1", "endpoint": "eth0",
                  "profiles": ["kns.blue"], "ipNetworks": ["10.65.0.2/32"],
                  "interfaceName": "cali0123456789a"}
    if account:
        spec["serviceAccountName"] = account
        spec["profiles"].append(f"ksa.blue.{account}")
    res = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
                          "metadata": {"name": "n1-k8s-p1-eth0", "namespace": "blue",
                                       "labels": labels, "resourceVersion": "9"},
                          "spec": spec})
    assert isinstance(res, WorkloadEndpoint)
    return res


def test_pod_labels_and_account_reach_the_endpoint() -> None:
    base = {"projectcalico.org/namespace": "blue", "projectcalico.org/orchestrator": "k8s"}
    wep = _wep({**base, "app": "old"})
    pod = {"metadata": {"name": "p1", "namespace": "blue", "labels": {"app": "new"}},
           "spec": {"serviceAccountName": "web"}}
    doc = reconcile.endpoint_update(pod, wep)
    assert doc is not None
    assert doc["metadata"]["labels"] == {**base, "app": "new",
                                         "projectcalico.org/serviceaccount": "web"}
    assert doc["spec"]["serviceAccountName"] == "web"
    assert doc["spec"]["profiles"] == ["kns.blue", "ksa.blue.web"]
    assert doc["spec"]["ipNetworks"] == ["10.65.0.2/32"]  # nothing else changes
    same = _wep({**base, "app": "new", "projectcalico.org/serviceaccount": "web"}, "web")
    assert reconcile.endpoint_update(pod, same) is None


def test_node_released_only_after_grace_and_only_kubernetes_nodes() -> None:
    tortie = {"n1": "n1", "n2": "n2", "bare": None}
    first = reconcile.nodes_to_release({"n1"}, tortie, {}, now=100.0, grace=60)
    assert first.release == [] and first.missing_since == {"n2": 100.0}
    assert first.next_due == 160.0
    early = reconcile.nodes_to_release({"n1"}, tortie, first.missing_since, 159.0, 60)
    assert early.release == []
    due = reconcile.nodes_to_release({"n1"}, tortie, first.missing_since, 160.0, 60)
    assert due.release == ["n2"]
    back = reconcile.nodes_to_release({"n1", "n2"}, tortie, first.missing_since, 170.0, 60)
    assert back.release == [] and back.missing_since == {}


def test_kubernetes_node_name_is_the_k8s_orchref() -> None:
    node = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                           "metadata": {"name": "host1"},
                           "spec": {"orchRefs": [{"orchestrator": "k8s", "nodeName": "k1"}]}})
    assert isinstance(node, Node)
    assert reconcile.kubernetes_node_name(node) == "k1"
