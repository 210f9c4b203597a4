"""The SCTP INIT probe (lab/probe.py) against real iptables: it sees what netfilter delivers.

This kernel has no SCTP sockets, so the conformance cases check SCTP with raw INIT
packets answered by the probe server's raw socket. Here, in test_policy.py's two-pod
node, a counting rule in pod b's INPUT chain is the witness: a probe reports
"delivered" exactly when the INIT reached b's namespace, under the namespace profile
(everything allowed) and under a policy that allows SCTP to one port only (the other
port, and TCP to the allowed one, dropped on the FORWARD path). Both iptables backends.
"""

from __future__ import annotations

import random
import re
import socket

from agent.calc import ClusterState
from lab.probe import IPPROTO_SCTP, in_netns, probe, sctp_init
from tests.dataplane.helpers import ns_exec
from tests.dataplane.test_iptables import Writers
from tests.dataplane.test_policy import NAMESPACE_X, NODE, PODS, backend, lab, program
from tests.unit.test_calc_policy import pod, put

__all__ = ["backend", "lab"]  # test_policy.py's fixtures, used here by name

SCTP_81_FROM_A = {"selector": "pod == 'b'", "ingress": [
    {"action": "Allow", "protocol": "SCTP", "source": {"selector": "pod == 'a'"},
     "destination": {"ports": [81]}}]}


def count_inits(pod_ns: str, backend: str) -> None:
    """In the pod: one rule per port that counts the SCTP INITs arriving (no target)."""
    for port in (80, 81):
        ns_exec(pod_ns, f"iptables-{backend}", "-A", "INPUT", "-p", "sctp", "-m", "sctp",
                "--dport", str(port), "--chunk-types", "only", "INIT")


def inits_counted(pod_ns: str, backend: str) -> dict[int, int]:
    save = ns_exec(pod_ns, f"iptables-{backend}-save", "-c", "-t", "filter")
    return {int(port): int(packets) for packets, port in re.findall(
        r"^\[(\d+):\d+\] -A INPUT -p sctp -m sctp --dport (\d+)", save, re.M)}


def delivered(lab: dict[str, str], port: int, protocol: str = "SCTP") -> bool:
    return probe(PODS["b"], port, protocol, netns=lab["a"]).connected


def test_the_probe_reports_delivered_exactly_when_the_init_reaches_the_pod(
        lab: dict[str, str], backend: str) -> None:
    state = ClusterState()
    state.apply([NAMESPACE_X, *(pod(name, NODE, ip, {"pod": name})
                                for name, ip in PODS.items())])
    writers = Writers(lab["node"], backend)
    program(writers, state)
    count_inits(lab["b"], backend)

    assert delivered(lab, 80) and delivered(lab, 81)  # the profile allows everything
    assert inits_counted(lab["b"], backend) == {80: 1, 81: 1}

    state.apply([put("NetworkPolicy", "sctp-81", SCTP_81_FROM_A, namespace="x")])
    program(writers, state)
    assert not delivered(lab, 80)
    assert delivered(lab, 81)
    assert not delivered(lab, 81, "TCP")  # SCTP does not allow TCP
    assert inits_counted(lab["b"], backend) == {80: 1, 81: 2}  # 80 dropped on the way
    # The policy chain's SCTP rule is what let it through (-p sctp, then multiport):
    # one packet, the probe's INIT.
    save = ns_exec(lab["node"], f"iptables-{backend}-save", "-c", "-t", "filter")
    assert re.search(r"^\[1:\d+\] -A cali-pi-\S+ -p sctp .*--dports 81 ", save, re.M), save


def test_an_init_with_a_bad_checksum_gets_no_answer(lab: dict[str, str]) -> None:
    """The server answers only checksummed INITs, as an SCTP stack does (and the probe
    itself gets answers: its CRC32c is right)."""
    init = bytearray(sctp_init(random.randrange(32768, 61000), 80, 0x5C7F))
    init[8] ^= 0xFF
    with in_netns(lab["a"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_SCTP)
    with sock:
        sock.settimeout(0.5)
        sock.sendto(bytes(init), (PODS["b"], 0))
        try:
            answer = sock.recv(2048)
        except TimeoutError:
            answer = b""
    assert answer == b""
    assert probe(PODS["b"], 80, "SCTP", netns=lab["a"]).connected
