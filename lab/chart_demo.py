"""`tortie-lab demo --chart`: the README's demo, deployed by the Helm chart under podman.

Steps, each printed as it runs: lab up; the image (built only when absent); the chart
rendered per node and each node's pod played with podman in the node's namespace
(install-cni first, then the agent, the BGP sidecar and the CNI server); readiness by
the chart's probes; BGP sessions Established on every node, with a TCP-MD5 mesh password
from a Secret the lab gives the chart (as `kubectl create secret` would) that reaches
the BGP sidecar as a secret volume; 2 pods per node made through
the conflist and plugins install-cni put in the node's host paths (tortie, then
portmap and bandwidth, by the lab's libcni-like runtime); a full ping matrix. Then a
rolling update: the values change (the agent's log level), and node by node the pod is
replaced and waited for while every pod on the other nodes pings every other at 10 per
second; each step prints its probes sent and lost, and the new pod's environment is
checked for the new value.

`run_chart_demo` returns what it measured (`ChartDemo`) for tests/e2e/test_chart_lab.py.
Owns nothing lasting: the lab (and with it the pods, secrets and volumes in podman's
storage) is torn down at the end and on any failure, unless `keep` is set.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
import yaml

from lab import chart, netns, pods
from lab.chart_pods import NodePod
from lab.cluster import Lab
from lab.demo import EXAMPLE_POOL, PODS_PER_NODE, ping_matrix, sessions_up, show_ctl, step
from lab.errors import LabError
from lab.procs import default_sigint

PROBE_INTERVAL = 0.1  # 10 probes a second per pair
SETTLE = 2.0  # seconds of probing after a replaced pod is ready, before counting
MESH_SECRET = "bgp-mesh"  # the Secret holding the node-to-node mesh's TCP-MD5 password
_PING_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class Replacement:
    """One node's step of the rolling update and what the other nodes' pods saw meanwhile."""

    node: str
    seconds: float  # from stopping the old pod to the new one ready
    stop_seconds: float  # of which: the old pod stopped and removed
    ready_seconds: float  # of which: from `kube play` returning to ready
    pairs: int
    sent: int
    received: int

    @property
    def lost(self) -> int:
        return self.sent - self.received


@dataclass
class ChartDemo:
    image: str = ""
    deploy_seconds: float = 0.0  # render + play on every node until all are ready
    ready_seconds: dict[str, float] = field(default_factory=dict)
    sessions_established: bool = False
    mesh_password_in_pod: dict[str, bool] = field(default_factory=dict)  # node -> seen
    md5_sessions: dict[str, bool] = field(default_factory=dict)  # node -> ExaBGP uses it
    matrix_ok: int = 0
    matrix_total: int = 0
    pods: list[pods.PodInfo] = field(default_factory=list)
    replacements: list[Replacement] = field(default_factory=list)
    new_values_seen: dict[str, str] = field(default_factory=dict)  # node -> the agent's level
    matrix_after_ok: int = 0
    new_log_severity: str = ""

    def shortfalls(self) -> list[str]:
        """What the run did not prove, one line each; [] when it proved everything."""
        out = []
        if not self.sessions_established:
            out.append("BGP sessions not all Established")
        out += [f"{n}: mesh password not read from the Secret"
                for n, ok in self.mesh_password_in_pod.items() if not ok]
        out += [f"{n}: ExaBGP not using the mesh password" for n, ok in self.md5_sessions.items()
                if not ok]
        if self.matrix_ok != self.matrix_total or not self.matrix_total:
            out.append(f"ping matrix {self.matrix_ok}/{self.matrix_total}")
        out += [f"{r.node}: {r.lost} of {r.sent} probes lost during its replacement"
                for r in self.replacements if r.lost or not r.sent]
        out += [f"{n}: agent runs with log level {v!r}, not {self.new_log_severity!r}"
                for n, v in self.new_values_seen.items() if v != self.new_log_severity]
        if self.matrix_after_ok != self.matrix_total:
            out.append(f"ping matrix after the update {self.matrix_after_ok}/{self.matrix_total}")
        return out


def demo_values(log_severity: str = "Info") -> dict[str, Any]:
    """The chart values the demo sets on every node: BGP over ExaBGP with the mesh password
    from Secret MESH_SECRET, the demo's pool as a start-up resource, the agent's log
    level. Pure."""
    pool = yaml.safe_load(EXAMPLE_POOL)
    return {
        "backend": "bird",
        "defaultIPv4Pool": {"disabled": True},
        "ipPools": [{"name": pool["metadata"]["name"], "spec": pool["spec"]}],
        "bgpConfiguration": {"nodeToNodeMeshEnabled": True, "nodeMeshPassword": {
            "secretKeyRef": {"name": MESH_SECRET, "key": "password"}}},
        "bgpPasswordSecrets": [MESH_SECRET],
        "node": {"logSeverity": log_severity},
    }


def mesh_secret(password: str) -> dict[str, Any]:
    """The Secret an operator would create for the mesh password (kubectl create secret
    generic bgp-mesh --from-literal=password=...). Pure."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": MESH_SECRET, "namespace": chart.NAMESPACE},
            "stringData": {"password": password}}


def check_mesh_password(lab: Lab, node: str, password: str) -> tuple[bool, bool]:
    """(the BGP sidecar reads `password` from its secret volume, ExaBGP's configuration
    sets it on the sessions)."""
    path = f"/etc/tortie/bgp-secrets/{MESH_SECRET}/password"
    seen = chart.podman_for(lab, node).run("exec", f"{chart.pod_name(lab, node)}-tortie-bgp",
                                           "cat", path, check=False).stdout
    configs = list(chart.host_path(lab, node, "varRunTortie").glob("bgp/*/exabgp.conf"))
    md5 = bool(configs) and all("md5-password" in c.read_text() for c in configs)
    return seen == password, md5


class Prober:
    """`ping -i 0.1` from each pod to each other one, one process per ordered pair, until
    stop(); then the counts from ping's own summary."""

    def __init__(self, targets: Sequence[pods.PodInfo]) -> None:
        self.pairs = [(a, b) for a in targets for b in targets if a is not b]
        self._procs: list[subprocess.Popen[str]] = []

    def start(self) -> None:
        for a, b in self.pairs:
            self._procs.append(subprocess.Popen(
                netns.exec_argv(a.netns, ["ping", "-n", "-q", "-i", str(PROBE_INTERVAL),
                                          "-W", "1", b.ip]),
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                preexec_fn=default_sigint))

    def stop(self) -> tuple[int, int]:
        """SIGINT every ping (it prints its summary then) -> (sent, received) summed."""
        sent = received = 0
        for proc in self._procs:
            proc.send_signal(signal.SIGINT)
        for proc, (a, b) in zip(self._procs, self.pairs, strict=True):
            out, _ = proc.communicate(timeout=10)
            found = _PING_SUMMARY.search(out)
            if not found:
                raise LabError(f"ping {a.name} -> {b.name} printed no summary: {out.strip()}")
            sent += int(found.group(1))
            received += int(found.group(2))
        self._procs = []
        return sent, received


def deploy(lab: Lab, values: Mapping[str, Any], helm: str, image: str, result: ChartDemo,
           extra_objects: Sequence[Mapping[str, Any]] = ()) -> dict[str, NodePod]:
    """Render and play every node's pod, then wait until all are ready."""
    lab_chart = chart.LabChart(image, values)
    started = time.monotonic()
    node_pods = {}
    for n in lab.nodes:
        node_pods[n.name] = chart.render_node(lab, n.name, lab_chart, helm, extra_objects)
        chart.play(lab, n.name, node_pods[n.name])
        click.echo(f"    {n.name}: pod {node_pods[n.name].name} played "
                   f"({', '.join(c.rsplit('-', 1)[-1] for c in node_pods[n.name].container_names())})")
    for n in lab.nodes:
        result.ready_seconds[n.name] = chart.wait_ready(lab, n.name, node_pods[n.name])
        click.echo(f"    {n.name}: ready ({time.monotonic() - started:.1f}s since the first play)")
    result.deploy_seconds = time.monotonic() - started
    return node_pods


def rolling_update(lab: Lab, values: Mapping[str, Any], helm: str, image: str,
                   all_pods: Sequence[pods.PodInfo], result: ChartDemo,
                   extra_objects: Sequence[Mapping[str, Any]] = ()) -> None:
    """Node by node: re-render with `values`, replace the pod, wait until ready, while the
    pods of the other nodes probe each other."""
    lab_chart = chart.LabChart(image, values)
    for n in lab.nodes:
        others = [p for p in all_pods if p.node != n.name]
        node_pod = chart.render_node(lab, n.name, lab_chart, helm, extra_objects)
        prober = Prober(others)
        prober.start()
        started = time.monotonic()
        chart.remove_node_pod(lab, n.name)
        stopped = time.monotonic() - started
        chart.play(lab, n.name, node_pod)
        ready = chart.wait_ready(lab, n.name, node_pod)
        seconds = time.monotonic() - started
        time.sleep(SETTLE)  # the new pod's first seconds count too
        sent, received = prober.stop()
        step_result = Replacement(n.name, seconds, stopped, ready, len(prober.pairs), sent,
                                  received)
        result.replacements.append(step_result)
        level = chart.running_env(lab, n.name, "tortie-node").get("FELIX_LOGSEVERITYSCREEN", "")
        result.new_values_seen[n.name] = level
        click.echo(f"    {n.name}: replaced in {seconds:.1f}s (stop {stopped:.1f}s, ready "
                   f"{ready:.1f}s after play); agent runs with "
                   f"FELIX_LOGSEVERITYSCREEN={level}; probes between the other nodes' "
                   f"{len(others)} pods ({step_result.pairs} pairs at 10/s): "
                   f"{sent} sent, {step_result.lost} lost")


def run_chart_demo(name: str, nodes: int = 3, subnets: int = 2, keep: bool = False,
                   new_log_severity: str = "Debug") -> ChartDemo:
    from lab.image import ensure_image

    result = ChartDemo(new_log_severity=new_log_severity)
    lab = Lab(name, nodes=nodes, subnets=subnets)
    step(f"bringing up lab '{name}': {nodes} nodes across {subnets} subnets, etcd in its own "
         "namespace")
    try:
        lab.up()
        click.echo(f"    etcd at {', '.join(lab.etcd_endpoints)}")
        step("the image (built only when absent; python -m lab.image)")
        started = time.monotonic()
        result.image = ensure_image()
        click.echo(f"    {result.image} ({time.monotonic() - started:.1f}s)")
        helm = chart.helm_binary()
        step(f"rendering the chart per node ({helm} template) and playing each node's pod "
             "with podman kube play in the node's namespace")
        extra = [mesh_secret(secrets.token_hex(12))]
        password = extra[0]["stringData"]["password"]
        node_pods = deploy(lab, demo_values(), helm, result.image, result, extra)
        click.echo(f"    all {len(node_pods)} pods ready {result.deploy_seconds:.1f}s after "
                   "the first render")
        step("waiting for the BGP sessions")
        deadline = time.monotonic() + 60
        while not all(sessions_up(lab, n.name, len(lab.nodes) - 1) for n in lab.nodes):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        else:
            result.sessions_established = True
        show_ctl(lab, ["node", "status"])
        for n in lab.nodes:
            seen, md5 = check_mesh_password(lab, n.name, password)
            result.mesh_password_in_pod[n.name], result.md5_sessions[n.name] = seen, md5
            click.echo(f"    {n.name}: mesh password from Secret {MESH_SECRET} "
                       f"{'read' if seen else 'NOT read'} by the BGP sidecar, "
                       f"{'set' if md5 else 'NOT set'} on its sessions (TCP-MD5)")
        step(f"creating {PODS_PER_NODE} pods per node through the conflist and plugins "
             "install-cni wrote")
        for n in lab.nodes:
            conflist = chart.conflist_path(lab, n.name)
            pods.use_installed_cni(lab, n.name, conflist,
                                   [chart.host_path(lab, n.name, "cniBinDir")])
            chain = [p["type"] for p in yaml.safe_load(conflist.read_text())["plugins"]]
            click.echo(f"    {n.name}: {conflist} chains {' -> '.join(chain)}")
            for i in range(1, PODS_PER_NODE + 1):
                pod = pods.add_pod(lab, n.name, "default", f"{n.name}-pod{i}")
                click.echo(f"    {pod.namespace}/{pod.name:<12} {pod.ip:<14} on {pod.node} "
                           f"({pod.iface})")
                result.pods.append(pod)
        step(f"ping matrix between all {len(result.pods)} pods")
        result.matrix_ok, result.matrix_total = ping_matrix(result.pods)
        click.echo(f"ping matrix: {result.matrix_ok}/{result.matrix_total} ok")
        step(f"rolling update: node.logSeverity Info -> {new_log_severity}, one node at a "
             "time, the other nodes' pods probing each other at 10/s")
        rolling_update(lab, demo_values(new_log_severity), helm, result.image, result.pods,
                       result, extra)
        lost = sum(r.lost for r in result.replacements)
        sent = sum(r.sent for r in result.replacements)
        click.echo(f"rolling update: {sent} probes, {lost} lost")
        step("ping matrix after the update")
        result.matrix_after_ok, total = ping_matrix(result.pods)
        click.echo(f"ping matrix: {result.matrix_after_ok}/{total} ok")
        if keep:
            step(f"lab '{name}' left running: podman's view: python -m lab.podman ps; "
                 f"tortie-lab down --name {name}")
            return result
    except BaseException:
        if not keep:
            lab.down()
        raise
    step(f"tearing down lab '{name}' (use --keep to leave it running)")
    lab.down()
    return result
