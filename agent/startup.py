"""Node start-up, as calico-node does it: register this node and what it needs.

Owns the start-up sequence of node/pkg/lifecycle/startup/startup.go `Run()`
and the tunnel-address reconciliation of node/pkg/allocateip/allocateip.go:

  1. the node name (agent.nodename), validated as a resource name;
  2. the Node: read it, or build a new one;
  3. unless CALICO_NETWORKING_BACKEND=none: the IPv4/IPv6 address from
     IP / IP6 (autodetect | none | address[/prefix], calico.md §5.3), the
     AS number from AS, and spec.interfaces;
  4. when an address changed (or the Node is new), unless DISABLE_NODE_IP_CHECK:
     refuse to start if another Node has the same address ("Calico node '%s'
     is already using the IPv4 address %s."); if IP=autodetect and our Node
     existed, first clear our own stored address, so that two nodes that
     swapped addresses cannot deadlock each other (Calico PR #1589);
  5. write the Node (create-if-absent, or compare-and-swap on its
     resourceVersion, re-read and re-applied on conflict) only if it differs;
  6. create the default BGPConfiguration (empty spec) and IPAMConfiguration
     when missing, and the default IPv4 pool (ipam.pools.ensure_default_pool);
  7. tunnel addresses: for IPIP and VXLAN, an address from the IPAM when an
     enabled pool that allows Tunnel use, selects this node and has that
     encapsulation needs one; released (by handle) and cleared when none does;
     VXLAN also gets the node's VTEP MAC;
  8. remember the node name in the node-name file.

Invariants:
  * A restart with nothing changed writes nothing: every write is preceded by a
    comparison with what is stored, and create-if-absent calls that lose are
    not writes.
  * Every write that can race is a compare-and-swap (datastore.store).
  * Provenance is visible: the chosen address, its interface and the method
    are logged and published on the Node as the annotations
    `tortie.io/ip-autodetection` / `tortie.io/ip6-autodetection`
    (values like "first-found eth0", "can-reach=10.0.0.1 eth1",
    "IP=10.0.0.5 eth0"). When an address is kept from the stored Node, the
    annotation is left as it was.
  * Errors are StartupError subclasses with Calico's wording; datastore and
    IPAM failures that are not the operator's fault propagate as their own
    exception trees (datastore.errors, ipam.errors wrapped in TunnelAddressError).

Deliberate differences from calico-node: the conflict check also runs for a
new Node whose address came from IP=<addr>; IP6=<addr> without prefix takes
the prefix from the local interface (Calico does that for IPv4 only);
spec.interfaces is written for the families in use whatever IP says (Calico
writes it only when IP/IP6 are set explicitly); ClusterInformation and
FelixConfiguration are not created (tortie has no such resources yet).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datastore.errors import (
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    UpdateConflict,
    ValidationError,
)
from datastore.keys import block_key, block_prefix, parse_block_key
from datastore.resources import BGPConfiguration, IPAMConfiguration, IPPool, Node
from datastore.resources.base import check_name
from datastore.store import ResourceStore
from ipam.allocator import Allocator
from ipam.block import Block
from ipam.errors import HandleNotFound, IPAMError
from ipam.pools import TUNNEL, ensure_default_pool, seeded_block_cidrs, usable_pools

from .autodetect import (
    AutodetectError,
    Detected,
    Interface,
    detect,
    list_interfaces,
    local_cidr,
    log_detected,
    match_local,
    node_interfaces,
    parse_method,
    reach_source,
)

# The VTEP MAC rule is the calculation's (one definition); start-up keeps its public name.
from .calc.vtep import derived_vtep_mac as derived_vxlan_mac
from .config import AgentConfig, StartupError
from .nodename import determine_node_name, write_nodename_file

_log = logging.getLogger(__name__)

IPV4_ANNOTATION = "tortie.io/ip-autodetection"
IPV6_ANNOTATION = "tortie.io/ip6-autodetection"
WRITE_RETRIES = 10
# How many never-claimed block CIDRs to try when a tunnel address must come from a
# particular pool (see _assign_in_pools).
FREE_BLOCK_ATTEMPTS = 16


class NodeNameError(StartupError):
    """The resolved node name is not a valid resource name."""


class AddressError(StartupError):
    """No usable address: detection failed with nothing stored, or none configured."""


class NodeIPConflict(StartupError):
    """Another Node uses this node's address. One Calico message per conflict."""

    def __init__(self, messages: Sequence[str], v4: bool, v6: bool) -> None:
        self.messages = list(messages)
        self.v4 = v4
        self.v6 = v6
        super().__init__("\n".join(self.messages))


class NodeWriteError(StartupError):
    """The Node could not be written (it kept changing, or was refused)."""


class TunnelAddressError(StartupError):
    """A tunnel address could not be allocated or released."""


# -- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TunnelAddresses:
    ipip: str | None = None
    vxlan: str | None = None
    vxlan_mac: str | None = None


@dataclass(frozen=True)
class StartupResult:
    node: Node
    nodename: str
    nodename_source: str
    detected: Detected | None          # IPv4 detection (None: not detected this time)
    detected6: Detected | None
    node_written: bool                 # the start-up changed the Node (address/AS/...)
    tunnels: TunnelAddresses
    tunnels_written: bool
    default_pool: IPPool | None        # the pool this start created, if any
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RedetectResult:
    node: Node
    changed: bool                      # the Node was updated
    detected: Detected | None
    detected6: Detected | None
    warnings: tuple[str, ...] = ()


# -- addresses (pure given a detector) ---------------------------------------------------------


@dataclass(frozen=True)
class AddressPlan:
    """What configureIPsAndSubnets decides: the addresses, and where they came from."""

    ipv4: str | None
    ipv6: str | None
    source4: str | None            # annotation value; None: leave the annotation alone
    source6: str | None
    detected4: Detected | None
    detected6: Detected | None
    interfaces: list[dict[str, object]]
    changed: bool                  # ipv4 or ipv6 differs from the stored Node
    warnings: tuple[str, ...] = ()


Detector = Callable[[str, int], Detected]


def _ip_of(cidr: str | None) -> str | None:
    return str(ipaddress.ip_interface(cidr).ip) if cidr else None


def _confirm(addr: str, interfaces: Sequence[Interface], warnings: list[str]) -> None:
    """calico-node's validateIP: only a warning when the address is not local."""
    iface = ipaddress.ip_interface(addr)
    if match_local(iface.ip, interfaces) is None:
        msg = f"Unable to confirm IPv{iface.version} address {iface.ip} is assigned to this host"
        _log.warning("%s", msg)
        warnings.append(msg)


def _plan_family(version: int, env: str, method: str, old: str | None,
                 interfaces: Sequence[Interface], detector: Detector, warnings: list[str]
                 ) -> tuple[str | None, str | None, Detected | None]:
    """(address, annotation or None, detection) for one family."""
    name = "IP" if version == 4 else "IP6"
    # IPv4 is detected when asked, or when unset and the Node has none; IPv6 only when asked.
    if env == "autodetect" or (version == 4 and env == "" and not old):
        # A method that can never work is fatal even when an old address could be kept.
        parse_method(method, version)
        try:
            found = detector(method, version)
        except AutodetectError as exc:
            if not old:
                _log.warning("Couldn't autodetect an IPv%d address. If auto-detecting, choose a "
                             "different autodetection method. Otherwise provide an explicit "
                             "address.", version)
                raise AddressError(
                    f"failed to autodetect an IPv{version} address: {exc}") from None
            msg = (f"Autodetection of IPv{version} address failed, keeping existing value: "
                   f"{old} ({exc})")
            _log.warning("%s", msg)
            warnings.append(msg)
            _confirm(old, interfaces, warnings)
            return old, None, None
        log_detected(found)
        return found.address, found.describe(), found
    if env in ("", "none"):
        if old:
            if env == "none":
                _log.info("Autodetection for IPv%d disabled, keeping existing value: %s",
                          version, old)
            _confirm(old, interfaces, warnings)
        return old, None, None
    # An explicit address: take the prefix from the interface that holds it.
    try:
        cidr, iface = local_cidr(env, interfaces)
        parsed = ipaddress.ip_interface(cidr)
    except ValueError:
        parsed = None
    if parsed is None or parsed.version != version:
        raise AddressError(
            f"Environment does not contain a valid IPv{version} address: {name}={env}")
    if iface is None and "/" not in env:
        _log.warning("Unable to find matching host interface for IP %s", env)
    _log.info("Using IPv%d address from environment: %s=%s", version, name, env)
    address = str(parsed)
    _confirm(address, interfaces, warnings)
    source = f"{name}={env} {iface}" if iface else f"{name}={env}"
    return address, source, None


def plan_addresses(node: Node | None, config: AgentConfig, interfaces: Sequence[Interface],
                   detector: Detector) -> AddressPlan:
    """Decide the node's addresses from IP/IP6 and the stored Node. Pure but for
    `detector` (which may do a route lookup for can-reach=)."""
    old4 = node.ipv4_address if node else None
    old6 = node.ipv6_address if node else None
    warnings: list[str] = []
    ipv4, source4, det4 = _plan_family(4, config.ip, config.ip_autodetection_method, old4,
                                       interfaces, detector, warnings)
    ipv6, source6, det6 = _plan_family(6, config.ip6, config.ip6_autodetection_method, old6,
                                       interfaces, detector, warnings)
    versions = [v for v, a in ((4, ipv4), (6, ipv6)) if a] or [4]
    changed = _norm(ipv4) != _norm(old4) or _norm(ipv6) != _norm(old6)
    return AddressPlan(ipv4, ipv6, source4, source6, det4, det6,
                       node_interfaces(interfaces, versions), changed, tuple(warnings))


def _norm(cidr: str | None) -> str | None:
    return str(ipaddress.ip_interface(cidr)) if cidr else None


def find_conflicts(name: str, ipv4: str | None, ipv6: str | None, nodes: Sequence[Node]
                   ) -> tuple[list[str], bool, bool]:
    """checkConflictingNodes: (messages, v4 conflict, v6 conflict). Pure.
    Addresses are compared without their prefix, as Calico does."""
    our4, our6 = _ip_of(ipv4), _ip_of(ipv6)
    msgs: list[str] = []
    v4 = v6 = False
    for other in sorted(nodes, key=lambda n: n.name):
        their4, their6 = _ip_of(other.ipv4_address), _ip_of(other.ipv6_address)
        if other.name == name:
            if our4 and their4 and our4 != their4:
                _log.warning("IPv4 address has changed. This could happen if there are multiple "
                             "nodes with the same name. node=%s original=%s updated=%s",
                             name, their4, our4)
            if our6 and their6 and our6 != their6:
                _log.warning("IPv6 address has changed. This could happen if there are multiple "
                             "nodes with the same name. node=%s original=%s updated=%s",
                             name, their6, our6)
            continue
        if our4 and their4 == our4:
            msgs.append(f"Calico node '{other.name}' is already using the IPv4 address {our4}.")
            v4 = True
        if our6 and their6 == our6:
            msgs.append(f"Calico node '{other.name}' is already using the IPv6 address {our6}.")
            v6 = True
    return msgs, v4, v6


# -- the Node document --------------------------------------------------------------------------


def _doc(node: Node | None, name: str) -> dict[str, Any]:
    if node is None:
        return {"apiVersion": "projectcalico.org/v3", "kind": "Node",
                "metadata": {"name": name}, "spec": {}}
    return node.dump()


def _set(d: dict[str, Any], key: str, value: object) -> None:
    if value is None or value == [] or value == {}:
        d.pop(key, None)
    else:
        d[key] = value


def _build(doc: dict[str, Any]) -> Node:
    spec = doc.setdefault("spec", {})
    if not spec.get("bgp"):
        spec.pop("bgp", None)
    meta = doc.setdefault("metadata", {})
    if not meta.get("annotations"):
        meta.pop("annotations", None)
    try:
        return Node.model_validate(doc)
    except Exception as exc:  # pydantic ValidationError: a bug or a bad stored value
        raise NodeWriteError(f"cannot build Node {meta.get('name')}: {exc}") from None


def _same(a: Node, b: Node) -> bool:
    return (a.spec.dump() == b.spec.dump()
            and (a.metadata.annotations or {}) == (b.metadata.annotations or {})
            and (a.metadata.labels or {}) == (b.metadata.labels or {}))


def write_node(store: ResourceStore, name: str, mutate: Callable[[Node | None], Node]
               ) -> tuple[Node, bool]:
    """Apply `mutate` to the stored Node and write the result if it differs.

    Create-if-absent for a new Node, compare-and-swap on the resourceVersion
    otherwise; a lost race re-reads and re-applies. Returns (node, written)."""
    for _ in range(WRITE_RETRIES):
        current = store.find(Node, name)
        desired = mutate(current)
        if current is not None and _same(current, desired):
            return current, False
        try:
            if current is None:
                written = store.create(desired)
                _log.info("created Node %s", name)
            else:
                written = store.update(desired)
                _log.info("updated Node %s", name)
            return written, True
        except (UpdateConflict, ResourceAlreadyExists, ResourceDoesNotExist) as exc:
            _log.info("Node %s changed while writing it (%s); retrying", name, exc)
        except ValidationError as exc:
            raise NodeWriteError(f"Node {name} was refused: {exc}") from None
    raise NodeWriteError(f"could not write Node {name}: it changed {WRITE_RETRIES} times in a row")


def _apply_plan(current: Node | None, name: str, config: AgentConfig,
                plan: AddressPlan | None) -> Node:
    doc = _doc(current, name)
    spec = doc.setdefault("spec", {})
    meta = doc.setdefault("metadata", {})
    annotations = dict(meta.get("annotations") or {})
    if plan is not None:
        bgp = dict(spec.get("bgp") or {})
        _set(bgp, "ipv4Address", plan.ipv4)
        _set(bgp, "ipv6Address", plan.ipv6)
        if config.as_number is not None:
            bgp["asNumber"] = config.as_number
        spec["bgp"] = bgp
        _set(spec, "interfaces", plan.interfaces)
        for key, addr, source in ((IPV4_ANNOTATION, plan.ipv4, plan.source4),
                                  (IPV6_ANNOTATION, plan.ipv6, plan.source6)):
            if not addr:
                annotations.pop(key, None)
            elif source is not None:
                annotations[key] = source
    if config.k8s_node_ref:
        spec["orchRefs"] = [{"nodeName": config.k8s_node_ref, "orchestrator": "k8s"}]
    meta["annotations"] = annotations
    return _build(doc)


def _clear_addresses(current: Node | None, name: str, v4: bool, v6: bool) -> Node:
    doc = _doc(current, name)
    bgp = dict(doc.get("spec", {}).get("bgp") or {})
    annotations = dict(doc.get("metadata", {}).get("annotations") or {})
    if v4:
        _log.info("Clearing out-of-date IPv4 address %s from this node", bgp.get("ipv4Address"))
        bgp.pop("ipv4Address", None)
        annotations.pop(IPV4_ANNOTATION, None)
    if v6:
        _log.info("Clearing out-of-date IPv6 address %s from this node", bgp.get("ipv6Address"))
        bgp.pop("ipv6Address", None)
        annotations.pop(IPV6_ANNOTATION, None)
    doc["spec"]["bgp"] = bgp
    doc["metadata"]["annotations"] = annotations
    return _build(doc)


def _check_conflicts(store: ResourceStore, name: str, plan: AddressPlan, existed: bool,
                     config: AgentConfig) -> None:
    msgs, v4, v6 = find_conflicts(name, plan.ipv4, plan.ipv6, store.list(Node))
    if not msgs:
        return
    for msg in msgs:
        _log.error("%s", msg)
    clear4 = v4 and config.ip == "autodetect"
    clear6 = v6 and config.ip6 == "autodetect"
    if existed and (clear4 or clear6):
        # Free our old address for whoever needs it (nodes that swapped IPs): PR #1589.
        try:
            write_node(store, name, lambda cur: _clear_addresses(cur, name, clear4, clear6))
        except StartupError as exc:
            _log.warning("Failed to clear node addresses: %s", exc)
    raise NodeIPConflict(msgs, v4, v6)


# -- defaults -----------------------------------------------------------------------------------


def ensure_default_config(store: ResourceStore) -> list[str]:
    """BGPConfiguration and IPAMConfiguration `default`, created when missing. Returns the
    kinds this call created; losing a create race to another node is fine."""
    created = []
    wanted = (BGPConfiguration(metadata={"name": "default"}),
              IPAMConfiguration(metadata={"name": "default"}))
    for res in wanted:
        if store.find(type(res), "default") is not None:
            continue
        try:
            store.create(res)
        except ResourceAlreadyExists:
            continue
        _log.info("created default %s", res.kind_name)
        created.append(res.kind_name)
    return created


# -- tunnel addresses ---------------------------------------------------------------------------


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


def _release_handle(allocator: Any, handle: str) -> list[str]:
    try:
        released = allocator.release_by_handle(handle)
    except HandleNotFound:
        return []
    if released:
        _log.info("released tunnel address(es) %s (handle %s)", ", ".join(released), handle)
    return list(released)


def _assign_in_pools(allocator: Any, store: ResourceStore, node: str, handle: str,
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


def _allocate(allocator: Any, store: ResourceStore, node: str, kind: TunnelKind,
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


def _reconcile_one(allocator: Any, store: ResourceStore, node: Node, kind: TunnelKind,
                   pools: Sequence[IPPool]) -> tuple[str | None, bool]:
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
    doc = _doc(current, name)
    spec = doc.setdefault("spec", {})
    bgp = dict(spec.get("bgp") or {})
    _set(bgp, "ipv4IPIPTunnelAddr", t.ipip)
    spec["bgp"] = bgp
    _set(spec, "ipv4VXLANTunnelAddr", t.vxlan)
    if t.vxlan_mac and not spec.get("vxlanTunnelMACAddr"):
        spec["vxlanTunnelMACAddr"] = t.vxlan_mac
    return _build(doc)


def reconcile_tunnel_addresses(store: ResourceStore, nodename: str, allocator: Any = None
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
    ipip, fresh = _reconcile_one(allocator, store, node, IPIP, pools)
    if fresh:
        new_handles.append(IPIP.handle(nodename))
    try:
        vxlan, fresh = _reconcile_one(allocator, store, node, VXLAN, pools)
        if fresh:
            new_handles.append(VXLAN.handle(nodename))
        mac = None
        if vxlan:
            mac = node.spec.vxlanTunnelMACAddr or derived_vxlan_mac(nodename)
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


# -- the sequence ---------------------------------------------------------------------------------


def _detector(interfaces: Sequence[Interface], netns: str | None,
              reach: Callable[[str, int], str] | None) -> Detector:
    def run(method: str, version: int) -> Detected:
        return detect(method, version, interfaces,
                      reach=reach or (lambda dest, v: reach_source(dest, v, netns)))

    return run


def _validate_name(name: str, source: str) -> None:
    try:
        check_name("Node", name, False, None)
    except ValidationError as exc:
        raise NodeNameError(f"invalid node name {name!r} (from {source}): {exc}") from None


def run_startup(store: ResourceStore, config: AgentConfig,
                environ: Mapping[str, str] | None = None, *,
                netns: str | None = None,
                nodename_file: str | os.PathLike[str] | None = None,
                interfaces: Sequence[Interface] | None = None,
                reach: Callable[[str, int], str] | None = None,
                allocator: Any = None,
                gethostname: Callable[[], str] = socket.gethostname) -> StartupResult:
    """Register this node as calico-node's start-up does (see the module docstring).

    `environ` is passed to the default-pool logic (CALICO_IPV4POOL_*) and supplies
    HOSTNAME; `netns` makes detection read that network namespace; `interfaces`
    and `reach` replace the host reads (tests); `allocator` is an
    ipam.allocator.Allocator (one is made when omitted).
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    name_file = nodename_file if nodename_file is not None else config.nodename_file
    name, name_source = determine_node_name(config.nodename, env.get("HOSTNAME"), name_file,
                                            gethostname)
    _validate_name(name, name_source)
    _log.info("Starting node %s (name from %s)", name, name_source)

    ifaces = list(interfaces) if interfaces is not None else list_interfaces(netns)
    existing = store.find(Node, name)
    if existing is None:
        _log.info("Building new node resource %s", name)

    plan: AddressPlan | None = None
    if config.policy_only:
        _log.info("CALICO_NETWORKING_BACKEND=none: not configuring the node's IP or AS")
    else:
        plan = plan_addresses(existing, config, ifaces, _detector(ifaces, netns, reach))
        if not plan.ipv4 and not plan.ipv6:
            raise AddressError("no IPv4 or IPv6 addresses configured or detected, "
                               "required for Calico networking")
        if config.as_number is not None:
            _log.info("Using AS number specified in environment (AS=%s)", config.as_number)
        elif existing is not None and existing.as_number is not None:
            _log.info("Using AS number %s configured in node resource", existing.as_number)
        else:
            _log.info("No AS number configured on node resource, using global value")
        if (plan.changed or existing is None) and not config.disable_node_ip_check:
            _check_conflicts(store, name, plan, existing is not None, config)

    node, node_written = write_node(store, name,
                                    lambda cur: _apply_plan(cur, name, config, plan))

    ensure_default_config(store)
    host_addresses = [str(a) for i in ifaces for a in i.addresses if a.version == 4]
    try:
        default_pool = ensure_default_pool(store, env, host_addresses)
    except IPAMError as exc:
        raise StartupError(str(exc)) from exc

    node, tunnels, tunnels_written = reconcile_tunnel_addresses(store, name, allocator)

    write_nodename_file(name, name_file)
    _log.info("Using node name: %s", name)
    return StartupResult(
        node=node, nodename=name, nodename_source=name_source,
        detected=plan.detected4 if plan else None, detected6=plan.detected6 if plan else None,
        node_written=node_written, tunnels=tunnels, tunnels_written=tunnels_written,
        default_pool=default_pool, warnings=plan.warnings if plan else ())


def redetect(store: ResourceStore, config: AgentConfig, nodename: str, *,
             netns: str | None = None, interfaces: Sequence[Interface] | None = None,
             reach: Callable[[str, int], str] | None = None) -> RedetectResult:
    """One pass of MonitorIPAddressSubnets: detect again and update the Node only when
    its addresses (or its interface list) changed. The agent calls this every
    AUTODETECT_POLL_INTERVAL; a NodeIPConflict means the new address is taken."""
    node = store.get(Node, nodename)
    if config.policy_only:
        return RedetectResult(node, False, None, None)
    ifaces = list(interfaces) if interfaces is not None else list_interfaces(netns)
    plan = plan_addresses(node, config, ifaces, _detector(ifaces, netns, reach))
    if plan.changed:
        _log.info("Node %s address changed: IPv4 %s -> %s, IPv6 %s -> %s", nodename,
                  node.ipv4_address, plan.ipv4, node.ipv6_address, plan.ipv6)
        if not config.disable_node_ip_check:
            _check_conflicts(store, nodename, plan, True, config)
    written, changed = write_node(store, nodename,
                                  lambda cur: _apply_plan(cur, nodename, config, plan))
    return RedetectResult(written, changed, plan.detected4, plan.detected6, plan.warnings)


__all__ = [
    "IPIP", "IPV4_ANNOTATION", "IPV6_ANNOTATION", "VXLAN", "AddressError", "AddressPlan",
    "NodeIPConflict", "NodeNameError", "NodeWriteError", "RedetectResult", "StartupResult",
    "TunnelAddressError", "TunnelAddresses", "derived_vxlan_mac", "ensure_default_config",
    "find_conflicts", "plan_addresses", "reconcile_tunnel_addresses", "redetect",
    "run_startup", "tunnel_pools", "write_node",
]
