"""Policy programming: tortie's calculation and writers beside one iptables-restore and one
ipset restore of the same chains and sets (the floor), and the cost of small changes.

Run: .venv/bin/python bench/policy.py [--rounds 3] [--samples 20] [--lab | --no-lab]
Needs root. Works in network namespaces of its own (`tdb<hex>`, bench/routes.py's), removed at the end.

A synthetic cluster, pure and seeded (--seed): --local endpoints on this node (with
their cali veths in the bench's namespace), --remote endpoints on other nodes, global
network sets, and GlobalNetworkPolicies selecting local endpoints by `app` whose rules
pick peers by one of five label keys. The defaults render ~10,000 iptables rules and
~100,000 ipset members. The cluster is built as the syncer's Updates, folded into
agent.calc.ClusterState and calculated by calculate(), as the agent does.

Measures:
  * full programming: calculate() from the synced state, then KernelDataplane.apply()
    (netfilter on) in a fresh namespace; beside it the floor, the same rendered chains
    by one `iptables-restore --noflush` and the same sets by one `ipset restore` into
    another fresh namespace; median and best of --rounds, ratio floor / tortie;
  * a pod label change with all that present: ClusterState.apply(update), calculate(),
    set_desired() and apply(); what the writers wrote (goal: ipset member writes only,
    no iptables restore, under 50 ms);
  * one policy edit: the same, and which chains the iptables restore declared (goal:
    only that policy's chains, under 100 ms);
  * --lab (default when root): a 3-node lab with probe servers in pods; a policy on
    one pod applied with `ctl apply` 20 times, alternating deny and allow, and the time
    from ctl's return until a probe from a pod on every node observes the new verdict;
    p50 and p99 (goal: under 1 s).
The kernel's netfilter and rtnl locks are shared by every namespace on the machine, so
other work makes single runs noisy: full programming is the median of --rounds runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.calc import CalcConfig, ClusterState, calculate  # noqa: E402
from agent.dataplane.facade import IPTABLES_TABLES, KernelDataplane  # noqa: E402
from agent.dataplane.ipsets import IPSets, desired_state, plan_updates, render_updates  # noqa: E402
from agent.dataplane.iptables import (  # noqa: E402
    IptablesTable,
    TableState,
    binary,
    detect_backend,
    in_netns,
    plan_table,
    render_restore,
    run_command,
)
from agent.types import DesiredDataplane  # noqa: E402
from bench.routes import namespaces  # noqa: E402
from datastore.resources import API_VERSION  # noqa: E402
from datastore.resources import stored_update as put  # noqa: E402
from datastore.syncer import Update  # noqa: E402

LOCAL_NODE = "bench-local"
CONFIG = CalcConfig(host_mtu=1500, parent_interface="eth0")
PEER_KEYS = ("role", "team", "zone", "stage", "unit")  # the labels rules select peers by
APPS = 50  # `app` values: each local app is selected by policies / APPS policies
NAMESPACES = 10


def pct(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# -- the synthetic cluster ------------------------------------------------------------------


def interface(i: int) -> str:
    """The i-th local endpoint's veth, as bench/routes.py's namespaces() names them."""
    return f"cali{i:011x}"


@dataclasses.dataclass
class Cluster:
    """The synthetic cluster's Updates and what the change lanes need to know of it."""

    updates: list[Update]
    local_pods: list[tuple[str, str, dict[str, Any], dict[str, str]]]  # (ns, name, spec, labels)
    policies: list[tuple[str, dict[str, Any]]]  # (name, spec)
    peer_values: int


def endpoint_spec(node: str, pod: str, ip: str, iface: str | None, ns: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
                            "ipNetworks": [f"{ip}/32"], "profiles": [f"kns.{ns}"],
                            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}]}
    if iface:
        spec["interfaceName"] = iface
    return spec


def peer_labels(rng: random.Random, values: int, app: int) -> dict[str, str]:
    labels = {"app": f"app{app}"}
    labels.update({key: f"{key[0]}{rng.randrange(values)}" for key in PEER_KEYS})
    return labels


def make_cluster(local: int, remote: int, policies: int, rules: int, network_sets: int,
                 seed: int) -> Cluster:
    rng = random.Random(seed)
    # Each peer selector `<key> == '<k><v>'` holds about remote / values endpoints; with
    # every (key, value) used by some rule, the sets hold ~ remote * len(PEER_KEYS) members.
    values = max(1, min(100, policies * rules // len(PEER_KEYS)))
    updates = [put("Node", LOCAL_NODE, {"bgp": {"ipv4Address": "192.168.0.1/16"}})]
    updates += [put("Profile", f"kns.ns{k}", {
        "ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}],
        "labelsToApply": {"pcns.projectcalico.org/name": f"ns{k}"}}) for k in range(NAMESPACES)]
    local_pods = []
    for i in range(local):
        ns, pod = f"ns{i % NAMESPACES}", f"local{i}"
        labels = peer_labels(rng, values, i % APPS)
        spec = endpoint_spec(LOCAL_NODE, pod, f"10.64.{i // 256}.{i % 256}", interface(i), ns)
        local_pods.append((ns, f"{LOCAL_NODE}-k8s-{pod}-eth0", spec, labels))
        updates.append(put("WorkloadEndpoint", local_pods[-1][1], spec, ns, labels))
    for i in range(remote):
        ns, pod, node = f"ns{i % NAMESPACES}", f"remote{i}", f"node{i % 50}"
        ip = f"10.{65 + i // 65536}.{(i // 256) % 256}.{i % 256}"
        updates.append(put("WorkloadEndpoint", f"{node}-k8s-{pod}-eth0",
                           endpoint_spec(node, pod, ip, None, ns), ns,
                           peer_labels(rng, values, i % APPS)))
    for i in range(network_sets):
        nets = [f"172.{16 + i // 16}.{(i % 16) * 16 + j}.0/24" for j in range(16)]
        labels = {key: f"{key[0]}{rng.randrange(values)}" for key in PEER_KEYS}
        updates.append(put("GlobalNetworkSet", f"netset{i}", {"nets": nets}, labels=labels))
    pols = []
    for p in range(policies):
        ingress = []
        for r in range(rules):
            n = p * rules + r
            key, value = PEER_KEYS[n % len(PEER_KEYS)], (n // len(PEER_KEYS)) % values
            ingress.append({"action": "Allow", "protocol": "TCP",
                            "source": {"selector": f"{key} == '{key[0]}{value}'"},
                            "destination": {"ports": [80 + r, "http"]}})
        egress = [{"action": "Allow", "protocol": "UDP",
                   "destination": {"selector": f"role == 'r{p % values}'", "ports": [53]}},
                  {"action": "Deny", "destination": {"nets": ["169.254.0.0/16"]}}]
        spec = {"order": 100 + p, "selector": f"app == 'app{p % APPS}'",
                "types": ["Ingress", "Egress"], "ingress": ingress, "egress": egress}
        pols.append((f"policy{p}", spec))
        updates.append(put("GlobalNetworkPolicy", f"policy{p}", spec))
    return Cluster(updates, local_pods, pols, values)


# -- namespaces and writers -----------------------------------------------------------------


class Recorder:
    """A writer's runner that keeps the input of every restore it runs."""

    def __init__(self) -> None:
        self.restores: list[str] = []

    def __call__(self, argv: Sequence[str], input: str | None = None
                 ) -> subprocess.CompletedProcess[str]:
        if input is not None:
            self.restores.append(input)
        return run_command(argv, input)


@dataclasses.dataclass
class Programmed:
    dataplane: KernelDataplane
    ipset_runner: Recorder
    iptables_runner: Recorder
    timings: dict[str, float]


def kernel_dataplane(ns: str, backend: str) -> Programmed:
    sets, tables = Recorder(), Recorder()
    timings: dict[str, float] = {}
    dp = KernelDataplane(ns, ipsets=IPSets(ns, runner=sets), tables={
        t: IptablesTable(t, backend, ns, runner=tables) for t in IPTABLES_TABLES})
    # The netfilter writers' share of apply(), to set beside the floor.
    for name, writer, method in [("ipsets", dp.ipsets, "apply"),
                                 ("ipset-deletions", dp.ipsets, "apply_deletions"),
                                 *((f"iptables-{t}", dp.tables[t], "apply")
                                   for t in IPTABLES_TABLES)]:
        setattr(writer, method, timed(getattr(writer, method), name, timings))
    return Programmed(dp, sets, tables, timings)


def timed(fn: Callable[[], Any], name: str, into: dict[str, float]) -> Callable[[], Any]:
    def run() -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            into[name] = time.perf_counter() - t0
    return run


def floor_inputs(desired: DesiredDataplane) -> tuple[str, str, int, int]:
    """The whole desired netfilter state as one ipset restore and one iptables-restore per
    table, and the rule and member counts."""
    states = {s.name: desired_state(s) for s in desired.ipsets}
    ipset_text = render_updates(plan_updates(states, {}))
    tables = []
    rules = 0
    for table in IPTABLES_TABLES:
        chains = {c.name: c.rules for c in desired.chains if c.table == table}
        hooks = sorted((h.chain, h.rule) for h in desired.hooks if h.table == table)
        rules += sum(map(len, chains.values()))
        tables.append(render_restore(table, plan_table(chains, hooks, TableState())))
    return ipset_text, "".join(tables), rules, sum(len(s.members) for s in states.values())


def floor_write(ns: str, backend: str, ipset_text: str, iptables_text: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(in_netns(ns, ["ipset", "restore"]), input=ipset_text, text=True, check=True,
                   capture_output=True)
    subprocess.run(in_netns(ns, [binary(backend, "restore"), "--noflush"]), input=iptables_text,
                   text=True, check=True, capture_output=True)
    return time.perf_counter() - t0


# -- the lanes ------------------------------------------------------------------------------


def full_programming(cluster: Cluster, spaces: list[str], rounds: int, backend: str
                     ) -> tuple[ClusterState, Programmed]:
    floor_t, calc_t, apply_t, netfilter_t = [], [], [], []
    state = ClusterState()
    t0 = time.perf_counter()
    state.apply(cluster.updates)
    fold = time.perf_counter() - t0
    programmed: Programmed | None = None
    for k in range(rounds):
        ns_floor, ns_ours = spaces[2 * k], spaces[2 * k + 1]
        # A fresh ClusterState each round: the first calculate() after a sync is the cold one.
        if k:
            state = ClusterState()
            state.apply(cluster.updates)
        t0 = time.perf_counter()
        calc = calculate(state, LOCAL_NODE, CONFIG)
        t1 = time.perf_counter()
        desired = calc.dataplane
        if k == 0:
            ipset_text, iptables_text, rules, members = floor_inputs(desired)
            policy_chains = sum(1 for c in desired.chains if c.name.startswith("cali-p"))
            print(f"rendered: {rules} iptables rules in {len(desired.chains)} chains "
                  f"({policy_chains} policy chains), {len(desired.ipsets)} ipsets with "
                  f"{members} members")
        floor_t.append(floor_write(ns_floor, backend, ipset_text, iptables_text))
        programmed = kernel_dataplane(ns_ours, backend)
        t2 = time.perf_counter()
        programmed.dataplane.set_desired(desired)
        result = programmed.dataplane.apply()
        t3 = time.perf_counter()
        assert result.ok, result.errors
        calc_t.append(t1 - t0)
        apply_t.append(t3 - t2)
        netfilter_t.append(sum(programmed.timings.values()))
    assert programmed is not None
    print(f"\nfull programming, {rounds} rounds ({backend} iptables); syncer updates folded "
          f"into ClusterState in {fold:.2f} s (not below)")
    rows = [("floor (ipset + iptables-restore)", floor_t),
            ("tortie calculate()", calc_t),
            ("tortie KernelDataplane.apply()", apply_t),
            ("  of which ipsets + iptables", netfilter_t),
            ("tortie calculate + apply", [c + a for c, a in zip(calc_t, apply_t, strict=True)])]
    for name, values in rows:
        print(f"  {name:34} median {statistics.median(values):7.3f} s   best {min(values):7.3f} s"
              f"   ({' '.join(f'{v:.3f}' for v in values)})")
    fm, fb = statistics.median(floor_t), min(floor_t)
    for name, values in rows[2:]:
        print(f"  ratio floor / {name.strip():26} median {fm / statistics.median(values):6.1%}"
              f"   best {fb / min(values):6.1%}")
    return state, programmed


def change_lane(title: str, goal_ms: float, state: ClusterState, programmed: Programmed,
                updates: Sequence[Update], expect: Callable[[Programmed, Any], str],
                floor: Callable[[Programmed], float]) -> None:
    """`floor` replays what the writers wrote for one change (the same restore input)
    into the floor's namespace, which holds the same full state."""
    totals, calcs, applies, floors = [], [], [], []
    lines = []
    for update in updates:
        programmed.ipset_runner.restores.clear()
        programmed.iptables_runner.restores.clear()
        t0 = time.perf_counter()
        state.apply([update])
        calc = calculate(state, LOCAL_NODE, CONFIG)
        t1 = time.perf_counter()
        programmed.dataplane.set_desired(calc.dataplane)
        result = programmed.dataplane.apply()
        t2 = time.perf_counter()
        assert result.ok, result.errors
        totals.append(t2 - t0)
        calcs.append(t1 - t0)
        applies.append(t2 - t1)
        lines.append(expect(programmed, result))
        floors.append(floor(programmed))
    print(f"\n{title} ({len(updates)} samples)")
    for name, values in [("apply(update) + calculate()", calcs),
                         ("set_desired() + apply()", applies), ("total", totals),
                         ("floor: the same restore(s)", floors)]:
        print(f"  {name:28} p50 {pct(values, 50) * 1e3:8.1f} ms   p99 {pct(values, 99) * 1e3:8.1f}"
              f" ms   best {min(values) * 1e3:8.1f} ms")
    print(f"  ratio floor / total        p50 {pct(floors, 50) / pct(totals, 50):6.1%}   "
          f"floor / set_desired() + apply() p50 {pct(floors, 50) / pct(applies, 50):6.1%}")
    print(f"  goal: total under {goal_ms:.0f} ms: p50 {'met' if pct(totals, 50) * 1e3 < goal_ms else 'MISSED'}")
    for line in sorted(set(lines)):
        print(f"  writes: {line} ({lines.count(line)}x)")


def replay(ns: str, argv: list[str], texts: Sequence[str]) -> float:
    t0 = time.perf_counter()
    for text in texts:
        subprocess.run(in_netns(ns, argv), input=text, text=True, check=True,
                       capture_output=True)
    return time.perf_counter() - t0


def restore_lines(texts: Sequence[str], prefix: str) -> list[str]:
    return [line for text in texts for line in text.splitlines() if line.startswith(prefix)]


def label_writes(p: Programmed, result: Any) -> str:
    sets = p.ipset_runner.restores
    adds, dels = len(restore_lines(sets, "add ")), len(restore_lines(sets, "del "))
    swaps = len(restore_lines(sets, "swap "))
    ipt = [n for n, r in result.results.items() if n.startswith("iptables") and r.writes]
    return (f"{len(sets)} ipset restore(s) (+{adds} -{dels} members, {swaps} swaps), "
            f"{len(p.iptables_runner.restores)} iptables restore(s) {ipt}")


def policy_writes(p: Programmed, result: Any) -> str:
    declared = [line[1:].split()[0] for line in restore_lines(p.iptables_runner.restores, ":")]
    rules = len(restore_lines(p.iptables_runner.restores, "-A "))
    return (f"{len(p.iptables_runner.restores)} iptables restore(s) rewriting "
            f"{', '.join(declared) or 'nothing'} ({rules} rules), "
            f"{len(p.ipset_runner.restores)} ipset restore(s)")


def label_updates(cluster: Cluster, samples: int) -> list[Update]:
    """One local pod's `role` label flipped between two values, `samples` times: its
    chains do not depend on it, two peer sets gain or lose its address."""
    ns, name, spec, labels = cluster.local_pods[0]
    values = [labels["role"], f"r{(int(labels['role'][1:]) + 1) % cluster.peer_values}"]
    return [put("WorkloadEndpoint", name, spec, ns, {**labels, "role": values[(i + 1) % 2]},
                revision=2 + i) for i in range(samples)]


def policy_updates(cluster: Cluster, samples: int) -> list[Update]:
    """One policy's first ingress rule's port edited, `samples` times."""
    name, spec = cluster.policies[0]
    out = []
    for i in range(samples):
        edited = json.loads(json.dumps(spec))
        edited["ingress"][0]["destination"]["ports"][0] = 1000 + i
        out.append(put("GlobalNetworkPolicy", name, edited, revision=2 + i))
    return out


# -- the lab lane -----------------------------------------------------------------------------

LAB_POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: bench}
spec: {cidr: 10.247.0.0/16, blockSize: 26, vxlanMode: Always}
"""
PROBE_PORT = 80
PROBE_TIMEOUT = 0.1  # a dropped SYN is only seen as silence; the lab's RTT is under 1 ms


def lab_policy(action: str) -> str:
    """The policy the lab lane flips: ingress to pod `target` from the probers."""
    return json.dumps({"apiVersion": API_VERSION, "kind": "GlobalNetworkPolicy",
                       "metadata": {"name": "bench-flip"},
                       "spec": {"selector": "role == 'target'", "ingress": [
                           {"action": action, "protocol": "TCP",
                            "destination": {"ports": [PROBE_PORT]}}, {"action": "Allow"}]}})


def lab_lane(applies: int) -> None:
    """3 nodes; a target pod on node1 serving TCP, a prober pod on every node; `ctl apply`
    of a policy that denies or allows the probers' port, alternately; after ctl returns,
    each prober probes until it sees the new verdict; the lane's figure is the time until
    the last of them did."""
    from lab import Lab  # noqa: PLC0415  (only this lane needs the lab)
    from lab import agents as lab_agents  # noqa: PLC0415
    from lab import pods as lab_pods  # noqa: PLC0415
    from lab import probe as lab_probe  # noqa: PLC0415

    bin_dir = Path(sys.executable).parent
    lab = Lab("p" + uuid.uuid4().hex[:8], nodes=3, subnets=2).up()
    try:
        env = {"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)}

        def ctl(*args: str, stdin: str | None = None) -> None:
            lab.exec("node1", [str(bin_dir / "ctl"), *args], input=stdin, env=env)

        ctl("apply", "-f", "-", stdin=LAB_POOL)
        for n in lab.nodes:
            lab_agents.start_agent(lab, n.name, backend="vxlan")
            lab_pods.install_cni(lab, n.name)
            lab_pods.start_cni_server(lab, n.name)
        for n in lab.nodes:
            lab_agents.wait_ready(lab, n.name)
        target = lab_pods.add_pod(lab, "node1", "bench", "target", labels={"role": "target"})
        lab.start_process(target.netns, [sys.executable, "-I", "-S", lab_probe.__file__,
                                         "serve", "target", str(PROBE_PORT)],
                          role="probe-server", name="probe-target")
        probers = [lab_pods.add_pod(lab, n.name, "bench", f"prober-{n.name}",
                                    labels={"role": "prober"}) for n in lab.nodes]

        def until_all(want: bool, timeout: float) -> float:
            t0 = time.perf_counter()
            pending = list(probers)
            while pending:
                # All at once: a Deny is only seen when the probe times out.
                outcomes = lab_probe.probe_all(
                    [lab_probe.Probe(p.netns, target.ip, PROBE_PORT, "TCP") for p in pending],
                    timeout=PROBE_TIMEOUT)
                pending = [p for p, o in zip(pending, outcomes, strict=True)
                           if o.connected != want]
                if pending and time.perf_counter() - t0 > timeout:
                    raise SystemExit(f"bench: {len(pending)} prober(s) never saw "
                                     f"{'allow' if want else 'deny'}")
            return time.perf_counter() - t0

        until_all(True, 30)  # the servers are up and nothing is policed yet
        seen: list[float] = []
        ctl_t: list[float] = []
        total_t: list[float] = []  # from ctl's start
        for i in range(applies):
            deny = i % 2 == 0
            t0 = time.perf_counter()
            ctl("apply", "-f", "-", stdin=lab_policy("Deny" if deny else "Allow"))
            ctl_t.append(time.perf_counter() - t0)
            seen.append(until_all(not deny, 30))
            total_t.append(time.perf_counter() - t0)
        print(f"\nlab: 3 nodes, `ctl apply` of a GlobalNetworkPolicy flipping Deny/Allow on "
              f"TCP/{PROBE_PORT} of a pod on node1, {applies} applies, probed from a pod on "
              "every node")
        print(f"  ctl apply itself             p50 {pct(ctl_t, 50) * 1e3:7.0f} ms   "
              f"p99 {pct(ctl_t, 99) * 1e3:7.0f} ms")
        print(f"  from ctl's start until every node saw it  p50 {pct(total_t, 50) * 1e3:7.0f} ms   "
              f"p99 {pct(total_t, 99) * 1e3:7.0f} ms")
        print("  from ctl's return until a probe from every node sees the new verdict:")
        for name, values in [("all applies", seen), ("to Deny", seen[0::2]),
                             ("to Allow", seen[1::2])]:
            print(f"    {name:12} p50 {pct(values, 50) * 1e3:7.0f} ms   "
                  f"p99 {pct(values, 99) * 1e3:7.0f} ms")
        print(f"  (a Deny is seen when a probe times out, after {PROBE_TIMEOUT * 1e3:.0f} ms, "
              f"which its figure includes; goal under 1 s: "
              f"{'met' if pct(seen, 99) < 1 else 'MISSED'} at p99)")
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local", type=int, default=100)
    ap.add_argument("--remote", type=int, default=16_000)
    ap.add_argument("--policies", type=int, default=250)
    ap.add_argument("--rules", type=int, default=4)
    ap.add_argument("--network-sets", type=int, default=50)
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--lab", action=argparse.BooleanOptionalAction, default=os.geteuid() == 0)
    ap.add_argument("--applies", type=int, default=20)
    a = ap.parse_args()
    cluster = make_cluster(a.local, a.remote, a.policies, a.rules, a.network_sets, a.seed)
    print(f"cluster: {a.local} local endpoints, {a.remote} remote, {a.network_sets} global "
          f"network sets, {a.policies} GlobalNetworkPolicies of {a.rules} ingress + 2 egress "
          f"rules, peers by {len(PEER_KEYS)} keys x {cluster.peer_values} values "
          f"({len(cluster.updates)} syncer updates, seed {a.seed})")
    with namespaces(2 * a.rounds, a.local) as spaces:
        backend = detect_backend(spaces[0])
        state, programmed = full_programming(cluster, spaces, a.rounds, backend)
        floor_ns = spaces[0]
        change_lane("pod label change (one local pod's `role`), all of the above present", 50,
                    state, programmed, label_updates(cluster, a.samples), label_writes,
                    lambda p: replay(floor_ns, ["ipset", "-exist", "restore"],
                                     p.ipset_runner.restores))
        change_lane("policy edit (one GlobalNetworkPolicy's port)", 100, state, programmed,
                    policy_updates(cluster, a.samples), policy_writes,
                    lambda p: replay(floor_ns, [binary(backend, "restore"), "--noflush"],
                                     p.iptables_runner.restores))
    if a.lab:
        lab_lane(a.applies)


if __name__ == "__main__":
    main()
