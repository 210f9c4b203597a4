"""tortie's IPIP dataplane on a kernel with ipip: calculation -> writers -> real packets.

Two node namespaces on one underlay, a pod on each, the desired dataplane
computed by agent.calc from Calico-shaped datastore documents and written by
agent.dataplane's KernelDataplane, exactly as the agent does.
"""

from __future__ import annotations

import subprocess

import pytest

from agent.calc import CalcConfig, ClusterState, calculate
from agent.dataplane.facade import KernelDataplane
from tests.unit.test_calc_state import node, owned, pool, wep

CONFIG = CalcConfig(host_mtu=1500, parent_interface="eth0")
NODES = {"nodea": ("192.168.100.1", "10.65.0.0/26", "10.65.0.1", "10.65.0.2", "cali1111111111a"),
         "nodeb": ("192.168.100.2", "10.65.1.0/26", "10.65.1.1", "10.65.1.2", "cali2222222222b")}


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


_OPEN: list[KernelDataplane] = []


@pytest.fixture(autouse=True)
def _close_planes():
    yield
    while _OPEN:
        _OPEN.pop().close()


def build(guest_netns, prefix: int, ipip_mode: str):
    ns = {name: guest_netns() for name in NODES}
    sh("ip", "link", "add", "eth0", "netns", ns["nodea"], "type", "veth", "peer", "name", "eth0",
       "netns", ns["nodeb"])
    pods = {}
    for name, (ip, _block, _tun, pod_ip, cali) in NODES.items():
        sh("ip", "-n", ns[name], "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns[name], "link", "set", "eth0", "up")
        # Like any real host (and the lab's nodes), a default route: proxy ARP for the
        # pods' 169.254.1.1 gateway answers only when the host routes that address
        # out of another interface.
        sh("ip", "-n", ns[name], "route", "add", "default", "via", "192.168.100.254")
        sh("ip", "netns", "exec", ns[name], "sysctl", "-qw", "net.ipv4.ip_forward=1")
        pod_ns = guest_netns()
        sh("ip", "link", "add", cali, "netns", ns[name], "type", "veth", "peer", "name", "eth0",
           "netns", pod_ns)
        sh("ip", "-n", ns[name], "link", "set", cali, "up")
        sh("ip", "-n", pod_ns, "addr", "add", f"{pod_ip}/32", "dev", "eth0")
        sh("ip", "-n", pod_ns, "link", "set", "eth0", "up")
        sh("ip", "-n", pod_ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        sh("ip", "-n", pod_ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        pods[name] = pod_ns
    state = ClusterState()
    updates = [pool("pods", "10.65.0.0/16", ipip=ipip_mode)]
    for name, (ip, block, tun, pod_ip, cali) in NODES.items():
        updates += [node(name, f"{ip}/{prefix}", ipip_tunnel=tun), *owned(name, block),
                    wep(name, f"pod-{name}", [f"{pod_ip}/32"], iface=cali)]
    state.apply(updates)
    planes = {}
    for name in NODES:
        # Routing writers only: the guest kernel has no nf_tables for iptables-nft.
        plane = KernelDataplane(ns[name], netfilter=False)
        _OPEN.append(plane)
        plane.set_desired(calculate(state, name, CONFIG).dataplane)
        result = plane.apply()
        assert result.ok, result.errors
        planes[name] = plane
    return ns, pods, planes


def ping(pod_ns: str, ip: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", pod_ns, "ping", "-c", "1", "-W", "2", ip],
                          capture_output=True).returncode == 0


def tunl0_packets(ns: str) -> int:
    out = sh("ip", "-n", ns, "-s", "link", "show", "tunl0").split("\n")
    return int(out[3].split()[1])  # RX packets


def test_ipip_always_pod_to_pod_over_tunl0(guest_netns):
    ns, pods, planes = build(guest_netns, 24, "Always")
    routes = sh("ip", "-n", ns["nodea"], "route")
    assert "10.65.1.0/26 via 192.168.100.2 dev tunl0 proto 80 onlink mtu 1480" in routes
    assert "blackhole 10.65.0.0/26 proto 80" in routes
    assert "10.65.0.2 dev cali1111111111a scope link" in routes
    link = sh("ip", "-n", ns["nodea"], "-d", "addr", "show", "tunl0")
    assert "10.65.0.1/32" in link and "mtu 1480" in link and ",UP" in link
    before = tunl0_packets(ns["nodeb"])
    assert ping(pods["nodea"], "10.65.1.2")
    assert tunl0_packets(ns["nodeb"]) > before  # it really went through the tunnel
    # A second pass against the same kernel writes nothing.
    for plane in planes.values():
        plane.resync("routes")  # devices, sysctls, neighbours and routes
        assert plane.apply().mutations == 0


def test_ipip_cross_subnet_same_subnet_goes_direct(guest_netns):
    ns, pods, _ = build(guest_netns, 24, "CrossSubnet")
    routes = sh("ip", "-n", ns["nodea"], "route")
    assert "10.65.1.0/26 via 192.168.100.2 dev eth0 proto 80 onlink" in routes
    before = tunl0_packets(ns["nodeb"])
    assert ping(pods["nodea"], "10.65.1.2")
    assert tunl0_packets(ns["nodeb"]) == before  # plain IP, no encapsulation


def test_ipip_cross_subnet_other_subnet_uses_tunl0(guest_netns):
    # A /32 node address puts every other node outside "our subnet" (Calico's rule).
    ns, pods, _ = build(guest_netns, 32, "CrossSubnet")
    routes = sh("ip", "-n", ns["nodea"], "route")
    assert "10.65.1.0/26 via 192.168.100.2 dev tunl0 proto 80 onlink" in routes
    assert ping(pods["nodea"], "10.65.1.2")


def test_tunl0_removed_when_no_pool_needs_it(guest_netns):
    ns, _, planes = build(guest_netns, 24, "Always")
    state = ClusterState()
    state.apply([pool("pods", "10.65.0.0/16"), node("nodea", "192.168.100.1/24"),
                 *owned("nodea", "10.65.0.0/26")])
    planes["nodea"].set_desired(calculate(state, "nodea", CONFIG).dataplane)
    assert planes["nodea"].apply().ok
    link = sh("ip", "-n", ns["nodea"], "addr", "show", "tunl0")
    assert "10.65.0.1" not in link and "tunl0" not in sh("ip", "-n", ns["nodea"], "route")


@pytest.fixture(autouse=True)
def _ipip_module():
    subprocess.run(["modprobe", "ipip"], check=False)
