"""F15: orphans and migration (Calico k8st `ipip_graceful_upgrade_test.go`; Calico e2e
`bgp/route_reflector.go`, "should support graceful transition to route reflectors").

Both on a fault lab (tests/faults/conftest.py: 4 nodes on 2 subnets, the mesh, a pool
without encapsulation, so pods reach other nodes' pods only through BGP routes).

* Orphans: node3 claims an extra block (its kernel holds the block's blackhole, its
  peers a route to it via node3). node3's agent is stopped (SIGTERM: the kernel is
  left as it is, and its ExaBGP goes with it; the peers keep node3's routes as stale,
  graceful restart), the block and its affinity are released through IPAM as `ctl
  ipam release` or the IPAM GC would, and the agent is started again. Pass: the
  blackhole is gone from node3's kernel and the route from every peer's within 10 s
  of the agent being back (ready: in sync and its first apply done; start-up itself
  takes 1-8 s on a loaded machine). node3's peers drop it when node3's new ExaBGP, which no longer
  announces it, sends End-of-RIB (the stale sweep of RFC 4724).
* Migration: with probes running, node1 and node2 (one per subnet) become route
  reflectors of one cluster (label and routeReflectorClusterID), the BGPPeer
  `peer-with-route-reflectors` makes every node their client, then the mesh is turned
  off, in the order of Calico's documentation. Pass: no probe lost, and every node
  routes every same-subnet node's block. Then the reflectors' role is removed (the
  BGPPeer deleted, the cluster ids cleared, with the mesh still off): every block
  route must go and every probe pair must fail, as in Calico's e2e.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from lab import agents as lab_agents
from tests.e2e.bgp_lab import apply, established, extra_block, node_ip, routes
from tests.e2e.pods import ctl
from tests.e2e.test_bgp_peers import MESH_OFF, PEER_WITH_RRS
from tests.support import wait_until

from .conftest import NODES, FaultLab, lost_from
from .prober import Prober

pytestmark = [pytest.mark.slow, pytest.mark.root]

VICTIM = "node3"
ORPHAN_IP, ORPHAN_BLOCK = "10.244.250.1", "10.244.250.0/26"  # far from the pods' blocks
CLEAN_WITHIN = 10.0  # seconds after the agent is back (ready: in sync, first apply done)
REFLECTORS = ("node1", "node2")  # one per subnet
CLUSTER_ID = "244.0.0.1"


def routes_to(world: FaultLab, on: str, prefix: str) -> list[str]:
    """The lines of `on`'s main table for `prefix` (a blackhole's starts with its type)."""
    return [line for line in routes(world.lab, on).splitlines()
            if prefix in line.split()[:2]]


def test_a_block_released_while_its_agent_is_down_is_cleaned_from_every_kernel(bgp_fault_lab):
    world = bgp_fault_lab()
    lab = world.lab
    extra_block(lab, "claim", VICTIM, ORPHAN_IP, ORPHAN_BLOCK)
    wait_until(lambda: any(r.startswith("blackhole") for r in routes_to(world, VICTIM,
                                                                         ORPHAN_BLOCK)),
               what="node3's blackhole for its extra block")
    peers = [n for n in NODES if n != VICTIM]
    for peer in peers:
        wait_until(lambda peer=peer: routes_to(world, peer, ORPHAN_BLOCK),
                   what=f"{peer} to route node3's extra block")
    with Prober(world.pairs) as prober:
        pid = world.agent_pid(VICTIM)
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not any(p["pid"] == pid and p["alive"]
                                   for p in lab.status()["processes"]),
                   what="node3's agent to exit")
        extra_block(lab, "release", VICTIM, ORPHAN_IP, ORPHAN_BLOCK)
        kept = {n: bool(routes_to(world, n, ORPHAN_BLOCK)) for n in NODES}
        lab_agents.start_agent(lab, VICTIM, hold_time=world.hold_time)
        started = time.monotonic()
        lab_agents.wait_ready(lab, VICTIM, timeout=60)  # in sync, first apply done
        ready = time.monotonic()
        cleaned = {}
        for node in NODES:  # a generous bound, so that a slow run still prints its figures
            wait_until(lambda node=node: not routes_to(world, node, ORPHAN_BLOCK), timeout=60,
                       interval=0.05, what=f"{node}'s kernel without {ORPHAN_BLOCK}")
            cleaned[node] = time.monotonic() - ready
        for owner in NODES:  # the pods' blocks are all still routed
            for on in NODES:
                if on != owner:
                    wait_until(lambda on=on, owner=owner: world.block_route(on, owner),
                               what=f"{on} to route {owner}'s block")
        report = prober.stop()
    print(f"\nF15 orphan: {ORPHAN_BLOCK} released while node3's agent was down; still in "
          "the kernels then: " + ", ".join(f"{n} {'yes' if k else 'no'}" for n, k in kept.items()))
    print(f"F15 orphan: node3's agent ready {ready - started:.2f} s after it started; the "
          "block gone after it was ready: "
          + ", ".join(f"{n} {t:+.2f} s" for n, t in cleaned.items()))
    print(report.report())
    assert all(kept.values()), kept  # the fault was real: every kernel still had it
    assert max(cleaned.values()) <= CLEAN_WITHIN, cleaned
    assert lost_from(report, "node2", "node4") == 0, report.report()  # subnet 2: untouched


def rr_patch(cluster_id: str | None) -> str:
    labels = {"route-reflector": "true" if cluster_id else None}
    return json.dumps({"metadata": {"labels": labels},
                       "spec": {"bgp": {"routeReflectorClusterID": cluster_id or ""}}})


def sessions(world: FaultLab, node: str) -> dict[str, str]:
    """`node`'s established sessions: peer address -> peer type."""
    return {r[0]: r[1] for r in established(world.lab, node)}


def reflected(world: FaultLab) -> bool:
    """Every client has sessions with both reflectors only; the reflectors with each
    other and every client; every same-subnet block routed."""
    rr_ips = {node_ip(world.lab, n) for n in REFLECTORS}
    for n in NODES:
        want = ({node_ip(world.lab, o) for o in NODES} - {node_ip(world.lab, n)}
                if n in REFLECTORS else rr_ips)
        if set(sessions(world, n)) != want:
            return False
    return all(world.block_route(on, owner) for on, owner in same_subnet(world))


def same_subnet(world: FaultLab) -> list[tuple[str, str]]:
    subnet = {n.name: n.subnet for n in world.lab.nodes}
    return [(a, b) for a in NODES for b in NODES if a != b and subnet[a] == subnet[b]]


def test_mesh_to_route_reflectors_loses_nothing_and_removing_them_breaks_routes(bgp_fault_lab):
    world = bgp_fault_lab()
    lab = world.lab
    with Prober(world.pairs) as prober:
        for rr in REFLECTORS:
            ctl(lab, ["patch", "node", rr, "-p", rr_patch(CLUSTER_ID)])
        apply(lab, PEER_WITH_RRS)
        wait_until(lambda: all(len(sessions(world, n)) >= 2 for n in NODES),
                   what="every node in session with the reflectors")
        apply(lab, MESH_OFF)
        mesh_off = time.monotonic()
        wait_until(lambda: reflected(world), timeout=30,
                   what="clients peering only with the reflectors, every block routed")
        moved = time.monotonic() - mesh_off
        migration = prober.stop()
    print(f"\nF15 migration: mesh to 2 reflectors; sessions and routes settled {moved:.1f} s "
          "after the mesh was turned off")
    print(migration.report())
    assert migration.lost == 0, migration.report()

    with Prober(world.pairs) as prober:
        ctl(lab, ["delete", "bgppeer", "peer-with-route-reflectors"])
        removed = time.monotonic()
        for rr in REFLECTORS:
            ctl(lab, ["patch", "node", rr, "-p", rr_patch(None)])
        gone = {}
        for on, owner in same_subnet(world):
            wait_until(lambda on=on, owner=owner: world.block_route(on, owner) is None,
                       timeout=30, interval=0.05, what=f"{on} to lose {owner}'s block")
            gone[f"{on}->{owner}"] = time.monotonic() - removed
        # Until every pair has been seen failing for at least a second.
        wait_until(lambda: time.monotonic() - removed > max(gone.values()) + 1.0,
                   interval=0.1, what="a second of probes after the last route went")
        broken = prober.stop()
    print("F15 reflectors removed (mesh off): block routes gone, after the BGPPeer's deletion, "
          + ", ".join(f"{k} {t:.2f} s" for k, t in gone.items()))
    print(broken.report())
    assert all(p.lost > 0 for p in broken.pairs), broken.report()
    assert not any(sessions(world, n) for n in NODES)
