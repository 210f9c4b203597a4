"""bgp.daemon's hand-out of best paths: the delta of one pass, and the publications the
daemon makes as speaker events reach its RIB.

No ExaBGP and no datastore: the daemon is given a plan and a RIB, and its loop is stood in
for by `step` (the events, the sweep, the routes pass, as `_loop` runs them). ExaBGP never
runs, so only the publications happen, not the export.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path as FsPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.daemon import STATUS_MIN_GAP, STATUS_REFRESH, BGPDaemon, best_path_delta
from bgp.rib import Path, Rib
from bgp.types import (
    MESH,
    BestPathChanges,
    EndOfRib,
    NodePlan,
    PathAttributes,
    PeerNotification,
    PeerOpen,
    PeerPlan,
    PeerState,
    RouteUpdate,
    SpeakerStarted,
    SpeakerStopped,
)

AS = 64512
ME, B, C = "10.0.0.1", "10.0.0.2", "10.0.0.3"
P1, P2, P3 = "10.244.1.0/26", "10.244.2.0/26", "10.244.3.0/26"


def path(prefix: str, peer: str, next_hop: str | None = None, *, stale: bool = False,
         **attrs) -> Path:
    return Path(prefix, PathAttributes(next_hop=next_hop or peer, **attrs), peer, peer, False,
                stale)


# (best paths, published, prefixes to look at, expected delta)
DELTA_CASES = {
    "added": ({P1: path(P1, B)}, {}, [P1], {P1: (B, B)}),
    "next hop changed": ({P1: path(P1, B, "10.0.0.9")}, {P1: (B, B)}, [P1],
                         {P1: ("10.0.0.9", B)}),
    "peer changed": ({P1: path(P1, C, B)}, {P1: (B, B)}, [P1], {P1: (B, C)}),
    "withdrawn": ({}, {P1: (B, B)}, [P1], {P1: None}),
    "unchanged left out, whatever else of the path moved": (
        {P1: path(P1, B, stale=True), P2: path(P2, B, med=5)}, {P1: (B, B), P2: (B, B)},
        [P1, P2], {}),
    "never published and still absent": ({}, {}, [P1], {}),
    "only the prefixes named": ({P1: path(P1, B), P2: path(P2, B)}, {}, [P2], {P2: (B, B)}),
    "full diff drops what is no longer there": (
        {P1: path(P1, C), P2: path(P2, B)}, {P1: (B, B), P2: (B, B), P3: (B, B)}, None,
        {P1: (C, C), P3: None}),
}


@pytest.mark.parametrize("best, published, prefixes, expected", DELTA_CASES.values(),
                         ids=DELTA_CASES.keys())
def test_best_path_delta(best, published, prefixes, expected):
    before = dict(published)
    assert best_path_delta(best, published, prefixes) == expected
    assert published == before  # pure


# -- the daemon ----------------------------------------------------------------------------

PLAN = NodePlan(node="n1", node_ip=ME, router_id=ME, local_as=AS, listen_address=ME,
                peers=tuple(PeerPlan(name="Mesh_" + ip.replace(".", "_"), peer_type=MESH,
                                     peer_ip=ip, peer_as=AS, local_as=AS) for ip in (B, C)))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def daemon() -> tuple[BGPDaemon, list[BestPathChanges], Clock]:
    got: list[BestPathChanges] = []
    clock = Clock()
    d = BGPDaemon(None, "n1", workdir=FsPath("/nonexistent/tortie-test-bgp"),  # never made
                  on_routes=got.append, control_name=None, publish_status=False,
                  clock=clock, wall=clock)
    d.plan, d.rib = PLAN, Rib(ME, None, AS)
    d.book.set_plan(PLAN, clock.now)
    return d, got, clock


def step(d: BGPDaemon, *events: object) -> None:
    for ev in events:
        d._on_speaker(ev)
    d._rib_changed(d.rib.sweep(d.clock()))
    if d._routes_dirty:
        d._update_routes()


def up(peer: str, restart_time: int | None = 120) -> tuple[PeerOpen, PeerState]:
    return PeerOpen(peer, peer, AS, 240, restart_time), PeerState(peer, "up")


def test_the_daemon_hands_out_a_reset_then_what_moved():
    d, got, clock = daemon()
    step(d)
    assert got == [BestPathChanges({}, reset=True)]  # the first one, even empty
    step(d, *up(B), RouteUpdate(B, {P1: PathAttributes(B), P2: PathAttributes(B)}))
    assert got[-1] == BestPathChanges({P1: (B, B), P2: (B, B)})
    step(d, *up(C), RouteUpdate(C, {P1: PathAttributes(C, local_pref=200)}))
    assert got[-1] == BestPathChanges({P1: (C, C)})
    # Neither another attribute nor the stale mark is news to the kernel.
    step(d, RouteUpdate(B, {P2: PathAttributes(B, med=5)}))
    step(d, PeerState(B, "down", "peer reset"))
    assert len(got) == 3 and d.rib.best(P2).stale
    clock.now += 120  # B's graceful restart time is over
    step(d)
    assert got[-1] == BestPathChanges({P2: None})
    step(d, PeerNotification(C, 6, 2, "shutdown"), PeerState(C, "down"))
    assert got[-1] == BestPathChanges({P1: None})
    assert len(got) == 5


PEERS = [B, C, "10.0.0.4"]
PREFIXES = [P1, P2, P3]
events = st.one_of(
    st.builds(lambda peer, rt: up(peer, rt), st.sampled_from(PEERS),
              st.sampled_from([None, 30, 120])),
    st.builds(lambda peer, notified: ((PeerNotification(peer, 6, 2, "x"),) if notified else ())
              + (PeerState(peer, "down"),), st.sampled_from(PEERS), st.booleans()),
    st.builds(lambda peer, announced, withdrawn: (RouteUpdate(peer, announced, withdrawn),),
              st.sampled_from(PEERS),
              st.dictionaries(st.sampled_from(PREFIXES), st.builds(
                  PathAttributes, next_hop=st.sampled_from(PEERS),
                  local_pref=st.sampled_from([None, 50, 200]))),
              st.lists(st.sampled_from(PREFIXES), max_size=2).map(tuple)),
    st.builds(lambda peer: (EndOfRib(peer),), st.sampled_from(PEERS)),
    st.just((SpeakerStopped("killed"),)),
    st.integers(0, 150),  # seconds pass
)


@given(st.lists(st.lists(events, max_size=4), max_size=25))
@settings(max_examples=300)
def test_publications_always_add_up_to_the_rib(passes):
    """Folded in order, the publications are the RIB's best paths after every pass, and
    each names only prefixes that moved."""
    d, got, clock = daemon()
    table: dict[str, tuple[str, str]] = {}
    for batch in [[]] + passes:
        for item in batch:
            if isinstance(item, int):
                clock.now += item
            else:
                for ev in item:
                    d._on_speaker(ev)
        before = len(got)
        step(d)
        for changes in got[before:]:
            if changes.reset:
                table = {}
            else:
                assert changes.routes
            for prefix, route in changes.routes.items():
                assert table.get(prefix) != route
                if route is None:
                    del table[prefix]
                else:
                    table[prefix] = route
        assert table == {p: (path.attrs.next_hop, path.peer)
                         for p, path in d.rib.best_paths().items()}
    assert got[0].reset and not any(c.reset for c in got[1:])


# -- End-of-RIB ordering (RFC 4724: the restarting speaker's routes, then End-of-RIB) --------


class RecordingSpeaker:
    """Stands in for ExaBGPSpeaker: the commands the daemon queues, in order. The order is
    what ExaBGP applies them in (tests/bgp/test_speaker.py shows that on the real one)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, tuple[str, ...]]] = []

    def announce(self, peer, routes):
        if routes:
            self.log.append(("announce", peer, tuple(r.prefix for r in routes)))

    def withdraw(self, peer, prefixes):
        if prefixes:
            self.log.append(("withdraw", peer, tuple(prefixes)))

    def end_of_rib(self, peer):
        self.log.append(("eor", peer, ()))

    def request_neighbors(self):
        pass


LOCAL = "10.244.9.0/26"


def exporting_daemon() -> tuple[BGPDaemon, RecordingSpeaker]:
    d, _, _ = daemon()
    d.speaker = speaker = RecordingSpeaker()
    d.view.local_prefixes = lambda: {LOCAL}  # this node's block, without a datastore
    d.view.pool_export_rules = lambda: [("10.244.0.0/16", False)]
    return d, speaker


def test_end_of_rib_follows_the_whole_reannouncement_of_a_new_exabgp():
    d, speaker = exporting_daemon()
    # The F2 case: the new ExaBGP's session with B is up in the same batch as its start,
    # before anything was announced to it.
    step(d, SpeakerStarted(2), *up(B))
    assert speaker.log == [("announce", B, (LOCAL,)), ("announce", C, (LOCAL,)),
                           ("eor", B, ())]
    # C comes up later: its routes were queued above, its End-of-RIB follows now, once.
    del speaker.log[:]
    step(d, *up(C))
    assert speaker.log == [("eor", C, ())]
    step(d)
    assert speaker.log == [("eor", C, ())]


def test_end_of_rib_after_the_routes_learned_from_others_and_once_per_session():
    d, speaker = exporting_daemon()
    d.plan = PLAN_RR = replace(PLAN, cluster_id="1.0.0.1", peers=tuple(
        replace(p, rr_client=True) for p in PLAN.peers))
    d.rib = Rib(ME, "1.0.0.1", AS)
    d.book.set_plan(PLAN_RR, d.clock())
    step(d, SpeakerStarted(1), *up(B))
    del speaker.log[:]
    # C comes up and sends a route in the same batch: it is reflected to B; C's own
    # End-of-RIB follows what C gets.
    step(d, *up(C), RouteUpdate(C, {P3: PathAttributes(C)}))
    assert speaker.log == [("announce", B, (P3,)), ("eor", C, ())]
    del speaker.log[:]
    step(d, PeerState(B, "down", "reset"), *up(B))  # a new session, a new End-of-RIB
    assert speaker.log[-1] == ("eor", B, ())
    del speaker.log[:]
    step(d, *up(C), PeerState(C, "down", "reset"))  # down before the pass: nothing to end
    assert ("eor", C, ()) not in speaker.log


eor_events = st.one_of(
    st.builds(lambda peer: up(peer), st.sampled_from([B, C])),
    st.builds(lambda peer: (PeerState(peer, "down", "x"),), st.sampled_from([B, C])),
    st.builds(lambda peer, prefix: (RouteUpdate(peer, {prefix: PathAttributes(peer)}),),
              st.sampled_from([B, C]), st.sampled_from(PREFIXES)),
    st.builds(lambda peer, prefix: (RouteUpdate(peer, {}, (prefix,)),),
              st.sampled_from([B, C]), st.sampled_from(PREFIXES)),
    st.just((SpeakerStopped("killed"),)),
    st.builds(lambda g: (SpeakerStarted(g),), st.integers(1, 5)),
)


@given(st.lists(st.lists(eor_events, max_size=4), max_size=20))
@settings(max_examples=300, deadline=None)  # no timing assertion: the machine may be busy
def test_every_session_up_gets_one_end_of_rib_after_everything_queued_for_it(passes):
    """Whatever the events, after each pass: every session that is up on a running ExaBGP
    has had exactly one End-of-RIB, and in the pass that sent it nothing for that peer
    comes after it (the speaker's order is ExaBGP's, so its routes went first)."""
    d, speaker = exporting_daemon()
    d.plan = replace(PLAN, cluster_id="1.0.0.1",
                     peers=tuple(replace(p, rr_client=True) for p in PLAN.peers))
    d.rib = Rib(ME, "1.0.0.1", AS)
    d.book.set_plan(d.plan, d.clock())
    session_up: dict[str, bool] = {}
    eors_this_session: dict[str, int] = {}
    running = False
    for batch in passes:
        for item in batch:
            for ev in item:
                match ev:
                    case SpeakerStarted() | SpeakerStopped():
                        running = isinstance(ev, SpeakerStarted)
                        session_up, eors_this_session = {}, {}
                    case PeerState(peer, "up"):
                        session_up[peer], eors_this_session[peer] = True, 0
                    case PeerState(peer, "down"):
                        session_up[peer] = False
        mark = len(speaker.log)
        for item in batch:
            for ev in item:
                d._on_speaker(ev)
        step(d)
        new = speaker.log[mark:]
        for i, (kind, peer, _) in enumerate(new):
            if kind == "eor":
                eors_this_session[peer] += 1
                # nothing for that peer after its End-of-RIB in the same pass
                assert all(p != peer for _, p, _ in new[i + 1:]), new
        for peer, is_up in session_up.items():
            if is_up and running:
                assert eors_this_session[peer] == 1, (peer, speaker.log)


# -- router id conflicts ---------------------------------------------------------------------


def test_a_router_id_collision_is_reported_naming_both_nodes_and_the_id(caplog):
    d, _, _ = daemon()
    d.plan = replace(PLAN, peers=tuple(replace(p, peer_node="n2" if p.peer_ip == B else "n3")
                                       for p in PLAN.peers))
    collision = PeerNotification(B, 2, 3, "BGP Identifier collision, same router-id "
                                 f"({ME}) on both sides of this IBGP session", "send")
    with caplog.at_level("ERROR", logger="bgp.daemon"):
        # ExaBGP retries: reported once per outage, and again after the session was up
        for _ in range(2):
            step(d, PeerOpen(B, ME, AS, 240, 120), collision,
                 PeerState(B, "down", "notification sent (2,3)"))
    assert [r.getMessage() for r in caplog.records] == [
        f"BGP router id conflict: node n1 and node n2 ({B}) both use BGP router id {ME}; "
        "their session is refused with Bad BGP Identifier (2,3) (sent, BGP Identifier "
        f"collision, same router-id ({ME}) on both sides of this IBGP session). Give one "
        "of them another CALICO_ROUTER_ID."]
    # what ctl node status shows in INFO after the state
    assert d.book.rows()[0].error == ("notification sent (2,3): BGP Identifier collision, "
                                      f"same router-id ({ME}) on both sides of this IBGP session")
    caplog.clear()
    with caplog.at_level("ERROR", logger="bgp.daemon"):
        step(d, *up(C), PeerNotification(C, 2, 3, "0.0.0.0 is an invalid router_id"),
             PeerState(C, "down"))
    assert "node n1 (router id 10.0.0.1) and node n3 (10.0.0.3, router id 10.0.0.3) have " \
        "a bad or colliding BGP router id" in caplog.text


# -- passwords -----------------------------------------------------------------------------


def test_a_rotated_password_file_makes_the_plan_again(tmp_path, caplog):
    from bgp.secrets import SecretsDir
    from datastore.resources.bgp import SecretKeyRef

    (tmp_path / "tor").mkdir()
    pw = tmp_path / "tor" / "pw"
    pw.write_text("s3cret\n")
    d = BGPDaemon(None, "n1", workdir=FsPath("/nonexistent/tortie-test-bgp"), control_name=None,
                  publish_status=False, password_for=SecretsDir(tmp_path))
    other = SecretKeyRef(name="mesh", key="pw")  # read as absent: a file may appear later
    assert d._read_password(SecretKeyRef(name="tor", key="pw")) == "s3cret"
    assert d._read_password(other) is None
    assert not d._passwords_changed()  # unchanged files: no new plan

    pw.write_text("s3cret\n")  # rewritten with the same text (kubelet does): still nothing
    assert not d._passwords_changed()
    pw.write_text("n3w\n")
    with caplog.at_level("INFO", logger="bgp.daemon"):
        assert d._passwords_changed()
    assert "BGP password tor/pw changed" in caplog.text
    assert "n3w" not in caplog.text  # never the password itself

    pw.write_text("s3cret\n")
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "pw").write_text("late\n")  # the missing one appeared
    assert d._passwords_changed()


def test_own_service_ranges_are_never_handed_out_as_learned_routes():
    from bgp.advertise import Advertising

    svc = "10.96.0.0/16"
    d, got, _ = daemon()
    d._advertising = Advertising(services=frozenset({svc}))
    step(d)
    step(d, *up(B), RouteUpdate(B, {P1: PathAttributes(B), svc: PathAttributes(B)}))
    assert got[-1] == BestPathChanges({P1: (B, B)})  # B's copy of the range is not news
    step(d, RouteUpdate(B, {svc: PathAttributes(B, med=1)}, (P1,)))
    assert got[-1] == BestPathChanges({P1: None})
    # The range stops being ours (a configuration change, which resets the publication):
    # B's path to it is now a route like any other.
    d._advertising, d._publish_reset = Advertising(), True
    d._routes_dirty = True
    step(d)
    assert got[-1] == BestPathChanges({svc: (B, B)}, reset=True)
    assert all(svc not in c.routes for c in got[:-1])


def test_status_carries_the_agents_learned_routes_not_installed() -> None:
    problems = ["learned route 203.0.113.0/24: next hop 192.0.2.99: no route to it in the main "
                "table"]
    d = BGPDaemon(None, "n1", workdir=FsPath("/nonexistent/tortie-test-bgp"), control_name=None,
                  publish_status=False, route_problems=lambda: problems)
    assert d.status()["routeProblems"] == problems
    problems.clear()  # read at each query: the list is the agent's current one
    assert d.status()["routeProblems"] == []


def test_the_status_document_is_built_once_per_change_not_once_per_wake(monkeypatch):
    """The loop wakes for every datastore batch; a change (every neighbour poll makes one)
    is snapshotted once, and nothing is rebuilt again until the next change or refresh."""
    d, _, clock = daemon()
    built: list[float] = []
    real = d.book.snapshot
    monkeypatch.setattr(d.book, "snapshot", lambda node, now: built.append(now) or real(node, now))
    d._status_dirty = True
    for _ in range(50):  # wakes within STATUS_MIN_GAP
        d._refresh_status(clock.now)
        clock.now += STATUS_MIN_GAP / 100
    assert len(built) == 1
    assert d.status()["node"] == "n1"
    clock.now += STATUS_MIN_GAP
    d._refresh_status(clock.now)  # the etcd copy's turn: from the same document
    assert len(built) == 1 and not d._status_unstored
    clock.now += STATUS_REFRESH
    d._refresh_status(clock.now)
    assert len(built) == 2
