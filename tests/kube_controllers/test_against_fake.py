"""tortie-kube-controllers end to end: Kubernetes API fake -> the program -> real etcd.

The program runs as a process (kube_controllers.main, as the console script runs it)
with a kubeconfig for tests/kube_api_fake, the one stand-in for an API server
(docs/testing.md), and a real etcd. Kubernetes objects are changed in the fake's store
(the same code path as an HTTP write: resourceVersions and watch events included); the
tests read etcd through tortie's own store, and the program's /metrics to tell a watch
that resumed from one that listed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from datastore.config import load_env
from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient
from datastore.resources import NetworkPolicy, Node, Profile, WorkloadEndpoint, parse_document
from datastore.store import ResourceStore
from ipam.allocator import Allocator
from kube_controllers.reconcile import canonical
from policy.k8s import k8s_network_policy_to_calico, namespace_to_profile
from tests.kube_api_fake import KubeApiFake
from tests.support import wait_until

from .harness import Controllers, two_nodes_with_addresses

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

LISTS = "tortie_kube_controllers_lists_total"
CHANGES = "tortie_kube_controllers_changes_total"


@pytest.fixture
def fake() -> Iterator[KubeApiFake]:
    server = KubeApiFake(bookmark_interval=0.5)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def start(fake: KubeApiFake, tmp_path: Path) -> Iterator[Callable[..., Controllers]]:
    """Start tortie-kube-controllers against the fake and the given etcd; all stopped after."""
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    started: list[Controllers] = []

    def run(etcd_url: str, name: str = "kctl", **settings: str) -> Controllers:
        c = Controllers(kubeconfig, etcd_url, tmp_path / f"{name}.log", **settings)
        started.append(c)
        return c

    yield run
    for c in started:
        c.stop()


def _profiles(store: ResourceStore) -> list[str]:
    return sorted(p.name for p in store.list(Profile))


def _wep(name: str, pod: str, node: str, ip: str, labels: dict[str, str]) -> Any:
    return parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": "blue",
                     "labels": {"projectcalico.org/namespace": "blue",
                                "projectcalico.org/orchestrator": "k8s", **labels}},
        "spec": {"orchestrator": "k8s", "pod": pod, "node": node, "endpoint": "eth0",
                 "interfaceName": f"cali{pod}", "profiles": ["kns.blue"],
                 "ipNetworks": [f"{ip}/32"]}})


NP = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
      "metadata": {"name": "web-in", "namespace": "blue"},
      "spec": {"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                            "ports": [{"protocol": "TCP", "port": 80}]}],
               "policyTypes": ["Ingress"]}}


def test_every_conversion_and_its_deletion(fake: KubeApiFake, start: Callable[..., Controllers],
                                           etcd_client: EtcdClient, etcd_endpoint: str) -> None:
    store = ResourceStore(etcd_client)
    store.create(_wep("n1-k8s-p1-eth0", "p1", "n1", "10.65.0.2", {"app": "web"}))
    fake.create("Namespace", {"metadata": {"name": "blue", "labels": {"team": "a"}}})
    fake.create("ServiceAccount", {"metadata": {"name": "web", "namespace": "blue",
                                                "labels": {"tier": "front"}}})
    fake.create("NetworkPolicy", NP)
    fake.create("Pod", {"metadata": {"name": "p1", "namespace": "blue",
                                     "labels": {"app": "web"}},
                        "spec": {"serviceAccountName": "web", "nodeName": "n1",
                                 "containers": [{"name": "c", "image": "busybox"}]}})
    start(etcd_endpoint)

    # Each object lands as the conversion `ctl apply` uses (policy.k8s) makes it.
    def landed() -> bool:
        return (store.find(NetworkPolicy, "knp.default.web-in", "blue") is not None
                and store.find(Profile, "ksa.blue.web") is not None
                and store.find(Profile, "kns.blue") is not None)
    wait_until(landed, timeout=20, what="the policy and profiles in etcd")
    stored = store.get(NetworkPolicy, "knp.default.web-in", "blue").dump()
    assert stored["spec"] == canonical(k8s_network_policy_to_calico(fake.get(
        "NetworkPolicy", "web-in", "blue")))["spec"]
    profile = store.get(Profile, "kns.blue").dump()
    assert profile["spec"] == canonical(namespace_to_profile(fake.get("Namespace", "blue")))["spec"]
    assert store.get(Profile, "ksa.blue.web").spec.labelsToApply["pcsa.tier"] == "front"
    # The pod's endpoint gets its service account (the CNI made it without one).
    wep = wait_until(lambda: (w := store.get(WorkloadEndpoint, "n1-k8s-p1-eth0", "blue"))
                     .spec.serviceAccountName == "web" and w, timeout=10, what="the WEP's SA")
    assert "ksa.blue.web" in (wep.spec.profiles or [])

    # Changes follow: a namespace label, a pod label (onto its endpoint).
    fake.patch("Namespace", {"metadata": {"name": "blue", "labels": {"team": "b"}}})
    fake.patch("Pod", {"metadata": {"name": "p1", "namespace": "blue",
                                    "labels": {"app": "db"}}})
    wait_until(lambda: store.get(Profile, "kns.blue").spec.labelsToApply.get("pcns.team") == "b",
               timeout=10, what="the namespace's new label")
    wait_until(lambda: (store.get(WorkloadEndpoint, "n1-k8s-p1-eth0", "blue").metadata.labels
                        or {}).get("app") == "db", timeout=10, what="the pod's new label")

    # Deletions: each converted object goes with its Kubernetes object.
    fake.delete("NetworkPolicy", NP)
    fake.delete("ServiceAccount", {"metadata": {"name": "web", "namespace": "blue"}})
    wait_until(lambda: store.find(NetworkPolicy, "knp.default.web-in", "blue") is None
               and store.find(Profile, "ksa.blue.web") is None, timeout=10,
               what="the policy and service-account profile removed")
    fake.delete("Pod", {"metadata": {"name": "p1", "namespace": "blue"}})
    fake.delete("Namespace", {"metadata": {"name": "blue"}})
    wait_until(lambda: store.find(Profile, "kns.blue") is None, timeout=10,
               what="the namespace's profile removed")
    # The endpoint is the CNI's: a deleted pod never deletes it here.
    assert store.find(WorkloadEndpoint, "n1-k8s-p1-eth0", "blue") is not None


def test_a_watch_broken_mid_stream_resumes_without_losing_events(
        fake: KubeApiFake, start: Callable[..., Controllers], etcd_client: EtcdClient,
        etcd_endpoint: str) -> None:
    store = ResourceStore(etcd_client)
    fake.create("Namespace", {"metadata": {"name": "a"}})
    kctl = start(etcd_endpoint, ENABLED_CONTROLLERS="namespace")
    wait_until(lambda: "kns.a" in _profiles(store), timeout=20, what="kns.a")
    assert kctl.metric(LISTS, kind="Namespace") == 1
    wait_until(lambda: fake.break_watches() > 0, timeout=5, what="an open watch to cut")
    # Changes while the watch is down and being resumed.
    fake.create("Namespace", {"metadata": {"name": "b"}})
    fake.delete("Namespace", {"metadata": {"name": "a"}})
    fake.create("Namespace", {"metadata": {"name": "c"}})
    want = ["kns.b", "kns.c", "kns.default", "kns.kube-system"]
    wait_until(lambda: _profiles(store) == want, timeout=20, what="the changes made meanwhile")
    # Resumed from the last resourceVersion, not listed again: no event was lost on the way.
    assert kctl.metric(LISTS, kind="Namespace") == 1


def test_a_410_relists_without_losing_or_duplicating(
        fake: KubeApiFake, start: Callable[..., Controllers], etcd_client: EtcdClient,
        etcd_endpoint: str) -> None:
    store = ResourceStore(etcd_client)
    fake.create("Namespace", {"metadata": {"name": "a"}})
    fake.create("Namespace", {"metadata": {"name": "keep"}})
    kctl = start(etcd_endpoint, ENABLED_CONTROLLERS="namespace")
    wait_until(lambda: {"kns.a", "kns.keep"} <= set(_profiles(store)), timeout=20, what="kns.*")
    writes = kctl.metric(CHANGES, controller="namespace", change="write")
    # The API server goes away; meanwhile Kubernetes changes and its history is compacted,
    # so the version the controllers resume from is gone: 410, and a new list.
    url = fake.url
    fake.stop()
    fake.create("Namespace", {"metadata": {"name": "b"}})
    fake.delete("Namespace", {"metadata": {"name": "a"}})
    fake.compact()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    fake.start(host, int(port))
    wait_until(lambda: kctl.metric(LISTS, kind="Namespace") == 2, timeout=30,
               what="a second list after 410")
    want = ["kns.b", "kns.default", "kns.keep", "kns.kube-system"]
    wait_until(lambda: _profiles(store) == want, timeout=20, what="etcd after the re-list")
    # One write (b) and one delete (a): the re-list rewrote nothing it already had.
    wait_until(lambda: kctl.metric(CHANGES, controller="namespace", change="delete") == 1,
               timeout=10, what="one delete")
    assert kctl.metric(CHANGES, controller="namespace", change="write") == writes + 1


def test_etcd_down_while_kubernetes_changes_is_reconciled_on_return(
        fake: KubeApiFake, start: Callable[..., Controllers], private_etcd: Any) -> None:
    client = EtcdClient(load_env({"ETCD_ENDPOINTS": private_etcd.client_url}), timeout=2)
    store = ResourceStore(client)
    fake.create("Namespace", {"metadata": {"name": "a", "labels": {"v": "1"}}})
    fake.create("NetworkPolicy", NP | {"metadata": {"name": "web-in", "namespace": "a"}})
    kctl = start(private_etcd.client_url, ENABLED_CONTROLLERS="namespace,policy")
    wait_until(lambda: store.find(NetworkPolicy, "knp.default.web-in", "a") is not None,
               timeout=20, what="the policy in etcd")
    private_etcd.stop()
    fake.create("Namespace", {"metadata": {"name": "b"}})
    fake.patch("Namespace", {"metadata": {"name": "a", "labels": {"v": "2"}}})
    fake.delete("NetworkPolicy", {"metadata": {"name": "web-in", "namespace": "a"}})
    wait_until(lambda: not kctl.ready(), timeout=20, what="readiness to drop with etcd")
    private_etcd.start()
    private_etcd.wait_healthy()

    def reconciled() -> bool:
        try:
            return (store.find(NetworkPolicy, "knp.default.web-in", "a") is None
                    and "kns.b" in _profiles(store)
                    and store.get(Profile, "kns.a").spec.labelsToApply.get("pcns.v") == "2")
        except DatastoreError:
            return False
    wait_until(reconciled, timeout=60, what="etcd to catch up with Kubernetes")
    wait_until(kctl.ready, timeout=20, what="readiness back")
    client.close()


def test_a_deleted_nodes_blocks_are_reclaimed_only_after_the_grace_period(
        fake: KubeApiFake, start: Callable[..., Controllers], etcd_client: EtcdClient,
        etcd_endpoint: str) -> None:
    grace = 3.0
    store = ResourceStore(etcd_client)
    gone, kept = two_nodes_with_addresses(etcd_client)
    for name in ("n1", "n2"):
        fake.create("Node", {"metadata": {"name": name}})
    kctl = start(etcd_endpoint, ENABLED_CONTROLLERS="node", LEAK_GRACE_PERIOD=f"{grace}s")
    wait_until(kctl.ready, timeout=20, what="the controllers ready")
    deleted = time.monotonic()
    fake.delete("Node", {"metadata": {"name": "n2"}})
    wait_until(lambda: store.find(Node, "n2") is None, timeout=grace + 20, what="n2 released")
    # Never before the grace period: a lower bound the program guarantees, not a speed.
    assert time.monotonic() - deleted >= grace
    fresh = Allocator(etcd_client)
    assert fresh.affine_blocks("n2") == []
    assert all(fresh.get_assignment(ip) is None for ip in gone)
    # The node Kubernetes still has is untouched.
    assert store.find(Node, "n1") is not None and fresh.affine_blocks("n1")
    assert all(fresh.get_assignment(ip) is not None for ip in kept)
    assert kctl.metric("tortie_kube_controllers_nodes_released_total") == 1


@pytest.mark.slow
def test_leader_election_one_leads_the_other_takes_over(
        fake: KubeApiFake, start: Callable[..., Controllers], etcd_client: EtcdClient,
        etcd_endpoint: str) -> None:
    store = ResourceStore(etcd_client)
    election = {"ENABLED_CONTROLLERS": "namespace", "TORTIE_LEADER_ELECTION": "true",
                "POD_NAMESPACE": "kube-system", "TORTIE_LEASE_NAME": "kctl-test"}
    first = start(etcd_endpoint, "first", POD_NAME="first", **election)

    def holder() -> str:
        try:
            return str(fake.get("Lease", "kctl-test", "kube-system")["spec"]["holderIdentity"])
        except Exception:  # noqa: BLE001 - no Lease yet
            return ""
    wait_until(lambda: holder() == "first", timeout=20, what="the first replica to lead")
    second = start(etcd_endpoint, "second", POD_NAME="second", **election)
    fake.create("Namespace", {"metadata": {"name": "while-first"}})
    wait_until(lambda: "kns.while-first" in _profiles(store), timeout=20, what="first's write")
    # The follower runs no controller: alive (no restarts) but not ready, and it writes nothing.
    wait_until(lambda: second.metrics(), timeout=20, what="the follower's health server")
    assert second.running() and second.live() and not second.ready()
    assert second.metric(CHANGES, controller="namespace", change="write") == 0
    assert holder() == "first"
    first.stop()
    wait_until(lambda: holder() == "second", timeout=40, what="the second to take over")
    fake.create("Namespace", {"metadata": {"name": "while-second"}})
    wait_until(lambda: "kns.while-second" in _profiles(store), timeout=20,
               what="second's write")
    assert second.metric(CHANGES, controller="namespace", change="write") >= 1
    wait_until(second.ready, timeout=20, what="the new leader ready")
