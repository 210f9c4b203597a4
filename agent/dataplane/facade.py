"""agent.dataplane.facade: the dataplane as the agent sees it, and the one owner of the apply order.

`Dataplane` is the small Protocol the agent's loop drives; `KernelDataplane`
implements it over the real kernel. It owns one writer per kernel object kind
and the link monitor, and nothing else in the agent touches them:

    ipsets.IPSets             cali40*/cali60* ipsets
    tunnels.VXLANManager      vxlan.calico
    tunnels.IPIPManager       tunl0
    sysctls.SysctlManager     ip_forward and the workload interfaces' sysctls
    neighbors.NeighborTable   permanent neighbours and FDB entries on vxlan.calico
    routes.RouteTable         main-table routes (datastore-derived and BGP-learned)
    iptables.IptablesTable    one per table (nat, filter): tortie's chains and hooks
    monitor.LinkMonitor       interface events and route deletions -> the agent's queue

`apply()` runs every writer once, in the one dependency order of the whole
dataplane (Felix's InternalDataplane.apply): everything an object refers to
exists before it is written, and nothing is removed while something still
refers to it.

    1. ipsets: create and update    (rules below may match on them)
    2. devices that must exist      (vxlan.calico, tunl0: routes and neighbours use them)
    3. sysctls                      (on the interfaces that now exist)
    4. neighbours and FDB           (on vxlan.calico)
    5. routes                       (via those devices and neighbours)
    6. devices to remove            (after the routes on them are gone)
    7. iptables tables              (nat, filter; their rules use the ipsets)
    8. ipsets: delete               (after no rule refers to them)

Every writer runs even when an earlier one failed: each failure is reported
in the result (the agent retries the whole apply with backoff) and the
others' work is not held up by it. A device that was created, recreated or
deleted is announced to the writers that had state on it, since the kernel
dropped that state with the device.

Inputs take effect at the next `apply()`: `set_desired(DesiredDataplane)`,
the whole datastore-derived state, handed to every writer; and
`update_learned_routes(changes)`, a delta of BGP-learned routes handed to
the RouteTable alone (agent/dataplane/routes.py merges the two).

Reads the agent needs about host interfaces (which one holds the node's IP,
its MTU) go through `host_interface()`, which also has the link monitor
report that interface's changes from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from agent.dataplane.common import ApplyResult
from agent.dataplane.errors import DataplaneError
from agent.dataplane.ipsets import IPSets
from agent.dataplane.iptables import IptablesTable, detect_backend
from agent.dataplane.monitor import LinkMonitor
from agent.dataplane.neighbors import NeighborTable
from agent.dataplane.nft_generation import NftGeneration
from agent.dataplane.routes import RouteTable
from agent.dataplane.sysctls import SysctlManager
from agent.dataplane.tunnels import IPIPManager, VXLANManager
from agent.types import DesiredDataplane, Route, RouteClass

_log = logging.getLogger(__name__)

IPTABLES_TABLES = ("nat", "filter")

# What the agent resyncs on a timer, each on its own interval (Felix's
# RouteRefreshInterval, IptablesRefreshInterval, IpsetsRefreshInterval).
ResyncKind = Literal["routes", "iptables", "ipsets"]
RESYNC_KINDS: tuple[ResyncKind, ...] = ("routes", "iptables", "ipsets")

LinkCallback = Callable[[str, str], None]
RouteRemovedCallback = Callable[[str, int], None]
HostRouteCallback = Callable[[str | None], None]


@dataclass(frozen=True)
class HostInterface:
    """A host interface the agent routes through (the parent of the tunnels)."""

    name: str
    mtu: int | None


@dataclass
class DataplaneResult:
    """One ApplyResult per writer, by name, in the order they were applied.

    Names: "ipsets", "vxlan", "ipip", "sysctls", "neighbors", "routes",
    "iptables-nat", "iptables-filter", "ipset-deletions".
    """

    results: dict[str, ApplyResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results.values())

    @property
    def mutations(self) -> int:
        return sum(r.mutations for r in self.results.values())

    @property
    def errors(self) -> list[DataplaneError]:
        return [e for r in self.results.values() for e in r.errors]

    @property
    def retry_after(self) -> float | None:
        """The soonest a writer asked to be applied again without new input."""
        asked = [r.retry_after for r in self.results.values() if r.retry_after is not None]
        return min(asked) if asked else None


class Dataplane(Protocol):
    """What the agent's loop needs of a dataplane (tests drive the loop with a fake)."""

    def start(self, on_link: LinkCallback,
              on_route_removed: RouteRemovedCallback | None = None,
              on_host_route: HostRouteCallback | None = None) -> None:
        """Begin reporting interface events to `on_link(name, event)`, deletions of
        routes tortie may own to `on_route_removed(dst, metric)` and changes of the
        host's own routes to `on_host_route(dev)` (from another thread)."""

    def on_host_route_change(self, dev: str | None) -> bool:
        """The host's routes on `dev` (None: a route with no device) changed; True if
        an apply is needed (a learned next hop may resolve differently)."""

    def set_desired(self, desired: DesiredDataplane) -> None: ...

    def update_learned_routes(self, changes: Mapping[str, Route | None]) -> None: ...

    def apply(self) -> DataplaneResult: ...

    def resync(self, kind: ResyncKind) -> None:
        """Distrust the cached kernel state of one kind; the next apply re-reads it."""

    def on_interface_change(self, name: str) -> None: ...

    def on_route_removed(self, dst: str, metric: int) -> None:
        """The kernel announced the deletion of route (dst, metric)."""

    def on_neighbour_removed(self, device: str) -> None:
        """The kernel announced the deletion of a neighbour or FDB entry on `device`."""

    def check_drift(self) -> list[str]:
        """The cheap periodic check of what the kernel does not announce (iptables,
        ipsets); returns the writers that found drift (the next apply repairs it)."""

    def host_interface(self, ip: str) -> HostInterface | None:
        """The interface holding `ip`, if any; its changes are reported from then on."""

    def routes_by_class(self) -> dict[RouteClass, int]: ...

    def close(self) -> None: ...


class KernelDataplane:
    """The kernel's dataplane: every writer, applied in the order above.

    `netfilter=False` leaves ipsets and iptables out (their desired state is
    ignored): for tests of the routing writers on kernels without netfilter.
    Writers may be injected (tests pass ones over fake kernels); the others
    are built for `netns`.
    """

    def __init__(
        self,
        netns: str | None = None,
        *,
        netfilter: bool = True,
        routes: RouteTable | None = None,
        neighbors: NeighborTable | None = None,
        vxlan: VXLANManager | None = None,
        ipip: IPIPManager | None = None,
        sysctls: SysctlManager | None = None,
        ipsets: IPSets | None = None,
        tables: Mapping[str, IptablesTable] | None = None,
    ) -> None:
        self.netns = netns
        self.routes = routes or RouteTable(netns)
        self.neighbors = neighbors or NeighborTable(netns)
        self.vxlan = vxlan or VXLANManager(netns)
        self.ipip = ipip or IPIPManager(netns)
        self.sysctls = sysctls or SysctlManager(netns)
        self.ipsets: IPSets | None = None
        self._nft_generation: NftGeneration | None = None
        self.tables: dict[str, IptablesTable] = {}
        if netfilter:
            self.ipsets = ipsets or IPSets(netns)
            if tables is None:
                backend = detect_backend(netns)
                if backend == "nft":
                    self._nft_generation = NftGeneration(netns)
                generation = self._nft_generation.read if self._nft_generation else None
                tables = {t: IptablesTable(t, backend, netns, generation=generation)
                          for t in IPTABLES_TABLES}
            self.tables = dict(tables)
        self._monitor: LinkMonitor | None = None
        self._desired = DesiredDataplane()

    # -- inputs ----------------------------------------------------------------------------

    def start(self, on_link: LinkCallback,
              on_route_removed: RouteRemovedCallback | None = None,
              on_host_route: HostRouteCallback | None = None) -> None:
        self._monitor = LinkMonitor(on_link, self.netns, on_route_removed=on_route_removed,
                                    on_host_route=on_host_route)
        self._monitor.start()

    def set_desired(self, desired: DesiredDataplane) -> None:
        self._desired = desired
        self.vxlan.set_desired(desired.vxlan)
        self.ipip.set_desired(desired.ipip)
        self.sysctls.set_desired(desired.workload_interfaces)
        self.neighbors.set_desired(desired.neighbors, desired.fdb)
        self.routes.set_desired(desired.routes)
        if self.ipsets is not None:
            self.ipsets.set_desired(desired.ipsets)
        for table in self.tables.values():
            table.set_desired(desired.chains, desired.hooks)

    def update_learned_routes(self, changes: Mapping[str, Route | None]) -> None:
        """A delta of learned routes, {dst: route or None}: see RouteTable.update_learned."""
        self.routes.update_learned(changes)

    def resync(self, kind: ResyncKind) -> None:
        if kind == "routes":  # Felix's RouteRefreshInterval covers devices and neighbours too
            for w in (self.vxlan, self.ipip, self.sysctls, self.neighbors, self.routes):
                w.resync()
        elif kind == "iptables":
            for table in self.tables.values():
                table.resync()
        elif kind == "ipsets":
            if self.ipsets is not None:
                self.ipsets.resync()
        else:
            raise ValueError(f"unknown resync kind {kind!r}; expected one of {RESYNC_KINDS}")

    def on_route_removed(self, dst: str, metric: int) -> None:
        self.routes.on_route_removed(dst, metric)

    def on_host_route_change(self, dev: str | None) -> bool:
        return self.routes.on_host_route_change(dev)

    def on_neighbour_removed(self, device: str) -> None:
        self.neighbors.on_interface_change(device)  # re-reads only its entries

    def check_drift(self) -> list[str]:
        """Each netfilter writer compares a cheap read of its kernel objects with its
        cached view; one that differs re-reads (only it) and its next apply writes
        only the difference. Routes, devices and neighbours need no check: the
        kernel announces their changes (the link monitor)."""
        drifted = [f"iptables-{name}" for name, table in self.tables.items()
                   if table.check_drift()]
        if self.ipsets is not None and self.ipsets.check_drift():
            drifted.append("ipsets")
        return drifted

    def on_interface_change(self, name: str) -> None:
        self.vxlan.on_interface_change(name)
        self.ipip.on_interface_change(name)
        self.sysctls.on_interface_change(name)
        self.neighbors.on_interface_change(name)
        self.routes.on_interface_change(name)

    # -- reads -----------------------------------------------------------------------------

    def host_interface(self, ip: str) -> HostInterface | None:
        found = interface_holding(ip, self.netns)
        if found is not None and self._monitor is not None:
            self._monitor.watch(found.name)
        return found

    def routes_by_class(self) -> dict[RouteClass, int]:
        return self.routes.routes_by_class()

    # -- the apply order ---------------------------------------------------------------------

    def apply(self) -> DataplaneResult:
        out = DataplaneResult()
        d = self._desired
        if self.ipsets is not None:
            out.results["ipsets"] = self.ipsets.apply()
        if d.vxlan is not None:
            self._apply_device("vxlan", self.vxlan, out)
        if d.ipip is not None:
            self._apply_device("ipip", self.ipip, out)
        out.results["sysctls"] = self.sysctls.apply()
        out.results["neighbors"] = self.neighbors.apply()
        out.results["routes"] = self.routes.apply()
        if d.vxlan is None:
            self._apply_device("vxlan", self.vxlan, out)
        if d.ipip is None:
            self._apply_device("ipip", self.ipip, out)
        for name, table in self.tables.items():
            out.results[f"iptables-{name}"] = table.apply()
        if self.ipsets is not None:
            out.results["ipset-deletions"] = self.ipsets.apply_deletions()
        if out.mutations:
            _log.info("dataplane applied: %s", ", ".join(
                f"{k} +{r.writes}/-{r.deletes}" for k, r in out.results.items() if r.mutations))
        for e in out.errors:
            _log.warning("dataplane error (will retry): %s", e)
        return out

    def _apply_device(self, key: str, mgr: VXLANManager | IPIPManager,
                      out: DataplaneResult) -> None:
        res = mgr.apply()
        out.results[key] = res
        for name in res.changed_links:
            self.sysctls.on_interface_change(name)
            self.neighbors.on_interface_change(name)
            self.routes.on_interface_change(name)

    def close(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
        for w in (self.routes, self.neighbors, self.vxlan, self.ipip, self.sysctls):
            w.close()
        if self._nft_generation is not None:
            self._nft_generation.close()


def interface_holding(ip: str, netns: str | None = None) -> HostInterface | None:
    """The interface that holds the IPv4 address `ip`, with its MTU (one netlink read)."""
    # Imported here, as the other writers import it: pyroute2 takes ~0.13 s to import,
    # which the no-root tests of this package (fake kernels) never need.
    from pyroute2 import IPRoute

    kwargs = {"netns": netns} if netns else {}
    with IPRoute(**kwargs) as ipr:
        for addr in ipr.get_addr(family=2):
            # IFA_LOCAL is the local end on point-to-point links; IFA_ADDRESS otherwise.
            if (addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")) != ip:
                continue
            links = ipr.get_links(addr["index"])
            if not links:
                return None
            link = links[0]
            return HostInterface(link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_MTU"))
    return None
