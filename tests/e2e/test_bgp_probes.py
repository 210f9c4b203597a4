"""`tortie-bgp --live` / `--ready` against real daemons in a lab: node2 runs the chart's
layout (agent with TORTIE_BGP_SIDECAR=true plus tortie-bgp), node1 an agent with in-process
BGP as its only peer."""

from __future__ import annotations

import subprocess

import pytest

from lab import agents
from tests.support import wait_until

from .bgp_lab import HOLD_TIME, NO_ENCAP_POOL, apply, node_ip

pytestmark = [pytest.mark.slow, pytest.mark.root]


def probe(lab, node: str, kind: str) -> subprocess.CompletedProcess:
    return lab.exec(node, [str(agents.BIN / "tortie-bgp"), f"--{kind}"], check=False,
                    env=agents.agent_env(lab, node, hold_time=HOLD_TIME))


def test_probes_follow_the_daemon_and_its_session(make_lab):
    lab = make_lab(nodes=2, subnets=1)
    apply(lab, NO_ENCAP_POOL)
    env = agents.agent_env(lab, "node2", hold_time=HOLD_TIME, TORTIE_BGP_SIDECAR="true")
    lab.start_process("node2", [str(agents.BIN / "tortie-agent")], role="agent",
                      name="agent-node2", env=env)

    # No tortie-bgp yet: neither live nor ready, and the probe says why.
    for kind in ("live", "ready"):
        res = probe(lab, "node2", kind)
        assert res.returncode == 1
        assert res.stdout.startswith(f"tortie-bgp is not {kind}: no BGP daemon answers on "
                                     "@tortie-bgp"), res

    lab.start_process("node2", [str(agents.BIN / "tortie-bgp")], role="bgp", name="bgp-node2",
                      env=env)
    wait_until(lambda: probe(lab, "node2", "live").returncode == 0, what="tortie-bgp live")
    # node1 has not registered yet, so node2 has no peer: ready (calico-node's grace).
    alone = wait_until(lambda: (r := probe(lab, "node2", "ready")).returncode == 0 and r,
                       what="node2's BGP ready with no peers")
    assert alone.stdout == "tortie-bgp is ready: no BGP peers configured\n"

    node1 = agents.start_agent(lab, "node1", hold_time=HOLD_TIME)
    ready = wait_until(lambda: (r := probe(lab, "node2", "ready")).returncode == 0
                       and "established" in r.stdout and r,
                       what="node2's BGP ready once node1's session is up")
    assert ready.stdout == "tortie-bgp is ready: 1 of 1 BGP sessions established\n"

    # The peer goes away: not ready again, naming it; the daemon itself stays live.
    node1.terminate()
    node1.wait(timeout=30)
    down = wait_until(lambda: (r := probe(lab, "node2", "ready")).returncode == 1 and r,
                      what="node2 not ready after node1 stopped")
    assert down.stdout.startswith("tortie-bgp is not ready: BGP not established with "
                                  f"{node_ip(lab, 'node1')}"), down
    live = probe(lab, "node2", "live")
    assert live.returncode == 0 and live.stdout == "tortie-bgp is live: BGP speaker running\n"
