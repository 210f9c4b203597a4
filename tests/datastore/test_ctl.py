"""ctl against a real etcd: the documented manifest, messages, formats, races."""

from __future__ import annotations

import json
import subprocess

import pytest

from .ctlrun import CTL, dump, run_inprocess, run_script

MANIFEST = b"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: ippool-ipip-cross-subnet-1
spec:
  cidr: 192.168.0.0/16
  ipipMode: CrossSubnet
  natOutgoing: true
"""


@pytest.fixture
def ctl(etcd_endpoint, monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", etcd_endpoint)
    return run_inprocess


def test_documented_manifest_applies_unchanged(etcd_endpoint, etcd_client, tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_bytes(MANIFEST)
    res = run_script(["apply", "-f", str(path)], etcd_endpoint)
    assert (res.rc, res.out, res.err) == (0, "Successfully applied 1 'IPPool' resource(s)\n", "")
    res = run_script(["get", "ippool", "-o", "wide"], etcd_endpoint)
    assert res.rc == 0
    header, row, blank, end = res.out.split("\n")
    assert header == ("NAME                         CIDR             NAT    IPIPMODE      "
                      "VXLANMODE   DISABLED   DISABLEBGPEXPORT   SELECTOR   ASSIGNMENTMODE   ")
    assert row == ("ippool-ipip-cross-subnet-1   192.168.0.0/16   true   CrossSubnet   "
                   "Never       false      false              all()      Automatic        ")
    assert (blank, end) == ("", "")
    kv = etcd_client.get("/calico/resources/v3/projectcalico.org/ippools/ippool-ipip-cross-subnet-1")
    doc = json.loads(kv.value)
    assert doc["spec"]["cidr"] == "192.168.0.0/16" and doc["spec"]["ipipMode"] == "CrossSubnet"


def test_create_then_create_again(ctl):
    assert ctl(["create", "-f", "-"], MANIFEST).out == "Successfully created 1 'IPPool' resource(s)\n"
    again = ctl(["create", "-f", "-"], MANIFEST)
    assert again.rc == 1
    assert again.err == ("failed to create 'IPPool' resource: [resource already exists: "
                         "IPPool(ippool-ipip-cross-subnet-1) with error: <nil>]\n")
    skipped = ctl(["create", "--skip-exists", "-f", "-"], MANIFEST)
    assert skipped.rc == 0 and "Successfully created 1 'IPPool'" in skipped.out


def test_replace_delete_and_skip_not_exists(ctl):
    missing = ctl(["replace", "-f", "-"], MANIFEST)
    # replace keeps one error, printed without the brackets of create's and apply's list.
    assert (missing.rc, missing.err) == (1, "failed to replace 'IPPool' resource: resource does "
                                         "not exist: IPPool(ippool-ipip-cross-subnet-1) with "
                                         "error: <nil>\n")
    ctl(["apply", "-f", "-"], MANIFEST)
    changed = MANIFEST.replace(b"natOutgoing: true", b"natOutgoing: false")
    assert ctl(["replace", "-f", "-"], changed).out == "Successfully replaced 1 'IPPool' resource(s)\n"
    assert "false" in ctl(["get", "ipp", "-o", "custom-columns=NAT"]).out
    assert ctl(["delete", "ippool", "ippool-ipip-cross-subnet-1"]).out == \
        "Successfully deleted 1 'IPPool' resource(s)\n"
    gone = ctl(["delete", "ippool", "ippool-ipip-cross-subnet-1"])
    # crud_commands.go delete: a "Failed to delete" line per error, then Fprintln's newline.
    assert (gone.rc, gone.out, gone.err) == (
        1, "", "Failed to delete 'IPPool' resource: resource does not exist: "
        "IPPool(ippool-ipip-cross-subnet-1) with error: <nil>\n\n")
    assert ctl(["delete", "--skip-not-exists", "pools", "ippool-ipip-cross-subnet-1"]).rc == 0


def test_multi_document_yaml_and_json_mixed_kinds(ctl):
    docs = b"""---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: a}
spec: {cidr: 10.1.0.0/16}
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec: {peerIP: "10.0.0.1:1179", asNumber: "1.10"}
"""
    res = ctl(["apply", "-f", "-"], docs)
    assert res.out == "Successfully applied 2 resource(s)\n"
    peers = ctl(["get", "bgppeers"]).out.split("\n")
    assert peers[0].split() == ["NAME", "PEERIP", "NODE", "ASN"]
    assert peers[1].split() == ["tor", "10.0.0.1:1179", "(global)", "65546"]
    as_json = json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "IPPoolList", "items": [
        {"apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": "j1"},
         "spec": {"cidr": "10.2.0.0/16"}}]}).encode()
    assert ctl(["create", "-f", "-"], as_json).out == "Successfully created 1 'IPPool' resource(s)\n"
    listing = json.loads(ctl(["get", "ippool", "-o", "json"]).out)
    assert listing["kind"] == "IPPoolList" and len(listing["items"]) == 2
    single = json.loads(ctl(["get", "ippool", "j1", "-o", "json"]).out)
    assert single["kind"] == "IPPool" and single["metadata"]["resourceVersion"]


def test_get_nodes_wide_shows_inherited_asn(ctl):
    node = b"""apiVersion: projectcalico.org/v3
kind: Node
metadata: {name: gyliu-ubuntu-1}
spec: {bgp: {ipv4Address: 9.111.255.77/22}}
"""
    ctl(["create", "-f", "-"], node)
    ctl(["create", "-f", "-"], b"""apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {asNumber: 4567, nodeToNodeMeshEnabled: true, logSeverityScreen: Info}
""")
    lines = ctl(["get", "nodes", "-o", "wide"]).out.split("\n")
    assert lines[0].split() == ["NAME", "ASN", "IPV4", "IPV6"]
    assert lines[1].split() == ["gyliu-ubuntu-1", "(4567)", "9.111.255.77/22"]
    cfg = ctl(["get", "bgpconfig"]).out.split("\n")
    assert cfg[1].split() == ["default", "Info", "true", "4567"]


def test_patch(ctl):
    ctl(["apply", "-f", "-"], MANIFEST)
    res = ctl(["patch", "ippool", "ippool-ipip-cross-subnet-1", "-p", '{"spec":{"disabled":true}}'])
    assert res.out == "Successfully patched 1 'IPPool' resource\n"
    bad = ctl(["patch", "ippool", "ippool-ipip-cross-subnet-1", "-p", '{"spec":{"cidr":"10.0.0.0/8"}}'])
    assert bad.rc == 1 and "IPPool CIDR cannot be modified" in bad.err


def test_get_missing_and_unknown_kind(ctl):
    # calicoctl's get collects a missing name's error and prints it as it is (get_command.go).
    res = ctl(["get", "ippool", "nope"])
    assert (res.rc, res.out, res.err) == (1, "", "resource does not exist: IPPool(nope) with error: <nil>\n")
    res = ctl(["get", "bananas"])
    assert res.rc == 1 and "resource type 'bananas' is not supported" in res.err


def test_unreachable_etcd_is_one_line(monkeypatch):
    monkeypatch.setenv("ETCD_ENDPOINTS", "http://127.0.0.1:1")
    res = run_inprocess(["get", "ippool"])
    assert res.rc == 1 and res.err.count("\n") == 1
    assert "could not reach http://127.0.0.1:1" in res.err


def test_two_replacers_from_the_same_revision(etcd_endpoint, ctl, tmp_path):
    ctl(["apply", "-f", "-"], MANIFEST)
    rv = json.loads(ctl(["get", "ippool", "ippool-ipip-cross-subnet-1", "-o", "json"]).out)[
        "metadata"]["resourceVersion"]
    procs = []
    for i, selector in enumerate(("has(a)", "has(b)")):
        doc = MANIFEST.replace(b"metadata:\n", f"metadata:\n  resourceVersion: '{rv}'\n".encode())
        doc += f"  nodeSelector: {selector}\n".encode()
        path = tmp_path / f"w{i}.yaml"
        path.write_bytes(doc)
        procs.append(subprocess.Popen([CTL, "replace", "-f", str(path)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env={"ETCD_ENDPOINTS": etcd_endpoint,
                                                                   "PATH": "/usr/bin:/bin"}))
    outcomes = [(p.wait(), p.stdout.read().decode(), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    winners = [o for o in outcomes if o[0] == 0]
    losers = [o for o in outcomes if o[0] == 1]
    assert len(winners) == 1 and len(losers) == 1
    assert "update conflict: IPPool(ippool-ipip-cross-subnet-1)" in losers[0][2]
    stored = json.loads(ctl(["get", "ippool", "ippool-ipip-cross-subnet-1", "-o", "json"]).out)
    winner_index = outcomes.index(winners[0])
    assert stored["spec"]["nodeSelector"] == ("has(a)", "has(b)")[winner_index]


def test_validate_writes_nothing(ctl, etcd_client):
    before = dump(etcd_client)
    assert ctl(["validate", "-f", "-"], MANIFEST).out == "Successfully validated 1 'IPPool' resource(s)\n"
    assert dump(etcd_client) == before


WEP = b"""apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: node1-k8s-pod1-eth0
  namespace: %s
spec:
  node: node1
  orchestrator: k8s
  pod: pod1
  endpoint: eth0
  interfaceName: cali0123456789a
  ipNetworks: [10.65.0.2/32]
"""


def test_namespaced_workload_endpoints(ctl):
    assert ctl(["create", "-f", "-"], WEP % b"default").rc == 0
    assert ctl(["create", "-f", "-"], WEP % b"prod").rc == 0
    default_only = ctl(["get", "weps", "-o", "custom-columns=NAME,NODE"]).out
    assert default_only == "NAME                  NODE    \nnode1-k8s-pod1-eth0   node1   \n\n"
    everything = ctl(["get", "weps", "-A"]).out
    assert everything == (
        "NAMESPACE   WORKLOAD   NODE    NETWORKS       INTERFACE         \n"
        "default     pod1       node1   10.65.0.2/32   cali0123456789a   \n"
        "prod        pod1       node1   10.65.0.2/32   cali0123456789a   \n"
        "\n")
    assert ctl(["get", "weps"]).out.startswith("WORKLOAD ")
    assert ctl(["get", "weps", "-n", "prod"]).out.startswith("NAMESPACE ")
    one = ctl(["get", "wep", "node1-k8s-pod1-eth0", "-n", "prod", "-o", "json"])
    assert json.loads(one.out)["metadata"]["namespace"] == "prod"
    assert ctl(["delete", "wep", "node1-k8s-pod1-eth0", "-n", "prod"]).rc == 0
    assert "prod" not in ctl(["get", "weps", "-A"]).out
    assert ctl(["delete", "wep", "node1-k8s-pod1-eth0"]).rc == 0


def test_usage_errors_are_one_line(ctl):
    res = ctl(["apply"])
    assert res.rc == 1 and res.err.count("\n") == 1
    assert "Missing option '-f' / '--filename'" in res.err and "ctl apply --help" in res.err
    res = ctl(["frobnicate"])
    assert res.rc == 1 and res.err.count("\n") == 1 and "No such command 'frobnicate'" in res.err
