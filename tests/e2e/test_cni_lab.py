"""The CNI plugin end to end in the lab: real runtimes, real agents, traffic across nodes.

A 2-node lab across 2 subnets with a VXLAN pool, an agent and a CNI server on
each node. Pods are made three ways: by the lab's libcni-like runtime
(lab.pods), by that runtime chaining the reference `portmap` plugin after
tortie (a host port reaches a pod), and by podman with its CNI network
backend (an image imported from a local busybox tar; no registry).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import Lab
from lab import agents as lab_agents
from lab import podman as lab_podman
from lab import pods as lab_pods
from tests.support import need, wait_until

from .pods import BIN, ctl

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: pods}
spec:
  cidr: 10.246.0.0/16
  blockSize: 26
  vxlanMode: Always
  natOutgoing: true
"""


def agent_env(lab: Lab, node: str) -> dict[str, str]:
    return lab_agents.agent_env(lab, node, backend="vxlan")


def agent_ready(lab: Lab, node: str) -> bool:
    res = lab.exec(node, [str(BIN / "tortie-agent"), "--ready"], check=False,
                   env=agent_env(lab, node))
    return res.returncode == 0


def workload_links(lab: Lab, node: str) -> list[str]:
    names = [line.split(":")[1].strip().split("@")[0]
             for line in lab.exec(node, ["ip", "-o", "link"]).stdout.splitlines()]
    return [n for n in names if n.startswith("cali")]


def ping(pod: lab_pods.PodInfo, ip: str, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab_pods.ping(pod, ip):
            return True
    return False


@pytest.fixture(scope="module")
def cluster(lab_env: None) -> Iterator[Lab]:
    from .conftest import up_lab

    with up_lab(nodes=2, subnets=2) as lab:
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        for n in lab.nodes:
            lab.start_process(n.name, [str(BIN / "tortie-agent")], role="agent",
                              name=f"agent-{n.name}", env=agent_env(lab, n.name))
            lab_pods.install_cni(lab, n.name)
            lab_pods.start_cni_server(lab, n.name)
        for n in lab.nodes:
            wait_until(lambda n=n: agent_ready(lab, n.name), what=f"agent on {n.name}")
        yield lab


def test_pods_on_two_nodes(cluster: Lab) -> None:
    lab = cluster
    a = lab_pods.add_pod(lab, "node1", "default", "alpha")
    b = lab_pods.add_pod(lab, "node2", "team-b", "beta")
    try:
        assert a.ip.startswith("10.246.") and b.ip.startswith("10.246.")
        assert ping(a, b.ip) and ping(b, a.ip)
        lab_pods.check_pod(lab, a)
        lab_pods.check_pod(lab, b)
        weps = ctl(lab, ["get", "workloadendpoints", "-A", "-o", "yaml"])
        assert "node1-k8s-alpha-eth0" in weps and "node2-k8s-beta-eth0" in weps
        route = lab.exec("node1", ["ip", "route", "show", a.ip]).stdout
        assert f"dev {a.iface} scope link" in route
    finally:
        lab_pods.delete_pod(lab, a)
        lab_pods.delete_pod(lab, b)
    assert not lab_pods.delete_pod(lab, "alpha")  # already gone: quietly False
    assert workload_links(lab, "node1") == [] and workload_links(lab, "node2") == []
    assert "Check complete; found 0 problems." in ctl(lab, ["ipam", "check"])


def test_portmap_maps_a_host_port_to_a_pod(cluster: Lab, tmp_path: Path) -> None:
    lab = cluster
    node1, node2 = lab.nodes
    web = lab_pods.add_pod(lab, "node1", "default", "web", port_mappings=[
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
    docroot = tmp_path / "www"
    docroot.mkdir()
    (docroot / "index.html").write_text(f"hello from {web.name}\n")
    httpd = subprocess.Popen(["ip", "netns", "exec", web.netns, "busybox", "httpd", "-f",
                              "-p", "80", "-h", str(docroot)])
    try:
        def fetch() -> str:
            return lab.exec("node2", ["curl", "-s", "--max-time", "3",
                                      f"http://{node1.ip}:8080/index.html"], check=False).stdout

        wait_until(lambda: "hello from web" in fetch(), timeout=20, what="the mapped port")
        nat = lab.exec("node1", ["iptables-save", "-t", "nat"]).stdout
        assert "CNI-HOSTPORT-DNAT" in nat and f"{web.ip}:80" in nat
    finally:
        httpd.terminate()
        httpd.wait(10)
        lab_pods.delete_pod(lab, web)
    nat = lab.exec("node1", ["iptables-save", "-t", "nat"]).stdout
    assert f"{web.ip}:80" not in nat  # portmap's DEL ran too


def test_tortie_lab_pod_commands(cluster: Lab, lab_cli: str) -> None:
    lab = cluster

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([lab_cli, "pod", *args, "--name", lab.name], capture_output=True,
                              text=True, timeout=120)

    added = cli("add", "--node", "node2", "--namespace", "web", "--port", "8081:80", "front")
    assert added.returncode == 0, added.stderr
    ns_name, node, ip, iface, netns = added.stdout.split()
    assert (ns_name, node, netns) == ("web/front", "node2", f"{lab.name}-pod-web-front")
    assert ip.startswith("10.246.") and iface.startswith("cali")
    assert "web/front\tnode2" in cli("list").stdout
    bad = cli("add", "--port", "80", "other")
    assert bad.returncode == 1 and "HOST:POD" in bad.stderr
    for flag, value, words in (("--label", "app", "not KEY=VALUE"),
                               ("--named-port", "http:TCP", "NAME:PROTO/PORT")):
        bad = cli("add", flag, value, "other")
        assert bad.returncode == 1 and words in bad.stderr and cli("list").stdout.count("\n") == 1

    labelled = cli("add", "--namespace", "web", "--label", "app=api", "--label", "team=t1",
                   "--named-port", "http:TCP/8080", "--service-account", "api-sa", "api")
    assert labelled.returncode == 0, labelled.stderr
    changed = cli("label", "--namespace", "web", "api", "app=api2", "--remove", "team")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == [
        "Successfully removed label team from workloadendpoints node1-k8s-api-eth0",
        "Successfully updated label app on workloadendpoints node1-k8s-api-eth0"]
    wep = yaml.safe_load(ctl(lab, ["get", "wep", "node1-k8s-api-eth0", "-n", "web", "-o",
                                   "yaml"]))
    assert wep["metadata"]["labels"] == {
        "app": "api2", "projectcalico.org/namespace": "web",
        "projectcalico.org/orchestrator": "k8s", "projectcalico.org/serviceaccount": "api-sa"}
    assert wep["spec"]["profiles"] == ["kns.web", "ksa.web.api-sa"]
    # hostPort and hostIP have no omitempty in Calico's WorkloadEndpointPort: always stored
    assert wep["spec"]["ports"] == [{"name": "http", "protocol": "tcp", "port": 8080,
                                     "hostPort": 0, "hostIP": ""}]
    missing = cli("label", "--namespace", "web", "api", "--remove", "team")
    assert missing.returncode == 1 and "key team does not exist" in missing.stderr
    assert cli("del", "--namespace", "web", "api").returncode == 0
    assert cli("del", "--namespace", "web", "front").returncode == 0
    assert cli("list").stdout == ""
    assert cli("del", "--namespace", "web", "front").returncode == 0  # quiet when absent


@pytest.fixture
def podman(cluster: Lab) -> Iterator:
    """Runs podman through lab.podman in node1's namespace, on the lab's CNI network.

    tortie's shared podman storage, not a temporary one: this is the path the lab and
    the chart take (the same storage, driver and containers.conf), and podman locks its
    storage, so sessions running at the same time do not disturb each other. What the
    test makes is its own by name: the image tag carries the lab's name and the
    container the lab's label, and only those are removed afterwards.
    """
    need("podman", "runc", "busybox", "nsenter")
    lab = cluster
    network = lab_podman.Network(
        config_dir=lab_pods.conf_path(lab, "node1").parent,
        plugin_dirs=(lab_pods.bin_dir(lab, "node1"), Path(lab_pods.REFERENCE_PLUGINS)),
        conf_dir=lab_pods.node_dir(lab, "node1"))  # removed with the lab
    runner = lab_podman.Podman(netns=lab.netns_of("node1"), network=network)
    image = f"localhost/tortie-busybox:{lab.name}"

    def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        res = runner.run(*args, check=False, timeout=timeout)
        if check:
            assert res.returncode == 0, f"podman {' '.join(args)}: {res.stdout}{res.stderr}"
        return res

    with tempfile.TemporaryDirectory(prefix="tcni-busybox-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        (rootfs / "bin").mkdir(parents=True)
        shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
        for applet in ("sh", "ip", "ping", "sleep", "cat"):
            (rootfs / "bin" / applet).symlink_to("busybox")
        subprocess.run(["tar", "-C", str(rootfs), "-cf", f"{tmp}/busybox.tar", "."], check=True)
        run("import", f"{tmp}/busybox.tar", image)
    try:
        yield run
    finally:
        lab_podman.remove_lab_objects(lab.name)
        run("rmi", image, check=False)


def test_podman_runs_a_container_on_the_tortie_network(cluster: Lab, podman) -> None:
    lab = cluster
    network = "k8s-pod-network"
    box = f"box-{lab.name}"  # the storage is shared: a name no other session uses
    remote = lab_pods.add_pod(lab, "node2", "default", "target")
    # The container pings at once. As in Calico, a new endpoint's packets are dropped
    # until the agent has programmed it (the dispatch chains drop unknown cali*
    # interfaces), so ADD waits for that here, as policy_setup_timeout_seconds makes
    # Calico's plugin wait; without it the first ping was lost in about half the runs.
    lab_pods.install_cni(lab, "node1", policy_setup_timeout=10)
    try:
        res = podman("run", "--rm", "--name", box, "--network", network,
                     "--label", f"{lab_podman.LAB_LABEL}={lab.name}",
                     f"localhost/tortie-busybox:{lab.name}", "sh", "-c",
                     f"ip -4 addr show eth0; ip route; ping -c 3 -W 2 {remote.ip}")
        out = res.stdout
        assert "inet 10.246." in out and "/32" in out, out
        assert "default via 169.254.1.1 dev eth0" in out, out
        assert "3 packets transmitted" in out and " 0% packet loss" in out, out
        # podman passed K8S_POD_NAME=<box> only: a pod in namespace default
        assert box not in ctl(lab, ["get", "wep", "-A"])  # --rm: its DEL ran
    finally:
        lab_pods.delete_pod(lab, remote)
        lab_pods.install_cni(lab, "node1")  # as the module's other tests have it
    assert workload_links(lab, "node1") == [] and workload_links(lab, "node2") == []
    assert "Check complete; found 0 problems." in ctl(lab, ["ipam", "check"])
