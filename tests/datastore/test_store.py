"""ResourceStore against a real etcd: keys, CAS semantics, races."""

import json
import threading

import pytest

from datastore.errors import (
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    UpdateConflict,
    ValidationError,
)
from datastore.resources import IPAMConfiguration, IPPool, parse_document
from datastore.store import ResourceStore


def make_pool(name, cidr, **spec):
    return parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                           "metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


@pytest.fixture
def store(etcd_client):
    return ResourceStore(etcd_client)


def test_create_writes_calico_key_and_revision(store, etcd_client):
    created = store.create(make_pool("p1", "10.1.0.0/16"))
    kv = etcd_client.get("/calico/resources/v3/projectcalico.org/ippools/p1")
    assert kv is not None and created.resource_version == kv.mod_revision
    doc = json.loads(kv.value)
    assert doc["metadata"]["uid"] and doc["metadata"]["creationTimestamp"]
    assert "resourceVersion" not in doc["metadata"]
    with pytest.raises(ResourceAlreadyExists, match=r"^resource already exists: IPPool\(p1\) with error: <nil>$"):
        store.create(make_pool("p1", "10.1.0.0/16"))


def test_update_is_compare_and_swap(store):
    created = store.create(make_pool("p1", "10.1.0.0/16"))
    changed = created.model_copy(update={"spec": created.spec.model_copy(update={"disabled": True})})
    updated = store.update(changed)
    assert updated.resource_version > created.resource_version
    with pytest.raises(UpdateConflict, match=r"update conflict: IPPool\(p1\)"):
        store.update(changed)  # stale resourceVersion
    assert store.get(IPPool, "p1").metadata.uid == created.metadata.uid


def test_cidr_and_block_size_are_immutable(store):
    created = store.create(make_pool("p1", "10.1.0.0/16"))
    moved = created.model_copy(update={"spec": created.spec.model_copy(update={"cidr": "10.2.0.0/16"})})
    with pytest.raises(ValidationError, match="IPPool CIDR cannot be modified"):
        store.update(moved)
    resized = created.model_copy(update={"spec": created.spec.model_copy(update={"blockSize": 28})})
    with pytest.raises(ValidationError, match="IPPool BlockSize cannot be modified"):
        store.update(resized)


def test_overlap_refused_with_calico_message(store):
    store.create(make_pool("p1", "10.1.0.0/16"))
    with pytest.raises(ValidationError) as err:
        store.create(make_pool("p2", "10.1.128.0/17"))
    assert "IPPool(p2) CIDR overlaps with IPPool(p1) CIDR 10.1.0.0/16" in str(err.value)


def test_delete_is_exact_and_guarded(store, etcd_client):
    store.create(make_pool("p1", "10.1.0.0/16"))
    store.create(make_pool("p10", "10.2.0.0/16"))
    created = store.get(IPPool, "p1")
    with pytest.raises(UpdateConflict):
        store.delete(IPPool, "p1", resource_version=created.resource_version - 1)
    store.delete(IPPool, "p1")
    assert store.find(IPPool, "p10") is not None  # not a prefix delete
    with pytest.raises(ResourceDoesNotExist):
        store.delete(IPPool, "p1")


def test_two_writers_same_revision_exactly_one_wins(store):
    created = store.create(make_pool("p1", "10.1.0.0/16"))
    results: list[str] = []
    barrier = threading.Barrier(2)

    def writer(selector: str) -> None:
        mine = created.model_copy(update={"spec": created.spec.model_copy(
            update={"nodeSelector": selector})})
        barrier.wait()
        try:
            store.update(mine)
            results.append(f"won:{selector}")
        except UpdateConflict as exc:
            results.append(f"conflict:{exc}")

    threads = [threading.Thread(target=writer, args=(s,)) for s in ("has(a)", "has(b)")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r.startswith("won:")]
    losers = [r for r in results if r.startswith("conflict:")]
    assert len(winners) == 1 and len(losers) == 1
    assert "update conflict: IPPool(p1)" in losers[0]
    # No lost update: what is stored is exactly the winner's write.
    assert store.get(IPPool, "p1").spec.nodeSelector == winners[0].split(":", 1)[1]


def test_concurrent_overlapping_creates_cannot_both_land(store):
    """The range compare over every pool key makes the overlap check race-free."""
    for round_ in range(10):
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def creator(name, cidr, barrier=barrier, outcomes=outcomes):
            barrier.wait()
            try:
                store.create(make_pool(name, cidr))
                outcomes.append("ok")
            except (ValidationError, UpdateConflict):
                outcomes.append("refused")

        a = threading.Thread(target=creator, args=(f"a{round_}", f"10.{round_}.0.0/16"))
        b = threading.Thread(target=creator, args=(f"b{round_}", f"10.{round_}.128.0/17"))
        for t in (a, b):
            t.start()
        for t in (a, b):
            t.join()
        assert sorted(outcomes) == ["ok", "refused"]


def test_ipam_configuration_lives_at_calico_ipam_key(store, etcd_client):
    cfg = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPAMConfiguration",
                          "metadata": {"name": "default"},
                          "spec": {"strictAffinity": True, "maxBlocksPerHost": 4}})
    store.apply(cfg)
    raw = json.loads(etcd_client.get("/calico/ipam/v2/config").value)
    assert raw == {"strict_affinity": True, "auto_allocate_blocks": True, "maxBlocksPerHost": 4}
    assert store.get(IPAMConfiguration, "default").spec.maxBlocksPerHost == 4


def test_patch_merges_and_validates(store):
    store.create(make_pool("p1", "10.1.0.0/16"))
    patched = store.patch(IPPool, "p1", {"spec": {"disabled": True, "natOutgoing": True}})
    assert patched.spec.disabled and patched.spec.natOutgoing
    with pytest.raises(ValidationError):
        store.patch(IPPool, "p1", {"spec": {"ipipMode": "Always", "vxlanMode": "Always"}})
    assert store.get(IPPool, "p1").spec.ipipMode == "Never"
