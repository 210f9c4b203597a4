"""A BGP-routed cluster on a lab: the pool, the BGP topology, and an agent on every node.

Owns the datastore objects that make a lab's nodes route each other's pod blocks
over BGP, and the order they are written in. Invariants:

- The pool has no encapsulation, so a pod reaches a pod on another node only
  through the route its node learned over BGP (`<block> via <node> dev eth0
  proto 80 onlink`). Such a next hop is only reachable on the same link: pods
  on different subnets of the lab do not reach each other (the kernel here has
  no IPIP), so a lab meant for pod traffic between all nodes has one subnet.
- With route reflectors the node-to-node mesh is off and the BGPPeer
  "every node peers with the reflectors" exists before any agent starts, so no
  session ever starts outside that topology. The first `route_reflectors` nodes
  become reflectors (label `route-reflector: "true"`, one shared
  routeReflectorClusterID) as soon as their agents have registered their Nodes
  (a merge patch keeps what the agent wrote), before any other agent starts.
- Agents are lab processes (lab.agents), so `lab.down()` stops them and their ExaBGP.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from lab import agents as lab_agents
from lab.cluster import Lab
from lab.errors import CommandFailed
from lab.topology import PlanError

BIN = Path(sys.executable).parent

POOL_CIDR = "10.244.0.0/16"
NO_ENCAP_POOL = f"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: pods}}
spec: {{cidr: {POOL_CIDR}, blockSize: 26, ipipMode: Never, vxlanMode: Never}}
"""
MESH_OFF = """apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata: {name: default}
spec: {nodeToNodeMeshEnabled: false}
"""
PEER_WITH_REFLECTORS = """apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: peer-with-route-reflectors}
spec:
  nodeSelector: all()
  peerSelector: route-reflector == 'true'
"""
REFLECTOR_CLUSTER_ID = "244.0.0.1"
REFLECTOR_PATCH = json.dumps({"metadata": {"labels": {"route-reflector": "true"}},
                              "spec": {"bgp": {"routeReflectorClusterID": REFLECTOR_CLUSTER_ID}}})


def ctl(lab: Lab, args: list[str], stdin: str | None = None) -> str:
    """Run the venv's `ctl` in node1's namespace against the lab's etcd; its stdout."""
    res = lab.exec("node1", [str(BIN / "ctl"), *args], input=stdin,
                   env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})
    return str(res.stdout)


def manifests(route_reflectors: int) -> str:
    """The objects written before any agent starts (pure)."""
    if route_reflectors == 0:
        return NO_ENCAP_POOL
    return "---\n".join((NO_ENCAP_POOL, MESH_OFF, PEER_WITH_REFLECTORS))


def check_reflectors(lab: Lab, route_reflectors: int) -> None:
    if not 0 <= route_reflectors <= len(lab.nodes):
        raise PlanError(f"route_reflectors={route_reflectors}: use 0 (full mesh) to "
                        f"{len(lab.nodes)} (the lab's nodes)")


def start_bgp_cluster(lab: Lab, route_reflectors: int = 0, *, wave: int = 10,
                      ready_timeout: float = 120.0) -> list[str]:
    """Write the pool and BGP topology, start the agents, make the first
    `route_reflectors` nodes reflectors, and wait until every agent is ready.

    The reflectors start first (so clients find them), then the other nodes `wave`
    at a time, each wave ready before the next starts: 50 Python agents starting in
    the same second on two cores starve etcd and each other for minutes (a `ctl`
    call then times out connecting), which says nothing about the agents.
    Returns the reflectors' node names. PlanError (nothing written) for a bad count.
    """
    check_reflectors(lab, route_reflectors)
    if wave < 1:
        raise PlanError(f"wave={wave}: start at least 1 agent at a time")
    ctl(lab, ["apply", "-f", "-"], stdin=manifests(route_reflectors))
    reflectors = [n.name for n in lab.nodes[:route_reflectors]]
    clients = [n.name for n in lab.nodes[route_reflectors:]]
    for name in reflectors:
        lab_agents.start_agent(lab, name)
    for name in reflectors:
        # A reflector's Node must exist before it can be patched: its agent writes it
        # on start, and it is ready only after that write.
        lab_agents.wait_ready(lab, name, ready_timeout)
        _patch_with_retries(lab, name)
    for first in range(0, len(clients), wave):
        batch = clients[first:first + wave]
        for name in batch:
            lab_agents.start_agent(lab, name)
        for name in batch:
            lab_agents.wait_ready(lab, name, ready_timeout)
    return reflectors


def _patch_with_retries(lab: Lab, node: str, attempts: int = 3) -> None:
    # On a starved machine a fresh `ctl` can time out connecting to etcd; the patch is
    # idempotent, so it is simply made again.
    for attempt in range(1, attempts + 1):
        try:
            ctl(lab, ["patch", "node", node, "-p", REFLECTOR_PATCH])
            return
        except CommandFailed:
            if attempt == attempts:
                raise
            time.sleep(2 * attempt)
