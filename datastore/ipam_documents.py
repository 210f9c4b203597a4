"""Calico's IPAM documents as stored in etcd, and which node owns a block. Pure.

The one reader of the IPAM prefix's values for every package above the
datastore (ipam/, agent/calc, bgp/view). libcalico-go's models
(`lib/backend/model`), at the keys datastore.keys builds:

    AllocationBlock  /calico/ipam/v2/assignment/ipv4/block/<cidr>
        {"cidr": "10.65.79.0/26", "affinity": "host:node1", "allocations": [0, null, ...],
         "unallocated": [1, ...], "attributes": [{"handle_id": ..., "secondary": {...}}],
         "deleted": false, ...}
    BlockAffinity    /calico/ipam/v2/host/<node>/ipv4/block/<cidr>
        {"state": "confirmed", "deleted": false}
    IPAMHandle       /calico/ipam/v2/handle/<id>
        {"block": {"10.65.79.0/26": 2}, "deleted": false}

Each model's `from_json(raw, key)` is the one parser of its document.

Invariants:
  * A document that cannot be read raises IPAMDocumentError naming the key,
    the field and its value; readers treat it as if its key were absent and
    report it (ClusterState.problems, BGPView.problems, `ipam check`,
    CorruptDocument).
  * Parsing checks shape (JSON object, field types, the block's CIDR, the
    affinity state) and never walks a block's allocations: whether
    allocations and attributes agree is ipam.block's `problems()`. A block's
    CIDR must be a network and, when the key is given, the one the key names.
  * An affinity without a state (written before states existed) is confirmed.
  * Ownership (`block_owner`): a block belongs to the node its `affinity`
    field names (`host:<node>`) when that node's affinity key for the block
    is confirmed and not deleted; otherwise to nobody. A `virtual:` affinity
    or a `host:` with no name names no node.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from .errors import IPAMDocumentError
from .keys import parse_block_key

# Block affinity states (libcalico-go model/block_affinity.go).
PENDING = "pending"
CONFIRMED = "confirmed"
PENDING_DELETION = "pendingDeletion"
AFFINITY_STATES = (PENDING, CONFIRMED, PENDING_DELETION)

_HOST = "host:"


def affinity_host(affinity: str | None) -> str | None:
    """The node a block's `affinity` field names ("host:<node>"), else None."""
    if affinity and affinity.startswith(_HOST) and len(affinity) > len(_HOST):
        return affinity[len(_HOST):]
    return None


def block_owner(block_host: str | None, affinity_state: str | None) -> str | None:
    """The node owning a block, or None: the node its document names (`block_host`,
    see affinity_host) when that node's affinity key for the block is confirmed.

    `affinity_state` is the state of block_host's affinity key for the block:
    None when the key is absent, deleted or unreadable."""
    return block_host if block_host is not None and affinity_state == CONFIRMED else None


# -- documents ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllocationBlock:
    """A block document, checked for shape; the lists are the stored ones, unconverted."""

    key: str  # where it was read from ("" when the reader did not say)
    cidr: str  # canonical
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    affinity: str | None  # "host:<node>", "virtual:<name>" or None, as stored
    deleted: bool
    allocations: list[Any]  # per ordinal: an index into attributes, or None
    unallocated: list[Any]  # free ordinals
    attributes: list[Any]  # {"handle_id": ..., "secondary": {...}} objects
    document: dict[str, Any]  # every field as stored, unknown ones included

    @property
    def host(self) -> str | None:
        """The node the block's `affinity` names (affinity_host)."""
        return affinity_host(self.affinity)

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "") -> Self:
        """Parse a stored block; IPAMDocumentError if it is not one."""
        doc = _object(raw, key, "block")
        cidr, network = _block_network(doc, key)
        affinity = doc.get("affinity")
        if affinity is not None and not isinstance(affinity, str):
            raise IPAMDocumentError(key, "affinity", affinity,
                                    f"affinity must be a string, got {affinity!r}")
        # Positional: a frozen dataclass takes keywords measurably slower (hot path).
        return cls(key, cidr, network, affinity, _flag(doc, key, "deleted"),
                   _list(doc, key, "allocations"), _list(doc, key, "unallocated"),
                   _list(doc, key, "attributes"), doc)


@dataclass(frozen=True, slots=True)
class BlockAffinity:
    """A block affinity document: its state and Calico's `deleted` flag."""

    state: str  # one of AFFINITY_STATES
    deleted: bool = False

    @property
    def owns_block(self) -> bool:
        """Does this affinity make its node the block's owner? Only when confirmed."""
        return self.state == CONFIRMED and not self.deleted

    def to_json(self) -> bytes:
        return json.dumps({"state": self.state, "deleted": self.deleted},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "") -> Self:
        """Parse a stored affinity; IPAMDocumentError if it is not one."""
        doc = _object(raw, key, "affinity")
        # Affinities written before the state field existed are confirmed (Calico's rule).
        state = doc.get("state") or CONFIRMED
        if state not in AFFINITY_STATES:
            raise IPAMDocumentError(key, "state", state, f"unknown affinity state {state!r}")
        return cls(state, _flag(doc, key, "deleted"))


@dataclass(frozen=True)
class IPAMHandle:
    """A handle document: how many addresses the handle holds in each block (by CIDR)."""

    blocks: Mapping[str, int] = field(default_factory=dict)
    deleted: bool = False

    def to_json(self) -> bytes:
        return json.dumps({"block": dict(self.blocks), "deleted": self.deleted},
                          separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "") -> Self:
        """Parse a stored handle (as `cls`, so subclasses get their own type);
        IPAMDocumentError if it is not one."""
        doc = _object(raw, key, "handle")
        counts = doc.get("block") or {}
        if not isinstance(counts, dict):
            raise IPAMDocumentError(key, "block", counts,
                                    f"block must be an object of counts, got {_excerpt(counts)}")
        try:
            blocks = {str(k): int(v) for k, v in counts.items()}
        except (TypeError, ValueError):
            raise IPAMDocumentError(key, "block", counts,
                                    f"block counts must be integers, got {_excerpt(counts)}"
                                    ) from None
        return cls(blocks, _flag(doc, key, "deleted"))


# -- field readers (each raises IPAMDocumentError naming the field) --------------------------


def _excerpt(value: object) -> str:
    text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= 60 else text[:60] + "...")


def _object(raw: bytes | str, key: str, kind: str) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise IPAMDocumentError(key, "", raw,
                                f"{kind} document is not JSON ({exc}): {_excerpt(raw)}") from None
    if not isinstance(doc, dict):
        raise IPAMDocumentError(key, "", doc,
                                f"{kind} document is not a JSON object: {_excerpt(doc)}")
    return doc


def _block_network(doc: dict[str, Any], key: str
                   ) -> tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    stated = doc.get("cidr")
    if not isinstance(stated, str):
        reason = "cidr is missing" if stated is None else f"cidr must be a string, got {stated!r}"
        raise IPAMDocumentError(key, "cidr", stated, reason)
    try:
        cidr, network = _network(stated)
    except ValueError as exc:
        raise IPAMDocumentError(key, "cidr", stated,
                                f"cidr {stated!r} is not a network: {exc}") from None
    if key:
        named = parse_block_key(key)
        if named is None:
            raise IPAMDocumentError(key, "", key, "the key is not a block key")
        if named != cidr and not _same_network(named, network):
            raise IPAMDocumentError(key, "cidr", stated,
                                    f"block document says cidr {stated}, its key says {named}")
    return cidr, network


@functools.lru_cache(maxsize=16384)
def _network(text: str) -> tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A CIDR's canonical text and network; ValueError if it is not a network.

    Cached: the agent and the BGP sidecar re-read every block on every sync, and
    parsing its CIDR would otherwise cost as much as the rest of the shape checks."""
    network = ipaddress.ip_network(text)
    return str(network), network


def _same_network(cidr: str, network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    # Only for a key that is not written canonically (the usual case compares strings).
    try:
        return _network(cidr)[1] == network
    except ValueError:
        return False


def _list(doc: dict[str, Any], key: str, name: str) -> list[Any]:
    value = doc.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise IPAMDocumentError(key, name, value, f"{name} must be a list, got {_excerpt(value)}")
    return value


def _flag(doc: dict[str, Any], key: str, name: str) -> bool:
    value = doc.get(name)
    if value is None:  # absent or null: Go's zero value
        return False
    if not isinstance(value, bool):
        raise IPAMDocumentError(key, name, value, f"{name} must be true or false, got {value!r}")
    return value
