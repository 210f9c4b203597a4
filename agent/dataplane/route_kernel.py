"""agent.dataplane.route_kernel: the seam between RouteTable and the kernel.

Owns what crosses it: `KernelRoute` (a main-table route as read back),
`RouteOp` (one change to make) and `WriteFailure` (why the kernel refused
one), the `RouteKernel` Protocol RouteTable writes through, and the `ip -batch`
text of a change (`render_replace`, `render_delete`: what an op means, for
logs, errors and the unit tests' fake kernel).

Implementations: agent.dataplane.route_netlink.NetlinkRouteKernel (the real
kernel) and tests.dataplane.fakes.FakeRouteKernel (the unit tests).
RouteTable chooses between them in one place, its constructor.

Invariant: nothing here touches the kernel.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from agent.types import PROTO_TORTIE, NextHop, Route

_tuple_new = tuple.__new__


class KernelRoute(NamedTuple):
    """A main-table route as read back: the fields tortie sets, plus its metric.

    (A NamedTuple, not a dataclass: 10,000 of them are built per dump or cold
    start, and a frozen dataclass costs ~5x more to construct.)
    """

    dst: str
    metric: int = 0
    type: str = "unicast"
    dev: str | None = None
    gateway: str | None = None
    onlink: bool = False
    scope: str = "universe"
    proto: int = PROTO_TORTIE
    mtu: int | None = None
    multipath: tuple[NextHop, ...] = ()  # as Route's (sorted_hops); weights are not kept

    @classmethod
    def from_route(cls, r: Route) -> KernelRoute:
        # Route's fields after route_class are, in order, ours after metric. Built
        # with tuple.__new__: one per route written, and the NamedTuple
        # constructor (a Python-level function) costs twice as much.
        return _tuple_new(cls, (r[0], 0) + r[2:])

    def matches(self, r: Route) -> bool:
        # A route given only a gateway gets its device from the kernel (the
        # interface the gateway is reached on): any device is right for it.
        return (
            self.metric == 0
            and self.type == r.type
            and (self.dev == r.dev or (r.dev is None and r.type == "unicast"))
            and self.gateway == r.gateway
            and self.onlink == r.onlink
            and self.scope == r.scope
            and self.proto == r.proto
            and self.mtu == r.mtu
            and self.multipath == r.multipath
        )



# -- rendering (pure) -------------------------------------------------------


def render_replace(r: Route) -> str:
    """The `ip -batch` line that makes the kernel hold exactly `r` (at metric 0)."""
    if r.type == "blackhole":
        line = f"route replace blackhole {r.dst} proto {r.proto}"
        return f"{line} mtu {r.mtu}" if r.mtu else line
    parts = ["route", "replace", r.dst]
    if r.gateway:
        parts += ["via", r.gateway]
    if r.dev:
        parts += ["dev", r.dev]
    # Always say the scope: iproute2 picks "link" itself for a route without a
    # gateway, which must not silently differ from what we compare against.
    parts += ["proto", str(r.proto), "scope", "link" if r.scope == "link" else "global"]
    if r.onlink:
        parts.append("onlink")
    if r.mtu:
        parts += ["mtu", str(r.mtu)]
    for hop in r.multipath:
        parts += ["nexthop", "via", str(hop.gateway), "dev", hop.dev]
        if hop.onlink:
            parts.append("onlink")
    return " ".join(parts)


def render_delete(kr: KernelRoute) -> str:
    """The `ip -batch` line deleting exactly this route (proto and metric pin it down)."""
    parts = ["route", "del"]
    if kr.type != "unicast":
        parts.append(kr.type)
    parts += [kr.dst, "proto", str(kr.proto)]
    if kr.metric:
        parts += ["metric", str(kr.metric)]
    return " ".join(parts)



# -- the kernel seam ----------------------------------------------------------


class RouteOp(NamedTuple):
    """One kernel change: make `route` the route at `dst` (replace), or delete `old` (del)."""

    kind: str  # "replace" | "del"
    dst: str
    route: Route | None = None
    old: KernelRoute | None = None  # del: the kernel route to delete; replace: what it replaces

    @property
    def line(self) -> str:
        """The same change as an `ip` command (logs and errors)."""
        if self.kind == "replace":
            assert self.route is not None
            return render_replace(self.route)
        assert self.old is not None
        return render_delete(self.old)

    @property
    def dev(self) -> str | None:
        r = self.route if self.kind == "replace" else self.old
        return r.dev if r is not None else None


class WriteFailure(NamedTuple):
    """Why the kernel refused one RouteOp: ENODEV means its interface is gone,
    ESRCH/ENOENT on a delete that the route is."""

    errno: int
    message: str


class RouteKernel(Protocol):
    """What RouteTable needs from the kernel (a fake implements it in the unit tests)."""

    netns: str | None

    def dump(self, dev: str | None = None) -> list[KernelRoute] | None:
        """Main-table routes (all, or only those via `dev`; None if `dev` does not exist)."""
        ...

    def write(self, ops: Iterable[RouteOp]) -> dict[int, WriteFailure]:
        """Carry out the ops as they come, past failures; {0-based op index: why}
        for the ones that failed. Raises DataplaneError if the batch as a whole
        could not be carried out (then which ops took effect is unknown)."""
        ...

    def close(self) -> None: ...
