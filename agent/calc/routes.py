"""Routes, tunnel devices, VXLAN neighbours and FDB entries for one node. Pure.

Input: a ClusterState, the local node's name and a CalcConfig. Output: a
RoutingPlan. IPv4 only (pools, blocks and endpoints of IPv6 are not routed
yet). The rules are Felix's (`felix/calc/l3_route_resolver.go`,
`felix/dataplane/linux/{route_mgr,vxlan_mgr,ipip_mgr,noencap_mgr}.go`), with
the decisions Calico leaves open written down here:

Ownership (datastore.ipam_documents.block_owner). A block belongs to node N
when its document says `affinity: host:N` AND N's affinity key for it is
`confirmed` (an affinity without a state, written before states existed,
counts as confirmed). Pending and pendingDeletion affinities, a confirmed
affinity whose block document names another node or is missing, deleted
blocks and blocks without affinity belong to nobody.

Local routes.
  * `<ip>/32 dev <interfaceName> scope link`, proto boot, for every IPv4
    address of every local workload endpoint (class LOCAL_WORKLOAD).
  * `blackhole <block> proto 80` for every local block, except /32 blocks
    (a /32 blackhole would shadow the pod's own route: Calico issue #2624).
    Blocks are blackholed whether or not a pool still covers them.

Routes to another node N with IPv4 address A, for a destination in pool P:
  * P VXLAN, and not (CrossSubnet and same subnet):
    `<dst> via <N's VXLAN tunnel address> dev vxlan.calico onlink mtu <VXLAN MTU>`
    (VXLAN_TUNNEL). Needs N's tunnel address and the local VXLAN device.
  * P IPIP, and not (CrossSubnet and same subnet):
    `<dst> via A dev tunl0 onlink mtu <IPIP MTU>` (IPIP_TUNNEL).
  * Otherwise (CrossSubnet and same subnet, or no encapsulation):
    `<dst> via A dev <parent> onlink` (VXLAN_SAME_SUBNET / IPIP_SAME_SUBNET /
    NO_ENCAP). Needs the parent interface.
  "Same subnet": this node's `ipv4Address` network contains A (a /32 prefix
  contains no other node). All of these carry proto 80. Disabled pools are
  routed like enabled ones: their pods still exist.

What is routed to N that way:
  * N's blocks (a block in no pool is not routed: there is no encapsulation
    to choose; a problem is recorded).
  * Borrowed addresses, as /32s: an allocation of any block whose attributes
    name N (`secondary.node`) while the block is not N's (Felix's
    NonAffineAllocations); an address of a workload endpoint on N that is not
    inside a block of N's; N's IPIP tunnel address when not inside a block of
    N's. Addresses in no pool are not routed. Addresses allocated to this
    node need no route here: its workload routes cover them.
  * N's VXLAN tunnel address, when it is not inside a (non-/32) block of N's:
    `<vtep>/32 dev vxlan.calico scope link` (VXLAN_TUNNEL), like Felix's
    remote-tunnel routes; inside such a block the block route reaches it.
  Every remote VTEP (a node with an IPv4 and a VXLAN tunnel address) gets a
  permanent neighbour entry and an FDB entry on vxlan.calico when the local
  VXLAN device exists; a duplicated VTEP address or MAC keeps the first node
  by name and records a problem.

BGP-learned routes are not this module's: agent/calc/learned.py turns them
into routes incrementally (with `route_via_node` below, so they take the same
forms), and the RouteTable prefers a route from here for any destination
both want.

Who routes what. VXLAN pools are always routed from the datastore (Felix's
VXLAN manager). IPIP and no-encap pools are routed from the datastore only
with CalcConfig.datastore_cluster_routes (BGP off: Felix HEAD's
programClusterRoutes); with BGP on they are routed from the learned routes
alone, as BIRD does in Calico, so a node whose sessions drop loses its routes
everywhere (and a route never outlives the session that carries it).

Devices. vxlan.calico when some IPv4 pool (disabled ones too) has a VXLAN
mode other than Never and the local node has an IPv4 address and a VXLAN
tunnel address and the parent interface is known; tunl0 when some IPv4 pool
has an IPIP mode other than Never (its address may be None until the agent
has allocated one). Pools need their tunnels as long as they exist, even
disabled, because existing pods in them still need the paths.

Conflicts. At most one route per destination: the lowest RouteClass wins;
then the lowest `ip route` form, so the answer never depends on the order
updates arrived in. Two different routes of one class for one destination
also record a problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..types import (
    IPIP_DEVICE,
    PROTO_TORTIE,
    VXLAN_DEVICE,
    FdbEntry,
    IPIPDevice,
    Neighbor,
    Route,
    RouteClass,
    VXLANDevice,
)
from .config import CalcConfig
from .prefixes import PrefixIndex, dotted
from .state import NEVER, BlockInfo, ClusterState, Encapsulation, NodeInfo, PoolInfo

_DIRECT_CLASS = {
    Encapsulation.VXLAN: RouteClass.VXLAN_SAME_SUBNET,
    Encapsulation.IPIP: RouteClass.IPIP_SAME_SUBNET,
    Encapsulation.NONE: RouteClass.NO_ENCAP,
}


@dataclass(frozen=True)
class AddressRouting:
    """Which addresses of other nodes' endpoints need a /32 of their own here: the plan's
    pools, blocks and block owners, kept with it so that a later change to a remote
    endpoint can be checked against them without a new plan (agent/calc/desired.py,
    `unchanged_by`). Immutable once built."""

    pool_index: PrefixIndex[PoolInfo]
    block_index: PrefixIndex[tuple[str, int]]  # blocks of IPv4 pools: (CIDR, prefix length)
    owners: Mapping[str, str]  # block CIDR -> owning node
    datastore_cluster_routes: bool

    def owner_of_address(self, address: int) -> tuple[int, str | None]:
        """(prefix length of the block holding `address` or 0, the block's owner or None)."""
        block = self.block_index.longest_match(address)
        if block is None:
            return 0, None
        cidr, prefixlen = block
        return prefixlen, self.owners.get(cidr)

    def borrowed_pool(self, address: int, node_name: str) -> PoolInfo | None:
        """The pool of `address` when `node_name` holds it outside a block of its own (a
        borrowed address, routed as a /32); None inside one (the block route reaches
        it) or outside every pool (not routed)."""
        if self.owner_of_address(address)[1] == node_name:
            return None
        return self.pool_index.longest_match(address)

    def needs_route(self, address: int, node_name: str) -> bool:
        """Whether an endpoint of `node_name` holding `address` adds anything to the plan:
        a /32 or a problem (Who routes what: BGP carries the other pools' /32s)."""
        pool = self.borrowed_pool(address, node_name)
        return pool is not None and routed_from_datastore(pool, self.datastore_cluster_routes)


def routed_from_datastore(pool: PoolInfo, datastore_cluster_routes: bool) -> bool:
    """Whether other nodes' addresses in `pool` are routed from the datastore here, rather
    than by BGP (Who routes what)."""
    return pool.encapsulation is Encapsulation.VXLAN or datastore_cluster_routes


def routed_allocations(block: BlockInfo, owner: str | None, local_node: str
                       ) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The allocations of `block` routed as /32s to their node: not those of the block's
    owner (its block route covers them) or of this node (its workload routes do)."""
    return tuple(item for item in block.allocations_by_node if item[0] not in (owner, local_node))


@dataclass(frozen=True)
class RoutingPlan:
    routes: frozenset[Route]
    neighbors: frozenset[Neighbor]
    fdb: frozenset[FdbEntry]
    vxlan: VXLANDevice | None
    ipip: IPIPDevice | None
    workload_interfaces: frozenset[str]
    pools: tuple[PoolInfo, ...]  # the IPv4 pools, by name (for the rules)
    local_blocks: frozenset[str]  # CIDRs of the blocks this node owns
    addresses: AddressRouting = field(compare=False)
    problems: tuple[str, ...] = ()


class _RouteChooser:
    """Keeps the winning route per destination (see the module docstring, Conflicts)."""

    def __init__(self, problems: dict[str, None]) -> None:
        self._best: dict[str, Route] = {}
        self._problems = problems

    def offer(self, route: Route) -> None:
        current = self._best.get(route.dst)
        if current is None:
            self._best[route.dst] = route
            return
        if current == route and current.route_class == route.route_class:
            return
        new_key = (route.route_class, route.describe())
        cur_key = (current.route_class, current.describe())
        if new_key[0] == cur_key[0] and new_key != cur_key:
            winner, loser = sorted((new_key[1], cur_key[1]))
            self._problems[f"conflicting routes for {route.dst}: "
                           f"kept '{winner}', dropped '{loser}'"] = None
        if new_key < cur_key:
            self._best[route.dst] = route

    def routes(self) -> frozenset[Route]:
        return frozenset(self._best.values())


@dataclass
class _Context:
    """Everything derived once per calculation; the rule functions below read it."""

    state: ClusterState
    local_name: str
    config: CalcConfig
    local: NodeInfo | None = None
    pools: tuple[PoolInfo, ...] = ()
    pool_index: PrefixIndex[PoolInfo] = field(default_factory=lambda: PrefixIndex(()))
    owners: dict[str, str] = field(default_factory=dict)  # block CIDR -> owning node
    addresses: AddressRouting | None = None  # made by _index() from the two above
    vxlan: VXLANDevice | None = None
    ipip: IPIPDevice | None = None
    problems: dict[str, None] = field(default_factory=dict)  # an ordered set

    def problem(self, message: str) -> None:
        self.problems[message] = None

    def same_subnet(self, address: int) -> bool:
        return self.local is not None and self.local.in_subnet(address)

    @property
    def routing(self) -> AddressRouting:
        assert self.addresses is not None, "_index() runs first"
        return self.addresses


def plan_routes(state: ClusterState, local_node: str, config: CalcConfig) -> RoutingPlan:
    ctx = _Context(state=state, local_name=local_node, config=config)
    _index(ctx)
    _devices(ctx)
    chooser = _RouteChooser(ctx.problems)
    interfaces = _local_workloads(ctx, chooser)
    _blocks(ctx, chooser)
    _remote_workloads(ctx, chooser)
    _remote_tunnel_addresses(ctx, chooser)
    neighbors, fdb = _vteps(ctx)
    return RoutingPlan(
        routes=chooser.routes(), neighbors=neighbors, fdb=fdb, vxlan=ctx.vxlan, ipip=ctx.ipip,
        workload_interfaces=interfaces, pools=ctx.pools,
        local_blocks=frozenset(c for c, owner in ctx.owners.items() if owner == local_node),
        addresses=ctx.routing, problems=tuple(sorted(ctx.problems)),
    )


# -- preparation ----------------------------------------------------------------------


def _index(ctx: _Context) -> None:
    state = ctx.state
    ctx.local = state.nodes.get(ctx.local_name)
    if ctx.local is None:
        ctx.problem(f"local node {ctx.local_name} is not in the datastore")
    ctx.pools = tuple(p for _, p in sorted(state.pools.items()) if p.version == 4)
    ctx.pool_index = PrefixIndex((p.base, p.prefixlen, p) for p in ctx.pools)

    v4_blocks = [b for b in state.blocks.values() if b.version == 4]
    for block in v4_blocks:
        holders = state.confirmed_holders(block.cidr)
        if not holders:
            continue
        owner = state.owner_of(block)
        if owner is not None:
            ctx.owners[block.cidr] = owner
        else:
            ctx.problem(f"block {block.cidr}: confirmed affinity of {', '.join(holders)} but "
                        f"the block names {block.affinity_node or 'no node'}; "
                        "treated as nobody's")
    for cidr in state.confirmed_cidrs():
        if cidr not in state.blocks and ":" not in cidr:
            ctx.problem(f"block {cidr}: confirmed affinity of "
                        f"{', '.join(state.confirmed_holders(cidr))} but no block; ignored")
    block_index = PrefixIndex((b.base, b.prefixlen, (b.cidr, b.prefixlen))
                              for b in sorted(v4_blocks, key=lambda b: b.cidr))
    # ctx.owners is complete here and no one writes it after: the plan may keep it.
    ctx.addresses = AddressRouting(ctx.pool_index, block_index, ctx.owners,
                                   ctx.config.datastore_cluster_routes)


def _devices(ctx: _Context) -> None:
    config, local = ctx.config, ctx.local
    if any(p.ipip_mode != NEVER for p in ctx.pools):
        ctx.ipip = IPIPDevice(name=IPIP_DEVICE,
                              address=local.ipip_tunnel_address if local else None,
                              mtu=config.effective_ipip_mtu)
    if any(p.vxlan_mode != NEVER for p in ctx.pools):
        missing = []
        if local is None or local.ip is None:
            missing.append("an IPv4 address")
        if local is None or local.vxlan_tunnel_address is None:
            missing.append("a VXLAN tunnel address")
        if config.parent_interface is None:
            missing.append("a known parent interface")
        if missing:
            ctx.problem(f"VXLAN pools exist but local node {ctx.local_name} lacks "
                        f"{' and '.join(missing)}: no vxlan.calico and no VXLAN tunnel routes")
            return
        assert local is not None and local.ip is not None and config.parent_interface
        ctx.vxlan = VXLANDevice(
            name=VXLAN_DEVICE, vni=config.vxlan_vni, port=config.vxlan_port,
            local_ip=local.ip, parent=config.parent_interface, mac=local.vtep_mac,
            address=local.vxlan_tunnel_address, mtu=config.effective_vxlan_mtu,
        )


# -- route rules ----------------------------------------------------------------------


def _route_to_node(ctx: _Context, dst: str, pool: PoolInfo, node_ip: int,
                   vtep: str | None, target: str) -> Route | None:
    """The route for `dst` (in `pool`) through the node at `node_ip` (module docstring)."""
    if ctx.local is not None and node_ip == ctx.local.ip_int:
        ctx.problem(f"{target} has this node's own address {dotted(node_ip)}: "
                    f"no route to {dst}")
        return None
    encap = pool.encapsulation
    direct = encap is Encapsulation.NONE or (pool.cross_subnet and ctx.same_subnet(node_ip))
    if not direct and encap is Encapsulation.VXLAN:
        if vtep is None:
            ctx.problem(f"{target} has no VXLAN tunnel address: no VXLAN route to {dst}")
            return None
        if ctx.vxlan is None:
            return None  # _devices() has said why
        return Route(dst, RouteClass.VXLAN_TUNNEL, dev=VXLAN_DEVICE, gateway=vtep,
                     onlink=True, proto=PROTO_TORTIE, mtu=ctx.vxlan.mtu)
    route = route_via_node(dst, encap, node_ip, direct=direct,
                           parent=ctx.config.parent_interface,
                           ipip_mtu=ctx.config.effective_ipip_mtu)
    if route is None:
        ctx.problem(NO_PARENT)
    return route


NO_PARENT = "the parent interface is not known: same-subnet and no-encap routes are withheld"


def route_via_node(dst: str, encap: Encapsulation, node_ip: int, *, direct: bool,
                   parent: str | None, ipip_mtu: int) -> Route | None:
    """An IPIP tunnel route, or a direct one on the parent interface, to `dst` via `node_ip`.

    Not for VXLAN tunnel routes (`direct` False in a VXLAN pool). None for a
    direct route while the parent interface is unknown (the caller says why).
    """
    if not direct:
        return Route(dst, RouteClass.IPIP_TUNNEL, dev=IPIP_DEVICE, gateway=dotted(node_ip),
                     onlink=True, proto=PROTO_TORTIE, mtu=ipip_mtu)
    if parent is None:
        return None
    return Route(dst, _DIRECT_CLASS[encap], dev=parent, gateway=dotted(node_ip), onlink=True,
                 proto=PROTO_TORTIE)


def _route_to_named_node(ctx: _Context, dst: str, pool: PoolInfo, node_name: str) -> Route | None:
    if not routed_from_datastore(pool, ctx.config.datastore_cluster_routes):
        return None  # BGP carries these
    node = ctx.state.nodes.get(node_name)
    if node is None or node.ip_int is None:
        why = "is not in the datastore" if node is None else "has no IPv4 address"
        ctx.problem(f"node {node_name} {why}: its blocks and addresses are not routed")
        return None
    return _route_to_node(ctx, dst, pool, node.ip_int, node.vxlan_tunnel_address,
                          f"node {node_name}")


def _local_workloads(ctx: _Context, chooser: _RouteChooser) -> frozenset[str]:
    interfaces: set[str] = set()
    for (namespace, name), wep in ctx.state.workloads_by_node.get(ctx.local_name, {}).items():
        if wep.interface is None:
            if wep.ipv4:
                ctx.problem(f"workload endpoint {namespace}/{name} has no interfaceName: "
                            "its addresses are not routed")
            continue
        interfaces.add(wep.interface)
        for route in wep.local_routes:
            chooser.offer(route)
    return frozenset(interfaces)


def _blocks(ctx: _Context, chooser: _RouteChooser) -> None:
    """Blackholes for local blocks, routes to remote blocks, borrowed allocations."""
    local = ctx.local_name
    for block in ctx.state.blocks.values():
        if block.version != 4:
            continue
        owner = ctx.owners.get(block.cidr)
        pool = ctx.pool_index.containing(block.base, block.prefixlen)
        if owner == local:
            if block.prefixlen < 32:
                chooser.offer(Route(block.cidr, RouteClass.IPAM_BLOCK_BLACKHOLE,
                                    type="blackhole", proto=PROTO_TORTIE))
        elif owner is not None and not _is_remote_vtep_block(ctx, block, owner):
            if pool is None:
                ctx.problem(f"block {block.cidr} of node {owner} lies in no IPv4 pool: "
                            "not routed")
            else:
                route = _route_to_named_node(ctx, block.cidr, pool, owner)
                if route is not None:
                    chooser.offer(route)
        if pool is None:
            continue
        for node_name, addresses in routed_allocations(block, owner, local):
            for address in addresses:
                route = _route_to_named_node(ctx, f"{dotted(address)}/32", pool, node_name)
                if route is not None:
                    chooser.offer(route)


def _is_remote_vtep_block(ctx: _Context, block: BlockInfo, owner: str) -> bool:
    """A /32 block holding its owner's VTEP address: the remote-tunnel route covers it."""
    if ctx.vxlan is None or block.prefixlen != 32:
        return False
    node = ctx.state.nodes.get(owner)
    return node is not None and node.vxlan_tunnel_int == block.base and node.ip is not None


def _remote_workloads(ctx: _Context, chooser: _RouteChooser) -> None:
    """/32s for remote endpoints (and IPIP tunnel addresses) outside their node's blocks."""
    state = ctx.state
    for node_name, weps in state.workloads_by_node.items():
        if node_name is None or node_name == ctx.local_name:
            continue
        for wep in weps.values():
            for address in wep.ipv4:
                _offer_if_borrowed(ctx, chooser, address, node_name)
    for node_name, node in state.nodes.items():
        if node_name != ctx.local_name and node.ipip_tunnel_int is not None:
            _offer_if_borrowed(ctx, chooser, node.ipip_tunnel_int, node_name)


def _offer_if_borrowed(ctx: _Context, chooser: _RouteChooser, address: int,
                       node_name: str) -> None:
    pool = ctx.routing.borrowed_pool(address, node_name)
    if pool is None:
        return
    route = _route_to_named_node(ctx, f"{dotted(address)}/32", pool, node_name)
    if route is not None:
        chooser.offer(route)


def _remote_tunnel_addresses(ctx: _Context, chooser: _RouteChooser) -> None:
    """Felix's remote-tunnel routes: a VTEP address no block route of its node covers."""
    if ctx.vxlan is None:
        return
    for node_name, node in ctx.state.nodes.items():
        vtep = node.vxlan_tunnel_int
        if node_name == ctx.local_name or vtep is None or node.ip is None:
            continue
        prefixlen, owner = ctx.routing.owner_of_address(vtep)
        if owner == node_name and prefixlen < 32:
            continue
        chooser.offer(Route(f"{dotted(vtep)}/32", RouteClass.VXLAN_TUNNEL, dev=VXLAN_DEVICE,
                            scope="link", proto=PROTO_TORTIE, mtu=ctx.vxlan.mtu))


def _vteps(ctx: _Context) -> tuple[frozenset[Neighbor], frozenset[FdbEntry]]:
    if ctx.vxlan is None:
        return frozenset(), frozenset()
    neighbors: set[Neighbor] = set()
    fdb: set[FdbEntry] = set()
    ip_owner: dict[str, str] = {}
    mac_owner: dict[str, str] = {ctx.vxlan.mac: ctx.local_name}
    if ctx.vxlan.address:
        ip_owner[ctx.vxlan.address] = ctx.local_name
    for name in sorted(ctx.state.nodes):
        node = ctx.state.nodes[name]
        vtep_ip, mac = node.vxlan_tunnel_address, node.vtep_mac
        if name == ctx.local_name or vtep_ip is None or node.ip is None:
            continue
        clash = ip_owner.get(vtep_ip) or mac_owner.get(mac)
        if clash is not None:
            ctx.problem(f"node {name}'s VTEP ({vtep_ip}, {mac}) clashes with node {clash}'s: "
                        "not programmed")
            continue
        ip_owner[vtep_ip], mac_owner[mac] = name, name
        neighbors.add(Neighbor(ip=vtep_ip, lladdr=mac, dev=VXLAN_DEVICE))
        fdb.add(FdbEntry(mac=mac, dev=VXLAN_DEVICE, dst=node.ip))
    return frozenset(neighbors), frozenset(fdb)
