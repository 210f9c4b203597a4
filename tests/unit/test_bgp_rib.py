"""The RIB: best-path order step by step, import filter, graceful restart, bookkeeping.

The properties: the best path depends on the set of paths, not on the order they arrived
in; and after any sequence of updates, session events and sweeps, the RIB holds what a
plain model of the rules holds, with the changed-prefix sets telling exactly what moved.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bgp.rib import Path, Rib, best_of
from bgp.types import PathAttributes

ME, CLUSTER, AS = "10.0.0.1", "10.0.0.100", 64512
P = "10.65.0.0/26"


def attrs(next_hop: str = "10.0.0.2", **kw) -> PathAttributes:
    return PathAttributes(next_hop=next_hop, **kw)


def rib(cluster_id: str | None = None) -> Rib:
    return Rib(ME, cluster_id, AS)


def up(r: Rib, peer: str, *, router_id: str | None = None, peer_as: int = AS,
       local_as: int = AS, restart_time: int | None = 120) -> set[str]:
    return r.peer_up(peer, router_id=router_id or peer, peer_as=peer_as, local_as=local_as,
                     restart_time=restart_time)


# -- best path, one step at a time ------------------------------------------------------

# (peer, router id, peer AS, attributes); the expected winner is the first peer.
BEST_PATH_CASES = {
    "local pref beats a shorter AS path": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(local_pref=200, as_path=(1, 2, 3))),
        ("10.0.0.2", "10.0.0.2", AS, attrs(local_pref=100))],
    "missing local pref is 100, so the router id decides": [
        ("10.0.0.2", "10.0.0.2", AS, attrs(local_pref=None)),
        ("10.0.0.3", "10.0.0.3", AS, attrs(local_pref=100))],
    "local pref from an eBGP peer is ignored": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(local_pref=150, as_path=(65001,))),
        ("10.0.0.2", "10.0.0.2", 65001, attrs(local_pref=500, as_path=(65001,)))],
    "shorter AS path": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(as_path=(65001,))),
        ("10.0.0.2", "10.0.0.2", AS, attrs(as_path=(65001, 65002)))],
    "igp before egp": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(origin="igp")),
        ("10.0.0.2", "10.0.0.2", AS, attrs(origin="egp"))],
    "egp before incomplete": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(origin="egp")),
        ("10.0.0.2", "10.0.0.2", AS, attrs(origin="incomplete"))],
    "lower MED from the same neighbour AS": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(as_path=(65001,), med=5)),
        ("10.0.0.2", "10.0.0.2", AS, attrs(as_path=(65001,), med=10))],
    "missing MED is 0": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(as_path=(65001,))),
        ("10.0.0.2", "10.0.0.2", AS, attrs(as_path=(65001,), med=1))],
    "MED is not compared across neighbour ASes": [
        ("10.0.0.2", "10.0.0.2", AS, attrs(as_path=(65001,), med=50)),
        ("10.0.0.9", "10.0.0.9", AS, attrs(as_path=(65002,), med=1))],
    "eBGP over iBGP": [
        ("10.0.0.9", "10.0.0.9", 65001, attrs(as_path=(65001,))),
        ("10.0.0.2", "10.0.0.2", AS, attrs(as_path=(65001,)))],
    "lower router id": [
        ("10.0.0.9", "10.0.0.3", AS, attrs()),
        ("10.0.0.2", "10.0.0.4", AS, attrs())],
    "the originator id stands in for the router id": [
        ("10.0.0.2", "10.0.0.2", AS, attrs(originator_id="10.0.0.50", cluster_list=("1.1.1.1",))),
        ("10.0.0.9", "10.0.0.9", AS, attrs(originator_id="10.0.0.60", cluster_list=("1.1.1.1",)))],
    "router ids compare as integers": [
        ("10.0.0.2", "9.0.0.1", AS, attrs()),
        ("10.0.0.9", "10.0.0.1", AS, attrs())],
    "shorter cluster list": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(originator_id="10.0.0.5", cluster_list=("1.1.1.1",))),
        ("10.0.0.2", "10.0.0.2", AS,
         attrs(originator_id="10.0.0.5", cluster_list=("2.2.2.2", "1.1.1.1")))],
    "lower peer address, as an integer": [
        ("10.0.0.9", "10.0.0.9", AS, attrs(originator_id="10.0.0.5")),
        ("10.0.0.10", "10.0.0.10", AS, attrs(originator_id="10.0.0.5"))],
}


@pytest.mark.parametrize("paths", BEST_PATH_CASES.values(), ids=BEST_PATH_CASES.keys())
def test_best_path_steps(paths):
    for order in (paths, paths[::-1]):
        r = rib()
        for peer, router_id, peer_as, a in order:
            up(r, peer, router_id=router_id, peer_as=peer_as)
            r.update(peer, {P: a})
        assert r.best(P).peer == paths[0][0]
        assert r.paths(P)[0] == r.best(P)


def test_fresh_path_beats_an_equal_stale_one():
    r = rib()
    up(r, "10.0.0.2")
    up(r, "10.0.0.3")
    r.update("10.0.0.2", {P: attrs()})
    r.update("10.0.0.3", {P: attrs()})
    assert r.best(P).peer == "10.0.0.2"
    assert r.peer_down("10.0.0.2", 0.0, graceful=True) == {P}
    assert r.best(P).peer == "10.0.0.3"
    # Local pref still comes first: a better stale path stays best.
    r.update("10.0.0.3", {P: attrs(local_pref=50)})
    assert r.best(P) == Path(P, attrs(), "10.0.0.2", "10.0.0.2", False, stale=True)


def test_med_elimination_is_order_independent():
    """The classic non-transitive trio: A beats B on MED, B beats C and C beats A later on."""
    a = Path(P, attrs(as_path=(1,), med=10), "10.0.0.3", "10.0.0.3", False)
    b = Path(P, attrs(as_path=(1,), med=5), "10.0.0.4", "10.0.0.4", False)
    c = Path(P, attrs(as_path=(2,), med=0), "10.0.0.2", "10.0.0.2", False)
    assert {best_of(order).peer for order in ([a, b, c], [c, b, a], [b, a, c], [a, c, b])} == {
        "10.0.0.2"}


PEERS = ["10.0.0.2", "10.0.0.3", "10.0.0.10", "10.0.1.2", "192.168.0.1"]

path_attrs = st.builds(
    PathAttributes,
    next_hop=st.sampled_from(["10.0.0.2", "10.0.0.3"]),
    origin=st.sampled_from(["igp", "egp", "incomplete"]),
    as_path=st.lists(st.sampled_from([65001, 65002, 65003]), max_size=2).map(tuple),
    med=st.one_of(st.none(), st.integers(0, 3)),
    local_pref=st.one_of(st.none(), st.sampled_from([90, 100, 110])),
    originator_id=st.one_of(st.none(), st.sampled_from(["10.0.0.7", "10.0.0.8"])),
    cluster_list=st.lists(st.sampled_from(["1.1.1.1", "2.2.2.2"]), max_size=2).map(tuple),
)
# (peer, router id, eBGP, attributes), peers distinct
candidate_sets = st.lists(
    st.tuples(st.sampled_from(PEERS), st.sampled_from(["10.0.0.7", "10.0.0.9", "9.9.9.9"]),
              st.booleans(), path_attrs),
    min_size=1, max_size=5, unique_by=lambda c: c[0])


@given(candidate_sets, st.randoms(use_true_random=False))
@settings(max_examples=300)
def test_best_path_ignores_arrival_order(candidates, random):
    def load(order):
        r = rib()
        for peer, router_id, ebgp, a in order:
            up(r, peer, router_id=router_id, peer_as=65009 if ebgp else AS)
            # A decoy first, replaced by the real path: history must not matter either.
            r.update(peer, {P: attrs(local_pref=1000)})
            r.update(peer, {P: a})
        return r.best(P)

    shuffled = list(candidates)
    random.shuffle(shuffled)
    first = load(candidates)
    assert first == load(shuffled)
    assert first == best_of(Path(P, a, peer, rid, ebgp) for peer, rid, ebgp, a in shuffled)
    # Nothing beats the winner on the first step.
    top = max(100 if e or a.local_pref is None else a.local_pref for _, _, e, a in candidates)
    assert (100 if first.ebgp or first.attrs.local_pref is None else first.attrs.local_pref) == top


# -- import filter ----------------------------------------------------------------------

@pytest.mark.parametrize("peer_as, local_as, a, kept", [
    (AS, AS, attrs(originator_id=ME), False),
    (AS, AS, attrs(originator_id="10.0.0.7"), True),
    (AS, AS, attrs(originator_id="10.0.0.7", cluster_list=("9.9.9.9", CLUSTER)), False),
    (AS, AS, attrs(originator_id="10.0.0.7", cluster_list=("9.9.9.9",)), True),
    (65001, AS, attrs(as_path=(65001, AS)), False),
    (65001, 65000, attrs(as_path=(65001, 65000)), False),  # the session's localASNumber
    (65001, AS, attrs(as_path=(65001, 65002)), True),
    (AS, AS, attrs(as_path=(AS,)), True),  # iBGP: no AS_PATH loop check
])
def test_import_filter(peer_as, local_as, a, kept):
    r = rib(CLUSTER)
    up(r, "10.0.0.2", peer_as=peer_as, local_as=local_as)
    assert r.update("10.0.0.2", {P: a}) == ({P} if kept else set())
    assert r.received_count("10.0.0.2") == int(kept)


def test_a_looped_path_withdraws_the_peers_earlier_one():
    r = rib(CLUSTER)
    up(r, "10.0.0.2")
    r.update("10.0.0.2", {P: attrs()})
    assert r.update("10.0.0.2", {P: attrs(cluster_list=(CLUSTER,))}) == {P}
    assert r.best(P) is None and r.received_count("10.0.0.2") == 0


def test_identity_change_applies_to_later_updates():
    r = rib()
    up(r, "10.0.0.2")
    r.update("10.0.0.2", {P: attrs(cluster_list=(CLUSTER,))})
    r.set_identity(ME, CLUSTER, AS)
    assert r.best(P) is not None  # held paths are not re-filtered
    r.update("10.0.0.2", {"10.65.1.0/26": attrs(cluster_list=(CLUSTER,))})
    assert r.best("10.65.1.0/26") is None


# -- updates ----------------------------------------------------------------------------

def test_update_reports_best_path_changes_only():
    r = rib()
    up(r, "10.0.0.2")
    up(r, "10.0.0.3")
    assert r.update("10.0.0.2", {P: attrs()}) == {P}
    assert r.update("10.0.0.2", {P: attrs()}) == set()  # the same again
    assert r.update("10.0.0.3", {P: attrs("10.0.0.3")}) == set()  # not better
    assert r.update("10.0.0.2", {P: attrs("10.0.0.4")}) == {P}  # new next hop
    assert r.update("10.0.0.2", {}, [P]) == {P}  # falls back to 10.0.0.3
    assert r.best(P).peer == "10.0.0.3"
    assert r.update("10.0.0.2", {}, [P, "10.9.0.0/24"]) == set()  # nothing held
    # Withdrawn and announced in one UPDATE: the announcement stands.
    assert r.update("10.0.0.2", {P: attrs()}, [P]) == {P}
    assert r.best(P).peer == "10.0.0.2"
    assert r.update("10.0.0.2", {P: attrs()}, [P]) == set()


def test_update_outside_a_session_is_ignored():
    r = rib()
    assert r.update("10.0.0.2", {P: attrs()}) == set()
    up(r, "10.0.0.2")
    r.peer_down("10.0.0.2", 0.0, graceful=False)
    assert r.update("10.0.0.2", {P: attrs()}) == set()
    assert r.best_paths() == {}


def test_duplicate_peer_up_keeps_the_paths():
    r = rib()
    up(r, "10.0.0.2")
    r.update("10.0.0.2", {P: attrs()})
    assert up(r, "10.0.0.2") == set()
    assert r.received_count("10.0.0.2") == 1


def test_a_new_identity_on_a_live_session_replaces_its_paths():
    r = rib()
    up(r, "10.0.0.2")
    r.update("10.0.0.2", {P: attrs()})
    assert up(r, "10.0.0.2", router_id="10.0.0.77") == {P}
    assert r.received_count("10.0.0.2") == 0
    assert r.router_ids() == {"10.0.0.2": "10.0.0.77"}


def test_ten_thousand_prefixes():
    prefixes = [f"10.{64 + i // 256}.{i % 256}.0/26" for i in range(10_000)]
    r = rib()
    up(r, "10.0.0.2")
    up(r, "10.0.0.3")
    assert len(r.update("10.0.0.2", {p: attrs() for p in prefixes})) == 10_000
    assert r.update("10.0.0.3", {p: attrs("10.0.0.3") for p in prefixes}) == set()
    assert len(r.update("10.0.0.2", {}, prefixes[:5000])) == 5000
    assert len(r.peer_down("10.0.0.3", 0.0, graceful=True)) == 5000  # where it is best
    assert r.received_count("10.0.0.3") == r.stale_count("10.0.0.3") == 10_000
    up(r, "10.0.0.3")
    assert r.update("10.0.0.3", {prefixes[0]: attrs("10.0.0.3")}) == {prefixes[0]}
    assert len(r.end_of_rib("10.0.0.3")) == 4999  # the other half has 10.0.0.2's path
    assert len(r.best_paths()) == 5001


# -- graceful restart -------------------------------------------------------------------

def loaded(restart_time: int | None = 120) -> Rib:
    r = rib()
    up(r, "10.0.0.2", restart_time=restart_time)
    r.update("10.0.0.2", {P: attrs(), "10.65.1.0/26": attrs()})
    return r


def test_graceful_down_keeps_stale_paths_until_the_deadline():
    r = loaded()
    assert r.peer_down("10.0.0.2", 1000.0, graceful=True) == {P, "10.65.1.0/26"}
    assert r.best(P).stale and r.stale_count("10.0.0.2") == 2
    assert r.next_deadline() == 1120.0
    assert r.sweep(1119.9) == set()
    assert r.sweep(1120.0) == {P, "10.65.1.0/26"}
    assert r.best_paths() == {} and r.next_deadline() is None
    assert r.peers() == [] and r.router_ids() == {}  # a down peer holding nothing is forgotten


def test_reconnect_reannounce_and_end_of_rib():
    r = loaded()
    r.peer_down("10.0.0.2", 0.0, graceful=True)
    assert up(r, "10.0.0.2") == set()  # stale paths stay until re-announced
    assert r.update("10.0.0.2", {P: attrs()}) == {P}  # no longer stale
    assert not r.best(P).stale and r.stale_count("10.0.0.2") == 1
    assert r.end_of_rib("10.0.0.2") == {"10.65.1.0/26"}  # not re-announced
    assert r.next_deadline() is None and r.sweep(1e9) == set()
    assert r.end_of_rib("10.0.0.2") == set()
    assert r.received_count("10.0.0.2") == 1


def test_stale_paths_reannounced_clear_the_deadline():
    r = loaded()
    r.peer_down("10.0.0.2", 0.0, graceful=True)
    up(r, "10.0.0.2")
    r.update("10.0.0.2", {P: attrs()}, ["10.65.1.0/26"])
    assert r.next_deadline() is None
    # So the next outage starts a fresh clock.
    r.peer_down("10.0.0.2", 500.0, graceful=True)
    assert r.next_deadline() == 620.0


def test_a_second_outage_does_not_extend_the_deadline():
    r = loaded()
    r.peer_down("10.0.0.2", 0.0, graceful=True)
    up(r, "10.0.0.2")
    r.update("10.0.0.2", {"10.65.2.0/26": attrs()})
    r.peer_down("10.0.0.2", 50.0, graceful=True)  # before its end-of-RIB
    assert r.stale_count("10.0.0.2") == 3 and r.next_deadline() == 120.0
    assert r.sweep(120.0) == {P, "10.65.1.0/26", "10.65.2.0/26"}


@pytest.mark.parametrize("restart_time, graceful", [(None, True), (0, True), (120, False)])
def test_down_without_graceful_restart_drops_everything(restart_time, graceful):
    r = loaded(restart_time)
    assert r.peer_down("10.0.0.2", 0.0, graceful=graceful) == {P, "10.65.1.0/26"}
    assert r.best_paths() == {} and r.next_deadline() is None


@pytest.mark.parametrize("reconnect", [
    {"restart_time": None},  # the new OPEN has no GR capability (RFC 4724 4.2)
    {"router_id": "10.0.0.77"},  # another speaker at that address
    {"peer_as": 65001},
])
def test_reconnect_that_cannot_keep_stale_paths(reconnect):
    r = loaded()
    r.peer_down("10.0.0.2", 0.0, graceful=True)
    assert up(r, "10.0.0.2", **reconnect) == {P, "10.65.1.0/26"}
    assert r.received_count("10.0.0.2") == 0 and r.next_deadline() is None
    assert r.update("10.0.0.2", {P: attrs()}) == {P}


def test_deadlines_are_per_peer():
    r = loaded(120)
    up(r, "10.0.0.3", restart_time=30)
    r.update("10.0.0.3", {"10.66.0.0/26": attrs("10.0.0.3")})
    r.peer_down("10.0.0.2", 0.0, graceful=True)
    r.peer_down("10.0.0.3", 10.0, graceful=True)
    assert r.next_deadline() == 40.0
    assert r.sweep(40.0) == {"10.66.0.0/26"}
    assert r.next_deadline() == 120.0


# -- random sequences against a plain model --------------------------------------------

MODEL_PEERS = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
MODEL_PREFIXES = ["10.65.0.0/26", "10.65.0.64/26", "10.65.1.0/26"]

ops = st.one_of(
    # The last item: the UPDATE also lists the prefix as withdrawn.
    st.tuples(st.just("announce"), st.sampled_from(MODEL_PEERS), st.sampled_from(MODEL_PREFIXES),
              path_attrs, st.booleans()),
    st.tuples(st.just("withdraw"), st.sampled_from(MODEL_PEERS), st.sampled_from(MODEL_PREFIXES)),
    st.tuples(st.just("down"), st.sampled_from(MODEL_PEERS), st.booleans()),
    st.tuples(st.just("up"), st.sampled_from(MODEL_PEERS), st.sampled_from([None, 20, 60])),
    st.tuples(st.just("eor"), st.sampled_from(MODEL_PEERS)),
    st.tuples(st.just("wait"), st.integers(0, 40)),
)


class Model:
    """The rules of the module docstring, written the plain way."""

    def __init__(self):
        self.up: dict[str, int | None] = {}  # live peer -> restart time
        self.rt: dict[str, int | None] = {}  # last restart time of every known peer
        self.paths: dict[str, dict[str, tuple[PathAttributes, bool]]] = {}
        self.deadline: dict[str, float] = {}

    def drop(self, peer, stale_only):
        held = self.paths.get(peer, {})
        for prefix in [p for p, (_, stale) in held.items() if stale or not stale_only]:
            del held[prefix]
        self.deadline.pop(peer, None)

    def settle(self, peer):
        if not any(stale for _, stale in self.paths.get(peer, {}).values()):
            self.deadline.pop(peer, None)

    def apply(self, op, now):
        kind, peer = op[0], op[1] if len(op) > 1 else None
        if kind == "announce" and peer in self.up:
            self.paths.setdefault(peer, {})[op[2]] = (op[3], False)
            self.settle(peer)
        elif kind == "withdraw" and peer in self.up:
            self.paths.get(peer, {}).pop(op[2], None)
            self.settle(peer)
        elif kind == "down" and peer in self.rt:
            self.up.pop(peer, None)
            held = self.paths.get(peer, {})
            if op[2] and self.rt[peer] and held:
                old = self.deadline.get(peer)
                self.deadline[peer] = min(old, now + self.rt[peer]) if old else now + self.rt[peer]
                self.paths[peer] = {p: (a, True) for p, (a, _) in held.items()}
            else:
                self.drop(peer, False)
        elif kind == "up" and peer not in self.up:
            if not op[2]:
                self.drop(peer, True)
            self.up[peer] = self.rt[peer] = op[2]
        elif kind == "up":
            self.up[peer] = self.rt[peer] = op[2]
        elif kind == "eor":
            self.drop(peer, True)
        elif kind == "wait":
            for p, deadline in list(self.deadline.items()):
                if deadline <= now:
                    self.drop(p, True)

    def best(self):
        by_prefix: dict[str, list[Path]] = {}
        for peer, held in self.paths.items():
            for prefix, (a, stale) in held.items():
                by_prefix.setdefault(prefix, []).append(Path(prefix, a, peer, peer, False, stale))
        return {prefix: best_of(paths) for prefix, paths in by_prefix.items()}


@given(st.lists(ops, max_size=40))
@settings(max_examples=300)
def test_random_sequences_match_the_model(sequence):
    r, model, now = rib(), Model(), 0.0
    for op in sequence:
        before = dict(r.best_paths())
        if op[0] == "wait":
            now += op[1]
            changed = r.sweep(now)
        elif op[0] == "announce":
            changed = r.update(op[1], {op[2]: op[3]}, [op[2]] if op[4] else [])
        elif op[0] == "withdraw":
            changed = r.update(op[1], {}, [op[2]])
        elif op[0] == "down":
            changed = r.peer_down(op[1], now, graceful=op[2])
        elif op[0] == "up":
            changed = up(r, op[1], restart_time=op[2])
        else:
            changed = r.end_of_rib(op[1])
        model.apply(op, now)
        after = dict(r.best_paths())
        assert after == model.best()
        assert changed == {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
        assert r.next_deadline() == min(model.deadline.values(), default=None)
        for peer in MODEL_PEERS:
            held = model.paths.get(peer, {})
            assert r.received_count(peer) == len(held)
            assert r.stale_count(peer) == sum(stale for _, stale in held.values())
