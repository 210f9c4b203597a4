"""agent.startup_resources: the pure decision per object, the spec hash, reading the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.errors import StartupResourcesError
from agent.startup_resources import (
    ANNOTATION,
    Create,
    Keep,
    Refuse,
    Unchanged,
    Update,
    check_pool_overlaps,
    decide,
    load_startup_resources,
    spec_hash,
)
from datastore.resources import IPPool, Resource, parse_document


def res(kind: str, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None,
        revision: str | None = None) -> Resource:
    meta: dict[str, Any] = {"name": name}
    if annotations is not None:
        meta["annotations"] = annotations
    if revision is not None:
        meta["resourceVersion"] = revision
    return parse_document({"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": meta,
                           "spec": spec})


POOL = {"cidr": "10.70.0.0/16", "ipipMode": "Always"}


def stored_by_startup(kind: str, name: str, spec: dict[str, Any]) -> Resource:
    plain = res(kind, name, spec)
    return res(kind, name, spec, {ANNOTATION: spec_hash(plain)}, revision="7")


def test_absent_is_created_with_the_hash_of_its_spec() -> None:
    wanted = res("IPPool", "values", POOL)
    action = decide(None, wanted)
    assert isinstance(action, Create)
    assert action.resource.metadata.annotations == {ANNOTATION: spec_hash(wanted)}
    assert action.resource.dump()["spec"] == wanted.dump()["spec"]


def test_equal_spec_is_left_alone_whoever_made_it() -> None:
    wanted = res("IPPool", "values", POOL)
    assert decide(stored_by_startup("IPPool", "values", POOL), wanted) == Unchanged()
    assert decide(res("IPPool", "values", POOL, revision="3"), wanted) == Unchanged()


def test_startups_unchanged_object_is_updated_on_its_revision() -> None:
    stored = stored_by_startup("BGPPeer", "tor", {"peerIP": "10.0.0.1", "asNumber": 65001})
    wanted = res("BGPPeer", "tor", {"peerIP": "10.0.0.1", "asNumber": 65002})
    action = decide(stored, wanted)
    assert isinstance(action, Update)
    assert action.resource.resource_version == 7  # the compare-and-swap
    assert action.resource.metadata.annotations == {ANNOTATION: spec_hash(wanted)}
    assert action.resource.dump()["spec"]["asNumber"] == 65002


def test_an_operators_change_is_kept() -> None:
    written = stored_by_startup("IPPool", "values", POOL)
    # The operator changed the spec with ctl; the annotation still has the old hash.
    changed = res("IPPool", "values", {**POOL, "ipipMode": "Never"},
                  written.metadata.annotations, revision="9")
    action = decide(changed, res("IPPool", "values", {**POOL, "natOutgoing": True}))
    assert action == Keep("was changed since tortie applied it at start-up")


def test_an_object_start_up_never_made_is_kept() -> None:
    operator = res("BGPPeer", "tor", {"peerIP": "10.0.0.1", "asNumber": 65001}, revision="4")
    action = decide(operator, res("BGPPeer", "tor", {"peerIP": "10.0.0.1", "asNumber": 65002}))
    assert action == Keep("has no tortie.io/startup-applied annotation (someone else made or "
                          "replaced it)")


def test_the_empty_default_bgp_configuration_takes_the_values() -> None:
    empty = res("BGPConfiguration", "default", {}, revision="2")
    wanted = res("BGPConfiguration", "default", {"asNumber": 64600})
    assert isinstance(decide(empty, wanted), Update)
    # Not any other empty BGPConfiguration: only the one start-up creates.
    other = res("BGPConfiguration", "node.n1", {}, revision="2")
    assert isinstance(decide(other, res("BGPConfiguration", "node.n1", {"asNumber": 64600})),
                      Keep)


def test_a_cidr_change_of_startups_pool_is_refused_with_field_and_value() -> None:
    stored = stored_by_startup("IPPool", "values", POOL)
    action = decide(stored, res("IPPool", "values", {**POOL, "cidr": "10.71.0.0/16"}))
    assert isinstance(action, Refuse)
    assert [str(e) for e in action.errors] == [
        "error with field IPPool.Spec.CIDR = '10.71.0.0/16' (IPPool CIDR cannot be modified)"]


def test_the_spec_hash_is_of_canonical_json() -> None:
    a = res("IPPool", "p", {"cidr": "10.70.0.0/16", "ipipMode": "Always"})
    b = res("IPPool", "p", {"ipipMode": "Always", "cidr": "10.70.0.0/16"}, {"x": "y"})
    assert spec_hash(a) == spec_hash(b)  # key order and metadata do not matter
    assert spec_hash(a) != spec_hash(res("IPPool", "p", POOL | {"natOutgoing": True}))
    assert len(spec_hash(a)) == 64


def test_overlaps_with_stored_pools_of_other_names() -> None:
    operator = res("IPPool", "ops", {"cidr": "10.70.128.0/17"}, revision="3")
    wanted = res("IPPool", "values", POOL)
    found = check_pool_overlaps([(wanted, decide(None, wanted))], [operator])
    assert [(p.name, str(e)) for p, e in found] == [(
        "values", "error with field IPPool.Spec.CIDR = '10.70.0.0/16' (IPPool(values) CIDR "
        "overlaps with IPPool(ops) CIDR 10.70.128.0/17)")]
    # A pool that is only kept writes nothing, so it cannot overlap.
    assert check_pool_overlaps([(wanted, Keep("x"))], [operator]) == []


# -- the file ----------------------------------------------------------------------------------

GOOD = """\
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: values}
spec: {cidr: 10.70.0.0/16, ipipMode: Always}
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 64600}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: 10.0.0.1, asNumber: 65001}
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "startup_resources.yaml"
    path.write_text(text)
    return str(path)


def test_reads_the_three_kinds(tmp_path: Path) -> None:
    loaded = load_startup_resources(write(tmp_path, GOOD))
    assert [(r.kind_name, r.name) for r in loaded] == [
        ("IPPool", "values"), ("BGPConfiguration", "default"), ("BGPPeer", "tor")]
    assert isinstance(loaded[0], IPPool)


def test_a_file_with_no_documents_is_no_resources(tmp_path: Path) -> None:
    assert load_startup_resources(write(tmp_path, "# nothing in values\n---\n")) == []
    assert load_startup_resources(write(tmp_path, "")) == []


@pytest.mark.parametrize("text, message", [
    (GOOD + "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata: {name: n1}\n"
     "spec: {}\n",
     "document 4: error with field kind = 'Node' (only IPPool, BGPConfiguration, BGPPeer "
     "may be given)"),
    (GOOD.replace("10.70.0.0/16", "10.70.0.1/16"),
     "document 1: error with field IPPool.Spec.CIDR = '10.70.0.1/16' (IPPool CIDR is not strictly masked)"),
    (GOOD.replace("asNumber: 65001", "asNumber: 65001, colour: red"),
     "document 3: field in document is not recognized or is in the wrong location: spec.colour"),
    (GOOD + "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {name: two}\n"
     "spec: {cidr: 10.70.1.0/24}\n",
     "document 4: error with field IPPool.Spec.CIDR = '10.70.1.0/24' (IPPool(two) CIDR "
     "overlaps with IPPool(values) CIDR 10.70.0.0/16)"),
    (GOOD + "---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata: {name: tor}\n"
     "spec: {peerIP: 10.0.0.2, asNumber: 65001}\n",
     "document 4: duplicate BGPPeer name 'tor' (also in document 3)"),
    ("kind: [", "invalid YAML"),
])
def test_a_bad_document_names_file_index_field_and_value(tmp_path: Path, text: str,
                                                          message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(StartupResourcesError) as err:
        load_startup_resources(path)
    assert f"start-up resources {path}: " in str(err.value)
    assert message in str(err.value)


def test_a_missing_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(StartupResourcesError, match="cannot read .*missing.yaml"):
        load_startup_resources(str(tmp_path / "missing.yaml"))
