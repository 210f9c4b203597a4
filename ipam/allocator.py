"""Block-affinity IP allocation over etcd compare-and-swap: assign, release, claim, reclaim.

Owns every IPAM write (blocks, affinities, handles). The algorithm is Calico's
`autoAssign` (libcalico-go/lib/ipam/ipam.go): the node's confirmed affine blocks first, then a
new block claimed in the node's seeded order, then borrowing from other nodes'
blocks unless strict affinity is on.

Guarantees:
  * Every write is one etcd transaction guarded by compares on the mod
    revision of what it read; a lost compare re-reads (the failure branch
    returns the fresh documents) and retries, up to 100 times (Calico's
    number). Nothing is ever overwritten blind.
  * An assignment or release writes the block AND its handles in ONE
    transaction (block CAS + handle create-if-absent / CAS / delete). Calico
    writes the handle and the block one after the other, so a crash between
    the two leaves them disagreeing; here they cannot drift, and it costs one
    round trip instead of two.
  * A claim is `pending` affinity (intent), then one transaction that creates
    the block (create-if-absent) and confirms the affinity together, guarded
    by "none of this node's affinities changed since I counted them" so that
    maxBlocksPerHost holds even for concurrent processes of one node. A crash
    after the first step leaves only a pending affinity, which counts as
    absent, is taken over by the node's next claim of that CIDR (or withdrawn
    by it once another node holds the block), and is reported and removed by
    `ipam check` / `release --from-report`.
  * Each allocation records the block's sequenceNumber; a release may name
    it, and is refused when the address was re-assigned meanwhile. A new
    block's sequence numbers start at the etcd revision read just before it
    was created, so they keep growing across a delete and re-create of the
    same CIDR (Calico restarts at 0).
  * Another node's block is reclaimed only when it has been empty for at least
    EMPTY_BLOCK_MIN_RECLAIM_AGE: by its `emptySince` stamp (written by the
    release that emptied it) or, for a block never used, its
    `affinity_claim_time`. The reclaim deletes block and affinity in one
    transaction guarded by the block's mod revision, so an allocation made
    into it meanwhile makes the reclaim fail instead.

Performance: an Allocator caches pools, the IPAM config, node labels, the
node's affine blocks (with their mod revisions, updated from its own writes)
and recently written handles. The caches are never trusted for correctness:
every transaction compares the block, the handle and the pool it relies on,
so a stale cache costs one failed transaction, never a wrong answer. The
steady-state path for one address is therefore a single etcd transaction.
Free block CIDRs are found by probing the seeded order with payload-free
"block absent?" compares; all blocks are listed (and parsed lazily) only once
a pool is filling up, or to borrow or reclaim.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from datastore.errors import IPAMDocumentError
from datastore.etcd import (
    Compare,
    EtcdClient,
    KeyConflict,
    KeyExists,
    KeyMissing,
    KeyValue,
    Op,
    delete_op,
    get_op,
    put_op,
)
from datastore.keys import (
    IPAM_CONFIG_KEY,
    affinity_host_prefix,
    affinity_key,
    block_key,
    block_prefix,
    handle_key,
    parse_affinity_key,
    parse_block_key,
)
from datastore.resources import IPPool, Node, ObjectMeta
from datastore.resources.ipamconfig import IPAMConfigurationSpec
from datastore.store import ResourceStore

from .affinity import (
    CONFIRMED_DOC,
    PENDING,
    PENDING_DELETION,
    PENDING_DELETION_DOC,
    PENDING_DOC,
    Affinity,
)
from .block import (
    Attribute,
    Block,
    ReleaseOutcome,
    ReleaseRequest,
    block_cidr_containing,
    format_time,
)
from .config import decode_config
from .errors import (
    AddressNotInPool,
    AffinityNotFound,
    BlockLimitReached,
    BlockNotEmpty,
    CorruptDocument,
    HandleExists,
    HandleNotFound,
    IPAMError,
    NoIPsAvailable,
    NoUsablePools,
    RequestedPoolUnusable,
    RetriesExhausted,
    StrictAffinityForbidsBorrowing,
)
from .handle import Handle
from .pools import (
    TUNNEL,
    USES,
    WORKLOAD,
    block_cidr,
    block_index,
    pool_containing,
    pool_for_block,
    pool_selector_is_trivial,
    requested_pools,
    seed_for,
    seeded_block_indexes,
    usable_pools,
)

_log = logging.getLogger(__name__)

RETRIES = 100  # Calico's datastoreRetries
EMPTY_BLOCK_MIN_RECLAIM_AGE = timedelta(seconds=60)  # Calico's EmptyBlockMinReclaimAge
HANDLE_CACHE_SIZE = 4096
PROBE_MISSES = 4  # taken CIDRs probed one by one before listing all blocks instead

__all__ = [
    "Allocator", "Assignment", "ReleaseOption", "ReleaseResult", "RETRIES", "TUNNEL", "WORKLOAD",
    "EMPTY_BLOCK_MIN_RECLAIM_AGE",
]


@dataclass(frozen=True)
class Assignment:
    """One allocated address as stored: where it lives and who holds it."""

    ip: str
    block: str
    ordinal: int
    handle_id: str | None
    attributes: Mapping[str, str]
    sequence_number: int
    block_affinity: str | None


@dataclass(frozen=True)
class ReleaseOption:
    """Release `ip`; if handle_id / sequence_number are given, only if they still match."""

    ip: str
    handle_id: str | None = None
    sequence_number: int | None = None


@dataclass
class ReleaseResult:
    released: list[str] = field(default_factory=list)
    not_assigned: list[str] = field(default_factory=list)
    refused: dict[str, IPAMError] = field(default_factory=dict)


@dataclass
class _Context:
    """Cluster facts an assignment depends on, each with the revision it was read at.

    Also memoises what is derived from them (usable pools, the pool of a block),
    which dominates the CPU cost of the fast path otherwise."""

    pools: list[IPPool]
    config: IPAMConfigurationSpec
    config_rev: int  # 0: the key is absent (defaults)
    _usable: dict[tuple[object, ...], list[IPPool]] = field(default_factory=dict)
    _block_pool: dict[str, IPPool | None] = field(default_factory=dict)

    def usable(self, labels: Mapping[str, str], use: str, version: int) -> list[IPPool]:
        key = (tuple(sorted(labels.items())), use, version)
        found = self._usable.get(key)
        if found is None:
            found = self._usable[key] = usable_pools(self.pools, labels, use, version)
        return found

    def pool_of_block(self, cidr: str, among: list[IPPool] | None = None) -> IPPool | None:
        """The pool holding block cidr (restricted to `among`, compared by identity)."""
        if cidr in self._block_pool:
            pool = self._block_pool[cidr]
        else:
            pool = self._block_pool[cidr] = pool_for_block(self.pools, cidr)
        if pool is not None and among is not None and not any(pool is p for p in among):
            return None
        return pool


@dataclass
class _NodeFacts:
    labels: dict[str, str]
    key: str
    rev: int  # 0: no such Node


class _Stale(Exception):
    """A guard on cached context (pool, config, node) failed: reload it and start over."""


class _Outcome:
    CLAIMED = "claimed"
    LOST = "lost"
    LIMIT = "limit"


class _BlockListing:
    """All blocks of one IP version, listed at most once per request and parsed on demand.

    Claims only need to know which CIDRs are taken (keys); only borrowing and
    reclaiming look inside blocks, so parsing every block up front would waste
    most of a claim's time once a cluster has many full blocks."""

    def __init__(self, allocator: Allocator, version: int) -> None:
        self._allocator = allocator
        self._version = version
        self._kvs: dict[str, KeyValue] | None = None
        self._parsed: dict[str, tuple[Block, int] | None] = {}
        self._claimed: set[str] = set()  # blocks this request created since listing

    @property
    def listed(self) -> bool:
        return self._kvs is not None

    def claimed(self, cidr: str) -> None:
        """Count a block we just created as taken (it is not in the listing)."""
        self._claimed.add(cidr)

    def _load(self) -> dict[str, KeyValue]:
        if self._kvs is None:
            kvs, _ = self._allocator.client.list(block_prefix(self._version))
            self._kvs = {}
            for kv in kvs:
                cidr = parse_block_key(kv.key)
                if cidr is not None:
                    self._kvs[cidr] = kv
            self._parsed.clear()
        return self._kvs

    def cidrs(self) -> list[str]:
        return [*self._load(), *(c for c in self._claimed if c not in self._load())]

    def __contains__(self, cidr: str) -> bool:
        return cidr in self._load() or cidr in self._claimed

    def get(self, cidr: str) -> tuple[Block, int] | None:
        """The listed block, parsed; None when absent or unreadable (logged)."""
        kvs = self._load()
        if cidr not in self._parsed:
            kv = kvs.get(cidr)
            try:
                self._parsed[cidr] = None if kv is None else (
                    self._allocator._decode_block(kv), kv.mod_revision)
            except CorruptDocument as exc:
                _log.warning("ignoring unreadable block: %s", exc)
                self._parsed[cidr] = None
        return self._parsed[cidr]

    def forget(self, cidr: str) -> None:
        if self._kvs is not None:
            self._kvs.pop(cidr, None)
        self._parsed.pop(cidr, None)

    def refresh(self) -> None:
        self._kvs = None
        self._claimed.clear()


def _handle_guard(key: str, rev: int) -> Compare:
    return Compare(key, "version", "==", 0) if rev == 0 else Compare(key, "mod", "==", rev)


def _first(gets: list[list[KeyValue]], i: int) -> KeyValue | None:
    return gets[i][0] if i < len(gets) and gets[i] else None


class Allocator:
    """IPAM operations for any number of nodes, against one etcd client.

    Thread-safe (one lock: threads of one process take turns, which also keeps
    them from racing each other's cached revisions). Use one per process.
    `clock` returns the current time (UTC, aware); tests inject one.
    """

    def __init__(self, client: EtcdClient, *, clock: Callable[[], datetime] | None = None,
                 retries: int = RETRIES) -> None:
        self.client = client
        self.store = ResourceStore(client)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._retries = retries
        self._lock = threading.RLock()
        self._ctx: _Context | None = None
        self._nodes: dict[str, _NodeFacts] = {}
        self._blocks: dict[str, tuple[Block, int]] = {}
        self._affine: dict[str, list[str]] = {}
        self._pending: dict[str, dict[str, KeyValue]] = {}  # node -> cidr -> pending affinity
        self._known_blocks: set[str] = set()  # CIDRs seen to have a block (a hint only)
        self._handles: OrderedDict[str, tuple[Handle, int]] = OrderedDict()

    # -- caches ----------------------------------------------------------------------------

    def invalidate(self) -> None:
        """Forget everything cached (it is re-read on next use)."""
        with self._lock:
            self._ctx = None
            self._nodes.clear()
            self._blocks.clear()
            self._affine.clear()
            self._pending.clear()
            self._known_blocks.clear()
            self._handles.clear()

    def _context(self, fresh: bool = False) -> _Context:
        """The cached context; `fresh` re-reads it (before reporting an error from it)."""
        if fresh:
            self._stale()
        if self._ctx is None:
            pools = self.store.list(IPPool)
            kv = self.client.get(IPAM_CONFIG_KEY)
            config = decode_config(kv.value) if kv else IPAMConfigurationSpec()
            self._ctx = _Context(pools, config, kv.mod_revision if kv else 0)
        return self._ctx

    def _node(self, node: str) -> _NodeFacts:
        facts = self._nodes.get(node)
        if facts is None:
            found = self.store.find(Node, node)
            key = Node(metadata=ObjectMeta(name=node)).key()
            if found is None:
                facts = _NodeFacts({}, key, 0)
            else:
                facts = _NodeFacts(dict(found.metadata.labels or {}), key,
                                   found.resource_version or 0)
            self._nodes[node] = facts
        return facts

    def _stale(self) -> None:
        self._ctx = None
        self._nodes.clear()

    def _remember_block(self, cidr: str, block: Block | None, rev: int) -> None:
        if block is None:
            self._blocks.pop(cidr, None)
            for cidrs in self._affine.values():
                if cidr in cidrs:
                    cidrs.remove(cidr)
        else:
            self._blocks[cidr] = (block, rev)

    def _drop_affine(self, node: str, cidr: str) -> None:
        cidrs = self._affine.get(node)
        if cidrs and cidr in cidrs:
            cidrs.remove(cidr)

    def _remember_handle(self, handle_id: str, handle: Handle | None, rev: int) -> None:
        self._handles.pop(handle_id, None)
        if handle is not None:
            self._handles[handle_id] = (handle, rev)
            while len(self._handles) > HANDLE_CACHE_SIZE:
                self._handles.popitem(last=False)

    def _decode_block(self, kv: KeyValue) -> Block:
        try:
            return Block.from_json(kv.value, kv.key)
        except IPAMDocumentError as exc:
            raise CorruptDocument(kv.key, exc.reason) from None

    def _read_block(self, cidr: str) -> tuple[Block, int] | None:
        kv = self.client.get(block_key(cidr))
        if kv is None:
            self._remember_block(cidr, None, 0)
            return None
        entry = (self._decode_block(kv), kv.mod_revision)
        self._blocks[cidr] = entry
        return entry

    def _read_blocks(self, cidrs: Sequence[str]) -> None:
        """Refresh several cached blocks in one round trip (a get-only transaction)."""
        if not cidrs:
            return
        _, gets, _ = self.client.transaction([], [get_op(block_key(c)) for c in cidrs])
        for i, cidr in enumerate(cidrs):
            kv = _first(gets, i)
            if kv is None:
                self._remember_block(cidr, None, 0)
            elif cidr in self._blocks and self._blocks[cidr][1] == kv.mod_revision:
                continue  # unchanged: keep the parsed copy
            else:
                try:
                    self._blocks[cidr] = (self._decode_block(kv), kv.mod_revision)
                except CorruptDocument as exc:
                    _log.warning("skipping %s", exc)
                    self._remember_block(cidr, None, 0)

    def _load_affinities(self, node: str, version: int | None = None) -> list[str]:
        """The node's confirmed affine blocks (sorted; of one IP version if given).

        The cache keeps all versions: callers filter by the usable pools anyway."""
        kvs, _ = self.client.list(affinity_host_prefix(node))
        confirmed = []
        pending: dict[str, KeyValue] = {}
        for kv in kvs:
            parsed = parse_affinity_key(kv.key)
            if parsed is None or parsed[0] != "host":
                continue
            cidr = parsed[2]
            try:
                affinity = Affinity.from_json(kv.value)
            except ValueError:
                _log.warning("ignoring unreadable affinity %s", kv.key)
                continue
            if affinity.owns_block:
                confirmed.append(cidr)
            elif affinity.state == PENDING:
                pending[cidr] = kv
        confirmed.sort(key=lambda c: (ipaddress.ip_network(c).version,
                                      int(ipaddress.ip_network(c).network_address)))
        self._affine[node] = confirmed
        self._pending[node] = pending
        if version is None:
            return list(confirmed)
        return [c for c in confirmed if ipaddress.ip_network(c).version == version]

    def _pool_of(self, cidr: str, pools: list[IPPool]) -> IPPool | None:
        return self._context().pool_of_block(cidr, pools)

    # -- guards ----------------------------------------------------------------------------

    def _guards(self, pool: IPPool | None, node: str | None, *, config: bool) -> list[Compare]:
        """Compares that make the write fail if the cached facts it relied on changed."""
        out: list[Compare] = []
        if pool is not None:
            out.append(Compare(pool.key(), "mod", "==", pool.resource_version or 0))
            if node is not None and not pool_selector_is_trivial(pool):
                facts = self._node(node)
                out.append(Compare(facts.key, "mod", "==", facts.rev))
        if config:
            out.append(Compare(IPAM_CONFIG_KEY, "mod", "==", self._context().config_rev))
        return out

    # -- auto-assign -----------------------------------------------------------------------

    def auto_assign(self, node: str, handle_id: str, num: int = 1,
                    attrs: Mapping[str, str] | None = None, use: str = WORKLOAD,
                    version: int = 4, pools: Sequence[str] = (), *,
                    new_handle: bool = False) -> list[str]:
        """Assign `num` addresses to `handle_id` for a workload (or tunnel) on `node`.

        All or nothing: if fewer can be had, the ones taken are released again and
        an InsufficientAddresses subclass says why. `attrs` become the allocation's
        secondary attributes (`node` is added when missing). `pools` (names or
        CIDRs) restricts the assignment to those pools, in that order, as Calico's
        IPv4Pools (pools.requested_pools; RequestedPoolUnusable names a bad one).

        `new_handle`: only if the handle does not exist yet; HandleExists (nothing
        assigned) if it does. A caller that would otherwise read the handle first
        (a CNI ADD, which reuses what a retried ADD got) saves that round trip: the
        first transaction already compares the handle's absence.
        """
        if num < 1:
            raise ValueError(f"number of addresses must be at least 1, not {num}")
        if use not in USES:
            raise ValueError(f"intended use must be one of {', '.join(USES)}, not {use!r}")
        attributes = dict(attrs or {})
        attributes.setdefault("node", node)
        got: list[tuple[str, str, int]] = []  # (ip, block cidr, sequence number)
        with self._lock:
            try:
                for _ in range(self._retries):
                    try:
                        self._auto_assign(node, handle_id, num, attributes, use, version,
                                          tuple(pools), got, new_handle)
                        return [ip for ip, _, _ in got]
                    except _Stale:
                        self._stale()
                raise RetriesExhausted(f"assigning for node {node}", self._retries)
            except Exception:
                if got:
                    self._roll_back(got, handle_id)
                raise

    def _roll_back(self, got: list[tuple[str, str, int]], handle_id: str) -> None:
        _log.info("releasing %d addresses of an assignment that could not be completed",
                  len(got))
        try:
            self._release([ReleaseOption(ip, handle_id, seq) for ip, _, seq in got])
        except Exception:  # noqa: BLE001 - keep the original error; check finds the leak
            _log.warning("could not release %d addresses after a failed assignment; "
                         "`ctl ipam check` will report them", len(got), exc_info=True)

    def _auto_assign(self, node: str, handle_id: str, num: int, attrs: dict[str, str],
                     use: str, version: int, restrict: tuple[str, ...],
                     got: list[tuple[str, str, int]], new_handle: bool) -> None:
        ctx = self._context()
        if restrict:
            try:
                pools = requested_pools(ctx.pools, restrict, use, version)
            except RequestedPoolUnusable:
                ctx = self._context(fresh=True)  # errors must not come from a stale cache
                pools = requested_pools(ctx.pools, restrict, use, version)
        else:
            pools = ctx.usable(self._node(node).labels, use, version)
            if not pools:
                ctx = self._context(fresh=True)  # errors must not come from a stale cache
                pools = ctx.usable(self._node(node).labels, use, version)
            if not pools:
                raise NoUsablePools(node, use, version)

        def want() -> int:
            return num - len(got)

        # (a) The node's confirmed affine blocks, cached with their revisions.
        affine = self._affine.get(node)
        if affine is None:
            affine = self._load_affinities(node)
        if self._fill_affine(node, handle_id, attrs, pools, affine, got, want, new_handle) or not want():
            return

        # (b) Claim new blocks. First pick up blocks a sibling process of this node claimed.
        known = set(affine)
        affine = self._load_affinities(node)
        fresh = [c for c in affine if c not in known]
        if fresh and self._fill_affine(node, handle_id, attrs, pools, fresh, got,
                                            want, new_handle):
            return
        limit_hit = False
        listing = _BlockListing(self, version)
        if ctx.config.autoAllocateBlocks:
            while want():
                outcome, cidr = self._claim_any(node, pools, listing)
                if outcome is not _Outcome.CLAIMED:
                    limit_hit = outcome is _Outcome.LIMIT
                    break
                assert cidr is not None
                # Taken from now on, so the next round claims another block, never this one.
                listing.claimed(cidr)
                self._known_blocks.add(cidr)
                pool = self._pool_of(cidr, pools)
                self._assign_from(cidr, node, handle_id, attrs, want(), pool, True, got,
                                  new_handle)
        if not want():
            return

        # (c) Borrow from blocks of other nodes, unless strict affinity forbids it.
        if ctx.config.strictAffinity:
            if limit_hit:
                raise BlockLimitReached(ctx.config.effective_max_blocks, node, num)
            if self._borrowable(node, pools, listing):
                raise StrictAffinityForbidsBorrowing(node, num)
            raise NoIPsAvailable([p.spec.cidr for p in pools], num, node)
        for _ in range(self._retries):
            borrowable = self._borrowable(node, pools, listing)
            if not borrowable:
                break
            _log.debug("Attempting to assign %d more addresses from non-affine blocks", want())
            for cidr in borrowable:
                listed = listing.get(cidr)
                if listed is not None and (cidr not in self._blocks
                                           or self._blocks[cidr][1] < listed[1]):
                    self._blocks[cidr] = listed
                pool = self._pool_of(cidr, pools)
                self._assign_from(cidr, node, handle_id, attrs, want(), pool, False, got,
                                  new_handle)
                if not want():
                    return
            # Others filled what we listed; blocks claimed since may have room: list again.
            listing.refresh()
        raise NoIPsAvailable([p.spec.cidr for p in pools], num, node)

    def _borrowable(self, node: str, pools: list[IPPool], listing: _BlockListing) -> list[str]:
        """Other nodes' blocks with room, in this node's seeded random order."""
        found = []
        for cidr in listing.cidrs():
            if self._pool_of(cidr, pools) is None:
                continue
            entry = listing.get(cidr)
            if entry is not None and entry[0].host != node and entry[0].free > 0:
                found.append(cidr)
        found.sort(key=lambda c: int(ipaddress.ip_network(c).network_address))
        random.Random(seed_for(node)).shuffle(found)
        return found

    def _fill_affine(self, node: str, handle_id: str, attrs: dict[str, str],
                     pools: list[IPPool], affine: list[str], got: list[tuple[str, str, int]],
                     want: Callable[[], int], new_handle: bool) -> bool:
        """Assign from the given affine blocks; True when the request is complete."""
        candidates = [c for c in affine if self._pool_of(c, pools) is not None]
        # Pass 1: cached blocks with room, as cached (the CAS validates the cache).
        for cidr in candidates:
            entry = self._blocks.get(cidr)
            if want() and entry is not None and entry[0].free > 0:
                self._assign_from(cidr, node, handle_id, attrs, want(),
                                  self._pool_of(cidr, pools), True, got, new_handle)
        if not want():
            return True
        # Pass 2: blocks not cached or cached as full, re-read together in one round
        # trip, since a release by another process may have made room.
        unknown = [c for c in candidates if c not in self._blocks or self._blocks[c][0].free == 0]
        if unknown and all(c in self._blocks for c in unknown):
            # All cached as full: one payload-free round trip tells whether any changed.
            ok, _, _ = self.client.transaction(
                [Compare(block_key(c), "mod", "==", self._blocks[c][1]) for c in unknown], [])
            if ok:
                return not want()
        self._read_blocks(unknown)
        for cidr in unknown:
            entry = self._blocks.get(cidr)
            if want() and entry is not None and entry[0].free > 0:
                self._assign_from(cidr, node, handle_id, attrs, want(),
                                  self._pool_of(cidr, pools), True, got, new_handle)
        return not want()

    def _assign_from(self, cidr: str, node: str, handle_id: str, attrs: dict[str, str],
                     num: int, pool: IPPool | None, affine: bool,
                     got: list[tuple[str, str, int]], new_handle: bool = False) -> int:
        """Assign up to num addresses from one block (block + handle in one txn).

        `new_handle`: HandleExists unless this call is the one creating the handle
        (known, cached or learnt from a failed txn, before anything was assigned).
        """
        bkey, hkey = block_key(cidr), handle_key(handle_id)
        for _ in range(self._retries):
            if new_handle and not got and handle_id in self._handles:
                raise HandleExists(handle_id)
            entry = self._blocks.get(cidr) or self._read_block(cidr)
            if entry is None:
                return 0
            block, rev = entry
            if affine and block.host != node:
                self._drop_affine(node, cidr)  # no longer ours (released or reclaimed)
                return 0
            if block.free == 0:
                return 0
            new_block, ordinals = block.auto_assign(num, handle_id, attrs)
            handle, hrev = self._handles.get(handle_id) or (Handle(), 0)
            grown_handle = handle.increment(cidr, len(ordinals))
            guards = [Compare(bkey, "mod", "==", rev), _handle_guard(hkey, hrev),
                      *self._guards(pool, node, config=not affine)]
            ok, gets, wrote_at = self.client.transaction(
                guards,
                [put_op(bkey, new_block.to_json()), put_op(hkey, grown_handle.to_json())],
                [get_op(bkey), get_op(hkey)],
            )
            if ok:
                self._blocks[cidr] = (new_block, wrote_at)
                self._remember_handle(handle_id, grown_handle, wrote_at)
                for o in ordinals:
                    got.append((new_block.ip_of(o), cidr, block.sequence_number))
                return len(ordinals)
            self._absorb_failure(cidr, rev, handle_id, hrev, gets)
        raise RetriesExhausted(f"block {cidr}", self._retries)

    def _absorb_failure(self, cidr: str, rev: int, handle_id: str, hrev: int,
                        gets: list[list[KeyValue]]) -> None:
        """Take the fresh block and handle from a failed txn; _Stale if neither moved."""
        moved = False
        bkv, hkv = _first(gets, 0), _first(gets, 1)
        if bkv is None or bkv.mod_revision != rev:
            moved = True
            if bkv is None:
                self._remember_block(cidr, None, 0)
            else:
                self._blocks[cidr] = (self._decode_block(bkv), bkv.mod_revision)
        if (hkv.mod_revision if hkv else 0) != hrev:
            moved = True
            if hkv is None:
                self._remember_handle(handle_id, None, 0)
            else:
                try:
                    self._remember_handle(handle_id, Handle.from_json(hkv.value), hkv.mod_revision)
                except ValueError as exc:
                    raise CorruptDocument(hkv.key, str(exc)) from None
        if not moved:
            raise _Stale()

    # -- claiming --------------------------------------------------------------------------

    def _claim_any(self, node: str, pools: list[IPPool],
                   listing: _BlockListing) -> tuple[str, str | None]:
        """Claim one free block (or reclaim an old empty one) in the node's order.

        Free CIDRs are found by probing the node's seeded order with a read-only
        "does this block exist?" transaction, skipping blocks this allocator
        already knows exist; after PROBE_MISSES misses (a filling pool) it lists
        the blocks instead, as Calico always does.
        """
        # Withdraw this node's pending affinities for blocks another node holds: claims
        # interrupted by a crash, which lost the block meanwhile.
        for cidr, kv in self._pending.pop(node, {}).items():
            bkv = self.client.get(block_key(cidr))
            if bkv is not None and self._decode_block(bkv).host != node:
                _log.info("withdrawing stale pending affinity %s", kv.key)
                self._withdraw_pending(kv.key, kv)
        max_blocks = self._context().config.effective_max_blocks
        if len(self._affine.get(node, [])) >= max_blocks:
            return _Outcome.LIMIT, None
        for pool in pools:
            found = self._claim_in_pool(node, pool, listing, max_blocks)
            if found[0] is not _Outcome.LOST:
                return found
            reclaimed = self._reclaim_empty(node, pool, listing)
            if reclaimed is not None:
                outcome = self._claim(node, reclaimed, pool, max_blocks)
                if outcome is not _Outcome.LOST:
                    return outcome, reclaimed
        return _Outcome.LOST, None

    def _claim_in_pool(self, node: str, pool: IPPool, listing: _BlockListing,
                       max_blocks: int) -> tuple[str, str | None]:
        for _ in range(2):  # first from what we know and probe; then from a full listing
            use_listing = listing.listed
            known = listing.cidrs() if use_listing else self._known_blocks
            taken = {block_index(pool, c) for c in known if pool_for_block([pool], c)}
            misses = 0
            for cidr in self._free_cidrs(pool, node, taken):
                if not use_listing:
                    if misses >= PROBE_MISSES:
                        break  # the pool is filling up: list it rather than probe on
                    if not self._block_absent(cidr):
                        self._known_blocks.add(cidr)
                        taken.add(block_index(pool, cidr))
                        misses += 1
                        continue
                outcome = self._claim(node, cidr, pool, max_blocks)
                if outcome is not _Outcome.LOST:
                    return outcome, cidr
                self._known_blocks.add(cidr)
                taken.add(block_index(pool, cidr))
            else:
                if use_listing:
                    return _Outcome.LOST, None  # every CIDR of the pool has a block
            listing.refresh()
            self._known_blocks.update(listing.cidrs())
        return _Outcome.LOST, None

    def _block_absent(self, cidr: str) -> bool:
        """One read-only round trip: does no block exist at cidr (right now)?"""
        ok, _, _ = self.client.transaction([Compare(block_key(cidr), "version", "==", 0)], [])
        return ok

    @staticmethod
    def _free_cidrs(pool: IPPool, node: str, taken: set[int]) -> Iterable[str]:
        """The pool's block CIDRs not known to be taken, in the node's seeded order
        (`taken` may grow during the iteration)."""
        for index in seeded_block_indexes(pool, node):
            if index not in taken:
                yield block_cidr(pool, index)

    def _claim(self, node: str, cidr: str, pool: IPPool, max_blocks: int) -> str:
        """pending affinity -> (create block + confirm affinity, one txn). Returns an _Outcome."""
        akey, bkey = affinity_key(node, cidr), block_key(cidr)
        for _ in range(self._retries):
            # Step 1: declare the intent. A pending affinity left by an interrupted claim
            # of this node (or a sibling process's claim in flight) is taken over as is.
            try:
                arev = self.client.create(akey, PENDING_DOC)
            except KeyExists as exc:
                if exc.current is None:
                    continue
                try:
                    state = Affinity.from_json(exc.current.value).state
                except ValueError:
                    return _Outcome.LOST
                if state == PENDING_DELETION:
                    return _Outcome.LOST  # being released right now; try another block
                arev = exc.current.mod_revision
            # Count this node's blocks after our write, so the guard below also covers
            # every claim that completes after this read.
            kvs, listed_at = self.client.list(affinity_host_prefix(node))
            owned = 0
            for kv in kvs:
                parsed = parse_affinity_key(kv.key)
                if parsed is None or parsed[2] == cidr:
                    continue
                try:
                    owned += Affinity.from_json(kv.value).owns_block
                except ValueError:
                    continue
            if owned >= max_blocks:
                self._withdraw_pending(akey)
                return _Outcome.LIMIT
            # Step 2: create the block and confirm the affinity, atomically.
            block = Block.new(cidr, node, format_time(self._clock()), sequence_start=listed_at)
            guards = [
                Compare(bkey, "version", "==", 0),
                Compare(akey, "mod", "==", arev),
                Compare(affinity_host_prefix(node), "mod", "<", listed_at + 1, prefix=True),
                *self._guards(pool, node, config=True),
            ]
            ok, gets, wrote_at = self.client.transaction(
                guards,
                [put_op(bkey, block.to_json()), put_op(akey, CONFIRMED_DOC)],
                [get_op(bkey), get_op(akey)],
            )
            if ok:
                _log.info("node %s claimed block %s", node, cidr)
                self._adopt(node, cidr, block, wrote_at)
                return _Outcome.CLAIMED
            bkv, akv = _first(gets, 0), _first(gets, 1)
            if bkv is not None:
                existing = self._decode_block(bkv)
                if existing.host == node:
                    # A sibling process of this node created it; make sure it is confirmed.
                    try:
                        if akv is not None and Affinity.from_json(akv.value).state == PENDING:
                            self.client.update(akey, CONFIRMED_DOC, akv.mod_revision)
                    except (ValueError, KeyConflict, KeyMissing):
                        pass  # a sibling confirms it, or `ipam check` reports it
                    self._adopt(node, cidr, existing, bkv.mod_revision)
                    return _Outcome.CLAIMED
                # Lost the race for this CIDR: withdraw our intent (only if still pending).
                self._withdraw_pending(akey, akv)
                return _Outcome.LOST
            if akv is not None and akv.mod_revision == arev:
                # Our affinity did not move, so another guard failed: another affinity
                # of this node (count again), or the pool, config or node (reload). A
                # restart does both; our pending affinity is taken over on the way.
                raise _Stale()
            # Our affinity moved (taken over or withdrawn by a sibling): start again.
        raise RetriesExhausted(f"claiming block {cidr}", self._retries)

    def _adopt(self, node: str, cidr: str, block: Block, rev: int) -> None:
        self._blocks[cidr] = (block, rev)
        affine = self._affine.setdefault(node, [])
        if cidr not in affine:
            affine.append(cidr)

    def _withdraw_pending(self, akey: str, current: KeyValue | None = None) -> None:
        """Compare-and-delete our affinity if it is (still) pending."""
        kv = current if current is not None else self.client.get(akey)
        if kv is None:
            return
        try:
            if Affinity.from_json(kv.value).state != PENDING:
                return
            self.client.delete(akey, kv.mod_revision)
        except (ValueError, KeyConflict, KeyMissing):
            pass

    def _reclaim_empty(self, node: str, pool: IPPool, listing: _BlockListing) -> str | None:
        """Free one block of another node that has been empty for the minimum age."""
        now = self._clock()
        candidates = []
        for cidr in listing.cidrs():
            if pool_for_block([pool], cidr) is None:
                continue
            entry = listing.get(cidr)
            if entry is None or entry[0].host == node:
                continue
            since = entry[0].empty_since_time()
            if since is not None and now - since >= EMPTY_BLOCK_MIN_RECLAIM_AGE:
                candidates.append(cidr)
        candidates.sort()
        random.Random(seed_for(node)).shuffle(candidates)
        for cidr in candidates:
            entry = listing.get(cidr)
            assert entry is not None
            block, rev = entry
            ops: list[Op] = [delete_op(block_key(cidr))]
            if block.host:
                ops.append(delete_op(affinity_key(block.host, cidr)))
            ok, _, _ = self.client.transaction([Compare(block_key(cidr), "mod", "==", rev)], ops)
            if ok:
                _log.info("node %s reclaimed block %s from %s (empty since %s)", node, cidr,
                          block.host or "no node", block.empty_since or block.affinity_claim_time)
                listing.forget(cidr)
                self._known_blocks.discard(cidr)
                self._remember_block(cidr, None, 0)
                return cidr
        return None

    # -- assign a specific address ---------------------------------------------------------

    def assign_ip(self, ip: str, node: str, handle_id: str,
                  attrs: Mapping[str, str] | None = None, use: str = WORKLOAD) -> str:
        """Assign exactly `ip` to `handle_id`, claiming its block for `node` if it has none.

        Errors: AddressNotInPool (no pool, or the pool is disabled or forbids the use),
        AddressAlreadyAssigned, StrictAffinityForbidsBorrowing (the block belongs to
        another node and strict affinity is on), BlockLimitReached.
        """
        addr = str(ipaddress.ip_address(ip))
        if use not in USES:
            raise ValueError(f"intended use must be one of {', '.join(USES)}, not {use!r}")
        attributes = dict(attrs or {})
        attributes.setdefault("node", node)
        with self._lock:
            for _ in range(self._retries):
                try:
                    return self._assign_ip(addr, node, handle_id, attributes, use)
                except _Stale:
                    self._stale()
            raise RetriesExhausted(f"assigning {addr}", self._retries)

    def _assign_ip(self, ip: str, node: str, handle_id: str, attrs: dict[str, str],
                   use: str) -> str:
        ctx = self._context()
        pool = pool_containing(ctx.pools, ip)
        if pool is None or pool.spec.disabled or use not in pool.spec.allowedUses:
            ctx = self._context(fresh=True)  # errors must not come from a stale cache
            pool = pool_containing(ctx.pools, ip)
        if pool is None:
            raise AddressNotInPool(ip)
        if pool.spec.disabled:
            raise AddressNotInPool(ip, f"The provided IP address {ip} is in pool {pool.name} "
                                       f"({pool.spec.cidr}), which is disabled")
        if use not in pool.spec.allowedUses:
            raise AddressNotInPool(ip, f"The provided IP address {ip} is in pool {pool.name} "
                                       f"({pool.spec.cidr}), which does not allow use {use}")
        assert pool.spec.blockSize is not None
        cidr = block_cidr_containing(ip, pool.spec.blockSize)
        bkey, hkey = block_key(cidr), handle_key(handle_id)
        for _ in range(self._retries):
            entry = self._read_block(cidr)  # fresh: errors must not come from a stale cache
            if entry is None:
                outcome = self._claim(node, cidr, pool, ctx.config.effective_max_blocks)
                if outcome is _Outcome.LIMIT:
                    raise BlockLimitReached(ctx.config.effective_max_blocks, node, 1)
                continue
            block, rev = entry
            if block.host != node and ctx.config.strictAffinity:
                raise StrictAffinityForbidsBorrowing(node, 1, (
                    f"IP address {ip} is in block {cidr}, which is affine to "
                    f"{block.host or 'no node'}, not {node}, and strict affinity is enabled"))
            new_block = block.assign(block.ordinal_of(ip), handle_id, attrs)
            handle, hrev = self._handles.get(handle_id) or (Handle(), 0)
            guards = [Compare(bkey, "mod", "==", rev), _handle_guard(hkey, hrev),
                      *self._guards(pool, None, config=True)]
            ok, gets, wrote_at = self.client.transaction(
                guards,
                [put_op(bkey, new_block.to_json()),
                 put_op(hkey, handle.increment(cidr).to_json())],
                [get_op(bkey), get_op(hkey)],
            )
            if ok:
                self._blocks[cidr] = (new_block, wrote_at)
                self._remember_handle(handle_id, handle.increment(cidr), wrote_at)
                return ip
            self._absorb_failure(cidr, rev, handle_id, hrev, gets)
        raise RetriesExhausted(f"block {cidr}", self._retries)

    # -- release ---------------------------------------------------------------------------

    def release_ips(self, ips: Iterable[str], handle: str | None = None,
                    sequence_numbers: Mapping[str, int] | None = None) -> ReleaseResult:
        """Release addresses. With `handle` / `sequence_numbers`, an address is released
        only if it still belongs to that handle / still has that sequence number;
        otherwise it is kept and listed in `refused` (BadSequenceNumber, HandleMismatch)."""
        seqs = sequence_numbers or {}
        options = []
        for ip in ips:
            addr = str(ipaddress.ip_address(ip))
            options.append(ReleaseOption(addr, handle, seqs.get(ip, seqs.get(addr))))
        return self.release(options)

    def release(self, options: Sequence[ReleaseOption]) -> ReleaseResult:
        with self._lock:
            return self._release(options)

    def _release(self, options: Sequence[ReleaseOption]) -> ReleaseResult:
        result = ReleaseResult()
        by_block: dict[str, list[ReleaseOption]] = {}
        for opt in options:
            cidr = self._block_of(opt.ip)
            if cidr is None:
                result.not_assigned.append(opt.ip)
            else:
                by_block.setdefault(cidr, []).append(opt)
        for cidr, opts in by_block.items():
            self._release_in_block(cidr, opts, result)
        return result

    def _block_of(self, ip: str) -> str | None:
        """The CIDR of the existing block holding ip (pool geometry first, then a scan)."""
        pool = pool_containing(self._context().pools, ip)
        if pool is not None and pool.spec.blockSize is not None:
            cidr = block_cidr_containing(ip, pool.spec.blockSize)
            if cidr in self._blocks or self.client.get(block_key(cidr)) is not None:
                return cidr
        # Not where the pool says (pool deleted or re-created): look at every block.
        addr = ipaddress.ip_address(ip)
        kvs, _ = self.client.list(block_prefix(addr.version))
        for kv in kvs:
            listed = parse_block_key(kv.key)
            if listed and addr in ipaddress.ip_network(listed):
                return listed
        return None

    def _release_in_block(self, cidr: str, opts: list[ReleaseOption],
                          result: ReleaseResult) -> None:
        bkey = block_key(cidr)
        for _ in range(self._retries):
            entry = self._read_block(cidr)
            if entry is None:
                result.not_assigned.extend(o.ip for o in opts)
                return
            block, rev = entry
            requests = [ReleaseRequest(block.ordinal_of(o.ip), o.sequence_number, o.handle_id)
                        for o in opts]
            new_block, outcome = block.release(requests, format_time(self._clock()))
            if not outcome.released:
                self._record(block, outcome, result)
                return
            per_handle: dict[str, int] = {}
            for _, h in outcome.released:
                if h is not None:
                    per_handle[h] = per_handle.get(h, 0) + 1
            handles = self._read_handles(list(per_handle))
            guards = [Compare(bkey, "mod", "==", rev)]
            ops: list[Op] = [put_op(bkey, new_block.to_json())]
            updated: dict[str, Handle | None] = {}
            for h, n in per_handle.items():
                doc, hrev = handles[h]
                guards.append(_handle_guard(handle_key(h), hrev))
                if hrev == 0:
                    continue  # no handle document (written by someone else): nothing to count
                remaining = doc.decrement(cidr, n)
                updated[h] = remaining
                ops.append(put_op(handle_key(h), remaining.to_json()) if remaining
                           else delete_op(handle_key(h)))
            ok, _, wrote_at = self.client.transaction(guards, ops)
            if ok:
                self._blocks[cidr] = (new_block, wrote_at)
                for h, handle in updated.items():
                    self._remember_handle(h, handle, wrote_at)
                self._record(block, outcome, result)
                return
        raise RetriesExhausted(f"releasing from block {cidr}", self._retries)

    @staticmethod
    def _record(block: Block, outcome: ReleaseOutcome, result: ReleaseResult) -> None:
        result.released.extend(block.ip_of(o) for o, _ in outcome.released)
        result.not_assigned.extend(block.ip_of(o) for o in outcome.not_assigned)
        for o, err in outcome.refused:
            result.refused[block.ip_of(o)] = err

    def _read_handles(self, handle_ids: list[str]) -> dict[str, tuple[Handle, int]]:
        if not handle_ids:
            return {}
        _, gets, _ = self.client.transaction([], [get_op(handle_key(h)) for h in handle_ids])
        out = {}
        for i, h in enumerate(handle_ids):
            kv = _first(gets, i)
            if kv is None:
                out[h] = (Handle(), 0)
                continue
            try:
                out[h] = (Handle.from_json(kv.value), kv.mod_revision)
            except ValueError as exc:
                raise CorruptDocument(kv.key, str(exc)) from None
        return out

    def release_by_handle(self, handle_id: str) -> list[str]:
        """Release every address of a handle (found through the handle document)."""
        hkey = handle_key(handle_id)
        released: list[str] = []
        with self._lock:
            for _ in range(self._retries * 4):
                hkv = self.client.get(hkey)
                if hkv is None:
                    if released:
                        return released
                    raise HandleNotFound(handle_id)
                try:
                    handle = Handle.from_json(hkv.value)
                except ValueError as exc:
                    raise CorruptDocument(hkey, str(exc)) from None
                if not handle.blocks:
                    try:
                        self.client.delete(hkey, hkv.mod_revision)
                    except (KeyConflict, KeyMissing):
                        continue
                    self._remember_handle(handle_id, None, 0)
                    return released
                cidr = sorted(handle.blocks)[0]
                rest = handle.without(cidr)
                handle_op = put_op(hkey, rest.to_json()) if rest else delete_op(hkey)
                bkey = block_key(cidr)
                bkv = self.client.get(bkey)
                if bkv is None:
                    guards = [Compare(hkey, "mod", "==", hkv.mod_revision),
                              Compare(bkey, "version", "==", 0)]
                    ok, _, wrote_at = self.client.transaction(guards, [handle_op])
                    if ok:
                        self._remember_handle(handle_id, rest, wrote_at)
                        self._remember_block(cidr, None, 0)
                    continue
                block = self._decode_block(bkv)
                new_block, ordinals = block.release_handle(handle_id, format_time(self._clock()))
                guards = [Compare(hkey, "mod", "==", hkv.mod_revision),
                          Compare(bkey, "mod", "==", bkv.mod_revision)]
                ops = [handle_op]
                if ordinals:
                    ops.append(put_op(bkey, new_block.to_json()))
                ok, _, wrote_at = self.client.transaction(guards, ops)
                if ok:
                    self._remember_handle(handle_id, rest, wrote_at)
                    self._blocks[cidr] = (new_block, wrote_at if ordinals else bkv.mod_revision)
                    released.extend(block.ip_of(o) for o in ordinals)
            raise RetriesExhausted(f"releasing handle {handle_id}", self._retries)

    # -- affinities ------------------------------------------------------------------------

    def release_block_affinity(self, node: str, cidr: str, require_empty: bool = True) -> None:
        """Give up node's affinity for a block: confirmed -> pendingDeletion -> deleted.

        An empty block is deleted together with the affinity (one txn). A block that
        is not empty raises BlockNotEmpty (the affinity returns to confirmed), unless
        require_empty=False: then the block stays, with no affinity.
        """
        cidr = str(ipaddress.ip_network(cidr))
        akey, bkey = affinity_key(node, cidr), block_key(cidr)
        with self._lock:
            for _ in range(self._retries):
                akv = self.client.get(akey)
                if akv is None:
                    raise AffinityNotFound(node, cidr)
                try:
                    state = Affinity.from_json(akv.value).state
                except ValueError as exc:
                    raise CorruptDocument(akey, str(exc)) from None
                if state != PENDING_DELETION:
                    try:
                        arev = self.client.update(akey, PENDING_DELETION_DOC, akv.mod_revision)
                    except (KeyConflict, KeyMissing):
                        continue
                else:
                    arev = akv.mod_revision
                self._drop_affine(node, cidr)
                if self._finish_affinity_release(node, cidr, akey, bkey, arev, require_empty):
                    return
            raise RetriesExhausted(f"releasing affinity {akey}", self._retries)

    def _finish_affinity_release(self, node: str, cidr: str, akey: str, bkey: str, arev: int,
                                 require_empty: bool) -> bool:
        for _ in range(self._retries):
            bkv = self.client.get(bkey)
            aguard = Compare(akey, "mod", "==", arev)
            if bkv is None:
                ok, _, _ = self.client.transaction(
                    [aguard, Compare(bkey, "version", "==", 0)], [delete_op(akey)])
            else:
                block = self._decode_block(bkv)
                bguard = Compare(bkey, "mod", "==", bkv.mod_revision)
                if block.host != node:
                    ok, _, _ = self.client.transaction([aguard, bguard], [delete_op(akey)])
                elif block.is_empty:
                    ok, _, _ = self.client.transaction(
                        [aguard, bguard], [delete_op(bkey), delete_op(akey)])
                elif require_empty:
                    try:
                        self.client.update(akey, CONFIRMED_DOC, arev)
                        self._adopt(node, cidr, block, bkv.mod_revision)
                    except (KeyConflict, KeyMissing):
                        pass
                    raise BlockNotEmpty(cidr, block.in_use)
                else:
                    ok, _, _ = self.client.transaction(
                        [aguard, bguard],
                        [put_op(bkey, block.with_affinity(None).to_json()), delete_op(akey)])
            if ok:
                self._remember_block(cidr, None, 0)
                _log.info("node %s released its affinity for block %s", node, cidr)
                return True
            current = self.client.get(akey)
            if current is None or current.mod_revision != arev:
                return False  # the affinity changed under us: start over
        return False

    # -- queries ---------------------------------------------------------------------------

    def get_assignment(self, ip: str) -> Assignment | None:
        """The allocation holding ip, or None when it is free or in no block."""
        addr = str(ipaddress.ip_address(ip))
        with self._lock:
            cidr = self._block_of(addr)
            if cidr is None:
                return None
            entry = self._read_block(cidr)
        if entry is None:
            return None
        block = entry[0]
        ordinal = block.ordinal_of(addr)
        if block.allocations[ordinal] is None:
            return None
        attr = block.attribute_of(ordinal) or Attribute(None)
        return Assignment(addr, cidr, ordinal, attr.handle_id, dict(attr.secondary),
                          block.sequence_number_of(ordinal), block.affinity)

    def affine_blocks(self, node: str, version: int = 4) -> list[str]:
        """The node's confirmed affine blocks (pending ones count as absent)."""
        with self._lock:
            return list(self._load_affinities(node, version))

