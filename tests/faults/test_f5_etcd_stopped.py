"""F5: etcd stopped for 120 s under a running cluster, then started again.

A lab of 2 nodes with a VXLAN pool, real agents, one pod per node serving probes,
and a one-member etcd that is stopped (SIGTERM) for OUTAGE seconds, the issue's
figure. Pass (issue 18; Calico: "your network continues operating, but cannot be
updated"):
  * the dataplane is left alone: routes, iptables (rules, without counters) and
    ipsets (members) on both nodes are identical before and after the outage;
  * the pods keep reaching each other: the fault suite's prober (TCP and ICMP every
    100 ms, both ways) loses nothing;
  * the agents stay cheap: each agent's CPU time over the outage (utime + stime of
    its process and reaped children, /proc/<pid>/stat) is below 50 % of the
    outage's wall time (Felix FV's bound);
  * a new pod fails fast with a clear error: a CNI ADD on node1 during the outage
    fails within FAIL_FAST seconds with an error naming etcd (measured, DEL
    included, as a runtime runs it);
  * readiness says not-ready for the datastore throughout the outage (sampled);
  * full reconcile within 10 s of etcd's return: both agents ready again within
    10 s of it (their health endpoints, polled), and an IP pool created through
    ctl once they are reaches both nodes' kernels (their all-pools ipset) within
    10 s of the write (ctl's own start-up is not the agent's to answer for).
About 150-210 s, 120 of them the outage: the issue's figure, kept although it makes
this the longest fault scenario (F5_OUTAGE=<seconds> shortens it while working on it).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab import agents as lab_agents
from lab import pods as lab_pods
from lab import probe as lab_probe
from lab.pods import PodError
from tests.e2e.conftest import TOOLS
from tests.e2e.pods import Pod, add_pod, ctl
from tests.support import keep_lab, need, record_lab, unique_name, wait_until

from .conftest import serve_probes
from .prober import PROBE_PORT, Pair, Prober
from .test_f6_etcd_blackhole import POOL

pytestmark = [pytest.mark.slow, pytest.mark.root]

NODES = ("node1", "node2")
OUTAGE = float(os.environ.get("F5_OUTAGE", "120"))
FAIL_FAST = 5.0
RECONCILE_WITHIN = 10.0
CPU_BOUND = 0.5

RETURN_POOL_CIDR = "10.98.0.0/16"
RETURN_POOL = f"""apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {{name: made-on-return}}
spec: {{cidr: {RETURN_POOL_CIDR}, blockSize: 26, vxlanMode: Always, natOutgoing: true}}
"""

_COUNTERS = re.compile(r" \[\d+:\d+\]$")


@pytest.fixture
def f5_lab() -> Iterator[tuple[Lab, dict[str, Pod]]]:
    need(*TOOLS, "ipset", "iptables-save", "curl", root=True,
         root_for="the lab creates network namespaces")
    lab = Lab(record_lab(unique_name()), nodes=len(NODES), subnets=1)
    try:
        lab.up()
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        for n in NODES:
            lab_agents.start_agent(lab, n, backend="vxlan")
        for n in NODES:
            # Generous: a first apply took over 30 s on this machine under load.
            lab_agents.wait_ready(lab, n, timeout=120)
        pods = {n: add_pod(lab, n, f"f5pod{n[-1]}") for n in NODES}
        serve_probes(lab, pods.values())
        yield lab, pods
    finally:
        if not keep_lab(lab):
            lab.down()


def dataplane(lab: Lab, node: str) -> dict[str, str]:
    """What tortie programs on `node`, in a form that changes only when the state does:
    routes of every table, iptables rules without packet counters, ipsets with members."""
    rules = lab.exec(node, ["iptables-save"]).stdout.splitlines()
    return {
        "routes": lab.exec(node, ["ip", "route", "show", "table", "all"]).stdout,
        "iptables": "\n".join(_COUNTERS.sub("", line) for line in rules
                              if not line.startswith("#")),
        "ipsets": lab.exec(node, ["ipset", "save"]).stdout,
    }


def ready(lab: Lab, node: str) -> tuple[bool, str]:
    """The agent's readiness and why, from its health endpoint (curl: cheap enough to
    sample every second on a loaded machine, unlike starting `tortie-agent --ready`)."""
    res = lab.exec(node, ["curl", "-s", "--max-time", "2", "http://localhost:9099/readiness"],
                   check=False)
    try:
        summary = json.loads(res.stdout)
    except ValueError:
        return False, f"no answer ({res.returncode})"
    why = "; ".join(f"{name}: {c['detail']}" for name, c in summary["components"].items()
                    if not c["ready"])
    return bool(summary["ready"]), why or "ready"


def agent_pid(lab: Lab, node: str) -> int:
    procs = [p for p in lab.status()["processes"] if p["name"] == f"agent-{node}" and p["alive"]]
    return int(procs[-1]["pid"])


def cpu_seconds(pid: int) -> float:
    """utime + stime + cutime + cstime of `pid` (all its threads, and children it reaped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def pools_ipset(lab: Lab, node: str) -> str:
    return str(lab.exec(node, ["ipset", "list", "cali40all-ipam-pools"], check=False).stdout)


def agent_log(lab: Lab, node: str, since: int) -> str:
    """What `node`'s agent logged after byte `since` about the datastore and readiness."""
    text = (Path(lab.state_dir) / f"agent-{node}.log").read_text()[since:]
    return "\n".join(line for line in text.splitlines()
                     if any(w in line for w in ("syncer", "datastore", "ready", "failed")))


def test_f5_etcd_stopped_leaves_the_dataplane_fails_new_pods_fast_and_reconciles(
    f5_lab: tuple[Lab, dict[str, Pod]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    lab, pods = f5_lab
    pairs = [Pair(f"{a}/{pods[a].name} -> {b}/{pods[b].name}", pods[a].netns, pods[b].ip,
                  pods[b].name) for a in NODES for b in NODES if a != b]
    for pair in pairs:
        wait_until(lambda pair=pair: lab_probe.probe(
            pair.ip, PROBE_PORT, "TCP", netns=pair.netns).detail == pair.name,
            timeout=60, what=f"probe {pair.label} answered")
    for n in NODES:
        lab_agents.wait_settled(lab, n)
    pids = {n: agent_pid(lab, n) for n in NODES}
    before = {n: dataplane(lab, n) for n in NODES}

    with Prober(pairs) as prober:
        cpu_start = {n: cpu_seconds(pid) for n, pid in pids.items()}
        lab.stop_etcd(1)
        stopped = time.monotonic()
        wait_until(lambda: not ready(lab, "node1")[0], timeout=10, interval=0.1,
                   what="node1's agent not ready once etcd is stopped")
        not_ready_after = time.monotonic() - stopped
        reason = ready(lab, "node1")[1]

        # The pod's namespace exists (the pods above are in it); the lab's helper would
        # still try to create it through ctl, which fails first while etcd is down and
        # would hide the CNI plugin's own answer, the thing measured here.
        monkeypatch.setattr(lab_pods, "ensure_namespace", lambda *_: None)
        start = time.monotonic()
        with pytest.raises(PodError) as failed_add:
            add_pod(lab, "node1", "f5new")
        add_took = time.monotonic() - start
        monkeypatch.undo()

        samples: dict[str, list[bool]] = {n: [] for n in NODES}
        while time.monotonic() - stopped < OUTAGE:
            for n in NODES:
                samples[n].append(ready(lab, n)[0])
            time.sleep(min(1.0, max(0.0, OUTAGE - (time.monotonic() - stopped))))
        outage = time.monotonic() - stopped
        cpu = {n: (cpu_seconds(pid) - cpu_start[n]) / outage for n, pid in pids.items()}
        during = {n: dataplane(lab, n) for n in NODES}

        logged = {n: (Path(lab.state_dir) / f"agent-{n}.log").stat().st_size for n in NODES}
        lab.start_etcd(1)
        back = time.monotonic()
        # Readiness first, polled cheaply on both nodes at once, from etcd's return.
        ready_at: dict[str, float] = {}
        reasons: dict[str, list[str]] = {n: [] for n in NODES}

        def all_ready() -> bool:
            for n in NODES:
                if n not in ready_at:
                    ok, why = ready(lab, n)
                    reasons[n].append(f"{time.monotonic() - back:.1f}s {why}")
                    if ok:
                        ready_at[n] = time.monotonic() - back
            return len(ready_at) == len(NODES)
        wait_until(all_ready, timeout=RECONCILE_WITHIN + 20, interval=0.1,
                   what="both agents ready again")
        ready_again = max(ready_at.values())
        # Then a change written once etcd is back must reach both kernels.
        write_began = time.monotonic()
        ctl(lab, ["apply", "-f", "-"], stdin=RETURN_POOL)
        written = time.monotonic() - back
        for n in NODES:
            wait_until(lambda n=n: RETURN_POOL_CIDR in pools_ipset(lab, n),
                       timeout=RECONCILE_WITHIN + 20, interval=0.1,
                       what=f"the pool made on etcd's return in {n}'s ipset")
        reconciled = time.monotonic() - back
    report = prober.stop()

    error = str(failed_add.value)
    print(f"\nF5: etcd stopped for {outage:.0f} s; node1 not ready after {not_ready_after:.1f} s "
          f"({reason!r}); ready samples during the outage: "
          + ", ".join(f"{n} {sum(s)}/{len(s)}" for n, s in samples.items()))
    print("F5: agent CPU over the outage: "
          + ", ".join(f"{n} {100 * c:.2f} %" for n, c in cpu.items()))
    print(f"F5: a pod ADD during the outage failed in {add_took:.1f} s: {error.splitlines()[-1]}")
    print("F5: after etcd's return, agents ready at "
          + ", ".join(f"{n} {t:.1f} s" for n, t in ready_at.items())
          + f"; a new pool written by ctl at {written:.1f} s (ctl took "
          f"{written - (write_began - back):.1f} s), in both kernels at {reconciled:.1f} s")
    for n in NODES:
        print(f"F5: {n}'s agent after etcd's return:\n{agent_log(lab, n, logged[n])}")
        print(f"F5: {n}'s readiness after etcd's return (last samples):\n  "
              + "\n  ".join(reasons[n][-3:]))
    print(report.report())
    for n in NODES:
        for kind in before[n]:
            assert during[n][kind] == before[n][kind], f"{n}'s {kind} changed during the outage"
    assert report.sent > 0 and report.lost == 0, report.report()
    assert all(c < CPU_BOUND for c in cpu.values()), cpu
    assert add_took <= FAIL_FAST
    assert "etcd" in error, error
    assert all(s and not any(s) for s in samples.values()), samples
    # From the write, not from etcd's return: on a loaded machine starting ctl alone can
    # take seconds, which is the test's cost, not the agent's.
    assert reconciled - written <= RECONCILE_WITHIN
    assert ready_again <= RECONCILE_WITHIN
