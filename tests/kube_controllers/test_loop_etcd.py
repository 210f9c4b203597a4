"""The controllers' loop against real etcd, fed Kubernetes events directly.

The Kubernetes side is the loop's queue here (what kube.KindWatch puts on it);
list/watch against an API server is tested with tests/kube_api_fake once it
lands. etcd is real: conversions and deletions land as documents, an etcd
outage keeps the work and repairs it on return, a deleted node is released
only after the grace period.
"""

from __future__ import annotations

import queue
from typing import Any

import pytest

from datastore.config import load_env
from datastore.errors import ConnectionFailed
from datastore.etcd import EtcdClient
from datastore.resources import NetworkPolicy, Node, Profile, WorkloadEndpoint, parse_document
from datastore.store import ResourceStore
from ipam.allocator import Allocator
from kube_controllers.kube import Changed, Listed
from kube_controllers.loop import ControllerLoop
from tests.support import wait_until

from .harness import two_nodes_with_addresses


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _loop(client: EtcdClient, clock: Clock, absent: set[str] | None = None,
          controllers: tuple[str, ...] = ("policy", "namespace", "serviceaccount",
                                          "workloadendpoint", "node")) -> ControllerLoop:
    return ControllerLoop(client, controllers, queue.Queue(), reconciler_period=300,
                          leak_grace_period=60,
                          node_exists=lambda name: name not in (absent or set()), clock=clock)


def _listed(loop: ControllerLoop, **kinds: list[dict[str, Any]]) -> None:
    for kind in loop.kinds:
        loop.handle(Listed(kind, kinds.get(kind, []), "1"))


NS = {"metadata": {"name": "blue", "labels": {"team": "a"}}}
NP = {"metadata": {"name": "deny", "namespace": "blue"}, "spec": {"podSelector": {}}}
SA = {"metadata": {"name": "web", "namespace": "blue"}}


def test_conversions_deletions_and_drift(etcd_client: EtcdClient) -> None:
    store, clock = ResourceStore(etcd_client), Clock()
    store.create(parse_document({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                                 "metadata": {"name": "kns.stale"}, "spec": {}}))
    store.create(parse_document({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
                                 "metadata": {"name": "operators"}, "spec": {}}))
    loop = _loop(etcd_client, clock)
    _listed(loop, Namespace=[NS], NetworkPolicy=[NP], ServiceAccount=[SA])
    loop.work()
    assert store.get(Profile, "kns.blue").spec.labelsToApply["pcns.team"] == "a"
    assert store.get(NetworkPolicy, "knp.default.deny", "blue").spec.selector is not None
    assert store.find(Profile, "ksa.blue.web") is not None
    assert store.find(Profile, "kns.stale") is None       # owned, not in Kubernetes: removed
    assert store.find(Profile, "operators") is not None   # not ours: untouched

    loop.handle(Changed("NetworkPolicy", "DELETED", NP))
    loop.handle(Changed("Namespace", "MODIFIED",
                        {"metadata": {"name": "blue", "labels": {"team": "b"}}}))
    loop.work()
    assert store.find(NetworkPolicy, "knp.default.deny", "blue") is None
    assert store.get(Profile, "kns.blue").spec.labelsToApply["pcns.team"] == "b"

    store.delete(Profile, "ksa.blue.web")                  # drift in etcd
    clock.now += 301                                       # the periodic resync repairs it
    loop.work()
    assert store.find(Profile, "ksa.blue.web") is not None


def test_a_relist_drops_what_vanished_without_duplicates(etcd_client: EtcdClient) -> None:
    store, clock = ResourceStore(etcd_client), Clock()
    loop = _loop(etcd_client, clock, controllers=("namespace",))
    ns2 = {"metadata": {"name": "green"}}
    _listed(loop, Namespace=[NS, ns2])
    loop.work()
    # After a 410 the watch lists again: green was deleted while we could not watch.
    loop.handle(Listed("Namespace", [NS], "50"))
    loop.work()
    names = sorted(p.name for p in store.list(Profile))
    assert names == ["kns.blue"]


def test_etcd_down_while_kubernetes_changes_is_reconciled_on_return(private_etcd: Any) -> None:
    client = EtcdClient(load_env({"ETCD_ENDPOINTS": private_etcd.client_url}), timeout=2)
    clock = Clock()
    loop = _loop(client, clock, controllers=("namespace",))
    _listed(loop, Namespace=[NS])
    loop.work()
    private_etcd.stop()
    loop.handle(Changed("Namespace", "ADDED", {"metadata": {"name": "red"}}))
    loop.handle(Changed("Namespace", "DELETED", NS))
    loop.work()                                            # fails: kept, back-off set
    assert loop.retry_at > clock.now
    assert not loop.health.summary()["components"]["etcd"]["ready"]
    private_etcd.start()
    private_etcd.wait_healthy()

    def reconciled() -> list[str]:
        clock.now = max(clock.now, loop.retry_at)
        try:
            loop.work()
            return sorted(p.name for p in ResourceStore(client).list(Profile))
        except ConnectionFailed:
            return []
    assert wait_until(lambda: reconciled() == ["kns.red"], timeout=30, what="profiles")
    client.close()


def test_pod_labels_patch_the_existing_endpoint_only(etcd_client: EtcdClient) -> None:
    store, clock = ResourceStore(etcd_client), Clock()
    store.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": "n1-k8s-p1-eth0", "namespace": "blue",
                     "labels": {"projectcalico.org/namespace": "blue",
                                "projectcalico.org/orchestrator": "k8s", "app": "a"}},
        "spec": {"orchestrator": "k8s", "pod": "p1", "node": "n1", "endpoint": "eth0",
                 "profiles": ["kns.blue"], "ipNetworks": ["10.65.0.2/32"],
                 "interfaceName": "cali0123456789a"}}))
    loop = _loop(etcd_client, clock, controllers=("workloadendpoint",))
    pod = {"metadata": {"name": "p1", "namespace": "blue", "labels": {"app": "a"}}, "spec": {}}
    _listed(loop, Pod=[pod, {"metadata": {"name": "p2", "namespace": "blue"}, "spec": {}}])
    loop.work()
    before = store.get(WorkloadEndpoint, "n1-k8s-p1-eth0", "blue").resource_version
    loop.handle(Changed("Pod", "MODIFIED", {**pod, "metadata": {**pod["metadata"],
                                                                "labels": {"app": "b"}}}))
    loop.work()
    wep = store.get(WorkloadEndpoint, "n1-k8s-p1-eth0", "blue")
    assert wep.metadata.labels is not None and wep.metadata.labels["app"] == "b"
    assert wep.resource_version != before
    assert len(store.list(WorkloadEndpoint)) == 1          # p2 has no endpoint: none created


def test_deleted_node_released_only_after_grace(etcd_client: EtcdClient) -> None:
    store, clock = ResourceStore(etcd_client), Clock()
    held, kept = two_nodes_with_addresses(etcd_client)
    allocator = Allocator(etcd_client)
    assert allocator.affine_blocks("n2")
    absent: set[str] = set()
    loop = _loop(etcd_client, clock, absent, controllers=("node",))
    n1, n2 = {"metadata": {"name": "n1"}}, {"metadata": {"name": "n2"}}
    _listed(loop, Node=[n1, n2])
    loop.work()
    absent.add("n2")
    loop.handle(Changed("Node", "DELETED", n2))
    loop.work()
    clock.now += 59
    loop.work()
    assert store.find(Node, "n2") is not None              # inside the grace period: kept
    assert Allocator(etcd_client).affine_blocks("n2")
    clock.now += 1
    loop.work()
    assert store.find(Node, "n2") is None
    fresh = Allocator(etcd_client)
    assert fresh.affine_blocks("n2") == []
    assert all(fresh.get_assignment(ip) is None for ip in held)
    assert store.find(Node, "n1") is not None               # the node that exists: untouched
    assert all(fresh.get_assignment(ip) is not None for ip in kept)


def test_a_node_the_server_still_has_is_never_released(etcd_client: EtcdClient) -> None:
    store, clock = ResourceStore(etcd_client), Clock()
    store.create(parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "n3"},
        "spec": {"orchRefs": [{"orchestrator": "k8s", "nodeName": "n3"}]}}))
    loop = _loop(etcd_client, clock, absent=set(), controllers=("node",))
    _listed(loop, Node=[])                                 # our cache says gone...
    loop.work()
    clock.now += 61
    loop.work()
    assert store.find(Node, "n3") is not None              # ...the server says it exists


pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
