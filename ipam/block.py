"""The allocation block document and its arithmetic. Pure: no I/O, no clock.

A block is a contiguous, power-of-two slice of a pool (a /26 by default). Its
etcd document uses Calico's JSON names, in Calico's order:

    {"cidr": "10.65.79.0/26", "affinity": "host:node1",
     "affinity_claim_time": "2024-05-01T10:00:00Z",
     "allocations": [0, 1, null, ...],        # per ordinal: index into attributes, or null
     "unallocated": [2, 3, ..., 63],          # free ordinals, FIFO: assign from the head,
                                              # release to the tail
     "attributes": [{"handle_id": "h", "secondary": {"node": "node1", ...}}],
     "sequenceNumber": 7,                     # bumped by every write of the block
     "sequenceNumberForAllocation": {"0": 5, "1": 6},
     "deleted": false}

plus one tortie field, `emptySince` (present only while the block is empty
after a release; Calico ignores unknown fields). Unknown fields written by
others are kept as they are. The document is read by datastore.ipam_documents
(AllocationBlock: its shape, its CIDR, its owner's name); `Block.from_json`
converts the fields only allocation needs.

Invariants (checked by `problems()`):
  * len(allocations) == block size; every ordinal is either allocated (an index
    into attributes) or listed once in `unallocated`, never both;
  * every attribute is referenced by at least one allocation (releases compact);
  * an allocated ordinal has a sequence number: the block's sequenceNumber at
    the write that allocated it. Since sequenceNumber only grows, an address
    released and re-assigned always gets a new number, which is what lets a
    release based on stale information be refused (BadSequenceNumber).

Methods never mutate: assign/release return a new Block.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TypeVar

from datastore.errors import IPAMDocumentError
from datastore.ipam_documents import AllocationBlock, affinity_host

from .errors import AddressAlreadyAssigned, BadSequenceNumber, HandleMismatch, IPAMError

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # Go metav1.Time: RFC 3339, whole seconds, UTC

_T = TypeVar("_T")

_KNOWN_FIELDS = (
    "cidr", "affinity", "affinity_claim_time", "allocations", "unallocated", "attributes",
    "sequenceNumber", "sequenceNumberForAllocation", "deleted", "emptySince",
)


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _read(stored: AllocationBlock, name: str, convert: Callable[[], _T]) -> _T:
    """convert(), with what it raises on a malformed `name` as an IPAMDocumentError."""
    try:
        return convert()
    except (TypeError, ValueError, AttributeError) as exc:
        raise IPAMDocumentError(stored.key, name, stored.document.get(name),
                                f"{name} is malformed: {exc}") from None


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 time as Go writes it ('...Z', optional fraction); None if absent/unreadable."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Attribute:
    """Who holds an allocation: the handle and the secondary attributes (node, pod, ...)."""

    handle_id: str | None
    secondary: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, object] = field(default_factory=dict)  # alternateOwnerAttrs, releasedAt

    def to_doc(self) -> dict[str, object]:
        doc: dict[str, object] = {"handle_id": self.handle_id, "secondary": dict(self.secondary)}
        doc.update(self.extra)
        return doc

    @cached_property
    def json(self) -> str:
        """This attribute's JSON, computed once: a block re-serialises all of them on
        every write, and they never change."""
        return _dumps(self.to_doc())

    @classmethod
    def from_doc(cls, doc: Mapping[str, object]) -> Attribute:
        handle = doc.get("handle_id")
        secondary = doc.get("secondary") or {}
        if handle is not None and not isinstance(handle, str):
            raise ValueError("attribute handle_id is not a string")
        if not isinstance(secondary, dict):
            raise ValueError("attribute secondary is not an object")
        extra = {k: v for k, v in doc.items() if k not in ("handle_id", "secondary")}
        return cls(handle, {str(k): str(v) for k, v in secondary.items()}, extra)


@dataclass(frozen=True)
class ReleaseRequest:
    """Release one ordinal; optionally only if it still has this sequence number / handle."""

    ordinal: int
    sequence_number: int | None = None
    handle_id: str | None = None


@dataclass
class ReleaseOutcome:
    released: list[tuple[int, str | None]] = field(default_factory=list)  # (ordinal, handle)
    not_assigned: list[int] = field(default_factory=list)
    refused: list[tuple[int, IPAMError]] = field(default_factory=list)


class Block:
    """One allocation block. Treat as immutable: every change returns a new Block."""

    __slots__ = (
        "cidr", "affinity", "affinity_claim_time", "allocations", "unallocated", "attributes",
        "sequence_number", "sequence_number_for_allocation", "deleted", "empty_since", "extra",
        "_network", "_base",
    )

    def __init__(
        self,
        cidr: str,
        affinity: str | None,
        affinity_claim_time: str | None,
        allocations: list[int | None],
        unallocated: list[int],
        attributes: list[Attribute],
        sequence_number: int = 0,
        sequence_number_for_allocation: dict[str, int] | None = None,
        deleted: bool = False,
        empty_since: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        self.cidr = cidr
        self.affinity = affinity
        self.affinity_claim_time = affinity_claim_time
        self.allocations = allocations
        self.unallocated = unallocated
        self.attributes = attributes
        self.sequence_number = sequence_number
        self.sequence_number_for_allocation = sequence_number_for_allocation or {}
        self.deleted = deleted
        self.empty_since = empty_since
        self.extra = extra or {}
        self._network = ipaddress.ip_network(cidr)
        self._base = int(self._network.network_address)

    # -- construction and (de)serialisation --------------------------------------------

    @classmethod
    def new(cls, cidr: str, host: str | None, claim_time: str | None,
            sequence_start: int = 0) -> Block:
        """An empty block. `sequence_start` > 0 keeps sequence numbers growing across a
        delete and re-create of the same CIDR (the allocator passes an etcd revision)."""
        size = ipaddress.ip_network(cidr).num_addresses
        return cls(
            cidr=str(ipaddress.ip_network(cidr)),
            affinity=f"host:{host}" if host else None,
            affinity_claim_time=claim_time,
            allocations=[None] * size,
            unallocated=list(range(size)),
            attributes=[],
            sequence_number=sequence_start,
        )

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "") -> Block:
        """Parse a stored block: datastore.ipam_documents' AllocationBlock (the shape, the
        CIDR, against `key` when given), then the fields only allocation reads.
        IPAMDocumentError (a ValueError) naming the field if it is not one."""
        stored = AllocationBlock.from_json(raw, key)
        doc = stored.document
        return cls(
            cidr=stored.cidr,
            affinity=stored.affinity,
            affinity_claim_time=doc.get("affinity_claim_time"),
            allocations=_read(stored, "allocations", lambda: [
                None if a is None else int(a) for a in stored.allocations]),
            unallocated=_read(stored, "unallocated", lambda: [int(o) for o in stored.unallocated]),
            attributes=_read(stored, "attributes", lambda: [
                Attribute.from_doc(a) for a in stored.attributes]),
            sequence_number=_read(stored, "sequenceNumber",
                                  lambda: int(doc.get("sequenceNumber") or 0)),
            sequence_number_for_allocation=_read(stored, "sequenceNumberForAllocation", lambda: {
                str(k): int(v) for k, v in (doc.get("sequenceNumberForAllocation") or {}).items()}),
            deleted=stored.deleted,
            empty_since=doc.get("emptySince"),
            extra={k: v for k, v in doc.items() if k not in _KNOWN_FIELDS},
        )

    def to_doc(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "cidr": self.cidr,
            "affinity": self.affinity,
        }
        if self.affinity_claim_time:
            doc["affinity_claim_time"] = self.affinity_claim_time
        doc["allocations"] = self.allocations
        doc["unallocated"] = self.unallocated
        doc["attributes"] = [a.to_doc() for a in self.attributes]
        doc["sequenceNumber"] = self.sequence_number
        doc["sequenceNumberForAllocation"] = self.sequence_number_for_allocation
        doc["deleted"] = self.deleted
        if self.empty_since:
            doc["emptySince"] = self.empty_since
        doc.update(self.extra)
        return doc

    def to_json(self) -> bytes:
        """Exactly json.dumps(self.to_doc(), compact), assembled from cached attribute JSON
        (the bulk of a busy block's document)."""
        parts = ['{"cidr":', _dumps(self.cidr), ',"affinity":', _dumps(self.affinity)]
        if self.affinity_claim_time:
            parts += [',"affinity_claim_time":', _dumps(self.affinity_claim_time)]
        parts += [
            ',"allocations":', _dumps(self.allocations),
            ',"unallocated":', _dumps(self.unallocated),
            ',"attributes":[', ",".join(a.json for a in self.attributes),
            '],"sequenceNumber":', _dumps(self.sequence_number),
            ',"sequenceNumberForAllocation":', _dumps(self.sequence_number_for_allocation),
            ',"deleted":', _dumps(self.deleted),
        ]
        if self.empty_since:
            parts += [',"emptySince":', _dumps(self.empty_since)]
        for key, value in self.extra.items():
            parts += [",", _dumps(key), ":", _dumps(value)]
        parts.append("}")
        return "".join(parts).encode()

    def copy(self) -> Block:
        return Block(
            self.cidr, self.affinity, self.affinity_claim_time, list(self.allocations),
            list(self.unallocated), list(self.attributes), self.sequence_number,
            dict(self.sequence_number_for_allocation), self.deleted, self.empty_since,
            copy.deepcopy(self.extra),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Block) and self.to_doc() == other.to_doc()

    def __repr__(self) -> str:
        return f"Block({self.cidr}, affinity={self.affinity}, in_use={self.in_use})"

    # -- arithmetic ----------------------------------------------------------------------

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self._network

    @property
    def size(self) -> int:
        return self._network.num_addresses

    @property
    def in_use(self) -> int:
        return sum(1 for a in self.allocations if a is not None)

    @property
    def free(self) -> int:
        """Ordinals that can be handed out (Calico's numFree: the unallocated list)."""
        return len(self.unallocated)

    @property
    def is_empty(self) -> bool:
        return all(a is None for a in self.allocations)

    @property
    def host(self) -> str | None:
        """The node this block is affine to (from `affinity: host:<node>`), or None."""
        return affinity_host(self.affinity)

    def ip_of(self, ordinal: int) -> str:
        if not 0 <= ordinal < self.size:
            raise ValueError(f"ordinal {ordinal} is outside block {self.cidr}")
        return str(ipaddress.ip_address(self._base + ordinal))

    def ordinal_of(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
        addr = ipaddress.ip_address(ip)
        if addr not in self._network:
            raise ValueError(f"{addr} is not in block {self.cidr}")
        return int(addr) - self._base

    def contains(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in self._network

    def attribute_of(self, ordinal: int) -> Attribute | None:
        idx = self.allocations[ordinal]
        if idx is None or not 0 <= idx < len(self.attributes):
            return None
        return self.attributes[idx]

    def sequence_number_of(self, ordinal: int) -> int:
        return self.sequence_number_for_allocation.get(str(ordinal), 0)

    def allocated(self) -> Iterable[tuple[int, Attribute | None]]:
        for ordinal, idx in enumerate(self.allocations):
            if idx is not None:
                yield ordinal, self.attribute_of(ordinal)

    def handle_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, attr in self.allocated():
            if attr is not None and attr.handle_id is not None:
                counts[attr.handle_id] = counts.get(attr.handle_id, 0) + 1
        return counts

    def ordinals_of_handle(self, handle_id: str) -> list[int]:
        return [o for o, a in self.allocated() if a is not None and a.handle_id == handle_id]

    def empty_since_time(self) -> datetime | None:
        """When this block last became empty; None while it holds an allocation.

        `emptySince` is stamped by the release that empties it; a block that was
        never used is empty since it was claimed (`affinity_claim_time`)."""
        if not self.is_empty:
            return None
        return parse_time(self.empty_since) or parse_time(self.affinity_claim_time)

    # -- changes (each returns a new Block with sequenceNumber bumped) -------------------

    def _attribute_index(self, handle_id: str | None, attrs: Mapping[str, str]) -> int:
        # Calico's findOrAddAttribute: share an identical attribute, else append one.
        for i, a in enumerate(self.attributes):
            if a.handle_id == handle_id and dict(a.secondary) == dict(attrs) and not a.extra:
                return i
        self.attributes.append(Attribute(handle_id, dict(attrs)))
        return len(self.attributes) - 1

    def auto_assign(self, num: int, handle_id: str | None,
                    attrs: Mapping[str, str]) -> tuple[Block, list[int]]:
        """Take up to `num` ordinals from the head of the FIFO. Returns (block, ordinals)."""
        take = min(num, len(self.unallocated))
        if take <= 0:
            return self, []
        new = self.copy()
        idx = new._attribute_index(handle_id, attrs)
        ordinals = new.unallocated[:take]
        del new.unallocated[:take]
        for o in ordinals:
            new.allocations[o] = idx
            new.sequence_number_for_allocation[str(o)] = new.sequence_number
        new.sequence_number += 1
        new.empty_since = None
        return new, ordinals

    def assign(self, ordinal: int, handle_id: str | None, attrs: Mapping[str, str]) -> Block:
        """Assign one specific ordinal; AddressAlreadyAssigned if it is taken."""
        if self.allocations[ordinal] is not None:
            attr = self.attribute_of(ordinal)
            raise AddressAlreadyAssigned(self.ip_of(ordinal), attr.handle_id if attr else None)
        new = self.copy()
        idx = new._attribute_index(handle_id, attrs)
        new.allocations[ordinal] = idx
        if ordinal in new.unallocated:
            new.unallocated.remove(ordinal)
        new.sequence_number_for_allocation[str(ordinal)] = new.sequence_number
        new.sequence_number += 1
        new.empty_since = None
        return new

    def release(self, requests: Sequence[ReleaseRequest],
                now: str | None = None) -> tuple[Block, ReleaseOutcome]:
        """Release ordinals, refusing each one whose sequence number or handle is stale.

        Unlike Calico (which fails the whole block's batch on one bad sequence
        number), a refusal concerns only its own address. `now` stamps emptySince
        when the block ends up empty. Returns (block, outcome); the block is `self`
        when nothing was released.
        """
        outcome = ReleaseOutcome()
        to_free: list[int] = []
        seen: set[int] = set()
        for req in requests:
            o = req.ordinal
            if o in seen:
                continue
            seen.add(o)
            if self.allocations[o] is None:
                outcome.not_assigned.append(o)
                continue
            attr = self.attribute_of(o)
            handle = attr.handle_id if attr else None
            if req.sequence_number is not None and req.sequence_number != self.sequence_number_of(o):
                outcome.refused.append((o, BadSequenceNumber(
                    self.ip_of(o), req.sequence_number, self.sequence_number_of(o))))
                continue
            if req.handle_id is not None and req.handle_id != handle:
                outcome.refused.append((o, HandleMismatch(self.ip_of(o), req.handle_id, handle)))
                continue
            to_free.append(o)
            outcome.released.append((o, handle))
        if not to_free:
            return self, outcome
        new = self.copy()
        for o in to_free:
            new.allocations[o] = None
            new.sequence_number_for_allocation.pop(str(o), None)
            new.unallocated.append(o)
        new._compact_attributes()
        new.sequence_number += 1
        if new.is_empty and now:
            new.empty_since = now
        return new, outcome

    def release_handle(self, handle_id: str,
                       now: str | None = None) -> tuple[Block, list[int]]:
        ordinals = self.ordinals_of_handle(handle_id)
        new, _ = self.release([ReleaseRequest(o) for o in ordinals], now)
        return new, ordinals

    def with_affinity(self, affinity: str | None) -> Block:
        new = self.copy()
        new.affinity = affinity
        new.sequence_number += 1
        return new

    def _compact_attributes(self) -> None:
        used = sorted({a for a in self.allocations if a is not None})
        if len(used) == len(self.attributes):
            return
        renumber = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[i] for i in used if 0 <= i < len(self.attributes)]
        self.allocations = [None if a is None else renumber[a] for a in self.allocations]

    # -- consistency ---------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is wrong with this block's document (empty list when it is sound)."""
        out: list[str] = []
        if len(self.allocations) != self.size:
            out.append(f"has {len(self.allocations)} allocation slots for {self.size} addresses")
        seen: set[int] = set()
        for o in self.unallocated:
            if not 0 <= o < len(self.allocations):
                out.append(f"unallocated ordinal {o} is out of range")
            elif o in seen:
                out.append(f"ordinal {o} is listed twice as unallocated")
            elif self.allocations[o] is not None:
                out.append(f"ordinal {o} is both allocated and unallocated")
            seen.add(o)
        for o, idx in enumerate(self.allocations):
            if idx is None:
                if o not in seen:
                    out.append(f"ordinal {o} is neither allocated nor unallocated")
                continue
            if not 0 <= idx < len(self.attributes):
                out.append(f"ordinal {o} refers to missing attribute {idx}")
        referenced = {a for a in self.allocations if a is not None}
        for i in range(len(self.attributes)):
            if i not in referenced:
                out.append(f"attribute {i} is not referenced by any allocation")
        if self.affinity is not None and not self.affinity.startswith(("host:", "virtual:")):
            out.append(f"affinity '{self.affinity}' is neither host:<node> nor virtual:<name>")
        return out


def block_cidr_containing(ip: str, block_size: int) -> str:
    """The block CIDR of prefix `block_size` that holds `ip`."""
    return str(ipaddress.ip_network(f"{ip}/{block_size}", strict=False))
