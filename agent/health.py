"""The agent's Prometheus metrics (served with its health on Felix's port, 9099).

Owns the agent's metric names; the HTTP endpoints and the health registry are
service.health's, shared with the other programs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.health import HealthAggregator, HealthServer, probe

if TYPE_CHECKING:
    from datastore.syncer import Syncer

__all__ = ["HealthAggregator", "HealthServer", "Metrics", "probe"]


class Metrics:
    """The agent's Prometheus metrics, in a registry of their own (no global state)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.routes = Gauge("tortie_routes", "Routes programmed, by class", ["route_class"],
                            registry=r)
        self.apply_seconds = Histogram("tortie_dataplane_apply_seconds",
                                       "Time to apply one dataplane update", registry=r)
        self.kernel_writes = Counter("tortie_dataplane_kernel_writes_total",
                                     "Kernel objects written, by kind", ["kind"], registry=r)
        self.resyncs = Counter("tortie_dataplane_resyncs_total",
                               "Full re-reads of kernel state, by kind", ["kind"], registry=r)
        self.apply_errors = Counter("tortie_dataplane_apply_errors_total",
                                    "Dataplane apply failures, by kind", ["kind"], registry=r)
        self.datastore_connected = Gauge("tortie_datastore_connected",
                                         "1 when the datastore watch is in sync", registry=r)
        self.dataplane_problems = Gauge(
            "tortie_dataplane_problems",
            "Things a writer leaves out until something changes (e.g. a learned route whose "
            "next hop has no route), by writer", ["writer"], registry=r)
        self.calculations = Counter(
            "tortie_calculations_total",
            "Batches of datastore changes: calculated, or skipped as invisible to this node",
            ["result"], registry=r)
        self.last_error = Gauge("tortie_last_error_timestamp_seconds",
                                "Unix time of the last error", registry=r)

    def follow_syncer(self, syncer: Syncer) -> None:
        """Serve the syncer's connection figures, read at each scrape."""
        self.registry.register(_SyncerCollector(syncer))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SyncerCollector:
    """The datastore connection as the syncer sees it: which member, how often replaced."""

    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer

    def collect(self) -> Iterator[Metric]:
        endpoint = GaugeMetricFamily("tortie_datastore_endpoint",
                                     "1 for the etcd member the watch uses now",
                                     labels=["endpoint"])
        endpoint.add_metric([self.syncer.endpoint], 1)
        yield endpoint
        yield CounterMetricFamily("tortie_datastore_watch_restarts",
                                  "Watch streams re-established after a break or a stall",
                                  value=self.syncer.rewatches)
        yield CounterMetricFamily("tortie_datastore_watch_stalls",
                                  "Watch streams found silent (no events, no progress answer)",
                                  value=self.syncer.stalls)
