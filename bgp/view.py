"""The BGP side's view of the datastore: what to peer with and what to originate. Pure.

Fed syncer Updates in order (the resources prefix and the IPAM prefix). Keeps
only what BGP needs: Nodes, BGPPeers, BGPConfigurations, IPPools, this node's
host affinities, the affinity field of every block, and the IPv4 addresses of
this node's workload endpoints.

What this node originates (Calico's `bird_aggr.cfg` plus kernel-learned /32s):
  * each block whose affinity key for this node is confirmed (a state-less
    affinity counts as confirmed) AND whose document says `host:<this node>`;
    pending and pendingDeletion affinities originate nothing (confd treats
    pending as deleted);
  * the /32 of every address of a local workload endpoint that is not inside
    one of those blocks (a borrowed address: Calico exports it because BIRD
    learns the pod's kernel route).
Export filtering by pool (disableBGPExport, outside every pool) is applied by
bgp.export; this module only reports the pools.

Blocks and affinities are read, and ownership decided, by datastore.ipam_documents
(`block_owner`). A value that fails to parse is ignored (and listed in
`problems`), never fatal; an unreadable, or deleted, block or affinity counts
as if its key were deleted.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Iterable
from typing import Any

from datastore.errors import IPAMDocumentError
from datastore.ipam_documents import AllocationBlock, BlockAffinity, block_owner
from datastore.keys import parse_affinity_key, parse_block_key, parse_resource_key
from datastore.resources import BGPConfiguration, BGPPeer, IPPool, Node
from datastore.resources.workloadendpoint import WorkloadEndpoint
from datastore.syncer import Update


class BGPView:
    """Datastore state for one node's BGP speaker. Not thread-safe."""

    def __init__(self, nodename: str) -> None:
        self.nodename = nodename
        self.nodes: dict[str, Node] = {}
        self.peers: dict[str, BGPPeer] = {}
        self.configs: dict[str, BGPConfiguration] = {}
        self.pools: dict[str, IPPool] = {}
        self._affinities: dict[str, str] = {}  # block CIDR -> state, this node's host affinities
        self._block_hosts: dict[str, str | None] = {}  # block CIDR -> node its document names
        self._endpoints: dict[tuple[str, str], tuple[str, ...]] = {}  # local WEP -> IPv4s
        self.problems: dict[str, str] = {}

    # -- updating ---------------------------------------------------------------------

    def apply(self, updates: Iterable[Update]) -> bool:
        """Fold updates in. True when anything BGP cares about changed."""
        changed = False
        for update in updates:
            # Cleared first: an unreadable IPAM document is reported by _ipam_document and
            # still changes the view (it counts as deleted).
            self.problems.pop(update.key, None)
            try:
                changed |= self._apply_one(update)
            except Exception as exc:  # noqa: BLE001 - bad values are reported, never fatal
                self.problems[update.key] = " ".join(str(exc).split()) or type(exc).__name__
        return changed

    def _apply_one(self, u: Update) -> bool:
        resource = parse_resource_key(u.key)
        if resource is not None:
            plural, namespace, name = resource
            tables = {Node.plural: (self.nodes, Node), BGPPeer.plural: (self.peers, BGPPeer),
                      BGPConfiguration.plural: (self.configs, BGPConfiguration),
                      IPPool.plural: (self.pools, IPPool)}
            if plural in tables and namespace is None:
                table, cls = tables[plural]
                return _replace(table, name, None if u.kind != "put" else
                                cls.from_stored(u.value, u.revision))
            if plural == WorkloadEndpoint.plural and namespace is not None:
                return self._apply_endpoint((namespace, name), u)
            return False
        cidr = parse_block_key(u.key)
        if cidr is not None:
            block = self._ipam_document(u, AllocationBlock.from_json)
            # A block that parsed carries its key's CIDR, canonical and already parsed.
            cidr = block.cidr if block is not None else str(ipaddress.ip_network(cidr))
            if block is None or block.deleted:
                return _replace(self._block_hosts, cidr, None)
            return _replace(self._block_hosts, cidr, block.host, keep_none=True)
        affinity = parse_affinity_key(u.key)
        if affinity is not None:
            kind, node, cidr = affinity
            if kind != "host" or node != self.nodename:
                return False
            cidr = str(ipaddress.ip_network(cidr))
            found = self._ipam_document(u, BlockAffinity.from_json)
            state = None if found is None or found.deleted else found.state
            return _replace(self._affinities, cidr, state)
        return False

    def _ipam_document(self, u: Update, parse: Callable[[bytes, str], Any]) -> Any:
        """The block or affinity a put carries; None for a delete, or for an unreadable
        document (reported in `problems`)."""
        if u.kind != "put":
            return None
        try:
            return parse(u.value, u.key)
        except IPAMDocumentError as exc:
            self.problems[u.key] = exc.reason  # not str(exc): the problem is filed under the key
            return None

    def _apply_endpoint(self, ident: tuple[str, str], u: Update) -> bool:
        ips: tuple[str, ...] | None = None
        if u.kind == "put" and _stored_node(u.value) in (self.nodename, None):
            # Only this node's endpoints are read in full (and reported if unreadable):
            # every other node's are the agent's calculation's to check, and reading
            # each pod's change on every node in full cost more than the rest of BGP's
            # work on it.
            wep = WorkloadEndpoint.from_stored(u.value, u.revision)
            if wep.spec.node == self.nodename:
                ips = tuple(sorted(
                    str(net) for net in map(ipaddress.ip_network, wep.spec.ipNetworks or ())
                    if net.version == 4))
        return _replace(self._endpoints, ident, ips)

    # -- reading ------------------------------------------------------------------------

    def local_blocks(self) -> list[str]:
        """This node's confirmed blocks whose document agrees (see the module docstring)."""
        # `state` is this node's affinity: it decides only for blocks that name this node.
        return sorted(cidr for cidr, state in self._affinities.items()
                      if block_owner(self._block_hosts.get(cidr), state) == self.nodename)

    def local_prefixes(self) -> set[str]:
        """Everything this node originates: its blocks and its borrowed /32s."""
        blocks = [ipaddress.ip_network(c) for c in self.local_blocks()]
        prefixes = {str(b) for b in blocks}
        for ips in self._endpoints.values():
            for ip in ips:
                net = ipaddress.ip_network(ip)
                if not any(net.subnet_of(b) for b in blocks):
                    prefixes.add(str(net))
        return prefixes

    def pool_export_rules(self) -> list[tuple[str, bool]]:
        """(IPv4 pool CIDR, disableBGPExport) for every pool."""
        rules = []
        for pool in self.pools.values():
            net = ipaddress.ip_network(pool.spec.cidr, strict=False)
            if net.version == 4:
                rules.append((str(net), bool(pool.spec.disableBGPExport)))
        return sorted(rules)


def _replace(table: dict, key: object, value: object, *, keep_none: bool = False) -> bool:
    old = table.get(key, _MISSING)
    if value is None and not keep_none:
        table.pop(key, None)
        return old is not _MISSING
    table[key] = value
    return old != value


_MISSING = object()


def _stored_node(value: bytes) -> str | None:
    """The `spec.node` a stored workload endpoint names, or None if it names none or
    cannot be read (the caller then reads it in full, which says why)."""
    try:
        node = json.loads(value)["spec"]["node"]
    except (ValueError, TypeError, KeyError):
        return None
    return node if isinstance(node, str) else None
