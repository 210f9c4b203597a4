"""F6: the agent's etcd connection black-holed (packets dropped, no RST), three-member etcd.

A lab of 2 nodes with a VXLAN pool, real agents, a pod on each node, and three etcd
members; the agent on node1 talks to the first member. Everything between node1 and
that member's client port is dropped where it arrives (raw-table DROP in node1's and
the member's namespaces, plus `conntrack -D`, as Calico's Felix FV black-hole test
does), so the member is gone for node1 alone, silently, and new connections to it
hang as well. Pass:
  * node1's agent notices within 15 s (keepalive or watch-stall detection: its /metrics
    counts a watch restart), reports not ready while it fails over (its log says so:
    the window is short, as the next member answers at once);
  * it re-watches on another member (its /metrics names it) and is ready again;
  * `ctl` on node1, which also starts on the dropped member, answers within 15 s, and
    a pod is added on node1 within 15 s (its CNI server may answer the first ADD with
    CNI code 11, "try again later", when its write to the dead member timed out);
  * an IP pool created during the outage (through node2, whose etcd path is fine)
    reaches node1's kernel (its all-pools ipset) within 20 s of the black-hole;
  * the pods keep reaching each other (probed every 100 ms, TCP over ping, losses
    counted): the dataplane is left alone while the datastore is away.
The probe is this file's own minimal one (ICMP every 100 ms); the fault suite's prober
was not on main when this was written. About 30 s, a third of it the lab coming up.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab import agents as lab_agents
from lab.pods import PodError
from lab.topology import ETCD_PEER_PORT, LabEtcd
from tests.e2e.conftest import TOOLS
from tests.e2e.pods import BIN, Pod, add_pod, ctl
from tests.support import keep_lab, need, record_lab, unique_name, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]

DETECT_WITHIN = 15.0
CHANGE_WITHIN = 20.0

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: Always, natOutgoing: true}
"""
OUTAGE_POOL_CIDR = "10.99.0.0/16"
OUTAGE_POOL = f"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: made-during-the-outage}}
spec: {{cidr: {OUTAGE_POOL_CIDR}, blockSize: 26, vxlanMode: Always, natOutgoing: true}}
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    need(*TOOLS, "conntrack", "curl", root=True, root_for="the lab creates network namespaces")
    lab = Lab(record_lab(unique_name()), nodes=2, subnets=1, etcd_members=3)
    try:
        lab.up()
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        for n in ("node1", "node2"):
            lab_agents.start_agent(lab, n, backend="vxlan")
        for n in ("node1", "node2"):
            lab_agents.wait_ready(lab, n)
        yield lab
    finally:
        if not keep_lab(lab):
            lab.down()


class Pinger:
    """ICMP from one pod to another every 100 ms on a thread; counts what is lost."""

    def __init__(self, src: Pod, dst_ip: str) -> None:
        self.src, self.dst_ip = src, dst_ip
        self.sent = self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            res = subprocess.run(["ip", "netns", "exec", self.src.netns, "ping", "-c1", "-W1",
                                  "-q", self.dst_ip], capture_output=True)
            self.sent += 1
            self.lost += res.returncode != 0
            self._stop.wait(max(0.0, 0.1 - (time.monotonic() - start)))

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def metrics(lab: Lab, node: str) -> str:
    return str(lab.exec(node, ["curl", "-s", "--max-time", "2",
                               "http://localhost:9099/metrics"]).stdout)


def agent_log(lab: Lab, node: str = "node1") -> str:
    return (Path(lab.state_dir) / f"agent-{node}.log").read_text()[-4000:]


def pools_ipset(lab: Lab, node: str) -> str:
    return str(lab.exec(node, ["ipset", "list", "cali40all-ipam-pools"], check=False).stdout)


def wait_replaced_and_arrived(lab: Lab, since: float) -> tuple[float, float]:
    """Until node1's agent has replaced its watch stream, then until the pool made during
    the fault is in its kernel, then until it is ready: (noticed, arrived) seconds after
    `since`."""
    wait_until(lambda: "tortie_datastore_watch_restarts_total 0.0" not in metrics(
        lab, "node1"), timeout=DETECT_WITHIN + 10, interval=0.2,
        what=f"node1's agent to replace its watch stream; log:\n{agent_log(lab)}")
    noticed = time.monotonic() - since
    wait_until(lambda: OUTAGE_POOL_CIDR in pools_ipset(lab, "node1"),
               timeout=CHANGE_WITHIN + 10, interval=0.2, what="the new pool in node1's ipset")
    arrived = time.monotonic() - since
    wait_until(lambda: lab_agents.is_ready(lab, "node1"), timeout=20, interval=0.2,
               what="node1's agent ready again")
    return noticed, arrived


def black_hole(lab: Lab, node: str, member: LabEtcd, port: int) -> None:
    """Drop node's traffic with the member's client port where it arrives, at both ends.

    Raw PREROUTING on each side, never OUTPUT: a packet dropped in OUTPUT fails the
    sender's send with EPERM at once, which is louder than a black-hole. Here node1's
    SYNs and segments leave and vanish, as they would behind a broken network."""
    node_ip = lab.node(node).ip
    lab.exec(node, ["iptables", "-w", "-t", "raw", "-I", "PREROUTING", "-p", "tcp", "-s",
                    member.ip, "--sport", str(port), "-j", "DROP"])
    lab.exec(member, ["iptables", "-w", "-t", "raw", "-I", "PREROUTING", "-p", "tcp", "-s",
                      node_ip, "--dport", str(port), "-j", "DROP"])
    # Drop what conntrack remembers of the flow too (Felix FV does); exit 1: no entry.
    lab.exec(node, ["conntrack", "-D", "-p", "tcp", "-d", member.ip, "--dport", str(port)],
             check=False)
    lab.exec(member, ["conntrack", "-D", "-p", "tcp", "-s", node_ip, "--dport", str(port)],
             check=False)


def test_f6_black_holed_etcd_connection_is_noticed_failed_over_and_changes_arrive(
    lab: Lab,
) -> None:
    pods = {n: add_pod(lab, n, f"f6{n[-1]}") for n in ("node1", "node2")}
    wait_until(lambda: subprocess.run(
        ["ip", "netns", "exec", pods["node1"].netns, "ping", "-c1", "-W1", pods["node2"].ip],
        capture_output=True).returncode == 0, timeout=30, what="pod1 reaches pod2")
    first = lab.etcd[0]
    first_url = lab.etcd_endpoints[0]
    assert f'tortie_datastore_endpoint{{endpoint="{first_url}"}} 1.0' in metrics(lab, "node1")
    port = int(first_url.rsplit(":", 1)[1])

    with Pinger(pods["node1"], pods["node2"].ip) as pinger:
        black_hole(lab, "node1", first, port)
        holed = time.monotonic()
        # node2 talks to etcd through the first member too, unharmed: the change is made there.
        ctl(lab, ["apply", "-f", "-"], stdin=OUTAGE_POOL, node="node2")
        noticed, arrived = wait_replaced_and_arrived(lab, holed)
        back = time.monotonic() - holed
        # Still black-holed: the other etcd clients on node1.
        # ctl on node1 starts on the black-holed member too: its read times out there
        # and is re-sent to the next member.
        start = time.monotonic()
        listed = ctl(lab, ["get", "ippools"], node="node1")
        ctl_took = time.monotonic() - start
        assert "made-during-the-outage" in listed
        # The node's CNI server (long-lived, on the dropped member) may lose its first
        # write to the timeout: CNI code 11, "try again later", as a kubelet would; the
        # retry goes to another member.
        start = time.monotonic()
        cni_attempts: list[str] = []
        for name in ("f6late", "f6late2"):
            try:
                add_pod(lab, "node1", name)
                cni_attempts.append("ok")
                break
            except PodError as exc:
                assert "code 11" in str(exc) and "etcd is unreachable" in str(exc), exc
                cni_attempts.append("code 11")
        cni_took = time.monotonic() - start
    shown = metrics(lab, "node1")
    log = agent_log(lab)
    how = "the stall detector" if "said nothing for" in log else "keepalive (stream failed)"
    print(f"\nF6: watch replaced by {how} {noticed:.1f}s after the black-hole, the outage's change in the "
          f"kernel at {arrived:.1f}s, ready again at {back:.1f}s; pod1->pod2 pings lost "
          f"{pinger.lost}/{pinger.sent}; ctl on node1 answered in {ctl_took:.1f}s; "
          f"a pod add on node1: {' then '.join(cni_attempts)} in {cni_took:.1f}s")
    assert noticed <= DETECT_WITHIN
    # Readiness went down for the fail-over (it is short: the next member answers at once).
    assert "datastore WAIT_FOR_DATASTORE: keeping the dataplane as it is" in log, log
    assert arrived <= CHANGE_WITHIN
    assert ctl_took <= DETECT_WITHIN
    assert cni_attempts[-1] == "ok" and cni_took <= DETECT_WITHIN
    assert f'endpoint="{first_url}"' not in shown  # re-watching on another member
    assert "tortie_datastore_watch_restarts_total 0.0" not in shown
    assert pinger.sent > 0 and pinger.lost == 0


def partition_from_peers(lab: Lab, member: LabEtcd, on: bool) -> None:
    """Drop the member's raft traffic (its peer port, both directions) where it arrives
    in the member's namespace; its clients still reach it."""
    for flag in ("--dport", "--sport"):
        lab.exec(member, ["iptables", "-w", "-t", "raw", "-I" if on else "-D", "PREROUTING",
                          "-p", "tcp", flag, str(ETCD_PEER_PORT), "-j", "DROP"])


def test_f6_a_member_cut_off_from_its_peers_is_left_for_one_with_a_leader(lab: Lab) -> None:
    """The member node1's agent watches on loses its peers but still answers: its TCP
    connection is healthy, keepalives and progress requests are answered, and it will
    never see another change. The watch asks for a leader (etcd's `hasleader`), so the
    member cancels it after three election timeouts and the agent re-watches elsewhere."""
    first, others = lab.etcd[0], lab.etcd_endpoints[1:]
    first_url = lab.etcd_endpoints[0]
    assert f'tortie_datastore_endpoint{{endpoint="{first_url}"}} 1.0' in metrics(lab, "node1")
    partition_from_peers(lab, first, True)
    try:
        cut = time.monotonic()
        # The change is made through the members that still have quorum.
        lab.exec("node2", [str(BIN / "ctl"), "apply", "-f", "-"], input=OUTAGE_POOL,
                 env={"ETCD_ENDPOINTS": ",".join(others)})
        noticed, arrived = wait_replaced_and_arrived(lab, cut)
        shown, log = metrics(lab, "node1"), agent_log(lab)
    finally:
        partition_from_peers(lab, first, False)
    print(f"\nF6 (member partitioned from its peers): watch replaced {noticed:.1f}s after the "
          f"cut, the change in node1's kernel at {arrived:.1f}s")
    assert noticed <= DETECT_WITHIN
    assert arrived <= CHANGE_WITHIN
    assert f'endpoint="{first_url}"' not in shown
    assert "datastore WAIT_FOR_DATASTORE: keeping the dataplane as it is" in log, log
