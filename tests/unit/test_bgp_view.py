"""bgp.view: what a node originates, from syncer updates (confirmed blocks, borrowed /32s)."""

from __future__ import annotations

import json

from bgp.view import BGPView
from datastore.keys import affinity_key, block_key, resource_key
from datastore.syncer import Update

REV = iter(range(1, 10**6))


def put(key: str, doc: dict) -> Update:
    return Update("put", key, json.dumps(doc).encode(), next(REV))


def delete(key: str) -> Update:
    return Update("delete", key, b"", next(REV))


def block(cidr: str, host: str | None) -> Update:
    return put(block_key(cidr), {"cidr": cidr, "affinity": f"host:{host}" if host else None,
                                 "allocations": [], "unallocated": [], "attributes": []})


def affinity(node: str, cidr: str, state: str | None = "confirmed") -> Update:
    doc = {} if state is None else {"state": state}
    return put(affinity_key(node, cidr), doc)


def wep(name: str, node: str, ips: list[str]) -> Update:
    return put(resource_key("workloadendpoints", name, "default"), {
        "apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"node": node, "orchestrator": "k8s", "endpoint": "eth0", "pod": name,
                 "interfaceName": "cali0123456789a", "ipNetworks": ips}})


def pool(name: str, cidr: str, disable_export: bool = False) -> Update:
    return put(resource_key("ippools", name), {
        "apiVersion": "projectcalico.org/v3", "kind": "IPPool", "metadata": {"name": name},
        "spec": {"cidr": cidr, "disableBGPExport": disable_export}})


def test_confirmed_blocks_whose_document_agrees_are_originated():
    view = BGPView("n1")
    assert view.apply([block("10.244.0.0/26", "n1"), affinity("n1", "10.244.0.0/26"),
                       block("10.244.0.64/26", "n1"), affinity("n1", "10.244.0.64/26", "pending"),
                       block("10.244.0.128/26", "n2"), affinity("n1", "10.244.0.128/26"),
                       block("10.244.0.192/26", "n1"), affinity("n1", "10.244.0.192/26", None),
                       affinity("n2", "10.244.1.0/26")])
    assert view.local_blocks() == ["10.244.0.0/26", "10.244.0.192/26"]


def test_affinity_release_withdraws_the_block():
    view = BGPView("n1")
    view.apply([block("10.244.0.0/26", "n1"), affinity("n1", "10.244.0.0/26")])
    assert view.local_prefixes() == {"10.244.0.0/26"}
    assert view.apply([affinity("n1", "10.244.0.0/26", "pendingDeletion")])
    assert view.local_prefixes() == set()
    view.apply([affinity("n1", "10.244.0.0/26"), delete(affinity_key("n1", "10.244.0.0/26"))])
    assert view.local_prefixes() == set()


def test_borrowed_addresses_of_local_pods_are_originated_as_32s():
    view = BGPView("n1")
    view.apply([block("10.244.0.0/26", "n1"), affinity("n1", "10.244.0.0/26"),
                wep("own", "n1", ["10.244.0.5/32"]), wep("borrowed", "n1", ["10.244.9.7/32"]),
                wep("elsewhere", "n2", ["10.244.9.8/32"])])
    assert view.local_prefixes() == {"10.244.0.0/26", "10.244.9.7/32"}
    view.apply([delete(resource_key("workloadendpoints", "borrowed", "default"))])
    assert view.local_prefixes() == {"10.244.0.0/26"}


def test_pools_and_bad_values():
    view = BGPView("n1")
    view.apply([pool("a", "10.244.0.0/16"), pool("b", "10.9.0.0/16", True),
                put(resource_key("ippools", "bad"), {"kind": "IPPool"}),
                Update("put", block_key("10.1.0.0/26"), b"not json", next(REV))])
    assert view.pool_export_rules() == [("10.244.0.0/16", False), ("10.9.0.0/16", True)]
    assert set(view.problems) == {resource_key("ippools", "bad"), block_key("10.1.0.0/26")}
    assert view.local_prefixes() == set()


def test_unrelated_updates_change_nothing():
    view = BGPView("n1")
    assert not view.apply([affinity("n2", "10.244.1.0/26"),
                           put("/calico/ipam/v2/handle/x", {"block": {}})])


def test_only_this_nodes_endpoints_are_read_in_full():
    """Every other node's endpoint changes nothing here and is not validated here (the
    agent's calculation reports an unreadable one); this node's is, and one that moves
    away stops being originated."""
    view = BGPView("n1")
    view.apply([block("10.244.0.0/26", "n1"), affinity("n1", "10.244.0.0/26")])
    bad = {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint",
           "metadata": {"name": "x", "namespace": "default"}, "spec": {"ipNetworks": "oops"}}
    elsewhere = put(resource_key("workloadendpoints", "elsewhere", "default"),
                    {**bad, "spec": {**bad["spec"], "node": "n2"}})
    assert not view.apply([elsewhere, wep("remote", "n2", ["10.244.9.8/32"])])
    assert view.problems == {}
    here = put(resource_key("workloadendpoints", "here", "default"),
               {**bad, "spec": {**bad["spec"], "node": "n1"}})
    nameless = put(resource_key("workloadendpoints", "nameless", "default"), bad)
    view.apply([here, nameless, Update("put", resource_key("workloadendpoints", "junk", "default"),
                                       b"not json", next(REV))])
    assert set(view.problems) == {resource_key("workloadendpoints", n, "default")
                                  for n in ("here", "nameless", "junk")}
    assert view.apply([wep("moving", "n1", ["10.244.9.7/32"])])
    assert view.local_prefixes() == {"10.244.0.0/26", "10.244.9.7/32"}
    assert view.apply([wep("moving", "n2", ["10.244.9.7/32"])])
    assert view.local_prefixes() == {"10.244.0.0/26"}
