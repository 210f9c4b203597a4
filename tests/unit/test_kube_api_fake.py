"""The Kubernetes API fake (tests/kube_api_fake), driven through the real `kubernetes` client.

Each behaviour the controllers and the CNI plugin rely on is exercised the way they use it:
the official client's list_*, watch.Watch().stream, create/replace/patch/delete and the
coordination Lease calls, over HTTP on loopback. Errors are checked as the Status objects
the client receives. No Kubernetes API server can run here; this fake is the stand-in
(docs/testing.md), so these tests are what keeps it honest.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.kube_api_fake import KubeApiFake
from tests.support import wait_until

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


@pytest.fixture
def fake() -> Iterator[KubeApiFake]:
    server = KubeApiFake(bookmark_interval=0.2)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(fake: KubeApiFake, tmp_path: Path) -> client.ApiClient:
    return config.new_client_from_config(str(fake.kubeconfig(tmp_path / "kubeconfig")))


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


def pod(name: str, labels: dict[str, str] | None = None, node: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "busybox"}]}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def status_of(err: ApiException) -> dict[str, Any]:
    body = json.loads(err.body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1"
    assert body["status"] == "Failure" and body["code"] == err.status
    return body


class Collector:
    """Runs one Watch().stream in a thread and keeps every event (or the error)."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.watch = watch.Watch()
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self.thread.start()

    def _run(self, func: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for event in self.watch.stream(func, *args, **kwargs):
                self.events.put(event)
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            self.error = exc
        finally:
            self.ended.set()

    def drain(self) -> list[dict[str, Any]]:
        while not self.events.empty():
            self.seen.append(self.events.get())
        return self.seen

    def changes(self) -> list[tuple[str, str]]:
        return [(e["type"], e["raw_object"]["metadata"].get("name", ""))
                for e in self.drain() if e["type"] != "BOOKMARK"]

    def stop(self) -> None:
        self.watch.stop()


# -- resource versions, metadata, lists --------------------------------------------------


def test_every_write_takes_the_next_global_resource_version(
        fake: KubeApiFake, core: client.CoreV1Api) -> None:
    before = int(core.list_namespace().metadata.resource_version)
    created = core.create_namespaced_pod("default", pod("web"))
    node = core.create_node({"metadata": {"name": "node1"}})
    patched = core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"a": "b"}}})
    versions = [int(o.metadata.resource_version) for o in (created, node, patched)]
    assert versions == [before + 1, before + 2, before + 3]
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    assert created.metadata.uid == patched.metadata.uid
    assert core.list_namespaced_pod("default").metadata.resource_version == str(before + 3)
    assert fake.resource_version == before + 3


def test_an_update_that_changes_nothing_writes_nothing(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("same", {"app": "x"}))
    again = core.patch_namespaced_pod("same", "default", {"metadata": {"labels": {"app": "x"}}})
    assert again.metadata.resource_version == created.metadata.resource_version


def test_generate_name_gives_a_fresh_name(core: client.CoreV1Api) -> None:
    first = core.create_namespaced_pod("default", {"metadata": {"generateName": "job-"},
                                                   "spec": pod("x")["spec"]})
    second = core.create_namespaced_pod("default", {"metadata": {"generateName": "job-"},
                                                    "spec": pod("x")["spec"]})
    assert first.metadata.name.startswith("job-") and len(first.metadata.name) == 9
    assert first.metadata.name != second.metadata.name


def test_namespaced_cluster_scoped_and_all_namespace_paths(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("default", pod("a"))
    core.create_namespaced_pod("team", pod("b"))
    core.create_node({"metadata": {"name": "node1"}})
    everywhere = core.list_pod_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [
        ("default", "a"), ("team", "b")]
    assert [p.metadata.name for p in core.list_namespaced_pod("team").items] == ["b"]
    assert [n.metadata.name for n in core.list_node().items] == ["node1"]
    assert core.read_node("node1").metadata.namespace is None
    assert core.read_namespaced_pod("b", "team").metadata.namespace == "team"


def test_pagination_serves_one_snapshot_and_expires_with_compaction(
        fake: KubeApiFake, core: client.CoreV1Api) -> None:
    for name in ("a", "b", "c"):
        core.create_namespaced_pod("default", pod(name))
    first = core.list_namespaced_pod("default", limit=2)
    assert [p.metadata.name for p in first.items] == ["a", "b"]
    assert first.metadata.remaining_item_count == 1
    core.delete_namespaced_pod("c", "default")  # after the snapshot: still in its rest
    rest = core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    assert [p.metadata.name for p in rest.items] == ["c"]
    assert rest.metadata.resource_version == first.metadata.resource_version
    fake.compact()
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("default", limit=2, _continue=first.metadata._continue)
    assert err.value.status == 410 and status_of(err.value)["reason"] == "Expired"


def test_list_at_an_exact_resource_version(fake: KubeApiFake, core: client.CoreV1Api) -> None:
    old = core.create_namespaced_pod("default", pod("a", {"v": "1"}))
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"v": "2"}}})
    then = core.list_namespaced_pod("default", resource_version=old.metadata.resource_version,
                                    resource_version_match="Exact")
    assert then.items[0].metadata.labels == {"v": "1"}
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("default", resource_version=str(fake.resource_version + 5))
    assert err.value.status == 504


# -- errors as Status objects ----------------------------------------------------------


def test_create_of_an_existing_name_is_409_already_exists(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("web"))
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", pod("web"))
    status = status_of(err.value)
    assert (status["code"], status["reason"]) == (409, "AlreadyExists")
    assert status["message"] == 'pods "web" already exists'
    assert status["details"] == {"name": "web", "kind": "pods"}


def test_update_with_a_stale_resource_version_is_409_conflict(core: client.CoreV1Api) -> None:
    stale = core.create_namespaced_pod("default", pod("web"))
    core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"a": "1"}}})
    stale.metadata.labels = {"a": "2"}
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("web", "default", stale)
    status = status_of(err.value)
    assert (status["code"], status["reason"]) == (409, "Conflict")
    assert status["message"] == (
        'Operation cannot be fulfilled on pods "web": the object has been modified; please '
        "apply your changes to the latest version and try again")
    assert core.read_namespaced_pod("web", "default").metadata.labels == {"a": "1"}
    fresh = core.read_namespaced_pod("web", "default")
    fresh.metadata.labels = {"a": "2"}
    assert core.replace_namespaced_pod("web", "default", fresh).metadata.labels == {"a": "2"}


def test_get_and_delete_of_a_missing_object_are_404(core: client.CoreV1Api,
                                                    api: client.ApiClient) -> None:
    for call in (lambda: core.read_namespaced_pod("nope", "default"),
                 lambda: core.delete_namespaced_pod("nope", "default"),
                 lambda: core.read_node("nope")):
        with pytest.raises(ApiException) as err:
            call()
        status = status_of(err.value)
        assert (status["code"], status["reason"]) == (404, "NotFound")
        assert status["message"].endswith('"nope" not found')
    with pytest.raises(ApiException) as err:
        client.NetworkingV1Api(api).read_namespaced_network_policy("nope", "default")
    assert status_of(err.value)["message"] == (
        'networkpolicies.networking.k8s.io "nope" not found')


def test_no_object_in_a_namespace_that_does_not_exist(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("ghost", pod("web"))
    assert status_of(err.value)["message"] == 'namespaces "ghost" not found'


def test_bad_names_and_labels_are_422_naming_field_and_value(core: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", pod("Bad_Name"))
    status = status_of(err.value)
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert "metadata.name" in status["message"] and '"Bad_Name"' in status["message"]
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", pod("ok", {"app": "not valid!"}))
    assert '"not valid!"' in status_of(err.value)["message"]
    assert core.list_namespaced_pod("default").items == []


def test_delete_preconditions_and_what_delete_returns(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("web"))
    with pytest.raises(ApiException) as err:
        core.delete_namespaced_pod("web", "default", body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(resource_version="1")))
    assert status_of(err.value)["reason"] == "Conflict"
    deleted = core.delete_namespaced_pod("web", "default")
    assert deleted.metadata.uid == created.metadata.uid
    core.create_node({"metadata": {"name": "node1"}})
    assert core.delete_node("node1")["status"] == "Success"  # the client returns the dict


def test_a_deleted_namespace_takes_its_objects(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("team", pod("a"))
    core.create_namespaced_service_account("team", {"metadata": {"name": "sa"}})
    core.delete_namespace("team")
    assert core.list_pod_for_all_namespaces().items == []
    assert core.list_service_account_for_all_namespaces().items == []


def test_a_bearer_token_is_required_when_set(tmp_path: Path) -> None:
    with KubeApiFake(token="s3cret") as server:
        good = client.CoreV1Api(config.new_client_from_config(
            str(server.kubeconfig(tmp_path / "good"))))
        assert [n.metadata.name for n in good.list_namespace().items] == [
            "default", "kube-system"]
        conf = client.Configuration(host=server.url)
        with pytest.raises(ApiException) as err:
            client.CoreV1Api(client.ApiClient(conf)).list_namespace()
        assert err.value.status == 401


# -- patches -----------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [MERGE, STRATEGIC])
def test_label_patches_add_change_and_remove(core: client.CoreV1Api, content_type: str) -> None:
    core.create_namespaced_pod("default", pod("web", {"app": "x", "tier": "front"}))
    patched = core.patch_namespaced_pod(
        "web", "default", {"metadata": {"labels": {"app": "y", "tier": None, "new": "1"}}},
        _content_type=content_type)
    assert patched.metadata.labels == {"app": "y", "new": "1"}
    assert patched.spec.containers[0].name == "main"


def test_a_patch_with_a_stale_resource_version_is_409(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("web"))
    core.patch_namespaced_pod("web", "default", {"metadata": {"labels": {"a": "1"}}})
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod("web", "default", {"metadata": {
            "labels": {"a": "2"}, "resourceVersion": created.metadata.resource_version}})
    assert status_of(err.value)["reason"] == "Conflict"


def test_what_the_fake_does_not_merge_it_refuses(core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("web"))
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod("web", "default", {"spec": {"containers": [
            {"name": "side", "image": "x"}]}})  # the client sends dicts as strategic
    assert err.value.status == 415 and "spec.containers" in status_of(err.value)["message"]
    with pytest.raises(ApiException) as err:
        core.patch_namespaced_pod("web", "default", [
            {"op": "add", "path": "/metadata/labels/a", "value": "1"}])  # a JSON patch
    assert err.value.status == 415
    assert core.read_namespaced_pod("web", "default").spec.containers[0].name == "main"


# -- selectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "names"), [
    ("app=web", ["a", "b"]),
    ("app==web", ["a", "b"]),
    ("app!=web", ["c", "d"]),  # `!=` also selects objects without the key
    ("app in (web,db)", ["a", "b", "c"]),
    ("app notin (web)", ["c", "d"]),
    ("tier", ["a", "c"]),
    ("!tier", ["b", "d"]),
    ("app=web,tier", ["a"]),
    ("app in (web, db),!tier", ["b"]),
    ("", ["a", "b", "c", "d"]),
])
def test_label_selectors(core: client.CoreV1Api, selector: str, names: list[str]) -> None:
    for name, labels in (("a", {"app": "web", "tier": "front"}), ("b", {"app": "web"}),
                         ("c", {"app": "db", "tier": "back"}), ("d", {})):
        core.create_namespaced_pod("default", pod(name, labels))
    found = core.list_namespaced_pod("default", label_selector=selector)
    assert [p.metadata.name for p in found.items] == names


def test_a_selector_that_does_not_parse_is_400(core: client.CoreV1Api) -> None:
    for kwargs in ({"label_selector": "app in web"}, {"label_selector": "app=bad value"},
                   {"field_selector": "spec.hostname=x"}):
        with pytest.raises(ApiException) as err:
            core.list_namespaced_pod("default", **kwargs)
        assert status_of(err.value)["reason"] == "BadRequest"
        assert next(iter(kwargs.values())).split("=")[0].split(" ")[0] in (
            status_of(err.value)["message"])


def test_field_selectors(core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    core.create_namespaced_pod("default", pod("a", node="node1"))
    core.create_namespaced_pod("default", pod("b", node="node2"))
    core.create_namespaced_pod("team", pod("a", node="node1"))
    by_node = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node1")
    assert [(p.metadata.namespace, p.metadata.name) for p in by_node.items] == [
        ("default", "a"), ("team", "a")]
    by_name = core.list_pod_for_all_namespaces(
        field_selector="metadata.name=a,metadata.namespace!=team")
    assert [(p.metadata.namespace, p.metadata.name) for p in by_name.items] == [("default", "a")]
    assert [n.metadata.name for n in core.list_namespace(
        field_selector="metadata.name==team").items] == ["team"]


# -- watch -------------------------------------------------------------------------------


def test_watch_from_a_version_replays_then_follows(core: client.CoreV1Api) -> None:
    start = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod("a"))
    core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"x": "1"}}})
    collector = Collector(core.list_namespaced_pod, "default", resource_version=start)
    try:
        wait_until(lambda: len(collector.changes()) == 2, what="the replayed events")
        core.create_namespaced_pod("default", pod("b"))
        core.delete_namespaced_pod("a", "default")
        core.create_namespace({"metadata": {"name": "other"}})
        core.create_namespaced_pod("other", pod("c"))  # another namespace: not this watch's
        wait_until(lambda: len(collector.changes()) == 4, what="the live events")
    finally:
        collector.stop()
    assert collector.changes() == [("ADDED", "a"), ("MODIFIED", "a"), ("ADDED", "b"),
                                   ("DELETED", "a")]
    versions = [int(e["raw_object"]["metadata"]["resourceVersion"]) for e in collector.seen]
    assert versions == sorted(versions) and len(set(versions)) == 4


def test_watch_without_a_version_starts_with_the_current_objects(
        core: client.CoreV1Api) -> None:
    core.create_namespaced_pod("default", pod("a"))
    core.create_namespaced_pod("default", pod("b"))
    collector = Collector(core.list_namespaced_pod, "default")
    try:
        wait_until(lambda: len(collector.changes()) == 2, what="synthetic ADDED events")
        core.create_namespaced_pod("default", pod("c"))
        wait_until(lambda: len(collector.changes()) == 3, what="the live event")
    finally:
        collector.stop()
    assert collector.changes() == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


def test_a_label_change_moves_an_object_in_and_out_of_a_selected_watch(
        core: client.CoreV1Api) -> None:
    start = core.create_namespaced_pod("default", pod("a", {"role": "db"})).metadata
    collector = Collector(core.list_namespaced_pod, "default", label_selector="role=web",
                          resource_version=start.resource_version)
    try:
        core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"role": "web"}}})
        core.patch_namespaced_pod("a", "default", {"metadata": {"annotations": {"n": "1"}}})
        last = core.patch_namespaced_pod("a", "default", {"metadata": {"labels": {"role": "x"}}})
        wait_until(lambda: len(collector.changes()) == 3, what="three events")
    finally:
        collector.stop()
    assert collector.changes() == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    gone = collector.seen[-1]["raw_object"]
    assert gone["metadata"]["labels"] == {"role": "web"}  # its last matching content
    assert gone["metadata"]["resourceVersion"] == last.metadata.resource_version


def test_a_watch_from_before_compaction_gets_410_expired(
        fake: KubeApiFake, core: client.CoreV1Api, api: client.ApiClient) -> None:
    old = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", pod("a"))
    fake.compact()
    response = core.list_namespaced_pod("default", watch=True, resource_version=old,
                                        _preload_content=False)
    try:
        lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    finally:
        response.release_conn()
    assert len(lines) == 1 and lines[0]["type"] == "ERROR"
    status = lines[0]["object"]
    assert (status["kind"], status["status"], status["code"], status["reason"]) == (
        "Status", "Failure", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {old} ")
    with pytest.raises(ApiException) as err:  # what the client makes of it
        for _ in watch.Watch().stream(core.list_namespaced_pod, "default",
                                      resource_version=old):
            pass
    assert err.value.status == 410
    current = str(fake.resource_version)  # from the compaction point on, all is there
    assert list(watch.Watch().stream(core.list_namespaced_pod, "default",
                                     resource_version=current, timeout_seconds=1)) == []


def test_bookmarks_carry_only_the_resource_version(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", pod("a"))
    with_bookmarks = Collector(core.list_namespaced_pod, "default", allow_watch_bookmarks=True,
                               resource_version=created.metadata.resource_version)
    without = Collector(core.list_namespaced_pod, "default",
                        resource_version=created.metadata.resource_version, timeout_seconds=1)
    try:
        bookmark = wait_until(lambda: next((e for e in with_bookmarks.drain()
                                            if e["type"] == "BOOKMARK"), None),
                              what="a BOOKMARK event")
    finally:
        with_bookmarks.stop()
    assert bookmark["raw_object"] == {"kind": "Pod", "apiVersion": "v1", "metadata": {
        "resourceVersion": created.metadata.resource_version}}
    wait_until(without.ended.is_set, what="the watch with timeoutSeconds=1 to end")
    assert without.error is None and without.drain() == []


def test_timeout_seconds_ends_the_stream_cleanly(core: client.CoreV1Api) -> None:
    events = list(watch.Watch().stream(core.list_namespace, timeout_seconds=1))
    assert [e["raw_object"]["metadata"]["name"] for e in events] == ["default", "kube-system"]


def test_a_broken_watch_resumes_from_its_last_version_without_loss_or_duplicates(
        fake: KubeApiFake, core: client.CoreV1Api) -> None:
    start = core.list_namespaced_pod("default").metadata.resource_version
    first = Collector(core.list_namespaced_pod, "default", resource_version=start,
                      timeout_seconds=300)
    core.create_namespaced_pod("default", pod("a"))
    wait_until(lambda: first.changes() == [("ADDED", "a")], what="the first event")
    assert wait_until(fake.break_watches, what="an open watch to cut") == 1
    wait_until(first.ended.is_set, what="the cut watch to end")
    assert first.error is not None  # cut mid-stream, not a clean end
    core.create_namespaced_pod("default", pod("b"))  # while no watch is open
    resume_at = first.seen[-1]["raw_object"]["metadata"]["resourceVersion"]
    second = Collector(core.list_namespaced_pod, "default", resource_version=resume_at)
    try:
        core.create_namespaced_pod("default", pod("c"))
        wait_until(lambda: len(second.changes()) == 2, what="the resumed events")
    finally:
        second.stop()
    assert second.changes() == [("ADDED", "b"), ("ADDED", "c")]


def test_a_deleted_namespace_sends_its_objects_deletions_first(
        core: client.CoreV1Api) -> None:
    core.create_namespace({"metadata": {"name": "team"}})
    start = core.create_namespaced_pod("team", pod("a")).metadata.resource_version
    pods = Collector(core.list_pod_for_all_namespaces, resource_version=start)
    namespaces = Collector(core.list_namespace, resource_version=start)
    try:
        core.delete_namespace("team")
        wait_until(lambda: pods.changes() and namespaces.changes(), what="both deletions")
    finally:
        pods.stop()
        namespaces.stop()
    assert pods.changes() == [("DELETED", "a")]
    assert namespaces.changes() == [("DELETED", "team")]
    assert (int(pods.seen[0]["raw_object"]["metadata"]["resourceVersion"])
            < int(namespaces.seen[0]["raw_object"]["metadata"]["resourceVersion"]))


def test_direct_changes_reach_watchers_like_requests(fake: KubeApiFake,
                                                     core: client.CoreV1Api) -> None:
    rv = core.list_namespace().metadata.resource_version
    collector = Collector(core.list_namespace, resource_version=rv)
    try:
        fake.create("Namespace", {"metadata": {"name": "team", "labels": {"a": "1"}}})
        fake.patch("Namespace", {"metadata": {"name": "team", "labels": {"a": None}}})
        fake.delete("namespaces", {"metadata": {"name": "team"}})
        wait_until(lambda: len(collector.changes()) == 3, what="three events")
    finally:
        collector.stop()
    assert collector.changes() == [("ADDED", "team"), ("MODIFIED", "team"),
                                   ("DELETED", "team")]
    assert collector.seen[1]["raw_object"]["metadata"].get("labels") == {}


# -- the kinds the controllers use -------------------------------------------------------


def test_network_policies_and_service_accounts(api: client.ApiClient,
                                               core: client.CoreV1Api) -> None:
    net = client.NetworkingV1Api(api)
    created = net.create_namespaced_network_policy("default", {
        "metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    assert created.kind == "NetworkPolicy" and created.api_version == "networking.k8s.io/v1"
    assert [p.metadata.name for p in net.list_network_policy_for_all_namespaces().items] == [
        "deny"]
    assert net.delete_namespaced_network_policy("deny", "default")["status"] == "Success"
    core.create_namespaced_service_account("default", {"metadata": {
        "name": "app", "labels": {"team": "a"}}})
    assert core.read_namespaced_service_account("app", "default").metadata.labels == {
        "team": "a"}


def test_lease_get_create_replace_as_leader_election_uses_it(api: client.ApiClient) -> None:
    leases = client.CoordinationV1Api(api)
    with pytest.raises(ApiException) as err:
        leases.read_namespaced_lease("tortie-kube-controllers", "kube-system")
    assert err.value.status == 404
    mine = leases.create_namespaced_lease("kube-system", {
        "metadata": {"name": "tortie-kube-controllers"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15,
                 "acquireTime": "2026-01-01T00:00:00.000000Z",
                 "renewTime": "2026-01-01T00:00:00.000000Z"}})
    theirs = leases.read_namespaced_lease("tortie-kube-controllers", "kube-system")
    mine.spec.renew_time = "2026-01-01T00:00:05.000000Z"
    renewed = leases.replace_namespaced_lease("tortie-kube-controllers", "kube-system", mine)
    assert renewed.spec.holder_identity == "a"
    theirs.spec.holder_identity = "b"  # read before the renewal: must lose
    with pytest.raises(ApiException) as err:
        leases.replace_namespaced_lease("tortie-kube-controllers", "kube-system", theirs)
    assert status_of(err.value)["reason"] == "Conflict"
    assert status_of(err.value)["message"].startswith(
        'Operation cannot be fulfilled on leases.coordination.k8s.io "tortie-kube-controllers"')


def test_runs_as_a_program(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    with subprocess.Popen(
            [sys.executable, "-m", "tests.kube_api_fake", "--listen", "127.0.0.1:0",
             "--kubeconfig", str(kubeconfig), "--namespace", "default"],
            stdout=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2]) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            core = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
            assert [n.metadata.name for n in core.list_namespace().items] == ["default"]
        finally:
            proc.terminate()  # by its PID: the process this test started
            assert proc.wait(timeout=30) == 0


def test_bad_listen_address_is_refused_naming_it() -> None:
    done = subprocess.run([sys.executable, "-m", "tests.kube_api_fake", "--listen", "nope"],
                          capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 2 and "'nope'" in done.stderr
