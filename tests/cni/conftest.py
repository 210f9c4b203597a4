"""Fixtures for the CNI plugin tests: a "node" namespace with its own etcd, and pods.

The plugin creates interfaces in the namespace it runs in, so it never runs
in the root namespace here: `CniNode` is a namespace `tt<hex>n` holding an
etcd on its loopback (the plugin reaches it at 127.0.0.1:2379 there), and the
plugin is executed inside it with `nsenter --net`, exactly as a runtime would
execute it on a host. Pod namespaces are `tt<hex>p<n>`. The test process
reads the datastore with etcdctl inside the node namespace. Everything is
removed afterwards, whatever the test did (tests/support.py checks at the end).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lab.etcd import EtcdMember
from tests.support import (
    make_netns,
    need,
    new_netns,
    remove_netns,
    start_etcd,
    track_process,
    wait_until,
)

BIN = Path(sys.executable).parent
PLUGIN = str(BIN / "tortie-cni")
IPAM_PLUGIN = str(BIN / "tortie-ipam")
POOL = "10.244.0.0/16"


@dataclass
class Outcome:
    rc: int
    out: dict[str, Any] | None
    stderr: str

    @property
    def code(self) -> int | None:
        return (self.out or {}).get("code") if self.rc else None

    @property
    def msg(self) -> str:
        return str((self.out or {}).get("msg", ""))


@dataclass
class CniNode:
    ns: str
    tmp: Path
    etcd: EtcdMember
    pods: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    # -- configuration and running the plugin ----------------------------------------------

    def conf(self, **changes: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie",
            "nodename": "node1", "etcd_endpoints": "http://127.0.0.1:2379",
            "mtu_file": str(self.tmp / "mtu"), "log_level": "debug",
            "log_file_path": str(self.tmp / "cni.log"), "cni_server_socket": "",
            "ipam": {"type": "tortie-ipam"},
        }
        doc.update(changes)
        return {k: v for k, v in doc.items() if v is not None}

    def run(self, command: str, conf: dict[str, Any] | bytes, container_id: str = "c1",
            netns: str | None = None, ifname: str = "eth0", pod: str | None = "pod1",
            namespace: str = "default", plugin: str = PLUGIN, extra_env: dict[str, str] | None
            = None, cni_path: str = f"{BIN}:/usr/lib/cni") -> Outcome:
        args = "IgnoreUnknown=1"
        if pod:
            args += f";K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod}"
        # PYTHONPATH passes through so that the plugin runs the code under test (a
        # checkout other than the one the venv's console scripts were installed from).
        passed = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}
        env = {**passed, "PATH": os.environ["PATH"], "CNI_COMMAND": command,
               "CNI_CONTAINERID": container_id, "CNI_NETNS": netns or "", "CNI_IFNAME": ifname,
               "CNI_PATH": cni_path, "CNI_ARGS": args, **(extra_env or {})}
        data = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", plugin], input=data,
                             env=env, capture_output=True, timeout=120)
        text = res.stdout.decode().strip()
        try:
            out = json.loads(text) if text else None
        except ValueError:
            out = {"unparsed": text}
        return Outcome(res.returncode, out, res.stderr.decode())

    def new_pod(self) -> str:
        """A fresh pod namespace; returns its path (CNI_NETNS)."""
        name = make_netns(f"{self.ns[:-1]}p{len(self.pods)}")
        self.pods.append(name)
        return f"/run/netns/{name}"

    # -- reading the node ------------------------------------------------------------------

    def ip(self, *args: str, ns: str | None = None) -> str:
        return subprocess.run(["ip", "-n", ns or self.ns, *args], check=True,
                              capture_output=True, text=True).stdout

    def links(self) -> list[str]:
        return [line.split(":")[1].strip().split("@")[0]
                for line in self.ip("-o", "link", "show").splitlines()]

    def veths(self) -> list[str]:
        return [name for name in self.links() if name.startswith("cali")]

    def routes(self) -> list[str]:
        return [" ".join(line.split()) for line in self.ip("route", "show").splitlines()]

    def sh(self, *argv: str, input: str | None = None, check: bool = True) -> str:
        res = subprocess.run(["nsenter", f"--net=/run/netns/{self.ns}", *argv], input=input,
                             capture_output=True, text=True, timeout=120)
        if check:
            assert res.returncode == 0, f"{argv}: {res.stdout}{res.stderr}"
        return res.stdout

    def etcd_get(self, prefix: str) -> dict[str, bytes]:
        out = self.sh("etcdctl", "--endpoints", "http://127.0.0.1:2379", "get", "--prefix",
                      prefix, "-w", "json")
        kvs = json.loads(out).get("kvs") or []
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
                for kv in kvs}

    def allocated(self) -> list[str]:
        """Every allocated address in every block."""
        from ipam.block import Block

        ips = []
        for value in self.etcd_get("/calico/ipam/v2/assignment/").values():
            block = Block.from_json(value)
            ips += [block.ip_of(o) for o, _ in block.allocated()]
        return sorted(ips)

    def handles(self) -> list[str]:
        return sorted(k.rsplit("/", 1)[1] for k in self.etcd_get("/calico/ipam/v2/handle/"))

    def endpoints(self) -> dict[str, dict[str, Any]]:
        prefix = "/calico/resources/v3/projectcalico.org/workloadendpoints/"
        return {k[len(prefix):]: json.loads(v) for k, v in self.etcd_get(prefix).items()}

    def ctl(self, *args: str, input: str | None = None) -> str:
        return self.sh(str(BIN / "ctl"), *args, input=input)

    # -- datastore set-up ------------------------------------------------------------------

    def reset(self, cidr: str = POOL, block_size: int = 26) -> None:
        """An empty datastore with one pool."""
        from datastore.resources import parse_document

        self.sh("etcdctl", "--endpoints", "http://127.0.0.1:2379", "del", "--prefix", "/calico/")
        pool = parse_document({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
                               "metadata": {"name": "pods"},
                               "spec": {"cidr": cidr, "blockSize": block_size}})
        self.sh("etcdctl", "--endpoints", "http://127.0.0.1:2379", "put", pool.key(),
                pool.to_stored().decode())

    def start_server(self, socket_path: Path, endpoints: str = "http://127.0.0.1:2379",
                     ) -> subprocess.Popen:
        with open(self.tmp / "server.log", "ab") as log:
            proc = subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{self.ns}", sys.executable, "-m", "cni.server",
                 "--socket", str(socket_path), "--etcd-endpoints", endpoints],
                stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(proc)
        track_process(proc.pid, f"CNI server in {self.ns}")

        def listening() -> bool:
            assert proc.poll() is None, (self.tmp / "server.log").read_text()
            return socket_path.exists()

        wait_until(listening, timeout=20, interval=0.02, what="the CNI server's socket")
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def clean_pods(self) -> None:
        for name in self.pods:
            remove_netns(name)
        self.pods.clear()


@pytest.fixture(scope="module")
def cni_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CniNode]:
    """Name: cni_node. Scope: module. A node namespace with its own etcd (see the docstring)."""
    need("ip", "nsenter", "etcd", "etcdctl", root=True)
    tmp = tmp_path_factory.mktemp("cninode")
    with new_netns("n") as ns:
        node: CniNode | None = None
        try:
            node = CniNode(ns, tmp, start_etcd(tmp, netns=ns, host="127.0.0.1"))
            yield node
        finally:
            if node is not None:
                for proc in node.procs:
                    node.stop(proc)
                node.clean_pods()
                node.etcd.stop()


@pytest.fixture
def node(cni_node: CniNode) -> Iterator[CniNode]:
    """Name: node. Depends: cni_node. A clean datastore with pool 10.244.0.0/16; pods and
    servers the test made are removed after it."""
    cni_node.reset()
    yield cni_node
    for proc in cni_node.procs:
        cni_node.stop(proc)
    cni_node.procs.clear()
    cni_node.clean_pods()
