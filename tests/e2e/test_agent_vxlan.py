"""The agent end to end in the lab: 3 nodes across 2 subnets, a VXLAN CrossSubnet pool.

Pods on different nodes reach each other; across subnets the underlay carries
VXLAN, within a subnet plain IP; natOutgoing masquerades a pod reaching an
address outside every pool with its node's address; an agent restart with an
unchanged cluster writes nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from lab import agents as lab_agents
from tests.support import wait_until

from .pods import BIN, Pod, add_pod, ctl, ping

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec:
  cidr: 10.244.0.0/16
  blockSize: 26
  vxlanMode: CrossSubnet
  natOutgoing: true
"""


def agent_env(lab, node: str) -> dict[str, str]:
    return lab_agents.agent_env(lab, node, backend="vxlan")


def start_agent(lab, node: str):
    return lab_agents.start_agent(lab, node, backend="vxlan")


def wait_ready(lab, node: str, timeout: float = 60.0) -> None:
    # A deadline, not a figure: at load averages of 15-40 an agent's start alone took
    # more than 30 s (15 of 50 restarts in a row failed here on 30 s, none on a write).
    lab_agents.wait_ready(lab, node, timeout=timeout)


@pytest.fixture(scope="module")
def cluster(lab_env):
    from .conftest import up_lab

    with up_lab(nodes=3, subnets=2) as lab:
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        for n in lab.nodes:
            start_agent(lab, n.name)
        for n in lab.nodes:
            wait_ready(lab, n.name)
        pods = {n.name: add_pod(lab, n.name, f"pod{n.name[-1]}") for n in lab.nodes}
        yield lab, pods


def route_table(lab, node: str) -> str:
    return lab.exec(node, ["ip", "route"]).stdout


def test_routes_have_calico_forms(cluster):
    lab, pods = cluster
    wait_until(lambda: pods["node1"].ip in route_table(lab, "node1"), what="workload route")
    table = route_table(lab, "node1")
    assert f"{pods['node1'].ip} dev {pods['node1'].iface} scope link" in table
    assert "blackhole 10.244." in table and "proto 80" in table
    # node2 is on the other subnet: via its VTEP over vxlan.calico; node3 shares node1's
    # subnet: directly via its node IP on eth0.
    node2, node3 = lab.nodes[1], lab.nodes[2]
    wait_until(lambda: "dev vxlan.calico" in route_table(lab, "node1"), what="vxlan route")
    table = route_table(lab, "node1")
    assert any(f"via {node3.ip} dev eth0 proto 80 onlink" in line for line in table.splitlines())
    assert any("dev vxlan.calico proto 80 onlink" in line for line in table.splitlines())
    neigh = lab.exec("node1", ["ip", "neigh", "show", "dev", "vxlan.calico"]).stdout
    assert "PERMANENT" in neigh
    fdb = lab.exec("node1", ["bridge", "fdb", "show", "dev", "vxlan.calico"]).stdout
    assert f"dst {node2.ip}" in fdb


def test_pods_ping_each_other(cluster):
    lab, pods = cluster
    matrix = {}
    for a in pods.values():
        for b in pods.values():
            if a is b:
                continue
            ok = False
            deadline = time.monotonic() + 20
            while not ok and time.monotonic() < deadline:
                ok = ping(a, b.ip)
            matrix[(a.name, b.name)] = ok
    assert all(matrix.values()), matrix


def capture(lab, iface_ns: str, iface: str, bpf: str, action, count: int = 1) -> str:
    proc = subprocess.Popen(["ip", "netns", "exec", iface_ns, "tcpdump", "-nli", iface, "-c",
                             str(count), bpf], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        time.sleep(0.7)  # let tcpdump attach before traffic flows
        action()
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_underlay_carries_vxlan_across_subnets_and_plain_ip_within(cluster):
    lab, pods = cluster
    p1: Pod = pods["node1"]
    across = capture(lab, lab.netns_of("node1"), "eth0", "udp port 4789",
                     lambda: ping(p1, pods["node2"].ip, count=2))
    assert "VXLAN" in across or "4789" in across, across
    within = capture(lab, lab.netns_of("node1"), "eth0",
                     f"icmp and host {pods['node3'].ip}",
                     lambda: ping(p1, pods["node3"].ip, count=2))
    assert f"{p1.ip} > {pods['node3'].ip}" in within, within


def test_nat_outgoing_uses_the_node_address(cluster):
    lab, pods = cluster
    p1, node1 = pods["node1"], lab.nodes[0]
    outside = lab.subnets[1].gateway  # the router's address on the other subnet
    seen = capture(lab, lab.router_netns, "any", f"icmp and dst host {outside}",
                   lambda: ping(p1, outside, count=2))
    assert f"{node1.ip} > {outside}" in seen, seen
    assert p1.ip not in seen


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _agent_pid(lab, node: str) -> int:
    procs = [p for p in lab.status()["processes"] if p["name"] == f"agent-{node}" and p["alive"]]
    return int(procs[-1]["pid"])


def test_etcd_outage_keeps_dataplane_and_recovers(cluster):
    lab, pods = cluster
    routes = route_table(lab, "node1")
    lab.stop_etcd(1)
    try:
        def not_ready() -> bool:
            res = lab.exec("node1", [str(BIN / "tortie-agent"), "--ready"], check=False,
                           env=agent_env(lab, "node1"))
            return res.returncode == 1 and "datastore" in res.stdout
        wait_until(not_ready, timeout=30, what="readiness to drop with the datastore")
        pid = _agent_pid(lab, "node1")
        cpu = _cpu_seconds(pid)
        time.sleep(3)
        # Reconnecting with backoff, not spinning: well under a CPU-second in 3 s.
        assert _cpu_seconds(pid) - cpu < 1.0
        assert route_table(lab, "node1") == routes  # the dataplane is left exactly as it was
        assert ping(pods["node1"], pods["node2"].ip)
    finally:
        lab.start_etcd(1)
    wait_ready(lab, "node1", timeout=60)
    assert route_table(lab, "node1") == routes


def test_restart_with_unchanged_cluster_writes_nothing(cluster):
    lab, _ = cluster
    # Nothing may be left for the old agent to write: a route it had not written yet
    # (another node's block, a pod just added) is rightly written by the new one.
    lab_agents.wait_settled(lab, "node1")
    before = lab.exec("node1", ["ip", "route"]).stdout
    rules_before = lab.exec("node1", ["iptables-save", "-t", "nat"]).stdout
    for proc in [p for p in lab.status()["processes"] if p["name"] == "agent-node1"]:
        subprocess.run(["kill", "-TERM", str(proc["pid"])], check=True)
    time.sleep(1.0)
    assert lab.exec("node1", ["ip", "route"]).stdout == before  # SIGTERM leaves routes
    start_agent(lab, "node1")
    wait_ready(lab, "node1")
    writes = [f"{kind} {count:g}" for kind, count in lab_agents.kernel_writes(lab, "node1").items()]
    if writes:  # say which objects: each write is logged at INFO ("route: replace ...")
        log = (Path(lab.state_dir) / "agent-node1.log").read_text(errors="replace").splitlines()
        writes += [line for line in log if "route: " in line or "dataplane applied" in line][-20:]
    assert writes == [], "\n".join(writes)
    assert lab.exec("node1", ["ip", "route"]).stdout == before
    rules_after = lab.exec("node1", ["iptables-save", "-t", "nat"]).stdout
    assert rules_before.count("cali-") == rules_after.count("cali-")
