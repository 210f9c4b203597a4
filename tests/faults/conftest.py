"""Fixtures of the fault suite: a BGP lab with pods serving probes, and the pairs to probe.

`bgp_fault_lab(restart_time=..., hold_time=...)` brings up a lab of 4 nodes on 2
subnets (node1 and node3 on subnet 1, node2 and node4 on subnet 2), the
node-to-node mesh on a pool without encapsulation (so pods reach pods on other
nodes only through routes learned over BGP), real agents with real ExaBGP, one pod
per node running lab/probe.py's server, and the probe pairs: the two pods of each
subnet, both ways. Every lab is torn down after the test.

Why no pair crosses the subnets: a pool without encapsulation routes blocks as
`via <node> dev eth0 onlink`, which only reaches a node on the same link; the
encapsulation that carries BGP routes across subnets is IPIP, and this kernel has no
`ipip` (VXLAN pools are routed from the datastore, so BGP faults do not touch them).
Cross-subnet sessions still run (the mesh spans both subnets), so every node's kernel
is a peer whose routes the scenarios watch.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import Lab
from lab import agents as lab_agents
from lab import probe as lab_probe
from tests.e2e.bgp_lab import NO_ENCAP_POOL, apply, block_of, node_ip, routes, speaker_pid
from tests.e2e.conftest import TOOLS
from tests.e2e.pods import Pod, add_pod
from tests.support import keep_lab, need, record_lab, unique_name, wait_until

from .prober import PROBE_PORT, Pair, ProbeReport

NODES = ("node1", "node2", "node3", "node4")


@dataclass
class FaultLab:
    lab: Lab
    pods: dict[str, Pod]  # node name -> its pod
    pairs: list[Pair]
    hold_time: int

    def block(self, node: str) -> str:
        """The /26 block of `node`'s pod."""
        return block_of(self.pods[node].ip)

    def block_route(self, on: str, owner: str) -> str | None:
        """The kernel route on node `on` to `owner`'s block via `owner`, if any (its line)."""
        head = f"{self.block(owner)} via {node_ip(self.lab, owner)} dev eth0 proto 80"
        return next((line for line in routes(self.lab, on).splitlines()
                     if line.startswith(head)), None)

    def has_route_to(self, on: str, prefix: str) -> bool:
        return any(line.split()[0] == prefix for line in routes(self.lab, on).splitlines()
                   if line.strip())

    def speaker(self, node: str) -> int:
        return wait_until(lambda: speaker_pid(self.lab, node), what=f"{node}'s ExaBGP")

    def agent_pid(self, node: str) -> int:
        procs = [p for p in self.lab.status()["processes"]
                 if p["name"] == f"agent-{node}" and p["alive"]]
        return int(procs[-1]["pid"])

    def agent_log(self, node: str) -> str:
        return (Path(self.lab.state_dir) / f"agent-{node}.log").read_text()


def print_withdrawal(title: str, gone: dict[str, float], after: str,
                     report: ProbeReport) -> None:
    """A scenario's figures: when each peer withdrew node3's block, then the probes."""
    print(f"\n{title}: node3's block withdrawn "
          + ", ".join(f"{p} {t:.2f} s" for p, t in gone.items()) + f" after {after}")
    print(report.report())


def lost_from(report: ProbeReport, *nodes: str) -> int:
    """Probes lost on the pairs whose source pod is on one of `nodes`."""
    return sum(p.lost for p in report.pairs if p.label.split("/")[0] in nodes)


def serve_probes(lab: Lab, pods: Iterable[Pod]) -> None:
    """Start lab/probe.py's server in each pod (recorded: the lab's teardown stops it)."""
    for pod in pods:
        lab.start_process(pod.netns, [sys.executable, "-I", "-S", lab_probe.__file__,
                                      "serve", pod.name, str(PROBE_PORT)],
                          role="probe-server", name=f"probe-{pod.name}")


def _mesh_config(restart_time: int | None) -> str:
    spec = f"{{nodeMeshMaxRestartTime: {restart_time}s}}" if restart_time else "{}"
    return ("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\n"
            f"metadata: {{name: default}}\nspec: {spec}\n")


def _pairs(lab: Lab, pods: dict[str, Pod]) -> list[Pair]:
    same_subnet = [(a, b) for a in NODES for b in NODES
                   if a != b and lab.nodes[NODES.index(a)].subnet ==
                   lab.nodes[NODES.index(b)].subnet]
    return [Pair(f"{a}/{pods[a].name} -> {b}/{pods[b].name}", pods[a].netns, pods[b].ip,
                 pods[b].name) for a, b in same_subnet]


@pytest.fixture
def bgp_fault_lab() -> Iterator[Callable[..., FaultLab]]:
    """Factory: bgp_fault_lab(restart_time=None, hold_time=9) -> a FaultLab that is up
    and fully routed (see the module docstring); each is torn down after the test."""
    need(*TOOLS, root=True, root_for="the lab creates network namespaces")
    labs: list[Lab] = []

    def make(restart_time: int | None = None, hold_time: int = 9) -> FaultLab:
        lab = Lab(record_lab(unique_name()), nodes=len(NODES), subnets=2)
        labs.append(lab)
        lab.up()
        apply(lab, NO_ENCAP_POOL + "---\n" + _mesh_config(restart_time))
        for n in NODES:
            lab_agents.start_agent(lab, n, hold_time=hold_time)
        for n in NODES:
            lab_agents.wait_ready(lab, n)
        pods = {n: add_pod(lab, n, f"pod{n[-1]}") for n in NODES}
        serve_probes(lab, pods.values())
        world = FaultLab(lab, pods, _pairs(lab, pods), hold_time)
        for pair in world.pairs:
            wait_until(lambda pair=pair: lab_probe.probe(
                pair.ip, PROBE_PORT, "TCP", netns=pair.netns).detail == pair.name,
                timeout=60, what=f"probe {pair.label} answered (routes learned over BGP)")
        for on in NODES:
            for owner in NODES:
                if on != owner:
                    wait_until(lambda on=on, owner=owner: world.block_route(on, owner),
                               what=f"{on} to route {owner}'s block")
        return world

    yield make
    for lab in labs:
        if not keep_lab(lab):
            lab.down()
