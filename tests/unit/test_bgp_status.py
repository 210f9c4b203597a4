"""bgp.status (peer rows from events) and bgp.control (the abstract control socket)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest

from bgp.control import ControlServer, follow_routes, query_status
from bgp.status import PeerStatusBook
from bgp.types import (
    MESH,
    BestPathChanges,
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


class Follower:
    """follow_routes in a thread, recording every message and folding them into a table."""

    def __init__(self, name: str, *, hold: threading.Event | None = None) -> None:
        self.messages: list[BestPathChanges] = []
        self.table: dict[str, tuple[str, str]] = {}
        self._hold = hold  # while clear, the callback blocks after the first message
        self._cond = threading.Condition()
        self.stop = threading.Event()
        self._thread = threading.Thread(target=follow_routes,
                                        args=(name, self._on_routes, self.stop, 0.05),
                                        daemon=True)
        self._thread.start()

    def _on_routes(self, changes: BestPathChanges) -> None:
        with self._cond:
            self.messages.append(changes)
            if changes.reset:
                self.table = {}
            for prefix, route in changes.routes.items():
                if route is None:
                    self.table.pop(prefix, None)
                else:
                    self.table[prefix] = route
            self._cond.notify_all()
        if self._hold is not None and len(self.messages) == 1:
            self._hold.wait(10)

    def wait(self, predicate: Callable[[Follower], bool], timeout: float = 5.0) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self), timeout), self.messages[-5:]


def server_name() -> str:
    return f"tortie-test-{uuid.uuid4().hex[:8]}"


def route(i: int, hop: int = 2) -> tuple[str, tuple[str, str]]:
    return f"10.244.{i}.0/26", (f"10.0.0.{hop}", f"10.0.0.{hop}")


def test_control_socket_serves_status_and_streams_routes():
    name = server_name()
    server = ControlServer(name, lambda: {"node": "n1", "peers": []}).start()
    follower = None
    try:
        assert query_status(name) == {"node": "n1", "peers": []}
        with pytest.raises(OSError):  # one speaker per namespace: the name is taken
            ControlServer(name, dict)
        p1, r1 = route(1)
        p2, r2 = route(2)
        server.publish_routes(BestPathChanges({p1: r1}, reset=True))
        follower = Follower(name)
        # First the whole table, as a reset, whatever came before the connection.
        follower.wait(lambda f: len(f.messages) == 1)
        assert follower.messages == [BestPathChanges({p1: r1}, reset=True)]
        server.publish_routes(BestPathChanges({p2: r2}))
        follower.wait(lambda f: len(f.messages) == 2)
        assert follower.messages[1] == BestPathChanges({p2: r2})
        moved = ("10.0.0.3", "10.0.0.3")
        server.publish_routes(BestPathChanges({p1: moved, p2: None}))
        follower.wait(lambda f: len(f.messages) == 3)
        assert follower.messages[2] == BestPathChanges({p1: moved, p2: None})
        # A reset from the daemon reaches the follower as one, never holding a withdrawal.
        server.publish_routes(BestPathChanges({p2: r2, p1: None}, reset=True))
        follower.wait(lambda f: len(f.messages) == 4)
        assert follower.messages[3] == BestPathChanges({p2: r2}, reset=True)
        assert follower.table == {p2: r2}
    finally:
        if follower:
            follower.stop.set()
        server.close()
    with pytest.raises(OSError):
        query_status(name, timeout=1)


def test_a_slow_follower_gets_coalesced_changes_and_misses_none():
    name = server_name()
    server = ControlServer(name, dict).start()
    hold = threading.Event()
    follower = Follower(name, hold=hold)
    try:
        follower.wait(lambda f: len(f.messages) == 1)  # the reset; now the callback blocks
        expected: dict[str, tuple[str, str]] = {}
        publications = 1000
        for n in range(publications):
            # 100 of 300 prefixes per publication, some withdrawn: ~4 MB as separate lines,
            # far more than the socket holds while the reader is blocked.
            changes = {route(i)[0]: None if (i + n) % 7 == 0 else route(i, 2 + n % 5)[1]
                       for i in range((n * 37) % 200, (n * 37) % 200 + 100)}
            server.publish_routes(BestPathChanges(changes))
            for prefix, r in changes.items():
                if r is None:
                    expected.pop(prefix, None)
                else:
                    expected[prefix] = r
        hold.set()
        follower.wait(lambda f: f.table == expected)
        assert 1 < len(follower.messages) < publications + 1
        assert not any(m.reset for m in follower.messages[1:])
    finally:
        hold.set()
        follower.stop.set()
        server.close()


def test_a_follower_that_reconnects_starts_from_a_reset():
    name = server_name()
    p1, r1 = route(1)
    p2, r2 = route(2)
    server = ControlServer(name, dict).start()
    server.publish_routes(BestPathChanges({p1: r1}, reset=True))
    follower = Follower(name)
    try:
        follower.wait(lambda f: f.table == {p1: r1})
        server.close()
        # The speaker restarts (the sidecar's container, say) with other routes.
        server = ControlServer(name, dict).start()
        server.publish_routes(BestPathChanges({p2: r2}, reset=True))
        follower.wait(lambda f: f.table == {p2: r2})
        assert follower.messages[-1] == BestPathChanges({p2: r2}, reset=True)
    finally:
        follower.stop.set()
        server.close()
