"""The fake API server's object store: every object, the event history and the one counter.

Owns the state a Kubernetes API server keeps in etcd, and every rule about changing it:
resource versions, uids and timestamps, create/update/patch/delete with their preconditions
and errors, consistent lists, and the history a watch replays. The HTTP side
(`server.py`) only translates requests into these calls.

Invariants:
- One global resourceVersion counter, an integer sent as a decimal string. Every write that
  changes something takes the next value; it becomes the object's metadata.resourceVersion
  and its event's. ("Resource versions", API Concepts: resource versions are opaque strings
  to clients, compared only for equality; the server may order them. "Concurrency Control and
  Consistency", API conventions: every change of an object changes its resourceVersion.)
- An update or patch that changes nothing writes nothing: no new resourceVersion, no event
  (the API server's storage compares before it writes, so a no-op update is not a change).
- The event history holds, in resourceVersion order, every change after the compaction
  point; a watch or consistent list that needs anything before it gets 410 Expired.
- Every failure is an `ApiError` carrying the Status object the API server would send
  (kind Status, apiVersion v1, status Failure, message, reason, details, code), worded as the
  API server words it; a failed call changes nothing.
- All state is guarded by one `threading.Condition`; writers notify it, watches wait on it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import random
import re
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tests.kube_api_fake.selectors import (
    LABEL_VALUE_RE,
    LABEL_VALUE_RULE,
    FieldSelector,
    LabelSelector,
)

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (resource plural, namespace or "", name)


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and what it is called."""

    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    # DELETE answers with the deleted object for these (the API server's registries set
    # ReturnDeletedObject for pods, service accounts and namespaces), a Success Status
    # for the rest.
    returns_deleted_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """`pods`, `leases.coordination.k8s.io`: how the API server names it in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("namespaces", "Namespace", "", "v1", False, returns_deleted_object=True),
    ResourceType("nodes", "Node", "", "v1", False),
    ResourceType("pods", "Pod", "", "v1", True, returns_deleted_object=True),
    ResourceType("serviceaccounts", "ServiceAccount", "", "v1", True,
                 returns_deleted_object=True),
    ResourceType("networkpolicies", "NetworkPolicy", "networking.k8s.io", "v1", True),
    ResourceType("leases", "Lease", "coordination.k8s.io", "v1", True),
)


def resource_type(name: str) -> ResourceType:
    """A served resource by Kind (`Pod`), plural (`pods`) or singular (`pod`)."""
    lowered = name.lower()
    for rtype in RESOURCES:
        if lowered in (rtype.kind.lower(), rtype.plural):
            return rtype
    raise KeyError(f"kind {name!r} is not served by the fake "
                   f"(served: {', '.join(r.kind for r in RESOURCES)})")


# -- Status objects ("Response Status Kind" and "HTTP Status codes", API conventions) --------


class ApiError(Exception):
    """A failed request, as the Status object the API server returns for it."""

    def __init__(self, code: int, reason: str, message: str,
                 details: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status: Obj = {
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }
        if details:
            self.status["details"] = dict(details)


def _details(rtype: ResourceType, name: str) -> Obj:
    details: Obj = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rtype.qualified} "{name}" not found',
                    _details(rtype, name))


def already_exists(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rtype.qualified} "{name}" already exists',
                    _details(rtype, name))


def conflict(rtype: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {rtype.qualified} "{name}": {why}',
                    _details(rtype, name))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(rtype: ResourceType, name: str, field: str, value: Any, why: str) -> ApiError:
    """422 Invalid: the field, its value and why, as field validation reports it."""
    detail = f"Invalid value: {json.dumps(value)}: {why}"
    return ApiError(422, "Invalid", f'{rtype.kind} "{name}" is invalid: {field}: {detail}',
                    {"name": name, "group": rtype.group, "kind": rtype.kind,
                     "causes": [{"reason": "FieldValueInvalid", "message": detail,
                                 "field": field}]})


def expired(message: str) -> ApiError:
    """410 Gone, reason Expired ("410 Gone responses", API Concepts)."""
    return ApiError(410, "Expired", message)


# -- validation of what a client sends ---------------------------------------------------

_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_LABEL_RE = re.compile(rf"^{_DNS_LABEL}$")
_DNS_SUBDOMAIN_RE = re.compile(rf"^{_DNS_LABEL}(\.{_DNS_LABEL})*$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def _check_name(rtype: ResourceType, name: str, field: str) -> None:
    # "Names" (Object Names and IDs): namespaces are RFC 1123 labels, the rest here are
    # RFC 1123 subdomains.
    if rtype.plural == "namespaces":
        if len(name) > 63 or not _DNS_LABEL_RE.match(name):
            raise invalid(rtype, name, field, name,
                          "a lowercase RFC 1123 label must consist of lower case alphanumeric "
                          "characters or '-', and must start and end with an alphanumeric "
                          "character")
    elif len(name) > 253 or not _DNS_SUBDOMAIN_RE.match(name):
        raise invalid(rtype, name, field, name,
                      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
                      "characters, '-' or '.', and must start and end with an alphanumeric "
                      "character")


def _check_labels(rtype: ResourceType, name: str, labels: Any) -> None:
    # "Labels and Selectors", syntax and character set: an optional DNS-subdomain prefix and
    # a name of at most 63 characters; values at most 63 characters, possibly empty.
    if labels is None:
        return
    if not isinstance(labels, dict):
        raise invalid(rtype, name, "metadata.labels", labels, "must be a map of strings")
    for key, value in labels.items():
        prefix, _, label_name = key.rpartition("/")
        if (len(label_name) > 63 or not _LABEL_NAME_RE.match(label_name)
                or (prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)))):
            raise invalid(rtype, name, "metadata.labels", key,
                          "name part must consist of alphanumeric characters, '-', '_' or '.', "
                          "and must start and end with an alphanumeric character; an optional "
                          "prefix must be a DNS subdomain")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE_RE.match(value):
            raise invalid(rtype, name, f"metadata.labels[{key}]", value, LABEL_VALUE_RULE)


def _check_annotations(rtype: ResourceType, name: str, annotations: Any) -> None:
    if annotations is None:
        return
    if not isinstance(annotations, dict) or not all(
            isinstance(v, str) for v in annotations.values()):
        raise invalid(rtype, name, "metadata.annotations", annotations,
                      "must be a map of strings to strings")


def _check_body(rtype: ResourceType, body: Any) -> Obj:
    if not isinstance(body, dict):
        raise bad_request(f"the body of a {rtype.kind} must be a JSON object, not {body!r}")
    metadata = body.get("metadata", {})
    if not isinstance(metadata, dict):
        raise bad_request(f"metadata of a {rtype.kind} must be an object, not {metadata!r}")
    for field, expected in (("kind", rtype.kind), ("apiVersion", rtype.api_version)):
        if body.get(field) not in (None, "", expected):
            raise bad_request(f"the {field} of the provided object ({body[field]!r}) does not "
                              f"match the {field} of the request ({expected!r})")
    return body


def _parse_rv(value: Any, field: str) -> int:
    try:
        number = int(str(value))
    except ValueError:
        raise bad_request(f"{field}: Invalid value: {value!r}: must be a resourceVersion this "
                          "server returned (a decimal integer here)") from None
    if number < 0:
        raise bad_request(f"{field}: Invalid value: {value!r}: must not be negative")
    return number


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- patches ("Patch operations", API Concepts) --------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# Lists that a strategic merge patch merges element by element (their patchMergeKey or
# merge strategy in the Kubernetes types). A merge patch replaces them whole, so the fake
# refuses a strategic patch that touches one rather than silently doing something else.
_MERGED_LISTS = frozenset({
    "metadata.finalizers", "metadata.ownerReferences", "spec.containers",
    "spec.initContainers", "spec.ephemeralContainers", "spec.volumes", "spec.imagePullSecrets",
    "status.conditions", "status.addresses", "status.containerStatuses", "status.podIPs",
    "spec.podCIDRs", "spec.taints",
})


def _strategic_unsupported(patch: Any, path: str = "") -> str | None:
    if not isinstance(patch, dict):
        return None
    for key, value in patch.items():
        here = f"{path}.{key}" if path else key
        if key.startswith("$"):
            return f"the directive {key!r} at {path or '.'}"
        if isinstance(value, list) and here in _MERGED_LISTS:
            return f"the list {here!r}, which Kubernetes merges by key"
        if found := _strategic_unsupported(value, here):
            return found
    return None


MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


# -- the store -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One change, as a watch sends it: the object after (or, for DELETED, as it was with
    the deletion's resourceVersion), and the object before (None for ADDED)."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: Obj
    prev: Obj | None

    @property
    def namespace(self) -> str:
        return str(self.obj["metadata"].get("namespace", ""))


def _key(rtype: ResourceType, namespace: str | None, name: str) -> Key:
    return (rtype.plural, (namespace or "") if rtype.namespaced else "", name)


def matches(obj: Obj, labels: LabelSelector, fields: FieldSelector) -> bool:
    return labels.matches(obj["metadata"].get("labels")) and fields.matches(obj)


def encode_continue(rv: int, start: str) -> str:
    # Shaped like the API server's token (base64 of {"v","rv","start"}); opaque to clients.
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(raw["rv"]), str(raw["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request(f"continue key is not valid: {token!r}") from None


class Store:
    """All objects and their history; see the module docstring for the invariants."""

    def __init__(self, namespaces: Iterable[str] = ("default", "kube-system")) -> None:
        self.cond = threading.Condition()
        self.rv = 0
        self.compacted = 0  # a watch or list from a resourceVersion below this gets 410
        self.objects: dict[Key, Obj] = {}
        self.events: list[Event] = []
        for name in namespaces:
            self.create(resource_type("Namespace"), None, {"metadata": {"name": name}})

    # -- reads --------------------------------------------------------------------------

    def get(self, rtype: ResourceType, namespace: str | None, name: str) -> Obj:
        with self.cond:
            obj = self.objects.get(_key(rtype, namespace, name))
            if obj is None:
                raise not_found(rtype, name)
            return copy.deepcopy(obj)

    def _state_at(self, rv: int) -> dict[Key, Obj]:
        """Every object as it was at `rv`: undo the events after it, newest first."""
        if rv < self.compacted:
            raise expired(_CONTINUE_EXPIRED)
        state = dict(self.objects)
        for event in reversed(self.events):
            if event.rv <= rv:
                break
            key = _key(event.rtype, event.namespace, event.obj["metadata"]["name"])
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    def list(self, rtype: ResourceType, namespace: str | None, labels: LabelSelector,
             fields: FieldSelector, *, resource_version: str | None = None,
             resource_version_match: str | None = None, limit: int | None = None,
             continue_token: str | None = None) -> tuple[list[Obj], str, str | None, int | None]:
        """Items, the list's resourceVersion, the next continue token and how many remain.

        "Semantics for get and list" (API Concepts): without a resourceVersion, or with "0"
        ("Any") or a version and the default match NotOlderThan, the most recent state is a
        correct answer, so that is what is served; resourceVersionMatch=Exact serves the
        state at exactly that version (410 once compacted). A version newer than any the
        server has is answered 504 "Too large resource version", as the API server does
        once it has waited for its cache (this fake never lags, so it does not wait).
        "Retrieving large results sets in chunks": a continue token serves the rest of the
        same snapshot, and 410 Expired once that snapshot is compacted away.
        """
        with self.cond:
            if continue_token:
                rv, start = decode_continue(continue_token)
                state = self._state_at(rv)
            else:
                start = ""
                rv = self.rv
                state = self.objects
                if resource_version not in (None, "", "0"):
                    wanted = _parse_rv(resource_version, "resourceVersion")
                    if wanted > self.rv:
                        raise ApiError(504, "Timeout",
                                       f"Too large resource version: {wanted}, "
                                       f"current: {self.rv}",
                                       {"causes": [{"reason": "ResourceVersionTooLarge",
                                                    "message": "Too large resource version"}],
                                        "retryAfterSeconds": 1})
                    if resource_version_match == "Exact":
                        if wanted < self.compacted:
                            raise expired(f"too old resource version: {wanted} "
                                          f"({self.compacted})")
                        rv, state = wanted, self._state_at(wanted)
                elif resource_version_match:
                    raise bad_request("resourceVersionMatch: Forbidden: resourceVersionMatch "
                                      "is forbidden unless resourceVersion is provided")
            selected = sorted(
                (k, obj) for k, obj in state.items()
                if k[0] == rtype.plural and (namespace is None or k[1] == namespace)
                and matches(obj, labels, fields))
            items = [(f"{k[1]}/{k[2]}", obj) for k, obj in selected]
            items = [(k, obj) for k, obj in items if k > start]
            token, remaining = None, None
            if limit and len(items) > limit:
                token = encode_continue(rv, items[limit - 1][0])
                remaining = len(items) - limit
                items = items[:limit]
            return [copy.deepcopy(obj) for _, obj in items], str(rv), token, remaining

    # -- writes -------------------------------------------------------------------------

    def _write(self, rtype: ResourceType, event_type: str, obj: Obj,
               prev: Obj | None) -> Obj:
        """Take the next resourceVersion, store (or drop) the object, record the event."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = _key(rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if event_type == "DELETED":
            del self.objects[key]
        else:
            self.objects[key] = obj
        self.events.append(Event(self.rv, event_type, rtype, obj, prev))
        self.cond.notify_all()
        return copy.deepcopy(obj)

    def _require_namespace(self, rtype: ResourceType, namespace: str | None) -> str:
        if not rtype.namespaced:
            return ""
        if not namespace:
            raise bad_request(f"a {rtype.kind} is namespaced: the request names no namespace")
        if ("namespaces", "", namespace) not in self.objects:
            # The NamespaceLifecycle admission plugin: no objects in a namespace that does
            # not exist.
            raise not_found(resource_type("Namespace"), namespace)
        return namespace

    def create(self, rtype: ResourceType, namespace: str | None, body: Any) -> Obj:
        obj = copy.deepcopy(_check_body(rtype, body))
        metadata = obj.setdefault("metadata", {})
        with self.cond:
            body_ns = metadata.get("namespace")
            if rtype.namespaced and body_ns and namespace and body_ns != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            namespace = self._require_namespace(rtype, namespace or body_ns)
            name = metadata.get("name") or ""
            if not name:
                prefix = metadata.get("generateName") or ""
                if not prefix:
                    raise invalid(rtype, "", "metadata.name", "",
                                  "name or generateName is required")
                # "Idempotency" (API conventions): generateName gets a random suffix.
                name = prefix + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
            _check_name(rtype, name, "metadata.name")
            _check_labels(rtype, name, metadata.get("labels"))
            _check_annotations(rtype, name, metadata.get("annotations"))
            if _key(rtype, namespace, name) in self.objects:
                raise already_exists(rtype, name)
            # "Metadata" (API conventions): uid, creationTimestamp and resourceVersion are
            # set by the system; whatever a client sends for them is ignored on create.
            metadata.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now())
            for ignored in ("resourceVersion", "deletionTimestamp", "generation"):
                metadata.pop(ignored, None)
            if rtype.namespaced:
                metadata["namespace"] = namespace
            else:
                metadata.pop("namespace", None)
            if rtype.plural == "namespaces":
                obj.setdefault("spec", {"finalizers": ["kubernetes"]})
                obj["status"] = {"phase": "Active"}
            obj["kind"], obj["apiVersion"] = rtype.kind, rtype.api_version
            return self._write(rtype, "ADDED", obj, None)

    def _update(self, rtype: ResourceType, current: Obj, new: Obj) -> Obj:
        name = current["metadata"]["name"]
        metadata = new.setdefault("metadata", {})
        _check_labels(rtype, name, metadata.get("labels"))
        _check_annotations(rtype, name, metadata.get("annotations"))
        # What the system owns survives an update whatever the client sent.
        for owned in ("name", "namespace", "uid", "creationTimestamp", "resourceVersion"):
            if owned in current["metadata"]:
                metadata[owned] = current["metadata"][owned]
            else:
                metadata.pop(owned, None)
        new["kind"], new["apiVersion"] = rtype.kind, rtype.api_version
        if new == current:
            return copy.deepcopy(current)  # a no-op update writes nothing
        return self._write(rtype, "MODIFIED", new, current)

    def replace(self, rtype: ResourceType, namespace: str | None, name: str, body: Any) -> Obj:
        """PUT. "Concurrency Control and Consistency" (API conventions): a resourceVersion
        in the body must equal the stored one, else 409 Conflict; without one the update is
        unconditional."""
        new = copy.deepcopy(_check_body(rtype, body))
        metadata = new.setdefault("metadata", {})
        if metadata.get("name") not in (None, "", name):
            raise bad_request(f"the name of the object ({metadata['name']}) does not match the "
                              f"name on the URL ({name})")
        with self.cond:
            if rtype.namespaced and metadata.get("namespace") not in (None, "", namespace):
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            current = self.objects.get(_key(rtype, namespace, name))
            if current is None:
                raise not_found(rtype, name)
            sent_rv = metadata.get("resourceVersion")
            if sent_rv:
                _parse_rv(sent_rv, "metadata.resourceVersion")
                if sent_rv != current["metadata"]["resourceVersion"]:
                    raise conflict(rtype, name, STALE)
            sent_uid = metadata.get("uid")
            if sent_uid and sent_uid != current["metadata"]["uid"]:
                raise conflict(rtype, name,
                               f"Precondition failed: UID in precondition: {sent_uid}, "
                               f"UID in object meta: {current['metadata']['uid']}")
            return self._update(rtype, current, new)

    def patch(self, rtype: ResourceType, namespace: str | None, name: str, patch: Any,
              content_type: str) -> Obj:
        """PATCH with a JSON merge patch or a strategic merge patch ("Patch operations", API
        Concepts). A resourceVersion in the patch is a precondition, as in an update."""
        kind = content_type.split(";")[0].strip().lower()
        if kind not in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types by the fake: {MERGE_PATCH}, {STRATEGIC_MERGE_PATCH} "
                           f"(got {content_type!r})")
        if not isinstance(patch, dict):
            raise bad_request(f"a {kind} body must be a JSON object, not {patch!r}")
        if kind == STRATEGIC_MERGE_PATCH and (why := _strategic_unsupported(patch)):
            # Maps (labels, annotations, spec fields) merge alike in both kinds; these do not.
            raise ApiError(415, "UnsupportedMediaType",
                           f"the fake's strategic merge patch does not implement {why}; send "
                           f"a merge patch or a full replace instead")
        with self.cond:
            current = self.objects.get(_key(rtype, namespace, name))
            if current is None:
                raise not_found(rtype, name)
            sent_rv = (patch.get("metadata") or {}).get("resourceVersion")
            if sent_rv and str(sent_rv) != current["metadata"]["resourceVersion"]:
                raise conflict(rtype, name, STALE)
            new = copy.deepcopy(merge_patch(current, patch))
            _check_body(rtype, new)
            return self._update(rtype, current, new)

    def delete(self, rtype: ResourceType, namespace: str | None, name: str,
               preconditions: Mapping[str, Any] | None = None) -> Obj:
        """DELETE. Objects go at once (no graceful deletion, no finalizers); a deleted
        namespace takes its objects with it first, as the namespace controller would.
        Preconditions (DeleteOptions) on uid and resourceVersion fail with 409 Conflict."""
        with self.cond:
            key = _key(rtype, namespace, name)
            current = self.objects.get(key)
            if current is None:
                raise not_found(rtype, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != current["metadata"]["uid"]:
                raise conflict(rtype, name,
                               f"Precondition failed: UID in precondition: {pre['uid']}, "
                               f"UID in object meta: {current['metadata']['uid']}")
            if pre.get("resourceVersion") and (
                    pre["resourceVersion"] != current["metadata"]["resourceVersion"]):
                raise conflict(rtype, name,
                               f"Precondition failed: ResourceVersion in precondition: "
                               f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                               f"{current['metadata']['resourceVersion']}")
            if rtype.plural == "namespaces":
                for inner in sorted(k for k in self.objects if k[1] == name):
                    self._write(resource_type(inner[0]), "DELETED",
                                copy.deepcopy(self.objects[inner]), self.objects[inner])
            return self._write(rtype, "DELETED", copy.deepcopy(current), current)

    # -- history --------------------------------------------------------------------------

    def compact(self, before_rv: int | None = None) -> int:
        """Forget the history before `before_rv` (default: all of it), as etcd compaction
        does: a watch from a resourceVersion older than `before_rv` gets 410 Expired, one
        from `before_rv` or newer still replays everything after it."""
        with self.cond:
            point = self.rv if before_rv is None else before_rv
            if point > self.rv:
                raise ValueError(f"before_rv {point} is newer than the current "
                                 f"resourceVersion {self.rv}")
            self.compacted = max(self.compacted, point)
            self.events = [e for e in self.events if e.rv > self.compacted]
            self.cond.notify_all()
            return self.compacted


_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter.")
