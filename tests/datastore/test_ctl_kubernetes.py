"""ctl apply/delete of plain Kubernetes objects against a real etcd: stored as
calico-kube-controllers stores them in etcd mode (policy.k8s), and refused with one
error naming the field and value, store byte-identical, when malformed."""

from __future__ import annotations

import json

import pytest
import yaml

from policy.k8s import k8s_network_policy_to_calico, namespace_to_profile

from .ctlrun import refused, run_inprocess

PREFIX = "/calico/resources/v3/projectcalico.org/"

K8S_POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-b
  namespace: x
spec:
  podSelector:
    matchLabels: {pod: a}
  ingress:
  - from:
    - podSelector:
        matchLabels: {pod: b}
    ports:
    - port: 80
      protocol: TCP
"""

NAMESPACE = """apiVersion: v1
kind: Namespace
metadata:
  name: x
  labels: {ns: x}
"""


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    return run_inprocess


def test_a_kubernetes_policy_is_stored_as_kube_controllers_stores_it(ctl, etcd_client):
    res = ctl(["apply", "-f", "-"], K8S_POLICY.encode())
    assert (res.rc, res.out) == (0, "Successfully applied 1 'NetworkPolicy' resource(s)\n")
    stored = json.loads(etcd_client.get(PREFIX + "networkpolicies/x/knp.default.allow-b").value)
    expected = k8s_network_policy_to_calico(yaml.safe_load(K8S_POLICY))
    assert stored["spec"] == expected["spec"]
    assert stored["spec"]["order"] == 1000 and stored["spec"]["types"] == ["Ingress"]
    assert stored["spec"]["selector"] == \
        "projectcalico.org/orchestrator == 'k8s' && pod == 'a'"
    shown = ctl(["get", "networkpolicy", "-n", "x"]).out.split()
    assert "knp.default.allow-b" in shown
    # Deleting the same Kubernetes manifest deletes what it was stored as.
    res = ctl(["delete", "-f", "-"], K8S_POLICY.encode())
    assert res.rc == 0, res
    assert etcd_client.get(PREFIX + "networkpolicies/x/knp.default.allow-b") is None


def test_a_namespace_becomes_its_profile(ctl, etcd_client):
    assert ctl(["apply", "-f", "-"], NAMESPACE.encode()).rc == 0
    stored = json.loads(etcd_client.get(PREFIX + "profiles/kns.x").value)
    assert stored["spec"] == namespace_to_profile(yaml.safe_load(NAMESPACE))["spec"]
    assert stored["spec"]["labelsToApply"]["pcns.ns"] == "x"


@pytest.mark.parametrize(("manifest", "message"), [
    (K8S_POLICY.replace("port: 80", "port: 70000"),
     "spec.ingress[0].ports[0].port: Invalid value: 70000"),
    (K8S_POLICY.replace("protocol: TCP", "protocol: ICMP"),
     "spec.ingress[0].ports[0].protocol: Invalid value: \"ICMP\""),
    (K8S_POLICY.replace("- from:", "- form:"), "spec.ingress[0].form"),
    (NAMESPACE.replace("{ns: x}", "{'bad key!': x}"), "metadata.labels"),
])
def test_a_malformed_kubernetes_object_is_refused_and_nothing_is_written(
        ctl, etcd_client, manifest, message):
    ctl(["apply", "-f", "-"], NAMESPACE.encode())  # something stored, to stay untouched
    refused(etcd_client, ["apply", "-f", "-"], manifest.encode(), message)
