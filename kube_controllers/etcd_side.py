"""The controllers' writes to etcd: planned changes, endpoint updates, a node's release.

Owns every etcd write tortie-kube-controllers makes, all through the datastore's
compare-and-swap store and the IPAM allocator: a change planned against a
revision is written only if the resource is still at that revision
(UpdateConflict otherwise: the loop re-plans), so a concurrent `ctl` edit is
never overwritten blindly. Errors are raised to the loop, which retries with
back-off; nothing here sleeps or retries on its own beyond the store's CAS loops.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field

from datastore.errors import ResourceDoesNotExist
from datastore.etcd import EtcdClient
from datastore.resources import KINDS, Node, WorkloadEndpoint, parse_document
from datastore.store import ResourceStore
from ipam.allocator import Allocator, ReleaseOption
from ipam.check import list_blocks

from .reconcile import Change

__all__ = ["NodeRelease", "apply_change", "release_node", "stored_documents"]

_log = logging.getLogger(__name__)


def stored_documents(store: ResourceStore, kind: str) -> dict[tuple[str, str | None, str],
                                                           tuple[dict[str, object], int]]:
    """ref -> (document, mod revision) of every stored resource of `kind`."""
    cls = KINDS[kind]
    out: dict[tuple[str, str | None, str], tuple[dict[str, object], int]] = {}
    for res in store.list(cls):
        out[(cls.kind_name, res.namespace if cls.namespaced else None, res.name)] = (
            res.dump(), res.resource_version or 0)
    return out


def apply_change(store: ResourceStore, change: Change) -> None:
    """Write or delete one planned change, guarded by the revision it was planned against."""
    kind, namespace, name = change.ref
    cls = KINDS[kind]
    if change.doc is None:
        try:
            store.delete(cls, name, namespace, resource_version=change.revision)
        except ResourceDoesNotExist:
            pass  # already gone: what we wanted
        return
    doc = dict(change.doc)
    if change.revision is None:
        store.create(parse_document(doc))
        return
    doc["metadata"] = {**doc["metadata"], "resourceVersion": str(change.revision)}
    store.update(parse_document(doc))


@dataclass
class NodeRelease:
    """What releasing a node did."""

    addresses: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    node_deleted: bool = False


def release_node(client: EtcdClient, node: Node) -> NodeRelease:
    """Release a vanished node as Calico's Nodes().Delete does, then delete the Node.

    The addresses of its WorkloadEndpoints and its tunnel addresses, then every
    address a block still holds for it (attribute `node`; guarded by handle and
    sequence number, so one re-used meanwhile is kept), its endpoints, its block
    affinities (an empty block goes with its affinity, a block others still use
    stays without one), and last the Node itself (CAS on the revision read), so
    a failure part-way leaves the Node for the next attempt.
    """
    store = ResourceStore(client)
    allocator = Allocator(client)
    done = NodeRelease()
    endpoints = [w for w in store.list(WorkloadEndpoint) if w.spec.node == node.name]
    addresses: list[str] = []
    for wep in endpoints:
        addresses += [str(ipaddress.ip_network(n).network_address) for n in wep.ip_networks]
    bgp = node.spec.bgp
    for tunnel in (bgp.ipv4IPIPTunnelAddr if bgp else None, node.spec.ipv4VXLANTunnelAddr):
        if tunnel:
            addresses.append(str(ipaddress.ip_interface(tunnel).ip))
    if addresses:
        done.addresses += allocator.release_ips(addresses).released
    held: list[ReleaseOption] = []
    for version in (4, 6):
        for entry in list_blocks(client, version):
            block = entry.block
            if block is None:
                continue
            for ordinal, allocation in enumerate(block.allocations):
                if allocation is None:
                    continue
                attr = block.attribute_of(ordinal)
                if attr is None or attr.secondary.get("node") != node.name:
                    continue
                held.append(ReleaseOption(block.ip_of(ordinal), attr.handle_id,
                                          block.sequence_number_of(ordinal)))
    if held:
        done.addresses += allocator.release(held).released
    for wep in endpoints:
        try:
            store.delete(WorkloadEndpoint, wep.name, wep.namespace, wep.resource_version)
            done.endpoints.append(f"{wep.namespace}/{wep.name}")
        except ResourceDoesNotExist:
            pass
    for version in (4, 6):
        for cidr in allocator.affine_blocks(node.name, version):
            allocator.release_block_affinity(node.name, cidr, require_empty=False)
            done.blocks.append(cidr)
    try:
        store.delete(Node, node.name, resource_version=node.resource_version)
        done.node_deleted = True
    except ResourceDoesNotExist:
        pass
    _log.info("released node %s: addresses %s, endpoints %s, blocks %s", node.name,
              done.addresses, done.endpoints, done.blocks)
    return done
