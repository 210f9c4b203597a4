"""tortie-kube-controllers' Prometheus metrics, in a registry of their own.

Owns the metric names; service.health serves them on /metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class ControllerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.changes = Counter("tortie_kube_controllers_changes_total",
                               "etcd writes and deletes, by controller", ["controller", "change"],
                               registry=r)
        self.resyncs = Counter("tortie_kube_controllers_resyncs_total",
                               "Full reconciliations, by controller", ["controller"], registry=r)
        self.lists = Counter("tortie_kube_controllers_lists_total",
                             "Kubernetes lists (first and after 410 Gone), by kind", ["kind"],
                             registry=r)
        self.watch_errors = Counter("tortie_kube_controllers_watch_errors_total",
                                    "Failed Kubernetes lists or watches, by kind", ["kind"],
                                    registry=r)
        self.etcd_errors = Counter("tortie_kube_controllers_etcd_errors_total",
                                   "etcd failures (retried with back-off)", registry=r)
        self.nodes_released = Counter("tortie_kube_controllers_nodes_released_total",
                                      "tortie Nodes released after their Kubernetes Node went",
                                      registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
