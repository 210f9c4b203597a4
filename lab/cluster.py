"""A lab cluster: network namespaces on one machine, joined by a routed underlay, with etcd.

Owns: building and tearing down one lab (namespaces, bridges, veths, addresses,
routes, sysctls, etcd members) and the processes it starts. Invariants:

- Nothing is created in the root namespace: veths are created with both ends
  already inside lab namespaces, so deleting the namespaces removes every
  interface, and a crash can never leak one into the root namespace.
- The state file (lab.state) is written before anything exists and after each
  process starts. `down` trusts it for processes (killed by PID only while
  their start time still matches) and scans `<lab>-*` for namespaces, so it
  also cleans up after a crashed `up`, works from any process, and is
  idempotent.
- `up` either finishes or removes everything it created and raises LabError.

Topology (names and addresses come from lab.topology)::

    <lab>-router: bridge per subnet (.1 on each), ip_forward=1
        |-- veth -- <lab>-etcd[N]  eth0 .2, .3, ... of subnet 1
        |-- veth -- <lab>-node1    eth0 .11 of subnet 1
        |-- veth -- <lab>-node2    eth0 .11 of subnet 2 ...
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lab import netns, procs, state
from lab.errors import CommandFailed, LabError, LabNotFound
from lab.etcd import ETCD_BINARY, EtcdMember
from lab.topology import (
    DEFAULT_NAME,
    LabEtcd,
    LabNode,
    LabSubnet,
    Plan,
    check_name,
    iface_tag,
    make_plan,
    ns_prefix,
)

log = logging.getLogger(__name__)

REQUIRED_TOOLS = ("ip", "sysctl", "curl")
ETCD_HEALTH_TIMEOUT = 20.0

Target = LabNode | LabEtcd | str | int


class Lab:
    """One lab. `Lab(name, nodes=3, subnets=2, etcd_members=1).up()`; `.down()` removes it.

    Also a context manager (`with Lab("x") as lab:` brings it up and always down).
    `Lab.load(name)` attaches to a lab another process brought up.
    """

    def __init__(
        self, name: str = DEFAULT_NAME, nodes: int = 3, subnets: int = 2, etcd_members: int = 1,
        *, underlay: str | None = None, run_dir: Path | None = None,
        etcd_binary: str | None = None, plan: Plan | None = None,
    ) -> None:
        self.name = check_name(name)
        self.run_dir = run_dir or state.run_dir()
        self.etcd_binary = etcd_binary
        if plan is None:
            # Other live labs' ranges are avoided; our own leftovers are not "taken".
            taken = [d["plan"]["underlay"] for n, d in state.all_labs(self.run_dir).items()
                     if n != name and "plan" in d]
            plan = make_plan(name, nodes, subnets, etcd_members, underlay, taken)
        self.plan = plan
        self._members: list[EtcdMember] = []
        self._popens: list[subprocess.Popen] = []

    # ---- what the lab is -------------------------------------------------

    @classmethod
    def load(cls, name: str = DEFAULT_NAME, run_dir: Path | None = None) -> Lab:
        """The lab `name` as recorded in its state file (brought up by any process)."""
        data = state.read(check_name(name), run_dir)
        if data is None or "plan" not in data:
            raise LabNotFound(f"lab {name!r} is not up (no state in {state.lab_dir(name, run_dir)})")
        return cls(name, run_dir=run_dir, plan=Plan.from_dict(data["plan"]))

    @property
    def nodes(self) -> list[LabNode]:
        return list(self.plan.nodes)

    @property
    def subnets(self) -> list[LabSubnet]:
        return list(self.plan.subnets)

    @property
    def etcd(self) -> list[LabEtcd]:
        return list(self.plan.etcd)

    @property
    def etcd_endpoints(self) -> list[str]:
        return self.plan.etcd_endpoints

    @property
    def underlay(self) -> str:
        return self.plan.underlay

    @property
    def router_netns(self) -> str:
        return self.plan.router_netns

    @property
    def namespaces(self) -> list[str]:
        return self.plan.namespaces

    @property
    def state_dir(self) -> Path:
        return state.lab_dir(self.name, self.run_dir)

    @property
    def etcd_members(self) -> list[EtcdMember]:
        """The etcd processes this Python process started (empty after Lab.load)."""
        return list(self._members)

    def node(self, name: str) -> LabNode:
        for n in self.plan.nodes:
            if name in (n.name, n.netns):
                return n
        raise LabError(f"lab {self.name} has no node {name!r} "
                       f"(nodes: {', '.join(n.name for n in self.plan.nodes)})")

    def netns_of(self, target: Target) -> str:
        """The namespace of a node/etcd member/the router: by object, role, netns name or node
        number; also any other namespace of this lab by name (`<lab>-...`, e.g. a pod's)."""
        if isinstance(target, LabNode | LabEtcd):
            return target.netns
        roles = {"router": self.router_netns}
        roles.update({e.name: e.netns for e in self.plan.etcd})
        roles.update({n.name: n.netns for n in self.plan.nodes})
        if isinstance(target, int) or target.isdigit():
            target = f"node{int(target)}"
        if target in roles:
            return roles[target]
        if target in roles.values() or target.startswith(ns_prefix(self.name)):
            return target
        raise LabError(f"lab {self.name} has no {target!r}; choose from {', '.join(roles)}")

    def __repr__(self) -> str:
        return (f"Lab({self.name!r}, nodes={len(self.plan.nodes)}, subnets={len(self.plan.subnets)}, "
                f"etcd_members={len(self.plan.etcd)}, underlay={self.underlay!r})")

    # ---- up --------------------------------------------------------------

    def up(self) -> Lab:
        """Build the lab. On any failure remove everything created and raise LabError."""
        t0 = time.monotonic()
        self._check_tools()
        leftovers = self._leftovers()
        if leftovers:
            log.warning("lab %s: found leftovers of an earlier run (%s); tearing them down and "
                        "building fresh", self.name, leftovers)
            self.down()
        step = "writing the state file"
        try:
            self._save("building")
            step = "creating namespaces"
            netns.batch([f"netns add {ns}" for ns in self.namespaces])
            step = "wiring the router namespace"
            netns.batch(self._router_lines(), self.router_netns)
            step = "configuring node and etcd namespaces"
            netns.run_parallel(self._host_jobs())
            step = "starting etcd"
            self._start_etcd()
            self._save("up")
        except BaseException as e:
            # BaseException too: Ctrl-C or SIGTERM (the CLI turns it into
            # SystemExit) during up must not leave half a lab behind.
            log.error("lab %s: up failed while %s; removing what was created", self.name, step)
            try:
                self.down()
            except Exception as cleanup_error:  # report both, raise the original
                log.error("lab %s: cleanup after the failed up also failed: %s",
                          self.name, cleanup_error)
            if isinstance(e, Exception):
                raise LabError(f"lab {self.name}: up failed while {step}: {e}; "
                               "everything it created was removed") from e
            raise
        log.info("lab %s up in %.2fs: %d nodes on %d subnet(s) of %s, etcd %s", self.name,
                 time.monotonic() - t0, len(self.plan.nodes), len(self.plan.subnets), self.underlay,
                 ",".join(self.etcd_endpoints))
        return self

    def _check_tools(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root (it creates network namespaces)")
        missing = [t for t in REQUIRED_TOOLS if not shutil.which(t)]
        binary = self.etcd_binary or ETCD_BINARY
        if not shutil.which(binary):
            missing.append(binary)
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)} "
                           "(apt-get install iproute2 procps curl etcd-server)")

    def _leftovers(self) -> str:
        return "; ".join(find_leftovers(self.name, self.run_dir))

    def _router_lines(self) -> list[str]:
        lines = ["link set lo up"]
        for s in self.plan.subnets:
            lines += [
                f"link add {s.bridge} type bridge",
                f"addr add {s.gateway}/{s.cidr.split('/')[1]} dev {s.bridge}",
                f"link set {s.bridge} up",
            ]
        for h in (*self.plan.etcd, *self.plan.nodes):
            # Both ends are born inside lab namespaces (see the module docstring).
            lines += [
                f"link add {h.veth} type veth peer name eth0 netns {h.netns}",
                f"link set {h.veth} master {self.plan.subnets[h.subnet].bridge} up",
            ]
        return lines

    def _host_jobs(self) -> list[tuple[list[str], str | None]]:
        jobs: list[tuple[list[str], str | None]] = [
            (netns.sysctl_argv(self.router_netns, {"net.ipv4.ip_forward": "1"}), None),
        ]
        for h in (*self.plan.etcd, *self.plan.nodes):
            lines = [
                "link set lo up",
                f"addr add {h.ip}/{h.prefix} dev eth0",
                "link set eth0 up",
                f"route add default via {h.gateway} dev eth0",
            ]
            jobs.append((netns.batch_argv(h.netns), "\n".join(lines) + "\n"))
        for n in self.plan.nodes:
            # Nodes will route for their pods, as Calico nodes do.
            jobs.append((netns.sysctl_argv(n.netns, {"net.ipv4.ip_forward": "1"}), None))
        return jobs

    def _start_etcd(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for e in self.plan.etcd:
            member = EtcdMember(
                name=e.name, data_dir=self.state_dir / f"{e.name}.etcd", client_host=e.ip,
                client_port=int(e.client_url.rsplit(":", 1)[1]),
                peer_port=int(e.peer_url.rsplit(":", 1)[1]), netns=e.netns,
                cluster=self.plan.etcd_cluster, log_path=self.state_dir / f"{e.name}.log",
                cluster_token=f"tortie-lab-{self.name}", binary=self.etcd_binary,
            )
            member.start(record=lambda pid, m=member, e=e: self._record_process(
                pid, "etcd", e.name, e.netns, m.argv()))
            self._members.append(member)
            if len(self.plan.etcd) > 1 and e != self.plan.etcd[-1]:
                # A new member first asks its peers whether the cluster already
                # exists. A peer that has opened its listener but does not serve
                # yet (it is asking too) stalls that question for ~1-2 s; starting
                # members one after the other, each once the previous serves
                # peers, avoids the stall.
                self._wait_peer_serving(member)
        # Members of a multi-member cluster only report healthy once a leader
        # is elected, which needs a quorum running: start all, then wait.
        self._wait_etcd_healthy()

    def _wait_peer_serving(self, member: EtcdMember) -> None:
        deadline = time.monotonic() + ETCD_HEALTH_TIMEOUT
        argv = netns.exec_argv(member.netns or "", [
            "curl", "-sf", "--max-time", "0.5", "-o", "/dev/null", f"{member.peer_url}/version"])
        while subprocess.run(argv, capture_output=True).returncode != 0:
            if member.proc is not None and member.proc.poll() is not None:
                raise LabError(f"etcd member {member.name} exited with "
                               f"{member.proc.returncode}{_log_tail(member.log_file)}")
            if time.monotonic() > deadline:
                raise LabError(f"etcd member {member.name} does not serve its peer URL "
                               f"{member.peer_url} after {ETCD_HEALTH_TIMEOUT:g}s"
                               f"{_log_tail(member.log_file)}")
            time.sleep(0.01)

    def _wait_etcd_healthy(self) -> None:
        # Not EtcdMember.wait_healthy: its 1 s probes turn a /health request that
        # lands mid-election (it blocks until a leader is known) into a 1-2 s
        # stall. Short probes, lengthened on each miss for slow machines, keep
        # a 3-member up at ~0.3 s.
        deadline = time.monotonic() + ETCD_HEALTH_TIMEOUT
        pending = list(self._members)
        probe = 0.2
        while pending:
            for member in list(pending):
                if member.proc is not None and member.proc.poll() is not None:
                    raise LabError(f"etcd member {member.name} exited with "
                                   f"{member.proc.returncode}{_log_tail(member.log_file)}")
                if member.healthy(probe_timeout=probe):
                    pending.remove(member)
            if pending and time.monotonic() > deadline:
                raise LabError(f"etcd member(s) {', '.join(m.name for m in pending)} not healthy "
                               f"after {ETCD_HEALTH_TIMEOUT:g}s{_log_tail(pending[0].log_file)}")
            if pending:
                probe = min(probe * 1.5, 2.0)
                time.sleep(0.02)

    # ---- state -----------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return state.read(self.name, self.run_dir) or {}

    def _save(self, status: str) -> None:
        data = self._state()
        data.update(
            name=self.name, status=status, plan=self.plan.to_dict(),
            namespaces=self.namespaces, etcd_endpoints=self.etcd_endpoints,
        )
        data.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        data.setdefault("created_by", {"pid": os.getpid(), "argv": sys.argv})
        data.setdefault("processes", [])
        state.write(self.name, data, self.run_dir)

    def _record_process(self, pid: int, role: str, name: str, ns: str, argv: Sequence[str]) -> None:
        data = self._state()
        data.setdefault("processes", []).append({
            "pid": pid, "start_time": procs.start_time(pid), "role": role, "name": name,
            "netns": ns, "argv": list(argv),
        })
        state.write(self.name, data, self.run_dir)

    # ---- down ------------------------------------------------------------

    def down(self) -> None:
        """Remove the lab: its processes, namespaces (and with them every interface) and state.

        Idempotent; also removes leftovers of a crashed run of a lab of this name.
        """
        members, self._members = self._members, []
        popens, self._popens = self._popens, []
        teardown(self.name, self.run_dir, members=members, popens=popens)

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.down()

    # ---- using the lab ---------------------------------------------------

    def exec(
        self, node: Target, argv: Sequence[str], check: bool = True, *,
        capture_output: bool = True, text: bool = True, timeout: float | None = None,
        env: Mapping[str, str] | None = None, input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run argv inside `node`'s namespace. `env` is added to (not replacing) os.environ."""
        full = netns.exec_argv(self.netns_of(node), argv)
        res = subprocess.run(
            full, capture_output=capture_output, text=text, timeout=timeout, input=input,
            env={**os.environ, **env} if env else None,
        )
        if check and res.returncode != 0:
            raise CommandFailed(full, res.returncode, res.stdout, res.stderr)
        return res

    def start_process(
        self, node: Target, argv: Sequence[str], *, role: str, name: str | None = None,
        log_path: Path | None = None, env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen:
        """Start a long-running process in `node`'s namespace, recorded so `down` stops it.

        Output goes to `log_path` (default: <state dir>/<name>.log).
        """
        ns = self.netns_of(node)
        name = name or f"{role}-{ns.removeprefix(ns_prefix(self.name))}"
        log_path = log_path or self.state_dir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        full = netns.exec_argv(ns, argv)
        with open(log_path, "ab") as out:
            # Own session: a Ctrl-C meant for the caller must not kill lab processes.
            p = procs.spawn_recorded(
                full, lambda pid: self._record_process(pid, role, name, ns, full),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **env} if env else None)
        self._popens.append(p)
        return p

    def start_etcd(self, member: str | int) -> None:
        """Start a member stopped by stop_etcd again, on its kept data dir, and wait for health."""
        if isinstance(member, int):
            member = self.plan.etcd[member - 1].name
        for m in self._members:
            if m.name == member:
                e = next(x for x in self.plan.etcd if x.name == member)
                m.start(record=lambda pid, m=m, e=e: self._record_process(
                    pid, "etcd", e.name, e.netns, m.argv()))
                self._wait_etcd_healthy()
                return
        raise LabError(f"lab {self.name} has no etcd member {member!r} started by this process")

    def stop_etcd(self, member: str | int, sig: int = signal.SIGTERM) -> None:
        """Stop one etcd member (by name, e.g. "etcd2", or 1-based index), e.g. to test fail-over."""
        if isinstance(member, int):
            member = self.plan.etcd[member - 1].name
        for m in self._members:
            if m.name == member:
                m.stop(sig)
                return
        for rec in self._state().get("processes", []):
            if rec["role"] == "etcd" and rec["name"] == member:
                procs.terminate(rec["pid"], rec["start_time"])
                return
        raise LabError(f"lab {self.name} has no etcd member {member!r}")

    def status(self) -> dict[str, Any]:
        """What exists and what is healthy: namespaces, processes, etcd health from node1."""
        data = self._state()
        present = set(netns.list_netns())
        namespaces = {ns: ns in present for ns in self.namespaces}
        processes = [{**rec, "alive": rec.get("start_time") is not None
                      and procs.is_ours(rec["pid"], rec["start_time"])}
                     for rec in data.get("processes", [])]
        # Health as a node sees it: this checks routing across the underlay too.
        via = self.plan.nodes[0].netns if namespaces.get(self.plan.nodes[0].netns) else None
        health: dict[str, bool] = {}
        if via:
            results = netns.run_parallel(
                [(netns.exec_argv(via, ["curl", "-sf", "--max-time", "2", f"{url}/health"]), None)
                 for url in self.etcd_endpoints], check=False)
            health = {url: r.returncode == 0 and '"health":"true"' in r.stdout
                      for url, r in zip(self.etcd_endpoints, results, strict=True)}
        else:
            health = dict.fromkeys(self.etcd_endpoints, False)
        return {
            "name": self.name, "status": data.get("status", "absent"),
            "created": data.get("created"), "underlay": self.underlay,
            "namespaces": namespaces, "processes": processes, "etcd_health": health,
            "healthy": data.get("status") == "up" and all(namespaces.values())
            and all(p["alive"] for p in processes if p["role"] == "etcd") and all(health.values()),
        }


def teardown(
    name: str, run_dir: Path | None = None, *, members: Sequence[EtcdMember] = (),
    popens: Sequence[subprocess.Popen] = (),
) -> dict[str, Any]:
    """Remove everything lab `name` may have left: recorded processes, `<name>-*` namespaces, state.

    Needs no Lab object and no plan, so it works after a crash at any point.
    Processes are killed only if recorded in the state file (or held as Popen
    here) and still carrying their recorded start time.
    """
    check_name(name)
    data = state.read(name, run_dir) or {}
    stopped = 0
    if (state.lab_dir(name, run_dir) / "chart").exists():
        # The chart's pods run under podman, not as recorded processes; they go first,
        # while etcd still answers (lab.chart made the directory before any pod).
        from lab.chart import remove_chart_objects

        for line in remove_chart_objects(name):
            log.info("lab %s: removed %s", name, line)
    # Popen handles first: stopping through them also reaps our own children. Agents
    # before etcd, so they shut down (and stop their ExaBGP) while etcd still answers.
    for p in popens:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            stopped += 1
    for m in members:
        if m.proc is not None and m.proc.poll() is None:
            stopped += 1
        m.stop()
    for rec in data.get("processes", []):
        if rec.get("start_time") is not None and procs.terminate(rec["pid"], rec["start_time"]):
            stopped += 1

    prefix = ns_prefix(name)
    doomed = [ns for ns in netns.list_netns()
              if ns.startswith(prefix) or ns in data.get("namespaces", ())]
    for ns, pids in netns.pids_in(doomed).items():
        if pids:
            # Not ours to kill (not in the state file); deleting the namespace
            # name leaves them running in an anonymous namespace.
            log.warning("lab %s: namespace %s still has processes the lab did not record: %s "
                        "(not killing them)", name, ns, ", ".join(map(str, pids)))
    if doomed:
        netns.batch([f"netns del {ns}" for ns in doomed], force=True)
    remaining = [ns for ns in netns.list_netns() if ns.startswith(prefix)]
    state.remove(name, run_dir)
    if remaining:
        raise LabError(f"lab {name}: could not delete namespaces {', '.join(remaining)}")
    if stopped or doomed or data:
        log.info("lab %s down: stopped %d process(es), removed %d namespace(s)",
                 name, stopped, len(doomed))
    else:
        log.debug("lab %s: nothing to remove", name)
    return {"processes": stopped, "namespaces": doomed, "had_state": bool(data)}


def find_leftovers(name: str, run_dir: Path | None = None) -> list[str]:
    """Everything of lab `name` that exists right now, one line each; [] when fully gone.

    Looks beyond the state file: `<name>-*` namespaces, the state dir, live
    processes whose command line points into the state dir (etcd's data dir)
    and root-namespace links carrying the lab's interface tag (there should
    never be any).
    """
    check_name(name)
    found = [f"namespace {ns}" for ns in netns.list_netns() if ns.startswith(ns_prefix(name))]
    lab_dir = state.lab_dir(name, run_dir)
    if lab_dir.exists():
        found.append(f"state dir {lab_dir}")
    marker = f"{lab_dir}/".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker in cmdline and procs.start_time(int(entry)) is not None:  # not a zombie
            argv = cmdline.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"process {entry}: {argv[:100]}")
    tag = iface_tag(name)
    links = netns.run(["ip", "-o", "link", "show"]).stdout.splitlines()
    found += [f"root-namespace link {ln.split(':')[1].strip()}" for ln in links
              if tag in ln.split(":")[1]]
    return found


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  last lines of " + str(path) + ":\n    " + "\n    ".join(tail)) if tail else ""
