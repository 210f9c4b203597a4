"""`ctl label` against a real etcd: calicoctl's messages and exit codes, nodes and
workload endpoints, compare-and-swap, and a store left byte-identical on every error."""

from __future__ import annotations

import json

import pytest

from ctl import label as ctl_label
from datastore.resources import Node
from datastore.store import ResourceStore

from .ctlrun import dump, run_inprocess, run_script

NODE = b"""apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: node1, labels: {zone: a}}
spec: {bgp: {ipv4Address: 10.0.0.1/24}}
"""
WEP = b"""apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-a-eth0
  namespace: x
  labels: {pod: a, projectcalico.org/namespace: x, projectcalico.org/orchestrator: k8s}
spec: {orchestrator: k8s, node: node1, pod: a, endpoint: eth0, ipNetworks: [10.65.0.2/32],
       interfaceName: cali0123456789a, profiles: [kns.x]}
"""
WEP_KEY = "/calico/resources/v3/projectcalico.org/workloadendpoints/x/node1-k8s-a-eth0"
NODE_KEY = "/calico/resources/v3/projectcalico.org/nodes/node1"


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    assert run_inprocess(["apply", "-f", "-"], NODE).rc == 0
    assert run_inprocess(["apply", "-f", "-"], WEP).rc == 0
    return run_inprocess


def labels(etcd_client, key: str) -> dict[str, str]:
    return json.loads(etcd_client.get(key).value)["metadata"].get("labels") or {}


def test_set_overwrite_and_remove_a_node_label(ctl, etcd_client):
    res = ctl(["label", "nodes", "node1", "rack=r1"])
    assert (res.rc, res.out, res.err) == (0, "Successfully set label rack on nodes node1\n", "")
    res = ctl(["label", "nodes", "node1", "rack=r2", "--overwrite"])
    assert (res.rc, res.out) == (0, "Successfully updated label rack on nodes node1\n")
    assert labels(etcd_client, NODE_KEY) == {"zone": "a", "rack": "r2"}
    res = ctl(["label", "no", "node1", "zone", "--remove"])
    assert (res.rc, res.out) == (0, "Successfully removed label zone from no node1\n")
    assert labels(etcd_client, NODE_KEY) == {"rack": "r2"}
    doc = json.loads(etcd_client.get(NODE_KEY).value)
    assert doc["spec"]["bgp"]["ipv4Address"] == "10.0.0.1/24"  # the rest is kept


def test_a_workload_endpoint_label_in_its_namespace(ctl, etcd_client, etcd_endpoint):
    res = run_script(["label", "workloadendpoints", "node1-k8s-a-eth0", "pod=b", "--overwrite",
                      "-n", "x"], etcd_endpoint)
    assert (res.rc, res.out, res.err) == (
        0, "Successfully updated label pod on workloadendpoints node1-k8s-a-eth0\n", "")
    assert labels(etcd_client, WEP_KEY)["pod"] == "b"
    # Calico's own labels come back, as libcalico-go's client stores an endpoint.
    res = ctl(["label", "wep", "node1-k8s-a-eth0", "projectcalico.org/namespace", "--remove",
               "-n", "x"])
    assert res.rc == 0
    assert labels(etcd_client, WEP_KEY) == {"pod": "b", "projectcalico.org/namespace": "x",
                                            "projectcalico.org/orchestrator": "k8s"}


@pytest.mark.parametrize("args, message", [
    (["nodes", "node1", "zone=b"],
     "failed to update label of nodes node1, key zone is already present. please use "
     "'--overwrite' to set a new value"),
    (["nodes", "node1", "rack", "--remove"],
     "cannot remove label of nodes node1, key rack does not exist"),
    (["nodes", "node1", "rack"], "invalid label rack"),
    (["nodes", "node9", "rack=r1"],
     "failed to get nodes node9, error resource does not exist: Node(node9) with error: <nil>"),
    (["wep", "node1-k8s-a-eth0", "pod=b", "--overwrite"],  # not in namespace default
     "failed to get wep node1-k8s-a-eth0, error resource does not exist: "
     "WorkloadEndpoint(default/node1-k8s-a-eth0) with error: <nil>"),
    (["bananas", "b1", "a=b"],
     "failed to get bananas b1, error resource type 'bananas' is not supported"),
    (["nodes", "node1", "bad_=1"],
     "failed to update nodes node1, label not changed: error with field Node.Metadata.Labels "
     "(label) = 'bad_' (invalid label key 'bad_')"),
    (["nodes", "node1", "rack=not valid"],
     "failed to update nodes node1, label not changed: error with field Node.Metadata.Labels "
     "(value) = 'not valid' (invalid label value 'not valid' for key 'rack')"),
])
def test_errors_exit_1_with_calicoctls_words_and_change_nothing(ctl, etcd_client, args, message):
    before = dump(etcd_client)
    res = ctl(["label", *args])
    assert (res.rc, res.out, res.err) == (1, "", message + "\n")
    assert dump(etcd_client) == before


def test_usage_needs_kind_name_and_one_label(ctl):
    for args in (["label", "nodes", "node1"], ["label", "nodes", "node1", "a=1", "b=2"]):
        res = ctl(args)
        assert res.rc == 1 and res.err.count("\n") == 1 and "ctl label --help" in res.err


def test_a_concurrent_write_is_not_lost(ctl, etcd_client, monkeypatch):
    """Another writer changes the node between our read and our write: the CAS fails,
    the label is decided again on the fresh copy, and both changes survive."""
    store = ResourceStore(etcd_client)
    real_get = ResourceStore.get
    raced = []

    def get_then_race(self, cls, name, namespace=None):
        got = real_get(self, cls, name, namespace)
        if not raced:
            raced.append(True)
            fresh = real_get(self, cls, name, namespace)
            meta = fresh.metadata.model_copy(update={"labels": {"zone": "a", "other": "w"}})
            store.update(fresh.model_copy(update={"metadata": meta}))
        return got

    monkeypatch.setattr(ResourceStore, "get", get_then_race)
    msg = ctl_label.label_resource(store, "nodes", "node1", None, "rack=r1", remove=False,
                                   overwrite=False)
    assert msg == "Successfully set label rack on nodes node1"
    assert store.get(Node, "node1").metadata.labels == {"zone": "a", "other": "w", "rack": "r1"}
