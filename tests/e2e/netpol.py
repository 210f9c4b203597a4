"""The upstream Kubernetes network-policy test model, in the lab: the conformance harness.

The model is kubernetes/kubernetes test/e2e/network/netpol (model.go, reachability.go,
truthtable.go), with its names:

  * namespaces x, y, z, labelled `ns: <name>` (and `kubernetes.io/metadata.name:
    <name>`, which the Kubernetes control plane adds to every namespace), applied as
    `v1` Namespaces (so their Profiles `kns.<name>` allow everything and carry the
    labels, as calico-kube-controllers writes them);
  * pods a, b, c in each, labelled `pod: <name>`, dealt round-robin over the lab's
    nodes (so over both subnets), each serving TCP and UDP on ports 80 and 81
    (lab/probe.py, answering with `<ns>/<pod>`) with upstream's named ports
    `serve-<port>-<proto>`, and answering SCTP INITs on them (raw sockets: this
    kernel has no SCTP sockets, lab/probe.py);
  * a Reachability: the expected verdict of every ordered pod pair, all allowed to
    start with, then `expect`, `expect_all_ingress`, `expect_all_egress`, later calls
    winning;
  * a check probes every ordered pair (one port and protocol, or several at once) in
    parallel with a 1 s budget per probe, loopback (a pod to itself) ignored as
    upstream does, and retries until the observation matches or the time for
    convergence is up; then it fails with the truth tables: rows are the source
    (from), columns the destination (to), `.` allowed, `X` denied, `-` loopback (not
    probed); the comparison table marks each differing cell with `X`.

A probe counts as allowed only if the answer names the pod probed, so a packet
delivered to the wrong pod is a failure too. Cases (issue 15) build on `NetpolLab`:
apply policies with `ctl`, change labels with `label_pod`, then `check`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from cni.config import NamedPort
from lab import Lab
from lab import agents as lab_agents
from lab import pods as lab_pods
from lab import probe as lab_probe
from lab.probe import Outcome, Probe
from tests.netpol_cases import Reachability, compare
from tests.support import wait_until

from .pods import ctl

NAMESPACES = ("x", "y", "z")
POD_NAMES = ("a", "b", "c")
PORTS = (80, 81)
PROTOCOLS = ("TCP", "UDP")
CONVERGENCE = 15.0  # seconds a check keeps probing before it reports a mismatch
POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: netpol}
spec: {cidr: 10.247.0.0/16, blockSize: 26, vxlanMode: Always}
"""


@dataclass(frozen=True)
class ModelPod:
    namespace: str
    name: str
    node: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def labels(self) -> dict[str, str]:
        return {"pod": self.name}

    @property
    def named_ports(self) -> list[NamedPort]:
        return [NamedPort(f"serve-{port}-{proto.lower()}", proto.lower(), port)
                for port in PORTS for proto in PROTOCOLS]


@dataclass
class Model:
    """Who exists where: namespaces with their labels, pods with theirs and their nodes."""

    nodes: Sequence[str]
    pods: list[ModelPod] = field(init=False)

    def __post_init__(self) -> None:
        names = [(ns, pod) for ns in NAMESPACES for pod in POD_NAMES]
        self.pods = [ModelPod(ns, pod, self.nodes[i % len(self.nodes)])
                     for i, (ns, pod) in enumerate(names)]

    @property
    def namespace_labels(self) -> dict[str, dict[str, str]]:
        return {ns: {"ns": ns, "kubernetes.io/metadata.name": ns} for ns in NAMESPACES}

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.pods]


@dataclass
class NetpolLab:
    """A lab holding the model: pods wired by the CNI plugin, serving, probed from inside."""

    lab: Lab
    model: Model
    ips: dict[str, str] = field(default_factory=dict)      # key -> pod IP
    netns: dict[str, str] = field(default_factory=dict)    # key -> pod namespace

    def observe(self, combos: Sequence[tuple[int, str]],
                ) -> dict[tuple[int, str], dict[tuple[str, str], Outcome]]:
        """Probe every ordered pair (not loopback) on each (port, protocol), all at once."""
        pairs = [(a, b) for a in self.model.keys for b in self.model.keys if a != b]
        probes = [Probe(self.netns[a], self.ips[b], port, proto)
                  for port, proto in combos for a, b in pairs]
        outcomes = iter(lab_probe.probe_all(probes, workers=128))
        return {combo: {pair: next(outcomes) for pair in pairs} for combo in combos}

    def check(self, expected: Reachability, ports: Iterable[int] = PORTS,
              protocols: Iterable[str] = PROTOCOLS, timeout: float = CONVERGENCE) -> None:
        """Probe until every combination matches `expected`; fail with the tables if not."""
        combos = [(port, proto) for port in ports for proto in protocols]
        deadline = time.monotonic() + timeout
        while True:
            report = []
            for (port, proto), outcomes in self.observe(combos).items():
                observed = {pair: o.connected and o.detail == pair[1]
                            for pair, o in outcomes.items()}
                wrong, tables = compare(self.model.keys, expected, observed)
                if wrong:
                    odd = sorted(f"{a} -> {b}: {o.detail}" for (a, b), o in outcomes.items()
                                 if observed[(a, b)] != expected[(a, b)])
                    report.append(f"{proto}/{port}:\n{tables}\n" + "\n".join(odd[:10]))
            if not report or time.monotonic() > deadline:
                break
        assert not report, "reachability differs from the expectation\n\n" + "\n\n".join(report)

    def label_pod(self, key: str, labels: Mapping[str, str], remove: Sequence[str] = ()) -> None:
        namespace, name = key.split("/")
        lab_pods.label_pod(self.lab, namespace, name, labels, remove)


def _start_node(lab: Lab, node: str, policy_setup_timeout: int) -> None:
    lab_agents.start_agent(lab, node, backend="vxlan")
    lab_pods.install_cni(lab, node, policy_setup_timeout=policy_setup_timeout)
    lab_pods.start_cni_server(lab, node)


@contextmanager
def policy_lab(nodes: int = 3, *, policy_setup_timeout: int = 0) -> Iterator[Lab]:
    """A lab for policy: nodes on 2 subnets, the pool, every node's agent, CNI and CNI
    server up (with a timeout, ADD waits for the agent: lab.pods.install_cni)."""
    from .conftest import up_lab

    with up_lab(nodes=nodes, subnets=2) as lab:
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        for n in lab.nodes:
            _start_node(lab, n.name, policy_setup_timeout)
        for n in lab.nodes:
            lab_agents.wait_ready(lab, n.name)
        yield lab


@contextmanager
def netpol_lab(nodes: int = 3) -> Iterator[NetpolLab]:
    """A lab with the model up: nodes on 2 subnets, agents, the CNI, 9 pods serving."""
    with policy_lab(nodes) as lab:
        model = Model([n.name for n in lab.nodes])
        world = NetpolLab(lab, model)
        ctl(lab, ["apply", "-f", "-"], stdin="\n---\n".join(
            json.dumps({"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": ns, "labels": labels}})
            for ns, labels in model.namespace_labels.items()))

        def add(pod: ModelPod) -> None:
            info = lab_pods.add_pod(lab, pod.node, pod.namespace, pod.name, labels=pod.labels,
                                    named_ports=pod.named_ports)
            world.ips[pod.key], world.netns[pod.key] = info.ip, info.netns
            lab.start_process(info.netns, [sys.executable, "-I", "-S", lab_probe.__file__,
                                           "serve", pod.key, *map(str, PORTS)],
                              role="probe-server", name=f"probe-{pod.namespace}-{pod.name}")

        # One pod per node at a time: each node's CNI server serialises its own anyway.
        with ThreadPoolExecutor(max_workers=len(lab.nodes)) as pool:
            list(pool.map(add, model.pods))
        wait_until(lambda: all(o.connected for o in lab_probe.probe_all(
            [Probe(world.netns[k], "127.0.0.1", port, "TCP")
             for k in model.keys for port in PORTS])), timeout=20, what="probe servers")
        yield world
