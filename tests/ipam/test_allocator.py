"""Allocation against a real etcd: claims, affinities, borrowing, limits, releases, reclaim."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest

from datastore.keys import affinity_host_prefix, affinity_key, block_key, handle_key
from datastore.resources import IPPool, Node
from ipam.affinity import Affinity
from ipam.allocator import Allocator
from ipam.block import Block
from ipam.check import default_sources, load_snapshot, run_check
from ipam.config import update_config
from ipam.errors import (
    AddressAlreadyAssigned,
    AddressNotInPool,
    AffinityNotFound,
    BadSequenceNumber,
    BlockLimitReached,
    BlockNotEmpty,
    HandleExists,
    HandleMismatch,
    HandleNotFound,
    NoIPsAvailable,
    NoUsablePools,
    RequestedPoolUnusable,
    StrictAffinityForbidsBorrowing,
)
from ipam.pools import seeded_block_cidrs

from .conftest import dump, make_node, make_pool


def block_of(client, cidr: str) -> Block:
    kv = client.get(block_key(cidr))
    assert kv is not None, f"no block {cidr}"
    return Block.from_json(kv.value)


def blocks(client) -> dict[str, Block]:
    kvs, _ = client.list("/calico/ipam/v2/assignment/ipv4/block/")
    out = {}
    for kv in kvs:
        b = Block.from_json(kv.value)
        out[b.cidr] = b
    return out


def affinities(client, node: str) -> dict[str, str]:
    kvs, _ = client.list(affinity_host_prefix(node))
    return {kv.key.rsplit("/", 1)[1].replace("-", "/"): Affinity.from_json(kv.value).state
            for kv in kvs}


def handle_doc(client, handle: str) -> dict | None:
    kv = client.get(handle_key(handle))
    return None if kv is None else json.loads(kv.value)


def check_problems(client) -> int:
    sources = default_sources()
    return run_check(load_snapshot(client, sources), sources).problems


def containing(ip: str, cidr: str) -> bool:
    return ipaddress.ip_address(ip) in ipaddress.ip_network(cidr)


# -- claiming and affine blocks ------------------------------------------------------------


def test_first_assignment_claims_a_block_in_the_nodes_order(etcd_client, store, allocator):
    pool = make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    ips = allocator.auto_assign("node1", "h1", 3, {"pod": "web", "namespace": "default"})
    first = next(seeded_block_cidrs(pool, "node1"))
    assert all(containing(ip, first) for ip in ips) and len(set(ips)) == 3
    b = block_of(etcd_client, first)
    assert b.affinity == "host:node1" and b.affinity_claim_time == "2024-05-01T10:00:00Z"
    assert b.in_use == 3 and b.attributes[0].secondary == {
        "pod": "web", "namespace": "default", "node": "node1"}
    assert affinities(etcd_client, "node1") == {first: "confirmed"}
    assert handle_doc(etcd_client, "h1") == {"block": {first: 3}, "deleted": False}
    # The next assignment uses the same (affine) block.
    more = allocator.auto_assign("node1", "h2", 1)
    assert containing(more[0], first)
    assert allocator.affine_blocks("node1") == [first]
    assert check_problems(etcd_client) == 0


def test_assignment_spans_blocks_and_counts_per_block(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/16")
    ips = allocator.auto_assign("node1", "big", 70)
    assert len(set(ips)) == 70
    doc = handle_doc(etcd_client, "big")
    assert sorted(doc["block"].values()) == [6, 64]
    assert len(affinities(etcd_client, "node1")) == 2


def test_an_assignment_for_a_new_handle_refuses_an_existing_one(etcd_client, store, clock):
    make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    first, other = Allocator(etcd_client, clock=clock), Allocator(etcd_client, clock=clock)
    ips = first.auto_assign("node1", "h1", 1, new_handle=True)
    assert handle_doc(etcd_client, "h1") is not None and len(ips) == 1
    before = dump(etcd_client)
    # Known to this allocator (its cache): refused before any transaction.
    with pytest.raises(HandleExists, match="handle 'h1' already exists"):
        first.auto_assign("node1", "h1", 1, new_handle=True)
    # Unknown to this one (another process): the transaction's compare finds it.
    with pytest.raises(HandleExists):
        other.auto_assign("node1", "h1", 1, new_handle=True)
    assert dump(etcd_client) == before  # nothing assigned, nothing written
    assert sum(b.in_use for b in blocks(etcd_client).values()) == 1
    # Spanning blocks: only the first write must create the handle.
    many = other.auto_assign("node1", "big", 70, new_handle=True)
    per_block = handle_doc(etcd_client, "big")["block"]
    assert len(set(many)) == 70 and len(per_block) == 2 and sum(per_block.values()) == 70
    assert check_problems(etcd_client) == 0


def test_pending_affinity_counts_as_absent_and_a_lost_claim_is_withdrawn(
        etcd_client, store, allocator):
    pool = make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    make_node(store, "node2")
    target = next(seeded_block_cidrs(pool, "node1"))
    # node2 declared intent on node1's first block but never created it (a crash).
    etcd_client.create(affinity_key("node2", target), Affinity("pending").to_json())
    assert allocator.affine_blocks("node2") == [], "a pending affinity owns nothing"
    ip = allocator.auto_assign("node1", "h1")[0]
    assert containing(ip, target) and block_of(etcd_client, target).host == "node1"
    # node2's next claim finds the block held by node1 and withdraws its stale intent.
    ip2 = Allocator(etcd_client).auto_assign("node2", "h2")[0]
    assert not containing(ip2, target)
    assert target not in affinities(etcd_client, "node2")
    assert check_problems(etcd_client) == 0


def test_interrupted_claim_of_the_same_node_is_taken_over(etcd_client, store, allocator):
    pool = make_pool(store, "p", "10.65.0.0/16")
    target = next(seeded_block_cidrs(pool, "node1"))
    etcd_client.create(affinity_key("node1", target), Affinity("pending").to_json())
    ip = allocator.auto_assign("node1", "h1")[0]
    assert containing(ip, target)
    assert affinities(etcd_client, "node1") == {target: "confirmed"}


def test_new_blocks_start_sequence_numbers_at_an_etcd_revision(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/30", blockSize=30)
    ip = allocator.auto_assign("node1", "h1")[0]
    first = allocator.get_assignment(ip).sequence_number
    assert first > 0
    allocator.release_ips([ip])
    allocator.release_block_affinity("node1", "10.65.0.0/30")
    assert etcd_client.get(block_key("10.65.0.0/30")) is None
    ip2 = allocator.auto_assign("node1", "h2")[0]
    assert ip2 == ip and allocator.get_assignment(ip2).sequence_number > first, \
        "a re-created block never repeats an old sequence number"


# -- borrowing, strict affinity, limits ----------------------------------------------------


def test_borrowing_from_another_nodes_block(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/26")  # one block only
    mine = allocator.auto_assign("node1", "h1")[0]
    other = Allocator(etcd_client)
    borrowed = other.auto_assign("node2", "h2")[0]
    b = block_of(etcd_client, "10.65.0.0/26")
    assert b.host == "node1" and mine != borrowed
    assert b.attribute_of(b.ordinal_of(borrowed)).secondary["node"] == "node2"
    assert affinities(etcd_client, "node2") == {}


def test_strict_affinity_forbids_borrowing(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/26")
    allocator.auto_assign("node1", "h1")
    update_config(etcd_client, strict_affinity=True)
    with pytest.raises(StrictAffinityForbidsBorrowing,
                       match="No more free affine blocks and strict affinity enabled"):
        Allocator(etcd_client).auto_assign("node2", "h2")
    assert handle_doc(etcd_client, "h2") is None


def test_config_change_reaches_a_cached_allocator(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/26")
    allocator.auto_assign("node1", "h1")
    other = Allocator(etcd_client)
    other.auto_assign("node2", "h2")  # borrows; caches config (strict off)
    update_config(etcd_client, strict_affinity=True)
    with pytest.raises(StrictAffinityForbidsBorrowing):
        other.auto_assign("node2", "h3")


def test_block_limit_is_all_or_nothing(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/24", blockSize=28)  # 16 blocks of 16
    update_config(etcd_client, strict_affinity=True, max_blocks_per_host=2)
    with pytest.raises(BlockLimitReached, match="limit of 2 blocks reached for this node"):
        allocator.auto_assign("node1", "h1", 33)
    assert handle_doc(etcd_client, "h1") is None, "the 32 taken were given back"
    assert sum(b.in_use for b in blocks(etcd_client).values()) == 0
    assert len(allocator.auto_assign("node1", "h1", 32)) == 32
    assert len(affinities(etcd_client, "node1")) == 2


def test_pool_exhausted_names_the_pools(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/28", blockSize=28)
    allocator.auto_assign("node1", "h1", 16)
    with pytest.raises(NoIPsAvailable, match=r"No IPs available in pools: \[10.65.0.0/28\]"):
        allocator.auto_assign("node1", "h2")


# -- pool choice ---------------------------------------------------------------------------


def test_disabled_pool_is_not_used(etcd_client, store, allocator):
    make_pool(store, "off", "10.1.0.0/16", disabled=True)
    with pytest.raises(NoUsablePools, match="selects node node1 and allows use Workload"):
        allocator.auto_assign("node1", "h1")
    make_pool(store, "on", "10.2.0.0/16")
    allocator.invalidate()
    assert containing(allocator.auto_assign("node1", "h1")[0], "10.2.0.0/16")
    with pytest.raises(AddressNotInPool, match="disabled"):
        allocator.assign_ip("10.1.0.5", "node1", "h2")


def test_node_selector_and_label_changes(etcd_client, store, allocator):
    make_pool(store, "zone-a", "10.1.0.0/16", nodeSelector="zone == 'a'")
    make_pool(store, "rest", "10.2.0.0/16", nodeSelector="!has(zone)")
    make_node(store, "na", labels={"zone": "a"})
    make_node(store, "nb")
    assert containing(allocator.auto_assign("na", "h1")[0], "10.1.0.0/16")
    assert containing(allocator.auto_assign("nb", "h2")[0], "10.2.0.0/16")
    # Relabel na: its cached view is caught by the guard on its Node key.
    node = store.get(Node, "na")
    meta = node.metadata.model_copy(update={"labels": {"zone": "b"}})
    store.update(node.model_copy(update={"metadata": meta}))
    with pytest.raises(NoUsablePools):
        allocator.auto_assign("na", "h3")


def test_allowed_uses(etcd_client, store, allocator):
    make_pool(store, "tunnels", "10.1.0.0/16", allowedUses=["Tunnel"])
    make_pool(store, "pods", "10.2.0.0/16", allowedUses=["Workload"])
    t = allocator.auto_assign("node1", "ipip-tunnel-addr-node1", 1,
                              {"type": "ipipTunnelAddress"}, use="Tunnel")[0]
    w = allocator.auto_assign("node1", "pod1", 1)[0]
    assert containing(t, "10.1.0.0/16") and containing(w, "10.2.0.0/16")
    with pytest.raises(AddressNotInPool, match="does not allow use Workload"):
        allocator.assign_ip("10.1.0.200", "node1", "pod2")


def test_deleted_pool_is_noticed_by_a_cached_allocator(etcd_client, store, allocator):
    make_pool(store, "p", "10.1.0.0/16")
    allocator.auto_assign("node1", "h1")
    store.delete(IPPool, "p")
    with pytest.raises(NoUsablePools):
        allocator.auto_assign("node1", "h2")


def test_requested_pools_restrict_the_assignment(etcd_client, store, allocator):
    """Calico's IPv4Pools (the CNI's ipam.ipv4_pools, the ipv4pools annotation): names or
    CIDRs, in order; a requested pool is used whatever its nodeSelector says."""
    make_pool(store, "general", "10.1.0.0/16")
    make_pool(store, "special", "10.2.0.0/16", nodeSelector="!all()")
    make_pool(store, "off", "10.3.0.0/16", disabled=True)
    make_pool(store, "tunnels", "10.4.0.0/16", allowedUses=["Tunnel"])
    assert containing(allocator.auto_assign("node1", "h0")[0], "10.1.0.0/16")
    assert containing(allocator.auto_assign("node1", "h1", pools=["special"])[0], "10.2.0.0/16")
    assert containing(allocator.auto_assign("node1", "h2", pools=["10.2.0.0/16"])[0],
                      "10.2.0.0/16")
    assert containing(allocator.auto_assign("node1", "h3", pools=["10.1.0.0/16", "special"])[0],
                      "10.1.0.0/16")
    for bad, message in (
            ("nope", "the given pool (nope) does not exist, or is not enabled"),
            ("10.2.0.0/17", "the given pool (10.2.0.0/17) does not exist"),  # exactly a pool's
            ("off", "the given pool (off = 10.3.0.0/16) is disabled"),
            ("10.4.0.0/16", "the given pool (10.4.0.0/16 = tunnels) does not allow use Workload")):
        with pytest.raises(RequestedPoolUnusable, match=re.escape(message)):
            allocator.auto_assign("node1", "h4", pools=[bad])
    assert handle_doc(etcd_client, "h4") is None
    # A pool created after the allocator cached the pools is found (the error is not
    # believed from the cache).
    make_pool(store, "late", "10.5.0.0/16")
    assert containing(allocator.auto_assign("node1", "h5", pools=["late"])[0], "10.5.0.0/16")
    assert sorted(c.split(".")[1] for c in blocks(etcd_client)) == ["1", "2", "5"]


# -- specific addresses --------------------------------------------------------------------


def test_assign_ip_claims_its_block_and_reports_errors(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/16")
    assert allocator.assign_ip("10.65.79.5", "node1", "h1") == "10.65.79.5"
    assert affinities(etcd_client, "node1") == {"10.65.79.0/26": "confirmed"}
    with pytest.raises(AddressAlreadyAssigned, match="10.65.79.5 is already assigned .handle h1"):
        allocator.assign_ip("10.65.79.5", "node2", "h2")
    with pytest.raises(AddressNotInPool, match="10.99.0.1 is not in a configured pool"):
        allocator.assign_ip("10.99.0.1", "node1", "h3")
    assert allocator.assign_ip("10.65.79.6", "node2", "h2") == "10.65.79.6"  # borrowed
    update_config(etcd_client, strict_affinity=True)
    allocator.invalidate()
    with pytest.raises(StrictAffinityForbidsBorrowing, match="affine to node1, not node2"):
        allocator.assign_ip("10.65.79.7", "node2", "h4")
    with pytest.raises(ValueError):
        allocator.assign_ip("10.65.79.300", "node1", "h5")


# -- releases ------------------------------------------------------------------------------


def test_release_by_handle(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    ips = allocator.auto_assign("node1", "big", 70)
    keep = allocator.auto_assign("node1", "other", 2)
    released = allocator.release_by_handle("big")
    assert sorted(released) == sorted(ips)
    assert handle_doc(etcd_client, "big") is None
    assert sum(b.in_use for b in blocks(etcd_client).values()) == 2
    assert all(allocator.get_assignment(ip).handle_id == "other" for ip in keep)
    with pytest.raises(HandleNotFound, match="handle 'big' does not exist"):
        allocator.release_by_handle("big")
    assert check_problems(etcd_client) == 0


def test_release_ips_reports_each_address(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/16")
    a, b = allocator.auto_assign("node1", "h", 2)
    result = allocator.release_ips([a, "10.65.200.1", "10.99.0.1"])
    assert result.released == [a] and sorted(result.not_assigned) == ["10.65.200.1", "10.99.0.1"]
    assert handle_doc(etcd_client, "h")["block"] == {str(ipaddress.ip_network(f"{a}/26",
                                                                              strict=False)): 1}
    allocator.release_ips([b])
    assert handle_doc(etcd_client, "h") is None, "an empty handle is deleted"


def test_stale_release_is_refused_by_sequence_number(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/16")
    ip = allocator.auto_assign("node1", "pod-a")[0]
    seen = allocator.get_assignment(ip)
    assert allocator.release_ips([ip]).released == [ip]
    allocator.assign_ip(ip, "node1", "pod-b")  # the address is re-used meanwhile
    result = allocator.release_ips([ip], sequence_numbers={ip: seen.sequence_number})
    assert result.released == [] and isinstance(result.refused[ip], BadSequenceNumber)
    assert allocator.get_assignment(ip).handle_id == "pod-b"
    result = allocator.release_ips([ip], handle="pod-a")
    assert isinstance(result.refused[ip], HandleMismatch)
    now = allocator.get_assignment(ip).sequence_number
    assert allocator.release_ips([ip], "pod-b", {ip: now}).released == [ip]


def test_release_block_affinity(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/16")
    ip = allocator.auto_assign("node1", "h1")[0]
    cidr = str(ipaddress.ip_network(f"{ip}/26", strict=False))
    with pytest.raises(BlockNotEmpty):
        allocator.release_block_affinity("node1", cidr)
    assert affinities(etcd_client, "node1") == {cidr: "confirmed"}, "restored"
    allocator.release_ips([ip])
    allocator.release_block_affinity("node1", cidr)
    assert etcd_client.get(block_key(cidr)) is None and affinities(etcd_client, "node1") == {}
    with pytest.raises(AffinityNotFound):
        allocator.release_block_affinity("node1", cidr)
    # require_empty=False keeps a non-empty block, without affinity.
    ip = allocator.auto_assign("node1", "h2")[0]
    cidr = str(ipaddress.ip_network(f"{ip}/26", strict=False))
    allocator.release_block_affinity("node1", cidr, require_empty=False)
    assert block_of(etcd_client, cidr).affinity is None and affinities(etcd_client, "node1") == {}


# -- reclaiming empty blocks ---------------------------------------------------------------


def test_empty_block_is_reclaimed_only_after_a_minute(etcd_client, store, clock):
    make_pool(store, "p", "10.65.0.0/26")  # one block
    update_config(etcd_client, strict_affinity=True)  # node2 may not borrow: it must reclaim
    node1, node2 = Allocator(etcd_client, clock=clock), Allocator(etcd_client, clock=clock)
    ip = node1.auto_assign("node1", "h1")[0]
    clock.advance(300)  # the claim is old; only the emptying counts now
    node1.release_ips([ip])
    assert block_of(etcd_client, "10.65.0.0/26").empty_since == "2024-05-01T10:05:00Z"
    clock.advance(59)
    with pytest.raises(StrictAffinityForbidsBorrowing):
        node2.auto_assign("node2", "h2")
    assert block_of(etcd_client, "10.65.0.0/26").host == "node1"
    clock.advance(1)
    ip2 = node2.auto_assign("node2", "h2")[0]
    assert block_of(etcd_client, "10.65.0.0/26").host == "node2"
    assert affinities(etcd_client, "node1") == {} and affinities(etcd_client, "node2") == {
        "10.65.0.0/26": "confirmed"}
    # node1's cached view notices the block is no longer its own.
    with pytest.raises(StrictAffinityForbidsBorrowing):
        node1.auto_assign("node1", "h3")
    assert node1.affine_blocks("node1") == []
    assert node2.get_assignment(ip2).handle_id == "h2"


def test_never_used_block_is_reclaimable_a_minute_after_its_claim(etcd_client, store, clock):
    make_pool(store, "p", "10.65.0.0/26")
    update_config(etcd_client, strict_affinity=True)
    node1, node2 = Allocator(etcd_client, clock=clock), Allocator(etcd_client, clock=clock)
    ip = node1.assign_ip("10.65.0.1", "node1", "h1")
    node1.release_ips([ip])
    b = block_of(etcd_client, "10.65.0.0/26")
    assert b.empty_since == "2024-05-01T10:00:00Z"
    clock.advance(30)
    with pytest.raises(StrictAffinityForbidsBorrowing):
        node2.auto_assign("node2", "h2")
    clock.advance(31)
    assert node2.auto_assign("node2", "h2")


# -- caches never decide -------------------------------------------------------------------


def test_two_allocators_of_one_node_never_collide(etcd_client, store):
    make_pool(store, "p", "10.65.0.0/16")
    make_node(store, "node1")
    a, b = Allocator(etcd_client), Allocator(etcd_client)
    got = []
    for i in range(40):
        got += (a if i % 3 else b).auto_assign("node1", f"h{i}", 1 + i % 3)
        if i % 7 == 0:
            (b if i % 2 else a).release_ips(got[-1:])
            got.pop()
    assert len(got) == len(set(got))
    for ip in got:
        assert a.get_assignment(ip) is not None
    assert check_problems(etcd_client) == 0


def test_stale_cache_after_external_release_is_refreshed(etcd_client, store, allocator):
    make_pool(store, "p", "10.65.0.0/26")
    ips = allocator.auto_assign("node1", "h1", 64)
    Allocator(etcd_client).release_ips(ips[:1])  # another process frees one
    assert allocator.auto_assign("node1", "h2") == ips[:1]


def test_claims_in_a_filling_pool_fall_back_to_the_listing(etcd_client, store):
    pool = make_pool(store, "p", "10.65.0.0/24", blockSize=28)  # 16 blocks of 16
    make_node(store, "node1")
    make_node(store, "filler")
    filler = Allocator(etcd_client)
    order = list(seeded_block_cidrs(pool, "node1"))
    for cidr in order[:12]:  # node1's first twelve choices are taken
        filler.assign_ip(str(ipaddress.ip_network(cidr)[0]), "filler", f"f-{cidr}")
    node1 = Allocator(etcd_client)
    ips = node1.auto_assign("node1", "h", 40)  # needs three of the last four blocks
    assert len(set(ips)) == 40
    mine = affinities(etcd_client, "node1")
    assert len(mine) == 3 and set(mine) <= set(order[12:])
    assert all(state == "confirmed" for state in mine.values())
    # The rest of the pool is full but for the last block and 13 spare: borrow fills up.
    more = node1.auto_assign("node1", "h2", 16 + 8 + 12 * 15)
    assert len(set(ips + more)) == 40 + 204
    with pytest.raises(NoIPsAvailable):
        node1.auto_assign("node1", "h3")
    assert check_problems(etcd_client) == 0
