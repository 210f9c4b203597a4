"""bgp.daemon's hand-out of best paths: the delta of one pass, and the publications the
daemon makes as speaker events reach its RIB.

No ExaBGP and no datastore: the daemon is given a plan and a RIB, and its loop is stood in
for by `step` (the events, the sweep, the routes pass, as `_loop` runs them). ExaBGP never
runs, so only the publications happen, not the export.
"""

from __future__ import annotations

from pathlib import Path as FsPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.daemon import BGPDaemon, best_path_delta
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
