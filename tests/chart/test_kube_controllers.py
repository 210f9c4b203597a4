"""The chart's tortie-kube-controllers, rendered by the real Helm for every value set: its
Deployment takes its settings and etcd from the values and the node's ConfigMap/Secret,
probes the program's own --live/--ready, and its RBAC is exactly the least it needs
(list/watch of the five kinds, get of nodes, a namespaced Lease Role only with election)."""

from __future__ import annotations

from typing import Any

from kube_controllers.config import load

from .chart import Rendered, chart_defaults, containers, env_value, find
from .test_render import _merged

KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment")
NAME = "tortie-kube-controllers"


def _rules(obj: dict[str, Any]) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every rule, flattened, so the grant reads as a set."""
    return {(g, r, v) for rule in obj["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def test_the_controllers_run_as_the_values_say(rendered: Rendered) -> None:
    kc = _merged(rendered.values, chart_defaults())["kubeControllers"]
    if not kc["enabled"]:
        assert [o for o in rendered.objects if o["metadata"]["name"] == NAME] == []
        return
    deploy = find(rendered.objects, "Deployment", NAME)
    assert deploy is not None
    assert deploy["spec"]["replicas"] == kc["replicas"]
    spec = deploy["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == kc["serviceAccountName"]
    assert spec.get("hostNetwork") is not True  # no host access: API server and etcd only
    c = dict(containers(rendered.objects))[f"{NAME}/{NAME}"]
    assert c["livenessProbe"]["exec"]["command"] == [NAME, "--live"]
    assert c["readinessProbe"]["exec"]["command"] == [NAME, "--ready"]
    # The program's own reader accepts the environment the chart gives it, and reads
    # from it what the values said.
    env = {e["name"]: env_value(rendered.objects, c, e["name"]) or "" for e in c["env"]
           if "fieldRef" not in e.get("valueFrom", {})}
    config = load(env)
    assert config.enabled_controllers == tuple(kc["controllers"])
    assert config.health_port == kc["healthPort"] == c["ports"][0]["containerPort"]
    election = kc["leaderElection"] or kc["replicas"] > 1
    assert config.leader_election is election
    # The etcd endpoints are the node's, from the one ConfigMap.
    node = dict(containers(rendered.objects))["tortie-node/tortie-node"]
    assert env_value(rendered.objects, c, "ETCD_ENDPOINTS") == \
        env_value(rendered.objects, node, "ETCD_ENDPOINTS")
    if election:
        fields = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"]
                  if "fieldRef" in e.get("valueFrom", {})}
        assert fields == {"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}


def test_the_controllers_rbac_is_the_least_they_need(rendered: Rendered) -> None:
    kc = _merged(rendered.values, chart_defaults())["kubeControllers"]
    if not kc["enabled"]:
        for kind in (*KINDS, "Role", "RoleBinding"):
            assert find(rendered.objects, kind, NAME) is None, kind
        return
    account = find(rendered.objects, "ServiceAccount", kc["serviceAccountName"])
    assert account is not None and account["automountServiceAccountToken"] is True
    role = find(rendered.objects, "ClusterRole", NAME)
    assert role is not None
    watched = {("", r) for r in ("namespaces", "pods", "serviceaccounts", "nodes")}
    watched.add(("networking.k8s.io", "networkpolicies"))
    assert _rules(role) == ({(g, r, v) for g, r in watched for v in ("list", "watch")}
                            | {("", "nodes", "get")})
    binding = find(rendered.objects, "ClusterRoleBinding", NAME)
    assert binding is not None
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": NAME}
    subject = {"kind": "ServiceAccount", "name": kc["serviceAccountName"],
               "namespace": account["metadata"]["namespace"]}
    assert binding["subjects"] == [subject]
    lease_role = find(rendered.objects, "Role", NAME)
    if not (kc["leaderElection"] or kc["replicas"] > 1):
        assert lease_role is None and find(rendered.objects, "RoleBinding", NAME) is None
        return
    assert lease_role is not None
    assert lease_role["metadata"]["namespace"] == account["metadata"]["namespace"]
    assert _rules(lease_role) == {("coordination.k8s.io", "leases", v)
                                  for v in ("get", "create", "update")}
    lease_binding = find(rendered.objects, "RoleBinding", NAME)
    assert lease_binding is not None and lease_binding["subjects"] == [subject]
    assert lease_binding["roleRef"]["kind"] == "Role"
