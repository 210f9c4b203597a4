"""Start-up race (issue 15): a new pod meets its policy from its first packet on.

With `policy_setup_timeout_seconds` the CNI ADD returns only once the node's agent
has published the endpoint's "policy programmed" file (agent/endpoint_status.py,
cni/endpoint_status.py), and a runtime starts the pod's containers only after ADD.
So, in a lab whose plugins wait:

  * a pod in a namespace with default-deny ingress never answers a probe from
    another node, from the moment its server starts (probes already running then);
  * a pod whose policy allows the prober answers the very first probe sent once its
    server listens: its allow rules were in the kernel before it started.

The second half is what the wait buys: without it the pod's interface is still
unknown to the agent when the pod starts, and its first packets are dropped.
Each pod is checked right after ADD, several times, with the server started the
way a runtime starts a container: after ADD returned. In this lab the agent is
usually quicker than the rest of ADD, so the last test pauses node1's agent
(SIGSTOP, by the PID the lab recorded) while a pod is added: ADD must still be
waiting when the endpoint is written, return only once the agent runs again, and
the pod must then answer its first probe.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from datastore.names import endpoint_status_filename
from lab import Lab, procs
from lab import pods as lab_pods
from lab import probe as lab_probe
from lab.pods import PodInfo
from lab.probe import Outcome
from tests.support import wait_until

from .netpol import policy_lab
from .pods import ctl

pytestmark = [pytest.mark.slow, pytest.mark.root]

WAIT = 20  # policy_setup_timeout_seconds of the lab's plugins
PORT = 80
ROUNDS = 3
POLICIES = """apiVersion: v1
kind: Namespace
metadata: {name: locked, labels: {ns: locked}}
---
apiVersion: v1
kind: Namespace
metadata: {name: open, labels: {ns: open}}
---
apiVersion: v1
kind: Namespace
metadata: {name: probers, labels: {ns: probers}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-ingress, namespace: locked}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-from-probers, namespace: open}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {ns: probers}}
"""


@dataclass
class World:
    lab: Lab
    prober: PodInfo  # in namespace probers, on node2: "from outside" for pods on node1


def serve(lab: Lab, pod: PodInfo) -> None:
    """Start the pod's server as a runtime starts a container (after ADD returned), and
    wait until it answers inside its own pod (loopback never leaves the pod)."""
    key = f"{pod.namespace}/{pod.name}"
    lab.start_process(pod.netns, [sys.executable, "-I", "-S", lab_probe.__file__, "serve", key,
                                  str(PORT)], role="probe-server",
                      name=f"probe-{pod.namespace}-{pod.name}")
    wait_until(lambda: lab_probe.probe("127.0.0.1", PORT, "TCP", netns=pod.netns,
                                       timeout=0.2).connected,
               timeout=20, interval=0.005, what=f"{key}'s server")


def probe_while_it_starts(world: World, pod: PodInfo, after: float = 2.0) -> list[Outcome]:
    """Probe `pod` from the prober without pause (TCP and UDP, 4 at a time) from before
    its server starts until `after` seconds after it listens."""
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def hammer(protocol: str) -> None:
        while not stop.is_set():
            outcomes.append(lab_probe.probe(pod.ip, PORT, protocol, netns=world.prober.netns,
                                            timeout=0.3))

    threads = [threading.Thread(target=hammer, args=(proto,), daemon=True)
               for proto in ("TCP", "UDP", "TCP", "UDP")]
    for t in threads:
        t.start()
    try:
        serve(world.lab, pod)
        time.sleep(after)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    return outcomes


def add(world: World, namespace: str, name: str) -> PodInfo:
    """ADD a pod on node1; the plugin must have waited for the agent's status file."""
    pod = lab_pods.add_pod(world.lab, "node1", namespace, name)
    filename = endpoint_status_filename(namespace, lab_pods.endpoint_name(world.lab, pod))
    assert filename is not None
    assert (lab_pods.endpoint_status_dir(world.lab, "node1") / filename).exists(), \
        f"ADD of {namespace}/{name} returned before the agent published its status"
    return pod


@pytest.fixture(scope="module")
def world(lab_env: None) -> Iterator[World]:
    with policy_lab(2, policy_setup_timeout=WAIT) as lab:
        ctl(lab, ["apply", "-f", "-"], stdin=POLICIES)
        world = World(lab, lab_pods.add_pod(lab, "node2", "probers", "prober"))
        # Both policies are in node1's kernel before the race starts: a pod of each
        # namespace that already runs shows it (the race is about new pods, not about
        # how fast a policy spreads).
        sentinels = {ns: add(world, ns, "sentinel") for ns in ("locked", "open")}
        for pod in sentinels.values():
            serve(lab, pod)

        def reaches(pod: PodInfo) -> bool:
            return lab_probe.probe(pod.ip, PORT, "TCP", netns=world.prober.netns).connected

        wait_until(lambda: reaches(sentinels["open"]) and not reaches(sentinels["locked"]),
                   timeout=30, what="both policies programmed on node1")
        yield world


def test_a_pod_in_a_default_deny_namespace_never_answers_from_its_first_packet(
        world: World) -> None:
    for round_ in range(ROUNDS):
        pod = add(world, "locked", f"fresh{round_}")
        outcomes = probe_while_it_starts(world, pod)
        answered = [o.detail for o in outcomes if o.connected]
        assert not answered, (f"locked/{pod.name} answered a probe from another namespace: "
                              f"{answered[:3]}")
        assert len(outcomes) >= 20, "too few probes to mean anything"


def test_a_pod_its_policy_allows_answers_the_first_probe_after_it_starts(world: World) -> None:
    for round_ in range(ROUNDS):
        pod = add(world, "open", f"fresh{round_}")
        serve(world.lab, pod)
        first = lab_probe.probe(pod.ip, PORT, "TCP", netns=world.prober.netns)
        assert first == Outcome(True, f"open/{pod.name}"), \
            f"the first probe of open/{pod.name} after it started: {first.detail}"


def has_endpoint(lab: Lab, namespace: str, pod: str) -> bool:
    out = ctl(lab, ["get", "workloadendpoints", "-n", namespace, "-o", "json"])
    return any(w["spec"].get("pod") == pod for w in json.loads(out)["items"])


def test_add_waits_for_a_paused_agent_and_the_pod_answers_its_first_probe(world: World) -> None:
    (agent,) = [p for p in world.lab.status()["processes"]
                if p["role"] == "agent" and p["name"] == "agent-node1" and p["alive"]]
    assert procs.is_ours(agent["pid"], agent["start_time"])  # the lab's agent, not a reused PID
    os.kill(agent["pid"], signal.SIGSTOP)
    try:
        with ThreadPoolExecutor(1) as pool:
            adding = pool.submit(add, world, "open", "late")
            wait_until(lambda: has_endpoint(world.lab, "open", "late"), timeout=30,
                       what="the endpoint written by ADD")
            time.sleep(1.0)
            assert not adding.done(), "ADD returned while the agent could not program the pod"
            os.kill(agent["pid"], signal.SIGCONT)
            pod = adding.result(timeout=WAIT + 10)  # add() checks the status file is there
    finally:
        os.kill(agent["pid"], signal.SIGCONT)
    serve(world.lab, pod)
    first = lab_probe.probe(pod.ip, PORT, "TCP", netns=world.prober.netns)
    assert first == Outcome(True, "open/late"), f"the first probe after it started: {first.detail}"
