"""bindMode at a real ExaBGP 5.0.15 (root): where the node listens for BGP.

Node a has two addresses, 10.233.0.1 (towards b) and 10.233.1.1 (towards c). Its
configuration and ExaBGP settings come from the real plan and renderer (bgp.plan,
bgp.render) for a BGPConfiguration with `bindMode` and `listenPort: 1790`; peer b, a
hand-written ExaBGP, dials a's *second* address, 10.233.1.1, through a host route
this test adds in b. The peering has `sourceAddress: None`: with a source address
ExaBGP accepts a connection only to that address, whatever it listens on.

confd (bgp_processor.go getBindMode): `listen bgp address <node IP>` only for
bindMode NodeIP; None, the default, listens on every address.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgp.plan import plan_node
from bgp.render import render_config, speaker_env
from bgp.speaker import ExaBGPSpeaker
from bgp.types import NeighborTable, PeerState, SpeakerStarted
from lab.probe import in_netns
from tests.bgp.conftest import A_B, A_C, B_A, Events, Topology, exa_conf
from tests.support import need
from tests.unit.test_bgp_plan import config, node, peer

pytestmark = [pytest.mark.root]

PORT = 1790


def a_plan(bind_mode: str):
    nodes = {"a": node("a", f"{A_B}/24"), "b": node("b", f"{B_A}/24", {"role": "b"})}
    to_b = peer("a-to-b", node="a", peerSelector="role == 'b'", sourceAddress="None")
    cfg = config(nodeToNodeMeshEnabled=False, bindMode=bind_mode, listenPort=PORT)
    plan = plan_node("a", nodes, [to_b], {"default": cfg}, password_for=lambda ref: None)
    assert plan is not None
    [session] = plan.peers
    # a waits to be called (B_A is the larger address), so only b's connection counts
    assert (session.peer_ip, session.local_address, session.passive) == (B_A, None, True)
    return plan


@pytest.fixture
def second_address_route(topology: Topology) -> Iterator[None]:
    """b reaches a's second address (on a's other interface) through a."""
    route = ["ip", "-n", topology.b, "route", "add", f"{A_C}/32", "via", A_B]
    subprocess.run(route, check=True)
    yield
    subprocess.run(["ip", "-n", topology.b, "route", "del", f"{A_C}/32"], check=False)


@pytest.fixture
def speakers(topology: Topology, second_address_route: None) -> Iterator:
    made: list[tuple[ExaBGPSpeaker, Path]] = []

    def make(ns: str, name: str, patch: bool = True) -> tuple[ExaBGPSpeaker, Events]:
        events = Events()
        workdir = Path(tempfile.mkdtemp(prefix=f"tbgpbind-{name}-"))
        made.append((ExaBGPSpeaker(workdir, events, netns=ns, name=f"tbgpbind-{name}",
                                   patch=patch), workdir))
        return made[-1][0], events

    yield make
    for speaker, workdir in made:
        speaker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start_pair(speakers, topology: Topology, bind_mode: str, patch: bool = True
               ) -> tuple[Events, ExaBGPSpeaker, Events]:
    plan = a_plan(bind_mode)
    a, ea = speakers(topology.a, "a", patch)
    a.configure(render_config(plan, a.api_argv()), speaker_env(plan))
    ea.wait(SpeakerStarted)  # ExaBGP binds its listening sockets before it starts the API
    b, eb = speakers(topology.b, "b")
    # b dials a's second address on a's listen port (exabgp.tcp.port) and listens nowhere
    b.configure(exa_conf(b.api_argv(), [dict(peer=A_C, local=B_A)], router_id=B_A),
                {"exabgp.tcp.bind": "", "exabgp.tcp.port": str(PORT)})
    return ea, b, eb


def listening(ns: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hltn", f"sport = :{PORT}"],
                         check=True, capture_output=True, text=True).stdout
    return {line.split()[3] for line in out.splitlines()}


def connect_errno(ns: str, address: str) -> int:
    """0 when a TCP connection from `ns` to address:PORT is accepted, else the errno."""
    with in_netns(ns), socket.socket() as s:
        s.settimeout(5)
        return s.connect_ex((address, PORT))


def test_bind_mode_none_accepts_a_peer_at_a_second_address(speakers, topology):
    need("ss", root=True)
    ea, b, eb = start_pair(speakers, topology, "None")
    assert listening(topology.a) == {f"0.0.0.0:{PORT}"}
    eb.wait(PeerState, lambda e: e.peer == A_C and e.state == "up", timeout=30)
    ea.wait(PeerState, lambda e: e.peer == B_A and e.state == "up", timeout=30)


def test_bind_mode_node_ip_refuses_a_peer_at_a_second_address(speakers, topology):
    need("ss", root=True)
    ea, b, eb = start_pair(speakers, topology, "NodeIP")
    assert listening(topology.a) == {f"{A_B}:{PORT}"}
    assert connect_errno(topology.b, A_C) == errno.ECONNREFUSED
    assert connect_errno(topology.b, A_B) == 0  # the node IP, same port: listening
    b.request_neighbors()
    [row] = eb.wait(NeighborTable)[0].rows
    assert (row.peer, row.fsm == "ESTABLISHED") == (A_C, False)
    assert not ea.of(PeerState, lambda e: e.state == "up")


def test_stock_exabgp_drops_a_peer_that_calls_a_neighbor_without_local_address(speakers,
                                                                              topology):
    """The evidence for exabgp_launcher.new_connections: stock ExaBGP 5.0.15 accepts the
    TCP connection, fails to match it (None has no .address()) and closes it, again
    and again; the session never comes up."""
    need("ss", root=True)
    ea, b, eb = start_pair(speakers, topology, "None", patch=False)
    eb.wait(PeerState, lambda e: e.peer == A_C and e.state == "down", timeout=30, count=3)
    assert not eb.of(PeerState, lambda e: e.state == "up")
    assert not ea.of(PeerState, lambda e: e.state == "up")
