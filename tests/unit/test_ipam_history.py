"""F7's history checker (tests/faults/ipam_history.py) on hand-made histories and states."""

from __future__ import annotations

import json
from typing import Any

from tests.faults.ipam_history import (
    ALLOCATE,
    RELEASE,
    Affinity,
    FinalState,
    Op,
    check,
    state_from_kvs,
)

CIDR = "10.0.0.0/30"  # four addresses keep the documents readable


def block(holders: dict[int, str], affinity: str = "host:n1") -> dict[str, Any]:
    """A block document where ordinal -> handle for each allocated address."""
    attributes = [{"handle_id": h, "secondary": {}} for h in holders.values()]
    allocations: list[int | None] = [None] * 4
    for i, ordinal in enumerate(holders):
        allocations[ordinal] = i
    return {"cidr": CIDR, "affinity": affinity, "allocations": allocations,
            "unallocated": [o for o in range(4) if o not in holders], "attributes": attributes}


def alloc(handle: str, ip: str | None, start: float = 0.0, end: float = 1.0, *,
          error: str = "", ambiguous: bool = False) -> Op:
    return Op(ALLOCATE, handle, "n1", start, end, ip is not None, (ip,) if ip else (),
              error, ambiguous)


def release(handle: str, ips: tuple[str, ...], start: float, end: float, ok: bool = True) -> Op:
    return Op(RELEASE, handle, "n1", start, end, ok, ips if ok else (), "" if ok else "boom")


AFFINITY = (Affinity("n1", CIDR, "confirmed"),)


def test_a_consistent_history_passes_and_counts() -> None:
    ops = [alloc("h1", "10.0.0.0"), alloc("h2", "10.0.0.1"),
           release("h2", ("10.0.0.1",), 2, 3), alloc("h3", "10.0.0.1", 4, 5),
           alloc("h4", None, error="no addresses")]
    state = FinalState({CIDR: block({0: "h1", 1: "h3"})},
                       {"h1": {CIDR: 1}, "h3": {CIDR: 1}}, AFFINITY)
    verdict = check(ops, state)
    assert verdict.violations == []
    assert (verdict.allocated, verdict.released, verdict.failed) == (3, 1, 1)


def test_an_ip_given_to_two_handles_without_a_release_is_a_violation() -> None:
    # h1 got 10.0.0.0 and was never released; h2 got it too (the blocks lost h1's write).
    ops = [alloc("h1", "10.0.0.0", 0, 1), alloc("h2", "10.0.0.0", 2, 3)]
    state = FinalState({CIDR: block({0: "h2"})}, {"h2": {CIDR: 1}}, AFFINITY)
    violations = check(ops, state).violations
    assert "10.0.0.0 given to h1 and to h2, with no release between" in violations
    assert "h1: allocation succeeded with ['10.0.0.0'], etcd holds nothing" in violations


def test_a_release_concurrent_with_the_next_allocation_may_precede_it() -> None:
    ops = [alloc("h1", "10.0.0.0", 0, 1), release("h1", ("10.0.0.0",), 2, 5),
           alloc("h2", "10.0.0.0", 3, 4)]
    state = FinalState({CIDR: block({0: "h2"})}, {"h2": {CIDR: 1}}, AFFINITY)
    assert check(ops, state).violations == []


def test_a_failed_allocation_present_in_etcd_is_a_violation_unless_ambiguous() -> None:
    state = FinalState({CIDR: block({0: "h1"})}, {"h1": {CIDR: 1}}, AFFINITY)
    definite = check([alloc("h1", None, error="etcd refused")], state)
    assert definite.violations == [
        "h1: allocation reported failed (etcd refused) but etcd holds ['10.0.0.0']"]
    unknown = check([alloc("h1", None, error="outcome is unknown", ambiguous=True)], state)
    assert unknown.violations == [] and unknown.ambiguous_present == ["h1"]
    empty = FinalState({CIDR: block({})}, {}, AFFINITY)
    gone = check([alloc("h1", None, error="outcome is unknown", ambiguous=True)], empty)
    assert gone.violations == [] and gone.ambiguous_absent == ["h1"]


def test_a_released_handle_still_held_is_a_violation() -> None:
    ops = [alloc("h1", "10.0.0.0"), release("h1", ("10.0.0.0",), 2, 3)]
    state = FinalState({CIDR: block({0: "h1"})}, {"h1": {CIDR: 1}}, AFFINITY)
    assert check(ops, state).violations == ["h1: released, but etcd still holds ['10.0.0.0']"]


def test_a_failed_definite_release_must_leave_the_handle() -> None:
    ops = [alloc("h1", "10.0.0.0"), release("h1", (), 2, 3, ok=False)]
    state = FinalState({CIDR: block({})}, {}, AFFINITY)
    assert check(ops, state).violations == [
        "h1: allocation succeeded with ['10.0.0.0'], etcd holds nothing"]


def test_block_and_handle_documents_must_agree() -> None:
    doc = block({0: "h1"})
    doc["unallocated"] = [0, 1, 2]  # ordinal 0 both allocated and free, 3 in neither
    state = FinalState({CIDR: doc}, {"h1": {CIDR: 2}}, AFFINITY)
    violations = check([alloc("h1", "10.0.0.0")], state).violations
    assert f"block {CIDR}: ordinals both allocated and free, or free twice: [0]" in violations
    assert f"block {CIDR}: ordinals neither allocated nor free: [3]" in violations
    assert f"handle h1: its document counts {{'{CIDR}': 2}}, the blocks hold {{'{CIDR}': 1}}" \
        in violations


def test_a_block_with_two_affinities_and_an_unknown_handle_are_violations() -> None:
    state = FinalState({CIDR: block({0: "stranger"})}, {"stranger": {CIDR: 1}},
                       (Affinity("n1", CIDR, "confirmed"), Affinity("n2", CIDR, "pending")))
    violations = check([], state).violations
    assert f"block {CIDR} has affinities of 2 nodes: n1 (confirmed), n2 (pending)" in violations
    assert "handle stranger is in etcd but no client allocated it" in violations


def test_a_confirmed_affinity_must_match_its_block() -> None:
    state = FinalState({CIDR: block({}, affinity="host:n2")}, {}, AFFINITY)
    assert check([], state).violations == [
        f"block {CIDR}: n1's confirmed affinity, but the block names 'host:n2'"]


def test_ops_round_trip_through_json() -> None:
    op = alloc("h1", "10.0.0.0", 1.5, 2.5)
    doc = {"kind": op.kind, "handle": op.handle, "node": op.node, "start": op.start,
           "end": op.end, "ok": op.ok, "ips": list(op.ips), "error": "", "ambiguous": False}
    assert Op.from_json(doc) == op


def test_state_from_the_stored_keys() -> None:
    kvs = {"/calico/ipam/v2/assignment/ipv4/block/10.0.0.0-30": json.dumps(block({0: "h1"})),
           "/calico/ipam/v2/handle/h1": json.dumps({"block": {CIDR: 1}, "deleted": False}),
           "/calico/ipam/v2/host/n1/ipv4/block/10.0.0.0-30": '{"state":"confirmed"}',
           "/calico/ipam/v2/config": "{}"}
    state = state_from_kvs(kvs)
    assert state.handles == {"h1": {CIDR: 1}} and list(state.blocks) == [CIDR]
    assert list(state.affinities) == [Affinity("n1", CIDR, "confirmed")]
    assert check([alloc("h1", "10.0.0.0")], state).violations == []


def test_a_release_with_an_unknown_outcome_may_have_freed_the_ip() -> None:
    ambiguous = Op(RELEASE, "h1", "n1", 2, 3, False, (), "outcome is unknown", True)
    ops = [alloc("h1", "10.0.0.0", 0, 1), ambiguous, alloc("h2", "10.0.0.0", 4, 5)]
    state = FinalState({CIDR: block({0: "h2"})}, {"h2": {CIDR: 1}}, AFFINITY)
    assert check(ops, state).violations == []
