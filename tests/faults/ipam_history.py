"""F7's history check: what IPAM clients were told against what etcd holds afterwards. Pure.

Owns the rules that judge an IPAM storm, in the spirit of etcd's robustness tests
and Jepsen: every client records each operation it ran (an allocation for a handle
of its own, or the release of that handle) with when it began and ended and what
it was told; after the storm the IPAM documents are read at one revision; `check`
compares the two. No I/O here.

What must hold (each broken one is a violation naming the handle, IP or block):
  * every allocation that succeeded is in etcd exactly once, held by its handle,
    unless its release succeeded; a released handle holds nothing;
  * an allocation that failed is absent, unless its failure was ambiguous (the
    client was told the outcome is unknown: a write timed out), in which case
    either is right and the handle is listed in `ambiguous_present` so the caller
    releases it by handle; a failed release leaves its handle as it was, unless
    ambiguous;
  * no IP was ever held by two handles at once: two successful allocations of one
    IP must be separated by a release of the first (the first allocation ended
    before the second began, and the release began before the second ended);
  * every block's allocations and free list together name each ordinal exactly
    once, every allocation names an attribute with a handle, and each handle's
    document counts exactly its allocations per block;
  * no handle in etcd that no client allocated; no two blocks overlap;
  * no block has two affinities (two nodes' affinity keys for one CIDR), and a
    confirmed affinity's node is the one its block names.
"""

from __future__ import annotations

import ipaddress
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from datastore.keys import parse_affinity_key, parse_block_key, parse_handle_key

ALLOCATE = "allocate"
RELEASE = "release"


@dataclass(frozen=True)
class Op:
    """One client operation as the client saw it (times from one monotonic clock)."""

    kind: str  # ALLOCATE or RELEASE
    handle: str
    node: str
    start: float
    end: float
    ok: bool
    ips: tuple[str, ...] = ()  # allocate: the IPs given; release: the IPs released
    error: str = ""
    ambiguous: bool = False  # a failure whose outcome the client could not know

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Op:
        return cls(str(doc["kind"]), str(doc["handle"]), str(doc["node"]), float(doc["start"]),
                   float(doc["end"]), bool(doc["ok"]), tuple(doc.get("ips", ())),
                   str(doc.get("error", "")), bool(doc.get("ambiguous", False)))


@dataclass(frozen=True)
class Affinity:
    node: str
    cidr: str
    state: str


@dataclass(frozen=True)
class FinalState:
    """The IPAM documents read after the storm, at one revision."""

    blocks: Mapping[str, Mapping[str, Any]]  # cidr -> block document
    handles: Mapping[str, Mapping[str, int]]  # handle id -> {block cidr: count}
    affinities: Sequence[Affinity] = ()


def state_from_kvs(kvs: Mapping[str, str]) -> FinalState:
    """The FinalState of the IPAM prefix's keys and values (JSON text), as etcd holds them."""
    blocks: dict[str, Mapping[str, Any]] = {}
    handles: dict[str, Mapping[str, int]] = {}
    affinities: list[Affinity] = []
    for key, value in kvs.items():
        doc = json.loads(value)
        if (cidr := parse_block_key(key)) is not None:
            blocks[cidr] = doc
        elif (handle := parse_handle_key(key)) is not None:
            handles[handle] = {str(c): int(n) for c, n in (doc.get("block") or {}).items()}
        elif (aff := parse_affinity_key(key)) is not None and not doc.get("deleted"):
            affinities.append(Affinity(aff[1], aff[2], doc.get("state") or "confirmed"))
    return FinalState(blocks, handles, affinities)


@dataclass
class Verdict:
    violations: list[str] = field(default_factory=list)
    ambiguous_present: list[str] = field(default_factory=list)  # handles: release them
    ambiguous_absent: list[str] = field(default_factory=list)
    allocated: int = 0  # successful allocations
    released: int = 0  # successful releases
    failed: int = 0  # failed operations of either kind

    @property
    def ok(self) -> bool:
        return not self.violations


def held_ips(state: FinalState) -> tuple[dict[str, list[str]], list[str]]:
    """({handle: [ips]}, problems) from the blocks: who holds what, and what is malformed."""
    held: dict[str, list[str]] = {}
    problems: list[str] = []
    networks = []
    for cidr, doc in sorted(state.blocks.items()):
        net = ipaddress.ip_network(cidr)
        networks.append(net)
        allocations = list(doc.get("allocations") or [])
        unallocated = list(doc.get("unallocated") or [])
        attributes = list(doc.get("attributes") or [])
        if len(allocations) != net.num_addresses:
            problems.append(f"block {cidr}: {len(allocations)} allocation slots for "
                            f"{net.num_addresses} addresses")
        used = [o for o, a in enumerate(allocations) if a is not None]
        named = Counter([*used, *unallocated])
        twice = sorted(o for o, n in named.items() if n > 1)
        missing = sorted(set(range(len(allocations))) - set(named))
        if twice:
            problems.append(f"block {cidr}: ordinals both allocated and free, or free twice: "
                            f"{twice}")
        if missing:
            problems.append(f"block {cidr}: ordinals neither allocated nor free: {missing}")
        for ordinal in used:
            index = allocations[ordinal]
            ip = str(net.network_address + ordinal)
            if not isinstance(index, int) or not 0 <= index < len(attributes):
                problems.append(f"block {cidr}: {ip} names attribute {index!r}, "
                                f"which does not exist")
                continue
            handle = (attributes[index] or {}).get("handle_id")
            if not handle:
                problems.append(f"block {cidr}: {ip} is allocated without a handle")
                continue
            held.setdefault(handle, []).append(ip)
    for i, a in enumerate(networks):
        problems += [f"blocks {a} and {b} overlap" for b in networks[i + 1:] if a.overlaps(b)]
    return held, problems


def _handle_counts(state: FinalState, held: Mapping[str, list[str]]) -> list[str]:
    problems = []
    for handle in sorted(set(held) | set(state.handles)):
        counted: Counter[str] = Counter()
        for ip in held.get(handle, ()):
            counted[next(c for c in state.blocks
                         if ipaddress.ip_address(ip) in ipaddress.ip_network(c))] += 1
        stored = {c: n for c, n in (state.handles.get(handle) or {}).items() if n}
        if dict(counted) != stored:
            problems.append(f"handle {handle}: its document counts {stored or 'nothing'}, "
                            f"the blocks hold {dict(counted) or 'nothing'}")
    return problems


def _affinity_problems(state: FinalState) -> list[str]:
    problems = []
    by_cidr: dict[str, list[Affinity]] = {}
    for a in state.affinities:
        by_cidr.setdefault(a.cidr, []).append(a)
    for cidr, affs in sorted(by_cidr.items()):
        nodes = sorted({a.node for a in affs})
        if len(nodes) > 1:
            problems.append(f"block {cidr} has affinities of {len(nodes)} nodes: "
                            + ", ".join(f"{a.node} ({a.state})" for a in affs))
        for a in affs:
            doc = state.blocks.get(cidr)
            if a.state == "confirmed" and doc is not None \
                    and doc.get("affinity") != f"host:{a.node}":
                problems.append(f"block {cidr}: {a.node}'s confirmed affinity, but the block "
                                f"names {doc.get('affinity')!r}")
    return problems


def _overlapping_holders(ops: Sequence[Op]) -> list[str]:
    """Pairs of successful allocations of one IP that must have held it at once."""
    # A release that may have happened (succeeded, or failed with an unknown outcome).
    released = {op.handle: op for op in ops if op.kind == RELEASE and (op.ok or op.ambiguous)}
    by_ip: dict[str, list[Op]] = {}
    for op in ops:
        if op.kind == ALLOCATE and op.ok:
            for ip in op.ips:
                by_ip.setdefault(ip, []).append(op)
    problems = []
    for ip, allocs in sorted(by_ip.items()):
        for i, a in enumerate(allocs):
            for b in allocs[i + 1:]:
                if not (_before(a, b, released.get(a.handle))
                        or _before(b, a, released.get(b.handle))):
                    problems.append(f"{ip} given to {a.handle} and to {b.handle}, with no "
                                    "release between")
    return problems


def _before(first: Op, second: Op, release: Op | None) -> bool:
    """Could `first`'s hold of its IP have ended before `second` took it? Only if a
    release of `first` that may have happened began before `second` ended."""
    return release is not None and release.start <= second.end and first.start <= second.end


def check(ops: Iterable[Op], state: FinalState) -> Verdict:
    """Judge a history against the IPAM documents read after it (see the module docstring)."""
    history = list(ops)
    verdict = Verdict()
    held, verdict.violations = held_ips(state)
    verdict.violations += _handle_counts(state, held)
    verdict.violations += _affinity_problems(state)
    verdict.violations += _overlapping_holders(history)
    seen = Counter(ip for ips in held.values() for ip in ips)
    verdict.violations += [f"{ip} is allocated {n} times in the blocks"
                           for ip, n in sorted(seen.items()) if n > 1]

    allocs: dict[str, Op] = {}
    releases: dict[str, Op] = {}
    for op in history:
        table = allocs if op.kind == ALLOCATE else releases
        if op.kind not in (ALLOCATE, RELEASE):
            verdict.violations.append(f"history: unknown operation {op.kind!r} on {op.handle}")
            continue
        if op.handle in table:
            verdict.violations.append(f"history: {op.handle} has two {op.kind} operations "
                                      "(handles must be unique)")
        table[op.handle] = op
        verdict.allocated += op.kind == ALLOCATE and op.ok
        verdict.released += op.kind == RELEASE and op.ok
        verdict.failed += not op.ok

    for handle in sorted(set(held) | set(state.handles)):
        if handle not in allocs:
            verdict.violations.append(f"handle {handle} is in etcd but no client allocated it")
    for handle, alloc in sorted(allocs.items()):
        now = sorted(held.get(handle, ()))
        release = releases.get(handle)
        if release is not None and not alloc.ok:
            verdict.violations.append(f"history: {handle} was released after a failed "
                                      "allocation")
        if not alloc.ok:
            if not now:
                if alloc.ambiguous:
                    verdict.ambiguous_absent.append(handle)
            elif alloc.ambiguous:
                verdict.ambiguous_present.append(handle)
            else:
                verdict.violations.append(f"{handle}: allocation reported failed "
                                          f"({alloc.error}) but etcd holds {now}")
            continue
        given = sorted(alloc.ips)
        if release is None or (not release.ok and not release.ambiguous):
            if now != given:
                verdict.violations.append(f"{handle}: allocation succeeded with {given}, "
                                          f"etcd holds {now or 'nothing'}")
        elif release.ok:
            if now:
                verdict.violations.append(f"{handle}: released, but etcd still holds {now}")
            if sorted(release.ips) != given:
                verdict.violations.append(f"{handle}: the release freed {sorted(release.ips)}, "
                                          f"the allocation gave {given}")
        elif now not in ([], given):  # an ambiguous release: either outcome, nothing else
            verdict.violations.append(f"{handle}: after an ambiguous release etcd holds "
                                      f"{now}, neither {given} nor nothing")
    return verdict
