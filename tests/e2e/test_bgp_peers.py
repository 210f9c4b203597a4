"""Explicit BGP peerings end to end: route reflectors, a ToR, TCP-MD5 passwords.

Real agents with real ExaBGP, the node-to-node mesh off, one subnet (so
no-encap block routes `<block> via <node> dev eth0 proto 80 onlink` work
without the router routing pod prefixes), short hold times (bgp_lab.HOLD_TIME).

Two labs, one per module fixture:

* `rr_cluster` (4 nodes): node1 and node2 are route reflectors of one cluster
  (label `route-reflector: "true"`, routeReflectorClusterID 244.0.0.1) and the
  BGPPeer `peer-with-route-reflectors` makes every node their client. node3
  and node4 only see each other through the reflectors; stopping node1's agent
  must lose no route, since node2 reflects the same paths.
* `routed` (3 nodes): real routers in the lab's router namespace, one at a time
  (they would all listen on port 179), each reached by a global BGPPeer to the
  router's subnet-0 address: a BIRD route reflector (iBGP, AS 64512), an FRR
  ToR (eBGP, AS 65001) and a BIRD ToR with a TCP-MD5 password (AS 65002).
  Each test removes its router and BGPPeer, and waits until no node has a
  session left, before the next one starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bgp.daemon import SECRET_POLL
from lab import Lab, bgp_cluster
from lab.routers import (
    bird_peer,
    bird_proto_name,
    bird_route_reflector,
    frr_tor,
    start_bird,
    start_frr,
)
from tests.support import need, wait_until

from .bgp_lab import (
    HOLD_TIME,
    NO_ENCAP_POOL,
    apply,
    block_of,
    has_block_route,
    node_ip,
    node_status,
    routes,
    speaker_pid,
    start_agent,
    table_rows,
    wait_every_block_everywhere,
    wait_ready,
    write_secret,
)
from .pods import add_pod, ctl, ping

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = NO_ENCAP_POOL
MESH_OFF = bgp_cluster.MESH_OFF
PEER_WITH_RRS = bgp_cluster.PEER_WITH_REFLECTORS
RR_NODE_PATCH = bgp_cluster.REFLECTOR_PATCH  # routeReflectorClusterID 244.0.0.1
TOR_NET = "198.51.100.0/24"  # announced by the FRR ToR
MD5_NET = "203.0.113.0/24"  # announced by the BIRD peer with a password
RR_NODES = ("node1", "node2")





def peer_rows(lab: Lab, node: str) -> dict[str, list[str]]:
    """`ctl node status` rows of `node`, by peer address: [address, type, state, since, info]."""
    return {r[0]: r for r in table_rows(node_status(lab, node))}


def best_paths(lab: Lab, node: str) -> dict[str, tuple[str, str]]:
    """The node's BGP best paths from its control socket: {prefix: (next hop, peer)}.

    The first line of a `routes` stream is a reset carrying the whole table."""
    script = ("import socket\n"
              "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
              "s.settimeout(5)\n"
              "s.connect('\\0tortie-bgp')\n"
              "s.sendall(b'routes\\n')\n"
              "print(s.makefile('r').readline(), end='')\n")
    out = lab.exec(node, [sys.executable, "-c", script]).stdout
    first = json.loads(out)
    assert first["reset"] is True, first
    return {prefix: (hop, peer) for prefix, (hop, peer) in first["routes"].items()}


def agent_pid(lab: Lab, node: str) -> int:
    procs = [p for p in lab.status()["processes"] if p["name"] == f"agent-{node}" and p["alive"]]
    return int(procs[-1]["pid"])


def start_cluster(lab: Lab, *manifests: str) -> None:
    apply(lab, "---\n".join((POOL, MESH_OFF, *manifests)))
    for n in lab.nodes:
        start_agent(lab, n.name)
    for n in lab.nodes:
        wait_ready(lab, n.name)


# ---- nodes as route reflectors ---------------------------------------------


@pytest.fixture(scope="module")
def rr_cluster(lab_env):
    from .conftest import up_lab

    with up_lab(nodes=4, subnets=1) as lab:
        # The mesh is off and the BGPPeer exists before any agent runs, so no
        # session ever starts before the reflectors are configured.
        start_cluster(lab, PEER_WITH_RRS)
        # After the agents registered their Nodes (a merge patch keeps what they wrote).
        for n in RR_NODES:
            ctl(lab, ["patch", "node", n, "-p", RR_NODE_PATCH])
        pods = {n.name: add_pod(lab, n.name, f"pod{n.name[-1]}") for n in lab.nodes}
        yield lab, pods


def test_reflectors_and_clients_have_node_specific_sessions(rr_cluster):
    lab, _ = rr_cluster
    ips = {n.name: n.ip for n in lab.nodes}
    expected = {  # reflectors peer with everyone, clients with the reflectors only
        "node1": {ips["node2"], ips["node3"], ips["node4"]},
        "node2": {ips["node1"], ips["node3"], ips["node4"]},
        "node3": {ips["node1"], ips["node2"]},
        "node4": {ips["node1"], ips["node2"]},
    }
    for node, peers in expected.items():
        def up(node=node, peers=peers):
            rows = peer_rows(lab, node)
            return rows if set(rows) == peers and all(r[2] == "up" for r in rows.values()) \
                else None
        rows = wait_until(up, what=f"{node}'s sessions to {sorted(peers)}")
        assert {r[1] for r in rows.values()} == {"node specific"}, rows
        assert {r[4] for r in rows.values()} == {"Established"}, rows


def test_every_node_learns_every_block_through_the_reflectors(rr_cluster):
    lab, pods = rr_cluster
    # Reflected routes keep the originator's next hop.
    wait_every_block_everywhere(lab, pods, [n.name for n in lab.nodes])
    # node3 and node4 have no session with each other: each one's best path to the
    # other's block was learned from a reflector.
    reflectors = {node_ip(lab, n) for n in RR_NODES}
    for node, other in (("node3", "node4"), ("node4", "node3")):
        hop, peer = best_paths(lab, node)[block_of(pods[other].ip)]
        assert hop == node_ip(lab, other) and peer in reflectors, (node, hop, peer)
    assert ping(pods["node3"], pods["node4"].ip) or ping(pods["node3"], pods["node4"].ip)
    assert ping(pods["node4"], pods["node3"].ip) or ping(pods["node4"], pods["node3"].ip)


def test_stopping_one_reflector_loses_no_route(rr_cluster):
    lab, pods = rr_cluster
    live = ("node2", "node3", "node4")
    wanted = {(n, block_of(pods[o].ip), node_ip(lab, o)) for n in live for o in live if o != n}
    wait_until(lambda: all(has_block_route(lab, *w) for w in wanted), what="every route in place")
    rr1 = node_ip(lab, "node1")
    before = {n: best_paths(lab, n) for n in ("node3", "node4")}

    subprocess.run(["kill", "-TERM", str(agent_pid(lab, "node1"))], check=True)
    lost: set[tuple[str, str, str]] = set()
    down_at = None
    deadline = time.monotonic() + 3 * HOLD_TIME
    # Sample until node1's sessions have been gone everywhere for a hold time and more.
    while down_at is None or time.monotonic() < down_at + HOLD_TIME + 3:
        lost |= {w for w in wanted if not has_block_route(lab, *w)}
        if down_at is None and all(peer_rows(lab, n).get(rr1, ["", "", "up"])[2] != "up"
                                   for n in live):
            down_at = time.monotonic()
        assert time.monotonic() < deadline, "node1's sessions never went down on its peers"
        time.sleep(0.1)
    assert lost == set(), f"routes lost while a reflector stopped: {sorted(lost)}"
    # node3 and node4 preferred node1's copies (lowest peer address, RFC 4456 9)...
    assert {before[n][block_of(pods[o].ip)][1] for n, o in (("node3", "node4"),
                                                             ("node4", "node3"))} == {rr1}, before
    # ...and node2 alone now carries what node3 and node4 learn about each other.
    rr2 = node_ip(lab, "node2")
    for node, other in (("node3", "node4"), ("node4", "node3")):
        assert best_paths(lab, node)[block_of(pods[other].ip)] == (node_ip(lab, other), rr2)
    assert ping(pods["node3"], pods["node4"].ip) or ping(pods["node3"], pods["node4"].ip)
    assert ping(pods["node4"], pods["node3"].ip) or ping(pods["node4"], pods["node3"].ip)


# ---- real routers in the router namespace ----------------------------------


@pytest.fixture(scope="module")
def routed(lab_env):
    need("bird", "birdc", "vtysh", files={"/usr/lib/frr/bgpd": "frr"})
    from .conftest import up_lab

    with up_lab(nodes=3, subnets=1) as lab:
        start_cluster(lab)
        pods = {n.name: add_pod(lab, n.name, f"pod{n.name[-1]}") for n in lab.nodes}
        yield lab, pods


def global_peer(name: str, peer_ip: str, asn: int, secret: tuple[str, str] | None = None) -> str:
    spec = {"peerIP": peer_ip, "asNumber": asn}
    if secret:
        spec["password"] = {"secretKeyRef": {"name": secret[0], "key": secret[1]}}
    return json.dumps({"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
                       "metadata": {"name": name}, "spec": spec})


def remove_peer(lab: Lab, name: str) -> None:
    ctl(lab, ["delete", "bgppeer", name])
    for n in lab.nodes:
        wait_until(lambda n=n: not peer_rows(lab, n.name), what=f"{n.name} to drop its sessions")


def router_session_up(lab: Lab, gw: str) -> dict[str, list[str]] | None:
    rows = {n.name: peer_rows(lab, n.name).get(gw) for n in lab.nodes}
    return rows if all(r and r[2] == "up" for r in rows.values()) else None


def test_external_bird_route_reflector_distributes_blocks(routed):
    lab, pods = routed
    gw = lab.subnets[0].gateway
    rr = start_bird(lab, bird_route_reflector(gw, 64512, [(n.ip, gw) for n in lab.nodes],
                                              hold_time=HOLD_TIME), name="rr")
    apply(lab, global_peer("rr", gw, 64512))
    try:
        wait_until(lambda: all(rr.protocols()[bird_proto_name(n.ip, "rr")]["info"] == "Established"
                               for n in lab.nodes), what="BIRD to have every client Established")
        rows = wait_until(lambda: router_session_up(lab, gw), what="every node's session to BIRD")
        assert {r[1] for r in rows.values()} == {"global"}, rows
        # BIRD reflects with the owner's next hop (iBGP, no next hop self).
        wait_every_block_everywhere(lab, pods, [n.name for n in lab.nodes], " through BIRD")
        for n in lab.nodes:
            for owner, pod in pods.items():
                if owner != n.name:
                    hop, peer = best_paths(lab, n.name)[block_of(pod.ip)]
                    assert (hop, peer) == (node_ip(lab, owner), gw)
        detail = rr.birdc("show", "route", "all", block_of(pods["node1"].ip))
        assert f"BGP.next_hop: {node_ip(lab, 'node1')}" in detail, detail
        assert ping(pods["node2"], pods["node3"].ip) or ping(pods["node2"], pods["node3"].ip)
    finally:
        rr.stop()
        remove_peer(lab, "rr")


def test_frr_tor_learns_every_block_and_its_prefix_reaches_every_node(routed):
    lab, pods = routed
    gw = lab.subnets[0].gateway
    tor = start_frr(lab, frr_tor(gw, 65001, [(n.ip, 64512) for n in lab.nodes], [TOR_NET],
                                 hold_time=HOLD_TIME), name="tor", with_zebra=False)
    apply(lab, global_peer("tor", gw, 65001))
    try:
        wait_until(lambda: set(tor.peer_states().values()) == {"Established"} and
                   len(tor.peer_states()) == 3, what="FRR to have every node Established")
        blocks = {block_of(p.ip): node_ip(lab, o) for o, p in pods.items()}

        def learned():
            table = tor.bgp_routes_json().get("routes", {})
            return table if set(blocks) <= set(table) else None
        table = wait_until(learned, what="FRR to learn every node's block")
        for block, owner_ip in blocks.items():
            (path,) = table[block]  # once, from its owner: nodes pass on no eBGP route
            assert path["peerId"] == owner_ip, path
            assert path["path"] == "64512", path
        for n in lab.nodes:
            wait_until(lambda n=n: any(line.startswith(f"{TOR_NET} via {gw} dev eth0 proto 80")
                                       for line in routes(lab, n.name).splitlines()),
                       what=f"{TOR_NET} via the ToR on {n.name}")
        rows = router_session_up(lab, gw)
        assert rows and {r[1] for r in rows.values()} == {"global"}, rows
        # The ToR's copy of node A's block (AS path 65001 64512) is an AS loop for node B:
        # no pod traffic is sent through the ToR.
        for n in lab.nodes:
            assert not [line for line in routes(lab, n.name).splitlines()
                        if line.startswith("10.244.") and f"via {gw}" in line]
    finally:
        tor.stop()
        remove_peer(lab, "tor")


def md5_failures(lab: Lab, target: str) -> int:
    """The namespace's TcpExt TCPMD5Failure counter: segments dropped for a wrong TCP-MD5 digest."""
    names, values = [line.split() for line in lab.exec(target, ["cat", "/proc/net/netstat"])
                     .stdout.splitlines() if line.startswith("TcpExt:")]
    return int(values[names.index("TCPMD5Failure")])


def test_bgp_password_matching_establishes_mismatched_never(routed):
    lab, _ = routed
    gw = lab.subnets[0].gateway

    def config(password: str) -> str:
        return bird_peer(gw, 65002, [(n.ip, 64512, gw) for n in lab.nodes], [MD5_NET],
                         hold_time=HOLD_TIME, password=password)

    def installed(node: str) -> bool:
        return MD5_NET in routes(lab, node)

    write_secret(lab, "bgp-secrets", "tor", "s3cret")
    bird = start_bird(lab, config("s3cret"), name="md5")
    apply(lab, global_peer("md5-tor", gw, 65002, ("bgp-secrets", "tor")))
    try:
        wait_until(lambda: all(p["info"] == "Established" for name, p in bird.protocols().items()
                               if name.startswith("peer_")) and bird.protocols(),
                   what="BIRD to have every node Established with the password")
        assert router_session_up(lab, gw)
        for n in lab.nodes:
            wait_until(lambda n=n: any(line.startswith(f"{MD5_NET} via {gw} dev eth0 proto 80")
                                       for line in routes(lab, n.name).splitlines()),
                       what=f"{MD5_NET} on {n.name}")

        # BIRD now expects another password: it restarts the sessions (with a
        # NOTIFICATION, so the routes go at once) and no node gets back in.
        failures = {n.name: md5_failures(lab, n.name) for n in lab.nodes}
        bird.configure(config("not-s3cret"))
        for n in lab.nodes:
            wait_until(lambda n=n: not installed(n.name), timeout=HOLD_TIME,
                       what=f"{MD5_NET} withdrawn on {n.name}")
        seen_up, seen_route = set(), set()
        end = time.monotonic() + 2 * HOLD_TIME
        while time.monotonic() < end:
            seen_up |= {name for name, p in bird.protocols().items()
                        if name.startswith("peer_") and p["state"] == "up"}
            seen_up |= {n.name for n in lab.nodes
                        if peer_rows(lab, n.name).get(gw, ["", "", ""])[2] == "up"}
            seen_route |= {n.name for n in lab.nodes if installed(n.name)}
            time.sleep(0.5)
        assert seen_up == set(), f"sessions up with the wrong password: {seen_up}"
        assert seen_route == set(), f"{MD5_NET} installed with the wrong password: {seen_route}"
        assert all(p["state"] != "up" for p in bird.protocols().values() if p["proto"] == "BGP")
        rows = {n.name: peer_rows(lab, n.name).get(gw) for n in lab.nodes}
        assert all(r and r[2] != "up" and r[4] != "Established" for r in rows.values()), rows
        # Not for want of trying: each node's kernel dropped BIRD's SYNs for their digest.
        assert all(md5_failures(lab, n) > failures[n] for n in failures), failures

        # The passwords agree again: the same sessions come back, nothing restarted.
        bird.configure(config("s3cret"))
        wait_until(lambda: router_session_up(lab, gw), timeout=3 * HOLD_TIME,
                   what="every node's session back with the matching password")
        for n in lab.nodes:
            wait_until(lambda n=n: installed(n.name), what=f"{MD5_NET} back on {n.name}")

        # Rotation, as kubelet does it: the mounted secret file is rewritten and the
        # router gets the new password. Each node reads the file again within
        # SECRET_POLL and its session comes back, with neither agent nor ExaBGP restarted.
        speakers = {n.name: speaker_pid(lab, n.name) for n in lab.nodes}
        since = {name: float(p["since"]) for name, p in bird.protocols().items()
                 if name.startswith("peer_")}
        write_secret(lab, "bgp-secrets", "tor", "r0tated")
        bird.configure(config("r0tated"))
        wait_until(lambda: all(p["info"] == "Established" and float(p["since"]) > since[name]
                               for name, p in bird.protocols().items() if name in since),
                   timeout=SECRET_POLL + 3 * HOLD_TIME,
                   what="every node Established again with the rotated password")
        assert {n.name: speaker_pid(lab, n.name) for n in lab.nodes} == speakers
        for n in lab.nodes:
            wait_until(lambda n=n: installed(n.name), what=f"{MD5_NET} on {n.name} after rotation")
    finally:
        bird.stop()
        remove_peer(lab, "md5-tor")
