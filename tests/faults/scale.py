"""The scale scenario: a BGP lab of N nodes with route reflectors, its costs, and pod churn.

Owns one run of item 4 of the reliability issue and the arithmetic of its figures.
`run_scale(ScaleParams(nodes=50))` brings up a lab on one subnet (a pool without
encapsulation, so every pod route is a BGP route: see lab.bgp_cluster), two nodes as
route reflectors with the mesh off, and measures, in this order:

1. startup: from the first agent started until every agent is ready, until the
   staying pods (`pods_per_node` on every node) exist, and until every node routes
   every other node's block via that node; etcd's requests and CPU meanwhile;
2. idle (`idle_seconds`, once every agent has stopped writing to its kernel): the
   agents' and their ExaBGPs' CPU, etcd's request rate, and memory per node
   (RSS and PSS from /proc/<pid>/smaps_rollup) of the agent, its ExaBGP (the
   agent's descendants) and the node's CNI server;
3. churn (`churn_seconds` at `churn_rate` operations per second): pods created on
   random nodes and deleted at random, while probes (tests/faults/prober.py: TCP
   and ICMP every 100 ms, at raised priority) run between staying pods on different
   nodes, and `ip monitor route` on their nodes records any withdrawal of a route
   they use; then the churned pods are removed, every block is checked everywhere
   again, and memory is taken again: its growth per node is compared with
   `memory_bound_mib`.

A CNI call answered with code 11 (try again later: e.g. etcd did not answer within
the client's deadline on a starved machine) is retried, as a container runtime
retries it, and counted; only a call that still fails counts as failed.
etcd's requests are its `grpc_server_handled_total` summed by method (from
/metrics, before and after a phase), its CPU is /proc/<pid>/stat's utime+stime.
Invariants: every lab is torn down, also when a phase fails; the figures are
plain numbers keyed by name (`ScaleResult.figures`), so bench/scale.py can set two
runs side by side; the parsing and arithmetic functions are pure.
"""

from __future__ import annotations

import ipaddress
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from lab import Lab
from lab import agents as lab_agents
from lab import pods as lab_pods
from lab import probe as lab_probe
from lab.bgp_cluster import start_bgp_cluster

from .prober import PROBE_PORT, Pair, Prober, ProbeReport

MIB = 1024 * 1024
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
NAMESPACE = "default"
BLOCK_PREFIX = 26
BGP_PROTO = "80"  # the kernel protocol tortie writes BGP-learned routes with
T = TypeVar("T")


@dataclass(frozen=True)
class ScaleParams:
    nodes: int = 10
    route_reflectors: int = 2
    pods_per_node: int = 2
    churn_seconds: float = 30.0
    churn_rate: float = 10.0  # pod creations plus deletions per second
    churn_live: int = 20  # churned pods alive at once, about
    churn_workers: int = 8  # CNI calls in flight at once
    probe_pairs: int = 16
    idle_seconds: float = 10.0
    memory_bound_mib: float = 10.0  # allowed growth per node of agent and of ExaBGP RSS
    block_timeout: float = 300.0
    name: str = "scale"
    seed: int = 1


@dataclass
class ScaleResult:
    params: ScaleParams
    figures: dict[str, float] = field(default_factory=dict)  # "name (unit)" -> value
    probes: ProbeReport | None = None
    churn_errors: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # CNI calls answered "try again later"
    memory_growth: dict[str, float] = field(default_factory=dict)  # "agent-node3" -> MiB
    etcd_methods: dict[str, dict[str, float]] = field(default_factory=dict)  # phase -> rates
    probed_routes_deleted: list[str] = field(default_factory=list)  # "<node>: Deleted ..."

    @property
    def lost_between_staying(self) -> int:
        return self.probes.lost if self.probes else 0

    @property
    def memory_within_bound(self) -> bool:
        return all(g <= self.params.memory_bound_mib for g in self.memory_growth.values())


# -- pure: parsing and arithmetic ----------------------------------------------------------


def grpc_handled(metrics: str) -> dict[str, float]:
    """etcd's handled gRPC requests by method ("Range", "Txn", ...) from /metrics text."""
    counts: Counter[str] = Counter()
    for line in metrics.splitlines():
        if not line.startswith("grpc_server_handled_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        for part in labels[labels.index("{") + 1:labels.rindex("}")].split(","):
            key, _, raw = part.partition("=")
            if key == "grpc_method":
                counts[raw.strip('"')] += float(value)
    return dict(counts)


def metric_value(metrics: str, name: str) -> float | None:
    """The value of an unlabelled metric in Prometheus text (None when it is absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def rates(before: Mapping[str, float], after: Mapping[str, float],
          seconds: float) -> dict[str, float]:
    """Per-second increase of each counter between two readings (only those that grew)."""
    return {k: (after[k] - before.get(k, 0.0)) / seconds for k in sorted(after)
            if after[k] > before.get(k, 0.0)}


def smaps_rollup(text: str) -> dict[str, int]:
    """Rss and Pss in bytes from /proc/<pid>/smaps_rollup text."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def cpu_ticks(stat: str) -> int:
    """utime + stime in clock ticks from /proc/<pid>/stat text."""
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)


def descendants(parents: Mapping[int, int], root: int) -> list[int]:
    """Every process below `root` in a pid -> parent pid map."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, ())
    return sorted(out)


def block_of(ip: str) -> str:
    return str(ipaddress.ip_network(f"{ip}/{BLOCK_PREFIX}", strict=False))


def missing_routes(kernel_routes: str, wanted: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (block, next hop) of `wanted` that `ip -4 route show proto 80` output lacks."""
    have = set()
    for line in kernel_routes.splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "via":
            have.add((words[0], words[2]))
    return [w for w in wanted if w not in have]


def softnet(text: str) -> tuple[int, int]:
    """(packets dropped, times the softirq ran out of budget) summed over the CPUs, from
    /proc/net/softnet_stat (hex columns: processed, dropped, time_squeeze, ...)."""
    dropped = squeezed = 0
    for line in text.splitlines():
        cols = line.split()
        if len(cols) >= 3:
            dropped += int(cols[1], 16)
            squeezed += int(cols[2], 16)
    return dropped, squeezed


def route_deletions(monitor_output: str, watched: Iterable[str]) -> list[str]:
    """The lines of `ip -4 monitor route` output that delete a route to one of `watched`
    (prefixes such as "10.244.1.0/26"; a /32 as ip prints it, "10.244.1.5")."""
    want = set(watched)
    return [line for line in monitor_output.splitlines()
            if line.startswith("Deleted ") and len(line.split()) > 1
            and line.split()[1] in want]


def probe_pairs(nodes: Sequence[str], count: int) -> list[tuple[str, str]]:
    """(source node, destination node) pairs: `count` sources spread over the nodes, each
    probing the node half the cluster away, so reflectors and clients are both on paths."""
    n = len(nodes)
    if n < 2:
        return []
    step = max(1, n // max(1, count))
    sources = list(range(0, n, step))[:count]
    return [(nodes[i], nodes[(i + max(1, n // 2)) % n]) for i in sources]


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- side effects: reading the lab's processes ---------------------------------------------


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # gone meanwhile
        return ""


def process_parents() -> dict[int, int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read(f"/proc/{entry}/stat")
            if stat:
                parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])
    return parents


def process_cpu(pids: Iterable[int]) -> float:
    """CPU seconds the processes have used so far."""
    return sum(cpu_ticks(stat) for pid in pids if (stat := _read(f"/proc/{pid}/stat"))) \
        / CLOCK_TICK


def process_memory(pids: Iterable[int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for pid in pids:
        total.update(smaps_rollup(_read(f"/proc/{pid}/smaps_rollup")))
    return dict(total)


@dataclass
class LabProcesses:
    """The PIDs of a lab's etcd, agents (with their ExaBGP) and CNI servers, by node."""

    etcd: list[int]
    agents: dict[str, int]
    speakers: dict[str, list[int]]
    cni_servers: dict[str, int]

    @classmethod
    def of(cls, lab: Lab) -> LabProcesses:
        alive = [p for p in lab.status()["processes"] if p["alive"]]
        parents = process_parents()
        agents = {p["name"].removeprefix("agent-"): p["pid"] for p in alive
                  if p["role"] == "agent"}
        return cls(
            etcd=[p["pid"] for p in alive if p["role"] == "etcd"],
            agents=agents,
            speakers={node: descendants(parents, pid) for node, pid in agents.items()},
            cni_servers={p["name"].removeprefix("cni-server-"): p["pid"] for p in alive
                         if p["role"] == "cni-server"})

    def memory(self) -> dict[str, dict[str, int]]:
        """"agent-<node>" / "exabgp-<node>" / "cni-<node>" -> {"Rss": bytes, "Pss": bytes}."""
        out = {f"agent-{n}": process_memory([pid]) for n, pid in self.agents.items()}
        out.update({f"exabgp-{n}": process_memory(pids) for n, pids in self.speakers.items()})
        out.update({f"cni-{n}": process_memory([pid]) for n, pid in self.cni_servers.items()})
        return out

    def agents_cpu(self) -> float:
        return process_cpu(self.agents.values())

    def speakers_cpu(self) -> float:
        return process_cpu(pid for pids in self.speakers.values() for pid in pids)

    def cni_servers_cpu(self) -> float:
        return process_cpu(self.cni_servers.values())


def etcd_metrics_text(lab: Lab) -> str:
    return lab.exec("node1", ["curl", "-sf", "--max-time", "5",
                              f"{lab.etcd_endpoints[0]}/metrics"]).stdout


def etcd_metrics(lab: Lab) -> dict[str, float]:
    return grpc_handled(etcd_metrics_text(lab))


def kernel_bgp_routes(lab: Lab, node: str) -> str:
    return lab.exec(node, ["ip", "-4", "route", "show", "proto", BGP_PROTO]).stdout


def wait_every_block_everywhere(lab: Lab, blocks: Mapping[str, set[str]], timeout: float,
                                poll: float = 0.5) -> None:
    """Until every node routes every other node's blocks via that node (`blocks`: node ->
    its blocks); AssertionError naming what is still missing after `timeout`."""
    ips = {n.name: n.ip for n in lab.nodes}
    pending = {n: [(b, ips[owner]) for owner, bs in blocks.items() if owner != n for b in bs]
               for n in blocks}
    deadline = time.monotonic() + timeout
    while pending:
        for node in list(pending):
            pending[node] = missing_routes(kernel_bgp_routes(lab, node), pending[node])
            if not pending[node]:
                del pending[node]
        if not pending:
            return
        if time.monotonic() > deadline:
            sample = {n: m[:3] for n, m in list(pending.items())[:5]}
            raise AssertionError(f"after {timeout:g}s {len(pending)} node(s) still miss "
                                 f"routes, e.g. {sample}")
        time.sleep(poll)


@dataclass
class RouteWatch:
    """`ip -4 monitor route` on some nodes, and the routes whose deletion matters there."""

    lab: Lab
    watched: dict[str, set[str]]  # node -> destinations (block prefixes, pod addresses)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self) -> RouteWatch:
        for node in self.watched:
            self.procs[node] = self.lab.start_process(
                node, ["ip", "-4", "monitor", "route"], role="route-monitor",
                name=f"route-monitor-{node}", log_path=self._log(node))
        # The monitor subscribes as soon as `ip` runs: wait for every exec, then a moment.
        deadline = time.monotonic() + 30
        while any(_read(f"/proc/{p.pid}/comm").strip() != "ip" for p in self.procs.values()):
            if time.monotonic() > deadline:
                raise AssertionError("ip monitor did not start within 30 s")
            time.sleep(0.05)
        time.sleep(1.0)
        return self

    def stop(self) -> list[str]:
        """Stop the monitors; every deletion of a watched route, as "<node>: <line>"."""
        for proc in self.procs.values():
            proc.terminate()
            proc.wait(timeout=10)
        return [f"{node}: {line}" for node, dests in self.watched.items()
                for line in route_deletions(_read(str(self._log(node))), dests)]

    def _log(self, node: str) -> Path:
        return self.lab.state_dir / f"route-monitor-{node}.log"


def settle(lab: Lab) -> None:
    """Until no agent has written to its kernel for a second (all nodes at once)."""
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda n: lab_agents.wait_settled(lab, n.name, quiet=1.0, timeout=120.0),
                      lab.nodes))


# The probing threads' niceness: the lab saturates the machine's cores, and a prober
# waiting for a CPU past its 0.5 s budget reports a loss the network did not have.
PROBER_NICE = -10
TRY_AGAIN_LATER = 11  # the CNI error code a runtime answers by retrying the call
ATTEMPTS = 3


def with_retries(call: Callable[[], T], retried: list[str]) -> T:
    """`call()`, again after a pause when it fails with CNI code 11 (try again later), as a
    container runtime retries a sandbox; each retry's error is appended to `retried`."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except lab_pods.PodError as e:
            if e.code != TRY_AGAIN_LATER or attempt == ATTEMPTS:
                raise
            retried.append(str(e)[:300])
            time.sleep(attempt)
    raise AssertionError("unreachable")


# -- churn ---------------------------------------------------------------------------------


@dataclass
class ChurnReport:
    ops: int = 0
    adds: int = 0
    deletes: int = 0
    skipped: int = 0  # ticks dropped because every worker was still busy
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # code 11 answers, then retried
    seconds: float = 0.0


def churn(lab: Lab, params: ScaleParams, stop_after: float) -> ChurnReport:
    """Create and delete pods on random nodes at `churn_rate` per second for `stop_after` s;
    the churned pods left at the end are deleted (not counted)."""
    rng = random.Random(params.seed)
    nodes = [n.name for n in lab.nodes]
    live: list[lab_pods.PodInfo] = []
    lock = threading.Lock()
    report = ChurnReport()
    busy = threading.Semaphore(params.churn_workers)
    serial = iter(range(10**9))

    def add(node: str, name: str) -> None:
        pod = with_retries(lambda: lab_pods.add_pod(
            lab, node, NAMESPACE, name, labels={"app": "churn"}, namespace_exists=True),
            report.retried)
        with lock:
            live.append(pod)

    def delete(pod: lab_pods.PodInfo) -> None:
        with_retries(lambda: lab_pods.delete_pod(lab, pod), report.retried)

    def timed(kind: str, fn: Callable[..., None], *args: object) -> None:
        started = time.monotonic()
        try:
            fn(*args)
            with lock:
                report.latencies.append(time.monotonic() - started)
                report.ops += 1
                setattr(report, kind, getattr(report, kind) + 1)
        except Exception as e:  # counted and reported: a failed CNI call is a finding
            with lock:
                report.errors.append(f"{kind[:-1]} {args[-1] if kind == 'adds' else ''}: {e}"[:300])
        finally:
            busy.release()

    futures: list[Future[None]] = []
    started = time.monotonic()
    with ThreadPoolExecutor(params.churn_workers) as pool:
        tick = started
        while time.monotonic() - started < stop_after:
            if not busy.acquire(blocking=False):
                report.skipped += 1
            else:
                with lock:
                    victim = live.pop(rng.randrange(len(live))) \
                        if live and (len(live) >= params.churn_live or rng.random() < 0.5) \
                        else None
                if victim is not None:
                    futures.append(pool.submit(timed, "deletes", delete, victim))
                else:
                    futures.append(pool.submit(timed, "adds", add, rng.choice(nodes),
                                               f"churn{next(serial)}"))
            tick += 1.0 / params.churn_rate
            time.sleep(max(0.0, tick - time.monotonic()))
        for f in futures:
            f.result()
        report.seconds = time.monotonic() - started
        for pod in live:
            pool.submit(lab_pods.delete_pod, lab, pod)
    return report


# -- the run -------------------------------------------------------------------------------


def _start_probe_servers(lab: Lab, pods: Iterable[lab_pods.PodInfo]) -> None:
    for pod in pods:
        # At the prober's priority: a TCP probe is answered by this Python process, and
        # one waiting for a CPU past the budget would count as a loss the network did not have.
        lab.start_process(pod.netns, ["nice", "-n", str(PROBER_NICE), sys.executable, "-I",
                                      "-S", lab_probe.__file__, "serve", pod.name,
                                      str(PROBE_PORT)],
                          role="probe-server", name=f"probe-{pod.name}")


def _mib(n: float) -> float:
    return n / MIB


def run_scale(params: ScaleParams, say: Callable[[str], None] = print) -> ScaleResult:
    """One run (see the module docstring), progress lines to `say`; the lab is always
    torn down."""
    result = ScaleResult(params)
    fig = result.figures
    lab = Lab(params.name, nodes=params.nodes, subnets=1)
    try:
        lab.up()
        say(f"lab {lab.name}: {params.nodes} nodes up")
        procs = LabProcesses.of(lab)
        m0, c0, t0 = etcd_metrics(lab), process_cpu(procs.etcd), time.monotonic()
        start_bgp_cluster(lab, params.route_reflectors,
                          ready_timeout=max(120.0, 6.0 * params.nodes))
        fig["agents ready (s)"] = time.monotonic() - t0
        # Fresh processes: all the CPU they have used is what starting took (this figure,
        # unlike the seconds above, does not depend on what else the machine runs).
        started = LabProcesses.of(lab)
        fig["agent CPU s to ready (mean per node)"] = started.agents_cpu() / params.nodes
        say(f"agents ready after {fig['agents ready (s)']:.1f} s")
        # One syncer per agent, its BGP daemon included: a watcher per synced prefix.
        watchers = metric_value(etcd_metrics_text(lab), "etcd_debugging_mvcc_watcher_total")
        if watchers is not None:
            fig["etcd watchers per agent"] = watchers / params.nodes
        lab_pods.ensure_namespace(lab, NAMESPACE)
        startup_retries: list[str] = []
        with ThreadPoolExecutor(params.churn_workers) as pool:
            # One installation (and CNI server) per node before any pod: two ADDs racing
            # to install the same node would find its conflist before its server.
            list(pool.map(lambda n: lab_pods.install_cni(lab, n.name), lab.nodes))
            staying = list(pool.map(
                lambda job: with_retries(lambda: lab_pods.add_pod(
                    lab, job[0], NAMESPACE, job[1], labels={"app": "stay"},
                    namespace_exists=True), startup_retries),
                [(n.name, f"stay{n.name[4:]}x{k}") for n in lab.nodes
                 for k in range(params.pods_per_node)]))
        fig["staying pod ADDs retried (code 11)"] = float(len(startup_retries))
        result.retried += startup_retries
        fig["staying pods added (s)"] = time.monotonic() - t0
        blocks: dict[str, set[str]] = {}
        for pod in staying:
            blocks.setdefault(pod.node, set()).add(block_of(pod.ip))
        wait_every_block_everywhere(lab, blocks, params.block_timeout)
        t1 = time.monotonic()
        fig["every block everywhere (s)"] = t1 - t0
        m1, c1 = etcd_metrics(lab), process_cpu(procs.etcd)
        result.etcd_methods["startup"] = rates(m0, m1, t1 - t0)
        fig["etcd requests/s, startup"] = sum(result.etcd_methods["startup"].values())
        fig["etcd CPU %, startup"] = 100 * (c1 - c0) / (t1 - t0)
        say(f"every block on every node after {fig['every block everywhere (s)']:.1f} s")

        # Idle: once every agent has stopped writing (pods just made can still be arriving).
        settle(lab)
        procs = LabProcesses.of(lab)
        a0, s0, c2, m2, t2 = (procs.agents_cpu(), procs.speakers_cpu(), process_cpu(procs.etcd),
                              etcd_metrics(lab), time.monotonic())
        time.sleep(params.idle_seconds)
        a1, s1, c3, m3, t3 = (procs.agents_cpu(), procs.speakers_cpu(), process_cpu(procs.etcd),
                              etcd_metrics(lab), time.monotonic())
        result.etcd_methods["idle"] = rates(m2, m3, t3 - t2)
        fig["agent CPU % idle (mean per node)"] = 100 * (a1 - a0) / (t3 - t2) / params.nodes
        fig["ExaBGP CPU % idle (mean per node)"] = 100 * (s1 - s0) / (t3 - t2) / params.nodes
        fig["etcd requests/s, idle"] = sum(result.etcd_methods["idle"].values())
        fig["etcd CPU %, idle"] = 100 * (c3 - c2) / (t3 - t2)
        before = procs.memory()
        for kind in ("agent", "exabgp", "cni"):
            for what in ("Rss", "Pss"):
                values = [_mib(v.get(what, 0)) for k, v in before.items()
                          if k.startswith(kind + "-")]
                if values:
                    fig[f"{kind} {what} MiB (median per node)"] = statistics.median(values)
                    fig[f"{kind} {what} MiB (max)"] = max(values)
        say("idle figures taken; churn starts")

        # Churn, with probes between staying pods on different nodes.
        by_node: dict[str, list[lab_pods.PodInfo]] = {}
        for pod in staying:
            by_node.setdefault(pod.node, []).append(pod)
        node_names = [n.name for n in lab.nodes]
        routes = probe_pairs(node_names, params.probe_pairs)
        pairs = [Pair(f"{a}/{by_node[a][0].name} -> {b}/{by_node[b][-1].name}",
                      by_node[a][0].netns, by_node[b][-1].ip, by_node[b][-1].name)
                 for a, b in routes]
        _start_probe_servers(lab, {p.name: p for a, b in routes for p in [by_node[b][-1]]}
                             .values())
        for pair in pairs:
            deadline = time.monotonic() + 60
            while lab_probe.probe(pair.ip, PROBE_PORT, "TCP", netns=pair.netns).detail \
                    != pair.name:
                if time.monotonic() > deadline:
                    raise AssertionError(f"probe {pair.label} never answered")
                time.sleep(0.2)
        # Whether the routes the probes use were ever withdrawn: on each source node the
        # destination pod's block, on each destination node the pod's own /32 route.
        watched: dict[str, set[str]] = {}
        for a, b in routes:
            dest = by_node[b][-1]
            watched.setdefault(a, set()).add(block_of(dest.ip))
            watched.setdefault(b, set()).add(dest.ip)
        watch = RouteWatch(lab, watched).start()
        c4, m4, t4 = process_cpu(procs.etcd), etcd_metrics(lab), time.monotonic()
        a4, s4, v4 = procs.agents_cpu(), procs.speakers_cpu(), procs.cni_servers_cpu()
        n4 = softnet(_read("/proc/net/softnet_stat"))
        prober = Prober(pairs, nice=PROBER_NICE).start()
        try:
            report = churn(lab, params, params.churn_seconds)
        finally:
            result.probes = prober.stop()
            result.probed_routes_deleted = watch.stop()
        c5, m5, t5 = process_cpu(procs.etcd), etcd_metrics(lab), time.monotonic()
        a5, s5, v5 = procs.agents_cpu(), procs.speakers_cpu(), procs.cni_servers_cpu()
        n5 = softnet(_read("/proc/net/softnet_stat"))
        result.etcd_methods["churn"] = rates(m4, m5, t5 - t4)
        fig["churn operations/s achieved"] = report.ops / report.seconds
        fig["churn operations failed"] = float(len(report.errors))
        fig["churn CNI calls retried (code 11)"] = float(len(report.retried))
        result.retried += report.retried
        fig["churn ticks skipped (workers busy)"] = float(report.skipped)
        fig["churn CNI call p50 (s)"] = percentile(report.latencies, 0.5)
        fig["churn CNI call p99 (s)"] = percentile(report.latencies, 0.99)
        fig["etcd requests/s, churn"] = sum(result.etcd_methods["churn"].values())
        fig["etcd CPU %, churn"] = 100 * (c5 - c4) / (t5 - t4)
        # Where the cores went during the churn (% of one core, all nodes together), and
        # the agents' CPU per churn operation: every agent handles every endpoint change
        # (remote endpoints feed policy's IP sets), so this grows with the node count.
        fig["agents CPU %, churn (all nodes)"] = 100 * (a5 - a4) / (t5 - t4)
        fig["ExaBGP CPU %, churn (all nodes)"] = 100 * (s5 - s4) / (t5 - t4)
        fig["CNI servers CPU %, churn (all nodes)"] = 100 * (v5 - v4) / (t5 - t4)
        fig["agents CPU ms per churn operation (all nodes)"] = \
            1000 * (a5 - a4) / max(1, report.ops)
        fig["probes sent"] = float(result.probes.sent)
        fig["probes lost between staying pods"] = float(result.probes.lost)
        fig["probes lost, ICMP answered late"] = float(result.probes.late)
        fig["probed routes deleted during churn"] = float(len(result.probed_routes_deleted))
        # The host's packet backlog (every namespace shares it): drops, and how often the
        # softirq ran out of budget and left packets to ksoftirqd, a thread at normal
        # priority among the lab's processes.
        fig["kernel backlog drops during churn"] = float(n5[0] - n4[0])
        fig["softirq budget exhausted during churn"] = float(n5[1] - n4[1])
        result.churn_errors = report.errors
        say(f"churn: {report.ops} operations in {report.seconds:.1f} s "
            f"({report.adds} adds, {report.deletes} deletes, {len(report.errors)} failed)")

        # After churn: the staying pods' routes are all there, and memory has not grown.
        wait_every_block_everywhere(lab, blocks, params.block_timeout)
        settle(lab)
        after = procs.memory()
        result.memory_growth = {k: _mib(after[k].get("Rss", 0) - v.get("Rss", 0))
                                for k, v in before.items()
                                if k in after and not k.startswith("cni-")}
        for kind in ("agent", "exabgp"):
            growth = [g for k, g in result.memory_growth.items() if k.startswith(kind + "-")]
            fig[f"{kind} RSS growth over churn MiB (max per node)"] = max(growth, default=0.0)
            fig[f"{kind} RSS growth over churn MiB (median)"] = statistics.median(growth) \
                if growth else 0.0
        return result
    finally:
        lab.down()


def format_result(result: ScaleResult) -> str:
    """The run's figures, one per line, then probes, churn errors and etcd's busiest methods."""
    p = result.params
    lines = [f"scale run: {p.nodes} nodes, {p.route_reflectors} route reflectors (mesh off), "
             f"{p.pods_per_node} pods per node, churn {p.churn_rate:g}/s for "
             f"{p.churn_seconds:g} s"]
    lines += [f"  {k:48} {v:10.2f}" for k, v in result.figures.items()]
    for phase, by_method in result.etcd_methods.items():
        top = sorted(by_method.items(), key=lambda kv: -kv[1])[:4]
        lines.append(f"  etcd {phase}: " + ", ".join(f"{m} {r:.1f}/s" for m, r in top))
    lines.append(f"  memory growth bound {p.memory_bound_mib:g} MiB RSS per process: "
                 + ("kept" if result.memory_within_bound else "EXCEEDED by "
                    + ", ".join(f"{k} {g:.1f}" for k, g in result.memory_growth.items()
                                if g > p.memory_bound_mib)))
    if result.probes is not None:
        lines.append("  " + result.probes.report().splitlines()[0])
        # Every pair that lost something, with when (seconds into the churn).
        lines += ["    " + pair.line(result.probes.started) for pair in result.probes.pairs
                  if pair.lost]
    lines += [f"  probed route deleted: {line}" for line in result.probed_routes_deleted[:10]]
    lines += [f"  churn error: {e}" for e in result.churn_errors[:5]]
    lines += [f"  retried (code 11): {e}" for e in result.retried[:5]]
    return "\n".join(lines)
