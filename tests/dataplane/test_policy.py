"""Policy in a real kernel: two veth "pods" behind a node namespace, real iptables and ipsets.

The node namespace holds the pods' host-side `cali*` interfaces with Calico's wiring
(a /32 route per pod, proxy ARP, the pod's default route via 169.254.1.1); each pod
namespace runs lab/probe.py's server. The desired dataplane comes from calculate()
over datastore values, and the agent's writers program it (ipsets, then iptables, then
ipset deletions), on both iptables backends. Checked with real TCP probes: the
namespace profile allows everything; a policy on pod b then allows only port 81 from
pod a; the node still reaches b on any port (host-to-local-pod is not policed); an
interface the agent does not know passes nothing; a restart writes nothing; a flushed
policy chain is repaired by the resync.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from agent.calc import ClusterState, calculate
from lab.probe import probe
from policy.model import compile_policy
from policy.render import policy_chain_name
from tests.dataplane.helpers import ns_exec, sh
from tests.dataplane.test_iptables import Writers
from tests.support import add_veth, need, new_netns, wait_until
from tests.unit.test_calc_policy import pod, put
from tests.unit.test_calc_state import CONFIG

pytestmark = pytest.mark.root

NODE = "node1"
PODS = {"a": "10.65.0.2", "b": "10.65.0.3"}
ONLY_81_FROM_A = {"selector": "pod == 'b'", "ingress": [
    {"action": "Allow", "protocol": "TCP", "source": {"selector": "pod == 'a'"},
     "destination": {"ports": [81]}}]}
# The namespace's profile, as a v1 Namespace becomes it: everything allowed.
NAMESPACE_X = put("Profile", "kns.x", {"ingress": [{"action": "Allow"}],
                                       "egress": [{"action": "Allow"}]})
POLICY_CHAIN = policy_chain_name(
    compile_policy("NetworkPolicy", "only-81", "x", {}), "ingress")


@pytest.fixture(params=["legacy", "nft"])
def backend(request: pytest.FixtureRequest) -> str:
    need("ip", "ipset", f"iptables-{request.param}-save", f"iptables-{request.param}-restore",
         root=True, root_for="network namespaces, iptables, ipset")
    return str(request.param)


def wire_pod(node_ns: str, pod_ns: str, iface: str, ip: str) -> None:
    """Calico's veth wiring (cni/wiring.py does the same for real pods)."""
    add_veth(node_ns, iface, "eth0", peer_ns=pod_ns)
    sh(node_ns, "route", "add", f"{ip}/32", "dev", iface, "scope", "link")
    ns_exec(node_ns, "sysctl", "-qw", f"net.ipv4.conf.{iface}.proxy_arp=1",
            f"net.ipv4.neigh.{iface}.proxy_delay=0")
    sh(pod_ns, "addr", "add", f"{ip}/32", "dev", "eth0")
    sh(pod_ns, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
    sh(pod_ns, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")


@pytest.fixture
def lab(netns: str) -> Iterator[dict[str, str]]:
    """The node namespace (`netns`) and one namespace per pod, each serving 80 and 81."""
    ns_exec(netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # An uplink with a default route: proxy ARP answers for 169.254.1.1 only when the
    # node routes that address out of another interface, as a real node does.
    add_veth(netns, "eth0", "eth0peer", address="192.168.0.1/24")
    sh(netns, "route", "add", "default", "via", "192.168.0.254", "dev", "eth0")
    with ExitStack() as stack:
        spaces = {"node": netns}
        servers = []
        for name, ip in PODS.items():
            spaces[name] = stack.enter_context(new_netns(name))
            wire_pod(netns, spaces[name], f"cali{name}", ip)
            servers.append(subprocess.Popen(
                ["ip", "netns", "exec", spaces[name], sys.executable, "-m", "lab.probe", "serve",
                 f"x/{name}", "80", "81"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            for ip in PODS.values():
                wait_until(lambda ip=ip: probe(ip, 80, "TCP", netns=netns).connected,
                           timeout=10, what=f"probe server on {ip}")
            yield spaces
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=10)


def reaches(lab: dict[str, str], src: str, dst: str, port: int) -> bool:
    return probe(PODS[dst], port, "TCP", netns=lab[src]).connected


def desired(state: ClusterState):
    return calculate(state, NODE, CONFIG).dataplane


def program(writers: Writers, state: ClusterState) -> int:
    dp = desired(state)
    writers.set_desired(list(dp.ipsets), list(dp.chains), list(dp.hooks))
    return writers.apply()


def test_policy_enforced_restart_writes_nothing_and_flushed_chain_repaired(
        lab: dict[str, str], backend: str) -> None:
    state = ClusterState()
    state.apply([
        NAMESPACE_X,
        *(pod(name, NODE, ip, {"pod": name}) for name, ip in PODS.items()),
    ])
    writers = Writers(lab["node"], backend)
    assert program(writers, state) > 0
    assert reaches(lab, "a", "b", 80) and reaches(lab, "a", "b", 81)

    state.apply([put("NetworkPolicy", "only-81", ONLY_81_FROM_A, namespace="x")])
    program(writers, state)
    assert not reaches(lab, "a", "b", 80)
    assert reaches(lab, "a", "b", 81)
    assert reaches(lab, "b", "a", 80)  # a has no policy: its profile allows
    # From the node itself: not policed, so probes from the host work.
    assert probe(PODS["b"], 80, "TCP", netns=lab["node"]).connected

    # A restart: fresh writers, the same desired state, nothing written.
    restarted = Writers(lab["node"], backend)
    assert program(restarted, state) == 0

    # A flushed policy chain opens nothing for long: the resync repairs it.
    save = ns_exec(lab["node"], f"iptables-{backend}-save", "-t", "filter")
    assert f":{POLICY_CHAIN}" in save
    ns_exec(lab["node"], f"iptables-{backend}", "-t", "filter", "-F", POLICY_CHAIN)
    restarted.resync()
    assert program(restarted, state) > 0
    assert not reaches(lab, "a", "b", 80)


def test_an_interface_the_agent_does_not_know_passes_nothing(
        lab: dict[str, str], backend: str) -> None:
    state = ClusterState()
    state.apply([
        NAMESPACE_X,
        pod("a", NODE, PODS["a"], {"pod": "a"}),  # b's endpoint is not in the datastore
    ])
    program(Writers(lab["node"], backend), state)
    assert not reaches(lab, "a", "b", 80)  # to an unknown interface
    assert not reaches(lab, "b", "a", 80)  # from an unknown interface
    state.apply([pod("b", NODE, PODS["b"], {"pod": "b"})])
    program(Writers(lab["node"], backend), state)
    assert reaches(lab, "a", "b", 80) and reaches(lab, "b", "a", 80)


def test_a_named_port_rule_matches_the_declared_port_only(
        lab: dict[str, str], backend: str) -> None:
    named = {"selector": "pod == 'b'", "ingress": [
        {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["web"]}}]}
    state = ClusterState()
    state.apply([
        NAMESPACE_X, pod("a", NODE, PODS["a"], {"pod": "a"}),
        pod("b", NODE, PODS["b"], {"pod": "b"},
            ports=[{"name": "web", "protocol": "TCP", "port": 81}]),
        put("NetworkPolicy", "named", named, namespace="x"),
    ])
    program(Writers(lab["node"], backend), state)
    sets = ns_exec(lab["node"], "ipset", "list", "-t")
    assert "Type: hash:ip,port" in sets
    assert reaches(lab, "a", "b", 81) and not reaches(lab, "a", "b", 80)
    assert program(Writers(lab["node"], backend), state) == 0  # the set reads back the same
