"""`tortie-agent`: the node agent's main loop, datastore in, kernel out.

Threads: the syncer (etcd list+watch), the dataplane's link monitor and the
BGP side only put events on a queue, each a small frozen type (`AgentEvent`).
One loop thread owns the ClusterState, the pure calculation and the
dataplane (agent.dataplane.facade: no writer is thread-safe, by design).

Invariants:
  * nothing is programmed before the syncer's first IN_SYNC;
  * a failed apply marks the dataplane dirty and is retried with backoff
    (1 s doubling to 30 s); it never exits the agent. A single route the
    kernel refuses, or whose next hop has no route, is not a failed apply: the
    RouteTable retries it alone and it is a problem (`stats.problems`, the
    tortie_dataplane_problems gauge, `ctl node status -o wide`), so it never
    delays unrelated writes;
  * a writer that asks for another apply (`retry_after`: a route deletion
    held back by the cleanup grace period) gets it then, with no new input;
  * drift is repaired within seconds: route deletions and link changes are
    announced by the kernel (the link monitor) and handled at once; iptables and
    ipsets, which announce nothing here, get a cheap check every
    DRIFTCHECKINTERVAL that makes only the writer that drifted re-read and write
    the difference;
  * periodic full resyncs stay the last line: routes/devices every
    ROUTEREFRESHINTERVAL, iptables every IPTABLESREFRESHINTERVAL, ipsets every
    IPSETSREFRESHINTERVAL;
  * with etcd unreachable the kernel stays exactly as it is, readiness turns
    false and the syncer reconnects with backoff;
  * SIGTERM stops the loop and leaves routes, devices and rules in place;
  * an endpoint's "policy programmed" file (agent/endpoint_status.py) is written
    only after an apply that programmed it succeeded.
BGP (CALICO_NETWORKING_BACKEND bird or exabgp): the BGP side runs in-process
(bgp.daemon) or, with TORTIE_BGP_SIDECAR, in a separate `tortie-bgp` whose
control socket the agent follows. Either way changes of its best paths
arrive on the queue (bgp.types.BestPathChanges) and go to LearnedRoutes
(agent/calc/learned.py), whose route changes go straight to the RouteTable:
a burst of learned routes never recomputes the datastore's part, and a
datastore change never re-derives the learned routes unless their context
(pools, local node and blocks, parent interface, MTU) changed.
The order in which the dataplane's writers apply is the dataplane's own
(KernelDataplane.apply); the loop only decides when to apply.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agent import config as agent_config
from agent import idle_gc, route_problems
from agent.calc import CalcConfig, Calculation, ClusterState, LearnedRoutes, calculate, unchanged_by
from agent.dataplane.facade import RESYNC_KINDS, Dataplane, KernelDataplane, ResyncKind
from agent.endpoint_status import EndpointStatusPublisher
from agent.errors import StartupError
from agent.health import HealthAggregator, HealthServer, Metrics, probe
from agent.startup import StartupResult, redetect, run_startup
from agent.types import DesiredDataplane, RouteClass
from bgp.control import DEFAULT_NAME as BGP_CONTROL_NAME
from bgp.control import follow_routes
from bgp.daemon import BGPDaemon
from bgp.types import BestPathChanges
from datastore.config import load_env
from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient
from datastore.keys import DATAPLANE_SYNC_PREFIXES
from datastore.store import ResourceStore
from datastore.syncer import (
    DatastoreUpdates,
    FanOut,
    StopRequested,
    Syncer,
    SyncStatus,
    SyncStatusChanged,
    Update,
    drain_events,
)

_log = logging.getLogger("agent")

MIN_BACKOFF, MAX_BACKOFF = 1.0, 30.0
# Applies start at least this far apart. Each apply costs the same few iptables
# processes whatever it carries; while pods are being added (one endpoint every ~15 ms
# on a busy node) applying per batch of events spent more CPU than the CNI ADDs
# themselves, on the node's CPUs the ADDs need (docs/cni.md, "Performance"). A change
# after a quiet spell is still applied at once.
MIN_APPLY_INTERVAL = 0.1


@dataclass(frozen=True, slots=True)
class LinkChanged:
    """The link monitor saw `event` ("added", "removed", "up", "down", "mtu", "address",
    "neighbour-removed") on interface `name`; ("*", "resync") when events may have been
    lost."""

    name: str
    event: str


@dataclass(frozen=True, slots=True)
class RouteRemoved:
    """The kernel announced that main-table route (dst, metric), one tortie may own,
    was deleted (by the agent itself or behind its back)."""

    dst: str
    metric: int


@dataclass(frozen=True, slots=True)
class HostRouteChanged:
    """A main-table route of the host's own (not tortie's) on `dev` (None: no device)
    was added, replaced or deleted: learned next hops may resolve differently."""

    dev: str | None


# What the loop's queue carries. BGP's best-path changes arrive as they are
# (bgp.types.BestPathChanges), from the in-process daemon or the sidecar's socket.
AgentEvent = (SyncStatusChanged | DatastoreUpdates | BestPathChanges | LinkChanged
              | RouteRemoved | HostRouteChanged | StopRequested)


@dataclass
class LoopStats:
    """What the loop did; for tests, metrics and the restart-writes-nothing check."""

    applies: int = 0
    kernel_writes: int = 0
    apply_errors: int = 0
    calculations: int = 0
    # Batches of changes agent.calc.unchanged_by proved invisible here: not calculated.
    calculations_skipped: int = 0
    in_sync: bool = False
    problems: tuple[str, ...] = ()
    last_error: str = ""
    writes_by_writer: dict[str, int] = field(default_factory=dict)


class Agent:
    def __init__(self, config: agent_config.AgentConfig, client: EtcdClient, *,
                 netns: str | None = None, clock: Callable[[], float] = time.monotonic,
                 dataplane: Dataplane | None = None, nodename: str = "") -> None:
        self.config = config
        self.client = client
        self.store = ResourceStore(client)
        self.netns = netns
        self.clock = clock
        self.health = HealthAggregator()
        self.metrics = Metrics()
        self.stats = LoopStats()
        self.nodename = nodename  # start_up() determines it (Calico's rules)
        self._events: queue.Queue[AgentEvent] = queue.Queue()
        # None until run() builds the kernel's (tests hand in a fake).
        self.dataplane: Dataplane | None = dataplane
        self._stop = threading.Event()
        self._state = ClusterState()
        self._learned = LearnedRoutes()
        self._dirty_calc = True
        self._dirty_learned = False
        self._calc: Calculation | None = None  # the last calculation
        self._dataplane_problems: tuple[str, ...] = ()  # of the last apply (unresolved routes)
        # With the BGP sidecar: where the problems go for it (agent/route_problems.py), and
        # the list last written there (None: nothing written by this run yet).
        self._problems_file: Path | None = None
        self._problems_published: tuple[str, ...] | None = None
        self._route_counts: dict[RouteClass, int] | None = None  # as last put in the metrics
        self._dirty_apply = True
        self._retry_at = 0.0
        self._backoff = MIN_BACKOFF
        self._next_apply_at = 0.0  # MIN_APPLY_INTERVAL after the last apply started
        # When a writer asked to apply again without new input (a route deletion
        # held back by the cleanup grace period); None when nobody asked.
        self._reapply_at: float | None = None
        self._parent: str | None = None
        self._parent_for_ip: str | None = None  # the node IP self._parent was looked up for
        self._host_mtu: int | None = None
        self._mtu_written: int | None = None
        self._bgp_running = False  # BGP carries IPIP/no-encap routes (agent/calc/routes.py)
        self.endpoint_status = EndpointStatusPublisher(config.endpoint_status_path_prefix,
                                                       clock=clock)
        for name in ("datastore", "dataplane"):
            self.health.register(name)

    # -- start-up -----------------------------------------------------------------------

    def start_up(self) -> StartupResult:
        """calico-node's start-up, retried with backoff while etcd is unreachable."""
        delay = MIN_BACKOFF
        while not self._stop.is_set():
            try:
                result = run_startup(self.store, self.config, netns=self.netns)
                self.nodename = result.nodename
                self.health.report("datastore", ready=False, detail="waiting for in-sync")
                return result
            except DatastoreError as exc:
                self.health.report("datastore", ready=False, detail=str(exc))
                _log.warning("start-up: datastore not ready (%s); retrying in %.0fs", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_BACKOFF)
        raise SystemExit(0)

    # -- event sources --------------------------------------------------------------

    def on_status(self, status: SyncStatus) -> None:
        self._events.put(SyncStatusChanged(status))

    def on_updates(self, updates: list[Update]) -> None:
        self._events.put(DatastoreUpdates(updates))

    def on_learned(self, changes: BestPathChanges) -> None:
        self._events.put(changes)

    def on_link(self, name: str, event: str) -> None:
        self._events.put(LinkChanged(name, event))

    def on_route_removed(self, dst: str, metric: int) -> None:
        self._events.put(RouteRemoved(dst, metric))

    def on_host_route(self, dev: str | None) -> None:
        self._events.put(HostRouteChanged(dev))

    def stop(self) -> None:
        self._stop.set()
        self._events.put(StopRequested())

    # -- the loop -------------------------------------------------------------------------

    def run(self, *, serve_health: bool = True) -> None:
        result = self.start_up()
        _log.info("node %s: IPv4 %s; starting the dataplane loop", self.nodename,
                  result.node.ipv4_address)
        server = None
        if serve_health and self.config.health_enabled:
            server = HealthServer(self.health, self.metrics, self.config.health_host,
                                  self.config.health_port).start()
        if self.dataplane is None:
            self.dataplane = KernelDataplane(self.netns)
        dataplane = self.dataplane
        stop_bgp, bgp_daemon = self._start_bgp()
        # One syncer for the loop and an in-process BGP daemon (FanOut): one watch, one
        # decode and one cache per change on this node.
        syncer = Syncer(self.client, DATAPLANE_SYNC_PREFIXES,
                        FanOut(self, bgp_daemon) if bgp_daemon else self)
        self.metrics.follow_syncer(syncer)
        try:
            dataplane.start(self.on_link, self.on_route_removed, self.on_host_route)
            syncer.start()
            self.run_loop()
        finally:
            stop_bgp()
            syncer.stop()
            dataplane.close()
            if server:
                server.stop()
            _log.info("agent stopped; the dataplane is left as it is")

    def _start_bgp(self) -> tuple[Callable[[], None], BGPDaemon | None]:
        """Start the BGP side (or follow the sidecar's): how to stop it, and the
        in-process daemon if there is one (it follows the agent's syncer)."""
        if not self.config.bgp_enabled or self.netns is not None:
            return (lambda: None), None
        if self.config.bgp_sidecar:
            _log.info("BGP runs in the tortie-bgp sidecar: following its learned routes")
            self._bgp_running = True
            self._problems_file = route_problems.problems_path(self.config.run_dir, self.nodename)
            stop = threading.Event()
            threading.Thread(target=follow_routes, args=(BGP_CONTROL_NAME, self.on_learned, stop),
                             name="bgp-follow", daemon=True).start()
            return stop.set, None
        self._bgp_running = True
        daemon = BGPDaemon(self.client, self.nodename,
                           workdir=Path(self.config.run_dir) / "bgp" / self.nodename,
                           on_routes=self.on_learned, hold_time=self.config.bgp_hold_time,
                           router_id=self.config.router_id,
                           route_problems=lambda: self._dataplane_problems,
                           own_syncer=False)
        daemon.start()
        return daemon.stop, daemon

    def _publish_mtu(self, desired: DesiredDataplane) -> None:
        """Write the pod MTU for the CNI plugin when it changes (atomically, like Calico)."""
        mtu = pod_mtu(desired, self._host_mtu or 1460)
        if mtu == self._mtu_written:
            return
        path = Path(self.config.mtu_file)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}")
            tmp.write_text(f"{mtu}\n")
            os.replace(tmp, path)
            self._mtu_written = mtu
            _log.info("pod MTU %d published to %s", mtu, path)
        except OSError as exc:
            _log.warning("cannot publish the pod MTU to %s: %s", path, exc)

    def _resync_intervals(self) -> dict[ResyncKind, float]:
        """How often each kind of kernel state is re-read in full (drift repair)."""
        intervals: dict[ResyncKind, float] = {
            "routes": self.config.route_refresh_interval,
            "iptables": self.config.iptables_refresh_interval,
            "ipsets": self.config.ipsets_refresh_interval,
        }
        assert set(intervals) == set(RESYNC_KINDS)
        return intervals

    def run_loop(self) -> None:
        """The dataplane loop, until stop(): events in, calculation, apply (run() calls it
        after start-up; tests drive it directly with a fake dataplane)."""
        now = self.clock()
        resyncs = self._resync_intervals()
        timers: dict[str, float] = {kind: now + interval for kind, interval in resyncs.items()}
        timers["redetect"] = now + self.config.autodetect_poll_interval
        if self.config.drift_check_interval > 0:
            timers["drift"] = now + self.config.drift_check_interval
        while not self._stop.is_set():
            wait = max(0.0, min(timers.values()) - self.clock())
            dirty = self._dirty_calc or self._dirty_learned or self._dirty_apply
            if dirty and self.stats.in_sync:
                wait = min(wait, max(0.0, self._apply_not_before() - self.clock()))
            if self._reapply_at is not None:
                wait = min(wait, max(0.0, self._reapply_at - self.clock()))
            self._drain(wait)
            if self._stop.is_set():
                break
            self._run_timers(timers, resyncs)
            if self._reapply_at is not None and self.clock() >= self._reapply_at:
                self._reapply_at = None
                self._dirty_apply = True
            if self.stats.in_sync and (self._dirty_calc or self._dirty_learned
                                       or self._dirty_apply) \
                    and self.clock() >= self._apply_not_before():
                self._calculate_and_apply()

    def _apply_not_before(self) -> float:
        return max(self._retry_at, self._next_apply_at)

    def _drain(self, wait: float) -> None:
        assert self.dataplane is not None
        for ev in drain_events(self._events, wait):
            match ev:
                case DatastoreUpdates(updates):
                    if self._state.apply(updates):
                        self._dirty_calc = True
                case SyncStatusChanged(status):
                    self._on_sync_status(status)
                case BestPathChanges(routes, reset):
                    self._learned.update(routes, reset=reset)
                    self._dirty_learned = True
                case LinkChanged(name, "neighbour-removed"):
                    # Only the neighbour table re-reads the device: a link event would
                    # also hold back route cleanup on it (the grace period).
                    self.dataplane.on_neighbour_removed(name)
                    self._dirty_apply = True
                case LinkChanged("*", "resync"):
                    # The monitor overran and lost events: re-read routes, devices,
                    # sysctls and neighbours (the monitor re-read the links itself).
                    _log.warning("link events were lost: resyncing routes and devices")
                    self.dataplane.resync("routes")
                    self.metrics.resyncs.labels("link-overrun").inc()
                    self._dirty_apply = True
                case LinkChanged(name, event):
                    _log.debug("link %s: %s", name, event)
                    self.dataplane.on_interface_change(name)
                    if name == self._parent:
                        # Its MTU or addresses may have changed: look the parent up again.
                        self._parent_for_ip = None
                        self._dirty_calc = True
                    self._dirty_apply = True
                case RouteRemoved(dst, metric):
                    self.dataplane.on_route_removed(dst, metric)
                    self._dirty_apply = True
                case HostRouteChanged(dev):
                    if self.dataplane.on_host_route_change(dev):
                        self._dirty_apply = True
                case StopRequested():
                    pass  # self._stop is set: the loop ends after this batch

    def _on_sync_status(self, status: SyncStatus) -> None:
        in_sync = status is SyncStatus.IN_SYNC
        if in_sync and not self.stats.in_sync:
            _log.info("datastore in sync: programming the dataplane")
        elif not in_sync and self.stats.in_sync:
            _log.warning("datastore %s: keeping the dataplane as it is", status.name)
        # Once in sync, a resync (re-list after compaction) keeps programming from the
        # state we have; only before the first snapshot is nothing programmed.
        self.stats.in_sync = self.stats.in_sync or in_sync
        self.metrics.datastore_connected.set(1 if in_sync else 0)
        self.health.report("datastore", ready=in_sync,
                           detail="" if in_sync else f"datastore {status.name.lower()}")

    def _run_timers(self, timers: dict[str, float], resyncs: dict[ResyncKind, float]) -> None:
        assert self.dataplane is not None
        now = self.clock()
        for kind, interval in resyncs.items():
            if now >= timers[kind]:
                self.dataplane.resync(kind)
                self.metrics.resyncs.labels(kind).inc()
                self._dirty_apply = True
                timers[kind] = now + interval
        if "drift" in timers and now >= timers["drift"]:
            timers["drift"] = now + self.config.drift_check_interval
            # Only once programmed and caught up: a pending apply re-reads anyway.
            if self.stats.in_sync and not self._dirty_apply:
                for writer in self.dataplane.check_drift():
                    self.metrics.resyncs.labels(f"drift-{writer}").inc()
                    self._dirty_apply = True
        if now >= timers["redetect"]:
            timers["redetect"] = now + self.config.autodetect_poll_interval
            try:
                res = redetect(self.store, self.config, self.nodename, netns=self.netns)
                if res.changed:
                    _log.info("node %s: addresses updated (IPv4 %s)", self.nodename,
                              res.node.ipv4_address)
            except Exception as exc:  # noqa: BLE001 - re-detection failing must not stop routing
                _log.warning("re-detection failed: %s", exc)

    # -- calculation and apply -------------------------------------------------------

    def _calc_config(self) -> CalcConfig:
        assert self.dataplane is not None
        node = self._state.nodes.get(self.nodename)
        node_ip = node.ip if node else None
        if node_ip != self._parent_for_ip:
            # Only when the node IP changed or the parent's link changed: not per batch.
            # The dataplane reports the parent's link changes from now on.
            found = self.dataplane.host_interface(node_ip) if node_ip else None
            parent = found.name if found else None
            if parent != self._parent:
                _log.info("parent interface: %s (holds the node IP %s)", parent, node_ip)
            # A miss is not cached: the address may not be on an interface yet.
            self._parent, self._parent_for_ip = parent, node_ip if parent else None
            self._host_mtu = found.mtu if found else None
        parent = self._parent
        return CalcConfig(
            host_mtu=self._host_mtu or 1460,
            ipip_mtu=self.config.ipip_mtu or None,
            vxlan_mtu=self.config.vxlan_mtu or None,
            vxlan_vni=self.config.vxlan_vni,
            vxlan_port=self.config.vxlan_port,
            parent_interface=parent,
            datastore_cluster_routes=not self._bgp_running,
            endpoint_to_host_action=self.config.default_endpoint_to_host_action,
            failsafe_inbound=self.config.failsafe_inbound_host_ports,
            failsafe_outbound=self.config.failsafe_outbound_host_ports,
        )

    def _report_problems(self) -> None:
        calc_problems = self._calc.problems if self._calc else ()
        problems = tuple(sorted(set(calc_problems) | set(self._learned.problems)
                                | set(self._dataplane_problems)))
        if problems != self.stats.problems:
            for problem in sorted(set(problems) - set(self.stats.problems)):
                _log.warning("not programmed: %s", problem)
            self.stats.problems = problems

    def _calculate_and_apply(self) -> None:
        dataplane = self.dataplane
        assert dataplane is not None
        if self._dirty_calc:
            self._dirty_calc = False
            config = self._calc_config()
            state_changes = self._state.take_changes()
            previous = self._calc
            if previous is not None and unchanged_by(previous, state_changes, self._state,
                                                     self.nodename, config):
                self.stats.calculations_skipped += 1
                self.metrics.calculations.labels("skipped").inc()
            else:
                calc = self._calc = calculate(self._state, self.nodename, config)
                self.stats.calculations += 1
                self.metrics.calculations.labels("calculated").inc()
                desired = calc.dataplane
                dataplane.set_desired(desired)
                self.endpoint_status.expect(self._state, self.nodename, desired)
                self._publish_mtu(desired)
                self._learned.set_context(calc.learned_context)
                self._dirty_learned = True  # a new context may change learned routes
                self._dirty_apply = True
        if self._dirty_learned:
            changes = self._learned.changes()
            if changes:
                dataplane.update_learned_routes(changes)
                self._dirty_apply = True
            self._dirty_learned = False
            self._report_problems()
            counts = dataplane.routes_by_class()
            if counts != self._route_counts:  # not per batch: most batches change none
                self._route_counts = counts
                for cls in RouteClass:  # every class, so one that emptied reads 0
                    self.metrics.routes.labels(cls.name).set(counts.get(cls, 0))
        if not self._dirty_apply:
            return  # nothing new to apply (a skipped calculation, no learned change)
        started = self.clock()
        self._next_apply_at = started + MIN_APPLY_INTERVAL
        result = dataplane.apply()
        self.metrics.apply_seconds.observe(self.clock() - started)
        # Without this, a held-back deletion waited for the next unrelated event
        # or periodic resync (up to 90 s) and a restart then did it instead.
        retry_after = result.retry_after
        self._reapply_at = self.clock() + retry_after if retry_after is not None else None
        self.stats.applies += 1
        errors = []
        problems: list[str] = []
        for name, res in result.results.items():
            problems += res.problems
            self.metrics.dataplane_problems.labels(name).set(len(res.problems))
            writes = res.mutations
            if writes:
                self.metrics.kernel_writes.labels(name).inc(writes)
                self.stats.kernel_writes += writes
                self.stats.writes_by_writer[name] = self.stats.writes_by_writer.get(name, 0) + writes
            for err in res.errors:
                errors.append(f"{name}: {err}")
                self.metrics.apply_errors.labels(name).inc()
        if tuple(problems) != self._dataplane_problems:
            # Logged once, when it appears (not per apply): the writer already left it out.
            self._dataplane_problems = tuple(problems)
            self._report_problems()
        if self._problems_file is not None and self._problems_published != self._dataplane_problems:
            if route_problems.publish(self._problems_file, self._dataplane_problems):
                self._problems_published = self._dataplane_problems
        if errors:
            self.stats.apply_errors += 1
            self.stats.last_error = errors[0]
            self.metrics.last_error.set(time.time())
            _log.warning("dataplane apply failed (%d errors; retrying in %.0fs): %s",
                         len(errors), self._backoff, "; ".join(errors[:3]))
            self._retry_at = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF)
            self.health.report("dataplane", ready=False, detail=errors[0])
        else:
            self._dirty_apply = False
            self._backoff = MIN_BACKOFF
            self.health.report("dataplane", ready=True)
            # Only now are the expected endpoints' routes and policy in the kernel.
            self.endpoint_status.publish()


def pod_mtu(desired: DesiredDataplane, host_mtu: int) -> int:
    """The MTU pods should use: the smallest of the tunnels in use, else the host's."""
    mtus = [dev.mtu for dev in (desired.vxlan, desired.ipip) if dev is not None and dev.mtu]
    return min(mtus) if mtus else host_mtu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tortie-agent", description=__doc__.split("\n")[0])
    ap.add_argument("--live", action="store_true", help="probe a running agent's liveness")
    ap.add_argument("--ready", action="store_true", help="probe a running agent's readiness")
    args = ap.parse_args(argv)
    try:
        cfg = agent_config.load()
    except StartupError as exc:
        print(f"tortie-agent: {exc}", file=sys.stderr)
        return 1
    if args.live or args.ready:
        ok, reason = probe("live" if args.live else "ready", cfg.health_host, cfg.health_port)
        print(reason)
        return 0 if ok else 1
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr,
                        format="%(asctime)s [%(levelname)s] %(name)s: %(message)s")
    try:
        client = EtcdClient(load_env())
    except DatastoreError as exc:
        print(f"tortie-agent: {exc}", file=sys.stderr)
        return 1
    agent = Agent(cfg, client)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: agent.stop())
    idle_gc.start()
    try:
        agent.run()
    except StartupError as exc:
        _log.error("start-up failed: %s", exc)
        return 1
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
