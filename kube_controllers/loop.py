"""The controllers' loop: one thread owns every cache and every etcd write.

Owns the per-kind caches of Kubernetes objects (filled by kube.KindWatch
threads through the queue), the work still to do (keys changed, full resyncs
due, etcd failures to retry) and the node controller's grace-period clocks.
Rules: a `Listed` replaces a kind's cache and schedules a full resync of the
controllers that read it (so a re-list neither loses nor duplicates anything);
a `Changed` reconciles that one object at once (a pod label reaches its
endpoint well within a second); every RECONCILER_PERIOD each controller re-lists
etcd and repairs drift both ways; an etcd failure keeps the work and retries
it with back-off (1 s doubling to 30 s, with jitter) until etcd answers.
"""

from __future__ import annotations

import logging
import queue
import random
import time
from collections.abc import Callable
from typing import Any

from datastore.errors import DatastoreError, UpdateConflict
from datastore.etcd import EtcdClient
from datastore.resources import Node, WorkloadEndpoint
from datastore.store import ResourceStore
from service.health import HealthAggregator

from . import reconcile
from .etcd_side import apply_change, release_node, stored_documents
from .kube import Changed, Listed, WatchFailed
from .metrics import ControllerMetrics

__all__ = ["ControllerLoop", "KINDS_OF"]

_log = logging.getLogger(__name__)

# The Kubernetes kinds each controller reads.
KINDS_OF: dict[str, tuple[str, ...]] = {
    "policy": ("NetworkPolicy",), "namespace": ("Namespace",),
    "serviceaccount": ("ServiceAccount",), "workloadendpoint": ("Pod",), "node": ("Node",),
}
RETRY_FIRST = 1.0
RETRY_MAX = 30.0


class ControllerLoop:
    def __init__(self, client: EtcdClient, controllers: tuple[str, ...], events: queue.Queue[Any],
                 *, reconciler_period: float, leak_grace_period: float,
                 node_exists: Callable[[str], bool], health: HealthAggregator | None = None,
                 metrics: ControllerMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client = client
        self.store = ResourceStore(client)
        self.controllers = controllers
        self.events = events
        self.period = reconciler_period
        self.grace = leak_grace_period
        self.node_exists = node_exists  # a live GET: the node is absent only if the server says so
        self.health = health or HealthAggregator()
        self.metrics = metrics or ControllerMetrics()
        self.clock = clock
        self.cache: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.dirty: dict[str, set[tuple[str, str]]] = {c: set() for c in controllers}
        self.full_due: dict[str, float] = {}  # controller -> when its next full resync is due
        self.missing_since: dict[str, float] = {}
        self.node_due: float | None = None
        self.retry_at = 0.0
        self.retry_delay = RETRY_FIRST
        self.health.register("etcd")
        for kind in self.kinds:
            self.health.register(f"kubernetes-{kind}")

    @property
    def kinds(self) -> list[str]:
        return sorted({k for c in self.controllers for k in KINDS_OF[c]})

    # -- events -------------------------------------------------------------------------------

    def handle(self, event: object) -> None:
        now = self.clock()
        if isinstance(event, Listed):
            self.cache[event.kind] = {reconcile.k8s_key(o): o for o in event.objects}
            self.metrics.lists.labels(event.kind).inc()
            self.health.report(f"kubernetes-{event.kind}", ready=True)
            for c in self._readers(event.kind):
                self.full_due[c] = now
        elif isinstance(event, Changed):
            objects = self.cache.setdefault(event.kind, {})
            key = reconcile.k8s_key(event.object)
            if event.type == "DELETED":
                objects.pop(key, None)
            else:
                objects[key] = event.object
            for c in self._readers(event.kind):
                if c == "node":
                    self.node_due = now if event.type == "DELETED" else self.node_due
                else:
                    self.dirty[c].add(key)
        elif isinstance(event, WatchFailed):
            self.metrics.watch_errors.labels(event.kind).inc()

    def _readers(self, kind: str) -> list[str]:
        return [c for c in self.controllers if kind in KINDS_OF[c]]

    # -- work ---------------------------------------------------------------------------------

    def synced(self, controller: str) -> bool:
        return all(k in self.cache for k in KINDS_OF[controller])

    def next_wake(self) -> float:
        """When the loop has work to do next (an absolute clock time)."""
        times = [t for c, t in self.full_due.items() if self.synced(c)]
        if any(self.dirty.values()):
            times.append(self.clock())
        if self.node_due is not None:
            times.append(self.node_due)
        due = min(times, default=self.clock() + self.period)
        return max(due, self.retry_at)

    def work(self) -> None:
        """Do what is due; on an etcd failure keep it and back off."""
        now = self.clock()
        if now < self.retry_at:
            return
        try:
            for c in self.controllers:
                if not self.synced(c):
                    continue
                if self.full_due.get(c, now + 1) <= now:
                    self._full(c)
                    self.full_due[c] = now + self.period
                    self.dirty[c].clear()
                elif self.dirty[c]:
                    self._keys(c)
            if "node" in self.controllers and self.synced("node") and \
                    self.node_due is not None and self.node_due <= now:
                self._nodes(now)
        except (DatastoreError, OSError) as exc:
            self.metrics.etcd_errors.inc()
            self.health.report("etcd", ready=False, detail=f"etcd: {exc}")
            _log.warning("etcd write failed (%s); retrying in %.1fs", exc, self.retry_delay)
            self.retry_at = now + self.retry_delay * (0.5 + random.random())
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)
            return
        self.retry_delay = RETRY_FIRST
        self.health.report("etcd", ready=True)

    def _apply(self, controller: str, changes: list[reconcile.Change]) -> None:
        for change in changes:
            try:
                apply_change(self.store, change)
            except UpdateConflict:
                # Someone wrote it since we read it: re-plan on the next resync, soon.
                self.full_due[controller] = self.clock()
                continue
            what = "delete" if change.doc is None else "write"
            self.metrics.changes.labels(controller, what).inc()
            _log.info("%s: %s %s", controller, what, "/".join(p for p in change.ref if p))

    def _converting(self, controller: str, only: set[tuple[str, str]] | None) -> None:
        kind = reconcile.SOURCE_KIND[controller]
        objects = self.cache[kind]
        chosen = objects.values() if only is None else [objects[k] for k in only if k in objects]
        desired, refused = reconcile.desired_documents(controller, chosen)
        for bad in refused:
            _log.warning("%s: cannot convert %s: %s", controller, "/".join(bad.key), bad.error)
        target = reconcile.TARGET_CLASS[controller].kind_name
        stored = stored_documents(self.store, target)
        refs = None if only is None else {reconcile.target_ref(controller, k) for k in only}
        self._apply(controller, reconcile.plan(controller, desired, stored, refs))

    def _endpoints(self, only: set[tuple[str, str]] | None) -> None:
        pods = self.cache["Pod"]
        namespaces = None if only is None else {ns for ns, _ in only}
        weps: list[WorkloadEndpoint] = []
        for ns in sorted(namespaces) if namespaces is not None else [None]:
            weps += self.store.list(WorkloadEndpoint, ns)
        for wep in weps:
            key = reconcile.pod_of_endpoint(wep)
            if key is None or (only is not None and key not in only) or key not in pods:
                continue  # no pod (yet, or any more): the CNI owns the endpoint's life
            doc = reconcile.endpoint_update(pods[key], wep)
            if doc is not None:
                ref = reconcile.ref_of(wep)
                self._apply("workloadendpoint",
                            [reconcile.Change(ref, doc, wep.resource_version)])

    def _full(self, controller: str) -> None:
        if controller == "workloadendpoint":
            self._endpoints(None)
        elif controller == "node":
            self.node_due = self.clock()
        else:
            self._converting(controller, None)
        self.metrics.resyncs.labels(controller).inc()

    def _keys(self, controller: str) -> None:
        keys = set(self.dirty[controller])
        if controller == "workloadendpoint":
            self._endpoints(keys)
        elif controller != "node":
            self._converting(controller, keys)
        self.dirty[controller] -= keys

    def _nodes(self, now: float) -> None:
        nodes = {n.name: n for n in self.store.list(Node)}
        verdict = reconcile.nodes_to_release(
            {name for _, name in self.cache["Node"]},
            {name: reconcile.kubernetes_node_name(n) for name, n in nodes.items()},
            self.missing_since, now, self.grace)
        self.missing_since = dict(verdict.missing_since)
        self.node_due = verdict.next_due
        for name in verdict.release:
            k8s_name = reconcile.kubernetes_node_name(nodes[name]) or name
            # Calico re-confirms with the API server before deleting: never touch a node
            # that exists (re-created, or our cache behind).
            if self.node_exists(k8s_name):
                continue
            release_node(self.client, nodes[name])
            self.metrics.nodes_released.inc()

    # -- the loop -----------------------------------------------------------------------------

    def run(self, stopping: Callable[[], bool]) -> None:
        while not stopping():
            self.health.report("loop", ready=True)
            timeout = max(0.0, min(self.next_wake() - self.clock(), 1.0))
            try:
                event = self.events.get(timeout=timeout)
            except queue.Empty:
                event = None
            if event is not None:
                self.handle(event)
                while True:  # drain what else arrived, then work once
                    try:
                        self.handle(self.events.get_nowait())
                    except queue.Empty:
                        break
            self.work()
