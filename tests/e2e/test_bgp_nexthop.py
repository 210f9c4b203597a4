"""Next hops through a gateway, end to end: a ToR peered where half the nodes reach it
only through their default gateway (issue 19, item 4), or through an ECMP default route.

Lab: two subnets, one node on each (node1 on subnet 0, node2 on subnet 1); the
ToR runs in the lab's router namespace, which routes between the subnets, and
is peered at its subnet-0 address (eBGP multihop, AS 65001). Its next hop is
that address: on-link for node1, behind the gateway for node2, where the
kernel refuses `via <ToR>` and tortie must write `via <node2's gateway>`.
The ToR installs the nodes' blocks in the router namespace (FRR's zebra,
BIRD's kernel protocol; GoBGP writes no kernel routes, so for it the test
routes the pods' blocks there itself), so a pod's packet to the ToR's prefix
finds its way back; 198.51.100.1, on the router's loopback, is the address
inside it.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator

import pytest

from lab import Lab
from lab.routers import (
    Bird,
    Frr,
    Gobgp,
    bird_peer,
    frr_tor,
    gobgp_config,
    start_bird,
    start_frr,
    start_gobgp,
)
from tests.support import need, wait_until

from .bgp_lab import HOLD_TIME, block_of, node_status, routes
from .conftest import up_lab
from .pods import Pod, add_pod, ping
from .test_bgp_peers import global_peer, remove_peer, start_cluster

pytestmark = [pytest.mark.slow, pytest.mark.root]

TOR_AS = 65001
TOR_NET = "198.51.100.0/24"
TOR_ADDRESS = "198.51.100.1"  # inside TOR_NET, on the router namespace's loopback
BAD_NET = "203.0.113.0/24"  # announced with a next hop node2's routing marks unreachable
BAD_NEXT_HOP = "192.0.2.99"
UNREACHABLE = "192.0.2.0/24"


@pytest.fixture(scope="module")
def two_subnets(lab_env: None) -> Iterator[tuple[Lab, dict[str, Pod]]]:
    need("bird", "birdc", "vtysh", files={"/usr/lib/frr/bgpd": "frr", "/usr/lib/frr/zebra": "frr"})
    with up_lab(nodes=2, subnets=2) as lab:
        assert [n.subnet for n in lab.nodes] == [0, 1], lab.nodes
        lab.exec("router", ["ip", "addr", "add", f"{TOR_ADDRESS}/32", "dev", "lo"])
        start_cluster(lab)
        pods = {n.name: add_pod(lab, n.name, f"nh{n.name[-1]}") for n in lab.nodes}
        yield lab, pods


def tor_address(lab: Lab) -> str:
    return lab.subnets[0].gateway


def start_tor(lab: Lab, kind: str, networks: list[str]) -> Frr | Bird | Gobgp:
    gw = tor_address(lab)
    if kind == "gobgp":
        need("gobgpd", "gobgp")
        return start_gobgp(lab, gobgp_config(gw, TOR_AS, [(n.ip, 64512) for n in lab.nodes],
                                             hold_time=HOLD_TIME), name="nh-gobgp",
                           announce=networks)
    if kind == "frr":
        return start_frr(lab, frr_tor(gw, TOR_AS, [(n.ip, 64512) for n in lab.nodes], networks,
                                      hold_time=HOLD_TIME, update_source=gw), name="nh-frr")
    return start_bird(lab, bird_config(lab, networks), name="nh-bird")


def bird_config(lab: Lab, networks: list[str]) -> str:
    gw = tor_address(lab)
    return bird_peer(gw, TOR_AS, [(n.ip, 64512, gw) for n in lab.nodes], networks,
                     hold_time=HOLD_TIME, multihop=True, install_learned=True)


def tor_route(lab: Lab, node: str, prefix: str = TOR_NET) -> str | None:
    return next((line for line in routes(lab, node).splitlines()
                 if line.startswith(f"{prefix} ")), None)


def expected_route(lab: Lab, node: str) -> str:
    """Where the ToR's prefix must go: the ToR itself on its subnet, else the node's gateway."""
    n = next(n for n in lab.nodes if n.name == node)
    via = tor_address(lab) if n.subnet == 0 else n.gateway
    return f"{TOR_NET} via {via} dev eth0 proto 80"


@pytest.mark.parametrize("kind", ["frr", "bird", "gobgp"])
def test_tor_prefix_reaches_every_node_through_its_gateway(two_subnets, kind: str) -> None:
    lab, pods = two_subnets
    tor = start_tor(lab, kind, [TOR_NET])
    apply_peer(lab)
    # GoBGP keeps what it learns out of the kernel: the way back to the pods is routed here.
    way_back = [(block_of(p.ip), next(n.ip for n in lab.nodes if n.name == p.node))
                for p in pods.values()] if isinstance(tor, Gobgp) else []
    for block, node_ip in way_back:
        lab.exec("router", ["ip", "route", "replace", block, "via", node_ip])
    try:
        for n in lab.nodes:
            want = expected_route(lab, n.name)
            wait_until(lambda n=n, want=want: (tor_route(lab, n.name) or "").startswith(want),
                       timeout=4 * HOLD_TIME, what=f"{want!r} on {n.name}")
        for pod in pods.values():
            wait_until(lambda pod=pod: ping(pod, TOR_ADDRESS),
                       what=f"{pod.name} on {pod.node} to reach {TOR_ADDRESS}")
        # Nobody reports a problem: every next hop resolved.
        for n in lab.nodes:
            assert "not installed" not in node_status(lab, n.name, "-o", "wide")

        # Withdrawn at the ToR: gone everywhere.
        if isinstance(tor, Frr):
            tor.vtysh("configure terminal", f"router bgp {TOR_AS}", "address-family ipv4 unicast",
                      f"no network {TOR_NET}")
        elif isinstance(tor, Gobgp):
            tor.withdraw(TOR_NET)
        else:
            tor.configure(bird_config(lab, []))
        for n in lab.nodes:
            wait_until(lambda n=n: tor_route(lab, n.name) is None, timeout=4 * HOLD_TIME,
                       what=f"{TOR_NET} withdrawn on {n.name}")
    finally:
        for block, _ in way_back:
            lab.exec("router", ["ip", "route", "del", block], check=False)
        tor.stop()
        remove_peer(lab, "nh-tor")


def test_tor_prefix_through_an_ecmp_default_route_takes_both_gateways(two_subnets) -> None:
    """node2's default route is ECMP over two gateways (the router's address on its subnet
    and a second one added to the router for this test): the ToR's prefix, whose next hop
    node2 reaches through that route, is installed over the same two paths, as BIRD's
    recursive gateways install it, and pods reach the ToR through it."""
    lab, pods = two_subnets
    n = next(n for n in lab.nodes if n.name == "node2")
    subnet = lab.subnets[n.subnet]
    network = ipaddress.ip_network(subnet.cidr)
    second = str(network.broadcast_address - 1)  # above every lab host
    lab.exec("router", ["ip", "addr", "add", f"{second}/{network.prefixlen}", "dev",
                        subnet.bridge])
    lab.exec(n.name, ["ip", "route", "replace", "default", "nexthop", "via", n.gateway, "dev",
                      "eth0", "nexthop", "via", second, "dev", "eth0"])
    tor = start_tor(lab, "frr", [TOR_NET])
    try:
        apply_peer(lab)
        want = sorted([f"nexthop via {n.gateway} dev eth0 weight 1",
                       f"nexthop via {second} dev eth0 weight 1"])

        def paths() -> list[str] | None:
            lines = [" ".join(line.split()) for line in routes(lab, n.name).splitlines()]
            if f"{TOR_NET} proto 80" not in lines:
                return None
            at = lines.index(f"{TOR_NET} proto 80")
            return sorted(lines[at + 1:at + 3])
        assert wait_until(lambda: paths() == want, timeout=4 * HOLD_TIME,
                          what=f"{TOR_NET} over both gateways on {n.name}")
        assert wait_until(lambda: ping(pods[n.name], TOR_ADDRESS),
                          what=f"{pods[n.name].name} to reach {TOR_ADDRESS}")
        assert "not installed" not in node_status(lab, n.name, "-o", "wide")
        # One gateway again: the route follows it.
        lab.exec(n.name, ["ip", "route", "replace", "default", "via", n.gateway, "dev", "eth0"])
        assert wait_until(lambda: (tor_route(lab, n.name) or "").startswith(
            expected_route(lab, n.name)), what=f"{TOR_NET} back to one gateway")
    finally:
        lab.exec(n.name, ["ip", "route", "replace", "default", "via", n.gateway, "dev", "eth0"])
        lab.exec("router", ["ip", "addr", "del", f"{second}/{network.prefixlen}", "dev",
                            subnet.bridge], check=False)
        tor.stop()
        remove_peer(lab, "nh-tor")


def apply_peer(lab: Lab) -> None:
    from .bgp_lab import apply
    apply(lab, global_peer("nh-tor", tor_address(lab), TOR_AS))


def pod_reachable_after(lab: Lab, node: str, name: str, witness: Pod) -> tuple[Pod, float]:
    """Create a pod; seconds until `witness` (a pod on the same node) reaches it."""
    start = time.monotonic()
    pod = add_pod(lab, node, name)
    wait_until(lambda: ping(witness, pod.ip, wait=1), what=f"{witness.name} to reach {name}")
    return pod, time.monotonic() - start


def test_unresolvable_route_is_reported_and_holds_nothing_back(two_subnets) -> None:
    lab, pods = two_subnets
    node = "node2"
    # The ToR sends BAD_NET to node2 with a next hop of its own choosing.
    tor = start_frr(lab, frr_tor(tor_address(lab), TOR_AS, [(n.ip, 64512) for n in lab.nodes],
                                 [TOR_NET, BAD_NET], hold_time=HOLD_TIME,
                                 update_source=tor_address(lab)), name="nh-frr")
    node2_ip = next(n.ip for n in lab.nodes if n.name == node)
    tor.vtysh("configure terminal", f"ip prefix-list NH-BAD seq 5 permit {BAD_NET}",
              "route-map NH-OUT permit 10", "match ip address prefix-list NH-BAD",
              f"set ip next-hop {BAD_NEXT_HOP}", "exit", "route-map NH-OUT permit 20", "exit",
              f"router bgp {TOR_AS}", "address-family ipv4 unicast",
              f"neighbor {node2_ip} route-map NH-OUT out")
    apply_peer(lab)
    try:
        # Resolved through the default route first: the same session, no problem.
        wait_until(lambda: tor_route(lab, node, BAD_NET), timeout=4 * HOLD_TIME,
                   what=f"{BAD_NET} on {node} through its default route")
        clean = [pod_reachable_after(lab, node, f"nhclean{i}", pods[node])[1] for i in range(2)]
        # node2's own routing now says the next hop is unreachable: reported, left out.
        lab.exec(node, ["ip", "route", "add", "unreachable", UNREACHABLE])

        def reported() -> str | None:
            status = node_status(lab, node, "-o", "wide")
            return status if BAD_NET in status else None
        status = wait_until(reported, timeout=4 * HOLD_TIME,
                            what=f"{node} to report {BAD_NET} as not installed")
        assert "Learned routes not installed:" in status, status
        assert (f"learned route {BAD_NET}: next hop {BAD_NEXT_HOP}: the main table's route to "
                f"it ({UNREACHABLE}) is unreachable") in status, status
        wait_until(lambda: tor_route(lab, node, BAD_NET) is None,
                   what=f"{BAD_NET} removed from {node}")
        # The rest of the dataplane goes on: the good prefix stays, a new pod is reachable.
        assert (tor_route(lab, node) or "").startswith(expected_route(lab, node))
        assert ping(pods[node], TOR_ADDRESS) or ping(pods[node], TOR_ADDRESS)
        troubled = [pod_reachable_after(lab, node, f"nhtrouble{i}", pods[node])[1]
                    for i in range(2)]
        print(f"\npod reachable after {', '.join(f'{t:.2f}' for t in clean)} s without the "
              f"problem, {', '.join(f'{t:.2f}' for t in troubled)} s with it (ratio of the "
              f"means {sum(troubled) / sum(clean):.2f})")
        # The next hop is routed again: the route is back, the problem gone.
        lab.exec(node, ["ip", "route", "del", "unreachable", UNREACHABLE])
        wait_until(lambda: tor_route(lab, node, BAD_NET) is not None, timeout=4 * HOLD_TIME,
                   what=f"{BAD_NET} installed once its next hop is routed")
        assert BAD_NET not in node_status(lab, node, "-o", "wide")
    finally:
        lab.exec(node, ["ip", "route", "del", UNREACHABLE], check=False)
        tor.stop()
        remove_peer(lab, "nh-tor")
