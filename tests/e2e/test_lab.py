"""The lab itself: topology, reachability, etcd, teardown, crash recovery and the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from lab import Lab, LabError, procs, state, teardown
from lab.cluster import find_leftovers as leftovers

pytestmark = [pytest.mark.slow, pytest.mark.root]

ETCDCTL = {"ETCDCTL_API": "3"}


def ping(lab: Lab, node: str, ip: str) -> subprocess.CompletedProcess:
    return lab.exec(node, ["ping", "-c1", "-W1", ip], check=False)


def recorded_pids(name: str) -> list[tuple[int, int]]:
    data = state.read(name) or {}
    return [(p["pid"], p["start_time"]) for p in data.get("processes", [])]


@pytest.fixture
def run_cli(lab_cli: str):
    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([lab_cli, *args], capture_output=True, text=True, timeout=timeout)
    return run


# ---- one shared default lab -------------------------------------------------


def test_default_topology(lab: Lab) -> None:
    assert [n.name for n in lab.nodes] == ["node1", "node2", "node3"]
    assert [n.subnet for n in lab.nodes] == [0, 1, 0]  # round-robin over 2 subnets
    assert len({n.ip for n in lab.nodes}) == 3
    for n in lab.nodes:
        assert n.netns == f"{lab.name}-{n.name}"
        addrs = lab.exec(n, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert f"inet {n.cidr} " in addrs
        route = lab.exec(n, ["ip", "route", "show", "default"]).stdout
        assert f"default via {n.gateway} dev eth0" in route
        assert lab.exec(n, ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
    assert lab.exec("router", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"


def test_no_lab_address_in_root_namespace(lab: Lab) -> None:
    root = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    prefix = lab.underlay.split(".0.0/")[0] + "."
    assert prefix not in root, root


def test_every_node_pings_router_and_every_other_node(lab: Lab) -> None:
    assert {n.subnet for n in lab.nodes} == {0, 1}, "the nodes should span both subnets"
    failures = []
    for src in lab.nodes:
        targets = [s.gateway for s in lab.subnets] + [n.ip for n in lab.nodes if n != src]
        for ip in targets:
            res = ping(lab, src.name, ip)
            if res.returncode != 0:
                failures.append(f"{src.name} -> {ip}: {res.stdout}{res.stderr}")
    assert not failures, "\n".join(failures)


def test_etcd_reachable_from_every_node(lab: Lab) -> None:
    (endpoint,) = lab.etcd_endpoints
    for n in lab.nodes:
        res = lab.exec(n, ["curl", "-sf", "--max-time", "2", f"{endpoint}/health"])
        assert '"health":"true"' in res.stdout
    lab.exec("node2", ["etcdctl", "--endpoints", endpoint, "put", "/lab/k", "v"], env=ETCDCTL)
    got = lab.exec("node3", ["etcdctl", "--endpoints", endpoint, "get", "--print-value-only",
                             "/lab/k"], env=ETCDCTL)
    assert got.stdout.strip() == "v"


def test_status_reports_healthy(lab: Lab) -> None:
    st = lab.status()
    assert st["healthy"], st
    assert all(st["namespaces"].values())
    assert [p["alive"] for p in st["processes"]] == [True]


def test_exec_check_raises_with_context(lab: Lab) -> None:
    with pytest.raises(subprocess.CalledProcessError) as err:
        lab.exec("node1", ["sh", "-c", "echo oops >&2; exit 3"])
    assert err.value.returncode == 3
    assert "oops" in str(err.value)
    assert lab.exec("node1", ["sh", "-c", "exit 3"], check=False).returncode == 3
    with pytest.raises(LabError, match="no 'node9'"):
        lab.exec("node9", ["true"])


# ---- labs of their own ----------------------------------------------------


def test_three_etcd_members_survive_losing_one(make_lab) -> None:
    lab = make_lab(nodes=2, etcd_members=3)
    endpoints = ",".join(lab.etcd_endpoints)
    assert len(lab.etcd_endpoints) == 3
    for n in lab.nodes:  # every member, from every node (both subnets)
        health = lab.exec(n, ["etcdctl", "--endpoints", endpoints, "endpoint", "health"],
                          env=ETCDCTL)
        assert (health.stdout + health.stderr).count("is healthy") == 3, health
    lab.stop_etcd("etcd2")
    lab.exec("node2", ["etcdctl", "--endpoints", endpoints, "put", "/lab/ha", "still"],
             env=ETCDCTL)
    got = lab.exec("node1", ["etcdctl", "--endpoints", endpoints, "get", "--print-value-only",
                             "/lab/ha"], env=ETCDCTL)
    assert got.stdout.strip() == "still"
    st = lab.status()
    assert [p["alive"] for p in st["processes"]] == [True, False, True]
    assert sum(st["etcd_health"].values()) == 2


def test_down_leaves_nothing_behind(make_lab, snapshot) -> None:
    before = snapshot()
    lab = make_lab()
    name = lab.name
    sleeper = lab.start_process("node2", ["sleep", "300"], role="sleeper")
    pids = recorded_pids(name)
    assert len(pids) == 2 and all(procs.is_ours(*p) for p in pids)
    assert sleeper.pid in {pid for pid, _ in pids}
    assert leftovers(name)  # sanity: the check does see a live lab
    lab.down()
    after = snapshot()
    assert leftovers(name) == []
    assert not any(procs.is_ours(*p) for p in pids)
    assert sleeper.poll() is not None
    assert not {ns for ns in after["netns"] - before["netns"] if ns.startswith(f"{name}-")}
    assert after["links"] - before["links"] == set()
    assert name not in after["run_dir"]
    assert after["run_dir"] <= before["run_dir"]
    lab.down()  # idempotent
    teardown(name)


def test_two_labs_side_by_side(make_lab) -> None:
    a = make_lab(nodes=2)
    b = make_lab(nodes=2)
    assert a.underlay != b.underlay
    assert {n.veth for n in a.nodes}.isdisjoint(n.veth for n in b.nodes)
    for lab in (a, b):
        assert ping(lab, "node1", lab.nodes[1].ip).returncode == 0
        lab.exec("node2", ["etcdctl", "--endpoints", lab.etcd_endpoints[0], "put", "/lab/who",
                           lab.name], env=ETCDCTL)
    for lab in (a, b):  # two separate datastores
        got = lab.exec("node1", ["etcdctl", "--endpoints", lab.etcd_endpoints[0], "get",
                                 "--print-value-only", "/lab/who"], env=ETCDCTL)
        assert got.stdout.strip() == lab.name
    # and two separate networks: a's nodes cannot reach b's underlay
    assert ping(a, "node1", b.nodes[0].ip).returncode != 0
    a.down()
    assert leftovers(a.name) == []
    assert b.status()["healthy"], "tearing down one lab must not touch the other"
    b.down()
    assert leftovers(b.name) == []


def test_failed_up_removes_everything(lab_names) -> None:
    name = lab_names()
    lab = Lab(name, etcd_binary="false")  # etcd "starts" and exits at once
    with pytest.raises(LabError, match="up failed while starting etcd") as err:
        lab.up()
    assert "everything it created was removed" in str(err.value)
    assert leftovers(name) == []


def test_pid_reuse_is_not_killed(lab_env) -> None:
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        started = procs.start_time(sleeper.pid)
        assert started is not None
        assert not procs.terminate(sleeper.pid, started + 1)  # "another" process on this PID
        assert sleeper.poll() is None
        assert procs.terminate(sleeper.pid, started)
        assert not procs.is_ours(sleeper.pid, started)
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


# ---- crashes ----------------------------------------------------------------


def test_down_from_fresh_process_after_up_was_killed(lab_names, lab_cli, run_cli) -> None:
    """SIGKILL `tortie-lab up` while it builds; `tortie-lab down` removes what it left."""
    name = lab_names()
    up = subprocess.Popen([lab_cli, "up", "--name", name, "--etcd-members", "3"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    # Kill it once it has recorded a process: namespaces and etcd exist by then.
    while time.monotonic() < deadline and not recorded_pids(name) and up.poll() is None:
        time.sleep(0.002)
    up.kill()
    up.wait()
    assert leftovers(name), "the killed up should have left something to clean up"
    pids = recorded_pids(name)
    res = run_cli("down", "--name", name)
    assert res.returncode == 0, res.stderr
    assert leftovers(name) == []
    assert not any(procs.is_ours(*p) for p in pids)


def test_sigterm_during_up_cleans_up(lab_names, lab_cli) -> None:
    """`tortie-lab up` stopped by SIGTERM mid-way removes what it built and exits 143."""
    name = lab_names()
    up = subprocess.Popen([lab_cli, "up", "--name", name, "--etcd-members", "3"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and state.read(name) is None and up.poll() is None:
        time.sleep(0.002)
    up.send_signal(signal.SIGTERM)
    _, err = up.communicate(timeout=30)
    assert up.returncode == 128 + signal.SIGTERM, err
    assert "up failed while" in err
    assert leftovers(name) == []


def test_up_over_leftovers_rebuilds(lab_names, run_cli) -> None:
    """A crashed lab (etcd SIGKILLed, state stale) is torn down and rebuilt by `up`."""
    name = lab_names()
    assert run_cli("up", "--name", name, "--nodes", "2").returncode == 0
    (pid, started), = recorded_pids(name)
    assert procs.is_ours(pid, started)
    os.kill(pid, signal.SIGKILL)
    res = run_cli("up", "--name", name, "--nodes", "2")
    assert res.returncode == 0, res.stderr
    assert "leftovers" in res.stderr
    assert recorded_pids(name) != [(pid, started)]
    assert run_cli("status", "--name", name).returncode == 0
    assert run_cli("down", "--name", name).returncode == 0
    assert leftovers(name) == []


def test_down_without_state_file_removes_namespaces(lab_names, run_cli, snapshot) -> None:
    """With the state file lost, down still removes the namespaces (found by prefix) but
    leaves the now-unrecorded etcd alone, naming it."""
    name = lab_names()
    assert run_cli("up", "--name", name, "--nodes", "1", "--subnets", "1").returncode == 0
    (pid, started), = recorded_pids(name)
    state.state_path(name).unlink()
    try:
        res = run_cli("down", "--name", name)
        assert res.returncode == 0, res.stderr
        assert str(pid) in res.stderr and "not killing" in res.stderr
        assert not [ns for ns in snapshot()["netns"] if ns.startswith(f"{name}-")]
        assert not state.lab_dir(name).exists()
    finally:
        procs.terminate(pid, started)  # ours: this test had the lab start it
    assert leftovers(name) == []


# ---- the CLI ---------------------------------------------------------------


def test_cli_up_status_exec_down(lab_names, run_cli) -> None:
    name = lab_names()
    res = run_cli("up", "--name", name, "--nodes", "2", "--underlay", "10.250.0.0/16")
    assert res.returncode == 0, res.stderr
    assert "10.250.1.11/24" in res.stdout and "10.250.2.11/24" in res.stdout
    data = json.loads(state.state_path(name).read_text())
    assert data["status"] == "up"
    assert data["etcd_endpoints"] == ["http://10.250.1.2:2379"]

    st = run_cli("status", "--name", name)
    assert st.returncode == 0, st.stdout + st.stderr
    assert "healthy" in st.stdout and f"{name}-node2" in st.stdout

    assert run_cli("exec", "--name", name, "node1", "--", "ping", "-c1", "-W1",
                   "10.250.2.11").returncode == 0
    assert run_cli("exec", "--name", name, "node2", "--", "sh", "-c", "exit 7").returncode == 7
    out = run_cli("exec", "--name", name, "2", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "10.250.2.11/24" in out.stdout
    assert run_cli("exec", "--name", name, "node5", "--", "true").returncode == 1

    assert name in run_cli("list").stdout
    down = run_cli("down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert leftovers(name) == []
    again = run_cli("down", "--name", name)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")
    assert run_cli("status", "--name", name).returncode == 1


def test_cli_refuses_bad_input(lab_names, run_cli) -> None:
    name = lab_names()
    bad = run_cli("up", "--name", "Bad-Name")
    assert bad.returncode == 1 and "lab name 'Bad-Name' is invalid" in bad.stderr
    bad = run_cli("up", "--name", name, "--underlay", "10.1.2.0/25")
    assert bad.returncode == 1 and "underlay=10.1.2.0/25" in bad.stderr
    assert leftovers(name) == []


def test_cli_ctl_runs_against_lab_etcd(lab_names, run_cli) -> None:
    name = lab_names()
    assert run_cli("up", "--name", name, "--nodes", "1", "--subnets", "1").returncode == 0
    data = json.loads(state.state_path(name).read_text())
    res = run_cli("ctl", "--name", name, "--", "version")
    assert res.returncode == 0, res.stdout + res.stderr
    assert data["etcd_endpoints"][0] in res.stdout
