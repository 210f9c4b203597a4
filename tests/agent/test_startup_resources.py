"""Start-up resources (TORTIE_STARTUP_RESOURCES) applied by the agent's start-up against a
real etcd: create, restart without writes, update by compare-and-swap, an operator's change
kept, a bad file refused with nothing written."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from agent.errors import StartupResourcesError
from agent.startup_resources import ANNOTATION, spec_hash
from datastore.resources import BGPConfiguration, BGPPeer, IPPool
from tests.datastore.ctlrun import dump, run_inprocess

from .conftest import make

VALUES = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: values-pool}
spec: {cidr: 10.70.0.0/16, ipipMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64600, nodeToNodeMeshEnabled: false}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.1, asNumber: 65001}
"""


@pytest.fixture
def values(tmp_path: Path):
    path = tmp_path / "startup_resources.yaml"

    def write(text: str) -> dict[str, str]:
        path.write_text(text)
        return {"TORTIE_STARTUP_RESOURCES": str(path)}

    return write


def test_first_start_creates_them_and_no_default_pool(start, store, values) -> None:
    result = start(values(VALUES))
    pool = store.get(IPPool, "values-pool")
    assert pool.spec.cidr == "10.70.0.0/16" and pool.spec.ipipMode == "Always"
    assert pool.metadata.annotations == {ANNOTATION: spec_hash(pool)}
    # Pools given at start-up come before the default-pool decision: no default pool.
    assert result.default_pool is None
    assert [p.name for p in store.list(IPPool)] == ["values-pool"]
    # The default BGPConfiguration is the one from the values, not an empty one.
    assert store.get(BGPConfiguration, "default").spec.asNumber == 64600
    assert store.get(BGPPeer, "tor").spec.asNumber == 65001
    assert result.startup_resources == {("IPPool", "values-pool"): "created",
                                        ("BGPConfiguration", "default"): "created",
                                        ("BGPPeer", "tor"): "created"}


def test_a_restart_writes_nothing(start, etcd_client, values) -> None:
    start(values(VALUES))
    revision = etcd_client.revision()
    result = start(values(VALUES))
    assert etcd_client.revision() == revision
    assert set(result.startup_resources.values()) == {"unchanged"}


def test_changed_values_update_what_start_up_wrote(start, store, values) -> None:
    start(values(VALUES))
    before = store.get(BGPPeer, "tor")
    result = start(values(VALUES.replace("asNumber: 65001", "asNumber: 65002")
                          .replace("natOutgoing: true", "natOutgoing: false")))
    peer = store.get(BGPPeer, "tor")
    assert peer.spec.asNumber == 65002
    assert peer.metadata.annotations == {ANNOTATION: spec_hash(peer)}
    assert peer.metadata.uid == before.metadata.uid  # updated in place, not re-created
    assert store.get(IPPool, "values-pool").spec.natOutgoing is False
    assert result.startup_resources[("BGPPeer", "tor")] == "updated"
    assert result.startup_resources[("BGPConfiguration", "default")] == "unchanged"


@pytest.mark.parametrize("change, message", [
    # A merge patch keeps the annotation, which no longer matches the spec.
    (["patch", "bgppeer", "tor", "-p", '{"spec": {"asNumber": 65009}}'],
     "BGPPeer 'tor' was changed since tortie applied it at start-up; keeping the stored one"),
    # apply replaces the metadata: the annotation is gone.
    (["apply", "-f", "-"],
     "BGPPeer 'tor' has no tortie.io/startup-applied annotation (someone else made or "
     "replaced it); keeping the stored one"),
])
def test_an_operators_ctl_change_survives_a_restart_with_other_values(
        start, store, values, etcd_endpoint, monkeypatch, caplog, change, message) -> None:
    start(values(VALUES))
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    manifest = (b"apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
                b"spec: {peerIP: 10.0.0.1, asNumber: 65009}\n")
    changed = run_inprocess(change, manifest)
    assert changed.rc == 0, changed
    operators = store.get(BGPPeer, "tor")
    assert operators.spec.asNumber == 65009
    with caplog.at_level(logging.INFO, logger="agent.startup_resources"):
        result = start(values(VALUES.replace("asNumber: 65001", "asNumber: 65002")))
    kept = store.get(BGPPeer, "tor")
    assert kept.spec.asNumber == 65009
    assert kept.resource_version == operators.resource_version  # not written at all
    assert result.startup_resources[("BGPPeer", "tor")] == "kept"
    assert message in caplog.text


def test_an_object_made_without_start_up_is_left_alone(start, store, values) -> None:
    make(store, "BGPPeer", "tor", {"peerIP": "10.0.0.1", "asNumber": 65100})
    result = start(values(VALUES))
    assert store.get(BGPPeer, "tor").spec.asNumber == 65100
    assert result.startup_resources[("BGPPeer", "tor")] == "kept"


def test_a_bad_file_refuses_the_start_and_writes_nothing(start, etcd_client, values) -> None:
    before = dump(etcd_client)
    env = values(VALUES.replace("asNumber: 65001", "asNumber: 65001.5"))
    with pytest.raises(StartupResourcesError) as err:
        start(env)
    assert str(err.value).startswith(
        f"start-up resources {env['TORTIE_STARTUP_RESOURCES']}: document 3: ")
    assert "BGPPeer.Spec.ASNumber" in str(err.value) and "65001.5" in str(err.value)
    assert dump(etcd_client) == before  # not even the Node


def test_a_cidr_change_of_start_ups_pool_is_refused(start, store, values) -> None:
    start(values(VALUES))
    with pytest.raises(StartupResourcesError) as err:
        start(values(VALUES.replace("10.70.0.0/16", "10.71.0.0/16")))
    assert ("IPPool 'values-pool': error with field IPPool.Spec.CIDR = '10.71.0.0/16' "
            "(IPPool CIDR cannot be modified)") in str(err.value)
    assert store.get(IPPool, "values-pool").spec.cidr == "10.70.0.0/16"


def test_a_pool_overlapping_an_operators_pool_is_refused_before_any_write(
        start, store, etcd_client, values) -> None:
    make(store, "IPPool", "ops", {"cidr": "10.70.128.0/17"})
    start({})  # the Node exists; what follows must add nothing
    before = dump(etcd_client)
    with pytest.raises(StartupResourcesError, match=r"IPPool\(values-pool\) CIDR overlaps "
                                                    r"with IPPool\(ops\)"):
        start(values(VALUES))
    assert dump(etcd_client) == before
