"""`ipam check`: find leaks and inconsistencies; `release --from-report`: undo them safely.

Owns the consistency rules between blocks, handles, affinities and the things
that use addresses (nodes' tunnel addresses, workloads). The check itself is
pure (`run_check` over a `Snapshot`); `load_snapshot` reads everything at ONE
etcd revision, so the picture is consistent even while allocations go on.

Who is a live owner is decided by pluggable OwnerSources:
  * an owner source lists addresses in use (Node tunnel addresses, workload
    endpoints' ipNetworks) and may judge an allocation live or leaked;
  * an allocation is in use if some source lists its IP or judges it live;
    it is leaked only if a source judges it leaked; with no opinion at all it
    is assumed in use (never release what cannot be proven dead: Calico's
    GC once released healthy pods' addresses, issue #5044).
Until the CNI writes WorkloadEndpoints, NodeOwners judges from the handle's
attributes: a `node` attribute naming a Node that no longer exists is a leak,
a tunnel address of an existing node is live. WorkloadEndpointOwners already
reads Calico-layout endpoints; make it authoritative once the CNI writes them.

The report (`-o`) is calicoctl's (`allocations` by IP with handle, sequence
number and inUse; `leakedHandles`) plus a `tortie` section with the etcd
revisions each repair must still find, so `release --from-report` only
undoes what is still exactly as reported: IPs by sequence number and handle,
handles and affinities by mod revision. tortie has no datastore lock; those
guards are what make releasing from a report safe on a live cluster.
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from datastore.errors import IPAMDocumentError
from datastore.etcd import Compare, EtcdClient, KeyValue, Op, delete_op, put_op
from datastore.ipam_documents import block_owner
from datastore.keys import (
    IPAM_PREFIX,
    affinity_key,
    block_key,
    block_prefix,
    handle_key,
    parse_affinity_key,
    parse_block_key,
    parse_handle_key,
    resource_prefix,
)
from datastore.resources import IPPool, Node

from .affinity import CONFIRMED, CONFIRMED_DOC, PENDING, PENDING_DELETION, Affinity
from .allocator import Allocator, ReleaseOption
from .block import Block
from .handle import Handle

_log = logging.getLogger(__name__)

REPORT_VERSION = "tortie-ipam-report/1"
NODES_TO_PRINT = 20


# -- the snapshot ----------------------------------------------------------------------------


@dataclass
class BlockEntry:
    cidr: str
    key: str
    rev: int
    block: Block | None  # None: unreadable
    error: str = ""


@dataclass
class AffinityEntry:
    key: str
    node: str
    cidr: str
    rev: int
    state: str | None  # None: unreadable


@dataclass
class Snapshot:
    revision: int
    blocks: list[BlockEntry]
    pools: list[IPPool]
    handles: dict[str, tuple[Handle | None, int]]  # id -> (document or None if unreadable, rev)
    affinities: list[AffinityEntry]


@dataclass(frozen=True)
class Allocation:
    ip: str
    block: str
    ordinal: int
    handle: str | None
    attrs: Mapping[str, str]
    sequence_number: int
    block_host: str | None

    @property
    def node(self) -> str:
        return self.attrs.get("node") or self.block_host or ""

    @property
    def borrowed(self) -> bool:
        return self.node != (self.block_host or "")

    def attr_string(self) -> str:
        """calicoctl's formatAttrs: 'Main:<handle> Extra:k=v,k=v'."""
        extra = ",".join(f"{k}={self.attrs[k]}" for k in sorted(self.attrs))
        return f"Main:{self.handle or '<none>'} Extra:{extra}"


@dataclass(frozen=True)
class InUse:
    ip: str
    owner: str  # a friendly name, e.g. "Node(node1)"


@dataclass(frozen=True)
class Judgement:
    live: bool
    reason: str


class OwnerSource(Protocol):
    """Something that knows which addresses are really in use."""

    title: str  # e.g. "Loading all nodes."

    def load(self, client: EtcdClient, revision: int) -> None: ...

    def in_use(self) -> Iterable[InUse]: ...

    def summary(self) -> list[str]: ...

    def judge(self, alloc: Allocation) -> Judgement | None: ...


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        return None


class NodeOwners:
    """Nodes: their tunnel addresses are in use; allocations of vanished nodes are leaks."""

    title = "Loading all nodes."

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}
        self._in_use: list[InUse] = []

    def load(self, client: EtcdClient, revision: int) -> None:
        kvs, _ = client.list(resource_prefix(Node.plural), revision=revision)
        for kv in kvs:
            try:
                node = Node.from_stored(kv.value, kv.mod_revision)
            except (ValueError, TypeError):
                _log.warning("unreadable Node at %s", kv.key)
                continue
            self.nodes[node.name] = node
            spec = node.spec
            addrs = [spec.ipv4VXLANTunnelAddr, spec.bgp.ipv4IPIPTunnelAddr if spec.bgp else None,
                     spec.wireguard.interfaceIPv4Address if spec.wireguard else None]
            for addr in addrs:
                ip = _ip(addr) if addr else None
                if ip:
                    self._in_use.append(InUse(ip, f"Node({node.name})"))

    def in_use(self) -> Iterable[InUse]:
        return self._in_use

    def summary(self) -> list[str]:
        return [f"Found {len(self._in_use)} node tunnel IPs."]

    def judge(self, alloc: Allocation) -> Judgement | None:
        node = alloc.attrs.get("node")
        if not node:
            return None
        if node not in self.nodes:
            return Judgement(False, f"node {node} no longer exists")
        if alloc.attrs.get("type", "").endswith("TunnelAddress"):
            return Judgement(True, f"Node({node}) tunnel address")
        return None


class WorkloadEndpointOwners:
    """WorkloadEndpoints in Calico's layout: their ipNetworks are in use.

    Not authoritative yet (no opinion on unlisted addresses): the CNI does not
    write endpoints so far. Set authoritative=True once it does; then a
    workload allocation (one with a `pod` attribute) no endpoint lists is a leak.
    """

    title = "Loading all workload endpoints."

    def __init__(self, authoritative: bool = False) -> None:
        self.authoritative = authoritative
        self._in_use: list[InUse] = []

    def load(self, client: EtcdClient, revision: int) -> None:
        kvs, _ = client.list(resource_prefix("workloadendpoints"), revision=revision)
        for kv in kvs:
            try:
                doc = json.loads(kv.value)
                meta, spec = doc.get("metadata") or {}, doc.get("spec") or {}
                name = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
                for net in spec.get("ipNetworks") or []:
                    ip = _ip(net)
                    if ip:
                        self._in_use.append(InUse(ip, f"Workload({name})"))
            except (ValueError, AttributeError, TypeError):
                _log.warning("unreadable WorkloadEndpoint at %s", kv.key)

    def in_use(self) -> Iterable[InUse]:
        return self._in_use

    def summary(self) -> list[str]:
        return [f"Found {len(self._in_use)} workload IPs."]

    def judge(self, alloc: Allocation) -> Judgement | None:
        if self.authoritative and alloc.attrs.get("pod"):
            return Judgement(False, "no workload endpoint has this address")
        return None


def default_sources() -> list[OwnerSource]:
    return [NodeOwners(), WorkloadEndpointOwners()]


def load_snapshot(client: EtcdClient, sources: Sequence[OwnerSource] = ()) -> Snapshot:
    """Everything the check needs, read at one revision."""
    kvs, revision = client.list(IPAM_PREFIX)
    blocks: list[BlockEntry] = []
    handles: dict[str, tuple[Handle | None, int]] = {}
    affinities: list[AffinityEntry] = []
    for kv in kvs:
        if (cidr := parse_block_key(kv.key)) is not None:
            blocks.append(_block_entry(cidr, kv))
        elif (handle_id := parse_handle_key(kv.key)) is not None:
            try:
                handles[handle_id] = (Handle.from_json(kv.value), kv.mod_revision)
            except ValueError:
                handles[handle_id] = (None, kv.mod_revision)
        elif (parsed := parse_affinity_key(kv.key)) is not None:
            try:
                state: str | None = Affinity.from_json(kv.value).state
            except ValueError:
                state = None
            affinities.append(AffinityEntry(kv.key, parsed[1], parsed[2], kv.mod_revision, state))
    pool_kvs, _ = client.list(resource_prefix(IPPool.plural), revision=revision)
    pools = []
    for kv in pool_kvs:
        try:
            pools.append(IPPool.from_stored(kv.value, kv.mod_revision))
        except (ValueError, TypeError):
            _log.warning("unreadable IPPool at %s", kv.key)
    for source in sources:
        source.load(client, revision)
    blocks.sort(key=lambda b: _net_key(b.cidr))
    return Snapshot(revision, blocks, pools, handles, affinities)


def _block_entry(cidr: str, kv: KeyValue) -> BlockEntry:
    try:
        block = Block.from_json(kv.value, kv.key)
    except IPAMDocumentError as exc:
        return BlockEntry(cidr, kv.key, kv.mod_revision, None, exc.reason)
    return BlockEntry(cidr, kv.key, kv.mod_revision, block)


def _net_key(cidr: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(cidr)
    return net.version, int(net.network_address), net.prefixlen


def _ip_key(ip: str) -> tuple[int, int]:
    addr = ipaddress.ip_address(ip)
    return addr.version, int(addr)


# -- the check -------------------------------------------------------------------------------


@dataclass
class CheckResult:
    lines: list[str]
    problems: int
    report: dict[str, Any]
    leaked: list[Allocation] = field(default_factory=list)


def run_check(snapshot: Snapshot, sources: Sequence[OwnerSource], *, show_all_ips: bool = False,
              show_problem_ips: bool = False, version: str = "") -> CheckResult:
    """Pure: the check's output lines, problem count and machine-readable report."""
    show_problem_ips = show_problem_ips or show_all_ips
    out: list[str] = ["Checking IPAM for inconsistencies...", ""]
    problems = 0

    # Blocks and their allocations.
    out.append("Loading all IPAM blocks...")
    out.append(f"Found {len(snapshot.blocks)} IPAM blocks.")
    allocations: list[Allocation] = []
    invalid: list[tuple[BlockEntry, list[str]]] = []
    for entry in snapshot.blocks:
        block = entry.block
        if block is None:
            out.append(f" IPAM block {entry.cidr} affinity=<unreadable>:")
            invalid.append((entry, [entry.error]))
            continue
        out.append(f" IPAM block {block.cidr} affinity={block.affinity or '<none>'}:")
        issues = block.problems()
        if block.cidr != entry.cidr:
            issues.append(f"document CIDR {block.cidr} does not match its key")
        if issues:
            invalid.append((entry, issues))
        for ordinal, attr in block.allocated():
            alloc = Allocation(
                ip=block.ip_of(ordinal), block=block.cidr, ordinal=ordinal,
                handle=attr.handle_id if attr else None,
                attrs=dict(attr.secondary) if attr else {},
                sequence_number=block.sequence_number_of(ordinal), block_host=block.host,
            )
            allocations.append(alloc)
            if show_all_ips:
                out.append(f"  {alloc.ip} allocated; attrs {alloc.attr_string()}")
    out.append(f"IPAM blocks record {len(allocations)} allocations.")
    out.append("")

    out.append("Loading all IPAM pools...")
    active = [p for p in snapshot.pools if not p.spec.disabled]
    for p in active:
        out.append(f"  {p.spec.cidr}")
    out.append(f"Found {len(active)} active IP pools.")
    out.append("")

    # What the owner sources say is in use.
    in_use: dict[str, list[str]] = {}
    for source in sources:
        out.append(source.title)
        for item in source.in_use():
            in_use.setdefault(item.ip, []).append(item.owner)
            if show_all_ips:
                out.append(f"  {item.ip} belongs to {item.owner}")
        out.extend(source.summary())
        out.append("")
    if out[-1] == "":
        out.pop()
    out.append(f"Workloads and nodes are using {len(in_use)} IPs.")
    out.append("")

    out.append("Loading all handles")
    by_node: dict[str, int] = {}
    for a in allocations:
        by_node[a.node] = by_node.get(a.node, 0) + 1
    out.append(f"Looking for top (up to {NODES_TO_PRINT}) nodes by allocations...")
    ranked = sorted(by_node, key=lambda n: (-by_node[n], n))
    for n in ranked[:NODES_TO_PRINT]:
        out.append(f"  {n} has {by_node[n]} allocations")
    if ranked:
        out.append(f"Node with most allocations has {by_node[ranked[0]]}; "
                   f"median is {by_node[ranked[len(ranked) // 2]]}")
    out.append("")

    # Allocations without a live owner.
    out.append("Scanning for IPs that are allocated but not actually in use...")
    records: dict[str, list[dict[str, Any]]] = {}
    leaked: list[Allocation] = []
    assumed = 0
    for a in sorted(allocations, key=lambda a: _ip_key(a.ip)):
        owners = list(in_use.get(a.ip, []))
        judgements = [j for s in sources if (j := s.judge(a)) is not None]
        live = [j for j in judgements if j.live]
        dead = [j for j in judgements if not j.live]
        owners += [j.reason for j in live]
        if owners:
            is_used = True
        elif dead:
            is_used = False
        else:
            is_used = True
            assumed += 1
            owners = ["(assumed: no owner source can judge this allocation)"]
        if not is_used:
            leaked.append(a)
            if show_problem_ips:
                out.append(f"  {a.ip} leaked; attrs {a.attr_string()} ({dead[0].reason})")
        records.setdefault(a.ip, []).append(_allocation_record(a, is_used, owners))
    problems += len(leaked)
    out.append(f"Found {len(leaked)} IPs that are allocated in IPAM but not actually in use.")
    if assumed:
        out.append(f"Found {assumed} IPs whose owner no source can check yet (assumed in use).")

    out.append("Scanning for IPs that are in use by a workload or node but not allocated in IPAM...")
    allocated_ips = {a.ip for a in allocations}
    active_nets = [p.spec.network for p in active]
    outside, unallocated = 0, 0
    for ip in sorted(in_use, key=_ip_key):
        owners = in_use[ip]
        if show_problem_ips and len(owners) > 1:
            out.append(f"  {ip} has multiple owners.")
        if ip in allocated_ips:
            continue
        addr = ipaddress.ip_address(ip)
        if not any(addr in net for net in active_nets):
            outside += 1
            if show_problem_ips:
                out.extend(f"  {ip} in use by {o} is not in any active IP pool." for o in owners)
            continue
        unallocated += 1
        if show_problem_ips:
            out.extend(f"  {ip} in use by {o} and in active IPAM pool but has no IPAM allocation."
                       for o in owners)
    problems += outside + unallocated
    out.append(f"Found {outside} in-use IPs that are not in active IP pools.")
    out.append(f"Found {unallocated} in-use IPs that are in active IP pools but have no "
               "corresponding IPAM allocation.")
    out.append("")

    # Handles.
    actual: dict[str, dict[str, int]] = {}
    block_revs: dict[str, int] = {e.cidr: e.rev for e in snapshot.blocks}
    for a in allocations:
        if a.handle is not None:
            per = actual.setdefault(a.handle, {})
            per[a.block] = per.get(a.block, 0) + 1
    out.append("Scanning for IPAM handles with no matching IPs...")
    leaked_handles = sorted(h for h in snapshot.handles if h not in actual)
    if show_all_ips:
        out.extend(f"  {h} doesn't have any active IPs." for h in leaked_handles)
    problems += len(leaked_handles)
    out.append(f"Found {len(leaked_handles)} handles with no matching IPs (and "
               f"{len(snapshot.handles) - len(leaked_handles)} handles with matches).")
    out.append("Scanning for IPs with missing handle...")
    missing_handles = sorted(h for h in actual if h not in snapshot.handles)
    if show_problem_ips:
        out.extend(f"  {h} is in use in a block but doesn't exist." for h in missing_handles)
    out.append(f"Found {len(missing_handles)} handles mentioned in blocks with no matching "
               "handle resource.")
    mismatched = []
    for h in sorted(actual):
        if h not in snapshot.handles:
            mismatched.append(h)
            continue
        doc = snapshot.handles[h][0]
        if doc is None or {k: v for k, v in doc.blocks.items() if v} != actual[h]:
            mismatched.append(h)
    out.append("Scanning for IPAM handles whose counts do not match their blocks...")
    if show_problem_ips:
        for h in mismatched:
            doc = snapshot.handles.get(h, (None, 0))[0]
            out.append(f"  {h} records {dict(doc.blocks) if doc else '<nothing>'}, "
                       f"blocks hold {actual[h]}")
    problems += len(mismatched)
    out.append(f"Found {len(mismatched)} handles whose counts do not match their blocks.")
    out.append("")

    # Affinities against blocks (a pending affinity owns nothing).
    out.append("Scanning for block affinities that do not match their blocks...")
    stale = _affinity_problems(snapshot)
    if show_problem_ips:
        out.extend(f"  {s['key']}: {s['reason']}" for s in stale)
    problems += len(stale)
    out.append(f"Found {len(stale)} block affinities that do not match their blocks.")

    out.append("Scanning for invalid IPAM blocks...")
    if show_problem_ips:
        for entry, issues in invalid:
            out.extend(f"  block {entry.cidr}: {i}" for i in issues)
    problems += len(invalid)
    out.append(f"Found {len(invalid)} invalid IPAMBlocks.")
    out.append(f"Check complete; found {problems} problems.")

    handle_repairs = []
    for h in mismatched:
        doc, rev = snapshot.handles.get(h, (None, 0))
        handle_repairs.append({
            "handle": h, "modRevision": rev, "counts": actual[h],
            "blockRevisions": {c: block_revs[c] for c in actual[h]},
        })
    report = {
        "version": version or REPORT_VERSION,
        "clusterGUID": "",
        "datastoreLocked": False,
        "clusterInformationRevision": "",
        "clusterType": "",
        "allocations": records,
        "leakedHandles": leaked_handles,
        "tortie": {
            "format": REPORT_VERSION,
            "revision": snapshot.revision,
            "problems": problems,
            "leakedHandleRevisions": {h: snapshot.handles[h][1] for h in leaked_handles},
            "handleRepairs": handle_repairs,
            "affinityRepairs": stale,
            "invalidBlocks": [{"cidr": e.cidr, "problems": i} for e, i in invalid],
        },
    }
    return CheckResult(out, problems, report, leaked)


def _allocation_record(a: Allocation, in_use: bool, owners: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {"ip": a.ip}
    if a.handle:
        rec["handle"] = a.handle
    rec["sequenceNumber"] = a.sequence_number
    for key, attr in (("pod", "pod"), ("namespace", "namespace"), ("node", "node"),
                      ("type", "type"), ("creationTimestamp", "timestamp")):
        if a.attrs.get(attr):
            rec[key] = a.attrs[attr]
    if "node" not in rec and a.node:
        rec["node"] = a.node
    rec["inUse"] = in_use
    if a.borrowed:
        rec["borrowed"] = True
    rec["owners"] = owners
    rec["block"] = a.block
    return rec


def _affinity_problems(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Affinities that disagree with the block they name, and blocks missing theirs."""
    blocks = {e.cidr: e for e in snapshot.blocks}
    out: list[dict[str, Any]] = []
    confirmed_for: dict[str, set[str]] = {}
    for aff in sorted(snapshot.affinities, key=lambda a: a.key):
        entry = blocks.get(aff.cidr)
        block = entry.block if entry else None
        brev = entry.rev if entry else 0
        host = block.host if block else None
        base = {"key": aff.key, "node": aff.node, "cidr": aff.cidr, "state": aff.state,
                "modRevision": aff.rev, "blockRevision": brev}
        if aff.state == CONFIRMED:
            if entry is None:
                out.append({**base, "action": "delete",
                            "reason": "confirmed affinity but the block does not exist"})
            elif block_owner(host, aff.state) != aff.node:
                out.append({**base, "action": "delete",
                            "reason": f"confirmed affinity but the block belongs to "
                                      f"{host or 'no node'}"})
            else:
                confirmed_for.setdefault(aff.cidr, set()).add(aff.node)
        elif aff.state == PENDING:
            if block is not None and host == aff.node:
                out.append({**base, "action": "confirm",
                            "reason": "pending affinity of a block the node already holds"})
            else:
                out.append({**base, "action": "delete",
                            "reason": "pending affinity left by an interrupted claim"})
        elif aff.state == PENDING_DELETION:
            if block is not None and host == aff.node and block.is_empty:
                action = "delete-with-block"
            elif block is not None and host == aff.node:
                action = "confirm"
            else:
                action = "delete"
            out.append({**base, "action": action,
                        "reason": "pendingDeletion affinity left by an interrupted release"})
    states = {(a.node, a.cidr): a for a in snapshot.affinities}
    for entry in snapshot.blocks:
        block = entry.block
        if block is None or block.host is None or entry.cidr in confirmed_for:
            continue
        if (block.host, entry.cidr) in states:
            continue  # already reported above (pending / pendingDeletion)
        out.append({"key": affinity_key(block.host, entry.cidr), "node": block.host,
                    "cidr": entry.cidr, "state": None, "modRevision": 0,
                    "blockRevision": entry.rev, "action": "confirm",
                    "reason": f"block is affine to {block.host} but that node has no affinity"})
    return out


# -- release from a report -------------------------------------------------------------------


@dataclass
class ReportReleaseResult:
    requested: int = 0
    released: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # ip -> why it was kept
    handles_deleted: int = 0
    handles_repaired: int = 0
    affinities_repaired: int = 0
    repairs_skipped: list[str] = field(default_factory=list)


class ReportError(ValueError):
    """A report file that is not one `ipam check -o` wrote."""


def parse_report(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ReportError(f"not a JSON report: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("allocations", {}), dict):
        raise ReportError("not an ipam check report (no 'allocations' map)")
    return doc


def leaked_allocations(report: Mapping[str, Any]) -> list[ReleaseOption]:
    """The report's allocations that were not in use, as guarded release requests."""
    out = []
    for ip, allocs in sorted((report.get("allocations") or {}).items(),
                             key=lambda kv: _ip_key(kv[0])):
        for a in allocs or []:
            if a.get("inUse", True):
                continue
            seq = a.get("sequenceNumber")
            out.append(ReleaseOption(str(ipaddress.ip_address(ip)), a.get("handle"),
                                     int(seq) if seq is not None else None))
    return out


def release_from_report(allocator: Allocator, report: Mapping[str, Any]) -> ReportReleaseResult:
    """Undo what a report found, each item only if it is still exactly as reported."""
    client = allocator.client
    result = ReportReleaseResult()
    options = leaked_allocations(report)
    result.requested = len(options)
    released = allocator.release(options)
    result.released = released.released
    for ip in released.not_assigned:
        result.skipped[ip] = "no longer assigned"
    for ip, err in released.refused.items():
        result.skipped[ip] = str(err)

    extra = report.get("tortie") or {}
    for h, rev in sorted((extra.get("leakedHandleRevisions") or {}).items()):
        ok, _, _ = client.transaction([Compare(handle_key(h), "mod", "==", int(rev))],
                                      [delete_op(handle_key(h))])
        result.handles_deleted += ok
        if not ok:
            result.repairs_skipped.append(f"handle {h} changed since the check")
    for rep in extra.get("handleRepairs") or []:
        key = handle_key(rep["handle"])
        guards = [Compare(key, "mod", "==", int(rep["modRevision"]))]
        guards += [Compare(block_key(c), "mod", "==", int(r))
                   for c, r in rep["blockRevisions"].items()]
        counts = {c: int(n) for c, n in rep["counts"].items() if int(n) > 0}
        op = put_op(key, Handle(counts).to_json()) if counts else delete_op(key)
        ok, _, _ = client.transaction(guards, [op])
        result.handles_repaired += ok
        if not ok:
            result.repairs_skipped.append(f"handle {rep['handle']} changed since the check")
    for rep in extra.get("affinityRepairs") or []:
        ok = _repair_affinity(client, rep)
        result.affinities_repaired += ok
        if not ok:
            result.repairs_skipped.append(f"affinity {rep['key']} changed since the check")
    allocator.invalidate()
    return result


def _repair_affinity(client: EtcdClient, rep: Mapping[str, Any]) -> bool:
    key, bkey = rep["key"], block_key(rep["cidr"])
    arev, brev = int(rep["modRevision"]), int(rep["blockRevision"])
    aguard = Compare(key, "mod", "==", arev) if arev else Compare(key, "version", "==", 0)
    bguard = Compare(bkey, "mod", "==", brev) if brev else Compare(bkey, "version", "==", 0)
    action = rep["action"]
    ops: list[Op]
    if action == "delete":
        ops = [delete_op(key)]
    elif action == "confirm":
        ops = [put_op(key, CONFIRMED_DOC)]
    elif action == "delete-with-block":
        ops = [delete_op(key), delete_op(bkey)]
    else:
        return False
    ok, _, _ = client.transaction([aguard, bguard], ops)
    return ok


def list_blocks(client: EtcdClient, version: int = 4) -> list[BlockEntry]:
    kvs, _ = client.list(block_prefix(version))
    out = []
    for kv in kvs:
        cidr = parse_block_key(kv.key)
        if cidr is not None:
            out.append(_block_entry(cidr, kv))
    return sorted(out, key=lambda b: _net_key(b.cidr))
