"""Resource CRUD over etcd with Calico's semantics and compare-and-swap everywhere.

Owns: the mapping between Resource models and etcd keys/values, and the rules
that need more than one document (IPPool overlap, immutable CIDR/blockSize).

Invariants:
  * create  = create-if-absent transaction (ResourceAlreadyExists otherwise);
  * update  = compare-and-swap on the mod revision (UpdateConflict otherwise);
  * delete  = compare-and-delete of the exact key;
  * an IPPool write is guarded by a range compare over every pool key, so two
    overlapping pools created at once cannot both succeed;
  * nothing is written unless the whole resource validated; stored documents
    are never lost or partially overwritten.
"""

from __future__ import annotations

import builtins
import copy
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from .errors import (
    FieldError,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    UpdateConflict,
    ValidationError,
)
from .etcd import Compare, EtcdClient, KeyConflict, KeyMissing, KeyValue, Op
from .keys import resource_key, resource_prefix
from .resources import IPAMConfiguration, IPPool, ObjectMeta, Resource, parse_document
from .resources.ippool import find_overlap, immutable_changes

_log = logging.getLogger(__name__)

R = TypeVar("R", bound=Resource)

GET_UPDATE_RETRIES = 5


def error_namespace(cls: type[Resource], namespace: str | None) -> str | None:
    """The namespace a resource error names: libcalico-go's model.ResourceKey String()
    shows it, empty or not, for a namespaced kind, and not for the others."""
    return (namespace or "") if cls.namespaced else None


class ResourceStore:
    """Typed CRUD for v3 resources. Thread-safe as far as EtcdClient is."""

    def __init__(self, client: EtcdClient) -> None:
        self.client = client

    # -- reads -----------------------------------------------------------------------

    def get(self, cls: type[R], name: str, namespace: str | None = None) -> R:
        key = self._key(cls, name, namespace)
        kv = self.client.get(key)
        if kv is None:
            raise ResourceDoesNotExist(cls.kind_name, name, key, namespace=error_namespace(cls, namespace))
        return self._decode(cls, kv)

    def find(self, cls: type[R], name: str, namespace: str | None = None) -> R | None:
        try:
            return self.get(cls, name, namespace)
        except ResourceDoesNotExist:
            return None

    # From here on, `list` in this class's signatures would name this method (class
    # scope), so they spell the type builtins.list.
    def list(self, cls: type[R], namespace: str | None = None) -> list[R]:
        return self.list_with_revision(cls, namespace)[0]

    def list_with_revision(
        self, cls: type[R], namespace: str | None = None, revision: int | None = None
    ) -> tuple[builtins.list[R], int]:
        """Every `cls` (in `namespace`, or all), and the revision read at. With `revision`,
        as of that revision: several kinds read at one revision are one consistent view."""
        if cls is IPAMConfiguration:
            kv = self.client.get(IPAMConfiguration(metadata=ObjectMeta(name="default")).key())
            return ([self._decode(cls, kv)] if kv else []), self.client.revision()
        items, rev = self.client.list(resource_prefix(cls.plural, namespace), revision)
        out = []
        for kv in items:
            try:
                out.append(self._decode(cls, kv))
            except ValidationError as exc:
                # Someone wrote a document we cannot read: say so, never crash a listing.
                _log.warning("skipping unreadable %s at %s: %s", cls.kind_name, kv.key, exc)
        return out, rev

    # -- writes ----------------------------------------------------------------------

    def create(self, res: R) -> R:
        self._check(res)
        res = self._stamp_new(res)
        key, ns = res.key(), error_namespace(type(res), res.namespace)
        compare, pool_rev = self._pool_guard(res, None)
        compare.append(Compare(key, "version", "==", 0))
        ok, _, rev = self.client.transaction(compare, [Op("put", key, res.to_stored())])
        if not ok:
            if self.client.get(key) is not None:
                raise ResourceAlreadyExists(res.kind_name, res.name, key, namespace=ns)
            raise UpdateConflict(res.kind_name, res.name, key, pool_rev, ns)
        return self._with_revision(res, rev)

    def update(self, res: R) -> R:
        """Compare-and-swap against metadata.resourceVersion (required)."""
        expected = res.resource_version
        if expected is None:
            raise ValidationError("resourceVersion is required for an update")
        key, ns = res.key(), error_namespace(type(res), res.namespace)
        current_kv = self.client.get(key)
        if current_kv is None:
            raise ResourceDoesNotExist(res.kind_name, res.name, key, namespace=ns)
        current = self._decode(type(res), current_kv)
        self._check(res, current)
        res = self._keep_identity(res, current)
        compare, _ = self._pool_guard(res, current)
        compare.append(Compare(key, "mod", "==", expected))
        ok, _, rev = self.client.transaction(compare, [Op("put", key, res.to_stored())])
        if not ok:
            if self.client.get(key) is None:
                raise ResourceDoesNotExist(res.kind_name, res.name, key, namespace=ns)
            raise UpdateConflict(res.kind_name, res.name, key, expected, ns)
        return self._with_revision(res, rev)

    def replace(self, res: R) -> R:
        """calicoctl replace: CAS on the given resourceVersion, or get+update retried."""
        if res.resource_version is not None:
            return self.update(res)
        for attempt in range(GET_UPDATE_RETRIES):
            current = self.get(type(res), res.name, res.namespace)
            try:
                return self.update(self._with_revision(res, current.resource_version))
            except UpdateConflict:
                if attempt == GET_UPDATE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def apply(self, res: R) -> R:
        """Create, or update what is there (CAS, retried on conflict)."""
        if res.resource_version is not None:
            return self.update(res)
        for attempt in range(GET_UPDATE_RETRIES):
            current = self.find(type(res), res.name, res.namespace)
            try:
                if current is None:
                    return self.create(res)
                return self.update(self._with_revision(res, current.resource_version))
            except (UpdateConflict, ResourceAlreadyExists, ResourceDoesNotExist):
                if attempt == GET_UPDATE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def delete(self, cls: type[R], name: str, namespace: str | None = None,
               resource_version: int | None = None) -> R:
        key = self._key(cls, name, namespace)
        kv = self.client.get(key)
        if kv is None:
            raise ResourceDoesNotExist(cls.kind_name, name, key, namespace=error_namespace(cls, namespace))
        current = self._decode(cls, kv)
        expected = resource_version if resource_version is not None else kv.mod_revision
        try:
            self.client.delete(key, expected)
        except KeyMissing:
            raise ResourceDoesNotExist(cls.kind_name, name, key, namespace=error_namespace(cls, namespace)) from None
        except KeyConflict:
            raise UpdateConflict(cls.kind_name, name, key, expected, error_namespace(cls, namespace)) from None
        return current

    def patch(self, cls: type[R], name: str, patch: dict[str, Any],
              namespace: str | None = None) -> R:
        """A JSON merge patch (RFC 7386) of the stored document, validated, then CAS."""
        if not isinstance(patch, dict):
            raise ValidationError("patch must be a JSON object")
        for attempt in range(GET_UPDATE_RETRIES):
            current = self.get(cls, name, namespace)
            doc = _merge_patch(current.dump(), patch)
            doc.setdefault("metadata", {})["resourceVersion"] = str(current.resource_version)
            if doc.get("metadata", {}).get("name") != name:
                raise ValidationError(
                    fields=[FieldError(f"{cls.kind_name}.Metadata.Name",
                                       doc.get("metadata", {}).get("name"),
                                       "name cannot be changed by a patch")])
            res = parse_document(doc)
            try:
                # parse_document typed Resource: the patched document is still a `cls`.
                return self.update(res)  # type: ignore[return-value]
            except UpdateConflict:
                if attempt == GET_UPDATE_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _key(cls: type[Resource], name: str, namespace: str | None) -> str:
        if cls is IPAMConfiguration:
            return IPAMConfiguration(metadata=ObjectMeta(name=name or "default")).key()
        return resource_key(cls.plural, name, namespace if cls.namespaced else None)

    @staticmethod
    def _decode(cls: type[R], kv: KeyValue) -> R:
        try:
            return cls.from_stored(kv.value, kv.mod_revision)
        except (ValueError, TypeError) as exc:
            raise ValidationError(f"stored {cls.kind_name} at {kv.key} is unreadable: {exc}") from None

    @staticmethod
    def _with_revision(res: R, revision: int | None) -> R:
        meta = res.metadata.model_copy(
            update={"resourceVersion": None if revision is None else str(revision)})
        return res.model_copy(update={"metadata": meta})

    @staticmethod
    def _stamp_new(res: R) -> R:
        meta = res.metadata.model_copy(update={
            "uid": res.metadata.uid or str(uuid.uuid4()),
            "creationTimestamp": res.metadata.creationTimestamp
            or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resourceVersion": None,
        })
        return res.model_copy(update={"metadata": meta})

    @staticmethod
    def _keep_identity(res: R, current: Resource) -> R:
        meta = res.metadata.model_copy(update={
            "uid": current.metadata.uid,
            "creationTimestamp": current.metadata.creationTimestamp,
        })
        return res.model_copy(update={"metadata": meta})

    def _check(self, res: Resource, current: Resource | None = None) -> None:
        """Re-validate (the model may have been built in code) plus stored-state rules."""
        errs = res.validate_semantics()
        if isinstance(res, IPPool) and isinstance(current, IPPool):
            errs += immutable_changes(res, current)
        if errs:
            raise ValidationError(fields=errs)

    def _pool_guard(
        self, res: Resource, current: Resource | None
    ) -> tuple[builtins.list[Compare], int]:
        """For IPPools: refuse overlaps, and guard the write on the pools we checked."""
        if not isinstance(res, IPPool):
            return [], 0
        pools, rev = self.list_with_revision(IPPool)
        overlap = find_overlap(res, pools)
        if overlap:
            raise ValidationError(fields=[overlap])
        # No pool key may have changed since the listing we just checked against.
        return [Compare(resource_prefix(IPPool.plural), "mod", "<", rev + 1, prefix=True)], rev


def _merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = _merge_patch(result.get(k), v)
    return result

