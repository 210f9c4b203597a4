"""`ctl label`'s decisions (ctl/label.py), without a datastore: calicoctl's words."""

from __future__ import annotations

import pytest

from ctl.common import CtlFailure
from ctl.label import _with_labels, parse_label_arg, relabel
from datastore.errors import ValidationError
from datastore.resources import Node, WorkloadEndpoint, parse_document

WHAT = "nodes node1"


@pytest.mark.parametrize("arg, remove, expected", [
    ("cluster=frontend", False, ("cluster", "frontend")),
    ("cluster=", False, ("cluster", "")),
    ("a=b=c", False, ("a", "b=c")),  # split at the first '=', as calicoctl does
    ("cluster", True, ("cluster", "")),
])
def test_parse_label_arg(arg: str, remove: bool, expected: tuple[str, str]) -> None:
    assert parse_label_arg(arg, remove) == expected


def test_a_label_without_equals_is_invalid() -> None:
    with pytest.raises(CtlFailure, match="^invalid label cluster$"):
        parse_label_arg("cluster", remove=False)


def test_set_update_and_remove_messages() -> None:
    assert relabel({}, "a", "1", remove=False, overwrite=False, what=WHAT) == (
        {"a": "1"}, "Successfully set label a on nodes node1")
    assert relabel({"a": "1"}, "a", "2", remove=False, overwrite=True, what=WHAT) == (
        {"a": "2"}, "Successfully updated label a on nodes node1")
    # The same value again needs no --overwrite (calicoctl counts it as an update).
    assert relabel({"a": "1"}, "a", "1", remove=False, overwrite=False, what=WHAT)[1] == (
        "Successfully updated label a on nodes node1")
    assert relabel({"a": "1", "b": "2"}, "a", "", remove=True, overwrite=False, what=WHAT) == (
        {"b": "2"}, "Successfully removed label a from nodes node1")


def test_refusals_name_the_key() -> None:
    with pytest.raises(CtlFailure) as err:
        relabel({"a": "1"}, "a", "2", remove=False, overwrite=False, what=WHAT)
    assert str(err.value) == ("failed to update label of nodes node1, key a is already present. "
                              "please use '--overwrite' to set a new value")
    with pytest.raises(CtlFailure) as err:
        relabel({}, "a", "", remove=True, overwrite=False, what=WHAT)
    assert str(err.value) == "cannot remove label of nodes node1, key a does not exist"


def node() -> Node:
    res = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "Node",
                          "metadata": {"name": "node1", "resourceVersion": "7"}})
    assert isinstance(res, Node)
    return res


def test_the_new_document_is_validated_and_keeps_its_revision() -> None:
    res = _with_labels(node(), {"zone": "a"})
    assert res.metadata.labels == {"zone": "a"} and res.resource_version == 7
    assert _with_labels(node(), {}).metadata.labels is None
    for bad in ({"-x": "1"}, {"x": "bad value"}, {"x": "v" * 64}):
        with pytest.raises(ValidationError):
            _with_labels(node(), bad)


def test_a_workload_endpoint_keeps_calicos_own_labels() -> None:
    wep = parse_document({
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": "node1-k8s-a-eth0", "namespace": "x",
                     "labels": {"pod": "a", "projectcalico.org/namespace": "x",
                                "projectcalico.org/orchestrator": "k8s"}},
        "spec": {"orchestrator": "k8s", "node": "node1", "pod": "a", "endpoint": "eth0",
                 "interfaceName": "cali0123456789a"}})
    assert isinstance(wep, WorkloadEndpoint)
    res = _with_labels(wep, {"pod": "b"})
    assert res.metadata.labels == {"pod": "b", "projectcalico.org/namespace": "x",
                                   "projectcalico.org/orchestrator": "k8s"}
