"""Real BGP routers in the lab (lab.routers): BIRD and FRR exchange routes over lab links.

Topology (one subnet, so every next hop is on-link)::

    <lab>-router   BIRD  AS 65000 (ToR)  or  iBGP route reflector, AS 64512
        |  bridge, 10.x.1.0/24
        |-- <lab>-node1  FRR (zebra + bgpd)  AS 65001, announces 198.51.100.0/24
        |-- <lab>-node2  BIRD                AS 65002, announces 203.0.113.0/24, kernel export

Each side's prefix must reach the other node's kernel through the router; the
route reflector must reflect a client's route to the other client with its
next hop untouched; `lab.down()` must leave no router process (nor FRR's
/var/tmp/frr crash-log dirs) behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import Lab
from lab.cluster import find_leftovers
from lab.routers import (
    FRR_TMPDIR,
    bird_peer,
    bird_proto_name,
    bird_route_reflector,
    frr_tor,
    start_bird,
    start_frr,
)
from tests.support import need, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]

FRR_NET = "198.51.100.0/24"
BIRD_NET = "203.0.113.0/24"


@pytest.fixture(scope="module")
def routers_env(lab_env: None) -> None:
    need("bird", "birdc", "vtysh", files={"/usr/lib/frr/bgpd": "frr"})


@pytest.fixture(scope="module")
def lab2(routers_env: None) -> Lab:
    from .conftest import up_lab

    with up_lab(nodes=2, subnets=1) as lab:
        yield lab


def kernel_routes(lab: Lab, node: str, proto: str) -> str:
    return lab.exec(node, ["ip", "route", "show", "proto", proto]).stdout


def test_bird_tor_and_frr_exchange_prefixes(lab2: Lab) -> None:
    lab = lab2
    gw = lab.subnets[0].gateway
    n1, n2 = lab.nodes
    # The ToR installs what it learns, so it also forwards between the two prefixes.
    tor = start_bird(lab, bird_peer(gw, 65000, [(n1.ip, 65001, gw), (n2.ip, 65002, gw)],
                                    install_learned=True), name="tor")
    frr = start_frr(lab, frr_tor(n1.ip, 65001, [(gw, 65000)], [FRR_NET], hostname="node1"),
                    name="frr1", netns="node1")
    leaf = start_bird(lab, bird_peer(n2.ip, 65002, [(gw, 65000, n2.ip)], [BIRD_NET],
                                     install_learned=True), name="bird2", netns=n2)
    try:
        assert tor.netns == lab.router_netns and frr.netns == n1.netns and leaf.netns == n2.netns
        wait_until(lambda: frr.peer_states().get(gw) == "Established",
                   what="FRR session to the ToR")
        wait_until(lambda: all(tor.protocols()[bird_proto_name(ip)]["state"] == "up"
                               for ip in (n1.ip, n2.ip)), what="ToR sessions up")
        wait_until(lambda: {FRR_NET, BIRD_NET} <= set(tor.routes()),
                   what="ToR learning both prefixes")

        # node2's BIRD installs node1's prefix (proto bird); node1's zebra installs node2's.
        # On a shared subnet BIRD passes the originator's next hop through (third-party
        # next hop), so the route may point at the other node rather than the ToR.
        wait_until(lambda: FRR_NET in kernel_routes(lab, "node2", "bird"),
                   what="FRR prefix in node2")
        assert any(f"{FRR_NET} via {hop} dev eth0" in kernel_routes(lab, "node2", "bird")
                   for hop in (gw, n1.ip))
        wait_until(lambda: BIRD_NET in kernel_routes(lab, "node1", "bgp"),
                   what="BIRD prefix in node1")
        assert any(f"via {hop} dev eth0" in kernel_routes(lab, "node1", "bgp")
                   for hop in (gw, n2.ip))
        assert BIRD_NET in frr.routes_json()
        pfx = frr.bgp_summary_json()["ipv4Unicast"]["peers"][gw]["pfxRcd"]
        assert pfx >= 1

        # The packet path works: node2 reaches an address in FRR's prefix (node1 owns it on lo).
        lab.exec("node1", ["ip", "addr", "add", "198.51.100.1/32", "dev", "lo"])
        lab.exec("node2", ["ping", "-c1", "-W2", "198.51.100.1"])

        # Withdrawal, configured through the private vtysh, reaches node2's kernel. (Stopping
        # FRR would not do: BIRD keeps a graceful-restart-capable peer's routes, stale, for
        # its restart time.)
        frr.vtysh("configure terminal", "router bgp 65001", "address-family ipv4 unicast",
                  f"no network {FRR_NET}")
        wait_until(lambda: FRR_NET not in kernel_routes(lab, "node2", "bird"),
                   what="FRR prefix withdrawn from node2")
    finally:
        for r in (leaf, frr, tor):
            r.stop()


def test_bird_route_reflector_reflects_between_clients(lab2: Lab) -> None:
    lab = lab2
    gw = lab.subnets[0].gateway
    n1, n2 = lab.nodes
    rr = start_bird(lab, bird_route_reflector(gw, 64512, [(n1.ip, gw), (n2.ip, gw)],
                                              hold_time=9), name="rr")
    clients = [
        start_bird(lab, bird_peer(n.ip, 64512, [(gw, 64512, n.ip)], [net], install_learned=True),
                   name=f"client{i}", netns=n.name)
        for i, (n, net) in enumerate(((n1, FRR_NET), (n2, BIRD_NET)), start=1)
    ]
    try:
        wait_until(lambda: all(p["state"] == "up" for name, p in rr.protocols().items()
                               if name.startswith("rr_")), what="RR sessions up")
        # Reflected with the originator's next hop (iBGP leaves it alone).
        wait_until(lambda: BIRD_NET in kernel_routes(lab, "node1", "bird"),
                   what="reflected to node1")
        assert f"{BIRD_NET} via {n2.ip} dev eth0" in kernel_routes(lab, "node1", "bird")
        wait_until(lambda: FRR_NET in kernel_routes(lab, "node2", "bird"),
                   what="reflected to node2")
        assert f"{FRR_NET} via {n1.ip} dev eth0" in kernel_routes(lab, "node2", "bird")
        detail = rr.birdc("show", "route", "all", FRR_NET)
        assert "BGP.next_hop" in detail
        # The RR's own connected routes are not exported to clients.
        assert lab.subnets[0].cidr not in clients[0].routes(f"protocol {bird_proto_name(gw)}")
    finally:
        for r in (*clients, rr):
            r.stop()


def test_frr_without_zebra_learns_but_installs_nothing(lab2: Lab) -> None:
    lab = lab2
    gw = lab.subnets[0].gateway
    n2 = lab.nodes[1]
    tor = start_bird(lab, bird_peer(gw, 65000, [(n2.ip, 65002, gw)], [BIRD_NET]), name="tor0")
    frr = start_frr(lab, frr_tor(n2.ip, 65002, [(gw, 65000)]), name="frr0", netns=n2,
                    with_zebra=False)
    try:
        assert set(frr.procs) == {"bgpd"}
        wait_until(lambda: BIRD_NET in frr.bgp_routes_json().get("routes", {}),
                   what="bgpd learning")
        assert BIRD_NET not in lab.exec(n2, ["ip", "route"]).stdout
    finally:
        frr.stop()
        tor.stop()


def test_bad_configs_are_rejected_with_the_reason(lab2: Lab) -> None:
    from lab.errors import LabError

    with pytest.raises(LabError, match="BIRD rejects the config"):
        start_bird(lab2, "router id 1.2.3.4;\nprotocol bogus {}\n", name="badbird")
    with pytest.raises(LabError, match="neighbor 1.2.3.4 remote-as abc"):
        start_frr(lab2, "router bgp 65001\n neighbor 1.2.3.4 remote-as abc\n", name="badfrr",
                  netns="node1")


def test_down_stops_every_router_process(make_lab: Callable[..., Lab], routers_env: None) -> None:
    lab = make_lab(nodes=2, subnets=1)
    gw = lab.subnets[0].gateway
    n1 = lab.nodes[0]
    bird = start_bird(lab, bird_peer(gw, 65000, [(n1.ip, 65001, gw)], ["192.0.2.0/24"]))
    frr = start_frr(lab, frr_tor(n1.ip, 65001, [(gw, 65000)]), netns="node1")
    pids = [bird.proc.pid, *(p.pid for p in frr.procs.values())]
    assert all(Path(f"/proc/{pid}").exists() for pid in pids)
    recorded = {rec["pid"] for rec in lab.status()["processes"]}
    assert set(pids) <= recorded

    lab.down()

    assert find_leftovers(lab.name) == []
    for pid in pids:
        assert not _alive(pid), f"router process {pid} survived lab.down()"
    for daemon, p in frr.procs.items():
        assert not (FRR_TMPDIR / f"{daemon}.{p.pid}").exists()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    if state in ("Z", "X"):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        return False
    return True
