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

Kernel access goes through a RouteKernel (agent.dataplane.route_kernel),
chosen in one place, RouteTable's constructor: NetlinkRouteKernel
(agent.dataplane.route_netlink: raw netlink requests, many per sendmsg) unless
one is passed in (a fake, in the unit tests). Each apply is one batch; a
failing request does not stop the others. A route the kernel refuses is that
route's problem, not the apply's: it is re-read, reported in `problems` (not
`errors`, so the agent's apply backoff never grows for it) and retried on its
own, 1 s doubling to 30 s (`retry_after` asks the agent for that apply), so
one bad route never delays the writes of unrelated ones (a pod's). A route
on an interface that vanished (ENODEV: a pod deleted while we wrote) or is down
(ENETDOWN: the kernel refuses routes through a down device) is not an error: it
is dropped from this round quietly, and comes back when the interface does, or
comes up (the link monitor calls `on_interface_change`). Treating a down
interface as an error made a flapping pod's route wait out the retry backoff
(up to 8 s after 100 flaps, F14).

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

from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError, NetlinkError
from agent.dataplane.nexthop import NextHop, Resolution, resolve_next_hop
from agent.dataplane.route_kernel import KernelRoute, RouteKernel, RouteOp
from agent.dataplane.route_netlink import NetlinkRouteKernel
from agent.types import PROTO_TORTIE, Route, RouteClass

_log = logging.getLogger(__name__)

WORKLOAD_PREFIXES: tuple[str, ...] = ("cali",)
DEFAULT_RESYNC_INTERVAL = 90.0  # Felix RouteRefreshInterval
DEFAULT_CLEANUP_GRACE = 10.0  # Felix routeCleanupGracePeriod
ROUTE_RETRY_MIN, ROUTE_RETRY_MAX = 1.0, 30.0  # a refused route's own retry backoff
# Above this many changes in one apply, each change is logged at DEBUG and the
# batch is summarised at INFO (a cold start would otherwise print 10,000 lines).
INFO_LIMIT = 50
# Route shapes (all fields but dst and class) remembered as valid; beyond this
# many the memory starts over (pods' /32s each have a shape: their interface).
GOOD_SHAPES_MAX = 4096

_NO_ENTRIES: dict[int, KernelRoute] = {}
_tuple_new = tuple.__new__


def shape_problem(r: Route) -> str | None:
    """Why `r` cannot be written whatever its destination, or None. It depends only on
    `r[2:]` (everything but dst and route_class), so RouteTable caches it by that."""
    if r.type not in ("unicast", "blackhole"):
        return f"route {r.dst}: type {r.type!r} is not unicast or blackhole"
    if r.scope not in ("universe", "link"):
        return f"route {r.dst}: scope {r.scope!r} is not universe or link"
    if r.type == "blackhole" and (r.dev or r.gateway or r.onlink or r.multipath):
        return f"route {r.dst}: a blackhole has no dev, gateway, onlink or paths"
    if r.multipath and (r.dev or r.gateway or r.onlink):
        return f"route {r.dst}: a multipath route has its dev and gateway in its paths"
    if r.type == "unicast" and not (r.dev or r.gateway or r.multipath):
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
    down: int = 0  # routes left out because their interface was down (ENETDOWN)
    deferred: int = 0  # stale-route deletions held back by the grace period
    # Routes left out (malformed / not ownable): those of the last set_desired plus
    # the learned routes currently rejected.
    rejected: int = 0
    unresolved: int = 0  # gateway-only routes left out: their next hop has no route


@dataclass
class _Plan:
    skipped: int = 0
    ops: list[RouteOp] = field(default_factory=list)  # as planned (failures come by index)
    replaces: int = 0
    deletes: int = 0


def _gateway_only(r: Route) -> bool:
    """A route naming a gateway and no device: its next hop is resolved (nexthop.py)."""
    return r.dev is None and r.gateway is not None and r.type == "unicast"


def _resolved(r: Route, hop: Resolution | None) -> Route | None:
    """A gateway-only route as written: unchanged when its next hop is on a connected
    network (the kernel finds the device itself), else via the immediate gateway and
    its device, or over the paths of a multipath route, as BIRD's recursive gateways;
    None when the next hop is unresolved."""
    if hop is None or isinstance(hop, str):
        return None
    if isinstance(hop, tuple) and not isinstance(hop, NextHop):
        # dst, route_class, type; no dev, gateway or onlink; scope, proto, mtu; the paths
        return _tuple_new(Route, (r[0], r[1], r[2], None, None, False) + r[6:9] + (hop,))
    if hop.gateway == r.gateway and not hop.onlink:
        return r
    # dst, route_class, type, dev, gateway, onlink, then scope, proto, mtu as they were.
    return _tuple_new(Route, (r[0], r[1], r[2], hop.dev, hop.gateway, hop.onlink) + r[6:])


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
        # The one place the implementation is chosen: the real kernel unless one is given.
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
        # Gateway-only routes (a ToR's, learned) by next hop, and each next hop's
        # resolution through the host's routes (agent.dataplane.nexthop), kept up
        # to date by `_reresolve` on every apply.
        self._by_next_hop: dict[str, set[str]] = defaultdict(set)
        self._next_hops: dict[str, Resolution] = {}
        # Devices (None: no device) whose host routes changed while nothing resolved
        # through them: re-read once a gateway-only route wants them.
        self._stale_host_devs: set[str | None] = set()
        self._kernel: dict[str, dict[int, KernelRoute]] = {}
        self._kernel_by_dev: dict[str, set[str]] = defaultdict(set)
        self._dirty: set[str] = set()
        self._resync_needed = True
        self._last_full: float | None = None
        self._rescan_devs: set[str] = set()
        self._dev_changed_at: dict[str, float] = {}
        self._deferred: dict[str, float] = {}
        self._conflicts: set[str] = set()
        # Destinations whose write the kernel refused: (failures in a row, why).
        self._refused: dict[str, tuple[int, NetlinkError]] = {}
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
        if prev is not None and _gateway_only(prev):
            hops = self._by_next_hop.get(prev.gateway or "")
            if hops is not None:
                hops.discard(dst)
                if not hops:
                    del self._by_next_hop[prev.gateway or ""]
        if new is not None and _gateway_only(new):
            self._by_next_hop[new.gateway or ""].add(dst)

    def resync(self) -> None:
        """Re-read the whole table on the next apply (periodic drift repair)."""
        self._resync_needed = True

    def on_route_removed(self, dst: str, metric: int) -> None:
        """The kernel announced that the route (dst, metric) was deleted (the link
        monitor's route notifications): forget it and look at dst again on the next
        apply, which puts back a desired route at once and writes nothing else. The
        agent's own deletions are announced too; their dst then plans nothing."""
        self._drop_kernel(dst, metric)
        self._dirty.add(dst)

    def on_host_route_change(self, dev: str | None) -> bool:
        """A route of the host's own (not ours) on `dev` changed (None: one with no
        device, e.g. unreachable): re-read it if a gateway-only route's next hop may
        resolve through it. Returns whether the next apply has work to do."""
        if not self._by_next_hop:
            # Nothing resolves through the host's routes yet: no re-read now, but the
            # mirror of `dev` is stale for the first route that will (apply() reads it).
            self._stale_host_devs.add(dev)
            return False
        if dev is None:
            self._resync_needed = True
        else:
            self._rescan_devs.add(dev)  # no grace stamp: the interface itself is unchanged
        return True

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
        if self._stale_host_devs and self._by_next_hop:
            if None in self._stale_host_devs:
                self._resync_needed = True
            self._rescan_devs |= {d for d in self._stale_host_devs if d is not None}
            self._stale_host_devs.clear()
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
        self._reresolve()
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
            problems=self.problems,
        )

    @property
    def refused(self) -> Mapping[str, NetlinkError]:
        """The destinations whose last write the kernel refused, and why."""
        return {dst: err for dst, (_, err) in self._refused.items()}

    @property
    def problems(self) -> tuple[str, ...]:
        """Gateway-only routes left out, one line per next hop that has no usable route."""
        out = [f"route {dst}: the kernel refuses it (retried on its own): {err.operation}: "
               f"{err.message}" for dst, (_, err) in sorted(self._refused.items())]
        for hop, why in sorted(self._next_hops.items()):
            if isinstance(why, str):
                dsts = sorted(self._by_next_hop.get(hop, ()))
                if dsts:
                    more = f" and {len(dsts) - 1} more" if len(dsts) > 1 else ""
                    out.append(f"learned route {dsts[0]}{more}: {why}")
        return tuple(out)

    def _reresolve(self) -> None:
        """Resolve every next hop of a gateway-only route against the mirrored main
        table; the routes of a next hop whose resolution changed are looked at again.
        O(distinct next hops) a call: a ToR's 10,000 routes share a handful."""
        hops = self._next_hops
        for hop in [h for h in hops if h not in self._by_next_hop]:
            del hops[hop]
        for hop, dsts in self._by_next_hop.items():
            resolved = resolve_next_hop(self._kernel, hop, self.owns)
            if hops.get(hop) == resolved:
                continue
            hops[hop] = resolved
            self._dirty |= dsts
            if isinstance(resolved, str):
                # Once per change of resolution, not per apply: the agent reports it
                # as a problem (logged once, a metric, `ctl node status -o wide`).
                _log.warning("%d learned route(s) not installed: %s", len(dsts), resolved)
            elif not isinstance(resolved, NextHop):
                _log.info("next hop %s resolves over %d paths: %s", hop, len(resolved),
                          ", ".join(f"via {h.gateway} dev {h.dev}" for h in resolved))
            elif resolved.gateway != hop:
                _log.info("next hop %s resolves via %s dev %s", hop, resolved.gateway,
                          resolved.dev)
        self.counters.unresolved = sum(len(self._by_next_hop[h]) for h, r in hops.items()
                                       if isinstance(r, str))

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
        self._stale_host_devs.clear()
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
        next_hops = self._next_hops
        for dst in sorted(dirty) if len(dirty) <= INFO_LIMIT else dirty:
            want = desired.get(dst)
            if want is not None and want[3] is None and want[4] is not None:  # dev, gateway
                want = _resolved(want, next_hops.get(want[4]))
                if want is None:
                    plan.skipped += 1  # unresolved: reported by `problems`; ours there goes
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
                if self._refused:
                    self._refused.pop(dst, None)
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
        refused = self._refused
        for i, op in enumerate(ops) if failures or log_op is not None or refused else ():
            err = failures.get(i)
            if err is None:
                if refused and op.dst in refused:
                    del refused[op.dst]
                    _log.info("route %s written after all", op.dst)
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
            elif err.errno in (errno.ENODEV, errno.ENETDOWN):
                # The interface went away under us (a pod deleted while we
                # wrote), or is down (the kernel refuses routes through a down
                # device, and dropped the ones it had): not an error, so no retry
                # backoff. Its routes are gone (also the one the mirror assumed
                # written); the route is written again when the interface comes
                # back or up (the link monitor calls on_interface_change).
                for metric, kr in list(self._kernel.get(op.dst, {}).items()):
                    if kr.dev == op.dev:
                        self._drop_kernel(op.dst, metric)
                if op.kind == "replace" and op.old is not None and op.old.dev != op.dev:
                    self._set_kernel(op.old)  # refused: the route it was to replace is still there
                skipped += 1
                if err.errno == errno.ENODEV:
                    self.counters.vanished += 1
                    _log.info("route %s skipped: interface %s is gone", op.dst, op.dev)
                else:
                    self.counters.down += 1
                    _log.info("route %s skipped: interface %s is down", op.dst, op.dev)
            else:
                failed.add(op.dst)  # the re-read below corrects the mirror
                attempts = refused[op.dst][0] + 1 if op.dst in refused else 1
                refused[op.dst] = (attempts, NetlinkError(op.line, err.errno, err.message))
                delay = min(ROUTE_RETRY_MIN * 2 ** (attempts - 1), ROUTE_RETRY_MAX)
                self._deferred[op.dst] = now + delay
                (_log.warning if attempts == 1 else _log.debug)(
                    "route write failed (retrying it alone in %.0fs): %s: %s", delay, op.line,
                    err.message)
        self.counters.writes += writes
        self.counters.deletes += deletes
        if not loud and (writes or deletes):
            _log.info("routes: %d replaced, %d deleted in one batch", writes, deletes)
        if failed:
            self.counters.errors += len(failed)
            try:
                self._reread(failed)
            except DataplaneError as e:
                self._resync_needed = True
                errors.append(e)
        return writes, deletes, skipped, errors
