"""F10: clobbering. Something else on the node deletes or changes what tortie programmed.

A lab of 2 nodes with a VXLAN pool (natOutgoing), a GlobalNetworkPolicy with a
selector (so there are filter and nat chains, hooks and ipsets), real agents, one pod
per node serving probes, probed both ways over VXLAN throughout. On node1, before any
fault, a foreign route, foreign iptables rules (in filter and nat, and a foreign
chain) and a foreign ipset are placed. Then, one after the other, each fault is
injected on node1 and the time until node1's kernel holds tortie's state again is
measured and printed:

  1. the route to node2's block deleted (`ip route del`);
  2. one chain flushed (`cali-FORWARD`): only that chain may be rewritten;
  3. every tortie chain in every table of tortie's (nat, filter) flushed and deleted,
     its hooks first (a chain still jumped to cannot be deleted);
  4. every tortie ipset emptied (`ipset flush`; the sets are in use by the rules, so
     the kernel refuses to destroy them) and one member deleted from another;
  5. the neighbour and FDB entries for node2's VTEP on `vxlan.calico` deleted;
  6. `vxlan.calico` deleted;
  7. `vxlan.calico`'s MTU changed.

Pass (Felix FV iptables_disruption_test.go, routes_test.go): each repaired within
10 s; the foreign route, rules, chain and ipset exactly as placed; and each repair
made by the writer of the kind that was hit and of no other kind, writing only the
difference (`lab.agents.kernel_writes` before and after; for iptables the agent's log
names every chain it rewrote). The probes are reported, not asserted: deleting the
tunnel device or its route cuts the pods off until the repair, as it must. About 40 s,
half of it the lab coming up.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab import Lab
from lab import agents as lab_agents
from lab import probe as lab_probe
from tests.e2e.bgp_lab import block_of
from tests.e2e.conftest import TOOLS
from tests.e2e.pods import Pod, add_pod, ctl
from tests.support import keep_lab, need, record_lab, unique_name, wait_until

from .prober import PROBE_PORT, Pair, Prober

pytestmark = [pytest.mark.slow, pytest.mark.root]

REPAIR_WITHIN = 10.0

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec: {cidr: 10.244.0.0/16, blockSize: 26, vxlanMode: Always, natOutgoing: true}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: f10-policy}
spec:
  selector: all()
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: "app == 'f10pod2'"}
    destination: {ports: [8080]}
  - action: Allow
  egress:
  - action: Allow
"""

FOREIGN_ROUTE = "198.51.100.0/24"
FOREIGN_SET = "f10-foreign"
FOREIGN_CHAIN = "F10-FOREIGN"
FOREIGN_COMMENT = "f10-foreign"


@dataclass
class World:
    lab: Lab
    pods: dict[str, Pod]
    pairs: list[Pair]
    iptables: str  # the binary of the backend node1's agent uses


@pytest.fixture
def world() -> Iterator[World]:
    need(*TOOLS, "curl", "bridge", root=True, root_for="the lab creates network namespaces")
    lab = Lab(record_lab(unique_name()), nodes=2, subnets=1)
    try:
        lab.up()
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        lab_agents.start_agents(lab, ["node1", "node2"], backend="vxlan")
        pods = {n: add_pod(lab, n, f"f10pod{n[-1]}") for n in ("node1", "node2")}
        for pod in pods.values():
            lab.start_process(pod.netns, [sys.executable, "-I", "-S", lab_probe.__file__,
                                          "serve", pod.name, str(PROBE_PORT)],
                              role="probe-server", name=f"probe-{pod.name}")
        pairs = [Pair(f"{a}/{pods[a].name} -> {b}/{pods[b].name}", pods[a].netns, pods[b].ip,
                      pods[b].name) for a, b in (("node1", "node2"), ("node2", "node1"))]
        for pair in pairs:
            wait_until(lambda pair=pair: lab_probe.probe(
                pair.ip, PROBE_PORT, "TCP", netns=pair.netns).detail == pair.name,
                timeout=60, what=f"probe {pair.label} answered")
        for n in ("node1", "node2"):
            lab_agents.wait_settled(lab, n)
        found = wait_until(lambda: re.search(r"iptables backend: (\w+)", agent_log(lab)),
                           what="node1's agent to name its iptables backend")
        yield World(lab, pods, pairs, f"iptables-{found.group(1)}")
    finally:
        if not keep_lab(lab):
            lab.down()


def agent_log(lab: Lab, since: int = 0) -> str:
    return (Path(lab.state_dir) / "agent-node1.log").read_text()[since:]


def log_size(lab: Lab) -> int:
    return len(agent_log(lab))


def sh(w: World, *argv: str) -> str:
    return str(w.lab.exec("node1", list(argv)).stdout)


# --- what node1's kernel holds ---------------------------------------------------------


def tortie_routes(w: World) -> list[str]:
    text = sh(w, "ip", "route", "show", "proto", "80") + sh(w, "ip", "route", "show",
                                                             "dev", w.pods["node1"].iface)
    return sorted(line.strip() for line in text.splitlines() if line.strip())


def iptables_lines(w: World, table: str) -> list[str]:
    return sh(w, f"{w.iptables}-save", "-t", table).splitlines()


def tortie_rules(w: World) -> list[str]:
    """tortie's chains and hooks in nat and filter, as iptables-save prints them (in order)."""
    return [f"{t} {line}" for t in ("nat", "filter") for line in iptables_lines(w, t)
            if line.startswith((":cali-", "-A cali-")) or "cali:" in line]


def foreign_rules(w: World) -> list[str]:
    return [f"{t} {line}" for t in ("nat", "filter") for line in iptables_lines(w, t)
            if FOREIGN_CHAIN in line or FOREIGN_COMMENT in line]


def ipset_save(w: World, owned: bool) -> list[str]:
    return sorted(line for line in sh(w, "ipset", "save").splitlines()
                  if (line.split()[1].startswith("cali40") if owned
                      else line.split()[1] == FOREIGN_SET))


def vxlan(w: World) -> str:
    res = w.lab.exec("node1", ["ip", "-o", "link", "show", "vxlan.calico"], check=False)
    return str(res.stdout) if res.returncode == 0 else ""


def vxlan_mtu(w: World) -> int | None:
    m = re.search(r"\bmtu (\d+)", vxlan(w))
    return int(m.group(1)) if m else None


def vxlan_entries(w: World) -> list[str]:
    """The permanent neighbours and FDB entries on vxlan.calico (node2's VTEP)."""
    neigh = sh(w, "ip", "neigh", "show", "dev", "vxlan.calico", "nud", "permanent")
    fdb = sh(w, "bridge", "fdb", "show", "dev", "vxlan.calico")
    return sorted(line.strip() for line in (neigh + fdb).splitlines()
                  if "permanent" in line.lower())


def delete_vxlan_entries(w: World, entries: list[str]) -> None:
    for line in entries:
        words = line.split()
        if "lladdr" in words:  # "<ip> lladdr <mac> PERMANENT"
            sh(w, "ip", "neigh", "del", words[0], "dev", "vxlan.calico")
        else:  # "<mac> dst <ip> self permanent"
            sh(w, "bridge", "fdb", "del", words[0], "dev", "vxlan.calico",
               "dst", words[words.index("dst") + 1], "self")


def foreign(w: World) -> tuple[object, ...]:
    return (sh(w, "ip", "route", "show", FOREIGN_ROUTE).strip(), foreign_rules(w),
            ipset_save(w, owned=False))


def place_foreign(w: World) -> None:
    sh(w, "ip", "route", "add", "blackhole", FOREIGN_ROUTE, "proto", "static")
    sh(w, "ipset", "create", FOREIGN_SET, "hash:ip")
    sh(w, "ipset", "add", FOREIGN_SET, "198.51.100.7")
    ipt = w.iptables
    sh(w, ipt, "-w", "-t", "filter", "-N", FOREIGN_CHAIN)
    sh(w, ipt, "-w", "-t", "filter", "-A", FOREIGN_CHAIN, "-m", "set", "--match-set",
       FOREIGN_SET, "src", "-j", "RETURN")
    sh(w, ipt, "-w", "-t", "filter", "-A", "FORWARD", "-s", FOREIGN_ROUTE, "-m", "comment",
       "--comment", FOREIGN_COMMENT, "-j", FOREIGN_CHAIN)
    sh(w, ipt, "-w", "-t", "nat", "-A", "POSTROUTING", "-s", FOREIGN_ROUTE, "-m", "comment",
       "--comment", FOREIGN_COMMENT, "-j", "RETURN")


# --- faults ----------------------------------------------------------------------------


def clobber_all_chains(w: World) -> None:
    """Delete tortie's hooks, then flush and delete all its chains, in nat and filter: one
    restore transaction, so the agent's repair cannot land between the steps."""
    text = []
    for table in ("nat", "filter"):
        lines = iptables_lines(w, table)
        chains = [line[1:].split()[0] for line in lines if line.startswith(":cali-")]
        text += [f"*{table}",
                 *(f"-D {line[3:]}" for line in lines if line.startswith("-A ")
                   and "cali:" in line and not line.startswith("-A cali-")),
                 *(f"-F {c}" for c in chains), *(f"-X {c}" for c in chains), "COMMIT"]
    w.lab.exec("node1", [f"{w.iptables}-restore", "--noflush"], input="\n".join(text) + "\n")


def empty_ipsets(w: World) -> None:
    names = sorted({line.split()[1] for line in ipset_save(w, owned=True)})
    members = [line.split() for line in ipset_save(w, owned=True) if line.startswith("add ")]
    flushed = [n for n in names if n != members[-1][1]]
    for name in flushed:
        sh(w, "ipset", "flush", name)
    sh(w, "ipset", "del", members[-1][1], members[-1][2])  # one member of the last set


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after
            if after.get(k, 0) != before.get(k, 0)}


def writer_kinds(writes: dict[str, float]) -> set[str]:
    """{'routes', ...} from metric labels such as kind="routes"."""
    return {label.split('"')[1] for label in writes}


@dataclass
class Repair:
    what: str
    seconds: float
    writes: dict[str, float]
    log: str


def repair(w: World, what: str, fault: Callable[[], None],
           repaired: Callable[[], object]) -> Repair:
    """Inject `fault` on node1, wait (10 s at most) until `repaired()`, and report."""
    lab_agents.wait_settled(w.lab, "node1", quiet=1.5)
    before, since = lab_agents.kernel_writes(w.lab, "node1"), log_size(w.lab)
    start = time.monotonic()
    fault()
    wait_until(repaired, timeout=REPAIR_WITHIN, interval=0.05,
               what=f"{what} repaired within {REPAIR_WITHIN:.0f} s")
    seconds = time.monotonic() - start
    lab_agents.wait_settled(w.lab, "node1", quiet=1.5)
    writes = delta(before, lab_agents.kernel_writes(w.lab, "node1"))
    print(f"F10 {what}: repaired in {seconds:.2f} s; kernel writes {writes}")
    return Repair(what, seconds, writes, agent_log(w.lab, since))


def rewritten_chains(log: str) -> set[str]:
    return set(re.findall(r"iptables \w+: (?:rewriting|creating) chain (\S+)", log))


def test_f10_clobbered_state_is_repaired_within_seconds_and_foreign_state_is_untouched(
    world: World,
) -> None:
    w = world
    place_foreign(w)
    foreign_before = foreign(w)
    assert foreign_before[0] and len(foreign_before[1]) == 4 and foreign_before[2]
    routes0, rules0, sets0 = tortie_routes(w), tortie_rules(w), ipset_save(w, owned=True)
    mtu0 = vxlan_mtu(w)
    entries0 = vxlan_entries(w)
    assert len(entries0) == 2, entries0  # node2's VTEP: a neighbour and an FDB entry
    block2 = block_of(w.pods["node2"].ip)
    block2_route = next(r for r in routes0 if r.startswith(f"{block2} "))
    assert "dev vxlan.calico" in block2_route and mtu0 is not None
    assert any(line.startswith("add ") for line in sets0)  # members to lose
    all_chains = {line.split()[1][1:] for line in rules0 if line.split()[1].startswith(":cali-")}

    prober = Prober(w.pairs).start()
    try:
        repairs = [
            repair(w, "route to node2's block deleted",
                   lambda: sh(w, "ip", "route", "del", block2),
                   lambda: tortie_routes(w) == routes0),
            repair(w, "cali-FORWARD flushed",
                   lambda: sh(w, w.iptables, "-w", "-t", "filter", "-F", "cali-FORWARD"),
                   lambda: tortie_rules(w) == rules0),
            repair(w, "all tortie chains flushed and deleted (nat, filter)",
                   lambda: clobber_all_chains(w),
                   lambda: tortie_rules(w) == rules0),
            repair(w, "tortie ipsets emptied", lambda: empty_ipsets(w),
                   lambda: ipset_save(w, owned=True) == sets0),
            repair(w, "vxlan.calico's neighbour and FDB entries deleted",
                   lambda: delete_vxlan_entries(w, entries0),
                   lambda: vxlan_entries(w) == entries0),
            repair(w, "vxlan.calico deleted",
                   lambda: sh(w, "ip", "link", "del", "vxlan.calico"),
                   lambda: vxlan_mtu(w) == mtu0 and tortie_routes(w) == routes0),
            repair(w, "vxlan.calico MTU changed",
                   lambda: sh(w, "ip", "link", "set", "vxlan.calico", "mtu", str(mtu0 - 100)),
                   lambda: vxlan_mtu(w) == mtu0),
        ]
        # Back to talking: the last repairs cut the tunnel.
        for pair in w.pairs:
            wait_until(lambda pair=pair: lab_probe.probe(
                pair.ip, PROBE_PORT, "TCP", netns=pair.netns).detail == pair.name,
                timeout=REPAIR_WITHIN, what=f"probe {pair.label} answered after the faults")
    finally:
        report = prober.stop()
    print(report.report())

    route, one_chain, chains, sets, neighbours, dev, mtu = repairs
    # Only the writer of what was hit wrote, and only the difference.
    assert route.writes == {'kind="routes"': 1}, route.writes
    assert writer_kinds(one_chain.writes) == {"iptables-filter"}, one_chain.writes
    assert rewritten_chains(one_chain.log) == {"cali-FORWARD"}, one_chain.log[-2000:]
    assert writer_kinds(chains.writes) == {"iptables-nat", "iptables-filter"}, chains.writes
    assert rewritten_chains(chains.log) == all_chains  # all were gone: all written, once
    assert writer_kinds(sets.writes) == {"ipsets"}, sets.writes
    assert "ipset: updating" in sets.log and "rewriting" not in sets.log, sets.log[-2000:]
    assert neighbours.writes == {'kind="neighbors"': 2}, neighbours.writes
    assert {"vxlan", "routes"} <= writer_kinds(dev.writes), dev.writes
    assert not any(k.startswith(("iptables", "ipset")) for k in writer_kinds(dev.writes))
    assert writer_kinds(mtu.writes) == {"vxlan"}, mtu.writes
    # Nothing foreign was touched, and tortie's state is as it was.
    assert foreign(w) == foreign_before
    assert tortie_routes(w) == routes0 and tortie_rules(w) == rules0
    assert ipset_save(w, owned=True) == sets0
    assert report.sent > 0
