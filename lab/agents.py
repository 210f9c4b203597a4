"""tortie-agent on lab nodes: the environment a node's agent runs with, start and readiness.

Owns the lab's agent conventions: every agent registers under its lab node's
name, autodetects its address, reads the lab's etcd, keeps its runtime files
(ExaBGP's config and log; the CNI MTU file and the endpoint status files, per
node where that node's plugin reads them) and BGP secrets under the lab's
state dir, serves health on the node's own loopback, and is recorded by the
lab so `down()` stops it (and with it its ExaBGP) by PID.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lab.cluster import Lab
from lab.errors import LabError
from lab.probe import in_netns
from service.health import DEFAULT_PORT as HEALTH_PORT
from service.health import probe

BIN = Path(sys.executable).parent


def agent_env(lab: Lab, node: str, *, backend: str = "bird", hold_time: int = 9,
              **extra: str) -> dict[str, str]:
    state = Path(lab.state_dir)
    return {
        "ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints), "NODENAME": node, "IP": "autodetect",
        "CALICO_NETWORKING_BACKEND": backend, "FELIX_HEALTHENABLED": "true",
        "NO_DEFAULT_POOLS": "true", "TORTIE_BGP_HOLD_TIME": str(hold_time),
        "TORTIE_RUN_DIR": str(state / "run"), "TORTIE_BGP_SECRETS_DIR": str(state / "secrets"),
        "CALICO_NODENAME_FILE": str(state / f"{node}.nodename"),
        "CALICO_MTU_FILE": str(state / "cni" / node / "mtu"),  # = lab.pods.mtu_file
        # <prefix>/endpoint-status = lab.pods.endpoint_status_dir
        "FELIX_ENDPOINTSTATUSPATHPREFIX": str(state / "cni" / node),
        **extra,
    }


def start_agent(lab: Lab, node: str, **env: str) -> subprocess.Popen:
    """Start tortie-agent on `node` (keyword arguments go to agent_env)."""
    return lab.start_process(node, [str(BIN / "tortie-agent")], role="agent",
                             name=f"agent-{node}", env=agent_env(lab, node, **env))


def start_agents(lab: Lab, nodes: list[str], **env: str) -> None:
    """Start tortie-agent on each of `nodes`, then wait until every one is ready (they
    start together, so the lab comes up in the time of the slowest, not of the sum)."""
    for node in nodes:
        start_agent(lab, node, **env)
    for node in nodes:
        wait_ready(lab, node)


def is_ready(lab: Lab, node: str) -> bool:
    """Whether the agent on `node` reports ready.

    `tortie-agent --ready` asks the same URL, but a Python process per node every
    0.2 s was a large part of the load while 50 agents started; this is one request
    from a socket made inside the node's namespace (the agent's default health
    address: agent_env sets none)."""
    with in_netns(lab.netns_of(node)):
        ready, _reason = probe("ready", "localhost", HEALTH_PORT, timeout=1.0)
    return ready


def wait_ready(lab: Lab, node: str, timeout: float = 30.0) -> None:
    """Until the agent on `node` reports ready; LabError with its log tail otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_ready(lab, node):
            return
        time.sleep(0.2)
    log = Path(lab.state_dir) / f"agent-{node}.log"
    tail = log.read_text()[-3000:] if log.exists() else "(no log)"
    raise LabError(f"agent on {node} not ready after {timeout:.0f}s:\n{tail}")


def kernel_writes(lab: Lab, node: str) -> dict[str, float]:
    """The kernel writes the running agent on `node` has made, by kind (its
    `tortie_dataplane_kernel_writes_total`); {} when it has made none."""
    metrics = lab.exec(node, ["curl", "-sf", "http://localhost:9099/metrics"]).stdout
    return {line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("tortie_dataplane_kernel_writes_total{")}


def wait_settled(lab: Lab, node: str, quiet: float = 2.0, timeout: float = 60.0) -> None:
    """Until the agent on `node` has made no kernel write for `quiet` seconds.

    Readiness says an apply succeeded, not that the agent has caught up: another
    node's block or a pod added just before can still be on its way to this
    kernel. A test that restarts an agent "with nothing changed" must wait for
    this first, or the new agent rightly writes what the old one had not yet.
    """
    deadline = time.monotonic() + timeout
    last = kernel_writes(lab, node)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = kernel_writes(lab, node)
        if now == last:
            return
        last = now
    raise LabError(f"agent on {node} still writing after {timeout:.0f}s: {last}")
