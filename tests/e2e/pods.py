"""Test pods for the lab, wired by the real CNI plugin exactly as a runtime wires them.

A thin adapter over lab.pods (which runs tortie's conflist ADD inside the
node's namespace): the signatures here are the ones the e2e tests were
written against. Pod namespaces carry the lab's prefix so `lab.down()`
removes them.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab import Lab
from lab import pods as lab_pods

BIN = Path(sys.executable).parent


def ctl(lab: Lab, args: list[str], stdin: str | None = None, node: str = "node1") -> str:
    res = lab.exec(node, [str(BIN / "ctl"), *args], input=stdin,
                   env={"ETCD_ENDPOINTS": ",".join(lab.etcd_endpoints)})
    return res.stdout


def veth_name(namespace: str, pod: str) -> str:
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


@dataclass
class Pod:
    name: str
    node: str
    netns: str
    ip: str
    iface: str


def add_pod(lab: Lab, node: str, pod: str, namespace: str = "default") -> Pod:
    info = lab_pods.add_pod(lab, node, namespace, pod, labels={"app": pod})
    return Pod(info.name, info.node, info.netns, info.ip, info.iface)


def ping(src: Pod, dst_ip: str, count: int = 1, wait: int = 2) -> bool:
    res = subprocess.run(["ip", "netns", "exec", src.netns, "ping", "-c", str(count), "-W",
                          str(wait), "-q", dst_ip], capture_output=True, text=True)
    return res.returncode == 0
