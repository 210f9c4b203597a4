"""`tortie-kube-controllers`: Kubernetes objects into etcd, as calico-kube-controllers in etcd mode.

Owns the program's start: settings (kube_controllers.config, Calico's names),
the etcd client (datastore.config's ETCD_* settings), the Kubernetes client
(KUBECONFIG or in-cluster credentials), optional leader election through a
coordination.k8s.io Lease (the client's LeaderElection; losing the lease ends
the process so the Deployment restarts it as a follower), the health server,
one KindWatch per kind the enabled controllers read, and the loop.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from typing import Any

from datastore.config import load as load_etcd
from datastore.errors import DatastoreError
from datastore.etcd import EtcdClient
from service.health import HealthAggregator, HealthServer, probe

from .config import ConfigError, ControllersConfig, load
from .kube import KindWatch, list_calls
from .loop import ControllerLoop
from .metrics import ControllerMetrics

_log = logging.getLogger("tortie.kube_controllers")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "fatal": logging.CRITICAL, "panic": logging.CRITICAL}


def kubernetes_client(config: ControllersConfig) -> Any:
    from kubernetes import client
    from kubernetes import config as kube_config

    if config.kubeconfig:
        kube_config.load_kube_config(config_file=config.kubeconfig)
    else:
        kube_config.load_incluster_config()
    return client.ApiClient()


def node_exists(api_client: Any) -> Any:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(api_client)

    def exists(name: str) -> bool:
        try:
            core.read_node(name, _preload_content=False, _request_timeout=(5, 10))
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    return exists


def serve_health(config: ControllersConfig) -> tuple[HealthAggregator, ControllerMetrics,
                                                      HealthServer | None]:
    health, metrics = HealthAggregator(), ControllerMetrics()
    server = None
    if config.health_enabled:
        server = HealthServer(health, metrics, config.health_host, config.health_port).start()
    return health, metrics, server


def run(config: ControllersConfig, stop: threading.Event,
        served: tuple[HealthAggregator, ControllerMetrics, HealthServer | None] | None = None,
        ) -> int:
    """The controllers until `stop`; `served`: the health server already running, if any."""
    etcd = EtcdClient(load_etcd())
    api = kubernetes_client(config)
    health, metrics, server = served or serve_health(config)
    own_server = served is None  # else the caller's: it outlives this run
    events: queue.Queue[Any] = queue.Queue()
    existence = node_exists(api)
    loop = ControllerLoop(etcd, config.enabled_controllers, events,
                          reconciler_period=config.reconciler_period,
                          leak_grace_period=config.leak_grace_period,
                          node_exists=lambda name: bool(existence(name)),
                          health=health, metrics=metrics)
    calls = list_calls(api)
    watches = [KindWatch(kind, calls[kind], events).start() for kind in loop.kinds]
    try:
        loop.run(stop.is_set)
    finally:
        for w in watches:
            w.stop()
        if server is not None and own_server:
            server.stop()
        etcd.close()
    return 0


def lead_then_run(config: ControllersConfig, stop: threading.Event) -> int:
    """Run only while holding the Lease; exit 1 when it is lost."""
    from kubernetes.leaderelection import electionconfig, leaderelection
    from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

    kubernetes_client(config)  # loads the default configuration LeaseLock uses
    identity = config.pod_name or socket.gethostname()
    lost = threading.Event()
    # A follower is alive (its liveness probe must not restart it) but not ready: it
    # does no work until it holds the Lease.
    served = serve_health(config)
    served[0].report("leader-election", ready=False,
                     detail=f"following: waiting for Lease {config.pod_namespace}/"
                            f"{config.lease_name}")

    def lead() -> None:
        _log.info("%s leads (Lease %s/%s)", identity, config.pod_namespace, config.lease_name)
        served[0].report("leader-election", ready=True, detail=f"{identity} leads")
        run(config, stop, served)

    def lose() -> None:
        _log.error("lost the Lease %s/%s; exiting", config.pod_namespace, config.lease_name)
        lost.set()
        stop.set()

    lock = LeaseLock(config.lease_name, config.pod_namespace, identity)
    election = leaderelection.LeaderElection(electionconfig.Config(
        lock, lease_duration=15, renew_deadline=10, retry_period=2,
        onstarted_leading=lead, onstopped_leading=lose))
    thread = threading.Thread(target=election.run, name="leader-election", daemon=True)
    thread.start()
    stop.wait()
    if served[2] is not None:
        served[2].stop()
    return 1 if lost.is_set() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tortie-kube-controllers", description=__doc__)
    parser.add_argument("--live", action="store_true", help="probe a running one's /liveness")
    parser.add_argument("--ready", action="store_true", help="probe a running one's /readiness")
    args = parser.parse_args(argv)
    try:
        config = load()
    except ConfigError as exc:
        print(f"tortie-kube-controllers: {exc}", file=sys.stderr)
        return 2
    if args.live or args.ready:
        host = "127.0.0.1" if config.health_host in ("0.0.0.0", "") else config.health_host
        ok, reason = probe("live" if args.live else "ready", host, config.health_port)
        print(reason)
        return 0 if ok else 1
    logging.basicConfig(level=_LEVELS[config.log_level],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        if config.leader_election:
            return lead_then_run(config, stop)
        return run(config, stop)
    except DatastoreError as exc:
        print(f"tortie-kube-controllers: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    os._exit(main())
