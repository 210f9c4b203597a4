"""agent.dataplane.routes: RouteTable, the only writer of main-table IPv4 routes.

What it programs: the effective desired set, merged from two inputs.
  * `set_desired(routes)`: the whole set calculated from the datastore
    (workload /32s, block blackholes, VXLAN/IPIP/no-encap routes, ...), a few
    hundred routes at most. Each call replaces the previous one; cost O(routes).
    Two of them for one destination: the lowest RouteClass wins (ties broken
    by the route's text), as in Felix.
  * `update_learned(changes)`: a DELTA of BGP-learned routes (10,000+ from a
    top-of-rack router), {dst: route, or None to remove it}; cost O(changes),
    whatever the number of learned routes held.
  For each destination the datastore's route wins over a learned one, whatever
  their classes (the datastore knows which node owns a block; BGP only adds
  what it does not know); with no datastore route the learned one is used. A
  datastore route coming or going at a learned destination switches between
  the two with one write. `desired` and `routes_by_class()` are that merge,
  maintained in place: neither input ever re-diffs the other.

What it owns (Felix's MainTableOwnershipPolicy, felix/routetable/ownershippol):
  * every route with protocol 80 (PROTO_TORTIE), on any device, including
    vxlan.calico and tunl0;
  * every route on a workload interface (`cali*`), whatever its protocol; the
    ones nobody wants any more are removed (Felix's RemoveExternalRoutes=true),
    e.g. a CNI route left behind by a deleted pod.
Everything else is foreign and never written, even at a destination we want: a
foreign route in the way is logged once as a warning and that destination is
skipped until it goes away (no fighting).

Invariants (the DeltaTracker idea of felix/deltatracker/delta_tracker.go):
  * `_kernel` mirrors the kernel for every destination that is not dirty;
    `_dirty` holds every destination whose desired and kernel state may differ.
    `apply()` only visits dirty destinations, so the steady state is
    O(changes). The whole main table is dumped only on the first apply, after
    `resync()` (periodic: Felix's RouteRefreshInterval, 90 s) and after a write
    failed; an interface event (`on_interface_change`) re-reads that one
    interface's routes (a kernel-filtered dump).
  * A restart against an unchanged kernel writes nothing: the first apply
    dumps, compares and finds no difference.

Writes: raw RTM_NEWROUTE/RTM_DELROUTE requests, many per sendmsg
(`RtnlSocket.write`, agent.dataplane.netlink), in the writer's namespace.
They are what `ip route replace|del` sends (`render_replace` and
`render_delete` give that text, for logs and errors), without iproute2's
wait for an ACK after each line: 10,000 routes take ~0.06 s instead of `ip
-batch`'s ~0.16 s, and no process (bench/routes.py measures RouteTable against
`ip -batch` of the same routes). pyroute2 0.9.7 adds ~2,000 routes/s
(docs/agent.md, "pyroute2"), too slow for a 10,000-route node. Like `ip
-force -batch`, a failing request does not stop the others and is named: a
failure re-reads the affected destinations and leaves them dirty so the next
apply retries. A route on an interface that vanished (ENODEV: a pod deleted
while we wrote) is not an error: it is dropped from this round quietly, and
comes back when the interface does (the link monitor calls
`on_interface_change`). Interface names are resolved to indexes per batch, so
a veth recreated under the same name is never written by its old index.

Reads use the minimal netlink decoder in agent.dataplane.netlink (10,000
routes in ~0.07 s, against ~1.7 s through pyroute2's message objects).

Logging: each mutation at INFO when an apply makes at most INFO_LIMIT (50) of
them; a bigger batch (a cold start) is one INFO summary, each line at DEBUG.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError, NetlinkError
from agent.dataplane.netlink import (
    DST_RTA,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    RT_SCOPE_LINK,
    RT_SCOPE_NOWHERE,
    RT_SCOPE_UNIVERSE,
    RT_TABLE_MAIN,
    RTM_DELROUTE,
    RTM_NEWROUTE,
    RTNH_F_ONLINK,
    RawRoute,
    RtnlSocket,
    route_body,
)
from agent.types import PROTO_TORTIE, Route, RouteClass

_log = logging.getLogger(__name__)

WORKLOAD_PREFIXES: tuple[str, ...] = ("cali",)
DEFAULT_RESYNC_INTERVAL = 90.0  # Felix RouteRefreshInterval
DEFAULT_CLEANUP_GRACE = 10.0  # Felix routeCleanupGracePeriod
# Above this many changes in one apply, each change is logged at DEBUG and the
# batch is summarised at INFO (a cold start would otherwise print 10,000 lines).
INFO_LIMIT = 50
# Route shapes (all fields but dst and class) remembered as valid; beyond this
# many the memory starts over (pods' /32s each have a shape: their interface).
GOOD_SHAPES_MAX = 4096

_NO_ENTRIES: dict[int, KernelRoute] = {}
_tuple_new = tuple.__new__
_TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
          6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}
_TYPE_NUMBERS = {name: number for number, name in _TYPES.items()}
_SCOPES = {0: "universe", 200: "site", 253: "link", 254: "host", 255: "nowhere"}


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
        )


def kernel_route(raw: RawRoute, links: Mapping[int, str]) -> KernelRoute | None:
    """The main-table IPv4 route tortie compares, or None for routes it never looks at."""
    if raw.table != RT_TABLE_MAIN or raw.tos != 0:
        return None
    dev = None
    if raw.oif is not None:
        dev = links.get(raw.oif, f"if{raw.oif}")
    return KernelRoute(
        dst=raw.dst,
        metric=raw.priority,
        type=_TYPES.get(raw.type, str(raw.type)),
        dev=dev,
        gateway=raw.gateway,
        onlink=bool(raw.flags & RTNH_F_ONLINK),
        scope=_SCOPES.get(raw.scope, str(raw.scope)),
        proto=raw.proto,
        mtu=raw.mtu,
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


def shape_problem(r: Route) -> str | None:
    """Why `r` cannot be written whatever its destination, or None. It depends only on
    `r[2:]` (everything but dst and route_class), so RouteTable caches it by that."""
    if r.type not in ("unicast", "blackhole"):
        return f"route {r.dst}: type {r.type!r} is not unicast or blackhole"
    if r.scope not in ("universe", "link"):
        return f"route {r.dst}: scope {r.scope!r} is not universe or link"
    if r.type == "blackhole" and (r.dev or r.gateway or r.onlink):
        return f"route {r.dst}: a blackhole has no dev, gateway or onlink"
    if r.type == "unicast" and not (r.dev or r.gateway):
        return f"route {r.dst}: a unicast route needs a dev or a gateway"
    return None


def dst_problem(dst: str) -> str | None:
    """Why `dst` cannot be written: the kernel stores (and we read back) the canonical
    text, so anything else would look changed on every resync."""
    problem = _noncanonical(dst)
    return f"route dst {dst!r} is not a canonical IPv4 CIDR: {problem}" if problem else None


_HOST_MASKS = {str(n): (1 << (32 - n)) - 1 for n in range(33)}  # "26" -> host bits


def _noncanonical(dst: str) -> str | None:
    """Why `dst` is not "a.b.c.d/len" with zero host bits, or None. (ipaddress takes
    ~10 us a call, a tenth of a second per 10,000 new routes; this takes ~0.5 us.)"""
    addr, _, plen = dst.partition("/")
    host_mask = _HOST_MASKS.get(plen)
    if host_mask is None:
        return "needs a /prefix length of 0-32"
    try:
        # glibc's inet_pton takes exactly four decimal octets without leading
        # zeros: text it takes is the canonical text (tested).
        packed = socket.inet_pton(socket.AF_INET, addr)
    except OSError:
        return "not an IPv4 address written canonically"
    if int.from_bytes(packed, "big") & host_mask:
        return "host bits set"
    return None


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


class NetlinkRouteKernel:
    """Reads with a raw netlink dump, writes raw netlink route requests (module docstring)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self._rtnl = RtnlSocket(netns)  # dumps and link lookups
        # Writes have a socket of their own: a link lookup in the middle of a
        # batch must not read (and drop) the batch's pending failure reports.
        self._writer = RtnlSocket(netns)

    def dump(self, dev: str | None = None) -> list[KernelRoute] | None:
        if dev is None:
            raws = self._rtnl.dump_routes()
            # Links after routes: every oif in the route dump existed before
            # the link dump started, so it has a name in it.
            links = self._rtnl.dump_links()
        else:
            idx = self._rtnl.link_index(dev)
            if idx is None:
                return None
            raws = self._rtnl.dump_routes(oif=idx)
            links = {idx: dev}
        out = []
        for raw in raws:
            kr = kernel_route(raw, links)
            if kr is not None:
                out.append(kr)
        return out

    def write(self, ops: Iterable[RouteOp]) -> dict[int, WriteFailure]:
        # Per batch, not kept: a veth deleted and recreated under the same name
        # (a restarted pod) has a new index.
        oifs: dict[str, int | None] = {}
        # (head, tail) per route shape: 10,000 learned routes have a handful.
        shapes: dict[tuple[object, ...], tuple[bytes, bytes]] = {}
        refused: dict[int, WriteFailure] = {}  # by op index

        def requests() -> Iterator[tuple[int, int, bytes]]:
            for i, op in enumerate(ops):
                address, _, plen = op.dst.partition("/")
                if op.kind == "replace":
                    r = op.route
                    assert r is not None
                    key: tuple[object, ...] = (plen, r[2:])  # everything but dst and route_class
                    shape = shapes.get(key)
                    if shape is None:
                        oif = None
                        if r.dev is not None:
                            if r.dev not in oifs:
                                oifs[r.dev] = self._rtnl.link_index(r.dev)
                            oif = oifs[r.dev]
                            if oif is None:
                                refused[i] = WriteFailure(errno.ENODEV,
                                                          f'Cannot find device "{r.dev}"')
                                continue
                        shape = shapes[key] = route_body(
                            dst_len=int(plen), proto=r.proto,
                            scope=RT_SCOPE_LINK if r.scope == "link" else RT_SCOPE_UNIVERSE,
                            rtype=_TYPE_NUMBERS[r.type],
                            flags=RTNH_F_ONLINK if r.onlink else 0,
                            oif=oif, gateway=r.gateway, mtu=r.mtu)
                    msg_type, flags = RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE
                else:
                    kr = op.old
                    assert kr is not None
                    key = ("del", plen, kr.type, kr.proto, kr.metric)
                    shape = shapes.get(key)
                    if shape is None:
                        # As `ip route del`: any scope, and type only when not unicast.
                        shape = shapes[key] = route_body(
                            dst_len=int(plen), proto=kr.proto, scope=RT_SCOPE_NOWHERE,
                            rtype=0 if kr.type == "unicast" else _TYPE_NUMBERS.get(kr.type, 0),
                            priority=kr.metric)
                    msg_type, flags = RTM_DELROUTE, 0
                yield msg_type, flags, shape[0] + dst_rta + inet_aton(address) + shape[1]

        dst_rta, inet_aton = DST_RTA, socket.inet_aton
        failed = self._writer.write(requests())
        # Request indexes skip the ops refused before sending (rare: a missing device).
        unsent = sorted(refused)
        for index, (code, message) in failed.items():
            for gap in unsent:
                if gap > index:
                    break
                index += 1
            refused[index] = WriteFailure(code, message)
        return refused

    def close(self) -> None:
        self._rtnl.close()
        self._writer.close()


# -- the writer -------------------------------------------------------------------


@dataclass
class RouteTableCounters:
    applies: int = 0
    writes: int = 0
    deletes: int = 0
    errors: int = 0
    full_dumps: int = 0
    rescans: int = 0
    conflicts: int = 0  # times a foreign route was found where we wanted ours
    vanished: int = 0  # routes dropped because their interface had gone
    deferred: int = 0  # stale-route deletions held back by the grace period
    # Routes left out (malformed / not ownable): those of the last set_desired plus
    # the learned routes currently rejected.
    rejected: int = 0


@dataclass
class _Plan:
    skipped: int = 0
    ops: list[RouteOp] = field(default_factory=list)  # as planned (failures come by index)
    replaces: int = 0
    deletes: int = 0


def _precedence(r: Route) -> tuple[int, str]:
    # Felix: the lowest RouteClass wins a destination; ties broken by text so
    # the choice does not depend on set iteration order.
    return (int(r.route_class), r.describe())


class RouteTable:
    """Converges the main routing table to `set_desired()` merged with `update_learned()`
    on each `apply()` (see the module docstring for the precedence).

    Not thread-safe: call it from the agent's dataplane loop only (the link
    monitor's callback should queue `on_interface_change` for that loop).
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        kernel: RouteKernel | None = None,
        workload_prefixes: Sequence[str] = WORKLOAD_PREFIXES,
        resync_interval: float | None = DEFAULT_RESYNC_INTERVAL,
        cleanup_grace: float = DEFAULT_CLEANUP_GRACE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.netns = netns
        self._io: RouteKernel = kernel if kernel is not None else NetlinkRouteKernel(netns)
        self._prefixes = tuple(workload_prefixes)
        self._resync_interval = resync_interval
        self._grace = cleanup_grace
        self._clock = clock
        # The two inputs, and their merge (maintained in place, never rebuilt:
        # it can hold 10,000 learned routes).
        self._datastore: dict[str, Route] = {}  # set_desired's winner per destination
        self._learned: dict[str, Route] = {}  # valid learned routes
        self._desired: dict[str, Route] = {}  # effective: _datastore, else _learned
        self._class_counts: Counter[RouteClass] = Counter()  # of _desired, for metrics
        self._desired_by_dev: dict[str, set[str]] = defaultdict(set)
        self._kernel: dict[str, dict[int, KernelRoute]] = {}
        self._kernel_by_dev: dict[str, set[str]] = defaultdict(set)
        self._dirty: set[str] = set()
        self._resync_needed = True
        self._last_full: float | None = None
        self._rescan_devs: set[str] = set()
        self._dev_changed_at: dict[str, float] = {}
        self._deferred: dict[str, float] = {}
        self._conflicts: set[str] = set()
        self._rejected: set[Route] = set()  # by the last set_desired
        self._learned_rejected: dict[str, Route] = {}  # learned key -> its rejected route
        # Route[2:] that passed shape_problem and owns
        self._good_shapes: set[tuple[object, ...]] = set()
        self._last_input: Iterable[Route] | None = None
        self.counters = RouteTableCounters()

    # -- input ----------------------------------------------------------------

    def owns(self, r: KernelRoute | Route) -> bool:
        return r.proto == PROTO_TORTIE or (r.dev is not None and r.dev.startswith(self._prefixes))

    def problem(self, r: Route) -> str | None:
        """Why `r` cannot be programmed, or None."""
        shape = r[2:]
        if shape not in self._good_shapes:
            # 10,000 learned routes come in a handful of shapes: check each shape once.
            problem = shape_problem(r)
            if problem:
                return problem
            if not self.owns(r):
                return (f"it would not be recognised as tortie's once written: use proto "
                        f"{PROTO_TORTIE} or a {'/'.join(self._prefixes)}* device")
            if len(self._good_shapes) >= GOOD_SHAPES_MAX:
                self._good_shapes.clear()
            self._good_shapes.add(shape)
        return dst_problem(r[0])

    def set_desired(self, routes: Iterable[Route]) -> None:
        """Replace the whole datastore set. Cost O(routes), whatever the number of
        learned routes; marks only the destinations whose effective route changed.

        A route that is malformed, or that tortie could not recognise as its
        own once written (not proto 80 and not on a workload interface), is
        logged and left out: one bad input must not stop every other route.
        """
        if routes is self._last_input:
            return  # the very same collection (e.g. an unchanged frozenset from calc)
        new: dict[str, Route] = {}
        rejected: set[Route] = set()
        # Destinations where some input route is not the very object held before:
        # the only ones whose winner (or its class) can have changed.
        maybe_changed: list[str] = []
        old = self._datastore
        for r in routes:
            dst = r.dst
            prev = old.get(dst)
            if prev is not r:
                if prev != r:
                    # New or changed: validate it (an equal route was valid before).
                    problem = self.problem(r)
                    if problem:
                        rejected.add(r)
                        if r not in self._rejected:
                            _log.error("not programming route %r: %s", r.describe(), problem)
                        continue
                maybe_changed.append(dst)
            cur = new.get(dst)
            if cur is not None:
                if _precedence(r) < _precedence(cur):
                    _log.debug("route %s: %s wins over %s", dst, r.route_class.name,
                               cur.route_class.name)
                    new[dst] = r
                continue
            new[dst] = r
        self._rejected = rejected
        self._datastore = new
        for dst in maybe_changed:
            if new[dst] is not old.get(dst):
                self._update_effective(dst)
        for dst in old.keys() - new.keys():
            self._update_effective(dst)
        self._count_rejected()
        self._last_input = routes if isinstance(routes, frozenset) else None

    def update_learned(self, changes: Mapping[str, Route | None]) -> None:
        """Apply a delta of learned routes: {dst: route, or None to remove it}.

        Cost O(len(changes)), however many learned routes are held; an
        unchanged route costs a dict lookup. A route that `problem()` refuses,
        or whose key is not its dst, is logged once and counts as absent (the
        previous learned route for that key is removed).
        """
        learned = self._learned
        bad = self._learned_rejected
        datastore = self._datastore
        for dst, r in changes.items():
            prev = learned.get(dst)
            if r is None:
                bad.pop(dst, None)
                if prev is not None:
                    del learned[dst]
                    if dst not in datastore:
                        self._set_effective(dst, None)
                continue
            if prev is r:
                continue
            if prev is not None and prev == r:
                # The same route (perhaps another class): keep the new object.
                learned[dst] = r
                if dst not in datastore:
                    self._set_effective(dst, r)  # no write: only the class can differ
                continue
            was_bad = bad.get(dst)
            if was_bad is not None and (was_bad is r or was_bad == r):
                continue  # still the same rejected route: already logged and counted
            problem = (f"learned under key {dst!r}, which is not its destination"
                       if r.dst != dst else self.problem(r))
            if problem:
                bad[dst] = r
                _log.error("not programming learned route %r: %s", r.describe(), problem)
                if prev is not None:
                    del learned[dst]
                    if dst not in datastore:
                        self._set_effective(dst, None)
                continue
            if was_bad is not None:
                del bad[dst]
            learned[dst] = r
            if dst not in datastore:
                self._set_effective(dst, r)
        self._count_rejected()

    def _count_rejected(self) -> None:
        self.counters.rejected = len(self._rejected) + len(self._learned_rejected)

    def _update_effective(self, dst: str) -> None:
        """Recompute the effective route of `dst` after its datastore route changed."""
        want = self._datastore.get(dst)
        if want is None:
            want = self._learned.get(dst)
        elif dst in self._learned and _log.isEnabledFor(logging.DEBUG):
            _log.debug("route %s: the datastore's %r overrides the learned %r", dst,
                       want.describe(), self._learned[dst].describe())
        self._set_effective(dst, want)

    def _set_effective(self, dst: str, want: Route | None) -> None:
        """Make `want` the effective route of `dst`; dirty only if it really changed."""
        cur = self._desired.get(dst)
        if cur is want:
            return
        counts = self._class_counts
        if cur is not None:
            counts[cur.route_class] -= 1
        if want is None:
            if cur is not None:
                del self._desired[dst]
                self._mark_desired_change(dst, cur, None)
            return
        counts[want.route_class] += 1
        self._desired[dst] = want  # also when equal: the class may differ
        if cur is None or cur != want:
            self._mark_desired_change(dst, cur, want)

    def _mark_desired_change(self, dst: str, prev: Route | None, new: Route | None) -> None:
        self._dirty.add(dst)
        if prev is not None and prev.dev:
            s = self._desired_by_dev.get(prev.dev)
            if s is not None:
                s.discard(dst)
                if not s:
                    del self._desired_by_dev[prev.dev]
        if new is not None and new.dev:
            self._desired_by_dev[new.dev].add(dst)

    def resync(self) -> None:
        """Re-read the whole table on the next apply (periodic drift repair)."""
        self._resync_needed = True

    def on_interface_change(self, name: str) -> None:
        """An interface appeared, vanished or changed: re-read its routes on the next apply.

        Also starts the cleanup grace period for that interface: routes on it
        that nobody wants (yet) are not deleted for `cleanup_grace` seconds, so
        a CNI plugin's fresh workload route survives until the datastore
        catches up (Felix's routeCleanupGracePeriod).
        """
        self._rescan_devs.add(name)
        self._dev_changed_at[name] = self._clock()

    # -- state ------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return bool(self._dirty or self._resync_needed or self._rescan_devs or self._deferred)

    @property
    def desired(self) -> Mapping[str, Route]:
        return self._desired

    def routes_by_class(self) -> dict[RouteClass, int]:
        """Effective desired routes per class (for metrics). O(classes): kept up to date."""
        return {cls: n for cls, n in self._class_counts.items() if n}

    def kernel_routes(self) -> list[KernelRoute]:
        """Last-known kernel routes (owned and foreign), for debugging."""
        return [kr for ents in self._kernel.values() for kr in ents.values()]

    def close(self) -> None:
        self._io.close()

    # -- apply ----------------------------------------------------------------------

    def apply(self) -> ApplyResult:
        """Write the differences; never raises DataplaneError (returned in `errors`)."""
        self.counters.applies += 1
        now = self._clock()
        if (
            self._resync_interval is not None
            and self._last_full is not None
            and now - self._last_full >= self._resync_interval
        ):
            self._resync_needed = True
        try:
            if self._resync_needed:
                self._full_resync(now)
            elif self._rescan_devs:
                self._rescan()
        except DataplaneError as e:
            self.counters.errors += 1
            self._resync_needed = True
            _log.warning("route table read failed, will retry: %s", e)
            return ApplyResult(errors=(e,))
        self._expire(now)
        dirty, self._dirty = self._dirty, set()
        plan = _Plan()
        writes, deletes, skipped, errors = self._execute(dirty, plan, now)
        skipped += plan.skipped
        return ApplyResult(
            writes=writes,
            deletes=deletes,
            errors=tuple(errors),
            skipped=skipped,
            retry_after=self._retry_after(now),
        )

    def _full_resync(self, now: float) -> None:
        routes = self._io.dump()
        assert routes is not None
        self.counters.full_dumps += 1
        kernel: dict[str, dict[int, KernelRoute]] = {}
        by_dev: dict[str, set[str]] = defaultdict(set)
        owned: set[str] = set()
        for kr in routes:
            kernel.setdefault(kr.dst, {})[kr.metric] = kr
            if kr.dev is not None:
                by_dev[kr.dev].add(kr.dst)
            if self.owns(kr):
                owned.add(kr.dst)
        self._kernel = kernel
        self._kernel_by_dev = by_dev
        self._dirty |= self._desired.keys()
        self._dirty |= owned
        self._resync_needed = False
        self._rescan_devs.clear()
        self._last_full = now
        _log.debug("route resync: %d kernel routes (%d destinations ours), %d desired",
                   len(routes), len(owned), len(self._desired))

    def _rescan(self) -> None:
        devs, self._rescan_devs = self._rescan_devs, set()
        for i, dev in enumerate(sorted(devs)):
            try:
                routes = self._io.dump(dev)
            except DataplaneError:
                self._rescan_devs |= set(sorted(devs)[i:])
                raise
            stale = set(self._kernel_by_dev.get(dev, ()))
            for dst in stale:
                for metric, kr in list(self._kernel.get(dst, {}).items()):
                    if kr.dev == dev:
                        self._drop_kernel(dst, metric)
            fresh = set()
            for kr in routes or ():
                self._set_kernel(kr)
                fresh.add(kr.dst)
            self._dirty |= stale | fresh | self._desired_by_dev.get(dev, set())
            _log.debug("rescanned %s: %d routes (exists=%s)", dev, len(fresh), routes is not None)
        self.counters.rescans += 1

    def _reread(self, dsts: set[str]) -> None:
        """After a failed write: refresh what we believe about `dsts` from the kernel."""
        routes = self._io.dump()
        assert routes is not None
        self.counters.full_dumps += 1
        for dst in dsts:
            for metric in list(self._kernel.get(dst, {})):
                self._drop_kernel(dst, metric)
        for kr in routes:
            if kr.dst in dsts:
                self._set_kernel(kr)

    def _set_kernel(self, kr: KernelRoute) -> None:
        ents = self._kernel.get(kr.dst)
        if ents is None:  # nothing at dst (the usual case for a learned route)
            self._kernel[kr.dst] = {kr.metric: kr}
            if kr.dev is not None:
                self._kernel_by_dev[kr.dev].add(kr.dst)
            return
        old = ents.get(kr.metric)
        if old is not None and old.dev is not None and old.dev != kr.dev:
            self._unindex_dev(old.dev, kr.dst, ents, skip_metric=kr.metric)
        ents[kr.metric] = kr
        if kr.dev is not None:
            self._kernel_by_dev[kr.dev].add(kr.dst)

    def _drop_kernel(self, dst: str, metric: int) -> None:
        ents = self._kernel.get(dst)
        if not ents or metric not in ents:
            return
        kr = ents.pop(metric)
        if kr.dev is not None:
            self._unindex_dev(kr.dev, dst, ents)
        if not ents:
            del self._kernel[dst]

    def _unindex_dev(
        self, dev: str, dst: str, ents: dict[int, KernelRoute], skip_metric: int | None = None
    ) -> None:
        # Keep dst under dev while another entry at dst still uses that dev.
        if any(m != skip_metric and k.dev == dev for m, k in ents.items()):
            return
        s = self._kernel_by_dev.get(dev)
        if s is not None:
            s.discard(dst)
            if not s:
                del self._kernel_by_dev[dev]

    def _expire(self, now: float) -> None:
        for dev, t in list(self._dev_changed_at.items()):
            if now - t >= self._grace:
                del self._dev_changed_at[dev]
        for dst, due in list(self._deferred.items()):
            if due <= now:
                del self._deferred[dst]
                self._dirty.add(dst)

    def _retry_after(self, now: float) -> float | None:
        if not self._deferred:
            return None
        return max(0.0, min(self._deferred.values()) - now)

    def _grace_until(self, dev: str | None, now: float) -> float | None:
        if dev is None:
            return None
        t = self._dev_changed_at.get(dev)
        if t is None or now - t >= self._grace:
            return None
        return t + self._grace

    def _plan(self, dirty: set[str], plan: _Plan, now: float) -> Iterator[RouteOp]:
        """Turn dirty destinations into batch operations, recorded in `plan`.

        The kernel mirror is updated as each op is planned, as if it will succeed:
        `_execute` undoes what the kernel refuses (a re-read), and a batch that
        fails as a whole forces a full resync. So nothing has to walk the
        batch again after the write (~1.3 us a route at 10,000 routes).
        """
        desired = self._desired
        kernel = self._kernel
        ops = plan.ops
        set_kernel, drop_kernel, from_route = self._set_kernel, self._drop_kernel, KernelRoute.from_route
        # Sorted for the per-op log lines of a small batch. A big one goes in any order
        # (each destination is on its own), as sorting 10,000 costs ~2 ms.
        for dst in sorted(dirty) if len(dirty) <= INFO_LIMIT else dirty:
            want = desired.get(dst)
            ents = kernel.get(dst, _NO_ENTRIES)
            for metric, kr in list(ents.items()) if ents else ():
                # A stale entry of ours; at metric 0 with a route wanted, the
                # replace below overwrites it instead.
                if not self.owns(kr) or (want is not None and metric == 0):
                    continue
                due = self._grace_until(kr.dev, now)
                if due is not None:
                    self._deferred[dst] = due
                    self.counters.deferred += 1
                    plan.skipped += 1
                    _log.debug("holding back removal of %s on %s (grace period)", dst, kr.dev)
                    continue
                op = _tuple_new(RouteOp, ("del", dst, None, kr))
                ops.append(op)
                plan.deletes += 1
                drop_kernel(dst, metric)
                yield op
            if want is None:
                self._conflicts.discard(dst)
                continue
            cur = ents.get(0)
            if cur is not None and not self.owns(cur):
                if dst not in self._conflicts:
                    self._conflicts.add(dst)
                    self.counters.conflicts += 1
                    _log.warning(
                        "route %s: a foreign route (proto %s dev %s) holds this destination; "
                        "leaving it alone, not programming %r", dst, cur.proto, cur.dev,
                        want.describe())
                plan.skipped += 1
                continue
            if self._conflicts:
                self._conflicts.discard(dst)
            if cur is not None and cur.matches(want):
                continue
            # tuple.__new__: ~0.3 us a route less than the NamedTuple's constructor
            op = _tuple_new(RouteOp, ("replace", dst, want, cur))
            ops.append(op)
            plan.replaces += 1
            set_kernel(from_route(want))
            yield op

    def _execute(
        self, dirty: set[str], plan: _Plan, now: float
    ) -> tuple[int, int, int, list[DataplaneError]]:
        try:
            # Each op is encoded as it is planned; `plan` keeps them, for the failures.
            failures = self._io.write(self._plan(dirty, plan, now))
        except DataplaneError as e:
            # Which ops took effect is unknown, and the mirror assumed all did.
            self.counters.errors += 1
            self._dirty |= dirty
            self._resync_needed = True
            _log.warning("route batch failed, will retry after a re-read: %s", e)
            return 0, 0, 0, [e]
        ops = plan.ops
        if not ops:
            return 0, 0, 0, []
        loud = len(ops) <= INFO_LIMIT
        writes, deletes, skipped = plan.replaces, plan.deletes, 0
        failed: set[str] = set()
        errors: list[DataplaneError] = []
        log_op = _log.info if loud else (_log.debug if _log.isEnabledFor(logging.DEBUG) else None)
        for i, op in enumerate(ops) if failures or log_op is not None else ():
            err = failures.get(i)
            if err is None:
                if log_op is not None:
                    log_op("route: %s", op.line)
                continue
            if op.kind == "replace":
                writes -= 1
            else:
                deletes -= 1
            if op.kind == "del" and err.errno in (errno.ESRCH, errno.ENOENT):
                # Already gone: the mirror, which dropped it when planning, is right.
                _log.debug("route already gone: %s", op.line)
            elif err.errno == errno.ENODEV:
                # The interface went away under us (a pod deleted while we
                # wrote): not an error. Its routes went with it (and the one
                # the mirror assumed written); the route is written again when
                # the interface comes back.
                for metric, kr in list(self._kernel.get(op.dst, {}).items()):
                    if kr.dev == op.dev:
                        self._drop_kernel(op.dst, metric)
                if op.kind == "replace" and op.old is not None and op.old.dev != op.dev:
                    self._set_kernel(op.old)  # refused: the route it was to replace is still there
                self.counters.vanished += 1
                skipped += 1
                _log.info("route %s skipped: interface %s is gone", op.dst, op.dev)
            else:
                failed.add(op.dst)  # the re-read below corrects the mirror
                errors.append(NetlinkError(op.line, err.errno, err.message))
                _log.warning("route write failed: %s: %s", op.line, err.message)
        self.counters.writes += writes
        self.counters.deletes += deletes
        if not loud and (writes or deletes):
            _log.info("routes: %d replaced, %d deleted in one batch", writes, deletes)
        if failed:
            self.counters.errors += len(failed)
            self._dirty |= failed
            try:
                self._reread(failed)
            except DataplaneError as e:
                self._resync_needed = True
                errors.append(e)
        return writes, deletes, skipped, errors
