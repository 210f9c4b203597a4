"""datastore.ipam_documents: the IPAM document parsers, their one error, the ownership rule,
and the readers above it (ipam.block, agent.calc.state, bgp.view) agreeing on them."""

from __future__ import annotations

import json

import pytest

from agent.calc.state import ClusterState
from bgp.view import BGPView
from datastore.errors import DatastoreError, IPAMDocumentError
from datastore.ipam_documents import (
    CONFIRMED,
    PENDING,
    PENDING_DELETION,
    AllocationBlock,
    BlockAffinity,
    IPAMHandle,
    affinity_host,
    block_owner,
)
from datastore.keys import affinity_key, block_key, handle_key
from datastore.syncer import Update
from ipam.block import Block

CIDR = "10.65.0.0/26"
BLOCK_KEY = block_key(CIDR)
AFFINITY_KEY = affinity_key("n1", CIDR)
HANDLE_KEY = handle_key("h1")


def raw(doc: object) -> bytes:
    return json.dumps(doc).encode()


def block_doc(**fields: object) -> dict[str, object]:
    return {"cidr": CIDR, "affinity": "host:n1", "allocations": [None] * 64,
            "unallocated": list(range(64)), "attributes": [], "deleted": False, **fields}


# -- parsing ---------------------------------------------------------------------------------


def test_block_parses_calicos_document():
    block = AllocationBlock.from_json(raw(block_doc(sequenceNumber=3, hostAffinity="x")),
                                      BLOCK_KEY)
    assert (block.key, block.cidr, str(block.network)) == (BLOCK_KEY, CIDR, CIDR)
    assert block.affinity == "host:n1" and block.host == "n1" and not block.deleted
    assert len(block.allocations) == 64 and block.unallocated[:2] == [0, 1]
    assert block.document["hostAffinity"] == "x"  # unknown fields are kept
    assert AllocationBlock.from_json(raw(block_doc(affinity=None, deleted=None))).host is None


def test_affinity_and_handle_parse_calicos_documents():
    assert BlockAffinity.from_json(b'{"state":"pending","deleted":false}') == \
        BlockAffinity(PENDING)
    assert BlockAffinity.from_json(b"{}", AFFINITY_KEY).state == CONFIRMED  # pre-state
    assert BlockAffinity.from_json(b'{"state":"confirmed","deleted":true}').deleted
    handle = IPAMHandle.from_json(b'{"block":{"10.65.0.0/26":2},"deleted":false}', HANDLE_KEY)
    assert handle == IPAMHandle({CIDR: 2})
    assert IPAMHandle.from_json(handle.to_json()) == handle


BAD_DOCUMENTS = [
    # (parser, key, raw, field, value, words in the reason)
    (AllocationBlock, BLOCK_KEY, b"not json", "", b"not json", "not JSON"),
    (AllocationBlock, BLOCK_KEY, b"[1]", "", [1], "not a JSON object"),
    (AllocationBlock, BLOCK_KEY, raw({"affinity": "host:n1"}), "cidr", None, "cidr is missing"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(cidr=5)), "cidr", 5, "must be a string"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(cidr="10.65.0.1/26")), "cidr", "10.65.0.1/26",
     "is not a network"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(cidr="10.99.0.0/26")), "cidr", "10.99.0.0/26",
     f"its key says {CIDR}"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(affinity=7)), "affinity", 7,
     "affinity must be a string"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(allocations="x")), "allocations", "x",
     "must be a list"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(unallocated={})), "unallocated", {},
     "must be a list"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(attributes=3)), "attributes", 3,
     "must be a list"),
    (AllocationBlock, BLOCK_KEY, raw(block_doc(deleted="yes")), "deleted", "yes",
     "must be true or false"),
    (BlockAffinity, AFFINITY_KEY, b'"confirmed"', "", "confirmed", "not a JSON object"),
    (BlockAffinity, AFFINITY_KEY, raw({"state": "sideways"}), "state", "sideways",
     "unknown affinity state 'sideways'"),
    (BlockAffinity, AFFINITY_KEY, raw({"state": "confirmed", "deleted": 1}), "deleted", 1,
     "must be true or false"),
    (IPAMHandle, HANDLE_KEY, raw({"block": [CIDR]}), "block", [CIDR], "object of counts"),
    (IPAMHandle, HANDLE_KEY, raw({"block": {CIDR: "x"}}), "block", {CIDR: "x"},
     "must be integers"),
]


@pytest.mark.parametrize(("model", "key", "data", "field", "value", "words"), BAD_DOCUMENTS)
def test_each_parse_error_names_the_key_the_field_and_the_value(
        model: type, key: str, data: bytes, field: str, value: object, words: str):
    with pytest.raises(IPAMDocumentError) as caught:
        model.from_json(data, key)
    exc = caught.value
    assert (exc.key, exc.field, exc.value) == (key, field, value)
    assert words in exc.reason and str(exc) == f"{key}: {exc.reason}"
    assert field in exc.reason
    if value is not None:
        shown = value.decode() if isinstance(value, bytes) else str(value)
        assert shown in exc.reason
    # One error type, in both trees its readers catch.
    assert isinstance(exc, DatastoreError) and isinstance(exc, ValueError)


def test_without_a_key_the_error_is_its_reason():
    with pytest.raises(IPAMDocumentError) as caught:
        AllocationBlock.from_json(b"[]")
    assert caught.value.key == "" and str(caught.value) == caught.value.reason


def test_a_block_key_written_other_than_canonically_still_matches():
    key = "/calico/ipam/v2/assignment/ipv6/block/fd00:0:0::-122"
    assert AllocationBlock.from_json(raw(block_doc(cidr="fd00::/122")), key).cidr == "fd00::/122"


# -- ownership -------------------------------------------------------------------------------


@pytest.mark.parametrize(("affinity", "host"), [
    ("host:n1", "n1"), ("host:", None), ("virtual:lb", None), (None, None), ("n1", None),
])
def test_the_node_a_blocks_affinity_names(affinity: str | None, host: str | None):
    assert affinity_host(affinity) == host


@pytest.mark.parametrize(("block_host", "state", "owner"), [
    ("n1", CONFIRMED, "n1"),
    ("n1", PENDING, None),  # a claim in flight (or interrupted) owns nothing
    ("n1", PENDING_DELETION, None),  # a release in flight owns nothing
    ("n1", None, None),  # no affinity key (or a deleted or unreadable one)
    (None, CONFIRMED, None),  # the block names no node
])
def test_block_owner(block_host: str | None, state: str | None, owner: str | None):
    assert block_owner(block_host, state) == owner


def test_only_a_confirmed_undeleted_affinity_owns_its_block():
    assert BlockAffinity(CONFIRMED).owns_block
    assert not BlockAffinity(CONFIRMED, deleted=True).owns_block
    assert not BlockAffinity(PENDING).owns_block
    assert not BlockAffinity(PENDING_DELETION).owns_block


# -- the readers agree -----------------------------------------------------------------------

REV = iter(range(1, 10**6))


def put(key: str, data: bytes) -> Update:
    return Update("put", key, data, next(REV))


def owners(updates: list[Update]) -> tuple[str | None, str | None]:
    """(the calculation's owner of CIDR, whether n1's BGP view originates it as n1's)."""
    state = ClusterState()
    state.apply(updates)
    info = state.blocks.get(CIDR)
    view = BGPView("n1")
    view.apply(updates)
    return (state.owner_of(info) if info else None,
            "n1" if CIDR in view.local_blocks() else None)


@pytest.mark.parametrize(("block", "affinity", "owner"), [
    (block_doc(), {"state": "confirmed"}, "n1"),
    (block_doc(), {}, "n1"),  # an affinity written before states existed
    (block_doc(), {"state": "pending"}, None),
    (block_doc(), {"state": "pendingDeletion"}, None),
    (block_doc(), {"state": "confirmed", "deleted": True}, None),
    (block_doc(affinity="host:n2"), {"state": "confirmed"}, None),
    (block_doc(affinity="virtual:lb"), {"state": "confirmed"}, None),
    (block_doc(affinity="host:"), {"state": "confirmed"}, None),
    # Settled: a deleted block owns nothing (the BGP view used to originate it).
    (block_doc(deleted=True), {"state": "confirmed"}, None),
    # Settled: an unreadable document counts as absent in both (the BGP view used to
    # keep a block that was not an object as hostless, and an unknown state as a state).
    (block_doc(), {"state": "sideways"}, None),
])
def test_the_calculation_and_the_bgp_view_agree_on_the_owner(
        block: dict, affinity: dict, owner: str | None):
    assert owners([put(BLOCK_KEY, raw(block)), put(AFFINITY_KEY, raw(affinity))]) == \
        (owner, owner)


def test_an_unreadable_update_replaces_a_good_document_in_every_reader():
    good = [put(BLOCK_KEY, raw(block_doc())), put(AFFINITY_KEY, raw({"state": "confirmed"}))]
    assert owners(good) == ("n1", "n1")
    # Settled: the BGP view used to keep originating the block after `nope`, and took
    # `[]` and the unknown state without a word.
    for bad in (put(BLOCK_KEY, b"nope"), put(BLOCK_KEY, b"[]"),
                put(AFFINITY_KEY, raw({"state": "sideways"}))):
        state, view = ClusterState(), BGPView("n1")
        state.apply(good)
        view.apply(good)
        assert view.apply([bad])  # the view changed: the block is no longer originated
        state.apply([bad])
        assert owners([*good, bad]) == (None, None)
        reason = view.problems[bad.key]
        assert state.problems == [f"{bad.key}: ignored: {reason}"]
        assert bad.key not in reason  # filed under the key, not repeated in the text


def test_ipam_blocks_are_read_by_the_same_parser():
    with pytest.raises(IPAMDocumentError, match="affinity must be a string"):
        Block.from_json(raw(block_doc(affinity=7)))
    with pytest.raises(IPAMDocumentError, match="its key says"):
        Block.from_json(raw(block_doc(cidr="10.65.0.64/26")), BLOCK_KEY)
    with pytest.raises(IPAMDocumentError) as caught:
        Block.from_json(raw(block_doc(unallocated=["x"])), BLOCK_KEY)
    assert (caught.value.key, caught.value.field) == (BLOCK_KEY, "unallocated")
    assert Block.from_json(raw(block_doc(affinity="host:"))).host is None
    assert Block.from_json(raw(block_doc())).host == "n1"
