"""BGP full mesh end to end: 4 nodes on one subnet, real agents with real ExaBGP.

The pool has no encapsulation, so pods reach each other only through routes
learned over BGP (`<block> via <node> dev eth0 proto 80 onlink`). Failure
tests: a killed ExaBGP comes back and, thanks to graceful restart, no peer
drops its routes meanwhile; a released affinity is withdrawn everywhere; a
disconnected node's routes go within the hold time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from tests.support import wait_until

from .bgp_lab import (
    HOLD_TIME,
    NO_ENCAP_POOL,
    apply,
    block_of,
    established,
    extra_block,
    has_block_route,
    node_ip,
    node_status,
    routes,
    speaker_pid,
    start_agent,
    table_rows,
    wait_every_block_everywhere,
    wait_ready,
)
from .pods import add_pod, ping

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = NO_ENCAP_POOL
NODES = ("node1", "node2", "node3", "node4")


@pytest.fixture(scope="module")
def mesh(lab_env):
    from .conftest import up_lab

    with up_lab(nodes=4, subnets=1) as lab:
        apply(lab, POOL)
        for n in NODES:
            start_agent(lab, n)
        for n in NODES:
            wait_ready(lab, n)
        pods = {n: add_pod(lab, n, f"pod{n[-1]}") for n in NODES}
        yield lab, pods


def test_every_node_has_three_established_mesh_peers(mesh):
    lab, _ = mesh
    for n in NODES:
        rows = wait_until(lambda n=n: len(established(lab, n)) == 3 and established(lab, n),
                          what=f"3 established sessions on {n}")
        assert {r[1] for r in rows} == {"node-to-node mesh"}
        assert {r[0] for r in rows} == {node_ip(lab, m) for m in NODES if m != n}
        assert {r[4] for r in rows} == {"Established"}
    text = node_status(lab, "node1")
    assert text.startswith("tortie process is running.\n\nIPv4 BGP status\n+")
    assert text.endswith("IPv6 BGP status\nNo IPv6 peers found.\n\n")


def test_each_kernel_holds_every_other_nodes_blocks(mesh):
    lab, pods = mesh
    wait_every_block_everywhere(lab, pods, NODES)


def test_pods_on_different_nodes_reach_each_other(mesh):
    _, pods = mesh
    matrix = {(a.name, b.name): ping(a, b.ip) or ping(a, b.ip)
              for a in pods.values() for b in pods.values() if a is not b}
    assert all(matrix.values()), matrix


def test_status_all_shows_twelve_sessions_up_from_any_node(mesh):
    lab, _ = mesh

    def up_rows():
        rows = table_rows(node_status(lab, "node3", "--all", "-o", "wide"))
        return rows if len([r for r in rows if r[3] == "up"]) == 12 else None

    rows = wait_until(up_rows, what="12 sessions up in --all")
    assert len(rows) == 12
    assert {r[0] for r in rows} == set(NODES)
    # wide: every node sent each peer at least its own block and received the peer's.
    assert all(int(r[6]) >= 1 and int(r[7]) >= 1 for r in rows), rows


def test_released_affinity_is_withdrawn_everywhere(mesh):
    lab, _ = mesh
    ip, block = "10.244.200.1", "10.244.200.0/26"
    extra_block(lab, "claim", "node4", ip, block)
    via = node_ip(lab, "node4")
    for n in ("node1", "node2", "node3"):
        wait_until(lambda n=n: has_block_route(lab, n, block, via), what=f"{block} on {n}")
    extra_block(lab, "release", "node4", ip, block)
    for n in ("node1", "node2", "node3"):
        wait_until(lambda n=n: block not in routes(lab, n), what=f"{block} withdrawn on {n}")


def test_killed_exabgp_restarts_and_graceful_restart_keeps_its_routes(mesh):
    lab, pods = mesh
    block, via = block_of(pods["node2"].ip), node_ip(lab, "node2")
    pid = wait_until(lambda: speaker_pid(lab, "node2"), what="node2's ExaBGP")
    os.kill(pid, signal.SIGKILL)
    lost = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for n in ("node1", "node3", "node4"):
            if not has_block_route(lab, n, block, via):
                lost.append(n)
        new = speaker_pid(lab, "node2")
        if new and new != pid and len(established(lab, "node2")) == 3:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("node2's ExaBGP did not come back with 3 sessions in 30 s")
    assert lost == [], f"peers dropped node2's block during the restart: {lost}"
    assert ping(pods["node1"], pods["node2"].ip)


def test_disconnected_node_is_withdrawn_within_the_hold_time(mesh):
    lab, pods = mesh
    block, via = block_of(pods["node4"].ip), node_ip(lab, "node4")
    ns = lab.netns_of("node4")
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "down"], check=True)
    try:
        started = time.monotonic()
        for n in ("node1", "node2", "node3"):
            wait_until(lambda n=n: not has_block_route(lab, n, block, via), timeout=HOLD_TIME + 10,
                       what=f"node4's block withdrawn on {n}")
        assert time.monotonic() - started < HOLD_TIME + 10
    finally:
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        subprocess.run(["ip", "-n", ns, "route", "replace", "default", "via",
                        lab.nodes[3].gateway], check=False)
    for n in ("node1", "node2", "node3"):
        wait_until(lambda n=n: has_block_route(lab, n, block, via), timeout=60,
                   what=f"node4's block back on {n}")
