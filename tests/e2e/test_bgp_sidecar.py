"""The chart's layout: `tortie-bgp` as a separate process (the sidecar container) and the
agent with TORTIE_BGP_SIDECAR=true following its learned routes over the control socket."""

from __future__ import annotations

import pytest

from lab import agents
from tests.support import wait_until

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

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = NO_ENCAP_POOL


def test_sidecar_speaks_bgp_and_the_agent_installs_what_it_learns(make_lab):
    lab = make_lab(nodes=2, subnets=1)
    apply(lab, POOL)
    agents.start_agent(lab, "node1", hold_time=HOLD_TIME)
    env = agents.agent_env(lab, "node2", hold_time=HOLD_TIME, TORTIE_BGP_SIDECAR="true")
    lab.start_process("node2", [str(agents.BIN / "tortie-agent")], role="agent",
                      name="agent-node2", env=env)
    lab.start_process("node2", [str(agents.BIN / "tortie-bgp")], role="bgp", name="bgp-node2",
                      env=env)
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
