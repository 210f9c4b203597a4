"""bgp.status (peer rows from events) and bgp.control (the abstract control socket)."""

from __future__ import annotations

import threading
import uuid

import pytest

from bgp.control import ControlServer, follow_routes, query_status
from bgp.status import PeerStatusBook
from bgp.types import (
    MESH,
    NeighborStatus,
    NeighborTable,
    NodePlan,
    PeerNotification,
    PeerPlan,
    PeerState,
)


def plan(*peers: PeerPlan) -> NodePlan:
    return NodePlan(node="n1", node_ip="10.0.0.1", router_id="10.0.0.1", local_as=64512,
                    listen_address="10.0.0.1", peers=peers)


def peer(ip: str, passive: bool = False) -> PeerPlan:
    return PeerPlan(name="Mesh_" + ip.replace(".", "_"), peer_type=MESH, peer_ip=ip,
                    peer_as=64512, local_as=64512, passive=passive)


def test_rows_follow_the_session_life():
    book = PeerStatusBook()
    book.set_plan(plan(peer("10.0.0.2"), peer("10.0.0.10", passive=True)), now=100)
    assert [(r.address, r.state, r.info) for r in book.rows()] == [
        ("10.0.0.2", "down", "Idle"), ("10.0.0.10", "down", "Passive")]
    book.on_speaker(True, now=101)
    book.on_state(PeerState("10.0.0.2", "up"), now=105)
    row = book.rows()[0]
    assert (row.state, row.info, row.since) == ("up", "Established", 105)
    book.on_notification(PeerNotification("10.0.0.2", 4, 0, "Hold timer expired", "send"))
    book.on_state(PeerState("10.0.0.2", "down", "peer reset"), now=110)
    row = book.rows()[0]
    assert (row.state, row.info, row.error) == ("start", "Active", "peer reset")
    book.on_table(NeighborTable((NeighborStatus("10.0.0.2", "CONNECT", 3.0),
                                 NeighborStatus("10.0.0.10", "IDLE", 9.0))), now=120)
    rows = book.rows()
    assert (rows[0].info, rows[0].since) == ("Connect", 117)
    assert rows[1].info == "Passive"  # a passive peer waiting to be called
    book.set_counts({"10.0.0.2": (3, 4)})
    assert (book.rows()[0].received, book.rows()[0].sent) == (3, 4)
    doc = book.snapshot("n1", now=130)
    assert doc["speaker"] == "running" and doc["routerID"] == "10.0.0.1"
    assert [p["address"] for p in doc["peers"]] == ["10.0.0.2", "10.0.0.10"]


def test_removed_peers_disappear_and_speaker_death_marks_all_down():
    book = PeerStatusBook()
    book.set_plan(plan(peer("10.0.0.2"), peer("10.0.0.3")), now=1)
    book.on_speaker(True, now=2)
    book.set_plan(plan(peer("10.0.0.3")), now=3)
    assert [r.address for r in book.rows()] == ["10.0.0.3"]
    book.on_speaker(False, now=4, reason="exit code -9")
    assert book.rows()[0].state == "down" and book.rows()[0].error == "exit code -9"


def test_control_socket_serves_status_and_streams_routes():
    name = f"tortie-test-{uuid.uuid4().hex[:8]}"
    server = ControlServer(name, lambda: {"node": "n1", "peers": []}).start()
    try:
        assert query_status(name) == {"node": "n1", "peers": []}
        with pytest.raises(OSError):  # one speaker per namespace: the name is taken
            ControlServer(name, dict)
        got: list[list] = []
        seen = threading.Event()
        stop = threading.Event()

        def on_routes(routes):
            got.append(routes)
            if routes:
                seen.set()

        server.publish_routes([])
        t = threading.Thread(target=follow_routes, args=(name, on_routes, stop), daemon=True)
        t.start()
        server.publish_routes([("10.244.1.0/26", "10.0.0.2", "10.0.0.2")])
        assert seen.wait(5)
        assert got[-1] == [("10.244.1.0/26", "10.0.0.2", "10.0.0.2")]
    finally:
        stop.set()
        server.close()
    with pytest.raises(OSError):
        query_status(name, timeout=1)
