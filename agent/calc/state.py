"""ClusterState: the calculation's in-memory index of the synced cluster.

Owns the parsed, minimal form of every datastore value the calculation reads
(pools, nodes, IPAM blocks, block affinities, workload endpoints, and the policy
kinds: NetworkPolicy, GlobalNetworkPolicy, Tier, Profile, NetworkSet,
GlobalNetworkSet, compiled once per update by policy.model). It is
fed syncer `Update`s in order and keeps nothing else: no I/O, no logging, no
clock. (BGP-learned routes are agent/calc/learned.py's.)

Invariants:
  * Every stored value is a frozen, already-validated record: the calculation
    never parses and never meets malformed data.
  * A value that cannot be read (bad JSON, fails validation, unknown affinity
    state) is treated as if its key were deleted, and a message naming the key
    is kept in `problems` until that key is fixed or deleted. Felix's syncer
    update processors likewise turn an unparseable value into a deletion.
    Blocks and affinities are read by datastore.ipam_documents, whose rule
    (`block_owner`) also decides which node owns a block.
  * `apply` reports which facets really changed (a re-put of an equal value
    changes nothing), and `take_changes()` lists what changed since its last call
    (the facets; each changed workload's and block's value before and after), from
    which agent.calc.unchanged_by decides whether a calculation is needed at all.
  * Keys the calculation does not read are ignored silently.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from datastore.errors import IPAMDocumentError
from datastore.ipam_documents import CONFIRMED, AllocationBlock, BlockAffinity, block_owner
from datastore.keys import parse_affinity_key, parse_block_key, parse_resource_key
from datastore.resources import (
    GlobalNetworkPolicy,
    GlobalNetworkSet,
    IPPool,
    NetworkPolicy,
    NetworkSet,
    Node,
    Profile,
    Tier,
    WorkloadEndpoint,
)
from datastore.resources.base import Resource
from datastore.syncer import Update
from policy import model as policy_model
from policy.model import (
    CompiledPolicy,
    Endpoint,
    PolicyState,
    compile_endpoint,
    compile_network_set,
    compile_policy,
    compile_profile,
    compile_tier,
    effective_labels,
)
from policy.render import RenderMemo

from ..types import PROTO_BOOT, Route, RouteClass
from .prefixes import dotted, mask_for
from .vtep import vtep_mac

PolicyNetworkSet = policy_model.NetworkSet
PolicyProfile = policy_model.Profile
PolicyTier = policy_model.Tier

NEVER = "Never"
ALWAYS = "Always"
CROSS_SUBNET = "CrossSubnet"


class Facet(enum.StrEnum):
    """The parts of the cluster state a change can touch."""

    POOLS = "pools"
    NODES = "nodes"
    BLOCKS = "blocks"
    AFFINITIES = "affinities"
    WORKLOADS = "workloads"
    POLICIES = "policies"  # NetworkPolicy and GlobalNetworkPolicy
    TIERS = "tiers"
    PROFILES = "profiles"
    NETWORK_SETS = "network_sets"  # NetworkSet and GlobalNetworkSet


# What the policy state is built from: a change to any of them rebuilds it.
POLICY_FACETS = frozenset({Facet.WORKLOADS, Facet.POLICIES, Facet.TIERS, Facet.PROFILES,
                           Facet.NETWORK_SETS})


class Encapsulation(enum.StrEnum):
    VXLAN = "vxlan"
    IPIP = "ipip"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class PoolInfo:
    """What the calculation needs of an IPPool."""

    name: str
    cidr: str  # canonical
    version: int
    base: int  # network address as an int
    prefixlen: int
    vxlan_mode: str
    ipip_mode: str
    nat_outgoing: bool
    disabled: bool
    load_balancer_only: bool

    @property
    def encapsulation(self) -> Encapsulation:
        # IPPool validation refuses both modes on; VXLAN first keeps this total anyway.
        if self.vxlan_mode != NEVER:
            return Encapsulation.VXLAN
        if self.ipip_mode != NEVER:
            return Encapsulation.IPIP
        return Encapsulation.NONE

    @property
    def cross_subnet(self) -> bool:
        """CrossSubnet in the encapsulation the pool uses (l3_route_resolver.go)."""
        mode = {Encapsulation.VXLAN: self.vxlan_mode, Encapsulation.IPIP: self.ipip_mode}
        return mode.get(self.encapsulation) == CROSS_SUBNET


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What the calculation needs of a Node: its IPv4 address and prefix, tunnel endpoints.

    Addresses are kept both as text (for the dataplane types) and as ints (for
    prefix arithmetic), computed once here rather than on every calculation.
    """

    name: str
    ipv4_interface: ipaddress.IPv4Interface | None  # spec.bgp.ipv4Address, e.g. 10.0.0.5/24
    ip: str | None
    ip_int: int | None
    ipip_tunnel_address: str | None
    ipip_tunnel_int: int | None
    vxlan_tunnel_address: str | None
    vxlan_tunnel_int: int | None
    vtep_mac: str  # spec.vxlanTunnelMACAddr, else derived from the name (agent/calc/vtep.py)
    subnet: tuple[int, int] | None = None  # (network, mask) of ipv4_interface

    def in_subnet(self, address: int) -> bool:
        """Whether `address` is in this node's subnet (a /32 holds no other address)."""
        return self.subnet is not None and address & self.subnet[1] == self.subnet[0]


@dataclass(frozen=True, slots=True)
class BlockInfo:
    """An IPAM block: its CIDR, the affinity its document names, who holds which address.

    `allocations_by_node` lists, per node named in an allocation's attributes
    (`secondary.node`, Calico's AttrNode), the allocated addresses as ints, sorted.
    Allocations that name no node cannot be routed and are not kept.
    """

    cidr: str  # canonical
    version: int
    base: int
    prefixlen: int
    affinity_node: str | None  # "host:<node>" -> node; "virtual:..." or none -> None
    allocations_by_node: tuple[tuple[str, tuple[int, ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class WorkloadInfo:
    """What the calculation needs of a WorkloadEndpoint.

    `local_routes` are the routes the endpoint gets on its own node, built once
    when it changes: on a node with thousands of pods, building them on every
    calculation would dominate its cost.
    """

    namespace: str
    name: str
    node: str | None
    interface: str | None
    ipv4: tuple[int, ...]  # the IPv4 addresses, sorted
    local_routes: tuple[Route, ...]
    mac: str | None
    # The endpoint as policy sees it, its own labels only (profiles' labelsToApply are
    # inherited when the policy state is built, since profiles change on their own).
    endpoint: Endpoint | None = None


# More changed workloads or blocks than this between two take_changes() are not listed
# one by one (StateChanges.overflow): a caller that never takes them keeps no history.
MAX_LISTED_CHANGES = 10_000


@dataclass
class StateChanges:
    """What changed in a ClusterState since the last `take_changes()`: the facets, and for
    workloads and blocks each one's value before the first change and after the last
    (None: absent). agent/calc/desired.py's `unchanged_by` reads it."""

    facets: set[Facet] = dataclasses.field(default_factory=set)
    workloads: dict[tuple[str, str], tuple[WorkloadInfo | None, WorkloadInfo | None]] = \
        dataclasses.field(default_factory=dict)
    blocks: dict[str, tuple[BlockInfo | None, BlockInfo | None]] = \
        dataclasses.field(default_factory=dict)
    problems: bool = False  # the problem list is not what it was at the last take
    overflow: bool = False  # too many workloads or blocks changed to list them

    def note(self, table: dict[Any, tuple[Any, Any]], key: Any, old: Any, new: Any) -> None:
        if self.overflow:
            return
        first = table[key][0] if key in table else old
        table[key] = (first, new)
        if len(table) > MAX_LISTED_CHANGES:
            self.overflow = True
            self.workloads.clear()
            self.blocks.clear()


class ClusterState:
    """The calculation's view of the cluster, updated from syncer Updates. Not thread-safe."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolInfo] = {}
        self.nodes: dict[str, NodeInfo] = {}
        self.blocks: dict[str, BlockInfo] = {}  # by canonical CIDR
        # (node, block CIDR) -> state, for host affinities that are not deleted.
        self.affinities: dict[tuple[str, str], str] = {}
        self.workloads: dict[tuple[str, str], WorkloadInfo] = {}  # by (namespace, name)
        self.workloads_by_node: dict[str | None, dict[tuple[str, str], WorkloadInfo]] = {}
        self._confirmed: dict[str, set[str]] = {}  # block CIDR -> nodes with confirmed affinity
        self._problems: dict[str, str] = {}
        # Policy kinds, compiled: policies by (kind, namespace, name); network sets by
        # (namespace, name) with their own labels (kns.<ns> labels are inherited later).
        self.policies: dict[tuple[str, str | None, str], CompiledPolicy] = {}
        self.tiers: dict[str, PolicyTier] = {}
        self.profiles: dict[str, PolicyProfile] = {}
        self.network_sets: dict[tuple[str | None, str], PolicyNetworkSet] = {}
        self._policy_state: PolicyState | None = None
        self._policy_endpoints: dict[tuple[str, str], Endpoint] = {}
        # Workloads changed since _policy_endpoints was built; None: rebuild them all.
        self._changed_workloads: set[tuple[str, str]] | None = None
        # What policy rendering keeps across calculations: ipset members per set and
        # local endpoints' plans (policy.render.RenderMemo).
        self.render_memo = RenderMemo()
        self._changes = StateChanges()
        self._problems_taken: dict[str, str] = {}

    # -- reading --------------------------------------------------------------------

    @property
    def problems(self) -> list[str]:
        """Why some values are being ignored, one line per key, sorted."""
        return [f"{key}: {msg}" for key, msg in sorted(self._problems.items())]

    def confirmed_holders(self, cidr: str) -> tuple[str, ...]:
        """The nodes holding a confirmed affinity for block `cidr`, sorted."""
        return tuple(sorted(self._confirmed.get(cidr, ())))

    def confirmed_cidrs(self) -> list[str]:
        """Every block CIDR some node holds a confirmed affinity for."""
        return list(self._confirmed)

    def policy_state(self) -> PolicyState:
        """The compiled policy state of the whole cluster (every endpoint and network set,
        for ipset members), rebuilt only after a policy facet changed."""
        if self._policy_state is None:
            profiles = self.profiles
            # Only the workloads that changed since the last build get their profiles'
            # labels again (all of them after a profile change): one pod's change costs
            # one _inherit, and every other endpoint keeps its object, which is how the
            # render memo (policy.render.RenderMemo) tells it is unchanged.
            if self._changed_workloads is None:
                self._policy_endpoints = {
                    ident: _inherit(w.endpoint, profiles)
                    for ident, w in self.workloads.items() if w.endpoint is not None}
            else:
                for ident in self._changed_workloads:
                    w = self.workloads.get(ident)
                    if w is None or w.endpoint is None:
                        self._policy_endpoints.pop(ident, None)
                    else:
                        self._policy_endpoints[ident] = _inherit(w.endpoint, profiles)
            self._changed_workloads = set()
            endpoints = tuple(self._policy_endpoints.values())
            network_sets = tuple(
                ns if ns.namespace is None else PolicyNetworkSet(
                    ns.key, ns.namespace,
                    effective_labels(ns.labels, (f"kns.{ns.namespace}",), profiles), ns.nets)
                for ns in self.network_sets.values())
            self._policy_state = PolicyState(
                endpoints=endpoints, network_sets=network_sets,
                policies=tuple(self.policies.values()), tiers=tuple(self.tiers.values()),
                profiles=tuple(profiles.values()))
        return self._policy_state

    def policy_endpoint(self, workload: WorkloadInfo) -> Endpoint | None:
        """The workload as policy.render sees it, with its profiles' labels."""
        self.policy_state()
        return self._policy_endpoints.get((workload.namespace, workload.name))

    def owner_of(self, block: BlockInfo) -> str | None:
        """The node owning `block` (datastore.ipam_documents.block_owner), or None."""
        node = block.affinity_node
        if node is None:
            return None
        return block_owner(node, self.affinities.get((node, block.cidr)))

    def take_changes(self) -> StateChanges:
        """What changed since the last call (or since the state was made), and start anew."""
        changes, self._changes = self._changes, StateChanges()
        changes.problems = self._problems != self._problems_taken
        if changes.problems:
            self._problems_taken = dict(self._problems)
        return changes

    # -- updating -------------------------------------------------------------------

    def apply(self, updates: Iterable[Update]) -> set[Facet]:
        """Fold syncer updates in, in order. Returns the facets whose content changed."""
        changed: set[Facet] = set()
        for update in updates:
            facet = self._apply_one(update)
            if facet is not None:
                changed.add(facet)
        self._changes.facets |= changed
        if changed & POLICY_FACETS:
            self._policy_state = None
        if Facet.PROFILES in changed:
            self._changed_workloads = None  # every endpoint's inherited labels may change
        return changed

    def _apply_one(self, update: Update) -> Facet | None:
        key = update.key
        resource = parse_resource_key(key)
        if resource is not None:
            plural, namespace, name = resource
            if plural == IPPool.plural and namespace is None:
                return self._replace(self.pools, name, update, Facet.POOLS,
                                     lambda: _parse_pool(name, update))
            if plural == Node.plural and namespace is None:
                return self._replace(self.nodes, name, update, Facet.NODES,
                                     lambda: _parse_node(name, update))
            if plural == WorkloadEndpoint.plural and namespace is not None:
                return self._apply_workload(namespace, name, update)
            return self._apply_policy_kind(plural, namespace, name, update)
        cidr = parse_block_key(key)
        if cidr is not None:
            canonical = _canonical_cidr(cidr)
            if canonical is None:
                self._problems[key] = "ignored: the key does not name a valid CIDR"
                return None
            old = self.blocks.get(canonical)
            facet = self._replace(self.blocks, canonical, update, Facet.BLOCKS,
                                  lambda: _parse_block(key, update.value))
            if facet is not None:
                self._changes.note(self._changes.blocks, canonical, old,
                                   self.blocks.get(canonical))
            return facet
        affinity = parse_affinity_key(key)
        if affinity is not None:
            return self._apply_affinity(*affinity, update)
        return None

    def _value_of(self, update: Update, parse: Callable[[], Any]) -> Any:
        """The parsed value a put carries (None for a delete or an unreadable value)."""
        if update.kind != "put":
            self._problems.pop(update.key, None)
            return None
        try:
            value = parse()
        except Exception as exc:  # any malformed input must be survivable
            self._problems[update.key] = f"ignored: {_one_line(exc)}"
            return None
        self._problems.pop(update.key, None)
        return value

    def _replace(self, table: dict[Any, Any], ident: Any, update: Update, facet: Facet,
                 parse: Callable[[], Any]) -> Facet | None:
        value = self._value_of(update, parse)
        old = table.pop(ident, None)
        if value is not None:
            table[ident] = value
        return facet if old != value else None

    def _apply_workload(self, namespace: str, name: str, update: Update) -> Facet | None:
        ident = (namespace, name)
        old = self.workloads.get(ident)
        facet = self._replace(self.workloads, ident, update, Facet.WORKLOADS,
                              lambda: _parse_workload(namespace, name, update))
        if facet is not None:
            self._changes.note(self._changes.workloads, ident, old, self.workloads.get(ident))
            if self._changed_workloads is not None:
                self._changed_workloads.add(ident)
        if old is not None:
            by_node = self.workloads_by_node[old.node]
            del by_node[ident]
            if not by_node:
                del self.workloads_by_node[old.node]
        new = self.workloads.get(ident)
        if new is not None:
            self.workloads_by_node.setdefault(new.node, {})[ident] = new
        return facet

    def _apply_policy_kind(self, plural: str, namespace: str | None, name: str,
                           update: Update) -> Facet | None:
        if plural in (NetworkPolicy.plural, GlobalNetworkPolicy.plural):
            cls = NetworkPolicy if plural == NetworkPolicy.plural else GlobalNetworkPolicy
            if (namespace is not None) != cls.namespaced:
                return None
            kind = cls.kind_name
            return self._replace(
                self.policies, (kind, namespace, name), update, Facet.POLICIES,
                lambda: compile_policy(kind, name, namespace,  # type: ignore[arg-type]
                                       _valid_spec(cls, update)))
        if plural == Tier.plural and namespace is None:
            return self._replace(self.tiers, name, update, Facet.TIERS,
                                 lambda: compile_tier(name, _valid_spec(Tier, update)))
        if plural == Profile.plural and namespace is None:
            return self._replace(self.profiles, name, update, Facet.PROFILES,
                                 lambda: compile_profile(name, _valid_spec(Profile, update)))
        if plural in (NetworkSet.plural, GlobalNetworkSet.plural):
            set_cls = NetworkSet if plural == NetworkSet.plural else GlobalNetworkSet
            if (namespace is not None) != set_cls.namespaced:
                return None
            return self._replace(self.network_sets, (namespace, name), update,
                                 Facet.NETWORK_SETS, lambda: _parse_network_set(set_cls, update))
        return None

    def _apply_affinity(self, affinity_type: str, node: str, cidr: str,
                        update: Update) -> Facet | None:
        if affinity_type != "host":
            return None  # virtual (LoadBalancer) affinities route nothing
        canonical = _canonical_cidr(cidr)
        if canonical is None:
            self._problems[update.key] = "ignored: the key does not name a valid CIDR"
            return None
        ident = (node, canonical)
        facet = self._replace(self.affinities, ident, update, Facet.AFFINITIES,
                              lambda: _parse_affinity_state(update.key, update.value))
        holders = self._confirmed.setdefault(canonical, set())
        if self.affinities.get(ident) == CONFIRMED:
            holders.add(node)
        else:
            holders.discard(node)
        if not holders:
            del self._confirmed[canonical]
        return facet


# -- parsers (raise on bad input; ClusterState turns that into a problem) ---------------


def _one_line(exc: BaseException) -> str:
    # An IPAM document's error starts with its key, which the problem line names already.
    text = exc.reason if isinstance(exc, IPAMDocumentError) else str(exc)
    return " ".join(text.split()) or type(exc).__name__


@functools.lru_cache(maxsize=65536)  # block keys come back with every change to the block
def _canonical_cidr(cidr: str) -> str | None:
    try:
        return str(ipaddress.ip_network(cidr))
    except ValueError:
        return None


def _address_int(text: str | None) -> int | None:
    return int(ipaddress.ip_address(text)) if text else None


def _parse_pool(name: str, update: Update) -> PoolInfo:
    pool = IPPool.from_stored(update.value, update.revision)
    assert isinstance(pool, IPPool)
    errs = pool.validate_semantics()
    if errs:
        raise ValueError("; ".join(str(e) for e in errs))
    spec = pool.spec
    net = spec.network
    return PoolInfo(
        name=name, cidr=str(net), version=net.version, base=int(net.network_address),
        prefixlen=net.prefixlen, vxlan_mode=spec.vxlanMode, ipip_mode=spec.ipipMode,
        nat_outgoing=bool(spec.natOutgoing), disabled=bool(spec.disabled),
        load_balancer_only=spec.allowedUses == ["LoadBalancer"],
    )


def _parse_node(name: str, update: Update) -> NodeInfo:
    node = Node.from_stored(update.value, update.revision)
    assert isinstance(node, Node)
    bgp = node.spec.bgp
    iface = ipaddress.IPv4Interface(bgp.ipv4Address) if bgp and bgp.ipv4Address else None
    ipip = bgp.ipv4IPIPTunnelAddr if bgp else None
    vxlan = node.spec.ipv4VXLANTunnelAddr
    return NodeInfo(
        name=name,
        ipv4_interface=iface,
        ip=str(iface.ip) if iface else None,
        ip_int=int(iface.ip) if iface else None,
        ipip_tunnel_address=ipip or None,
        ipip_tunnel_int=_address_int(ipip),
        vxlan_tunnel_address=vxlan or None,
        vxlan_tunnel_int=_address_int(vxlan),
        vtep_mac=vtep_mac(name, node.spec.vxlanTunnelMACAddr),
        subnet=(int(iface.network.network_address), mask_for(iface.network.prefixlen))
        if iface else None,
    )


def _parse_workload(namespace: str, name: str, update: Update) -> WorkloadInfo:
    wep = WorkloadEndpoint.from_stored(update.value, update.revision)
    assert isinstance(wep, WorkloadEndpoint)
    errs = wep.validate_semantics()
    if errs:
        raise ValueError("; ".join(str(e) for e in errs))
    spec = wep.spec
    v4 = sorted({
        int(net.network_address) for net in map(ipaddress.ip_network, spec.ipNetworks or ())
        if net.version == 4
    })
    routes: tuple[Route, ...] = ()
    if spec.interfaceName:
        # Felix's workload route (endpoint_mgr.go): on the cali interface, scope link,
        # DeviceRouteProtocol (boot), so `ip route` shows "10.65.0.2 dev caliX scope link".
        routes = tuple(Route(f"{dotted(a)}/32", RouteClass.LOCAL_WORKLOAD, dev=spec.interfaceName,
                             scope="link", proto=PROTO_BOOT) for a in v4)
    endpoint = compile_endpoint(name, namespace, wep.metadata.labels,
                                spec.model_dump(exclude_none=True), {})
    return WorkloadInfo(namespace=namespace, name=name, node=spec.node,
                        interface=spec.interfaceName, ipv4=tuple(v4), local_routes=routes,
                        mac=spec.mac, endpoint=endpoint)


def _valid(cls: type[Resource], update: Update) -> Resource:
    resource = cls.from_stored(update.value, update.revision)
    errs = resource.validate_semantics()
    if errs:
        raise ValueError("; ".join(str(e) for e in errs))
    return resource


def _valid_spec(cls: type[Resource], update: Update) -> dict[str, Any]:
    """A validated resource's spec as plain data, the shape policy.model compiles."""
    return _valid(cls, update).spec.model_dump(exclude_none=True)  # type: ignore[attr-defined, no-any-return]


def _parse_network_set(cls: type[Resource], update: Update) -> PolicyNetworkSet:
    resource = _valid(cls, update)
    spec = resource.spec.model_dump(exclude_none=True)  # type: ignore[attr-defined]
    # Profiles are applied when the policy state is built: kns.<ns> may change alone.
    return compile_network_set(resource.name, resource.namespace, resource.metadata.labels,
                               spec, {})


def _inherit(endpoint: Endpoint, profiles: dict[str, PolicyProfile]) -> Endpoint:
    """The endpoint with its profiles' labelsToApply (policy.model.effective_labels)."""
    if not any(profiles.get(p) is not None and profiles[p].labels_to_apply
               for p in endpoint.profiles):
        return endpoint
    return dataclasses.replace(
        endpoint, labels=effective_labels(endpoint.labels, endpoint.profiles, profiles))


def _parse_affinity_state(key: str, value: bytes) -> str | None:
    affinity = BlockAffinity.from_json(value, key)
    return None if affinity.deleted else affinity.state


def _attribute_node(attrs: object) -> str | None:
    """The node an allocation attribute names (`secondary.node`, Calico's AttrNode)."""
    secondary = attrs.get("secondary") if isinstance(attrs, dict) else None
    node = secondary.get("node") if isinstance(secondary, dict) else None
    return node if isinstance(node, str) and node else None


def _parse_block(key: str, value: bytes) -> BlockInfo | None:
    """The few fields of Calico's AllocationBlock the routes depend on."""
    block = AllocationBlock.from_json(value, key)
    if block.deleted:
        return None
    net = block.network
    attributes = block.attributes
    base = int(net.network_address)
    # The node each attribute names, looked up once per attribute rather than once per
    # allocation: a block is re-read on every pod change in it, on every node.
    attribute_nodes = [_attribute_node(attrs) for attrs in attributes]
    count = len(attributes)
    by_node: dict[str, list[int]] = {}
    for ordinal, attr_index in enumerate(block.allocations[: net.num_addresses]):
        if attr_index is None:
            continue
        # type() rather than isinstance(): a bool is an int but no attribute index.
        if type(attr_index) is not int or not 0 <= attr_index < count:
            raise IPAMDocumentError(key, f"allocations[{ordinal}]", attr_index,
                                    f"allocation {ordinal} points at no attribute ({attr_index!r})")
        node = attribute_nodes[attr_index]
        if node is not None:
            by_node.setdefault(node, []).append(base + ordinal)
    return BlockInfo(
        cidr=block.cidr, version=net.version, base=base, prefixlen=net.prefixlen,
        affinity_node=block.host,
        allocations_by_node=tuple((node, tuple(ips)) for node, ips in sorted(by_node.items())),
    )
