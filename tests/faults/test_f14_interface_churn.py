"""F14: interface churn on a node with a running agent (Felix FV `routes_test.go` flaps;
Felix #595 and FRR #1221, netlink buffer overruns).

One lab node (VXLAN pool; no BGP: this is about the node's own workload routes), its
agent, two pods wired by the real CNI plugin. Then, in the node's namespace:

* flaps: pod A's `cali*` interface taken down, renamed away (to a name the agent does
  not own), renamed back and brought up, 25 times: 100 link operations paced over
  10 s. Taking a link down makes the kernel drop its routes, so the agent must put
  the pod's /32 back each time it comes up.
* a burst: WorkloadEndpoints for 50 interfaces that do not exist yet are written
  first (the agent wants their routes but cannot program them), then 500 veths with
  `cali*` host sides (peers in the same namespace, named so the agent ignores them)
  are created by one `ip -batch`, about 1,000 link events at once.
* vanishing: 25 of those endpoints deleted from etcd while their interfaces stay,
  and 250 of the veths deleted (13 of them still with an endpoint).

After each step the routes must be exactly right: the set of `/32 dev cali*` routes
in the kernel is the set of (endpoint address, interface) over the endpoints whose
interface exists, nothing more; the agent is the same process and logged no
traceback. Whether the burst overran the agent's link monitor socket (ENOBUFS) is
printed from its `tortie_dataplane_resyncs_total{kind="link-overrun"}`; that an
overrun leads to a resync and not a dead monitor is forced and checked in
tests/dataplane/test_sysctls_monitor.py (a 4 KiB receive buffer) and
tests/unit/test_agent_loop.py (the agent's resync).

Printed: operations and how long they took, and the time from the last operation
until the kernel's routes were exactly right (polled every 50 ms).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lab import Lab
from lab import agents as lab_agents
from tests.e2e.conftest import TOOLS, up_lab
from tests.e2e.pods import Pod, add_pod, ctl
from tests.e2e.test_agent_vxlan import POOL
from tests.support import need, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]

NODE = "node1"
FLAP_CYCLES = 25  # 4 operations each: 100
FLAP_PERIOD = 0.1  # one operation every 100 ms: 100 in 10 s
BURST = 500
WITH_ENDPOINTS = 50  # of the burst's interfaces, the first ones
ENDPOINTS_DELETED = 25  # of those, the first ones (their interfaces stay)
VETHS_DELETED = 250  # the last ones of the burst (13 of them still have an endpoint)


def burst_iface(i: int) -> str:
    return f"calif14{i:08d}"  # 15 characters, IFNAMSIZ - 1


def burst_ip(i: int) -> str:
    return f"10.244.250.{i + 1}"  # in the pool; the agent routes an endpoint's addresses


def endpoint(i: int) -> str:
    return (f"apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\n"
            f"metadata: {{name: {NODE}-k8s-f14burst{i}-eth0, namespace: default}}\n"
            f"spec: {{node: {NODE}, orchestrator: k8s, pod: f14burst{i}, endpoint: eth0, "
            f"interfaceName: {burst_iface(i)}, ipNetworks: [{burst_ip(i)}/32]}}\n")


def manifest(indices: range) -> str:
    return "---\n".join(endpoint(i) for i in indices)


def ip_batch(lab: Lab, lines: list[str]) -> None:
    subprocess.run(["ip", "-n", lab.netns_of(NODE), "-batch", "-"], input="".join(lines),
                   text=True, check=True, capture_output=True)


def workload_routes(lab: Lab) -> set[tuple[str, str]]:
    """(destination, interface) of every route on a `cali*` interface in the node."""
    out = set()
    for line in lab.exec(NODE, ["ip", "-o", "route", "show", "table", "main"]).stdout.splitlines():
        words = line.split()
        if "dev" in words and words[words.index("dev") + 1].startswith("cali"):
            out.add((words[0], words[words.index("dev") + 1]))
    return out


def links(lab: Lab) -> set[str]:
    return {line.split(":")[1].strip().split("@")[0]
            for line in lab.exec(NODE, ["ip", "-o", "link", "show"]).stdout.splitlines()}


def settle_time(lab: Lab, expected: set[tuple[str, str]], since: float, what: str) -> float:
    """Seconds from `since` until the node's workload routes are exactly `expected`."""
    wait_until(lambda: workload_routes(lab) == expected, timeout=30, interval=0.05, what=what)
    return time.monotonic() - since


def overruns(lab: Lab) -> int:
    metrics = lab.exec(NODE, ["curl", "-sf", "http://localhost:9099/metrics"]).stdout
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in metrics.splitlines()
               if line.startswith('tortie_dataplane_resyncs_total{kind="link-overrun"}'))


def agent_pid(lab: Lab) -> int:
    alive = [p for p in lab.status()["processes"] if p["name"] == f"agent-{NODE}" and p["alive"]]
    assert alive, "the agent is not running"
    return int(alive[-1]["pid"])


def flap(lab: Lab, pod: Pod) -> tuple[int, float]:
    """Down, rename away, rename back, up, FLAP_CYCLES times on a grid of FLAP_PERIOD
    (the rate is the fault being injected); the operations done and their duration."""
    away = "f14away0"
    cycle = [["set", pod.iface, "down"], ["set", pod.iface, "name", away],
             ["set", away, "name", pod.iface], ["set", pod.iface, "up"]]
    ns, done, start = lab.netns_of(NODE), 0, time.monotonic()
    for _ in range(FLAP_CYCLES):
        for op in cycle:
            subprocess.run(["ip", "-n", ns, "link", *op], check=True, capture_output=True)
            done += 1
            time.sleep(max(0.0, start + done * FLAP_PERIOD - time.monotonic()))
    return done, time.monotonic() - start


def test_interface_churn_leaves_exactly_the_right_routes(tmp_path: Path) -> None:
    need(*TOOLS, root=True, root_for="the lab creates network namespaces")
    with up_lab(nodes=1, subnets=1) as lab:
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        lab_agents.start_agent(lab, NODE, backend="vxlan")
        lab_agents.wait_ready(lab, NODE)
        pods = [add_pod(lab, NODE, f"f14pod{i}") for i in (1, 2)]
        pid = agent_pid(lab)
        pod_routes = {(f"{p.ip}", p.iface) for p in pods}
        settle_time(lab, pod_routes, time.monotonic(), "the pods' routes")

        # Flaps.
        ops, took = flap(lab, pods[0])
        after_flaps = settle_time(lab, pod_routes, time.monotonic(),
                                  "the pods' routes after the flaps")

        # The burst, its endpoints written first.
        ctl(lab, ["apply", "-f", "-"], stdin=manifest(range(WITH_ENDPOINTS)))
        before = overruns(lab)
        lines = [f"link add {burst_iface(i)} type veth peer name f14p{i}\n"
                 f"link set {burst_iface(i)} up\nlink set f14p{i} up\n" for i in range(BURST)]
        start = time.monotonic()
        ip_batch(lab, lines)
        made = time.monotonic()
        burst_routes = {(burst_ip(i), burst_iface(i)) for i in range(WITH_ENDPOINTS)}
        after_burst = settle_time(lab, pod_routes | burst_routes, made,
                                  "the burst's endpoints' routes")
        burst_overruns = overruns(lab) - before

        # Vanishing endpoints and interfaces.
        ctl(lab, ["delete", "-f", "-"], stdin=manifest(range(ENDPOINTS_DELETED)))
        ip_batch(lab, [f"link del {burst_iface(i)}\n" for i in range(BURST - VETHS_DELETED, BURST)])
        gone = time.monotonic()
        present = links(lab)
        kept = {(burst_ip(i), burst_iface(i)) for i in range(ENDPOINTS_DELETED, WITH_ENDPOINTS)
                if burst_iface(i) in present}
        after_vanish = settle_time(lab, pod_routes | kept, gone,
                                   "only the remaining endpoints' routes")

        assert agent_pid(lab) == pid, "the agent restarted"
        log = (Path(lab.state_dir) / f"agent-{NODE}.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        print(f"\nF14 flaps: {ops} operations on {pods[0].iface} in {took:.1f} s; routes "
              f"exactly right {after_flaps:.2f} s after the last one")
        print(f"F14 burst: {BURST} veths ({2 * BURST} links) created in {made - start:.2f} s, "
              f"{WITH_ENDPOINTS} with endpoints; routes exactly right {after_burst:.2f} s after; "
              f"link monitor overruns (each a resync): {burst_overruns}")
        print(f"F14 vanishing: {ENDPOINTS_DELETED} endpoints deleted, {VETHS_DELETED} veths "
              f"deleted; routes exactly right ({len(kept)} burst routes left) "
              f"{after_vanish:.2f} s after")
