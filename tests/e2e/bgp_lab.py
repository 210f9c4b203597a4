"""Helpers for BGP end-to-end tests: agents with BGP networking in a lab, and their status.

Agents run with CALICO_NETWORKING_BACKEND=bird (Calico's default name; tortie's
speaker is ExaBGP), a short hold time so failures show within seconds, and
runtime files and BGP secrets under the lab's state dir.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lab import Lab
from lab import agents as lab_agents
from lab.bgp_cluster import NO_ENCAP_POOL as NO_ENCAP_POOL  # re-exported for the BGP tests
from tests.support import wait_until

from .pods import BIN, ctl

HOLD_TIME = 9


def agent_env(lab: Lab, node: str, **extra: str) -> dict[str, str]:
    return lab_agents.agent_env(lab, node, hold_time=HOLD_TIME, **extra)


def start_agent(lab: Lab, node: str, **extra: str):
    return lab_agents.start_agent(lab, node, hold_time=HOLD_TIME, **extra)


def wait_ready(lab: Lab, node: str, timeout: float = 30.0) -> None:
    lab_agents.wait_ready(lab, node, timeout)


def start_agents(lab: Lab) -> None:
    """Every node's agent, started together, then each one ready."""
    for n in lab.nodes:
        start_agent(lab, n.name)
    for n in lab.nodes:
        wait_ready(lab, n.name)


def node_status(lab: Lab, node: str, *args: str) -> str:
    res = lab.exec(node, [str(BIN / "ctl"), "node", "status", *args], check=False,
                   env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})
    return res.stdout + res.stderr


def table_rows(text: str) -> list[list[str]]:
    """The data rows of the tables in `ctl node status` output, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith("| PEER") and \
                not line.startswith("| NODE"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def established(lab: Lab, node: str) -> list[list[str]]:
    return [r for r in table_rows(node_status(lab, node)) if r[2] == "up"]


def routes(lab: Lab, node: str) -> str:
    return lab.exec(node, ["ip", "route"]).stdout


def apply(lab: Lab, manifest: str) -> str:
    return ctl(lab, ["apply", "-f", "-"], stdin=manifest)


def write_secret(lab: Lab, name: str, key: str, value: str) -> None:
    path = Path(lab.state_dir) / "secrets" / name / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value)


def speaker_pid(lab: Lab, node: str) -> int | None:
    """The PID of the ExaBGP that node's agent started (found by its config path)."""
    conf = f"/run/bgp/{node}/exabgp.conf"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "exabgp" in cmd and str(lab.state_dir) in cmd and cmd.rstrip().endswith(conf):
            return int(proc.name)
    return None




# Assign an address to a node (claiming its block's affinity), or release both, as the
# node's IPAM would: argv is claim|release IP NODE BLOCK HANDLE.
_EXTRA_BLOCK_IPAM = """
import sys
from datastore.config import load_env
from datastore.etcd import EtcdClient
from ipam.allocator import Allocator
action, ip, node, block, handle = sys.argv[1:]
a = Allocator(EtcdClient(load_env()))
if action == "claim":
    a.assign_ip(ip, node=node, handle_id=handle)
else:
    a.release_ips([ip])
    a.release_block_affinity(node, block)
"""


def extra_block(lab: Lab, action: str, node: str, ip: str, block: str,
                handle: str = "e2e-extra") -> None:
    """`claim` `ip` for `node` (so `node` announces `block`), or `release` both."""
    lab.exec(node, [sys.executable, "-c", _EXTRA_BLOCK_IPAM, action, ip, node, block, handle],
             env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})


def block_of(ip: str) -> str:
    return str(ipaddress.ip_network(f"{ip}/26", strict=False))


def node_ip(lab: Lab, name: str) -> str:
    return next(n.ip for n in lab.nodes if n.name == name)


def has_block_route(lab: Lab, node: str, block: str, via: str) -> bool:
    return any(line.startswith(f"{block} via {via} dev eth0 proto 80")
               for line in routes(lab, node).splitlines())


def wait_every_block_everywhere(lab: Lab, pods: Mapping[str, Any], nodes: Iterable[str],
                                how: str = "") -> None:
    """Until each of `nodes` routes every other node's pod block via that node
    (`pods`: node name -> a pod on it; `how` ends the timeout message)."""
    for n in nodes:
        for owner, pod in pods.items():
            if owner == n:
                continue
            wait_until(lambda n=n, owner=owner, pod=pod: has_block_route(
                  lab, n, block_of(pod.ip), node_ip(lab, owner)),
                  what=f"{n} to learn {owner}'s block {block_of(pod.ip)}{how}")
