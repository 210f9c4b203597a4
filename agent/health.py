"""The agent's Prometheus metrics (served with its health on Felix's port, 9099).

Owns the agent's metric names; the HTTP endpoints and the health registry are
service.health's, shared with the other programs.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from service.health import HealthAggregator, HealthServer, probe

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
        self.last_error = Gauge("tortie_last_error_timestamp_seconds",
                                "Unix time of the last error", registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
