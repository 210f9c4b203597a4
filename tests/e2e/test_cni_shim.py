"""The host-side shim against a real CNI server in a lab node, and on a host with nothing else.

A 2-node lab with its etcd and a pool (no agents: wiring and the datastore are
what is checked here; tests/e2e/test_cni_lab.py has traffic between nodes).
node1 has the shim and its CNI server (the lab's default, what production
runs); node2 the Python launchers (`plugin="python"`), which keep working.
The host-independence test runs the installed shim with `chroot` inside a
root file system that holds only the shim, the server's socket directory and
the pod's namespace file (bind mounts), in a private mount namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import Lab
from lab import pods as lab_pods
from tests.support import need

from .pods import ctl

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = """apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: shim}
spec: {cidr: 10.245.0.0/16, blockSize: 26}
"""


@pytest.fixture(scope="module")
def cluster(lab_env: None) -> Iterator[Lab]:
    from .conftest import up_lab

    need("musl-gcc", "file", "chroot", "unshare", "nsenter")
    with up_lab(nodes=2) as lab:
        ctl(lab, ["apply", "-f", "-"], stdin=POOL)
        lab_pods.install_cni(lab, "node1")  # the shim, and node1's CNI server
        lab_pods.install_cni(lab, "node2", plugin="python")
        yield lab


def plugin_conf(lab: Lab, node: str, **overrides: object) -> dict:
    """tortie's entry of the node's conflist, as a runtime hands it to the plugin."""
    conflist = json.loads(lab_pods.conf_path(lab, node).read_text())
    return {**conflist["plugins"][0], "name": conflist["name"],
            "cniVersion": conflist["cniVersion"], **overrides}


def addresses_in(netns: str, ifname: str = "eth0") -> list[str]:
    out = subprocess.run(["ip", "-n", netns, "-j", "addr", "show", "dev", ifname],
                         capture_output=True, text=True, check=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for link in json.loads(out)
            for a in link["addr_info"] if a["family"] == "inet"]


def endpoint_yaml(lab: Lab, namespace: str) -> str:
    return ctl(lab, ["get", "workloadendpoints", "-n", namespace, "-o", "yaml"])


def test_installed_plugins_are_the_static_shim(cluster: Lab) -> None:
    shim = lab_pods.build_shim()
    assert "statically linked" in subprocess.run(["file", "-b", str(shim)], capture_output=True,
                                                 text=True, check=True).stdout
    for name in ("tortie", "tortie-ipam"):
        assert (lab_pods.bin_dir(cluster, "node1") / name).read_bytes() == shim.read_bytes()
        assert (lab_pods.bin_dir(cluster, "node2") / name).read_text().startswith("#!")


def test_shim_wires_checks_and_deletes_a_pod(cluster: Lab) -> None:
    lab = cluster
    pod = lab_pods.add_pod(lab, "node1", "shimns", "web", labels={"app": "web"})
    try:
        assert pod.ip.startswith("10.245.")
        assert addresses_in(pod.netns) == [f"{pod.ip}/32"]
        # The result names the runtime's path, not the server's /proc/<pid>/fd/<n>.
        sandbox = [i["sandbox"] for i in pod.result["interfaces"] if i.get("sandbox")]
        assert sandbox == [f"/run/netns/{pod.netns}"]
        route = lab.exec("node1", ["ip", "route", "show", pod.ip]).stdout
        assert f"dev {pod.iface} scope link" in route
        weps = endpoint_yaml(lab, "shimns")
        assert "node1-k8s-web-eth0" in weps and f"{pod.ip}/32" in weps and "app: web" in weps
        lab_pods.check_pod(lab, pod)
    finally:
        lab_pods.delete_pod(lab, pod)
    assert pod.iface not in lab.exec("node1", ["ip", "-o", "link"]).stdout
    assert "node1-k8s-web-eth0" not in endpoint_yaml(lab, "shimns")
    assert "Check complete; found 0 problems." in ctl(lab, ["ipam", "check"])


def test_python_launchers_still_wire_a_pod(cluster: Lab) -> None:
    pod = lab_pods.add_pod(cluster, "node2", "pyns", "old")
    try:
        assert addresses_in(pod.netns) == [f"{pod.ip}/32"]
        lab_pods.check_pod(cluster, pod)
    finally:
        lab_pods.delete_pod(cluster, pod)


def test_shim_without_server_answers_code_11_naming_the_socket(cluster: Lab,
                                                               tmp_path: Path) -> None:
    missing = tmp_path / "no-server.sock"
    conf = plugin_conf(cluster, "node1", cni_server_socket=str(missing), cniVersion="0.4.0")
    env = {"CNI_CONTAINERID": "nosrv", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0",
           "CNI_PATH": lab_pods.cni_path(cluster, "node1")}
    with pytest.raises(lab_pods.PodError) as err:
        lab_pods.exec_plugin(cluster, "node1", conf, "ADD", env)
    assert err.value.code == 11
    assert err.value.cni_msg == (f"the tortie CNI server is not running: cannot connect to "
                                 f"{missing} (No such file or directory)")


def test_tortie_ipam_through_the_shim(cluster: Lab) -> None:
    # What a main plugin (bridge, ptp) hands its IPAM plugin: its whole configuration; the
    # runtime's CNI_* unchanged. The shim runs as tortie-ipam by its file name.
    conf = plugin_conf(cluster, "node1", type="tortie-ipam")
    env = {"CNI_CONTAINERID": "ipamonly", "CNI_NETNS": "/proc/self/ns/net",
           "CNI_IFNAME": "eth0", "CNI_PATH": lab_pods.cni_path(cluster, "node1")}
    result = lab_pods.exec_plugin(cluster, "node1", conf, "ADD", env)
    assert result is not None
    ip = result["ips"][0]["address"]
    assert ip.startswith("10.245.") and ip.endswith("/32")
    shown = ctl(cluster, ["ipam", "show", "--ip", ip.split("/")[0]])
    handle = f"{conf['name']}.ipamonly"
    assert f"IP {ip.split('/')[0]} is in use" in shown and f"Handle ID: {handle}" in shown
    assert lab_pods.exec_plugin(cluster, "node1", conf, "DEL", env) is None
    shown = ctl(cluster, ["ipam", "show", "--ip", ip.split("/")[0]])
    assert "is in use" not in shown
    assert "Check complete; found 0 problems." in ctl(cluster, ["ipam", "check"])


def test_shim_wires_a_pod_from_a_root_with_nothing_else(cluster: Lab) -> None:
    """Host independence: no Python, no libc, no /lib or /usr: only the shim."""
    lab = cluster
    sock = lab_pods.socket_path(lab, "node1")
    pod_ns = f"{lab.name}-pod-bare-solo"  # the lab's prefix: lab.down() removes it
    subprocess.run(["ip", "netns", "add", pod_ns], check=True)
    root = Path(tempfile.mkdtemp(prefix="tshim-root-"))
    cid = uuid.uuid4().hex
    try:
        subprocess.run(["ip", "-n", pod_ns, "link", "set", "lo", "up"], check=True)
        shim = root / "opt" / "cni" / "bin" / "tortie"
        shim.parent.mkdir(parents=True)
        shutil.copy2(lab_pods.bin_dir(lab, "node1") / "tortie", shim)
        (root / sock.parent.relative_to("/")).mkdir(parents=True)  # mount point
        netns_file = root / "run" / "netns" / pod_ns
        netns_file.parent.mkdir(parents=True)
        netns_file.touch()  # mount point
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())
        assert files == ["opt/cni/bin/tortie", f"run/netns/{pod_ns}"]
        conf = plugin_conf(lab, "node1")
        assert conf["cni_server_socket"] == str(sock)
        script = (f'mount --bind "{sock.parent}" "{root}{sock.parent}" && '
                  f'mount --bind "/run/netns/{pod_ns}" "{netns_file}" && '
                  f'exec nsenter --net=/run/netns/{lab.netns_of("node1")} '
                  f'chroot "{root}" /opt/cni/bin/tortie')
        env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
               "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_PATH": "/opt/cni/bin",
               "CNI_ARGS": "K8S_POD_NAMESPACE=bare;K8S_POD_NAME=solo",
               "PATH": os.environ["PATH"]}
        res = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                              script], input=json.dumps(conf), env=env, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, (res.stdout, res.stderr)
        result = json.loads(res.stdout)
        ip = result["ips"][0]["address"]
        assert addresses_in(pod_ns) == [ip]
        assert "node1-k8s-solo-eth0" in endpoint_yaml(lab, "bare")
    finally:
        shutil.rmtree(root)
        # DEL the ordinary way (the same server), then drop the namespace.
        lab.exec("node1", [str(lab_pods.bin_dir(lab, "node1") / "tortie")], check=False,
                 input=json.dumps(plugin_conf(lab, "node1")),
                 env={"CNI_COMMAND": "DEL", "CNI_CONTAINERID": cid, "CNI_IFNAME": "eth0",
                      "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_PATH": "/opt/cni/bin",
                      "CNI_ARGS": "K8S_POD_NAMESPACE=bare;K8S_POD_NAME=solo"})
        subprocess.run(["ip", "netns", "del", pod_ns], check=False)
    assert "node1-k8s-solo-eth0" not in endpoint_yaml(lab, "bare")
