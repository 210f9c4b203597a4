"""Start-up resources: IPPools, BGPConfigurations and BGPPeers given in the chart's values.

Owns reading TORTIE_STARTUP_RESOURCES (a multi-document YAML of projectcalico.org/v3
objects) and applying it at start-up without ever overwriting what an operator
changed later with `ctl`. Every object this module writes carries the annotation
`tortie.io/startup-applied: <sha256 of the canonical JSON of the spec it wrote>`,
so a stored object tells whether its spec is still the one start-up wrote.

What happens to each object (`decide`, pure):

  stored                                               action
  ---------------------------------------------------  ------------------------------------
  absent                                               create (losing the race: re-decide)
  spec equal to the file's                             nothing (a restart writes nothing)
  annotation = hash of its spec, file's spec differs   compare-and-swap update, new annotation
  anything else (changed by an operator, or made or    keep the stored one, log it at INFO
  replaced without the annotation)

Exceptions to the table: the empty `default` BGPConfiguration that start-up itself
creates (agent.startup.ensure_default_config) counts as start-up's, so values given
for it replace it; an update that would change a pool's CIDR or blockSize (which
Calico never allows) refuses the start, as does a pool that would overlap another.

Invariants:
  * The file is read and every document validated (kind, fields, duplicate names,
    overlaps among its pools) before anything is written; an error names the file,
    the document's index, the field and the value.
  * Every write is a create-if-absent or a compare-and-swap on the revision read;
    a lost race is re-read and decided again, never forced.
  * Only `spec` is compared and hashed; labels and annotations given in the file are
    written with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datastore.errors import (
    DatastoreError,
    FieldError,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    UpdateConflict,
    ValidationError,
)
from datastore.manifest import ManifestError, decode_documents, read_source
from datastore.resources import BGPConfiguration, BGPPeer, IPPool, Resource, parse_document
from datastore.resources.ippool import find_overlap, immutable_changes
from datastore.store import ResourceStore

from .errors import StartupResourcesError

_log = logging.getLogger(__name__)

ANNOTATION = "tortie.io/startup-applied"
KINDS: tuple[type[Resource], ...] = (IPPool, BGPConfiguration, BGPPeer)
WRITE_RETRIES = 5

Ident = tuple[str, str]  # (kind, name); all three kinds are cluster-wide


def ident(res: Resource) -> Ident:
    return res.kind_name, res.name


# -- reading ------------------------------------------------------------------------------------


def load_startup_resources(path: str) -> list[Resource]:
    """Every object of the file, validated; StartupResourcesError on the first problem.
    A file with no documents is no resources."""
    try:
        docs = decode_documents(read_source(path), path, allow_empty=True)
    except ManifestError as exc:
        raise StartupResourcesError(f"start-up resources {path}: {exc}") from None
    allowed = ", ".join(k.kind_name for k in KINDS)
    resources: list[Resource] = []
    seen: dict[Ident, int] = {}
    for index, doc in enumerate(docs, start=1):
        where = f"start-up resources {path}: document {index}"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind not in {k.kind_name for k in KINDS}:
            raise StartupResourcesError(
                f"{where}: error with field kind = '{kind}' (only {allowed} may be given)")
        try:
            res = parse_document(doc)
        except ValidationError as exc:
            raise StartupResourcesError(f"{where}: {exc}") from None
        if res.metadata.resourceVersion is not None:
            raise StartupResourcesError(
                f"{where}: error with field metadata.resourceVersion = "
                f"'{res.metadata.resourceVersion}' (start-up resources must not name a revision)")
        if ident(res) in seen:
            raise StartupResourcesError(
                f"{where}: duplicate {res.kind_name} name '{res.name}' "
                f"(also in document {seen[ident(res)]})")
        seen[ident(res)] = index
        resources.append(res)
    pools = [r for r in resources if isinstance(r, IPPool)]
    for i, pool in enumerate(pools):
        overlap = find_overlap(pool, pools[:i])  # named by the later document
        if overlap:
            raise StartupResourcesError(
                f"start-up resources {path}: document {seen[ident(pool)]}: {overlap}")
    return resources


# -- deciding (pure) --------------------------------------------------------------------------


def spec_hash(res: Resource) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of the resource's spec."""
    spec = res.dump().get("spec", {})
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _spec(res: Resource) -> Any:
    return res.dump().get("spec", {})


@dataclass(frozen=True)
class Create:
    resource: Resource  # the file's object with the annotation


@dataclass(frozen=True)
class Update:
    resource: Resource  # with the stored revision (the compare-and-swap) and new annotation


@dataclass(frozen=True)
class Unchanged:
    pass


@dataclass(frozen=True)
class Keep:
    reason: str  # why the stored object is not start-up's to change


@dataclass(frozen=True)
class Refuse:
    errors: tuple[FieldError, ...]


Action = Create | Update | Unchanged | Keep | Refuse


def _annotated(wanted: Resource, stored: Resource | None) -> Resource:
    """The file's object as written: the stored object's other annotations kept, ours
    set to the hash of this spec, and the stored revision (None for a create)."""
    annotations = dict(stored.metadata.annotations or {}) if stored else {}
    annotations.update(wanted.metadata.annotations or {})
    annotations[ANNOTATION] = spec_hash(wanted)
    meta = wanted.metadata.model_copy(update={
        "annotations": annotations,
        "resourceVersion": stored.metadata.resourceVersion if stored else None,
    })
    return wanted.model_copy(update={"metadata": meta})


def _startups(stored: Resource) -> bool:
    """Start-up wrote this and nobody changed it since (or it is the empty default
    BGPConfiguration start-up creates when no values give one)."""
    annotation = (stored.metadata.annotations or {}).get(ANNOTATION)
    if annotation is not None:
        return annotation == spec_hash(stored)
    return isinstance(stored, BGPConfiguration) and stored.name == "default" \
        and _spec(stored) == {}


def decide(stored: Resource | None, wanted: Resource) -> Action:
    """What to do with one object of the file given what is stored under its name. Pure."""
    if stored is None:
        return Create(_annotated(wanted, None))
    if _spec(stored) == _spec(wanted):
        return Unchanged()
    if not _startups(stored):
        if ANNOTATION in (stored.metadata.annotations or {}):
            return Keep("was changed since tortie applied it at start-up")
        return Keep("has no tortie.io/startup-applied annotation (someone else made or "
                    "replaced it)")
    if isinstance(wanted, IPPool) and isinstance(stored, IPPool):
        errors = immutable_changes(wanted, stored)
        if errors:
            return Refuse(tuple(errors))
    return Update(_annotated(wanted, stored))


def check_pool_overlaps(actions: Sequence[tuple[Resource, Action]],
                        stored_pools: Sequence[IPPool]) -> list[tuple[IPPool, FieldError]]:
    """Each pool to be written that would overlap another pool then existing. Pure."""
    written = [a.resource for _, a in actions
               if isinstance(a, Create | Update) and isinstance(a.resource, IPPool)]
    names = {p.name for p in written}
    after = [p for p in stored_pools if p.name not in names] + written
    found = []
    for pool in written:
        overlap = find_overlap(pool, after)
        if overlap:
            found.append((pool, overlap))
    return found


# -- applying -----------------------------------------------------------------------------------


def _describe(res: Resource) -> str:
    return f"{res.kind_name} '{res.name}'"


def _refusal(path: str, res: Resource, errors: Sequence[FieldError]) -> StartupResourcesError:
    return StartupResourcesError(
        f"start-up resources {path}: {_describe(res)}: {ValidationError(fields=list(errors))}")


def plan(store: ResourceStore, wanted: Sequence[Resource], path: str
         ) -> list[tuple[Resource, Action]]:
    """Read what is stored and decide every object; refuse before any write."""
    actions = [(res, decide(store.find(type(res), res.name), res)) for res in wanted]
    for res, action in actions:
        if isinstance(action, Refuse):
            raise _refusal(path, res, action.errors)
    if any(isinstance(r, IPPool) for r in wanted):
        overlaps = check_pool_overlaps(actions, store.list(IPPool))
        if overlaps:
            pool, overlap = overlaps[0]
            raise _refusal(path, pool, [overlap])
    return actions


def _write_one(store: ResourceStore, wanted: Resource, action: Action, path: str) -> str:
    """Carry out one decision; on a lost race re-read and decide again. Returns the outcome."""
    for _ in range(WRITE_RETRIES):
        try:
            match action:
                case Create(resource):
                    store.create(resource)
                    _log.info("created %s from start-up resources", _describe(wanted))
                    return "created"
                case Update(resource):
                    store.update(resource)
                    _log.info("updated %s from start-up resources", _describe(wanted))
                    return "updated"
                case Unchanged():
                    _log.debug("%s is as the start-up resources say", _describe(wanted))
                    return "unchanged"
                case Keep(reason):
                    _log.info("%s %s; keeping the stored one", _describe(wanted), reason)
                    return "kept"
                case Refuse(errors):
                    raise _refusal(path, wanted, errors)
        except (ResourceAlreadyExists, UpdateConflict, ResourceDoesNotExist) as exc:
            _log.info("%s changed while start-up wrote it (%s); deciding again",
                      _describe(wanted), exc)
        except ValidationError as exc:
            # An overlap with a pool made since the plan: the same refusal, found later.
            raise StartupResourcesError(
                f"start-up resources {path}: {_describe(wanted)}: {exc}") from None
        action = decide(store.find(type(wanted), wanted.name), wanted)
    raise StartupResourcesError(
        f"start-up resources {path}: {_describe(wanted)} kept changing while start-up "
        f"wrote it; gave up after {WRITE_RETRIES} attempts")


def apply_startup_resources(store: ResourceStore, wanted: Sequence[Resource], path: str
                            ) -> dict[Ident, str]:
    """Apply the file's objects in the file's order (no kind refers to another by
    existence). Returns (kind, name) -> created | updated | unchanged | kept."""
    outcomes: dict[Ident, str] = {}
    for res, action in plan(store, wanted, path):
        try:
            outcomes[ident(res)] = _write_one(store, res, action, path)
        except DatastoreError as exc:
            raise StartupResourcesError(
                f"start-up resources {path}: {_describe(res)}: {exc}") from exc
    return outcomes


def summary(outcomes: Mapping[Ident, str]) -> str:
    counts: dict[str, int] = {}
    for outcome in outcomes.values():
        counts[outcome] = counts.get(outcome, 0) + 1
    return ", ".join(f"{n} {o}" for o, n in sorted(counts.items())) or "none"


__all__ = [
    "ANNOTATION", "Action", "Create", "Keep", "Refuse", "Unchanged", "Update",
    "apply_startup_resources", "check_pool_overlaps", "decide", "load_startup_resources",
    "plan", "spec_hash",
]
