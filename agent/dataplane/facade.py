"""agent.dataplane.driver: KernelDataplane, the kernel writers applied in dependency order.

Owns: nothing in the kernel itself; it holds one writer per object kind
(tunnel devices, sysctls, neighbours/FDB, routes), hands each its part of a
DesiredDataplane and applies them in an order where every object's referents
exist (Felix's EventSequencer: VTEPs before routes, route removals before VTEP
removals):

    additions:  devices (vxlan.calico, tunl0) -> sysctls -> neighbours/FDB -> routes
    removals:   routes -> neighbours/FDB -> devices

Inputs: `set_desired(DesiredDataplane)`, the whole datastore-derived state,
handed to every writer; and `update_learned_routes(changes)`, a delta of
BGP-learned routes ({dst: Route, or None to remove it}) handed to the
RouteTable alone, which merges the two (a datastore route wins its
destination; agent/dataplane/routes.py). Both take effect at the next apply().

A device that was created, recreated or deleted is reported to the other
writers (`on_interface_change`), since the kernel dropped what they had on it.
iptables and ipsets are written by their own managers (agent/dataplane/
iptables.py, ipsets.py), which the agent loop applies alongside.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.dataplane.common import ApplyResult
from agent.dataplane.neighbors import NeighborTable
from agent.dataplane.routes import RouteTable
from agent.dataplane.sysctls import SysctlManager
from agent.dataplane.tunnels import IPIPManager, VXLANManager
from agent.types import DesiredDataplane, Route

_log = logging.getLogger(__name__)


@dataclass
class DataplaneResult:
    """One ApplyResult per writer, by name ("vxlan", "ipip", "sysctls", "neighbors", "routes")."""

    results: dict[str, ApplyResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results.values())

    @property
    def mutations(self) -> int:
        return sum(r.mutations for r in self.results.values())

    @property
    def errors(self) -> list[Exception]:
        return [e for r in self.results.values() for e in r.errors]


class KernelDataplane:
    def __init__(
        self,
        netns: str | None = None,
        *,
        routes: RouteTable | None = None,
        neighbors: NeighborTable | None = None,
        vxlan: VXLANManager | None = None,
        ipip: IPIPManager | None = None,
        sysctls: SysctlManager | None = None,
    ) -> None:
        self.netns = netns
        self.routes = routes or RouteTable(netns)
        self.neighbors = neighbors or NeighborTable(netns)
        self.vxlan = vxlan or VXLANManager(netns)
        self.ipip = ipip or IPIPManager(netns)
        self.sysctls = sysctls or SysctlManager(netns)
        self._desired = DesiredDataplane()

    def set_desired(self, d: DesiredDataplane) -> None:
        self._desired = d
        self.vxlan.set_desired(d.vxlan)
        self.ipip.set_desired(d.ipip)
        self.sysctls.set_desired(d.workload_interfaces)
        self.neighbors.set_desired(d.neighbors, d.fdb)
        self.routes.set_desired(d.routes)

    def update_learned_routes(self, changes: Mapping[str, Route | None]) -> None:
        """A delta of learned routes, {dst: route or None}: see RouteTable.update_learned."""
        self.routes.update_learned(changes)

    def resync(self) -> None:
        for w in (self.vxlan, self.ipip, self.sysctls, self.neighbors, self.routes):
            w.resync()

    def on_interface_change(self, name: str) -> None:
        self.vxlan.on_interface_change(name)
        self.ipip.on_interface_change(name)
        self.sysctls.on_interface_change(name)
        self.neighbors.on_interface_change(name)
        self.routes.on_interface_change(name)

    def _device(self, key: str, mgr: VXLANManager | IPIPManager, out: DataplaneResult) -> None:
        res = mgr.apply()
        out.results[key] = res
        for name in res.changed_links:
            self.sysctls.on_interface_change(name)
            self.neighbors.on_interface_change(name)
            self.routes.on_interface_change(name)

    def apply(self) -> DataplaneResult:
        out = DataplaneResult()
        d = self._desired
        # Devices that must exist go first; devices to remove go last.
        if d.vxlan is not None:
            self._device("vxlan", self.vxlan, out)
        if d.ipip is not None:
            self._device("ipip", self.ipip, out)
        out.results["sysctls"] = self.sysctls.apply()
        out.results["neighbors"] = self.neighbors.apply()
        out.results["routes"] = self.routes.apply()
        if d.vxlan is None:
            self._device("vxlan", self.vxlan, out)
        if d.ipip is None:
            self._device("ipip", self.ipip, out)
        if out.mutations:
            _log.info("dataplane applied: %s", ", ".join(
                f"{k} +{r.writes}/-{r.deletes}" for k, r in out.results.items() if r.mutations))
        for e in out.errors:
            _log.warning("dataplane error (will retry): %s", e)
        return out

    def close(self) -> None:
        for w in (self.routes, self.neighbors, self.vxlan, self.ipip, self.sysctls):
            w.close()
