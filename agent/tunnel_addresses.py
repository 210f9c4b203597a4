"""agent.tunnel_addresses: the node's IPIP and VXLAN tunnel addresses, from the IPAM.

Owns the tunnel-address reconciliation of calico-node
(node/pkg/allocateip/allocateip.go, `reconcileTunnelAddrs`), step 7 of
start-up (agent.startup): for IPIP and VXLAN, an address from the IPAM when an
enabled pool that allows Tunnel use, selects this node and has that
encapsulation needs one; released (by handle) and cleared when none does;
VXLAN also gets the node's VTEP MAC.

Invariants:
  * One handle per node and kind ("ipip-tunnel-addr-<node>",
    "vxlan-tunnel-addr-<node>"), with the attributes {"node", "type"} that
    `ipam check` and Calico recognise.
  * A restart with nothing changed allocates and writes nothing; addresses
    allocated by a call whose Node write fails are released again.
  * IPAM failures surface as TunnelAddressError (agent.errors).

The IPAM is reached through `TunnelAllocator`, the operations this needs;
ipam.allocator.Allocator is the real one, and a fake one serves unit tests.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from datastore.keys import block_key, block_prefix, parse_block_key
from datastore.resources import IPPool, Node
from datastore.store import ResourceStore
from ipam.allocator import Allocator, Assignment
from ipam.block import Block
from ipam.errors import HandleNotFound, IPAMError
from ipam.pools import TUNNEL, WORKLOAD, seeded_block_cidrs, usable_pools

from .calc.vtep import derived_vtep_mac
from .errors import TunnelAddressError
from .node_write import build_node, node_document, set_field, write_node

_log = logging.getLogger(__name__)

# How many never-claimed block CIDRs to try when a tunnel address must come from a
# particular pool (see _assign_in_pools).
FREE_BLOCK_ATTEMPTS = 16


class TunnelAllocator(Protocol):
    """The IPAM operations the reconciliation uses (ipam.allocator.Allocator's)."""

    def get_assignment(self, ip: str) -> Assignment | None: ...

    def affine_blocks(self, node: str, version: int = 4) -> list[str]: ...

    def assign_ip(self, ip: str, node: str, handle_id: str,
                  attrs: Mapping[str, str] | None = None, use: str = WORKLOAD) -> str: ...

    def auto_assign(self, node: str, handle_id: str, num: int = 1,
                    attrs: Mapping[str, str] | None = None, use: str = WORKLOAD,
                    version: int = 4) -> list[str]: ...

    def release_ips(self, ips: Iterable[str], handle: str | None = None) -> object: ...

    def release_by_handle(self, handle_id: str) -> list[str]: ...


@dataclass(frozen=True)
class TunnelAddresses:
    """The addresses (and VXLAN's VTEP MAC) the Node carries; None: it carries none."""

    ipip: str | None = None
    vxlan: str | None = None
    vxlan_mac: str | None = None


@dataclass(frozen=True)
class TunnelKind:
    name: str             # "IPIP" | "VXLAN"
    handle_prefix: str
    attr_type: str

    def handle(self, node: str) -> str:
        return f"{self.handle_prefix}{node}"

    def mode(self, pool: IPPool) -> str:
        return pool.spec.ipipMode if self.name == "IPIP" else pool.spec.vxlanMode


IPIP = TunnelKind("IPIP", "ipip-tunnel-addr-", "ipipTunnelAddress")
VXLAN = TunnelKind("VXLAN", "vxlan-tunnel-addr-", "vxlanTunnelAddress")


def tunnel_pools(pools: Sequence[IPPool], labels: Mapping[str, str], kind: TunnelKind
                 ) -> list[IPPool]:
    """allocateip.go's qualifying pools: enabled IPv4, Tunnel allowed, selecting the node,
    with this encapsulation (Always or CrossSubnet). Pure."""
    return [p for p in usable_pools(pools, labels, TUNNEL, 4) if kind.mode(p) != "Never"]


def _current_tunnel(node: Node, kind: TunnelKind) -> str | None:
    if kind is IPIP:
        return node.spec.bgp.ipv4IPIPTunnelAddr if node.spec.bgp else None
    return node.spec.ipv4VXLANTunnelAddr


def _in_pools(ip: str, pools: Sequence[IPPool]) -> bool:
    addr = ipaddress.ip_address(ip)
    return any(addr in p.spec.network for p in pools)


def _release_handle(allocator: TunnelAllocator, handle: str) -> list[str]:
    try:
        released = allocator.release_by_handle(handle)
    except HandleNotFound:
        return []
    if released:
        _log.info("released tunnel address(es) %s (handle %s)", ", ".join(released), handle)
    return list(released)


def _assign_in_pools(allocator: TunnelAllocator, store: ResourceStore, node: str, handle: str,
                     attrs: Mapping[str, str], pools: Sequence[IPPool]) -> str:
    """One address from `pools` only (the allocator's auto_assign cannot be told which
    pools to use: see reconcile_tunnel_addresses). Order as autoAssign's: the node's
    affine blocks first (FIFO free list), then a block nobody claimed yet, in the
    node's seeded order; no borrowing."""
    client = store.client
    affine = allocator.affine_blocks(node)
    for pool in pools:
        for cidr in affine:
            if not ipaddress.ip_network(cidr).subnet_of(pool.spec.network):  # type: ignore[arg-type]
                continue
            kv = client.get(block_key(cidr))
            if kv is None:
                continue
            block = Block.from_json(kv.value)
            for ordinal in block.unallocated[:FREE_BLOCK_ATTEMPTS]:
                try:
                    return str(allocator.assign_ip(block.ip_of(ordinal), node, handle, attrs,
                                                   use=TUNNEL))
                except IPAMError as exc:
                    _log.debug("could not take %s: %s", block.ip_of(ordinal), exc)
        existing = {parse_block_key(kv.key) for kv in client.list(block_prefix(4))[0]}
        tried = 0
        for cidr in seeded_block_cidrs(pool, node):
            if cidr in existing:
                continue
            try:
                first = str(ipaddress.ip_network(cidr).network_address)
                return str(allocator.assign_ip(first, node, handle, attrs, use=TUNNEL))
            except IPAMError as exc:
                _log.debug("could not claim %s: %s", cidr, exc)
            tried += 1
            if tried >= FREE_BLOCK_ATTEMPTS:
                break
    raise TunnelAddressError(
        f"no free address for the tunnel of node {node} in pools "
        f"[{' '.join(p.spec.cidr for p in pools)}]")


def _allocate(allocator: TunnelAllocator, store: ResourceStore, node: str, kind: TunnelKind,
              qualifying: Sequence[IPPool], usable: Sequence[IPPool], keep: str | None) -> str:
    handle = kind.handle(node)
    attrs = {"node": node, "type": kind.attr_type}
    # Leftovers of an allocation whose Node write never happened (a crash in between).
    _release_handle(allocator, handle)
    try:
        if keep is not None:
            # The Node names an address nobody holds (IPAM restored, say): take it back
            # rather than moving the VTEP.
            try:
                return str(allocator.assign_ip(keep, node, handle, attrs, use=TUNNEL))
            except IPAMError as exc:
                _log.info("cannot keep %s tunnel address %s: %s", kind.name, keep, exc)
        if {p.name for p in usable} == {p.name for p in qualifying}:
            # Every pool the allocator may choose from qualifies: let it choose.
            return str(allocator.auto_assign(node, handle, 1, attrs, use=TUNNEL)[0])
        return _assign_in_pools(allocator, store, node, handle, attrs, qualifying)
    except IPAMError as exc:
        raise TunnelAddressError(
            f"could not allocate the {kind.name} tunnel address of node {node}: {exc}") from exc


def reconcile_kind(allocator: TunnelAllocator, store: ResourceStore, node: Node,
                   kind: TunnelKind, pools: Sequence[IPPool]) -> tuple[str | None, bool]:
    """(address the Node should carry, whether it was newly allocated)."""
    name = node.name
    labels = dict(node.metadata.labels or {})
    qualifying = tunnel_pools(pools, labels, kind)
    current = _current_tunnel(node, kind)
    try:
        owner = allocator.get_assignment(current) if current else None
    except IPAMError as exc:
        raise TunnelAddressError(f"cannot read the assignment of {current}: {exc}") from exc
    ours = (owner is not None and owner.attributes.get("node") == name
            and owner.attributes.get("type") == kind.attr_type)
    if not qualifying:
        try:
            _release_handle(allocator, kind.handle(name))
            if ours and owner is not None and owner.handle_id != kind.handle(name):
                assert current  # owner was read at current
                allocator.release_ips([current], handle=owner.handle_id)
        except IPAMError as exc:
            raise TunnelAddressError(
                f"could not release the {kind.name} tunnel address of node {name}: {exc}"
            ) from exc
        if current:
            _log.info("no pool needs a %s tunnel address on %s any more; clearing %s",
                      kind.name, name, current)
        return None, False
    if current and ours and _in_pools(current, qualifying):
        if owner is not None and owner.handle_id != kind.handle(name):
            _log.warning("%s tunnel address %s of %s is held by handle %s, not %s",
                         kind.name, current, name, owner.handle_id, kind.handle(name))
        return current, False
    keep = None
    if current and ours:
        _log.info("%s tunnel address %s is not in a pool that needs it; replacing it",
                  kind.name, current)
        try:
            allocator.release_ips([current], handle=owner.handle_id if owner else None)
        except IPAMError as exc:
            raise TunnelAddressError(f"could not release {current}: {exc}") from exc
    elif current and owner is None:
        if _in_pools(current, qualifying):
            keep = current
    elif current and owner is not None:
        _log.warning("%s tunnel address %s of %s is assigned to someone else (%s); "
                     "allocating another", kind.name, current, name, dict(owner.attributes))
    usable = usable_pools(pools, labels, TUNNEL, 4)
    ip = _allocate(allocator, store, name, kind, qualifying, usable, keep)
    _log.info("assigned %s tunnel address %s to node %s", kind.name, ip, name)
    return ip, True


def _apply_tunnels(current: Node | None, name: str, t: TunnelAddresses) -> Node:
    doc = node_document(current, name)
    spec = doc.setdefault("spec", {})
    bgp = dict(spec.get("bgp") or {})
    set_field(bgp, "ipv4IPIPTunnelAddr", t.ipip)
    spec["bgp"] = bgp
    set_field(spec, "ipv4VXLANTunnelAddr", t.vxlan)
    if t.vxlan_mac and not spec.get("vxlanTunnelMACAddr"):
        spec["vxlanTunnelMACAddr"] = t.vxlan_mac
    return build_node(doc)


def reconcile_tunnel_addresses(store: ResourceStore, nodename: str,
                               allocator: TunnelAllocator | None = None
                               ) -> tuple[Node, TunnelAddresses, bool]:
    """Give the Node the IPIP/VXLAN tunnel addresses its pools need, and no others.

    Returns (node, addresses, whether the Node was written). The agent may call it
    again whenever pools or the Node's labels change. Addresses allocated here are
    released again if the Node cannot be written.

    The IPAM allocator's auto_assign takes no pool list (Calico passes the
    qualifying pools as IPv4Pools); when some usable Tunnel pool does not qualify,
    the address is assigned explicitly inside a qualifying pool instead.
    """
    if allocator is None:
        allocator = Allocator(store.client)
    node = store.get(Node, nodename)
    pools = store.list(IPPool)
    new_handles: list[str] = []
    ipip, fresh = reconcile_kind(allocator, store, node, IPIP, pools)
    if fresh:
        new_handles.append(IPIP.handle(nodename))
    try:
        vxlan, fresh = reconcile_kind(allocator, store, node, VXLAN, pools)
        if fresh:
            new_handles.append(VXLAN.handle(nodename))
        mac = None
        if vxlan:
            mac = node.spec.vxlanTunnelMACAddr or derived_vtep_mac(nodename)
        wanted = TunnelAddresses(ipip, vxlan, mac)
        written, wrote = write_node(store, nodename,
                                    lambda cur: _apply_tunnels(cur, nodename, wanted))
    except Exception:
        for handle in new_handles:
            try:
                _release_handle(allocator, handle)
            except Exception:  # noqa: BLE001 - keep the original error; ipam check finds it
                _log.warning("could not release %s after a failed start", handle, exc_info=True)
        raise
    return written, TunnelAddresses(ipip, vxlan, written.spec.vxlanTunnelMACAddr), wrote


__all__ = [
    "FREE_BLOCK_ATTEMPTS", "IPIP", "VXLAN", "TunnelAddresses", "TunnelAllocator", "TunnelKind",
    "reconcile_kind", "reconcile_tunnel_addresses", "tunnel_pools",
]
