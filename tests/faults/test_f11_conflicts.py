"""F11: conflicting identities (calico-node's start-up check; Felix FV `routes_test.go`).

One lab of 3 nodes on one subnet, the node-to-node mesh, real agents with real ExaBGP;
node1 and node2 are started with the same CALICO_ROUTER_ID. Three scenarios:

* a second node with node1's IP: `tortie-agent` for a new node name with IP=<node1's
  address> exits 1 with calico-node's message, "Calico node 'node1' is already using
  the IPv4 address <ip>.", and writes nothing (no Node of that name appears);
* two workload endpoints with the same IP on node1 (two real pods; the second's
  WorkloadEndpoint is rewritten to carry the first one's address): node1's kernel has
  one /32 route for it, to the winner's interface. The rule (agent/calc/routes.py):
  of two routes of one class, the smaller `ip route` form wins, so the interface with
  the smaller name, whatever order the endpoints came in. Deleting the winner moves
  the route to the survivor; bringing the winner back moves it back;
* two nodes with the same router id: their session is refused (ExaBGP sends Bad BGP
  Identifier, 2/3), both agents log the conflict naming both nodes and the id, `ctl node
  status` shows the refusal in INFO, and node3's sessions with both are established.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab import agents as lab_agents
from tests.e2e.bgp_lab import NO_ENCAP_POOL, apply, established, node_ip, node_status, table_rows
from tests.e2e.conftest import TOOLS
from tests.e2e.pods import Pod, add_pod, ctl
from tests.support import keep_lab, need, record_lab, unique_name, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]

NODES = ("node1", "node2", "node3")
SHARED_ROUTER_ID = "10.99.0.1"  # node1 and node2 (CALICO_ROUTER_ID)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    need(*TOOLS, root=True, root_for="the lab creates network namespaces")
    lab = Lab(record_lab(unique_name()), nodes=len(NODES), subnets=1)
    try:
        lab.up()
        apply(lab, NO_ENCAP_POOL)
        for n in NODES:
            extra = {"CALICO_ROUTER_ID": SHARED_ROUTER_ID} if n != "node3" else {}
            lab_agents.start_agent(lab, n, **extra)
        for n in NODES:
            lab_agents.wait_ready(lab, n)
        yield lab
    finally:
        if not keep_lab(lab):
            lab.down()


def agent_log(lab: Lab, node: str) -> str:
    return (Path(lab.state_dir) / f"agent-{node}.log").read_text()


def test_a_second_node_with_the_same_ip_refuses_to_start(lab):
    taken = node_ip(lab, "node1")
    name = f"f11dup-{lab.name}"[:40]
    started = time.monotonic()
    res = lab.exec("node2", [str(lab_agents.BIN / "tortie-agent")], check=False, timeout=60,
                   env=lab_agents.agent_env(lab, name, IP=taken,
                                            FELIX_HEALTHENABLED="false"))
    took = time.monotonic() - started
    print(f"\nF11 duplicate node IP: exit {res.returncode} after {took:.1f} s; "
          f"last line: {res.stderr.strip().splitlines()[-1]}")
    assert res.returncode == 1, res.stderr
    assert f"Calico node 'node1' is already using the IPv4 address {taken}." in res.stderr
    assert "start-up failed" in res.stderr
    nodes = json.loads(ctl(lab, ["get", "nodes", "-o", "json"]))
    names = {n["metadata"]["name"] for n in nodes.get("items", [nodes])}
    assert name not in names and "node1" in names  # nothing written


def _wep(lab: Lab, pod: Pod) -> dict:
    weps = json.loads(ctl(lab, ["get", "workloadendpoints", "-n", "default", "-o", "json"]))
    return next(w for w in weps["items"] if w["spec"]["pod"] == pod.name)


def _route_dev(lab: Lab, ip: str) -> str | None:
    """The `cali*` device of node1's route to ip/32, or None; fails if there are two."""
    lines = lab.exec("node1", ["ip", "route", "show", "exact", f"{ip}/32"]).stdout
    devs = [dev for line in lines.splitlines() if " dev " in f" {line}"
            for dev in [f" {line}".split(" dev ")[1].split()[0]] if dev.startswith("cali")]
    assert len(devs) <= 1, lines
    return devs[0] if devs else None


def _strip(wep: dict) -> dict:
    """A WorkloadEndpoint as a manifest to apply again (no revision, uid or timestamps)."""
    meta = {k: v for k, v in wep["metadata"].items()
            if k in ("name", "namespace", "labels", "annotations")}
    return {"apiVersion": "projectcalico.org/v3", "kind": "WorkloadEndpoint", "metadata": meta,
            "spec": wep["spec"]}


def test_two_endpoints_with_one_ip_have_a_deterministic_winner_the_route_follows(lab):
    a, b = add_pod(lab, "node1", "f11a"), add_pod(lab, "node1", "f11b")
    wait_until(lambda: _route_dev(lab, a.ip) == a.iface, what=f"node1 to route {a.ip}")
    winner, loser = sorted((a, b), key=lambda p: p.iface)
    # b's endpoint now claims a's address too (as a stale or duplicated endpoint would).
    wep_b = _strip(_wep(lab, b))
    wep_b["spec"]["ipNetworks"] = [f"{a.ip}/32"]
    started = time.monotonic()
    apply(lab, json.dumps(wep_b))
    wait_until(lambda: _route_dev(lab, a.ip) == winner.iface,
               what=f"{a.ip} routed to the winner {winner.iface}")
    conflict = wait_until(lambda: next((line for line in agent_log(lab, "node1").splitlines()
                                        if f"conflicting routes for {a.ip}/32" in line), None),
                          what="node1's agent to log the conflict")
    settled = time.monotonic() - started
    # The loser's address had only its own endpoint, now rewritten: no route for it.
    wait_until(lambda: _route_dev(lab, b.ip) is None, what=f"no route left for {b.ip}")

    wep_winner = _strip(_wep(lab, winner))
    t0 = time.monotonic()
    ctl(lab, ["delete", "workloadendpoint", wep_winner["metadata"]["name"], "-n", "default"])
    wait_until(lambda: _route_dev(lab, a.ip) == loser.iface,
               what=f"{a.ip} to follow the survivor {loser.iface}")
    followed = time.monotonic() - t0
    t0 = time.monotonic()
    apply(lab, json.dumps(wep_winner))  # back, after the survivor: the same winner again
    wait_until(lambda: _route_dev(lab, a.ip) == winner.iface,
               what=f"{a.ip} back to the winner {winner.iface}")
    back = time.monotonic() - t0
    print(f"\nF11 duplicate endpoint IP {a.ip}: winner {winner.iface} (pod {winner.name}) over "
          f"{loser.iface} (pod {loser.name}) {settled:.1f} s after the `ctl apply`; the route "
          f"followed the survivor {followed:.1f} s after the `ctl delete` of the winner, and "
          f"came back {back:.1f} s after its `ctl apply` (times include ctl itself)"
          f"\n  {conflict.strip()}")


def test_two_nodes_with_one_router_id_are_reported_and_others_unaffected(lab):
    ip1, ip2, ip3 = (node_ip(lab, n) for n in NODES)
    # node3 peers with both; node1 and node2 cannot peer with each other
    for node, peer in (("node1", ip3), ("node2", ip3), ("node3", ip1), ("node3", ip2)):
        wait_until(lambda node=node, peer=peer: any(r[0] == peer for r in
                                                    established(lab, node)),
                   timeout=60, what=f"{node}'s session with {peer}")
    logged = {}
    for node, other, other_ip in (("node1", "node2", ip2), ("node2", "node1", ip1)):
        want = (f"BGP router id conflict: node {node} and node {other} ({other_ip}) both use "
                f"BGP router id {SHARED_ROUTER_ID}")
        logged[node] = wait_until(lambda node=node, want=want: next(
            (line for line in agent_log(lab, node).splitlines() if want in line), None),
            timeout=30, what=f"{node}'s agent to report the router id conflict")
    rows = {r[0]: r for r in table_rows(node_status(lab, "node1"))}
    status = node_status(lab, "node1")
    assert rows[ip2][2] != "up", status
    assert "BGP Identifier collision" in status, status
    assert rows[ip3][2] == "up", status
    assert len(established(lab, "node3")) == 2
    print(f"\nF11 duplicate router id {SHARED_ROUTER_ID} (node1, node2): node1-node2 never "
          f"established; node3 up with both\n  node1: {logged['node1'].strip()}\n"
          f"  node2: {logged['node2'].strip()}\n  ctl node status on node1:\n{status}")
