"""Test pods for the lab until the CNI plugin exists: a network namespace wired to a node
by a cali veth exactly as Calico's CNI plugin does, an address from tortie's IPAM (via
ctl), and a WorkloadEndpoint written through ctl. Names carry the lab's prefix so
`lab.down()` removes them."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lab import Lab

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
    node_ns = lab.netns_of(node)
    pod_ns = f"{lab.name}-{pod}"
    ip = ctl(lab, ["ipam", "assign", "--node", node, "--handle", f"test.{pod}"]).split()[0]
    iface = veth_name(namespace, pod)
    sh = [
        f"ip netns add {pod_ns}",
        f"ip -n {pod_ns} link set lo up",
        f"ip link add {iface} netns {node_ns} type veth peer name eth0 netns {pod_ns}",
        f"ip -n {node_ns} link set {iface} address ee:ee:ee:ee:ee:ee up",
        f"ip -n {pod_ns} addr add {ip}/32 dev eth0",
        f"ip -n {pod_ns} link set eth0 up",
        f"ip -n {pod_ns} route add 169.254.1.1 dev eth0 scope link",
        f"ip -n {pod_ns} route add default via 169.254.1.1 dev eth0",
    ]
    for cmd in sh:
        subprocess.run(cmd.split(), check=True, capture_output=True)
    mac = subprocess.run(["ip", "-n", pod_ns, "-br", "link", "show", "eth0"], check=True,
                         capture_output=True, text=True).stdout.split()[2]
    ctl(lab, ["apply", "-f", "-"], stdin=f"""apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{pod}-eth0
  namespace: {namespace}
  labels: {{app: {pod}}}
spec:
  node: {node}
  orchestrator: k8s
  pod: {pod}
  endpoint: eth0
  interfaceName: {iface}
  mac: {mac}
  ipNetworks: [{ip}/32]
""")
    return Pod(pod, node, pod_ns, ip, iface)


def ping(src: Pod, dst_ip: str, count: int = 1, wait: int = 2) -> bool:
    res = subprocess.run(["ip", "netns", "exec", src.netns, "ping", "-c", str(count), "-W",
                          str(wait), "-q", dst_ip], capture_output=True, text=True)
    return res.returncode == 0
