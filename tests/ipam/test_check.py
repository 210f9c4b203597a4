"""`ipam check` finds each kind of damage; `release --from-report` repairs what is still as found."""

from __future__ import annotations

import json

from datastore.keys import affinity_key, block_key, handle_key
from ipam.affinity import Affinity
from ipam.allocator import Allocator
from ipam.block import Block
from ipam.check import (
    NodeOwners,
    WorkloadEndpointOwners,
    default_sources,
    load_snapshot,
    release_from_report,
    run_check,
)
from ipam.handle import Handle

from .conftest import make_node, make_pool


def check(client, **kw):
    sources = default_sources()
    return run_check(load_snapshot(client, sources), sources, **kw)


def line_count(result, prefix: str) -> int:
    for line in result.lines:
        if line.startswith(prefix):
            return int(line.split()[1])
    raise AssertionError(f"no line starting {prefix!r} in {result.lines}")


def test_damage_of_every_kind_is_found_and_repaired(etcd_client, store):
    make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    a = Allocator(etcd_client)
    a.assign_ip("10.65.1.1", "node1", "good", {"pod": "web"})
    a.assign_ip("10.65.2.1", "node1", "drifted")
    a.assign_ip("10.65.3.1", "node1", "h3")
    # A handle whose count disagrees with its block (written by someone else).
    etcd_client.put(handle_key("drifted"), Handle({"10.65.2.0/26": 5}).to_json())
    # A handle with no addresses at all.
    etcd_client.put(handle_key("orphan"), Handle({"10.65.9.0/26": 1}).to_json())
    # A pending affinity of node2 for node1's block (an interrupted, lost claim).
    etcd_client.put(affinity_key("node2", "10.65.1.0/26"), Affinity("pending").to_json())
    # A confirmed affinity without a block.
    etcd_client.put(affinity_key("node1", "10.65.4.0/26"), Affinity("confirmed").to_json())
    # A block whose node has no affinity for it.
    etcd_client.delete(affinity_key("node1", "10.65.3.0/26"))
    result = check(etcd_client, show_problem_ips=True)
    assert line_count(result, "Found") == 3  # blocks
    text = "\n".join(result.lines)
    assert "Found 1 handles with no matching IPs (and 3 handles with matches)." in text
    assert "Found 1 handles whose counts do not match their blocks." in text
    assert "Found 3 block affinities that do not match their blocks." in text
    assert "pending affinity left by an interrupted claim" in text
    assert "confirmed affinity but the block does not exist" in text
    assert "block is affine to node1 but that node has no affinity" in text
    assert result.problems == 5
    report = json.loads(json.dumps(result.report))  # what -o writes and --from-report reads
    done = release_from_report(Allocator(etcd_client), report)
    assert (done.handles_deleted, done.handles_repaired, done.affinities_repaired) == (1, 1, 3)
    assert check(etcd_client).problems == 0
    assert json.loads(etcd_client.get(handle_key("drifted")).value)["block"] == {
        "10.65.2.0/26": 1}


def test_repairs_skip_what_changed_since_the_check(etcd_client, store):
    make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    etcd_client.put(handle_key("orphan"), Handle({"10.65.9.0/26": 1}).to_json())
    etcd_client.put(affinity_key("node2", "10.65.1.0/26"), Affinity("pending").to_json())
    report = check(etcd_client).report
    # Meanwhile node2 really claims that block, and the handle gets an address.
    a = Allocator(etcd_client)
    a.assign_ip("10.65.1.1", "node2", "x")
    a.assign_ip("10.65.5.1", "node1", "orphan")
    done = release_from_report(Allocator(etcd_client), report)
    assert (done.handles_deleted, done.affinities_repaired) == (0, 0)
    assert len(done.repairs_skipped) == 2
    assert Affinity.from_json(etcd_client.get(
        affinity_key("node2", "10.65.1.0/26")).value).state == "confirmed"
    assert a.get_assignment("10.65.5.1").handle_id == "orphan"


def test_invalid_blocks_are_reported(etcd_client, store):
    make_pool(store, "p", "10.65.0.0/16")
    bad = Block.new("10.65.7.0/26", "node1", None)
    doc = bad.to_doc()
    doc["unallocated"] = doc["unallocated"][:-1]  # ordinal 63 is lost
    etcd_client.put(block_key("10.65.7.0/26"), json.dumps(doc).encode())
    etcd_client.put(block_key("10.65.8.0/26"), b"not json")
    result = check(etcd_client, show_problem_ips=True)
    text = "\n".join(result.lines)
    assert "Found 2 invalid IPAMBlocks." in text
    assert "  block 10.65.7.0/26: ordinal 63 is neither allocated nor unallocated" in text


def test_tunnel_addresses_and_workload_endpoints_count_as_owners(etcd_client, store):
    make_pool(store, "p", "10.65.0.0/16")
    a = Allocator(etcd_client)
    tunnel = a.auto_assign("node1", "ipip-tunnel-addr-node1", 1,
                           {"type": "ipipTunnelAddress"}, use="Tunnel")[0]
    make_node(store, "node1", bgp={"ipv4Address": "10.0.0.5/24", "ipv4IPIPTunnelAddr": tunnel})
    pod = a.auto_assign("node1", "k8s-pod-network.c1", 1, {"pod": "web", "namespace": "ns"})[0]
    etcd_client.put("/calico/resources/v3/projectcalico.org/workloadendpoints/ns/w1", json.dumps({
        "kind": "WorkloadEndpoint", "metadata": {"name": "w1", "namespace": "ns"},
        "spec": {"ipNetworks": [f"{pod}/32"]}}).encode())
    # An address a node uses but IPAM does not know about.
    etcd_client.put("/calico/resources/v3/projectcalico.org/workloadendpoints/ns/w2", json.dumps({
        "kind": "WorkloadEndpoint", "metadata": {"name": "w2", "namespace": "ns"},
        "spec": {"ipNetworks": ["10.65.200.9/32", "10.99.0.1/32"]}}).encode())
    sources = [NodeOwners(), WorkloadEndpointOwners()]
    result = run_check(load_snapshot(etcd_client, sources), sources)
    text = "\n".join(result.lines)
    assert "Found 1 node tunnel IPs." in text and "Found 3 workload IPs." in text
    assert "Workloads and nodes are using 4 IPs." in text
    assert "Found 0 IPs that are allocated in IPAM but not actually in use." in text
    assert "Found 1 in-use IPs that are not in active IP pools." in text
    assert "Found 1 in-use IPs that are in active IP pools but have no corresponding IPAM " \
           "allocation." in text
    assert result.report["allocations"][pod][0]["owners"] == ["Workload(ns/w1)"]
    # Once endpoints are authoritative, a pod address no endpoint lists is a leak.
    a.auto_assign("node1", "k8s-pod-network.c2", 1, {"pod": "gone", "namespace": "ns"})
    sources = [NodeOwners(), WorkloadEndpointOwners(authoritative=True)]
    result = run_check(load_snapshot(etcd_client, sources), sources)
    assert [x.handle for x in result.leaked] == ["k8s-pod-network.c2"]
