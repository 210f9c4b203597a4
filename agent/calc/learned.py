"""BGP-learned best paths -> kernel routes, incrementally. No I/O, no clock, no logging.

`LearnedRoutes` owns the best paths the BGP side has handed over (one per
prefix, by canonical prefix) and the route each one maps to. The BGP side sends
changes (bgp.types.BestPathChanges: prefix -> (next hop, peer), or None when
the prefix has no best path any more), so a 10,000-route table that arrives in
a dozen bursts costs 10,000 route computations in all, not a dozen times that.

Rules (what BIRD does for Calico, in the forms of agent/calc/routes.py):
  * next hop = this node's address, or a prefix equal to one of this node's
    blocks: ignored (our own routes reflected back; the blackhole stays);
  * inside (contained in) a VXLAN pool: ignored, VXLAN is routed from the
    datastore (docs/architecture.md, "BGP");
  * inside an IPIP or no-encap pool: the route to a node, with the next hop as
    the node's address (`route_via_node`: tunl0, or the parent interface for
    no-encap and CrossSubnet within our subnet);
  * inside no pool (a top-of-rack router's prefix): `<prefix> via <next hop>
    proto 80` (BGP_LEARNED), no device: the kernel resolves the next hop.
A route from the datastore for the same destination wins; the RouteTable
applies that (agent/dataplane/routes.py). IPv6 paths are not routed yet.

Invariants:
  * `changes()` returns exactly how the routes differ from what it returned
    before (None: no route any more), so the RouteTable gets a delta too;
  * after any sequence of `update`s and contexts, `routes` equals resolving
    every path from scratch against the current context (tested);
  * a path update recomputes its prefix only; a different LearnedContext (the
    pools, the local node's address and subnet, its blocks, the parent
    interface, the IPIP MTU) recomputes every path, once.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from socket import AF_INET, inet_pton
from typing import NamedTuple

from ..types import PROTO_TORTIE, Route, RouteClass
from .config import CalcConfig
from .prefixes import PrefixIndex, dotted, mask_for
from .routes import NO_PARENT, route_via_node
from .state import Encapsulation, NodeInfo, PoolInfo

_PREFIX_LENGTHS = {str(n): n for n in range(33)}  # "26" -> 26, and nothing else
_MASKS = [mask_for(n) for n in range(33)]
# The NamedTuples of the per-route path are built with tuple.__new__, every field in
# order: their generated constructors are Python functions costing ~0.3 us more a
# route, and a top-of-rack router's table is 10,000 of each.
_new = tuple.__new__
_BGP_LEARNED = RouteClass.BGP_LEARNED


class LearnedPath(NamedTuple):
    """A best path, parsed: canonical prefix, next hop (text and int), the peer it came from.

    A tuple: 10,000 arrive at once from a ToR, and a frozen dataclass costs
    several times more to build."""

    cidr: str
    base: int
    prefixlen: int
    next_hop: str
    next_hop_int: int
    peer: str


@dataclass(frozen=True)
class LearnedContext:
    """What the learned routes depend on besides themselves; equal contexts, equal routes."""

    local: NodeInfo | None = None
    local_blocks: frozenset[str] = frozenset()
    pools: tuple[PoolInfo, ...] = ()  # IPv4
    parent_interface: str | None = None
    ipip_mtu: int = 1440
    pool_index: PrefixIndex[PoolInfo] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pool_index",
                           PrefixIndex((p.base, p.prefixlen, p) for p in self.pools))

    @classmethod
    def of(cls, local: NodeInfo | None, local_blocks: frozenset[str],
           pools: tuple[PoolInfo, ...], config: CalcConfig) -> LearnedContext:
        return cls(local=local, local_blocks=local_blocks, pools=pools,
                   parent_interface=config.parent_interface, ipip_mtu=config.effective_ipip_mtu)


def learned_route(ctx: LearnedContext, path: LearnedPath) -> tuple[Route | None, str | None]:
    """The route for one best path (module docstring), and why it is withheld if it is."""
    local = ctx.local
    if (local is not None and path.next_hop_int == local.ip_int) or path.cidr in ctx.local_blocks:
        return None, None
    pool = ctx.pool_index.containing(path.base, path.prefixlen)
    if pool is None:
        # A top-of-rack router's whole table takes this line.
        return _new(Route, (path.cidr, _BGP_LEARNED, "unicast", None, path.next_hop,
                            False, "universe", PROTO_TORTIE, None, ())), None
    encap = pool.encapsulation
    if encap is Encapsulation.VXLAN:
        return None, None
    same_subnet = local is not None and local.in_subnet(path.next_hop_int)
    direct = encap is Encapsulation.NONE or (pool.cross_subnet and same_subnet)
    route = route_via_node(path.cidr, encap, path.next_hop_int, direct=direct,
                           parent=ctx.parent_interface, ipip_mtu=ctx.ipip_mtu)
    return route, (NO_PARENT if route is None else None)


class LearnedRoutes:
    """The learned best paths and their routes; fed deltas, hands out deltas. Not thread-safe."""

    def __init__(self) -> None:
        self._paths: dict[str, LearnedPath] = {}  # canonical prefix -> path
        self._routes: dict[str, Route] = {}  # canonical prefix -> its route, as handed out
        self._withheld: dict[str, str] = {}  # canonical prefix -> why it has no route
        self._unreadable: dict[str, str] = {}  # prefix as sent -> why it cannot be read
        self._context: LearnedContext | None = None
        self._pending: set[str] = set()  # prefixes to recompute
        self._all_pending = False

    @property
    def routes(self) -> Mapping[str, Route]:
        """The routes as of the last `changes()`, by destination."""
        return self._routes

    @property
    def problems(self) -> list[str]:
        """Why some paths are not routed: unreadable ones by prefix, withheld ones once per reason."""
        out = [f"learned route {prefix}: {why}" for prefix, why in sorted(self._unreadable.items())]
        return out + sorted(set(self._withheld.values()))

    def __len__(self) -> int:
        return len(self._paths)

    def update(self, paths: Mapping[str, tuple[str, str] | None], reset: bool = False) -> None:
        """Apply a change of best paths: prefix -> (next hop, peer), None for gone.

        With `reset`, `paths` is the whole set: every other prefix is forgotten.
        """
        if reset:
            self._pending.update(self._paths)
            self._paths.clear()
            self._unreadable.clear()
        known, pending, unreadable = self._paths, self._pending, self._unreadable
        for prefix, value in paths.items():
            if unreadable:
                unreadable.pop(prefix, None)
            if value is None:
                cidr = _canonical(prefix)
                if cidr is not None and known.pop(cidr, None) is not None:
                    pending.add(cidr)
                continue
            parsed = parse_path(prefix, *value)
            if isinstance(parsed, LearnedPath):
                cidr = parsed[0]
                if known.get(cidr) != parsed:
                    known[cidr] = parsed
                    pending.add(cidr)
                continue
            if parsed:  # "" is an IPv6 path: not routed yet, not a problem
                unreadable[prefix] = parsed
            cidr = _canonical(prefix)
            if cidr is not None and known.pop(cidr, None) is not None:
                pending.add(cidr)

    def set_context(self, context: LearnedContext) -> None:
        if context != self._context:
            self._context = context
            self._all_pending = True

    def changes(self) -> dict[str, Route | None]:
        """Recompute what is pending; return the routes that changed (None: removed).

        Nothing is resolved before the first context (the agent's first calculation).
        """
        ctx = self._context
        if ctx is None:
            return {}
        todo: Iterable[str]
        if self._all_pending:
            todo = self._paths.keys() | self._routes.keys()
            self._withheld.clear()
        else:
            todo = self._pending
        out: dict[str, Route | None] = {}
        paths, routes, withheld = self._paths, self._routes, self._withheld
        for cidr in todo:
            path = paths.get(cidr)
            route, why = learned_route(ctx, path) if path is not None else (None, None)
            if why is not None:
                withheld[cidr] = why
            elif withheld:
                withheld.pop(cidr, None)
            old = routes.get(cidr)
            if route is None:
                if old is not None:
                    del routes[cidr]
                    out[cidr] = None
            elif old is None or old != route:
                routes[cidr] = route
                out[cidr] = route
        self._pending = set()
        self._all_pending = False
        return out


def parse_path(prefix: str, next_hop: str, peer: str) -> LearnedPath | str:
    """The path parsed, or why it cannot be used ("" for IPv6, which is not routed yet)."""
    # Fast path for the canonical text ExaBGP prints (inet_pton refuses leading zeros,
    # so text that passes is canonical): ipaddress costs ~15 us a route.
    address, _, length = prefix.partition("/")
    prefixlen = _PREFIX_LENGTHS.get(length)
    if prefixlen is not None:
        try:
            base = int.from_bytes(inet_pton(AF_INET, address), "big")
            hop = _ipv4_int(next_hop)
        except OSError:
            pass
        else:
            masked = base & _MASKS[prefixlen]
            cidr = prefix if masked == base else f"{dotted(masked)}/{prefixlen}"
            return _new(LearnedPath, (cidr, masked, prefixlen, next_hop, hop, peer))
    try:
        net = ipaddress.ip_network(prefix, strict=False)
        nh = ipaddress.ip_address(next_hop)
    except ValueError as exc:
        return str(exc) or "invalid"
    if net.version != 4 or nh.version != 4:
        return ""
    return LearnedPath(str(net), int(net.network_address), net.prefixlen, str(nh), int(nh), peer)


@functools.lru_cache(maxsize=1024)
def _ipv4_int(text: str) -> int:
    """The address as an int (OSError if it is not canonical IPv4). Cached: a peer's
    routes share a handful of next hops, and the cache costs a third of a parse."""
    return int.from_bytes(inet_pton(AF_INET, text), "big")


def _canonical(prefix: str) -> str | None:
    """The canonical IPv4 prefix of a withdrawn one (fast path as in parse_path)."""
    parsed = parse_path(prefix, "0.0.0.0", "")
    return parsed.cidr if isinstance(parsed, LearnedPath) else None
