"""F7: the etcd leader killed, then a member partitioned, during an IPAM storm from 3 nodes.

A lab of 3 nodes and a three-member etcd, no agents (nothing but IPAM writes). On
each node WORKERS processes of tests/faults/ipam_storm.py allocate and release
through the IPAM library with the node's name, each recording its history (every
operation, its times and what it was told). The pool has small blocks (/28) so the
nodes keep claiming new ones while the faults happen. The faults, driven by the
storm's progress:
  * at KILL_AT of the operations, the leader (the member whose /metrics says
    etcd_server_is_leader 1) is SIGKILLed; at RESTART_AT it is started again;
  * at PARTITION_AT, the leader of that moment is partitioned (everything arriving
    in its namespace dropped, raw PREROUTING, silent) for PARTITION seconds, then
    restored.
Afterwards the IPAM prefix is read at one revision and tests/faults/ipam_history.py
checks the history against it. Allocations that failed with an unknown outcome and
are present anyway are released by handle (a CNI DEL would) and listed. Figures:
operations, failures by kind, the storm's duration, the write stall after the kill.
About 40 s.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab.topology import LabEtcd
from tests.e2e.conftest import TOOLS
from tests.e2e.pods import ctl
from tests.support import keep_lab, need, record_lab, unique_name, wait_until

from .ipam_history import Op, check, state_from_kvs

pytestmark = [pytest.mark.slow, pytest.mark.root]

NODES = ("node1", "node2", "node3")
WORKERS = 2
PER_WORKER = 120  # allocations per worker; a third of them released again
KILL_AT, RESTART_AT, PARTITION_AT = 0.2, 0.4, 0.55
PARTITION = 5.0
REPO = Path(__file__).resolve().parents[2]

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: f7-storm}
spec: {cidr: 10.77.0.0/20, blockSize: 28, vxlanMode: Always}
"""

_DUMP = r"""
import json
from datastore.config import load_env
from datastore.etcd import EtcdClient
with EtcdClient(load_env()) as client:
    kvs, _ = client.list("/calico/ipam/v2/")
    print(json.dumps({kv.key: kv.value.decode() for kv in kvs}))
"""

_RELEASE = r"""
import json, sys
from datastore.config import load_env
from datastore.etcd import EtcdClient
from ipam.allocator import Allocator
with EtcdClient(load_env()) as client:
    allocator = Allocator(client)
    print(json.dumps({h: allocator.release_by_handle(h) for h in sys.argv[1:]}))
"""


@pytest.fixture
def f7_lab() -> Iterator[Lab]:
    need(*TOOLS, "curl", root=True, root_for="the lab creates network namespaces")
    lab = Lab(record_lab(unique_name()), nodes=len(NODES), subnets=1, etcd_members=3)
    try:
        lab.up()
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        yield lab
    finally:
        if not keep_lab(lab):
            lab.down()


def env(lab: Lab, first: int = 0) -> dict[str, str]:
    """The environment of a client whose first etcd member is the `first`th (rotated):
    clients on followers forward their writes to the leader, so a leader loss catches
    some of them mid-proposal."""
    urls = lab.etcd_endpoints[first:] + lab.etcd_endpoints[:first]
    return {"ETCD_ENDPOINTS": ",".join(urls), "PYTHONPATH": str(REPO)}


def leader(lab: Lab, among: list[LabEtcd]) -> LabEtcd:
    def find() -> LabEtcd | None:
        for member in among:
            res = lab.exec(member, ["curl", "-s", "--max-time", "1",
                                    f"{member.client_url}/metrics"], check=False)
            if "\netcd_server_is_leader 1" in res.stdout:
                return member
        return None
    return wait_until(find, timeout=20, interval=0.1, what="an etcd leader")


def progress(files: list[Path]) -> int:
    return sum(len(f.read_text().splitlines()) for f in files if f.exists())


def partition(lab: Lab, member: LabEtcd, on: bool) -> None:
    lab.exec(member, ["iptables", "-w", "-t", "raw", "-I" if on else "-D", "PREROUTING",
                      "!", "-i", "lo", "-j", "DROP"])


def test_f7_ipam_history_holds_under_leader_kill_and_partition(f7_lab: Lab,
                                                               tmp_path: Path) -> None:
    lab = f7_lab
    files = [tmp_path / f"history-{n}-{w}.jsonl" for n in NODES for w in range(WORKERS)]
    expected = len(files) * (PER_WORKER + PER_WORKER // 3)
    started = time.monotonic()
    clients = [(n, w) for n in NODES for w in range(WORKERS)]
    workers = [lab.start_process(n, [sys.executable, "-m", "tests.faults.ipam_storm", n, str(w),
                                     str(PER_WORKER), str(f)],
                                 role="ipam-storm", name=f"f7-storm-{n}-{w}",
                                 env=env(lab, i % len(lab.etcd)))
               for i, ((n, w), f) in enumerate(zip(clients, files, strict=True))]
    wait_until(lambda: progress(files) >= KILL_AT * expected, timeout=120, interval=0.05,
               what="the storm to reach the leader kill")
    killed = leader(lab, list(lab.etcd))
    lab.stop_etcd(killed.name, signal.SIGKILL)
    killed_at = time.monotonic()
    ops_at_kill = progress(files)
    wait_until(lambda: progress(files) >= RESTART_AT * expected, timeout=120, interval=0.05,
               what="the storm to go on after the leader kill")
    lab.start_etcd(killed.name)
    wait_until(lambda: progress(files) >= PARTITION_AT * expected, timeout=120, interval=0.05,
               what="the storm to reach the partition")
    cut = leader(lab, list(lab.etcd))
    partition(lab, cut, True)
    cut_at = time.monotonic()
    ops_at_cut = progress(files)
    try:
        time.sleep(PARTITION)
    finally:
        partition(lab, cut, False)
    for proc in workers:
        proc.wait(timeout=180)
    duration = time.monotonic() - started

    history = [Op.from_json(json.loads(line)) for f in files
               for line in f.read_text().splitlines()]
    dump = lab.exec("node1", [sys.executable, "-c", _DUMP], env=env(lab)).stdout
    verdict = check(history, state_from_kvs(json.loads(dump)))
    released = {}
    if verdict.ambiguous_present:
        released = json.loads(lab.exec("node1", [sys.executable, "-c", _RELEASE,
                                                 *verdict.ambiguous_present], env=env(lab)).stdout)

    failures = Counter(op.error.split(":")[0] + (" (outcome unknown)" if op.ambiguous else "")
                       for op in history if not op.ok)
    after_kill = [op.end - killed_at for op in history if op.ok and op.start >= killed_at]
    after_cut = [op.end - cut_at for op in history if op.ok and op.start >= cut_at]
    print(f"\nF7: {len(history)} operations ({verdict.allocated} allocations and "
          f"{verdict.released} releases succeeded, {verdict.failed} failed) from "
          f"{len(files)} processes on {len(NODES)} nodes in {duration:.1f} s")
    print(f"F7: leader {killed.name} SIGKILLed at +{killed_at - started:.1f} s after "
          f"{ops_at_kill} operations; first success begun after it ended "
          f"{min(after_kill, default=float('nan')):.2f} s after the kill")
    print(f"F7: leader {cut.name} partitioned at +{cut_at - started:.1f} s after {ops_at_cut} "
          f"operations for {PARTITION:g} s; first success begun after it ended "
          f"{min(after_cut, default=float('nan')):.2f} s after the cut")
    print(f"F7: failures: {dict(failures) or 'none'}")
    print(f"F7: failed with an unknown outcome: present {len(verdict.ambiguous_present)} "
          f"(released by handle: {released}), absent {len(verdict.ambiguous_absent)}")
    print("F7: violations: " + ("none" if verdict.ok else "\n  " + "\n  ".join(
        verdict.violations[:40])))
    assert all(p.returncode == 0 for p in workers), [p.returncode for p in workers]
    assert len(history) >= len(files) * PER_WORKER
    assert verdict.ok, verdict.violations[:40]
