"""What each controller should write: (Kubernetes objects, etcd documents) -> changes.

Owns the pure half of every controller: which etcd resource a Kubernetes object
becomes (through policy.k8s, the one conversion `ctl apply` also uses), which
etcd resources a controller owns, the plan that makes etcd match (writes and
deletes), a pod's WorkloadEndpoint fields, and the node controller's grace
period bookkeeping.

Invariants:
- Pure: no I/O, clock or logging; inputs are never changed.
- A controller only ever deletes what it owns: `knp.default.*` NetworkPolicies
  (policy), `kns.*` Profiles (namespace), `ksa.*` Profiles (serviceaccount).
  The workloadendpoint controller never creates or deletes: the CNI does.
- Documents are compared in the datastore's canonical form (parsed and dumped),
  so an unchanged object plans nothing and a restart writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from datastore.errors import ValidationError
from datastore.resources import NetworkPolicy, Node, Profile, Resource, WorkloadEndpoint
from datastore.resources import parse_document as parse_calico
from policy.k8s import (
    POLICY_NAME_PREFIX,
    KubernetesObjectError,
    k8s_network_policy_to_calico,
    namespace_to_profile,
    service_account_to_profile,
)
from policy.pod_endpoint import (
    K8S_ORCHESTRATOR,
    NAMESPACE_PROFILE_PREFIX,
    SERVICE_ACCOUNT_PROFILE_PREFIX,
    pod_endpoint_labels,
    pod_endpoint_profiles,
)

__all__ = [
    "Change", "Ref", "Unconvertible", "converted", "desired_documents", "endpoint_update",
    "k8s_key", "nodes_to_release", "owned_ref", "plan", "ref_of",
]

# (Calico kind, namespace or None, name): one etcd resource.
Ref = tuple[str, str | None, str]
# (namespace or "", name): one Kubernetes object.
K8sKey = tuple[str, str]

# The Kubernetes kind each converting controller watches.
SOURCE_KIND: Final = {
    "policy": "NetworkPolicy", "namespace": "Namespace", "serviceaccount": "ServiceAccount",
}
TARGET_CLASS: Final[dict[str, type[Resource]]] = {
    "policy": NetworkPolicy, "namespace": Profile, "serviceaccount": Profile,
}


@dataclass(frozen=True)
class Change:
    """Put `doc` (a canonical Calico document) or, with doc None, delete `ref`.

    `revision` is the mod revision the plan was made against (the CAS guard),
    None when the resource was absent.
    """

    ref: Ref
    doc: dict[str, Any] | None
    revision: int | None = None


@dataclass(frozen=True)
class Unconvertible:
    """A Kubernetes object the conversion refused (the API server would have too)."""

    key: K8sKey
    error: str


def k8s_key(obj: Mapping[str, Any]) -> K8sKey:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def ref_of(res: Resource) -> Ref:
    return res.kind_name, res.namespace if res.namespaced else None, res.name


def target_ref(controller: str, key: K8sKey) -> Ref:
    """The etcd resource a Kubernetes object of this key becomes (also once it is gone)."""
    namespace, name = key
    if controller == "policy":
        return "NetworkPolicy", namespace, POLICY_NAME_PREFIX + name
    if controller == "namespace":
        return "Profile", None, NAMESPACE_PROFILE_PREFIX + name
    if controller == "serviceaccount":
        return "Profile", None, f"{SERVICE_ACCOUNT_PROFILE_PREFIX}{namespace}.{name}"
    raise KeyError(controller)


def owned_ref(controller: str, ref: Ref) -> bool:
    kind, _, name = ref
    if controller == "policy":
        return kind == "NetworkPolicy" and name.startswith(POLICY_NAME_PREFIX)
    if controller == "namespace":
        return kind == "Profile" and name.startswith(NAMESPACE_PROFILE_PREFIX)
    if controller == "serviceaccount":
        return kind == "Profile" and name.startswith(SERVICE_ACCOUNT_PROFILE_PREFIX)
    return False


def converted(controller: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical Calico document for one Kubernetes object; ValueError if refused."""
    if controller == "policy":
        doc = k8s_network_policy_to_calico(obj)
    elif controller == "namespace":
        doc = namespace_to_profile(obj)
    elif controller == "serviceaccount":
        doc = service_account_to_profile(obj)
    else:
        raise KeyError(controller)
    return canonical(doc)


def canonical(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A document as the datastore stores it, without the fields etcd or the store set."""
    out = parse_calico(dict(doc)).dump()
    meta = out.get("metadata", {})
    for stamp in ("uid", "creationTimestamp", "resourceVersion", "generation"):
        meta.pop(stamp, None)
    return out


def desired_documents(
    controller: str, objects: Iterable[Mapping[str, Any]]
) -> tuple[dict[Ref, dict[str, Any]], list[Unconvertible]]:
    """Every Kubernetes object's document by ref, and the objects that could not be converted."""
    desired: dict[Ref, dict[str, Any]] = {}
    refused: list[Unconvertible] = []
    for obj in objects:
        try:
            doc = converted(controller, obj)
        except (KubernetesObjectError, ValidationError) as exc:
            refused.append(Unconvertible(k8s_key(obj), str(exc)))
            continue
        desired[target_ref(controller, k8s_key(obj))] = doc
    return desired, refused


def _same(desired: Mapping[str, Any], stored: Mapping[str, Any]) -> bool:
    stored_meta, desired_meta = stored.get("metadata", {}), desired.get("metadata", {})
    return (stored.get("spec") == desired.get("spec")
            and stored_meta.get("labels") == desired_meta.get("labels")
            and stored_meta.get("annotations") == desired_meta.get("annotations"))


def plan(
    controller: str,
    desired: Mapping[Ref, dict[str, Any]],
    stored: Mapping[Ref, tuple[dict[str, Any], int]],
    only: Iterable[Ref] | None = None,
) -> list[Change]:
    """The changes that make etcd (`stored`: ref -> (document, mod revision)) match `desired`.

    Only refs the controller owns are ever deleted. With `only`, just those refs
    are considered (one Kubernetes object changed); without, everything (a resync).
    """
    refs = set(only) if only is not None else set(desired) | set(stored)
    changes: list[Change] = []
    for ref in sorted(refs, key=lambda r: (r[0], r[1] or "", r[2])):
        want = desired.get(ref)
        have = stored.get(ref)
        if want is not None:
            if have is None:
                changes.append(Change(ref, want))
            elif not _same(want, have[0]):
                changes.append(Change(ref, want, have[1]))
        elif have is not None and owned_ref(controller, ref):
            changes.append(Change(ref, None, have[1]))
    return changes


# --- workloadendpoint ----------------------------------------------------------------------


def pod_of_endpoint(wep: WorkloadEndpoint) -> K8sKey | None:
    """The pod a Kubernetes WorkloadEndpoint belongs to; None for any other endpoint."""
    if wep.spec.orchestrator != K8S_ORCHESTRATOR or not wep.spec.pod:
        return None
    return wep.namespace or "", wep.spec.pod


def endpoint_update(pod: Mapping[str, Any], wep: WorkloadEndpoint) -> dict[str, Any] | None:
    """The WorkloadEndpoint document with the pod's labels and service account; None if equal.

    As Calico's pod controller (converter.MergeWorkloadEndpointData): labels and
    spec.serviceAccountName follow the pod; the profiles follow the service
    account as the CNI derived them. Nothing else of the endpoint changes.
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = wep.namespace or ""
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or None
    account = str(account) if account else None
    doc = wep.dump()
    doc["metadata"]["labels"] = pod_endpoint_labels(namespace, labels, account)
    doc["spec"]["profiles"] = pod_endpoint_profiles(namespace, account)
    if account:
        doc["spec"]["serviceAccountName"] = account
    else:
        doc["spec"].pop("serviceAccountName", None)
    if (doc["metadata"]["labels"] == (wep.metadata.labels or {})
            and doc["spec"].get("serviceAccountName") == wep.spec.serviceAccountName
            and doc["spec"]["profiles"] == (wep.spec.profiles or [])):
        return None
    return doc


# --- node ----------------------------------------------------------------------------------


def kubernetes_node_name(node: Node) -> str | None:
    """The Kubernetes Node a tortie Node stands for (its `k8s` orchRef); None: not Kubernetes's.

    Calico's getK8sNodeName: a Node without that reference is never touched.
    """
    for ref in node.spec.orchRefs or ():
        if ref.orchestrator == K8S_ORCHESTRATOR:
            return ref.nodeName or None
    return None


@dataclass(frozen=True)
class NodeVerdict:
    release: list[str] = field(default_factory=list)  # tortie Node names, grace period over
    missing_since: dict[str, float] = field(default_factory=dict)  # still waiting
    next_due: float | None = None  # when the first waiting one is due


def nodes_to_release(
    kubernetes_nodes: Iterable[str],
    tortie_nodes: Mapping[str, str | None],
    missing_since: Mapping[str, float],
    now: float,
    grace: float,
) -> NodeVerdict:
    """Which tortie Nodes (name -> Kubernetes node name or None) to release now.

    A tortie Node whose Kubernetes Node is absent starts a clock the first time
    that is seen; it is released once absent for `grace` seconds. A Node seen
    again, or one that is not Kubernetes's, forgets its clock.
    """
    present = set(kubernetes_nodes)
    release: list[str] = []
    waiting: dict[str, float] = {}
    for name, k8s_name in sorted(tortie_nodes.items()):
        if k8s_name is None or k8s_name in present:
            continue
        since = missing_since.get(name, now)
        if now - since >= grace:
            release.append(name)
        else:
            waiting[name] = since
    next_due = min((since + grace for since in waiting.values()), default=None)
    return NodeVerdict(release, waiting, next_due)
