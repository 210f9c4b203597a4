"""tortie-kube-controllers as a process against the Kubernetes API fake and a real etcd.

Owns how the tests run the program: its environment (a kubeconfig the fake wrote, the
etcd endpoint, short periods), its log file, its /metrics read over HTTP, and its end
(SIGTERM to the PID it started, then SIGKILL if it lingers). Nothing here is a stand-in:
the program is the console script's module, unchanged.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from datastore.etcd import EtcdClient
from datastore.resources import parse_document
from datastore.store import ResourceStore
from ipam.allocator import Allocator
from tests.support import track_process

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Controllers:
    """One tortie-kube-controllers process; `stop()` ends it (also when it failed)."""

    def __init__(self, kubeconfig: Path, etcd_url: str, log: Path, *,
                 health_port: int | None = None, netns: str | None = None,
                 **settings: str) -> None:
        self.health_port = health_port or free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "KUBE"))}
        env.update({
            "PYTHONPATH": str(ROOT), "KUBECONFIG": str(kubeconfig), "ETCD_ENDPOINTS": etcd_url,
            "TORTIE_HEALTH_HOST": "127.0.0.1", "TORTIE_HEALTH_PORT": str(self.health_port),
            "LOG_LEVEL": "debug", **settings,
        })
        command = [sys.executable, "-m", "kube_controllers.main"]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT)
        track_process(self.proc.pid, f"tortie-kube-controllers ({log.name})")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """(sample name, sorted labels) -> value, from its /metrics; {} while it is not up."""
        url = f"http://127.0.0.1:{self.health_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return {}
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def _probe(self, path: str) -> bool:
        try:
            url = f"http://127.0.0.1:{self.health_port}/{path}"
            with urllib.request.urlopen(url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:  # not serving, or an HTTP error status: not so
            return False

    def ready(self) -> bool:
        return self._probe("readiness")

    def live(self) -> bool:
        return self._probe("liveness")

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def two_nodes_with_addresses(client: EtcdClient) -> tuple[list[str], list[str]]:
    """tortie Nodes n1 and n2 (each with a `k8s` orchRef) holding addresses from one pool:
    (n2's two addresses, n1's one), for the tests that delete n2 from Kubernetes."""
    store = ResourceStore(client)
    store.create(parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                                 "metadata": {"name": "pool1"},
                                 "spec": {"cidr": "10.70.0.0/16", "blockSize": 26}}))
    for name in ("n1", "n2"):
        store.create(parse_document({
            "apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": name},
            "spec": {"orchRefs": [{"orchestrator": "k8s", "nodeName": name}]}}))
    allocator = Allocator(client)
    n2 = allocator.auto_assign("n2", "h-n2", 2, attrs={"node": "n2"})
    n1 = allocator.auto_assign("n1", "h-n1", 1, attrs={"node": "n1"})
    return n2, n1
