"""Communities, service ranges and GoBGP, verified at real routers.

One lab (3 nodes, one subnet, the mesh off) whose BGPConfiguration has prefixAdvertisements
(a named standard community and an inline large one on the pool, an inline standard one on
the service range) and serviceClusterIPs. Real routers in the lab's router namespace, one
at a time (they all listen on port 179), each reached by a global BGPPeer at the router's
subnet-0 address:

* BIRD, FRR and GoBGP as a ToR in AS 65001: the ToR's own table shows every node's block
  from its owner with both communities, and the service range from every node with its
  community; every node installs the ToR's prefix.
* BIRD and GoBGP as external route reflectors (iBGP, AS 64512): every block everywhere, pods
  reach each other, and no node routes the service range to another node (each announces
  it itself).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from lab import Lab
from lab.routers import (
    bird_peer,
    bird_proto_name,
    bird_route_reflector,
    frr_tor,
    gobgp_config,
    start_bird,
    start_frr,
    start_gobgp,
)
from tests.support import need, wait_until

from .bgp_lab import (
    HOLD_TIME,
    NO_ENCAP_POOL,
    apply,
    block_of,
    node_ip,
    node_status,
    routes,
    start_agents,
    table_rows,
    wait_every_block_everywhere,
)
from .pods import add_pod, ctl, ping

pytestmark = [pytest.mark.slow, pytest.mark.root]

AS, TOR_AS = 64512, 65001
POOL_CIDR = "10.244.0.0/16"
SERVICE_NET = "10.96.0.0/16"
TOR_NET = "198.51.100.0/24"
POOL_COMMUNITIES = ({"65001:100"}, {"65001:1:2"})  # (standard, large) on every block
SERVICE_COMMUNITIES = ({"65001:7"}, set())
ADVERTISING = json.dumps({
    "apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
    "metadata": {"name": "default"},
    "spec": {"nodeToNodeMeshEnabled": False,
             "serviceClusterIPs": [{"cidr": SERVICE_NET}],
             "communities": [{"name": "tor-gold", "value": "65001:100"}],
             "prefixAdvertisements": [
                 {"cidr": POOL_CIDR, "communities": ["tor-gold", "65001:1:2"]},
                 {"cidr": SERVICE_NET, "communities": ["65001:7"]}]}})

# What a router holds for one prefix: {neighbour ip: (standard communities, large ones)}.
Seen = dict[str, tuple[set[str], set[str]]]


@pytest.fixture(scope="module")
def advertising(lab_env):
    need("bird", "birdc", "vtysh", "gobgpd", "gobgp", files={"/usr/lib/frr/bgpd": "frr"})
    from .conftest import up_lab

    with up_lab(nodes=3, subnets=1) as lab:
        apply(lab, "---\n".join((NO_ENCAP_POOL, ADVERTISING)))
        start_agents(lab)
        pods = {n.name: add_pod(lab, n.name, f"pod{n.name[-1]}") for n in lab.nodes}
        yield lab, pods


def global_peer(name: str, peer_ip: str, asn: int) -> str:
    return json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                       "metadata": {"name": name}, "spec": {"peerIP": peer_ip, "asNumber": asn}})


def sessions_up(lab: Lab, gw: str) -> bool:
    rows = [{r[0]: r for r in table_rows(node_status(lab, n.name))}.get(gw) for n in lab.nodes]
    return all(r and r[2] == "up" for r in rows)


@contextmanager
def peered(lab: Lab, name: str, gw: str, asn: int, stop: Callable[[], None]) -> Iterator[None]:
    """The BGPPeer to the router while the block runs; afterwards the router stops, the
    BGPPeer goes and every node has dropped its session, so the next router starts clean."""
    apply(lab, global_peer(name, gw, asn))
    try:
        wait_until(lambda: sessions_up(lab, gw), what=f"every node's session to {name}")
        yield
    finally:
        stop()
        ctl(lab, ["delete", "bgppeer", name])
        for n in lab.nodes:
            wait_until(lambda n=n: not table_rows(node_status(lab, n.name)),
                       what=f"{n.name} to drop its sessions")


# -- reading each router's table ------------------------------------------------------------

_BIRD_PATH = re.compile(r"^(\S+)?\s+\S+ \[(\S+) ")
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")
_TRIPLE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")


def bird_seen(text: str, by_protocol: dict[str, str]) -> dict[str, Seen]:
    """`birdc show route all` -> {prefix: Seen}; `by_protocol` maps protocol names to the
    neighbour addresses (BIRD names the protocol a path came from)."""
    out: dict[str, Seen] = {}
    prefix, peer = "", ""
    for line in text.splitlines():
        m = _BIRD_PATH.match(line)
        if m and not line.startswith("Table "):
            prefix = m.group(1) or prefix
            peer = by_protocol.get(m.group(2), m.group(2))
            out.setdefault(prefix, {})[peer] = (set(), set())
        elif "BGP.community:" in line and peer:
            out[prefix][peer][0].update(f"{a}:{b}" for a, b in _PAIR.findall(line))
        elif "BGP.large_community:" in line and peer:
            out[prefix][peer][1].update(":".join(t) for t in _TRIPLE.findall(line))
    return out


def frr_seen(tor, prefix: str) -> Seen:
    detail = json.loads(tor.vtysh(f"show bgp ipv4 unicast {prefix} json", daemon="bgpd") or "{}")
    out: Seen = {}
    for path in detail.get("paths", []):
        standard = set(path.get("community", {}).get("string", "").split())
        large = set(path.get("largeCommunity", {}).get("string", "").split())
        out[path["peer"]["peerId"]] = (standard, large)
    return out


def gobgp_seen(router, prefix: str) -> Seen:
    return {p["neighbor-ip"]: (set(p["communities"]), set(p["large-communities"]))
            for p in router.rib().get(prefix, [])}


def check_router_table(lab: Lab, pods, seen: Callable[[str], Seen], who: str) -> None:
    """Every block from its owner with the pool's communities; the service range from every
    node with its community."""
    for owner, pod in pods.items():
        block = block_of(pod.ip)
        table = wait_until(lambda b=block: seen(b) or None, what=f"{who} to learn {block}")
        assert table.get(node_ip(lab, owner)) == POOL_COMMUNITIES, (block, table)
    everyone = {n.ip for n in lab.nodes}
    table = wait_until(lambda: (t := seen(SERVICE_NET)) and everyone <= set(t) and t or None,
                       what=f"{who} to learn {SERVICE_NET} from every node")
    for ip in everyone:
        assert table[ip] == SERVICE_COMMUNITIES, table


def wait_tor_prefix_everywhere(lab: Lab, gw: str, who: str) -> None:
    for n in lab.nodes:
        wait_until(lambda n=n: any(line.startswith(f"{TOR_NET} via {gw} dev eth0 proto 80")
                                   for line in routes(lab, n.name).splitlines()),
                   what=f"{TOR_NET} from {who} on {n.name}")


# -- ToRs in AS 65001 ------------------------------------------------------------------------

def test_bird_tor_sees_communities_and_service_ranges(advertising):
    lab, pods = advertising
    gw = lab.subnets[0].gateway
    tor = start_bird(lab, bird_peer(gw, TOR_AS, [(n.ip, AS, gw) for n in lab.nodes], [TOR_NET],
                                    hold_time=HOLD_TIME), name="ctor-bird")
    by_protocol = {bird_proto_name(n.ip): n.ip for n in lab.nodes}
    with peered(lab, "tor", gw, TOR_AS, tor.stop):
        def seen(prefix: str) -> Seen:
            return bird_seen(tor.birdc("show", "route", "all", prefix), by_protocol).get(
                prefix, {})
        check_router_table(lab, pods, seen, "BIRD")
        wait_tor_prefix_everywhere(lab, gw, "BIRD")


def test_frr_tor_sees_communities_and_service_ranges(advertising):
    lab, pods = advertising
    gw = lab.subnets[0].gateway
    tor = start_frr(lab, frr_tor(gw, TOR_AS, [(n.ip, AS) for n in lab.nodes], [TOR_NET],
                                 hold_time=HOLD_TIME), name="ctor-frr", with_zebra=False)
    with peered(lab, "tor", gw, TOR_AS, tor.stop):
        check_router_table(lab, pods, lambda prefix: frr_seen(tor, prefix), "FRR")
        wait_tor_prefix_everywhere(lab, gw, "FRR")


def test_gobgp_tor_sees_communities_and_its_prefix_reaches_every_node(advertising):
    lab, pods = advertising
    gw = lab.subnets[0].gateway
    tor = start_gobgp(lab, gobgp_config(gw, TOR_AS, [(n.ip, AS) for n in lab.nodes],
                                        hold_time=HOLD_TIME), name="ctor-gobgp",
                      announce=[TOR_NET])
    with peered(lab, "tor", gw, TOR_AS, tor.stop):
        wait_until(lambda: set(tor.peer_states().values()) == {"established"},
                   what="GoBGP to have every node established")
        check_router_table(lab, pods, lambda prefix: gobgp_seen(tor, prefix), "GoBGP")
        wait_tor_prefix_everywhere(lab, gw, "GoBGP")
        # Withdrawn at the ToR: gone from every node.
        tor.withdraw(TOR_NET)
        for n in lab.nodes:
            wait_until(lambda n=n: TOR_NET not in routes(lab, n.name),
                       what=f"{TOR_NET} withdrawn on {n.name}")


# -- external route reflectors, mesh off ------------------------------------------------------

def check_reflected(lab: Lab, pods, who: str) -> None:
    wait_every_block_everywhere(lab, pods, [n.name for n in lab.nodes], f" through {who}")
    assert ping(pods["node2"], pods["node3"].ip) or ping(pods["node2"], pods["node3"].ip)
    assert ping(pods["node3"], pods["node1"].ip) or ping(pods["node3"], pods["node1"].ip)
    # Each node announces the service range itself: another node's copy is never routed.
    for n in lab.nodes:
        assert SERVICE_NET not in routes(lab, n.name), n.name


def test_bird_reflector_with_the_mesh_off(advertising):
    lab, pods = advertising
    gw = lab.subnets[0].gateway
    rr = start_bird(lab, bird_route_reflector(gw, AS, [(n.ip, gw) for n in lab.nodes],
                                              hold_time=HOLD_TIME), name="crr-bird")
    by_protocol = {bird_proto_name(n.ip, "rr"): n.ip for n in lab.nodes}
    with peered(lab, "rr", gw, AS, rr.stop):
        check_reflected(lab, pods, "BIRD")
        check_router_table(lab, pods, lambda prefix: bird_seen(
            rr.birdc("show", "route", "all", prefix), by_protocol).get(prefix, {}), "BIRD")


def test_gobgp_reflector_with_the_mesh_off(advertising):
    lab, pods = advertising
    gw = lab.subnets[0].gateway
    rr = start_gobgp(lab, gobgp_config(gw, AS, [(n.ip, AS) for n in lab.nodes],
                                       hold_time=HOLD_TIME, rr_clients=True), name="crr-gobgp")
    with peered(lab, "rr", gw, AS, rr.stop):
        check_reflected(lab, pods, "GoBGP")
        check_router_table(lab, pods, lambda prefix: gobgp_seen(rr, prefix), "GoBGP")
