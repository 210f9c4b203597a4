"""The chart's layout: `tortie-bgp` as a separate process (the sidecar container) and the
agent with TORTIE_BGP_SIDECAR=true following its learned routes over the control socket,
and telling the sidecar, through a file in the run directory (agent/route_problems.py),
which of them it could not install."""

from __future__ import annotations

import pytest

from lab import Lab, agents
from lab.routers import frr_tor, start_frr
from tests.support import need, wait_until

from .bgp_lab import (
    HOLD_TIME,
    NO_ENCAP_POOL,
    apply,
    block_of,
    established,
    node_status,
    routes,
)
from .pods import add_pod, ping
from .test_bgp_nexthop import BAD_NET, BAD_NEXT_HOP, TOR_AS, UNREACHABLE
from .test_bgp_peers import global_peer

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = NO_ENCAP_POOL


def start_with_sidecar(lab: Lab, node: str) -> None:
    """tortie-agent with TORTIE_BGP_SIDECAR=true and tortie-bgp, with one env, as the chart."""
    env = agents.agent_env(lab, node, hold_time=HOLD_TIME, TORTIE_BGP_SIDECAR="true")
    lab.start_process(node, [str(agents.BIN / "tortie-agent")], role="agent",
                      name=f"agent-{node}", env=env)
    lab.start_process(node, [str(agents.BIN / "tortie-bgp")], role="bgp", name=f"bgp-{node}",
                      env=env)


def test_sidecar_speaks_bgp_and_the_agent_installs_what_it_learns(make_lab):
    lab = make_lab(nodes=2, subnets=1)
    apply(lab, POOL)
    agents.start_agent(lab, "node1", hold_time=HOLD_TIME)
    start_with_sidecar(lab, "node2")
    for n in ("node1", "node2"):
        agents.wait_ready(lab, n)
    pods = {n: add_pod(lab, n, f"pod{n[-1]}") for n in ("node1", "node2")}
    wait_until(lambda: len(established(lab, "node2")) == 1, what="node2's sidecar session up")
    assert "tortie process is running." in node_status(lab, "node2")
    node1, node2 = (n.ip for n in lab.nodes)
    block1, block2 = block_of(pods["node1"].ip), block_of(pods["node2"].ip)
    # node2's agent programs what its sidecar learned; node1 learns what the sidecar announces.
    wait_until(lambda: f"{block1} via {node1} dev eth0 proto 80" in routes(lab, "node2"),
               what="node1's block on node2, from the sidecar")
    wait_until(lambda: f"{block2} via {node2} dev eth0 proto 80" in routes(lab, "node1"),
               what="node2's block on node1")
    assert ping(pods["node2"], pods["node1"].ip) or ping(pods["node2"], pods["node1"].ip)


def test_sidecar_status_lists_the_learned_routes_the_agent_left_out(make_lab):
    """`ctl node status -o wide` asks the sidecar; the agent's problems must be there."""
    need("vtysh", files={"/usr/lib/frr/bgpd": "frr", "/usr/lib/frr/zebra": "frr"})
    lab = make_lab(nodes=1, subnets=1)
    apply(lab, POOL)
    start_with_sidecar(lab, "node1")
    agents.wait_ready(lab, "node1")
    node_ip, tor = lab.nodes[0].ip, lab.subnets[0].gateway
    # A ToR in the router namespace sends BAD_NET with a next hop of its own choosing,
    # which node1 reaches through its default route until its routing says otherwise.
    frr = start_frr(lab, frr_tor(tor, TOR_AS, [(node_ip, 64512)], [BAD_NET],
                                 hold_time=HOLD_TIME, update_source=tor), name="sc-frr")
    try:
        frr.vtysh("configure terminal", "route-map SC-OUT permit 10",
                  f"set ip next-hop {BAD_NEXT_HOP}", "exit", f"router bgp {TOR_AS}",
                  "address-family ipv4 unicast", f"neighbor {node_ip} route-map SC-OUT out")
        apply(lab, global_peer("sc-tor", tor, TOR_AS))

        def installed() -> bool:
            return any(line.startswith(f"{BAD_NET} ") for line in
                       routes(lab, "node1").splitlines())
        wait_until(installed, timeout=4 * HOLD_TIME, what=f"{BAD_NET} installed on node1")
        assert "not installed" not in node_status(lab, "node1", "-o", "wide")

        lab.exec("node1", ["ip", "route", "add", "unreachable", UNREACHABLE])
        problem = (f"learned route {BAD_NET}: next hop {BAD_NEXT_HOP}: the main table's route "
                   f"to it ({UNREACHABLE}) is unreachable")

        def reported() -> str | None:
            status = node_status(lab, "node1", "-o", "wide")
            return status if problem in status else None
        status = wait_until(reported, timeout=4 * HOLD_TIME,
                            what="the sidecar's status to list the agent's problem")
        assert "Learned routes not installed:" in status, status
        assert not installed()

        # Routed again: installed, and the list is empty once more.
        lab.exec("node1", ["ip", "route", "del", "unreachable", UNREACHABLE])
        wait_until(installed, timeout=4 * HOLD_TIME, what=f"{BAD_NET} installed again")
        wait_until(lambda: "not installed" not in node_status(lab, "node1", "-o", "wide"),
                   what="the problem to leave the sidecar's status")
    finally:
        frr.stop()
