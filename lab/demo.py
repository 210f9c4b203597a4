"""The README's demo: a 3-node cluster across 2 subnets, pods through the CNI plugin, BGP.

Steps, each printed as it runs: lab up; an IP pool (VXLAN CrossSubnet,
natOutgoing) applied with ctl; tortie-agent on every node (BGP full mesh over
ExaBGP); the CNI plugin installed and 2 pods per node created through it,
exactly as a runtime calls it (pod1s labelled `role: frontend`, pod2s
`role: backend`); then node1's `ctl node status`, `ctl get ippool -o wide`,
`ctl ipam show --show-blocks`, and a ping matrix between all pods ending with
`ping matrix: <ok>/<total> ok`. Then policy: a Kubernetes default-deny ingress
policy plus one allowing frontends to reach backends, applied with ctl; a
second ping matrix that must match what the policies say, ending with
`ping matrix with policy: <allowed> allowed, <denied> denied, as expected`;
and `ctl explain` of one denied cell. Owns nothing lasting: the lab is torn
down at the end and on any failure, unless `keep` is set.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click

from lab import agents, pods
from lab.cluster import Lab

EXAMPLE_POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  cidr: 10.244.0.0/16
  blockSize: 26
  vxlanMode: CrossSubnet
  natOutgoing: true
"""
PODS_PER_NODE = 2
ROLES = ("frontend", "backend")  # pod1 on every node is a frontend, pod2 a backend
POLICIES = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: default-deny
  namespace: default
spec:
  podSelector: {}
  policyTypes: [Ingress]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: frontend-to-backend
  namespace: default
spec:
  podSelector:
    matchLabels: {role: backend}
  ingress:
  - from:
    - podSelector:
        matchLabels: {role: frontend}
"""


def step(text: str) -> None:
    click.secho(f"==> {text}", bold=True)


def show_ctl(lab: Lab, args: list[str], stdin: str | None = None, node: str = "node1") -> str:
    script = str(Path(sys.executable).with_name("ctl"))
    click.echo(f"{node}$ ctl {' '.join(args)}")
    res = lab.exec(node, [script, *args], env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)},
                   input=stdin, check=False)
    click.echo(res.stdout + res.stderr, nl=False)
    return res.stdout


def sessions_up(lab: Lab, node: str, want: int) -> bool:
    script = str(Path(sys.executable).with_name("ctl"))
    out = lab.exec(node, [script, "node", "status"], check=False).stdout
    return sum(1 for line in out.splitlines() if "| up " in line) >= want


def _wait(what: str, predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    click.echo(f"    (gave up waiting for {what} after {timeout:.0f}s)")
    return False


def ping_matrix(all_pods: list[pods.PodInfo]) -> tuple[int, int]:
    pairs = [(a, b) for a in all_pods for b in all_pods if a is not b]

    def reach(pair: tuple[pods.PodInfo, pods.PodInfo]) -> bool:
        a, b = pair
        deadline = time.monotonic() + 15  # routes may still be landing on the first pings
        while not pods.ping(a, b.ip):
            if time.monotonic() > deadline:
                return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = {(a.name, b.name): ok
                   for (a, b), ok in zip(pairs, pool.map(reach, pairs), strict=True)}
    width = max(len(p.name) for p in all_pods)
    click.echo(" " * (width + 1) + " ".join(p.name.rjust(width) for p in all_pods))
    for a in all_pods:
        cells = ["-" if a is b else ("ok" if results[(a.name, b.name)] else "FAIL")
                 for b in all_pods]
        click.echo(a.name.ljust(width + 1) + " ".join(c.rjust(width) for c in cells))
    ok = sum(results.values())
    return ok, len(results)


def _policy_matrix(all_pods: list[pods.PodInfo], roles: dict[str, str],
                   timeout: float = 20.0) -> tuple[int, int, int]:
    """Ping every pair until the matrix is what the policies say (frontend -> backend only)
    or `timeout` passes; print it. Returns (allowed, denied, cells that differ)."""
    pairs = [(a, b) for a in all_pods for b in all_pods if a is not b]
    want = {(a.name, b.name): (roles[a.name], roles[b.name]) == ROLES for a, b in pairs}

    def reach(pair: tuple[pods.PodInfo, pods.PodInfo]) -> bool:
        return pods.ping(pair[0], pair[1].ip, wait=1)

    deadline = time.monotonic() + timeout
    while True:
        with ThreadPoolExecutor(max_workers=16) as pool:
            got = {(a.name, b.name): ok
                   for (a, b), ok in zip(pairs, pool.map(reach, pairs), strict=True)}
        wrong = sum(got[k] != want[k] for k in want)
        if not wrong or time.monotonic() > deadline:
            break
    width = max(len(p.name) for p in all_pods)
    click.echo(" " * (width + 1) + " ".join(p.name.rjust(width) for p in all_pods))

    def cell(a: pods.PodInfo, b: pods.PodInfo) -> str:
        if a is b:
            return "-"
        seen = got[(a.name, b.name)]
        text = "ok" if seen else "denied"
        return text if seen == want[(a.name, b.name)] else f"{text}!"  # ! marks a surprise

    for a in all_pods:
        click.echo(a.name.ljust(width + 1) + " ".join(cell(a, b).rjust(width) for b in all_pods))
    allowed = sum(got.values())
    return allowed, len(got) - allowed, wrong


def run_demo(name: str, nodes: int = 3, subnets: int = 2, keep: bool = False) -> None:
    lab = Lab(name, nodes=nodes, subnets=subnets)
    step(f"bringing up lab '{name}': {nodes} nodes across {subnets} subnets, etcd in its own "
          "namespace")
    started = time.monotonic()
    try:
        lab.up()
        click.echo(f"    up in {time.monotonic() - started:.1f}s; etcd at "
                   f"{', '.join(lab.etcd_endpoints)}")
        for n in lab.nodes:
            click.echo(f"    {n.name:<6} {n.cidr:<16} subnet {lab.subnets[n.subnet].cidr}")
        step("applying the IP pool from node1 (ctl apply -f -)")
        click.echo(EXAMPLE_POOL.rstrip())
        show_ctl(lab, ["apply", "-f", "-"], EXAMPLE_POOL)
        step("starting tortie-agent on every node (BGP full mesh over ExaBGP)")
        for n in lab.nodes:
            agents.start_agent(lab, n.name)
        for n in lab.nodes:
            agents.wait_ready(lab, n.name)
            click.echo(f"    {n.name}: ready")
        step(f"creating {PODS_PER_NODE} pods per node through the CNI plugin (tortie-cni)")
        all_pods = []
        roles: dict[str, str] = {}
        for n in lab.nodes:
            pods.install_cni(lab, n.name)
            pods.start_cni_server(lab, n.name)  # a warm etcd connection: ~0.1 s per ADD
            for i in range(1, PODS_PER_NODE + 1):
                role = ROLES[(i - 1) % len(ROLES)]
                pod = pods.add_pod(lab, n.name, "default", f"{n.name}-pod{i}",
                                   labels={"role": role})
                roles[pod.name] = role
                click.echo(f"    {pod.namespace}/{pod.name:<12} {pod.ip:<14} on {pod.node} "
                           f"({pod.iface}, role={role})")
                all_pods.append(pod)
        step("waiting for the BGP sessions")
        _wait("BGP sessions on node1",
              lambda: sessions_up(lab, "node1", len(lab.nodes) - 1), timeout=30)
        step("node1's BGP status")
        show_ctl(lab, ["node", "status"])
        step("the pool and its blocks")
        show_ctl(lab, ["get", "ippool", "-o", "wide"])
        show_ctl(lab, ["ipam", "show", "--show-blocks"])
        step(f"ping matrix between all {len(all_pods)} pods")
        ok, total = ping_matrix(all_pods)
        click.echo(f"ping matrix: {ok}/{total} ok")
        step("network policy: default-deny ingress, and frontends may reach backends")
        click.echo(POLICIES.rstrip())
        show_ctl(lab, ["apply", "-f", "-"], POLICIES)
        show_ctl(lab, ["get", "networkpolicy", "-o", "wide"])
        step("ping matrix with the policies (ok: allowed, denied: dropped by policy)")
        allowed, denied, wrong = _policy_matrix(all_pods, roles)
        click.echo(f"ping matrix with policy: {allowed} allowed, {denied} denied, "
                   + ("as expected" if not wrong else f"{wrong} cells NOT as expected"))
        frontend = next(p for p in all_pods if roles[p.name] == "frontend")
        backends = [p for p in all_pods if roles[p.name] == "backend"]
        step(f"why is {backends[0].name} -> {backends[1].name} denied? (ctl explain)")
        show_ctl(lab, ["explain", f"default/{backends[0].name}", f"default/{backends[1].name}",
                   "--protocol", "icmp", "--icmp-type", "8"])
        step(f"and why is {frontend.name} -> {backends[1].name} allowed?")
        show_ctl(lab, ["explain", f"default/{frontend.name}", f"default/{backends[1].name}",
                   "--protocol", "icmp", "--icmp-type", "8"])
        if keep:
            step(f"lab '{name}' left running: tortie-lab exec --name {name} node1 -- ip route; "
                  f"tortie-lab down --name {name}")
            return
    except BaseException:
        lab.down()
        raise
    step(f"tearing down lab '{name}' (use --keep to leave it running)")
    lab.down()
